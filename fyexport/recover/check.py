"""How much of the teacher's accuracy the student keeps, measured on held-out images.

With labels: the student's mAP@.5:.95 over the teacher's, on the validation split.  Without:
teacher agreement (:func:`fyexport.evaluation.metrics.teacher_agreement`), on images held out of the
training images (the teacher agrees with itself exactly, so its reference is 1.0).  The
teacher's detections are computed once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HoldOut:
    """Images recovery never trains on, and how they score a model."""

    images: list
    hw: tuple
    nc: int
    labelled: bool  # labels beside the images: score by mAP; otherwise by teacher agreement

    @property
    def what(self) -> str:
        return "mAP@.5:.95" if self.labelled else "teacher agreement"

    def target(self, labelled_target: float) -> float:
        """The kept fraction to stop at: the target itself with labels, its agreement reading
        (:func:`fyexport.evaluation.metrics.agreement_target`) without."""
        from ..evaluation.agreement import agreement_target

        return labelled_target if self.labelled else agreement_target(labelled_target)


def split_holdout(paths: list, n: int, seed: int = 0) -> tuple[list, list]:
    """(training paths, held-out paths): ``n`` images chosen with ``seed``, never both."""
    from ..data.selection import sample_images

    paths = sorted(paths)
    n = min(n, max(0, len(paths) // 5))  # never more than a fifth of the images
    held = set(map(str, sample_images(paths, n, seed + 7919))) if n else set()
    return [p for p in paths if str(p) not in held], [p for p in paths if str(p) in held]


def _unusable(images: list, read: dict, hw) -> dict:
    """path -> reason of the ``images`` a detection pass could not use (``read``: the indices
    it used), each read again for its reason."""
    from ..data.images import BadImage, prepare, read_image

    out = {}
    for k, p in enumerate(images):
        if k not in read:
            try:
                prepare(read_image(p), hw)
            except BadImage as e:
                out[str(p)] = e.reason
    return out


class Checker:
    def __init__(self, teacher, holdout: HoldOut, device: str):
        from ..evaluation.detections import detect
        from ..evaluation.metrics import coco_map, label_boxes
        from ..runners.torch_runner import TorchRunner

        self.holdout, self.device = holdout, device
        self.images, self.what = holdout.images, holdout.what
        self.teacher = detect(TorchRunner(teacher, device=device, img_size=holdout.hw), self.images,
                              description="teacher on held-out images")
        self.unusable = _unusable(self.images, self.teacher.sizes, holdout.hw)
        if holdout.labelled:
            self.gt = label_boxes(self.images, self.teacher.sizes, holdout.nc)
            self.reference = coco_map(self.gt, self.teacher.sizes, self.teacher.boxes, holdout.nc)[1]
        else:
            self.reference = 1.0
        if self.reference <= 0:
            from ..core.errors import FyexportError

            raise FyexportError(f"the unpruned model scores {self.reference:.4f} on the {len(self.images)} held-out "
                                "images, so the kept fraction cannot be measured", "Check the data and its labels")

    def measure(self, model) -> dict:
        """{"score", "kept", "agreement", "agreement_strict"} of ``model`` (not modified: a
        fused copy runs).  ``kept`` is what the target is compared with: the labelled
        mAP@.5:.95 over the teacher's, or the agreement itself without labels."""
        from ..evaluation.agreement import agreement_scores
        from ..evaluation.detections import detect
        from ..evaluation.metrics import coco_map
        from ..runners.torch_runner import TorchRunner

        dets = detect(TorchRunner(model, device=self.device, img_size=self.holdout.hw), self.images,
                      description="held-out check")
        a50, strict = agreement_scores(dets, self.teacher, self.holdout.nc)
        score = coco_map(self.gt, dets.sizes, dets.boxes, self.holdout.nc)[1] if self.holdout.labelled else a50
        return {"score": round(score, 5), "kept": round(score / self.reference, 5), "agreement": round(a50, 5),
                "agreement_strict": round(strict, 5)}
