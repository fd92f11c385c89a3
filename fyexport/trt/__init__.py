"""The TensorRT layer: thin, version-gated, TensorRT 10.3 (JetPack 6) to 11.1, through Polygraphy.

Engines are built with NVIDIA's Polygraphy (``polygraphy.backend.trt``: the calls into
TensorRT NVIDIA itself tests against every release) and run on device memory from
Polygraphy's CUDA runtime wrapper (``polygraphy.cuda``).  fyexport keeps only what Polygraphy
does not do (see :mod:`fyexport.trt.engine`).  Enum members are used by name (11.0 renumbered
them) and what 11 removed (``BuilderFlag.INT8/FP16``, ``IInt8EntropyCalibrator2``) is
feature-detected.  Version boundaries: 10.12 deprecated weak typing
(:func:`weak_typing_deprecated`); DLA exists up to 10.7 and again from 11.4
(:func:`dla_supported`).  TensorRT cannot be installed on the machines this project is
developed on, so this layer runs under test on a stand-in of each release of the matrix written
from the real sources (tests/trt_stand_in.py), and for real wherever ``tensorrt`` imports next
to a GPU.

Logging: TensorRT's messages reach Polygraphy's TensorRT logger (never TensorRT's default
logger, which prints to stdout), and Polygraphy's log goes to fyexport's on stderr
(:func:`route_polygraphy_log`): stdout belongs to tables and ``--json`` documents.
"""
from __future__ import annotations

import contextlib

from ..core.errors import FyexportError
from ..core.log import DEBUG, G_LOGGER

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
OLDEST_CHECKED = (10, 3, 0)  # JetPack 6's TensorRT
NEWEST_CHECKED = (11, 1, 0)
RELEASES_CHECKED = ("10.3", "10.8", "10.12", "10.16", "11.0", "11.1")
INSTALL_HINT = ("Install the TensorRT extra on the target machine (pip install 'fyexport[tensorrt]'), or build "
                "there from the Q/DQ ONNX with: trtexec --onnx={onnx} --stronglyTyped --saveEngine=model.engine")


def import_trt(onnx_hint: str = "model.qdq.fp16.onnx"):
    """``import tensorrt`` or a one-line error saying what to install and how to build anyway."""
    try:
        import tensorrt as trt
    except ImportError:
        raise FyexportError("TensorRT is not installed here (no 'tensorrt' module)",
                            INSTALL_HINT.format(onnx=onnx_hint))
    v = version_tuple(trt)
    if v[0] < 10:
        raise FyexportError(f"TensorRT {trt.__version__} is too old: fyexport needs TensorRT 10 or newer")
    if v < OLDEST_CHECKED:
        G_LOGGER.warning(f"TensorRT {trt.__version__} is older than 10.3, the oldest release fyexport was checked "
                         "against; it is treated like 10.3 (Q/DQ weakly typed with the INT8 and FP16 flags)", once=True)
    elif v[:2] > NEWEST_CHECKED[:2]:
        G_LOGGER.warning(f"TensorRT {trt.__version__} is newer than 11.1, the newest release fyexport was checked "
                         "against; it is treated like 11.1", once=True)
    return trt


def version_tuple(trt) -> tuple:
    parts = []
    for p in str(trt.__version__).split(".")[:3]:
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


def builds_strongly_typed(trt) -> bool:
    """Whether fyexport builds strongly typed networks on this release: from 10.12 (which
    deprecated weak typing) and on 11.x (where every network is strongly typed)."""
    return weak_typing_deprecated(trt)


def dla_supported(trt) -> bool:
    """Whether this TensorRT release supports DLA at all: "TensorRT 10.7 was the last 10.x
    release that supported DLA", "DLA was unavailable in TensorRT 11.0 through 11.3" and 11.4.1
    restores it on Jetson AGX Orin (TensorRT 11.4.1 "Working with DLA").  Whether this machine
    has DLA cores is the builder's ``num_DLA_cores`` (0 on every discrete GPU)."""
    v = version_tuple(trt)
    return v < (10, 8, 0) or v >= (11, 4, 0)


def trt_logger():
    """The TensorRT logger: Polygraphy's (``polygraphy.backend.trt.util.get_trt_logger``), which
    hands TensorRT's messages to Polygraphy's log, which :func:`polygraphy_logs` sends to
    fyexport's.  One per process, kept alive (the plugin library logs through it for good)."""
    from polygraphy.backend.trt import util as trt_util

    return trt_util.get_trt_logger()


def init_plugins(trt) -> None:
    """Register TensorRT's bundled plugins (``EfficientNMS_TRT``) in the plugin registry: the ONNX
    parser and the runtime look plugins up only there.  Polygraphy's loaders do it before they
    parse or deserialize; fyexport's runner deserializes itself and calls this first."""
    if not trt.init_libnvinfer_plugins(trt_logger(), ""):
        G_LOGGER.warning("TensorRT could not initialise its plugin library (libnvinfer_plugin): engines with "
                         "EfficientNMS_TRT ('fyexport export --nms trt-plugin') will not build or load")


class _Forward:
    """A ``logging`` handler that hands Polygraphy's records to fyexport's log; the errors of the
    block running (:func:`polygraphy_logs`) are kept in ``errors``."""

    def __init__(self):
        import logging

        self.errors: list = []
        self.handler = logging.Handler(level=1)
        self.handler.emit = self.emit

    def emit(self, record) -> None:
        msg = " ".join(record.getMessage().split())
        if record.levelno >= 40:
            self.errors.append(msg)
            G_LOGGER.debug(f"TensorRT/Polygraphy error: {msg}")
        elif record.levelno >= 30:
            G_LOGGER.warning(f"TensorRT/Polygraphy: {msg}")
        else:
            G_LOGGER.debug(f"TensorRT/Polygraphy: {msg}")


_ROUTE: list = []  # the one _Forward, once Polygraphy's log goes to fyexport's


def route_polygraphy_log() -> _Forward:
    """From the first call on, Polygraphy's log (and TensorRT's, which Polygraphy's TensorRT logger
    hands to it) goes to fyexport's log on stderr, never to stdout, for the rest of the process:
    warnings as warnings, everything else at debug level (``--verbose`` shows it)."""
    import logging

    from polygraphy.logger import G_LOGGER as PG

    if not _ROUTE:
        fwd = _Forward()
        py = logging.getLogger("Polygraphy")
        PG.use_python_logging_system = True
        PG.letter = PG.colors = False
        py.addHandler(fwd.handler)
        py.propagate = False
        py.setLevel(1)
        _ROUTE.append(fwd)
    PG.module_severity = PG.VERBOSE if G_LOGGER.level <= DEBUG else PG.WARNING
    return _ROUTE[0]


@contextlib.contextmanager
def polygraphy_logs(what: str, hint: str | None = None):
    """A block calling Polygraphy (or TensorRT through its logger): the errors logged in it are
    yielded, and a ``PolygraphyException`` leaves it as one line, ``what: <the errors>``."""
    from polygraphy.exception import PolygraphyException

    fwd = route_polygraphy_log()
    outer, fwd.errors = fwd.errors, []
    try:
        yield fwd.errors
    except PolygraphyException as e:
        seen = list(dict.fromkeys(fwd.errors or [str(e)]))
        raise FyexportError(f"{what}: " + " | ".join(seen), hint) from e
    finally:
        fwd.errors = outer
