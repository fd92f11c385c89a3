"""``fyexport.Detector``: one interface for engines, ONNX models and checkpoints.

    from fyexport import Detector
    det = Detector("model.engine")          # or "model.qdq.cpu.onnx", or "best.pt"
    boxes = det("street.jpg")               # (n, 6): x1, y1, x2, y2, score, class in image pixels
    batch = det([img1, img2])                # a list of such arrays

Images are paths, PIL images (RGB, as PIL opens them) or ``uint8`` arrays: HxWx3 BGR as
OpenCV reads them, HxWx4 BGRA or HxW grayscale; a list of them gives a list of results
([] for []).  Files and PIL images are turned upright by their EXIF orientation, so boxes
are in the frame every viewer shows.  Letterbox and NMS are the project's own single
implementations; when the graph already contains NMS (``fyexport export --nms``) its
outputs are used instead (its export thresholds then bound what ``conf`` can keep).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.errors import InputError


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
        from .onnx.nms import has_graph_nms

        self.has_nms = has_graph_nms(self.runner)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, source):
        from .data.images import BadImage, prepare, scale_boxes
        from .onnx.nms import runner_detections

        items, single = _items(source)
        if not items:
            return []
        preps = []
        for i, it in enumerate(items):
            try:
                preps.append(prepare(_as_image(it, i), self.input_hw))
            except BadImage as e:  # a side that shrinks to nothing at the input size
                raise InputError(f"{it if isinstance(it, (str, Path)) else f'image {i}'}: cannot use this image "
                                 f"({e})")
        dets = runner_detections(self.runner, np.stack([p.tensor for p in preps]), self.conf, self.iou,
                                 max_det=self.max_det, classes=self.classes)
        res = []
        for p, d in zip(preps, dets):
            d = d.copy()
            d[:, :4] = scale_boxes(d[:, :4], p.ratio, p.pad, p.orig_hw)
            res.append(d)
        return res[0] if single else res


def as_images(source) -> tuple[list, bool]:
    """(upright HxWx3 BGR uint8 images, whether ``source`` was one image) from a path, a PIL
    image, an array (HxW grayscale, HxWx1/3/4 BGR(A), or an NxHxWxC stack) or a list of them."""
    items, single = _items(source)
    return [_as_image(it, i) for i, it in enumerate(items)], single


def _items(source) -> tuple[list, bool]:
    """(the images in ``source``, not yet read; whether it was one image)."""
    from PIL import Image

    single = isinstance(source, (str, Path, Image.Image)) or not hasattr(source, "__iter__") or \
        (isinstance(source, np.ndarray) and source.ndim in (2, 3))
    return ([source] if single else list(source)), single


def _as_image(item, i: int) -> np.ndarray:
    from PIL import Image

    from .data.images import BadImage, read_image, to_bgr8

    try:
        if isinstance(item, (str, Path)):
            try:
                return read_image(item)
            except BadImage as e:
                raise InputError(f"{item}: cannot use this image ({e})")
        if isinstance(item, Image.Image):
            return _from_pil(item)
        if isinstance(item, np.ndarray):
            if item.dtype not in (np.uint8, np.uint16):
                raise BadImage(f"{item.dtype} pixels; give uint8 (0..255) values, as OpenCV reads them")
            if item.ndim == 3 and item.shape[2] not in (1, 3, 4):
                raise BadImage(f"shape {item.shape}; expected HxW, HxWx3 (BGR) or HxWx4 (a CHW array must be "
                               "transposed to HWC)")
            return to_bgr8(item)
    except BadImage as e:
        raise InputError(f"image {i}: cannot use it ({e})")
    raise InputError(f"image {i}: a {type(item).__name__}; images must be paths, PIL images or numpy arrays "
                     "(HxWx3 BGR uint8, as OpenCV reads them)")


def _from_pil(im) -> np.ndarray:
    """A PIL image, turned upright by its EXIF orientation, as BGR uint8: the pixels reading
    its file by path gives.  Grayscale modes of more than 8 bits ("I;16", "I;16B", "I", "F")
    go through their samples, as OpenCV decodes the file (``convert("RGB")`` would clip them
    to 255: a 16-bit image became white); colour modes through RGB."""
    from PIL import ImageOps

    from .data.images import to_bgr8

    im = ImageOps.exif_transpose(im)
    if im.mode in ("L", "I", "F") or im.mode.startswith("I;16"):
        return to_bgr8(np.asarray(im))
    return to_bgr8(np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1]))
