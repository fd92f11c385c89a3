"""A runner's detections on a list of images, in original pixels: the one letterbox, the
runner's batch range, the project's one NMS (or the export's own NMS outputs)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.config import require
from ..core.imgsize import DEFAULT_IMG_SIZE
from ..core.log import G_LOGGER, progress
from ..data.images import BadImage, prepare, read_image, scale_boxes

MAX_DETS = 300  # detections kept per image, as YOLOv7's evaluation


@dataclass
class Detections:
    """A model's detections on a list of images, in original pixels."""

    boxes: dict  # image index -> (n, 6) x1, y1, x2, y2, score, class
    sizes: dict  # image index -> (h, w)
    skipped: int = 0
    ms: dict = field(default_factory=dict)  # preprocess / inference / nms per image


@dataclass
class EvalConfig:
    """How accuracy is measured (``fyexport eval``; YOLOv7's test.py settings by default)."""

    split: str = "val"
    img_size: object = DEFAULT_IMG_SIZE
    batch: int = 8  # images per inference (split to what the artifact accepts)
    conf: float = 0.001
    iou: float = 0.65
    runtime: str = "auto"
    device: str = "auto"
    max_images: int | None = None  # only the first N images

    def validate(self) -> None:
        require(0.0 <= self.conf < 1.0, "conf", f"must be in [0, 1), got {self.conf}")
        require(0.0 < self.iou <= 1.0, "iou", f"must be in (0, 1], got {self.iou}")
        require(self.max_images is None or self.max_images >= 1, "max_images", f"must be >= 1, got {self.max_images}")
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")


EVAL = EvalConfig()


def validate_thresholds(conf: float, iou: float, max_images: int | None = None, batch: int = EVAL.batch) -> None:
    EvalConfig(conf=conf, iou=iou, max_images=max_images, batch=batch).validate()


def detect(runner, images: list, batch: int = EVAL.batch, conf: float = EVAL.conf, iou: float = EVAL.iou,
           description: str = "detect") -> Detections:
    """Run ``runner`` (loaded or not) on image paths and keep its NMS output per image (the
    project's NMS, or the one in the model's graph for an ``export --nms`` model)."""
    from ..onnx.nms import graph_nms_note, has_graph_nms

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
    from ..onnx.nms import runner_detections

    if not preps:
        return []
    return runner_detections(runner, np.stack([p.tensor for p in preps]), conf, iou, multi_label=True,
                             max_det=MAX_DETS)
