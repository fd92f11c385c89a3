#!/usr/bin/env python3
"""One GPU session: prune yolov7-shapes 0.5, recover it on the GPU under a time budget,
evaluate unpruned / pruned / recovered on the shapes validation split, and benchmark the
PyTorch runners (eager, CUDA graph, FP16) for unpruned vs pruned at batch 1 and 32.

    python benchmarks/gpu_run.py --teacher yolov7-shapes.pt --data shapes/shapes.yaml \
        --out results/ --train-seconds 280

Writes <out>/gpu_run.json (the accuracy table and recovery log), <out>/bench-gpu.json and
.png (fyexport bench), and the recovered model split in <16 MB parts (recovered.pt.partNN)
so it can be copied off a machine that only returns small files.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def split_file(path: Path, part_mb: int = 15) -> list:
    data = path.read_bytes()
    size = part_mb * 1024 * 1024
    parts = []
    for i in range(0, len(data), size):
        p = path.with_name(f"{path.name}.part{i // size:02d}")
        p.write_bytes(data[i:i + size])
        parts.append(p.name)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=280)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="AdamW lr for a global batch of 16 (default: fyexport's)")
    ap.add_argument("--eval-images", type=int, default=None)
    ap.add_argument("--bench-duration", type=float, default=2.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quiet", action="store_true", help="no progress bars (for logs)")
    args = ap.parse_args()
    if args.quiet:
        from fyexport.core.log import G_LOGGER

        G_LOGGER.configure(quiet=True)

    import torch

    import fyexport
    from fyexport.bench.report import plot, render
    from fyexport.bench.run import run_bench
    from fyexport.core.artifacts import write_json
    from fyexport.data.labels import load_data_yaml
    from fyexport.evaluation.metrics import evaluate
    from fyexport.models.stats import count_macs_params
    from fyexport.prune import PruneConfig, prune
    from fyexport.recover import RecoverConfig, recover
    from fyexport.runners import open_runner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    log = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__}
    spec = load_data_yaml(args.data)

    def ev(model_or_path, label):
        t = time.time()
        with open_runner(model_or_path, device=device) as r:
            e = evaluate(r, spec, max_images=args.eval_images, batch=16, description=label)
        m = model_or_path if not isinstance(model_or_path, (str, Path)) else fyexport.load(model_or_path)
        macs, params = count_macs_params(m.fuse() if hasattr(m, "fuse") else m, 640)
        row = {"model": label, "params": params, "gmacs_640": round(macs / 1e9, 3), "map50": e.map50, "map": e.map,
               "images": e.images, "eval_seconds": round(time.time() - t, 1)}
        print(json.dumps(row), flush=True)
        return row

    teacher = fyexport.load(args.teacher)
    rows = [ev(args.teacher, "unpruned")]
    # the training graph, as the build prunes it
    pruned, res = prune(teacher, PruneConfig(ratio=0.5, importance="l2", round_to=8, count_size=640, fuse=False))
    rows.append(ev(pruned, "pruned 0.5, no recovery"))
    cfg = RecoverConfig(epochs=args.epochs, img_size=640, batch=args.batch, lr=args.lr or RecoverConfig.lr,
                        device=device, minutes=args.train_seconds / 60)
    t = time.time()
    rec_path = out / "recovered.pt"
    _, summary = recover(pruned, fyexport.load(args.teacher), spec.images("train"), rec_path, cfg, data=spec)
    log["recover"] = summary
    log["recover_wall_seconds"] = round(time.time() - t, 1)
    rows.append(ev(str(rec_path), "pruned 0.5 + recovered"))
    log["table"] = rows
    log["prune"] = res.to_dict()
    log["parts"] = split_file(rec_path)
    (out / "gpu_run.json").write_text(json.dumps(log, indent=2))
    try:
        report = run_bench([str(rec_path)], args.teacher, runtime="torch", device=device, batches=(1, 32),
                           warmup=0.5, duration=args.bench_duration,
                           images=str(Path(spec.images("val")[0]).parent))
        write_json(out / "bench-gpu.json", report)
        plot(report, out / "bench-gpu.png")
        render(report)
    except Exception as e:  # noqa: BLE001 - keep the accuracy results even if timing fails
        import traceback

        traceback.print_exc()
        log["bench_error"] = repr(e)
        (out / "gpu_run.json").write_text(json.dumps(log, indent=2))
    rec_path.unlink()


if __name__ == "__main__":
    main()
