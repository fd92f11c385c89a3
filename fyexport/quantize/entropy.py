"""Choosing amax from a |x| histogram: TensorRT's EntropyCalibration2 (KL) search, MinMax,
percentile and MSE (docs/int8-tensorrt.md, 3.2 and 5).

The KL search follows NVIDIA's open reference (pytorch-quantization's
``_compute_amax_entropy``): for every candidate i >= 128 bins, P is ``hist[:i]`` with the
clipped tail added to its last bin, Q squeezes ``hist[:i]`` into 128 groups and spreads
each group's count evenly over the group's non-empty bins; amax is the upper edge of the
candidate with the smallest KL(P||Q) (the last one on ties).  Instead of O(N^2) Python
loops, group sums and non-empty counts come from cumulative sums at the group boundaries,
so a 2048-bin tensor takes a few milliseconds.

MSE is the "Histogram(MSE)" that NVIDIA's yolo_deepstream found best for YOLOv7 PTQ
(pytorch-quantization's ``_compute_amax_mse``): every bin centre from the 128th on is a
candidate amax; the bin centres are fake-quantized to 127 symmetric levels with it and the
candidate with the smallest count-weighted squared error wins.
"""
from __future__ import annotations

import numpy as np

NUM_QUANT_BINS = 128  # signed INT8: 1 << (8 - 1)
METHODS = ("entropy", "minmax", "percentile", "mse")


def kl_divergences(hist: np.ndarray, num_quant_bins: int = NUM_QUANT_BINS, start: int = NUM_QUANT_BINS,
                   zero_bin_fix: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(candidates i, KL(P_i || Q_i)) for i in [start, len(hist)]; inf where Q misses mass."""
    h = np.asarray(hist, dtype=np.float64).copy()
    if zero_bin_fix and len(h) > 1:
        h[0] = h[1]  # damp the spike at zero (post-ReLU/SiLU), as pytorch-quantization does
    n = len(h)
    cands = np.arange(max(start, num_quant_bins), n + 1)
    if len(cands) == 0:
        return cands, np.zeros(0)
    total = h.sum()
    csum = np.concatenate([[0.0], np.cumsum(h)])
    nz = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    cs_hlogh = np.concatenate([[0.0], np.cumsum(hlogh)])

    # Group boundaries b[i, k] = first bin index of group k for candidate i, as
    # np.digitize(range(i), np.linspace(0, i, 129)) - 1 assigns bins to groups.
    space = np.arange(num_quant_bins + 1, dtype=np.float64)[None, :] * (cands / num_quant_bins)[:, None]
    bounds = np.ceil(space).astype(np.int64)  # (C, 129); k * (i / 128): linspace's own arithmetic
    bounds[:, -1] = cands
    g_tot = csum[bounds[:, 1:]] - csum[bounds[:, :-1]]  # (C, 128)
    g_nz = nz[bounds[:, 1:]] - nz[bounds[:, :-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        g_term = np.where(g_tot > 0, g_tot * np.log(g_tot / np.maximum(g_nz, 1)), 0.0).sum(1)
        q_last = np.where(g_nz[:, -1] > 0, g_tot[:, -1] / np.maximum(g_nz[:, -1], 1), 0.0)

    c_i = csum[cands]  # counts inside the first i bins
    tail = total - c_i  # clipped outliers, added to P's last bin
    h_last = h[cands - 1]
    p_last = h_last + tail
    # sum_j P_j log P_j
    with np.errstate(divide="ignore", invalid="ignore"):
        s_plogp = cs_hlogh[cands - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        # sum_j P_j log Q_j: the group terms cover h_j log Q_j for all j < i; the tail adds tail*log Q_last
        s_plogq = g_term + np.where(tail > 0, tail * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        kl = (s_plogp - s_plogq) / total - np.log(total) + np.log(np.where(c_i > 0, c_i, 1.0))
    bad = (p_last > 0) & (h_last == 0) & (tail > 0)  # Q is zero where P is not
    bad |= c_i <= 0
    kl = np.where(bad, np.inf, kl)
    return cands, np.maximum(kl, 0.0)


def entropy_amax(hist: np.ndarray, width: float, num_quant_bins: int = NUM_QUANT_BINS,
                 start: int = NUM_QUANT_BINS) -> float:
    """amax = upper edge of the candidate with the smallest KL (last minimum on ties)."""
    cands, kl = kl_divergences(hist, num_quant_bins, start)
    if len(cands) == 0 or not np.isfinite(kl).any():
        return float(len(hist) * width)
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float(cands[best] * width)


def percentile_amax(hist: np.ndarray, width: float, percentile: float) -> float:
    """Upper edge of the bin where the cumulative |x| mass reaches ``percentile``%."""
    c = np.cumsum(np.asarray(hist, dtype=np.float64))
    if c[-1] <= 0:
        return 0.0
    idx = int(np.searchsorted(c, c[-1] * percentile / 100.0, side="left"))
    return float(min(idx + 1, len(hist)) * width)


def mse_amax(hist: np.ndarray, width: float, levels: int = 127, start: int = NUM_QUANT_BINS,
             chunk: int = 256) -> float:
    """Bin centre minimizing the count-weighted squared error of 127-level fake quantization."""
    h = np.asarray(hist, dtype=np.float64)
    n = len(h)
    centers = (np.arange(n, dtype=np.float64) + 0.5) * width
    if n <= start:
        return float(centers[-1])
    nz = h > 0
    c, w = centers[nz], h[nz]  # only occupied bins contribute
    best_err, best = np.inf, n - 1
    for i0 in range(start, n, chunk):
        cand = centers[i0:min(i0 + chunk, n)][:, None]  # (C, 1)
        scale = levels / cand
        q = np.round(np.minimum(c[None, :], cand) * scale) / scale
        err = ((q - c[None, :]) ** 2 * w[None, :]).sum(1)
        j = int(np.argmin(err))  # first minimum, as torch.argmin
        if err[j] < best_err:
            best_err, best = float(err[j]), i0 + j
    return float(centers[best])


def compute_amax(h, method: str = "entropy", percentile: float = 99.99) -> float:
    """amax for an :class:`AbsHistogram` by ``method``; never 0 (a constant-zero tensor gets 1e-6)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}")
    if h.counts is None or h.amax == 0.0:
        return 1e-6
    if method == "minmax":
        a = h.amax
    elif method == "percentile":
        a = percentile_amax(h.counts, h.width, percentile)
    elif method == "mse":
        a = mse_amax(h.counts, h.width)
    else:
        a = entropy_amax(h.counts, h.width)
    return float(max(min(a, h.amax) if method != "entropy" else a, 1e-6))


def group_amax(reps: dict, hists: dict, method: str = "entropy", percentile: float = 99.99) -> dict:
    """{group: amax} for ``Plan.reps``: each histogrammed tensor by itself, the group takes the
    largest (shared scales unify to the max, docs/int8-tensorrt.md 5)."""
    return {g: max(compute_amax(hists[t], method, percentile) for t in ts) for g, ts in reps.items()}


def group_min(reps: dict, hists: dict) -> dict:
    """{group: smallest value seen in any of its histogrammed tensors} (0 if none was seen)."""
    return {g: min((hists[t].min for t in ts if hists[t].counts is not None), default=0.0) for g, ts in reps.items()}
