"""``--method search``: choose each scale group's amax by what it does to the convs that read it.

Histogram criteria judge a tensor by itself: TensorRT's KL search keeps the bulk and clips
long tails, MinMax keeps every outlier, MSE and percentile sit in between, and which one
is right differs from tensor to tensor (on a well-recovered pruned yolov7 the KL search
clips some tensors to a third of their range and, with nothing kept in float, costs 2.0
points of mAP; on the unpruned model MinMax cost 2.8).  This search takes every histogram
method's amax as a candidate for each group and keeps, per group, the candidate whose
quantization moves the group's consumer convs' activated outputs least (relative squared
error against FP32), the way layer-wise PTQ methods score scales on a layer's output
rather than its input.  TensorRT's entropy amax is kept unless another candidate clearly
beats it (``tolerance``).

Each consumer conv is duplicated once per candidate beside the FP32 conv, fed the same FP32
input through Q/DQ at that candidate's scale with int8 weights (as bias correction does),
and the graph itself reduces each difference to a scalar, so one ONNX Runtime session over
a few calibration images scores every candidate of every group.  The scales are TensorRT's
symmetric int8 ones; the CPU flavour uses the same amax.
"""
from __future__ import annotations

import numpy as np

from ..log import progress
from .graph import Plan, graph_index

# histogram methods whose amax are the candidates (method, percentile)
CANDIDATES = (("entropy", None), ("mse", None), ("percentile", 99.9), ("percentile", 99.99),
              ("percentile", 99.999), ("minmax", None))
# Entropy stays unless another candidate at least halves the group's error.  Measured with
# mAP@.5:.95 (ONNX Runtime, 500 shapes val images, points vs FP32, S8S8 / U8S8; per-tensor
# amax, benchmarks/results/int8-methods-cpu-xeon.json): well-recovered pruned yolov7 with
# auto-exclude 4: entropy -0.15 / -0.39, search -0.08 / -0.26; unpruned yolov7 with
# auto-exclude 4: entropy -0.83 / -0.74, search -0.69 / -0.39 (calibration seed 1:
# -0.83 / -0.74 and -0.81 / -0.69).  (Before groups took the max of per-tensor amax, the
# tolerance-1 argmin was worse than entropy on the unpruned model: the local error
# over-rates MSE-like thresholds there, so the search only overrides clearly harmful clips.)
TOLERANCE = 2.0


def candidate_amax(hs) -> dict:
    """{label: amax} of every candidate method for one scale group's histograms (each method's
    largest amax over them, as the group's shared scale), near-duplicates dropped (labels keep
    the CANDIDATES order, so ties go to the earlier method)."""
    from .entropy import compute_amax

    out: dict = {}
    for method, pct in CANDIDATES:
        a = max(compute_amax(h, method, pct if pct is not None else 99.99) for h in hs)
        label = method if pct is None else f"percentile {pct:g}"
        if all(abs(a - b) > 1e-3 * max(a, b) for b in out.values()):
            out[label] = a
    return out


def search_amax(proto, plan: Plan, hists: dict, images: np.ndarray, tolerance: float = TOLERANCE) -> tuple[dict, dict]:
    """({group: chosen amax}, {group: {"chosen": label, "error": {label: relative error}}}).

    A group keeps TensorRT's entropy amax unless the best candidate's error is below
    entropy's divided by ``tolerance`` (1: plain argmin).  Groups without a quantized conv
    reading them (the input image, Add-only groups) keep their entropy amax."""
    import onnx
    from onnx import helper, numpy_helper

    import onnxruntime as ort

    from ..runners.ort import session_options
    from .collect import _model_input
    from .entropy import group_amax
    from .qdq import _leaky_alpha, _node_by_name, quantized_twin

    _, consumers, _ = graph_index(proto)
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    quantized = set(plan.conv_nodes)
    convs = {n.name: n for n in g.node if n.name in quantized}
    nodes, new_inits, outputs = [], [], []
    scored: dict = {}  # gid -> {label: [error output names]}
    cands: dict = {}
    ref: dict = {}  # conv -> (its FP32 activated output, the output name of that squared mean)

    def act(y: str, kind: tuple, tag: str) -> str:
        if kind[0] == "silu":
            nodes.append(helper.make_node("Sigmoid", [y], [f"{tag}_sig"], name=f"{tag}_sig"))
            nodes.append(helper.make_node("Mul", [y, f"{tag}_sig"], [f"{tag}_act"], name=f"{tag}_act"))
            return f"{tag}_act"
        if kind[0] == "leaky":
            alpha = _leaky_alpha(_node_by_name(g, kind[1]))
            nodes.append(helper.make_node("LeakyRelu", [y], [f"{tag}_act"], name=f"{tag}_act", alpha=alpha))
            return f"{tag}_act"
        return y

    def mean_square(x: str, tag: str) -> str:
        nodes.append(helper.make_node("Mul", [x, x], [f"{tag}_sq"], name=f"{tag}_sq"))
        nodes.append(helper.make_node("ReduceMean", [f"{tag}_sq"], [f"{tag}_ms"], name=f"{tag}_ms", keepdims=0))
        outputs.append(f"{tag}_ms")
        return f"{tag}_ms"

    k = 0
    for gid, tensors in plan.groups.items():
        readers = sorted({c.name for t in tensors for c in consumers.get(t, []) if c.name in convs})
        hs = [hists[t] for t in plan.reps[gid]]
        if gid == "images" or not readers or all(h.counts is None for h in hs):
            continue
        cands[gid] = candidate_amax(hs)
        if len(cands[gid]) < 2:
            continue
        scored[gid] = {label: [] for label in cands[gid]}
        for name in readers:
            conv = convs[name]
            kind = plan.activations.get(conv.output[0], ("none",))
            if name not in ref:
                a_ref = act(conv.output[0], kind, f"sr{len(ref)}")
                ref[name] = (a_ref, mean_square(a_ref, f"sr{len(ref)}e"))
            ref_act, ref_energy = ref[name]
            w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
            for label, a in cands[gid].items():
                tag = f"sq{k}"
                k += 1
                tn, ti, y = quantized_twin(conv, w, tag, np.float32(a / 127.0), np.int8(0))
                nodes.extend(tn)
                new_inits.extend(ti)
                nodes.append(helper.make_node("Sub", [act(y, kind, tag), ref_act], [f"{tag}_d"], name=f"{tag}_d"))
                scored[gid][label].append((mean_square(f"{tag}_d", tag), ref_energy))
    # entropy unless overridden below; the candidates already hold it (no second KL search)
    rest = {gid: ts for gid, ts in plan.reps.items() if gid not in cands}
    amax = {**group_amax(rest, hists, "entropy"), **{gid: c["entropy"] for gid, c in cands.items()}}
    if not scored:
        return amax, {}
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs])
    sess = ort.InferenceSession(m.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    acc = dict.fromkeys(outputs, 0.0)
    in_name = _model_input(proto)[0]
    with progress("amax search", len(images)) as bar:
        for img in images:
            for name, v in zip(outputs, sess.run(outputs, {in_name: img[None]})):
                acc[name] += float(v)
            bar.advance()
    report = {}
    for gid, per_label in scored.items():
        err = {label: sum(acc[d] / max(acc[e], 1e-12) for d, e in pairs) for label, pairs in per_label.items()}
        best = min(err, key=err.get)  # first minimum: CANDIDATES order
        chosen = "entropy" if err["entropy"] <= tolerance * err[best] else best  # entropy is always a candidate
        amax[gid] = cands[gid][chosen]
        report[gid] = {"chosen": chosen, "amax": amax[gid], "error": err, "convs": len(next(iter(per_label.values())))}
    return amax, report

