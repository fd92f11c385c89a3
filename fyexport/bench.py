"""``fyexport bench``: speed (and accuracy) of every artifact beside the unpruned FP32 model.

Method, as trtexec does it: warm-up by time, then a fixed measuring duration (at least 10
iterations); per inference the model time (CUDA events on GPU, wall clock on CPU) and, on
GPU, the host latency with copies; end to end per image (letterbox + inference + NMS on
real, already decoded images); throughput per batch size.  Medians, means, p90/p95/p99,
min and max are reported, and a run whose coefficient of variation is high is flagged as
unstable.  Every row carries size, parameters and MACs, and mAP when ``data`` is given.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .log import G_LOGGER, progress

SCHEMA_VERSION = 1
CV_WARN = 0.10  # coefficient of variation above which a measurement is called unstable


@dataclass
class Stats:
    median: float
    mean: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float
    cv: float
    n: int

    @classmethod
    def of(cls, ms: list) -> "Stats":
        a = np.asarray(ms, dtype=np.float64)
        mean = float(a.mean())
        return cls(float(np.median(a)), mean, *(float(np.percentile(a, q)) for q in (90, 95, 99)), float(a.min()),
                   float(a.max()), float(a.std() / mean) if mean > 0 else 0.0, int(a.size))


@dataclass
class Row:
    model: str
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


def _timed_loop(fn, warmup_s: float, duration_s: float, min_iters: int = 10) -> list:
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        fn()
    times = []
    t_end = time.perf_counter() + duration_s
    while time.perf_counter() < t_end or len(times) < min_iters:
        times.append(fn())
    return times


def _input_batch(images: list, hw, batch: int) -> np.ndarray:
    from .preprocess import prepare

    if images:
        xs = [prepare(images[i % len(images)], hw).tensor for i in range(batch)]
        return np.stack(xs)
    return np.full((batch, 3, *hw), 114 / 255, np.float32)


def _end_to_end(runner, images: list, hw, warmup_s: float, duration_s: float) -> list:
    from .nms_onnx import runner_detections
    from .preprocess import prepare, scale_boxes

    def one(img):
        t0 = time.perf_counter()
        p = prepare(img, hw)
        det = runner_detections(runner, p.tensor[None], 0.25, 0.45)[0]  # the graph's NMS when it has one
        scale_boxes(det[:, :4], p.ratio, p.pad, p.orig_hw)
        return (time.perf_counter() - t0) * 1e3

    k = [0]

    def step():
        k[0] += 1
        return one(images[k[0] % len(images)])

    return _timed_loop(step, warmup_s, duration_s, min_iters=min(10, 2 * len(images)))


@dataclass
class Target:
    """One thing to time: an artifact on one runtime in one mode.  The unpruned baseline's
    ONNX and engine are exported here (``export`` says which; ``path`` is set once made)."""

    path: str | None
    role: str
    runtime: str
    precision: str | None = None
    mode: str = "eager"
    channels_last: bool = False
    export: str | None = None  # "onnx" | "engine": made from the baseline checkpoint

    def name(self, baseline: str) -> str:
        return f"{baseline} (baseline.{self.export})" if self.export else str(self.path)


@dataclass
class BenchOptions:
    runtime: str = "auto"
    device: str = "auto"
    batches: tuple = (1,)
    img_size: object = 640
    warmup: float = 0.2
    duration: float = 3.0
    data: object = None  # data yaml (adds mAP to every row)
    images: object = None  # folder of real images for the end-to-end timing
    images_exclude: tuple = ()  # folders left out of ``images`` (a build's own output)
    max_eval_images: int | None = None
    agreement_images: int = 100  # images for teacher agreement (the val split or --images; 0: none)
    e2e: bool = True
    workdir: object = None  # where the baseline's exports go (default: a temporary folder)

    def validate(self) -> None:
        if self.duration <= 0 or self.warmup < 0:
            raise InputError("--duration must be > 0 and --warmup >= 0")
        if not self.batches or any(b < 1 for b in self.batches):
            raise InputError(f"--batch must list positive sizes, got {list(self.batches)}")


def plan_targets(artifacts: list, baseline: str, runtime: str, device: str) -> list:
    from .runners import artifact_kind

    on_gpu = device.startswith("cuda")

    def torch_variants(path, role):
        if on_gpu:
            return [Target(path, role, "torch", "fp32", "eager"), Target(path, role, "torch", "fp32", "cuda-graph"),
                    Target(path, role, "torch", "fp16", "cuda-graph", channels_last=True)]
        return [Target(path, role, "torch", "fp32", "eager")]

    kinds = {p: artifact_kind(p) for p in [baseline, *artifacts]}
    targets = torch_variants(baseline, "baseline") if runtime in ("auto", "torch") else []
    for p in artifacts:
        k = kinds[p]
        if k == "checkpoint" and runtime in ("auto", "torch"):
            targets += torch_variants(p, "candidate")
        elif k == "onnx" and runtime in ("auto", "onnxruntime"):
            targets.append(Target(p, "candidate", "onnxruntime"))
        elif k == "engine" and runtime in ("auto", "tensorrt"):
            targets.append(Target(p, "candidate", "tensorrt"))
        elif runtime != "auto":
            G_LOGGER.warning(f"{p}: a {k} does not run on --runtime {runtime}; skipped")
    if runtime in ("auto", "onnxruntime") and any(kinds[p] == "onnx" for p in artifacts):
        # first: on a CPU the baseline's mAP is then measured on ONNX Runtime (much faster than
        # eager PyTorch) and shared with the PyTorch baseline row, which computes the same thing
        targets.insert(0, Target(None, "baseline", "onnxruntime", export="onnx"))
    if runtime in ("auto", "tensorrt") and any(kinds[p] == "engine" for p in artifacts):
        targets.insert(1, Target(None, "baseline", "tensorrt", export="engine"))
    return targets


def run_bench(artifacts: list, baseline: str, options: BenchOptions | None = None, **overrides) -> dict:
    """Benchmark ``artifacts`` against the unpruned FP32 ``baseline`` checkpoint; returns the
    JSON-able report (see ``benchmarks/schema.json``).  ``overrides`` set BenchOptions fields."""
    from .errors import check_file
    from .preprocess import normalize_img_size
    from .runners.torch_runner import resolve_device

    o = replace(options or BenchOptions(), **overrides)
    o.validate()
    check_file(baseline, "baseline checkpoint")
    for a in artifacts:
        check_file(a, "artifact")
    dev = resolve_device(o.device)
    hw = normalize_img_size(o.img_size)
    spec = None
    if o.data is not None:
        from .data import load_data_yaml

        spec = load_data_yaml(o.data)
    ctx = _Context(baseline, o, dev, hw, spec, _load_bench_images(o.images, spec, o.images_exclude),
                   Path(o.workdir or tempfile.mkdtemp(prefix="fyexport-bench-")), _agreement_images(o, spec))
    targets = plan_targets(artifacts, baseline, o.runtime, dev)
    rows: list[Row] = []
    with progress("bench", len(targets) * len(o.batches)) as bar:
        for t in targets:
            rows += _bench_target(t, ctx, bar)
    fill_speedups(rows)
    return _report(rows, artifacts, baseline, o, dev, hw)


@dataclass
class _Context:
    baseline: str
    o: BenchOptions
    dev: str
    hw: tuple
    spec: object
    imgs: list
    work: Path
    agree_paths: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)  # (model, precision) -> EvalResult
    agreements: dict = field(default_factory=dict)  # (model, precision) -> teacher agreement
    teacher: object = None  # the baseline's detections on agree_paths


def _bench_target(t: Target, ctx: _Context, bar) -> list:
    """The rows of one target: one per batch size it accepts, with its mAP when asked."""
    from .runners import open_runner

    path = _materialise_baseline(t, ctx.baseline, ctx.work, ctx.hw, ctx.dev, max(ctx.o.batches))
    runner = open_runner(path, runtime=t.runtime, device=ctx.dev, precision=t.precision, mode=t.mode,
                         channels_last=t.channels_last, img_size=ctx.hw)
    with runner:
        info = runner.info
        name = t.name(ctx.baseline)
        if tuple(info.input_hw) != tuple(ctx.hw):
            raise InputError(f"{name}: built for input {tuple(info.input_hw)}, but --img-size is {ctx.hw}",
                             "Benchmark at the artifact's size or re-export it")
        if ctx.spec is not None and info.nc != ctx.spec.nc:
            raise InputError(f"{name}: the model has {info.nc} classes but {ctx.spec.path} has {ctx.spec.nc}")
        sizes = [b for b in ctx.o.batches if info.batch in (None, b)]
        if hasattr(runner, "accepted_batches"):  # a TensorRT engine: only the batches its profile accepts
            sizes = runner.accepted_batches(ctx.o.batches)
        elif not sizes:
            G_LOGGER.warning(f"{name}: static batch {info.batch}, not in --batch {list(ctx.o.batches)}; "
                             f"timing batch {info.batch}")
            sizes = [info.batch]
        meta = _model_numbers(info, path)
        rows = []
        for b in sizes:
            rows.append(_time_batch(runner, t, ctx, b, meta, name))
            bar.advance()
        if ctx.spec is not None:
            _add_map(runner, t, ctx, path, rows)
        if ctx.agree_paths:
            _add_agreement(runner, t, ctx, path, rows)
    return rows


def _time_batch(runner, t: Target, ctx: _Context, b: int, meta: dict, name: str) -> Row:
    o, info = ctx.o, runner.info
    x = _input_batch(ctx.imgs, ctx.hw, b)
    runner.infer(x)  # first run outside the clock (lazy init, graph capture)
    comp = Stats.of(_timed_loop(runner.compute_fn(x), o.warmup, o.duration))
    host = None
    if ctx.dev.startswith("cuda") and info.runtime != "onnxruntime":
        def host_fn():
            t0 = time.perf_counter()
            runner.infer(x)
            return (time.perf_counter() - t0) * 1e3
        host = Stats.of(_timed_loop(host_fn, o.warmup, o.duration))
    e2e_stats = None
    if o.e2e and b == 1 and ctx.imgs:
        e2e_stats = asdict(Stats.of(_end_to_end(runner, ctx.imgs, ctx.hw, o.warmup, min(o.duration, 3.0))))
    ref = host or comp
    row = Row(model=name, role=t.role, runtime=info.runtime, mode=info.mode, precision=info.precision,
              device=info.device, batch=b, size_mb=meta["size_mb"], params=meta["params"], gmacs=meta["gmacs"],
              compute_ms=asdict(comp), host_ms=asdict(host) if host else None, throughput=1e3 * b / ref.mean,
              e2e_ms=e2e_stats, unstable=comp.cv > CV_WARN)
    if row.unstable:
        row.notes.append(f"unstable: coefficient of variation {comp.cv:.1%} (other load? "
                         "lock clocks, close programs, or raise --duration)")
        G_LOGGER.warning(f"{name} {info.label} batch {b}: unstable timing (CV {comp.cv:.1%})")
    return row


def _add_map(runner, t: Target, ctx: _Context, path, rows: list) -> None:
    """The same weights at the same precision give the same detections on any runtime and in
    any mode: evaluate once per (model, precision) and share the result."""
    from .evaluate import evaluate

    key = ("baseline" if t.role == "baseline" else str(path), runner.info.precision)
    if key not in ctx.evals:
        ctx.evals[key] = evaluate(runner, ctx.spec, max_images=ctx.o.max_eval_images,
                                  description=f"mAP {Path(t.name(ctx.baseline).split(' (')[0]).name}")
    for r in rows:
        r.map50, r.map = ctx.evals[key].map50, ctx.evals[key].map


def _agreement_images(o: BenchOptions, spec) -> list:
    from .preprocess import list_images

    if not o.agreement_images:
        return []
    paths = list_images(o.images) if o.images else (spec.images("val") if spec is not None else [])
    return paths[:o.agreement_images]


def _add_agreement(runner, t: Target, ctx: _Context, path, rows: list) -> None:
    """Teacher agreement with the unpruned FP32 model (the first baseline row timed), once per
    (model, precision)."""
    from .evaluate import detect, teacher_agreement

    key = ("baseline" if t.role == "baseline" else str(path), runner.info.precision)
    if key not in ctx.agreements:
        dets = detect(runner, ctx.agree_paths, description=f"agreement {Path(t.name(ctx.baseline)).name}")
        if ctx.teacher is None and t.role == "baseline" and runner.info.precision == "fp32":
            ctx.teacher = dets
        ctx.agreements[key] = teacher_agreement(dets, ctx.teacher, runner.info.nc) if ctx.teacher else None
    for r in rows:
        r.agreement = ctx.agreements[key]


def _report(rows: list, artifacts: list, baseline: str, o: BenchOptions, dev: str, hw) -> dict:
    from .machine import machine_info

    return {
        "schema_version": SCHEMA_VERSION,
        "fyexport": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "settings": {"baseline": str(baseline), "artifacts": [str(a) for a in artifacts], "runtime": o.runtime,
                     "device": dev, "batches": list(o.batches), "img_size": list(hw), "warmup_s": o.warmup,
                     "duration_s": o.duration, "data": str(o.data) if o.data else None,
                     "eval_images": o.max_eval_images, "cv_warn": CV_WARN,
                     "time_definitions": TIME_DEFINITIONS},
        "rows": [asdict(r) for r in rows],
    }


TIME_DEFINITIONS = {
    "compute_ms": "model time per batch (CUDA events on GPU; wall clock on CPU)",
    "host_ms": "GPU only: host latency per batch with H2D/D2H copies",
    "e2e_ms": "per image: letterbox + inference + NMS on decoded real images",
    "throughput": "images/s at that batch (host latency on GPU, compute on CPU)"}


def _load_bench_images(images, spec, exclude=(), limit: int = 16) -> list:
    from .preprocess import BadImage, list_images, read_image

    paths = []
    if images:
        paths = list_images(images, exclude=exclude)[:limit]
        if not paths:
            raise InputError(f"{images}: no images for the end-to-end timing")
    elif spec is not None:
        paths = spec.images("val")[:limit]
    out = []
    for p in paths:
        try:
            out.append(read_image(p))
        except BadImage:
            continue
    return out


def baseline_onnx(weights, workdir, hw) -> Path:
    """The unpruned FP32 baseline exported once to ``workdir/baseline.fp32.onnx`` (dynamic
    batch), shared by the benchmark and the build's accuracy table."""
    out = Path(workdir) / "baseline.fp32.onnx"
    if not out.exists():
        from .export import export_onnx
        from .models import load

        G_LOGGER.info(f"exporting the baseline to {out} for the ONNX Runtime comparison")
        export_onnx(load(weights), out, hw, dynamic_batch=True)
    return out


def _materialise_baseline(t: Target, baseline: str, work: Path, hw, dev: str, max_batch: int = 1) -> str:
    """The target's artifact; for the baseline's ONNX or engine, exported here once."""
    if t.export == "onnx":
        t.path = str(baseline_onnx(baseline, work, hw))
    elif t.export == "engine":
        out = work / "baseline.fp32.engine"
        if not out.exists():
            from .trt.builder import BuildConfig, build_engine

            build_engine(baseline_onnx(baseline, work, hw), out,
                         BuildConfig(precision="fp32", min_batch=1, opt_batch=max_batch, max_batch=max_batch))
        t.path = str(out)
    return t.path


def _model_numbers(info, path) -> dict:
    """Size, parameters and GMACs at the benchmark size, read off the artifact itself."""
    params, gmacs = info.params, info.gmacs
    try:
        p = str(path)
        if p.endswith(".onnx"):
            from .onnx_facts import onnx_macs_params

            macs, params = onnx_macs_params(p)
            gmacs = round(macs / 1e9, 3)
        elif p.endswith((".pt", ".pth")):
            from .models import load
            from .models.stats import count_macs_params

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


def render(report: dict) -> None:
    from rich.table import Table

    from .log import table_console

    con = table_console()
    m = report["machine"]
    where = m.get("gpu") or m.get("cpu")
    h, w = report["settings"]["img_size"]
    t = Table(title=f"fyexport bench on {where} ({h}x{w})")
    cols = ["model", "runtime", "prec", "batch", "MB", "params", "GMACs", "median ms", "p99 ms", "FPS", "speedup",
            "vs torch", "e2e ms", "mAP@.5:.95", "drop", "agree"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "runtime") else "right")
    for r in report["rows"]:
        name = Path(r["model"].split(" (")[0]).name + (" (baseline)" if r["role"] == "baseline" else "")
        t.add_row(
            name, f"{r['runtime']} {r['mode']}".strip(), r["precision"], str(r["batch"]),
            _f(r["size_mb"], "{:.1f}"), _f(r["params"] and r["params"] / 1e6, "{:.2f}M"), _f(r["gmacs"], "{:.1f}"),
            _f(r["compute_ms"]["median"], "{:.2f}") + ("!" if r["unstable"] else ""),
            _f(r["compute_ms"]["p99"], "{:.2f}"),
            _f(r["throughput"], "{:.1f}"), _f(r["speedup"], "{:.2f}x"), _f(r["speedup_vs_torch"], "{:.2f}x"),
            _f(r["e2e_ms"] and r["e2e_ms"]["median"], "{:.1f}"), _f(r["map"], "{:.4f}"), _f(r["map_drop"], "{:+.2f}"),
            _f(r.get("agreement"), "{:.3f}"),
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


def plot(report: dict, path) -> Path:
    """Latency vs mAP (when measured) and speedup bars, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .artifacts import atomic_path

    rows = [r for r in report["rows"] if r["batch"] == min(x["batch"] for x in report["rows"])]
    labels = [f"{Path(r['model'].split(' (')[0]).stem}\n{r['runtime']} {r['mode']} {r['precision']}".replace("  ", " ")
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
    m = report["machine"]
    fig.suptitle(f"fyexport bench - {m.get('gpu') or m.get('cpu')} - {report['created']}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
