"""INT8: TensorRT-faithful calibration, the TensorRT calibration cache and Q/DQ ONNX models.

``calibrate(model.onnx, images, out_dir)`` writes (:data:`ARTIFACTS`):

* ``calib.cache``: TensorRT text cache (``TRT-<ver>-EntropyCalibration2``, hex scales);
* ``calib.json``: amax per tensor and group, method, image count and list hash,
  preprocessing, model sha256;
* ``model.qdq.onnx`` (flavour ``trt``): INT8 S8S8 Q/DQ for TensorRT 10 (FP32 remainder);
* ``model.qdq.fp16.onnx`` (``trt-fp16``): the same with an FP16 remainder, for TensorRT 11
  strong typing;
* ``model.qdq.cpu.onnx`` (``cpu``): U8S8, fully quantized, for ONNX Runtime on CPU.
"""
from __future__ import annotations

from .calibration import (
           ARTIFACTS,
           CALIBRATION_METHODS,
           DEFAULT_BATCH,
           FLAVOURS,
           STATS_FILE,
           CalibrationConfig,
           CalibrationOptions,
           CalibrationResult,
           calibrate,
           load_collected,
           save_collected,
)

__all__ = ["ARTIFACTS", "CALIBRATION_METHODS", "DEFAULT_BATCH", "FLAVOURS", "STATS_FILE", "CalibrationConfig",
           "CalibrationOptions",
           "CalibrationResult", "calibrate", "load_collected", "save_collected"]
