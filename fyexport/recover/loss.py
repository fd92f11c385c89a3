"""Losses for recovering a pruned model: distillation from the unpruned teacher on the raw
head maps, and (when labels exist) the supervised YOLO loss.

Both work on raw maps ``(B, na, ny, nx, 5+nc)`` (logits).  The YOLO loss matches each
target to anchors whose width/height ratio is within ``anchor_t`` and to its grid cell
plus the two nearest neighbour cells, then sums CIoU box loss, BCE objectness (target =
IoU) and BCE class loss with the usual per-level objectness balance.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BALANCE = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.25, 0.06]}


def _local(x: torch.Tensor) -> torch.Tensor:
    return x


# Both losses normalise by batch totals (matched targets, the teacher's objectness mass).
# ``rank_mean`` turns such a total into its mean over the processes of a distributed run (an
# all-reduce; the identity in one process), so that the gradient DDP averages over ranks is
# exactly the gradient of one process holding the whole global batch.


def _f(v) -> torch.Tensor:
    """A loss part for logging, kept on the device (reading it as a float would wait for the
    device at every step)."""
    return v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))


def bbox_ciou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of cx,cy,w,h boxes (N,4) vs (N,4)."""
    b1x1, b1x2 = b1[:, 0] - b1[:, 2] / 2, b1[:, 0] + b1[:, 2] / 2
    b1y1, b1y2 = b1[:, 1] - b1[:, 3] / 2, b1[:, 1] + b1[:, 3] / 2
    b2x1, b2x2 = b2[:, 0] - b2[:, 2] / 2, b2[:, 0] + b2[:, 2] / 2
    b2y1, b2y2 = b2[:, 1] - b2[:, 3] / 2, b2[:, 1] + b2[:, 3] / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    w1, h1 = b1[:, 2], b1[:, 3] + eps
    w2, h2 = b2[:, 2], b2[:, 3] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (b2[:, 0] - b1[:, 0]) ** 2 + (b2[:, 1] - b1[:, 1]) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """Supervised detection loss for a model whose head has ``anchors`` (grid units) and
    ``stride``.

    Targets: (n, 6) float tensor ``image_index, class, cx, cy, w, h`` in input pixels.
    """

    def __init__(self, head, box: float = 0.05, obj: float = 0.7, cls: float = 0.3, anchor_t: float = 4.0,
                 img_size=640):
        self.na, self.nl, self.nc = head.na, head.nl, head.nc
        self.anchors = head.anchors.detach().clone()  # (nl, na, 2) grid units
        self.stride = head.stride.detach().clone()
        self.balance = BALANCE.get(self.nl, [1.0] * self.nl)
        # Gains scaled by level count, class count and image size, as YOLO training does.
        self.box = box * 3 / self.nl
        self.cls = cls * self.nc / 80 * 3 / self.nl
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.obj = obj * (hw[0] * hw[1] / 640 ** 2) * 3 / self.nl
        self.anchor_t = anchor_t
        self.rank_mean = _local

    def _assign(self, i: int, p: torch.Tensor, targets: torch.Tensor):
        """Indices (b, a, gj, gi), target boxes relative to cells, anchors, classes."""
        ny, nx = p.shape[2], p.shape[3]
        dev = p.device
        anchors = self.anchors[i].to(dev)
        s = float(self.stride[i])
        nt = targets.shape[0]
        if nt == 0:
            z = torch.zeros(0, dtype=torch.long, device=dev)
            return (z, z, z, z), torch.zeros(0, 4, device=dev), torch.zeros(0, 2, device=dev), z
        t = targets.clone()
        t[:, 2:6] /= s
        ratio = t[None, :, 4:6] / anchors[:, None]  # (na, nt, 2)
        ok = torch.max(ratio, 1 / ratio).max(2).values < self.anchor_t
        a_idx, t_idx = ok.nonzero(as_tuple=True)
        t = t[t_idx]
        gxy = t[:, 2:4]
        frac = gxy % 1.0
        gain_inv = torch.tensor([nx, ny], device=dev, dtype=gxy.dtype) - gxy
        left = (frac[:, 0] < 0.5) & (gxy[:, 0] > 1.0)
        up = (frac[:, 1] < 0.5) & (gxy[:, 1] > 1.0)
        right = ((gain_inv[:, 0] % 1.0) < 0.5) & (gain_inv[:, 0] > 1.0)
        down = ((gain_inv[:, 1] % 1.0) < 0.5) & (gain_inv[:, 1] > 1.0)
        offs = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=dev, dtype=gxy.dtype) * 0.5
        sel = torch.stack([torch.ones_like(left), left, up, right, down])  # (5, n)
        tt = t[None].repeat(5, 1, 1)[sel]
        aa = a_idx[None].repeat(5, 1)[sel]
        oo = offs[:, None].repeat(1, t.shape[0], 1)[sel]
        gij = (tt[:, 2:4] - oo).long()
        gi = gij[:, 0].clamp(0, nx - 1)
        gj = gij[:, 1].clamp(0, ny - 1)
        tbox = torch.cat([tt[:, 2:4] - torch.stack([gi, gj], 1), tt[:, 4:6]], 1)
        return (tt[:, 0].long(), aa, gj, gi), tbox, anchors[aa], tt[:, 1].long()

    def __call__(self, preds: list, targets: torch.Tensor):
        dev = preds[0].device
        lbox = torch.zeros((), device=dev)
        lobj = torch.zeros((), device=dev)
        lcls = torch.zeros((), device=dev)
        for i, p in enumerate(preds):
            (b, a, gj, gi), tbox, anch, tcls = self._assign(i, p, targets)
            tobj = torch.zeros(p.shape[:4], device=dev, dtype=p.dtype)
            n = self.rank_mean(torch.tensor(float(b.numel()), device=dev)).clamp(min=1.0)  # matched targets
            if b.numel():
                ps = p[b, a, gj, gi]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anch
                ciou = bbox_ciou(torch.cat([pxy, pwh], 1), tbox)
                lbox = lbox + (1.0 - ciou).sum() / n
                tobj[b, a, gj, gi] = ciou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.zeros_like(ps[:, 5:])
                    t[torch.arange(len(tcls), device=dev), tcls] = 1.0
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t, reduction="sum") / (n * self.nc)
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * self.balance[i]
        bs = preds[0].shape[0]
        total = (lbox * self.box + lobj * self.obj + lcls * self.cls) * bs
        return total, {"box": _f(lbox), "obj": _f(lobj), "cls": _f(lcls)}


class DistillLoss:
    """Label-free distillation on raw head maps.

    Objectness: BCE against the teacher's objectness probability, every cell, balanced per
    level.  Class and box: BCE / MSE in sigmoid space, weighted by the teacher's objectness
    so background cells do not drown the signal.
    """

    def __init__(self, nl: int, obj: float = 1.0, cls: float = 1.0, box: float = 5.0):
        self.balance = BALANCE.get(nl, [1.0] * nl)
        self.w_obj, self.w_cls, self.w_box = obj, cls, box
        self.rank_mean = _local

    def __call__(self, student: list, teacher: list):
        lobj = lcls = lbox = 0.0
        for i, (s, t) in enumerate(zip(student, teacher)):
            t = t.detach().float()
            s = s.float()
            tp = t.sigmoid()
            w = tp[..., 4]
            lobj = lobj + F.binary_cross_entropy_with_logits(s[..., 4], w) * self.balance[i]
            wsum = self.rank_mean(w.sum().detach()).clamp(min=1e-6)
            if s.shape[-1] > 6:
                c = F.binary_cross_entropy_with_logits(s[..., 5:], tp[..., 5:], reduction="none").mean(-1)
                lcls = lcls + (c * w).sum() / wsum
            b = ((s[..., :4].sigmoid() - tp[..., :4]) ** 2).sum(-1)
            lbox = lbox + (b * w).sum() / wsum
        total = self.w_obj * lobj + self.w_cls * lcls + self.w_box * lbox
        return total, {"kd_obj": _f(lobj), "kd_cls": _f(lcls), "kd_box": _f(lbox)}
