"""The build's accuracy report and gate: every model side by side against the unpruned
FP32 model, and the verdict on the final one.

Each model runs once on the report's images: with labels the validation split, which
recovery never trains on, scored by mAP and by teacher agreement; without labels the
images held out of the calibration folder, scored by teacher agreement.  Where it runs is
where the user deploys: on a GPU the FP32 rows run their checkpoint in PyTorch on the GPU
(the same network the ONNX file holds; ONNX Runtime's GPU build is an optional extra and
PyTorch is there anyway), the Q/DQ rows run on ONNX Runtime's CUDA provider when the
``[gpu]`` extra is installed (else on its CPU provider), and a built engine gets its own row,
run by TensorRT; without a GPU everything runs on ONNX Runtime on the CPU.  The gate
compares the final model (the engine when one is built, else the worse INT8 flavour) with
the unpruned FP32 model, in points of mAP@.5:.95 with labels, of teacher agreement without,
and splits the loss into what pruning cost (unpruned -> pruned FP32) and what quantization
cost (FP32 -> INT8).

The default allowance follows from the recovery target: a pruned model recovered to a kept
fraction ``t`` may lose ``(1 - t)`` of the unpruned score (in agreement, ``1.4 (1 - t)``:
:func:`fyexport.evaluation.metrics.agreement_target`), and quantization 1 point of mAP (3 of
agreement, which INT8 perturbs more than it moves mAP) more; quantization alone when
nothing is pruned or recovered.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import FyexportError

UNPRUNED, FP32 = "unpruned fp32", "fp32"
BEFORE_QAT = "fp32 before QAT"  # with QAT: the recovered model.onnx (the FP32 row is the QAT weights' twin)
INT8 = {"trt": "int8 (TensorRT Q/DQ)", "cpu": "int8 (CPU Q/DQ)"}
ENGINE_ROW = "engine (TensorRT)"
QUANTIZATION_POINTS = {"map": 1.0, "agreement": 3.0}  # INT8 of the unpruned shapes model: mAP +0.7, agreement -2.8


@dataclass
class AccuracyRow:
    """One model of the build's accuracy table (mAP only with labels)."""

    artifact: str
    images: int
    agreement: float
    agreement_strict: float
    map50: float | None = None
    map: float | None = None

    def score(self, metric: str) -> float:
        return self.map if metric == "map" else self.agreement

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("map50", "map")}

    @classmethod
    def from_dict(cls, d: dict) -> "AccuracyRow":
        return cls(**{k: d.get(k) for k in ("artifact", "images", "agreement", "agreement_strict", "map50", "map")})


@dataclass
class GateResult:
    """The accuracy gate's verdict on the final model against the unpruned FP32 model."""

    metric: str
    reference: float
    final_model: str
    final: float
    fp32: float
    drop_points: float
    pruning_points: float
    quantization_points: float
    max_drop: float
    allowance_rule: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RowSource:
    """What one row of the table is about (``artifact``) and what runs to measure it (the same
    network: the artifact itself, or its checkpoint in PyTorch on a GPU)."""

    artifact: Path
    run: Path
    runtime: str  # torch | onnxruntime | tensorrt
    device: str  # cpu | cuda


def candidates(out: Path, precision: str, pruned: bool, model_onnx: Path, artifacts: dict,
               qat_onnx: Path | None = None) -> dict:
    """{row label: ONNX path}; ``None`` stands for the unpruned baseline, exported on demand.
    ``qat_onnx``: the FP32 twin of INT8 models trained with quantization in the loop, the FP32
    row (so that the quantization's share of the loss is the quantization's alone)."""
    rows = {UNPRUNED: None, FP32: model_onnx} if pruned else {UNPRUNED: model_onnx}
    if qat_onnx is not None and precision == "int8":
        if pruned:  # the recovered model as exported, beside the twin: what QAT started from
            rows = {UNPRUNED: None, BEFORE_QAT: model_onnx}
        rows[FP32] = qat_onnx
    if precision == "int8":
        rows |= {label: out / artifacts[fl] for fl, label in INT8.items()}
    return rows


def sources(paths: dict, checkpoints: dict, device: str) -> dict:
    """{row label: RowSource} for the resolved ``device`` (cpu, cuda, cuda:N): ``checkpoints``
    gives the FP32 rows' checkpoints, which PyTorch runs on a GPU."""
    from ..onnx.facts import ort_has_cuda

    gpu = device.startswith("cuda")
    out = {}
    for label, path in paths.items():
        path = Path(path)
        if path.suffix in (".engine", ".plan"):
            out[label] = RowSource(path, path, "tensorrt", device if gpu else "cuda")
        elif gpu and checkpoints.get(label):
            out[label] = RowSource(path, Path(checkpoints[label]), "torch", device)
        else:
            out[label] = RowSource(path, path, "onnxruntime", device if gpu and ort_has_cuda() else "cpu")
    return out


def measure(rows: dict, spec, holdout, eval_images: int | None, hw: tuple) -> dict:
    """{row label: AccuracyRow} on the report's images at the input size ``hw``; ``rows``:
    {label: RowSource}."""
    from ..evaluation.agreement import agreement_scores
    from ..evaluation.metrics import coco_map, label_boxes

    images = (spec.images("val")[:eval_images] if eval_images else spec.images("val")) if spec else holdout.images
    if not images:
        raise FyexportError("no images to measure accuracy on",
                            "Give a data yaml with a val split (`data`), or more calibration images (`calib`)")
    dets = {}
    for label, src in rows.items():
        dets[label], nc = _detections(label, src, images, hw)
    teacher = dets[UNPRUNED]
    gt = label_boxes(images, teacher.sizes, spec.nc) if spec else None
    res = {}
    for label, d in dets.items():
        a50, strict = agreement_scores(d, teacher, nc)
        row = AccuracyRow(Path(rows[label].artifact).name, len(d.sizes), round(a50, 5), round(strict, 5))
        if gt is not None:
            row.map50, row.map, _ = coco_map(gt, d.sizes, d.boxes, nc)
        res[label] = row
    return res


def _detections(label: str, src: RowSource, images: list, hw: tuple):
    """(detections, classes) of one row, timed, saying where it ran."""
    import time

    from ..core.log import G_LOGGER
    from ..evaluation.detections import detect
    from ..runners import open_runner

    t = time.perf_counter()
    with open_runner(str(src.run), runtime=src.runtime, device=src.device, img_size=hw) as r:
        d = detect(r, images, description=f"accuracy {label}")
        nc = r.info.nc
    G_LOGGER.info(f"accuracy {label}: {len(d.sizes)} images on {src.runtime} {src.device} in "
                  f"{time.perf_counter() - t:.1f} s")
    return d, nc


def allowance(metric: str, reference: float, target: float | None) -> tuple[float, str]:
    """(points the final model may lose, the rule) when --max-map-drop is not given: what the
    recovery target lets pruning cost, plus what quantization may cost, in the gate's metric."""
    from ..evaluation.agreement import agreement_target

    q = QUANTIZATION_POINTS[metric]
    if target is None:
        return q, f"{q:g} for quantization"
    t = target if metric == "map" else agreement_target(target)
    pts = 100 * (1 - t) * reference + q
    what = f"recovery target {target:.0%}" + ("" if metric == "map" else f", {t:.2f} in agreement")
    return round(pts, 2), f"{1 - t:.0%} of the unpruned score for pruning ({what}) + {q:g} for quantization"


def gate(ev: dict, max_drop: float | None, target: float | None) -> GateResult:
    """The final model against the unpruned FP32 model, in the table ``ev`` ({label:
    AccuracyRow}): the engine when one was built (the model the user deploys), else the worse
    INT8 flavour, else the FP32 model."""
    metric = "map" if ev[UNPRUNED].map is not None else "agreement"
    name = "mAP@.5:.95" if metric == "map" else "teacher agreement (AP@.5)"
    finals = [ENGINE_ROW] if ENGINE_ROW in ev else [k for k in INT8.values() if k in ev] or [
        FP32 if FP32 in ev else UNPRUNED]
    final = min(finals, key=lambda k: ev[k].score(metric))
    ref, last = ev[UNPRUNED].score(metric), ev[final].score(metric)
    fp32 = ev.get(FP32, ev[UNPRUNED]).score(metric)
    rule = "given"
    if max_drop is None:
        max_drop, rule = allowance(metric, ref, target)
    drop = round(100 * (ref - last), 2)
    return GateResult(name, ref, final, last, fp32, drop, round(100 * (ref - fp32), 2), round(100 * (fp32 - last), 2),
                      max_drop, rule, drop <= max_drop + 1e-9)


def gate_line(g: GateResult) -> str:
    return (f"accuracy gate: {g.final_model} {g.final:.4f} {g.metric} against the unpruned FP32 "
            f"{g.reference:.4f}: {g.drop_points:+.2f} points lost (pruning {g.pruning_points:+.2f}, "
            f"quantization {g.quantization_points:+.2f}; allowed {g.max_drop:g}: {g.allowance_rule})")


def gate_failure_line(g: GateResult, out, qat: bool = False) -> str:
    """The gate's failure in one line: what was left where, and the advice that fits the loss
    (pruning advice only when pruning lost something; with ``qat``, the advice of QAT)."""
    done = ("the engine was built and measured: do not deploy it" if g.final_model == ENGINE_ROW
            else "no engine built")
    advice = "keep sensitive layers in float (`calibrate.exclude`, `auto_exclude`)"
    if qat:
        advice = ("train longer with INT8 in the loop (`qat.minutes`) or keep sensitive layers in float "
                  "(`calibrate.exclude`)")
    if g.pruning_points > 0:
        advice = f"recover longer (`recover.minutes`), prune less (`prune.ratio`), or {advice}"
    return gate_line(g) + f" -> FAILED; {done}; artifacts kept in {out}. {advice[0].upper()}{advice[1:]}"
