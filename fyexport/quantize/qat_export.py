"""From calibration to a QAT model and from a trained QAT model to the Q/DQ models.

* :func:`calibrated_ranges`: fyexport's own calibration of an FP32 ONNX (every conv but the
  detection head quantized, no bias correction: training corrects the biases) as the
  starting ranges;
* :func:`start_qat`: export, plan, calibrate if needed and :func:`~fyexport.quantize.qat.prepare_qat`
  in one call;
* :func:`write_qat_models`: re-export the trained weights to FP32 ONNX and build the Q/DQ
  flavours through the same :func:`fyexport.quantize.calibration.write_flavours` as PTQ,
  with the trained ranges (one definition of placement: the plan is analysed again on the
  re-exported ONNX and must be the one trained with).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InternalError
from .calibration import ARTIFACTS, FLAVOURS, AmaxChoice
from .qat import QuantRanges, prepare_qat, starting_ranges, strip_qat, trained_ranges

QAT_RECORD = "qat.json"
QAT_STATE = ".qat-state.pt"  # interrupted quantization-aware training, resumed by the next run


@dataclass
class QatExport:
    """What :func:`write_qat_models` wrote."""

    fp32_onnx: Path
    files: dict  # flavour / "cache" / "record" -> path
    ranges: QuantRanges
    moved: dict = field(default_factory=dict)  # group -> relative change of its amax against the calibration


def calibrated_ranges(onnx_path, images, out_dir, method: str = "entropy", num_images: int | None = 500,
                      seed: int = 0, exclude: str | None = None) -> QuantRanges:
    """Calibrate ``onnx_path`` on the images under ``images`` with fyexport's calibration
    (``method``; no auto-exclusion, no bias correction, no Q/DQ model written) and return
    the ranges; ``out_dir`` receives calib.json, calib.cache and the statistics."""
    from .calibration import calibrate

    res = calibrate(onnx_path, images, out_dir, method=method, num_images=num_images, seed=seed, exclude=exclude,
                    auto_exclude=0, bias_correction=0, flavours=())
    return QuantRanges.from_calib_json(res.files["json"])


def start_qat(model, onnx_path, ranges: QuantRanges, flavour: str = "trt", learn: bool = True):
    """The QAT model of ``model`` for the FP32 ONNX ``onnx_path`` exported from it and its
    calibrated ``ranges``."""
    from ..onnx.facts import check_onnx_file
    from .graph import analyse

    proto = check_onnx_file(onnx_path)
    return prepare_qat(model, proto, analyse(proto, ranges.exclude), ranges, flavour, learn)


def write_qat_models(qat_model, out_dir, img_size=640, fp32_onnx=None, batch: int = 1, dynamic_batch: bool = False,
                     flavours=tuple(FLAVOURS), trt_version: int | None = None, info: dict | None = None) -> QatExport:
    """Write the trained ``qat_model`` as Q/DQ models (``flavours``), calib.cache with the
    trained ranges and qat.json to ``out_dir``; the FP32 ONNX of the trained weights goes to
    ``fp32_onnx`` (default ``out_dir/model.qat.onnx``).  ``info`` is recorded in qat.json and
    in the models' metadata."""
    from ..core.artifacts import write_json, write_text
    from ..onnx.export import export_onnx
    from ..onnx.facts import check_onnx_file, read_meta
    from .cache import format_cache, trt_version_number
    from .calibration import write_flavours
    from .graph import analyse

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = Path(fp32_onnx) if fp32_onnx else out_dir / "model.qat.onnx"
    export_onnx(strip_qat(qat_model), fp32, img_size=img_size, batch=batch, dynamic_batch=dynamic_batch)
    proto = check_onnx_file(fp32)
    calibrated = starting_ranges(qat_model)
    plan = analyse(proto, calibrated.exclude)
    _check_same_plan(qat_model, plan)
    trained = trained_ranges(qat_model)
    moved = {g: trained.amax[g] / calibrated.amax[g] - 1 for g in trained.amax if calibrated.amax[g]}
    learned = bool((qat_model.meta.get("qat") or {}).get("learn"))
    record = {"flavour_trained": qat_model.qat.flavour, "learned_ranges": learned,
              "groups": len(plan.groups), "quantized_convs": len(plan.conv_nodes), "float_convs": plan.excluded_convs,
              "amax_change_max": max((abs(v) for v in moved.values()), default=0.0), **(info or {})}
    meta = read_meta(proto).with_(calibration={"method": "qat"}, qat=record)
    files = write_flavours(proto, plan, AmaxChoice("qat", trained.amax, trained.gmin), trained.ranges, {}, meta,
                           out_dir, flavours)
    ver = trt_version if trt_version is not None else trt_version_number()
    tensors = {t: trained.amax[g] for t, g in sorted(plan.tensor_group.items())}
    files["cache"] = write_text(out_dir / ARTIFACTS["cache"], format_cache(tensors, ver))
    files["record"] = write_json(out_dir / QAT_RECORD, record | {
        "groups_trained": {g: {"amax": trained.amax[g], "min": trained.gmin[g], "calibrated_amax": calibrated.amax[g],
                               "calibrated_min": calibrated.gmin.get(g, 0.0)} for g in sorted(trained.amax)}})
    return QatExport(fp32, files, trained, moved)


def _check_same_plan(qat_model, plan) -> None:
    """The re-exported ONNX must plan the placement the model was trained with."""
    pl = qat_model.qat_placement
    if set(plan.groups) != set(qat_model.qat.groups) or set(plan.conv_nodes) != set(pl.convs.values()):
        raise InternalError("the trained model's ONNX plans another Q/DQ placement than the one it was trained with")
