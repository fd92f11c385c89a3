"""Accuracy of any runner, computed by pycocotools: against labels (mAP@.5, mAP@.5:.95);
teacher agreement (against the unpruned model's detections) is in :mod:`.agreement`.

Preprocessing is the project's one letterbox (fixed shape, the runner's input size), NMS
the project's one NMS (multi-label, conf 0.001, IoU 0.65 by default, as YOLOv7's test.py
is run for its published figures).  Boxes are mapped back to original pixels and scored
with ``COCOeval`` (up to 300 detections per image, like YOLOv7's evaluation).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER
from ..data.labels import DataSpec, has_labels, label_path, load_data_yaml, read_labels
from .detections import EVAL, MAX_DETS, detect, validate_thresholds


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


def evaluate(runner, data, split: str = EVAL.split, batch: int = EVAL.batch, conf: float = EVAL.conf,
             iou: float = EVAL.iou, max_images: int | None = None, description: str = "eval") -> EvalResult:
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
                         "without labels measure teacher agreement "
                         "('fyexport eval ARTIFACT --teacher W.pt --images DIR')")
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
    if not runner.info.has_graph_nms:
        return None
    return runner.info.graph_nms.to_dict() if runner.info.graph_nms else {"in_graph": True}


def render(res: EvalResult) -> None:
    from rich.table import Table

    from ..core.log import table_console

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
