"""Clean-room YOLOv7: modules, whitelist cfg parser, safe checkpoint I/O and fusing."""
from pathlib import Path

from .checkpoint import load, save
from .common import MP, SP, SPPCSPC, Concat, Conv, DownC, ImplicitA, ImplicitM, ReOrg, RepConv, Shortcut
from .heads import Detect, IAuxDetect, IDetect
from .yolo import Model, build_model, fuse, load_cfg

# yolov7-tiny trained on the shapes data set with the official code (the demo's model)
BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "yolov7-tiny-shapes.pt"

__all__ = [
    "BUNDLED_CHECKPOINT",
    "load", "save", "build_model", "fuse", "load_cfg", "Model",
    "Conv", "RepConv", "MP", "SP", "SPPCSPC", "DownC", "ReOrg", "Concat", "Shortcut", "ImplicitA", "ImplicitM",
    "Detect", "IDetect", "IAuxDetect",
]
