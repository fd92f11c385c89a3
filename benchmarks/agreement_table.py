#!/usr/bin/env python3
"""Does teacher agreement track labelled mAP?  For each model: mAP@.5:.95 on the labelled
validation split, its kept fraction of the unpruned teacher's, and teacher agreement on the
same images (AP@.5 against the teacher's detections scoring >= 0.25 as ground truth; the
strict agreement, AP@.5:.95 against them, beside it), side by side.

    python benchmarks/agreement_table.py --teacher yolov7-tiny-shapes.pt --data shapes/shapes.yaml \\
        --model "pruned 0.5=p.pt" --model "recovered=r.pt" --model "int8=int8/model.qdq.cpu.onnx" \\
        --machine cpu-2core-epyc

Checkpoints are exported to ONNX first; everything runs on ONNX Runtime (CPU).  Writes
``results/agreement-<machine>.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def as_onnx(path: str, work: Path, size: int) -> str:
    if path.endswith(".onnx"):
        return path
    import fyexport
    from fyexport.onnx.export import export_onnx

    out = work / (Path(path).stem + ".onnx")
    export_onnx(fyexport.load(path), out, img_size=size)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", action="append", default=[], help="LABEL=PATH (.pt or .onnx), repeatable")
    ap.add_argument("--images", type=int, default=500, help="validation images")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--machine", required=True)
    a = ap.parse_args()
    from fyexport.core.machine import machine_info
    from fyexport.data.labels import load_data_yaml
    from fyexport.evaluation.agreement import agreement_scores
    from fyexport.evaluation.detections import detect
    from fyexport.evaluation.metrics import coco_map, label_boxes
    from fyexport.runners import open_runner

    spec = load_data_yaml(a.data)
    images = spec.images("val")[:a.images]
    work = Path(tempfile.mkdtemp(prefix="agreement-"))
    models = {"unpruned (teacher)": a.teacher, **dict(m.split("=", 1) for m in a.model)}
    dets = {}
    for label, path in models.items():
        with open_runner(as_onnx(path, work, a.img_size)) as r:
            dets[label] = detect(r, images, description=label)
    teacher = dets["unpruned (teacher)"]
    gt = label_boxes(images, teacher.sizes, spec.nc)
    ref = coco_map(gt, teacher.sizes, teacher.boxes, spec.nc)[1]
    rows = []
    for label, d in dets.items():
        m50, m, _ = coco_map(gt, d.sizes, d.boxes, spec.nc)
        agree, strict = agreement_scores(d, teacher, spec.nc)
        rows.append({"model": label, "path": models[label], "map50": round(m50, 4), "map": round(m, 4),
                     "kept": round(m / ref, 4), "agreement": round(agree, 4), "strict_agreement": round(strict, 4)})
        print(f"{label:40s} mAP@.5:.95 {m:.4f}  kept {m / ref:6.1%}  agreement {agree:.4f}  strict {strict:.4f}")
    out = HERE / "results" / f"agreement-{a.machine}.json"
    out.write_text(json.dumps({"machine": machine_info(), "images": len(images), "img_size": a.img_size,
                               "teacher_conf": 0.25, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
