"""Where the Q/DQ models quantize, as places in the PyTorch model (quantization-aware training).

The export names every ONNX node after the module that made it (``/m/model.51/cv1/conv/Conv``:
the wrapper ``m`` of :func:`fyexport.export.decoded_only`, then the module path
``model.51.cv1.conv``, then the op).  :func:`place` walks the Q/DQ placement that
:func:`fyexport.quantize.qdq.build_qdq` inserts for one flavour (the same
:func:`~fyexport.quantize.qdq.activation_specs` and
:func:`~fyexport.quantize.qdq.reads_dq`) and turns it into:

* input quantizers: (leaf module, argument position) -> the :class:`ActSpec` the ONNX node
  reads its input with;
* the sigmoid inside a SiLU module (the CPU flavour quantizes it);
* the quantized convs (int8 per-channel weights, the CPU flavour's int32 bias).

A quantization that ONNX applies inside a module that is not a leaf (the Concats inside
SPPCSPC) is moved to the consumers of that op's output when the op only moves values
(Concat, MaxPool, nearest Resize, Slice): quantizing after such an op equals quantizing its
inputs with the same scale.  Anything else is an error naming the node, never a silent
difference; the parity tests (tests/test_quantize_qat.py) compare the result with the Q/DQ
model on ONNX Runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import InputError
from .graph import Plan, graph_index

VALUE_MOVERS = ("Concat", "MaxPool", "Resize", "Slice", "Upsample")  # output values are input values
WRAPPER = "m"  # the attribute of export.decoded_only's wrapper, first in every node name


@dataclass
class Placement:
    """The torch side of one flavour's Q/DQ placement (module paths of the fused model)."""

    flavour: str
    inputs: dict  # (module path, argument position) -> ActSpec
    silu: dict  # SiLU module path -> ActSpec of its sigmoid output
    convs: dict  # quantized Conv2d module path -> ONNX node name
    conv_input: dict  # quantized Conv2d module path -> ActSpec of its input (the CPU flavour's int32 bias)
    specs: dict  # ONNX tensor -> ActSpec (every tensor the flavour quantizes)
    moved: list = field(default_factory=list)  # ONNX nodes whose input quantization moved downstream


def module_path(node_name: str) -> tuple[str, str]:
    """(module path, op) of an exported node name such as ``/m/model.0/conv/Conv``."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return "", parts[-1] if parts else ""
    if parts[0] == WRAPPER:
        parts = parts[1:]
    return ".".join(parts[:-1]), parts[-1]


@dataclass
class _Walk:
    """What the walk knows: per tensor, the spec its torch value still owes (a quantization
    moved downstream) and the spec whose grid its ONNX value lies on."""

    owed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)


def place(model, proto, plan: Plan, flavour: str) -> Placement:
    """The torch places of ``flavour``'s ("trt" or "cpu") Q/DQ for ``model`` (fused, the one
    ``proto`` was exported from)."""
    from .qdq import activation_specs

    cpu = flavour == "cpu"
    producer, consumers, consts = graph_index(proto)
    specs = activation_specs(proto.graph, plan, cpu)
    leaves = _leaves(model, proto, plan)
    pl = Placement(flavour, {}, {}, {}, {}, specs)
    walk = _Walk()
    quant_convs = set(plan.conv_nodes)
    for node in proto.graph.node:
        if node.name not in plan.region or node.op_type == "Constant":
            continue
        path = leaves.get(node.name)
        reads = []
        for k, t in enumerate(node.input):
            if not t or t in consts:
                continue
            spec = _read_spec(node, k, t, specs, plan, quant_convs, cpu)
            reads.append(_edge(pl, walk, node, k, t, spec, path, producer, leaves, model))
        _after_node(walk, node, reads)
        if node.op_type == "Conv" and node.name in quant_convs:
            _add_conv(pl, node, path, specs, model, proto)
    _check_outputs(walk, proto, plan, consumers)
    return pl


def _read_spec(node, k, t, specs, plan, quant_convs, cpu):
    """The spec ``node`` reads input ``k`` with in the Q/DQ model (None: the float tensor)."""
    from .qdq import reads_dq

    return specs[t] if t in specs and reads_dq(node, k, plan, quant_convs, cpu) else None


def _edge(pl: Placement, walk: _Walk, node, k: int, t: str, spec, path, producer, leaves, model):
    """Place one input edge; returns the grid spec of what ``node`` reads (for the walk)."""
    owed = walk.owed.get(t)
    read_grid = spec or walk.grid.get(t)
    entry = path is not None and (t not in producer or leaves.get(producer[t].name) != path)
    if entry:  # a leaf module's argument: a pre-forward quantizer does it
        want = spec or owed
        if owed is not None and spec not in (None, owed):
            raise _unsupported(node, f"input {t} reads another scale than the one owed to it")
        if want is not None:
            key = (path, _position(model, path, node, k))
            if pl.inputs.setdefault(key, want) != want:
                raise _unsupported(node, f"{path} reads its input with two scales")
        return ("exact", read_grid)
    if owed is None and (spec is None or spec == walk.grid.get(t)):
        return ("exact", read_grid)
    if _is_mover(node):  # quantize after the op instead of before it
        if spec is not None and owed is not None and spec != owed:
            raise _unsupported(node, f"input {t} reads another scale than the one owed to it")
        pl.moved.append(node.name)
        return ("owed", spec or owed)
    prod = producer.get(t)
    if path is not None and node.op_type == "Mul" and prod is not None and prod.op_type == "Sigmoid" \
            and leaves.get(prod.name) == path and owed is None:
        pl.silu[path] = spec
        return ("exact", None)
    raise _unsupported(node, f"quantizes input {t} inside a module that is not a leaf")


def _after_node(walk: _Walk, node, reads: list) -> None:
    """The owed spec and the grid of ``node``'s output from what it read."""
    if not _is_mover(node):
        return
    owed = {s for kind, s in reads if kind == "owed"}
    grids = {s for _, s in reads}
    out = node.output[0]
    if len(grids) == 1 and None not in grids:
        walk.grid[out] = next(iter(grids))
    if owed:
        if len(owed) > 1 or len(grids) > 1:
            raise _unsupported(node, "mixes inputs of different scales")
        walk.owed[out] = next(iter(owed))


def _check_outputs(walk: _Walk, proto, plan: Plan, consumers) -> None:
    """A quantization moved downstream must have been done before anything outside the region reads."""
    outs = {o.name for o in proto.graph.output}
    for t in walk.owed:
        if t in outs or any(c.name not in plan.region for c in consumers[t]):
            raise _unsupported(None, f"tensor {t} leaves the quantized region still owing its quantization")


def _is_mover(node) -> bool:
    from .graph import resize_mode

    return node.op_type in VALUE_MOVERS and (node.op_type != "Resize" or resize_mode(node) == "nearest")


def _position(model, path: str, node, k: int) -> int:
    """The argument position of ONNX input ``k`` in the forward of the leaf module at ``path``:
    list-taking modules (Concat, Shortcut) get the input index, the others take one tensor."""
    from ..models.common import Concat, Shortcut

    return k if isinstance(model.get_submodule(path), (Concat, Shortcut)) else 0


def _leaves(model, proto, plan: Plan) -> dict:
    """{ONNX node name: leaf module path} for the region's nodes made by a leaf module (None
    for those made inside a module with children, such as SPPCSPC's Concats)."""
    out = {}
    for node in proto.graph.node:
        if node.name not in plan.region or node.op_type == "Constant":
            continue
        path, _ = module_path(node.name)
        try:
            mod = model.get_submodule(path) if path else None
        except AttributeError:
            mod = None
        if mod is None:
            raise InputError(f"ONNX node {node.name!r} names no module of the model",
                             "Quantization-aware training needs the ONNX exported from this model by fyexport")
        out[node.name] = path if not any(True for _ in mod.children()) else None
    return out


def _add_conv(pl: Placement, node, path, specs: dict, model, proto) -> None:
    """A quantized Conv: its module must be a Conv2d holding the node's weights."""
    import numpy as np
    import torch
    from onnx import numpy_helper

    mod = model.get_submodule(path) if path else None
    if not isinstance(mod, torch.nn.Conv2d):
        raise _unsupported(node, f"{path} is not a Conv2d")
    init = next((i for i in proto.graph.initializer if i.name == node.input[1]), None)
    w = numpy_helper.to_array(init) if init is not None else None
    if w is None or tuple(w.shape) != tuple(mod.weight.shape) or \
            not np.allclose(w, mod.weight.detach().float().cpu().numpy(), rtol=1e-4, atol=1e-6):
        raise _unsupported(node, f"its weights are not those of {path}")
    pl.convs[path] = node.name
    pl.conv_input[path] = specs.get(node.input[0])


def _unsupported(node, why: str) -> InputError:
    where = f"ONNX node {node.name!r}: " if node is not None else ""
    return InputError(f"quantization-aware training cannot mirror the Q/DQ placement: {where}{why}",
                      "Report this model's cfg; calibrate without --qat meanwhile")
