#!/usr/bin/env python3
"""Do the defaults deliver?  The README's commands with no extra option, each timed with its
peak memory: ``fyexport build`` with labels, the same without labels (teacher agreement),
and ``fyexport demo``.

    python benchmarks/recovery_default.py --machine cpu-2core-epyc --work runs/defaults

Generates the shapes data (3000 training, 500 validation images) when missing, runs what has
no log yet (``WORK/<run>.log``; delete one to rerun it), and writes
``results/recovery-default-<machine>.json``: exit code, wall time, peak RSS, the recovery
record (steps, training time, why it stopped, the best check) and the accuracy table.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = REPO / "fyexport" / "assets" / "yolov7-tiny-shapes.pt"


def commands(work: Path, data: Path) -> dict:
    calib = str(data / "images" / "train")
    build = ["fyexport", "build", "--weights", str(TINY), "--calib", calib]
    return {"labelled": build + ["-o", str(work / "labelled"), "--data", str(data / "shapes.yaml")],
            "label-free": build + ["-o", str(work / "label-free")],
            "demo": ["fyexport", "demo", "-o", str(work / "demo")]}


def run(cmd: list, log: Path) -> None:
    """Run under /usr/bin/time -v; the log ends with ``rc=N``."""
    with open(log, "w") as f:
        p = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT)
        f.write(f"rc={p.returncode}\n")


def collect(name: str, cmd: list, log: Path, out: Path) -> dict:
    text = log.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    secs = sum(float(v) * 60 ** i for i, v in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    folder = out / "build" if name == "demo" else out
    manifest = json.loads((folder / "manifest.json").read_text())
    import fyexport

    rec = fyexport.load(folder / "recovered.pt").meta.get("recover", {})
    rc = int(re.search(r"rc=(\d+)", text).group(1))
    return {"command": manifest.get("command") or " ".join(cmd), "exit_code": rc,
            "wall_seconds": round(secs, 1), "peak_rss_mb": round(rss / 1024, 1), "status": manifest["status"],
            "recover": {k: rec.get(k) for k in ("images", "labels", "iterations", "seconds", "images_per_s",
                                                "input_wait_share", "stopped", "best", "reconstruct")},
            "accuracy": json.loads((folder / "eval.json").read_text()), "gate": manifest.get("gate") or gate_text(text)}


def gate_text(log: str) -> str:
    """The gate's report line from a build's output (manifests before the gate was recorded)."""
    m = re.search(r"accuracy gate:.*?-> (passed|FAILED)", log, re.S)
    return " ".join(m.group(0).split()) if m else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", required=True)
    ap.add_argument("--work", default=str(REPO / "runs" / "defaults"))
    ap.add_argument("--data", help="an existing shapes data set (folder with shapes.yaml)")
    ap.add_argument("--only", help="comma-separated runs: labelled, label-free, demo")
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve() if a.data else work / "shapes"
    if not (data / "shapes.yaml").exists():
        subprocess.run([sys.executable, "-m", "fyexport.data.shapes", str(data), "--train", "3000", "--val", "500"],
                       check=True)
    from fyexport.core.machine import machine_info

    rows = {}
    for name, cmd in commands(work, data).items():
        if a.only and name not in a.only.split(","):
            continue
        log = work / f"{name}.log"
        if not log.exists():
            run(cmd, log)
        rows[name] = collect(name, cmd, log, Path(cmd[cmd.index("-o") + 1]))
        print(name, json.dumps({k: rows[name][k] for k in ("exit_code", "wall_seconds", "status")}))
    doc = {"machine": machine_info(), "runs": rows}
    dest = HERE / "results" / f"recovery-default-{a.machine}.json"
    dest.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
