#!/usr/bin/env python3
"""What is measured on a lent GPU, in one short session (sections run in order; each one's
results are written to <out>/gpu_run.json as soon as it ends, so a cut-off run keeps them):

* ``accuracy``: the build's accuracy stage (pipeline/accuracy.measure) for a checkpoint at 640
  on the validation images, where the user deploys (GPU: the FP32 rows' checkpoints in
  PyTorch on the GPU, Q/DQ rows on ONNX Runtime) side by side with the CPU path (every row on
  ONNX Runtime's CPU provider), same images, same rows: time per row and the table.
* ``qat``: the time of one quantization-aware training step (fake quantization in the loop) of
  the pruned checkpoint on the GPU, against a plain recovery step.
* ``recover``: prune 0.5 and recover for ``--train-seconds`` on the GPU (the kept fraction,
  images/s and the share of time waiting for input).
* ``runners``: the PyTorch runners (eager, CUDA graph, FP16) of the unpruned checkpoint at
  batch 1 and 32.

    python -m fyexport.data.shapes shapes --train 3000 --val 500 --workers 16
    python benchmarks/gpu_run.py --weights yolov7-shapes.pt --data shapes/shapes.yaml --out OUT
"""
from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path


def accuracy(args, out: Path, log: dict) -> None:
    from fyexport.core.machine import resolve_device
    from fyexport.data.labels import load_data_yaml
    from fyexport.models import load
    from fyexport.onnx.export import export_onnx
    from fyexport.pipeline.accuracy import INT8, UNPRUNED, measure, sources
    from fyexport.quantize import ARTIFACTS, calibrate

    spec = load_data_yaml(args.data)
    t = time.perf_counter()
    export_onnx(load(args.weights), out / "model.onnx", img_size=640)
    calibrate(out / "model.onnx", Path(spec.images("train")[0]).parent, out, num_images=args.calib_images,
              method="entropy", bias_correction=0, flavours=("trt", "cpu"))
    log["accuracy_prep_s"] = round(time.perf_counter() - t, 1)
    paths = {UNPRUNED: out / "model.onnx"} | {INT8[fl]: out / ARTIFACTS[fl] for fl in ("trt", "cpu")}
    for where, device in (("gpu", resolve_device(args.gpu)), ("cpu", "cpu")):
        rows = sources(paths, {UNPRUNED: args.weights}, device)
        t = time.perf_counter()
        table = measure(rows, spec, None, args.eval_images, (640, 640))
        log[f"accuracy_{where}"] = {"seconds": round(time.perf_counter() - t, 1),
                                    "rows": {k: {"runtime": f"{rows[k].runtime} {rows[k].device}"} | v.to_dict()
                                             for k, v in table.items()}}
        _save(out, log)


def qat(args, out: Path, log: dict) -> None:
    """One training step of the checkpoint at 640 with fake quantization in the loop (both
    flavours) against the same step without it, distilled from itself (issue 24)."""
    import sys

    import fyexport
    from fyexport.quantize.qat_export import start_qat
    from fyexport.recover.qat import qat_step_time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from qat_step_gpu import ranges_for

    model = fyexport.load(args.weights)
    onnx_path, ranges = ranges_for(model, out / "qat", 640)
    rows = {"plain": qat_step_time(model, model, args.batch, 640, args.gpu, args.qat_steps)}
    for fl in ("trt", "cpu"):
        rows[f"qat-{fl}"] = qat_step_time(start_qat(model, onnx_path, ranges, fl), model, args.batch, 640, args.gpu,
                                          args.qat_steps)
        rows[f"qat-{fl}"]["vs_plain"] = round(rows[f"qat-{fl}"]["step_s"] / rows["plain"]["step_s"], 3)
    log["qat"] = rows


def recover(args, out: Path, log: dict) -> None:
    import fyexport
    from fyexport.data.labels import load_data_yaml
    from fyexport.evaluation.metrics import evaluate
    from fyexport.prune import PruneConfig, prune
    from fyexport.recover import RecoverConfig, holdout_for
    from fyexport.recover import recover as run_recover
    from fyexport.runners import open_runner

    spec = load_data_yaml(args.data)
    pruned, res = prune(fyexport.load(args.weights), PruneConfig(ratio=0.5, count_size=640, fuse=False))
    cfg = RecoverConfig(img_size=640, batch=args.batch, device=args.gpu, minutes=args.train_seconds / 60)
    paths, holdout = holdout_for(spec.images("train"), spec, cfg, pruned.nc)
    t = time.perf_counter()
    model, summary = run_recover(pruned, fyexport.load(args.weights), paths, out / "recovered.pt", cfg, data=spec,
                                 holdout=holdout)
    summary.pop("history", None)
    with open_runner(model, device=args.gpu, img_size=640) as r:
        e = evaluate(r, spec, max_images=args.eval_images, batch=32, description="recovered")
    with open_runner(args.weights, device=args.gpu, img_size=640) as r:
        e0 = evaluate(r, spec, max_images=args.eval_images, batch=32, description="unpruned")
    log["recover"] = {"wall_s": round(time.perf_counter() - t, 1), "summary": summary, "prune": res.to_dict(),
                      "map": e.map, "map50": e.map50, "unpruned_map": e0.map, "kept": round(e.map / e0.map, 4)}
    (out / "recovered.pt").unlink()


def runners(args, out: Path, log: dict) -> None:
    from fyexport.bench import BenchConfig, render, run_bench

    report = run_bench([], args.weights, BenchConfig(runtime="torch", device=args.gpu, batches=(1, 32), warmup=0.5,
                                                     duration=args.bench_duration, agreement_images=0))
    render(report)
    log["runners"] = report.to_dict()


SECTIONS = {"accuracy": accuracy, "qat": qat, "recover": recover, "runners": runners}


def _save(out: Path, log: dict) -> None:
    (out / "gpu_run.json").write_text(json.dumps(log, indent=2, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--train-seconds", type=float, default=180)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bench-duration", type=float, default=2.0)
    ap.add_argument("--qat-steps", type=int, default=20, help="timed steps per QAT row")
    ap.add_argument("--gpu", default="cuda", help="the GPU device (cpu: a dry run of the code paths)")
    args = ap.parse_args()
    import torch

    from fyexport.core.machine import machine_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = {"machine": machine_info(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__,
           "args": vars(args)}
    for name in args.sections.split(","):
        t = time.perf_counter()
        try:
            SECTIONS[name](args, out, log)
        except Exception as e:  # noqa: BLE001 - keep the other sections' results
            traceback.print_exc()
            log[f"{name}_error"] = repr(e)
        log[f"{name}_section_s"] = round(time.perf_counter() - t, 1)
        _save(out, log)
        print(f"== {name} done in {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
