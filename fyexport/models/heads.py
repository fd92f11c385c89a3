"""Detection heads: Detect, IDetect (implicit knowledge) and IAuxDetect (lead + auxiliary).

In training mode a head returns its raw maps ``(B, na, ny, nx, no)``; in eval mode it
returns ``(decoded [B, N, no], raw maps)`` where decoded rows are
``cx, cy, w, h, obj, cls...`` in input pixels, all after the sigmoid, ordered by level,
anchor, grid row and column (docs/yolov7-architecture.md, 1.5 and 2.4).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import ImplicitA, ImplicitM


class Detect(nn.Module):
    def __init__(self, nc: int = 80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        a = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", a)  # grid units once the model divides by stride
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
        self.stride = torch.ones(self.nl)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[: self.nl])
        self._grids: dict = {}

    # The head convs that produce the raw maps (the ones pruning and Q/DQ leave alone).
    @property
    def output_convs(self) -> list[nn.Conv2d]:
        return list(self.m)

    def _map(self, i: int, x):
        return self.m[i](x)

    def _raw(self, i: int, x):
        p = self._map(i, x)
        ny, nx = p.shape[-2], p.shape[-1]
        return p.view(-1, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def _grid(self, nx: int, ny: int, like: torch.Tensor) -> torch.Tensor:
        key = (nx, ny, like.device, like.dtype)
        g = self._grids.get(key)
        if g is None:
            yv, xv = torch.meshgrid(torch.arange(ny, device=like.device), torch.arange(nx, device=like.device),
                                    indexing="ij")
            g = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).to(like.dtype)
            if not torch.jit.is_tracing():
                self._grids[key] = g
        return g

    def decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        ny, nx = p.shape[2], p.shape[3]
        y = p.sigmoid()
        s = float(self.stride[i])
        xy = (y[..., 0:2] * 2.0 - 0.5 + self._grid(nx, ny, y)) * s
        wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i].to(y.dtype)
        return torch.cat((xy, wh, y[..., 4:]), -1).view(-1, self.na * ny * nx, self.no)

    def forward(self, xs):
        raw = [self._raw(i, xs[i]) for i in range(self.nl)]
        if self.training:
            return raw
        return torch.cat([self.decode(i, p) for i, p in enumerate(raw)], 1), raw

    def _apply(self, fn, *args, **kwargs):
        self._grids = {}
        return super()._apply(fn, *args, **kwargs)

    def initialize_biases(self, img_size: int = 640, cf=None) -> None:
        """Prior for a fresh head: objectness ~8 objects per 640 image, uniform classes."""
        for conv, s in zip(self.output_convs, self.stride):
            b = conv.bias.detach().view(self.na, -1)
            b[:, 4] += math.log(8 / (img_size / float(s)) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if cf is None else torch.log(cf / cf.sum())
            conv.bias = nn.Parameter(b.view(-1))


class IDetect(Detect):
    """Detect with ImplicitA before and ImplicitM after each output conv."""

    def __init__(self, nc: int = 80, anchors=(), ch=()):
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(x) for x in ch[: self.nl])
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch[: self.nl])

    def _map(self, i: int, x):
        return self.im[i](self.m[i](self.ia[i](x)))


class IAuxDetect(IDetect):
    """Lead head (with implicits) over the first nl inputs, auxiliary head ``m2`` over the rest.

    Inference decodes the lead head only; the auxiliary maps exist for training."""

    def __init__(self, nc: int = 80, anchors=(), ch=()):
        super().__init__(nc, anchors, ch)
        self.m2 = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[self.nl:])

    def _aux_raw(self, i: int, x):
        p = self.m2[i](x)
        ny, nx = p.shape[-2], p.shape[-1]
        return p.view(-1, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def forward(self, xs):
        lead = [self._raw(i, xs[i]) for i in range(self.nl)]
        if self.training:
            return lead + [self._aux_raw(i, xs[self.nl + i]) for i in range(self.nl)]
        return torch.cat([self.decode(i, p) for i, p in enumerate(lead)], 1), lead


@torch.no_grad()
def head_to_detect(head):
    """Return a plain :class:`Detect` equal to ``head`` in inference (implicits folded,
    auxiliary head dropped).  A Detect is returned unchanged."""
    from .fuse import fold_implicit_conv

    if type(head) is Detect:
        return head
    anchors_px = head.anchor_grid.detach().float().view(head.nl, -1).tolist()
    ch = [c.in_channels for c in head.m]
    det = Detect(head.nc, anchors_px, ch).to(head.anchor_grid.device)
    det.anchors.copy_(head.anchors)
    det.anchor_grid.copy_(head.anchor_grid)
    det.stride = head.stride.clone()
    for i in range(head.nl):
        if isinstance(head, IDetect):
            det.m[i] = fold_implicit_conv(head.m[i], head.ia[i].implicit, head.im[i].implicit)
        else:
            det.m[i] = head.m[i]
    for attr in ("i", "f", "type", "np"):
        if hasattr(head, attr):
            setattr(det, attr, getattr(head, attr))
    if isinstance(det.f, list):
        det.f = det.f[: head.nl]
    det.type = "Detect"
    det.train(head.training)
    return det
