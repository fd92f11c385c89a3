"""What DeepStream's preprocessing costs in mAP: the shapes validation pictures cropped to a
wide frame (so that the letterbox pads), evaluated with ONNX Runtime three ways:

* ``fyexport``: fyexport's letterbox (grey 114 padding), the reference;
* ``black padding``: the same letterbox with nvinfer's black (0) padding, the one difference
  the nvinfer config cannot remove;
* ``nvinfer``: all of nvinfer's preprocessing as its source does it (black padding, the
  resized side truncated, odd frames cropped to even, bilinear in floating point, x * 1/255)
  and its mapping of boxes back (integer offsets, ratio of the truncated size), from
  ``tests/test_deploy_deepstream.py`` (``nvinfer_input``).

  python benchmarks/deepstream_preprocessing.py [--weights W.pt] [--val 500] [--crop-height 360]
                                                [--frame-width 1000]

Prints one line per way and the differences; nothing is written outside a temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def crop_split(src_root: Path, dst_root: Path, height: int, width: int | None = None) -> Path:
    """The val pictures cut to their middle ``height`` rows, then resized to ``width`` (aspect
    kept) when given; a box is kept (clipped) when at least half of it stays in the picture."""
    import cv2

    (dst_root / "images/val").mkdir(parents=True)
    (dst_root / "labels/val").mkdir(parents=True)
    for img_path in sorted((src_root / "images/val").glob("*.jpg")):
        img = cv2.imread(str(img_path))
        h, w = img.shape[:2]
        y0 = (h - height) // 2
        frame = img[y0:y0 + height]
        if width:
            frame = cv2.resize(frame, (width, round(height * width / w)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(dst_root / "images/val" / img_path.name), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines = []
        for line in (src_root / "labels/val" / (img_path.stem + ".txt")).read_text().splitlines():
            c, cx, cy, bw, bh = (float(v) for v in line.split())
            x1, x2 = (cx - bw / 2) * w, (cx + bw / 2) * w
            y1, y2 = (cy - bh / 2) * h - y0, (cy + bh / 2) * h - y0
            ny1, ny2 = max(y1, 0.0), min(y2, float(height))
            if ny2 - ny1 < 0.5 * (y2 - y1):
                continue
            lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(ny1 + ny2) / 2 / height:.6f} {(x2 - x1) / w:.6f} "
                         f"{(ny2 - ny1) / height:.6f}")
        (dst_root / "labels/val" / (img_path.stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml_path = dst_root / "wide.yaml"
    from fyexport.data.shapes import CLASSES

    yaml_path.write_text(f"val: {dst_root.resolve()}/images/val\nnc: {len(CLASSES)}\nnames: {CLASSES}\n")
    return yaml_path


def preprocessings(prop: dict) -> dict:
    """{name: a replacement of fyexport.evaluation.metrics.prepare}."""
    from test_deploy_deepstream import nvinfer_geometry, nvinfer_input

    from fyexport.data.images import Prepared, letterbox, to_tensor

    def black(img, size):
        lb, ratio, pad = letterbox(img, size, color=(0, 0, 0))
        return Prepared(to_tensor(lb), ratio, pad, img.shape[:2])

    def nvinfer(img, size):
        hw = tuple(size) if not isinstance(size, int) else (size, size)
        tensor, (left, top, dw, dh) = nvinfer_input(img, hw, prop)
        sh, sw = nvinfer_geometry(img.shape[:2], hw)[4]
        return Prepared(tensor, (dw / sw, dh / sh), (left, top), img.shape[:2])

    return {"black padding": black, "nvinfer": nvinfer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(REPO / "fyexport/assets/yolov7-tiny-shapes.pt"))
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--crop-height", type=int, default=360)
    ap.add_argument("--frame-width", type=int, help="Resize the cut frames to this width (aspect kept).")
    ap.add_argument("--img-size", type=int, default=640)
    args = ap.parse_args()

    import fyexport
    from fyexport.data.shapes import generate
    from fyexport.deploy.deepstream import DeepStreamConfig, write_deepstream
    from fyexport.evaluation import detections as ev
    from fyexport.evaluation.metrics import evaluate
    from fyexport.onnx.export import export_onnx
    from fyexport.runners import open_runner

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "shapes", train=0, val=args.val)
        data = crop_split(tmp / "shapes", tmp / "wide", args.crop_height, args.frame_width)
        export_onnx(fyexport.load(args.weights), tmp / "model.onnx", img_size=args.img_size)
        cfg = write_deepstream(DeepStreamConfig(tmp / "model.onnx", tmp / "ds")).config
        prop = dict(line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line and line[0] != "#")
        results = {}
        original = ev.prepare
        for name, prepare in {"fyexport": original, **preprocessings(prop)}.items():
            ev.prepare = prepare
            t0 = time.time()
            try:
                r = evaluate(open_runner(tmp / "model.onnx"), data)
            finally:
                ev.prepare = original
            results[name] = r
            print(f"{name:14s} mAP@.5 {r.map50:.4f}  mAP@.5:.95 {r.map:.4f}  ({r.images} images, {r.instances} "
                  f"boxes, {time.time() - t0:.0f} s)")
        ref = results["fyexport"]
        for name in ("black padding", "nvinfer"):
            print(f"{name:14s} - fyexport: mAP@.5 {results[name].map50 - ref.map50:+.4f}  mAP@.5:.95 "
                  f"{results[name].map - ref.map:+.4f}")
        fw = args.frame_width or 640
        print(f"frames {fw}x{round(args.crop_height * fw / 640)} into {args.img_size}x{args.img_size}: "
              f"{np.round(100 * (1 - args.crop_height / 640), 1)}% of the network input is padding")


if __name__ == "__main__":
    main()
