"""Running a TensorRT engine: the Runner for ``.engine`` files.

I/O goes by tensor name (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``): calls common to TensorRT 10 and 11.  Device
memory and the one CUDA stream come from torch (a dependency anyway; no pycuda).  Before
deserializing, the sidecar ``<engine>.json`` is checked against this machine's TensorRT and
GPU, because plans do not move between versions or GPU architectures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FyexportError, InputError
from ..log import G_LOGGER
from ..runners.base import Runner, RunnerInfo
from . import import_trt, make_logger


def read_sidecar(engine_path) -> dict:
    p = Path(str(engine_path) + ".json")
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        raise InputError(f"{p}: damaged engine metadata (not JSON)")


def check_compatible(meta: dict, trt, engine_path, gpu: dict | None = None) -> None:
    """Refuse an engine built for another TensorRT version or GPU, with the rebuild command."""
    from .builder import gpu_facts

    if not meta:
        G_LOGGER.warning(f"{engine_path}: no {Path(str(engine_path)).name}.json beside it; cannot check that it "
                         "was built for this TensorRT and GPU")
        return
    here = gpu if gpu is not None else gpu_facts()
    problems = []
    if meta.get("tensorrt") and str(meta["tensorrt"]) != str(trt.__version__):
        problems.append(f"TensorRT {meta['tensorrt']} (here {trt.__version__})")
    if meta.get("compute_capability") and here.get("compute_capability") and \
            meta["compute_capability"] != here["compute_capability"]:
        problems.append(f"GPU {meta.get('gpu')} sm_{meta['compute_capability']} (here {here.get('gpu')} "
                        f"sm_{here.get('compute_capability')})")
    elif meta.get("gpu") and here.get("gpu") and meta["gpu"] != here["gpu"]:
        problems.append(f"GPU {meta['gpu']} (here {here['gpu']})")
    if problems:
        cmd = meta.get("build_command") or f"fyexport engine MODEL.onnx -o {engine_path}"
        raise InputError(f"{engine_path}: built for {' and '.join(problems)}; engines do not move between "
                         f"TensorRT versions or GPUs", f"Rebuild on this machine with: {cmd}")


def _torch_dtype(np_dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype


class TrtRunner(Runner):
    def __init__(self, path, device: str = "auto"):
        super().__init__()
        from ..errors import check_file

        self.path = check_file(path, "TensorRT engine")
        self.meta = read_sidecar(self.path)
        self.device = "cuda" if device in ("auto", None) else device
        shape = (self.meta.get("input") or {}).get("shape") or [None, 3, None, None]
        img = self.meta.get("img_size") or shape[2:]
        self.info = RunnerInfo(
            path=str(path), runtime="tensorrt", precision=self.meta.get("precision", "?"), device=self.device,
            input_hw=tuple(img) if img and None not in img else (0, 0),
            batch=None if (shape[0] in (None, -1)) else int(shape[0]), nc=int(self.meta.get("nc") or 0),
            names=list(self.meta.get("names") or []), size_mb=round(self.path.stat().st_size / 1e6, 2),
            prune=self.meta.get("prune"),
        )

    def _load(self) -> None:
        import torch

        trt = import_trt(onnx_hint=(self.meta.get("onnx") or {}).get("path", "model.onnx"))
        fake = bool(getattr(trt, "__fyexport_fake__", False))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"{self.path}: TensorRT engines need an NVIDIA GPU, and none is visible here")
        if self.device == "cpu" and not fake:
            raise InputError("TensorRT runs on the GPU: use --device cuda")
        check_compatible(self.meta, trt, self.path, gpu=self.meta if fake else None)
        self.trt = trt
        self.logger = make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise FyexportError(f"{self.path}: TensorRT could not deserialize the engine",
                                "It was probably built by another TensorRT version; rebuild it here")
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
        self.stream = torch.cuda.Stream() if self.device.startswith("cuda") else None
        self._staged: dict = {}

    def _handle(self) -> int:
        return int(self.stream.cuda_stream) if self.stream is not None else 0

    def _bind(self, x_dev):
        """Set shapes and addresses for an input already on the device; returns output tensors."""
        import torch

        in_name = self.inputs[0][0]
        self.context.set_input_shape(in_name, tuple(x_dev.shape))
        self.context.set_tensor_address(in_name, int(x_dev.data_ptr()))
        outs = {}
        for name, dtype in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            t = torch.empty(shape, dtype=_torch_dtype(dtype), device=self.device)
            self.context.set_tensor_address(name, int(t.data_ptr()))
            outs[name] = t
        return outs

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self._handle()):
            raise FyexportError(f"{self.path}: TensorRT execution failed")
        if self.stream is not None:
            self.stream.synchronize()

    def run_all(self, x: np.ndarray) -> dict:
        import torch

        x_dev = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
        outs = self._bind(x_dev)
        self._execute()
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        outs = self.run_all(x)
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
            self.context.execute_async_v3(self._handle())
            end.record(self.stream)
            end.synchronize()
            return start.elapsed_time(end)

        return timed

    def _close(self) -> None:
        self._staged = {}
        self.context = self.engine = self.runtime = None
