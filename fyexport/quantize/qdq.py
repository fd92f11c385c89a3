"""Writing the Q/DQ models from an FP32 graph, a :class:`Plan` and calibrated ranges.

Three flavours from one set of ranges:

* ``trt`` (``model.qdq.onnx``): INT8 symmetric, zero-point 0.  Activation Q/DQ at Conv
  and residual-Add inputs only, scale shared per group; Conv weights stored as int8 with a
  per-output-channel DequantizeLinear (axis 0); biases, head convs and decode in FP32.
  This is what TensorRT 10 (weakly typed, ``--int8 --fp16``) consumes.
* ``trt-fp16`` (``model.qdq.fp16.onnx``): the same with every float tensor of the
  backbone in FP16 (opset 19 Q/DQ with FP16 activation scales), the decode in FP32 and
  FP32 I/O, for TensorRT 11's strongly typed networks where precision comes from the graph.
* ``cpu`` (``model.qdq.cpu.onnx``): for ONNX Runtime on x86 CPUs, which run U8S8 much
  faster than S8S8: activations are uint8 with a zero-point over ``[max(min, -amax), amax]``
  from the same calibration, every tensor of the backbone is quantized (pre-activation
  Conv outputs too, so ORT fuses QLinearConv, QLinearLeakyRelu, QLinearSigmoid, QLinearMul,
  QLinearConcat and runs MaxPool/Resize in uint8) and biases are int32.  Never give this
  one to TensorRT.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..core.errors import InternalError
from .graph import Plan, leaky_alpha, node_by_name

SILU_PRE_CLIP = -6.0  # SiLU(-6) = -0.015: clipping the pre-activation below this costs nothing


class _Editor:
    def __init__(self, proto):
        import onnx

        self.onnx = onnx
        self.m = onnx.ModelProto()
        self.m.CopyFrom(proto)
        self.g = self.m.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.names = {n.name for n in self.g.node} | {o for n in self.g.node for o in n.output} | set(self.inits)
        self.new_nodes_before: dict = {}  # node name -> nodes to insert before it

    def uniq(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def const(self, base: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.uniq(base)
        t = numpy_helper.from_array(np.asarray(arr), name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def node(self, op: str, inputs, outputs, base: str, **attrs):
        from onnx import helper

        return helper.make_node(op, list(inputs), list(outputs), name=self.uniq(base), **attrs)


def act_params(gmin: float, amax: float, unsigned: bool):
    """(scale, zero_point) for an activation: symmetric int8, or uint8 over [max(min,-amax), amax]."""
    amax = max(float(amax), 1e-6)
    if not unsigned:
        return np.float32(amax / 127.0), np.int8(0)
    lo = max(min(float(gmin), 0.0), -amax)
    hi = amax
    scale = (hi - lo) / 255.0
    zp = int(round(-lo / scale))
    return np.float32(scale), np.uint8(min(max(zp, 0), 255))


def weight_scales(w: np.ndarray) -> np.ndarray:
    a = np.abs(w.reshape(w.shape[0], -1)).max(1)
    return np.maximum(a / 127.0, 1e-12).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
    q = np.rint(w / scales.reshape(-1, *([1] * (w.ndim - 1))))
    return np.clip(q, -127, 127).astype(np.int8)


def quantize_bias(b: np.ndarray, x_scale: float, w_scales: np.ndarray):
    """(int32 bias, its float32 per-channel scale x_scale * w_scale) of the CPU flavour."""
    bs = float(x_scale) * w_scales.astype(np.float64)
    bq = np.clip(np.rint(b.astype(np.float64) / bs), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    return bq, bs.astype(np.float32)


def quantized_twin(conv, w: np.ndarray, tag: str, scale, zp):
    """(nodes, initializers, output) of a copy of ``conv`` that reads its own input through
    Q/DQ(scale, zp) and uses per-channel int8 weights, for measuring what quantizing that
    one conv does (bias correction, the per-group amax search)."""
    from onnx import helper, numpy_helper

    sc = weight_scales(w)
    names = [f"{tag}_{s}" for s in ("xs", "xz", "wq", "ws", "wz")]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), names[0]),
             numpy_helper.from_array(np.array(zp), names[1]),
             numpy_helper.from_array(quantize_weight(w, sc), names[2]),
             numpy_helper.from_array(sc, names[3]),
             numpy_helper.from_array(np.zeros(len(sc), np.int8), names[4])]
    nodes = [
        helper.make_node("QuantizeLinear", [conv.input[0], names[0], names[1]], [f"{tag}_xq"], name=f"{tag}_q"),
        helper.make_node("DequantizeLinear", [f"{tag}_xq", names[0], names[1]], [f"{tag}_xdq"], name=f"{tag}_dq"),
        helper.make_node("DequantizeLinear", [names[2], names[3], names[4]], [f"{tag}_wdq"], name=f"{tag}_wdq", axis=0),
        helper.make_node("Conv", [f"{tag}_xdq", f"{tag}_wdq", *conv.input[2:]], [f"{tag}_y"], name=f"{tag}_conv",
                         **{a.name: helper.get_attribute_value(a) for a in conv.attribute}),
    ]
    return nodes, inits, f"{tag}_y"


def build_qdq(proto, plan: Plan, amax: dict, gmin: dict, ranges: dict, flavour: str = "trt",
              bias_shift: dict | None = None):
    """A new ModelProto with Q/DQ inserted.

    Args:
        amax: group id -> calibrated amax.
        gmin: group id -> observed minimum (uint8 zero-points of the CPU flavour).
        ranges: pre-activation conv output -> [min, max] (CPU flavour).
        flavour: "trt" or "cpu" (see the module docstring; "trt-fp16" is :func:`to_fp16`).
        bias_shift: Conv node name -> per-channel mean output shift that quantization causes;
            subtracted from the bias (bias correction, see :mod:`fyexport.quantize.bias`).
    """
    if flavour not in ("trt", "cpu"):
        raise InternalError(f"build_qdq: unknown flavour {flavour!r}")
    cpu = flavour == "cpu"
    ed = _Editor(proto)
    wanted = _activation_params(ed, plan, amax, gmin, ranges, cpu)
    new_nodes, dq_of, qparams = _insert_activation_qdq(ed, plan, wanted, cpu)
    quant_convs = set(plan.conv_nodes)
    for n in ed.g.node:
        if n.op_type == "Conv" and n.name in quant_convs:
            _quantize_conv(ed, n, new_nodes, dq_of, qparams, cpu, (bias_shift or {}).get(n.name))
    # drop float weights no longer used
    used = {i for n in ed.g.node for i in n.input} | {i for _, nn in new_nodes for i in nn.input}
    keep = [i for i in ed.g.initializer if i.name in used]
    del ed.g.initializer[:]
    ed.g.initializer.extend(keep)
    _insert_topologically(ed, new_nodes)
    return ed.m


def _activation_params(ed, plan: Plan, amax: dict, gmin: dict, ranges: dict, cpu: bool) -> dict:
    """{tensor: (scale, zero point)} of every tensor that gets an activation Q/DQ."""
    return {t: spec_params(s, amax, gmin, ranges) for t, s in activation_specs(ed.g, plan, cpu).items()}


@dataclass(frozen=True)
class ActSpec:
    """How one quantized tensor's (scale, zero point) follow from the calibrated ranges: the one
    definition that :func:`build_qdq` evaluates here and quantization-aware training
    (:mod:`fyexport.quantize.qat`) evaluates in torch.

    ``kind``: ``group`` (:func:`act_params` of the scale group's amax and minimum, int8 or
    ``unsigned`` uint8); ``silu`` / ``leaky`` (a Conv output before its activation, derived
    from the post-activation ``group``, LeakyReLU's ``alpha`` floored at 1e-3); ``range`` (a
    Conv output with no recognised activation: its observed range); ``fixed`` (the constant
    range ``lo``..``hi``); ``unit`` (1/255 and zero point 0: 0..1 images, sigmoid outputs)."""

    kind: str
    group: str | None = None
    unsigned: bool = False
    alpha: float = 0.0
    tensor: str | None = None
    lo: float = 0.0
    hi: float = 0.0


def activation_specs(graph, plan: Plan, cpu: bool) -> dict:
    """{tensor: :class:`ActSpec`} of every tensor that gets an activation Q/DQ, in the order
    the Q/DQ pairs are inserted."""
    wanted = {t: ActSpec("group", plan.tensor_group[t], cpu) for t in plan.act_tensors}
    if not cpu:
        return wanted
    for ts in plan.groups.values():
        for t in ts:
            wanted.setdefault(t, ActSpec("group", plan.tensor_group[t], cpu))
    for y in plan.conv_outputs:
        wanted[y] = _pre_activation_spec(graph, plan, y)
        kind = plan.activations.get(y, ("none",))
        if kind[0] == "silu":
            wanted[node_by_name(graph, kind[1]).output[0]] = ActSpec("unit")
    for i in {i.name for i in graph.input}:
        if i in wanted:
            wanted[i] = ActSpec("unit")  # 0..1 images are exact in uint8
    return wanted


def spec_params(spec: ActSpec, amax: dict, gmin: dict, ranges: dict):
    """(scale float32, zero point int8/uint8) of ``spec`` for these calibrated ranges."""
    if spec.kind == "group":
        return act_params(gmin.get(spec.group, 0.0), amax[spec.group], spec.unsigned)
    if spec.kind == "unit":
        return np.float32(1.0 / 255.0), np.uint8(0)
    if spec.kind == "range":
        lo, hi = ranges.get(spec.tensor, (0.0, 1.0))
        return _range_params(lo, hi)
    if spec.kind == "fixed":
        return _range_params(spec.lo, spec.hi)
    hi = amax[spec.group]
    if spec.kind == "silu":
        return _range_params(max(SILU_PRE_CLIP, -hi), hi)
    if spec.kind == "leaky":
        return _range_params(max(min(gmin.get(spec.group, 0.0), 0.0) / spec.alpha, -hi / spec.alpha), hi)
    raise InternalError(f"unknown activation spec {spec.kind!r}")


def reads_dq(node, k: int, plan: Plan, quant_convs: set, cpu: bool) -> bool:
    """Whether input ``k`` of ``node`` (a node of ``plan.region`` whose input is quantized)
    reads the dequantized tensor: in the CPU flavour every consumer but a float Conv; in the
    TensorRT flavours a quantized Conv's data input and a residual Add's inputs only."""
    if cpu:
        return not (node.op_type == "Conv" and node.name not in quant_convs)
    return (node.op_type == "Conv" and node.name in quant_convs and k == 0) or \
        (node.op_type == "Add" and node.input[k] in plan.act_tensors)


def _insert_activation_qdq(ed, plan: Plan, wanted: dict, cpu: bool):
    """One Q -> DQ pair per tensor; the chosen consumers read the DQ output.  Returns
    (new nodes, {tensor: its DQ output}, {tensor: (scale name, zp name, scale, zp)})."""
    qtype = "u8" if cpu else "s8"
    qparams: dict = {}
    new_nodes, dq_of = [], {}
    for t, (scale, zp) in wanted.items():
        base = t.replace("/", "_").strip("_")
        if t not in qparams:
            s = ed.const(f"{base}_scale", np.array(scale, np.float32))
            z = ed.const(f"{base}_zp", np.array(zp, np.uint8 if cpu else np.int8))
            qparams[t] = (s, z, float(scale), int(zp))
        s, z, _, _ = qparams[t]
        tq, tdq = ed.uniq(f"{base}_q{qtype}"), ed.uniq(f"{base}_dq")
        new_nodes.append((t, ed.node("QuantizeLinear", [t, s, z], [tq], f"{base}_Quantize")))
        new_nodes.append((t, ed.node("DequantizeLinear", [tq, s, z], [tdq], f"{base}_Dequantize")))
        dq_of[t] = tdq
    quant_convs = set(plan.conv_nodes)
    for n in ed.g.node:
        if n.name not in plan.region:
            continue
        for k, i in enumerate(n.input):
            if i not in dq_of:
                continue
            if reads_dq(n, k, plan, quant_convs, cpu):
                n.input[k] = dq_of[i]
    return new_nodes, dq_of, qparams


def _quantize_conv(ed, n, new_nodes: list, dq_of: dict, qparams: dict, cpu: bool, shift) -> None:
    """Bias correction, int8 per-channel weights (axis 0) and, for the CPU flavour, an int32 bias."""
    base = n.name.replace("/", "_").strip("_")
    if shift is not None:
        shift = np.asarray(shift, np.float64)
        old = ed.array(n.input[2]).astype(np.float64) if len(n.input) > 2 and n.input[2] else np.zeros(len(shift))
        corrected = ed.const(base + "_b_corrected", (old - shift).astype(np.float32))
        if len(n.input) > 2:
            n.input[2] = corrected
        else:
            n.input.append(corrected)
    w = ed.array(n.input[1]).astype(np.float32)
    sc = weight_scales(w)
    wq = ed.const(f"{base}_w_int8", quantize_weight(w, sc))
    ws = ed.const(f"{base}_w_scale", sc)
    wz = ed.const(f"{base}_w_zp", np.zeros(len(sc), np.int8))
    wdq = ed.uniq(f"{base}_w_dq")
    new_nodes.append((None, ed.node("DequantizeLinear", [wq, ws, wz], [wdq], f"{base}_w_Dequantize", axis=0)))
    n.input[1] = wdq
    if not (cpu and len(n.input) > 2 and n.input[2] in ed.inits):
        return
    src = next((t for t, d in dq_of.items() if d == n.input[0]), None)
    if src is None:
        return
    bq, bs = quantize_bias(ed.array(n.input[2]), qparams[src][2], sc)
    bqn = ed.const(f"{base}_b_int32", bq)
    bsn = ed.const(f"{base}_b_scale", bs)
    bzn = ed.const(f"{base}_b_zp", np.zeros(len(bs), np.int32))
    bdq = ed.uniq(f"{base}_b_dq")
    new_nodes.append((None, ed.node("DequantizeLinear", [bqn, bsn, bzn], [bdq], f"{base}_b_Dequantize", axis=0)))
    n.input[2] = bdq


def _pre_activation_spec(graph, plan: Plan, y: str) -> ActSpec:
    """uint8 range of a Conv output before its activation, derived from the calibrated
    post-activation range: LeakyReLU is invertible (min_pre = min_post / alpha); for SiLU the
    top is the post-activation amax and the bottom is clipped at SILU_PRE_CLIP, where SiLU is
    already ~0.  Conv outputs with no recognised activation use their observed min/max."""
    kind = plan.activations.get(y, ("none",))
    if kind[0] == "none":
        return ActSpec("range", tensor=y)
    act = node_by_name(graph, kind[2] if kind[0] == "silu" else kind[1])
    g = plan.tensor_group.get(act.output[0])
    if g is None:  # post-activation not quantized (feeds only float layers): generous range
        return ActSpec("fixed", lo=SILU_PRE_CLIP if kind[0] == "silu" else -8.0, hi=8.0)
    if kind[0] == "silu":
        return ActSpec("silu", g)
    return ActSpec("leaky", g, alpha=max(leaky_alpha(act), 1e-3))


def _range_params(lo: float, hi: float):
    lo = min(lo, 0.0)
    hi = max(hi, 0.0)
    scale = max(hi - lo, 1e-6) / 255.0
    zp = int(round(-lo / scale))
    return np.float32(scale), np.uint8(min(max(zp, 0), 255))


def _insert_topologically(ed: _Editor, new_nodes) -> None:
    """Place each new node right after the producer of the tensor it reads."""
    after: dict = {}
    first: list = []
    for t, node in new_nodes:
        if t is None:
            first.append(node)
        else:
            after.setdefault(t, []).append(node)
    out = list(first)
    graph_inputs = {i.name for i in ed.g.input}
    for t in list(after):
        if t in graph_inputs:
            out.extend(after.pop(t))
    for n in ed.g.node:
        out.append(n)
        for o in n.output:
            out.extend(after.pop(o, []))
    if after:
        raise InternalError(f"could not place Q/DQ for {sorted(after)[:3]}")
    del ed.g.node[:]
    ed.g.node.extend(out)


# -- FP16 flavour for TensorRT 11 ---------------------------------------------------------------

def to_fp16(qdq_proto, plan: Plan, opset: int = 19):
    """FP16 backbone (opset-19 Q/DQ with FP16 activation scales), FP32 decode and I/O."""
    from onnx import TensorProto, helper, numpy_helper

    m = _convert_opset(qdq_proto, opset) if _opset(qdq_proto) < opset else copy.deepcopy(qdq_proto)
    g = m.graph
    floats = _float_tensors(m)
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    region = set(plan.region)
    # tensors feeding the decode (outputs of region nodes consumed outside it) go back to fp32
    # float initializers read by the backbone (biases, Q/DQ scales) become fp16; int8 weights
    # are re-rounded to their fp16 per-channel scale so DQ -> Conv stays a clean INT8 pattern
    region_nodes = [n for n in g.node if n.name in region or _is_qdq_in_region(n, producer, region)]
    done = _fp32_only_inputs(g)  # ONNX requires these to stay float32 (Resize scales...)
    for n in region_nodes:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT8:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float64)
            s32 = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            s16 = fp16_scales(s32)
            shape = (-1,) + (1,) * (q.ndim - 1) if s32.ndim == 1 else ()
            q2 = np.clip(np.rint(q * s32.reshape(shape) / s16.astype(np.float64).reshape(shape)), -127, 127)
            inits[n.input[0]].CopyFrom(numpy_helper.from_array(q2.astype(np.int8), n.input[0]))
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(s16, n.input[1]))
            done.add(n.input[1])
        for k, i in enumerate(n.input):
            t = inits.get(i)
            if t is not None and t.data_type == TensorProto.FLOAT and i not in done:
                a = numpy_helper.to_array(t)
                is_scale = k == 1 and n.op_type in ("QuantizeLinear", "DequantizeLinear")
                t.CopyFrom(numpy_helper.from_array(fp16_scales(a) if is_scale else a.astype(np.float16), i))
                done.add(i)
    new_nodes, rename = [], {}
    inp = [i for i in g.input if i.name not in inits][0]
    casted_in = inp.name + "_fp16"
    new_nodes.insert(0, (inp.name, helper.make_node("Cast", [inp.name], [casted_in], name="images_Cast_fp16",
                                                    to=TensorProto.FLOAT16)))
    rename[inp.name] = casted_in
    # boundary: region tensors read by decode nodes
    decode_nodes = [n for n in g.node if n.name not in region and not _is_qdq_in_region(n, producer, region)]
    boundary = {}
    for n in decode_nodes:
        for k, i in enumerate(n.input):
            p = producer.get(i)
            if p is not None and (p.name in region or _is_qdq_in_region(p, producer, region)) and i in floats:
                if i not in boundary:
                    boundary[i] = i + "_fp32"
                    new_nodes.append((i, helper.make_node("Cast", [i], [boundary[i]], name=i + "_Cast_fp32",
                                                          to=TensorProto.FLOAT)))
                n.input[k] = boundary[i]
    for n in region_nodes:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    ed = _Editor.__new__(_Editor)
    ed.m, ed.g = m, g
    _insert_topologically(ed, new_nodes)
    del g.value_info[:]
    return m


FP16_MIN_SCALE = 2.0 ** -24  # the smallest positive FP16 (subnormal); below it a scale rounds to 0
FP16_MAX = 65504.0
# inputs ONNX types as tensor(float) whatever the data's type (TensorRT reads them as float too)
FP32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def fp16_scales(s) -> np.ndarray:
    """Q/DQ scales in FP16 without underflow: a scale below 2^-24 (a dead channel after pruning)
    would become 0, which TensorRT's parser rejects ("Scale coefficients must all be positive")."""
    return np.clip(np.asarray(s, np.float64), FP16_MIN_SCALE, FP16_MAX).astype(np.float16)


def _fp32_only_inputs(g) -> set:
    """Names of the tensors read where ONNX requires float32 (:data:`FP32_ONLY_INPUTS`)."""
    return {n.input[k] for n in g.node for k in FP32_ONLY_INPUTS.get(n.op_type, ()) if k < len(n.input) and n.input[k]}


def _is_qdq_in_region(n, producer, region) -> bool:
    if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return False
    src = n.input[0]
    p = producer.get(src)
    depth = 0
    while p is not None and p.op_type in ("QuantizeLinear", "DequantizeLinear") and depth < 4:
        src = p.input[0]
        p = producer.get(src)
        depth += 1
    return p is None or p.name in region


def _float_tensors(m) -> set:
    """Names of the tensors that are (or may be) floating point: every tensor but those ONNX's
    shape inference types as something else (the shapes and indices an unsimplified export
    computes with Constant, Shape and Gather nodes stay what they are)."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - without inference every tensor counts as float (the old behaviour)
        inferred = m
    g = inferred.graph
    typed = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            typed[n.output[0]] = n.attribute[0].t.data_type
    ok = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    return {o for n in g.node for o in n.output if typed.get(o, TensorProto.FLOAT) in ok or not typed.get(o)}


def _convert_opset(proto, opset: int):
    """``proto`` at ``opset`` by ONNX's version converter, with the nodes it has no schema for
    (TensorRT plugins such as EfficientNMS_TRT, in the default domain) set aside and put back:
    the converter refuses a graph that contains them."""
    import onnx
    from onnx import helper

    unknown = [n for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain or "")]
    if not unknown:
        return onnx.version_converter.convert_version(proto, opset)
    m = copy.deepcopy(proto)
    g = m.graph
    made = {o for n in unknown for o in n.output}
    kept = [n for n in g.node if n.op_type not in {u.op_type for u in unknown}]
    outputs = list(g.output)
    cut = sorted({i for n in unknown for i in n.input if i and i not in made})
    del g.node[:]
    g.node.extend(kept)
    del g.output[:]
    g.output.extend([o for o in outputs if o.name not in made] +
                    [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in cut])
    c = onnx.version_converter.convert_version(m, opset)
    del c.graph.output[:]
    c.graph.output.extend(outputs)
    c.graph.node.extend(copy.deepcopy(unknown))
    return c


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
