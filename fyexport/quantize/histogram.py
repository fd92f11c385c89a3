"""Streaming |x| histograms, TensorRT style (docs/int8-tensorrt.md, 5).

The first batch fixes the bin width (its max|x| / 2048).  A later batch with a larger
max|x| appends bins of the same width, so the bin count can grow past 2048 but no bin is
ever re-split: merging batches equals histogramming them all at once with that width.
Memory is one int64 array per tensor.

A value's bin is ``floor(float32(|x|) * float32(1 / width))``.  Counting runs in a small C
helper (``_fasthist.c``, built at install, called through ctypes with the GIL released) at
about 0.45 ns per value (2-core Xeon, AVX-512); on activations fresh from ONNX Runtime it
runs as fast as numpy merely summing them, i.e. at the speed memory delivers them.
Without the helper, numpy computes the very same bins, several times slower.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np

NUM_BINS = 2048


class NonFiniteActivation(ValueError):
    """NaN or Inf among the values being counted (the caller names the tensor)."""


def _load_fast():
    try:
        import importlib.util

        spec = importlib.util.find_spec("fyexport.quantize._fasthist")
        if spec is None or not spec.origin:
            return None
        lib = ctypes.CDLL(spec.origin)
        lib.abs_hist.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_void_p]
        lib.abs_hist.restype = ctypes.c_int64
        return lib
    except (OSError, AttributeError, ImportError):
        return None


_FAST = _load_fast()


def count_abs(x: np.ndarray, width: float, nbins: int, use_fast: bool = True):
    """One pass over float32 ``x``: (counts of ``floor(|x| * (1/width))`` below ``nbins``,
    number of values at or beyond ``nbins``, min, max)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    inv = np.float32(1.0 / width)
    if use_fast and _FAST is not None:
        h = np.zeros(nbins, np.int64)
        mm = np.array([np.inf, -np.inf], np.float32)
        over = _FAST.abs_hist(x.ctypes.data, x.size, float(inv), nbins, h.ctypes.data, mm.ctypes.data)
        if over < 0:
            raise MemoryError("histogram buffer")
        return h, int(over), float(mm[0]), float(mm[1])
    f = np.abs(x) * inv
    ok = f < np.float32(nbins)  # NaN/Inf compare false: counted as overflow, like the C loop
    over = int(x.size - ok.sum())
    h = np.bincount(f[ok].astype(np.int64), minlength=nbins)
    return h, over, float(x.min()), float(x.max())


class AbsHistogram:
    """Histogram of |x| with a fixed bin width and a growing range."""

    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = num_bins
        self.width: float | None = None
        self.counts: np.ndarray | None = None
        self.amax = 0.0  # exact running max |x|
        self.min = math.inf  # exact running min (for asymmetric CPU ranges)
        self.max = -math.inf
        self.total = 0
        self.pending_zeros = 0  # values of all-zero batches seen before a width existed

    def update(self, batch) -> None:
        """Add one batch: an array, or a list of arrays that together form the batch (the
        first batch's max |x| sets the bin width).

        In the steady state each value is read once: bins, min and max come from the same
        pass over a histogram with headroom, and only a batch that outgrows the headroom is
        counted a second time."""
        arrays = [np.asarray(a, dtype=np.float32) for a in (batch if isinstance(batch, (list, tuple)) else [batch])]
        arrays = [a for a in arrays if a.size]
        if not arrays:
            return
        size = sum(x.size for x in arrays)
        if self.width is None:
            mn = min(float(a.min()) for a in arrays)
            mx = max(float(a.max()) for a in arrays)
            self._check(mn, mx)
            a = max(mx, -mn)
            self.min, self.max, self.amax = min(self.min, mn), max(self.max, mx), max(self.amax, a)
            self.total += size
            if a == 0.0:  # all zeros so far: count them once a width exists
                self.pending_zeros += size
                return
            self.width = a * (1 + 2 ** -20) / self.num_bins
            self.counts = np.zeros(self.num_bins, np.int64)
            self.counts[0] += self.pending_zeros
            for x in arrays:
                h, over, _, _ = count_abs(x, self.width, self.num_bins)
                if over:  # the width was chosen from this batch's max: only NaN/Inf overflow
                    raise NonFiniteActivation("NaN or Inf activation")
                self.counts += h
            return
        cap = 2 * len(self.counts)
        parts, mn, mx = [], math.inf, -math.inf
        overflow = False
        for x in arrays:
            h, over, lo, hi = count_abs(x, self.width, cap)
            parts.append(h)
            mn, mx = min(mn, lo), max(mx, hi)
            overflow |= over > 0
        self._check(mn, mx)
        a = max(mx, -mn)
        top = int(np.float32(a) * np.float32(1.0 / self.width))
        if overflow:  # the range grew past the headroom: count this batch again, exactly
            parts = []
            for x in arrays:
                h, over, _, _ = count_abs(x, self.width, top + 1)
                if over:
                    raise NonFiniteActivation("NaN or Inf activation")
                parts.append(h)
        n = max(len(self.counts), top + 1)
        if n > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(n - len(self.counts), np.int64)])
        for h in parts:
            self.counts += h[:n] if len(h) >= n else np.pad(h, (0, n - len(h)))
        self.min, self.max, self.amax = min(self.min, mn), max(self.max, mx), max(self.amax, a)
        self.total += size

    @staticmethod
    def _check(mn: float, mx: float) -> None:
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise NonFiniteActivation("NaN or Inf activation")

    def to_state(self) -> dict:
        """A JSON-able snapshot (calibration statistics and the resumable calibration state)."""
        return {"width": self.width, "counts": None if self.counts is None else self.counts.tolist(),
                "amax": self.amax, "min": self.min, "max": self.max, "total": self.total,
                "pending_zeros": self.pending_zeros}

    @classmethod
    def from_state(cls, d: dict) -> "AbsHistogram":
        h = cls()
        h.width, h.amax, h.min, h.max, h.total = d["width"], d["amax"], d["min"], d["max"], d["total"]
        h.counts = None if d["counts"] is None else np.asarray(d["counts"], np.int64)
        h.pending_zeros = int(d.get("pending_zeros", d.get("_pending_zeros", 0)))
        return h
