"""``fyexport inspect``: what a Q/DQ model quantizes, and where it breaks the placement rules
TensorRT fuses best (see :mod:`fyexport.quantize.graph`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .graph import decode_nodes, graph_index, head_convs


@dataclass
class Inspection:
    path: str
    flavour: str
    quantized_convs: list = field(default_factory=list)
    float_convs: list = field(default_factory=list)
    q_nodes: int = 0
    dq_nodes: int = 0
    activation_dtype: str = ""
    scales: dict = field(default_factory=dict)  # tensor -> (scale, zero point)
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _value(inits, name):
    from onnx import numpy_helper

    t = inits.get(name)
    return None if t is None else numpy_helper.to_array(t)


def inspect_qdq(proto, path: str = "") -> Inspection:
    from ..onnx.facts import read_meta

    flavour = read_meta(proto).flavour or ""
    producer, consumers, consts = graph_index(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    rep = Inspection(path=path, flavour=flavour or "unknown")
    qscale = _count_qdq(proto, inits, rep)
    if not rep.q_nodes:
        rep.notes.append("no QuantizeLinear: this is a float model")
        return rep
    cpu = flavour == "cpu" or rep.activation_dtype == "uint8"
    heads = set(head_convs(proto))
    decode = decode_nodes(proto, heads, consumers)
    _check_convs(proto, producer, consumers, inits, heads, cpu, rep)
    _check_decode_and_adds(proto, producer, consts, decode, rep)
    _check_shared_scales(proto, producer, decode, qscale, rep)
    if cpu:
        rep.notes.append("CPU flavour (uint8 activations, Conv outputs quantized): for ONNX Runtime, never TensorRT")
    else:
        rep.violations += [f"{t}: zero-point {z} (TensorRT needs symmetric, zero-point 0)"
                           for t, (s, z) in qscale.items() if z != 0]
    return rep


def _count_qdq(proto, inits, rep: Inspection) -> dict:
    """Counts Q/DQ nodes into ``rep``; returns {float tensor: (scale, zero point)} of each Q."""
    qscale = {}
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear":
            rep.q_nodes += 1
            s, z = _value(inits, n.input[1]), _value(inits, n.input[2]) if len(n.input) > 2 else None
            if s is not None:
                qscale[n.input[0]] = (float(np.asarray(s).ravel()[0]), int(np.asarray(z).ravel()[0]) if z is not None
                                      else 0)
                rep.activation_dtype = str(np.asarray(z).dtype) if z is not None else "uint8"
        elif n.op_type == "DequantizeLinear":
            rep.dq_nodes += 1
    rep.scales = {k: list(v) for k, v in sorted(qscale.items())}
    return qscale


def _from_dq(producer, t) -> bool:
    p = producer.get(t)
    return p is not None and p.op_type == "DequantizeLinear"


def _dq_source(producer, t):
    """The float tensor a DQ output stands for (through its Q)."""
    p = producer.get(t)
    if p is None or p.op_type != "DequantizeLinear":
        return None
    q = producer.get(p.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _check_convs(proto, producer, consumers, inits, heads: set, cpu: bool, rep: Inspection) -> None:
    for n in proto.graph.node:
        if n.op_type != "Conv":
            continue
        x_ok, w_ok = _from_dq(producer, n.input[0]), _from_dq(producer, n.input[1])
        if x_ok and w_ok:
            rep.quantized_convs.append(n.name)
            wdq = producer[n.input[1]]
            axis = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
            zp = _value(inits, wdq.input[2]) if len(wdq.input) > 2 else None
            sc = _value(inits, wdq.input[1])
            if sc is None or np.asarray(sc).ndim != 1 or axis != 0:
                rep.violations.append(f"{n.name}: weights not quantized per output channel (axis 0)")
            if zp is not None and np.any(zp != 0):
                rep.violations.append(f"{n.name}: weight zero-point is not 0")
        else:
            rep.float_convs.append(n.name)
            if n.name not in heads and (x_ok or w_ok):
                rep.violations.append(f"{n.name}: only its {'input' if x_ok else 'weight'} is quantized")
            elif n.name not in heads:
                rep.notes.append(f"{n.name}: kept in float (excluded)")
        if not cpu and any(c.op_type == "QuantizeLinear" for c in consumers[n.output[0]]):
            rep.violations.append(f"{n.name}: Q/DQ between the conv and its activation (breaks Conv+act fusion)")


def _check_decode_and_adds(proto, producer, consts, decode: set, rep: Inspection) -> None:
    for n in proto.graph.node:
        if n.name in decode and n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            rep.violations.append(f"{n.name}: Q/DQ inside the decode (it must stay float)")
        if n.op_type == "Add" and n.name not in decode and all(i not in consts for i in n.input):
            if not all(_from_dq(producer, i) for i in n.input):
                rep.violations.append(f"{n.name}: residual Add with an unquantized input")


def _check_shared_scales(proto, producer, decode: set, qscale: dict, rep: Inspection) -> None:
    """Every input and the output of a Concat (and MaxPool) must share one scale."""
    for n in proto.graph.node:
        if n.name in decode or n.op_type not in ("Concat", "MaxPool"):
            continue
        ins = n.input if n.op_type == "Concat" else n.input[:1]
        ts = [_dq_source(producer, i) or i for i in ins] + [n.output[0]]
        got = {t: qscale[t] for t in ts if t in qscale}
        if len(got) >= 2 and len({round(v[0], 9) for v in got.values()}) > 1:
            rep.violations.append(f"{n.name}: inputs/output quantized with different scales "
                                  f"({', '.join(f'{v[0]:.4g}' for v in got.values())})")


def render(rep: Inspection) -> None:
    from rich.table import Table

    from ..core.log import table_console

    con = table_console()
    t = Table(title=f"{rep.path} ({rep.flavour})", show_header=False)
    t.add_column("k", style="bold")
    t.add_column("v")
    t.add_row("quantized convs", str(len(rep.quantized_convs)))
    t.add_row("float convs", ", ".join(rep.float_convs) or "-")
    t.add_row("Q / DQ nodes", f"{rep.q_nodes} / {rep.dq_nodes}")
    t.add_row("activation type", rep.activation_dtype or "-")
    if rep.scales:
        sc = np.array([v[0] for v in rep.scales.values()])
        t.add_row("activation scales", f"{len(sc)} tensors, min {sc.min():.3g}, median {np.median(sc):.3g}, "
                                       f"max {sc.max():.3g}")
    t.add_row("violations", str(len(rep.violations)))
    con.print(t)
    for v in rep.violations:
        con.print(f"[red]violation[/red] {v}")
    for n in rep.notes[:20]:
        con.print(f"[dim]note {n}[/dim]")
