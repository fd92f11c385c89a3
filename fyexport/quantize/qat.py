"""Quantization-aware training: fake quantization in the PyTorch model exactly where and how
the Q/DQ export quantizes.

:func:`prepare_qat` takes a fyexport model, the FP32 ONNX exported from it, the Q/DQ
:class:`~fyexport.quantize.graph.Plan` of that ONNX and the calibrated ranges, and returns a
fused copy of the model that computes what the Q/DQ model of one flavour computes:

* the places come from :func:`fyexport.quantize.qat_place.place` (the same
  :func:`~fyexport.quantize.qdq.activation_specs` and
  :func:`~fyexport.quantize.qdq.reads_dq` that :func:`~fyexport.quantize.qdq.build_qdq`
  uses), so PTQ and QAT share one definition of placement;
* every scale and zero point is the same function of the group ranges as
  :func:`~fyexport.quantize.qdq.spec_params` (evaluated here in float64, so a frozen scale is
  bit for bit the calibrated one): int8 symmetric activations for TensorRT (``trt``), uint8
  with a zero point for ONNX Runtime on CPUs (``cpu``, which also quantizes pre-activation
  Conv outputs, the SiLU sigmoid and the int32 bias), per-output-channel symmetric int8
  weights (max |w| / 127, floor 1e-12, clipped to +-127);
* rounding is half to even and the arithmetic float32, as ONNX QuantizeLinear /
  DequantizeLinear on ONNX Runtime, also under bfloat16 autocast.

The model keeps its state_dict keys (Conv2d and SiLU modules change class in place, inputs
are quantized by forward pre-hooks); the ranges live in ``model.qat`` (:class:`QatState`):
each group's amax (and, for ``cpu``, its minimum) is the calibrated value times
``1 + a learned relative change`` (LSQ-style gradients through scale and zero point), or
frozen.  :func:`strip_qat` / :func:`trained_ranges` give back a plain model and the ranges
for :mod:`fyexport.quantize.qat_export`.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.errors import InputError
from .qat_place import Placement, place
from .qdq import SILU_PRE_CLIP

FLAVOUR_RANGE = {"trt": (-128.0, 127.0), "cpu": (0.0, 255.0)}  # activation integer range per flavour
WEIGHT_QMAX = 127.0
KINDS = {"group": 0, "silu": 1, "leaky": 2, "const": 3}


@dataclass
class QuantRanges:
    """The calibrated ranges a Q/DQ model is built from: per scale group its amax and smallest
    value, per pre-activation Conv output with no recognised activation its [min, max]."""

    amax: dict
    gmin: dict
    ranges: dict = field(default_factory=dict)
    exclude: str | None = None  # the regex of Conv nodes kept in float, as calibrated

    def to_dict(self) -> dict:
        ranges = {k: list(v) for k, v in self.ranges.items()}
        return {"amax": dict(self.amax), "gmin": dict(self.gmin), "ranges": ranges, "exclude": self.exclude}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantRanges":
        return cls(dict(d["amax"]), dict(d["gmin"]), {k: list(v) for k, v in d.get("ranges", {}).items()},
                   d.get("exclude"))

    @classmethod
    def from_calib_json(cls, path) -> "QuantRanges":
        try:
            d = json.loads(Path(path).read_text())
            groups = d["groups"]
            amax = {g: float(v["amax"]) for g, v in groups.items()}
            gmin = {g: float(v["min"]) for g, v in groups.items()}
            ranges = {t: list(v) for t, v in d.get("pre_activation_ranges", {}).items()}
            exclude = d.get("exclude")
            if d.get("auto_exclude"):  # the groups the sensitivity pass kept in float, as the Q/DQ models did
                from .sensitivity import exclusion_regex

                exclude = exclusion_regex(d["excluded_convs"], exclude)
            return cls(amax, gmin, ranges, exclude)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a calib.json written by 'fyexport calibrate' ({type(e).__name__})")


class _RoundSte(torch.autograd.Function):
    """Round half to even; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _SameGrad(torch.autograd.Function):
    """Forward ``value`` exactly, backward into ``x`` unchanged (a straight-through estimator
    that keeps the forward bit-exact, unlike ``x + (value - x).detach()``)."""

    @staticmethod
    def forward(ctx, x, value):
        return value

    @staticmethod
    def backward(ctx, g):
        return g, None


class FakeQuant(torch.autograd.Function):
    """QuantizeLinear -> DequantizeLinear in float32 (x / scale, round half to even, + zero
    point, saturate, - zero point, * scale), returned in ``x``'s dtype.  Gradients: ``x``
    straight through inside the range; scale and zero point as in LSQ (Esser et al. 2020):
    d y / d s = round(x/s) - x/s inside, q - z at the clip (= (y - x [inside]) / s); d y / d z =
    -s at the clip.  ``zp`` None: symmetric (zero point 0)."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin: float, qmax: float):
        y = torch.div(x.float(), scale).round_()  # in place: one temporary, ONNX's order of operations
        if zp is not None:
            y.add_(zp)
        inside = (y >= qmin).logical_and_(y <= qmax)
        y.clamp_(qmin, qmax)
        if zp is not None:
            y.sub_(zp)
        out = y.mul_(scale).to(x.dtype)
        ranges_grad = ctx.needs_input_grad[1] or (zp is not None and ctx.needs_input_grad[2])
        ctx.save_for_backward(inside, x if ranges_grad else None, out if ranges_grad else None, scale)
        ctx.symmetric = zp is None
        return out

    @staticmethod
    def backward(ctx, g):
        inside, x, y, scale = ctx.saved_tensors
        gx = g * inside
        gs = gz = None
        if ctx.needs_input_grad[1]:
            # elementwise first: the in-range residual y - x is small, the two sums would cancel
            gs = (g * (y - x * inside)).sum(dtype=torch.float32) / scale
        if not ctx.symmetric and ctx.needs_input_grad[2]:
            gz = -scale * (g.sum(dtype=torch.float32) - gx.sum(dtype=torch.float32))
        return gx, gs, gz, None, None


def weight_scales_t(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scales max|w| / 127 (floor 1e-12), float32: qdq.weight_scales in torch."""
    return (w.detach().float().abs().amax(dim=tuple(range(1, w.ndim))) / WEIGHT_QMAX).clamp_min(1e-12)


def fake_quant_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8-rounded weight in float32, its scales): qdq.quantize_weight then DequantizeLinear."""
    s = weight_scales_t(w)
    shape = (-1,) + (1,) * (w.ndim - 1)
    sv = s.view(shape)
    q = torch.round(w.detach().float() / sv).clamp(-WEIGHT_QMAX, WEIGHT_QMAX)
    return _SameGrad.apply(w.float(), q * sv), s


def fake_quant_bias(b: torch.Tensor, x_scale: torch.Tensor, w_scales: torch.Tensor) -> torch.Tensor:
    """The CPU flavour's int32 bias (qdq.quantize_bias) dequantized: round(b / (sx sw)) (sx sw)."""
    bs = x_scale.detach().double() * w_scales.double()
    bq = torch.round(b.detach().double() / bs).clamp(-(2.0 ** 31), 2.0 ** 31 - 1)
    return _SameGrad.apply(b.float(), bq.float() * bs.float())


class _Ref:
    """A plain (non-module) reference to the state and a row, so a hooked or re-classed module
    does not register the state as its own submodule (deepcopy still maps it to the copy)."""

    def __init__(self, state, row, rows=None):
        self.state, self.row, self.rows = state, row, rows


class QatState(nn.Module):
    """The quantization ranges of a QAT model: one row per distinct :class:`ActSpec`.

    ``amax_rel`` / ``gmin_rel`` (learned or frozen, 0 at the start) scale the calibrated group
    amax / minimum by ``1 + rel``; the calibrated values are kept bit-exact as float64 in
    int64 buffers (``model.float()`` leaves them alone)."""

    def __init__(self, placement: Placement, ranges: QuantRanges, learn: bool):
        super().__init__()
        self.flavour = placement.flavour
        self.qmin, self.qmax = FLAVOUR_RANGE[self.flavour]
        self.groups = sorted(ranges.amax)
        self.fixed_ranges, self.exclude = dict(ranges.ranges), ranges.exclude  # not trained
        self.specs = list(dict.fromkeys([*placement.inputs.values(), *placement.silu.values(),
                                         *(s for s in placement.conv_input.values() if s is not None)]))
        self.row = {s: i for i, s in enumerate(self.specs)}
        gi = {g: i for i, g in enumerate(self.groups)}
        self.register_buffer("base_amax", _bits([ranges.amax[g] for g in self.groups]))
        self.register_buffer("base_gmin", _bits([ranges.gmin.get(g, 0.0) for g in self.groups]))
        self.amax_rel = nn.Parameter(torch.zeros(len(self.groups)), requires_grad=learn)
        self.gmin_rel = nn.Parameter(torch.zeros(len(self.groups)), requires_grad=learn and self.flavour == "cpu")
        table = [_row_table(s, gi, ranges.ranges) for s in self.specs]
        self.register_buffer("kind", torch.tensor([t[0] for t in table], dtype=torch.long))
        self.register_buffer("gidx", torch.tensor([t[1] for t in table], dtype=torch.long))
        self.register_buffer("consts", _bits([v for t in table for v in t[2:]]))
        self.cur = None

    def __getstate__(self):  # the per-forward parameters are part of an autograd graph: never copied
        d = dict(self.__dict__)
        d["cur"] = None
        return d

    def group_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(amax, minimum) per group, float64, with their gradients."""
        amax = self.base_amax.view(torch.float64) * (1 + self.amax_rel.double())
        gmin = self.base_gmin.view(torch.float64) * (1 + self.gmin_rel.double())
        return amax, gmin

    def params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero point float32) of every row: qdq.spec_params in torch."""
        amax, gmin = self.group_values()
        a, m = amax[self.gidx], gmin[self.gidx]
        if self.flavour == "trt":
            return (a.clamp_min(1e-6) / 127.0).float(), torch.zeros_like(a, dtype=torch.float32)
        c = self.consts.view(torch.float64).view(-1, 3)
        alpha, clo, chi = c[:, 0], c[:, 1], c[:, 2]
        af = a.clamp_min(1e-6)
        neg = m.clamp_max(0.0)
        lo = torch.where(self.kind == 0, torch.maximum(neg, -af),
                         torch.where(self.kind == 1, (-a).clamp_min(SILU_PRE_CLIP),
                                     torch.where(self.kind == 2, torch.maximum(neg / alpha, -a / alpha), clo)))
        hi = torch.where(self.kind == 0, af, torch.where(self.kind == 3, chi, a))
        lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
        scale = (hi - lo).clamp_min(1e-6) / 255.0
        zp = _RoundSte.apply(-lo / scale).clamp(0.0, 255.0)
        return scale.float(), zp.float()

    def current(self):
        return self.cur if self.cur is not None else self.params()

    def fq(self, x: torch.Tensor, row: int, params=None) -> torch.Tensor:
        scale, zp = params if params is not None else self.current()
        z = zp[row] if self.flavour == "cpu" else None  # the TensorRT flavours are symmetric: no zero point
        return FakeQuant.apply(x, scale[row], z, self.qmin, self.qmax)


def _bits(values) -> torch.Tensor:
    """float64 values stored bit for bit in an int64 tensor."""
    return torch.tensor(values, dtype=torch.float64).view(torch.int64)


def _row_table(spec, gi: dict, ranges: dict) -> tuple:
    """(kind code, group index, alpha, lo, hi) of one spec (qdq.spec_params' cases)."""
    if spec.kind == "group":
        return KINDS["group"], gi[spec.group], 1.0, 0.0, 0.0
    if spec.kind in ("silu", "leaky"):
        return KINDS[spec.kind], gi[spec.group], spec.alpha if spec.kind == "leaky" else 1.0, 0.0, 0.0
    if spec.kind == "range":
        lo, hi = ranges.get(spec.tensor, (0.0, 1.0))
        return KINDS["const"], 0, 1.0, float(lo), float(hi)
    if spec.kind == "fixed":
        return KINDS["const"], 0, 1.0, float(spec.lo), float(spec.hi)
    return KINDS["const"], 0, 1.0, 0.0, 1.0  # unit: 1/255, zero point 0 (= the range 0..1)


class InputFq:
    """Forward pre-hook: quantize the module's argument(s) (a list for Concat / Shortcut)."""

    def __init__(self, state: QatState, rows: dict, listy: bool):
        self.ref, self.listy = _Ref(state, None, rows), listy

    def __call__(self, module, args):
        st = self.ref.state
        p = st.current()
        if self.listy:
            xs = list(args[0])
            for pos, row in self.ref.rows.items():
                xs[pos] = st.fq(xs[pos], row, p)
            return (xs, *args[1:])
        return (st.fq(args[0], self.ref.rows[0], p), *args[1:])


class FqConv2d(nn.Conv2d):
    """A quantized Conv2d: int8 per-channel weights; the CPU flavour's int32 bias."""

    def forward(self, x):
        ref = self._fq
        w, ws = fake_quant_weight(self.weight)
        b = self.bias
        if ref.row is not None and b is not None:
            b = fake_quant_bias(b, ref.state.current()[0][ref.row], ws)
        return self._conv_forward(x, w.to(self.weight.dtype), b)


class FqSiLU(nn.SiLU):
    """SiLU whose sigmoid output is quantized (the CPU flavour: x * DQ(Q(sigmoid(x))))."""

    def forward(self, x):
        ref = self._fq
        return x * ref.state.fq(torch.sigmoid(x), ref.row)


class _Begin:
    """Root pre-hook / hook: compute every row's scale and zero point once per forward."""

    def __init__(self, state: QatState, end: bool):
        self.ref, self.end = _Ref(state, None), end

    def __call__(self, module, args, out=None):
        self.ref.state.cur = None if self.end else self.ref.state.params()


# -- preparing and undoing ---------------------------------------------------------------------

def prepare_qat(model, proto, plan, ranges: QuantRanges, flavour: str = "trt", learn: bool = True,
                bias_shift: dict | None = None):
    """A fused copy of ``model`` with ``flavour``'s fake quantization (see the module docstring).

    Args:
        model: a :class:`fyexport.models.Model` (any form); ``proto`` was exported from it.
        plan: :func:`fyexport.quantize.graph.analyse` of ``proto`` (with the calibration's exclusions).
        ranges: the calibrated ranges (:meth:`QuantRanges.from_calib_json` or
            :func:`fyexport.quantize.qat_export.calibrated_ranges`).
        learn: learn the ranges (LSQ-style) or keep them frozen (gradients reach the weights only).
        bias_shift: Conv node -> per-channel bias correction (``quantize/bias.py``) to start from, as
            the PTQ model of this flavour subtracts it.
    """
    if flavour not in FLAVOUR_RANGE:
        raise InputError(f"quantization-aware training flavour must be one of {', '.join(FLAVOUR_RANGE)}, "
                         f"got {flavour!r}")
    missing = sorted(set(plan.groups) - set(ranges.amax))
    if missing:
        raise InputError(f"the calibrated ranges lack {len(missing)} scale groups of this ONNX (e.g. {missing[0]})",
                         "Calibrate the ONNX exported from this model")
    m = copy.deepcopy(model).float().cpu().eval()
    m.fuse()
    pl = place(m, proto, plan, flavour)
    if bias_shift:
        _absorb_bias_shift(m, pl, bias_shift)
    state = QatState(pl, ranges, learn)
    m.qat = state
    _install(m, pl, state)
    m.meta = m.meta.with_(qat={"flavour": flavour, "learn": bool(learn), "groups": len(state.groups),
                               "quantized_convs": len(pl.convs)})
    m.qat_placement = pl
    return m


def _install(m, pl: Placement, state: QatState) -> None:
    from ..models.common import Concat, Shortcut

    per_module: dict = {}
    for (path, pos), spec in pl.inputs.items():
        per_module.setdefault(path, {})[pos] = state.row[spec]
    for path, rows in per_module.items():
        mod = m.get_submodule(path)
        mod.register_forward_pre_hook(InputFq(state, rows, isinstance(mod, (Concat, Shortcut))))
    for path in pl.convs:
        mod = m.get_submodule(path)
        mod.__class__ = FqConv2d
        spec = pl.conv_input[path] if state.flavour == "cpu" else None
        mod._fq = _Ref(state, state.row[spec] if spec is not None else None)
    for path, spec in pl.silu.items():
        mod = m.get_submodule(path)
        if type(mod) is not nn.SiLU:
            raise InputError(f"quantization-aware training: {path} quantizes a sigmoid but is a {type(mod).__name__}")
        mod.__class__ = FqSiLU
        mod._fq = _Ref(state, state.row[spec])
    m.register_forward_pre_hook(_Begin(state, end=False))
    m.register_forward_hook(_Begin(state, end=True))


@torch.no_grad()
def _absorb_bias_shift(m, pl: Placement, shifts: dict) -> None:
    """bias -= shift in float64, as qdq._quantize_conv corrects a PTQ model's biases."""
    by_node = {node: path for path, node in pl.convs.items()}
    for node, shift in shifts.items():
        conv = m.get_submodule(by_node[node])
        old = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
        new = (old - torch.as_tensor(shift, dtype=torch.float64)).float()
        if conv.bias is None:
            conv.bias = nn.Parameter(new)
        else:
            conv.bias.copy_(new)


def is_qat(model) -> bool:
    return isinstance(getattr(model, "qat", None), QatState)


def trained_ranges(model) -> QuantRanges:
    """The ranges the QAT ``model`` has now (float64, as the Q/DQ export takes them)."""
    st = model.qat
    with torch.no_grad():
        amax, gmin = (v.cpu().tolist() for v in st.group_values())
    return QuantRanges(dict(zip(st.groups, amax)), dict(zip(st.groups, gmin)), dict(st.fixed_ranges), st.exclude)


def starting_ranges(model) -> QuantRanges:
    """The ranges the QAT ``model`` started from (bit for bit)."""
    st = model.qat
    amax, gmin = (st.base_amax.view(torch.float64).cpu().tolist(), st.base_gmin.view(torch.float64).cpu().tolist())
    return QuantRanges(dict(zip(st.groups, amax)), dict(zip(st.groups, gmin)), dict(st.fixed_ranges), st.exclude)


def plain_state_dict(model) -> dict:
    """The QAT model's state_dict without its ranges: the keys of the plain fused model."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("qat.")}


def strip_qat(model):
    """A plain fused :class:`fyexport.models.Model` with the QAT model's weights (no hooks)."""
    from ..models.checkpoint import model_from_state

    sd = {k: v.detach().cpu().float() if v.is_floating_point() else v.cpu() for k, v in plain_state_dict(model).items()}
    out = model_from_state(model.yaml, sd, fused=True, path="<quantization-aware model>", nc=model.nc)
    out.names = list(model.names)
    out.meta = model.meta.with_(qat=dict(model.meta.get("qat") or {}) | {"ranges": trained_ranges(model).to_dict()})
    return out


def resume_qat(model, proto, plan, learn: bool = True):
    """The QAT model of a checkpoint saved from :func:`strip_qat` (its ``meta["qat"]``: flavour and
    trained ranges), ready to train on or to export."""
    rec = model.meta.get("qat") or {}
    if "ranges" not in rec or rec.get("flavour") not in FLAVOUR_RANGE:
        raise InputError("the model carries no quantization-aware training record",
                         "Give the checkpoint written by quantization-aware training")
    return prepare_qat(model, proto, plan, QuantRanges.from_dict(rec["ranges"]), rec["flavour"], learn)
