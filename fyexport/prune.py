"""Structured channel pruning with Torch-Pruning (DepGraph).

By default the fused deployment model is pruned (what gets deployed is what gets cut);
``fuse=False`` prunes the training graph, with the ImplicitA/ImplicitM tensors declared
as unwrapped parameters pruned on dim 1.  The detection head's output convs keep their
``na*(nc+5)`` outputs (their inputs are pruned with their producers).  Parameters get
``requires_grad`` for tracing: stripped official checkpoints have it off, and DepGraph
then silently prunes nothing.  Channel counts are rounded to ``round_to`` (8 by default)
so tensor-core kernels stay fed.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field

from .core.errors import InputError
from .core.log import G_LOGGER

IMPORTANCES = ("l2", "l1", "lamp", "bn", "taylor")


@dataclass
class PruneResult:
    ratio: float
    importance: str
    round_to: int | None
    global_pruning: bool
    fused: bool
    count_size: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    ignored: list = field(default_factory=list)
    widths: dict = field(default_factory=dict)  # conv name -> [before, after] out channels

    @property
    def macs_ratio(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    @property
    def params_ratio(self) -> float:
        return self.params_before / max(self.params_after, 1)

    def to_dict(self, widths: bool = False) -> dict:
        d = asdict(self)
        if not widths:
            d.pop("widths")
        d["macs_ratio"] = round(self.macs_ratio, 4)
        d["params_ratio"] = round(self.params_ratio, 4)
        return d


def _importance(name: str):
    import torch_pruning as tp

    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise InputError(f"--importance must be one of {', '.join(IMPORTANCES)}, got {name!r}")


def validate(ratio: float, importance: str, fuse: bool, round_to: int | None) -> None:
    if not (0.0 < ratio < 1.0):
        raise InputError(f"--ratio must be strictly between 0 and 1, got {ratio}")
    if importance not in IMPORTANCES:
        raise InputError(f"--importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}")
    if importance == "bn" and fuse:
        raise InputError("--importance bn scores BatchNorm scales, which the fused model no longer has",
                         "Add --no-fuse to prune the training graph")
    if round_to is not None and round_to < 0:
        raise InputError(f"--round-to must be >= 0, got {round_to}")


def prune(model, ratio: float = 0.5, importance: str = "l2", round_to: int | None = 8, global_pruning: bool = False,
          count_size: int = 640, ignore: str | None = None, fuse: bool = True, taylor_batches=None):
    """Return ``(pruned_model, PruneResult)``; ``model`` itself is not modified.

    Args:
        taylor_batches: for ``importance='taylor'``, a callable ``model -> loss`` run before
            scoring (the loss gradient is what Taylor importance reads).
    """
    import torch
    import torch_pruning as tp

    validate(ratio, importance, fuse, round_to)
    m = copy.deepcopy(model).float().cpu().eval()
    if fuse:
        m.fuse()
    macs0, params0 = _deployed_counts(m, count_size)
    for p in m.parameters():
        p.requires_grad_(True)
    head = m.head
    ignored = list(head.m) + list(getattr(head, "m2", []))
    ignored_names = [n for n, mod in m.named_modules() if any(mod is x for x in ignored)]
    if ignore:
        try:
            rx = re.compile(ignore)
        except re.error as e:
            raise InputError(f"--ignore: bad regular expression ({e})")
        extra = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d) and rx.search(n)]
        if not extra:
            G_LOGGER.warning(f"--ignore {ignore!r} matched no conv layer")
        ignored += [mod for _, mod in extra]
        ignored_names += [n for n, _ in extra]
    unwrapped = []
    for mod in m.modules():
        if type(mod).__name__ in ("ImplicitA", "ImplicitM"):
            unwrapped.append((mod.implicit, 1))
    before = {n: mod.out_channels for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    stride = int(max(head.stride.tolist()))
    example = torch.zeros(1, 3, 4 * stride, 4 * stride)
    pruner = tp.pruner.BasePruner(
        m, example, importance=_importance(importance), pruning_ratio=ratio, ignored_layers=ignored,
        round_to=round_to or None, global_pruning=global_pruning, unwrapped_parameters=unwrapped or None,
        iterative_steps=1,
    )
    if importance == "taylor":
        if taylor_batches is None:
            raise InputError("--importance taylor needs data (--data) to compute loss gradients")
        m.zero_grad()
        taylor_batches(m)
    pruner.step()
    m.zero_grad(set_to_none=True)
    for p in m.parameters():
        p.requires_grad_(False)
    m.eval()
    macs1, params1 = _deployed_counts(m, count_size)
    if macs1 >= macs0:
        raise InputError("pruning removed nothing", "Check --ignore; every prunable layer may be excluded")
    after = {n: mod.out_channels for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    res = PruneResult(ratio=ratio, importance=importance, round_to=round_to or None, global_pruning=global_pruning,
                      fused=bool(fuse), count_size=count_size, macs_before=macs0, macs_after=macs1,
                      params_before=params0, params_after=params1, ignored=ignored_names,
                      widths={n: [before[n], after[n]] for n in before if n in after})
    m.meta = dict(m.meta)
    m.meta["prune"] = res.to_dict()
    m.meta.pop("recover", None)
    return m, res


def _deployed_counts(m, count_size) -> tuple[int, int]:
    """MACs and parameters of the deployed (fused) form, whichever form is pruned."""
    from .models.stats import count_macs_params

    return count_macs_params(m if m.is_fused else copy.deepcopy(m).fuse(), count_size)


def render(res: PruneResult) -> None:
    from rich.table import Table

    t = Table(title=f"pruned {res.ratio:g} ({res.importance}, round_to={res.round_to}, "
                    f"{'global' if res.global_pruning else 'local'}, {'fused' if res.fused else 'training graph'})")
    for col in ("", "before", "after", "ratio"):
        t.add_column(col, justify="right")
    t.add_row(f"MACs @{res.count_size}", f"{res.macs_before:,}", f"{res.macs_after:,}", f"{res.macs_ratio:.2f}x")
    t.add_row("params", f"{res.params_before:,}", f"{res.params_after:,}", f"{res.params_ratio:.2f}x")
    from .core.log import table_console

    table_console().print(t)
