"""``fyexport info``: what a checkpoint, cfg, ONNX file or build folder holds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core.errors import InputError
from .core.imgsize import DEFAULT_IMG_SIZE, fit_img_size


@dataclass
class InfoConfig:
    """What ``fyexport info`` describes a model at."""

    img_size: object = DEFAULT_IMG_SIZE  # the input size MACs are counted at (fitted to the model's stride)
    fuse: bool = False  # describe the fused deployment form


def _described(model, img_size) -> dict:
    from .models.stats import describe_model

    return describe_model(model, fit_img_size(img_size, int(max(model.head.stride.tolist()))))


def describe(target=None, cfg=None, nc=None, img_size=DEFAULT_IMG_SIZE, fuse: bool = False) -> dict:
    """A dict describing ``target`` (checkpoint, .onnx, build folder) or a ``cfg``."""
    from .models import build_model, load

    if cfg is not None:
        model = build_model(cfg, nc=nc)
        if fuse:
            model.fuse()
        d = _described(model, img_size)
        d["kind"] = "cfg"
        d["path"] = str(cfg)
        return d
    if target is None:
        raise InputError("nothing to describe", "Give a checkpoint, an ONNX file, a build folder or a cfg yaml")
    p = Path(target)
    if p.is_dir():
        from .pipeline.manifest import read_manifest

        d = read_manifest(p)
        d["kind"] = "build"
        return d
    if p.suffix.lower() == ".onnx":
        from .onnx.facts import describe_onnx

        d = describe_onnx(p)
        d["kind"] = "onnx"
        return d
    model = load(p)
    if fuse:
        model.fuse()
    d = _described(model, img_size)
    d["kind"] = "checkpoint"
    d["path"] = str(p)
    return d


def render(d: dict) -> None:
    """Print ``describe`` output as a table on stdout."""
    from rich.table import Table

    from .core.log import table_console

    con = table_console()
    if d.get("kind") == "build":
        from .pipeline.manifest import render_manifest

        render_manifest(d, con)
        return
    t = Table(show_header=False, title=str(d.get("path", "")))
    t.add_column("field", style="bold")
    t.add_column("value")
    for k, v in d.items():
        if k in ("kind", "path") or v is None:
            continue
        if k == "params" or k == "macs":
            v = f"{v:,}"
        elif isinstance(v, (list, dict)):
            v = str(v)
        t.add_row(k, str(v))
    con.print(t)
