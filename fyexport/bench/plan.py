"""What ``fyexport bench`` times: its configuration and the targets (artifact x runtime x
mode), including the unpruned baseline's ONNX and engine made for the comparison."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.config import require
from ..core.imgsize import DEFAULT_IMG_SIZE
from ..core.log import G_LOGGER
from ..runners import RUNTIMES


@dataclass
class Target:
    """One thing to time: an artifact on one runtime in one mode.  The unpruned baseline's
    ONNX and engine are exported here (``export`` says which; ``path`` is set once made)."""

    path: str | None
    role: str
    runtime: str
    precision: str | None = None
    mode: str = "eager"
    channels_last: bool = False
    export: str | None = None  # "onnx" | "engine": made from the baseline checkpoint

    def name(self, baseline: str) -> str:
        return f"{baseline} (baseline.{self.export})" if self.export else str(self.path)


@dataclass
class BenchConfig:
    """The bench stage's settings."""

    runtime: str = "auto"
    device: str = "auto"
    batches: tuple = (1,)
    img_size: object = DEFAULT_IMG_SIZE
    warmup: float = 0.2
    duration: float = 3.0
    data: object = None  # data yaml (adds mAP to every row)
    images: object = None  # folder of real images for the end-to-end timing
    images_exclude: tuple = ()  # folders left out of ``images`` (a build's own output)
    max_eval_images: int | None = None
    agreement_images: int = 100  # images for teacher agreement (the val split or --images; 0: none)
    e2e: bool = True
    workdir: object = None  # where the baseline's exports go (default: a temporary folder)

    def validate(self) -> None:
        require(self.duration > 0, "duration", f"must be > 0, got {self.duration}")
        require(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        require(bool(self.batches) and all(b >= 1 for b in self.batches), "batches",
                f"must list positive sizes, got {list(self.batches)}")
        require(self.runtime in RUNTIMES, "runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        require(self.agreement_images >= 0, "agreement_images", f"must be >= 0, got {self.agreement_images}")


BenchOptions = BenchConfig  # the 0.1 name, for one release


def plan_targets(artifacts: list, baseline: str, runtime: str, device: str) -> list:
    from ..runners import artifact_kind

    on_gpu = device.startswith("cuda")

    def torch_variants(path, role):
        if on_gpu:
            return [Target(path, role, "torch", "fp32", "eager"), Target(path, role, "torch", "fp32", "cuda-graph"),
                    Target(path, role, "torch", "fp16", "cuda-graph", channels_last=True)]
        return [Target(path, role, "torch", "fp32", "eager")]

    kinds = {p: artifact_kind(p) for p in [baseline, *artifacts]}
    targets = torch_variants(baseline, "baseline") if runtime in ("auto", "torch") else []
    for p in artifacts:
        k = kinds[p]
        if k == "checkpoint" and runtime in ("auto", "torch"):
            targets += torch_variants(p, "candidate")
        elif k == "onnx" and runtime in ("auto", "onnxruntime"):
            targets.append(Target(p, "candidate", "onnxruntime"))
        elif k == "engine" and runtime in ("auto", "tensorrt"):
            targets.append(Target(p, "candidate", "tensorrt"))
        elif runtime != "auto":
            G_LOGGER.warning(f"{p}: a {k} does not run on the `runtime` {runtime}; skipped")
    if runtime in ("auto", "onnxruntime") and any(kinds[p] == "onnx" for p in artifacts):
        # first: on a CPU the baseline's mAP is then measured on ONNX Runtime (much faster than
        # eager PyTorch) and shared with the PyTorch baseline row, which computes the same thing
        targets.insert(0, Target(None, "baseline", "onnxruntime", export="onnx"))
    if runtime in ("auto", "tensorrt") and any(kinds[p] == "engine" for p in artifacts):
        # before every candidate: the first baseline timed is the teacher of the agreement column
        baselines = sum(t.role == "baseline" for t in targets)
        targets.insert(min(1, baselines), Target(None, "baseline", "tensorrt", export="engine"))
    return targets


def baseline_onnx(weights, workdir, hw) -> Path:
    """The unpruned FP32 baseline exported once to ``workdir/baseline.fp32.onnx`` (dynamic
    batch), shared by the benchmark and the build's accuracy table."""
    out = Path(workdir) / "baseline.fp32.onnx"
    if not out.exists():
        from ..models import load
        from ..onnx.export import export_onnx

        G_LOGGER.info(f"exporting the baseline to {out} for the ONNX Runtime comparison")
        export_onnx(load(weights), out, img_size=hw, dynamic_batch=True)
    return out


def materialise_baseline(t: Target, baseline: str, work: Path, hw, dev: str, max_batch: int = 1) -> str:
    """The target's artifact; for the baseline's ONNX or engine, exported here once."""
    if t.export == "onnx":
        t.path = str(baseline_onnx(baseline, work, hw))
    elif t.export == "engine":
        out = work / "baseline.fp32.engine"
        if not out.exists():
            from ..trt.engine import EngineConfig, build_engine

            build_engine(baseline_onnx(baseline, work, hw), out,
                         EngineConfig(precision="fp32", min_batch=1, opt_batch=max_batch, max_batch=max_batch))
        t.path = str(out)
    return t.path
