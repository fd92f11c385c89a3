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

from ..core.errors import InputError
from ..core.log import G_LOGGER, progress
from .plan import BenchConfig, Target, materialise_baseline, plan_targets
from .report import Row, fill_speedups, make_report, model_numbers
from .timing import CV_WARN, Stats, end_to_end, input_batch, timed_loop


def run_bench(artifacts: list, baseline: str, options: BenchConfig | None = None, **overrides) -> dict:
    """Benchmark ``artifacts`` against the unpruned FP32 ``baseline`` checkpoint; returns the
    JSON-able report (see ``benchmarks/schema.json``).  ``overrides`` set BenchConfig fields."""
    from ..core.errors import check_file
    from ..core.imgsize import fit_img_size
    from ..core.machine import resolve_device
    from ..models import load

    o = replace(options or BenchConfig(), **overrides)
    o.validate()
    check_file(baseline, "baseline checkpoint")
    for a in artifacts:
        check_file(a, "artifact")
    dev = resolve_device(o.device)
    hw = fit_img_size(o.img_size, int(max(load(baseline).head.stride.tolist())))  # the baseline's stride
    spec = None
    if o.data is not None:
        from ..data.labels import load_data_yaml

        spec = load_data_yaml(o.data)
    ctx = _Context(baseline, o, dev, hw, spec, _load_bench_images(o.images, spec, hw, o.images_exclude),
                   Path(o.workdir or tempfile.mkdtemp(prefix="fyexport-bench-")), _agreement_images(o, spec))
    targets = plan_targets(artifacts, baseline, o.runtime, dev)
    rows: list[Row] = []
    with progress("bench", len(targets) * len(o.batches)) as bar:
        for t in targets:
            rows += _bench_target(t, ctx, bar)
    fill_speedups(rows)
    return make_report(rows, artifacts, baseline, o, dev, hw)


@dataclass
class _Context:
    baseline: str
    o: BenchConfig
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
    from ..runners import open_runner

    path = materialise_baseline(t, ctx.baseline, ctx.work, ctx.hw, ctx.dev, max(ctx.o.batches))
    # engines run on the GPU whatever PyTorch sees (a CPU build of PyTorch next to a GPU: JetPack)
    dev = "cuda" if t.runtime == "tensorrt" and not ctx.dev.startswith("cuda") else ctx.dev
    runner = open_runner(path, runtime=t.runtime, device=dev, precision=t.precision, mode=t.mode,
                         channels_last=t.channels_last, img_size=ctx.hw)
    with runner:
        info = runner.info
        name = t.name(ctx.baseline)
        if tuple(info.input_hw) != tuple(ctx.hw):
            raise InputError(f"{name}: built for input {tuple(info.input_hw)}, but `img_size` is {ctx.hw}",
                             "Benchmark at the artifact's size or re-export it")
        if ctx.spec is not None and info.nc != ctx.spec.nc:
            raise InputError(f"{name}: the model has {info.nc} classes but {ctx.spec.path} has {ctx.spec.nc}")
        sizes = runner.accepted_batches(ctx.o.batches)  # a static batch, or an engine profile's range
        meta = model_numbers(info, path)
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
    x = input_batch(ctx.imgs, ctx.hw, b)
    runner.infer(x)  # first run outside the clock (lazy init, graph capture)
    comp = Stats.of(timed_loop(runner.compute_fn(x), o.warmup, o.duration))
    host = None
    if info.device.startswith("cuda") and info.runtime != "onnxruntime":
        def host_fn():
            t0 = time.perf_counter()
            runner.infer(x)
            return (time.perf_counter() - t0) * 1e3
        host = Stats.of(timed_loop(host_fn, o.warmup, o.duration))
    e2e_stats = None
    if o.e2e and b == 1 and ctx.imgs:
        e2e_stats = asdict(Stats.of(end_to_end(runner, ctx.imgs, ctx.hw, o.warmup, min(o.duration, 3.0))))
    ref = host or comp
    artifact = f"baseline.{t.export}" if t.export else Path(t.path).name
    row = Row(model=name, artifact=artifact, role=t.role, runtime=info.runtime, mode=info.mode,
              precision=info.precision, device=info.device, batch=b, size_mb=meta["size_mb"], params=meta["params"],
              gmacs=meta["gmacs"],
              compute_ms=asdict(comp), host_ms=asdict(host) if host else None, throughput=1e3 * b / ref.mean,
              e2e_ms=e2e_stats, unstable=comp.cv > CV_WARN)
    if row.unstable:
        row.notes.append(f"unstable: coefficient of variation {comp.cv:.1%} (other load? "
                         "lock clocks, close programs, or measure longer)")
        G_LOGGER.warning(f"{name} {info.label} batch {b}: unstable timing (CV {comp.cv:.1%})")
    return row


def _add_map(runner, t: Target, ctx: _Context, path, rows: list) -> None:
    """The same weights at the same precision give the same detections on any runtime and in
    any mode: evaluate once per (model, precision) and share the result."""
    from ..evaluation.metrics import evaluate

    key = ("baseline" if t.role == "baseline" else str(path), runner.info.precision)
    if key not in ctx.evals:
        ctx.evals[key] = evaluate(runner, ctx.spec, max_images=ctx.o.max_eval_images,
                                  description=f"mAP {Path(t.name(ctx.baseline).split(' (')[0]).name}")
    for r in rows:
        r.map50, r.map = ctx.evals[key].map50, ctx.evals[key].map


def _agreement_images(o: BenchConfig, spec) -> list:
    from ..data.selection import list_images

    if not o.agreement_images:
        return []
    paths = list_images(o.images) if o.images else (spec.images("val") if spec is not None else [])
    return paths[:o.agreement_images]


def _add_agreement(runner, t: Target, ctx: _Context, path, rows: list) -> None:
    """Teacher agreement with the unpruned FP32 model (the first baseline row timed), once per
    (model, precision)."""
    from ..evaluation.agreement import teacher_agreement
    from ..evaluation.detections import detect

    key = ("baseline" if t.role == "baseline" else str(path), runner.info.precision)
    if key not in ctx.agreements:
        dets = detect(runner, ctx.agree_paths, description=f"agreement {Path(t.name(ctx.baseline)).name}")
        if ctx.teacher is None and t.role == "baseline" and runner.info.precision == "fp32":
            ctx.teacher = dets
        ctx.agreements[key] = teacher_agreement(dets, ctx.teacher, runner.info.nc) if ctx.teacher else None
    for r in rows:
        r.agreement = ctx.agreements[key]


def _load_bench_images(images, spec, hw, exclude=(), limit: int = 16) -> list:
    """Up to ``limit`` decoded images for the end-to-end timing: those that letterbox at ``hw``."""
    from ..data.images import BadImage, letterbox_geometry, read_image
    from ..data.selection import list_images

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
            img = read_image(p)
            letterbox_geometry(img.shape[:2], hw)  # a 10000x10 image has no rows left at 416
        except BadImage as e:
            G_LOGGER.warning(f"{p}: skipped ({e})")
            continue
        out.append(img)
    return out


