"""Least-squares reconstruction of a freshly pruned student from its unpruned teacher, the
first step of recovery (the idea of ThiNet and of He et al.'s "channel pruning": refit what
is left so that each layer reproduces the unpruned layer's output).

In forward order, every plain ``Conv`` (groups 1) and every head output conv of the student
is refitted, on the student's *own* already refitted inputs, to the teacher conv's output for
the channels the student kept:

    W = argmin ||X_s W^T - Y_t||^2 + lam * ||W - W_pruned||^2

X_s are the student's input patches at randomly drawn output positions of a few image crops,
Y_t the teacher's pre-BatchNorm output there. What the pruned channels carried is thereby
spread over the kept ones, so recovery starts near the teacher instead of near 0 mAP
(yolov7-tiny-shapes pruned 0.5: 0.28 mAP@.5:.95 before any gradient step against 0.009 after
re-estimating BatchNorm; benchmarks/README.md). Kept channels are matched to the teacher's
by their BatchNorm parameters (biases in a fused model), which pruning slices unchanged.
"""
from __future__ import annotations

import copy
import time

from ..core.log import G_LOGGER

CHUNK = 4096  # positions per Gram update: memory stays at CHUNK x features


def _match(s_keys, t_keys) -> list:
    """Index of the teacher channel of each student channel (nearest key row, each once)."""
    import torch

    d = torch.cdist(s_keys.double(), t_keys.double())
    out, used = [], set()
    for row in d:
        order = torch.argsort(row).tolist()
        k = next((i for i in order if i not in used), order[0])
        used.add(k)
        out.append(k)
    return out


def _keys(conv, bn):
    import torch

    if bn is not None:
        return torch.stack([bn.weight, bn.bias, bn.running_mean, bn.running_var], 1).detach()
    return conv.bias.detach()[:, None]


def _patches(x, conv, b, oy, ox):
    """(P, C*kh*kw) input patches of ``conv`` at output positions (b, oy, ox)."""
    import torch
    import torch.nn.functional as F

    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    rows = [torch.stack([xp[b, :, oy * sh + dy, ox * sw + dx] for dx in range(kw)], -1) for dy in range(kh)]
    return torch.stack(rows, -2).reshape(len(b), -1)


def refit(conv, x_s, y_t, gen, positions: int, lam: float) -> float:
    """Refit ``conv`` in place so that conv(x_s) matches y_t (channels already selected);
    returns the relative error of the fit on the sampled positions."""
    import torch

    n, _, oh, ow = y_t.shape
    total = n * oh * ow
    idx = torch.arange(total) if total <= positions else torch.randperm(total, generator=gen)[:positions]
    w0 = conv.weight.detach().double().reshape(conv.out_channels, -1)
    if conv.bias is not None:
        w0 = torch.cat([w0, conv.bias.detach().double()[:, None]], 1)
    dev = w0.device
    A = torch.zeros(w0.shape[1], w0.shape[1], dtype=torch.float64, device=dev)
    B = torch.zeros(w0.shape[1], w0.shape[0], dtype=torch.float64, device=dev)
    yy = 0.0
    for c in idx.split(CHUNK):
        c = c.to(dev)
        b, rem = c // (oh * ow), c % (oh * ow)
        X = _patches(x_s, conv, b, rem // ow, rem % ow).double()
        if conv.bias is not None:
            X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=dev)], 1)
        Y = y_t[b, :, rem // ow, rem % ow].double()
        A += X.T @ X
        B += X.T @ Y
        yy += float(Y.pow(2).sum())
    reg = lam * A.diagonal().mean().clamp(min=1e-12)
    W = torch.linalg.solve(A + reg * torch.eye(len(A), dtype=A.dtype, device=dev), B + reg * w0.T).T
    err = float((W @ A * W).sum() - 2 * (W * B.T).sum()) + yy  # ||X W^T - Y||^2 from the sums
    if conv.bias is not None:
        conv.bias.data.copy_(W[:, -1].to(conv.bias.dtype))
        W = W[:, :-1]
    conv.weight.data.copy_(W.reshape(conv.weight.shape).to(conv.weight.dtype))
    return (max(err, 0.0) / max(yy, 1e-12)) ** 0.5  # the sums can cancel to just below 0


def _inputs(m, ys, x):
    return ys[m.f] if isinstance(m.f, int) and m.f != -1 else (
        x if m.f == -1 else [x if j == -1 else ys[j] for j in m.f])


def _refit_layer(ms, mt, xs, xt, head, gen, positions: int, lam: float) -> list:
    from ..models.common import Conv
    from ..models.heads import IDetect

    if isinstance(ms, Conv) and ms.conv.groups == 1:
        oi = _match(_keys(ms.conv, ms.bn), _keys(mt.conv, mt.bn))
        return [refit(ms.conv, xs, mt.conv(xt)[:, oi], gen, positions, lam)]
    if ms is head:
        errs = []
        for i in range(ms.nl):
            a_s, a_t = (ms.ia[i](xs[i]), mt.ia[i](xt[i])) if isinstance(ms, IDetect) else (xs[i], xt[i])
            errs.append(refit(ms.m[i], a_s, mt.m[i](a_t), gen, positions, lam))
        return errs
    return []


def reconstruct(student, teacher, images, positions: int = 16384, lam: float = 1e-2, seed: int = 0) -> dict:
    """Refit ``student``'s convs in place on ``images`` (N,3,H,W float 0..1 on the student's
    device). ``teacher`` is the unpruned model in any form (a copy is brought to the
    student's). Returns {"layers", "mean_rel_err", "max_rel_err"}."""
    import torch

    from ..models.common import Dropped

    t0 = time.time()
    t = copy.deepcopy(teacher).float().to(images.device).eval()
    if student.is_fused:
        t.fuse()
    s, was_training = student, student.training
    s.eval()
    gen = torch.Generator().manual_seed(seed)
    ys, yt, errs = [], [], []
    xs = xt = images.float()
    with torch.no_grad():
        for ms, mt in zip(s.model, t.model):
            if isinstance(ms, Dropped):
                ys.append(None)
                yt.append(None)
                continue
            xs, xt = _inputs(ms, ys, xs), _inputs(mt, yt, xt)
            errs += _refit_layer(ms, mt, xs, xt, s.head, gen, positions, lam)
            xs, xt = ms(xs), mt(xt)
            ys.append(xs if ms.i in s.save else None)
            yt.append(xt if mt.i in t.save else None)
    s.train(was_training)
    res = {"layers": len(errs), "mean_rel_err": round(sum(errs) / max(len(errs), 1), 4),
           "max_rel_err": round(max(errs, default=0.0), 4), "seconds": round(time.time() - t0, 1)}
    G_LOGGER.info(f"pruned model reconstructed from the teacher by least squares in {res['seconds']:.0f} s: "
                  f"{res['layers']} convs, relative error {res['mean_rel_err']:.3f} on average")
    return res
