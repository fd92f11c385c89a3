"""Fake ``tensorrt`` modules with exactly the API surface of TensorRT 10.x and 11.x.

Built from the TensorRT 10.16 / 11.1 binding diff in docs/int8-tensorrt.md, section 1:
anything 11 removed (``BuilderFlag.INT8/FP16``, ``int8_calibrator``, ``EXPLICIT_BATCH``,
calibrator classes, ``device_memory_size``, ``platform_has_fast_*``, ...) simply does not
exist on the 11 fake, so code that touches it fails with AttributeError, and every object
refuses attributes its real counterpart does not have.  The binding-index API (gone since
10.0) exists on neither.

Behaviour is small but real: the parser reads the ONNX file, the "plan" is a JSON record of
what was built (precisions, flags, profile), the inspector reports INT8 layers only when
TensorRT would produce them (Q/DQ in a strongly typed network, or the INT8 flag with Q/DQ or
a calibrator), and an execution context runs the source ONNX on ONNX Runtime, reading and
writing the bound addresses (host memory in these tests).
"""
from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

COMMON_FLAGS = ["TF32", "REFIT", "SPARSE_WEIGHTS", "GPU_FALLBACK", "DEBUG", "DISABLE_TIMING_CACHE",
                "EDITABLE_TIMING_CACHE", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS",
                "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING", "REFIT_INDIVIDUAL", "STRICT_NANS",
                "MONITOR_MEMORY", "DISTRIBUTIVE_INDEPENDENCE", "DIRECT_IO"]
FLAGS_10_ONLY = ["FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
                 "CALIBRATE_BEFORE_FUSION"]
REMOVED_IN_11 = {
    "module": ["IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
               "IInt8LegacyCalibrator", "CalibrationAlgoType", "IAlgorithmSelector"],
    "BuilderFlag": FLAGS_10_ONLY,
    "NetworkDefinitionCreationFlag": ["EXPLICIT_BATCH"],
    "IBuilderConfig": ["int8_calibrator", "set_calibration_profile", "get_calibration_profile",
                       "set_quantization_flag", "get_quantization_flag", "clear_quantization_flag", "algorithm_selector"],
    "Builder": ["platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32"],
    "ICudaEngine": ["device_memory_size", "get_device_memory_size_for_profile",
                    "create_execution_context_without_device_memory", "weight_streaming_budget"],
    "OnnxParser": ["supports_model", "parse_with_weight_descriptors"],
}


class _Strict:
    """Objects that refuse attributes their TensorRT counterpart does not have."""

    _settable: tuple = ()

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._settable:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' (fake TensorRT "
                                 f"{self._trt.__version__})")
        object.__setattr__(self, name, value)


def make_fake_trt(version: str = "10.16.1"):
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__fyexport_fake__ = True
    ten = major < 11

    trt.BuilderFlag = enum.IntEnum("BuilderFlag", COMMON_FLAGS + (FLAGS_10_ONLY if ten else []), start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", (["EXPLICIT_BATCH"] if ten else []) + ["STRONGLY_TYPED",
                                                                              "PREFER_AOT_PYTHON_PLUGINS",
                                                                              "PREFER_JIT_PYTHON_PLUGINS"], start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "TACTIC_DRAM"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16",
                                             "INT64", "INT4"], start=0)
    np_of = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.INT32: np.int32, trt.DataType.BOOL: np.bool_, trt.DataType.INT64: np.int64}
    trt.nptype = lambda dt: np_of[dt]

    class Logger:
        VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = 4, 3, 2, 1, 0

        def __init__(self, severity=2):
            self.severity = severity

    class OptimizationProfile(_Strict):
        _trt = trt

        def __init__(self):
            self._shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's own argument names
            self._shapes[name] = [list(min), list(opt), list(max)]

    class TimingCache(_Strict):
        _trt = trt

        def __init__(self, data: bytes):
            self._data = data

        def serialize(self):
            return memoryview(self._data + b"+fake-timing")

    class IBuilderConfig(_Strict):
        _trt = trt
        _settable = ("builder_optimization_level", "profiling_verbosity", "max_aux_streams",
                     "hardware_compatibility_level") + (("int8_calibrator", "algorithm_selector") if ten else ())

        def __init__(self):
            self._flags, self._pools, self._profiles, self._cache = set(), {}, [], None
            self.builder_optimization_level = 3
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            if ten:
                self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            self._pools[int(pool)] = int(size)

        def set_flag(self, flag):
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError("set_flag takes a BuilderFlag")
            self._flags.add(flag.name)

        def get_flag(self, flag):
            return flag.name in self._flags

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    if ten:
        def set_calibration_profile(self, profile):
            self._calib_profile = profile
        IBuilderConfig.set_calibration_profile = set_calibration_profile

    class Network(_Strict):
        _trt = trt

        def __init__(self, flags):
            self._flags = flags
            self._onnx = None

    class OnnxParser(_Strict):
        _trt = trt

        def __init__(self, network, logger):
            self._network, self._errors = network, []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

        def parse_from_file(self, path):
            import onnx

            try:
                onnx.load(path)
            except Exception as e:  # noqa: BLE001
                self._errors.append(f"fake parser: {e}")
                return False
            self._network._onnx = path
            return True

        def supports_model_v2(self, model):
            return True

    if ten:
        OnnxParser.supports_model = lambda self, model: (True, [])

    class Builder(_Strict):
        _trt = trt

        def __init__(self, logger):
            self._logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            import onnx

            proto = onnx.load(network._onnx)
            qdq = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
            strongly = bool(network._flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            calib = getattr(config, "int8_calibrator", None) if ten else None
            if calib is not None:  # run the calibrator as TensorRT would
                while calib.get_batch(["images"]) is not None:
                    pass
                calib.write_calibration_cache(b"TRT-101600-EntropyCalibration2\n")
            int8 = (qdq and (strongly or "INT8" in config._flags)) or ("INT8" in config._flags and calib is not None)
            record = {"onnx": network._onnx, "strongly_typed": strongly, "flags": sorted(config._flags),
                      "int8": int8, "qdq": qdq, "pools": config._pools,
                      "profiles": [p._shapes for p in config._profiles]}
            return memoryview(json.dumps(record).encode())

    class EngineInspector(_Strict):
        _trt = trt

        def __init__(self, record):
            self._record = record

        def get_engine_information(self, fmt):
            prec = "Int8" if self._record["int8"] else "Float"
            layers = [{"Name": "conv", "Outputs": [{"Format/Datatype": f"{prec} NCHW"}]},
                      {"Name": "decode", "Outputs": [{"Format/Datatype": "Float NCHW"}]}]
            return json.dumps({"Layers": layers, "Bindings": ["images", "output"]})

    class ExecutionContext(_Strict):
        _trt = trt

        def __init__(self, engine):
            self._engine, self._shapes, self._addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self._shapes:
                return self._shapes[name]
            return self._engine._out_shape(name, self._shapes)

        def set_tensor_address(self, name, ptr):
            self._addr[name] = int(ptr)
            return True

        def infer_shapes(self):
            return []

        def execute_async_v3(self, stream_handle):
            return self._run()

        def execute_v2(self, bindings):
            return self._run()

        def _run(self):
            e = self._engine
            x = _from_address(self._addr[e._in_name], self._shapes[e._in_name], np.float32).copy()
            outs = e._session().run(None, {e._in_name: x})
            for (name, _), val in zip(e._outs, outs):
                dst = _from_address(self._addr[name], val.shape, val.dtype)
                dst[...] = val
            return True

    class ICudaEngine(_Strict):
        _trt = trt

        def __init__(self, record):
            import onnx

            self._record = record
            proto = onnx.load(record["onnx"])
            inits = {i.name for i in proto.graph.initializer}
            inp = [i for i in proto.graph.input if i.name not in inits][0]
            self._in_name = inp.name
            self._in_shape = tuple(d.dim_value if d.dim_value else -1 for d in inp.type.tensor_type.shape.dim)
            et = {1: trt.DataType.FLOAT, 6: trt.DataType.INT32, 7: trt.DataType.INT64, 10: trt.DataType.HALF}
            self._outs = [(o.name, et[o.type.tensor_type.elem_type]) for o in proto.graph.output]
            self._out_dims = {o.name: [d.dim_value if d.dim_value else -1 for d in o.type.tensor_type.shape.dim]
                              for o in proto.graph.output}
            self._sess = None

        def _session(self):
            import onnxruntime as ort

            if self._sess is None:
                self._sess = ort.InferenceSession(self._record["onnx"], providers=["CPUExecutionProvider"])
            return self._sess

        def _out_shape(self, name, in_shapes):
            b = in_shapes.get(self._in_name, self._in_shape)[0]
            return tuple(b if v == -1 else v for v in self._out_dims[name])

        @property
        def num_io_tensors(self):
            return 1 + len(self._outs)

        def get_tensor_name(self, i):
            return self._in_name if i == 0 else self._outs[i - 1][0]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self._in_name else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT if name == self._in_name else dict(self._outs)[name]

        def get_tensor_shape(self, name):
            return self._in_shape if name == self._in_name else tuple(self._out_dims[name])

        def get_tensor_profile_shape(self, name, profile):
            return self._record["profiles"][profile][name]

        @property
        def device_memory_size_v2(self):
            return 1 << 20

        def create_execution_context(self):
            return ExecutionContext(self)

        def create_engine_inspector(self):
            return EngineInspector(self._record)

    if ten:
        ICudaEngine.device_memory_size = property(lambda self: 1 << 20)
        ICudaEngine.create_execution_context_without_device_memory = lambda self: ExecutionContext(self)

    class Runtime(_Strict):
        _trt = trt

        def __init__(self, logger):
            self._logger = logger

        def deserialize_cuda_engine(self, data):
            try:
                return ICudaEngine(json.loads(bytes(data)))
            except (ValueError, KeyError):
                return None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.IBuilderConfig, trt.ICudaEngine = IBuilderConfig, ICudaEngine

    if ten:
        class IInt8Calibrator:
            pass

        class IInt8EntropyCalibrator2(IInt8Calibrator):
            def __init__(self):
                pass

        trt.IInt8Calibrator, trt.IInt8EntropyCalibrator2 = IInt8Calibrator, IInt8EntropyCalibrator2
        for name in ("IInt8EntropyCalibrator", "IInt8MinMaxCalibrator", "IInt8LegacyCalibrator", "IAlgorithmSelector"):
            setattr(trt, name, type(name, (IInt8Calibrator,), {}))
        trt.CalibrationAlgoType = enum.IntEnum("CalibrationAlgoType", ["LEGACY_CALIBRATION", "ENTROPY_CALIBRATION",
                                                                       "ENTROPY_CALIBRATION_2", "MINMAX_CALIBRATION"])
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_fast_int8 = property(lambda self: True)
    return trt


def _from_address(addr: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    buf = (ctypes.c_byte * (n * dtype.itemsize)).from_address(addr)
    return np.frombuffer(buf, dtype=dtype, count=n).reshape(shape)
