"""The TensorRT layer: thin, version-gated, and only TensorRT >= 10.

It uses only calls present in both 10.x and 11.x (name-based I/O, ``execute_async_v3``,
``set_memory_pool_limit``, strongly typed networks), enum members by name (11.0 renumbered
them), and feature-detects what 11 removed (``BuilderFlag.INT8/FP16``,
``IInt8EntropyCalibrator2``).  The one version boundary inside 10.x is 10.12, which
deprecated weak typing (:func:`weak_typing_deprecated`).  TensorRT cannot be installed on the
machines this project is developed on, so these modules are exercised by contract tests
against stand-ins of 10.8, 10.12, 10.16, 11.0 and 11.1 written from the real sources
(tests/fake_tensorrt.py), and by real tests wherever ``tensorrt`` imports next to a GPU.
"""
from __future__ import annotations

from ..core.errors import FyexportError
from ..core.log import G_LOGGER

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
OLDEST_CHECKED = (10, 8, 0)
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
    if version_tuple(trt) < OLDEST_CHECKED:
        G_LOGGER.warning(f"TensorRT {trt.__version__} is older than 10.8, the oldest release fyexport was checked "
                         "against; it is treated like 10.8 (Q/DQ weakly typed with the INT8 and FP16 flags)", once=True)
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


def weak_typing_deprecated(trt) -> bool:
    """TensorRT 10.12 deprecated weak typing (the INT8/FP16 builder flags); 11.0 removed it."""
    return version_tuple(trt) >= (10, 12, 0) or not has_fp16_flag(trt)


_PLUGIN_LOGGERS: dict = {}  # id(trt module) -> (module, logger): the plugin library logs through it for good


def init_plugins(trt) -> None:
    """Register TensorRT's bundled plugins (``EfficientNMS_TRT`` for ``--nms trt-plugin``) in
    the plugin registry, once per process: the ONNX parser and the runtime only look plugins
    up there, and nothing else registers them.  The logger is kept alive because the plugin
    library keeps a pointer to it."""
    if id(trt) in _PLUGIN_LOGGERS:
        return
    init = getattr(trt, "init_libnvinfer_plugins", None)
    logger = make_logger(trt)
    _PLUGIN_LOGGERS[id(trt)] = (trt, logger)
    if init is None:  # a lean or dispatch runtime: no plugin library
        G_LOGGER.debug(f"TensorRT {trt.__version__} has no init_libnvinfer_plugins; plugins are not available")
        return
    if not init(logger, ""):
        G_LOGGER.warning("TensorRT could not initialise its plugin library (libnvinfer_plugin): engines with "
                         "EfficientNMS_TRT ('fyexport export --nms trt-plugin') will not build or load")


def make_logger(trt, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
