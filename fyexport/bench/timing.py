"""How ``fyexport bench`` times a runner: warm-up by time, then a fixed measuring duration
(at least 10 iterations), as trtexec does; statistics of the times."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

CV_WARN = 0.10  # coefficient of variation above which a measurement is called unstable


@dataclass
class Stats:
    median: float
    mean: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float
    cv: float
    n: int

    @classmethod
    def of(cls, ms: list) -> "Stats":
        a = np.asarray(ms, dtype=np.float64)
        mean = float(a.mean())
        return cls(float(np.median(a)), mean, *(float(np.percentile(a, q)) for q in (90, 95, 99)), float(a.min()),
                   float(a.max()), float(a.std() / mean) if mean > 0 else 0.0, int(a.size))


def timed_loop(fn, warmup_s: float, duration_s: float, min_iters: int = 10) -> list:
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        fn()
    times = []
    t_end = time.perf_counter() + duration_s
    while time.perf_counter() < t_end or len(times) < min_iters:
        times.append(fn())
    return times


def input_batch(images: list, hw, batch: int) -> np.ndarray:
    from ..data.images import prepare

    if images:
        xs = [prepare(images[i % len(images)], hw).tensor for i in range(batch)]
        return np.stack(xs)
    return np.full((batch, 3, *hw), 114 / 255, np.float32)


def end_to_end(runner, images: list, hw, warmup_s: float, duration_s: float) -> list:
    from ..data.images import prepare, scale_boxes
    from ..onnx.nms import runner_detections

    def one(img):
        t0 = time.perf_counter()
        p = prepare(img, hw)
        det = runner_detections(runner, p.tensor[None], 0.25, 0.45)[0]  # the graph's NMS when it has one
        scale_boxes(det[:, :4], p.ratio, p.pad, p.orig_hw)
        return (time.perf_counter() - t0) * 1e3

    k = [0]

    def step():
        k[0] += 1
        return one(images[k[0] % len(images)])

    return timed_loop(step, warmup_s, duration_s, min_iters=min(10, 2 * len(images)))
