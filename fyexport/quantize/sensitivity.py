"""Which scale groups hurt most when quantized: a one-at-a-time sensitivity analysis.

For every group of the Q/DQ plan, the model is rebuilt with that group kept in float (the
convs reading it run unquantized) and its outputs on a few calibration images are compared
with the FP32 model's.  Groups whose float copy removes the most error come first.  This is
NVIDIA's yolo_deepstream ``sensitive`` analysis, done on outputs instead of mAP so it needs
no labels and takes a minute or two.  ``calibrate(auto_exclude=K)`` keeps the K worst
groups in float.
"""
from __future__ import annotations

import re

import numpy as np

from ..core.log import progress
from .graph import Plan, analyse, graph_index


def output_error(y: np.ndarray, ref: np.ndarray) -> float:
    """Detection-weighted difference of decoded outputs (B, N, 5+nc)."""
    obj_r, obj_y = ref[..., 4], y[..., 4]
    e = np.abs(obj_y - obj_r).mean()
    if ref.shape[-1] > 5:
        e += (np.abs(y[..., 5:] - ref[..., 5:]).mean(-1) * obj_r).sum() / max(obj_r.sum(), 1e-6)
    conf = obj_r > 0.1
    if conf.any():
        size = (ref[..., 2][conf] + ref[..., 3][conf]) / 2 + 1.0
        e += (np.abs(y[..., :4][conf] - ref[..., :4][conf]).sum(-1) / size).mean()
    return float(e)


def consumers_of_group(proto, plan: Plan, gid: str) -> list:
    """Names of the quantized Conv (and Add) nodes that read a tensor of group ``gid``."""
    _, consumers, _ = graph_index(proto)
    names = set()
    for t in plan.groups[gid]:
        for c in consumers.get(t, []):
            if c.name in plan.conv_nodes or (c.op_type == "Add" and t in plan.act_tensors):
                names.add(c.name)
    return sorted(names)


def exclusion_regex(names, base: str | None = None) -> str:
    parts = [f"^{re.escape(n)}$" for n in names]
    if base:
        parts.append(f"(?:{base})")
    return "|".join(parts)


def _run(model_proto, images: np.ndarray) -> np.ndarray:
    from ..onnx.facts import cpu_session, image_input

    sess = cpu_session(model_proto)
    name = image_input(model_proto).name
    return np.concatenate([sess.run(None, {name: x[None]})[0] for x in images])


def method_errors(proto, plan: Plan, amaxes: dict, gmin: dict, ranges: dict, images: np.ndarray) -> dict:
    """{method: output error of its Q/DQ models vs FP32}, summed over the TensorRT-style
    (S8S8) and CPU (U8S8) flavours, for ``calibrate(method="auto")``."""
    from .qdq import build_qdq

    ref = _run(proto, images)
    out = {}
    with progress("method", len(amaxes) * 2) as bar:
        for name, amax in amaxes.items():
            err = 0.0
            for flavour in ("trt", "cpu"):
                err += output_error(_run(build_qdq(proto, plan, amax, gmin, ranges, flavour), images), ref)
                bar.advance()
            out[name] = err
    return out


def rank_groups(proto, plan: Plan, amax: dict, gmin: dict, ranges: dict, images: np.ndarray, flavour: str = "cpu",
                base_exclude: str | None = None) -> list:
    """[(gid, error with gid in float, convs)] sorted from most to least harmful group, plus
    the error of the fully quantized model as the first entry ("*")."""
    from .qdq import build_qdq

    ref = _run(proto, images)
    full = output_error(_run(build_qdq(proto, plan, amax, gmin, ranges, flavour), images), ref)
    out = [("*", full, [])]
    with progress("sensitivity", len(plan.groups)) as bar:
        for gid in plan.groups:
            convs = consumers_of_group(proto, plan, gid)
            reduced = analyse(proto, exclusion_regex(convs, base_exclude))
            err = output_error(_run(build_qdq(proto, reduced, amax, gmin, ranges, flavour), images), ref)
            out.append((gid, err, convs))
            bar.advance()
    return out[:1] + sorted(out[1:], key=lambda r: r[1])
