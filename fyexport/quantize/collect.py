"""Calibration: run the FP32 ONNX on sample images and stream histograms.

Images are read recursively (jpg, png, bmp, webp, tiff), sampled deterministically with
the seed, letterboxed with the project's one letterbox at the model's input size, and
fed in batches to ONNX Runtime with the tensors of the Q/DQ plan exposed as outputs.
Each tensor the plan histograms (``Plan.reps``: every tensor of a scale group except Concat
outputs and copies) gets one |x| histogram (2048 bins, growing range); the pre-activation
Conv outputs (needed only by the CPU flavour) get min/max.  Nothing else is kept, so
memory is bounded by tensors x bins plus one batch.  Every few batches the state
is saved, so an interrupted run resumes and ends byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER, progress
from ..data.selection import ImageSet
from ..onnx.facts import cpu_session, image_input
from .graph import Plan
from .histogram import AbsHistogram, NonFiniteActivation

MIN_RECOMMENDED = 500


@dataclass
class Collected:
    hists: dict  # histogrammed tensor -> AbsHistogram (Plan.reps says which group it belongs to)
    ranges: dict  # conv output -> [min, max]
    images_used: int
    images_skipped: int
    skipped_reasons: dict = field(default_factory=dict)
    seconds: float = 0.0
    infer_seconds: float = 0.0
    stats_seconds: float = 0.0  # time spent counting histograms and ranges


def calibration_model(proto, outputs: list) -> bytes:
    """The FP32 graph cut down to what ``outputs`` need, with a symbolic batch axis."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.graph.output[:]
    for name in outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    needed, stack = set(outputs), list(outputs)
    producer = {o: n for n in m.graph.node for o in n.output}
    keep = set()
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        for i in n.input:
            if i and i not in needed:
                needed.add(i)
                stack.append(i)
    nodes = [n for n in m.graph.node if id(n) in keep]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    inits = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    del m.graph.value_info[:]
    inp = next(i for i in m.graph.input if i.name == image_input(proto).name)
    inp.type.tensor_type.shape.dim[0].ClearField("dim_value")
    inp.type.tensor_type.shape.dim[0].dim_param = "batch"
    return m.SerializeToString()


def exposed_tensors(plan: Plan) -> tuple[list, list]:
    """(tensors histogrammed, Conv outputs that only need min/max)."""
    reps = sorted({t for ts in plan.reps.values() for t in ts})
    # Pre-activation ranges are derived from the post-activation statistics (see qdq.py);
    # only Conv outputs without a recognised activation are exposed for min/max.
    extra = [t for t in plan.conv_outputs if t not in reps and plan.activations.get(t, ("none",))[0] == "none"]
    return reps, extra


def calibration_session(proto, outputs: list):
    """An ONNX Runtime CPU session of the FP32 graph with ``outputs`` exposed."""
    # Counting runs between two inferences on the same cores: stop ONNX Runtime's worker
    # threads spinning as soon as a run returns, or they spin against the counting threads
    # (benchmarks/README.md, calibration cost).
    return cpu_session(calibration_model(proto, outputs), config={"session.force_spinning_stop": "1"})


def state_key(model_sha: str, images: ImageSet, method_independent: dict) -> str:
    from ..core.artifacts import sha256_json

    return sha256_json({"model": model_sha, "images": images.list_hash, **method_independent})


@dataclass
class _Tally:
    """Where a statistics pass stands: the next image, and what was used or skipped."""

    next: int = 0
    used: int = 0
    skipped: int = 0
    reasons: dict = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped += 1
        self.reasons[why] = self.reasons.get(why, 0) + 1


class _StatsPass:
    """One ONNX Runtime session over the calibration images, counting as it goes."""

    def __init__(self, proto, hists: dict, ranges: dict):
        inp = image_input(proto)
        if None in inp.hw:
            raise InputError("the ONNX input needs fixed H and W for calibration")
        self.in_name, self.hw = inp.name, inp.hw
        self.sess = calibration_session(proto, list(hists) + list(ranges))
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.hists, self.ranges = hists, ranges
        self.first_done = any(h.width is not None for h in hists.values())
        self.t_inf = self.t_stats = 0.0

    def count(self, arrays) -> None:
        tb = time.perf_counter()
        _update_stats(self.out_names, arrays, self.hists, self.ranges)
        self.t_stats += time.perf_counter() - tb

    def run_batch(self, paths, tally: _Tally, bar) -> None:
        """One image per run and statistics right away: exposing intermediate tensors of a
        whole batch costs far more memory traffic than the inference itself.  Only the first
        batch is held, because its max |x| sets each histogram's bin width."""
        from ..data.images import BadImage, prepare, read_image

        stash = []
        for p in paths:
            bar.advance()
            try:
                x = prepare(read_image(p), self.hw).tensor
            except BadImage as e:
                tally.skip(e.reason)
                G_LOGGER.debug(f"{p}: skipped ({e})")
                continue
            ta = time.perf_counter()
            res = self.sess.run(self.out_names, {self.in_name: x[None]})
            self.t_inf += time.perf_counter() - ta
            if self.first_done:
                self.count([[r] for r in res])
            else:
                stash.append(res)
            tally.used += 1
        if stash:
            self.count([[r[k] for r in stash] for k in range(len(self.out_names))])
            self.first_done = True


def collect(proto, plan: Plan, images: ImageSet, batch: int = 8, state_path: Path | None = None,
            state_key: str = "", save_every: int = 4) -> Collected:
    """Run the calibration images and return the histograms and ranges."""
    reps, extra = exposed_tensors(plan)
    hists = {t: AbsHistogram() for t in reps}  # per tensor; calibration unifies each group to the max
    ranges = {t: [math.inf, -math.inf] for t in extra}
    tally = _resume(state_path, state_key, hists, ranges, len(images.paths))
    stats = _StatsPass(proto, hists, ranges)
    stats.first_done = stats.first_done or tally.next > 0
    t0 = time.perf_counter()
    n = len(images.paths)
    with progress("calibrate", n) as bar:
        bar.advance(tally.next)
        for bi, i0 in enumerate(range(tally.next, n, batch)):
            stats.run_batch(images.paths[i0:i0 + batch], tally, bar)
            tally.next = min(i0 + batch, n)
            if state_path is not None and (bi + 1) % save_every == 0 and i0 + batch < n:
                _save_state(state_path, state_key, tally, hists, ranges)
    if tally.used == 0:
        raise InputError(f"{images.root}: none of the {n} images could be read "
                         f"({', '.join(f'{v} {k}' for k, v in tally.reasons.items())})")
    return Collected(hists, ranges, tally.used, tally.skipped, tally.reasons, time.perf_counter() - t0,
                     stats.t_inf, stats.t_stats)


def _resume(state_path, key: str, hists: dict, ranges: dict, n: int) -> _Tally:
    """The tally of an interrupted pass with the same key (its histograms loaded), else a new one."""
    if state_path is None or not state_path.exists():
        return _Tally()
    try:
        st = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return _Tally()
    if st.get("key") != key:
        G_LOGGER.info("calibration: stale state from another model/image set ignored")
        return _Tally()
    for t, h in st["hists"].items():
        hists[t] = AbsHistogram.from_state(h)
    ranges.update({k: list(v) for k, v in st["ranges"].items()})
    G_LOGGER.info(f"calibration: resuming at image {st['next']} of {n}")
    return _Tally(st["next"], st["used"], st["skipped"], st["reasons"])


def _save_state(path: Path, key: str, tally: _Tally, hists: dict, ranges: dict) -> None:
    from ..core.artifacts import write_bytes

    payload = {"key": key, "next": tally.next, "used": tally.used, "skipped": tally.skipped,
               "reasons": tally.reasons, "hists": {t: h.to_state() for t, h in hists.items()}, "ranges": ranges}
    write_bytes(path, json.dumps(payload).encode())


def _update_stats(names, arrays, hists, ranges) -> None:
    """Histogram / min-max the exposed tensors.  ``arrays[k]`` is the list of arrays of
    ``names[k]`` forming one batch.

    Counting is a scattered increment per value and the C helper releases the GIL, so the
    tensors are shared out to one thread per core, between two inferences.  Each histogram
    is updated by exactly one thread per batch and the batch is finished before the next
    starts, so the histograms do not depend on timing (byte-identical caches)."""
    by_tensor: dict = {}
    for name, xs in zip(names, arrays):
        if name in hists:
            by_tensor[name] = list(xs)
        r = ranges.get(name)
        if r is not None:
            r[0] = min(r[0], min(float(x.min()) for x in xs))
            r[1] = max(r[1], max(float(x.max()) for x in xs))
    pool = _stats_pool()
    if pool is None:
        _count_share(hists, by_tensor.items())
        return
    # One task per worker thread, the tensors dealt largest first to the least loaded one
    # (a task per tensor made counting a fifth slower: 23 ms instead of 18 ms an image).
    size = {g: sum(x.size for x in xs) for g, xs in by_tensor.items()}
    shares = [[] for _ in range(_POOL_WORKERS)]
    load = [0] * len(shares)
    for g in sorted(by_tensor, key=lambda g: (-size[g], g)):
        k = load.index(min(load))
        shares[k].append((g, by_tensor[g]))
        load[k] += size[g]
    for f in [pool.submit(_count_share, hists, share) for share in shares if share]:
        f.result()  # re-raises a worker's error (e.g. non-finite activations)


def _count_share(hists, share) -> None:
    for g, xs in share:
        try:
            hists[g].update(xs)
        except NonFiniteActivation:
            raise FyexportError(f"tensor {g}: NaN or Inf activations during calibration",
                                "The model computes non-finite values on these images; check it with 'fyexport eval'")


_POOL = None
_POOL_WORKERS = 1


def _stats_pool():
    """One worker per core for histogram counting (None on a single core)."""
    global _POOL, _POOL_WORKERS
    if _POOL is None:
        from ..core.machine import physical_cores

        _POOL_WORKERS = physical_cores()
        _POOL = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="fyexport-hist") if _POOL_WORKERS > 1 else False
    return _POOL or None
