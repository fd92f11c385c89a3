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


def onnx_macs_params(path_or_proto) -> tuple[int, int]:
    """Conv multiply-accumulates per image and conv parameters of an ONNX graph (FP32,
    FP16 or Q/DQ), from ONNX shape inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    inferred = shape_inference.infer_shapes(proto)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}

    def weight_shape(name):
        if name in inits:
            return inits[name]
        p = producer.get(name)
        while p is not None and p.op_type in ("DequantizeLinear", "Cast", "QuantizeLinear"):
            if p.input[0] in inits:
                return inits[p.input[0]]
            p = producer.get(p.input[0])
        return shapes.get(name)

    macs = params = 0
    for n in proto.graph.node:
        if n.op_type != "Conv":
            continue
        w = weight_shape(n.input[1])
        y = shapes.get(n.output[0])
        if not w or not y or len(y) != 4:
            continue
        cout, cin_g, kh, kw = w
        macs += y[2] * y[3] * cout * cin_g * kh * kw
        params += cout * cin_g * kh * kw + (cout if len(n.input) > 2 and n.input[2] else 0)
    del numpy_helper
    return int(macs), int(params)
