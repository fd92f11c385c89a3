"""Clean-room YOLOv7: modules, whitelist cfg parser, safe checkpoint I/O and fusing."""
from .checkpoint import load, save
from .common import SPPCSPC, Concat, Conv, DownC, ImplicitA, ImplicitM, MP, ReOrg, RepConv, Shortcut, SP
from .heads import Detect, IAuxDetect, IDetect
from .yolo import Model, build_model, fuse, load_cfg

__all__ = [
    "load", "save", "build_model", "fuse", "load_cfg", "Model",
    "Conv", "RepConv", "MP", "SP", "SPPCSPC", "DownC", "ReOrg", "Concat", "Shortcut", "ImplicitA", "ImplicitM",
    "Detect", "IDetect", "IAuxDetect",
]
