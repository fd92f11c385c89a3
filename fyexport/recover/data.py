"""Recovery's input pipeline: a torch ``Dataset`` that reads, letterboxes (the project's one
letterbox) and labels one image at a time, and a ``DataLoader`` with worker processes.

Memory is bounded by batch x workers x prefetch, whatever the data set's size.  Optional
caches for small data sets: ``ram`` (every letterboxed image in one array, filled once in the
main process and shared with the workers) and ``disk`` (one ``.npy`` per image, keyed by the
file's path, size, modification time and the input size, so a changed image is never served
stale).  An unusable image (unreadable, undecodable, too small or thin, or one that
vanished) is skipped and counted once, by its reason (:class:`SkippedImages`); a label file
with a class id outside the model's classes stops recovery with a line naming it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.config import ConfigError
from ..core.errors import InputError
from ..core.log import G_LOGGER, progress
from .config import CACHES

CACHE_FORMAT = "letterbox-rgb-exif-1"  # what a disk-cache entry holds; bump when reading or letterboxing changes


def label_pixels(raw: np.ndarray, orig_hw, hw) -> np.ndarray:
    """(n, 5) class, cx, cy, w, h in letterboxed input pixels from normalised label rows."""
    from ..data.images import letterbox_geometry

    (rw, rh), (pw, ph) = letterbox_geometry(orig_hw, hw)[:2]
    h, w = orig_hw
    out = np.zeros((len(raw), 5), np.float32)
    if len(raw):
        out[:, 0] = raw[:, 0]
        out[:, 1] = raw[:, 1] * w * rw + pw
        out[:, 2] = raw[:, 2] * h * rh + ph
        out[:, 3] = raw[:, 3] * w * rw
        out[:, 4] = raw[:, 4] * h * rh
    return out


def letterboxed_sample(path, hw, nc: int | None):
    """(uint8 3xHxW RGB, original (h, w), labels in input pixels or None) of one image."""
    from ..data.images import letterbox, read_image
    from ..data.labels import read_labels

    im = read_image(path)
    lb = letterbox(im, hw)[0]
    labels = None if nc is None else label_pixels(read_labels(path, nc), im.shape[:2], hw)
    return np.ascontiguousarray(lb[:, :, ::-1].transpose(2, 0, 1)), im.shape[:2], labels


class TrainingSet(torch.utils.data.Dataset):
    """Item ``i``: ("ok", i, image uint8 3xHxW, labels or None), ("skip", i, reason) for an
    unusable image (``BadImage.reason``), or ("error", i, message) for a bad label file
    (raised in the main process, so the message stays one line)."""

    def __init__(self, paths, hw, nc: int | None = None, cache: str = "none", cache_dir=None):
        if cache not in CACHES or cache == "auto":
            raise ConfigError("cache", f"must be one of {', '.join(CACHES)} here, got {cache!r}")
        if cache == "disk" and cache_dir is None:
            raise ConfigError("cache", "disk needs a cache folder")
        self.paths, self.hw, self.nc = [str(p) for p in paths], tuple(hw), nc
        self.cache, self.cache_dir = cache, Path(cache_dir) if cache_dir else None
        self.bank: np.ndarray | None = None  # ram cache
        self.bank_labels: list = []
        self.bank_skipped: dict = {}  # ram cache: index -> reason of each unusable image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self.bank is not None:
            if i in self.bank_skipped:
                return ("skip", i, self.bank_skipped[i])
            return ("ok", i, self.bank[i], self.bank_labels[i])
        return self._load(i)

    def _load(self, i: int):
        from ..data.images import BadImage

        try:
            if self.cache == "disk":
                img, labels = self._disk(i)
            else:
                img, _, labels = letterboxed_sample(self.paths[i], self.hw, self.nc)
        except BadImage as e:
            return ("skip", i, e.reason)
        except InputError as e:
            return ("error", i, str(e))
        return ("ok", i, img, labels)

    def _disk(self, i: int):
        """The letterboxed pixels from the disk cache (made on first use); labels fresh."""
        from ..data.images import BadImage
        from ..data.labels import read_labels

        p = self.paths[i]
        try:
            st = os.stat(p)
        except OSError:
            raise BadImage("vanished")
        key = hashlib.sha256(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}|{self.hw}|{CACHE_FORMAT}".encode()
                             ).hexdigest()
        f = self.cache_dir / key[:2] / f"{key}.npz"
        try:
            with np.load(f, allow_pickle=False) as z:
                img, orig = z["img"], tuple(int(v) for v in z["orig_hw"])
        except (OSError, ValueError, KeyError):
            img, orig, _ = letterboxed_sample(p, self.hw, None)
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f".{f.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, img=img, orig_hw=np.asarray(orig))
            os.replace(tmp, f)
        labels = None if self.nc is None else label_pixels(read_labels(p, self.nc), orig, self.hw)
        return img, labels

    def fill_ram(self) -> None:
        """The ram cache: every image letterboxed once, in the main process (worker processes
        then share the one array)."""
        n = len(self.paths)
        bank, labels, skipped = np.zeros((n, 3, *self.hw), np.uint8), [None] * n, {}
        with progress("caching images in memory", n) as bar:
            for i in range(n):
                item = self._load(i)
                if item[0] == "error":
                    raise InputError(item[2])
                if item[0] == "ok":
                    bank[i], labels[i] = item[2], item[3]
                else:
                    skipped[i] = item[2]
                bar.advance()
        self.bank, self.bank_labels, self.bank_skipped = bank, labels, skipped

    def known_skips(self) -> "Skips":
        """The unusable images already known (all of them once the ram cache is filled)."""
        return Skips(sorted(self.bank_skipped.items()))


@dataclass
class Skips:
    """What one batch met besides usable images: the unusable ones (index, reason) and a bad
    label file's message (raised by the main process, not by a loader worker)."""

    images: list = field(default_factory=list)
    error: str | None = None


class SkippedImages:
    """The unusable images recovery met, each counted once by its reason, however many
    epochs, loaders (reconstruction, BatchNorm re-estimation, training) and worker
    processes met it, and how many images it read: all of them up front with the ram
    cache; streamed, those training reached (a run stopped early reads fewer)."""

    def __init__(self):
        self.training: dict = {}  # dataset index -> reason
        self.read: set = set()  # dataset indices read, usable or not
        self.held_out: dict = {}  # path -> reason, of the held-out check's images
        self.held_out_read = 0

    def add(self, skips: Skips, used=()) -> None:
        """What one batch met: ``skips`` and the indices of its ``used`` images."""
        if skips.error is not None:
            raise InputError(skips.error)
        for i, why in skips.images:
            self.training.setdefault(int(i), why)
            self.read.add(int(i))
        self.read.update(int(i) for i in used)

    def hold_out(self, unusable: dict, read: int) -> None:
        self.held_out, self.held_out_read = unusable, read

    def counts(self) -> dict:
        """reason -> images, training and held-out together (sorted by reason)."""
        out: dict = {}
        for why in [*self.training.values(), *self.held_out.values()]:
            out[why] = out.get(why, 0) + 1
        return dict(sorted(out.items()))


def collate(items):
    """(images uint8 Bx3xHxW, targets (n, 6) image, cls, cx, cy, w, h, sample ids,
    :class:`Skips`).  A bad label file is raised here only in the main process: from a worker
    the message would arrive wrapped in the worker's traceback."""
    errors = [it[2] for it in items if it[0] == "error"]
    if errors:
        import torch.utils.data as tud

        if tud.get_worker_info() is None:
            raise InputError(errors[0])
        return None, None, [], Skips(error=errors[0])
    ok = [it for it in items if it[0] == "ok"]
    skipped = Skips([(it[1], it[2]) for it in items if it[0] == "skip"])
    if not ok:
        return None, None, [], skipped
    x = torch.from_numpy(np.stack([it[2] for it in ok]))
    rows = [np.concatenate([np.full((len(it[3]), 1), j, np.float32), it[3]], 1)
            for j, it in enumerate(ok) if it[3] is not None and len(it[3])]
    tg = torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, 6)
    return x, tg, [it[1] for it in ok], skipped


def default_workers(device: str) -> int:
    """Worker processes for decoding: on a CPU the training itself needs the cores, so one
    (none on a single core); on a GPU up to 8, one core left for the main process."""
    from ..core.machine import physical_cores

    cores = physical_cores()
    if not device.startswith("cuda"):
        return 1 if cores > 1 else 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class EpochSampler(torch.utils.data.Sampler):
    """The sample order of the current epoch, set before each epoch (one loader, persistent
    workers: the order is made in the main process and handed to the workers)."""

    def __init__(self):
        self.indices: list = []

    def __iter__(self):
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(ds: TrainingSet, sampler, batch: int, workers: int, pin: bool, seed: int):
    """A DataLoader over ``sampler``'s order, ``batch`` per step (a short last batch is dropped)."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=pin,
        drop_last=True, persistent_workers=workers > 0, prefetch_factor=2 if workers else None, generator=g)


def log_skipped(skipped: SkippedImages) -> None:
    counts = skipped.counts()
    if counts:
        why = ", ".join(f"{v} {k}" for k, v in counts.items())
        held = f"; {len(skipped.held_out)} of them held out for the check" if skipped.held_out else ""
        G_LOGGER.warning(f"recovery skipped {sum(counts.values())} unusable images of the "
                         f"{len(skipped.read) + skipped.held_out_read} it read ({why}{held})")
