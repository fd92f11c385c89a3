"""YOLO-format data sets: the data yaml, image lists and label files.

A data yaml names ``train``/``val``/``test`` splits (an image folder, a .txt list of
images, or a list of those), ``nc`` and/or ``names``.  Relative split paths are resolved
the way each layout means them:

- Ultralytics (the yaml has ``path:``): relative to ``path``, itself relative to the
  working directory or, failing that, to the yaml's folder;
- otherwise relative to the yaml's folder (a yaml beside its folders) or, failing that, to
  the working directory (the official YOLOv7 layout, ``data/coco.yaml`` with
  ``train: ./coco/train2017.txt``, run from the repository root).

Lines of a .txt list are relative to the list's folder (YOLOv7 and Ultralytics replace a
leading ``./`` by it), else to the working directory.  When nothing is found the error
names every place tried.

Labels sit beside the images with the last ``/images/`` replaced by ``/labels/`` and a
``.txt`` suffix: one row per object, either a box ``class cx cy w h`` or a polygon
``class x1 y1 x2 y2 x3 y3 ...`` (the YOLO segment format, read as its bounding box, as
YOLOv7 and Ultralytics do), all normalised to 0..1.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .selection import list_images

SPLITS = ("train", "val", "test")
COORD_SLACK = 0.01  # normalised coordinates a little outside 0..1 are rounding; clipped


@dataclass
class DataSpec:
    path: Path
    nc: int
    names: list
    splits: dict  # split -> [(the yaml's entry, [candidate paths, in the order tried])]

    def images(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise InputError(f"{self.path}: has no '{split}' split (has: {', '.join(self.splits) or 'none'})")
        imgs: list = []
        for entry, candidates in self.splits[split]:
            src = next((c for c in candidates if c.exists()), None)
            if src is None:
                tried = ", ".join(str(c) for c in candidates)
                raise InputError(f"{self.path}: split '{split}' ({entry}) not found; tried {tried}",
                                 "Fix the path in the data yaml (or its 'path:'), or run from the folder it is "
                                 "relative to")
            imgs += self._entry_images(split, src)
        imgs = list({str(p): p for p in imgs}.values())
        if not imgs:
            raise InputError(f"{self.path}: split '{split}' ({self.splits[split][0][0]}) holds no images")
        return imgs

    def _entry_images(self, split: str, src: Path) -> list[Path]:
        if src.is_dir():
            return list_images(src)
        if src.suffix.lower() != ".txt":
            raise InputError(f"{self.path}: split '{split}' points to {src}, which is neither a folder nor a .txt "
                             "list of images")
        try:
            lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{src}: cannot read this image list ({getattr(e, 'strerror', None) or e})")
        paths = [_list_entry(src.parent, ln) for ln in lines]
        if paths and not any(p.exists() for p in paths):
            first = lines[0]
            tried = ", ".join(str(c) for c in _list_candidates(src.parent, first))
            raise InputError(f"{src}: none of the listed images exist (the first, {first}, was looked for at "
                             f"{tried})", "Lines are relative to the list's folder or to the working directory")
        return paths


def _list_candidates(base: Path, line: str) -> list[Path]:
    p = Path(line)
    if p.is_absolute():
        return [p]
    if line.startswith("./"):
        return [base / line[2:]]
    return _unique([base / p, Path.cwd() / p])


def _list_entry(base: Path, line: str) -> Path:
    cands = _list_candidates(base, line)
    return next((c for c in cands if c.exists()), cands[0])


def _unique(paths) -> list[Path]:
    out, seen = [], set()
    for p in paths:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(Path(key))
    return out


def _roots(p: Path, d: dict) -> list[Path]:
    """Where relative split paths may be relative to, in the order they are tried."""
    here = Path(os.path.abspath(p)).parent
    if d.get("path"):
        root = Path(str(d["path"]))
        return [root] if root.is_absolute() else _unique([Path.cwd() / root, here / root])
    return _unique([here, Path.cwd()])


def _split_candidates(p: Path, d: dict, key: str) -> list:
    v = d.get(key)
    if v is None or v == "" or v == []:
        return []
    entries = v if isinstance(v, list) else [v]
    if not all(isinstance(e, str) and e.strip() for e in entries):
        raise InputError(f"{p}: split '{key}' must be a path or a list of paths, got {v!r}")
    out = []
    for e in entries:
        sp = Path(e.strip())
        if sp.is_absolute():
            out.append((e, [sp]))
            continue
        cands = []
        for r in _roots(p, d):
            cands.append(r / sp)
            if e.startswith("../") and d.get("path"):  # Ultralytics: also tried without the leading ../
                cands.append(r / e[3:])
        out.append((e, _unique(cands)))
    return out


def load_data_yaml(path) -> DataSpec:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such data yaml", "Give a YOLO data yaml with train/val, nc and names")
    try:
        d = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read the data yaml ({getattr(e, 'strerror', None) or e})")
    except yaml.YAMLError as e:
        raise InputError(f"{p}: not valid yaml ({str(e).splitlines()[0]})")
    if not isinstance(d, dict):
        raise InputError(f"{p}: not a data yaml (expected a mapping with train/val, nc, names)")
    if d.get("kpt_shape") is not None:
        raise InputError(f"{p}: a pose data set (kpt_shape): its label rows carry keypoints",
                         "fyexport reads detection (class cx cy w h) and segment (polygon) labels")
    nc, names = _classes(p, d)
    splits = {key: c for key in SPLITS if (c := _split_candidates(p, d, key))}
    if not splits:
        raise InputError(f"{p}: names no train/val/test split")
    return DataSpec(p, nc, names, splits)


def _classes(p: Path, d: dict) -> tuple[int, list]:
    names = d.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    nc = d.get("nc", len(names) if isinstance(names, list) else None)
    if not isinstance(nc, int) or isinstance(nc, bool) or nc <= 0:
        raise InputError(f"{p}: needs a positive 'nc' (or a 'names' list)")
    if not isinstance(names, list):
        names = [str(i) for i in range(nc)]
    if len(names) != nc:
        raise InputError(f"{p}: nc is {nc} but names has {len(names)} entries")
    return nc, [str(n) for n in names]


def label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


MAX_CLASS_ID = 2 ** 24
ROW_FORMATS = "'class cx cy w h' boxes or 'class x1 y1 x2 y2 x3 y3 ...' polygons, normalised to 0..1"


def _row_box(lp: Path, i: int, v: list) -> list:
    """``class cx cy w h`` of one label row (a box, or a polygon's bounding box)."""
    if not all(math.isfinite(c) for c in v):
        raise InputError(f"{lp}: line {i} has a value that is not a finite number; expected {ROW_FORMATS}")
    if len(v) == 5:
        box = v
    elif len(v) >= 7 and len(v) % 2 == 1:
        xy = np.clip(np.asarray(v[1:], np.float64).reshape(-1, 2), 0.0, 1.0)
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        box = [v[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    else:
        raise InputError(f"{lp}: line {i} has {len(v)} numbers; expected {ROW_FORMATS}")
    if not all(-COORD_SLACK <= c <= 1 + COORD_SLACK for c in v[1:]):
        raise InputError(f"{lp}: line {i} has coordinates outside 0..1 (pixels?); expected {ROW_FORMATS}")
    if v[0] != int(v[0]) or v[0] < 0 or v[0] >= MAX_CLASS_ID:  # float32 labels hold ids exactly below 2**24
        raise InputError(f"{lp}: line {i} has class {v[0]:g}; class ids are whole numbers from 0")
    return box


def read_labels(img: Path, nc: int | None = None) -> np.ndarray:
    """(n, 5) float32 ``class cx cy w h`` (normalised); empty if there is no label file.
    Polygon rows (the segment format) become their bounding boxes."""
    lp = label_path(Path(img))
    if not lp.is_file():
        return np.zeros((0, 5), np.float32)
    try:
        text = lp.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{lp}: cannot read this label file ({getattr(e, 'strerror', None) or e})")
    rows = []
    for i, ln in enumerate(text.splitlines(), 1):
        if not ln.strip():
            continue
        try:
            v = [float(x) for x in ln.split()]
        except ValueError:
            raise InputError(f"{lp}: line {i} is not numbers; expected {ROW_FORMATS}")
        rows.append(_row_box(lp, i, v))
    arr = np.array(rows, np.float32).reshape(-1, 5)
    if nc is not None and arr.size and arr[:, 0].max() >= nc:
        raise InputError(f"{lp}: class id {int(arr[:, 0].max())} outside 0..{nc - 1}")
    return arr


def has_labels(images) -> bool:
    """Whether any of ``images`` has a label file (an empty one counts: no objects)."""
    return any(label_path(Path(p)).is_file() for p in images)
