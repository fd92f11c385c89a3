#!/usr/bin/env python3
"""Recovery at data-set scale: peak memory and images/s of ``fyexport recover`` on growing
shapes data sets, same batch, same number of steps, one run each in its own process.

    python benchmarks/recover_scale.py --sizes 500,2000,8000 --steps 200 --machine cpu-2core-epyc

Writes ``results/recover-scale-<machine>.json``.  The memory of the streaming pipeline is
bounded by batch x workers x prefetch, so the 8,000-image run must stay within 1.3x of the
500-image run (the acceptance of the scale issue); the in-memory bank it replaced grew by
2.4 MiB per image at 640.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def make_data(root: Path, n: int) -> Path:
    yaml = root / f"shapes{n}" / "shapes.yaml"
    if not yaml.exists():
        subprocess.run([sys.executable, str(REPO / "fyexport" / "datasets" / "shapes.py"), str(yaml.parent),
                        "--train", str(n), "--val", "50", "--workers", "2"], check=True)
    return yaml


def run(pruned: Path, yaml: Path, out: Path, steps: int, batch: int, crop: int | None, extra: list) -> dict:
    """One recovery in a child process under /usr/bin/time -v (peak RSS of the whole tree is
    the max over processes; the data loader workers are reported by the child itself)."""
    n_train = len(list((yaml.parent / "images" / "train").glob("*.jpg")))
    epochs = max(1, -(-steps * batch // n_train))
    cmd = [sys.executable, "-m", "fyexport", "recover", str(pruned), "--teacher", str(REPO / "fyexport/assets/"
           "yolov7-tiny-shapes.pt"), "--data", str(yaml), "--batch", str(batch), "--epochs", str(epochs),
           "--max-steps", str(steps),
           "--target", "1", "--check-every", str(10**6), "--max-minutes", "600", "-o", str(out), *extra]
    if crop:
        cmd += ["--crop", str(crop)]
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    meta = json.loads(subprocess.run([sys.executable, "-m", "fyexport", "info", str(out), "--json"],
                                     capture_output=True, text=True, check=True).stdout)["recover"]
    return {"train_images": n_train, "epochs": epochs, "steps": meta["iterations"], "peak_rss_mb": round(rss, 1),
            "images_per_s": meta["images_per_s"], "input_wait_share": meta["input_wait_share"],
            "train_seconds": meta["seconds"], "wall_seconds": round(time.time() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500,2000,8000")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=320)
    ap.add_argument("--work", default=str(REPO / "runs" / "recover-scale"))
    ap.add_argument("--machine", required=True)
    ap.add_argument("--extra", default="", help="more recover options, e.g. '--workers 2'")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    pruned = work / "p.pt"
    if not pruned.exists():
        subprocess.run([sys.executable, "-m", "fyexport", "prune", str(REPO / "fyexport/assets/yolov7-tiny-shapes.pt"),
                        "--ratio", "0.5", "-o", str(pruned)], check=True)
    from fyexport.core.machine import machine_info

    rows = []
    for n in [int(v) for v in a.sizes.split(",")]:
        r = run(pruned, make_data(work, n), work / f"r{n}.pt", a.steps, a.batch, a.crop, a.extra.split())
        rows.append(r)
        print(json.dumps(r), flush=True)
    base = rows[0]["peak_rss_mb"]
    for r in rows:
        r["rss_vs_smallest"] = round(r["peak_rss_mb"] / base, 3)
    doc = {"machine": machine_info(), "settings": vars(a), "rows": rows}
    out = HERE / "results" / f"recover-scale-{a.machine}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
