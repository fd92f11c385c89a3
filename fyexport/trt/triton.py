"""A Triton Inference Server model repository for an engine.

Layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.plan`` (the plan copied
unchanged).  The config declares platform ``tensorrt_plan``, the I/O names, dims and data
types read from the engine's metadata, and dynamic batching when the engine has a batch
range (``max_batch_size`` > 0 means Triton owns the batch axis, so dims exclude it).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import InputError

TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
         "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def output_specs(meta: dict) -> list:
    """(name, data type, dims without batch) of the engine outputs, from its metadata."""
    topk = (meta.get("nms") or {}).get("topk")
    img = meta.get("img_size") or [640, 640]
    stride = meta.get("stride") or [8, 16, 32]
    na = len((meta.get("anchors") or [[0] * 6])[0]) // 2
    n = na * sum((img[0] // s) * (img[1] // s) for s in stride)
    no = int(meta.get("nc") or 80) + 5
    if topk:
        return [("num_dets", "TYPE_INT32", [1]), ("det_boxes", "TYPE_FP32", [topk, 4]),
                ("det_scores", "TYPE_FP32", [topk]), ("det_classes", "TYPE_INT32", [topk])]
    return [("output", "TYPE_FP32", [n, no])]


def config_pbtxt(name: str, meta: dict, max_batch: int | None = None, instances: int = 1) -> str:
    inp = meta.get("input") or {}
    shape = list(inp.get("shape") or [1, 3, *(meta.get("img_size") or [640, 640])])
    profile = inp.get("profile")
    dynamic = shape[0] == -1
    if dynamic:
        mb = int(max_batch or (profile or {}).get("max", [1])[0])
        in_dims = shape[1:]
    else:
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


def write_repository(engine_path, repo, name: str | None = None, max_batch: int | None = None) -> Path:
    from ..artifacts import atomic_path, write_text
    from .runtime import read_sidecar

    engine_path = Path(engine_path)
    meta = read_sidecar(engine_path)
    if not meta:
        raise InputError(f"{engine_path}: no {engine_path.name}.json beside it; build the engine with "
                         "'fyexport engine' so its I/O is known")
    name = name or re.sub(r"[^A-Za-z0-9_]", "_", engine_path.stem)
    model_dir = Path(repo) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(version_dir / "model.plan") as tmp:
        shutil.copyfile(engine_path, tmp)
    write_text(model_dir / "config.pbtxt", config_pbtxt(name, meta, max_batch))
    return model_dir
