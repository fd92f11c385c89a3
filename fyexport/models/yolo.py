"""The YOLOv7 model and its whitelist cfg parser (docs/yolov7-architecture.md, 1.1-1.3).

The official parser ``eval``s module names and string arguments.  Here every name and
argument is looked up in explicit tables, so a cfg can only name the modules below,
``None``, ``nc``, ``anchors``, upsample modes and a few activation constructors.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
from torch import nn

from ..core.errors import InputError
from ..core.meta import ArtifactMeta
from .common import MP, SP, SPPCSPC, Concat, Conv, DownC, Dropped, ReOrg, RepConv, Shortcut
from .heads import Detect, IAuxDetect, IDetect

MODULES: dict[str, type] = {
    "Conv": Conv,
    "RepConv": RepConv,
    "MP": MP,
    "SP": SP,
    "SPPCSPC": SPPCSPC,
    "DownC": DownC,
    "ReOrg": ReOrg,
    "Concat": Concat,
    "Shortcut": Shortcut,
    "nn.Upsample": nn.Upsample,
    "Detect": Detect,
    "IDetect": IDetect,
    "IAuxDetect": IAuxDetect,
}
CONV_LIKE = (Conv, RepConv, DownC, SPPCSPC)
CSP_LIKE = (DownC, SPPCSPC)  # take the repeat count n as their third argument
HEAD_TYPES = (Detect, IDetect, IAuxDetect)

_ACTIVATIONS = {
    "LeakyReLU": lambda *a: nn.LeakyReLU(*(float(x) for x in a)),
    "SiLU": lambda: nn.SiLU(),
    "ReLU": lambda: nn.ReLU(),
    "ReLU6": lambda: nn.ReLU6(),
    "Hardswish": lambda: nn.Hardswish(),
    "Sigmoid": lambda: nn.Sigmoid(),
    "Identity": lambda: nn.Identity(),
}
_ACT_RE = re.compile(r"nn\.(\w+)\(\s*([-+0-9.eE,\s]*)\)")
_UPSAMPLE_MODES = {"nearest", "bilinear", "bicubic"}


def make_divisible(x: float, divisor: int) -> int:
    return int(math.ceil(x / divisor) * divisor)


def _resolve_arg(a, nc: int, anchors, where: str):
    if not isinstance(a, str):
        return a
    s = a.strip()
    if s == "None":
        return None
    if s == "nc":
        return nc
    if s == "anchors":
        return anchors
    if s in ("True", "False"):
        return s == "True"
    if s in _UPSAMPLE_MODES:
        return s
    m = _ACT_RE.fullmatch(s)
    if m and m.group(1) in _ACTIVATIONS:
        params = [p for p in m.group(2).split(",") if p.strip()]
        try:
            return _ACTIVATIONS[m.group(1)](*params)
        except TypeError:
            pass
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        pass
    raise InputError(f"cfg {where}: unsupported argument {a!r}",
                     "fyexport parses cfgs by whitelist (None, nc, anchors, upsample modes, nn.<Activation>(...))")


def load_cfg(cfg) -> dict:
    """A cfg dict from a dict, a yaml path or yaml text."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    import yaml

    p = Path(cfg)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise InputError(f"{p}: no such cfg file")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"{p}: not a valid yaml file ({str(e).splitlines()[0]})")
        d.setdefault("yaml_file", p.name)
    else:
        d = yaml.safe_load(str(cfg))
    if not isinstance(d, dict) or "backbone" not in d or "head" not in d:
        raise InputError(f"{cfg}: not a YOLOv7 cfg (needs 'backbone' and 'head' lists)")
    return d


def parse_model(d: dict, ch: list[int]):
    """Build the layer list from a cfg dict.  Returns (nn.Sequential, sorted save list)."""
    anchors, nc = d["anchors"], d["nc"]
    gd, gw = d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0)
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, save, c2 = [], [], ch[-1]
    rows = list(d["backbone"]) + list(d["head"])
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise InputError(f"cfg layer {i}: expected [from, number, module, args], got {row!r}")
        f, n, name, args = row
        where = f"layer {i} ({name})"
        if name not in MODULES:
            raise InputError(f"cfg {where}: unsupported module {name!r}",
                             f"supported: {', '.join(MODULES)}")
        m = MODULES[name]
        args = [_resolve_arg(a, nc, anchors, where) for a in (args or [])]
        n = max(round(n * gd), 1) if n > 1 else n
        try:
            if m in CONV_LIKE:
                c1, c2 = ch[f], args[0]
                if c2 != no:
                    c2 = make_divisible(c2 * gw, 8)
                args = [c1, c2, *args[1:]]
                if m in CSP_LIKE:
                    args.insert(2, n)
                    n = 1
            elif m is Concat:
                c2 = sum(ch[x] for x in f)
            elif m is Shortcut:
                c2 = ch[f[0]]
            elif m in HEAD_TYPES:
                args.append([ch[x] for x in f])
                if isinstance(args[1], int):
                    args[1] = [list(range(args[1] * 2))] * len(f)
            elif m is ReOrg:
                c2 = ch[f] * 4
            else:
                c2 = ch[f]
            module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        except (IndexError, TypeError) as e:
            raise InputError(f"cfg {where}: bad from-index or arguments ({e})")
        module.i, module.f, module.type = i, f, name
        module.np = sum(p.numel() for p in module.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class Model(nn.Module):
    """A YOLOv7 network built from a cfg.  ``model.model`` is the layer list, so state_dict
    keys are ``model.{i}.<...>`` exactly as in official checkpoints."""

    def __init__(self, cfg, ch: int = 3, nc: int | None = None, anchors=None, init_biases: bool = True):
        super().__init__()
        self.yaml = load_cfg(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc is not None and nc != self.yaml["nc"]:
            self.yaml["nc"] = int(nc)
        if anchors is not None:
            self.yaml["anchors"] = anchors
        self.model, self.save = parse_model(self.yaml, ch=[ch])
        self.nc = int(self.yaml["nc"])
        self.names = [str(i) for i in range(self.nc)]
        self.meta = ArtifactMeta()  # where the model came from (checkpoint.load) and what was done to it
        head = self.model[-1]
        if not isinstance(head, HEAD_TYPES):
            raise InputError("cfg: the last layer must be Detect, IDetect or IAuxDetect")
        s = 256
        was_training = self.training
        self.train()
        with torch.no_grad():
            raw = self.forward(torch.zeros(1, ch, s, s))
        self.train(was_training)
        head.stride = torch.tensor([s / x.shape[-2] for x in raw[: head.nl]])
        _check_anchor_order(head)
        head.anchors /= head.stride.view(-1, 1, 1)
        self.stride = head.stride
        if init_biases:
            head.initialize_biases()
            if isinstance(head, IAuxDetect):
                for conv, st in zip(head.m2, head.stride):
                    b = conv.bias.detach().view(head.na, -1)
                    b[:, 4] += math.log(8 / (640 / float(st)) ** 2)
                    b[:, 5:] += math.log(0.6 / (head.nc - 0.99))
                    conv.bias = nn.Parameter(b.view(-1))

    # -- properties ----------------------------------------------------
    @property
    def head(self) -> Detect:
        return self.model[-1]

    @property
    def is_fused(self) -> bool:
        return bool(getattr(self, "_fused", False))

    @property
    def form(self) -> str:
        return "deployment" if self.is_fused else "training"

    # -- forward -------------------------------------------------------
    def forward(self, x):
        y: list = []
        for m in self.model:
            if isinstance(m, Dropped):
                y.append(None)
                continue
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    # -- deployment ----------------------------------------------------
    @torch.no_grad()
    def fuse(self) -> "Model":
        """Fold BN into convs, merge RepConv branches, fold implicits so the head is a plain
        Detect, and drop layers only the auxiliary head used.  Idempotent."""
        from .heads import head_to_detect

        if self.is_fused:
            return self
        for m in self.modules():
            if isinstance(m, (Conv, RepConv)):
                m.fuse()
        self.model[-1] = head_to_detect(self.model[-1])
        self._drop_dead_layers()
        self._fused = True
        self.stride = self.head.stride
        return self

    def _drop_dead_layers(self) -> None:
        live = {len(self.model) - 1}
        for i in range(len(self.model) - 1, -1, -1):
            if i not in live:
                continue
            f = self.model[i].f
            for j in [f] if isinstance(f, int) else f:
                live.add(i + j if j < 0 else j)
        for i in range(len(self.model)):
            if i not in live and not isinstance(self.model[i], Dropped):
                old = self.model[i]
                d = Dropped()
                d.i, d.f, d.type, d.np = old.i, old.f, old.type, 0
                self.model[i] = d


def _check_anchor_order(head) -> None:
    a = head.anchor_grid.prod(-1).view(-1)
    da, ds = a[-1] - a[0], head.stride[-1] - head.stride[0]
    if da.sign() != ds.sign():
        head.anchors[:] = head.anchors.flip(0)
        head.anchor_grid[:] = head.anchor_grid.flip(0)


def build_model(cfg, nc: int | None = None, ch: int = 3) -> Model:
    """A randomly initialised model (eval mode, float32) from a cfg dict or yaml path."""
    return Model(cfg, ch=ch, nc=nc).eval()


def fuse(model: Model) -> Model:
    """Functional form of :meth:`Model.fuse`."""
    return model.fuse()
