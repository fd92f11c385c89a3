"""The TensorRT layer: thin, version-gated, and only TensorRT >= 10.

It uses only calls present in both 10.x and 11.x (name-based I/O, ``execute_async_v3``,
``set_memory_pool_limit``, strongly typed networks), and feature-detects what 11 removed
(``BuilderFlag.INT8/FP16``, ``IInt8EntropyCalibrator2``) instead of parsing versions.
TensorRT cannot be installed on the machines this project is developed on, so these
modules are exercised by contract tests against fake modules that have exactly the
attributes of 10.x and 11.x, and by real tests wherever ``tensorrt`` imports next to a GPU.
"""
from __future__ import annotations

from ..errors import FyexportError

INSTALL_HINT = ("Install the TensorRT extra on the target machine (pip install 'fyexport[tensorrt]'), or build "
                "there from the Q/DQ ONNX with: trtexec --onnx={onnx} --stronglyTyped --saveEngine=model.engine")


def import_trt(onnx_hint: str = "model.qdq.fp16.onnx"):
    """``import tensorrt`` or a one-line error saying what to install and how to build anyway."""
    try:
        import tensorrt as trt
    except ImportError:
        raise FyexportError("TensorRT is not installed here (no 'tensorrt' module)",
                            INSTALL_HINT.format(onnx=onnx_hint))
    major = version_tuple(trt)[0]
    if major < 10:
        raise FyexportError(f"TensorRT {trt.__version__} is too old: fyexport needs TensorRT 10 or newer")
    return trt


def version_tuple(trt) -> tuple:
    parts = []
    for p in str(getattr(trt, "__version__", "0")).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def has_implicit_int8(trt) -> bool:
    """TensorRT 10.x still has calibrators and the INT8 builder flag; 11.x removed both."""
    return hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8")


def has_fp16_flag(trt) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def make_logger(trt, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
