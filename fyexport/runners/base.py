"""The one Runner contract shared by ``eval``, ``bench`` and the runtime API.

A runner takes a letterboxed float32 batch ``(B, 3, H, W)`` (RGB, 0..1) and returns the
decoded predictions ``(B, N, 5+nc)`` as float32 numpy.  Lifecycle: construct (cheap,
nothing loaded) -> :meth:`load` -> :meth:`infer` ... -> :meth:`close`; runners are
context managers.

For benchmarking, :meth:`compute_fn` stages one input on the device and returns a callable
that runs one inference on it and returns the *device* time in ms (CUDA events on GPU,
wall clock on CPU), so model time can be reported apart from host copies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import FyexportError, InputError


@dataclass
class RunnerInfo:
    """What a runner serves, read from the artifact itself."""

    path: str
    runtime: str  # torch | onnxruntime | tensorrt
    precision: str  # fp32 | fp16 | int8
    device: str  # cpu | cuda | cuda:0 ...
    input_hw: tuple
    batch: int | None  # None = dynamic
    nc: int
    names: list = field(default_factory=list)
    mode: str = ""  # e.g. "eager", "cuda-graph", "channels-last"
    size_mb: float | None = None
    params: int | None = None
    gmacs: float | None = None
    prune: dict | None = None

    @property
    def label(self) -> str:
        mode = f" {self.mode}" if self.mode else ""
        return f"{self.runtime}{mode} {self.precision} {self.device}"


class Runner:
    """Base class.  Subclasses implement ``_load``, ``_infer`` and optionally ``_close``
    and ``compute_fn``."""

    def __init__(self) -> None:
        self.info: RunnerInfo | None = None
        self._loaded = False

    # -- lifecycle ------------------------------------------------------
    def load(self) -> "Runner":
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference ------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        if not self._loaded:
            raise FyexportError(f"{type(self).__name__}: infer() before load()")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected a (B, 3, H, W) batch, got shape {x.shape}")
        if tuple(x.shape[2:]) != tuple(self.info.input_hw):
            raise InputError(f"{self.info.path}: built for input {tuple(self.info.input_hw)}, got {tuple(x.shape[2:])}",
                             "Use --img-size to match the artifact, or re-export it")
        if self.info.batch is not None and x.shape[0] != self.info.batch:
            return self._infer_padded(x)
        return self._infer(x)

    def _infer_padded(self, x: np.ndarray) -> np.ndarray:
        """Static-batch artifacts: split or zero-pad to the artifact's batch."""
        b = self.info.batch
        outs = []
        for i in range(0, x.shape[0], b):
            chunk = x[i:i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self._infer(chunk)[:n])
        return np.concatenate(outs)

    def compute_fn(self, x: np.ndarray) -> Callable[[], float]:
        """Default: host wall time of ``infer`` (CPU runners)."""
        x = np.ascontiguousarray(x, dtype=np.float32)

        def run() -> float:
            t0 = time.perf_counter()
            self._infer(x)
            return (time.perf_counter() - t0) * 1e3

        return run

    # -- to implement -----------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _close(self) -> None:
        pass
