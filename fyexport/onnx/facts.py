"""Facts about an ONNX model, in one place: its image input, its precision, fyexport's
metadata, op and MAC counts, and the ONNX Runtime session options every fyexport session
uses.

Model facts written at export (class names, strides, anchors, input size, preprocessing,
provenance) travel in ``metadata_props`` under the key ``fyexport``; every command reads
them back with :func:`read_meta`.
"""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from ..core.meta import ArtifactMeta

META_KEY = "fyexport"
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
UINT8 = 2  # onnx.TensorProto.UINT8
ELEM_NAMES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 2: "uint8", 3: "int8"}


@dataclass(frozen=True)
class ImageInput:
    """The model's one non-initializer input: ``name`` and ``dims`` (None where symbolic)."""

    name: str
    dims: tuple

    @property
    def hw(self) -> tuple:
        return tuple(self.dims[2:4])

    @property
    def batch(self) -> int | None:
        return self.dims[0] if self.dims else None


def image_input(proto) -> ImageInput:
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"expected one image input, found {len(inputs)}")
    dims = tuple(d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim)
    return ImageInput(inputs[0].name, dims)


@dataclass(frozen=True)
class GraphFacts:
    """What decides how a graph is built into an engine."""

    qdq: bool  # has QuantizeLinear nodes
    fp16: bool  # has float16 initializers
    input: ImageInput
    outputs: tuple


def graph_facts(proto) -> GraphFacts:
    ops = {n.op_type for n in proto.graph.node}
    fp16 = any(i.data_type == FLOAT16 for i in proto.graph.initializer)
    return GraphFacts("QuantizeLinear" in ops, fp16, image_input(proto), tuple(o.name for o in proto.graph.output))


def onnx_precision(proto) -> tuple[str, str]:
    """('int8'|'fp16'|'fp32', flavour) from the graph's ops and types."""
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    inits = {i.name: i for i in proto.graph.initializer}
    fp16 = any(i.data_type == FLOAT16 for i in proto.graph.initializer)
    if qs:
        unsigned = any(len(n.input) > 2 and n.input[2] in inits and inits[n.input[2]].data_type == UINT8 for n in qs)
        return "int8", ("u8s8" if unsigned else "s8s8") + ("+fp16" if fp16 else "")
    return ("fp16" if fp16 else "fp32"), ""


# -- fyexport metadata ---------------------------------------------------------------

def read_meta(onnx_model_or_path) -> ArtifactMeta:
    """The fyexport metadata of an ONNX model (empty if absent)."""
    import onnx

    m = onnx_model_or_path
    where = "ONNX model" if isinstance(m, onnx.ModelProto) else str(m)
    if not isinstance(m, onnx.ModelProto):
        m = onnx.load(str(m), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_KEY:
            try:
                return ArtifactMeta.from_dict(json.loads(p.value), where)
            except ValueError:
                return ArtifactMeta()
    return ArtifactMeta()


def write_meta(model_proto, meta: ArtifactMeta) -> None:
    for p in list(model_proto.metadata_props):
        if p.key == META_KEY:
            model_proto.metadata_props.remove(p)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta.to_dict())


def check_onnx_file(path):
    """Load an ONNX file with a one-line error on failure."""
    import onnx

    from ..core.errors import check_file

    p = check_file(path, "ONNX model", (".onnx",))
    try:
        return onnx.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__})", "Export it again with fyexport export")


# -- ONNX Runtime ------------------------------------------------------------------------

def ort_has_cuda() -> bool:
    """Whether this ONNX Runtime has the CUDA provider (the ``[gpu]`` extra, onnxruntime-gpu)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def session_options(threads: int | None = None, config: dict | None = None):
    """The options of every fyexport ONNX Runtime session: all graph optimisations, one
    sequential executor, intra-op threads = physical cores, quiet logging."""
    import onnxruntime as ort

    from ..core.machine import physical_cores

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return so


def cpu_session(model, threads: int | None = None, config: dict | None = None):
    """An ONNX Runtime CPU session of a path, serialized bytes or a ModelProto."""
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), session_options(threads, config),
                                providers=["CPUExecutionProvider"])


# -- description -------------------------------------------------------------------------

def io_shapes(proto) -> tuple[list, list]:
    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inits = {i.name for i in proto.graph.initializer}
    ins = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in proto.graph.input if v.name not in inits]
    outs = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in proto.graph.output]
    return ins, outs


def describe_onnx(path) -> dict:
    proto = check_onnx_file(path)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    ins, outs = io_shapes(proto)
    meta = read_meta(proto)
    return {
        "path": str(path),
        "size_mb": round(Path(path).stat().st_size / 1e6, 2),
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": [f"{n} {s} {ELEM_NAMES.get(t, t)}" for n, s, t in ins],
        "outputs": [f"{n} {s} {ELEM_NAMES.get(t, t)}" for n, s, t in outs],
        "nodes": len(proto.graph.node),
        "conv": ops.get("Conv", 0),
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "precision": meta.precision or ("fp32" if not ops.get("QuantizeLinear") else "int8"),
        "nc": meta.nc,
        "names": list(meta.names) or None,
        "img_size": list(meta.img_size) if meta.img_size else None,
        "stride": list(meta.stride) or None,
        "dynamic_batch": meta.dynamic_batch,
        "prune": meta.prune,
        "calibration": meta.calibration,
        "producer": meta.producer,
    }


def onnx_macs_params(path_or_proto) -> tuple[int, int]:
    """Conv multiply-accumulates per image and conv parameters of an ONNX graph (FP32,
    FP16 or Q/DQ), from ONNX shape inference."""
    import onnx
    from onnx import shape_inference

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
    return int(macs), int(params)
