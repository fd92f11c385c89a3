"""Write checkpoints in the official YOLOv7 pickle format without the yolov7 sources.

The official ``.pt`` is a pickled ``models.yolo.Model``.  To produce one from our own
model we register throwaway modules ``models.yolo`` / ``models.common`` whose classes
are subclasses of ours, swap the instances' classes, and ``torch.save``.  The result
references exactly the globals an official file references.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import types

import torch


@contextlib.contextmanager
def official_classes():
    from fyexport.models import common, heads, yolo

    table = {
        yolo.Model: ("models.yolo", "Model"), heads.Detect: ("models.yolo", "Detect"),
        heads.IDetect: ("models.yolo", "IDetect"), heads.IAuxDetect: ("models.yolo", "IAuxDetect"),
    }
    for name in ("Conv", "RepConv", "MP", "SP", "SPPCSPC", "DownC", "ReOrg", "Concat", "Shortcut", "ImplicitA",
                 "ImplicitM"):
        table[getattr(common, name)] = ("models.common", name)
    mods = {n: types.ModuleType(n) for n in ("models", "models.yolo", "models.common")}
    subs = {}
    for cls, (modname, name) in table.items():
        sub = type(name, (cls,), {"__module__": modname})
        sub.__qualname__ = name
        setattr(mods[modname], name, sub)
        subs[cls] = sub
    saved = {n: sys.modules.get(n) for n in mods}
    sys.modules.update(mods)
    try:
        yield subs
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:  # pragma: no cover
                sys.modules[n] = old


def save_official(model, path, ema_model=None, extra=None, requires_grad=False) -> None:
    """``torch.save`` ``{'model', 'ema', ...}`` as YOLOv7's train.py / strip_optimizer would."""
    with official_classes() as subs:
        def convert(m):
            m = copy.deepcopy(m).half()
            m.__dict__.pop("meta", None)  # fyexport's record of a model; official models have none
            for mod in m.modules():
                if type(mod) in subs:
                    mod.__class__ = subs[type(mod)]
                if hasattr(mod, "_grids"):
                    mod._grids = {}
            for p in m.parameters():
                p.requires_grad_(requires_grad)
            return m

        ckpt = {"epoch": -1, "best_fitness": None, "training_results": None, "model": convert(model),
                "ema": convert(ema_model) if ema_model is not None else None, "updates": None, "optimizer": None}
        ckpt.update(extra or {})
        torch.save(ckpt, path)
