"""The TensorRT runner: runs ``.engine`` files on the GPU (and their DLA layers on the DLA core
they were built for).

Device memory, the CUDA stream and the CUDA events that time the engine come from the CUDA
runtime through Polygraphy's wrapper (``polygraphy.cuda``: ``DeviceArray``, ``Stream``, and
libcudart's event calls), never from PyTorch, which may be a CPU build on a GPU machine
(JetPack).  I/O goes by tensor name (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``): calls common to TensorRT 10 and 11, and the
input is given in the engine's own input data type.  Before deserializing, the GPU asked for
(``cuda:N``) is made current, the sidecar ``<engine>.json`` is checked against this machine's
TensorRT and that GPU (plans do not move between versions or GPU architectures), and
TensorRT's plugins are registered (engines with ``EfficientNMS_TRT`` need them).  TensorRT
reports a refused shape or address by returning False, not by raising: every such call is
checked, and the base runner never sends a batch outside the engine's profile.
"""
from __future__ import annotations

import ctypes
from typing import Callable

import numpy as np

from ..core.config import ConfigError
from ..core.errors import FyexportError, InputError
from ..trt import dla_supported, import_trt, init_plugins, polygraphy_logs, trt_logger
from ..trt.sidecar import check_compatible, read_sidecar
from .base import Runner, RunnerInfo


class TrtRunner(Runner):
    def __init__(self, path, device: str = "auto"):
        super().__init__()
        from ..core.errors import check_file

        self.path = check_file(path, "TensorRT engine")
        self.meta = read_sidecar(self.path)
        self.device = "cuda" if device in ("auto", None) else device
        shape = ((self.meta.engine.input if self.meta.engine else None) or {}).get("shape") or [None, 3, None, None]
        img = self.meta.img_size or shape[2:]
        self.info = RunnerInfo(
            path=str(path), runtime="tensorrt", precision=self.meta.precision or "?", device=self.device,
            input_hw=tuple(img) if img and None not in img else (0, 0),
            batch=None if (shape[0] in (None, -1)) else int(shape[0]), nc=int(self.meta.nc or 0),
            names=list(self.meta.names or ()), size_mb=round(self.path.stat().st_size / 1e6, 2), prune=self.meta.prune,
            graph_nms=self.meta.nms, meta=self.meta,
        )
        self._buffers: dict = {}
        self._events: list = []
        self.stream = None

    def _load(self) -> None:
        from ..core.machine import device_index, gpu_count, gpu_facts, select_gpu

        onnx_facts = (self.meta.engine.onnx if self.meta.engine else None) or {}
        trt = import_trt(onnx_hint=onnx_facts.get("file", "model.onnx"))
        if not self.device.startswith("cuda"):
            raise ConfigError("device", f"is {self.device}, but TensorRT engines run on the GPU", "Use cuda or cuda:N")
        if gpu_count() == 0:
            raise InputError(f"{self.path}: TensorRT engines need an NVIDIA GPU, and the CUDA runtime sees none here")
        index = device_index(self.device)
        select_gpu(index)
        check_compatible(self.meta, trt, self.path, gpu=gpu_facts(with_driver=False, index=index))
        self.trt = trt
        with polygraphy_logs(f"{self.path}: TensorRT could not load the engine", self._deserialize_hint()) as errors:
            init_plugins(trt)  # an engine with EfficientNMS_TRT deserializes only with the plugin registered
            self.runtime = trt.Runtime(trt_logger())
            self._set_dla_core(trt)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise FyexportError(f"{self.path}: TensorRT could not deserialize the engine"
                                    + (f" ({' | '.join(errors)})" if errors else ""), self._deserialize_hint())
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise FyexportError(f"{self.path}: TensorRT could not create an execution context"
                                    + (f" ({' | '.join(errors)})" if errors else " (out of device memory?)"))
        self._io(trt)

    def _set_dla_core(self, trt) -> None:
        """An engine built for a DLA core runs on that core (the sidecar's ``dla_core``)."""
        core = self.meta.engine.dla_core if self.meta.engine else None
        if core is None:
            return
        cores = self.runtime.num_DLA_cores
        if not dla_supported(trt) or core >= cores:
            raise InputError(f"{self.path}: built for DLA core {core}, and this machine has "
                             f"{cores or 'no'} DLA core(s) under TensorRT {trt.__version__}",
                             "Run it on the Jetson it was built for, or rebuild without a DLA core")
        self.runtime.DLA_core = int(core)

    def _io(self, trt) -> None:
        from polygraphy import cuda

        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append((name, dtype))
        if len(self.inputs) != 1:
            raise InputError(f"{self.path}: expected one image input, found {len(self.inputs)}")
        in_name = self.inputs[0][0]
        shape = tuple(self.engine.get_tensor_shape(in_name))
        if self.info.input_hw == (0, 0):
            self.info.input_hw = shape[2:]
        self.info.batch = None if shape[0] == -1 else int(shape[0])
        self.info.batch_range = self._profile_batches(in_name, shape)
        self.info.outputs = tuple(name for name, _ in self.outputs)
        self.stream = cuda.Stream()

    def _deserialize_hint(self) -> str:
        cmd = (self.meta.engine.build_command if self.meta.engine else None) or \
            f"fyexport engine MODEL.onnx -o {self.path.name}"
        if self.meta.nms and self.meta.nms.kind == "trt-plugin":
            return ("The engine uses the EfficientNMS_TRT plugin: this TensorRT's plugin library (libnvinfer_plugin) "
                    f"must provide it; or rebuild it here with: {cmd}")
        return f"An engine from another TensorRT build or GPU, or one needing a plugin missing here; rebuild: {cmd}"

    def _profile_batches(self, name: str, shape: tuple) -> tuple:
        """(smallest, largest) batch the engine accepts: its static batch, or profile 0's range."""
        if shape[0] != -1:
            return int(shape[0]), int(shape[0])
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        return int(lo[0]), int(hi[0])

    def _buffer(self, name: str, shape: tuple, dtype):
        """The device buffer of tensor ``name``, (re)allocated to ``shape``."""
        from polygraphy import cuda

        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = cuda.DeviceArray(shape, dtype)
        return buf.resize(tuple(int(d) for d in shape))

    def _bind(self, x: np.ndarray) -> dict:
        """Copy the batch to the device in the engine's input type, set its shape and every
        address; returns {output: device buffer}."""
        in_name, in_dtype = self.inputs[0]
        lo, hi = self.info.batch_range
        b = int(x.shape[0])
        if not lo <= b <= hi:
            raise InputError(f"{self.path}: batch {b} is outside the engine's profile (batch {lo} to {hi})")
        if not self.context.set_input_shape(in_name, tuple(x.shape)):
            raise FyexportError(f"{self.path}: TensorRT refused input shape {tuple(x.shape)} for '{in_name}'")
        host = np.ascontiguousarray(x, dtype=in_dtype)
        self._set_address(in_name, self._buffer(in_name, host.shape, in_dtype).copy_from(host, self.stream))
        outs = {}
        for name, dtype in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise FyexportError(f"{self.path}: TensorRT left output '{name}' without a shape ({list(shape)})")
            outs[name] = self._buffer(name, shape, dtype)
            self._set_address(name, outs[name])
        return outs

    def _set_address(self, name: str, buf) -> None:
        if not self.context.set_tensor_address(name, int(buf.ptr)):
            raise FyexportError(f"{self.path}: TensorRT refused the address of tensor '{name}'")

    def _enqueue(self) -> None:
        with polygraphy_logs(f"{self.path}: TensorRT execution failed") as errors:
            if not self.context.execute_async_v3(self.stream.ptr):
                raise FyexportError(f"{self.path}: TensorRT execution failed"
                                    + (f" ({' | '.join(errors)})" if errors else ""))

    def _run_all(self, x: np.ndarray) -> dict:
        outs = self._bind(x)
        self._enqueue()
        host = {name: np.empty(buf.shape, dtype) for (name, dtype), buf in zip(self.outputs, outs.values())}
        for name, buf in outs.items():
            buf.copy_to(host[name], self.stream)
        self.stream.synchronize()
        return host

    def _infer(self, x: np.ndarray) -> np.ndarray:
        outs = self._run_all(x)
        name = "output" if "output" in outs else self.outputs[0][0]
        return outs[name].astype(np.float32, copy=False)

    def compute_fn(self, x: np.ndarray) -> Callable[[], float]:
        """One inference on an input staged on the device, timed by CUDA events on the stream."""
        from ..core.machine import cuda_runtime

        self._bind(np.ascontiguousarray(x, np.float32))
        self.stream.synchronize()
        rt = cuda_runtime()
        start, end = self._event(rt), self._event(rt)
        ms = ctypes.c_float(0.0)
        stream = ctypes.c_void_p(self.stream.ptr)

        def timed() -> float:
            _check(rt.cudaEventRecord(start, stream), "cudaEventRecord")
            self._enqueue()
            _check(rt.cudaEventRecord(end, stream), "cudaEventRecord")
            _check(rt.cudaEventSynchronize(end), "cudaEventSynchronize")
            _check(rt.cudaEventElapsedTime(ctypes.byref(ms), start, end), "cudaEventElapsedTime")
            return float(ms.value)

        return timed

    def _event(self, rt):
        ev = ctypes.c_void_p()
        _check(rt.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")
        self._events.append(ev)
        return ev

    def _close(self) -> None:
        from ..core.machine import cuda_runtime

        rt = cuda_runtime()
        for ev in self._events:
            rt.cudaEventDestroy(ev)
        for buf in self._buffers.values():
            buf.free()
        if self.stream is not None:
            self.stream.free()
        self._events, self._buffers, self.stream = [], {}, None
        self.context = self.engine = self.runtime = None


def _check(status: int, call: str) -> None:
    if status != 0:
        raise FyexportError(f"CUDA runtime error {status} in {call}")
