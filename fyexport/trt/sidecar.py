"""An engine's metadata file ``<engine>.json`` (the plan itself stays a pure TensorRT plan):
how it was built, its I/O and profile, and the TensorRT and GPU it was built for, which is
checked before deserializing because plans do not move between versions or GPUs."""
from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import InputError
from ..core.log import G_LOGGER
from ..core.meta import ArtifactMeta


def sidecar_path(engine_path) -> Path:
    return Path(str(engine_path) + ".json")


def read_sidecar(engine_path) -> ArtifactMeta:
    p = sidecar_path(engine_path)
    if not p.exists():
        return ArtifactMeta()
    try:
        return ArtifactMeta.from_dict(json.loads(p.read_text()), str(p))
    except ValueError:
        raise InputError(f"{p}: damaged engine metadata (not JSON)")


def check_compatible(meta: ArtifactMeta, trt, engine_path, gpu: dict | None = None) -> None:
    """Refuse an engine built for another TensorRT version or GPU, with the rebuild command."""
    from ..core.machine import gpu_facts

    if meta.engine is None:
        G_LOGGER.warning(f"{engine_path}: no {Path(str(engine_path)).name}.json beside it; cannot check that it "
                         "was built for this TensorRT and GPU")
        return
    here = gpu if gpu is not None else gpu_facts()
    e, problems = meta.engine, []
    if e.tensorrt and str(e.tensorrt) != str(trt.__version__):
        problems.append(f"TensorRT {e.tensorrt} (here {trt.__version__})")
    if e.compute_capability and here.get("compute_capability") and e.compute_capability != here["compute_capability"]:
        problems.append(f"GPU {e.gpu} sm_{e.compute_capability} (here {here.get('gpu')} "
                        f"sm_{here.get('compute_capability')})")
    elif e.gpu and here.get("gpu") and e.gpu != here["gpu"]:
        problems.append(f"GPU {e.gpu} (here {here['gpu']})")
    if problems:
        cmd = e.build_command or f"fyexport engine MODEL.onnx -o {engine_path}"
        raise InputError(f"{engine_path}: built for {' and '.join(problems)}; engines do not move between "
                         f"TensorRT versions or GPUs", f"Rebuild on this machine with: {cmd}")
