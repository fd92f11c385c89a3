"""A stand-in for TensorRT's Python module (releases 10.3, 10.8, 10.12, 10.16, 11.0, 11.1) and for
the CUDA runtime under it, whose engines execute the ONNX they were built from.

Written for fyexport from the real sources, never copied from them: NVIDIA/TensorRT at the tags
v10.3.0, v10.8.0, v10.12.0, v10.16, v11.0 and v11.1 (include/NvInfer*.h, include/NvOnnxParser.h,
python/src/infer/pyCore.cpp, pyInt8.cpp, pyGraph.cpp, pyPlugin.cpp, python/src/parsers/pyOnnx.cpp,
python/include/utils.h, python/packaging/bindings_wheel/tensorrt/__init__.py,
plugin/efficientNMSPlugin, plugin/api/inferPlugin.cpp), onnx/onnx-tensorrt 10.1-GA
(onnxOpImporters.cpp, importerUtils.hpp: the ONNX importers are not in the TensorRT tags), NVIDIA's
TensorRT documentation where the behaviour lives in the closed library, and Polygraphy (0.49.x in
the tags, 0.53.6 installed).  Each behaviour cites its source as ``[file @ release]``.

What it is:

* ``install(version, gpu=True, dla_cores=None)`` puts the stand-in of one release in
  ``sys.modules["tensorrt"]``, gives Polygraphy's CUDA wrapper (``polygraphy.cuda``, which loads
  libcudart with ctypes) a CUDA runtime whose "device" memory is host memory, through which
  fyexport sees a GPU (see :func:`install`).  ``python tests/trt_stand_in.py VERSION ARGS...``
  installs it and runs ``fyexport ARGS...`` in this process, so a user's path can be walked by hand.
* The "plan" is a header, the build facts (JSON) and the ONNX bytes.  Engines run that ONNX on ONNX
  Runtime (CPU), with the NMS plugin and ONNX NonMaxSuppression computed here the way TensorRT
  does (``>=`` thresholds and zero padding in EfficientNMS_TRT; INMSLayer's per-image candidate
  limit of 5000 and its output order), reading and writing the tensor addresses bound to the
  execution context, which must be CUDA allocations.
* It fails where TensorRT fails: what a release removed is absent (AttributeError, as pybind11
  gives), enum members carry each release's values, objects refuse attributes their real
  counterparts lack, calibrator callbacks behave like the pybind11 trampolines, profiles are
  validated like ``IOptimizationProfile``, strong typing is enforced, plugins need
  ``init_libnvinfer_plugins``, plans refuse another TensorRT or GPU, and shapes outside the profile
  are refused with TensorRT's log message and ``False``.

Not modelled: real kernels and their numerics (FP16 and INT8 engines compute in the ONNX's own
types on ONNX Runtime), networks built layer by layer through the Python API (``add_*``), refit,
weight streaming, safety runtime.
"""
from __future__ import annotations

import bisect
import contextlib
import ctypes
import enum
import hashlib
import importlib.machinery
import json
import struct
import sys
import time
import types
import warnings

import numpy as np

# The matrix: release -> the full version string the bindings report (NV_TENSORRT_* / TRT_*_ENTERPRISE
# in include/NvInferVersion.h at each tag).  10.3 is JetPack 6's TensorRT (Jetson Orin).
RELEASES = {"10.3": "10.3.0.26", "10.8": "10.8.0.43", "10.12": "10.12.0.36", "10.16": "10.16.0.72",
            "11.0": "11.0.0.114", "11.1": "11.1.0.106"}
VERSIONS = tuple(RELEASES.values())

# GPUs the CUDA runtime reports: a discrete data-centre GPU, and Jetson AGX Orin for 10.3 (JetPack 6).
DISCRETE_GPU = ("NVIDIA H100 80GB HBM3", (9, 0))
JETSON_GPU = ("Orin", (8, 7))

PLUGIN_NOT_FOUND = 'creator && "Plugin not found, are the plugin name, version, and namespace correct?"'
SCALE_NOT_POSITIVE = "Scale coefficients must all be positive"
# [NvInfer.h ITopKLayer::setK @ v10.3.0..v11.1] "Currently only values up to 3840 are supported."
MAX_TOPK_K = 3840
# [NvInfer.h INMSLayer @ v10.3.0..v11.1] "only the K highest scoring boxes in each batch item will be
# considered for selection. The value of K is 2000 for SM 5.3 and 6.2 devices, and 5000 otherwise."
NMS_TOPK_BOX_LIMIT = 5000
# [plugin/efficientNMSPlugin/efficientNMSPlugin.cpp initialize() @ v10.3.0..v11.1]: regsPerBlock >= 65536
# (every GPU but Jetson TX1/TX2) -> mParam.numSelectedBoxes = 5000
EFFICIENT_NMS_SELECTED_BOXES = 5000


def release_of(version: str) -> tuple:
    """(major, minor) of a version string such as '10.12.0.36'."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _full_version(version: str) -> str:
    if version in RELEASES:
        return RELEASES[version]
    if version in VERSIONS:
        return version
    short = ".".join(version.split(".")[:2])
    if short in RELEASES:
        return RELEASES[short]
    raise ValueError(f"no stand-in for TensorRT {version}; releases: {', '.join(RELEASES)}")


# -- enums ------------------------------------------------------------------------------------------
# Member names are the pybind11 ``.value(...)`` names [python/src/**/*.cpp @ each tag]; values are the
# C++ enumerators [include/NvInfer*.h, NvOnnxParser.h @ each tag].  Rows: (name, value, since, until),
# ``since``/``until`` inclusive (major, minor) releases; None = open.

_E10 = (10, 0)
_L10 = (10, 99)
_F11 = (11, 0)

_ENUMS = {
    # 11.0 removed the precision flags and renumbered the rest [NvInfer.h enum BuilderFlag @ v10.16, v11.0]
    "BuilderFlag": [
        ("FP16", 0, None, _L10), ("INT8", 1, None, _L10), ("DEBUG", 2), ("GPU_FALLBACK", 3), ("REFIT", 4),
        ("DISABLE_TIMING_CACHE", 5), ("TF32", 6), ("SPARSE_WEIGHTS", 7), ("SAFETY_SCOPE", 8),
        ("OBEY_PRECISION_CONSTRAINTS", 9, None, _L10), ("PREFER_PRECISION_CONSTRAINTS", 10, None, _L10),
        ("DIRECT_IO", 11), ("REJECT_EMPTY_ALGORITHMS", 12, None, _L10),
        ("VERSION_COMPATIBLE", 13, None, _L10), ("VERSION_COMPATIBLE", 12, _F11, None),
        ("EXCLUDE_LEAN_RUNTIME", 14, None, _L10), ("EXCLUDE_LEAN_RUNTIME", 13, _F11, None),
        ("FP8", 15, None, _L10),
        ("ERROR_ON_TIMING_CACHE_MISS", 16, None, _L10), ("ERROR_ON_TIMING_CACHE_MISS", 15, _F11, None),
        ("BF16", 17, None, _L10),
        ("DISABLE_COMPILATION_CACHE", 18, None, _L10), ("DISABLE_COMPILATION_CACHE", 17, _F11, None),
        ("WEIGHTLESS", 19, None, _L10),
        ("STRIP_PLAN", 19, None, _L10), ("STRIP_PLAN", 18, _F11, None),
        ("REFIT_IDENTICAL", 20, None, _L10), ("REFIT_IDENTICAL", 19, _F11, None),
        ("WEIGHT_STREAMING", 21, None, _L10), ("WEIGHT_STREAMING", 20, _F11, None),
        ("INT4", 22, None, _L10),
        ("REFIT_INDIVIDUAL", 23, None, _L10), ("REFIT_INDIVIDUAL", 22, _F11, None),
        ("STRICT_NANS", 24, (10, 8), _L10), ("STRICT_NANS", 23, _F11, None),
        ("MONITOR_MEMORY", 25, (10, 8), _L10), ("MONITOR_MEMORY", 24, _F11, None),
        ("FP4", 26, (10, 8), _L10),
        ("EDITABLE_TIMING_CACHE", 27, (10, 8), _L10), ("EDITABLE_TIMING_CACHE", 26, _F11, None),
        ("DISTRIBUTIVE_INDEPENDENCE", 28, (10, 12), _L10), ("DISTRIBUTIVE_INDEPENDENCE", 27, _F11, None),
    ],
    "NetworkDefinitionCreationFlag": [
        ("EXPLICIT_BATCH", 0, None, _L10), ("STRONGLY_TYPED", 1, None, _L10), ("STRONGLY_TYPED", 0, _F11, None),
        ("PREFER_JIT_PYTHON_PLUGINS", 2, (10, 12), _L10), ("PREFER_JIT_PYTHON_PLUGINS", 1, _F11, None),
        ("PREFER_AOT_PYTHON_PLUGINS", 3, (10, 12), _L10), ("PREFER_AOT_PYTHON_PLUGINS", 2, _F11, None),
    ],
    "DataType": [("FLOAT", 0), ("HALF", 1), ("INT8", 2), ("INT32", 3), ("BOOL", 4), ("UINT8", 5), ("FP8", 6),
                 ("BF16", 7), ("INT64", 8), ("INT4", 9), ("FP4", 10, (10, 8), None), ("E8M0", 11, (10, 12), None)],
    "MemoryPoolType": [("WORKSPACE", 0), ("DLA_MANAGED_SRAM", 1), ("DLA_LOCAL_DRAM", 2), ("DLA_GLOBAL_DRAM", 3),
                       ("TACTIC_DRAM", 4), ("TACTIC_SHARED_MEMORY", 5)],
    # DeviceType and the DLA members stay bound in 11.0/11.1 [pyCore.cpp @ v11.0, v11.1]
    "DeviceType": [("GPU", 0), ("DLA", 1)],
    "ProfilingVerbosity": [("LAYER_NAMES_ONLY", 0), ("NONE", 1), ("DETAILED", 2)],
    "LayerInformationFormat": [("ONELINE", 0), ("JSON", 1)],
    "TensorIOMode": [("NONE", 0), ("INPUT", 1), ("OUTPUT", 2)],
    "TensorLocation": [("DEVICE", 0), ("HOST", 1)],
    "ErrorCode": [(n, i) for i, n in enumerate(
        ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
         "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR",
         "UNSUPPORTED_NODE_INPUT", "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC",
         "UNSUPPORTED_NODE_SHAPE", "REFIT_FAILED"])],
    "ErrorCodeTRT": [(n, i) for i, n in enumerate(
        ["SUCCESS", "UNSPECIFIED_ERROR", "INTERNAL_ERROR", "INVALID_ARGUMENT", "INVALID_CONFIG", "FAILED_ALLOCATION",
         "FAILED_INITIALIZATION", "FAILED_EXECUTION", "FAILED_COMPUTATION", "INVALID_STATE", "UNSUPPORTED_STATE"])],
    "OnnxParserFlag": [("NATIVE_INSTANCENORM", 0),
                       ("ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA", 1, (10, 12), None),
                       ("REPORT_CAPABILITY_DLA", 2, (10, 16), None), ("ENABLE_PLUGIN_OVERRIDE", 3, (10, 16), None),
                       ("ADJUST_FOR_DLA", 4, (10, 16), None)],
    "LayerType": [(n, v) for n, v in (
        ("CONVOLUTION", 0), ("CAST", 1), ("ACTIVATION", 2), ("POOLING", 3), ("LRN", 4), ("SCALE", 5), ("SOFTMAX", 6),
        ("DECONVOLUTION", 7), ("CONCATENATION", 8), ("ELEMENTWISE", 9), ("PLUGIN", 10), ("UNARY", 11),
        ("PADDING", 12), ("SHUFFLE", 13), ("REDUCE", 14), ("TOPK", 15), ("GATHER", 16), ("MATRIX_MULTIPLY", 17),
        ("RAGGED_SOFTMAX", 18), ("CONSTANT", 19), ("IDENTITY", 20), ("PLUGIN_V2", 21), ("SLICE", 22),
        ("SHAPE", 23), ("PARAMETRIC_RELU", 24), ("RESIZE", 25), ("TRIP_LIMIT", 26), ("RECURRENCE", 27),
        ("ITERATOR", 28), ("LOOP_OUTPUT", 29), ("SELECT", 30), ("FILL", 31), ("QUANTIZE", 32), ("DEQUANTIZE", 33),
        ("CONDITION", 34), ("CONDITIONAL_INPUT", 35), ("CONDITIONAL_OUTPUT", 36), ("SCATTER", 37), ("EINSUM", 38),
        ("ASSERTION", 39), ("ONE_HOT", 40), ("NON_ZERO", 41), ("GRID_SAMPLE", 42), ("NMS", 43),
        ("REVERSE_SEQUENCE", 44), ("NORMALIZATION", 45), ("PLUGIN_V3", 46))] + [
        ("SQUEEZE", 47, (10, 8), None), ("UNSQUEEZE", 48, (10, 8), None), ("CUMULATIVE", 49, (10, 8), None),
        ("DYNAMIC_QUANTIZE", 50, (10, 8), None)],
    "TensorFormat": [(n, i) for i, n in enumerate(
        ["LINEAR", "CHW2", "HWC8", "CHW4", "CHW16", "CHW32", "DHWC8", "CDHW32", "HWC", "DLA_LINEAR", "DLA_HWC4",
         "HWC16", "DHWC"])],
    "EngineCapability": [("STANDARD", 0), ("SAFETY", 1), ("DLA_STANDALONE", 2)],
    "TacticSource": [("CUBLAS", 0, None, _L10), ("CUBLAS_LT", 1, None, _L10), ("CUDNN", 2, None, _L10),
                     ("EDGE_MASK_CONVOLUTIONS", 3, None, _L10), ("EDGE_MASK_CONVOLUTIONS", 0, _F11, None),
                     ("JIT_CONVOLUTIONS", 4, None, _L10), ("JIT_CONVOLUTIONS", 1, _F11, None)],
    "HardwareCompatibilityLevel": [("NONE", 0), ("AMPERE_PLUS", 1), ("SAME_COMPUTE_CAPABILITY", 2, (10, 12), None)],
    "PreviewFeature": [("PROFILE_SHARING_0806", 0, None, _L10),
                       ("ALIASED_PLUGIN_IO_10_03", 1, None, _L10), ("ALIASED_PLUGIN_IO_10_03", 0, _F11, None),
                       ("RUNTIME_ACTIVATION_RESIZE_10_10", 2, (10, 12), _L10),
                       ("RUNTIME_ACTIVATION_RESIZE_10_10", 1, _F11, None),
                       ("MULTIDEVICE_RUNTIME_10_16", 3, (10, 16), _L10)],
    "ExecutionContextAllocationStrategy": [("STATIC", 0), ("ON_PROFILE_CHANGE", 1), ("USER_MANAGED", 2)],
    "PluginFieldType": [(n, i) for i, n in enumerate(
        ["FLOAT16", "FLOAT32", "FLOAT64", "INT8", "INT16", "INT32", "CHAR", "DIMS", "UNKNOWN", "BF16", "INT64",
         "FP8", "INT4"])] + [("FP4", 13, (10, 8), None)],
    "TopKOperation": [("MAX", 0), ("MIN", 1)],
    "BoundingBoxFormat": [("CORNER_PAIRS", 0), ("CENTER_SIZES", 1)],
    "SerializationFlag": [("EXCLUDE_WEIGHTS", 0), ("EXCLUDE_LEAN_RUNTIME", 1), ("INCLUDE_REFIT", 2, (10, 16), None)],
    "TempfileControlFlag": [("ALLOW_IN_MEMORY_FILES", 0), ("ALLOW_TEMPORARY_FILES", 1)],
    "RuntimePlatform": [("SAME_AS_BUILD", 0), ("WINDOWS_AMD64", 1)],
    "TilingOptimizationLevel": [("NONE", 0, (10, 8), None), ("FAST", 1, (10, 8), None),
                                ("MODERATE", 2, (10, 8), None), ("FULL", 3, (10, 8), None)],
    # 10.x only: implicit quantization [pyInt8.cpp, pyCore.cpp @ v10.16; both gone @ v11.0]
    "CalibrationAlgoType": [("LEGACY_CALIBRATION", 0, None, _L10), ("ENTROPY_CALIBRATION", 1, None, _L10),
                            ("ENTROPY_CALIBRATION_2", 2, None, _L10), ("MINMAX_CALIBRATION", 3, None, _L10)],
    "QuantizationFlag": [("CALIBRATE_BEFORE_FUSION", 0, None, _L10)],
}
_ENUMS["LayerType"] += [(n, v, (10, 16), None) for n, v in (
    ("ATTENTION_INPUT", 51), ("ATTENTION_OUTPUT", 52), ("ROTARY_EMBEDDING", 53), ("KV_CACHE_UPDATE", 54),
    ("MOE", 55), ("DIST_COLLECTIVE", 56))]
_SEVERITY = [("INTERNAL_ERROR", 0), ("ERROR", 1), ("WARNING", 2), ("INFO", 3), ("VERBOSE", 4)]


class _EnumBase(enum.IntEnum):
    """pybind11 enums: ``str()`` gives 'Type.NAME', ints are not accepted where an enum is expected."""

    def __str__(self):
        return f"{type(self).__name__}.{self.name}"

    __repr__ = __str__


def _make_enum(name: str, rows, rel: tuple):
    members = []
    for row in rows:
        n, v = row[0], row[1]
        since = row[2] if len(row) > 2 else None
        until = row[3] if len(row) > 3 else None
        if (since is None or rel >= since) and (until is None or rel <= until):
            members.append((n, v))
    if not members:
        return None
    cls = _EnumBase(name, members)
    return cls


def _check_enum(value, cls, what: str):
    if not isinstance(value, cls):
        raise TypeError(f"{what}(): incompatible function arguments. The following argument types are supported:\n"
                        f"    1. (self, {cls.__name__}) \nInvoked with: {value!r}")
    return value


class Dims(tuple):
    """trt.Dims: a tuple of ints (-1 for a runtime dimension)."""

    MAX_DIMS = 8

    def __new__(cls, values=()):
        return super().__new__(cls, tuple(int(v) for v in values))

    def __repr__(self):
        return "(" + ", ".join(str(v) for v in self) + ")"

    __str__ = __repr__


class IHostMemory(bytes):
    """The serialized plan or timing cache: a buffer (bytes) with ``dtype`` and ``nbytes``; the ``with``
    statement works but is deprecated [python/packaging/bindings_wheel/tensorrt/__init__.py @ v10.3.0..v11.1]."""

    @property
    def nbytes(self):
        return len(self)

    def __enter__(self):
        warnings.warn("Context managers for TensorRT types are deprecated. Memory will be freed automatically when "
                      "the reference count reaches 0.", DeprecationWarning, stacklevel=2)
        return self

    def __exit__(self, *exc):
        return None


class _Trampoline:
    """pybind11 trampoline classes: a Python subclass that overrides ``__init__`` must call the base
    ``__init__`` or instantiation fails (pybind11_meta_call: "X.__init__() must be called when
    overriding __init__"); Polygraphy's own subclasses say so ("Must explicitly initialize parent for
    any trampoline class!" [tools/Polygraphy/polygraphy/backend/trt/file_reader.py @ v11.1])."""

    def __init__(self):
        object.__setattr__(self, "_pybind_initialised", True)


class _TrampolineMeta(type):
    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        if not obj.__dict__.get("_pybind_initialised"):
            base = next(c for c in cls.__mro__ if c.__dict__.get("_pybind_name"))
            raise TypeError(f"tensorrt.tensorrt.{base.__dict__['_pybind_name']}.__init__() must be called when "
                            "overriding __init__")
        return obj


def _override(obj, name: str, base):
    """The Python override of ``name`` (what pybind11's get_override finds), or None where only the
    binding's own member exists."""
    for cls in type(obj).__mro__:
        if cls is base or cls.__dict__.get("_pybind_name"):
            return None
        if name in cls.__dict__:
            return getattr(obj, name)
    return None


# -- the CUDA runtime ---------------------------------------------------------------------------------
# Polygraphy's CUDA wrapper calls libcudart through ctypes: cudaMalloc(void**, size_t), cudaFree,
# cudaMemcpy(dst, src, size_t, kind), cudaMemcpyAsync(..., stream), cudaStreamCreate(cudaStream_t*),
# cudaStreamSynchronize, cudaStreamDestroy [polygraphy/cuda/cuda.py @ 0.53.6]; each returns a
# cudaError_t (0 = success).  This object answers the same calls (and the device queries and events
# a runner needs) with host memory, so that "device" pointers are real addresses TensorRT's stand-in
# reads and writes.  Pointers TensorRT is given are checked against these allocations.

CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_MEMORY_ALLOCATION = 2
CUDA_ERROR_INVALID_DEVICE = 101
CUDA_ERROR_NO_DEVICE = 100
CUDA_DEV_ATTR_CC_MAJOR = 75  # cudaDevAttrComputeCapabilityMajor
CUDA_DEV_ATTR_CC_MINOR = 76  # cudaDevAttrComputeCapabilityMinor


def _val(arg):
    """The Python value of a ctypes argument as Polygraphy passes it (c_void_p, c_size_t, c_int, int)."""
    if arg is None:
        return 0
    if isinstance(arg, ctypes._SimpleCData):
        return arg.value or 0
    return int(arg)


def _out(ref):
    """The ctypes object behind ``ctypes.byref(x)`` (or ``x`` itself)."""
    return getattr(ref, "_obj", ref)


class CudaRuntime:
    """libcudart, on the host.  ``devices`` lists (name, (major, minor)); none = no GPU."""

    def __init__(self, devices=(DISCRETE_GPU,), runtime_version=12080, driver_version=12080):
        self.devices = list(devices)
        self.runtime_version, self.driver_version = runtime_version, driver_version
        self.current = 0
        self._bases: list = []       # sorted allocation addresses
        self._allocs: dict = {}      # address -> ctypes buffer (kept alive)
        self._streams: set = set()
        self._events: dict = {}
        self._next_handle = 0x7000_0000
        self.bytes_in_use = 0

    # device queries
    def cudaGetDeviceCount(self, count_ref):
        _out(count_ref).value = len(self.devices)
        return CUDA_SUCCESS if self.devices else CUDA_ERROR_NO_DEVICE

    def cudaSetDevice(self, device):
        d = _val(device)
        if not 0 <= d < len(self.devices):
            return CUDA_ERROR_INVALID_DEVICE
        self.current = d
        return CUDA_SUCCESS

    def cudaGetDevice(self, device_ref):
        if not self.devices:
            return CUDA_ERROR_NO_DEVICE
        _out(device_ref).value = self.current
        return CUDA_SUCCESS

    def cudaDeviceGetAttribute(self, value_ref, attr, device):
        d = _val(device)
        if not 0 <= d < len(self.devices):
            return CUDA_ERROR_INVALID_DEVICE
        cc = self.devices[d][1]
        a = _val(attr)
        if a not in (CUDA_DEV_ATTR_CC_MAJOR, CUDA_DEV_ATTR_CC_MINOR):
            return CUDA_ERROR_INVALID_VALUE
        _out(value_ref).value = cc[0] if a == CUDA_DEV_ATTR_CC_MAJOR else cc[1]
        return CUDA_SUCCESS

    def cudaGetDeviceProperties(self, prop_ref, device):
        """Writes the device name at offset 0 (cudaDeviceProp.name, char[256], is its first member)."""
        d = _val(device)
        if not 0 <= d < len(self.devices):
            return CUDA_ERROR_INVALID_DEVICE
        name = self.devices[d][0].encode()[:255] + b"\0"
        ctypes.memmove(ctypes.addressof(_out(prop_ref)), name, len(name))
        return CUDA_SUCCESS

    cudaGetDeviceProperties_v2 = cudaGetDeviceProperties

    def cudaRuntimeGetVersion(self, ref):
        _out(ref).value = self.runtime_version
        return CUDA_SUCCESS

    def cudaDriverGetVersion(self, ref):
        _out(ref).value = self.driver_version
        return CUDA_SUCCESS

    def cudaMemGetInfo(self, free_ref, total_ref):
        total = 80 << 30
        _out(free_ref).value = total - self.bytes_in_use
        _out(total_ref).value = total
        return CUDA_SUCCESS

    # memory
    def cudaMalloc(self, ptr_ref, nbytes):
        if not self.devices:
            return CUDA_ERROR_NO_DEVICE
        n = max(1, _val(nbytes))
        buf = (ctypes.c_ubyte * n)()
        addr = ctypes.addressof(buf)
        self._allocs[addr] = buf
        bisect.insort(self._bases, addr)
        self.bytes_in_use += n
        _out(ptr_ref).value = addr
        return CUDA_SUCCESS

    def cudaFree(self, ptr):
        addr = _val(ptr)
        if addr == 0:
            return CUDA_SUCCESS  # cudaFree(NULL) does nothing
        buf = self._allocs.pop(addr, None)
        if buf is None:
            return CUDA_ERROR_INVALID_VALUE
        self._bases.remove(addr)
        self.bytes_in_use -= len(buf)
        return CUDA_SUCCESS

    def is_device(self, addr: int, nbytes: int = 1) -> bool:
        """Whether [addr, addr + nbytes) lies inside one allocation."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i < 0:
            return False
        base = self._bases[i]
        return addr + nbytes <= base + len(self._allocs[base])

    def cudaMemcpy(self, dst, src, nbytes, kind):
        d, s, n, k = _val(dst), _val(src), _val(nbytes), _val(kind)
        device_dst = {0: False, 1: True, 2: False, 3: True}.get(k)
        device_src = {0: False, 1: False, 2: True, 3: True}.get(k)
        if n and ((device_dst and not self.is_device(d, n)) or (device_src and not self.is_device(s, n))):
            return CUDA_ERROR_INVALID_VALUE
        if n:
            ctypes.memmove(d, s, n)
        return CUDA_SUCCESS

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self.cudaMemcpy(dst, src, nbytes, kind)

    # streams and events (work runs synchronously, so synchronising is immediate)
    def _handle(self):
        self._next_handle += 0x10
        return self._next_handle

    def cudaStreamCreate(self, stream_ref):
        h = self._handle()
        self._streams.add(h)
        _out(stream_ref).value = h
        return CUDA_SUCCESS

    def cudaStreamSynchronize(self, stream):
        return CUDA_SUCCESS if _val(stream) in self._streams or _val(stream) == 0 else CUDA_ERROR_INVALID_VALUE

    def cudaStreamDestroy(self, stream):
        self._streams.discard(_val(stream))
        return CUDA_SUCCESS

    def cudaEventCreate(self, event_ref):
        h = self._handle()
        self._events[h] = None
        _out(event_ref).value = h
        return CUDA_SUCCESS

    def cudaEventCreateWithFlags(self, event_ref, flags):
        return self.cudaEventCreate(event_ref)

    def cudaEventRecord(self, event, stream):
        e = _val(event)
        if e not in self._events:
            return CUDA_ERROR_INVALID_VALUE
        self._events[e] = time.perf_counter()
        return CUDA_SUCCESS

    def cudaEventSynchronize(self, event):
        return CUDA_SUCCESS if _val(event) in self._events else CUDA_ERROR_INVALID_VALUE

    def cudaEventElapsedTime(self, ms_ref, start, end):
        a, b = self._events.get(_val(start)), self._events.get(_val(end))
        if a is None or b is None:
            return CUDA_ERROR_INVALID_VALUE
        _out(ms_ref).value = (b - a) * 1e3
        return CUDA_SUCCESS

    def cudaEventDestroy(self, event):
        self._events.pop(_val(event), None)
        return CUDA_SUCCESS

    def cudaDeviceSynchronize(self):
        return CUDA_SUCCESS

    def cudaGetErrorString(self, code):
        return {0: b"no error", 1: b"invalid argument", 2: b"out of memory", 100: b"no CUDA-capable device is "
                b"detected", 101: b"invalid device ordinal"}.get(_val(code), b"unknown error")


# -- ONNX facts ---------------------------------------------------------------------------------------

_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}
_TRT_TO_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
              "BOOL": np.bool_, "UINT8": np.uint8}
_ITEMSIZE = {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT8": 1, "INT32": 4, "INT64": 8, "BOOL": 1, "UINT8": 1, "FP8": 1,
             "INT4": 0.5, "FP4": 0.5, "E8M0": 1}
# fused-layer tensor formats of the DETAILED inspector JSON: 10.x "Format/Datatype" strings as the
# engine explorer's sample engines show them [tools/experimental/trt-engine-explorer/examples/pytorch/
# resnet/A100/*/*.engine.graph.json @ v10.16]; 11.x splits them into "Format" and "Datatype" (NVIDIA
# TensorRT 11.0.0 docs "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"; Polygraphy 0.53.6
# tools/inspect/subtool/model/extractors/_trt.py: "TensorRT 11 split the combined "Format/Datatype"
# field into separate "Datatype" and "Format" keys").
_FORMATS = {"Int8": ("Thirty-two wide channel vectorized row major Int8 format",
                     "Thirty-two wide channel vectorized row major"),
            "Half": ("Channel major FP16 format where channel % 8 == 0", "Channel major format where channel % 8 == 0"),
            "Float": ("Row major linear FP32", "Row major linear"),
            "Int32": ("Row major linear Int32", "Row major linear"),
            "Int64": ("Row major linear Int64", "Row major linear"),
            "Bool": ("Row major linear Bool", "Row major linear")}
_DTYPE_WORD = {"FLOAT": "Float", "HALF": "Half", "INT8": "Int8", "INT32": "Int32", "INT64": "Int64", "BOOL": "Bool",
               "UINT8": "UInt8", "BF16": "BFloat16"}
_LAYER_TYPE = {
    "Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION",
    "LeakyRelu": "ACTIVATION", "Tanh": "ACTIVATION", "Clip": "ACTIVATION", "HardSigmoid": "ACTIVATION",
    "Elu": "ACTIVATION", "Softplus": "ACTIVATION", "MaxPool": "POOLING", "AveragePool": "POOLING",
    "GlobalAveragePool": "REDUCE", "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE", "Max": "ELEMENTWISE", "Min": "ELEMENTWISE", "Equal": "ELEMENTWISE",
    "Greater": "ELEMENTWISE", "GreaterOrEqual": "ELEMENTWISE", "Less": "ELEMENTWISE", "And": "ELEMENTWISE",
    "Or": "ELEMENTWISE", "Concat": "CONCATENATION", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE",
    "Flatten": "SHUFFLE", "Squeeze": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Slice": "SLICE", "Split": "SLICE",
    "ReduceMax": "REDUCE", "ReduceSum": "REDUCE", "ReduceMean": "REDUCE", "ReduceMin": "REDUCE", "TopK": "TOPK",
    "ArgMax": "TOPK", "Gather": "GATHER", "GatherND": "GATHER", "GatherElements": "GATHER", "MatMul":
    "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Constant": "CONSTANT", "Identity": "IDENTITY", "Cast": "CAST",
    "Resize": "RESIZE", "Upsample": "RESIZE", "Shape": "SHAPE", "Where": "SELECT", "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE", "NonMaxSuppression": "NMS", "Softmax": "SOFTMAX", "Range": "FILL",
    "ConstantOfShape": "FILL", "ScatterND": "SCATTER", "Exp": "UNARY", "Log": "UNARY", "Sqrt": "UNARY",
    "Abs": "UNARY", "Neg": "UNARY", "Floor": "UNARY", "Ceil": "UNARY", "Not": "UNARY", "Pad": "PADDING",
    "Expand": "SLICE", "Tile": "SLICE", "BatchNormalization": "SCALE", "PRelu": "PARAMETRIC_RELU",
    "Einsum": "EINSUM", "NonZero": "NON_ZERO", "OneHot": "ONE_HOT", "CumSum": "CUMULATIVE"}
# Layers DLA runs (FP16/INT8 only): "DLA Supported Layers and Restrictions" (TensorRT 10 documentation):
# convolution, deconvolution, fully connected, activation (ReLU, Sigmoid, TanH, Clipped ReLU, Leaky ReLU),
# pooling, scale/batch normalization, elementwise (sum, sub, prod, max, min), concatenation, resize,
# softmax, shuffle, slice, LRN, parametric ReLU; dynamic dimensions need min == opt == max; batch <= 4096.
_DLA_OPS = {"Conv", "ConvTranspose", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Add", "Sub", "Mul", "Max", "Min", "Concat", "Resize", "Upsample", "Softmax",
            "BatchNormalization", "PRelu", "Slice", "Reshape", "Transpose", "Identity", "QuantizeLinear",
            "DequantizeLinear", "Gemm", "MatMul"}
DLA_MAX_BATCH = 4096


def _standard_op(node) -> bool:
    import onnx.defs

    return onnx.defs.has(node.op_type, node.domain or "")


def _dims(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]


def _dim_params(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_param if d.HasField("dim_param") else None for d in t.shape.dim]


def _constants(proto) -> dict:
    """{name: array} of the initializers and the Constant nodes' outputs (TensorRT's build-time constants)."""
    from onnx import helper, numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute:
            a = n.attribute[0]
            if a.name == "value":
                out[n.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_float", "value_int", "value_floats", "value_ints"):
                out[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return out


def _value_infos(proto) -> tuple:
    """({tensor: ONNX element type}, {tensor: dims}) from ONNX's shape inference (unknown ops are skipped)."""
    import onnx

    types_, shapes = {}, {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # noqa: BLE001 - a model shape inference cannot handle still has its declared types
        inferred = proto
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.tensor_type.elem_type:
            types_[vi.name] = vi.type.tensor_type.elem_type
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = _dims(vi)
    for i in g.initializer:
        types_[i.name] = i.data_type
    return types_, shapes


def _elem_types(proto) -> dict:
    return _value_infos(proto)[0]


def _iou(a, b) -> float:
    """IoU of two corner boxes, as the EfficientNMS kernel computes it: corners reordered, 0 for no overlap
    or a non-positive union [efficientNMSInference.cu IOU() @ v10.3.0..v11.1]."""
    ax1, ax2 = min(a[0], a[2]), max(a[0], a[2])
    ay1, ay2 = min(a[1], a[3]), max(a[1], a[3])
    bx1, bx2 = min(b[0], b[2]), max(b[0], b[2])
    by1, by2 = min(b[1], b[3]), max(b[1], b[3])
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    if inter <= 0:
        return 0.0
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return float(inter / union) if union > 0 else 0.0


def _ious(box, boxes) -> np.ndarray:
    """:func:`_iou` of one box against many (the same arithmetic, vectorised)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, np.float32)
    ax1, ax2 = min(box[0], box[2]), max(box[0], box[2])
    ay1, ay2 = min(box[1], box[3]), max(box[1], box[3])
    bx1, bx2 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    by1, by2 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    inter = np.maximum(0, np.minimum(ax2, bx2) - np.maximum(ax1, bx1)) * \
        np.maximum(0, np.minimum(ay2, by2) - np.maximum(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1), 0.0)
    return iou


def efficient_nms(boxes, scores, attrs: dict):
    """EfficientNMS_TRT (standard mode, box_coding 0 corners or 1 center-size) in numpy:
    candidates with ``score >= score_threshold`` (gte_mp) outside the background class, sorted by
    score, at most the 5000 best (numSelectedBoxes), a box dropped when ``IoU >= iou_threshold``
    (class-aware unless class_agnostic) against a kept one, at most max_output_boxes kept; outputs
    zeroed past num_detections (cudaMemsetAsync 0) [efficientNMSInference.cu @ v10.3.0..v11.1;
    efficientNMSPlugin.cpp initialize()]."""
    k = int(attrs["max_output_boxes"])
    thr, iou_t = float(attrs["score_threshold"]), float(attrs["iou_threshold"])
    agnostic = bool(attrs.get("class_agnostic", 0))
    background = int(attrs.get("background_class", -1))
    coding = int(attrs.get("box_coding", 0))
    if int(attrs.get("score_activation", 0)):
        scores = 1.0 / (1.0 + np.exp(-scores.astype(np.float32)))
    bsz = scores.shape[0]
    num = np.zeros((bsz, 1), np.int32)
    out_b = np.zeros((bsz, k, 4), boxes.dtype)
    out_s = np.zeros((bsz, k), scores.dtype)
    out_c = np.zeros((bsz, k), np.int32)
    for b in range(bsz):
        sc = scores[b].astype(np.float32)
        mask = sc >= np.float32(thr)
        if 0 <= background < sc.shape[1]:
            mask[:, background] = False
        rows, cls = np.nonzero(mask)
        order = np.argsort(-sc[rows, cls], kind="stable")[:EFFICIENT_NMS_SELECTED_BOXES]
        bx = boxes[b].astype(np.float32)
        if coding == 1:  # center-size -> corners for the IoU
            bx = np.concatenate([bx[:, :2] - bx[:, 2:] / 2, bx[:, :2] + bx[:, 2:] / 2], axis=1)
        keep = []
        kept_boxes, kept_cls = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        for j in order:
            if len(keep) == k:
                break
            i, c = int(rows[j]), int(cls[j])
            same = np.ones(len(keep), bool) if agnostic else kept_cls == c
            if not np.any(_ious(bx[i], kept_boxes[same]) >= iou_t):
                keep.append((i, c))
                kept_boxes = np.vstack([kept_boxes, bx[i:i + 1]])
                kept_cls = np.append(kept_cls, c)
        num[b, 0] = len(keep)
        for t, (i, c) in enumerate(keep):
            out_b[b, t], out_s[b, t], out_c[b, t] = boxes[b, i], scores[b, i, c], c
    return [num, out_b, out_s, out_c]


def nms_layer(boxes, scores, max_per_class, iou_threshold, score_threshold, center_point_box=0,
              topk_box_limit=NMS_TOPK_BOX_LIMIT):
    """ONNX NonMaxSuppression as TensorRT's INMSLayer runs it [NvInfer.h INMSLayer @ v10.3.0..v11.1]:
    per batch item the (box, class) candidates whose score exceeds the threshold are sorted by score
    regardless of class and only the ``topk_box_limit`` (5000) best are considered; a box is selected
    when its IoU with every selected box of its class is <= the IoU threshold; the output rows are
    ordered by batch, then by decreasing score (ONNX Runtime orders by batch, then class)."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)  # [B,N,4], [B,C,N]
    mx = int(np.asarray(max_per_class).reshape(-1)[0]) if max_per_class is not None else 0
    iou_t = float(np.asarray(iou_threshold).reshape(-1)[0]) if iou_threshold is not None else 0.0
    sc_t = float(np.asarray(score_threshold).reshape(-1)[0]) if score_threshold is not None else -np.inf
    rows = []
    for b in range(scores.shape[0]):
        bx = boxes[b]
        if center_point_box:
            bx = np.concatenate([bx[:, :2] - bx[:, 2:] / 2, bx[:, :2] + bx[:, 2:] / 2], axis=1)
        sc = scores[b].T  # [N, C]
        n_idx, c_idx = np.nonzero(sc > np.float32(sc_t))
        order = np.argsort(-sc[n_idx, c_idx], kind="stable")[:topk_box_limit]
        kept: dict = {}
        for j in order:
            n, c = int(n_idx[j]), int(c_idx[j])
            mine = kept.setdefault(c, [])
            if mx and len(mine) >= mx:
                continue
            if not np.any(_ious(bx[n], bx[mine]) > iou_t):
                mine.append(n)
                rows.append((b, c, n))
    return [np.asarray(rows, np.int64).reshape(-1, 3)]


# -- running the ONNX an engine was built from --------------------------------------------------------

class OnnxProgram:
    """Runs an ONNX graph on ONNX Runtime (CPU), computing on the host the nodes TensorRT implements
    differently from ONNX Runtime (plugins, NonMaxSuppression, TopK with a runtime K), in order.
    The graph is cut at those nodes: each ONNX Runtime segment computes exactly the tensors the
    next host node (or the graph outputs) needs from the tensors already known."""

    def __init__(self, proto, host_ops: dict):
        self.proto = proto
        self.nodes = list(proto.graph.node)
        self.host_ops = host_ops
        self.inits = {i.name for i in proto.graph.initializer}
        self.outputs = [o.name for o in proto.graph.output]
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output}
        self.host_idx = [i for i, n in enumerate(self.nodes) if n.op_type in host_ops and host_ops[n.op_type][0](n)]
        self.types = _elem_types(proto)
        self.consts = _constants(proto)
        self._sessions: dict = {}

    def _node_inputs(self, node) -> list:
        names = [t for t in node.input if t]
        for a in node.attribute:  # outer-scope names used by subgraphs (If/Loop/Scan)
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | \
                    {i.name for i in g.initializer}
                names += [t for n in g.node for t in n.input if t and t not in inner]
        return names

    def _segment(self, key, need: list, known: dict) -> dict:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        if key not in self._sessions:
            sel, inputs, stack, seen = set(), [], list(need), set()
            while stack:
                t = stack.pop()
                if t in seen:
                    continue
                seen.add(t)
                if t in known:
                    inputs.append(t)
                elif t in self.producer:
                    i = self.producer[t]
                    if i not in sel:
                        sel.add(i)
                        stack.extend(self._node_inputs(self.nodes[i]))
            used_inits = [i for i in self.proto.graph.initializer if i.name in seen and i.name not in known]
            g = helper.make_graph(
                [self.nodes[i] for i in sorted(sel)], f"segment{len(self._sessions)}",
                [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(known[t].dtype), None)
                 for t in inputs],
                [helper.make_tensor_value_info(t, self.types.get(t, TensorProto.FLOAT), None) for t in need],
                used_inits)
            m = helper.make_model(g, opset_imports=list(self.proto.opset_import), producer_name="trt_stand_in")
            m.ir_version = self.proto.ir_version
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self._sessions[key] = (sess, inputs)
        sess, inputs = self._sessions[key]
        vals = sess.run(need, {t: known[t] for t in inputs})
        return dict(zip(need, vals))

    def run(self, feeds: dict, extra: tuple = ()) -> dict:
        known = dict(feeds)
        for idx in self.host_idx:
            node = self.nodes[idx]
            need = [t for t in node.input if t and t not in known and t not in self.inits]
            if need:
                known.update(self._segment(("host", idx), need, known))
            args = [known[t] if t in known else self.consts.get(t) if t else None for t in node.input]
            outs = self.host_ops[node.op_type][1](node, args)
            known.update(zip(node.output, outs))
        need = [o for o in list(self.outputs) + list(extra) if o not in known]
        if need:
            known.update(self._segment(("out", tuple(extra)), need, known))
        return {o: known[o] for o in list(self.outputs) + list(extra)}


# -- the module ----------------------------------------------------------------------------------------

class _State:
    """What one stand-in module knows about its world (``tensorrt._stand_in``)."""

    def __init__(self, version: str, cuda: CudaRuntime, dla_cores: int):
        self.version, self.release = version, release_of(version)
        self.cuda, self.dla_cores = cuda, dla_cores
        self.log: list = []          # (severity, message) of every message any logger received
        self.creators: dict = {}     # (name, version, namespace) -> IPluginCreator: the plugin registry
        self.plugins_initialised = False
        self.int8_kernels = True     # False: Q/DQ convolutions are not fused and run in float, silently

    @property
    def ten(self) -> bool:
        return self.release[0] == 10

    def device(self):
        c = self.cuda
        return c.devices[c.current] if c.devices else None


def _bytes_of(buf) -> bytes:
    """A Python buffer (bytes, bytearray, memoryview, numpy array, IHostMemory) as bytes, like
    pybind11's py::buffer; anything else is refused with TypeError."""
    if isinstance(buf, (bytes, bytearray)):
        return bytes(buf)
    try:
        return memoryview(buf).tobytes()
    except TypeError:
        raise TypeError(f"incompatible function arguments: expected a buffer, got {type(buf).__name__}")


def make_module(version: str, gpu: bool = True, dla_cores: int | None = None, cuda: CudaRuntime | None = None):
    """A fresh ``tensorrt`` module of one release (a new process, as far as plugins go)."""
    version = _full_version(version)
    rel = release_of(version)
    jetson = rel == (10, 3)
    if dla_cores is None:
        dla_cores = 2 if jetson and gpu else 0
    if dla_cores and not jetson:
        # DLA is on Jetson/DRIVE only; "TensorRT 10.7 was the last 10.x release that supported DLA" and "DLA was
        # unavailable in TensorRT 11.0 through 11.3" (TensorRT 11.3/11.4 docs, "Working with DLA").
        raise ValueError(f"TensorRT {version} has no DLA: only the 10.3 (JetPack 6) stand-in has DLA cores")
    if cuda is None:
        cuda = CudaRuntime([(JETSON_GPU if jetson else DISCRETE_GPU)] if gpu else [])
    st = _State(version, cuda, dla_cores)
    trt = types.ModuleType("tensorrt", f"Stand-in for TensorRT {version} (tests/trt_stand_in.py)")
    trt.__version__ = version
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None, origin=__file__)
    trt.__file__ = __file__
    trt._stand_in = st
    for name, rows in _ENUMS.items():
        cls = _make_enum(name, rows, rel)
        if cls is not None:
            cls.__module__ = "tensorrt.tensorrt"
            setattr(trt, name, cls)
    _datatypes(trt)
    _logging(trt, st)
    _plugins(trt, st)
    _network(trt, st)
    _parser(trt, st)
    _builder(trt, st)
    _engine(trt, st)
    if st.ten:
        _calibrators(trt, st)
    return trt


def _datatypes(trt) -> None:
    d = trt.DataType
    # aliases [pyFoundationalTypes.cpp m.attr("float32") ... @ each tag]
    for alias, member in (("float32", "FLOAT"), ("float16", "HALF"), ("bfloat16", "BF16"), ("int8", "INT8"),
                          ("int32", "INT32"), ("int64", "INT64"), ("bool", "BOOL"), ("uint8", "UINT8"),
                          ("fp8", "FP8"), ("int4", "INT4"), ("fp4", "FP4"), ("e8m0", "E8M0")):
        if hasattr(d, member):
            setattr(trt, alias, getattr(d, member))
    # nptype, volume and DataType.itemsize [python/packaging/bindings_wheel/tensorrt/__init__.py @ each tag]
    np_of = {d.FLOAT: np.float32, d.HALF: np.float16, d.INT8: np.int8, d.INT32: np.int32, d.INT64: np.int64,
             d.BOOL: np.bool_, d.UINT8: np.uint8}

    def nptype(trt_type):
        if trt_type in np_of:
            return np_of[trt_type]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    def volume(iterable):
        vol = 1
        for elem in iterable:
            vol *= elem
        return vol

    trt.nptype, trt.volume = nptype, volume
    d.itemsize = property(lambda self: _ITEMSIZE.get(self.name))
    trt.Dims = Dims
    trt.IHostMemory = IHostMemory


class _Strict:
    """pybind11 objects have no __dict__ for new attributes: setting an unknown one is an AttributeError."""

    _settable: tuple = ()  # plain read-write attributes (pybind11 def_readwrite / def_property)

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._settable:
            prop = getattr(type(self), name, None)
            if not isinstance(prop, property) or prop.fset is None:
                raise AttributeError(f"'tensorrt.tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


def _logging(trt, st: _State) -> None:
    sev = enum.IntEnum("Severity", _SEVERITY)
    sev.__module__ = "tensorrt.tensorrt"
    sev.__str__ = lambda self: f"Severity.{self.name}"

    # ILogger: a trampoline; Logger: the default logger, which prints "[date] [TRT] [E] msg" to std::cout
    # for severities up to min_severity [pyCore.cpp DefaultLogger @ v10.3.0..v11.1]
    class ILogger(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "ILogger"
        Severity = sev

        def log(self, severity, msg):
            raise RuntimeError('Tried to call pure virtual function "ILogger::log"')

    class Logger(ILogger):
        _pybind_name = "Logger"

        def __init__(self, min_severity=sev.WARNING):
            ILogger.__init__(self)
            self.min_severity = min_severity

        def log(self, severity, msg):
            if int(severity) > int(self.min_severity):
                return
            tag = {0: "F", 1: "E", 2: "W", 3: "I", 4: "V"}[int(severity)]
            stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
            print(f"[{stamp}] [TRT] [{tag}] {msg}", file=sys.stdout)

    for name, value in _SEVERITY:
        setattr(ILogger, name, sev(value))
        setattr(Logger, name, sev(value))
    for cls in (ILogger, Logger):
        cls.__module__ = "tensorrt.tensorrt"
        setattr(trt, cls.__name__, cls)

    def emit(logger, severity: int, msg: str) -> None:
        """A message from "the library": recorded, then given to the user's logger like TensorRT does."""
        st.log.append((int(severity), str(msg)))
        if logger is not None:
            try:
                logger.log(sev(severity), str(msg))
            except Exception as e:  # noqa: BLE001 - ILogger::log is noexcept: the trampoline prints and goes on
                print(f"[ERROR] Exception caught in log(): {e}", file=sys.stderr)

    st.emit = emit


def _plugins(trt, st: _State) -> None:
    class PluginField(_Strict):
        def __init__(self, name="", data=None, type=None):  # noqa: A002 - the binding's argument names
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "data", data)
            object.__setattr__(self, "type", type)
            object.__setattr__(self, "size", 1)

    class IPluginCreator(_Strict):
        def __init__(self, name, version, namespace, fields):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "plugin_version", version)
            object.__setattr__(self, "plugin_namespace", namespace)
            object.__setattr__(self, "field_names", [PluginField(n, None, getattr(trt.PluginFieldType, t))
                                                     for n, t in fields])
            object.__setattr__(self, "_required", [n for n, _ in fields if n != "class_agnostic"])

    class IPluginRegistry(_Strict):
        def get_creator(self, name, version, namespace=""):
            found = st.creators.get((name, str(version), namespace))
            if found is None:
                st.emit(None, 1, f"IPluginRegistry::getCreator: Error Code 4: API Usage Error (Cannot find plugin: "
                                 f"{name}, version: {version}, namespace:{namespace}.)")
            return found

        @property
        def all_creators(self):
            return list(st.creators.values())

        def register_creator(self, creator, plugin_namespace=""):
            st.creators[(creator.name, creator.plugin_version, plugin_namespace)] = creator
            return True

        def deregister_creator(self, creator):
            key = (creator.name, creator.plugin_version, creator.plugin_namespace)
            return st.creators.pop(key, None) is not None

    if st.ten:  # removed in 11.0 [pyPlugin.cpp @ v10.16, v11.0]
        IPluginRegistry.plugin_creator_list = property(lambda self: list(st.creators.values()))
        IPluginRegistry.get_plugin_creator = IPluginRegistry.get_creator
    registry = IPluginRegistry()

    # EfficientNMS_TRT's fields [efficientNMSPlugin.cpp EfficientNMSPluginCreator() @ v10.3.0..v11.1]; all but
    # class_agnostic required (validateRequiredAttributesExist in createPlugin)
    nms_fields = [("score_threshold", "FLOAT32"), ("iou_threshold", "FLOAT32"), ("max_output_boxes", "INT32"),
                  ("background_class", "INT32"), ("score_activation", "INT32"), ("class_agnostic", "INT32"),
                  ("box_coding", "INT32")]

    def init_libnvinfer_plugins(logger, namespace):
        """Registers the bundled plugins; always returns True [plugin/api/inferPlugin.cpp @ each tag].
        EfficientNMS_ONNX_TRT is registered through 10.16 and gone in 11.0; EfficientNMS_TRT is
        deprecated since 10.12 (plugin/README.md @ v10.12.0: "[DEPRECATED]") but still registered."""
        names = ["EfficientNMS_TRT", "EfficientNMS_Explicit_TF_TRT", "EfficientNMS_Implicit_TF_TRT"]
        if st.ten:
            names.append("EfficientNMS_ONNX_TRT")
        for name in names:
            fields = nms_fields if name == "EfficientNMS_TRT" else []
            st.creators[(name, "1", namespace)] = IPluginCreator(name, "1", namespace, fields)
        st.plugins_initialised = True
        return True

    trt.PluginField, trt.IPluginCreator, trt.IPluginRegistry = PluginField, IPluginCreator, IPluginRegistry
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.get_plugin_registry = lambda: registry
    trt.get_builder_plugin_registry = lambda capability=None: registry
    trt.get_nv_onnx_parser_version = lambda: int(st.version.split(".")[0]) * 100 + int(st.version.split(".")[1])
    st.registry = registry
    st.deprecated_plugins = {"EfficientNMS_TRT": (10, 12), "EfficientNMS_ONNX_TRT": (9, 0)}


def _network(trt, st: _State) -> None:
    class ITensor(_Strict):
        def __init__(self, name, dtype, shape, net):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "_dtype", dtype)
            object.__setattr__(self, "_shape", Dims(shape))
            object.__setattr__(self, "_net", net)
            object.__setattr__(self, "location", trt.TensorLocation.DEVICE)

        @property
        def dtype(self):
            return self._dtype

        @dtype.setter
        def dtype(self, value):
            _check_enum(value, trt.DataType, "dtype")
            if self._net._strongly_typed and not self.is_network_input:
                st.emit(None, 1, "ITensor::setType: Error Code 3: API Usage Error (Parameter check failed, condition: "
                                 "!mNetwork->isStronglyTyped() || isNetworkInput(). )")
                return
            object.__setattr__(self, "_dtype", value)

        @property
        def shape(self):
            return self._shape

        @property
        def is_network_input(self):
            return any(t is self for t in self._net._inputs)

        @property
        def is_network_output(self):
            return any(t is self for t in self._net._outputs)

        is_shape_tensor = property(lambda self: False)
        is_execution_tensor = property(lambda self: True)

    if st.ten:  # implicit-quantization ranges, removed in 11.0 [pyGraph.cpp @ v10.16, v11.0]
        ITensor.dynamic_range = property(lambda self: None)

    class ILayer(_Strict):
        _settable = ("name", "metadata")

        def __init__(self, node, net):
            object.__setattr__(self, "_node", node)
            object.__setattr__(self, "_net", net)
            object.__setattr__(self, "name", node.name or f"{node.op_type}_{id(node)}")
            object.__setattr__(self, "metadata", f"[ONNX Layer: {node.name}]")
            object.__setattr__(self, "_precision", None)

        @property
        def type(self):
            if not _standard_op(self._node):
                return trt.LayerType.PLUGIN_V2
            name = _LAYER_TYPE.get(self._node.op_type, "ELEMENTWISE")
            if self._node.op_type in ("Squeeze", "Unsqueeze") and hasattr(trt.LayerType, "SQUEEZE"):
                name = self._node.op_type.upper()  # ISqueezeLayer/IUnsqueezeLayer from 10.8 [NvInfer.h @ v10.8.0]
            return getattr(trt.LayerType, name)

        num_inputs = property(lambda self: len(self._node.input))
        num_outputs = property(lambda self: len(self._node.output))

        def get_input(self, index):
            name = self._node.input[index] if index < len(self._node.input) else ""
            return self._net._tensor(name) if name else None

        def get_output(self, index):
            return self._net._tensor(self._node.output[index]) if index < len(self._node.output) else None

        def get_output_type(self, index):
            return self.get_output(index).dtype

    if st.ten:
        # per-layer precision: weak typing only, deprecated in 10.12 [pyGraph.cpp ILayer @ v10.12.0], removed in 11.0
        def _precision_get(self):
            return self._precision if self._precision is not None else trt.DataType.FLOAT

        def _precision_set(self, value):
            if st.release >= (10, 12):
                warnings.warn("Use Deprecated in TensorRT 10.12. Superseded by strong typing. instead.",
                              DeprecationWarning, stacklevel=2)
            object.__setattr__(self, "_precision", _check_enum(value, trt.DataType, "precision"))

        ILayer.precision = property(_precision_get, _precision_set)
        ILayer.precision_is_set = property(lambda self: self._precision is not None)

    class INetworkDefinition(_Strict):
        _settable = ("name", "error_recorder")

        def __init__(self, flags, builder):
            object.__setattr__(self, "_flags", int(flags))
            object.__setattr__(self, "_builder", builder)
            object.__setattr__(self, "_proto", None)
            object.__setattr__(self, "_path", None)
            object.__setattr__(self, "_inputs", [])
            object.__setattr__(self, "_outputs", [])
            object.__setattr__(self, "_layers", [])
            object.__setattr__(self, "_tensors", {})
            object.__setattr__(self, "_types", {})
            object.__setattr__(self, "_shapes", {})
            object.__setattr__(self, "name", "Unnamed Network 0")
            # 11.0: "The network is always strongly typed ... The kSTRONGLY_TYPED flag is deprecated and ignored"
            # [NvInfer.h IBuilder::createNetworkV2 @ v11.0]
            object.__setattr__(self, "_strongly_typed", not st.ten or bool(
                int(flags) & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))))

        flags = property(lambda self: self._flags)
        builder = property(lambda self: self._builder)
        has_implicit_batch_dimension = property(lambda self: False)
        num_layers = property(lambda self: len(self._layers))
        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_flag(self, flag):
            return bool(self._flags & (1 << int(_check_enum(flag, trt.NetworkDefinitionCreationFlag, "get_flag"))))

        def get_input(self, index):
            return self._inputs[index] if 0 <= index < len(self._inputs) else None

        def get_output(self, index):
            return self._outputs[index] if 0 <= index < len(self._outputs) else None

        def get_layer(self, index):
            return self._layers[index] if 0 <= index < len(self._layers) else None

        def __len__(self):
            return len(self._layers)

        def __getitem__(self, index):
            if not -len(self._layers) <= index < len(self._layers):
                raise IndexError("list index out of range")
            return self._layers[index]

        def _tensor(self, name):
            if name not in self._tensors:
                dt = getattr(trt.DataType, _ONNX_TO_TRT.get(self._types.get(name, 1), "FLOAT"))
                self._tensors[name] = ITensor(name, dt, self._shapes.get(name, []), self)
            return self._tensors[name]

        def mark_output(self, tensor):
            if not any(t is tensor for t in self._outputs):
                self._outputs.append(tensor)

        def unmark_output(self, tensor):
            self._outputs[:] = [t for t in self._outputs if t is not tensor]

        def __getattr__(self, name):
            if name.startswith("add_"):
                def unsupported(*args, **kwargs):
                    raise NotImplementedError(f"INetworkDefinition.{name}: the stand-in builds networks parsed from "
                                              "ONNX only")
                return unsupported
            raise AttributeError(f"'tensorrt.tensorrt.INetworkDefinition' object has no attribute '{name}'")

    trt.ITensor, trt.ILayer, trt.INetworkDefinition = ITensor, ILayer, INetworkDefinition


def _plugin_attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_plugin(trt, st: _State, node):
    """(ErrorCode, desc, func) where the parser cannot make the plugin, else None.  The parser finds
    plugins only in the registry (registered by init_libnvinfer_plugins) by op type, plugin_version
    (default "1") and plugin_namespace (default "") [onnx-tensorrt 10.1-GA onnxOpImporters.cpp
    FallbackPluginImporter]; the creator validates its fields [efficientNMSPlugin.cpp createPlugin()]."""
    attrs = _plugin_attrs(node)
    version = attrs.get("plugin_version", b"1")
    namespace = attrs.get("plugin_namespace", b"")
    version = version.decode() if isinstance(version, bytes) else str(version)
    namespace = namespace.decode() if isinstance(namespace, bytes) else str(namespace)
    creator = st.creators.get((node.op_type, version, namespace))
    if creator is None:
        st.registry.get_creator(node.op_type, version, namespace)  # logs the registry's error
        return trt.ErrorCode.INVALID_NODE, PLUGIN_NOT_FOUND, "checkFallbackPluginImporter"
    missing = [f for f in creator._required if f not in attrs]
    bad = []
    if node.op_type == "EfficientNMS_TRT" and not missing:
        checks = [("score_threshold", lambda v: v >= 0.0), ("iou_threshold", lambda v: v > 0.0),
                  ("max_output_boxes", lambda v: v > 0), ("score_activation", lambda v: v in (0, 1)),
                  ("class_agnostic", lambda v: v in (0, 1)), ("box_coding", lambda v: v in (0, 1))]
        bad = [f"{k} = {attrs[k]}" for k, ok in checks if k in attrs and not ok(attrs[k])]
    if missing or bad:
        what = ("PluginFieldCollection missing required fields: {" + ", ".join(missing) + "}") if missing else \
            ("Validation failed: " + ", ".join(bad))
        st.emit(None, 1, what)
        return trt.ErrorCode.UNSUPPORTED_NODE, f"Could not create plugin {node.op_type}: {what}", \
            "importFallbackPluginImporter"
    return None


def _check_node(trt, st: _State, node, consts: dict, types_: dict, strongly: bool):
    """(ErrorCode, desc, func) where TensorRT's ONNX parser refuses ``node``, else None."""
    code = trt.ErrorCode
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 1:
        # [onnx-tensorrt 10.1-GA onnxOpImporters.cpp QuantDequantLinearHelper]
        s = consts.get(node.input[1])
        if s is not None and (s.size == 0 or not np.all(s.astype(np.float32) > 0)):  # NaN, FP16-underflowed 0 too
            return code.INVALID_NODE, SCALE_NOT_POSITIVE, "QuantDequantLinearHelper"
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is not None and np.any(zp != 0):
            return code.INVALID_NODE, ("TensorRT only supports symmetric quantization. The zero point for the "
                                       "QuantizeLinear/DequantizeLinear operator must be all zeros."), \
                "QuantDequantLinearHelper"
        # strong typing: "For strongly typed networks, if the scale data type is DataType::kHALF or
        # DataType::kBF16, it must match the input data type." [NvInfer.h IQuantizeLayer @ v10.3.0..v11.1]
        scale_t, in_t = types_.get(node.input[1]), types_.get(node.input[0])
        if strongly and op == "QuantizeLinear" and scale_t in (10, 16) and in_t is not None and in_t != scale_t:
            return code.INVALID_NODE, (f"In a strongly typed network the scale type ({_ONNX_TO_TRT.get(scale_t)}) of "
                                       f"a quantize layer must match its input type ({_ONNX_TO_TRT.get(in_t)})"), \
                "QuantDequantLinearHelper"
        # "For strongly typed networks, if the scale type is DataType::kHALF or DataType::kBF16 the output type
        # must match." [NvInfer.h INetworkDefinition::addDequantize @ v10.16, v11.1]
        out_t = types_.get(node.output[0])
        if strongly and op == "DequantizeLinear" and scale_t in (10, 16) and out_t is not None and out_t != scale_t:
            return code.INVALID_NODE, (f"In a strongly typed network the output type ({_ONNX_TO_TRT.get(out_t)}) of "
                                       f"a dequantize layer must match its scale type ({_ONNX_TO_TRT.get(scale_t)})"), \
                "QuantDequantLinearHelper"
    elif op in ("Resize", "Upsample"):
        k = 2 if op == "Resize" else 1
        s = consts.get(node.input[k]) if len(node.input) > k and node.input[k] else None
        if s is not None and s.size and s.dtype not in (np.float32, np.int32, np.int64, np.bool_):
            # scales are read with weightsToVector<float>, which accepts INT32, INT64, BOOL and FLOAT weights only
            # [onnx-tensorrt 10.1-GA importerUtils.hpp weightsToVector; onnxOpImporters.cpp importResize]
            return code.INVALID_NODE, f"Assertion failed: weightsToVector: scales of type {s.dtype} are not " \
                                      "INT32, INT64, BOOL or FLOAT weights", "weightsToVector"
    elif not _standard_op(node):
        return _check_plugin(trt, st, node)
    return None


def _parser(trt, st: _State) -> None:
    class ParserError:
        def __init__(self, code, desc, node=-1, name="", op="", func="", file="ModelImporter.cpp", line=0):
            self._v = (code, desc, node, name, op, func, file, line)

        def code(self):
            return self._v[0]

        def desc(self):
            return self._v[1]

        def node(self):
            return self._v[2]

        def node_name(self):
            return self._v[3]

        def node_operator(self):
            return self._v[4]

        def func(self):
            return self._v[5]

        def file(self):
            return self._v[6]

        def line(self):
            return self._v[7]

        def local_function_stack(self):
            return []

        def local_function_stack_size(self):
            return 0

        def __str__(self):  # pyonnx2trt::parserErrorStr [python/src/parsers/pyOnnx.cpp @ v10.16, v11.1]
            info = f"({self.func()}): {self.code().name}: {self.desc()}"
            if self.code() in (trt.ErrorCode.MODEL_DESERIALIZE_FAILED, trt.ErrorCode.REFIT_FAILED):
                return info
            return f"In node {self.node()} with name: {self.node_name()} and operator: {self.node_operator()} {info}"

        __repr__ = __str__

    # the parser's ErrorCode prints as its bare name [pyOnnx.cpp errorCodeStr]
    trt.ErrorCode.__str__ = lambda self: self.name
    trt.ErrorCode.__repr__ = lambda self: self.name

    class OnnxParser(_Strict):
        def __init__(self, network, logger):
            if not isinstance(network, trt.INetworkDefinition):
                raise TypeError("__init__(): incompatible constructor arguments (network: tensorrt.INetworkDefinition)")
            object.__setattr__(self, "_network", network)
            object.__setattr__(self, "_logger", logger)
            object.__setattr__(self, "_errors", [])
            object.__setattr__(self, "_flags", 1 << int(trt.OnnxParserFlag.NATIVE_INSTANCENORM))

        num_errors = property(lambda self: len(self._errors))

        def _fl(self, value):
            object.__setattr__(self, "_flags", int(value))

        flags = property(lambda self: self._flags, _fl)

        def set_flag(self, flag):
            self._fl(self._flags | (1 << int(_check_enum(flag, trt.OnnxParserFlag, "set_flag"))))

        def clear_flag(self, flag):
            self._fl(self._flags & ~(1 << int(_check_enum(flag, trt.OnnxParserFlag, "clear_flag"))))

        def get_flag(self, flag):
            return bool(self._flags & (1 << int(_check_enum(flag, trt.OnnxParserFlag, "get_flag"))))

        def get_error(self, index):
            return self._errors[index] if 0 <= index < len(self._errors) else None

        def clear_errors(self):
            self._errors.clear()

        def supports_operator(self, op_name):
            import onnx.defs

            return onnx.defs.has(op_name) or any(k[0] == op_name for k in st.creators)

        def get_used_vc_plugin_libraries(self):
            return []

        def _fail(self, err):
            self._errors.append(err)
            st.emit(self._logger, 1, str(err))
            return False

        def parse(self, model, path=None):
            import onnx

            try:
                proto = onnx.load_from_string(_bytes_of(model))
            except Exception as e:  # noqa: BLE001 - the parser reports, it does not raise
                return self._fail(ParserError(trt.ErrorCode.MODEL_DESERIALIZE_FAILED,
                                              f"Failed to parse ONNX model. {type(e).__name__}: {e}", func="parse"))
            return self._load(proto, path)

        def parse_from_file(self, model):
            import onnx

            try:
                proto = onnx.load(str(model))
            except Exception as e:  # noqa: BLE001
                return self._fail(ParserError(trt.ErrorCode.MODEL_DESERIALIZE_FAILED,
                                              f"Failed to parse ONNX model from file: {model}. {type(e).__name__}: "
                                              f"{e}", func="parseFromFile"))
            return self._load(proto, str(model))

        def _load(self, proto, path):
            net = self._network
            consts, (types_, shapes) = _constants(proto), _value_infos(proto)
            for i, n in enumerate(proto.graph.node):
                bad = _check_node(trt, st, n, consts, types_, net._strongly_typed)
                if bad is not None:
                    return self._fail(ParserError(bad[0], bad[1], i, n.name, n.op_type, bad[2]))
            inits = {i.name for i in proto.graph.initializer}
            inputs = [vi for vi in proto.graph.input if vi.name not in inits]
            for vi in inputs:
                if vi.type.tensor_type.elem_type not in _ONNX_TO_TRT:
                    return self._fail(ParserError(trt.ErrorCode.UNSUPPORTED_GRAPH, f"Input {vi.name} has an "
                                                  "unsupported data type", func="importInput"))
            net._types.update(types_)
            net._types.update(_plugin_output_types(proto, types_))
            for vi in list(proto.graph.input) + list(proto.graph.output):
                net._shapes[vi.name] = _dims(vi)
            for name, dims in shapes.items():
                net._shapes.setdefault(name, dims)
            object.__setattr__(net, "_proto", proto)
            object.__setattr__(net, "_path", path)
            net._inputs.extend(net._tensor(vi.name) for vi in inputs)
            net._outputs.extend(net._tensor(vo.name) for vo in proto.graph.output)
            net._layers.extend(trt.ILayer(n, net) for n in proto.graph.node)
            return True

    if st.ten:
        OnnxParser.supports_model = lambda self, model, path=None: (self.parse(model, path), [])
    if st.release >= (10, 16):
        OnnxParser.set_builder_config = lambda self, config: True
    OnnxParser.supports_model_v2 = lambda self, model, path=None: self.parse(model, path)
    trt.OnnxParser, trt.ParserError = OnnxParser, ParserError


def _plugin_output_types(proto, types_: dict) -> dict:
    """EfficientNMS_TRT's outputs: num_detections and classes INT32, boxes and scores of the inputs'
    type [efficientNMSPlugin.cpp getOutputDataType @ v10.3.0..v11.1]."""
    out = {}
    for n in proto.graph.node:
        if n.op_type == "EfficientNMS_TRT" and len(n.output) == 4:
            out[n.output[0]] = out[n.output[3]] = 6
            out[n.output[1]] = types_.get(n.input[0], 1)
            out[n.output[2]] = types_.get(n.input[1], 1)
    return out


_CACHE_MAGIC = b"TRT-STAND-IN-TIMING-CACHE\n"
_PLAN_MAGIC = b"TRT-STAND-IN-PLAN\n"


def _shape_arg(values, what: str) -> list:
    try:
        dims = [int(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{what}(): incompatible function arguments: expected a tensorrt.Dims, got {values!r}")
    if len(dims) > Dims.MAX_DIMS:
        raise RuntimeError("The number of input dims exceeds the maximum allowed number of dimensions")
    return dims


def _builder(trt, st: _State) -> None:
    class IOptimizationProfile(_Strict):
        _settable = ("extra_memory_target",)

        def __init__(self):
            object.__setattr__(self, "_shapes", {})
            object.__setattr__(self, "_values", {})
            object.__setattr__(self, "extra_memory_target", 1.0)

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the binding's argument names
            """setDimensions for kMIN, kOPT and kMAX in turn; a refusal raises RuntimeError "Shape
            provided for <min|opt|max> is inconsistent with other shapes." [pyCore.cpp
            opt_profile_set_shape @ v10.3.0..v11.1].  setDimensions validates partially (a negative
            dimension, a rank differing from one already set for the input); the MIN <= OPT <= MAX order is
            checked by isValid(), i.e. ``bool(profile)`` and add_optimization_profile [NvInferRuntime.h
            IOptimizationProfile::setDimensions @ v10.16; pyCoreDoc.h IOptimizationProfileDoc @ v11.1]."""
            cur = self._shapes.setdefault(input, [None, None, None])
            for i, (sel, dims) in enumerate((("min", min), ("opt", opt), ("max", max))):
                d = _shape_arg(dims, "set_shape")
                other = [x for j, x in enumerate(cur) if x is not None and j != i]
                if any(v < 0 for v in d):
                    st.emit(None, 1, "IOptimizationProfile::setDimensions: Error Code 3: API Usage Error (Parameter "
                                     "check failed, condition: std::all_of(dims.d, dims.d + dims.nbDims, [](int64_t x) "
                                     "noexcept { return x >= 0; }). )")
                    raise RuntimeError(f"Shape provided for {sel} is inconsistent with other shapes.")
                if any(len(x) != len(d) for x in other):
                    st.emit(None, 1, f"IOptimizationProfile::setDimensions: Error Code 3: API Usage Error (Parameter "
                                     f"check failed, condition: the rank of {sel} dims {len(d)} does not match the "
                                     "rank already set for this input. )")
                    raise RuntimeError(f"Shape provided for {sel} is inconsistent with other shapes.")
                cur[i] = d

        def get_shape(self, input):  # noqa: A002
            s = self._shapes.get(input)
            return [Dims(x) for x in s] if s and None not in s else []

        def set_shape_input(self, input, min, opt, max):  # noqa: A002
            self._values[input] = [list(min), list(opt), list(max)]

        def get_shape_input(self, input):  # noqa: A002
            return self._values.get(input, [])

        def _problem(self):
            for name, s in self._shapes.items():
                if None in s:
                    return f"{name}: not all of MIN, OPT and MAX are set"
                lo, opt, hi = s
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    return "Specified optimization profiles must satisfy MIN<=OPT<=MAX."
            return None

        def __bool__(self):
            """isValid() [pyCore.cpp .def("__bool__", &IOptimizationProfile::isValid) @ v10.3.0..v11.1]."""
            problem = self._problem()
            if problem:
                st.emit(None, 1, f"IOptimizationProfile::isValid: Error Code 4: API Usage Error ({problem})")
            return problem is None

        __nonzero__ = __bool__

    class ITimingCache(_Strict):
        """A timing cache records the TensorRT version and the device it was made on; combine() skips a
        cache of another version and needs ignore_mismatch for another device [NvInfer.h ITimingCache @
        v10.16]."""

        def __init__(self, header: dict, keys: list):
            object.__setattr__(self, "_header", header)
            object.__setattr__(self, "_keys", list(keys))

        def serialize(self):
            return IHostMemory(_CACHE_MAGIC + json.dumps({**self._header, "keys": self._keys}, sort_keys=True)
                               .encode())

        def combine(self, input_cache, ignore_mismatch):
            if input_cache._header.get("trt") != self._header.get("trt"):
                return False
            if input_cache._header.get("device") != self._header.get("device") and not ignore_mismatch:
                return False
            self._keys = sorted(set(self._keys) | set(input_cache._keys))
            return True

        def reset(self):
            self._keys = []
            return True

    if st.release >= (10, 8):
        ITimingCache.queryKeys = lambda self, context=None: list(self._keys)

    class IBuilderConfig(_Strict):
        _settable = ("avg_timing_iterations", "max_aux_streams", "engine_capability", "hardware_compatibility_level",
                     "runtime_platform", "progress_monitor", "profile_stream", "plugins_to_serialize",
                     "max_num_tactics", "l2_limit_for_tiling", "remote_auto_tuning_config")

        def __init__(self):
            for k, v in dict(_flags=0, _pools={}, _profiles=[], _cache=None, _calibrator=None, _calib_profile=None,
                             _device_types={}, _dla_core=-1, _default_device=trt.DeviceType.GPU,
                             _opt_level=3, _verbosity=trt.ProfilingVerbosity.LAYER_NAMES_ONLY).items():
                object.__setattr__(self, k, v)
            object.__setattr__(self, "_flags", 1 << int(trt.BuilderFlag.TF32))  # "Enabled by default." [NvInfer.h]
            object.__setattr__(self, "avg_timing_iterations", 1)
            object.__setattr__(self, "max_aux_streams", -1)
            object.__setattr__(self, "engine_capability", trt.EngineCapability.STANDARD)
            object.__setattr__(self, "hardware_compatibility_level", trt.HardwareCompatibilityLevel.NONE)
            object.__setattr__(self, "runtime_platform", trt.RuntimePlatform.SAME_AS_BUILD)
            object.__setattr__(self, "progress_monitor", None)
            object.__setattr__(self, "profile_stream", 0)
            object.__setattr__(self, "plugins_to_serialize", [])

        def _set_flags(self, value):
            object.__setattr__(self, "_flags", int(value))

        flags = property(lambda self: self._flags, _set_flags)

        def set_flag(self, flag):
            self._set_flags(self._flags | (1 << int(_check_enum(flag, trt.BuilderFlag, "set_flag"))))

        def clear_flag(self, flag):
            self._set_flags(self._flags & ~(1 << int(_check_enum(flag, trt.BuilderFlag, "clear_flag"))))

        def get_flag(self, flag):
            return bool(self._flags & (1 << int(_check_enum(flag, trt.BuilderFlag, "get_flag"))))

        def _flag_names(self):
            return sorted({m.name for m in trt.BuilderFlag if self._flags & (1 << int(m))})

        def set_memory_pool_limit(self, pool, pool_size):
            """DLA pools must be at least 4 KiB and a power of 2 [NvInfer.h enum MemoryPoolType @ v10.3.0]."""
            pool = _check_enum(pool, trt.MemoryPoolType, "set_memory_pool_limit")
            size = int(pool_size)
            if size < 0 or (pool.name.startswith("DLA") and (size < 4096 or size & (size - 1))):
                st.emit(None, 1, f"IBuilderConfig::setMemoryPoolLimit: Error Code 3: API Usage Error (Parameter check "
                                 f"failed, condition: invalid size {size} for pool {pool.name}. )")
                return
            self._pools[pool.name] = size

        def get_memory_pool_limit(self, pool):
            """Defaults [NvInfer.h MemoryPoolType @ v10.3.0]: WORKSPACE all device memory, DLA_MANAGED_SRAM 1 MiB,
            DLA_LOCAL_DRAM 1 GiB, DLA_GLOBAL_DRAM 512 MiB, TACTIC_DRAM 75% of device memory, TACTIC_SHARED_MEMORY
            48 KiB."""
            pool = _check_enum(pool, trt.MemoryPoolType, "get_memory_pool_limit")
            total = ctypes.c_size_t()
            st.cuda.cudaMemGetInfo(ctypes.byref(ctypes.c_size_t()), ctypes.byref(total))
            default = {"WORKSPACE": total.value, "DLA_MANAGED_SRAM": 1 << 20, "DLA_LOCAL_DRAM": 1 << 30,
                       "DLA_GLOBAL_DRAM": 512 << 20, "TACTIC_DRAM": total.value * 3 // 4,
                       "TACTIC_SHARED_MEMORY": 48 << 10}
            return self._pools.get(pool.name, default[pool.name])

        def _set_level(self, level):
            """0..5; "Must be non-negative"; greater than 5 behaves as 5 [NvInfer.h
            setBuilderOptimizationLevel @ v10.16]."""
            if int(level) < 0:
                st.emit(None, 1, "IBuilderConfig::setBuilderOptimizationLevel: Error Code 3: API Usage Error "
                                 "(Parameter check failed, condition: level >= 0. )")
                return
            object.__setattr__(self, "_opt_level", int(level))

        builder_optimization_level = property(lambda self: self._opt_level, _set_level)

        def _set_verbosity(self, v):
            object.__setattr__(self, "_verbosity", _check_enum(v, trt.ProfilingVerbosity, "profiling_verbosity"))

        profiling_verbosity = property(lambda self: self._verbosity, _set_verbosity)

        def add_optimization_profile(self, profile):
            if not isinstance(profile, IOptimizationProfile):
                raise TypeError("add_optimization_profile(): incompatible function arguments")
            if not profile:
                st.emit(None, 1, "IBuilderConfig::addOptimizationProfile: Error Code 3: API Usage Error (Parameter "
                                 "check failed, condition: profile->isValid(). )")
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        num_optimization_profiles = property(lambda self: len(self._profiles))

        def create_timing_cache(self, serialized_timing_cache):
            data = _bytes_of(serialized_timing_cache)
            dev = st.device()
            here = {"trt": st.version, "device": [dev[0], list(dev[1])] if dev else None}
            if not data:
                return ITimingCache(here, [])
            try:
                if not data.startswith(_CACHE_MAGIC):
                    raise ValueError
                header = json.loads(data[len(_CACHE_MAGIC):])
                keys = header.pop("keys")
            except (ValueError, KeyError):
                header = None
            if header is None or header.get("trt") != st.version:
                st.emit(None, 1, "ITimingCache::deserialize: Error Code 1: Serialization (Serialization assertion "
                                 "magicTagRead == kMAGIC_TAG failed. Magic tag does not match)")
                return None
            return ITimingCache(header, keys)

        def set_timing_cache(self, cache, ignore_mismatch):
            """False, with an error, for a cache made on another device unless ignore_mismatch [NvInfer.h
            IBuilderConfig::setTimingCache @ v10.16]."""
            if not isinstance(cache, ITimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments")
            dev = st.device()
            if cache._header.get("device") != ([dev[0], list(dev[1])] if dev else None) and not ignore_mismatch:
                st.emit(None, 1, "IBuilderConfig::setTimingCache: Error Code 3: API Usage Error (Parameter check "
                                 "failed, condition: the CUDA device property in the timing cache differs from the "
                                 "current device. )")
                return False
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

        # DLA [pyCore.cpp IBuilderConfig @ v10.3.0..v11.1; NvInfer.h setDLACore: "if getNbDLACores() returns 0,
        # then this function does nothing"]
        def _set_dla_core(self, core):
            if st.dla_cores and 0 <= int(core) < st.dla_cores:
                object.__setattr__(self, "_dla_core", int(core))

        DLA_core = property(lambda self: self._dla_core, _set_dla_core)
        default_device_type = property(
            lambda self: self._default_device,
            lambda self, v: object.__setattr__(self, "_default_device",
                                               _check_enum(v, trt.DeviceType, "default_device_type")))

        def set_device_type(self, layer, device_type):
            self._device_types[layer.name] = _check_enum(device_type, trt.DeviceType, "set_device_type")

        def get_device_type(self, layer):
            return self._device_types.get(layer.name, self._default_device)

        def is_device_type_set(self, layer):
            return layer.name in self._device_types

        def reset_device_type(self, layer):
            self._device_types.pop(layer.name, None)

        def can_run_on_DLA(self, layer):
            return bool(st.dla_cores) and layer._node.op_type in _DLA_OPS

        def set_tactic_sources(self, tactic_sources):
            return True

        def get_tactic_sources(self):
            return 0

        def set_preview_feature(self, feature, enable):
            _check_enum(feature, trt.PreviewFeature, "set_preview_feature")

        def get_preview_feature(self, feature):
            return False

        def reset(self):
            self.__init__()

    if st.ten:
        # implicit quantization, deprecated in 10.1 and removed in 11.0 [pyCore.cpp IBuilderConfig @ v10.16, v11.0]
        def _get_cal(self):
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            return self._calibrator

        def _set_cal(self, value):
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            if value is not None and not isinstance(value, trt.IInt8Calibrator):
                raise TypeError("(): incompatible function arguments: int8_calibrator must be a "
                                "tensorrt.IInt8Calibrator")
            object.__setattr__(self, "_calibrator", value)

        def set_calibration_profile(self, profile):
            """"MIN and MAX values will be overwritten by kOPT"; False unless the profile is valid [NvInfer.h
            setCalibrationProfile @ v10.16]."""
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            if profile is not None and not profile:
                return False
            object.__setattr__(self, "_calib_profile", profile)
            return True

        def get_calibration_profile(self):
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            return self._calib_profile

        IBuilderConfig.int8_calibrator = property(_get_cal, _set_cal)
        IBuilderConfig.set_calibration_profile = set_calibration_profile
        IBuilderConfig.get_calibration_profile = get_calibration_profile
        IBuilderConfig.quantization_flags = property(lambda self: 0, lambda self, v: None)
        IBuilderConfig.set_quantization_flag = lambda self, flag: None
        IBuilderConfig.clear_quantization_flag = lambda self, flag: None
        IBuilderConfig.get_quantization_flag = lambda self, flag: False
    if st.release >= (10, 8):
        IBuilderConfig.tiling_optimization_level = property(lambda self: trt.TilingOptimizationLevel.NONE,
                                                            lambda self, v: None)

    class Builder(_Strict):
        _settable = ("max_threads",)

        def __init__(self, logger):
            n = ctypes.c_int()
            if st.cuda.cudaGetDeviceCount(ctypes.byref(n)) != CUDA_SUCCESS or n.value == 0:
                # createInferBuilder returns nullptr without a GPU; the factory init turns that into a TypeError
                st.emit(logger, 2, f"CUDA initialization failure with error: {CUDA_ERROR_NO_DEVICE}. Please check your "
                                   "CUDA installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index"
                                   ".html")
                raise TypeError("pybind11::init(): factory function returned nullptr")
            object.__setattr__(self, "_logger", logger)
            object.__setattr__(self, "max_threads", 1)

        def create_network(self, flags=0):
            return trt.INetworkDefinition(int(flags), self)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            header = _build(trt, st, self._logger, network, config)
            if header is None:
                return None
            return IHostMemory(_pack_plan(header, network._proto.SerializeToString()))

        num_DLA_cores = property(lambda self: st.dla_cores)
        # "The maximum supported batch size is 4096." ("DLA Supported Layers and Restrictions")
        max_DLA_batch_size = property(lambda self: DLA_MAX_BATCH if st.dla_cores else 1)
        gpu_allocator = property(lambda self: None, lambda self, v: None)
        error_recorder = property(lambda self: None, lambda self, v: None)

    if st.ten:  # removed in 11.0 [pyCore.cpp Builder @ v10.16, v11.0]
        Builder.platform_has_tf32 = property(lambda self: st.device()[1] >= (8, 0))
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)
    if (10, 8) <= st.release <= (10, 12):
        Builder.build_engine_with_config = lambda self, network, config: trt.Runtime(self._logger).\
            deserialize_cuda_engine(self.build_serialized_network(network, config) or b"")

    trt.Builder, trt.IBuilderConfig, trt.ITimingCache = Builder, IBuilderConfig, ITimingCache
    trt.IOptimizationProfile = IOptimizationProfile


def _pack_plan(header: dict, onnx_bytes: bytes) -> bytes:
    head = json.dumps(header).encode()
    return _PLAN_MAGIC + struct.pack("<QQ", len(head), len(onnx_bytes)) + head + onnx_bytes


def _unpack_plan(data: bytes):
    if not data.startswith(_PLAN_MAGIC) or len(data) < len(_PLAN_MAGIC) + 16:
        return None
    n_head, n_onnx = struct.unpack("<QQ", data[len(_PLAN_MAGIC):len(_PLAN_MAGIC) + 16])
    start = len(_PLAN_MAGIC) + 16
    if len(data) != start + n_head + n_onnx:
        return None
    return json.loads(data[start:start + n_head]), data[start + n_head:]


# -- building -------------------------------------------------------------------------------------------

_PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4")


def _build(trt, st: _State, logger, network, config):
    """The facts of the engine TensorRT would build (a JSON-able dict), or None with the error logged."""
    def fail(msg):
        st.emit(logger, 1, msg)
        return None

    proto = network._proto
    if proto is None or not network._outputs:
        return fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network must have at least one "
                    "output)")
    flags = config._flag_names()
    strongly = network._strongly_typed
    used = [f for f in _PRECISION_FLAGS if f in flags]
    if strongly and used:
        # "IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (Parameter check failed, condition:
        # !config.getFlag(BuilderFlag::kFP16). )" for a strongly typed network (NVIDIA/TensorRT#4253, TRT 10.6)
        return fail(f"IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (Parameter check failed, "
                    f"condition: !config.getFlag(BuilderFlag::k{used[0]}). )")
    profiles = _profiles(st, network, config, fail)
    if profiles is None:
        return None
    consts = _constants(proto)
    for n in proto.graph.node:
        k = consts.get(n.input[1]) if n.op_type == "TopK" and len(n.input) > 1 else None
        if k is not None and int(np.asarray(k).reshape(-1)[0]) > MAX_TOPK_K:
            # [NvInfer.h ITopKLayer::setK @ v10.3.0..v11.1] "Currently only values up to 3840 are supported."
            return fail(f"ITopKLayer {n.name}: Error Code 3: API Usage Error (Parameter check failed, condition: "
                        f"k <= {MAX_TOPK_K}. K = {int(np.asarray(k).reshape(-1)[0])} is larger than the maximum "
                        f"supported value {MAX_TOPK_K}. )")
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)
    if qdq and not strongly and "INT8" not in flags:
        # weakly typed explicit quantization needs the INT8 flag ("To enable any quantization operations, the INT8
        # flag must be set in the builder config": TensorRT developer guide, INT8 chapter, 8.x-10.x)
        return fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network has Quantize/Dequantize "
                    "layers but BuilderFlag::kINT8 is not set. )")
    scales, calibration = {}, None
    calib = config._calibrator if st.ten else None
    if calib is not None and "INT8" in flags and not qdq:
        calibration = _calibrate(trt, st, logger, calib, config, network, profiles)
        if calibration is None:
            return None
        scales = calibration.pop("scales")
    elif calib is not None and qdq:
        st.emit(logger, 2, "Calibrator won't be used in explicit quantization mode. Use quantization aware training to "
                           "generate network with Quantize/Dequantize nodes.")
    elif "INT8" in flags and not qdq and not strongly:
        st.emit(logger, 2, "Missing scale and zero-point for tensor " + network._inputs[0].name + ", expect fall back "
                           "to non-int8 implementation for any layer consuming or producing given tensor")
    dla = _place_on_dla(trt, st, network, config, flags, profiles, fail)
    if dla is False:
        return None
    half = "FP16" in flags
    layers = _layers(proto, network, qdq and st.int8_kernels, scales, half, st)
    cache_hit = _use_timing_cache(st, config, flags, layers, fail)
    if cache_hit is False:
        return None
    io = [{"name": t.name, "mode": "INPUT", "dtype": t.dtype.name, "shape": list(t.shape)} for t in network._inputs]
    io += [{"name": t.name, "mode": "OUTPUT", "dtype": t.dtype.name, "shape": list(t.shape)} for t in network._outputs]
    dev = st.device()
    return {
        "trt": st.version, "device": [dev[0], list(dev[1])], "strongly_typed": strongly, "flags": flags,
        "weak_typing_deprecated": (not strongly) and st.release >= (10, 12), "io": io, "profiles": profiles,
        "layers": layers, "verbosity": int(config._verbosity), "pools": dict(config._pools),
        "opt_level": min(5, config._opt_level), "calibration": calibration, "scales": scales,
        "plugins": sorted({n.op_type for n in proto.graph.node if not _standard_op(n)}), "dla": dla,
        "timing_cache": config._cache is not None, "qdq": qdq, "half": half,
        "hardware_compatibility_level": int(config.hardware_compatibility_level),
        "onnx_outputs": [o.name for o in proto.graph.output], "path": network._path and str(network._path)}


def _profiles(st, network, config, fail):
    """Every dynamic input needs a profile; each profile must match the network's rank and static
    dimensions [NvInferRuntime.h IOptimizationProfile::setDimensions conditions (1)-(3) @ v10.16].
    Returns [{input: [min, opt, max]}] (one implicit profile for a static network) or None."""
    inputs = network._inputs
    if any(-1 in t.shape for t in inputs) and not config._profiles:
        return fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network has dynamic or shape "
                    "inputs, but no optimization profile has been defined.)")
    out = []
    for i, p in enumerate(config._profiles or [None]):
        rec = {}
        for t in inputs:
            s = p._shapes.get(t.name) if p is not None else None
            if s is None:
                if -1 in t.shape:
                    return fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Optimization "
                                f"profile {i} does not define the dimensions of dynamic input '{t.name}'.)")
                s = [list(t.shape)] * 3
            bad = len(s[0]) != len(t.shape) or any(
                d != -1 and any(x[k] != d for x in s) for k, d in enumerate(t.shape))
            if bad:
                return fail(f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Optimization profile "
                            f"{i} dimensions {s} do not match the network input '{t.name}' {list(t.shape)}.)")
            rec[t.name] = [list(x) for x in s]
        out.append(rec)
    return out


def _place_on_dla(trt, st, network, config, flags, profiles, fail):
    """Which layers run on DLA: DLA runs FP16 and INT8 only, needs min == opt == max and batch <= 4096,
    and supports a subset of layers; a layer it cannot run goes to the GPU with kGPU_FALLBACK, else the
    build fails ("Working with DLA", "DLA Supported Layers and Restrictions", TensorRT 10 docs).
    Returns None (no DLA asked), a dict, or False (failed, logged)."""
    DLA = trt.DeviceType.DLA
    asked = [lay for lay in network._layers if config.get_device_type(lay) == DLA]
    if not asked:
        return None
    fallback = "GPU_FALLBACK" in flags
    if not st.dla_cores or config._dla_core < 0:
        if not fallback:
            fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (DLA was requested but no DLA "
                 "engines are available on the platform (DLA core not set), and BuilderFlag::kGPU_FALLBACK is not "
                 "set.)")
            return False
        return {"core": -1, "on_dla": [], "on_gpu": [lay.name for lay in asked]}
    reduced = bool({"FP16", "INT8"} & set(flags)) or network._strongly_typed
    static = all(x[0] == x[1] == x[2] for p in profiles for x in p.values())
    small = all(x[2][0] <= DLA_MAX_BATCH for p in profiles for x in p.values() if x[2])
    on_dla, on_gpu = [], []
    for lay in asked:
        typed_low = not network._strongly_typed or any(
            network._types.get(o) in (10, 3) for o in lay._node.output)
        ok = config.can_run_on_DLA(lay) and reduced and typed_low and static and small
        (on_dla if ok else on_gpu).append(lay.name)
    if on_gpu and not fallback:
        fail(f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Layer {on_gpu[0]} cannot run on DLA "
             "(DLA runs FP16/INT8 layers of supported types with static shapes) and BuilderFlag::kGPU_FALLBACK is "
             "not set.)")
        return False
    return {"core": config._dla_core, "on_dla": on_dla, "on_gpu": on_gpu}


def _use_timing_cache(st, config, flags, layers, fail):
    """Level 0 "will also not respect a timing cache" [NvInfer.h setBuilderOptimizationLevel @ v10.16];
    kDISABLE_TIMING_CACHE disables it; kERROR_ON_TIMING_CACHE_MISS fails on a miss."""
    cache = config._cache
    if cache is None or config._opt_level == 0 or "DISABLE_TIMING_CACHE" in flags:
        return None
    keys = [hashlib.sha1(json.dumps(lay, sort_keys=True).encode()).hexdigest()[:16] if isinstance(lay, dict)
            else hashlib.sha1(lay.encode()).hexdigest()[:16] for lay in layers]
    missing = [k for k in keys if k not in cache._keys]
    if missing and "ERROR_ON_TIMING_CACHE_MISS" in flags:
        fail(f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error ({len(missing)} timing cache miss(es) "
             "with BuilderFlag::kERROR_ON_TIMING_CACHE_MISS set.)")
        return False
    object.__setattr__(cache, "_keys", sorted(set(cache._keys) | set(keys)))
    return len(keys) - len(missing)


def _layers(proto, network, qdq_int8: bool, scales: dict, half: bool, st) -> list:
    """DETAILED layer records (release-neutral; the inspector formats them per release): a fused
    convolution per Conv named "<weights> + <DQ> + <Conv>[ + <activation>]", a ConvActPool where a
    MaxPool follows (its weights under "ConvWeights"), Q/DQ reformats, plugins as PluginV2, and the
    rest as one Myelin foreign node [trt-engine-explorer sample engines @ v10.16]."""
    nodes = list(proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict = {}
    for n in nodes:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    inits = {i.name: i for i in proto.graph.initializer}
    types_ = network._types

    def word(tensor, int8=False):
        if int8:
            return "Int8"
        t = types_.get(tensor, 1)
        if t == 10 or (half and t == 1):
            return "Half"
        return {6: "Int32", 7: "Int64", 9: "Bool"}.get(t, "Float")

    def tensor(name, dt):
        return {"Name": name, "Location": "Device", "Dimensions": network._shapes.get(name, []), "_dt": dt}

    layers, rest, fused = [], [], set()
    for n in nodes:
        if n.name in fused:
            continue
        if n.op_type == "Conv":
            w, x = producer.get(n.input[1]), producer.get(n.input[0])
            wq = w is not None and w.op_type == "DequantizeLinear"
            if qdq_int8:
                int8 = wq and x is not None and x.op_type == "DequantizeLinear"
            else:
                int8 = n.input[0] in scales and n.output[0] in scales
            parts = [w.input[0], w.name, n.name] if wq else [n.input[1], n.name]
            out, act, pool = n.output[0], None, None
            nxt = consumers.get(out, [])
            if len(nxt) == 1 and nxt[0].op_type in ("Relu", "LeakyRelu", "Clip", "Sigmoid"):
                act = nxt[0]
                out = act.output[0]
                nxt = consumers.get(out, [])
            if len(nxt) == 1 and nxt[0].op_type == "MaxPool":
                pool = nxt[0]
            parts += [m.name for m in (act, pool) if m is not None]
            fused.update(m.name for m in (act, pool) if m is not None)
            out = pool.output[0] if pool is not None else out
            dt = word(n.output[0], int8)
            winit = inits.get(parts[0])
            count = int(np.prod(winit.dims)) if winit is not None else 0
            rec = {"Name": " + ".join(parts), "Inputs": [tensor(n.input[0], dt)], "Outputs": [tensor(out, dt)],
                   "TacticValue": "0x" + hashlib.sha1(n.name.encode()).hexdigest()[:16], "StreamId": 0,
                   "Metadata": f"[ONNX Layer: {n.name}]"}
            weights = {"Type": dt, "Count": count}
            bias = {"Type": "Float", "Count": int(np.prod(inits[n.input[2]].dims)) if len(n.input) > 2 and
                    n.input[2] in inits else 0}
            if pool is not None:
                rec.update({"LayerType": "ConvActPool", "ParameterType": "ConvActPool",
                            "ConvParameterType": "Convolution", "ConvWeights": weights, "ConvBias": bias,
                            "ConvActivation": (act.op_type.upper() if act is not None else "NONE"),
                            "PoolingParameterType": "Pooling", "PoolingPoolingType": "MAX"})
            else:
                rec.update({"LayerType": "CaskConvolution", "ParameterType": "Convolution", "Weights": weights,
                            "Bias": bias, "Activation": act.op_type.upper() if act is not None else "NONE"})
            layers.append(rec)
        elif n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            layers.append({"Name": n.name, "LayerType": "Reformat", "ParameterType": "Reformat", "Origin": "QDQ",
                           "Inputs": [tensor(n.input[0], word(n.input[0]))], "Outputs": [tensor(n.output[0], "Int8")],
                           "TacticValue": "0x00000000000003ea", "StreamId": 0})
        elif not _standard_op(n):
            layers.append({"Name": n.name, "LayerType": "PluginV2",
                           "Inputs": [tensor(t, word(t)) for t in n.input if t],
                           "Outputs": [tensor(t, word(t)) for t in n.output], "StreamId": 0,
                           "Metadata": f"[ONNX Layer: {n.name}]"})
        elif n.op_type not in ("DequantizeLinear", "Constant"):
            rest.append(n.name)
    if rest:
        layers.append({"Name": "{ForeignNode[" + rest[0] + "..." + rest[-1] + "]}", "LayerType": "Myelin",
                       "Inputs": [], "Outputs": [], "TacticName": "", "StreamId": 0})
    return layers


# -- implicit INT8 calibration (10.x) ---------------------------------------------------------------------
# The calibrator trampolines [python/src/infer/pyInt8.cpp pyCalibratorTrampoline @ v10.3.0..v10.16]: every
# callback runs inside try/catch; an exception is printed to std::cerr as "[ERROR] Exception caught in
# <method>(): <what>" and a default returned: get_batch_size -1, get_batch false (TensorRT reads false as
# the end of the data), read_calibration_cache nullptr.  get_batch_size is pure virtual
# (PYBIND11_OVERLOAD_PURE_NAME); get_batch, read_calibration_cache and write_calibration_cache are looked
# up with utils::getOverride, which prints "Method: <name> was not overriden. Please provide an
# implementation for this method." when the Python class does not define them.

def _print_err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _callback(calib, name: str, base, *args, missing=None):
    """(ok, value) of calling the Python override of ``name`` the way the trampoline does."""
    fn = _override(calib, name, base)
    if fn is None:
        _print_err(missing if missing is not None else
                   f"Method: {name} was not overriden. Please provide an implementation for this method.")
        return False, None
    try:
        return True, fn(*args)
    except Exception as e:  # noqa: BLE001 - the trampoline catches std::exception (every Python error)
        _print_err(f"[ERROR] Exception caught in {name}(): {e}")
        return False, None


def _cache_header(algo) -> str:
    return {"LEGACY_CALIBRATION": "LegacyCalibration", "ENTROPY_CALIBRATION": "EntropyCalibration",
            "ENTROPY_CALIBRATION_2": "EntropyCalibration2", "MINMAX_CALIBRATION": "MinMaxCalibration"}[algo.name]


def _calibrate(trt, st, logger, calib, config, network, profiles):
    """TensorRT 10's calibration: the cache first (read_calibration_cache), else batches from get_batch
    at the calibration profile's OPT shape ("MIN and MAX values will be overwritten by kOPT" [NvInfer.h
    setCalibrationProfile @ v10.16]) until it returns None/empty/False, then write_calibration_cache with
    a memoryview.  Scales are data-derived (max |x| / 127 of every float tensor); the cache is text,
    "TRT-<version>-<Algorithm>" then "<tensor>: <float32 scale, hex>" lines."""
    base = trt.IInt8Calibrator
    algo = type(calib)._algorithm  # the C++ subclasses define getAlgorithm; IInt8Calibrator's is pure
    if algo is None:
        ok, algo = _callback(calib, "get_algorithm", base,
                             missing='[ERROR] Exception caught in get_algorithm(): Tried to call pure virtual function '
                                     '"IInt8Calibrator::get_algorithm"')
        algo = algo if ok and isinstance(algo, trt.CalibrationAlgoType) else trt.CalibrationAlgoType(0)
    program = network._program()
    wanted = sorted(t for t, ty in network._types.items() if ty == 1 and (t in program.producer or any(
        t == i.name for i in network._inputs)))
    ok, cached = _callback(calib, "read_calibration_cache", base)
    if ok and cached is not None:
        try:
            text = _bytes_of(cached).decode()
        except (TypeError, UnicodeDecodeError) as e:
            _print_err(f"[ERROR] Exception caught in read_calibration_cache(): {e}")
            text = ""
        if text:
            scales = {}
            for line in text.splitlines()[1:]:
                name, _, hexval = line.rpartition(": ")
                with contextlib.suppress(ValueError):
                    scales[name] = struct.unpack(">f", bytes.fromhex(hexval))[0]
            missing = [t for t in wanted if t not in scales]
            for t in missing[:10]:
                st.emit(logger, 2, f"Missing scale and zero-point for tensor {t}, expect fall back to non-int8 "
                                   "implementation for any layer consuming or producing given tensor")
            return {"from_cache": True, "batches": 0, "images": 0, "header": text.splitlines()[0],
                    "missing_scales": len(missing), "scales": scales}
    name = network._inputs[0].name
    if -1 in network._inputs[0].shape:
        prof = config._calib_profile
        if prof is None:
            st.emit(logger, 2, "Calibration Profile is not defined. Calibrating with Profile 0")
            shape = profiles[0][name][1]
        else:
            shape = prof._shapes[name][1]
    else:
        shape = list(network._inputs[0].shape)
    _callback(calib, "get_batch_size", base,
              missing='[ERROR] Exception caught in get_batch_size(): Tried to call pure virtual function '
                      '"Derived::get_batch_size"')
    names = [t.name for t in network._inputs]
    dtype = np.dtype(_TRT_TO_NP[network._inputs[0].dtype.name])
    nbytes = int(np.prod(shape)) * dtype.itemsize
    amax: dict = {}
    batches = 0
    while True:
        ok, ptrs = _callback(calib, "get_batch", base, names)
        if not ok or ptrs is None:
            break
        try:
            ptrs = [int(p) for p in ptrs]
        except (TypeError, ValueError) as e:
            _print_err(f"[ERROR] Exception caught in get_batch(): Unable to cast Python instance to C++ type: {e}")
            break
        if not ptrs:
            break
        if len(ptrs) < len(names) or not all(st.cuda.is_device(p, nbytes) for p in ptrs[:len(names)]):
            st.emit(logger, 1, "[calibrator] Error Code 1: Cuda Runtime (an illegal memory access was encountered: "
                               f"get_batch gave {ptrs} for {len(names)} input(s) of {nbytes} bytes of device memory)")
            return None
        feeds = {n: _from_address(p, shape, dtype).copy() for n, p in zip(names, ptrs)}
        vals = program.run(feeds, extra=tuple(t for t in wanted if t not in feeds and t not in program.outputs))
        vals.update(feeds)
        for t in wanted:
            if t in vals and np.issubdtype(np.asarray(vals[t]).dtype, np.floating) and np.asarray(vals[t]).size:
                amax[t] = max(amax.get(t, 0.0), float(np.abs(vals[t]).max()))
        batches += 1
    if not batches:
        st.emit(logger, 1, "Calibration failure occurred with no scaling factors detected. This could be due to no "
                           "int8 calibrator or insufficient custom scales for network layers. Please see int8 sample "
                           "to setup calibration correctly.")
        return None
    scales = {t: (a / 127.0 if a > 0 else 1.0) for t, a in amax.items()}
    major, minor, patch = (int(p) for p in st.version.split(".")[:3])
    text = f"TRT-{major * 10000 + minor * 100 + patch}-{_cache_header(algo)}\n" + "".join(
        f"{t}: {struct.pack('>f', s).hex()}\n" for t, s in sorted(scales.items()))
    _callback(calib, "write_calibration_cache", base, memoryview(text.encode()))
    return {"from_cache": False, "batches": batches, "images": batches * int(shape[0]), "shape": list(shape),
            "header": text.splitlines()[0], "missing_scales": 0, "scales": scales}


def _calibrators(trt, st: _State) -> None:
    class IInt8Calibrator(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IInt8Calibrator"
        _algorithm = None

        def get_batch_size(self):
            """Bound to the C++ virtual (deprecated "Implicit batch dimensions support has been removed");
            not overridden it is pure: the trampoline prints and returns -1."""
            warnings.warn("Use Implicit batch dimensions support has been removed instead.", DeprecationWarning,
                          stacklevel=2)
            _print_err('[ERROR] Exception caught in get_batch_size(): Tried to call pure virtual function '
                       '"Derived::get_batch_size"')
            return -1

        def get_algorithm(self):
            if self._algorithm is None:
                _print_err('[ERROR] Exception caught in get_algorithm(): Tried to call pure virtual function '
                           '"IInt8Calibrator::get_algorithm"')
                return trt.CalibrationAlgoType.LEGACY_CALIBRATION
            return self._algorithm

        # "For documentation purposes only" [pyInt8.cpp docGetBatch, docReadCalibrationCache @ v10.16]
        def get_batch(self, names):
            return []

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    classes = {"IInt8Calibrator": IInt8Calibrator}
    for name, algo in (("IInt8LegacyCalibrator", "LEGACY_CALIBRATION"), ("IInt8EntropyCalibrator",
                                                                           "ENTROPY_CALIBRATION"),
                       ("IInt8EntropyCalibrator2", "ENTROPY_CALIBRATION_2"), ("IInt8MinMaxCalibrator",
                                                                              "MINMAX_CALIBRATION")):
        classes[name] = _TrampolineMeta(name, (IInt8Calibrator,), {
            "_pybind_name": name, "_algorithm": getattr(trt.CalibrationAlgoType, algo),
            "__module__": "tensorrt.tensorrt", "__qualname__": name})
    for name, cls in classes.items():
        setattr(trt, name, cls)
    IInt8Calibrator.__module__ = "tensorrt.tensorrt"
    IInt8Calibrator._algorithm = None


def _from_address(addr: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    if n == 0:
        return np.zeros(shape, dtype)
    buf = (ctypes.c_byte * (n * dtype.itemsize)).from_address(addr)
    return np.frombuffer(buf, dtype=dtype, count=n).reshape(shape)


# -- executing ------------------------------------------------------------------------------------------

class _ExecError(Exception):
    """A failure inside enqueue: logged by the context, which then returns False."""


def _host_ops(consts: dict) -> dict:
    """{op_type: (applies(node), run(node, args) -> outputs)} for the nodes computed on the host."""
    from onnx import helper

    def run_plugin(node, args):
        return efficient_nms(args[0], args[1], _plugin_attrs(node))

    def run_nms(node, args):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        args = args + [None] * (5 - len(args))
        return nms_layer(args[0], args[1], args[2], args[3], args[4], attrs.get("center_point_box", 0))

    def run_topk(node, args):
        """A runtime K larger than 3840 "will result in a runtime error" [NvInfer.h ITopKLayer::setInput @ v11.1]."""
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k = int(np.asarray(args[1]).reshape(-1)[0])
        if k > MAX_TOPK_K:
            raise _ExecError(f"ITopKLayer {node.name}: K = {k} exceeds the maximum of {MAX_TOPK_K}")
        x = np.asarray(args[0])
        axis = attrs.get("axis", -1) % x.ndim
        order = np.argsort(-x if attrs.get("largest", 1) else x, axis=axis, kind="stable")
        idx = np.take(order, np.arange(k), axis=axis)
        return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]

    return {"EfficientNMS_TRT": (lambda n: True, run_plugin),
            "NonMaxSuppression": (lambda n: True, run_nms),
            "TopK": (lambda n: len(n.input) > 1 and n.input[1] not in consts, run_topk)}


def _dim_tokens(proto) -> dict:
    """{io tensor: [int | dim_param | None]} from the ONNX declarations."""
    out = {}
    for vi in list(proto.graph.input) + list(proto.graph.output):
        out[vi.name] = [d if d >= 0 else p for d, p in zip(_dims(vi), _dim_params(vi))]
    return out


def _engine(trt, st: _State) -> None:
    def fmt_desc(word):
        return {"Float": "Row major linear FP32 format (kLINEAR)", "Half": "Row major linear FP16 format (kLINEAR)",
                "Int32": "Row major linear INT32 format (kLINEAR)", "Int64": "Row major linear INT64 format (kLINEAR)",
                "Int8": "Row major linear INT8 format (kLINEAR)", "Bool": "Row major linear BOOL format (kLINEAR)"}.get(
            word, "Row major linear format (kLINEAR)")

    class EngineInspector(_Strict):
        _settable = ("execution_context", "error_recorder")

        def __init__(self, engine):
            object.__setattr__(self, "_engine", engine)
            object.__setattr__(self, "execution_context", None)
            object.__setattr__(self, "error_recorder", None)

        def _layer(self, rec, eleven):
            """One layer as the release prints it: 10.x "Format/Datatype", 11.x "Format" + "Datatype"."""
            verbosity = self._engine._h["verbosity"]
            if verbosity != int(trt.ProfilingVerbosity.DETAILED):
                return rec["Name"]
            out = {}
            for k, v in rec.items():
                if k in ("Inputs", "Outputs"):
                    ts = []
                    for t in v:
                        dt = t.get("_dt") or "Float"
                        t = {kk: vv for kk, vv in t.items() if kk != "_dt"}
                        if eleven:
                            t.update({"Format": _FORMATS[dt][1], "Datatype": dt})
                        else:
                            t["Format/Datatype"] = _FORMATS[dt][0]
                        ts.append(t)
                    out[k] = ts
                else:
                    out[k] = v
            return out

        def _layers(self):
            if self._engine._h["verbosity"] == int(trt.ProfilingVerbosity.NONE):
                return []
            eleven = not st.ten
            return [self._layer(r, eleven) for r in self._engine._h["layers"]]

        def get_layer_information(self, layer_index, format):  # noqa: A002 - the binding's argument name
            layers = self._layers()
            if not 0 <= layer_index < len(layers):
                st.emit(None, 1, "IEngineInspector::getLayerInformation: Error Code 3: API Usage Error (Parameter "
                                 "check failed, condition: layerIndex < mEngine.getNbLayers(). )")
                return ""
            if format == trt.LayerInformationFormat.JSON:
                return json.dumps(layers[layer_index])
            return _oneline(layers[layer_index])

        def get_engine_information(self, format):  # noqa: A002
            e = self._engine
            layers = self._layers()
            if format != trt.LayerInformationFormat.JSON:
                return "\n".join(_oneline(lay) for lay in layers)
            info = {"Layers": layers}
            if st.ten:
                info["Bindings"] = [x["name"] for x in e._io]
            else:
                # "Bindings" replaced by "I/O Tensors" (TensorRT 11.0.0 docs, "Migrating IEngineInspector Usage
                # from TensorRT 10.x to 11.x")
                tensors = []
                for x in e._io:
                    word = _DTYPE_WORD.get(x["dtype"], x["dtype"].capitalize())
                    rec = {"Name": x["name"], "IOMode": "Input" if x["mode"] == "INPUT" else "Output",
                           "DataType": word, "Dimensions": x["shape"], "Location": "Device",
                           "IsShapeInferenceIO": False, "ProfileInfo": []}
                    if x["mode"] == "INPUT":
                        rec["ProfileInfo"] = [{"MinShape": p[x["name"]][0], "OptShape": p[x["name"]][1],
                                               "MaxShape": p[x["name"]][2], "Format": fmt_desc(word)}
                                              for p in e._h["profiles"]]
                    tensors.append(rec)
                info["I/O Tensors"] = tensors
            return json.dumps(info)

    class IExecutionContext(_Strict):
        _settable = ("name", "debug_sync", "nvtx_verbosity", "persistent_cache_limit", "profiler", "error_recorder",
                     "temporary_allocator", "enqueue_emits_profile")

        def __init__(self, engine, strategy):
            for k, v in dict(_engine=engine, _shapes={}, _addr={}, _alloc={}, _profile=0, _strategy=strategy,
                             _device_memory=None, _debug_listener=None, _shape_cache={}).items():
                object.__setattr__(self, k, v)
            for k, v in dict(name="", debug_sync=False, nvtx_verbosity=trt.ProfilingVerbosity.LAYER_NAMES_ONLY,
                             persistent_cache_limit=0, profiler=None, error_recorder=None, temporary_allocator=None,
                             enqueue_emits_profile=True).items():
                object.__setattr__(self, k, v)

        engine = property(lambda self: self._engine)
        active_optimization_profile = property(lambda self: self._profile)

        def set_optimization_profile_async(self, profile_index, stream_handle):
            if not 0 <= profile_index < self._engine.num_optimization_profiles:
                st.emit(None, 1, "IExecutionContext::setOptimizationProfileAsync: Error Code 3: API Usage Error "
                                 "(Parameter check failed, condition: profileIndex >= 0 && profileIndex < "
                                 "mEngine.getNbOptimizationProfiles(). )")
                return False
            object.__setattr__(self, "_profile", int(profile_index))
            self._shapes.clear()
            return True

        def _input(self, name):
            x = self._engine._by_name.get(name)
            return x if x is not None and x["mode"] == "INPUT" else None

        def set_input_shape(self, name, shape):
            """False with TensorRT's log for a shape outside the active profile (it does not raise)
            [pyCore.cpp setInputShape @ v10.3.0..v11.1]."""
            dims = _shape_arg(shape, "set_input_shape")
            x = self._input(name)
            if x is None:
                st.emit(None, 1, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                                 f"failed, condition: The tensor {name} is not an input tensor. )")
                return False
            lo, _, hi = self._engine._h["profiles"][self._profile][name]
            if len(dims) != len(x["shape"]) or any(d != -1 and v != d for v, d in zip(dims, x["shape"])) or \
                    any(not a <= v <= b for v, a, b in zip(dims, lo, hi)):
                st.emit(None, 1, "IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check "
                                 "failed, condition: satisfyProfile Runtime dimension does not satisfy any "
                                 f"optimization profile. Supplied dimensions {dims} for {name}; profile "
                                 f"{self._profile} allows {lo} to {hi}.)")
                return False
            self._shapes[name] = tuple(dims)
            return True

        def _input_shape(self, x):
            return self._shapes.get(x["name"], tuple(x["shape"]))

        def get_tensor_shape(self, name):
            e = self._engine
            x = e._by_name.get(name)
            if x is None:
                st.emit(None, 1, f"IExecutionContext::getTensorShape: Error Code 3: API Usage Error (Given invalid "
                                 f"tensor name: {name})")
                return Dims([])
            if x["mode"] == "INPUT":
                return Dims(self._input_shape(x))
            return Dims(self._output_shape(x))

        def _output_shape(self, x):
            e = self._engine
            ins = {i["name"]: self._input_shape(i) for i in e._io if i["mode"] == "INPUT"}
            if any(-1 in s for s in ins.values()):
                return tuple(x["shape"])
            key = tuple(sorted(ins.items()))
            cache = self._shape_cache.setdefault(key, {})
            if x["name"] not in cache:
                cache[x["name"]] = e._resolve_shape(x, ins)
            return cache[x["name"]]

        def set_tensor_address(self, name, memory):
            if name not in self._engine._by_name:
                st.emit(None, 1, f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Given invalid "
                                 f"tensor name: {name})")
                return False
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self._addr.get(name, 0)

        def set_output_allocator(self, name, output_allocator):
            x = self._engine._by_name.get(name)
            if x is None or x["mode"] != "OUTPUT":
                st.emit(None, 1, f"IExecutionContext::setOutputAllocator: Error Code 3: API Usage Error (Given invalid "
                                 f"output tensor name: {name})")
                return False
            self._alloc[name] = output_allocator
            return True

        def get_output_allocator(self, name):
            return self._alloc.get(name)

        def infer_shapes(self):
            return [x["name"] for x in self._engine._io if x["mode"] == "INPUT" and -1 in self._input_shape(x)]

        @property
        def all_binding_shapes_specified(self):
            return not self.infer_shapes()

        def update_device_memory_size_for_shapes(self):
            return self._engine.device_memory_size_v2

        def set_device_memory(self, memory, size):
            object.__setattr__(self, "_device_memory", (int(memory), int(size)))

        device_memory = property(None, lambda self, m: self.set_device_memory(m, self._engine.device_memory_size_v2))

        def set_all_tensors_debug_state(self, flag):
            return True

        def set_tensor_debug_state(self, name, flag):
            return name in self._engine._by_name

        def set_debug_listener(self, listener):
            object.__setattr__(self, "_debug_listener", listener)
            return True

        def get_debug_listener(self):
            return self._debug_listener

        def set_aux_streams(self, aux_streams):
            return None

        def report_to_profiler(self):
            return True

        def execute_v2(self, bindings):
            for x, addr in zip(self._engine._io, bindings):
                self._addr[x["name"]] = int(addr)
            return self.execute_async_v3(0)

        def execute_async_v3(self, stream_handle):
            try:
                self._execute(stream_handle)
                return True
            except _ExecError as err:
                st.emit(None, 1, f"IExecutionContext::enqueueV3: {err}")
                return False

        def _execute(self, stream_handle):
            e = self._engine
            if self._strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED and self._device_memory is None:
                raise _ExecError("Error Code 3: API Usage Error (Parameter check failed, condition: device memory is "
                                 "set for a context created with ExecutionContextAllocationStrategy::kUSER_MANAGED. )")
            feeds = {}
            for x in e._io:
                name = x["name"]
                if x["mode"] == "INPUT":
                    shape = self._input_shape(x)
                    if -1 in shape:
                        raise _ExecError(f"Error Code 3: API Usage Error (Parameter check failed, condition: all input "
                                         f"shapes are specified. The shape of input tensor {name} was not set: call "
                                         "setInputShape before enqueue/execute.)")
                    feeds[name] = self._read(name, shape, x["dtype"])
                elif not self._addr.get(name) and name not in self._alloc:
                    raise _ExecError("Error Code 3: API Usage Error (Parameter check failed, condition: mContext."
                                     "profileObliviousBindings.at(profileObliviousIndex) || getPtrOrNull("
                                     "mOutputAllocators, profileObliviousIndex). Neither address or allocator is set "
                                     "for output tensor "
                                     f"{name}. Call setOutputTensorAddress, setTensorAddress or setOutputAllocator "
                                     "before enqueue/execute.)")
            outs = e._run(feeds)
            for x in e._io:
                if x["mode"] == "OUTPUT":
                    self._write(x, outs[x["name"]], stream_handle)

        def _read(self, name, shape, dtype):
            np_t = np.dtype(_TRT_TO_NP[dtype])
            nbytes = int(np.prod(shape)) * np_t.itemsize
            addr = self._addr.get(name, 0)
            if not addr:
                raise _ExecError(f"Error Code 3: API Usage Error (Parameter check failed, condition: the address of "
                                 f"input tensor {name} is set. )")
            if nbytes and not st.cuda.is_device(addr, nbytes):
                raise _ExecError(f"Error Code 1: Cuda Runtime (an illegal memory access was encountered: input {name} "
                                 f"at {addr:#x} is not {nbytes} bytes of device memory)")
            return _from_address(addr, shape, np_t).copy()

        def _write(self, x, val, stream_handle):
            name = x["name"]
            val = np.ascontiguousarray(np.asarray(val).astype(_TRT_TO_NP[x["dtype"]], copy=False))
            expect = self._output_shape(x)
            if -1 not in expect and tuple(expect) != tuple(val.shape):
                raise _ExecError(f"Error Code 2: Internal Error (output {name}: computed shape {list(val.shape)} "
                                 f"differs from the engine's {list(expect)})")
            alloc = self._alloc.get(name)
            if alloc is not None:
                addr = _reallocate(alloc, name, self._addr.get(name, 0), max(val.nbytes, 1), stream_handle)
                self._addr[name] = addr
            elif -1 in expect:
                raise _ExecError(f"Error Code 3: API Usage Error (output {name} has a data-dependent shape: set an "
                                 "IOutputAllocator for it.)")
            addr = self._addr[name]
            if val.nbytes and not st.cuda.is_device(addr, val.nbytes):
                raise _ExecError(f"Error Code 1: Cuda Runtime (an illegal memory access was encountered: output {name} "
                                 f"at {addr:#x} is not {val.nbytes} bytes of device memory)")
            if val.nbytes:
                ctypes.memmove(addr, val.ctypes.data, val.nbytes)
            if alloc is not None and _override(alloc, "notify_shape", trt.IOutputAllocator) is not None:
                alloc.notify_shape(name, Dims(val.shape))

    def _reallocate(alloc, name, current, size, stream):
        fn = _override(alloc, "reallocate_output_async", trt.IOutputAllocator)
        if fn is not None:
            ptr = fn(name, current, size, 256, stream)
        else:
            fn = _override(alloc, "reallocate_output", trt.IOutputAllocator)
            if fn is None:
                raise _ExecError(f"IOutputAllocator for {name} implements neither reallocate_output_async nor "
                                 "reallocate_output")
            ptr = fn(name, current, size, 256)
        if not ptr:
            raise _ExecError(f"Error Code 2: Internal Error (IOutputAllocator returned no memory for {name})")
        return int(ptr)

    class ICudaEngine(_Strict):
        _settable = ("name", "error_recorder", "weight_streaming_budget_v2")

        def __init__(self, header, onnx_bytes, plan):
            object.__setattr__(self, "_h", header)
            object.__setattr__(self, "_onnx", onnx_bytes)
            object.__setattr__(self, "_plan", plan)
            object.__setattr__(self, "_program_cache", None)
            object.__setattr__(self, "_io", header["io"])
            object.__setattr__(self, "_by_name", {x["name"]: x for x in header["io"]})
            object.__setattr__(self, "_tokens", None)
            object.__setattr__(self, "name", "Unnamed Network 0")

        num_io_tensors = property(lambda self: len(self._io))
        num_layers = property(lambda self: len(self._h["layers"]))
        num_optimization_profiles = property(lambda self: len(self._h["profiles"]))
        profiling_verbosity = property(lambda self: trt.ProfilingVerbosity(self._h["verbosity"]))
        refittable = property(lambda self: False)
        engine_capability = property(lambda self: trt.EngineCapability.STANDARD)
        hardware_compatibility_level = property(
            lambda self: trt.HardwareCompatibilityLevel(self._h["hardware_compatibility_level"]))
        num_aux_streams = property(lambda self: 0)
        streamable_weights_size = property(lambda self: 0)

        def get_tensor_name(self, index):
            return self._io[index]["name"] if 0 <= index < len(self._io) else None

        def __getitem__(self, index):
            i = index + len(self._io) if index < 0 else index
            if not 0 <= i < len(self._io):
                raise IndexError("Out of bounds")
            return self._io[i]["name"]

        def _x(self, name, what):
            x = self._by_name.get(name)
            if x is None:
                st.emit(None, 1, f"ICudaEngine::{what}: Error Code 3: API Usage Error (Given invalid tensor name: "
                                 f"{name})")
            return x

        def get_tensor_mode(self, name):
            x = self._by_name.get(name)
            return trt.TensorIOMode.NONE if x is None else getattr(trt.TensorIOMode, x["mode"])

        def get_tensor_dtype(self, name):
            x = self._x(name, "getTensorDataType")
            return trt.DataType.FLOAT if x is None else getattr(trt.DataType, x["dtype"])

        def get_tensor_shape(self, name):
            x = self._x(name, "getTensorShape")
            return Dims([] if x is None else x["shape"])

        def get_tensor_location(self, name):
            return trt.TensorLocation.DEVICE

        def is_shape_inference_io(self, name):
            return False

        def get_tensor_format(self, name, profile_index=0):
            return trt.TensorFormat.LINEAR

        def get_tensor_format_desc(self, name, profile_index=0):
            x = self._by_name.get(name)
            return fmt_desc(_DTYPE_WORD.get(x["dtype"], "") if x else "")

        def get_tensor_bytes_per_component(self, name, profile_index=0):
            x = self._by_name.get(name)
            return int(_ITEMSIZE.get(x["dtype"], 4)) if x else -1

        def get_tensor_components_per_element(self, name, profile_index=0):
            return 1

        def get_tensor_vectorized_dim(self, name, profile_index=0):
            return -1

        def get_tensor_profile_shape(self, name, profile_index):
            x = self._by_name.get(name)
            if x is None or x["mode"] != "INPUT" or not 0 <= profile_index < len(self._h["profiles"]):
                st.emit(None, 1, "ICudaEngine::getProfileShape: Error Code 3: API Usage Error (Parameter check failed, "
                                 f"condition: {name} is an input tensor of a valid profile. )")
                return []
            return [Dims(s) for s in self._h["profiles"][profile_index][name]]

        @property
        def device_memory_size_v2(self):
            total = 0
            for x in self._io:
                hi = self._h["profiles"][0].get(x["name"], [None, None, x["shape"]])[2]
                total += int(np.prod([max(1, d) for d in hi])) * int(_ITEMSIZE.get(x["dtype"], 4))
            return 4 * total + (1 << 20)

        def get_device_memory_size_for_profile_v2(self, profile_index):
            return self.device_memory_size_v2

        def serialize(self):
            return IHostMemory(self._plan)

        def create_execution_context(self, strategy=None):
            strategy = trt.ExecutionContextAllocationStrategy.STATIC if strategy is None else strategy
            return IExecutionContext(self, _check_enum(strategy, trt.ExecutionContextAllocationStrategy,
                                                       "create_execution_context"))

        def create_engine_inspector(self):
            return EngineInspector(self)

        def _program(self):
            if self._program_cache is None:
                import onnx

                proto = onnx.load_from_string(self._onnx)
                object.__setattr__(self, "_program_cache", OnnxProgram(proto, _host_ops(_constants(proto))))
                object.__setattr__(self, "_tokens", _dim_tokens(proto))
            return self._program_cache

        def _run(self, feeds):
            prog = self._program()
            onnx_in = {vi.name: vi.type.tensor_type.elem_type for vi in prog.proto.graph.input}
            feeds = {k: (v.astype(_TRT_TO_NP[_ONNX_TO_TRT[onnx_in[k]]]) if k in onnx_in else v)
                     for k, v in feeds.items()}
            extra = tuple(x["name"] for x in self._io if x["mode"] == "OUTPUT" and x["name"] not in
                          self._h["onnx_outputs"])
            try:
                return prog.run(feeds, extra=extra)
            except _ExecError:
                raise
            except Exception as e:  # noqa: BLE001 - a kernel failure is reported by enqueue, not raised
                raise _ExecError(f"Error Code 2: Internal Error (execution failed: {type(e).__name__}: {e})")

        def _resolve_shape(self, x, ins: dict):
            """An output's shape for given input shapes: the ONNX declaration, its dim_params bound from the
            inputs, else ONNX shape inference with the inputs fixed; -1 where it depends on the data."""
            self._program()
            tokens = self._tokens.get(x["name"])
            bound = {}
            for i in self._io:
                if i["mode"] == "INPUT":
                    for tok, v in zip(self._tokens.get(i["name"], []), ins[i["name"]]):
                        if isinstance(tok, str):
                            bound[tok] = v
            if tokens is not None and len(tokens) == len(x["shape"]):
                shape = [t if isinstance(t, int) else bound.get(t, -1) for t in tokens]
                if -1 not in shape:
                    return tuple(shape)
            return tuple(_infer_output_shape(self._program_cache.proto, ins, x["name"], x["shape"]))

    if st.ten:  # removed in 11.0 [pyCore.cpp ICudaEngine @ v10.16, v11.0]
        ICudaEngine.device_memory_size = property(lambda self: self.device_memory_size_v2)
        ICudaEngine.get_device_memory_size_for_profile = ICudaEngine.get_device_memory_size_for_profile_v2
        ICudaEngine.has_implicit_batch_dimension = property(lambda self: False)
        ICudaEngine.create_execution_context_without_device_memory = \
            lambda self: self.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        IExecutionContext.all_shape_inputs_specified = property(lambda self: True)

    # trampolines Polygraphy subclasses [polygraphy/backend/trt/runner.py, file_reader.py @ 0.53.6]
    class IOutputAllocator(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IOutputAllocator"

    class IDebugListener(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IDebugListener"

    class IProgressMonitor(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IProgressMonitor"

    class IGpuAllocator(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IGpuAllocator"

    class IErrorRecorder(_Trampoline, metaclass=_TrampolineMeta):
        _pybind_name = "IErrorRecorder"

    readers = []
    if st.ten:  # IStreamReader: 10.x only; IStreamReaderV2 from 10.8 [pyCore.cpp @ v10.3.0..v11.1]
        class IStreamReader(_Trampoline, metaclass=_TrampolineMeta):
            _pybind_name = "IStreamReader"
        readers.append(IStreamReader)
    if st.release >= (10, 8):
        class IStreamReaderV2(_Trampoline, metaclass=_TrampolineMeta):
            _pybind_name = "IStreamReaderV2"
        readers.append(IStreamReaderV2)

    def read_stream(reader) -> bytes:
        chunks = []
        v2 = reader.__class__.__mro__[1:] and any(getattr(c, "_pybind_name", "") == "IStreamReaderV2"
                                                  for c in type(reader).__mro__)
        while True:
            chunk = reader.read(1 << 20, 0) if v2 else reader.read(1 << 20)
            if not chunk:
                break
            chunks.append(bytes(chunk))
        return b"".join(chunks)

    class Runtime(_Strict):
        _settable = ("engine_host_code_allowed", "max_threads", "temporary_directory", "tempfile_control_flags",
                     "gpu_allocator", "error_recorder")

        def __init__(self, logger):
            n = ctypes.c_int()
            if st.cuda.cudaGetDeviceCount(ctypes.byref(n)) != CUDA_SUCCESS or n.value == 0:
                st.emit(logger, 2, f"CUDA initialization failure with error: {CUDA_ERROR_NO_DEVICE}. Please check your "
                                   "CUDA installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index"
                                   ".html")
                raise TypeError("pybind11::init(): factory function returned nullptr")
            object.__setattr__(self, "_logger", logger)
            object.__setattr__(self, "_dla_core", -1)
            for k, v in dict(engine_host_code_allowed=False, max_threads=1, temporary_directory="",
                             tempfile_control_flags=3, gpu_allocator=None, error_recorder=None).items():
                object.__setattr__(self, k, v)

        logger = property(lambda self: self._logger)
        num_DLA_cores = property(lambda self: st.dla_cores)

        def _set_dla(self, core):
            if st.dla_cores and 0 <= int(core) < st.dla_cores:
                object.__setattr__(self, "_dla_core", int(core))

        DLA_core = property(lambda self: self._dla_core, _set_dla)

        def get_plugin_registry(self):
            return st.registry

        def load_runtime(self, path):
            return None

        def deserialize_cuda_engine(self, serialized_engine):
            """None, with TensorRT's log, for a plan that is not one, of another TensorRT version or GPU, or
            that needs a plugin not registered here [NvInferRuntime.h IRuntime::deserializeCudaEngine]."""
            data = read_stream(serialized_engine) if isinstance(serialized_engine, tuple(readers)) \
                else _bytes_of(serialized_engine)
            unpacked = _unpack_plan(data)
            if unpacked is None:
                st.emit(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                                         "assertion plan->header.magicTag == rt::kPLAN_MAGIC_TAG failed.)")
                return None
            header, onnx_bytes = unpacked
            if header["trt"] != st.version:
                st.emit(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine "
                                         "plan file is not compatible with this version of TensorRT, expecting library "
                                         f"version {st.version} got {header['trt']}, please rebuild.)")
                return None
            dev = st.device()
            built_cc, here_cc = tuple(header["device"][1]), tuple(dev[1])
            ampere_plus = header["hardware_compatibility_level"] == int(trt.HardwareCompatibilityLevel.AMPERE_PLUS)
            if built_cc != here_cc and not (ampere_plus and min(built_cc, here_cc) >= (8, 0)):
                st.emit(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine "
                                         "plan file is generated on an incompatible device, expecting compute "
                                         f"{here_cc[0]}.{here_cc[1]} got compute {built_cc[0]}.{built_cc[1]}, please "
                                         "rebuild.)")
                return None
            for op in header["plugins"]:
                if not any(k[0] == op for k in st.creators):
                    st.emit(self._logger, 1, f"getPluginCreator could not find plugin: {op} version: 1")
                    st.emit(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                             "(Serialization assertion creator failed.Cannot deserialize plugin since "
                                             "corresponding IPluginCreator not found in Plugin Registry)")
                    return None
            if header.get("dla") and header["dla"]["on_dla"] and not st.dla_cores:
                st.emit(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (the engine "
                                         "has DLA loadables and no DLA core is available.)")
                return None
            return ICudaEngine(header, onnx_bytes, data)

    for cls in (EngineInspector, IExecutionContext, ICudaEngine, Runtime, IOutputAllocator, IDebugListener,
                IProgressMonitor, IGpuAllocator, IErrorRecorder, *readers):
        cls.__module__ = "tensorrt.tensorrt"
        setattr(trt, cls.__name__, cls)

    def program(network):
        if not hasattr(network, "_program_obj"):
            object.__setattr__(network, "_program_obj", OnnxProgram(network._proto, _host_ops(
                _constants(network._proto))))
        return network._program_obj

    trt.INetworkDefinition._program = program


def _infer_output_shape(proto, ins: dict, name: str, declared) -> list:
    import onnx

    m = type(proto)()
    m.CopyFrom(proto)
    for vi in m.graph.input:
        if vi.name in ins:
            for d, v in zip(vi.type.tensor_type.shape.dim, ins[vi.name]):
                d.Clear()
                d.dim_value = int(v)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001
        return list(declared)
    for vo in inferred.graph.output:
        if vo.name == name:
            dims = _dims(vo)
            if len(dims) == len(declared):
                return [d if d >= 0 else dd for d, dd in zip(dims, declared)]
    return list(declared)


def _oneline(layer) -> str:
    if isinstance(layer, str):
        return layer
    parts = []
    for k, v in layer.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            v = "[" + ", ".join("{ " + ", ".join(f"{kk}: {vv}" for kk, vv in t.items()) + " }" for t in v) + "]"
        parts.append(f"{k}: {v}")
    return ", ".join(parts)


# -- installing -----------------------------------------------------------------------------------------

def _set(monkeypatch, obj, name, value):
    if monkeypatch is not None:
        monkeypatch.setattr(obj, name, value, raising=False)
    else:
        setattr(obj, name, value)


def _install_polygraphy_cuda(cuda: CudaRuntime, monkeypatch) -> None:
    """Give Polygraphy's global CUDA wrapper (polygraphy.cuda.wrapper(): a ``Cuda`` whose ``handle`` is
    libcudart loaded with ctypes) this CUDA runtime as its handle, and forget the ``tensorrt`` module
    and TensorRT logger Polygraphy's lazy imports cached (LazyModule keeps the first module it
    imported; polygraphy.backend.trt.util keeps TRT_LOGGER)."""
    try:
        import polygraphy.cuda.cuda as pcuda
    except ImportError:
        return
    wrapper = pcuda.Cuda.__new__(pcuda.Cuda)
    wrapper.handle = cuda
    _set(monkeypatch, pcuda, "G_CUDA", wrapper)
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith("polygraphy") or mod is None:
            continue
        for value in list(vars(mod).values()):
            if type(value).__name__ == "LazyModule":
                try:
                    cached = object.__getattribute__(value, "module")
                except AttributeError:
                    continue
                if getattr(cached, "__name__", "") == "tensorrt":
                    object.__setattr__(value, "module", None)
    util = sys.modules.get("polygraphy.backend.trt.util")
    if util is not None:
        _set(monkeypatch, util, "TRT_LOGGER", None)


def install(version: str, gpu: bool = True, dla_cores: int | None = None, monkeypatch=None,
            cuda: CudaRuntime | None = None):
    """Put the stand-in of TensorRT ``version`` (a release of the matrix, '10.3' ... '11.1', or its full
    version string) in ``sys.modules['tensorrt']`` and return it.

    * ``gpu``: whether the CUDA runtime reports a GPU (an H100; Jetson AGX Orin for 10.3).  Without
      one, ``trt.Builder`` and ``trt.Runtime`` fail as TensorRT does (TypeError after a CUDA
      initialization failure).
    * ``dla_cores``: DLA cores (10.3 only: Jetson; default 2 there, 0 elsewhere).
    * ``cuda``: the CUDA runtime to use (e.g. one with several GPUs); default: one GPU, or none.
    * Polygraphy's CUDA wrapper gets the stand-in's CUDA runtime (device memory, streams, events,
      the device queries), which is where fyexport asks for its GPU facts too: fyexport sees the
      stand-in's GPU through its normal path, nothing of fyexport is patched.
    * ``monkeypatch`` (pytest's fixture): everything is undone after the test; without it the changes
      stay for the process (the script).
    """
    trt = make_module(version, gpu, dla_cores, cuda)
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
    else:
        sys.modules["tensorrt"] = trt
    _install_polygraphy_cuda(trt._stand_in.cuda, monkeypatch)
    return trt


USAGE = """usage: python tests/trt_stand_in.py VERSION [--no-gpu] [--dla-cores N] FYEXPORT-ARGS...

Runs `fyexport FYEXPORT-ARGS...` in this process with the TensorRT stand-in of VERSION installed
(releases: {releases}), e.g.
  python tests/trt_stand_in.py 10.16 engine m.onnx -o m.engine
"""


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE.format(releases=", ".join(RELEASES)), file=sys.stderr)
        return 2
    version = args.pop(0)
    gpu, dla = True, None
    while args and args[0] in ("--no-gpu", "--dla-cores"):
        opt = args.pop(0)
        if opt == "--no-gpu":
            gpu = False
        else:
            dla = int(args.pop(0))
    try:
        install(version, gpu=gpu, dla_cores=dla)
    except ValueError as e:
        print(f"trt_stand_in: {e}", file=sys.stderr)
        return 2
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from fyexport.cli import main as fyexport_main

    return fyexport_main(args)


if __name__ == "__main__":
    sys.exit(main())
