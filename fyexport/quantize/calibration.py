"""``calibrate``: statistics over sample images -> amax per scale group -> cache and Q/DQ models.

Steps, each a function below: plan the Q/DQ placement; collect (or reuse) the histograms;
choose each group's amax (one method, ``auto`` or the per-group ``search``); optionally keep
the most sensitive groups in float; write the TensorRT cache; measure bias correction;
write and check the three Q/DQ flavours; write ``calib.json``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.config import ConfigError, require
from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER

STATS_FILE = "calib.stats.json"
STATS_VERSION = 3  # bump when the meaning of stored statistics changes (group ids, histogram layout)
DEFAULT_BATCH = 8  # images per histogram batch: the first batch's max |x| sets the bin widths
MIN_RECOMMENDED = 500
CALIBRATION_METHODS = ("entropy", "minmax", "percentile", "mse", "auto", "search")


@dataclass(frozen=True)
class Flavour:
    """One Q/DQ model: its file, and the precision recorded in its metadata."""

    file: str
    precision: str


# The one set of names for the Q/DQ models: keys of CalibrationResult.files, the build's
# manifest labels and the ``flavour`` recorded in each model's metadata.
FLAVOURS = {
    "trt": Flavour("model.qdq.onnx", "int8 s8s8"),
    "trt-fp16": Flavour("model.qdq.fp16.onnx", "int8 s8s8 + fp16"),
    "cpu": Flavour("model.qdq.cpu.onnx", "int8 u8s8 (onnxruntime cpu)"),
}
ARTIFACTS = {"cache": "calib.cache", "json": "calib.json", **{k: f.file for k, f in FLAVOURS.items()}}


BUILD_METHOD = "search"  # the build's method, and QAT's start (fyexport recover --qat)


@dataclass
class CalibrationConfig:
    """The calibrate stage's settings."""

    num_images: int | None = 500  # images sampled (deterministically) from the folder
    batch: int = DEFAULT_BATCH  # images per histogram batch
    method: str = "entropy"  # TensorRT's KL search (the build uses BUILD_METHOD)
    percentile: float = 99.99
    seed: int = 0
    exclude: str | None = None  # regex of Conv node/tensor names kept in float
    auto_exclude: int = 0  # keep the K most sensitive scale groups in float
    sensitivity_images: int = 8
    bias_correction: int = 32  # images for bias correction (0: off)
    trt_version: int | None = None  # the cache header's version (None: installed or 10.16)
    flavours: tuple = tuple(FLAVOURS)

    def validate(self) -> None:
        require(self.method in CALIBRATION_METHODS, "method",
                f"must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}")
        require(0 < self.percentile <= 100, "percentile", f"must be in (0, 100], got {self.percentile}")
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        require(self.num_images is None or self.num_images >= 1, "num_images", f"must be >= 1, got {self.num_images}")
        require(self.auto_exclude >= 0, "auto_exclude", f"must be >= 0, got {self.auto_exclude}")
        require(self.bias_correction >= 0, "bias_correction", f"must be >= 0, got {self.bias_correction}")
        if self.exclude:
            try:
                re.compile(self.exclude)
            except re.error as e:
                raise ConfigError("exclude", f"is not a regular expression ({e})")
        unknown = set(self.flavours) - set(FLAVOURS)
        require(not unknown, "flavours", f"has unknown Q/DQ flavour(s) {sorted(unknown)}; known: {', '.join(FLAVOURS)}")


CalibrationOptions = CalibrationConfig  # the 0.1 name, for one release


@dataclass
class CalibrationResult:
    out_dir: Path
    files: dict  # ARTIFACTS key -> path
    method: str
    images_used: int
    images_skipped: int
    seconds: float
    infer_seconds: float
    stats_seconds: float
    amax_seconds: float
    peak_rss_mb: float | None = None
    info: dict = field(default_factory=dict)


@dataclass
class AmaxChoice:
    """The calibrated ranges and how they were chosen."""

    method: str
    amax: dict  # group -> amax
    gmin: dict  # group -> smallest value seen
    selection: dict | None = None
    seconds: float = 0.0


def _peak_rss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover
        return None


def calibrate(onnx_path, images, out_dir, options: CalibrationConfig | None = None, **overrides) -> CalibrationResult:
    """Calibrate the FP32 ``onnx_path`` on the images under the folder ``images`` (or an
    :class:`~fyexport.data.images.ImageSet` already selected) and write :data:`ARTIFACTS` to
    ``out_dir``.  ``overrides`` set :class:`CalibrationConfig` fields."""
    from ..core.artifacts import sha256_file, writable_folder
    from ..data.selection import ImageSet, select_images

    o = replace(options or CalibrationConfig(), **overrides)
    o.validate()
    full, proto, plan = _plan(onnx_path, o.exclude)
    imgs = images if isinstance(images, ImageSet) else select_images(images, o.num_images, o.seed)
    if len(imgs.paths) < MIN_RECOMMENDED:
        G_LOGGER.warning(f"{imgs.root}: {len(imgs.paths)} calibration images; TensorRT guidance is at least "
                         f"{MIN_RECOMMENDED} representative images")
    out_dir = writable_folder(out_dir)  # a read-only place fails now, in one line, not after the statistics
    t0 = time.perf_counter()
    model_sha = sha256_file(onnx_path)
    col = _statistics(proto, plan, imgs, out_dir, model_sha, o)
    probe = probe_images(proto, imgs, o.sensitivity_images) if o.method in ("auto", "search") or o.auto_exclude \
        else None
    chosen = choose_amax(proto, plan, col, probe, o.method, o.percentile)
    sensitivity = None
    if o.auto_exclude:
        plan, sensitivity = _auto_exclude(proto, plan, chosen, col.ranges, probe, o.auto_exclude, o.exclude)
    files, info = _write_outputs(proto, plan, chosen, col, imgs, out_dir, o, onnx_path, model_sha,
                                 full if full is not proto else None)
    info["sensitivity"] = sensitivity
    files["json"] = _write_calib_json(out_dir, info, plan, chosen, col, files)
    (out_dir / ".calib-state.json").unlink(missing_ok=True)
    return CalibrationResult(out_dir, files, chosen.method, col.images_used, col.images_skipped,
                             time.perf_counter() - t0, col.infer_seconds, col.stats_seconds, chosen.seconds,
                             _peak_rss_mb(), info)


def _plan(onnx_path, exclude):
    """(the model, the graph calibration runs on ONNX Runtime, the Q/DQ plan).  A graph that ends
    in a TensorRT plugin NMS (EfficientNMS_TRT, which ONNX Runtime cannot run) is calibrated up to
    its decoded output, and the NMS is put back on the Q/DQ models (:func:`write_flavours`)."""
    from ..onnx.facts import check_onnx_file
    from ..onnx.nms import plugin_ops, strip_nms
    from .graph import analyse

    full = check_onnx_file(onnx_path)
    if any(n.op_type == "QuantizeLinear" for n in full.graph.node):
        raise InputError(f"{onnx_path}: already quantized", "Calibrate the FP32 ONNX from 'fyexport export'")
    proto = full
    if plugin_ops(full):
        G_LOGGER.info(f"{onnx_path}: ends in {', '.join(plugin_ops(full))} (TensorRT only): calibrated up to its "
                      "decoded output, the NMS is put back on the Q/DQ models")
        proto = strip_nms(full)
    try:
        plan = analyse(proto, exclude)
    except Exception as e:  # noqa: BLE001 - a graph we do not understand
        raise InputError(f"{onnx_path}: cannot plan Q/DQ placement ({e})")
    if not plan.conv_nodes:
        raise InputError(f"{onnx_path}: no Conv left to quantize (check `exclude`)")
    return full, proto, plan


def _statistics(proto, plan, imgs, out_dir: Path, model_sha: str, o: CalibrationConfig):
    """The histograms of this model on these images: reused from calib.stats.json when it was
    made by the same model, images and settings, else collected (resumably) and saved."""
    from .collect import collect, state_key

    key = state_key(model_sha, imgs, {"batch": o.batch, "exclude": o.exclude or "", "stats_format": STATS_VERSION})
    stats_file = out_dir / STATS_FILE
    col = load_collected(stats_file, key)
    if col is not None:
        G_LOGGER.info(f"calibration statistics reused from {stats_file} (same model, images and settings)")
    else:
        col = collect(proto, plan, imgs, o.batch, state_path=out_dir / ".calib-state.json", state_key=key)
        save_collected(stats_file, key, col)
    if col.images_skipped:
        why = ", ".join(f"{v} {k}" for k, v in sorted(col.skipped_reasons.items()))
        G_LOGGER.warning(f"{imgs.root}: skipped {col.images_skipped} of {len(imgs.paths)} images ({why}); "
                         f"calibrated on {col.images_used}")
    if col.images_used < MIN_RECOMMENDED <= len(imgs.paths):
        G_LOGGER.warning(f"only {col.images_used} usable calibration images (fewer than {MIN_RECOMMENDED})")
    return col


def choose_amax(proto, plan, col, probe, method: str, percentile: float) -> AmaxChoice:
    """Each scale group's amax by ``method`` (``auto``: one method for the whole model chosen
    by output error; ``search``: per group, see :mod:`fyexport.quantize.search`)."""
    from .entropy import group_amax, group_min

    ta = time.perf_counter()
    gmin = group_min(plan.reps, col.hists)
    selection = None
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
    return AmaxChoice(method, amax, gmin, selection, time.perf_counter() - ta)


def probe_images(proto, imgs, n: int):
    """The first ``n`` usable calibration images, letterboxed, as one (n,3,H,W) array."""
    import itertools

    import numpy as np

    from ..data.images import iter_prepared
    from ..onnx.facts import image_input

    return np.stack(list(itertools.islice(iter_prepared(imgs.paths, image_input(proto).hw), n)))


def _choose_method(proto, plan, col, gmin, probe, percentile: float):
    """``--method auto``: the amax method (entropy, percentile, minmax) whose Q/DQ models
    move the outputs least on a few calibration images (benchmarks/README.md: which method
    wins differs between the unpruned and the recovered pruned yolov7)."""
    from .entropy import METHODS, group_amax
    from .sensitivity import method_errors

    amaxes = {m: group_amax(plan.reps, col.hists, m, percentile) for m in METHODS}
    errors = method_errors(proto, plan, amaxes, gmin, col.ranges, probe)
    chosen = min(METHODS, key=lambda m: errors[m])  # ties: METHODS order, entropy first
    G_LOGGER.info("method auto: " + ", ".join(f"{m} {errors[m]:.4f}" for m in METHODS) + f" -> {chosen}")
    return chosen, {"requested": "auto", "chosen": chosen, "output_error": errors,
                    "images": len(probe), "flavours": ["trt", "cpu"]}


def _auto_exclude(proto, plan, chosen: AmaxChoice, ranges, probe, k: int, exclude):
    """Keep the ``k`` scale groups whose quantization costs the most output error in float."""
    from .graph import analyse
    from .sensitivity import exclusion_regex, rank_groups

    ranked = rank_groups(proto, plan, chosen.amax, chosen.gmin, ranges, probe, "cpu", exclude)
    kept = ranked[1:k + 1]
    convs = sorted({c for _, _, cs in kept for c in cs})
    G_LOGGER.info(f"sensitivity: keeping {len(kept)} scale groups ({len(convs)} convs) in float; output error "
                  f"{ranked[0][1]:.4f} with everything quantized")
    new_plan = analyse(proto, exclusion_regex(convs, exclude))
    return new_plan, {"error_all_quantized": ranked[0][1],
                      "ranking": [{"group": g, "error_if_float": e, "convs": cs} for g, e, cs in ranked[1:]],
                      "kept_float": [g for g, _, _ in kept]}


def _write_outputs(proto, plan, chosen: AmaxChoice, col, imgs, out_dir: Path, o: CalibrationConfig, onnx_path,
                   model_sha: str, full=None):
    """The cache and the Q/DQ models; returns (files, the calib.json record so far)."""
    from ..core.artifacts import recorded_path, sha256_file, write_text
    from ..data.images import PREPROCESSING
    from ..onnx.facts import read_meta
    from .cache import format_cache, trt_version_number

    tensors = {t: chosen.amax[g] for t, g in sorted(plan.tensor_group.items())}
    ver = o.trt_version if o.trt_version is not None else trt_version_number()
    files = {"cache": write_text(out_dir / ARTIFACTS["cache"], format_cache(tensors, ver))}
    meta = read_meta(proto)
    info = {
        "method": chosen.method, "percentile": o.percentile if chosen.method == "percentile" else None,
        "histogram_bins": 2048, "quantized_bins": 128,
        "images": {"folder": recorded_path(imgs.root, out_dir / ARTIFACTS["json"]), "found": imgs.found,
                   "selected": len(imgs.paths),
                   "used": col.images_used, "skipped": col.images_skipped, "skipped_reasons": col.skipped_reasons,
                   "list_sha256": imgs.list_hash, "seed": o.seed, "num_images": o.num_images},
        "batch": o.batch, "preprocessing": PREPROCESSING, "input_size": list(meta.img_size) if meta.img_size else None,
        "model": {"path": recorded_path(onnx_path, out_dir / ARTIFACTS["json"]), "sha256": model_sha},
        "exclude": o.exclude, "excluded_convs": plan.excluded_convs, "quantized_convs": len(plan.conv_nodes),
        "auto_exclude": o.auto_exclude, "sensitivity": None, "method_selection": chosen.selection,
        "trt_cache_header_version": ver,
    }
    meta = meta.with_(calibration={"method": chosen.method, "images": col.images_used,
                                   "list_sha256": imgs.list_hash, "cache_sha256": sha256_file(files["cache"])})
    shifts = {}
    if o.bias_correction:
        shifts, n = _bias_shifts(proto, plan, chosen, imgs, o)
        info["bias_correction"] = {"images": n,
                                   "method": "per-conv local mean output shift",
                                   "max_abs_shift": {fl: max((max(abs(v) for v in s) for s in d.values()), default=0.0)
                                                     for fl, d in shifts.items()}}
    files.update(write_flavours(proto, plan, chosen, col.ranges, shifts, meta, out_dir, o.flavours, full))
    return files, info


def _bias_shifts(proto, plan, chosen: AmaxChoice, imgs, o: CalibrationConfig) -> tuple[dict, int]:
    """({"trt"|"cpu": {conv: per-channel mean output shift}} for the flavours asked for,
    images used)."""
    from .bias import local_shifts

    xs = probe_images(proto, imgs, o.bias_correction)
    kinds = sorted({"cpu" if f == "cpu" else "trt" for f in o.flavours})
    return {fl: local_shifts(proto, plan, chosen.amax, chosen.gmin, xs, fl) for fl in kinds}, len(xs)


def write_flavours(proto, plan, chosen: AmaxChoice, ranges, shifts: dict, meta, out_dir: Path, flavours,
                   full=None) -> dict:
    """Build, tag, check and write each Q/DQ flavour; {flavour: path}.  ``full``: the model whose
    plugin NMS ``proto`` was cut from; the TensorRT flavours get it back, the CPU flavour (ONNX
    Runtime) gets the same NMS as standard ONNX NonMaxSuppression."""
    import onnx

    from ..core.artifacts import atomic_path
    from ..onnx.facts import write_meta
    from .qdq import build_qdq, to_fp16

    files, trt_model = {}, None
    for fl in flavours:
        if fl == "trt-fp16":
            base = trt_model or _with_nms(build_qdq(proto, plan, chosen.amax, chosen.gmin, ranges, "trt",
                                                    shifts.get("trt")), full, meta, "trt")[0]
            qm, fl_meta = to_fp16(base, plan), meta
        else:
            qm, fl_meta = _with_nms(build_qdq(proto, plan, chosen.amax, chosen.gmin, ranges, fl, shifts.get(fl)),
                                    full, meta, fl)
            trt_model = qm if fl == "trt" else trt_model
        write_meta(qm, fl_meta.with_(precision=FLAVOURS[fl].precision, flavour=fl))
        plugin = full is not None and fl != "cpu"
        if not plugin:  # ONNX's checker and ONNX Runtime know no TensorRT plugin
            onnx.checker.check_model(qm)
        path = out_dir / FLAVOURS[fl].file
        with atomic_path(path) as tmp:
            onnx.save(qm, str(tmp))
        _check_loads(path, qm if plugin else None)
        files[fl] = path
    return files


def _with_nms(qm, full, meta, flavour: str):
    """(the Q/DQ model with ``full``'s plugin NMS back, its metadata); for the CPU flavour the
    NMS is ONNX NonMaxSuppression with the same settings.  Unchanged without ``full``."""
    if full is None:
        return qm, meta
    from ..onnx.nms import append_nms, reattach_nms

    if flavour != "cpu":
        return reattach_nms(qm, full), meta
    nms = replace(meta.nms, kind="onnx")
    return append_nms(qm, nms, int(meta.nc)), meta.with_(nms=nms.to_dict())


def _write_calib_json(out_dir: Path, info: dict, plan, chosen: AmaxChoice, col, files: dict) -> Path:
    from ..core.artifacts import write_json

    info["groups"] = {g: {"amax": chosen.amax[g], "min": chosen.gmin[g], "tensors": plan.groups[g],
                          "histogrammed": plan.reps[g]} for g in sorted(plan.groups)}
    info["tensors"] = {t: chosen.amax[g] for t, g in sorted(plan.tensor_group.items())}
    info["pre_activation_ranges"] = {t: col.ranges[t] for t in sorted(col.ranges)}
    info["artifacts"] = {k: Path(p).name for k, p in files.items()}
    return write_json(out_dir / ARTIFACTS["json"], info)


def save_collected(path, key: str, col) -> None:
    """Histograms and ranges of a finished collection, so another --method is instant."""
    from ..core.artifacts import write_bytes

    payload = {"key": key, "images_used": col.images_used, "images_skipped": col.images_skipped,
               "skipped_reasons": col.skipped_reasons, "ranges": col.ranges,
               "hists": {g: h.to_state() for g, h in col.hists.items()}}
    write_bytes(path, json.dumps(payload).encode())


def load_collected(path, key: str):
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
    hists = {g: AbsHistogram.from_state(d) for g, d in st["hists"].items()}
    return Collected(hists, {k: list(v) for k, v in st["ranges"].items()}, st["images_used"], st["images_skipped"],
                     st.get("skipped_reasons", {}))


def _check_loads(path, plugin_model=None) -> None:
    """ONNX Runtime loads what was written (a model with a TensorRT plugin: its graph up to the plugin's NMS)."""
    from ..onnx.facts import cpu_session
    from ..onnx.nms import strip_nms

    try:
        cpu_session(path if plugin_model is None else strip_nms(plugin_model))
    except Exception as e:  # noqa: BLE001
        raise FyexportError(f"{path}: written but ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})")
