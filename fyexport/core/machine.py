"""Facts about the machine fyexport runs on: CPU, GPU, NVIDIA driver, TensorRT.

The one home for them: recovery asks for cores and native bfloat16, the benchmark and the
engine sidecar record the GPU and driver, the build asks whether TensorRT can run here,
and every stage resolves ``--device`` here.  GPU facts come from the CUDA runtime (libcudart
through Polygraphy's ``polygraphy.cuda`` wrapper), not from PyTorch, which can be a CPU build
next to a GPU (JetPack); PyTorch answers only where no CUDA runtime loads.  Nothing here raises
but ``resolve_device`` and ``select_gpu`` (a device that is not on this machine): a fact that
cannot be read is ``None`` (or a safe default).
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


def cuda_runtime():
    """The CUDA runtime (libcudart, loaded by Polygraphy's ``polygraphy.cuda`` wrapper, which
    the TensorRT extra installs), or None where it cannot be loaded.  GPU facts come from it
    rather than from PyTorch, which may be a CPU build on a machine with a GPU (JetPack)."""
    try:
        import polygraphy.cuda.cuda as pcuda
        from polygraphy.logger import G_LOGGER as PG_LOGGER
    except ImportError:
        return None
    if pcuda.G_CUDA is None:
        if _NO_CUDART:
            return None
        try:
            with PG_LOGGER.verbosity(PG_LOGGER.CRITICAL + 1):  # its search is not our user's business
                pcuda.wrapper()
        except OSError:  # no libcudart here
            _NO_CUDART.append(True)
            return None
    return pcuda.G_CUDA.handle


_NO_CUDART: list = []  # [True] once libcudart failed to load (it is looked for once per process)
_CUDA_ATTR_CC_MAJOR, _CUDA_ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


def gpu_count() -> int:
    """CUDA devices the CUDA runtime sees (0 without a GPU or a loadable runtime)."""
    import ctypes

    rt = cuda_runtime()
    if rt is None:
        return 0
    n = ctypes.c_int(0)
    return int(n.value) if rt.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0


def cuda_available() -> bool:
    """A CUDA GPU is visible: asked of the CUDA runtime, else (no runtime loadable) of PyTorch."""
    if cuda_runtime() is not None:
        return gpu_count() > 0
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no CUDA
        return False


def device_index(device: str | None) -> int:
    """The GPU index of a device string (``cuda`` and ``auto``: 0, ``cuda:N``: N)."""
    if device and device.startswith("cuda:"):
        try:
            return int(device.split(":", 1)[1])
        except ValueError:
            raise ConfigError("device", f"must be cuda or cuda:N, got {device!r}")
    return 0


def select_gpu(index: int) -> None:
    """Make GPU ``index`` the CUDA runtime's current device (TensorRT builds and runs there)."""
    n = gpu_count()
    if not 0 <= index < n:
        raise ConfigError("device", f"cuda:{index} is not a GPU here ({n} visible)",
                          "Use cuda:0" + (f" to cuda:{n - 1}" if n > 1 else "") if n else "Use a machine with a GPU")
    if cuda_runtime().cudaSetDevice(int(index)) != 0:
        raise ConfigError("device", f"the CUDA runtime refused GPU {index}")


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{(value % 1000) // 10}"


def gpu_facts(with_driver: bool = True, index: int = 0) -> dict:
    """{gpu, compute_capability, cuda[, driver]} of GPU ``index`` as the CUDA runtime sees it
    (PyTorch where no runtime loads; {} without a GPU).  ``driver`` is nvidia-smi's driver
    version, or on machines without nvidia-smi (Jetson) the CUDA driver API version."""
    import ctypes

    out: dict = {}
    rt = cuda_runtime()
    if rt is not None and index < gpu_count():
        major, minor, rv = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        rt.cudaDeviceGetAttribute(ctypes.byref(major), _CUDA_ATTR_CC_MAJOR, index)
        rt.cudaDeviceGetAttribute(ctypes.byref(minor), _CUDA_ATTR_CC_MINOR, index)
        rt.cudaRuntimeGetVersion(ctypes.byref(rv))
        out = {"gpu": _device_name(rt, index), "compute_capability": f"{major.value}.{minor.value}",
               "cuda": _cuda_version(rv.value)}
    elif rt is None and cuda_available():
        import torch

        p = torch.cuda.get_device_properties(index)
        out = {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    if with_driver:
        out["driver"] = nvidia_driver() or _cuda_driver(rt)
    return out


def _device_name(rt, index: int) -> str | None:
    """cudaDeviceProp.name (its first member, char[256]); the struct is read into a buffer
    larger than any CUDA release's cudaDeviceProp."""
    import ctypes

    buf = ctypes.create_string_buffer(8192)
    fn = getattr(rt, "cudaGetDeviceProperties_v2", None) or rt.cudaGetDeviceProperties
    if fn(buf, index) != 0:
        return None
    return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace")


def _cuda_driver(rt) -> str | None:
    import ctypes

    if rt is None:
        return None
    v = ctypes.c_int(0)
    return f"CUDA {_cuda_version(v.value)}" if rt.cudaDriverGetVersion(ctypes.byref(v)) == 0 and v.value else None


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
        info.update(gpu_facts())
    if info["torch"] is not None:
        import torch

        if torch.cuda.is_available():
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
