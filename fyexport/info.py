"""``fyexport info``: what a checkpoint, cfg, ONNX file or build folder holds."""
from __future__ import annotations

from pathlib import Path

from .core.errors import InputError
from .models.stats import describe_model


def describe(target=None, cfg=None, nc=None, img_size=640, fuse: bool = False) -> dict:
    """A dict describing ``target`` (checkpoint, .onnx, build folder) or a ``cfg``."""
    from .models import build_model, load

    if cfg is not None:
        model = build_model(cfg, nc=nc)
        if fuse:
            model.fuse()
        d = describe_model(model, img_size)
        d["kind"] = "cfg"
        d["path"] = str(cfg)
        return d
    if target is None:
        raise InputError("give a checkpoint, an ONNX file, a build folder or --cfg")
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
    d = describe_model(model, img_size)
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
