"""Compatibility alias: the Detector lives in :mod:`fyexport.detector` (``fyexport.Detector``)."""
from .detector import Detector

__all__ = ["Detector"]
