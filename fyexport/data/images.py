"""The one letterbox, and image reading.

Calibration, evaluation, benchmarking and the runtime API all call :func:`letterbox`
(through :func:`prepare`), so INT8 calibration sees exactly the pixels inference sees:
aspect-preserving cv2 INTER_LINEAR resize, grey 114 padding split as in the official
code (``round(d/2 - 0.1)`` / ``round(d/2 + 0.1)``), BGR -> RGB, CHW, float32 / 255.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PAD_VALUE = 114
MIN_SIDE = 8  # smaller images carry no usable signal (a 1x1 image letterboxes to one flat colour)

PREPROCESSING = {
    "letterbox": "fixed-shape, aspect-preserving, cv2 INTER_LINEAR, centred",
    "pad_value": PAD_VALUE,
    "color": "RGB",
    "layout": "NCHW",
    "scale": "1/255",
    "dtype": "float32",
}


def _cv2():
    import cv2

    return cv2


def letterbox(img: np.ndarray, new_shape=640, color=(PAD_VALUE, PAD_VALUE, PAD_VALUE), auto: bool = False,
              scale_fill: bool = False, scaleup: bool = True, stride: int = 32):
    """Resize ``img`` (HxWxC uint8) keeping its aspect ratio and pad it to ``new_shape``.

    Args:
        new_shape: int or (h, w) target.
        auto: pad only to the next multiple of ``stride`` (a rectangle); False (default)
            pads to exactly ``new_shape``, the fixed-shape mode ONNX/TensorRT engines need.
        scale_fill: stretch to the target without padding.
        scaleup: allow enlarging; False only shrinks.

    Returns:
        (image, (ratio_w, ratio_h), (pad_w, pad_h)) where pad is the float half-padding,
        as the official code returns it.
    """
    cv2 = _cv2()
    shape = img.shape[:2]
    ratio, (dw, dh), new_unpad = letterbox_geometry(shape, new_shape, auto, scale_fill, scaleup, stride)
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratio, (dw, dh)


def letterbox_geometry(shape, new_shape=640, auto: bool = False, scale_fill: bool = False, scaleup: bool = True,
                       stride: int = 32):
    """((ratio_w, ratio_h), (pad_w, pad_h), (new_w, new_h)) that :func:`letterbox` applies to
    an image of ``shape`` (h, w): the one place its geometry is computed.  Raises
    :class:`BadImage` ("too thin") when a side would shrink to nothing at ``new_shape``."""
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    if min(shape[:2]) < 1:
        raise BadImage("too small", f"{shape[1]}x{shape[0]}")
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    ratio = (r, r)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))
    if min(new_unpad) < 1 and not scale_fill:  # a 10000x10 image at 416 would be 416x0: nothing left to see
        raise BadImage("too thin", f"{shape[1]}x{shape[0]} shrinks to {new_unpad[0]}x{new_unpad[1]} at "
                       f"{new_shape[1]}x{new_shape[0]}")
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scale_fill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape[1], new_shape[0])
        ratio = (new_shape[1] / shape[1], new_shape[0] / shape[0])
    return ratio, (dw / 2, dh / 2), new_unpad


def to_tensor(img_bgr: np.ndarray) -> np.ndarray:
    """HxWx3 BGR uint8 -> 3xHxW RGB float32 in 0..1."""
    x = img_bgr[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32) / 255.0


@dataclass
class Prepared:
    """A letterboxed image and what is needed to map boxes back to the original."""

    tensor: np.ndarray  # 3xHxW float32
    ratio: tuple
    pad: tuple
    orig_hw: tuple


def prepare(img_bgr: np.ndarray, size) -> Prepared:
    """Letterbox (fixed shape) + to_tensor: the preprocessing of every fyexport path."""
    lb, ratio, pad = letterbox(img_bgr, size, auto=False)
    return Prepared(to_tensor(lb), ratio, pad, img_bgr.shape[:2])


def scale_boxes(boxes: np.ndarray, ratio, pad, orig_hw, clip: bool = True) -> np.ndarray:
    """Undo :func:`letterbox` on xyxy boxes (N x >=4): subtract pad, divide by gain, clip."""
    b = np.array(boxes, dtype=np.float32, copy=True)
    if b.size == 0:
        return b
    b[:, [0, 2]] -= pad[0]
    b[:, [1, 3]] -= pad[1]
    b[:, [0, 2]] /= ratio[0]
    b[:, [1, 3]] /= ratio[1]
    if clip:
        h, w = orig_hw[:2]
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    return b


# -- reading images ---------------------------------------------------------

class BadImage(Exception):
    """An image that cannot be used.  ``reason`` is what skipped images are counted by
    ("unreadable", "empty file", "truncated", "not a decodable image", "too small", "too
    thin", "vanished", ...); ``detail`` says what exactly (the message is both)."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason, detail)  # both in args: the exception pickles (loader workers)
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


def _looks_truncated(data: bytes, suffix: str) -> bool:
    if data[:2] == b"\xff\xd8":  # JPEG: must contain its end-of-image marker near the end
        return b"\xff\xd9" not in data[-4096:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) recorded in an encoded image (JPEG, PNG, WebP, TIFF); 1
    (upright) when it records none or cannot be parsed."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - no readable EXIF means no rotation
        return 1
    return value if 1 <= value <= 8 else 1


_ORIENTATION_FLIPS = {2: (False, True), 3: (True, True), 4: (True, False)}  # (rows, columns)


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` as it is meant to be seen, given its EXIF ``orientation``: what phones and
    cameras record instead of rotating the pixels (6: turn 90 degrees clockwise to view).
    The same transform as PIL's ``ImageOps.exif_transpose``, which YOLOv7 and Ultralytics apply."""
    if orientation in (5, 6, 7, 8):  # the stored picture is on its side: transpose, then flip as 1-4
        img = np.swapaxes(img, 0, 1)
        orientation -= 4
    flip_rows, flip_cols = _ORIENTATION_FLIPS.get(orientation, (False, False))
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def read_image(path) -> np.ndarray:
    """Read an image as HxWx3 BGR uint8, upright, or raise :class:`BadImage`.

    The EXIF orientation a phone or camera recorded is applied (a photo tagged "rotate 90"
    comes back rotated, as every viewer shows it); grayscale, RGBA, 16-bit and CMYK files
    are converted; empty, truncated, undecodable and tiny (< 8 px) files are refused."""
    cv2 = _cv2()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BadImage("unreadable", e.strerror or str(e))
    if not data:
        raise BadImage("empty file")
    if _looks_truncated(data, p.suffix.lower()):
        raise BadImage("truncated")
    buf = np.frombuffer(data, np.uint8)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the skip is reported once, by the caller
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # a header OpenCV refuses outright (absurd dimensions, ...)
        raise BadImage("not a decodable image", str(e).strip().splitlines()[-1][:200])
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None or img.size == 0:
        raise BadImage("not a decodable image")
    return to_bgr8(apply_orientation(img, exif_orientation(data)))


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """A decoded image (HxW, HxWx1, HxWx3 BGR or HxWx4 BGRA; 8 or 16 bit or float) as
    HxWx3 BGR uint8, or :class:`BadImage` when it is too small (< 8 px) or not an image.
    16-bit samples keep their high byte (also when held in a wider integer type); other
    integer and float samples are stretched from their minimum to their maximum."""
    cv2 = _cv2()
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) or img.dtype == bool:
        raise BadImage("not an image array", f"shape {img.shape}, {img.dtype}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype.kind in "iu" and img.dtype.itemsize >= 2 and img.size and 0 <= img.min() and img.max() <= 65535:
        # 16-bit samples held in another integer type (big-endian, or the int32 of PIL's "I" mode
        # of a 16-bit PNG and of an int32 TIFF): 16-bit, whoever decoded them
        img = (img.astype(np.uint16) >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[0] < MIN_SIDE or img.shape[1] < MIN_SIDE:
        raise BadImage("too small", f"{img.shape[1]}x{img.shape[0]}")
    return np.ascontiguousarray(img)


def iter_prepared(paths, size, skipped: dict | None = None):
    """Letterboxed tensors of the readable images among ``paths`` (bad ones are skipped and,
    when ``skipped`` is given, counted there by reason)."""
    for p in paths:
        try:
            yield prepare(read_image(p), size).tensor
        except BadImage as e:
            if skipped is not None:
                skipped[e.reason] = skipped.get(e.reason, 0) + 1


