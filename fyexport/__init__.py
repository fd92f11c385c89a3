"""fyexport: YOLOv7 checkpoint -> pruned, INT8, TensorRT-ready deployment, with honest benchmarks.

Heavy dependencies (torch, onnxruntime, tensorrt) are imported lazily, so
``import fyexport`` and ``fyexport --help`` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load": ("fyexport.models.checkpoint", "load"),
    "save": ("fyexport.models.checkpoint", "save"),
    "build_model": ("fyexport.models.yolo", "build_model"),
    "fuse": ("fyexport.models.yolo", "fuse"),
    "letterbox": ("fyexport.preprocess", "letterbox"),
    "Detector": ("fyexport.detector", "Detector"),
    "FyexportError": ("fyexport.errors", "FyexportError"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fyexport' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
