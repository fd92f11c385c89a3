"""Facts about the machine fyexport runs on: CPU, GPU, NVIDIA driver, TensorRT.

The one home for them: recovery asks for cores and native bfloat16, the benchmark and the
engine sidecar record the GPU and driver, the build asks whether TensorRT can run here,
and every stage resolves ``--device`` here.  Nothing here raises but ``resolve_device``
(a device that is not on this machine): a fact that cannot be read is ``None`` (or a safe
default).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from pathlib import Path

from .config import ConfigError


def physical_cores() -> int:
    """Cores to give compute threads (physical cores when psutil knows them, else the
    CPUs this process may run on)."""
    try:
        import psutil  # optional

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return set()


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16).  There
    oneDNN's bf16 convolutions are much faster than fp32; elsewhere bf16 is emulated and
    slower."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no CUDA
        return False


def gpu_facts(with_driver: bool = True) -> dict:
    """{gpu, compute_capability, cuda[, driver]} of GPU 0 as PyTorch sees it ({} without one)."""
    out: dict = {}
    if cuda_available():
        import torch

        p = torch.cuda.get_device_properties(0)
        out = {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    if with_driver:
        out["driver"] = nvidia_driver()
    return out


def tensorrt_version() -> str | None:
    """The installed TensorRT's version string, without importing it when it is absent."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt as trt

        return str(trt.__version__)
    except ImportError:
        return None


def tensorrt_usable() -> bool:
    """TensorRT is installed and a CUDA GPU is visible: engines can be built and run here."""
    return importlib.util.find_spec("tensorrt") is not None and cuda_available()


# the CPU features fyexport's speed depends on (recorded with every benchmark)
ISA_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}


def machine_info() -> dict:
    """Everything a benchmark report records about the machine and the library versions."""
    from .. import __version__

    info = {"platform": platform.platform(), "python": platform.python_version(), "fyexport": __version__,
            "cpu": cpu_name(), "cores": os.cpu_count(), "physical_cores": physical_cores(),
            "cpu_isa": sorted(f for f in cpu_flags() if f in ISA_FLAGS)}
    for mod in ("torch", "onnxruntime", "onnx", "numpy", "cv2", "torch_pruning", "tensorrt"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            info[mod] = None
    if cuda_available():
        import torch

        info.update(gpu_facts())
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32_conv"] = bool(torch.backends.cudnn.allow_tf32)
    return info


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{device}: no CUDA GPU is available to PyTorch here", "Use the cpu device")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError("device", f"must be cpu, cuda or auto, got {device!r}")
    return device
