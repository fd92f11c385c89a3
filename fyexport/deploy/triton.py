"""A Triton Inference Server model repository for an engine.

Layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.plan`` (the plan copied
unchanged).  The config declares platform ``tensorrt_plan``, the I/O names, dims and data
types read from the engine's metadata, and dynamic batching when the engine has a batch
range (``max_batch_size`` > 0 means Triton owns the batch axis, so dims exclude it).

``max_batch_size`` must fit the engine's optimization profile: Triton's TensorRT backend
refuses to load a model whose ``max_batch_size`` exceeds the profile's maximum batch, and
fails every request smaller than the profile's minimum, while its dynamic batcher sends
batches of any size from 1.  Both are refused here, with the rebuild to do.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.config import ConfigError
from ..core.errors import InputError
from ..core.meta import ArtifactMeta


def output_specs(meta: ArtifactMeta) -> list:
    """(name, data type, dims without batch) of the engine outputs, from its metadata."""
    topk = meta.nms.topk if meta.nms else None
    img = meta.img_size or (640, 640)
    stride = meta.stride or (8, 16, 32)
    na = len((meta.anchors or ((0,) * 6,))[0]) // 2
    n = na * sum((img[0] // s) * (img[1] // s) for s in stride)
    no = int(meta.nc or 80) + 5
    if topk:
        return [("num_dets", "TYPE_INT32", [1]), ("det_boxes", "TYPE_FP32", [topk, 4]),
                ("det_scores", "TYPE_FP32", [topk]), ("det_classes", "TYPE_INT32", [topk])]
    return [("output", "TYPE_FP32", [n, no])]


def config_pbtxt(name: str, meta: ArtifactMeta, max_batch: int | None = None, instances: int = 1) -> str:
    inp = (meta.engine.input if meta.engine else None) or {}
    shape = list(inp.get("shape") or [1, 3, *(meta.img_size or (640, 640))])
    profile = inp.get("profile")
    dynamic = shape[0] == -1
    if dynamic:
        mb = _max_batch(name, profile, max_batch)
        in_dims = shape[1:]
    else:
        if max_batch is not None:
            raise ConfigError("max_batch", f"needs a dynamic-batch engine; {name} has a static batch of {shape[0]}, "
                              "so Triton cannot batch it", "Build the engine from a 'fyexport export --dynamic-batch' "
                              "ONNX")
        mb = 0
        in_dims = shape
    outs = output_specs(meta)
    if not dynamic:
        outs = [(n, t, [shape[0], *d]) for n, t, d in outs]

    def dims(d):
        return ", ".join(str(int(v)) for v in d)

    lines = [f'name: "{name}"', 'platform: "tensorrt_plan"', f"max_batch_size: {mb}", "input ["]
    lines += ["  {", f'    name: "{inp.get("name", "images")}"', "    data_type: TYPE_FP32",
              f"    dims: [ {dims(in_dims)} ]", "  }", "]", "output ["]
    for i, (n, t, d) in enumerate(outs):
        lines += ["  {", f'    name: "{n}"', f"    data_type: {t}", f"    dims: [ {dims(d)} ]",
                  "  }" + ("," if i < len(outs) - 1 else "")]
    lines.append("]")
    if mb > 1:
        pref = sorted({b for b in (mb // 2, mb) if b >= 1})
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {', '.join(map(str, pref))} ]",
                  "  max_queue_delay_microseconds: 100", "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", "    kind: KIND_GPU", "  }", "]"]
    return "\n".join(lines) + "\n"


def _max_batch(name: str, profile: dict | None, max_batch: int | None) -> int:
    """``max_batch_size`` for a dynamic-batch engine: ``max_batch`` or the profile's maximum,
    refused where Triton would refuse the model or its small requests."""
    lo = int((profile or {}).get("min", [1])[0])
    hi = int((profile or {}).get("max", [max_batch or 1])[0])
    if max_batch is not None and max_batch < 1:
        raise ConfigError("max_batch", f"must be >= 1, got {max_batch}")
    if max_batch is not None and max_batch > hi:
        raise ConfigError("max_batch", f"{max_batch} exceeds the engine's profile maximum of {hi}; Triton would "
                          f"refuse to load {name}", f"Use at most {hi}, or rebuild the engine with "
                          f"'fyexport engine ... --max-batch {max_batch}'")
    if lo > 1:
        raise InputError(f"{name}: the engine's profile starts at batch {lo}, and Triton would fail every request "
                         f"of fewer images", "Rebuild the engine with 'fyexport engine ... --min-batch 1'")
    return int(max_batch or hi)


@dataclass
class TritonConfig:
    """The Triton model's settings."""

    name: str | None = None  # the model name (default: the engine's file stem)
    max_batch: int | None = None  # max_batch_size (default: the engine profile's max)


def write_repository(engine_path, repo, name: str | None = None, max_batch: int | None = None) -> Path:
    from ..core.artifacts import atomic_path, writable_folder, write_text
    from ..trt.sidecar import read_sidecar

    engine_path = Path(engine_path)
    meta = read_sidecar(engine_path)
    if meta.engine is None:
        raise InputError(f"{engine_path}: no {engine_path.name}.json beside it; build the engine with "
                         "'fyexport engine' so its I/O is known")
    name = name or re.sub(r"[^A-Za-z0-9_]", "_", engine_path.stem)
    config = config_pbtxt(name, meta, max_batch)  # refused before anything is written
    model_dir = Path(repo) / name
    version_dir = model_dir / "1"
    writable_folder(version_dir)
    with atomic_path(version_dir / "model.plan") as tmp:
        shutil.copyfile(engine_path, tmp)
    write_text(model_dir / "config.pbtxt", config)
    return model_dir
