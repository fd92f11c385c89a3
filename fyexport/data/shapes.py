#!/usr/bin/env python3
"""Deterministic synthetic detection data set (the project's shared generator, bundled so
`fyexport demo` needs no download): coloured shapes on textured backgrounds.

Writes a YOLO-format data set (images/<split>/*.jpg, labels/<split>/*.txt and a
data yaml) that a YOLOv7 model can be trained, calibrated and evaluated on.
Image i of a split is drawn from its own seed, so any subset can be regenerated
byte-for-byte with the same numpy and Pillow versions.

    python shapes.py OUT_DIR --train 4000 --val 500 [--size 640] [--seed 0]

Only numpy and Pillow are needed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["circle", "square", "triangle", "star", "cross"]


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = rng.random((cells, cells, 3), dtype=np.float32)
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """Multi-scale colour noise plus a gradient and blurred clutter."""
    img = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((3, 0.55), (12, 0.25), (48, 0.12), (160, 0.08)):
        img += weight * _noise(rng, size, cells)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    img = img * rng.uniform(0.5, 1.1) + grad * rng.uniform(-0.3, 0.3, size=3)
    img = np.clip(img, 0, 1)
    out = Image.fromarray((img * 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(3, 12))):  # clutter that is not a class
        pts = [tuple(rng.uniform(0, size, 2)) for _ in range(int(rng.integers(5, 9)))]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 6)))
    return out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 1.2))))


def shape_polygon(cls: int, cx: float, cy: float, r: float, rot: float, aspect: float) -> list:
    if cls == 0:  # circle (many-sided polygon, possibly an ellipse)
        n, radii = 48, [r] * 48
    elif cls == 1:  # square / rectangle
        n, radii = 4, [r] * 4
        rot += math.pi / 4
    elif cls == 2:  # triangle
        n, radii = 3, [r] * 3
    elif cls == 3:  # five-pointed star
        n, radii = 10, [r if k % 2 == 0 else r * 0.45 for k in range(10)]
    else:  # cross: 12-gon outline
        a, b = r, r * 0.35
        base = [(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b),
                (-b, a)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + (x * c - y * s) * aspect, cy + (x * s + y * c)) for x, y in base]
    pts = []
    for k in range(n):
        t = rot + 2 * math.pi * k / n
        pts.append((cx + radii[k] * math.cos(t) * aspect, cy + radii[k] * math.sin(t)))
    return pts


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(seed: int, size: int = 640):
    """Return (PIL image, [(cls, x1, y1, x2, y2), ...]) for one seed."""
    rng = np.random.default_rng(seed)
    img = background(rng, size)
    draw = ImageDraw.Draw(img)
    boxes: list = []
    for _ in range(int(rng.integers(1, 9))):
        for _attempt in range(20):
            cls = int(rng.integers(0, len(CLASSES)))
            r = float(math.exp(rng.uniform(math.log(size * 0.02), math.log(size * 0.22))))
            aspect = float(rng.uniform(0.6, 1.5)) if cls in (0, 1) else float(rng.uniform(0.85, 1.15))
            cx, cy = rng.uniform(0, size, 2)
            pts = shape_polygon(cls, float(cx), float(cy), r, float(rng.uniform(0, 2 * math.pi)), aspect)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (max(0.0, min(xs)), max(0.0, min(ys)), min(float(size), max(xs)), min(float(size), max(ys)))
            w, h = box[2] - box[0], box[3] - box[1]
            full_w, full_h = max(xs) - min(xs), max(ys) - min(ys)
            if w < 6 or h < 6 or w * h < 0.5 * full_w * full_h:  # mostly outside the image
                continue
            if any(_iou(box, b[1:]) > 0.2 for b in boxes):
                continue
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            outline = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.polygon(pts, fill=fill, outline=outline, width=int(rng.integers(1, 4)))
            boxes.append((cls, *box))
            break
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.5))))
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, rng.uniform(0, 8), (size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), boxes


def write_split(root: Path, split: str, count: int, seed: int, size: int) -> None:
    _write_range(root, split, 0, count, seed, size)


def generate(out, train: int = 4000, val: int = 500, size: int = 640, seed: int = 0) -> Path:
    """Write the data set under ``out`` and return the path of its data yaml."""
    out = Path(out)
    for split, count, sd in (("train", train, seed), ("val", val, seed + 1)):
        if count:
            write_split(out, split, count, sd, size)
    root = out.resolve()
    yaml_path = out / "shapes.yaml"
    yaml_path.write_text(f"train: {root}/images/train\nval: {root}/images/val\nnc: {len(CLASSES)}\n"
                         f"names: {CLASSES}\n")
    return yaml_path


def demo_data(root, train: int, val: int) -> Path:
    """The demo's data set under ``root`` (regenerated only when its image counts differ);
    returns its data yaml."""
    from ..core.artifacts import writable_folder

    root = writable_folder(root)  # a read-only place: one line, before generating anything
    have = {s: len(list((root / "images" / s).glob("*.jpg"))) for s in ("train", "val")}
    if have["train"] != train or have["val"] != val:
        print(f"generating {train} training and {val} validation images in {root}", file=sys.stderr)
        for split, count, seed in (("train", train, 0), ("val", val, 1)):
            d = root / "images" / split
            for old in d.glob("*.jpg") if d.exists() else []:
                old.unlink()
            write_split(root, split, count, seed, 640)
    r = root.resolve()
    yaml_path = root / "shapes.yaml"
    yaml_path.write_text(f"train: {r}/images/train\nval: {r}/images/val\nnc: {len(CLASSES)}\nnames: {CLASSES}\n")
    return yaml_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--seed", type=int, default=0, help="train uses seed, val uses seed+1")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    jobs = [("train", args.train, args.seed), ("val", args.val, args.seed + 1)]
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.workers) as ex:
            futs = []
            for split, count, seed in jobs:
                chunk = max(1, count // args.workers + 1)
                for start in range(0, count, chunk):
                    stop = min(count, start + chunk)
                    futs.append(ex.submit(_write_range, args.out, split, start, stop, seed, args.size))
            for f in futs:
                f.result()
    else:
        for split, count, seed in jobs:
            write_split(args.out, split, count, seed, args.size)
    root = args.out.resolve()
    (args.out / "shapes.yaml").write_text(
        f"train: {root}/images/train\nval: {root}/images/val\nnc: {len(CLASSES)}\nnames: {CLASSES}\n")


def _write_range(root: Path, split: str, start: int, stop: int, seed: int, size: int) -> None:
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        img, boxes = make_image(seed * 1_000_003 + i, size)
        name = f"{split}_{i:06d}"
        img.save(img_dir / f"{name}.jpg", quality=92)
        with open(lbl_dir / f"{name}.txt", "w") as f:
            for cls, x1, y1, x2, y2 in boxes:
                f.write(f"{cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                        f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n")


if __name__ == "__main__":
    main()
