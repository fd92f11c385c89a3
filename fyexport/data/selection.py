"""Which images a stage reads: listing a folder (symlinks followed, builds left out), a
deterministic sample, and the hash of the selection that keys the stage caches."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.artifacts import is_build_folder
from ..core.errors import InputError
from .images import IMAGE_SUFFIXES


def list_images(folder, recursive: bool = True, exclude=()) -> list[Path]:
    """Image files under ``folder`` by suffix, sorted for determinism.  Symlinked folders are
    followed (each real folder once, so a link loop ends); folders in ``exclude`` and every
    fyexport build folder (whoever's: its ``bench.png`` is an output, not a sample), with
    what is below them, are left out."""
    folder = Path(folder)
    skip = [os.path.realpath(e) for e in exclude]

    def excluded(real: str) -> bool:
        return any(real == s or real.startswith(s.rstrip(os.sep) + os.sep) for s in skip)

    out, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or excluded(real) or is_build_folder(root):
            dirs[:] = []
            continue
        seen.add(real)
        if not recursive:
            dirs[:] = []
        out += [Path(root) / f for f in files
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and (Path(root) / f).is_file()]
    return sorted(out)


def sample_images(paths: Sequence[Path], n: int | None, seed: int = 0) -> list[Path]:
    """A deterministic sample of ``n`` paths (all when n is None or >= len)."""
    paths = sorted(paths)
    if n is None or n >= len(paths):
        return list(paths)
    rng = random.Random(seed)
    return sorted(rng.sample(list(paths), n))


def file_list_hash(paths: Sequence[Path], root=None) -> str:
    """Hash of the names, sizes and modification-free content digests of ``paths``."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        rel = os.path.relpath(p, root) if root else str(p)
        h.update(rel.encode())
        try:
            st = Path(p).stat()
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).digest()
        except OSError:  # unreadable: reading it later skips and counts it; the list stays hashable
            h.update(b"unreadable")
            continue
        h.update(str(st.st_size).encode())
        h.update(digest)
    return h.hexdigest()


@dataclass
class ImageSet:
    """A deterministic selection of images from a folder, with the hash that keys caches."""

    paths: list
    found: int
    list_hash: str
    root: str


def select_images(folder, num_images: int | None = 500, seed: int = 0, what: str = "calibration",
                  exclude=()) -> ImageSet:
    """``num_images`` images sampled with ``seed`` from ``folder`` (recursively, leaving out
    the folders in ``exclude``)."""
    p = Path(folder)
    if not p.exists():
        raise InputError(f"{p}: no such {what} folder")
    if not p.is_dir():
        raise InputError(f"{p}: not a folder (give a folder of {what} images)")
    if is_build_folder(p):
        raise InputError(f"{p}: is a fyexport build folder (its images are the build's outputs)",
                         f"Give the folder of {what} images")
    found = list_images(p, exclude=exclude)
    if not found:
        raise InputError(f"{p}: no image files (jpg, png, bmp, webp, tiff) in this folder or below",
                         "Put at least a few hundred images like the deployment's in it")
    chosen = sample_images(found, num_images, seed)
    return ImageSet(chosen, len(found), file_list_hash(chosen, p), str(p))
