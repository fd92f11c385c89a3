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
import math
import re
from dataclasses import asdict, dataclass, field

from .core.config import ConfigError, require
from .core.errors import InputError
from .core.imgsize import DEFAULT_IMG_SIZE
from .core.log import G_LOGGER

IMPORTANCES = ("l2", "l1", "lamp", "bn", "taylor")


@dataclass
class PruneConfig:
    """The prune stage's settings."""

    ratio: float = 0.5  # channel pruning ratio, in (0, 1)
    importance: str = "l2"
    round_to: int = 8  # channel counts rounded to a multiple of this (0: no rounding)
    global_pruning: bool = False
    count_size: object = DEFAULT_IMG_SIZE  # input size the MACs are counted at
    ignore: str | None = None  # regex of conv names left unpruned (the head's output convs always are)
    fuse: bool = True  # prune the fused deployment graph (False: the training graph)

    def validate(self) -> None:
        require(0.0 < self.ratio < 1.0, "ratio", f"must be strictly between 0 and 1, got {self.ratio}")
        require(self.importance in IMPORTANCES, "importance",
                f"must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        require(not (self.importance == "bn" and self.fuse), "importance",
                "bn scores BatchNorm scales, which the fused model no longer has",
                "Prune the training graph instead (fuse off: --no-fuse)")
        require(self.round_to >= 0, "round_to", f"must be >= 0, got {self.round_to}")
        if self.ignore:
            try:
                re.compile(self.ignore)
            except re.error as e:
                raise ConfigError("ignore", f"is not a regular expression ({e})")


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
    raise ConfigError("importance", f"must be one of {', '.join(IMPORTANCES)}, got {name!r}")


def prune(model, cfg: PruneConfig | None = None, taylor_batches=None):
    """Return ``(pruned_model, PruneResult)``; ``model`` itself is not modified.

    Args:
        taylor_batches: for ``importance='taylor'``, a callable ``model -> loss`` run before
            scoring (the loss gradient is what Taylor importance reads).
    """
    import torch
    import torch_pruning as tp

    cfg = cfg or PruneConfig()
    cfg.validate()
    ratio, importance, round_to, fuse, count_size = cfg.ratio, cfg.importance, cfg.round_to, cfg.fuse, cfg.count_size
    global_pruning = cfg.global_pruning
    m = copy.deepcopy(model).float().cpu().eval()
    if fuse:
        m.fuse()
    macs0, params0 = _deployed_counts(m, count_size)
    for p in m.parameters():
        p.requires_grad_(True)
    head = m.head
    ignored, ignored_names = _ignored(m, cfg, warn=True)
    _check_widths(m, cfg, ignored)
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
            raise ConfigError("importance", "taylor needs labelled data to compute loss gradients",
                              "Give a labelled data yaml")
        m.zero_grad()
        taylor_batches(m)
    pruner.step()
    m.zero_grad(set_to_none=True)
    for p in m.parameters():
        p.requires_grad_(False)
    m.eval()
    macs1, params1 = _deployed_counts(m, count_size)
    if macs1 >= macs0:  # what _check_widths cannot foresee (global pruning, coupled layers)
        raise InputError(f"pruning {ratio:g} removed nothing: Torch-Pruning found no layer it could narrow"
                         + (f" (`ignore` {cfg.ignore!r} leaves {len(ignored)} layers whole)" if cfg.ignore else ""),
                         "Try a lower `ratio`" + (" or a narrower `ignore`" if cfg.ignore else ""))
    after = {n: mod.out_channels for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    res = PruneResult(ratio=ratio, importance=importance, round_to=round_to or None, global_pruning=global_pruning,
                      fused=bool(fuse), count_size=count_size, macs_before=macs0, macs_after=macs1,
                      params_before=params0, params_after=params1, ignored=ignored_names,
                      widths={n: [before[n], after[n]] for n in before if n in after})
    m.meta = m.meta.with_(prune=res.to_dict()).without("recover")
    return m, res


def _ignored(m, cfg: PruneConfig, warn: bool = False) -> tuple[list, list]:
    """(modules, names) left unpruned: the head's output convs and the convs ``ignore`` matches."""
    import torch

    head = m.head
    ignored = list(head.m) + list(getattr(head, "m2", []))
    names = [n for n, mod in m.named_modules() if any(mod is x for x in ignored)]
    if cfg.ignore:
        rx = re.compile(cfg.ignore)
        extra = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d) and rx.search(n)]
        if not extra and warn:
            G_LOGGER.warning(f"ignore {cfg.ignore!r} matched no conv layer")
        ignored += [mod for _, mod in extra]
        names += [n for n, _ in extra]
    return ignored, names


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """The out channels Torch-Pruning keeps of a layer pruned locally at ``ratio``:
    ``int(channels * (1 - ratio))`` rounded down to a multiple of ``round_to``.  At 0 it
    leaves the layer whole instead (a layer is never emptied)."""
    kept = int(channels * (1 - ratio))
    return kept - kept % round_to if round_to else kept


def _check_widths(m, cfg: PruneConfig, ignored: list) -> None:
    """Refuse a ``ratio`` at which no layer can be narrowed, naming why and the highest ratio
    that prunes; warn when it leaves some layers whole (a higher ratio can then prune less:
    0.97 leaves the 32- to 256-channel layers of yolov7-tiny whole, 0.9 narrows them)."""
    import torch

    widths = [mod.out_channels for mod in m.modules()
              if isinstance(mod, torch.nn.Conv2d) and not any(mod is x for x in ignored) and mod.out_channels > 1]
    if not widths:
        raise ConfigError("ignore", "leaves no conv layer to prune")
    if cfg.global_pruning:
        return  # one threshold over every layer: _prune's own check tells
    k = max(cfg.round_to, 1)
    whole = [c for c in widths if kept_channels(c, cfg.ratio, cfg.round_to) == 0]
    if len(whole) == len(widths):
        c = max(widths)
        top = math.floor((1 - k / c) * 1000) / 1000
        kept = int(c * (1 - cfg.ratio))
        raise ConfigError("ratio", f"{cfg.ratio:g} prunes nothing: the widest layer ({c} channels) would keep "
                          + (f"{kept}, fewer than `round_to` ({k}), and every other layer fewer still" if k > 1
                             else "no channel, nor would any other")
                          + "; Torch-Pruning leaves such a layer whole rather than empty it",
                          f"Use a ratio of at most {top:g}" + (" or a smaller `round_to`" if k > 1 else ""))
    if whole:
        G_LOGGER.warning(f"ratio {cfg.ratio:g} leaves {len(whole)} of {len(widths)} conv layers whole: they would keep "
                         + (f"fewer than round_to = {k} channels" if k > 1 else "no channel")
                         + ", and a layer is never emptied (so a higher ratio can prune less)")


def check_ratio(model, cfg: PruneConfig) -> None:
    """:func:`prune`'s refusal of a ratio that cannot prune ``model`` (a :class:`ConfigError`),
    without pruning: for a caller that must refuse before any work."""
    _check_widths(model, cfg, _ignored(model, cfg)[0])


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
