"""Recovery's settings: one configuration, its defaults written once here."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.config import require
from ..core.imgsize import DEFAULT_IMG_SIZE, as_hw

CACHES = ("auto", "none", "ram", "disk")
RAM_CACHE_AUTO_BYTES = 1 << 30  # --cache auto keeps a training set this small in memory
DEFAULT_MINUTES = {"cpu": 15.0, "cuda": 10.0}  # the time limit when none is given (README: recovery)
DEFAULT_TARGET = 0.95


@dataclass
class RecoverConfig:
    epochs: int = 100  # upper limit; the target or the time limit usually stops recovery first
    max_steps: int | None = None  # another upper limit, in optimizer steps (benchmarks)
    img_size: object = DEFAULT_IMG_SIZE  # N or (H, W), fitted to the model's stride by the caller
    batch: int = 16  # per process
    lr: float = 3e-4  # AdamW, for a global batch of 16 (1.5e-3 suits recovery without reconstruction)
    weight_decay: float = 5e-4
    warmup_iters: int = 50
    ema_decay: float = 0.999
    kd_weight: float = 1.0
    sup_weight: float = 1.0
    max_images: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # None: 1 on a CPU, up to 8 on a GPU (data.default_workers)
    cache: str = "auto"  # auto (ram when the letterboxed set fits RAM_CACHE_AUTO_BYTES, else none) | none | ram | disk
    minutes: float | None = None  # time limit for training (None: DEFAULT_MINUTES of the device); the schedule is
    # fitted to it
    amp: bool = True  # bfloat16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX512-BF16)
    crop: int = 320  # train on random crops of this size (pixels, multiple of 32; 0 or one at least the image
    # size: whole images)
    reconstruct: int = 64  # refit the pruned convs to the teacher by least squares on this many crops first
    # (0: off); the student's BatchNorm then keeps the teacher's statistics (frozen) while training
    bn_adapt: int = 256  # without reconstruction: re-estimate the student's BatchNorm statistics on this many
    # images first (0: off)
    target: float = DEFAULT_TARGET  # stop once the held-out kept fraction reaches this (1: never early)
    check_every: int = 200  # steps between held-out checks
    save_every: int = 100  # steps between state saves

    @property
    def hw(self) -> tuple:
        return as_hw(self.img_size)

    @property
    def early_target(self) -> float | None:
        """The kept fraction that stops recovery early (None: no early stop)."""
        return self.target if self.target < 1 else None

    def time_limit_s(self, device: str) -> float:
        """The time limit in seconds on ``device`` (resolved: cpu, cuda, cuda:N)."""
        minutes = self.minutes if self.minutes is not None else DEFAULT_MINUTES[
            "cuda" if device.startswith("cuda") else "cpu"]
        return minutes * 60

    def step_limit(self, n_images: int, world: int = 1) -> int:
        """The epoch and step limits in optimizer steps on ``n_images`` training images."""
        steps = self.epochs * max(1, n_images // world // self.batch)
        return min(steps, self.max_steps) if self.max_steps else steps

    def validate(self) -> None:
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        require(not self.crop or (self.crop % 32 == 0 and self.crop >= 64), "crop",
                f"must be a multiple of 32 and at least 64 (0: whole images), got {self.crop}")
        require(0 < self.target <= 1, "target", f"must be in (0, 1], got {self.target}")
        require(self.cache in CACHES, "cache", f"must be one of {', '.join(CACHES)}, got {self.cache!r}")
        require(self.workers is None or self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        require(self.bn_adapt >= 0, "bn_adapt", f"must be >= 0, got {self.bn_adapt}")
        require(self.reconstruct >= 0, "reconstruct", f"must be >= 0, got {self.reconstruct}")
        require(self.minutes is None or self.minutes > 0, "minutes", f"must be positive, got {self.minutes}")
        require(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.check_every >= 1, "check_every", f"must be >= 1, got {self.check_every}")

    def key(self) -> dict:
        """The settings that change the result (not where or how fast it runs)."""
        d = asdict(self)
        for k in ("device", "workers", "amp", "cache", "save_every"):
            d.pop(k)
        d["img_size"] = list(self.hw)
        return d
