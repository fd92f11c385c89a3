"""TensorRT 10's own entropy calibrator, fed by the project's letterbox.

Only for comparison with explicit Q/DQ (``--calibrator trt-entropy``): TensorRT 11 removed
``IInt8EntropyCalibrator2``, and NVIDIA measured it costing YOLOv7 5.5 mAP points.  The
class is built lazily because its base class only exists inside ``tensorrt`` 10.x.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import write_bytes
from ..log import G_LOGGER


def calibration_batches(images_dir, hw, batch: int, num_images: int, seed: int = 0):
    """Letterboxed float32 batches (B,3,H,W) from a folder, skipping unreadable files."""
    from ..preprocess import iter_prepared
    from ..quantize.collect import select_images

    buf = []
    for x in iter_prepared(select_images(images_dir, num_images, seed).paths, hw):
        buf.append(x)
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []
    # TensorRT calibrates at the profile's shape: a short last batch is dropped


def make_entropy_calibrator(trt, proto, images_dir, cache_path, num_images: int = 500, batch: int = 8):
    """An ``IInt8EntropyCalibrator2`` reading/writing ``cache_path`` (TensorRT text format)."""
    import torch

    from .builder import onnx_kind

    kind = onnx_kind(proto)
    device = "cpu" if getattr(trt, "__fyexport_fake__", False) else "cuda"  # contract tests run without a GPU
    hw = tuple(kind["dims"][2:])
    if kind["dims"][0] not in (-1, batch):
        batch = kind["dims"][0]
    cache_path = Path(cache_path)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the trampoline base must be initialised explicitly
            self._it = calibration_batches(images_dir, hw, batch, num_images)
            self._dev = None
            self.batches = 0

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            try:
                x = next(self._it)
            except StopIteration:
                return None
            self._dev = torch.from_numpy(x).to(device).contiguous()  # kept alive until the next call
            self.batches += 1
            return [int(self._dev.data_ptr())]

        def read_calibration_cache(self):
            if cache_path.exists():
                G_LOGGER.info(f"TensorRT calibrator: reusing {cache_path}")
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            data = cache.tobytes() if hasattr(cache, "tobytes") else bytes(cache)
            write_bytes(cache_path, data)

    return EntropyCalibrator()
