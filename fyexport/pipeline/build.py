"""``fyexport build``: checkpoint + calibration folder -> deployable artifacts and a report.

Stages, one method each, each calling the library function its command calls: load ->
prune -> recover -> export -> calibrate -> eval (+ the accuracy gate) -> engine -> bench.
Recovery is part of every pruning build; the gate compares the final model with the
unpruned FP32 model, and a failed gate builds no engine (unless ``force``).  A stage's key
hashes its input files and settings; a rerun whose key and output hashes match does no
work, so changing the calibration folder reruns calibration and what follows only.  Every
artifact is written to a temporary name and renamed when complete; ``manifest.json``
(:mod:`fyexport.pipeline.manifest`) lists each one with its sha256, the stage that made it, the
settings and the exact command.  One build at a time per folder (a lock file says which).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..core.artifacts import cleanup_temporaries, sha256_file, sha256_json, write_json
from ..core.errors import GateError, InputError
from ..core.log import G_LOGGER
from ..quantize import ARTIFACTS, CALIBRATION_METHODS, CalibrationOptions
from ..recover import DEFAULT_TARGET, RecoverConfig
from ..trt.engine import PRECISIONS
from .accuracy import gate_failure_line, gate_line
from .manifest import Manifest, StageRecord

AUTO_EXCLUDE_PRUNED = 4  # sensitive scale groups kept in float when pruning (benchmarks/README.md, INT8)
STAGES = ("load", "prune", "recover", "export", "calibrate", "eval", "engine", "bench")
MODEL_ONNX, ENGINE = "model.onnx", "model.engine"
PRUNED, RECOVERED = "pruned.pt", "recovered.pt"


@dataclass
class BuildOptions:
    weights: str
    calib: str
    out: str
    prune: float = 0.5
    recover_epochs: int = 100  # epoch limit (0: no recovery); the target or the time limit usually stops first
    data: str | None = None
    img_size: object = 640  # N or (H, W); normalized to a stride multiple by validate()
    batch: int = 1
    precision: str = "int8"
    method: str = "search"  # entropy per group unless it clearly hurts (quantize/search.py)
    max_map_drop: float | None = None  # None: gate_allowance()
    device: str = "auto"
    num_images: int = 500
    seed: int = 0
    importance: str = "l2"
    round_to: int = 8
    exclude: str | None = None
    recover: bool = True
    recover_batch: int = 16
    recover_lr: float = RecoverConfig.lr
    recover_crop: int | None = RecoverConfig.crop
    recover_minutes: float | None = None  # None: DEFAULT_MINUTES of the device
    recover_images: int | None = None
    recover_target: float = DEFAULT_TARGET
    recover_workers: int | None = None
    recover_cache: str = "auto"
    train_images: str | None = None
    force: bool = False  # build the engine even when the accuracy gate fails
    eval_images: int | None = None
    bench: bool = True
    bench_duration: float = 2.0
    bias_correction: int = 32
    auto_exclude: int | None = None  # None: AUTO_EXCLUDE_PRUNED when pruning, else 0
    workspace_gib: float = 4.0

    @property
    def sensitive_groups_in_float(self) -> int:
        """--auto-exclude as given, else 4 for a pruned model and 0 for an unpruned one."""
        if self.auto_exclude is not None:
            return self.auto_exclude
        return AUTO_EXCLUDE_PRUNED if self.prune > 0 else 0

    def calibration(self) -> CalibrationOptions:
        return CalibrationOptions(num_images=self.num_images, method=self.method, seed=self.seed,
                                  exclude=self.exclude, bias_correction=self.bias_correction,
                                  auto_exclude=self.sensitive_groups_in_float)

    def validate(self) -> None:
        """Every option checked before any stage runs (a bad value must not surface after
        pruning and recovery)."""
        from ..core.errors import check_file
        from ..data.images import normalize_img_size

        check_file(self.weights, "checkpoint", (".pt", ".pth"))
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise InputError(f"{self.out}: exists and is a file", "-o names the build's output folder")
        c = Path(self.calib)
        if not c.is_dir():
            raise InputError(f"{c}: calibration folder not found" if not c.exists() else f"{c}: not a folder",
                             "Give a folder of sample images with --calib")
        if not (0.0 <= self.prune < 1.0):
            raise InputError(f"--prune must be in [0, 1), got {self.prune}")
        if self.recover_epochs < 0:
            raise InputError("--recover-epochs must be >= 0")
        if self.max_map_drop is not None and self.max_map_drop < 0:
            raise InputError(f"--max-map-drop must be >= 0, got {self.max_map_drop}")
        if self.train_images is not None and not Path(self.train_images).is_dir():
            raise InputError(f"{self.train_images}: --train-images must be a folder of images")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be int8, fp16 or fp32, got {self.precision!r}")
        if self.method not in CALIBRATION_METHODS:
            raise InputError(f"--method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}")
        if self.batch < 1:
            raise InputError("--batch must be >= 1")
        self.img_size = normalize_img_size(self.img_size)
        if min(self.img_size) < 32:
            raise InputError("--img-size must be >= 32")
        self.calibration().validate()
        if self.recovers:
            self.recover_config().validate()
        if self.data is not None:
            from ..data.labels import load_data_yaml

            load_data_yaml(self.data)

    @property
    def recovers(self) -> bool:
        return self.prune > 0 and self.recover and self.recover_epochs > 0

    def recover_config(self) -> RecoverConfig:
        from ..recover import default_minutes

        minutes = self.recover_minutes if self.recover_minutes is not None else default_minutes(self.device)
        return RecoverConfig(epochs=self.recover_epochs or 1, img_size=self.img_size, batch=self.recover_batch,
                             lr=self.recover_lr, max_images=self.recover_images, seed=self.seed, device=self.device,
                             crop=self.recover_crop or None, time_budget_s=minutes * 60,
                             target=self.recover_target if self.recover_target < 1 else None,
                             workers=self.recover_workers, cache=self.recover_cache)


@dataclass
class _Flow:
    """What the stages hand each other."""

    base: dict = field(default_factory=dict)
    model_file: str = ""
    model_sha: str = ""
    onnx_sha: str = ""
    engine: Path | None = None
    gate: dict | None = None


class Build:
    def __init__(self, opts: BuildOptions, command: str | None = None):
        self.o = opts
        self.out = Path(opts.out)
        self.command = command or " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])
        self.t0 = time.time()
        self.flow = _Flow()

    # -- running -----------------------------------------------------------------------------
    def run(self) -> dict | None:
        """The build; under torchrun every process recovers and only rank 0 runs the rest
        (the other ranks return None)."""
        from ..core.artifacts import folder_lock
        from ..recover import dist

        self.o.validate()
        self.d = dist.setup(_device(self.o.device)) if dist.launched_by_torchrun() else dist.Dist()
        if not self.d.main:
            return self._recovery_rank()
        self.out.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.out, self.command):
            self.manifest = Manifest(self.out, self.command, asdict(self.o), __version__)
            removed = cleanup_temporaries(self.out)
            if removed:
                G_LOGGER.info(f"removed {removed} temporary file(s) left by an interrupted run")
            try:
                return self._stages()
            except GateError:
                raise
            except KeyboardInterrupt:
                self.manifest.save("interrupted")
                raise
            except BaseException:
                self.manifest.save("failed")
                raise

    def _stages(self) -> dict:
        o, f = self.o, self.flow
        self.w_sha = sha256_file(o.weights)
        self.data_sha = sha256_file(o.data) if o.data else None
        self.imgs = self._calibration_images()
        f.base = self.load()
        f.model_file, f.model_sha = o.weights, self.w_sha
        self.prune()
        self.recover()
        self.export()
        self.calibrate()
        self.evaluate()
        self.engine()
        self.bench()
        passed = f.gate is None or f.gate["passed"]
        self.manifest.gate = f.gate
        self.manifest.save("done" if passed else "failed-gate")
        summary = self.summary()
        if not passed:
            err = GateError(gate_failure_line(f.gate, self.out))
            err.summary = summary  # the report is still worth showing above the one line
            raise err
        return summary

    def _calibration_images(self):
        from ..data.selection import select_images

        return select_images(self.o.calib, self.o.num_images, self.o.seed, exclude=[self.out])

    def stage(self, name: str, key_inputs: dict, outputs: dict, fn) -> StageRecord:
        """Run ``fn()`` unless a previous run with the same key left intact outputs.
        ``outputs`` maps labels to file names (relative to the build folder)."""
        key = sha256_json(key_inputs)
        prev = self.manifest.previous_stage(name)
        label = f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}"
        G_LOGGER.debug(lambda: f"{name} key {key[:12]} of {json.dumps(key_inputs, default=str, sort_keys=True)}")
        if self.cached(name, key_inputs):
            rec = StageRecord(key, "cached", prev["outputs"], 0.0, prev.get("info", {}))
            G_LOGGER.info(f"{label}: cached")
            G_LOGGER.event("stage", stage=name, status="cached")
            self.manifest.record(name, rec)
            return rec
        G_LOGGER.info(f"{label}: " + ("inputs or settings changed, running again" if prev and prev.get("key") != key
                                      else "running"))
        G_LOGGER.event("stage", stage=name, status="running")
        t = time.time()
        info = fn() or {}
        made = {lab: self.out / fname for lab, fname in outputs.items() if (self.out / fname).exists()}
        outs = {lab: {"path": outputs[lab], "sha256": sha256_file(p), "bytes": p.stat().st_size}
                for lab, p in made.items()}
        rec = StageRecord(key, "done", outs, round(time.time() - t, 2), info)
        self.manifest.record(name, rec)
        self.manifest.save()
        G_LOGGER.event("stage", stage=name, status="done", seconds=rec.seconds)
        return rec

    def cached(self, name: str, key_inputs: dict) -> bool:
        prev = self.manifest.previous_stage(name)
        return bool(prev and prev.get("key") == sha256_json(key_inputs) and prev.get("status") in ("done", "cached")
                    and self._intact(prev))

    def _intact(self, rec: dict) -> bool:
        for o in rec.get("outputs", {}).values():
            p = self.out / o["path"]
            if not p.exists() or p.stat().st_size != o["bytes"] or sha256_file(p) != o["sha256"]:
                return False
        return True

    def skip(self, name: str, why: str) -> None:
        G_LOGGER.info(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}: skipped ({why})")
        self.manifest.record(name, StageRecord("", "skipped", {}, 0.0, {"reason": why}))

    def path(self, name: str) -> Path:
        return self.out / name

    # -- the stages --------------------------------------------------------------------------
    def load(self) -> dict:
        """Validates the checkpoint once (cached by its hash) and checks the data's classes."""
        o = self.o

        def run():
            from ..models import load
            from ..models.stats import describe_model

            d = describe_model(load(o.weights).fuse(), o.img_size)
            return {"nc": d["nc"], "names": d["names"], "params": d["params"], "gmacs": d["gmacs"],
                    "head": d["source_head"]}

        base = self.stage("load", {"weights": self.w_sha, "img": list(o.img_size)}, {}, run).info
        if o.data:
            from ..data.labels import load_data_yaml

            spec = load_data_yaml(o.data)
            if spec.nc != base["nc"]:
                raise InputError(f"{o.data}: has {spec.nc} classes but {o.weights} has {base['nc']}")
        return base

    def prune(self) -> None:
        o = self.o
        if o.prune <= 0:
            return self.skip("prune", "--prune 0")

        def run():
            from ..models import load, save
            from ..prune import prune

            # with recovery, the training graph is pruned: its BatchNorm re-estimates statistics for
            # the new widths and makes recovery much faster (benchmarks/README.md); export fuses it
            pm, res = prune(load(o.weights), o.prune, o.importance, o.round_to or None, count_size=o.img_size,
                            fuse=not o.recovers)
            save(pm, self.path(PRUNED))
            return res.to_dict()

        rec = self.stage("prune", {"weights": self.w_sha, "ratio": o.prune, "importance": o.importance,
                                   "round_to": o.round_to, "size": list(o.img_size), "fused": not o.recovers},
                         {"model": PRUNED}, run)
        self.flow.model_file, self.flow.model_sha = str(self.path(PRUNED)), rec.outputs["model"]["sha256"]

    def heldout(self):
        """(training images, HoldOut): with --data its validation split (training keeps every
        image), else images held out of the calibration folder; recovery never trains on them."""
        from ..recover import holdout_for, training_images

        if not hasattr(self, "_split"):
            o = self.o
            paths, spec = training_images(o.calib, o.data, exclude=[self.out],
                                          extra=[o.train_images] if o.train_images else [])
            cfg = o.recover_config()
            self._split = (*holdout_for(paths, spec, cfg, self.flow.base["nc"]), spec)
        return self._split

    def recover(self) -> None:
        """Recovery by default whenever the model is pruned: on the calibration folder, the
        --data train split and --train-images, until the target, the time or the epoch limit."""
        o, f = self.o, self.flow
        if not o.recovers:
            self.skip("recover", "no pruning" if not o.prune else "--no-recover")
            if o.prune > 0:
                G_LOGGER.warning("the pruned model is not recovered: expect a large accuracy loss; the accuracy "
                                 "gate decides")
            return
        from ..data.selection import file_list_hash
        from ..recover import dist

        paths, holdout, spec = self.heldout()
        pruned, cfg = f.model_file, o.recover_config()
        key = {"model": f.model_sha, "teacher": self.w_sha, "images": file_list_hash(paths),
               "holdout": file_list_hash(holdout.images) if holdout else None, "data": self.data_sha,
               "config": cfg.key()}
        dist.broadcast_flag(self.d, not self.cached("recover", key))  # the other ranks recover with this one

        def run():
            summary = self._recover(pruned)[1]
            return {k: v for k, v in summary.items() if k not in ("history",)}

        rec = self.stage("recover", key, {"model": RECOVERED}, run)
        f.model_file, f.model_sha = str(self.path(RECOVERED)), rec.outputs["model"]["sha256"]

    def _recover(self, pruned):
        from ..models import load
        from ..recover import recover

        paths, holdout, spec = self.heldout()
        return recover(load(pruned), load(self.o.weights), paths, self.path(RECOVERED), self.o.recover_config(),
                       data=spec, resume=True, holdout=holdout)

    def _recovery_rank(self) -> None:
        """A torchrun rank other than 0: wait for rank 0 to prune, then recover beside it."""
        from ..models import load
        from ..recover import dist

        o = self.o
        self.flow.base = {"nc": load(o.weights).nc}
        if o.recovers and dist.broadcast_flag(self.d, False):
            self._recover(self.path(PRUNED))
        dist.teardown(self.d)
        return None

    def export(self) -> None:
        o, f = self.o, self.flow
        model_file = f.model_file

        def run():
            from ..models import load
            from ..onnx.export import export_onnx

            r = export_onnx(load(model_file), self.path(MODEL_ONNX), o.img_size, o.batch)
            return {"simplified": r.simplified, "input": r.input_shape, "output": r.output_shape}

        rec = self.stage("export", {"model": f.model_sha, "size": list(o.img_size), "batch": o.batch},
                         {"onnx": MODEL_ONNX}, run)
        f.onnx_sha = rec.outputs["onnx"]["sha256"]

    def calibrate(self) -> None:
        o = self.o
        if o.precision != "int8":
            return self.skip("calibrate", f"--precision {o.precision}")
        copts = o.calibration()

        def run():
            from ..quantize import calibrate

            r = calibrate(self.path(MODEL_ONNX), self.imgs, self.out, copts)
            return {"method": r.method, "images_used": r.images_used, "images_skipped": r.images_skipped,
                    "seconds": round(r.seconds, 1)}

        key = {"onnx": self.flow.onnx_sha, "images": self.imgs.list_hash, **asdict(copts)}
        outputs = {k: ARTIFACTS[k] for k in ("cache", "json", "trt", "trt-fp16", "cpu")}
        self.stage("calibrate", key, outputs, run)

    def engine(self) -> None:
        from ..core.machine import gpu_facts, tensorrt_usable, tensorrt_version

        o, f = self.o, self.flow
        if f.gate is not None and not f.gate["passed"] and not o.force:
            return self.skip("engine", "the accuracy gate failed (--force builds it anyway)")
        if not tensorrt_usable():
            target = ARTIFACTS["trt-fp16"] if o.precision == "int8" else MODEL_ONNX
            self.skip("engine", "TensorRT and a GPU are not available here")
            G_LOGGER.info(f"build the engine on the target GPU with: fyexport engine {self.path(target)} -o "
                          f"{ENGINE} --precision {o.precision}   (or: trtexec --onnx={self.path(target)} "
                          f"--stronglyTyped --saveEngine={ENGINE})")
            return
        from ..trt import import_trt
        from ..trt.engine import BuildConfig, build_engine, preferred_qdq_flavour
        from ..trt.sidecar import sidecar_path

        src = self.path(ARTIFACTS[preferred_qdq_flavour(import_trt())] if o.precision == "int8" else MODEL_ONNX)

        def run():
            r = build_engine(src, self.path(ENGINE), BuildConfig(precision=o.precision, workspace_gib=o.workspace_gib))
            return {k: r.meta.get(k) for k in ("int8_layers", "layers", "tensorrt", "gpu")}

        self.stage("engine", {"onnx": sha256_file(src), "precision": o.precision, "trt": tensorrt_version(),
                              "gpu": gpu_facts(with_driver=False).get("gpu")},
                   {"engine": ENGINE, "engine_json": sidecar_path(ENGINE).name}, run)
        f.engine = self.path(ENGINE)

    def evaluate(self) -> None:
        """Accuracy of the unpruned FP32, the pruned FP32 and the INT8 models side by side
        (labelled mAP with --data, teacher agreement always), and the gate: the final model
        against the unpruned FP32 model."""
        from .accuracy import candidates, gate, measure

        o = self.o
        models = candidates(self.out, o.precision, o.prune > 0, self.path(MODEL_ONNX), ARTIFACTS)
        _, holdout, spec = self.heldout()
        hw = o.img_size

        def run():
            from ..bench.plan import baseline_onnx

            paths = {k: (baseline_onnx(o.weights, self.out / "bench", hw) if v is None else v)
                     for k, v in models.items()}
            res = measure(paths, spec, holdout, o.eval_images)
            write_json(self.path("eval.json"), res)
            return res

        key = {k: sha256_file(v) if v is not None else self.w_sha for k, v in models.items()} | {
            "data": self.data_sha, "n": o.eval_images, "holdout": [str(p) for p in holdout.images] if holdout else None}
        ev = self.stage("eval", key, {"eval": "eval.json"}, run).info
        self.flow.gate = gate(ev, o.max_map_drop, o.recover_target if o.recovers else None)

    def bench(self) -> None:
        o, f = self.o, self.flow
        if not o.bench:
            return self.skip("bench", "--no-bench")
        arts = [str(self.path(MODEL_ONNX))]
        if o.precision == "int8":
            arts.append(str(self.path(ARTIFACTS["cpu"])))
        if f.engine:
            arts.append(str(f.engine))

        def run():
            from ..bench.plan import BenchOptions
            from ..bench.report import plot
            from ..bench.run import run_bench

            rep = run_bench(arts, o.weights, BenchOptions(
                runtime="auto" if f.engine else "onnxruntime", device=o.device, batches=(o.batch,),
                img_size=o.img_size, warmup=0.2, duration=o.bench_duration, images=o.calib, images_exclude=(self.out,),
                workdir=self.out / "bench",
                agreement_images=0))  # the build's accuracy table measures agreement on held-out images
            write_json(self.path("bench.json"), rep)
            plot(rep, self.path("bench.png"))
            return {"rows": [{k: r[k] for k in ("model", "runtime", "precision", "batch", "speedup")}
                             | {"median_ms": r["compute_ms"]["median"]} for r in rep["rows"]]}

        self.stage("bench", {"artifacts": [sha256_file(a) for a in arts], "baseline": self.w_sha,
                             "size": list(o.img_size), "batch": o.batch, "duration": o.bench_duration,
                             "images": self.imgs.list_hash}, {"bench": "bench.json", "plot": "bench.png"}, run)

    # -- report ------------------------------------------------------------------------------
    def summary(self) -> dict:
        def info(name):
            rec = self.manifest.stages.get(name)
            return rec.info if rec is not None and rec.status != "skipped" else None

        return {"out": str(self.out), "stages": {k: v.status for k, v in self.manifest.stages.items()},
                "base": self.flow.base, "prune": info("prune"), "recover": info("recover"), "eval": info("eval"),
                "gate": self.flow.gate, "bench": info("bench"), "seconds": round(time.time() - self.t0, 1)}


def _device(device: str) -> str:
    from ..core.machine import resolve_device

    return resolve_device(device)


def run_build(opts: BuildOptions, command: str | None = None) -> dict | None:
    return Build(opts, command).run()


def demo_options(out: Path, calib: Path, data: Path, num_images: int, prune: float = 0.3, recover_epochs: int = 100,
                 recover_minutes: float = 3.5, device: str = "auto") -> BuildOptions:
    """``fyexport demo``: the build on the bundled yolov7-tiny and generated shapes data, sized
    for a few minutes on a 2-core CPU (recovery on 320x320 crops, at most ``recover_minutes``)."""
    from ..models import BUNDLED_CHECKPOINT

    return BuildOptions(weights=str(BUNDLED_CHECKPOINT), calib=str(calib), out=str(out), prune=prune, data=str(data),
                        recover_epochs=recover_epochs, img_size=640, batch=1, precision="int8", method="search",
                        device=device, num_images=num_images, recover_batch=16, recover_crop=320,
                        recover_minutes=recover_minutes, bench_duration=2.0)


def render_summary(s: dict) -> None:
    from rich.table import Table

    from ..core.log import table_console

    con = table_console()
    t = Table(title=f"fyexport build -> {s['out']}  ({s['seconds']:.0f} s)")
    t.add_column("stage")
    t.add_column("status")
    for k, v in s["stages"].items():
        t.add_row(k, v)
    con.print(t)
    if s.get("prune"):
        p = s["prune"]
        con.print(f"pruned {p['ratio']:g}: {p['params_before'] / 1e6:.2f}M -> {p['params_after'] / 1e6:.2f}M params, "
                  f"{p['macs_before'] / 1e9:.2f} -> {p['macs_after'] / 1e9:.2f} GMACs @{p['count_size']} "
                  f"({p['macs_ratio']:.2f}x)")
    if s.get("recover"):
        r = s["recover"]
        best = r.get("best") or {}
        con.print(f"recovered: {r['iterations']} steps in {r['seconds'] / 60:.1f} min on {r['device']} "
                  f"x{r.get('world_size', 1)}, stopped by {r.get('stopped')}"
                  + (f"; kept {best['kept']:.1%} of the teacher on held-out images" if best else ""))
    if s.get("eval"):
        labelled = any("map" in v for v in s["eval"].values())
        e = Table(title="accuracy (images recovery never trained on)")
        for c in ("model", "artifact", *(("mAP@.5", "mAP@.5:.95") if labelled else ()), "teacher agreement"):
            e.add_column(c)
        for k, v in s["eval"].items():
            e.add_row(k, v["artifact"], *((f"{v['map50']:.4f}", f"{v['map']:.4f}") if labelled else ()),
                      f"{v['agreement']:.4f}")
        con.print(e)
    if s.get("gate"):
        g = s["gate"]
        con.print(gate_line(g) + " -> " + ("[green]passed[/green]" if g["passed"] else "[red]FAILED[/red]"))
    if s.get("bench"):
        b = Table(title="speed (median model time, batch as built)")
        for c in ("model", "runtime", "precision", "ms", "speedup vs unpruned FP32"):
            b.add_column(c)
        for r in s["bench"]["rows"]:
            b.add_row(Path(r["model"].split(" (")[0]).name, r["runtime"], r["precision"], f"{r['median_ms']:.1f}",
                      f"{r['speedup']:.2f}x" if r.get("speedup") else "-")
        con.print(b)
