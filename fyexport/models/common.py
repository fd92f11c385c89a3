"""The YOLOv7 building blocks, written from the behavioural description in
``docs/yolov7-architecture.md`` (section 1.5).  Attribute names follow the official
state_dict keys (``conv``/``bn``/``act``, ``rbr_dense.0``, ``cv1``..``cv7``,
``implicit``) so official checkpoints load by key.

Each block knows how to fold itself for deployment (``fuse``); the folding maths is
in :mod:`fyexport.models.fuse`.
"""
from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int, p: int | None = None) -> int:
    """'Same' padding for odd kernels."""
    return k // 2 if p is None else p


def batchnorm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_act(act) -> nn.Module:
    """True -> SiLU (the YOLOv7 default); a module -> that module; anything else -> Identity."""
    if act is True:
        return nn.SiLU()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class Conv(nn.Module):
    """act(BN(Conv2d(x))) with a bias-free conv; after fusing, act(conv(x)) with a bias."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = batchnorm(c2)
        self.act = make_act(act)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fuse(self) -> None:
        from .fuse import fold_conv_bn

        if self.bn is not None:
            self.conv = fold_conv_bn(self.conv, self.bn)
            self.bn = None


class RepConv(nn.Module):
    """RepVGG-style block: act(3x3 conv-BN + 1x1 conv-BN + identity BN), merged into one
    3x3 conv (``rbr_reparam``) by :meth:`fuse`."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1, act=True,
                 deploy: bool = False):
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError("RepConv supports only k=3 with padding 1")
        self.in_channels, self.out_channels, self.groups = c1, c2, g
        self.act = make_act(act)
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=True)
            self.rbr_identity = self.rbr_dense = self.rbr_1x1 = None
        else:
            self.rbr_identity = batchnorm(c1) if (c2 == c1 and s == 1) else None
            self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), batchnorm(c2))
            self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), batchnorm(c2))

    def forward(self, x):
        if getattr(self, "rbr_reparam", None) is not None:
            return self.act(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def fuse(self) -> None:
        from .fuse import merge_repconv

        if getattr(self, "rbr_reparam", None) is None:
            self.rbr_reparam = merge_repconv(self)
            self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None


class MP(nn.Module):
    """Max-pool with kernel = stride = k."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class SP(nn.Module):
    """Size-preserving max-pool (stride 1, 'same' padding)."""

    def __init__(self, k: int = 3, s: int = 1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x):
        return self.m(x)


class SPPCSPC(nn.Module):
    """Cross-stage-partial spatial pyramid pooling neck."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 k=(5, 9, 13)):
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(4 * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), 1))


class DownC(nn.Module):
    """Downsampling block of the P6 models: strided 3x3 path beside a max-pool path."""

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2):
        super().__init__()
        c_ = int(c1)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)


class ReOrg(nn.Module):
    """Space-to-depth: (B,C,H,W) -> (B,4C,H/2,W/2), rows varying first."""

    def forward(self, x):
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class Concat(nn.Module):
    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Shortcut(nn.Module):
    """Element-wise sum of two inputs (the argument is unused, as in the cfgs)."""

    def __init__(self, dimension: int = 0):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return x[0] + x[1]


class ImplicitA(nn.Module):
    """Learned additive bias (1,C,1,1)."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned multiplicative scale (1,C,1,1)."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02):
        super().__init__()
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit * x


class Dropped(nn.Module):
    """Placeholder for a layer removed in deployment form (the P6 auxiliary-head convs).

    It keeps layer indices (and so state_dict keys) stable; the model never runs it."""

    def forward(self, x):  # pragma: no cover - never called, see Model._live
        raise RuntimeError("a dropped layer was executed")
