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

import numpy as np

from ..errors import FyexportError, InputError
from ..log import G_LOGGER, progress
from .graph import Plan, analyse
from .histogram import AbsHistogram

MIN_RECOMMENDED = 500


@dataclass
class ImageSet:
    paths: list
    found: int
    list_hash: str
    root: str


def select_images(folder, num_images: int | None = 500, seed: int = 0) -> ImageSet:
    from ..preprocess import file_list_hash, list_images, sample_images

    p = Path(folder)
    if not p.exists():
        raise InputError(f"{p}: no such calibration folder")
    if not p.is_dir():
        raise InputError(f"{p}: not a folder (give a folder of calibration images)")
    found = list_images(p)
    if not found:
        raise InputError(f"{p}: no image files (jpg, png, bmp, webp, tiff) in this folder or below",
                         "Put at least a few hundred images like the deployment's in it")
    chosen = sample_images(found, num_images, seed)
    return ImageSet(chosen, len(found), file_list_hash(chosen, p), str(p))


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


def _model_input(proto):
    inits = {i.name for i in proto.graph.initializer}
    inp = [i for i in proto.graph.input if i.name not in inits][0]
    dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


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
    inp = [i for i in m.graph.input if i.name not in {x.name for x in m.graph.initializer}][0]
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
    import onnxruntime as ort

    from ..runners.ort import session_options

    so = session_options()
    # Counting runs between two inferences on the same cores: stop ONNX Runtime's worker
    # threads spinning as soon as a run returns, or they spin against the counting threads
    # (measured: counting 31 ms -> 22 ms per 640x640 image on 2 cores, inference unchanged).
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(calibration_model(proto, outputs), so, providers=["CPUExecutionProvider"])


def _state_key(model_sha: str, images: ImageSet, method_independent: dict) -> str:
    from ..artifacts import sha256_json

    return sha256_json({"model": model_sha, "images": images.list_hash, **method_independent})


def collect(proto, plan: Plan, images: ImageSet, batch: int = 8, state_path: Path | None = None,
            state_key: str = "", save_every: int = 4) -> Collected:
    """Run the calibration images and return the histograms and ranges."""
    from ..preprocess import BadImage, prepare, read_image

    in_name, dims = _model_input(proto)
    hw = (dims[2], dims[3])
    if hw[0] is None or hw[1] is None:
        raise InputError("the ONNX input needs fixed H and W for calibration")
    reps, extra = exposed_tensors(plan)
    sess = calibration_session(proto, reps + extra)
    out_names = [o.name for o in sess.get_outputs()]

    hists = {t: AbsHistogram() for t in reps}  # per tensor; calibrate() unifies each group to the max
    ranges = {t: [math.inf, -math.inf] for t in extra}
    start, used, skipped, reasons = 0, 0, 0, {}
    if state_path is not None and state_path.exists():
        st = _load_state(state_path)
        if st and st.get("key") == state_key:
            start, used, skipped, reasons = st["next"], st["used"], st["skipped"], st["reasons"]
            for g, h in st["hists"].items():
                hists[g].__dict__.update(h)
            ranges.update({k: list(v) for k, v in st["ranges"].items()})
            G_LOGGER.info(f"calibration: resuming at image {start} of {len(images.paths)}")
        else:
            G_LOGGER.info("calibration: stale state from another model/image set ignored")
    t0 = time.perf_counter()
    t_inf = t_stats = 0.0
    n = len(images.paths)
    first_done = any(h.width is not None for h in hists.values()) or start > 0
    with progress("calibrate", n) as bar:
        bar.advance(start)
        for bi, i0 in enumerate(range(start, n, batch)):
            chunk = images.paths[i0:i0 + batch]
            stash = []
            for p in chunk:
                try:
                    x = prepare(read_image(p), hw).tensor
                except BadImage as e:
                    skipped += 1
                    why = str(e).split(" (")[0]
                    reasons[why] = reasons.get(why, 0) + 1
                    G_LOGGER.debug(f"{p}: skipped ({e})")
                    bar.advance()
                    continue
                # One image per run and statistics right away: exposing intermediate tensors of
                # a whole batch costs far more memory traffic than the inference itself.  Only
                # the first batch is held, because its max |x| sets the histogram bin width.
                ta = time.perf_counter()
                res = sess.run(out_names, {in_name: x[None]})
                t_inf += time.perf_counter() - ta
                if first_done:
                    tb = time.perf_counter()
                    _update_stats(out_names, [[r] for r in res], hists, ranges)
                    t_stats += time.perf_counter() - tb
                else:
                    stash.append(res)
                del res
                used += 1
                bar.advance()
            if stash:
                tb = time.perf_counter()
                _update_stats(out_names, [[r[k] for r in stash] for k in range(len(out_names))], hists, ranges)
                t_stats += time.perf_counter() - tb
                first_done = True
                del stash
            if state_path is not None and (bi + 1) % save_every == 0 and i0 + batch < n:
                _save_state(state_path, state_key, i0 + batch, used, skipped, reasons, hists, ranges)
    if used == 0:
        raise InputError(f"{images.root}: none of the {n} images could be read "
                         f"({', '.join(f'{v} {k}' for k, v in reasons.items())})")
    return Collected(hists, ranges, used, skipped, reasons, time.perf_counter() - t0, t_inf, t_stats)


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
        for g, xs in by_tensor.items():
            hists[g].update(xs)
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
        hists[g].update(xs)


_POOL = None
_POOL_WORKERS = 1


def _stats_pool():
    """One worker per core for histogram counting (None on a single core)."""
    global _POOL, _POOL_WORKERS
    if _POOL is None:
        from ..runners.ort import physical_cores

        _POOL_WORKERS = physical_cores()
        _POOL = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="fyexport-hist") if _POOL_WORKERS > 1 else False
    return _POOL or None


def _save_state(path: Path, key, nxt, used, skipped, reasons, hists, ranges) -> None:
    from ..artifacts import write_bytes

    payload = {"key": key, "next": nxt, "used": used, "skipped": skipped, "reasons": reasons,
               "hists": {g: {"width": h.width, "counts": None if h.counts is None else h.counts.tolist(),
                             "amax": h.amax, "min": h.min, "max": h.max, "total": h.total,
                             "_pending_zeros": getattr(h, "_pending_zeros", 0)} for g, h in hists.items()},
               "ranges": ranges}
    write_bytes(path, json.dumps(payload).encode())


def _load_state(path: Path) -> dict | None:
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for h in st.get("hists", {}).values():
        if h.get("counts") is not None:
            h["counts"] = np.asarray(h["counts"], dtype=np.int64)
    return st
