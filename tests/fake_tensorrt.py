"""Stand-ins for the ``tensorrt`` Python module of TensorRT 10.8, 10.12, 10.16, 11.0 and 11.1.

Written for fyexport from a reading of the real sources (NVIDIA/TensorRT release branches:
include/NvInfer*.h, python/src/infer/pyCore.cpp, pyPlugin.cpp, pyInt8.cpp, plugin/efficientNMSPlugin,
the engine explorer's sample JSON; onnx-tensorrt's importers).  Small, but failing where TensorRT fails:

* surface: what 11.0 removed (precision builder flags, calibrators, ``int8_calibrator``,
  ``EXPLICIT_BATCH``, ...) is absent on 11.x, and enum members carry each release's real values
  (11.0 renumbered ``BuilderFlag`` and ``NetworkDefinitionCreationFlag``); objects refuse
  attributes their real counterparts do not have;
* plugins: the parser and the runtime find ``EfficientNMS_TRT`` only after
  ``init_libnvinfer_plugins(logger, "")``; each fake module has its own registry, like a new process;
* parser: non-positive Q/DQ scales, non-zero zero points and FP16 Resize scales are refused;
* builder: a dynamic input needs a profile; calibration runs at the calibration profile's OPT
  shape (else profile 0's), tries ``read_calibration_cache`` first and hands
  ``write_calibration_cache`` a memoryview; a timing cache records the TensorRT and GPU it came
  from (``create_timing_cache`` gives None for another version's, ``set_timing_cache`` False for
  another GPU's); the "plan" is a JSON record of what was built;
* inspector: the DETAILED JSON of 10.x ("Format/Datatype", "Bindings") or of 11.x ("Format" +
  "Datatype", "I/O Tensors"), with fused layer names that contain the weight names; layer names
  only unless the build asked for DETAILED;
* runtime: ``set_input_shape`` / ``set_tensor_address`` return False (and log) instead of
  raising, ``execute_async_v3`` returns a bool; execution runs the source ONNX on ONNX Runtime
  (EfficientNMS_TRT in numpy), reading and writing the bound addresses (host memory in tests).

Fault knobs for tests: ``trt._fake_gpu`` (the GPU a timing cache is checked against) and
``trt._fake_int8_kernels`` (False: Q/DQ convolutions are not fused and run in float, silently).
"""
from __future__ import annotations

import ctypes
import enum
import json
import types
import warnings

import numpy as np

VERSIONS = ("10.8.0.43", "10.12.0.36", "10.16.0.72", "11.0.0.114", "11.1.0.106")

# BuilderFlag values from each release's NvInfer.h (10.8 has no DISTRIBUTIVE_INDEPENDENCE)
_FLAGS_10 = [("FP16", 0), ("INT8", 1), ("DEBUG", 2), ("GPU_FALLBACK", 3), ("REFIT", 4), ("DISABLE_TIMING_CACHE", 5),
             ("TF32", 6), ("SPARSE_WEIGHTS", 7), ("SAFETY_SCOPE", 8), ("OBEY_PRECISION_CONSTRAINTS", 9),
             ("PREFER_PRECISION_CONSTRAINTS", 10), ("DIRECT_IO", 11), ("REJECT_EMPTY_ALGORITHMS", 12),
             ("VERSION_COMPATIBLE", 13), ("EXCLUDE_LEAN_RUNTIME", 14), ("FP8", 15), ("ERROR_ON_TIMING_CACHE_MISS", 16),
             ("BF16", 17), ("DISABLE_COMPILATION_CACHE", 18), ("STRIP_PLAN", 19), ("WEIGHTLESS", 19),
             ("REFIT_IDENTICAL", 20), ("WEIGHT_STREAMING", 21), ("INT4", 22), ("REFIT_INDIVIDUAL", 23),
             ("STRICT_NANS", 24), ("MONITOR_MEMORY", 25), ("FP4", 26), ("EDITABLE_TIMING_CACHE", 27)]
_FLAGS_11 = [("DEBUG", 2), ("GPU_FALLBACK", 3), ("REFIT", 4), ("DISABLE_TIMING_CACHE", 5), ("TF32", 6),
             ("SPARSE_WEIGHTS", 7), ("SAFETY_SCOPE", 8), ("DIRECT_IO", 11), ("VERSION_COMPATIBLE", 12),
             ("EXCLUDE_LEAN_RUNTIME", 13), ("ERROR_ON_TIMING_CACHE_MISS", 15), ("DISABLE_COMPILATION_CACHE", 17),
             ("STRIP_PLAN", 18), ("REFIT_IDENTICAL", 19), ("WEIGHT_STREAMING", 20), ("REFIT_INDIVIDUAL", 22),
             ("STRICT_NANS", 23), ("MONITOR_MEMORY", 24), ("EDITABLE_TIMING_CACHE", 26),
             ("DISTRIBUTIVE_INDEPENDENCE", 27)]
_PARSER_ERRORS = ["SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
                  "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE", "UNSUPPORTED_NODE_ATTR",
                  "UNSUPPORTED_NODE_INPUT", "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC",
                  "UNSUPPORTED_NODE_SHAPE", "REFIT_FAILED"]
REMOVED_IN_11 = {
    "module": ["IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
               "IInt8LegacyCalibrator", "CalibrationAlgoType"],
    "BuilderFlag": ["FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "REJECT_EMPTY_ALGORITHMS", "WEIGHTLESS"],
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH"],
    "IBuilderConfig": ["int8_calibrator", "set_calibration_profile", "get_calibration_profile"],
    "Builder": ["platform_has_fast_fp16", "platform_has_fast_int8"],
    "ICudaEngine": ["device_memory_size"],
}
# EfficientNMS_TRT's creator fields (name, PluginFieldType, required), plugin/efficientNMSPlugin
EFFICIENT_NMS_FIELDS = [("score_threshold", "FLOAT32", True), ("iou_threshold", "FLOAT32", True),
                        ("max_output_boxes", "INT32", True), ("background_class", "INT32", True),
                        ("score_activation", "INT32", True), ("class_agnostic", "INT32", False),
                        ("box_coding", "INT32", True)]
PLUGIN_NOT_FOUND = 'creator && "Plugin not found, are the plugin name, version, and namespace correct?"'
SCALE_NOT_POSITIVE = "Scale coefficients must all be positive"
_CACHE_MAGIC = b"FAKE-TRT-TIMING-CACHE\n"


def _version_tuple(version: str) -> tuple:
    return tuple(int(p) for p in version.split(".")[:2])


class _Strict:
    """Objects that refuse attributes their TensorRT counterpart does not have."""

    _settable: tuple = ()
    _trt = None

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._settable:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' (fake TensorRT "
                                 f"{self._trt.__version__})")
        object.__setattr__(self, name, value)


def make_fake_trt(version: str = "10.16.0.72"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__fyexport_fake__ = True
    trt._fake_gpu = "NVIDIA H200"
    trt._fake_int8_kernels = True
    ver = _version_tuple(version)
    ten = ver[0] < 11
    _enums(trt, ver)
    _logger_and_plugins(trt, ten)
    _parser(trt)
    _builder(trt, ten)
    _engine(trt, ten)
    if ten:
        _calibrators(trt)
    return trt


# -- enums and data types --------------------------------------------------------------------------

def _enums(trt, ver: tuple) -> None:
    ten = ver[0] < 11
    flags = list(_FLAGS_10) + ([("DISTRIBUTIVE_INDEPENDENCE", 28)] if ver >= (10, 12) else []) if ten else _FLAGS_11
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    if ten:
        net = [("EXPLICIT_BATCH", 0), ("STRONGLY_TYPED", 1)]
        net += [("PREFER_JIT_PYTHON_PLUGINS", 2), ("PREFER_AOT_PYTHON_PLUGINS", 3)] if ver >= (10, 12) else []
    else:
        net = [("STRONGLY_TYPED", 0), ("PREFER_JIT_PYTHON_PLUGINS", 1), ("PREFER_AOT_PYTHON_PLUGINS", 2)]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                         "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"],
                                      start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.ErrorCode = enum.IntEnum("ErrorCode", _PARSER_ERRORS, start=0)
    types_ = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4", "FP4"]
    trt.DataType = enum.IntEnum("DataType", types_ + (["E8M0"] if ver >= (10, 12) else []), start=0)
    d = trt.DataType
    for alias, member in (("float32", d.FLOAT), ("float16", d.HALF), ("bfloat16", d.BF16), ("int8", d.INT8),
                          ("int32", d.INT32), ("int64", d.INT64), ("bool", d.BOOL), ("uint8", d.UINT8),
                          ("fp8", d.FP8), ("int4", d.INT4), ("fp4", d.FP4)):
        setattr(trt, alias, member)
    np_of = {d.FLOAT: np.float32, d.HALF: np.float16, d.INT8: np.int8, d.INT32: np.int32, d.INT64: np.int64,
             d.BOOL: np.bool_, d.UINT8: np.uint8}

    def nptype(dt):
        if dt not in np_of:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np_of[dt]

    trt.nptype = nptype


# -- logging and the plugin registry ---------------------------------------------------------------

def _logger_and_plugins(trt, ten: bool) -> None:
    trt._log = []  # every message any logger of this module received: (severity, text)

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

        def log(self, severity, msg):
            trt._log.append((int(severity), str(msg)))

    def log(logger, severity, msg):
        (logger or Logger()).log(severity, msg)

    class PluginCreator:
        def __init__(self, name, version, namespace, fields):
            self.name, self.plugin_version, self.plugin_namespace = name, version, namespace
            self.field_names = [types.SimpleNamespace(name=n, type=t, required=r) for n, t, r in fields]

    class PluginRegistry:
        def __init__(self):
            self._creators = {}

        def get_creator(self, name, version, namespace=""):
            found = self._creators.get((name, str(version), namespace))
            if found is None:
                log(None, 1, f"IPluginRegistry::getCreator: Error Code 4: API Usage Error (Cannot find plugin: {name}, "
                             f"version: {version}, namespace:{namespace}.)")
            return found

        @property
        def plugin_creator_list(self):
            return list(self._creators.values())

    registry = PluginRegistry()

    def init_libnvinfer_plugins(logger, namespace):
        bundled = ["EfficientNMS_TRT", "EfficientNMS_Explicit_TF_TRT", "EfficientNMS_Implicit_TF_TRT"]
        for name in bundled + (["EfficientNMS_ONNX_TRT"] if ten else []):
            fields = EFFICIENT_NMS_FIELDS if name == "EfficientNMS_TRT" else []
            registry._creators[(name, "1", namespace)] = PluginCreator(name, "1", namespace, fields)
        return True  # the C function always returns true

    trt.Logger, trt._logmsg = Logger, log
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.get_plugin_registry = lambda: registry


# -- ONNX parser -----------------------------------------------------------------------------------

def _constants(proto) -> dict:
    """{name: numpy array} of the initializers and Constant node outputs."""
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _check_node(trt, n, consts: dict):
    """(ErrorCode, description, importer function) for a node TensorRT's parser refuses, or None."""
    import onnx.defs

    code = trt.ErrorCode
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        s = consts.get(n.input[1])
        if s is not None and (s.size == 0 or not np.all(s > 0)):  # NaN and FP16-underflowed 0 fail too
            return code.INVALID_NODE, SCALE_NOT_POSITIVE, "QuantDequantLinearHelper"
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and np.any(zp != 0):
            return code.INVALID_NODE, "Non-zero zero point is not supported.", "QuantDequantLinearHelper"
    elif n.op_type in ("Resize", "Upsample"):
        k = 2 if n.op_type == "Resize" else 1
        s = consts.get(n.input[k]) if len(n.input) > k and n.input[k] else None
        if s is not None and s.dtype != np.float32:  # scales are read with weightsToVector<float>
            return code.INVALID_NODE, f"Resize scales must be FLOAT weights, got {s.dtype}", "importResize"
    elif not onnx.defs.has(n.op_type, n.domain or ""):
        return _check_plugin(trt, n)
    return None


def _check_plugin(trt, n):
    attrs = {a.name: a for a in n.attribute}
    version = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "1"
    namespace = attrs["plugin_namespace"].s.decode() if "plugin_namespace" in attrs else ""
    reg = trt.get_plugin_registry()
    creator = reg._creators.get((n.op_type, version, namespace)) or reg._creators.get((n.op_type, version, n.domain))
    if creator is None:
        reg.get_creator(n.op_type, version, namespace)  # logs TensorRT's registry error
        return trt.ErrorCode.INVALID_NODE, PLUGIN_NOT_FOUND, "checkFallbackPluginImporter"
    missing = [f.name for f in creator.field_names if f.required and f.name not in attrs]
    if missing:
        trt._logmsg(None, 1, "PluginFieldCollection missing required fields: {" + ", ".join(missing) + "}")
        return trt.ErrorCode.UNSUPPORTED_NODE, "Could not create the plugin.", "importFallbackPluginImporter"
    return None


def _parser(trt) -> None:
    class ParserError:
        def __init__(self, code, desc, node=-1, name="", op="", func=""):
            self._code, self._desc, self._node, self._name, self._op, self._func = code, desc, node, name, op, func

        def code(self):
            return self._code

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

        def func(self):
            return self._func

        def __str__(self):
            tail = f"({self._func}): {self._code.name}: {self._desc}"
            if self._code == trt.ErrorCode.MODEL_DESERIALIZE_FAILED:
                return tail
            return f"In node {self._node} with name: {self._name} and operator: {self._op} {tail}"

    class OnnxParser(_Strict):
        _trt = trt

        def __init__(self, network, logger):
            self._network, self._logger, self._errors = network, logger, []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

        def clear_errors(self):
            self._errors = []

        def parse_from_file(self, path):
            import onnx

            try:
                proto = onnx.load(path)
            except Exception as e:  # noqa: BLE001
                self._errors.append(ParserError(trt.ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX: {e}",
                                                func="parseFromFile"))
                return False
            consts = _constants(proto)
            for i, n in enumerate(proto.graph.node):
                bad = _check_node(trt, n, consts)
                if bad is not None:
                    self._errors.append(ParserError(bad[0], bad[1], i, n.name, n.op_type, bad[2]))
                    trt._logmsg(self._logger, 1, str(self._errors[-1]))
                    return False
            self._network._load(path, proto)
            return True

        def parse(self, model, path=None):
            import os
            import tempfile

            with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
                f.write(bytes(model))
            try:
                return self.parse_from_file(path or f.name)
            finally:
                os.unlink(f.name)

    trt.OnnxParser, trt.ParserError = OnnxParser, ParserError


# -- builder, config, profiles, timing cache -------------------------------------------------------

def _builder(trt, ten: bool) -> None:
    class IOptimizationProfile(_Strict):
        _trt = trt

        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's own argument names
            self._shapes[input] = [[int(v) for v in min], [int(v) for v in opt], [int(v) for v in max]]

        def get_shape(self, input):  # noqa: A002
            return self._shapes.get(input, [])

        def _valid(self):
            return all(all(a <= b <= c for a, b, c in zip(*s)) for s in self._shapes.values())

    class ITimingCache(_Strict):
        _trt = trt

        def __init__(self, header: dict, payload: bytes):
            self._header, self._payload = header, payload

        def serialize(self):
            return memoryview(_CACHE_MAGIC + json.dumps(self._header).encode() + b"\n" + self._payload)

    class INetworkDefinition(_Strict):
        _trt = trt

        def __init__(self, flags):
            self._flags, self._path, self._proto = flags, None, None

        def _load(self, path, proto):
            self._path, self._proto = str(path), proto

        @property
        def num_layers(self):
            return len(self._proto.graph.node) if self._proto is not None else 0

    class IBuilderConfig(_Strict):
        _trt = trt
        _settable = ("builder_optimization_level", "profiling_verbosity", "max_aux_streams", "avg_timing_iterations",
                     "hardware_compatibility_level") + (("int8_calibrator",) if ten else ())

        def __init__(self):
            self._flags, self._pools, self._profiles, self._cache = set(), {}, [], None
            self._calibrator, self._calib_profile = None, None
            self.builder_optimization_level = 3
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY

        def set_memory_pool_limit(self, pool, size):
            self._pools[int(pool)] = int(size)

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag(): incompatible function arguments (takes a tensorrt.BuilderFlag)")
            self._flags.add(flag.name)

        def clear_flag(self, flag):
            self._flags.discard(flag.name)

        def get_flag(self, flag):
            return flag.name in self._flags

        def add_optimization_profile(self, profile):
            if not profile._valid():
                trt._logmsg(None, 1, "IBuilderConfig::addOptimizationProfile: Error Code 3: API Usage Error "
                                     "(Parameter check failed, condition: profile->isValid())")
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized):
            data = bytes(serialized)
            if not data:
                return ITimingCache({"trt": trt.__version__, "gpu": trt._fake_gpu}, b"")
            head, _, payload = data[len(_CACHE_MAGIC):].partition(b"\n")
            try:
                header = json.loads(head) if data.startswith(_CACHE_MAGIC) else None
            except ValueError:
                header = None
            if not header or header.get("trt") != trt.__version__:
                trt._logmsg(None, 1, "Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not "
                                     "match; the timing cache will not be used!")
                return None
            return ITimingCache(header, payload)

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, ITimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments")
            if cache._header.get("gpu") != trt._fake_gpu and not ignore_mismatch:
                trt._logmsg(None, 1, "IBuilderConfig::setTimingCache: Error Code 3: API Usage Error (the CUDA device "
                                     "property in the timing cache differs from the current device)")
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    if ten:
        def _get_cal(self):
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            return self._calibrator

        def _set_cal(self, value):
            warnings.warn("Use Deprecated in TensorRT 10.1. Superseded by explicit quantization. instead.",
                          DeprecationWarning, stacklevel=2)
            object.__setattr__(self, "_calibrator", value)

        def set_calibration_profile(self, profile):
            if profile is not None and not profile._valid():
                return False
            self._calib_profile = profile
            return True

        IBuilderConfig.int8_calibrator = property(_get_cal, _set_cal)
        IBuilderConfig.set_calibration_profile = set_calibration_profile
        IBuilderConfig.get_calibration_profile = lambda self: self._calib_profile

    class Builder(_Strict):
        _trt = trt

        def __init__(self, logger):
            self._logger = logger

        def create_network(self, flags=0):
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            record = _build(trt, self._logger, network, config)
            return None if record is None else memoryview(json.dumps(record).encode())

    if ten:
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)
    trt.Builder, trt.IBuilderConfig, trt.ITimingCache = Builder, IBuilderConfig, ITimingCache
    trt.IOptimizationProfile, trt.INetworkDefinition = IOptimizationProfile, INetworkDefinition


def _io(proto) -> tuple:
    """(input name, input dims with -1, [(output name, onnx elem type, dims)])."""
    inits = {i.name for i in proto.graph.initializer}
    inp = [i for i in proto.graph.input if i.name not in inits][0]
    dims = [d.dim_value if d.dim_value else -1 for d in inp.type.tensor_type.shape.dim]
    outs = [(o.name, o.type.tensor_type.elem_type, [d.dim_value if d.dim_value else -1
                                                    for d in o.type.tensor_type.shape.dim]) for o in proto.graph.output]
    return inp.name, dims, outs


def _build(trt, logger, network, config):
    """What TensorRT would build, as a JSON-able record (or None, logged, where it fails)."""
    if network._proto is None:
        trt._logmsg(logger, 1, "Network must have at least one output")
        return None
    proto = network._proto
    in_name, in_dims, _ = _io(proto)
    profiles = [p._shapes for p in config._profiles]
    if -1 in in_dims and not any(in_name in p for p in profiles):
        trt._logmsg(logger, 1, "IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network has dynamic "
                               "or shape inputs, but no optimization profile has been defined.)")
        return None
    strongly = bool(network._flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))) or \
        not hasattr(trt.BuilderFlag, "INT8")  # 11.x: always strongly typed
    qdq = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    calib = config._calibrator if "INT8" in config._flags else None
    calibration = _calibrate(trt, logger, calib, config, in_name, in_dims) if calib is not None else None
    if qdq:
        mode = "qdq" if (strongly or "INT8" in config._flags) and trt._fake_int8_kernels else "float"
    else:
        mode = "calibrated" if calib is not None else "float"
    half = "FP16" in config._flags or (strongly and any(i.data_type == 10 for i in proto.graph.initializer))
    plugins = [n.op_type for n in proto.graph.node if not _standard(n)]
    if config._cache is not None:
        config._cache._payload += b"+entries"
    return {"trt": trt.__version__, "onnx": network._path, "strongly_typed": strongly, "flags": sorted(config._flags),
            "int8": mode != "float", "mode": mode, "half": half, "qdq": qdq, "pools": config._pools,
            "profiles": profiles, "calibration": calibration, "plugins": plugins,
            "timing_cache": config._cache is not None, "verbosity": int(config.profiling_verbosity)}


def _standard(n) -> bool:
    import onnx.defs

    return onnx.defs.has(n.op_type, n.domain or "")


def _calibrate(trt, logger, calib, config, in_name: str, in_dims: list) -> dict:
    """TensorRT 10's calibration loop: the cache first, else batches at the calibration shape."""
    cached = calib.read_calibration_cache()
    if cached is not None and len(bytes(cached)):
        return {"from_cache": True, "batches": 0, "images": 0}
    if -1 in in_dims:
        prof = config._calib_profile
        if prof is None:
            trt._logmsg(logger, 2, "Calibration Profile is not defined. Calibrating with Profile 0")
            prof = config._profiles[0]
        shape = prof._shapes[in_name][1]  # MIN and MAX are overwritten by OPT
    else:
        shape = in_dims
    calib.get_batch_size()  # asked, but does not shape explicit-batch inputs
    batches = images = 0
    checksum = 0.0
    while True:
        ptrs = calib.get_batch([in_name])
        if ptrs is None or (isinstance(ptrs, (list, tuple)) and len(ptrs) == 0):
            break
        if not isinstance(ptrs, (list, tuple)) or len(ptrs) != 1:
            trt._logmsg(logger, 1, f"[ERROR] Exception caught in get_batch(): cannot cast {type(ptrs).__name__}")
            break
        x = _from_address(int(ptrs[0]), shape, np.float32)
        checksum += float(x.astype(np.float64).sum())
        batches += 1
        images += shape[0]
    v = "".join(f"{int(p):02d}" for p in trt.__version__.split(".")[:3])
    calib.write_calibration_cache(memoryview(f"TRT-{v}-EntropyCalibration2\nimages: {images}\n".encode()))
    return {"from_cache": False, "batches": batches, "images": images, "shape": list(shape), "checksum": checksum}


# -- engine inspector JSON -------------------------------------------------------------------------

# (10.x "Format/Datatype", 11.x "Format") of the layer tensors, by 11.x "Datatype"
_FORMATS = {"Int8": ("Four wide channel vectorized row major Int8 format", "Four wide channel vectorized row major"),
            "Half": ("Channel major FP16 format where channel % 8 == 0", "Channel major format where channel % 8 == 0"),
            "Float": ("Row major linear FP32", "Row major linear"),
            "Int32": ("Row major linear Int32", "Row major linear")}


def _tensor(name: str, dtype: str, eleven: bool) -> dict:
    t = {"Name": name, "Location": "Device", "Dimensions": []}
    if eleven:
        t.update({"Format": _FORMATS[dtype][1], "Datatype": dtype})
    else:
        t["Format/Datatype"] = _FORMATS[dtype][0]
    return t


def _layers(proto, mode: str, half: bool, eleven: bool) -> list:
    """DETAILED layer records: one fused layer per Conv ("<weight> + <DQ> + <Conv>"), the
    activation Q/DQ as reformat layers, the rest as one Myelin node, plugins as their own."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name: i for i in proto.graph.initializer}
    flt = "Half" if half else "Float"
    layers, rest = [], []
    for n in proto.graph.node:
        if n.op_type == "Conv":
            w, x = producer.get(n.input[1]), producer.get(n.input[0])
            wq = w is not None and w.op_type == "DequantizeLinear"
            parts = [w.input[0], w.name, n.name] if wq else [n.input[1], n.name]
            int8 = mode == "calibrated" or (mode == "qdq" and wq and x is not None and x.op_type == "DequantizeLinear")
            dt = "Int8" if int8 else flt
            winit = inits.get(parts[0])
            count = int(np.prod(winit.dims)) if winit is not None else 0
            layers.append({"Name": " + ".join(parts), "LayerType": "CaskConvolution",
                           "Inputs": [_tensor(n.input[0], dt, eleven)], "Outputs": [_tensor(n.output[0], dt, eleven)],
                           "ParameterType": "Convolution", "Weights": {"Type": dt, "Count": count},
                           "Bias": {"Type": "Float", "Count": 0}, "TacticValue": "0x0000000000000000", "StreamId": 0,
                           "Metadata": f"[ONNX Layer: {n.name}]"})
        elif n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            layers.append({"Name": n.name, "LayerType": "Reformat", "ParameterType": "Reformat", "Origin": "QDQ",
                           "Inputs": [_tensor(n.input[0], flt, eleven)], "Outputs": [_tensor(n.output[0], "Int8",
                                                                                            eleven)],
                           "TacticValue": "0x0000000000000000", "StreamId": 0})
        elif not _standard(n):
            layers.append({"Name": n.name, "LayerType": "PluginV2", "Inputs": [_tensor(i, "Float", eleven)
                                                                               for i in n.input],
                           "Outputs": [_tensor(o, "Float", eleven) for o in n.output], "StreamId": 0})
        elif n.op_type not in ("DequantizeLinear", "Constant"):
            rest.append(n.name)
    if rest:
        layers.append({"Name": "{ForeignNode[" + rest[0] + "..." + rest[-1] + "]}", "LayerType": "Myelin",
                       "Inputs": [], "Outputs": [], "TacticValue": "0x0000000000000000", "StreamId": 0})
    return layers


def _engine_json(engine, detailed: bool) -> dict:
    eleven = not hasattr(engine._trt.BuilderFlag, "INT8")
    rec = engine._record
    layers = _layers(engine._proto, rec["mode"], rec["half"], eleven)
    out = {"Layers": layers if detailed else [lay["Name"] for lay in layers]}
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if not eleven:
        out["Bindings"] = names
        return out
    io = []
    for name in names:
        prof = engine.get_tensor_profile_shape(name, 0) if name == engine._in_name else None
        io.append({"Name": name, "IOMode": "Input" if name == engine._in_name else "Output",
                   "DataType": engine.get_tensor_dtype(name).name.capitalize(),
                   "Dimensions": list(engine.get_tensor_shape(name)), "Location": "Device",
                   "IsShapeInferenceIO": False,
                   "ProfileInfo": [{"MinShape": prof[0], "OptShape": prof[1], "MaxShape": prof[2],
                                    "Format": "Row major linear FP32 format (kLINEAR)"}] if prof else []})
    out["I/O Tensors"] = io
    return out


# -- engine, execution context, runtime ------------------------------------------------------------

def _engine(trt, ten: bool) -> None:
    class EngineInspector(_Strict):
        _trt = trt
        _settable = ("execution_context", "error_recorder")

        def __init__(self, engine):
            self._engine = engine

        def get_engine_information(self, format):  # noqa: A002
            detailed = self._engine._record.get("verbosity") == int(trt.ProfilingVerbosity.DETAILED)
            info = _engine_json(self._engine, detailed)
            if format == trt.LayerInformationFormat.JSON:
                return json.dumps(info)
            return "\n".join(str(lay if isinstance(lay, str) else lay["Name"]) for lay in info["Layers"])

        def get_layer_information(self, layer_index, format):  # noqa: A002
            info = json.loads(self.get_engine_information(trt.LayerInformationFormat.JSON))
            return json.dumps(info["Layers"][layer_index])

    class IExecutionContext(_Strict):
        _trt = trt
        _settable = ("debug_sync", "name", "nvtx_verbosity")

        def __init__(self, engine):
            self._engine, self._shapes, self._addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            e = self._engine
            shape = [int(v) for v in shape]
            if name != e._in_name:
                trt._logmsg(None, 1, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter "
                                     f"check failed, condition: {name} is not an input tensor)")
                return False
            lo, _, hi = e.get_tensor_profile_shape(name, 0)
            bad = len(shape) != len(e._in_dims) or any(d != -1 and s != d for s, d in zip(shape, e._in_dims)) or \
                any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi))
            if bad:
                trt._logmsg(None, 1, f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter "
                                     f"check failed. Supplied binding dimension {shape} for bindings[0] exceed min ~ "
                                     f"max range {lo} ~ {hi})")
                return False
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            e = self._engine
            if name == e._in_name:
                return self._shapes.get(name, tuple(e._in_dims))
            b = self._shapes.get(e._in_name, tuple(e._in_dims))[0]
            return tuple(b if v == -1 else v for v in e._out_dims[name])

        def set_tensor_address(self, name, memory):
            if name not in self._engine._names:
                trt._logmsg(None, 1, f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Given "
                                     f"invalid tensor name: {name})")
                return False
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name):
            return self._addr.get(name, 0)

        def execute_async_v3(self, stream_handle):
            e = self._engine
            missing = [n for n in e._names if not self._addr.get(n)] + \
                ([] if e._in_name in self._shapes or -1 not in e._in_dims else [e._in_name + " (shape)"])
            if missing:
                trt._logmsg(None, 1, f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (not set: "
                                     f"{missing})")
                return False
            shape = self.get_tensor_shape(e._in_name)
            x = _from_address(self._addr[e._in_name], shape, np.float32).copy()
            for name, val in e._run(x).items():
                if tuple(val.shape) != tuple(self.get_tensor_shape(name)):
                    return False
                _from_address(self._addr[name], val.shape, val.dtype)[...] = val
            return True

    class ICudaEngine(_Strict):
        _trt = trt

        def __init__(self, record):
            import onnx

            self._record = record
            self._proto = onnx.load(record["onnx"])
            self._in_name, self._in_dims, outs = _io(self._proto)
            et = {1: trt.DataType.FLOAT, 6: trt.DataType.INT32, 7: trt.DataType.INT64, 10: trt.DataType.HALF}
            self._outs = [(n, et[t]) for n, t, _ in outs]
            self._out_dims = {n: d for n, _, d in outs}
            self._names = [self._in_name] + [n for n, _ in self._outs]
            self._sess = None

        def _run(self, x) -> dict:
            return _run_onnx(self, x)

        @property
        def num_io_tensors(self):
            return len(self._names)

        @property
        def num_optimization_profiles(self):
            return max(1, len(self._record["profiles"]))

        def get_tensor_name(self, index):
            return self._names[index]

        def __getitem__(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            if name not in self._names:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name == self._in_name else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT if name == self._in_name else dict(self._outs)[name]

        def get_tensor_shape(self, name):
            return tuple(self._in_dims) if name == self._in_name else tuple(self._out_dims[name])

        def get_tensor_profile_shape(self, name, profile_index):
            profiles = self._record["profiles"]
            if name != self._in_name:
                return []
            if not profiles or name not in profiles[profile_index]:
                return [list(self._in_dims)] * 3  # static input: the implicit profile
            return profiles[profile_index][name]

        @property
        def device_memory_size_v2(self):
            return 1 << 20

        def create_execution_context(self):
            return IExecutionContext(self)

        def create_engine_inspector(self):
            return EngineInspector(self)

    if ten:
        ICudaEngine.device_memory_size = property(lambda self: 1 << 20)

    class Runtime(_Strict):
        _trt = trt

        def __init__(self, logger):
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            try:
                record = json.loads(bytes(serialized_engine))
            except ValueError:
                trt._logmsg(self._logger, 1, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                                             "(Serialization assertion magicTagRead == kMAGIC_TAG failed.)")
                return None
            if record.get("trt") != trt.__version__:
                trt._logmsg(self._logger, 1, "The engine plan file is not compatible with this version of TensorRT, "
                                             f"expecting library version {trt.__version__} got {record.get('trt')}")
                return None
            for op in record.get("plugins", []):
                if trt.get_plugin_registry()._creators.get((op, "1", "")) is None:
                    trt._logmsg(self._logger, 1, f"getPluginCreator could not find plugin: {op} version: 1")
                    trt._logmsg(self._logger, 1, "Error Code 1: Serialization (Serialization assertion creator failed."
                                                 "Cannot deserialize plugin since corresponding IPluginCreator not "
                                                 "found in Plugin Registry)")
                    return None
            return ICudaEngine(record)

    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext, trt.EngineInspector = (Runtime, ICudaEngine,
                                                                                 IExecutionContext, EngineInspector)


def _run_onnx(engine, x) -> dict:
    """The engine's outputs for input ``x``: ONNX Runtime on the source graph, with any
    EfficientNMS_TRT node computed in numpy on the tensors ONNX Runtime gives it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    proto = engine._proto
    plugin = [n for n in proto.graph.node if not _standard(n)]
    if engine._sess is None:
        m = proto
        if plugin:
            m = type(proto)()
            m.CopyFrom(proto)
            keep = [n for n in m.graph.node if _standard(n)]
            del m.graph.node[:]
            m.graph.node.extend(keep)
            del m.graph.output[:]
            m.graph.output.extend(helper.make_tensor_value_info(i, TensorProto.FLOAT, None) for i in plugin[0].input)
        engine._sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    sess = engine._sess
    vals = sess.run(None, {engine._in_name: x})
    names = [o.name for o in sess.get_outputs()]
    if not plugin:
        return dict(zip(names, vals))
    got = dict(zip(names, vals))
    attrs = {a.name: helper.get_attribute_value(a) for a in plugin[0].attribute}
    return dict(zip(plugin[0].output, _efficient_nms(got[plugin[0].input[0]], got[plugin[0].input[1]], attrs)))


def _efficient_nms(boxes, scores, attrs):
    """EfficientNMS_TRT (box_coding 0, class-aware unless class_agnostic) in numpy."""
    k, thr, iou_t = int(attrs["max_output_boxes"]), float(attrs["score_threshold"]), float(attrs["iou_threshold"])
    agnostic = bool(attrs.get("class_agnostic", 0))
    bsz = scores.shape[0]
    num = np.zeros((bsz, 1), np.int32)
    out_b, out_s = np.zeros((bsz, k, 4), np.float32), np.zeros((bsz, k), np.float32)
    out_c = np.zeros((bsz, k), np.int32)
    for b in range(bsz):
        rows, cls = np.nonzero(scores[b] > thr)
        order = np.argsort(-scores[b][rows, cls], kind="stable")
        keep = []
        for j in order:
            i, c = int(rows[j]), int(cls[j])
            if len(keep) == k:
                break
            if all((c2 != c and not agnostic) or _iou(boxes[b, i], boxes[b, i2]) <= iou_t for i2, c2 in keep):
                keep.append((i, c))
        num[b, 0] = len(keep)
        for t, (i, c) in enumerate(keep):
            out_b[b, t], out_s[b, t], out_c[b, t] = boxes[b, i], scores[b, i, c], c
    return num, out_b, out_s, out_c


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# -- 10.x calibrators ------------------------------------------------------------------------------

def _calibrators(trt) -> None:
    class IInt8Calibrator:
        def __init__(self):
            pass

        def get_batch_size(self):
            return 1

        def get_algorithm(self):
            return trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2

    trt.IInt8Calibrator = IInt8Calibrator
    for name in ("IInt8LegacyCalibrator", "IInt8EntropyCalibrator", "IInt8EntropyCalibrator2",
                 "IInt8MinMaxCalibrator"):
        setattr(trt, name, type(name, (IInt8Calibrator,), {}))
    trt.CalibrationAlgoType = enum.IntEnum("CalibrationAlgoType", ["LEGACY_CALIBRATION", "ENTROPY_CALIBRATION",
                                                                   "ENTROPY_CALIBRATION_2", "MINMAX_CALIBRATION"],
                                           start=0)


def _from_address(addr: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    buf = (ctypes.c_byte * (n * dtype.itemsize)).from_address(addr)
    return np.frombuffer(buf, dtype=dtype, count=n).reshape(shape)
