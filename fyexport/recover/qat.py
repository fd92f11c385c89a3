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
from dataclasses import dataclass, field, replace

from ..core.config import require
from ..core.errors import FyexportError, InputError

SCHEDULES = ("cosine", "constant")


@dataclass
class QatConfig:
    """Quantization-aware training's settings (``fyexport build --qat``: the ``qat`` section)."""

    steps: int = 300  # upper limit in optimizer steps
    minutes: float | None = 4.0  # time limit for training (None: only the step limit)
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
    def time_budget_s(self) -> float | None:
        return None if self.minutes is None else 60.0 * self.minutes

    def validate(self) -> None:
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        require(self.minutes is None or self.minutes > 0, "minutes", f"must be > 0, got {self.minutes}")
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


class _Step:
    """One optimizer step of QAT: teacher and student on the same augmented crops, distillation
    (+ YOLO loss with labels), AdamW, gradient clipping, EMA."""

    def __init__(self, student, teacher, cfg: QatConfig, device: str, labels: bool):
        import torch

        from ..core.machine import cpu_has_native_bf16
        from .loss import DistillLoss, YoloLoss
        from .train import Ema

        self.cfg, self.device = cfg, device
        self.amp = bool(cfg.amp and (device.startswith("cuda") or cpu_has_native_bf16()))
        self.student = student.to(device).to(memory_format=torch.channels_last).train()
        self.teacher = teacher.to(device).to(memory_format=torch.channels_last).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.opt = _optimizer(self.student, cfg)
        self.ema = Ema(self.student, cfg.ema_decay) if cfg.ema_decay else None
        self.kd = DistillLoss(student.head.nl)
        self.sup = YoloLoss(student.head, img_size=cfg.crop or cfg.hw) if labels else None

    def __call__(self, x, tg, lr_scale: float) -> dict:
        import torch

        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.amp):
            with torch.no_grad():
                t_raw = self.teacher(x)[1]
            s_raw = self.student(x)
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


def qat_finetune(qat_model, teacher, paths: list, cfg: QatConfig | None = None, data=None) -> QatResult:
    """Fine-tune ``qat_model`` in place towards the FP32 ``teacher`` on the images ``paths`` (with
    the labels of ``data``, a DataSpec, when given) for ``cfg.steps`` steps or
    ``cfg.time_budget_s`` seconds, whichever ends first."""
    import torch

    from ..core.log import G_LOGGER, progress
    from ..core.machine import resolve_device
    from ..quantize.qat import is_qat

    cfg = cfg or QatConfig()
    cfg.validate()
    if not is_qat(qat_model):
        raise InputError("qat_finetune needs a model from fyexport.quantize.qat.prepare_qat")
    if 0 < len(paths) < cfg.batch:
        G_LOGGER.warning(f"quantization-aware training: {len(paths)} images, fewer than the batch of {cfg.batch}; "
                         f"training on batches of {len(paths)}")
        cfg = replace(cfg, batch=len(paths))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    t = copy.deepcopy(teacher).float().eval()
    t.fuse()
    step = _Step(qat_model, t, cfg, device, data is not None)
    batches = _batches(_loader(paths, cfg, device, data), cfg, device, data)  # images cached before the clock
    history, sums, n, k, t0 = [], None, 0, 0, time.perf_counter()
    with progress("quantization-aware training", cfg.steps) as bar:
        while k < cfg.steps:
            x, tg = next(batches)
            parts = step(x, tg, lr_scale(cfg, k, cfg.steps))
            sums = parts if sums is None else {key: sums[key] + v for key, v in parts.items()}
            n, k = n + 1, k + 1
            bar.advance()
            if k % 25 == 0 or k == cfg.steps:
                history.append(_mean_parts(sums, n) | {"step": k})
                sums, n = None, 0
            if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s:
                break
    if sums is not None:
        history.append(_mean_parts(sums, n) | {"step": k})
    seconds = time.perf_counter() - t0
    out = (step.ema.ema if step.ema is not None else step.student).cpu().float()
    out = out.to(memory_format=torch.contiguous_format).eval()
    qat_model.cpu().to(memory_format=torch.contiguous_format).eval()
    return QatResult(out, k, seconds, k * cfg.batch / max(seconds, 1e-9), history, device, step.amp)


def _mean_parts(sums: dict, n: int) -> dict:
    out = {key: float(v) / n for key, v in sums.items()}
    if not math.isfinite(out["loss"]):
        raise FyexportError("quantization-aware training diverged (loss is not finite)", "Lower the lr")
    return out


def _loader(paths: list, cfg: QatConfig, device: str, data):
    """(dataset, loader, sampler) of recovery's pipeline; a small set is letterboxed into memory now."""
    from .config import RAM_CACHE_AUTO_BYTES
    from .data import EpochSampler, TrainingSet, default_workers, make_loader

    small = len(paths) * 3 * cfg.hw[0] * cfg.hw[1] <= RAM_CACHE_AUTO_BYTES
    cache = cfg.cache if cfg.cache != "auto" else ("ram" if small else "none")
    ds = TrainingSet(paths, cfg.hw, data.nc if data is not None else None, cache)
    if len(ds) < cfg.batch:
        raise InputError(f"{len(ds)} training images, fewer than the batch of {cfg.batch}")
    if cache == "ram":
        ds.fill_ram()
    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    sampler = EpochSampler()
    loader = make_loader(ds, sampler, cfg.batch, 0 if cache == "ram" else workers, device.startswith("cuda"), cfg.seed)
    return ds, loader, sampler


def _batches(pipeline, cfg: QatConfig, device: str, data):
    """Endless augmented (x, targets) batches on ``device``, a fresh seeded order every epoch."""
    import torch

    from .augment import augment, random_crop, sample_draws

    ds, loader, sampler = pipeline
    epoch = 0
    while True:
        sampler.indices = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        for x8, tg, ids, _ in loader:
            if x8 is None:
                continue
            x = x8.to(device, non_blocking=True).float().div_(255.0)
            tg = tg.to(device, non_blocking=True) if data is not None else torch.zeros(0, 6, device=device)
            draws = sample_draws(ids, epoch, cfg.seed)
            x, tg = augment(x, tg, draws)
            if cfg.crop:
                x, tg = random_crop(x, tg, cfg.crop, draws[:, 7:9])
            yield x.contiguous(memory_format=torch.channels_last), (tg if data is not None else None)
        epoch += 1


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

    dev = resolve_device(device)
    cfg = QatConfig(batch=batch, img_size=img_size, crop=None, amp=amp, ema_decay=None)
    t = copy.deepcopy(teacher).float().eval()
    t.fuse()
    step = _Step(copy.deepcopy(model).float(), t, cfg, dev, labels=False)
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
