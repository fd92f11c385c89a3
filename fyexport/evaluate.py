"""COCO-style mAP of any runner on a YOLO-format split, computed by pycocotools.

Preprocessing is the project's one letterbox (fixed shape, the runner's input size), NMS
the project's one NMS (multi-label, conf 0.001, IoU 0.65 by default, as YOLOv7's test.py
is run for its published figures).  Boxes are mapped back to original pixels and scored
with ``COCOeval`` (up to 300 detections per image, like YOLOv7's evaluation).
"""
from __future__ import annotations

import contextlib
import io
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import DataSpec, load_data_yaml, read_labels
from .errors import FyexportError, InputError
from .log import G_LOGGER, progress
from .postprocess import non_max_suppression
from .preprocess import BadImage, prepare, read_image

MAX_DETS = 300


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


def _coco_eval(gt: dict, dets: list, nc: int):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not dets:
            return 0.0, 0.0, [(0.0, 0.0)] * nc
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, MAX_DETS]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]; area 'all', the largest maxDets
    allp, all50 = prec[:, :, :, 0, -1], prec[0, :, :, 0, -1]

    def mean(a):
        return float(a[a > -1].mean()) if (a > -1).any() else float("nan")

    per = [(mean(prec[0, :, k, 0, -1]), mean(prec[:, :, k, 0, -1])) for k in range(nc)]
    return max(mean(all50), 0.0), max(mean(allp), 0.0), per


def evaluate(runner, data, split: str = "val", batch: int = 8, conf: float = 0.001, iou: float = 0.65,
             max_images: int | None = None, description: str = "eval") -> EvalResult:
    """mAP@.5 and mAP@.5:.95 of ``runner`` (loaded or not) on ``data`` (a DataSpec or yaml path)."""
    spec = data if isinstance(data, DataSpec) else load_data_yaml(data)
    runner.load()
    info = runner.info
    if info.nc != spec.nc:
        raise InputError(f"{info.path}: the model has {info.nc} classes but {spec.path} has {spec.nc}",
                         "Evaluate with the data set the model was trained for")
    images = spec.images(split)
    if max_images:
        images = images[:max_images]
    if info.batch is not None:
        batch = info.batch
    hw = tuple(info.input_hw)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": n} for c, n in enumerate(spec.names)]}
    dets: list = []
    t_pre = t_inf = t_nms = 0.0
    skipped = 0
    counts = np.zeros((spec.nc, 2), np.int64)  # images containing the class, instances
    ann_id = 0
    with progress(f"{description} {split}", len(images)) as bar:
        for i0 in range(0, len(images), batch):
            chunk = images[i0:i0 + batch]
            t0 = time.perf_counter()
            preps, ids = [], []
            for j, path in enumerate(chunk):
                try:
                    img = read_image(path)
                except BadImage as e:
                    G_LOGGER.warning(f"{path}: skipped ({e})")
                    skipped += 1
                    continue
                preps.append(prepare(img, hw))
                ids.append(i0 + j)
            t1 = time.perf_counter()
            if preps:
                out = runner.infer(np.stack([p.tensor for p in preps]))
            t2 = time.perf_counter()
            for p, img_id in zip(preps, ids):
                path = images[img_id]
                h, w = p.orig_hw
                gt["images"].append({"id": img_id, "width": int(w), "height": int(h), "file_name": path.name})
                lab = read_labels(path, spec.nc)
                for c in np.unique(lab[:, 0]).astype(int):
                    counts[c, 0] += 1
                for cls, cx, cy, bw, bh in lab:
                    ann_id += 1
                    counts[int(cls), 1] += 1
                    box = [float((cx - bw / 2) * w), float((cy - bh / 2) * h), float(bw * w), float(bh * h)]
                    gt["annotations"].append({"id": ann_id, "image_id": img_id, "category_id": int(cls),
                                              "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
            if preps:
                for p, img_id, det in zip(preps, ids, non_max_suppression(out, conf, iou, multi_label=True,
                                                                          max_det=MAX_DETS)):
                    if not len(det):
                        continue
                    from .preprocess import scale_boxes

                    b = scale_boxes(det[:, :4], p.ratio, p.pad, p.orig_hw)
                    for (x1, y1, x2, y2), s, c in zip(b, det[:, 4], det[:, 5]):
                        dets.append({"image_id": img_id, "category_id": int(c),
                                     "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(s)})
            t3 = time.perf_counter()
            t_pre, t_inf, t_nms = t_pre + t1 - t0, t_inf + t2 - t1, t_nms + t3 - t2
            bar.advance(len(chunk))
    n = len(gt["images"])
    if n == 0:
        raise FyexportError(f"{spec.path}: no usable image in split '{split}'")
    map50, map_, per = _coco_eval(gt, dets, spec.nc)
    per_class = [{"class": spec.names[c], "images": int(counts[c, 0]), "instances": int(counts[c, 1]),
                  "map50": per[c][0], "map": per[c][1]} for c in range(spec.nc)]
    return EvalResult(
        map50=map50, map=map_, per_class=per_class, images=n, instances=int(counts[:, 1].sum()), skipped=skipped,
        ms_per_image={"preprocess": 1e3 * t_pre / n, "inference": 1e3 * t_inf / n, "nms": 1e3 * t_nms / n},
        settings={"artifact": info.path, "runtime": info.label, "split": split, "img_size": list(hw),
                  "conf": conf, "iou": iou, "batch": batch, "data": str(spec.path), "max_dets": MAX_DETS},
    )


def render(res: EvalResult) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{res.settings.get('artifact')} on {res.settings.get('split')} ({res.settings.get('runtime')})")
    for col in ("class", "images", "instances", "mAP@.5", "mAP@.5:.95"):
        t.add_column(col, justify="left" if col == "class" else "right")
    t.add_row("all", str(res.images), str(res.instances), f"{res.map50:.4f}", f"{res.map:.4f}", style="bold")
    for c in res.per_class:
        t.add_row(c["class"], str(c["images"]), str(c["instances"]), f"{c['map50']:.4f}", f"{c['map']:.4f}")
    from .log import table_console

    table_console().print(t)
    ms = res.ms_per_image
    G_LOGGER.info(f"per image: preprocess {ms['preprocess']:.1f} ms, inference {ms['inference']:.1f} ms, "
                  f"NMS {ms['nms']:.1f} ms" + (f"; {res.skipped} unreadable images skipped" if res.skipped else ""))
