"""Facts about an ONNX file: I/O, op counts, quantization, fyexport metadata."""
from __future__ import annotations

import collections
from pathlib import Path


def io_shapes(proto) -> tuple[list, list]:
    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inits = {i.name for i in proto.graph.initializer}
    ins = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in proto.graph.input if v.name not in inits]
    outs = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in proto.graph.output]
    return ins, outs


def describe_onnx(path) -> dict:
    import onnx

    from .export import check_onnx_file, read_meta

    proto = check_onnx_file(path)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    ins, outs = io_shapes(proto)
    meta = read_meta(proto)
    elem = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 2: "uint8", 3: "int8"}
    return {
        "path": str(path),
        "size_mb": round(Path(path).stat().st_size / 1e6, 2),
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": [f"{n} {s} {elem.get(t, t)}" for n, s, t in ins],
        "outputs": [f"{n} {s} {elem.get(t, t)}" for n, s, t in outs],
        "nodes": len(proto.graph.node),
        "conv": ops.get("Conv", 0),
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "precision": meta.get("precision", "fp32" if not ops.get("QuantizeLinear") else "int8"),
        "nc": meta.get("nc"),
        "names": meta.get("names"),
        "img_size": meta.get("img_size"),
        "stride": meta.get("stride"),
        "dynamic_batch": meta.get("dynamic_batch"),
        "prune": meta.get("prune"),
        "calibration": meta.get("calibration"),
        "producer": meta.get("producer"),
    }
