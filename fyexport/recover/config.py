"""Recovery's settings."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.errors import InputError

CACHES = ("auto", "none", "ram", "disk")
RAM_CACHE_AUTO_BYTES = 1 << 30  # --cache auto keeps a training set this small in memory


@dataclass
class RecoverConfig:
    epochs: int = 100  # upper limit; the target or the time limit usually stops recovery first
    max_steps: int | None = None  # another upper limit, in optimizer steps (benchmarks)
    img_size: object = 640  # N or (H, W)
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
    workers: int | None = None  # None: data.default_workers
    cache: str = "auto"  # auto (ram when the letterboxed set fits RAM_CACHE_AUTO_BYTES, else none) | none | ram | disk
    time_budget_s: float | None = None  # stop after this many seconds of training (schedule fitted to it)
    amp: bool = True  # bfloat16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX512-BF16)
    crop: int | None = 320  # train on random crops of this size (pixels, multiple of 32; None or one at least
    # the image size: whole images)
    reconstruct: int = 64  # refit the pruned convs to the teacher by least squares on this many crops first
    # (0: off); the student's BatchNorm then keeps the teacher's statistics (frozen) while training
    bn_adapt: int = 256  # without reconstruction: re-estimate the student's BatchNorm statistics on this many
    # images first (0: off)
    target: float | None = None  # stop once the held-out kept fraction reaches this
    check_every: int = 200  # steps between held-out checks
    save_every: int = 100  # steps between state saves

    @property
    def hw(self) -> tuple:
        return (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch < 1:
            raise InputError(f"--batch must be >= 1, got {self.batch}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.crop and (self.crop % 32 or self.crop < 64):
            raise InputError(f"--crop must be a multiple of 32 and at least 64 (0: whole images), got {self.crop}")
        if self.target is not None and not 0 < self.target <= 1:
            raise InputError(f"--target must be in (0, 1], got {self.target}")
        if self.cache not in CACHES:
            raise InputError(f"--cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        if self.bn_adapt < 0:
            raise InputError(f"--bn-adapt must be >= 0, got {self.bn_adapt}")
        if self.reconstruct < 0:
            raise InputError(f"--reconstruct must be >= 0, got {self.reconstruct}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InputError("the recovery time limit must be positive")

    def key(self) -> dict:
        """The settings that change the result (not where or how fast it runs)."""
        d = asdict(self)
        for k in ("device", "workers", "amp", "cache", "save_every"):
            d.pop(k)
        d["img_size"] = list(self.hw)
        return d
