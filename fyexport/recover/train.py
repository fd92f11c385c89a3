"""The recovery loop: distillation from the unpruned teacher (+ the YOLO loss with labels).

The student trains with AdamW (lr for a global batch of 16, scaled by the square root of
global batch / 16, the rule for adaptive optimizers), warm-up then cosine decay, gradients
averaged over ranks by DistributedDataParallel, and a weight EMA kept on rank 0.  Every
``check_every`` steps rank 0 measures the EMA's kept fraction on held-out images
(:class:`~fyexport.recover.check.Checker`) and keeps the best weights; recovery stops at
whichever comes first: the target, the time limit or the epoch limit.  State is saved every
``save_every`` steps, so ``resume=True`` continues an interrupted run exactly where it was.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.errors import FyexportError, InputError, InternalError
from ..core.log import G_LOGGER, progress
from .config import RecoverConfig

RECONSTRUCT_CROP = 320  # the reconstruction fits on crops of at most this size (memory)


class Ema:
    def __init__(self, model, decay: float):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 200))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


@dataclass
class _Progress:
    """Where training stands; what the state file saves and a resumed run restores."""

    epoch: int = 0
    it: int = 0  # next iteration within the epoch
    step: int = 0  # global step
    total: int = 0  # planned steps (fitted to the time limit once the speed is known)
    seconds: float = 0.0  # training time so far, over every run
    best: dict | None = None  # {"step", "kept", "score"} of the best check
    checks: list = field(default_factory=list)
    history: list = field(default_factory=list)
    stopped: str = ""
    reconstruct: dict | None = None  # what the least-squares reconstruction did


def state_path(output: Path) -> Path:
    return output.with_name(output.stem + ".recover-state.pt")


def lr_at(cfg: RecoverConfig, lr: float, it: int, total: int) -> float:
    if it < cfg.warmup_iters:
        return lr * (it + 1) / cfg.warmup_iters
    prog = (it - cfg.warmup_iters) / max(1, total - cfg.warmup_iters)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))


@dataclass
class _Models:
    """The networks and what trains them."""

    student: object  # the pruned model being trained (float32, channels-last, on the device)
    trained: object  # what the optimizer steps through: the student, or its DistributedDataParallel wrapper
    teacher: object  # the unpruned model, fused, frozen
    teacher_training_graph: object | None  # the teacher as given, for the reconstruction only (then dropped)
    optimizer: object
    ema: Ema | None  # rank 0 only
    distill: object
    supervised: object | None  # the YOLO loss, with labels only
    autocast: bool  # bfloat16 autocast
    meta: object  # the student's ArtifactMeta, carried to the output


class Trainer:
    """One recovery run on one process (of ``world``)."""

    def __init__(self, student, teacher, paths: list, output, cfg: RecoverConfig, data=None, holdout=None):
        from . import dist
        from .data import SkippedImages, TrainingSet

        self.cfg, self.output, self.spec, self.holdout = cfg, Path(output), data, holdout
        self.dist = dist.setup(_resolve(cfg.device))
        if not self.dist.main:
            G_LOGGER.configure(quiet=True)
        self.dataset = TrainingSet(paths, cfg.hw, student.nc if data is not None else None, _cache(cfg, len(paths)),
                                   self.output.parent / ".recover-cache")
        per_rank = len(self.dataset) // self.dist.world
        if 0 < per_rank < cfg.batch:
            G_LOGGER.warning(f"{per_rank} training images per process, fewer than the batch of {cfg.batch}: "
                             f"training on batches of {per_rank}")
            self.cfg = cfg = replace(cfg, batch=per_rank)
        if holdout is not None and set(map(os.path.realpath, holdout.images)) & set(map(os.path.realpath, paths)):
            raise InternalError("recovery was given held-out images to train on")
        self.global_batch = cfg.batch * self.dist.world
        self.lr = cfg.lr * math.sqrt(self.global_batch / 16)
        self.time_limit_s = cfg.time_limit_s(self.dist.device)
        self.models = self._models(student, teacher)
        self.progress = _Progress()
        self.best_state = None  # the best checked EMA weights
        self.skipped = SkippedImages()  # unusable images, each counted once
        self.input_wait_s = 0.0
        self.key = self._key(student, teacher, len(paths))
        self.checker = None  # made when training starts (rank 0, with held-out images)
        self.step_cap = 0  # the epoch and step limits in steps, known when training starts
        self.speed_ref: tuple | None = None  # (seconds, step) after the first steps, to time the later ones
        self.loader, self.sampler = None, None

    def _models(self, student, teacher) -> _Models:
        import torch

        from ..core.machine import cpu_has_native_bf16, physical_cores
        from .dist import rank_mean
        from .loss import DistillLoss, YoloLoss

        dev, cfg = self.dist.device, self.cfg
        torch.manual_seed(cfg.seed)
        if dev == "cpu":
            torch.set_num_threads(max(1, physical_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))
        training_graph = copy.deepcopy(teacher).cpu() if cfg.reconstruct else None
        meta = student.meta
        s = student.float().to(dev).to(memory_format=torch.channels_last).train()
        for p in s.parameters():
            p.requires_grad_(True)
        if cfg.reconstruct:  # reconstructed convs reproduce the teacher's statistics: keep them
            for bn in _batchnorms(s):
                bn.eval()
        t = teacher.float().to(dev).eval()
        t.fuse()
        t = t.to(memory_format=torch.channels_last)
        for p in t.parameters():
            p.requires_grad_(False)
        trained = s
        if self.dist.active:
            trained = torch.nn.parallel.DistributedDataParallel(
                s, device_ids=[self.dist.local_rank] if dev.startswith("cuda") else None)
        decay = [p for p in s.parameters() if p.ndim > 1]
        no_decay = [p for p in s.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr, betas=(0.9, 0.999))
        distill = DistillLoss(s.head.nl)
        supervised = YoloLoss(s.head, img_size=cfg.hw) if self.spec is not None else None
        for loss in (distill, supervised):
            if loss is not None:
                loss.rank_mean = rank_mean(self.dist)
        return _Models(student=s, trained=trained, teacher=t, teacher_training_graph=training_graph, optimizer=opt,
                       ema=Ema(s, cfg.ema_decay) if self.dist.main else None, distill=distill,
                       supervised=supervised, autocast=bool(cfg.amp and (dev.startswith("cuda")
                                                                         or cpu_has_native_bf16())), meta=meta)

    def _key(self, student, teacher, n: int) -> str:
        from ..core.artifacts import sha256_json

        return sha256_json({"cfg": self.cfg.key(), "images": n, "labels": self.spec is not None,
                            "world": self.dist.world, "student": student.meta.get("prune"),
                            "teacher": str(teacher.meta.get("source"))})

    # -- state --------------------------------------------------------------------------
    def restore(self) -> None:
        from ..models.checkpoint import read_pickle

        f = state_path(self.output)
        if not f.exists():
            G_LOGGER.debug(f"resume: no state file {f}; starting from scratch")
            return
        st = read_pickle(f)
        if st.get("key") != self.key:
            raise InputError(f"{f}: saved by a run with other settings or another number of processes",
                             "Start again without resuming, or resume with the same settings")
        self.models.student.load_state_dict(st["student"])
        self.models.optimizer.load_state_dict(st["optimizer"])
        if self.models.ema is not None:
            self.models.ema.ema.load_state_dict(st["ema"])
            self.models.ema.updates = int(st["ema_updates"])
        self.best_state = st.get("best_state")
        self.progress = _Progress(**st["progress"])
        G_LOGGER.info(f"resuming recovery at step {self.progress.step} (epoch {self.progress.epoch + 1})")

    def save_state(self) -> None:
        from ..core.artifacts import write_torch

        if self.dist.main:
            write_torch(state_path(self.output), {
                "key": self.key, "student": self.models.student.state_dict(),
                "optimizer": self.models.optimizer.state_dict(), "ema": self.models.ema.ema.state_dict(),
                "ema_updates": self.models.ema.updates, "best_state": self.best_state,
                "progress": asdict(self.progress)})

    # -- training -----------------------------------------------------------------------
    def run(self):
        from . import dist
        from .data import log_skipped

        if self.dataset.cache == "ram":
            self.dataset.fill_ram()
            self.skipped.add(self.dataset.known_skips(), range(len(self.dataset)))
        if self.progress.step == 0:
            self._reconstruct() if self.cfg.reconstruct else self._adapt_bn()
        self.models.teacher_training_graph = None  # only the reconstruction needed it
        self.checker = self._checker()
        self.step_cap = self.steps_per_epoch() * self.cfg.epochs
        if self.cfg.max_steps:
            self.step_cap = min(self.step_cap, self.cfg.max_steps)
        self.progress.total = self.progress.total or self.step_cap
        G_LOGGER.info(f"recovery on {self.dist.device} x{self.dist.world}: {len(self.dataset)} images, global batch "
                      f"{self.global_batch}, lr {self.lr:.2e}, "
                      f"{'bfloat16 autocast' if self.models.autocast else 'float32'}, "
                      "channels-last" + self._target_words())
        t_run = time.time() - self.progress.seconds
        with progress("recover", self.progress.total) as bar:
            bar.advance(self.progress.step)
            while self.progress.epoch < self.cfg.epochs and not self.progress.stopped:
                self._epoch(bar, t_run)
        if not self.progress.stopped:
            self.progress.stopped = "epochs"
        log_skipped(self.skipped)
        out = self._finish() if self.dist.main else None
        dist.barrier(self.dist)
        dist.teardown(self.dist)
        return out

    def _target_words(self) -> str:
        target = self.cfg.early_target
        if target is None or self.holdout is None:
            return ""
        if self.holdout.labelled:
            return f", target {target:.0%} of the teacher's mAP@.5:.95"
        return f", target teacher agreement {self.holdout.target(target):.2f} (for {target:.0%})"

    def _reconstruct(self) -> None:
        """Refit the pruned convs to the teacher by least squares on ``reconstruct`` crops of
        training images, before any gradient step (:mod:`fyexport.recover.reconstruct`)."""
        import torch

        from . import dist
        from .augment import random_crop
        from .data import make_loader
        from .reconstruct import reconstruct

        gen = torch.Generator().manual_seed(self.cfg.seed + 3)
        order = torch.randperm(len(self.dataset), generator=gen)[:self.cfg.reconstruct].tolist()
        loader = make_loader(self.dataset, order, self.cfg.batch, 0, False, 0)
        xs = []
        for images_u8, _, ids, skips in loader:
            self.skipped.add(skips, ids)
            if images_u8 is not None:
                xs.append(images_u8)
        if not xs:
            return
        x = torch.cat(xs).to(self.dist.device).float().div_(255.0)
        size = min(self.cfg.crop or RECONSTRUCT_CROP, RECONSTRUCT_CROP)  # a conv's fit is local: crops suffice
        x, _ = random_crop(x, torch.zeros(0, 6), size, torch.rand(len(x), 2, generator=gen))
        self.progress.reconstruct = reconstruct(self.models.student, self.models.teacher_training_graph, x.contiguous(),
                                                seed=self.cfg.seed)
        self.models.student.train()
        for bn in _batchnorms(self.models.student):
            bn.eval()
        dist.broadcast_module(self.dist, self.models.student)
        if self.models.ema is not None:
            self.models.ema = Ema(self.models.student, self.cfg.ema_decay)

    def _adapt_bn(self) -> None:
        """Re-estimate the student's BatchNorm statistics (cumulative averages, no gradient) on
        ``bn_adapt`` training images before training: a freshly pruned network's activations
        no longer match the statistics of its unpruned widths, and fixing them first is most
        of the early recovery (benchmarks/README.md, recovery recipe).  Every rank uses the
        same images, so the statistics agree."""
        import torch

        from .data import make_loader

        bns = _batchnorms(self.models.student)
        if not bns or not self.cfg.bn_adapt:
            return
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.cfg.seed + 1))
        saved = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        n = 0
        with torch.no_grad():
            loader = make_loader(self.dataset, order[:self.cfg.bn_adapt].tolist(), self.cfg.batch, 0, False, 0)
            for images_u8, _, ids, skips in loader:
                self.skipped.add(skips, ids)
                if images_u8 is not None:
                    x = images_u8.to(self.dist.device).float().div_(255.0).contiguous(memory_format=torch.channels_last)
                    self.models.student(x)
                    n += len(images_u8)
        for bn, m in zip(bns, saved):
            bn.momentum = m
        if self.models.ema is not None:
            self.models.ema = Ema(self.models.student, self.cfg.ema_decay)
        G_LOGGER.info(f"BatchNorm statistics of the pruned model re-estimated on {n} images")

    def steps_per_epoch(self) -> int:
        n = len(self.dataset) // self.dist.world
        if n < 1:
            raise InputError(f"{len(self.dataset)} training images for {self.dist.world} processes",
                             "Give more training images, or start fewer processes")
        return n // self.cfg.batch

    def _indices(self) -> list:
        import torch.utils.data as tud

        s = tud.DistributedSampler(self.dataset, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                   seed=self.cfg.seed, drop_last=True)
        s.set_epoch(self.progress.epoch)
        return list(s)[self.progress.it * self.cfg.batch:]

    def _loader(self):
        from .data import EpochSampler, default_workers, make_loader

        if self.loader is None:
            workers = self.cfg.workers if self.cfg.workers is not None else default_workers(self.dist.device)
            self.sampler = EpochSampler()
            self.loader = make_loader(self.dataset, self.sampler, self.cfg.batch,
                                      0 if self.dataset.cache == "ram" else workers,
                                      self.dist.device.startswith("cuda"), self.cfg.seed)
        self.sampler.indices = self._indices()
        return self.loader

    def _epoch(self, bar, t_run: float) -> None:
        sums, n = None, 0
        it = iter(self._loader())
        while True:
            t0 = time.perf_counter()
            batch = next(it, StopIteration)
            self.input_wait_s += time.perf_counter() - t0
            if batch is StopIteration:
                break
            parts = self._guarded_step(batch)
            if parts is not None:
                sums = parts if sums is None else {k: sums[k] + v for k, v in parts.items()}
                n += 1
            self.progress.it += 1
            self.progress.step += 1
            self.progress.seconds = time.time() - t_run
            bar.advance()
            if self._after_step(bar, sums, n):
                return
        self._end_epoch(sums, n)

    def _end_epoch(self, sums, n: int) -> None:
        self.progress.history.append({k: float(v) / max(n, 1) for k, v in (sums or {}).items()}
                              | {"epoch": self.progress.epoch + 1, "iterations": n})
        G_LOGGER.event("recover_epoch", **self.progress.history[-1])
        self.progress.epoch += 1
        self.progress.it = 0
        self.save_state()

    def _guarded_step(self, batch):
        import torch

        try:
            return self._step(batch)
        except torch.OutOfMemoryError:
            b = self.cfg.batch
            raise FyexportError(f"out of memory on {self.dist.device} at a batch of {b} images of {self.cfg.hw} per "
                                "process", f"Try a batch of {max(1, b // 2)} (batch)"
                                + ("" if self.cfg.crop else " or crops of 320 (crop)"))

    def _step(self, batch):
        """One optimizer step; returns the loss parts as device tensors (no host sync)."""
        import torch

        from .augment import augment, random_crop, sample_draws

        images_u8, targets, ids, skips = batch
        self.skipped.add(skips, ids)  # raises a bad label file met in a loader worker
        if images_u8 is None:
            return None
        dev, cfg = self.dist.device, self.cfg
        for g in self.models.optimizer.param_groups:
            g["lr"] = lr_at(cfg, self.lr, self.progress.step, self.progress.total)
        x = images_u8.to(dev, non_blocking=True).float().div_(255.0)
        targets = targets.to(dev, non_blocking=True)
        draws = sample_draws(ids, self.progress.epoch, cfg.seed)
        x, targets = augment(x, targets, draws)
        if cfg.crop:
            x, targets = random_crop(x, targets, cfg.crop, draws[:, 7:9])
        x = x.contiguous(memory_format=torch.channels_last)
        kind = "cuda" if dev.startswith("cuda") else "cpu"
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.models.autocast):
            with torch.no_grad():
                t_raw = self.models.teacher(x)[1]
            s_raw = self.models.trained(x)
        s_raw, t_raw = [r.float() for r in s_raw], [r.float() for r in t_raw]
        loss, parts = self.models.distill(s_raw, t_raw)
        loss = loss * cfg.kd_weight
        if self.models.supervised is not None:
            l2, p2 = self.models.supervised(s_raw, targets)
            loss = loss + cfg.sup_weight * l2 / x.shape[0]
            parts.update(p2)
        self.models.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.models.student.parameters(), 10.0)
        self.models.optimizer.step()
        if self.models.ema is not None:
            self.models.ema.update(self.models.student)
        parts["loss"] = loss.detach()
        return parts

    def _after_step(self, bar, sums, n: int) -> bool:
        """Logging, the speed estimate, checks and saves; True when recovery should stop."""
        from . import dist

        p, cfg = self.progress, self.cfg
        if sums is not None and (p.step % 25 == 0 or p.step <= 1):
            if not math.isfinite(float(sums["loss"])):
                raise FyexportError("recovery diverged (loss is not finite)", "Lower the learning rate (lr)")
            bar.set_postfix(f"epoch {p.epoch + 1} loss {float(sums['loss']) / max(n, 1):.4f}"
                            + (f" kept {p.checks[-1]['kept']:.1%}" if p.checks else ""))
        self._fit_schedule(bar)
        stop = ""
        if p.step % cfg.check_every == 0 and self.checker is not None:
            stop = self._check()
        if p.seconds >= self.time_limit_s:
            stop = stop or "time"
        if p.step >= p.total and p.total < self.step_cap:
            stop = stop or "time"  # the schedule was fitted to the time limit and is done
        if cfg.max_steps and p.step >= cfg.max_steps:
            stop = stop or "steps"
        flag = dist.broadcast_flag(self.dist, bool(stop))  # rank 0 decides for every rank
        stop = stop if self.dist.main else ("stop" if flag else "")
        if stop:
            p.stopped = stop
        if stop or p.step % cfg.save_every == 0:
            self.save_state()
        return bool(stop)

    def _fit_schedule(self, bar) -> None:
        """With a time limit, fit the planned steps to it once the speed is known (after the
        first steps, which include autotuning), and say how long recovery will take."""
        p, cfg = self.progress, self.cfg
        if p.step == 10:
            self.speed_ref = (p.seconds, p.step)
        if p.step not in (30, 60, 120) and not (p.step > 120 and p.step % 200 == 0) or self.speed_ref is None:
            return
        from . import dist

        per = (p.seconds - self.speed_ref[0]) / (p.step - self.speed_ref[1])
        total = max(min(p.step + int((self.time_limit_s - p.seconds) / per), self.step_cap), p.step + 1)
        p.total = int(dist.broadcast_value(self.dist, total))  # one schedule for every rank
        bar.update(total=p.total)
        if p.step == 30:
            G_LOGGER.info(f"recovery: {per:.2f} s a step ({self.global_batch / per:.1f} images/s); {p.total} steps "
                          f"planned, expected {per * (p.total - p.step) / 60 + p.seconds / 60:.1f} min"
                          + (" at most (or sooner, at the target)" if cfg.early_target else ""))

    def _checker(self):
        if self.holdout is None or not self.dist.main:
            return None
        from .check import Checker

        checker = Checker(self.models.teacher, self.holdout, self.dist.device)
        self.skipped.hold_out(checker.unusable, len(checker.images))
        return checker

    def _check(self) -> str:
        """Measure the EMA on the held-out images; keep the best; "target" once it is reached."""
        r = self.checker.measure(self.models.ema.ema)
        r["step"], r["seconds"] = self.progress.step, round(self.progress.seconds, 1)
        self.progress.checks.append(r)
        G_LOGGER.info(f"recovery step {self.progress.step}: kept {r['kept']:.1%} of the teacher ({self.checker.what} "
                      f"{r['score']:.4f} vs {self.checker.reference:.4f}, {len(self.checker.images)} held-out images)")
        if self.progress.best is None or r["kept"] > self.progress.best["kept"]:
            self.progress.best = r
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.models.ema.ema.state_dict().items()}
        target = self.cfg.early_target
        return "target" if target is not None and r["kept"] >= self.holdout.target(target) else ""

    def _finish(self):
        """Save the best checked EMA weights (the last EMA when nothing was checked)."""
        import torch

        from ..models import save

        checks = self.progress.checks
        if self.checker is not None and (not checks or checks[-1]["step"] != self.progress.step):
            self._check()
        out = self.models.ema.ema
        if self.best_state is not None:
            out.load_state_dict(self.best_state)
        out = out.cpu().float().to(memory_format=torch.contiguous_format).eval()
        summary = self.summary()
        out.meta = self.models.meta.with_(recover=summary)
        save(out, self.output)
        state_path(self.output).unlink(missing_ok=True)
        return out, summary | {"history": self.progress.history, "checks": self.progress.checks}

    def summary(self) -> dict:
        total = max(self.progress.seconds, 1e-9)
        return {"epochs": self.cfg.epochs, "images": len(self.dataset), "labels": self.spec is not None,
                "iterations": self.progress.step, "seconds": round(self.progress.seconds, 1),
                "device": self.dist.device,
                "world_size": self.dist.world, "global_batch": self.global_batch, "lr": self.lr,
                "images_per_s": round(self.progress.step * self.global_batch / total, 2),
                "input_wait_share": round(self.input_wait_s / total, 4), "stopped": self.progress.stopped,
                "best": self.progress.best,
                "reconstruct": self.progress.reconstruct,
                "skipped": self.skipped.counts(), "config": self.cfg.key()}


def _batchnorms(model) -> list:
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _cache(cfg: RecoverConfig, n: int) -> str:
    """--cache auto: the whole letterboxed set in memory when it is small, else streaming."""
    from .config import RAM_CACHE_AUTO_BYTES

    if cfg.cache != "auto":
        return cfg.cache
    return "ram" if n * 3 * cfg.hw[0] * cfg.hw[1] <= RAM_CACHE_AUTO_BYTES else "none"


def _resolve(device: str) -> str:
    from ..core.machine import resolve_device

    return resolve_device(device)
