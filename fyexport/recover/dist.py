"""torch.distributed for recovery, started by torchrun (one process per device).

``torchrun --nproc-per-node N -m fyexport recover ...`` (or ``... build ...``) sets RANK,
LOCAL_RANK, WORLD_SIZE and the rendezvous address; :func:`setup` joins the group with NCCL
on GPUs and gloo on CPUs.  Without those variables everything runs in one process.  A rank
that cannot reach the rendezvous fails after ``FYEXPORT_DIST_TIMEOUT`` seconds (default
120) with one line.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from ..core.errors import FyexportError

DEFAULT_TIMEOUT_S = 120
WAIT_TIMEOUT_S = 6 * 3600  # how long the other ranks wait for rank 0's work between two trainings
_WAIT_GROUP = None  # a gloo group for those waits (the default group's timeout is the rendezvous's)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns: bool = False  # this setup joined the group, its teardown leaves it (a build keeps one group for all)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> Dist:
    """Join the process group torchrun started (if any); ``device`` is "cpu" or "cuda[:n]"."""
    global _WAIT_GROUP
    if not launched_by_torchrun():
        return Dist(device=device)
    import torch
    import torch.distributed as td

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if torch.cuda.device_count() <= local:
            raise FyexportError(f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs here",
                                "Start at most one process per GPU ('torchrun --nproc-per-node N')")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    owns = not td.is_initialized()
    if owns:
        timeout = datetime.timedelta(seconds=float(os.environ.get("FYEXPORT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        from ..core.log import native_output_silenced

        try:
            with native_output_silenced():  # c10d logs every failed connection attempt on fd 2
                td.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timeout)
        except Exception as e:  # noqa: BLE001 - rendezvous failures come as several types
            addr = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            raise FyexportError(f"rank {rank} of {world}: could not join the process group at {addr} within "
                                f"{timeout.total_seconds():.0f} s ({type(e).__name__})",
                                "Check that every machine runs the same torchrun command and can reach that address")
        _WAIT_GROUP = td.new_group(backend="gloo", timeout=datetime.timedelta(seconds=WAIT_TIMEOUT_S))
    return Dist(rank, world, local, device, owns)


def barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as td

        td.barrier()


def broadcast_flag(d: Dist, value: bool) -> bool:
    """Rank 0's ``value`` on every rank (stopping decisions are made on rank 0)."""
    if not d.active:
        return value
    import torch
    import torch.distributed as td

    t = torch.tensor([1.0 if value else 0.0], device=d.device if d.device.startswith("cuda") else "cpu")
    td.broadcast(t, 0)
    return bool(t.item() > 0.5)


def broadcast_value(d: Dist, value: float, group=None) -> float:
    """Rank 0's ``value`` on every rank (over ``group``, a gloo group: on the CPU)."""
    if not d.active:
        return value
    import torch
    import torch.distributed as td

    on_gpu = group is None and d.device.startswith("cuda")
    t = torch.tensor([float(value)], dtype=torch.float64, device=d.device if on_gpu else "cpu")
    td.broadcast(t, 0, group=group)
    return float(t.item())


def broadcast_module(d: Dist, module) -> None:
    """Rank 0's parameters and buffers on every rank (after an initialisation made on each)."""
    if not d.active:
        return
    import torch.distributed as td

    for t in module.state_dict().values():
        td.broadcast(t, 0)


def rank_mean(d: Dist):
    """A function: a tensor -> its mean over the ranks (identity in one process)."""
    if not d.active:
        return lambda t: t

    def mean(t):
        import torch.distributed as td

        t = t.clone()
        td.all_reduce(t)
        return t / d.world

    return mean


def wait_for_main(d: Dist, value: float = 0.0) -> float:
    """Rank 0's ``value`` on every rank, waiting as long as rank 0 works alone (export and
    calibration between recovery and quantization-aware training) without the group timing out."""
    return broadcast_value(d, value, group=_WAIT_GROUP)


def teardown(d: Dist) -> None:
    """Leave the group if ``d``'s setup joined it."""
    global _WAIT_GROUP
    if d.active and d.owns:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()
        _WAIT_GROUP = None
