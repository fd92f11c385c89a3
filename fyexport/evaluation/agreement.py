"""Teacher agreement: the COCO AP@.5 of a model's detections scored against the teacher's
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

import numpy as np

from ..core.errors import FyexportError, InputError
from ..data.labels import DataSpec, load_data_yaml
from .detections import EVAL, Detections, detect
from .metrics import coco_map

TEACHER_CONF = 0.25  # teacher detections at or above this score are the pseudo ground truth


# Near the top, agreement falls about 1.4 times as fast as the labelled kept fraction (shapes
# set, models recovered with labels: kept 95.4% -> agreement 0.928, 94.7% -> 0.925; the table
# in benchmarks/README.md), so a labelled target t reads as 1 - 1.4 (1 - t) in agreement.
AGREEMENT_SCALE = 1.4


def agreement_target(target: float) -> float:
    """The teacher agreement that stands for keeping ``target`` of the labelled mAP."""
    return max(0.0, 1 - AGREEMENT_SCALE * (1 - target))


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


def agreement_with(runner, teacher, data=None, images=None, split: str = EVAL.split, max_images: int | None = None,
                   device: str = "auto") -> dict:
    """Teacher agreement of ``runner`` with the checkpoint ``teacher`` on the ``data`` yaml's
    ``split`` or on the folder ``images``, at the runner's input size."""
    from ..data.selection import list_images
    from ..runners import open_runner

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
