"""Where Q/DQ goes in a YOLOv7 ONNX graph (docs/int8-tensorrt.md, 3).

Rules (TensorRT's explicit-quantization guidance and NVIDIA's yolo_deepstream findings):

* every Conv's activation input is quantized per-tensor, its weight per output channel;
* nothing between a Conv and its activation (TensorRT fuses Conv+act itself);
* both inputs of a residual Add are quantized;
* all inputs and the output of a Concat share one scale, and so do the input and output
  of MaxPool, nearest Resize and Slice (ops that only move values), so TensorRT can keep
  them in INT8 without re-quantizing;
* the detection head's final convs (those feeding the decode's Reshape) and the decode
  itself stay in float.

:func:`analyse` turns a graph into a :class:`Plan`: the quantized tensors, the
scale-sharing groups (union-find over the value-moving ops) and, per group, the few
"representative" tensors whose values cover the whole group, which is all calibration
needs to histogram.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

MOVERS = ("MaxPool", "Resize", "Slice", "Upsample")  # output values are a subset of the input's
DERIVED = ("Concat", "Resize", "Slice", "Upsample")  # outputs that only copy values of their inputs


@dataclass
class Plan:
    conv_nodes: list  # names of quantized Conv nodes
    excluded_convs: list  # names of Conv nodes kept in float
    act_tensors: list  # tensors that get an activation Q/DQ (Conv inputs, Add inputs)
    groups: dict  # group id (its first tensor name) -> sorted tensor names sharing a scale
    tensor_group: dict  # tensor -> group id
    reps: dict  # group id -> tensors to histogram (each gets its own amax; the group takes the max)
    conv_outputs: list = field(default_factory=list)  # pre-activation Conv outputs (CPU flavour)
    activations: dict = field(default_factory=dict)  # conv output -> ("silu", sig, mul) | ("leaky", node)
    region: set = field(default_factory=set)  # node names outside the decode

    def group_of(self, t: str) -> str:
        return self.tensor_group[t]


class _UF:
    def __init__(self):
        self.p: dict = {}

    def find(self, x):
        self.p.setdefault(x, x)
        while self.p[x] != x:
            self.p[x] = self.p[self.p[x]]
            x = self.p[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[max(ra, rb)] = min(ra, rb)


def graph_index(proto):
    producer, consumers = {}, defaultdict(list)
    for n in proto.graph.node:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            if i:
                consumers[i].append(n)
    inits = {i.name for i in proto.graph.initializer}
    for n in proto.graph.node:  # Constant nodes are constants too
        if n.op_type == "Constant":
            inits.update(n.output)
    return producer, consumers, inits


def head_convs(proto) -> list:
    """Conv nodes whose output goes into the decode (a Reshape, possibly through a Cast)."""
    _, consumers, _ = graph_index(proto)

    def feeds_reshape(t, depth=0):
        for c in consumers[t]:
            if c.op_type == "Reshape" or (c.op_type == "Cast" and depth < 2 and feeds_reshape(c.output[0], depth + 1)):
                return True
        return False

    return [n.name for n in proto.graph.node if n.op_type == "Conv" and feeds_reshape(n.output[0])]


def decode_nodes(proto, heads: set, consumers) -> set:
    """Names of the nodes downstream of the head convs (the decode, which stays float)."""
    decode, stack = set(), [n for n in proto.graph.node if n.name in heads]
    while stack:
        n = stack.pop()
        for o in n.output:
            for c in consumers[o]:
                if c.name not in decode:
                    decode.add(c.name)
                    stack.append(c)
    return decode


def analyse(proto, exclude: str | None = None) -> Plan:
    producer, consumers, consts = graph_index(proto)
    nodes = list(proto.graph.node)
    rx = re.compile(exclude) if exclude else None
    heads = set(head_convs(proto))
    decode = decode_nodes(proto, heads, consumers)
    region = {n.name for n in nodes if n.name not in decode}

    convs, excluded = [], []
    for n in nodes:
        if n.op_type != "Conv" or n.name not in region:
            continue
        if n.name in heads or (rx and (rx.search(n.name) or rx.search(n.output[0]))):
            excluded.append(n.name)
        else:
            convs.append(n)
    act = []
    for n in convs:
        act.append(n.input[0])
    for n in nodes:
        if n.op_type == "Add" and n.name in region and all(i not in consts for i in n.input):
            act.extend(n.input)
    act = list(dict.fromkeys(act))

    uf = _UF()
    for n in nodes:
        if n.name not in region:
            continue
        if n.op_type == "Concat":
            for i in n.input:
                uf.union(i, n.output[0])
        elif n.op_type in MOVERS:
            if n.op_type == "Resize" and resize_mode(n) != "nearest":
                continue
            uf.union(n.input[0], n.output[0])
    quantized_roots = {uf.find(t) for t in act}
    members = defaultdict(set)
    for t in list(uf.p):
        r = uf.find(t)
        if r in quantized_roots:
            members[r].add(t)
    for t in act:
        members[uf.find(t)].add(t)
    groups, tensor_group, reps = {}, {}, {}
    for _, ts in sorted(members.items(), key=lambda kv: min(kv[1])):
        gid = min(ts)  # stable: a group is named after its first tensor, whatever else is excluded
        groups[gid] = sorted(ts)
        for t in ts:
            tensor_group[t] = gid
        # Every tensor is calibrated by itself and the group takes the largest amax
        # (docs/int8-tensorrt.md 5: TensorRT calibrates each tensor; shared scales unify to the
        # max).  One KL search over a Concat's merged histogram instead lets the bulk of small
        # inputs clip the one input with the large values (pruned yolov7: model.48's output
        # clipped from 135 to 57).  Concat outputs and copies (Resize, Slice) add no values
        # of their own and are not histogrammed; MaxPool outputs are.
        r = sorted(t for t in ts if t not in consts and not (t in producer and producer[t].op_type in DERIVED))
        reps[gid] = r or sorted(ts)[:1]

    conv_outputs, activations = [], {}
    for n in convs + [n for n in nodes if n.name in excluded]:
        y = n.output[0]
        cons = consumers[y]
        sig = [c for c in cons if c.op_type == "Sigmoid"]
        mul = [c for c in cons if c.op_type == "Mul" and y in c.input]
        leaky = [c for c in cons if c.op_type == "LeakyRelu"]
        if n.name in heads:
            continue
        if len(cons) == 2 and sig and mul and sig[0].output[0] in mul[0].input:
            activations[y] = ("silu", sig[0].name, mul[0].name)
        elif len(cons) == 1 and leaky:
            activations[y] = ("leaky", leaky[0].name)
        else:
            activations[y] = ("none",)
        conv_outputs.append(y)
    return Plan([n.name for n in convs], excluded, act, groups, tensor_group, reps, conv_outputs, activations, region)


def resize_mode(node) -> str:
    for a in node.attribute:
        if a.name == "mode":
            return a.s.decode() if isinstance(a.s, bytes) else str(a.s)
    return "nearest"


LEAKY_DEFAULT_ALPHA = 0.01


def leaky_alpha(node) -> float:
    """A LeakyRelu node's alpha (ONNX's default 0.01 when the attribute is absent)."""
    for a in node.attribute:
        if a.name == "alpha":
            return float(a.f)
    return LEAKY_DEFAULT_ALPHA


def node_by_name(graph, name):
    for n in graph.node:
        if n.name == name:
            return n
    raise KeyError(name)
