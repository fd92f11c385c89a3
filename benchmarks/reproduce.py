#!/usr/bin/env python3
"""Reproduce the headline table from nothing on this machine.

    python benchmarks/reproduce.py --weights yolov7-shapes.pt --machine cpu-2core \
        [--recovered recovered.pt | --recover-minutes 80] [--train 3000 --val 500]

The defaults are the recipe of the recorded CPU headline (results/cpu-2core-xeon.json):
recovery for 80 minutes on random 320x320 crops, batch 16, AdamW lr 1.5e-3 (bf16 autocast
where the CPU has AMX / AVX512-BF16).  On a GPU, recover with gpu_run.py and pass
--recovered.

Steps: generate the shapes data set (bundled generator), prune the checkpoint 0.5 (L2,
round_to 8), recover it by distillation under a time budget (or reuse --recovered, e.g. the
one trained on a GPU), export FP32 ONNX, calibrate INT8 (--method, default search, 500 images), then
``fyexport bench`` the pruned FP32, INT8 CPU-flavour and INT8 TensorRT-style models against
the unpruned FP32 checkpoint with mAP on the validation split.  Writes
benchmarks/results/<machine>.json and .png (the bench report, plus a "pipeline" section
with the timings of each step).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="unpruned YOLOv7 checkpoint (e.g. yolov7-shapes.pt)")
    ap.add_argument("--machine", required=True, help="name for benchmarks/results/<machine>.json")
    ap.add_argument("--work", default="runs/reproduce", help="working folder (data, models)")
    ap.add_argument("--recovered", help="reuse this recovered model instead of recovering here")
    ap.add_argument("--recover-minutes", type=float, default=80.0)
    ap.add_argument("--recover-crop", type=int, default=320,
                    help="train on random crops of this size (320: same object scale, 1/4 of the cost; "
                         "0: whole images)")
    ap.add_argument("--recover-lr", type=float, default=1.5e-3)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--method", default="search", help="calibration method (fyexport build's default: search)")
    ap.add_argument("--auto-exclude", type=int, default=4,
                    help="keep the K most sensitive scale groups in float (pruned+recovered models need it)")
    args = ap.parse_args()

    import fyexport
    from fyexport.bench.report import plot, render
    from fyexport.bench.run import run_bench
    from fyexport.core.artifacts import write_json
    from fyexport.data.labels import load_data_yaml
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.prune import PruneConfig, prune
    from fyexport.quantize import calibrate
    from fyexport.recover import RecoverConfig, recover

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = {}

    def step(name, fn):
        t = time.time()
        r = fn()
        steps[name] = round(time.time() - t, 1)
        print(f"{name}: {steps[name]} s", flush=True)
        return r

    data = work / "data" / "shapes.yaml"
    if not data.exists():
        step("generate data", lambda: generate(work / "data", train=args.train, val=args.val))
    spec = load_data_yaml(data)
    pruned_path = work / "pruned.pt"
    rec = Path(args.recovered) if args.recovered else work / "recovered.pt"
    if not rec.exists() and not pruned_path.exists():
        def do_prune():
            pm, res = prune(fyexport.load(args.weights), PruneConfig(ratio=0.5, importance="l2", round_to=8))
            fyexport.save(pm, pruned_path)
            return res
        step("prune", do_prune)
    if not rec.exists():
        # the recipe of the recorded tables (no reconstruction, lr 1.5e-3); fyexport's default now reconstructs
        cfg = RecoverConfig(epochs=100, img_size=640, batch=16, lr=args.recover_lr, device=args.device,
                            minutes=args.recover_minutes, crop=args.recover_crop, reconstruct=0)
        step("recover", lambda: recover(fyexport.load(pruned_path), fyexport.load(args.weights), spec.images("train"),
                                        rec, cfg, data=spec))
    onnx_path = work / "recovered.onnx"
    step("export", lambda: export_onnx(fyexport.load(rec), onnx_path))
    cal = step("calibrate", lambda: calibrate(onnx_path, Path(spec.images("train")[0]).parent, work / "int8",
                                              num_images=500, method=args.method,
                                              auto_exclude=args.auto_exclude))
    arts = [str(onnx_path), str(work / "int8/model.qdq.cpu.onnx"), str(work / "int8/model.qdq.onnx")]
    report = step("bench", lambda: run_bench(arts, args.weights, runtime="auto", device=args.device,
                                             batches=tuple(int(b) for b in args.batches.split(",")),
                                             duration=args.duration, data=str(data), workdir=work / "bench"))
    report["pipeline"] = {"steps_s": steps, "recovered_from": str(rec), "method": args.method,
                          "auto_exclude": args.auto_exclude,
                          "recovered_meta": fyexport.load(rec).meta.get("recover"),
                          "calibration": {"images": cal.images_used, "seconds": round(cal.seconds, 1),
                                          "inference_s": round(cal.infer_seconds, 1),
                                          "histogram_s": round(cal.stats_seconds, 1),
                                          "kl_s": round(cal.amax_seconds, 2), "peak_rss_mb": cal.peak_rss_mb}}
    out = HERE / "results" / args.machine
    write_json(out.with_suffix(".json"), report)
    plot(report, out.with_suffix(".png"))
    render(report)
    print(json.dumps(report["pipeline"], indent=2))


if __name__ == "__main__":
    main()
