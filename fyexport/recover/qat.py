"""Fine-tuning a QAT model (:func:`fyexport.quantize.qat.prepare_qat`) with fake quantization in
the loop, with recovery's machinery: its input pipeline (:mod:`fyexport.recover.data`), its
augmentation and crops (:mod:`fyexport.recover.augment`), distillation from an FP32 teacher
plus the YOLO loss with labels (:mod:`fyexport.loss`), its learning-rate schedule and weight
EMA (:mod:`fyexport.recover.train`).

The teacher is the unpruned FP32 model, or for an unpruned model the model itself (its FP32
copy from before quantization).  The ranges have their own learning rate (no weight decay);
with ``learn_scales=False`` they stay frozen and only the weights move (gradients pass the
rounding straight through).  :func:`qat_step_time` times the same step on any device.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.config import require
from ..core.errors import FyexportError, InputError

SCHEDULES = ("cosine", "constant")
ALONE_MINUTES = 4.0  # QAT's time limit when no recovery shares its time (an unpruned model, `recover` off)


@dataclass
class QatConfig:
    """Quantization-aware training's settings (``fyexport build --qat``: the ``qat`` section)."""

    steps: int = 2000  # upper limit in optimizer steps; the time limit usually ends training first
    minutes: float | None = None  # time limit (None: `share` of recovery's when the build recovers, else
    # ALONE_MINUTES); the schedule is fitted to it
    share: float = 0.25  # the part of recovery's time limit a build gives to QAT (recovery keeps the rest)
    lr: float = 1e-5  # AdamW, weights and biases, for a batch of 16
    scale_lr: float = 1e-3  # AdamW on the ranges' relative change (learn_scales)
    learn_scales: bool = False  # LSQ-style learned ranges; frozen calibrated ranges measured as good or better
    # in the build's 4-minute CPU budget (benchmarks/README.md, QAT)
    flavour: str = "trt"  # the flavour trained in the loop: trt (S8S8) | cpu (U8 activations)
    weight_decay: float = 0.0
    warmup_iters: int = 10
    schedule: str = "cosine"
    batch: int = 16
    img_size: object = 640
    crop: int | None = 320
    ema_decay: float | None = 0.999  # None: no EMA, the last weights
    kd_weight: float = 1.0
    sup_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA and on CPUs with native bf16 (fake quantization stays float32)
    workers: int | None = None
    cache: str = "auto"

    @property
    def hw(self) -> tuple:
        return (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)

    @property
    def time_budget_s(self) -> float:
        return 60.0 * (self.minutes if self.minutes is not None else ALONE_MINUTES)

    def sharing(self, recovery_s: float, recovery_steps: int | None = None) -> tuple[float, "QatConfig"]:
        """Recovery's time limit and this configuration when QAT takes its ``share`` of
        recovery's ``recovery_s`` seconds, and steps in the same proportion to recovery's step
        limit ``recovery_steps`` (an explicit ``minutes`` takes nothing from recovery)."""
        if self.minutes is not None:
            return recovery_s, self
        steps = self.steps if recovery_steps is None else min(
            self.steps, max(1, math.ceil(recovery_steps * self.share / (1 - self.share))))
        return recovery_s * (1 - self.share), replace(self, minutes=recovery_s * self.share / 60, steps=steps)

    def within(self, recovery_s: float) -> "QatConfig":
        """Shared minutes capped to QAT's share of a recovery that ended after ``recovery_s``
        seconds (at its target, before its limit): QAT stays a quarter of the training time."""
        cap = recovery_s * self.share / (1 - self.share) / 60
        return replace(self, minutes=max(min(self.minutes, cap), 1 / 60)) if self.minutes is not None else self

    def validate(self) -> None:
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        require(self.minutes is None or self.minutes > 0, "minutes", f"must be > 0, got {self.minutes}")
        require(0 < self.share < 1, "share", f"must be in (0, 1), got {self.share}")
        require(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}, got "
                f"{self.schedule!r}")
        require(self.flavour in ("trt", "cpu"), "flavour", f"must be trt or cpu, got {self.flavour!r}")
        require(not self.crop or (self.crop % 32 == 0 and self.crop >= 64), "crop",
                f"must be a multiple of 32 and at least 64, got {self.crop}")


@dataclass
class QatResult:
    model: object  # the fine-tuned QAT model (the EMA when ema_decay is set), eval mode, on the CPU
    steps: int
    seconds: float
    images_per_s: float
    history: list = field(default_factory=list)  # mean loss parts every 25 steps
    device: str = "cpu"
    amp: bool = False
    world: int = 1  # processes (torchrun)


class _Step:
    """One optimizer step of QAT: teacher and student on the same augmented crops, distillation
    (+ YOLO loss with labels), AdamW, gradient clipping, EMA."""

    def __init__(self, student, teacher, cfg: QatConfig, d, labels: bool):
        import torch

        from ..core.machine import cpu_has_native_bf16
        from .dist import rank_mean
        from .loss import DistillLoss, YoloLoss
        from .train import Ema

        device = d.device
        self.cfg, self.device = cfg, device
        self.amp = bool(cfg.amp and (device.startswith("cuda") or cpu_has_native_bf16()))
        self.student = student.to(device).to(memory_format=torch.channels_last).train()
        self.trained = self.student if not d.active else torch.nn.parallel.DistributedDataParallel(
            self.student, device_ids=[d.local_rank] if device.startswith("cuda") else None)
        self.teacher = teacher.to(device).to(memory_format=torch.channels_last).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.opt = _optimizer(self.student, replace(cfg, lr=cfg.lr * math.sqrt(cfg.batch * d.world / 16)))
        self.ema = Ema(self.student, cfg.ema_decay) if cfg.ema_decay and d.main else None
        self.kd = DistillLoss(student.head.nl)
        self.sup = YoloLoss(student.head, img_size=cfg.crop or cfg.hw) if labels else None
        for loss in (self.kd, self.sup):
            if loss is not None:
                loss.rank_mean = rank_mean(d)

    def __call__(self, x, tg, lr_scale: float) -> dict:
        import torch

        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.amp):
            with torch.no_grad():
                t_raw = self.teacher(x)[1]
            s_raw = self.trained(x)
        s_raw, t_raw = [r.float() for r in s_raw], [r.float() for r in t_raw]
        loss, parts = self.kd(s_raw, t_raw)
        loss = loss * self.cfg.kd_weight
        if self.sup is not None and tg is not None:
            l2, p2 = self.sup(s_raw, tg)
            loss = loss + self.cfg.sup_weight * l2 / x.shape[0]
            parts.update(p2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 10.0)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.student)
        parts["loss"] = loss.detach()
        return parts


def _optimizer(model, cfg: QatConfig):
    """AdamW: weights (decay), biases (no decay), the ranges at their own rate when learned."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ranges = [p for n, p in named if n.startswith("qat.")]
    weights = [p for n, p in named if not n.startswith("qat.") and p.ndim > 1]
    biases = [p for n, p in named if not n.startswith("qat.") and p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
              {"params": biases, "weight_decay": 0.0, "base_lr": cfg.lr}]
    if ranges and cfg.learn_scales:
        groups.append({"params": ranges, "weight_decay": 0.0, "base_lr": cfg.scale_lr})
    elif not cfg.learn_scales:
        for p in ranges:
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def lr_scale(cfg: QatConfig, step: int, total: int) -> float:
    """Warm-up then cosine to 5% (recovery's :func:`fyexport.recover.train.lr_at`), or constant."""
    from .config import RecoverConfig
    from .train import lr_at

    if cfg.schedule == "constant":
        return min(1.0, (step + 1) / max(cfg.warmup_iters, 1))
    return lr_at(RecoverConfig(warmup_iters=cfg.warmup_iters), 1.0, step, total)


def qat_finetune(qat_model, teacher, paths: list, cfg: QatConfig | None = None, data=None,
                 state=None) -> QatResult:
    """Fine-tune ``qat_model`` in place towards the FP32 ``teacher`` on the images ``paths`` (with
    the labels of ``data``, a DataSpec, when given) until ``cfg.time_budget_s`` seconds or
    ``cfg.steps`` steps, the schedule fitted to the time once the speed is known.  Under
    torchrun every rank trains its share of each batch (DDP).  With ``state`` (a path) the run
    saves its state there every 25 steps and a later call with the same settings resumes it."""
    import torch

    from ..core.log import progress
    from ..core.machine import resolve_device
    from ..quantize.qat import is_qat
    from . import dist

    cfg = cfg or QatConfig()
    cfg.validate()
    if not is_qat(qat_model):
        raise InputError("qat_finetune needs a model from fyexport.quantize.qat.prepare_qat")
    d = dist.setup(resolve_device(cfg.device))
    cfg = _fit_batch(cfg, len(paths) // d.world)
    torch.manual_seed(cfg.seed)
    t = copy.deepcopy(teacher).float().eval()
    t.fuse()
    run = _Run(_Step(qat_model, t, cfg, d, data is not None), cfg, d, state, len(paths))
    pipeline = _loader(paths, cfg, d, data)  # a small set is cached before the clock starts
    with progress("quantization-aware training", run.p.total or cfg.steps) as bar:
        bar.advance(run.p.step)
        run.train(pipeline, data, bar)
    out = run.finish()
    dist.teardown(d)
    return out


def _fit_batch(cfg: QatConfig, per_rank: int) -> QatConfig:
    if 0 < per_rank < cfg.batch:
        from ..core.log import G_LOGGER

        G_LOGGER.warning(f"quantization-aware training: {per_rank} images per process, fewer than the batch of "
                         f"{cfg.batch}; training on batches of {per_rank}")
        return replace(cfg, batch=per_rank)
    return cfg


@dataclass
class _QatProgress:
    """Where QAT stands; what the state file saves and a resumed run restores."""

    step: int = 0
    total: int = 0  # planned steps (0: not fitted yet; the step limit)
    epoch: int = 0
    it: int = 0  # next batch within the epoch
    seconds: float = 0.0  # training time so far, over every run
    history: list = field(default_factory=list)
    speed_ref: tuple | None = None  # (seconds, step) after the first steps, to time the later ones


class _Run:
    """The loop around :class:`_Step`: schedule fitted to the time, stop decided on rank 0,
    state saved and restored."""

    SAVE_EVERY = 25

    def __init__(self, step, cfg: QatConfig, d, state, n_images: int):
        self.step, self.cfg, self.d = step, cfg, d
        self.state = None if state is None else Path(state)
        self.key = _state_key(step.student, cfg, d.world, n_images)
        self.p = _QatProgress()
        self.restore()

    def train(self, pipeline, data, bar) -> None:
        from . import dist

        p, cfg = self.p, self.cfg
        sums, n, t0 = None, 0, time.perf_counter() - p.seconds
        for x, tg in _batches(pipeline, cfg, self.d, data, p):
            parts = self.step(x, tg, lr_scale(cfg, p.step, p.total or cfg.steps))
            sums = parts if sums is None else {key: sums[key] + v for key, v in parts.items()}
            n, p.step, p.it, p.seconds = n + 1, p.step + 1, p.it + 1, time.perf_counter() - t0
            bar.advance()
            self._fit(bar)
            stop = p.step >= (p.total or cfg.steps) or p.seconds >= cfg.time_budget_s
            stop = dist.broadcast_flag(self.d, stop)
            if p.step % 25 == 0 or stop:
                p.history.append(_mean_parts(sums, n) | {"step": p.step})
                sums, n = None, 0
            if stop:
                break
            if p.step % self.SAVE_EVERY == 0:
                self.save()

    def _fit(self, bar) -> None:
        """Fit the planned steps to the time limit once the speed is known (after the first
        steps, which include autotuning); one plan for every rank."""
        from . import dist

        p = self.p
        if p.step == 3:
            p.speed_ref = (p.seconds, p.step)
        if p.speed_ref is None or p.step not in (6, 12, 25) and p.step % 50:
            return
        per = (p.seconds - p.speed_ref[0]) / max(p.step - p.speed_ref[1], 1)
        total = min(max(p.step + int((self.cfg.time_budget_s - p.seconds) / max(per, 1e-9)), p.step + 1),
                    self.cfg.steps)
        p.total = int(dist.broadcast_value(self.d, total))
        bar.update(total=p.total)

    def restore(self) -> None:
        from ..core.log import G_LOGGER
        from ..models.checkpoint import read_pickle

        if self.state is None or not self.state.exists():
            return
        st = read_pickle(self.state)
        if st.get("key") != self.key:
            G_LOGGER.info(f"{self.state}: saved by a run with other settings; quantization-aware training starts "
                          "again")
            return
        self.step.student.load_state_dict(st["student"])
        self.step.opt.load_state_dict(st["optimizer"])
        if self.step.ema is not None and st.get("ema") is not None:
            self.step.ema.ema.load_state_dict(st["ema"])
            self.step.ema.updates = int(st["ema_updates"])
        self.p = _QatProgress(**st["progress"])
        G_LOGGER.info(f"resuming quantization-aware training at step {self.p.step}")

    def save(self) -> None:
        from ..core.artifacts import write_torch

        if self.state is None or not self.d.main:
            return
        ema = self.step.ema
        write_torch(self.state, {"key": self.key, "student": self.step.student.state_dict(),
                                 "optimizer": self.step.opt.state_dict(),
                                 "ema": ema.ema.state_dict() if ema is not None else None,
                                 "ema_updates": ema.updates if ema is not None else 0,
                                 "progress": asdict(self.p)})

    def finish(self) -> QatResult:
        import torch

        p, step = self.p, self.step
        out = (step.ema.ema if step.ema is not None else step.student).cpu().float()
        out = out.to(memory_format=torch.contiguous_format).eval()
        step.student.cpu().to(memory_format=torch.contiguous_format).eval()
        if self.state is not None and self.d.main:
            self.state.unlink(missing_ok=True)
        images = p.step * self.cfg.batch * self.d.world
        return QatResult(out, p.step, p.seconds, images / max(p.seconds, 1e-9), p.history, self.d.device,
                         step.amp, self.d.world)


def _state_key(model, cfg: QatConfig, world: int, n_images: int) -> str:
    """What a saved state must match to be resumed: the settings that change the result, the
    starting weights and ranges, the images and processes."""
    import hashlib

    from ..core.artifacts import sha256_json

    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("device", "workers", "amp", "cache")}
    return sha256_json({"cfg": settings, "world": world, "images": n_images, "start": h.hexdigest()})


def _mean_parts(sums: dict, n: int) -> dict:
    out = {key: float(v) / n for key, v in sums.items()}
    if not math.isfinite(out["loss"]):
        raise FyexportError("quantization-aware training diverged (loss is not finite)", "Lower the lr")
    return out


def _loader(paths: list, cfg: QatConfig, d, data):
    """(dataset, loader, sampler) of recovery's pipeline; a small set is letterboxed into memory now."""
    from .config import RAM_CACHE_AUTO_BYTES
    from .data import EpochSampler, TrainingSet, default_workers, make_loader

    small = len(paths) * 3 * cfg.hw[0] * cfg.hw[1] <= RAM_CACHE_AUTO_BYTES
    cache = cfg.cache if cfg.cache != "auto" else ("ram" if small else "none")
    ds = TrainingSet(paths, cfg.hw, data.nc if data is not None else None, cache)
    if len(ds) // d.world < cfg.batch:
        raise InputError(f"{len(ds)} training images for {d.world} process(es), fewer than the batch of {cfg.batch}"
                         " each", "Give more training images, or start fewer processes")
    if cache == "ram":
        ds.fill_ram()
    workers = cfg.workers if cfg.workers is not None else default_workers(d.device)
    sampler = EpochSampler()
    loader = make_loader(ds, sampler, cfg.batch, 0 if cache == "ram" else workers, d.device.startswith("cuda"),
                         cfg.seed)
    return ds, loader, sampler


def _batches(pipeline, cfg: QatConfig, d, data, p: _QatProgress):
    """Endless augmented (x, targets) batches on this rank's device: its share of a fresh
    seeded order every epoch, from where ``p`` stands (a resumed run goes on where it stopped)."""
    import torch
    import torch.utils.data as tud

    from .augment import augment, random_crop, sample_draws

    ds, loader, sampler = pipeline
    while True:
        order = tud.DistributedSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                                       drop_last=True)
        order.set_epoch(p.epoch)
        sampler.indices = list(order)[p.it * cfg.batch:]
        for x8, tg, ids, _ in loader:
            if x8 is None:
                continue
            x = x8.to(d.device, non_blocking=True).float().div_(255.0)
            tg = tg.to(d.device, non_blocking=True) if data is not None else torch.zeros(0, 6, device=d.device)
            draws = sample_draws(ids, p.epoch, cfg.seed)
            x, tg = augment(x, tg, draws)
            if cfg.crop:
                x, tg = random_crop(x, tg, cfg.crop, draws[:, 7:9])
            yield x.contiguous(memory_format=torch.channels_last), (tg if data is not None else None)
        p.epoch, p.it = p.epoch + 1, 0


def qat_step_time(model, teacher, batch: int = 16, img_size: int = 320, device: str = "auto", steps: int = 10,
                  warmup: int = 3, amp: bool = True) -> dict:
    """Seconds per training step of ``model`` (a QAT model, or any fyexport model for the float
    baseline) distilled from ``teacher`` on random ``batch`` x 3 x ``img_size``^2 inputs: the
    median of ``steps`` timed steps after ``warmup`` (device synchronised), images/s and, on
    CUDA, the peak memory.  Neither model is changed."""
    import statistics

    import torch

    from ..core.machine import resolve_device
    from ..quantize.qat import is_qat
    from .dist import Dist

    dev = resolve_device(device)
    cfg = QatConfig(batch=batch, img_size=img_size, crop=None, amp=amp, ema_decay=None)
    t = copy.deepcopy(teacher).float().eval()
    t.fuse()
    step = _Step(copy.deepcopy(model).float(), t, cfg, Dist(device=dev), labels=False)
    x = torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        step(x, None, 1.0)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"step_s": med, "images_per_s": batch / med, "steps": steps, "batch": batch, "img_size": img_size,
            "device": dev, "amp": step.amp, "qat": is_qat(model),
            "peak_mem_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if dev.startswith("cuda") else None}


@dataclass
class QatJob:
    """Quantization-aware training after recovery, as the build and ``fyexport recover --qat``
    run it: what it starts from and where its models go."""

    model: object  # the FP32 student (the recovered model; an unpruned model for `--prune 0`)
    teacher: object  # the unpruned FP32 model
    onnx_path: Path  # the student's FP32 ONNX export (the placement is read from it)
    calib_images: object  # the starting calibration's images (a folder or a selection)
    paths: list  # training images
    out_dir: Path  # calib.json, calib.cache, the Q/DQ models, qat.json
    fp32_onnx: Path  # where the FP32 twin of the trained weights goes
    data: object = None  # DataSpec: the labels of the training images
    state: Path | None = None  # the resumable state (None: not saved)
    batch: int = 1  # the Q/DQ models' batch (ExportConfig)
    dynamic_batch: bool = False


def qat_models(job: QatJob, cfg: QatConfig, calib, d, ready=None):
    """Calibrate ``job.onnx_path`` (``calib``, a CalibrationConfig: the starting ranges), train
    with INT8 in the loop and write the Q/DQ models; returns (QatResult, QatExport) on rank 0.
    Under torchrun (``d``) rank 0 calibrates and calls ``ready(minutes)`` (the word the other
    ranks wait for: QAT's time limit); the other ranks, told, read the ranges rank 0 wrote, train
    beside it and return None."""
    from ..core.log import G_LOGGER
    from ..quantize.calibration import ARTIFACTS
    from ..quantize.qat import QuantRanges
    from ..quantize.qat_export import calibrated_ranges, start_qat, write_qat_models

    if d.main:
        ranges = calibrated_ranges(job.onnx_path, job.calib_images, job.out_dir, method=calib.method,
                                   num_images=calib.num_images, seed=calib.seed, exclude=calib.exclude)
    else:
        ranges = QuantRanges.from_calib_json(Path(job.out_dir) / ARTIFACTS["json"])
    q = start_qat(job.model, job.onnx_path, ranges, cfg.flavour, learn=cfg.learn_scales)
    if ready is not None:
        ready(cfg.minutes)
    res = qat_finetune(q, job.teacher, job.paths, cfg, data=job.data, state=job.state)
    if not d.main:
        return None
    info = {"steps": res.steps, "seconds": round(res.seconds, 1), "device": res.device, "world_size": res.world,
            "start": calib.method}
    ex = write_qat_models(res.model, job.out_dir, img_size=cfg.hw, fp32_onnx=job.fp32_onnx, batch=job.batch,
                          dynamic_batch=job.dynamic_batch, flavours=calib.flavours, trt_version=calib.trt_version,
                          info=info)
    G_LOGGER.info(f"quantization-aware training: {res.steps} steps in {res.seconds / 60:.1f} min on {res.device} "
                  f"x{res.world}; ranges moved at most {max(map(abs, ex.moved.values()), default=0):.1%}")
    return res, ex
