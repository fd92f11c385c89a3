"""Runners: one small contract (load, infer, close) over PyTorch (``torch_runner``), ONNX Runtime
(``ort``) and TensorRT (``trt``), shared by ``eval``, ``bench`` and the :class:`~fyexport.detector.Detector`."""
from __future__ import annotations

from pathlib import Path

from ..core.config import ConfigError
from ..core.errors import InputError
from ..trt import ENGINE_SUFFIXES
from .base import Runner, RunnerInfo

CHECKPOINT_SUFFIXES = (".pt", ".pth")
RUNTIMES = ("auto", "torch", "onnxruntime", "tensorrt")


def artifact_kind(path) -> str:
    s = Path(str(path)).suffix.lower()
    if s == ".onnx":
        return "onnx"
    if s in ENGINE_SUFFIXES:
        return "engine"
    if s in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    raise InputError(f"{path}: unknown artifact type '{s or 'no suffix'}'",
                     "Expected a checkpoint (.pt), an ONNX model (.onnx) or a TensorRT engine (.engine/.plan)")


def open_runner(src, runtime: str = "auto", device: str = "auto", precision: str | None = None,
                mode: str = "eager", channels_last: bool = False, img_size=640, threads: int | None = None) -> Runner:
    """A runner for a checkpoint/Model (PyTorch), an .onnx (ONNX Runtime) or an engine (TensorRT).

    Nothing is loaded until ``runner.load()`` (or ``with runner:``)."""
    if not isinstance(src, (str, Path)):
        from .torch_runner import TorchRunner

        return TorchRunner(src, device=device, precision=precision or "fp32", mode=mode,
                           channels_last=channels_last, img_size=img_size)
    kind = artifact_kind(src)
    if runtime not in RUNTIMES:
        raise ConfigError("runtime", f"must be auto, torch, onnxruntime or tensorrt, got {runtime!r}")
    if kind == "checkpoint":
        if runtime not in ("auto", "torch"):
            raise InputError(f"{src}: a checkpoint runs on the torch runtime; export it first for {runtime}")
        from .torch_runner import TorchRunner

        return TorchRunner(src, device=device, precision=precision or "fp32", mode=mode,
                           channels_last=channels_last, img_size=img_size)
    if kind == "onnx":
        if runtime not in ("auto", "onnxruntime"):
            raise InputError(f"{src}: an ONNX model runs on onnxruntime here; build an engine with "
                             "'fyexport engine' for tensorrt")
        from .ort import OrtRunner

        return OrtRunner(src, device="cpu" if device in ("auto", None) else device, threads=threads)
    if runtime not in ("auto", "tensorrt"):
        raise InputError(f"{src}: a TensorRT engine runs only on the tensorrt runtime")
    from .trt import TrtRunner

    return TrtRunner(src, device=device)


__all__ = ["RUNTIMES", "Runner", "RunnerInfo", "open_runner", "artifact_kind"]
