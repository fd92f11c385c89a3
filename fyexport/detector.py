"""``fyexport.runtime.Detector``: one interface for engines, ONNX models and checkpoints.

    from fyexport.runtime import Detector
    det = Detector("model.engine")          # or "model.qdq.cpu.onnx", or "best.pt"
    boxes = det("street.jpg")               # (n, 6): x1, y1, x2, y2, score, class in image pixels
    batch = det([img1, img2])                # a list of such arrays

Images are paths or BGR ``uint8`` arrays (HxWx3, as OpenCV reads them).  Letterbox and NMS
are the project's own single implementations; when the graph already contains NMS
(``fyexport export --nms``) its outputs are used instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


class Detector:
    """Detect objects with a ``.engine`` (TensorRT), ``.onnx`` (ONNX Runtime) or ``.pt`` (PyTorch).

    Args:
        path: the artifact.
        conf: score threshold (obj * cls).
        iou: NMS IoU threshold.
        img_size: input size for checkpoints (engines and ONNX models carry their own).
        device: auto | cpu | cuda.
        max_det: detections kept per image.
        classes: keep only these class ids.
    """

    def __init__(self, path, conf: float = 0.25, iou: float = 0.45, img_size=640, device: str = "auto",
                 max_det: int = 300, classes=None, runtime: str = "auto"):
        from .runners import open_runner

        self.runner = open_runner(path, runtime=runtime, device=device, img_size=img_size).load()
        self.conf, self.iou, self.max_det, self.classes = conf, iou, max_det, classes
        self.names = list(self.runner.info.names)
        self.input_hw = tuple(self.runner.info.input_hw)
        self.has_nms = bool(getattr(self.runner, "has_nms", False)) or "num_dets" in \
            [n for n, _ in getattr(self.runner, "outputs", [])]

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _as_images(source) -> tuple[list, bool]:
        from .preprocess import BadImage, read_image

        single = isinstance(source, (str, Path)) or (isinstance(source, np.ndarray) and source.ndim == 3)
        items = [source] if single else list(source)
        out = []
        for it in items:
            if isinstance(it, (str, Path)):
                try:
                    out.append(read_image(it))
                except BadImage as e:
                    raise InputError(f"{it}: cannot use this image ({e})")
            elif isinstance(it, np.ndarray) and it.ndim == 3 and it.shape[2] in (1, 3, 4) and it.dtype == np.uint8:
                if it.shape[2] != 3:
                    import cv2

                    it = cv2.cvtColor(it, cv2.COLOR_GRAY2BGR if it.shape[2] == 1 else cv2.COLOR_BGRA2BGR)
                out.append(it)
            else:
                raise InputError("images must be paths or HxWx3 uint8 BGR arrays")
        return out, single

    def __call__(self, source):
        from .postprocess import non_max_suppression
        from .preprocess import prepare, scale_boxes

        imgs, single = self._as_images(source)
        preps = [prepare(im, self.input_hw) for im in imgs]
        x = np.stack([p.tensor for p in preps])
        if self.has_nms:
            from .nms_onnx import detections_from_outputs

            outs = self.runner.run_all(x) if self.runner.info.batch in (None, len(x)) else \
                _merge([self.runner.run_all(x[i:i + 1]) for i in range(len(x))])
            dets = detections_from_outputs(outs)
            dets = [d[d[:, 4] > self.conf] for d in dets]
        else:
            pred = self.runner.infer(x)
            dets = non_max_suppression(pred, self.conf, self.iou, classes=self.classes, max_det=self.max_det)
        res = []
        for p, d in zip(preps, dets):
            d = d.copy()
            if self.classes is not None and self.has_nms:
                d = d[np.isin(d[:, 5], np.asarray(self.classes))]
            d[:, :4] = scale_boxes(d[:, :4], p.ratio, p.pad, p.orig_hw)
            res.append(d)
        return res[0] if single else res


def _merge(outs: list) -> dict:
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
