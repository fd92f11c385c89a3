"""YOLO-format data sets: the data yaml, image lists and label files.

A data yaml names ``train``/``val`` image folders (or .txt lists), ``nc`` and ``names``;
labels sit beside the images with ``/images/`` replaced by ``/labels/`` and a ``.txt``
suffix, one ``class cx cy w h`` row (normalised) per object, as shapes.py writes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .preprocess import list_images


@dataclass
class DataSpec:
    path: Path
    nc: int
    names: list
    splits: dict

    def images(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise InputError(f"{self.path}: has no '{split}' split (has: {', '.join(self.splits) or 'none'})")
        src = self.splits[split]
        if src.is_dir():
            imgs = list_images(src)
        elif src.suffix == ".txt" and src.is_file():
            base = src.parent
            imgs = [(base / ln.strip()).resolve() if not Path(ln.strip()).is_absolute() else Path(ln.strip())
                    for ln in src.read_text().splitlines() if ln.strip()]
        else:
            raise InputError(f"{self.path}: split '{split}' points to {src}, which does not exist",
                             "Fix the path in the data yaml")
        if not imgs:
            raise InputError(f"{self.path}: split '{split}' ({src}) holds no images")
        return imgs


def load_data_yaml(path) -> DataSpec:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such data yaml", "Give a YOLO data yaml with train/val, nc and names")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{p}: not valid yaml ({str(e).splitlines()[0]})")
    if not isinstance(d, dict):
        raise InputError(f"{p}: not a data yaml (expected a mapping with train/val, nc, names)")
    names = d.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    nc = d.get("nc", len(names) if isinstance(names, list) else None)
    if not isinstance(nc, int) or nc <= 0:
        raise InputError(f"{p}: needs a positive 'nc' (or a 'names' list)")
    if not isinstance(names, list):
        names = [str(i) for i in range(nc)]
    if len(names) != nc:
        raise InputError(f"{p}: nc is {nc} but names has {len(names)} entries")
    base = Path(d["path"]) if d.get("path") else p.parent
    if not base.is_absolute():
        base = (p.parent / base).resolve()
    splits = {}
    for key in ("train", "val", "test"):
        v = d.get(key)
        if isinstance(v, str) and v:
            sp = Path(v)
            splits[key] = sp if sp.is_absolute() else (base / sp)
    if not splits:
        raise InputError(f"{p}: names no train/val/test split")
    return DataSpec(p, nc, [str(n) for n in names], splits)


def label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(img: Path, nc: int | None = None) -> np.ndarray:
    """(n, 5) float32 ``class cx cy w h`` (normalised); empty if there is no label file."""
    lp = label_path(Path(img))
    if not lp.is_file():
        return np.zeros((0, 5), np.float32)
    rows = [ln.split() for ln in lp.read_text().splitlines() if ln.strip()]
    try:
        arr = np.array([[float(v) for v in r[:5]] for r in rows if len(r) >= 5], np.float32).reshape(-1, 5)
    except ValueError:
        raise InputError(f"{lp}: malformed label file (expected 'class cx cy w h' rows)")
    if nc is not None and arr.size and (arr[:, 0].max() >= nc or arr[:, 0].min() < 0):
        raise InputError(f"{lp}: class id {int(arr[:, 0].max())} outside 0..{nc - 1}")
    return arr
