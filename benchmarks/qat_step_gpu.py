#!/usr/bin/env python3
"""Training step time with and without fake quantization (issue 24), on the GPU when there is one.

    python benchmarks/qat_step_gpu.py --machine h100 [--weights yolov7-tiny-shapes.pt] [--full yolov7-shapes.pt]
        [--batch 16 --img-size 640 --steps 20]

For each model: its FP32 ONNX is exported, calibrated on random images (the ranges only set
where the clipping falls; the time does not depend on them), and one training step of
distillation from the FP32 model is timed for the plain model and for the TensorRT and CPU
flavours of fake quantization (``fyexport.recover.qat.qat_step_time``: median of
``--steps`` after a warm-up, device synchronised, bf16 autocast).  Writes
``results/qat-step-<machine>.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "fyexport" / "assets" / "yolov7-tiny-shapes.pt"


def ranges_for(model, work: Path, img_size: int):
    """Calibrated ranges of ``model`` on 16 random images (fyexport's calibration)."""
    import numpy as np
    from PIL import Image

    from fyexport.onnx.export import export_onnx
    from fyexport.quantize.qat_export import calibrated_ranges

    imgs = work / "images"
    imgs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (img_size, img_size, 3), dtype=np.uint8)).save(imgs / f"{i}.jpg")
    export_onnx(model, work / "model.onnx", img_size=img_size)
    return work / "model.onnx", calibrated_ranges(work / "model.onnx", imgs, work / "calib", num_images=16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--weights", default=str(TINY))
    ap.add_argument("--full", help="also time this (larger) model, e.g. yolov7-shapes.pt")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    import fyexport
    from fyexport.core.machine import machine_info
    from fyexport.quantize.qat_export import start_qat
    from fyexport.recover.qat import qat_step_time

    out = {"machine": machine_info(), "settings": vars(a), "models": {}}
    for name, path in [("tiny", a.weights)] + ([("full", a.full)] if a.full else []):
        model = fyexport.load(path)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path, ranges = ranges_for(model, Path(tmp), a.img_size)
            rows = {"plain": qat_step_time(model, model, a.batch, a.img_size, a.device, a.steps)}
            for fl in ("trt", "cpu"):
                q = start_qat(model, onnx_path, ranges, fl)
                rows[f"qat-{fl}"] = qat_step_time(q, model, a.batch, a.img_size, a.device, a.steps)
        for k in ("qat-trt", "qat-cpu"):
            rows[k]["vs_plain"] = round(rows[k]["step_s"] / rows["plain"]["step_s"], 3)
        out["models"][name] = rows
        print(name, json.dumps(rows))
    f = HERE / "results" / f"qat-step-{a.machine}.json"
    f.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {f}")


if __name__ == "__main__":
    main()
