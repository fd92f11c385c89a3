"""The TensorRT runner: runs ``.engine`` files.

I/O goes by tensor name (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``): calls common to TensorRT 10 and 11.  Device
memory and the one CUDA stream come from torch (a dependency anyway; no pycuda).  Before
deserializing, TensorRT's plugins are registered (engines with ``EfficientNMS_TRT`` need
them) and the sidecar ``<engine>.json`` is checked against this machine's TensorRT and GPU,
because plans do not move between versions or GPU architectures.  TensorRT reports a
refused shape or address by returning False, not by raising: every such call is checked,
and a batch outside the engine's optimization profile is refused before it is tried.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.config import ConfigError
from ..core.errors import FyexportError, InputError
from ..trt import import_trt, init_plugins, make_logger
from ..trt.sidecar import check_compatible, read_sidecar
from .base import Runner, RunnerInfo


def _torch_dtype(np_dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype


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
            names=list(self.meta.names), size_mb=round(self.path.stat().st_size / 1e6, 2), prune=self.meta.prune,
            graph_nms=self.meta.nms, meta=self.meta,
        )

    def _load(self) -> None:
        import torch

        onnx_facts = (self.meta.engine.onnx if self.meta.engine else None) or {}
        trt = import_trt(onnx_hint=onnx_facts.get("file", "model.onnx"))
        fake = bool(getattr(trt, "__fyexport_fake__", False))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"{self.path}: TensorRT engines need an NVIDIA GPU, and none is visible here")
        if self.device == "cpu" and not fake:
            raise ConfigError("device", "is the cpu, but TensorRT runs on the GPU", "Use the cuda device")
        e = self.meta.engine
        check_compatible(self.meta, trt, self.path,
                         gpu={"gpu": e.gpu, "compute_capability": e.compute_capability} if fake and e else None)
        self.trt = trt
        self.logger = make_logger(trt)
        init_plugins(trt)  # an engine with EfficientNMS_TRT deserializes only with the plugin registered
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise FyexportError(f"{self.path}: TensorRT could not deserialize the engine (its log above says why)",
                                self._deserialize_hint())
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append((name, dtype))
        if len(self.inputs) != 1:
            raise InputError(f"{self.path}: expected one image input, found {len(self.inputs)}")
        in_name = self.inputs[0][0]
        shape = tuple(self.engine.get_tensor_shape(in_name))
        if self.info.input_hw == (0, 0):
            self.info.input_hw = shape[2:]
        self.info.batch = None if shape[0] == -1 else int(shape[0])
        self.info.batch_range = self._profile_batches(in_name, shape)
        self.info.outputs = tuple(name for name, _ in self.outputs)
        self.stream = torch.cuda.Stream() if self.device.startswith("cuda") else None
        self._staged: dict = {}

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

    def _handle(self) -> int:
        return int(self.stream.cuda_stream) if self.stream is not None else 0

    def _bind(self, x_dev):
        """Set shapes and addresses for an input already on the device; returns output tensors."""
        import torch

        in_name = self.inputs[0][0]
        lo, hi = self.info.batch_range
        b = int(x_dev.shape[0])
        if not lo <= b <= hi:
            raise InputError(f"{self.path}: batch {b} is outside the engine's profile (batch {lo} to {hi})",
                             "Run batches in that range, or rebuild the engine "
                             "('fyexport engine ... --min-batch N --max-batch M')")
        if not self.context.set_input_shape(in_name, tuple(x_dev.shape)):
            raise FyexportError(f"{self.path}: TensorRT refused input shape {tuple(x_dev.shape)} for '{in_name}'")
        self._set_address(in_name, x_dev)
        outs = {}
        for name, dtype in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise FyexportError(f"{self.path}: TensorRT left output '{name}' without a shape ({list(shape)})")
            t = torch.empty(shape, dtype=_torch_dtype(dtype), device=self.device)
            self._set_address(name, t)
            outs[name] = t
        return outs

    def _set_address(self, name: str, t) -> None:
        if not self.context.set_tensor_address(name, int(t.data_ptr())):
            raise FyexportError(f"{self.path}: TensorRT refused the address of tensor '{name}'")

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self._handle()):
            raise FyexportError(f"{self.path}: TensorRT execution failed")
        if self.stream is not None:
            self.stream.synchronize()

    def _run_all(self, x: np.ndarray) -> dict:
        import torch

        x_dev = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        outs = self._bind(x_dev)
        self._execute()
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        outs = self._run_all(x)
        name = "output" if "output" in outs else self.outputs[0][0]
        return outs[name].astype(np.float32, copy=False)

    def compute_fn(self, x: np.ndarray) -> Callable[[], float]:
        import torch

        x_dev = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        self._staged = {"x": x_dev, "outs": self._bind(x_dev)}
        if self.stream is None:
            return super().compute_fn(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed() -> float:
            start.record(self.stream)
            if not self.context.execute_async_v3(self._handle()):
                raise FyexportError(f"{self.path}: TensorRT execution failed")
            end.record(self.stream)
            end.synchronize()
            return start.elapsed_time(end)

        return timed

    def _close(self) -> None:
        self._staged = {}
        self.context = self.engine = self.runtime = None
