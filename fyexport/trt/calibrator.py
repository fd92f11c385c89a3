"""TensorRT 10's own entropy calibrator, fed by the project's letterbox.

Only for comparison with explicit Q/DQ (``--calibrator trt-entropy``): TensorRT 11 removed
``IInt8EntropyCalibrator2``, and NVIDIA measured it costing YOLOv7 5.5 mAP points.  The
class is built lazily because its base class only exists inside ``tensorrt`` 10.x.

TensorRT calibrates at the calibration profile's OPT shape, not at ``get_batch_size()``: the
builder sets that profile to :attr:`shape` (the static batch of a static-batch model, else the
requested batch), and every device buffer handed out has exactly that shape.  TensorRT asks
``read_calibration_cache`` first and calls ``get_batch`` only when it returns nothing;
``write_calibration_cache`` receives a memoryview.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.artifacts import write_bytes
from ..core.errors import InputError
from ..core.log import G_LOGGER


def calibration_batches(images_dir, hw, batch: int, num_images: int, seed: int = 0, paths=None):
    """Letterboxed float32 batches (B,3,H,W) from a folder (or ``paths``), skipping unreadable files."""
    from ..data.images import iter_prepared
    from ..data.selection import select_images

    buf = []
    for x in iter_prepared(paths if paths is not None else select_images(images_dir, num_images, seed).paths, hw):
        buf.append(x)
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []
    # TensorRT calibrates at one fixed shape: a short last batch is dropped


def make_entropy_calibrator(trt, proto, images_dir, cache_path, num_images: int = 500, batch: int = 8):
    """An ``IInt8EntropyCalibrator2`` reading/writing ``cache_path`` (TensorRT text format);
    its ``shape`` is the calibration input shape (the calibration profile's OPT)."""
    import torch

    from ..data.selection import select_images
    from ..onnx.facts import image_input

    inp = image_input(proto)
    device = "cpu" if getattr(trt, "__fyexport_fake__", False) else "cuda"  # contract tests run without a GPU
    hw = inp.hw
    if inp.batch not in (None, batch):
        batch = inp.batch
    cache_path = Path(cache_path)
    paths = None
    if not cache_path.exists():
        paths = select_images(images_dir, num_images).paths
        if len(paths) < batch:
            raise InputError(f"{images_dir}: {len(paths)} image(s), fewer than one calibration batch of {batch}",
                             "Give more images or a smaller calibration batch")
        if len(paths) % batch:
            G_LOGGER.info(f"TensorRT calibrator: batches of {batch}; the last {len(paths) % batch} image(s) are unused")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the trampoline base must be initialised explicitly
            self.shape = (batch, 3, *hw)
            self._it = calibration_batches(images_dir, hw, batch, num_images, paths=paths)
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
