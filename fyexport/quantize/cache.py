"""TensorRT's calibration cache text format (docs/int8-tensorrt.md, 2.2).

Line 1 is ``TRT-<version>-EntropyCalibration2``; each further line is
``<tensor name>: <8 hex digits>``, the big-endian IEEE-754 float32 bits of the scale
``amax / 127``.  1/127 encodes as ``3c010204``.
"""
from __future__ import annotations

import struct

DEFAULT_TRT_VERSION = 101600  # TensorRT 10.16: the last 10.x the calibrator API exists in
ALGORITHM = "EntropyCalibration2"


def encode_scale(amax: float) -> str:
    return struct.pack(">f", amax / 127.0).hex()


def decode_scale(hexstr: str) -> float:
    """The scale (amax / 127) from its 8 hex digits."""
    return struct.unpack(">f", bytes.fromhex(hexstr.strip()))[0]


def trt_version_number(version: str | None = None) -> int:
    """major*10000 + minor*100 + patch for 10.x (the cache header's version field)."""
    if version is None:
        try:
            import tensorrt as trt  # noqa: F401

            version = trt.__version__
        except ImportError:
            return DEFAULT_TRT_VERSION
    parts = [int(p) for p in str(version).split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    if parts[0] < 10:  # 8.x caches use the 4-digit NV_TENSORRT_VERSION
        return parts[0] * 1000 + parts[1] * 100 + parts[2]
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


def format_cache(amax: dict, version: int | None = None) -> str:
    """The cache text for ``{tensor name: amax}``, tensors in sorted order (deterministic)."""
    v = trt_version_number() if version is None else version
    lines = [f"TRT-{v}-{ALGORITHM}"]
    for name in sorted(amax):
        lines.append(f"{name}: {encode_scale(float(amax[name]))}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> tuple[str, dict]:
    """(header, {tensor: amax}) from cache text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError("not a TensorRT calibration cache (first line must start with 'TRT-')")
    out = {}
    for ln in lines[1:]:
        name, _, hexstr = ln.rpartition(": ")
        out[name] = decode_scale(hexstr) * 127.0
    return lines[0], out
