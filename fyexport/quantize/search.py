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

from ..core.log import progress
from .graph import Plan, graph_index, leaky_alpha, node_by_name

# histogram methods whose amax are the candidates (method, percentile)
CANDIDATES = (("entropy", None), ("mse", None), ("percentile", 99.9), ("percentile", 99.99),
              ("percentile", 99.999), ("minmax", None))
# Entropy stays unless another candidate at least halves the group's error: the local error
# over-rates MSE-like thresholds on the unpruned model, so the search only overrides clearly
# harmful clips (measurements in benchmarks/README.md, INT8 methods).
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


class _ScoreGraph:
    """The FP32 graph plus, for every (group, candidate, reader conv), a quantized twin of the
    conv and the mean squared difference of the two activated outputs as a graph output."""

    def __init__(self, proto, plan: Plan):
        import onnx

        self.m = onnx.ModelProto()
        self.m.CopyFrom(proto)
        self.g = self.m.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.convs = {n.name: n for n in self.g.node if n.name in set(plan.conv_nodes)}
        self.plan = plan
        self.nodes, self.new_inits, self.outputs = [], [], []
        self.ref: dict = {}  # conv -> (its FP32 activated output, the name of its mean square)
        self.k = 0

    def _node(self, op, ins, out, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def act(self, y: str, kind: tuple, tag: str) -> str:
        if kind[0] == "silu":
            return self._node("Mul", [y, self._node("Sigmoid", [y], f"{tag}_sig")], f"{tag}_act")
        if kind[0] == "leaky":
            return self._node("LeakyRelu", [y], f"{tag}_act", alpha=leaky_alpha(node_by_name(self.g, kind[1])))
        return y

    def mean_square(self, x: str, tag: str) -> str:
        self._node("ReduceMean", [self._node("Mul", [x, x], f"{tag}_sq")], f"{tag}_ms", keepdims=0)
        self.outputs.append(f"{tag}_ms")
        return f"{tag}_ms"

    def add_reader(self, name: str, amaxes: dict, scored: dict) -> None:
        """Twins of conv ``name`` at each candidate amax; their error outputs go to ``scored``."""
        from onnx import numpy_helper

        from .qdq import quantized_twin

        conv = self.convs[name]
        kind = self.plan.activations.get(conv.output[0], ("none",))
        if name not in self.ref:
            a_ref = self.act(conv.output[0], kind, f"sr{len(self.ref)}")
            self.ref[name] = (a_ref, self.mean_square(a_ref, f"sr{len(self.ref)}e"))
        ref_act, ref_energy = self.ref[name]
        w = numpy_helper.to_array(self.inits[conv.input[1]]).astype(np.float32)
        for label, a in amaxes.items():
            tag = f"sq{self.k}"
            self.k += 1
            tn, ti, y = quantized_twin(conv, w, tag, np.float32(a / 127.0), np.int8(0))
            self.nodes.extend(tn)
            self.new_inits.extend(ti)
            d = self._node("Sub", [self.act(y, kind, tag), ref_act], f"{tag}_d")
            scored[label].append((self.mean_square(d, tag), ref_energy))

    def run(self, images: np.ndarray, in_name: str) -> dict:
        """{output name: sum over ``images`` of its value}."""
        import onnx
        from onnx import helper

        from ..onnx.facts import cpu_session

        self.g.node.extend(self.nodes)
        self.g.initializer.extend(self.new_inits)
        del self.g.output[:]
        self.g.output.extend([helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in self.outputs])
        sess = cpu_session(self.m)
        acc = dict.fromkeys(self.outputs, 0.0)
        with progress("amax search", len(images)) as bar:
            for img in images:
                for name, v in zip(self.outputs, sess.run(self.outputs, {in_name: img[None]})):
                    acc[name] += float(v)
                bar.advance()
        return acc


def search_amax(proto, plan: Plan, hists: dict, images: np.ndarray, tolerance: float = TOLERANCE) -> tuple[dict, dict]:
    """({group: chosen amax}, {group: {"chosen": label, "error": {label: relative error}}}).

    A group keeps TensorRT's entropy amax unless the best candidate's error is below
    entropy's divided by ``tolerance`` (1: plain argmin).  Groups without a quantized conv
    reading them (the input image, Add-only groups) keep their entropy amax."""
    from ..onnx.facts import image_input
    from .entropy import group_amax

    _, consumers, _ = graph_index(proto)
    in_name = image_input(proto).name
    sg = _ScoreGraph(proto, plan)
    scored: dict = {}  # gid -> {label: [(error output, reference energy output)]}
    cands: dict = {}
    for gid, tensors in plan.groups.items():
        readers = sorted({c.name for t in tensors for c in consumers.get(t, []) if c.name in sg.convs})
        hs = [hists[t] for t in plan.reps[gid]]
        if gid == in_name or not readers or all(h.counts is None for h in hs):
            continue
        cands[gid] = candidate_amax(hs)
        if len(cands[gid]) < 2:
            continue
        scored[gid] = {label: [] for label in cands[gid]}
        for name in readers:
            sg.add_reader(name, cands[gid], scored[gid])
    # entropy unless overridden below; the candidates already hold it (no second KL search)
    rest = {gid: ts for gid, ts in plan.reps.items() if gid not in cands}
    amax = {**group_amax(rest, hists, "entropy"), **{gid: c["entropy"] for gid, c in cands.items()}}
    if not scored:
        return amax, {}
    acc = sg.run(images, in_name)
    report = {}
    for gid, per_label in scored.items():
        err = {label: sum(acc[d] / max(acc[e], 1e-12) for d, e in pairs) for label, pairs in per_label.items()}
        best = min(err, key=err.get)  # first minimum: CANDIDATES order
        chosen = "entropy" if err["entropy"] <= tolerance * err[best] else best  # entropy is always a candidate
        amax[gid] = cands[gid][chosen]
        report[gid] = {"chosen": chosen, "amax": amax[gid], "error": err, "convs": len(next(iter(per_label.values())))}
    return amax, report
