"""INT8: TensorRT-faithful calibration, the TensorRT calibration cache and Q/DQ ONNX models.

``calibrate(model.onnx, images, out_dir)`` writes:

* ``calib.cache``: TensorRT text cache (``TRT-<ver>-EntropyCalibration2``, hex scales);
* ``calib.json``: amax per tensor and group, method, image count and list hash,
  preprocessing, model sha256;
* ``model.qdq.onnx``: INT8 S8S8 Q/DQ for TensorRT 10 (FP32 remainder);
* ``model.qdq.fp16.onnx``: the same with an FP16 remainder, for TensorRT 11 strong typing;
* ``model.qdq.cpu.onnx``: U8S8, fully quantized, for ONNX Runtime on CPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..log import G_LOGGER

STATS_FILE = "calib.stats.json"
STATS_VERSION = 3  # bump when the meaning of stored statistics changes (group ids, histogram layout)
ARTIFACTS = {
    "cache": "calib.cache",
    "json": "calib.json",
    "qdq": "model.qdq.onnx",
    "qdq_fp16": "model.qdq.fp16.onnx",
    "qdq_cpu": "model.qdq.cpu.onnx",
}


@dataclass
class CalibrationResult:
    out_dir: Path
    files: dict
    method: str
    images_used: int
    images_skipped: int
    seconds: float
    infer_seconds: float
    stats_seconds: float
    amax_seconds: float
    peak_rss_mb: float | None = None
    info: dict = field(default_factory=dict)


def _peak_rss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover
        return None


def calibrate(onnx_path, images, out_dir, num_images: int | None = 500, batch: int = 8, method: str = "entropy",
              percentile: float = 99.99, seed: int = 0, exclude: str | None = None, trt_version: int | None = None,
              flavours=("trt", "trt-fp16", "cpu"), auto_exclude: int = 0,
              sensitivity_images: int = 8, bias_correction: int = 32) -> CalibrationResult:
    import onnx

    from ..artifacts import sha256_file, write_json, write_text
    from ..export import check_onnx_file, read_meta, write_meta
    from ..preprocess import PREPROCESSING
    from .cache import format_cache, trt_version_number
    from .collect import MIN_RECOMMENDED, _state_key, collect, select_images
    from .entropy import METHODS, group_amax, group_min
    from .graph import analyse
    from .qdq import build_qdq, to_fp16

    if method not in METHODS + ("auto", "search"):
        raise InputError(f"--method must be one of {', '.join(METHODS + ('auto', 'search'))}, got {method!r}")
    if not (0 < percentile <= 100):
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    if num_images is not None and num_images < 1:
        raise InputError(f"--num-images must be >= 1, got {num_images}")
    proto = check_onnx_file(onnx_path)
    if any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        raise InputError(f"{onnx_path}: already quantized", "Calibrate the FP32 ONNX from 'fyexport export'")
    try:
        plan = analyse(proto, exclude)
    except Exception as e:  # noqa: BLE001 - a bad regex or a graph we do not understand
        raise InputError(f"{onnx_path}: cannot plan Q/DQ placement ({e})")
    if not plan.conv_nodes:
        raise InputError(f"{onnx_path}: no Conv left to quantize (check --exclude)")
    imgs = select_images(images, num_images, seed)
    if len(imgs.paths) < MIN_RECOMMENDED:
        G_LOGGER.warning(f"{images}: {len(imgs.paths)} calibration images; TensorRT guidance is at least "
                         f"{MIN_RECOMMENDED} representative images")
    model_sha = sha256_file(onnx_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = _state_key(model_sha, imgs, {"batch": batch, "exclude": exclude or "", "stats_format": STATS_VERSION})
    state = out_dir / ".calib-state.json"
    stats_file = out_dir / STATS_FILE
    t0 = time.perf_counter()
    col = load_collected(stats_file, key)
    if col is not None:
        G_LOGGER.info(f"calibration statistics reused from {stats_file} (same model, images and settings)")
    else:
        col = collect(proto, plan, imgs, batch, state_path=state, state_key=key)
        save_collected(stats_file, key, col)
    if col.images_skipped:
        why = ", ".join(f"{v} {k}" for k, v in sorted(col.skipped_reasons.items()))
        G_LOGGER.warning(f"{images}: skipped {col.images_skipped} of {len(imgs.paths)} images ({why}); "
                         f"calibrated on {col.images_used}")
    if col.images_used < MIN_RECOMMENDED and len(imgs.paths) >= MIN_RECOMMENDED:
        G_LOGGER.warning(f"only {col.images_used} usable calibration images (fewer than {MIN_RECOMMENDED})")
    ta = time.perf_counter()
    gmin = group_min(plan.reps, col.hists)
    selection = None
    probe = None  # the few images that score methods and groups, read once
    if method in ("auto", "search") or auto_exclude:
        probe = _images_tensor(proto, imgs, sensitivity_images)
    if method == "auto":
        method, selection = _choose_method(proto, plan, col, gmin, probe, percentile)
    if method == "search":
        from .search import search_amax

        amax, per_group = search_amax(proto, plan, col.hists, probe)
        chosen = [r["chosen"] for r in per_group.values()]
        G_LOGGER.info("amax search: " + ", ".join(f"{chosen.count(c)} {c}" for c in sorted(set(chosen))))
        selection = {"requested": "search", "images": len(probe), "groups": per_group}
    else:
        amax = group_amax(plan.reps, col.hists, method, percentile)
    amax_s = time.perf_counter() - ta

    sensitivity = None
    if auto_exclude:
        plan, sensitivity = _auto_exclude(proto, plan, amax, gmin, col.ranges, probe, auto_exclude, exclude)
    tensors = {t: amax[g] for t, g in sorted(plan.tensor_group.items())}
    ver = trt_version if trt_version is not None else trt_version_number()
    files = {}
    files["cache"] = write_text(out_dir / ARTIFACTS["cache"], format_cache(tensors, ver))
    meta = read_meta(proto)
    calib_info = {
        "method": method, "percentile": percentile if method == "percentile" else None,
        "histogram_bins": 2048, "quantized_bins": 128,
        "images": {"folder": str(Path(images).resolve()), "found": imgs.found, "selected": len(imgs.paths),
                   "used": col.images_used, "skipped": col.images_skipped, "skipped_reasons": col.skipped_reasons,
                   "list_sha256": imgs.list_hash, "seed": seed, "num_images": num_images},
        "batch": batch, "preprocessing": PREPROCESSING, "input_size": meta.get("img_size"),
        "model": {"path": str(Path(onnx_path).resolve()), "sha256": model_sha},
        "exclude": exclude, "excluded_convs": plan.excluded_convs, "quantized_convs": len(plan.conv_nodes),
        "auto_exclude": auto_exclude, "sensitivity": sensitivity, "method_selection": selection,
        "trt_cache_header_version": ver,
    }
    cal_meta = dict(meta)
    cal_meta["calibration"] = {"method": method, "images": col.images_used, "list_sha256": imgs.list_hash,
                               "cache_sha256": sha256_file(files["cache"])}
    builders = {"trt": ("qdq", "int8 s8s8"), "trt-fp16": ("qdq_fp16", "int8 s8s8 + fp16"),
                "cpu": ("qdq_cpu", "int8 u8s8 (onnxruntime cpu)")}
    shifts = {}
    if bias_correction:
        from .bias import local_shifts

        xs = _images_tensor(proto, imgs, bias_correction)
        for fl in sorted({"cpu" if f == "cpu" else "trt" for f in flavours}):
            shifts[fl] = local_shifts(proto, plan, amax, gmin, xs, fl)
        calib_info["bias_correction"] = {"images": len(xs), "method": "per-conv local mean output shift",
                                         "max_abs_shift": {fl: max((max(abs(v) for v in s) for s in d.values()),
                                                                   default=0.0) for fl, d in shifts.items()}}
    trt_model = None
    for fl in flavours:
        key_name, precision = builders[fl]
        if fl == "trt-fp16":
            base = trt_model or build_qdq(proto, plan, amax, gmin, col.ranges, "trt", shifts.get("trt"))
            qm = to_fp16(base, plan)
        else:
            qm = build_qdq(proto, plan, amax, gmin, col.ranges, fl, shifts.get("cpu" if fl == "cpu" else "trt"))
            if fl == "trt":
                trt_model = qm
        m = dict(cal_meta)
        m["precision"] = precision
        m["flavour"] = fl
        write_meta(qm, m)
        onnx.checker.check_model(qm)
        path = out_dir / ARTIFACTS[key_name]
        from ..artifacts import atomic_path

        with atomic_path(path) as tmp:
            onnx.save(qm, str(tmp))
        _check_loads(path)
        files[key_name] = path
    calib_info["groups"] = {g: {"amax": amax[g], "min": gmin[g], "tensors": plan.groups[g],
                                "histogrammed": plan.reps[g]} for g in sorted(plan.groups)}
    calib_info["tensors"] = tensors
    calib_info["pre_activation_ranges"] = {t: col.ranges[t] for t in sorted(col.ranges)}
    calib_info["artifacts"] = {k: p.name for k, p in files.items()}
    files["json"] = write_json(out_dir / ARTIFACTS["json"], calib_info)
    state.unlink(missing_ok=True)
    return CalibrationResult(out_dir, files, method, col.images_used, col.images_skipped,
                             time.perf_counter() - t0, col.infer_seconds, col.stats_seconds, amax_s, _peak_rss_mb(),
                             calib_info)


def _images_tensor(proto, imgs, n: int):
    """The first ``n`` usable calibration images, letterboxed, as one (n,3,H,W) array."""
    import itertools

    import numpy as np

    from ..preprocess import iter_prepared
    from .collect import _model_input

    dims = _model_input(proto)[1]
    return np.stack(list(itertools.islice(iter_prepared(imgs.paths, (dims[2], dims[3])), n)))


def _choose_method(proto, plan, col, gmin, probe, percentile: float):
    """``--method auto``: the amax method (entropy, percentile, minmax) whose Q/DQ models
    move the outputs least on a few calibration images.  TensorRT's entropy clips long
    activation tails; on a well-recovered pruned yolov7 that cost 2.0 points of mAP while
    minmax cost 0.35, and on the unpruned model it is the other way round."""
    from .entropy import METHODS, group_amax
    from .sensitivity import method_errors

    amaxes = {m: group_amax(plan.reps, col.hists, m, percentile) for m in METHODS}
    errors = method_errors(proto, plan, amaxes, gmin, col.ranges, probe)
    chosen = min(METHODS, key=lambda m: errors[m])  # ties: METHODS order, entropy first
    G_LOGGER.info("method auto: " + ", ".join(f"{m} {errors[m]:.4f}" for m in METHODS) + f" -> {chosen}")
    return chosen, {"requested": "auto", "chosen": chosen, "output_error": errors,
                    "images": len(probe), "flavours": ["trt", "cpu"]}


def _auto_exclude(proto, plan, amax, gmin, ranges, probe, k: int, exclude):
    """Keep the ``k`` scale groups whose quantization costs the most output error in float."""
    from .graph import analyse
    from .sensitivity import exclusion_regex, rank_groups

    ranked = rank_groups(proto, plan, amax, gmin, ranges, probe, "cpu", exclude)
    chosen = ranked[1:k + 1]
    convs = sorted({c for _, _, cs in chosen for c in cs})
    G_LOGGER.info(f"sensitivity: keeping {len(chosen)} scale groups ({len(convs)} convs) in float; output error "
                  f"{ranked[0][1]:.4f} with everything quantized")
    new_plan = analyse(proto, exclusion_regex(convs, exclude))
    return new_plan, {"error_all_quantized": ranked[0][1],
                      "ranking": [{"group": g, "error_if_float": e, "convs": cs} for g, e, cs in ranked[1:]],
                      "kept_float": [g for g, _, _ in chosen]}


def save_collected(path, key: str, col) -> None:
    """Histograms and ranges of a finished collection, so another --method is instant."""
    import json

    from ..artifacts import write_bytes

    payload = {"key": key, "images_used": col.images_used, "images_skipped": col.images_skipped,
               "skipped_reasons": col.skipped_reasons, "ranges": col.ranges,
               "hists": {g: {"width": h.width, "counts": None if h.counts is None else h.counts.tolist(),
                             "amax": h.amax, "min": h.min, "max": h.max, "total": h.total}
                         for g, h in col.hists.items()}}
    write_bytes(path, json.dumps(payload).encode())


def load_collected(path, key: str):
    import json

    import numpy as np

    from .collect import Collected
    from .histogram import AbsHistogram

    try:
        st = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if st.get("key") != key:
        if Path(path).exists():
            G_LOGGER.info(f"{path}: statistics of another model or image set; calibrating again")
        return None
    hists = {}
    for g, d in st["hists"].items():
        h = AbsHistogram()
        h.width, h.amax, h.min, h.max, h.total = d["width"], d["amax"], d["min"], d["max"], d["total"]
        h.counts = None if d["counts"] is None else np.asarray(d["counts"], np.int64)
        hists[g] = h
    return Collected(hists, {k: list(v) for k, v in st["ranges"].items()}, st["images_used"], st["images_skipped"],
                     st.get("skipped_reasons", {}))


def _check_loads(path) -> None:
    import onnxruntime as ort

    from ..errors import FyexportError

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise FyexportError(f"{path}: written but ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})")
