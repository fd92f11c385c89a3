"""Augmentation for recovery, batched on the training device.

Each sample's random draws come from its own seed (run seed, epoch, sample index), so a
sample is augmented the same way whichever batch, rank or worker it lands in: one process
with batch 2B and two with batch B see the same augmented images, and a resumed run sees
what an uninterrupted one would.  Flip, brightness/contrast/saturation jitter and a small
random scale and translation are applied identically to the student's and the teacher's
input and to the labels; a random crop (``--crop``) cuts a window at full object scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DRAWS = 9  # flip, 3 jitter gains, scale, 2 translations, 2 crop positions


def sample_draws(ids, epoch: int, seed: int) -> torch.Tensor:
    """(B, DRAWS) uniforms in [0, 1) for the samples ``ids`` of ``epoch``."""
    out = torch.empty(len(ids), DRAWS)
    for j, i in enumerate(ids):
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) * 10_000_019 + int(i))
        out[j] = torch.rand(DRAWS, generator=g)
    return out


def augment(x, targets, draws, scale: float = 0.2, translate: float = 0.1, jitter: float = 0.3):
    """x: (B,3,H,W) float 0..1 on the device; targets: (n,6) image, cls, cx, cy, w, h in pixels;
    draws: (B, DRAWS) from :func:`sample_draws`.  Returns the augmented pair."""
    b, _, h, w = x.shape
    dev = x.device
    d = draws.to(dev, x.dtype)
    flip = d[:, 0] < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if targets.numel():
        ft = flip[targets[:, 0].long()]
        targets[ft, 2] = w - targets[ft, 2]
    gain = (1 + (d[:, 1:4] * 2 - 1) * jitter)[:, :, None, None, None]  # brightness, contrast, saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, 1] + mean
    x = x * gain[:, 0]
    gray = x.mean(1, keepdim=True)
    x = ((x - gray) * gain[:, 2] + gray).clamp(0, 1)
    s = 1 + (d[:, 4] * 2 - 1) * scale
    t = (d[:, 5:7] * 2 - 1) * translate
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = -t * 2 / s[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = 114 / 255  # grey outside, as the letterbox pads
    x = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    if targets.numel():
        idx = targets[:, 0].long()
        sd, td = s[idx], t[idx]
        cx = (targets[:, 2] - w / 2) * sd + w / 2 + td[:, 0] * w
        cy = (targets[:, 3] - h / 2) * sd + h / 2 + td[:, 1] * h
        targets = clip_targets(targets, cx, cy, targets[:, 4] * sd, targets[:, 5] * sd, w, h)
    return x, targets


def clip_targets(targets, cx, cy, bw, bh, w: int, h: int):
    """Targets with moved boxes (cx, cy, bw, bh) clipped to a w x h image; boxes under 2 px
    or left with less than 30% of their area are dropped."""
    x1, x2 = (cx - bw / 2).clamp(0, w), (cx + bw / 2).clamp(0, w)
    y1, y2 = (cy - bh / 2).clamp(0, h), (cy + bh / 2).clamp(0, h)
    keep = ((x2 - x1) > 2) & ((y2 - y1) > 2) & ((x2 - x1) * (y2 - y1) > 0.3 * bw * bh)
    return torch.stack([targets[:, 0], targets[:, 1], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)[keep]


def random_crop(x, targets, size: int, position):
    """A ``size`` x ``size`` window of each image at ``position`` ((B, 2) uniforms in [0, 1):
    where the window sits in the free range, y then x).  Objects keep their pixel scale, so a
    model trained on crops sees what it will see at full size, at a fraction of the cost.
    Boxes are shifted and clipped to the window; boxes left mostly outside are dropped."""
    b, _, h, w = x.shape
    if size >= h and size >= w:
        return x, targets
    pos = position.float().cpu()
    oy = (pos[:, 0] * (h - size + 1)).long().clamp(0, h - size)
    ox = (pos[:, 1] * (w - size + 1)).long().clamp(0, w - size)
    x = torch.stack([x[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(b)])
    if targets.numel():
        idx = targets[:, 0].long()
        dx, dy = ox.to(targets.device, targets.dtype)[idx], oy.to(targets.device, targets.dtype)[idx]
        targets = clip_targets(targets, targets[:, 2] - dx, targets[:, 3] - dy, targets[:, 4], targets[:, 5],
                               size, size)
    return x, targets
