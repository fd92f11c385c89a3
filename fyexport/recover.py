"""Accuracy recovery for a pruned model: knowledge distillation from the unpruned teacher
on the same sample images, plus the supervised YOLO loss when labels are given.

Images go through the project's one letterbox once and are kept as uint8 in memory;
light augmentation (horizontal flip, brightness/contrast/saturation jitter, a small random
scale and translation) runs batched on the training device and is applied identically to
the teacher's input and to the labels.  The student trains with AdamW, cosine decay and a
weight EMA; the EMA is what gets saved.  A state file next to the output is written after
every epoch so ``resume=True`` continues an interrupted run.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import FyexportError, InputError
from .log import G_LOGGER, progress


@dataclass
class RecoverConfig:
    epochs: int = 10
    img_size: int = 640
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_iters: int = 50
    ema_decay: float = 0.999
    kd_weight: float = 1.0
    sup_weight: float = 1.0
    max_images: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    time_budget_s: float | None = None  # stop after this many seconds of training (schedule shortened to fit)
    amp: bool = True  # bfloat16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX512-BF16)
    crop: int | None = None  # train on random crops of this size (pixels, multiple of 32) of the img_size inputs

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.crop is not None and (self.crop % 32 or not 64 <= self.crop <= self.img_size):
            raise InputError(f"--crop must be a multiple of 32 between 64 and --img-size ({self.img_size}), "
                             f"got {self.crop}")

    def key(self) -> dict:
        d = asdict(self)
        d.pop("device")
        d.pop("workers")
        d.pop("amp")
        return d


# -- data -------------------------------------------------------------------------

class ImageBank:
    """Letterboxed uint8 images (N,3,H,W) and their labels as (image, cls, cx, cy, w, h) in
    input pixels."""

    def __init__(self, paths, img_size: int, nc: int | None, with_labels: bool):
        from .data import read_labels
        from .preprocess import BadImage, letterbox, read_image

        self.size = img_size
        imgs, labels, skipped = [], [], 0

        def load(p):
            try:
                im = read_image(p)
            except BadImage:
                return None
            lb, ratio, pad = letterbox(im, img_size)
            lab = None
            if with_labels:
                raw = read_labels(p, nc)
                h, w = im.shape[:2]
                lab = np.zeros((len(raw), 5), np.float32)
                if len(raw):
                    lab[:, 0] = raw[:, 0]
                    lab[:, 1] = raw[:, 1] * w * ratio[0] + pad[0]
                    lab[:, 2] = raw[:, 2] * h * ratio[1] + pad[1]
                    lab[:, 3] = raw[:, 3] * w * ratio[0]
                    lab[:, 4] = raw[:, 4] * h * ratio[1]
            return np.ascontiguousarray(lb[:, :, ::-1].transpose(2, 0, 1)), lab

        with ThreadPoolExecutor(4) as ex, progress("loading images", len(paths)) as bar:
            for r in ex.map(load, paths):
                bar.advance()
                if r is None:
                    skipped += 1
                    continue
                imgs.append(r[0])
                labels.append(r[1])
        if not imgs:
            raise InputError("no usable training image (all unreadable)")
        if skipped:
            G_LOGGER.warning(f"{skipped} unreadable training images skipped")
        self.images = np.stack(imgs)
        self.labels = labels if with_labels else None

    def __len__(self) -> int:
        return len(self.images)


def augment(x, targets, gen, scale: float = 0.2, translate: float = 0.1, jitter: float = 0.3):
    """Batched light augmentation on the device.  x: (B,3,H,W) float 0..1; targets: (n,6)
    image,cls,cx,cy,w,h in pixels.  Returns the augmented pair."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    dev = x.device
    # horizontal flip
    flip = torch.rand(b, generator=gen, device="cpu") < 0.5
    if flip.any():
        fd = flip.to(dev)
        x = torch.where(fd[:, None, None, None], x.flip(-1), x)
        if targets.numel():
            ft = fd[targets[:, 0].long()]
            targets[ft, 2] = w - targets[ft, 2]
    # colour jitter: brightness, contrast, saturation
    g = lambda: (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * jitter).to(dev)  # noqa: E731
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * g() + mean
    x = x * g()
    gray = x.mean(1, keepdim=True)
    x = ((x - gray) * g() + gray).clamp(0, 1)
    # random scale + translation via an affine grid (grey 114 outside)
    s = (1 + (torch.rand(b, generator=gen) * 2 - 1) * scale)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * translate
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = -t * 2 / s[:, None]
    grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    pad = 114 / 255
    x = F.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    if targets.numel():
        idx = targets[:, 0].long()
        sd, td = s.to(dev)[idx], t.to(dev)[idx]
        cx = (targets[:, 2] - w / 2) * sd + w / 2 + td[:, 0] * w
        cy = (targets[:, 3] - h / 2) * sd + h / 2 + td[:, 1] * h
        targets = _clip_targets(targets, cx, cy, targets[:, 4] * sd, targets[:, 5] * sd, w, h)
    return x, targets


def _clip_targets(targets, cx, cy, bw, bh, w: int, h: int):
    """Targets with moved boxes (cx, cy, bw, bh) clipped to a w x h image; boxes under 2 px
    or left with less than 30% of their area are dropped."""
    import torch

    x1, x2 = (cx - bw / 2).clamp(0, w), (cx + bw / 2).clamp(0, w)
    y1, y2 = (cy - bh / 2).clamp(0, h), (cy + bh / 2).clamp(0, h)
    keep = ((x2 - x1) > 2) & ((y2 - y1) > 2) & ((x2 - x1) * (y2 - y1) > 0.3 * bw * bh)
    return torch.stack([targets[:, 0], targets[:, 1], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)[keep]


def random_crop(x, targets, size: int, gen):
    """A random ``size`` x ``size`` window of each image (objects keep their pixel scale, so
    a model trained on crops sees what it will see at full size, at a fraction of the cost).
    Boxes are shifted and clipped to the window; boxes left mostly outside are dropped."""
    import torch

    b, _, h, w = x.shape
    if size >= h and size >= w:
        return x, targets
    oy = torch.randint(0, h - size + 1, (b,), generator=gen)
    ox = torch.randint(0, w - size + 1, (b,), generator=gen)
    x = torch.stack([x[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size] for i in range(b)])
    if targets.numel():
        idx = targets[:, 0].long()
        dx, dy = ox.to(targets.device, targets.dtype)[idx], oy.to(targets.device, targets.dtype)[idx]
        targets = _clip_targets(targets, targets[:, 2] - dx, targets[:, 3] - dy, targets[:, 4], targets[:, 5],
                                size, size)
    return x, targets


# -- training -----------------------------------------------------------------------

class Ema:
    def __init__(self, model, decay: float):
        import copy

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


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16).  There
    oneDNN's bf16 convolutions run ~3x faster than fp32; elsewhere bf16 is emulated and
    slower, so recovery stays in fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _state_path(output: Path) -> Path:
    return output.with_name(output.stem + ".recover-state.pt")


def recover(student, teacher, images, output, cfg: RecoverConfig, data=None, resume: bool = False):
    """Train ``student`` (a pruned Model) towards ``teacher`` on ``images`` (paths) and save
    the EMA weights to ``output`` in fyexport's format.  Returns (model, summary dict)."""
    import torch

    from .artifacts import atomic_path, sha256_json
    from .loss import DistillLoss, YoloLoss
    from .models import save
    from .runners.torch_runner import resolve_device

    output = Path(output)
    if teacher.nc != student.nc:
        raise InputError(f"teacher has {teacher.nc} classes but the pruned model has {student.nc}",
                         "Use the checkpoint the pruned model was made from as --teacher")
    cfg.validate()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device == "cpu":
        from .runners.ort import physical_cores

        torch.set_num_threads(physical_cores())
    with_labels = data is not None
    paths = list(images)
    if cfg.max_images:
        from .preprocess import sample_images

        paths = sample_images(paths, cfg.max_images, cfg.seed)
    bank = ImageBank(paths, cfg.img_size, student.nc if with_labels else None, with_labels)
    n = len(bank)
    iters_per_epoch = max(1, n // cfg.batch)
    total_iters = iters_per_epoch * cfg.epochs

    student = student.float().to(device)
    student.train()
    for p in student.parameters():
        p.requires_grad_(True)
    teacher = teacher.float().to(device).eval()
    teacher.fuse()
    # On CPU, oneDNN's convolutions are fastest in channels-last (NHWC) layout: measured on a
    # 2-core Xeon, 1.4x in fp32 and, with bf16 autocast on AMX, 3.4x over NCHW fp32 per step.
    layout = torch.channels_last if device == "cpu" else torch.contiguous_format
    student = student.to(memory_format=layout)
    teacher = teacher.to(memory_format=layout)
    for p in teacher.parameters():
        p.requires_grad_(False)

    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    ema = Ema(student, cfg.ema_decay)
    kd = DistillLoss(student.head.nl)
    sup = YoloLoss(student.head, img_size=cfg.img_size) if with_labels else None

    settings = {"cfg": cfg.key(), "images": n, "labels": with_labels,
                "student": student.meta.get("prune"), "teacher": str(teacher.meta.get("source"))}
    key = sha256_json(settings)
    state_file = _state_path(output)
    start_epoch, history = 0, []
    if resume and state_file.exists():
        from .models.checkpoint import read_pickle

        st = read_pickle(state_file)
        if st.get("key") != key:
            raise InputError(f"{state_file}: saved by a run with other settings; rerun without --resume "
                             "or with the same settings")
        student.load_state_dict(st["student"])
        ema.ema.load_state_dict(st["ema"])
        ema.updates = int(st["ema_updates"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, history = int(st["epoch"]) + 1, list(st["history"])
        G_LOGGER.info(f"resuming from epoch {start_epoch + 1}/{cfg.epochs}")
    elif resume:
        G_LOGGER.debug(f"resume: no state file {state_file}; starting from scratch")

    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start_epoch):  # keep the data order of an uninterrupted run
        torch.randperm(n, generator=gen)

    def lr_at(it: int) -> float:
        if it < cfg.warmup_iters:
            return cfg.lr * (it + 1) / cfg.warmup_iters
        prog = (it - cfg.warmup_iters) / max(1, total_iters - cfg.warmup_iters)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))

    amp_device = "cuda" if device.startswith("cuda") else "cpu"
    use_amp = bool(cfg.amp and (amp_device == "cuda" or cpu_has_native_bf16()))
    G_LOGGER.info(f"recovery on {device}: {'bfloat16 autocast' if use_amp else 'float32'}"
                  f"{', channels-last' if layout is torch.channels_last else ''}")
    t10 = 0.0
    t_start = time.time()
    gi = start_epoch * iters_per_epoch
    stop = False
    with progress("recover", total_iters) as bar:
        bar.advance(start_epoch * iters_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            sums: dict = {}
            done_in_epoch = 0
            for it in range(iters_per_epoch):
                if cfg.time_budget_s is not None:
                    elapsed = time.time() - t_start
                    if gi == 10:
                        t10 = elapsed  # the first iterations include autotuning: measure speed after them
                    if gi in (30, 60, 120) or (gi > 120 and gi % 200 == 0):  # fit the schedule to the budget
                        per_iter = (elapsed - t10) / (gi - 10)
                        fit = gi + int((cfg.time_budget_s - elapsed) / per_iter)
                        total_iters = max(min(fit, iters_per_epoch * cfg.epochs), gi + 1)
                        bar.update(total=total_iters)
                    if gi >= total_iters or elapsed > cfg.time_budget_s:
                        stop = True
                        break
                for g in opt.param_groups:
                    g["lr"] = lr_at(gi)
                idx = perm[it * cfg.batch:(it + 1) * cfg.batch].numpy()
                x = torch.from_numpy(bank.images[idx]).to(device).float() / 255.0
                tg = torch.zeros(0, 6)
                if with_labels:
                    rows = [np.concatenate([np.full((len(bank.labels[k]), 1), j, np.float32), bank.labels[k]], 1)
                            for j, k in enumerate(idx)]
                    tg = torch.from_numpy(np.concatenate(rows)) if rows else tg
                tg = tg.to(device)
                x, tg = augment(x, tg, gen)
                if cfg.crop:
                    x, tg = random_crop(x, tg, cfg.crop, gen)
                x = x.contiguous(memory_format=layout)
                with torch.autocast(amp_device, dtype=torch.bfloat16, enabled=use_amp):
                    with torch.no_grad():
                        t_raw = teacher(x)[1]
                    s_raw = student(x)
                s_raw = [r.float() for r in s_raw]
                t_raw = [r.float() for r in t_raw]
                loss, parts = kd(s_raw, t_raw)
                loss = loss * cfg.kd_weight
                if sup is not None:
                    l2, p2 = sup(s_raw, tg)
                    loss = loss + cfg.sup_weight * l2 / x.shape[0]
                    parts.update(p2)
                if not torch.isfinite(loss):
                    raise FyexportError("recovery diverged (loss is not finite)", "Lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
                opt.step()
                ema.update(student)
                parts["loss"] = float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                gi += 1
                done_in_epoch += 1
                bar.advance()
                bar.set_postfix(f"epoch {epoch + 1}/{cfg.epochs} loss {parts['loss']:.4f}")
            history.append({k: v / max(done_in_epoch, 1) for k, v in sums.items()} | {"epoch": epoch + 1,
                                                                                    "iterations": done_in_epoch})
            G_LOGGER.event("recover_epoch", **history[-1])
            with atomic_path(state_file) as tmp:
                torch.save({"key": key, "epoch": epoch, "student": student.state_dict(), "ema": ema.ema.state_dict(),
                            "ema_updates": ema.updates, "optimizer": opt.state_dict(), "history": history}, tmp)
            if stop:
                break
    out = ema.ema.cpu().float().to(memory_format=torch.contiguous_format).eval()
    out.meta = dict(student.meta)
    summary = {"epochs": cfg.epochs, "images": n, "labels": with_labels, "iterations": gi,
               "seconds": round(time.time() - t_start, 1), "device": device, "history": history,
               "config": cfg.key()}
    out.meta["recover"] = {k: v for k, v in summary.items() if k != "history"}
    save(out, output)
    state_file.unlink(missing_ok=True)
    return out, summary


def training_images(images=None, data=None) -> tuple[list, object]:
    """(image paths, DataSpec or None) from --images and/or --data, validated."""
    from .data import load_data_yaml
    from .preprocess import list_images

    spec = load_data_yaml(data) if data else None
    if images:
        p = Path(images)
        if not p.is_dir():
            raise InputError(f"{p}: not a folder of images")
        paths = list_images(p)
        if not paths:
            raise InputError(f"{p}: no image files (jpg, png, bmp, webp, tiff) found")
    elif spec is not None:
        paths = spec.images("train")
    else:
        raise InputError("give --images DIR (label-free) and/or --data data.yaml (with labels)")
    return paths, spec


def recover_from_paths(pruned, teacher, images, data, output, cfg: RecoverConfig, resume: bool = False):
    """The ``fyexport recover`` command: validate everything, then :func:`recover`."""
    from .models import load

    out = Path(output)
    if out.suffix not in (".pt", ".pth"):
        raise InputError(f"{output}: the recovered model is saved as .pt")
    paths, spec = training_images(images, data)
    student = load(pruned)
    if not student.meta.get("prune"):
        G_LOGGER.warning(f"{pruned}: has no pruning record; recovering it anyway")
    teach = load(teacher)
    if spec is not None and spec.nc != student.nc:
        raise InputError(f"{spec.path}: has {spec.nc} classes but the model has {student.nc}")
    return recover(student, teach, paths, out, cfg, data=spec, resume=resume)


def taylor_loss_fn(data, model, batches: int = 4, batch: int = 8, img_size: int = 640):
    """For Taylor importance: a callable that accumulates YOLO-loss gradients on a few
    labelled batches."""
    import torch

    from .data import load_data_yaml
    from .loss import YoloLoss

    spec = load_data_yaml(data)
    if spec.nc != model.nc:
        raise InputError(f"{spec.path}: has {spec.nc} classes but the model has {model.nc}")
    paths = spec.images("train")[: batches * batch]
    bank = ImageBank(paths, img_size, spec.nc, True)

    def run(m):
        loss_fn = YoloLoss(m.head, img_size=img_size)
        m.train()
        for i in range(0, len(bank), batch):
            idx = np.arange(i, min(i + batch, len(bank)))
            x = torch.from_numpy(bank.images[idx]).float() / 255.0
            rows = [np.concatenate([np.full((len(bank.labels[k]), 1), j, np.float32), bank.labels[k]], 1)
                    for j, k in enumerate(idx)]
            tg = torch.from_numpy(np.concatenate(rows))
            loss, _ = loss_fn(m(x), tg)
            loss.backward()
        m.eval()

    return run
