"""The bench report: one row per artifact, runtime, mode and batch; speedups against the
unpruned FP32 model on the same runtime, device and batch; the table and the plot."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.log import G_LOGGER
from .plan import BenchConfig
from .timing import CV_WARN

SCHEMA_VERSION = 1


@dataclass
class Row:
    model: str  # the artifact as given (the baseline's exports: "W.pt (baseline.onnx)")
    artifact: str  # its file name, for tables
    role: str  # baseline | candidate
    runtime: str
    mode: str
    precision: str
    device: str
    batch: int
    size_mb: float | None
    params: int | None
    gmacs: float | None
    compute_ms: dict  # Stats of model time per batch
    host_ms: dict | None  # Stats of host latency per batch (GPU: with copies)
    throughput: float  # images per second
    e2e_ms: dict | None = None  # per image: letterbox + inference + NMS
    unstable: bool = False
    speedup: float | None = None  # vs the unpruned FP32 model on the same runtime/device/batch
    speedup_vs_torch: float | None = None  # vs the unpruned FP32 PyTorch eager run
    map50: float | None = None
    map: float | None = None
    map_drop: float | None = None  # points of mAP@.5:.95 lost vs the unpruned FP32 model
    agreement: float | None = None  # teacher agreement with the unpruned FP32 model (evaluate.teacher_agreement)
    notes: list = field(default_factory=list)


@dataclass
class BenchReport:
    """What ``fyexport bench`` measured (``to_dict``: benchmarks/schema.json)."""

    created: str
    machine: dict
    settings: dict
    rows: list  # Row
    schema_version: int = SCHEMA_VERSION
    fyexport: str = __version__

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "fyexport": self.fyexport, "created": self.created,
                "machine": self.machine, "settings": self.settings, "rows": [asdict(r) for r in self.rows]}


def make_report(rows: list, artifacts: list, baseline: str, o: BenchConfig, dev: str, hw) -> BenchReport:
    from ..core.machine import machine_info

    settings = {"baseline": str(baseline), "artifacts": [str(a) for a in artifacts], "runtime": o.runtime,
                "device": dev, "batches": list(o.batches), "img_size": list(hw), "warmup_s": o.warmup,
                "duration_s": o.duration, "data": str(o.data) if o.data else None, "eval_images": o.max_eval_images,
                "cv_warn": CV_WARN, "time_definitions": TIME_DEFINITIONS}
    return BenchReport(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine_info(), settings, rows)


def model_numbers(info, path) -> dict:
    """Size, parameters and GMACs at the benchmark size, read off the artifact itself."""
    params, gmacs = info.params, info.gmacs
    try:
        p = str(path)
        if p.endswith(".onnx"):
            from ..onnx.facts import onnx_macs_params

            macs, params = onnx_macs_params(p)
            gmacs = round(macs / 1e9, 3)
        elif p.endswith((".pt", ".pth")):
            from ..models import load
            from ..models.stats import count_macs_params

            macs, params = count_macs_params(load(p).fuse(), tuple(info.input_hw))
            gmacs = round(macs / 1e9, 3)
    except Exception as e:  # noqa: BLE001 - the numbers are informative only
        G_LOGGER.debug(f"{path}: could not count MACs ({e})")
    return {"size_mb": info.size_mb, "params": params, "gmacs": gmacs}


def fill_speedups(rows: list) -> None:
    base = {}
    torch_base = {}
    for r in rows:
        if r.role == "baseline" and r.precision == "fp32":
            key = (r.runtime, r.device, r.batch)
            if r.runtime != "torch" or r.mode.startswith("eager"):
                base.setdefault(key, r)
            if r.runtime == "torch" and r.mode.startswith("eager"):
                torch_base.setdefault((r.device, r.batch), r)
    fp32_map = next((r.map for r in rows if r.role == "baseline" and r.precision == "fp32" and r.map is not None), None)
    for r in rows:
        b = base.get((r.runtime, r.device, r.batch))
        t = torch_base.get((r.device, r.batch))
        if b is not None:
            r.speedup = round(b.compute_ms["median"] / r.compute_ms["median"], 3)
        if t is not None:
            r.speedup_vs_torch = round(t.compute_ms["median"] / r.compute_ms["median"], 3)
        if r.map is not None and fp32_map is not None:
            r.map_drop = round(100 * (fp32_map - r.map), 2)


def render(report: BenchReport) -> None:
    from rich.table import Table

    from ..core.log import table_console

    con = table_console()
    m = report.machine
    where = m.get("gpu") or m.get("cpu")
    h, w = report.settings["img_size"]
    t = Table(title=f"fyexport bench on {where} ({h}x{w})")
    cols = ["model", "runtime", "prec", "batch", "MB", "params", "GMACs", "median ms", "p99 ms", "FPS", "speedup",
            "vs torch", "e2e ms", "mAP@.5:.95", "drop", "agree"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "runtime") else "right")
    for r in report.rows:
        name = r.artifact + (" (baseline)" if r.role == "baseline" else "")
        t.add_row(
            name, f"{r.runtime} {r.mode}".strip(), r.precision, str(r.batch),
            _f(r.size_mb, "{:.1f}"), _f(r.params and r.params / 1e6, "{:.2f}M"), _f(r.gmacs, "{:.1f}"),
            _f(r.compute_ms["median"], "{:.2f}") + ("!" if r.unstable else ""), _f(r.compute_ms["p99"], "{:.2f}"),
            _f(r.throughput, "{:.1f}"), _f(r.speedup, "{:.2f}x"), _f(r.speedup_vs_torch, "{:.2f}x"),
            _f(r.e2e_ms and r.e2e_ms["median"], "{:.1f}"), _f(r.map, "{:.4f}"), _f(r.map_drop, "{:+.2f}"),
            _f(r.agreement, "{:.3f}"),
        )
    con.print(t)
    con.print("[dim]median/p99 ms: model time per batch (CUDA events on GPU); e2e: letterbox+inference+NMS per image; "
              "speedup: vs the unpruned FP32 model on the same runtime and batch; drop: mAP points lost; "
              "agree: teacher agreement with the unpruned FP32 model; "
              "! = unstable timing[/dim]")


def _f(v, fmt: str) -> str:
    if v is None or v == 0 and fmt.endswith("M"):
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def plot(report: BenchReport, path) -> Path:
    """Latency vs mAP (when measured) and speedup bars, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.artifacts import atomic_path

    rows = [asdict(r) for r in report.rows if r.batch == min(x.batch for x in report.rows)]
    labels = [f"{Path(r['artifact']).stem}\n{r['runtime']} {r['mode']} {r['precision']}".replace("  ", " ")
              for r in rows]
    has_map = any(r["map"] is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if has_map else 1, figsize=(14 if has_map else 9, 5.5))
    axes = np.atleast_1d(axes)
    ax = axes[-1]
    sp = [r["speedup"] or r["speedup_vs_torch"] or 0 for r in rows]
    colors = ["#888888" if r["role"] == "baseline" else "#2a7ab9" for r in rows]
    ax.barh(range(len(rows)), sp, color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.8)
    for i, v in enumerate(sp):
        ax.text(v, i, f" {v:.2f}x  ({rows[i]['compute_ms']['median']:.1f} ms)", va="center", fontsize=7)
    ax.set_xlabel("speedup vs unpruned FP32 (same runtime), batch %d" % rows[0]["batch"])
    ax.set_xlim(0, max(sp + [1.0]) * 1.35)
    if has_map:
        ax0 = axes[0]
        for r, lab in zip(rows, labels):
            if r["map"] is None:
                continue
            ax0.scatter(r["compute_ms"]["median"], r["map"], s=40,
                        color="#888888" if r["role"] == "baseline" else "#2a7ab9")
            ax0.annotate(lab.replace("\n", " "), (r["compute_ms"]["median"], r["map"]), fontsize=6,
                         xytext=(4, 2), textcoords="offset points")
        ax0.set_xscale("log")
        ax0.set_xlabel("median model time per batch (ms, log)")
        ax0.set_ylabel("mAP@.5:.95")
        ax0.grid(alpha=0.3)
        ax0.set_title("latency vs accuracy")
    m = report.machine
    fig.suptitle(f"fyexport bench - {m.get('gpu') or m.get('cpu')} - {report.created}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


TIME_DEFINITIONS = {
    "compute_ms": "model time per batch (CUDA events on GPU; wall clock on CPU)",
    "host_ms": "GPU only: host latency per batch with H2D/D2H copies",
    "e2e_ms": "per image: letterbox + inference + NMS on decoded real images",
    "throughput": "images/s at that batch (host latency on GPU, compute on CPU)"}
