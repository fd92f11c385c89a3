"""PyTorch runner: eager or CUDA graph, FP32 or FP16, optionally channels-last."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import InputError
from ..core.imgsize import as_hw, fit_img_size
from ..core.machine import resolve_device
from .base import Runner, RunnerInfo


class TorchRunner(Runner):
    """Runs a fused fyexport Model.

    Args:
        model_or_path: a checkpoint path or a loaded Model (fused here on a copy).
        device: cpu | cuda | auto.
        precision: fp32 | fp16 (fp16 needs CUDA).
        mode: eager | cuda-graph (cuda-graph captures one graph per input shape).
        channels_last: use NHWC memory format (helps tensor cores on GPU).
        img_size: the letterbox size this runner is used at.
    """

    def __init__(self, model_or_path, device: str = "cpu", precision: str = "fp32", mode: str = "eager",
                 channels_last: bool = False, img_size=640):
        super().__init__()
        self.device = resolve_device(device)
        if precision not in ("fp32", "fp16"):
            raise InputError(f"PyTorch runner precision must be fp32 or fp16, got {precision}")
        if precision == "fp16" and self.device == "cpu":
            raise InputError("FP16 PyTorch inference needs a CUDA device")
        if mode not in ("eager", "cuda-graph"):
            raise InputError(f"PyTorch runner mode must be eager or cuda-graph, got {mode}")
        if mode == "cuda-graph" and self.device == "cpu":
            raise InputError("CUDA graphs need a CUDA device")
        self._src = model_or_path
        self.precision, self.mode, self.channels_last = precision, mode, channels_last
        path = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "<model>"
        modestr = mode + (" channels-last" if channels_last else "")
        self.info = RunnerInfo(path=path, runtime="torch", precision=precision, device=self.device,
                               input_hw=as_hw(img_size), batch=None, nc=0, mode=modestr)
        if isinstance(model_or_path, (str, Path)):
            self.info.size_mb = round(Path(model_or_path).stat().st_size / 1e6, 2)
        self._graphs: dict = {}

    def _load(self) -> None:
        import copy

        import torch

        from ..models import load

        model = load(self._src) if isinstance(self._src, (str, Path)) else copy.deepcopy(self._src)
        model.fuse().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.info.nc, self.info.names = int(model.nc), list(model.names)
        self.info.input_hw = fit_img_size(self.info.input_hw, int(max(model.head.stride.tolist())))
        self.info.params = sum(p.numel() for p in model.parameters())
        self.info.prune = model.meta.get("prune")
        self.info.meta = model.meta
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = model.to(self.device, dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True
        self.model, self.dtype = model, dtype

    def _to_device(self, x: np.ndarray):
        import torch

        t = torch.from_numpy(x)
        if self.device.startswith("cuda"):
            t = t.pin_memory().to(self.device, non_blocking=True)
        t = t.to(self.dtype)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _forward(self, t):
        import torch

        with torch.inference_mode():
            return self.model(t)[0]

    def _graph_for(self, shape):
        """(static_input, static_output, graph) for an input shape, captured on first use."""
        import torch

        g = self._graphs.get(shape)
        if g is None:
            static_in = torch.zeros(shape, device=self.device, dtype=self.dtype)
            if self.channels_last:
                static_in = static_in.contiguous(memory_format=torch.channels_last)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode():
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.model(static_in)[0]
            g = self._graphs[shape] = (static_in, static_out, graph)
        return g

    def _run_device(self, t):
        if self.mode == "cuda-graph":
            static_in, static_out, graph = self._graph_for(tuple(t.shape))
            static_in.copy_(t)
            graph.replay()
            return static_out
        return self._forward(t)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        out = self._run_device(self._to_device(x))
        return out.float().cpu().numpy()

    def compute_fn(self, x: np.ndarray) -> Callable[[], float]:
        if not self.device.startswith("cuda"):
            return super().compute_fn(x)
        import torch

        t = self._to_device(x)
        if self.mode == "cuda-graph":
            static_in, _, graph = self._graph_for(tuple(t.shape))
            static_in.copy_(t)
            run = graph.replay
        else:
            def run():
                self._forward(t)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed() -> float:
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return timed

    def _close(self) -> None:
        self._graphs.clear()
        self.model = None
