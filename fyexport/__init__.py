"""fyexport: YOLOv7 checkpoint -> pruned, INT8, TensorRT-ready deployment, with honest benchmarks.

Heavy dependencies (torch, onnxruntime, tensorrt) are imported lazily, so
``import fyexport`` and ``fyexport --help`` stay fast.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

_LAZY = {
    "load": ("fyexport.models.checkpoint", "load"),
    "save": ("fyexport.models.checkpoint", "save"),
    "build_model": ("fyexport.models.yolo", "build_model"),
    "fuse": ("fyexport.models.yolo", "fuse"),
    "letterbox": ("fyexport.data.images", "letterbox"),
    "Detector": ("fyexport.detector", "Detector"),
    "FyexportError": ("fyexport.core.errors", "FyexportError"),
}

# Modules that moved in 0.2 (issue 26): the old names import for one more release, with a
# DeprecationWarning, as a module holding the public names of their new homes.
MOVED = {
    "errors": ("core.errors",), "log": ("core.log",), "artifacts": ("core.artifacts",), "machine": ("core.machine",),
    "onnx_facts": ("onnx.facts",), "export": ("onnx.export",), "nms_onnx": ("onnx.nms",),
    "preprocess": ("data.images", "data.selection"), "datasets": ("data",), "datasets.shapes": ("data.shapes",),
    "postprocess": ("evaluation.nms",),
    "evaluate": ("evaluation.metrics", "evaluation.detections", "evaluation.agreement"),
    "accuracy": ("pipeline.accuracy",), "build": ("pipeline.build",), "manifest": ("pipeline.manifest",),
    "loss": ("recover.loss",), "trt.builder": ("trt.engine",), "trt.triton": ("deploy.triton",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        old = module.__name__.removeprefix(__name__ + ".")
        homes = [f"{__name__}.{m}" for m in MOVED[old]]
        warnings.warn(f"{module.__name__} moved to {' and '.join(homes)}", DeprecationWarning, stacklevel=2)
        for home in homes:
            new = importlib.import_module(home)
            module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})


sys.meta_path.insert(0, _MovedModules())  # before the path finders: an old file left behind never wins


def __getattr__(name):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fyexport' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
