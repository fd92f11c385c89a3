"""Accuracy of any runner, computed by pycocotools: against labels (mAP), or against the
unpruned teacher's own detections when there are no labels ("teacher agreement").

Preprocessing is the project's one letterbox (fixed shape, the runner's input size), NMS
the project's one NMS (multi-label, conf 0.001, IoU 0.65 by default, as YOLOv7's test.py
is run for its published figures).  Boxes are mapped back to original pixels and scored
with ``COCOeval`` (up to 300 detections per image, like YOLOv7's evaluation).

Teacher agreement is the COCO AP@.5 of a model's detections scored against the teacher's
detections with a score of at least ``TEACHER_CONF`` taken as ground truth, on images
recovery never trained on; AP@.5:.95 is reported beside it as the strict agreement.  The
teacher scores exactly 1.0 against itself (its pseudo ground truth is a subset of its own
detections, with higher scores than the rest) and a model that detects nothing scores 0.0.
AP@.5 is the one targets and gates use: against pseudo ground truth, AP@.5:.95 punishes
every small box shift (on the shapes set a pruned model keeping 96% of the labelled
mAP@.5:.95 agrees 0.73 strictly and 0.92 at IoU 0.5, and an INT8 model whose labelled mAP
rose agrees 0.89 strictly, 0.97 at IoU 0.5: benchmarks/README.md, teacher agreement).
"""
from __future__ import annotations

import contextlib
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import DataSpec, has_labels, label_path, load_data_yaml, read_labels
from .errors import FyexportError, InputError
from .log import G_LOGGER, progress
from .preprocess import BadImage, prepare, read_image, scale_boxes

MAX_DETS = 300
TEACHER_CONF = 0.25  # teacher detections at or above this score are the pseudo ground truth
# Near the top, agreement falls about 1.4 times as fast as the labelled kept fraction (shapes
# set, models recovered with labels: kept 95.4% -> agreement 0.928, 94.7% -> 0.925; the table
# in benchmarks/README.md), so a labelled target t reads as 1 - 1.4 (1 - t) in agreement.
AGREEMENT_SCALE = 1.4


def agreement_target(target: float) -> float:
    """The teacher agreement that stands for keeping ``target`` of the labelled mAP."""
    return max(0.0, 1 - AGREEMENT_SCALE * (1 - target))


@dataclass
class EvalResult:
    map50: float
    map: float
    per_class: list
    images: int
    instances: int
    skipped: int
    ms_per_image: dict
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Detections:
    """A model's detections on a list of images, in original pixels."""

    boxes: dict  # image index -> (n, 6) x1, y1, x2, y2, score, class
    sizes: dict  # image index -> (h, w)
    skipped: int = 0
    ms: dict = field(default_factory=dict)  # preprocess / inference / nms per image


def validate_thresholds(conf: float, iou: float, max_images: int | None = None, batch: int | None = None) -> None:
    if not (0.0 <= conf < 1.0):
        raise InputError(f"--conf must be in [0, 1), got {conf}")
    if not (0.0 < iou <= 1.0):
        raise InputError(f"--iou must be in (0, 1], got {iou}")
    if max_images is not None and max_images < 1:
        raise InputError(f"--max-images must be >= 1, got {max_images}")
    if batch is not None and batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")


def detect(runner, images: list, batch: int = 8, conf: float = 0.001, iou: float = 0.65,
           description: str = "detect") -> Detections:
    """Run ``runner`` (loaded or not) on image paths and keep its NMS output per image (the
    project's NMS, or the one in the model's graph for an ``export --nms`` model)."""
    from .nms_onnx import graph_nms_note, has_graph_nms

    runner.load()
    if runner.info.batch is not None:
        batch = runner.info.batch
    hw = tuple(runner.info.input_hw)
    if has_graph_nms(runner):
        G_LOGGER.warning(graph_nms_note(runner), once=True)
    out = Detections({}, {})
    t = np.zeros(3)
    with progress(description, len(images)) as bar:
        for i0 in range(0, len(images), batch):
            t0 = time.perf_counter()
            preps, ids = _prepare_batch(images, i0, batch, hw, out)
            t1 = time.perf_counter()
            dets = _batch_detections(runner, preps, conf, iou)
            t2 = time.perf_counter()
            for p, k, det in zip(preps, ids, dets):
                det = det.copy()
                det[:, :4] = scale_boxes(det[:, :4], p.ratio, p.pad, p.orig_hw)
                out.boxes[k], out.sizes[k] = det, tuple(int(v) for v in p.orig_hw)
            t += (t1 - t0, t2 - t1, time.perf_counter() - t2)
            bar.advance(len(images[i0:i0 + batch]))
    n = max(len(out.sizes), 1)
    out.ms = {"preprocess": 1e3 * t[0] / n, "inference": 1e3 * t[1] / n, "nms": 1e3 * t[2] / n}
    return out


def _prepare_batch(images: list, i0: int, batch: int, hw, out: Detections) -> tuple[list, list]:
    """The letterboxed readable images of one batch and their indices (bad ones counted)."""
    preps, ids = [], []
    for j, path in enumerate(images[i0:i0 + batch]):
        try:
            preps.append(prepare(read_image(path), hw))
            ids.append(i0 + j)
        except BadImage as e:
            G_LOGGER.warning(f"{path}: skipped ({e})")
            out.skipped += 1
    return preps, ids


def _batch_detections(runner, preps: list, conf: float, iou: float) -> list:
    """Per image (n, 6) detections in input pixels of one prepared batch."""
    from .nms_onnx import runner_detections

    if not preps:
        return []
    return runner_detections(runner, np.stack([p.tensor for p in preps]), conf, iou, multi_label=True,
                             max_det=MAX_DETS)


def coco_map(gt_boxes: dict, sizes: dict, dets: dict, nc: int) -> tuple[float, float, list]:
    """(mAP@.5, mAP@.5:.95, per class [(mAP@.5, mAP@.5:.95)]) of ``dets`` against ``gt_boxes``
    ({image: (n, 5) class, x1, y1, x2, y2 in pixels}) on the images in ``sizes``."""
    gt = {"images": [{"id": int(k), "width": int(w), "height": int(h)} for k, (h, w) in sizes.items()],
          "annotations": [], "categories": [{"id": c} for c in range(nc)]}
    for k, rows in gt_boxes.items():
        for c, x1, y1, x2, y2 in rows:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": int(k), "category_id": int(c),
                                      "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                      "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
    res = [{"image_id": int(k), "category_id": int(c), "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s)} for k, d in dets.items() if k in sizes for x1, y1, x2, y2, s, c in d]
    return _coco_eval(gt, res, nc)


def _coco_eval(gt: dict, dets: list, nc: int):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt["annotations"] or not dets:
        return 0.0, 0.0, [(0.0, 0.0)] * nc
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.params.maxDets = [1, 10, MAX_DETS]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]; area 'all', the largest maxDets

    def mean(a, empty=0.0):
        return float(a[a > -1].mean()) if (a > -1).any() else empty

    nan = float("nan")  # a class without ground truth has no AP
    per = [(mean(prec[0, :, k, 0, -1], nan), mean(prec[:, :, k, 0, -1], nan)) for k in range(nc)]
    return max(mean(prec[0, :, :, 0, -1]), 0.0), max(mean(prec[:, :, :, 0, -1]), 0.0), per


def label_boxes(images: list, sizes: dict, nc: int) -> dict:
    """{image: (n, 5) class, x1, y1, x2, y2 in pixels} from the label files."""
    out = {}
    for k, (h, w) in sizes.items():
        lab = read_labels(images[k], nc)
        xy = np.stack([lab[:, 1] - lab[:, 3] / 2, lab[:, 2] - lab[:, 4] / 2,
                       lab[:, 1] + lab[:, 3] / 2, lab[:, 2] + lab[:, 4] / 2], 1) * np.array([w, h, w, h])
        out[k] = np.concatenate([lab[:, :1], xy], 1)
    return out


def evaluate(runner, data, split: str = "val", batch: int = 8, conf: float = 0.001, iou: float = 0.65,
             max_images: int | None = None, description: str = "eval") -> EvalResult:
    """mAP@.5 and mAP@.5:.95 of ``runner`` (loaded or not) on ``data`` (a DataSpec or yaml path)."""
    validate_thresholds(conf, iou, max_images, batch)
    spec = data if isinstance(data, DataSpec) else load_data_yaml(data)
    runner.load()
    info = runner.info
    if info.nc != spec.nc:
        raise InputError(f"{info.path}: the model has {info.nc} classes but {spec.path} has {spec.nc}",
                         "Evaluate with the data set the model was trained for")
    images = spec.images(split)[:max_images] if max_images else spec.images(split)
    if not has_labels(images):
        raise InputError(f"{spec.path}: no label file for any of the {len(images)} images of split '{split}' "
                         f"(looked for {label_path(Path(images[0]))} and the like)",
                         "Labels sit beside the images, in a 'labels' folder in place of 'images'; for a folder "
                         "without labels use --teacher with --images")
    dets = detect(runner, images, batch, conf, iou, f"{description} {split}")
    if not dets.sizes:
        raise FyexportError(f"{spec.path}: no usable image in split '{split}'")
    gt = label_boxes(images, dets.sizes, spec.nc)
    map50, map_, per = coco_map(gt, dets.sizes, dets.boxes, spec.nc)
    counts = np.zeros((spec.nc, 2), np.int64)  # images containing the class, instances
    for rows in gt.values():
        cls = rows[:, 0].astype(int)
        counts[np.unique(cls), 0] += 1
        np.add.at(counts[:, 1], cls, 1)
    per_class = [{"class": spec.names[c], "images": int(counts[c, 0]), "instances": int(counts[c, 1]),
                  "map50": per[c][0], "map": per[c][1]} for c in range(spec.nc)]
    return EvalResult(
        map50=map50, map=map_, per_class=per_class, images=len(dets.sizes), instances=int(counts[:, 1].sum()),
        skipped=dets.skipped, ms_per_image=dets.ms,
        settings={"artifact": info.path, "runtime": info.label, "split": split, "img_size": list(runner.info.input_hw),
                  "conf": conf, "iou": iou, "batch": batch, "data": str(spec.path), "max_dets": MAX_DETS,
                  "graph_nms": _graph_nms(runner)},
    )


def _graph_nms(runner) -> dict | None:
    """The export's NMS settings when the model was evaluated through its own NMS."""
    from .nms_onnx import graph_nms_settings, has_graph_nms

    return (graph_nms_settings(runner) or {"in_graph": True}) if has_graph_nms(runner) else None


def teacher_boxes(teacher: Detections, conf: float = TEACHER_CONF) -> dict:
    """The teacher's pseudo ground truth: its detections scoring at least ``conf``."""
    return {k: np.concatenate([d[d[:, 4] >= conf][:, 5:6], d[d[:, 4] >= conf][:, :4]], 1)
            for k, d in teacher.boxes.items()}


def teacher_agreement(student: Detections, teacher: Detections, nc: int, conf: float = TEACHER_CONF) -> float:
    """AP@.5 of ``student``'s detections against the teacher's pseudo ground truth, on the
    images both saw (1.0: same detections as the teacher; 0.0: none of them)."""
    return agreement_scores(student, teacher, nc, conf)[0]


def agreement_scores(student: Detections, teacher: Detections, nc: int,
                     conf: float = TEACHER_CONF) -> tuple[float, float]:
    """(agreement AP@.5, strict agreement AP@.5:.95) of ``student`` with ``teacher``."""
    sizes = {k: v for k, v in teacher.sizes.items() if k in student.sizes}
    gt = teacher_boxes(Detections({k: teacher.boxes[k] for k in sizes}, sizes), conf)
    if not any(len(v) for v in gt.values()):
        raise FyexportError(f"the teacher detects nothing at score >= {conf} on these {len(sizes)} images, so "
                            "agreement with it cannot be measured", "Give images like the deployment's")
    return coco_map(gt, sizes, student.boxes, nc)[:2]


def agreement_with(runner, teacher, data=None, images=None, split: str = "val", max_images: int | None = None,
                   device: str = "auto") -> dict:
    """Teacher agreement of ``runner`` with the checkpoint ``teacher`` on the ``data`` yaml's
    ``split`` or on the folder ``images``, at the runner's input size."""
    from .preprocess import list_images
    from .runners import open_runner

    if data:
        paths = (data if isinstance(data, DataSpec) else load_data_yaml(data)).images(split)
    else:
        paths = list_images(images)
        if not paths:
            raise InputError(f"{images}: no image files (jpg, png, bmp, webp, tiff) found")
    paths = paths[:max_images] if max_images else paths
    runner.load()
    with open_runner(str(teacher), device=device, img_size=tuple(runner.info.input_hw)) as t:
        if t.info.nc != runner.info.nc:
            raise InputError(f"{teacher}: the teacher has {t.info.nc} classes but {runner.info.path} has "
                             f"{runner.info.nc}")
        ref = detect(t, paths, description="teacher")
    a50, strict = agreement_scores(detect(runner, paths, description="student"), ref, runner.info.nc)
    return {"agreement": a50, "agreement_strict": strict, "teacher": str(teacher), "teacher_conf": TEACHER_CONF,
            "images": len(ref.sizes)}


def render(res: EvalResult) -> None:
    from rich.table import Table

    from .log import table_console

    t = Table(title=f"{res.settings.get('artifact')} on {res.settings.get('split')} ({res.settings.get('runtime')})")
    for col in ("class", "images", "instances", "mAP@.5", "mAP@.5:.95"):
        t.add_column(col, justify="left" if col == "class" else "right")
    t.add_row("all", str(res.images), str(res.instances), f"{res.map50:.4f}", f"{res.map:.4f}", style="bold")
    for c in res.per_class:
        t.add_row(c["class"], str(c["images"]), str(c["instances"]), f"{c['map50']:.4f}", f"{c['map']:.4f}")
    table_console().print(t)
    ms = res.ms_per_image
    G_LOGGER.info(f"per image: preprocess {ms['preprocess']:.1f} ms, inference {ms['inference']:.1f} ms, "
                  f"NMS {ms['nms']:.1f} ms" + (f"; {res.skipped} unreadable images skipped" if res.skipped else ""))
