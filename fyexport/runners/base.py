"""The one Runner contract shared by ``eval``, ``bench``, the build and the runtime API.

A runner takes a letterboxed float32 batch ``(B, 3, H, W)`` (RGB, 0..1) of any size and
returns the decoded predictions ``(B, N, 5+nc)`` as float32 numpy (:meth:`Runner.infer`),
or every output by name (:meth:`Runner.run_all`; a graph that ends in NMS has four).  The
batch is cut into runs the artifact accepts (:attr:`RunnerInfo.batch_range`: a static
batch is zero-padded, a TensorRT profile's maximum is not exceeded), so no caller splits
batches itself.  What the artifact is (:class:`RunnerInfo`: input size, classes, batch
range, the NMS in its graph, its metadata) is known once the runner is loaded; callers
read it there and never probe the runner.

Lifecycle: construct (cheap, nothing loaded) -> :meth:`load` -> :meth:`infer` ... ->
:meth:`close`; runners are context managers.  For benchmarking, :meth:`compute_fn` stages
one input on the device and returns a callable that runs one inference on it and returns
the *device* time in ms (CUDA events on GPU, wall clock on CPU).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER
from ..core.meta import ArtifactMeta, NmsConfig


@dataclass
class RunnerInfo:
    """What a runner serves, read from the artifact itself."""

    path: str
    runtime: str  # torch | onnxruntime | tensorrt
    precision: str  # fp32 | fp16 | int8
    device: str  # cpu | cuda | cuda:0 ...
    input_hw: tuple
    batch: int | None  # the static batch; None when the batch is dynamic
    nc: int
    names: list = field(default_factory=list)
    mode: str = ""  # e.g. "eager", "cuda-graph", "channels-last"
    size_mb: float | None = None
    params: int | None = None
    gmacs: float | None = None
    prune: dict | None = None
    batch_range: tuple = (1, None)  # (smallest, largest) batch one run takes; None: no largest
    graph_nms: NmsConfig | None = None  # the NMS the graph ends in (export --nms), else None
    outputs: tuple = ("output",)
    meta: ArtifactMeta = field(default_factory=ArtifactMeta)

    @property
    def label(self) -> str:
        mode = f" {self.mode}" if self.mode else ""
        return f"{self.runtime}{mode} {self.precision} {self.device}"

    @property
    def has_graph_nms(self) -> bool:
        return "num_dets" in self.outputs


class Runner:
    """Base class.  Subclasses implement ``_load`` and ``_infer`` (and ``_run_all`` when the
    graph has other outputs than ``output``), optionally ``_close`` and ``compute_fn``."""

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
        """Decoded predictions of a batch of any size."""
        outs = [self._infer(chunk)[:n] for chunk, n in self._runs(x)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def run_all(self, x: np.ndarray) -> dict:
        """Every output by name, for a batch of any size."""
        parts = [{k: v[:n] for k, v in self._run_all(chunk).items()} for chunk, n in self._runs(x)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def accepted_batches(self, requested) -> list:
        """The batch sizes of ``requested`` one run takes (the ones bench times); if none, the
        largest it takes, with a warning."""
        lo, hi = self.info.batch_range
        ok = [int(b) for b in requested if lo <= int(b) and (hi is None or int(b) <= hi)]
        skipped = [int(b) for b in requested if int(b) not in ok]
        if skipped:
            span = f"batch {lo}" if lo == hi else f"batch {lo}..{hi}"
            G_LOGGER.warning(f"{self.info.path}: takes {span}; not timing batch {', '.join(map(str, skipped))}"
                             + ("" if ok else f"; timing batch {hi}"))
        return ok or [hi]

    def _checked(self, x: np.ndarray) -> np.ndarray:
        if not self._loaded:
            raise FyexportError(f"{type(self).__name__}: infer() before load()")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected a (B, 3, H, W) batch, got shape {x.shape}")
        if tuple(x.shape[2:]) != tuple(self.info.input_hw):
            raise InputError(f"{self.info.path}: built for input {tuple(self.info.input_hw)}, got {tuple(x.shape[2:])}",
                             "Use the artifact's size (`img_size`), or re-export it")
        if len(x) == 0:
            raise InputError("an empty batch")
        return x

    def _runs(self, x: np.ndarray):
        """(chunk, images of it that are real) runs covering ``x``: chunks of at most the
        largest batch, zero-padded up to the smallest."""
        x = self._checked(x)
        lo, hi = self.info.batch_range
        step = hi or len(x)
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if n < lo:
                chunk = np.concatenate([chunk, np.zeros((lo - n, *chunk.shape[1:]), chunk.dtype)])
            yield chunk, n

    def compute_fn(self, x: np.ndarray) -> Callable[[], float]:
        """Default: host wall time of one run (CPU runners)."""
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

    def _run_all(self, x: np.ndarray) -> dict:
        return {"output": self._infer(x)}

    def _close(self) -> None:
        pass
