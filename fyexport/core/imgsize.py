"""The input size: parsed once from what the user typed, fitted once to the model's real
stride (64 for the P6 models, 32 for the others), then used as is by every stage."""
from __future__ import annotations

import math

from .config import ConfigError

DEFAULT_IMG_SIZE = 640
MAX_IMG_SIDE = 4096  # a bigger letterbox is surely a typo (a 100000 px input would ask for 120 GB)


def parse_img_size(value) -> int | tuple[int, int]:
    """``--img-size`` as every command takes it: ``N``, ``H,W`` or ``HxW`` (or already parsed)."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError("img_size", f"must be N or H,W, got {value!r}")
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return (nums[0], nums[1])
    raise ConfigError("img_size", f"must be N or H,W, got {value!r}")


def as_hw(img_size) -> tuple[int, int]:
    """(h, w) of a parsed or unparsed size, checked, not fitted to any stride."""
    img_size = parse_img_size(img_size)
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(hw) == 1:
        hw = (hw[0], hw[0])
    if len(hw) != 2 or any(v <= 0 for v in hw):
        raise ConfigError("img_size", f"must be positive, got {img_size}")
    if any(v > MAX_IMG_SIDE for v in hw):
        raise ConfigError("img_size", f"{img_size} is above {MAX_IMG_SIDE} pixels a side",
                          "YOLOv7 models run at 320 to 1280; give the deployment's input size")
    return hw  # type: ignore[return-value]


def fit_img_size(img_size, stride: int) -> tuple[int, int]:
    """(h, w) rounded up to a multiple of ``stride``, the model's largest stride (a warning
    says so when that changes the size)."""
    from .log import G_LOGGER

    hw = as_hw(img_size)
    out = tuple(int(math.ceil(v / stride) * stride) for v in hw)
    if out != hw:
        G_LOGGER.warning(f"image size {hw} is not a multiple of the model's stride {stride}; using {out}")
    return out  # type: ignore[return-value]
