"""``fyexport info``: what a checkpoint, cfg, ONNX file or build folder holds."""
from __future__ import annotations

from pathlib import Path

from .errors import InputError


def count_macs_params(model, img_size=640) -> tuple[int, int]:
    """MACs and parameters as Torch-Pruning counts them (batch 1, square or (h, w) input)."""
    import torch
    import torch_pruning as tp

    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, *hw))
    model.train(was_training)
    return int(macs), int(params)


def describe_model(model, img_size=640) -> dict:
    head = model.head
    macs, params = count_macs_params(model, img_size)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return {
        "params": params,
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "count_size": list(hw),
        "nc": int(model.nc),
        "names": list(model.names),
        "stride": [int(s) for s in head.stride.tolist()],
        "anchors": head.anchor_grid.detach().float().view(head.nl, -1).tolist(),
        "head": type(head).__name__,
        "source_head": model.yaml["head"][-1][2],
        "layers": len(model.model),
        "form": model.form,
        "dtype": ",".join(dtypes),
        "source_dtype": model.meta.get("source_dtype"),
        "source_form": model.meta.get("source_form"),
        "prune": model.meta.get("prune"),
        "recover": model.meta.get("recover"),
    }


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
        from .build import read_manifest

        d = read_manifest(p)
        d["kind"] = "build"
        return d
    if p.suffix.lower() == ".onnx":
        from .onnx_info import describe_onnx

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
    from rich.console import Console
    from rich.table import Table

    from .log import table_console

    con = table_console()
    if d.get("kind") == "build":
        from .build import render_manifest

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
