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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import __version__
from ..bench.plan import BenchConfig
from ..core.artifacts import cleanup_temporaries, sha256_file, sha256_json, write_json
from ..core.config import ConfigError, require, validate_nested
from ..core.errors import GateError, InputError
from ..core.imgsize import DEFAULT_IMG_SIZE, as_hw, fit_img_size
from ..core.log import G_LOGGER
from ..onnx.export import ExportConfig
from ..prune import PruneConfig
from ..quantize import ARTIFACTS, CalibrationConfig
from ..quantize.calibration import BUILD_METHOD
from ..recover import RecoverConfig
from ..recover.qat import QatConfig
from ..trt.engine import EngineConfig
from .accuracy import ENGINE_ROW, AccuracyRow, GateResult, gate, gate_failure_line, gate_line
from .manifest import MANIFEST, Manifest, StageRecord

AUTO_EXCLUDE_PRUNED = 4  # sensitive scale groups kept in float when pruning (benchmarks/README.md, INT8)
STAGES = ("load", "prune", "recover", "export", "calibrate", "eval", "engine", "bench")
MODEL_ONNX, ENGINE = "model.onnx", "model.engine"
QAT_ONNX = "model.qat.onnx"  # the FP32 ONNX of the weights trained with INT8 in the loop (--qat)
PRUNED, RECOVERED = "pruned.pt", "recovered.pt"


@dataclass
class BuildConfig:
    """The build's settings: its own, and each stage's configuration nested (with the
    build's defaults where they differ from the command's: the calibration method)."""

    weights: str = ""  # the unpruned checkpoint
    calib: str = ""  # folder of sample images: calibration, and recovery's images
    out: str = ""  # the build folder
    data: str | None = None  # data yaml: labelled recovery and mAP
    train_images: str | None = None  # more images for recovery
    img_size: object = DEFAULT_IMG_SIZE  # fitted to the model's stride once the checkpoint is read
    device: str = "auto"
    seed: int = 0
    run_recover: bool = True  # recover after pruning (else the accuracy gate decides)
    run_bench: bool = True
    max_map_drop: float | None = None  # None: pipeline.accuracy.allowance
    force: bool = False  # build the engine even when the accuracy gate fails
    overwrite: bool = False  # replace files of the build's names in a folder fyexport did not make
    eval_images: int | None = None  # accuracy on the first N validation images only
    auto_exclude: int | None = None  # None: AUTO_EXCLUDE_PRUNED when pruning without QAT, else 0
    run_qat: bool | None = None  # train the INT8 models with fake quantization in the loop (None: when the build
    # quantizes a model it prunes and recovers, in `qat.share` of recovery's time; benchmarks/README.md, QAT)
    prune: PruneConfig = field(default_factory=PruneConfig)  # ratio 0: no pruning
    recover: RecoverConfig = field(default_factory=RecoverConfig)  # epochs 0: no recovery
    export: ExportConfig = field(default_factory=ExportConfig)
    calibrate: CalibrationConfig = field(default_factory=lambda: CalibrationConfig(method=BUILD_METHOD))
    qat: QatConfig = field(default_factory=QatConfig)  # with QAT: starts from the calibration above
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(precision="int8"))  # the build's precision
    # the build's quick benchmark: 2 s a measurement; agreement is in the accuracy table already
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(duration=2.0, agreement_images=0))

    @property
    def pruning(self) -> bool:
        return self.prune.ratio > 0

    @property
    def recovers(self) -> bool:
        return self.pruning and self.run_recover and self.recover.epochs > 0

    @property
    def qat_on(self) -> bool:
        """run_qat as given, else on when the build quantizes a model it prunes and recovers
        (not yet with an NMS appended to the graph)."""
        if self.run_qat is not None:
            return self.run_qat
        return self.recovers and self.engine.precision == "int8" and self.export.nms is None

    @property
    def sensitive_groups_in_float(self) -> int:
        """auto_exclude as given, else 4 for a pruned model calibrated without QAT and 0 otherwise
        (quantization-aware training keeps every conv but the detection head in INT8)."""
        if self.auto_exclude is not None:
            return self.auto_exclude
        return AUTO_EXCLUDE_PRUNED if self.pruning and not self.qat_on else 0

    def calibration(self) -> CalibrationConfig:
        return replace(self.calibrate, seed=self.seed, auto_exclude=self.sensitive_groups_in_float)

    def _shared_time(self, n_images: int | None = None) -> tuple[RecoverConfig, QatConfig]:
        """Recovery's and QAT's settings; QAT after recovery takes its share of recovery's time
        (and of its step limit on ``n_images`` training images)."""
        from ..core.machine import resolve_device

        rec, qat = self.recover, self.qat
        if self.qat_on and self.recovers and qat.minutes is None:
            steps = None if n_images is None else rec.step_limit(n_images)
            limit_s, qat = qat.sharing(rec.time_limit_s(resolve_device(self.device)), steps)
            rec = replace(rec, minutes=limit_s / 60)
        return rec, qat

    def recovery(self, hw) -> RecoverConfig:
        return replace(self._shared_time()[0], img_size=hw, seed=self.seed, device=self.device)

    def qat_training(self, hw, n_images: int | None = None) -> QatConfig:
        return replace(self._shared_time(n_images)[1], img_size=hw, seed=self.seed, device=self.device)

    def validate(self) -> None:
        """Every setting checked before any stage runs (a bad value must not surface after
        pruning and recovery)."""
        from ..core.errors import check_file

        check_file(self.weights, "checkpoint", (".pt", ".pth"))
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError("out", f"{self.out} exists and is a file", "Name the build's output folder")
        if not self.overwrite:
            refuse_foreign_files(Path(self.out))
        c = Path(self.calib)
        if not c.is_dir():
            raise InputError(f"{c}: calibration folder not found" if not c.exists() else f"{c}: not a folder",
                             "Give a folder of sample images")
        require(0.0 <= self.prune.ratio < 1.0, "prune.ratio", f"must be in [0, 1), got {self.prune.ratio}")
        require(self.recover.epochs >= 0, "recover.epochs", f"must be >= 0, got {self.recover.epochs}")
        require(self.max_map_drop is None or self.max_map_drop >= 0, "max_map_drop",
                f"must be >= 0, got {self.max_map_drop}")
        require(self.engine.precision != "auto", "engine.precision", "must be int8, fp16 or fp32 in a build")
        require(self.auto_exclude is None or self.auto_exclude >= 0, "auto_exclude",
                f"must be >= 0, got {self.auto_exclude}")
        if self.train_images is not None and not Path(self.train_images).is_dir():
            raise InputError(f"{self.train_images}: not a folder", "Give a folder of images for recovery")
        self.img_size = as_hw(self.img_size)
        require(min(self.img_size) >= 32, "img_size", f"must be >= 32, got {self.img_size}")
        validate_nested(self, ["export", "engine", "bench", "calibrate"] + (["prune"] if self.pruning else [])
                        + (["recover"] if self.recovers else []) + (["qat"] if self.qat_on else []))
        if self.run_qat:
            require(self.engine.precision == "int8", "run_qat", f"trains INT8 models; precision is "
                    f"{self.engine.precision}", "Drop `run_qat` or set `engine.precision` to int8")
            require(self.export.nms is None, "run_qat", "does not yet carry an NMS appended to the graph",
                    "Drop `export.nms` or `run_qat`")
        if self.qat_on:
            require(self.auto_exclude in (None, 0), "auto_exclude", "does not apply to quantization-aware training, "
                    "which keeps every conv but the detection head in INT8",
                    "Name convs to keep in float with `calibrate.exclude`, or turn `run_qat` off")
        if self.pruning:  # a ratio that cannot narrow any layer of this model (0.99) is refused now
            from ..models import load
            from ..prune import check_ratio

            try:
                check_ratio(load(self.weights), self.prune)
            except ConfigError as e:
                raise e.within("prune")
        if self.data is not None:
            from ..data.labels import load_data_yaml

            load_data_yaml(self.data)


def build_files() -> list:
    """Every name a build writes in its folder: its files and the folders it fills."""
    from ..quantize.calibration import STATS_FILE
    from ..quantize.qat_export import QAT_RECORD, QAT_STATE
    from ..recover import state_path
    from ..trt.sidecar import sidecar_path

    return [MANIFEST, MODEL_ONNX, QAT_ONNX, QAT_RECORD, QAT_STATE, ENGINE, sidecar_path(Path(ENGINE)).name, PRUNED,
            RECOVERED, state_path(Path(RECOVERED)).name, *ARTIFACTS.values(), STATS_FILE, ".calib-state.json",
            "eval.json", "bench.json", "bench.png", "bench", ".recover-cache"]


def refuse_foreign_files(out: Path) -> None:
    """A build never replaces a user's files: in a folder that is not a fyexport build's (no
    build manifest), files with the names the build writes stop it before any work."""
    from ..core.artifacts import is_build_folder

    if not out.is_dir() or is_build_folder(out):
        return
    clash = [n for n in build_files() if (out / n).exists() or (out / n).is_symlink()]
    if clash:
        raise InputError(f"{out}: holds {', '.join(clash)}, which this build would replace, and is not a fyexport "
                         f"build folder (no {MANIFEST})", "Give a new or empty folder, or replace them with "
                         "`overwrite`")


@dataclass
class _Flow:
    """What the stages hand each other."""

    base: dict = field(default_factory=dict)
    model_file: str = ""
    model_sha: str = ""
    onnx_sha: str = ""
    engine: Path | None = None
    table: dict | None = None  # the accuracy table: label -> AccuracyRow
    table_key: str = ""  # what the table was measured on (the engine's row joins it)
    gate: GateResult | None = None
    recovered_s: float | None = None  # recovery's time when it stopped at its target (QAT keeps its share of it)


class Build:
    def __init__(self, opts: BuildConfig, command: str | None = None):
        self.o = opts
        self.out = Path(opts.out)
        self.command = command or " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])
        self.t0 = time.time()
        self.flow = _Flow()
        self.hw: tuple = ()  # the input size, fitted to the model's stride by the load stage
        self.split = None  # (training images, HoldOut, DataSpec), made once
        self.imgs = None  # the calibration images (rank 0 selects them)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> dict | None:
        """The build; under torchrun every process recovers and only rank 0 runs the rest
        (the other ranks return None)."""
        from ..core.artifacts import folder_lock, writable_folder
        from ..recover import dist

        self.o.validate()
        self.d = dist.setup(_device(self.o.device)) if dist.launched_by_torchrun() else dist.Dist()
        self.hw = as_hw(self.o.img_size)
        if not self.d.main:
            return self._recovery_rank()
        writable_folder(self.out)  # a read-only place: one line, exit 2
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
            finally:
                dist.teardown(self.d)

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
        passed = f.gate is None or f.gate.passed
        self.manifest.gate = f.gate.to_dict() if f.gate else None
        self.manifest.save("done" if passed else "failed-gate")
        summary = self.summary()
        if not passed:
            raise GateError(gate_failure_line(f.gate, self.out, self.o.qat_on), summary=summary)
        return summary

    def _calibration_images(self):
        from ..data.selection import select_images

        return select_images(self.o.calib, self.o.calibrate.num_images, self.o.seed, exclude=[self.out])

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
        """Validates the checkpoint once (cached by its hash), fits the input size to the
        model's stride (64 for the P6 models) for every later stage, and checks the data's
        classes."""
        o = self.o

        def run():
            from ..models import load
            from ..models.stats import describe_model

            model = load(o.weights).fuse()
            hw = fit_img_size(o.img_size, int(max(model.head.stride.tolist())))
            d = describe_model(model, hw)
            return {"nc": d["nc"], "names": d["names"], "params": d["params"], "gmacs": d["gmacs"],
                    "head": d["source_head"], "img_size": list(hw)}

        base = self.stage("load", {"weights": self.w_sha, "img": list(as_hw(o.img_size)), "fits": "stride"}, {},
                          run).info
        self.hw = tuple(base["img_size"])
        if o.data:
            from ..data.labels import load_data_yaml

            spec = load_data_yaml(o.data)
            if spec.nc != base["nc"]:
                raise InputError(f"{o.data}: has {spec.nc} classes but {o.weights} has {base['nc']}")
        return base

    def prune(self) -> None:
        o = self.o
        if not o.pruning:
            return self.skip("prune", "pruning ratio 0")
        # with recovery, the training graph is pruned (its BatchNorm helps recovery; export fuses it)
        cfg = replace(o.prune, count_size=self.hw, fuse=not o.recovers)

        def run():
            from ..models import load, save
            from ..prune import prune

            pm, res = prune(load(o.weights), cfg)
            save(pm, self.path(PRUNED))
            return res.to_dict()

        rec = self.stage("prune", {"weights": self.w_sha, "ratio": cfg.ratio, "importance": cfg.importance,
                                   "round_to": cfg.round_to, "size": list(self.hw), "fused": cfg.fuse,
                                   "global": cfg.global_pruning, "ignore": cfg.ignore}, {"model": PRUNED}, run)
        self.flow.model_file, self.flow.model_sha = str(self.path(PRUNED)), rec.outputs["model"]["sha256"]

    def heldout(self):
        """(training images, HoldOut): with --data its validation split (training keeps every
        image), else images held out of the calibration folder; recovery never trains on them."""
        from ..recover import holdout_for, training_images

        if self.split is None:
            o = self.o
            paths, spec = training_images(o.calib, o.data, exclude=[self.out],
                                          extra=[o.train_images] if o.train_images else [])
            self.split = (*holdout_for(paths, spec, o.recovery(self.hw), self.flow.base["nc"]), spec)
        return self.split

    def recover(self) -> None:
        """Recovery by default whenever the model is pruned: on the calibration folder, the
        --data train split and --train-images, until the target, the time or the epoch limit."""
        o, f = self.o, self.flow
        if not o.recovers:
            self.skip("recover", "no pruning" if not o.pruning else "recovery off")
            if o.pruning:
                G_LOGGER.warning("the pruned model is not recovered: expect a large accuracy loss; the accuracy "
                                 "gate decides")
            return
        from ..data.selection import file_list_hash
        from ..recover import dist

        paths, holdout, spec = self.heldout()
        pruned, cfg = f.model_file, o.recovery(self.hw)
        key = {"model": f.model_sha, "teacher": self.w_sha, "images": file_list_hash(paths),
               "holdout": file_list_hash(holdout.images) if holdout else None, "data": self.data_sha,
               "config": cfg.key()}
        dist.broadcast_flag(self.d, not self.cached("recover", key))  # the other ranks recover with this one

        def run():
            summary = self._recover(pruned)[1]
            return {k: v for k, v in summary.items() if k not in ("history",)}

        rec = self.stage("recover", key, {"model": RECOVERED}, run)
        f.model_file, f.model_sha = str(self.path(RECOVERED)), rec.outputs["model"]["sha256"]
        f.recovered_s = rec.info["seconds"] if rec.info.get("stopped") == "target" else None  # ended early

    def _recover(self, pruned):
        from ..models import load
        from ..recover import recover

        paths, holdout, spec = self.heldout()
        return recover(load(pruned), load(self.o.weights), paths, self.path(RECOVERED), self.o.recovery(self.hw),
                       data=spec, resume=True, holdout=holdout)

    def _recovery_rank(self) -> None:
        """A torchrun rank other than 0: wait for rank 0 to prune, then recover beside it."""
        from ..models import load
        from ..recover import dist

        o = self.o
        model = load(o.weights)
        self.flow.base = {"nc": model.nc}
        self.hw = fit_img_size(o.img_size, int(max(model.head.stride.tolist())))
        if o.recovers and dist.broadcast_flag(self.d, False):
            self._recover(self.path(PRUNED))
        minutes = dist.wait_for_main(self.d) if o.qat_on else 0.0  # rank 0 exports and calibrates first
        if minutes > 0:
            self._qat_rank(minutes)
        dist.teardown(self.d)
        return None

    def _qat_rank(self, minutes: float) -> None:
        """A torchrun rank other than 0: quantization-aware training beside rank 0 (for rank 0's
        ``minutes``), from the model, ONNX and ranges rank 0 has just written."""
        from ..recover.qat import qat_models

        paths, _, spec = self.heldout()
        cfg = replace(self.o.qat_training(self.hw, len(paths)), minutes=minutes)
        qat_models(self._qat_job(paths, spec), cfg, self.o.calibration(), self.d)

    def export(self) -> None:
        o, f = self.o, self.flow
        model_file, cfg = f.model_file, replace(o.export, img_size=self.hw)

        def run():
            from ..models import load
            from ..onnx.export import export_onnx

            r = export_onnx(load(model_file), self.path(MODEL_ONNX), cfg)
            return {"simplified": r.simplified, "input": r.input_shape, "output": r.output_shape}

        rec = self.stage("export", {"model": f.model_sha, "size": list(self.hw), "batch": cfg.batch,
                                    "dynamic": cfg.dynamic_batch, "simplify": cfg.simplify, "opset": cfg.opset,
                                    "nms": cfg.nms.to_dict() if cfg.nms else None}, {"onnx": MODEL_ONNX}, run)
        f.onnx_sha = rec.outputs["onnx"]["sha256"]

    def calibrate(self) -> None:
        o = self.o
        if o.engine.precision != "int8":
            return self.skip("calibrate", f"precision {o.engine.precision}")
        copts = o.calibration()
        if o.qat_on:
            return self._calibrate_qat(copts)

        def run():
            from ..quantize import calibrate

            r = calibrate(self.path(MODEL_ONNX), self.imgs, self.out, copts)
            return {"method": r.method, "images_used": r.images_used, "images_skipped": r.images_skipped,
                    "seconds": round(r.seconds, 1)}

        key = {"onnx": self.flow.onnx_sha, "images": self.imgs.list_hash, **asdict(copts)}
        self.stage("calibrate", key, dict(ARTIFACTS), run)  # the cache, calib.json and the three Q/DQ flavours

    def _calibrate_qat(self, copts: CalibrationConfig) -> None:
        """The INT8 models trained with fake quantization in the loop: calibrated ranges to start
        from, fine-tuned on recovery's images against the unpruned FP32 teacher (for an unpruned
        model, itself), written through the same Q/DQ writer as calibration."""
        from ..data.selection import file_list_hash
        from ..quantize.qat_export import QAT_RECORD
        from ..recover import dist

        o, f = self.o, self.flow
        paths, _, spec = self.heldout()
        cfg = o.qat_training(self.hw, len(paths))
        if o.qat.minutes is None and f.recovered_s is not None:
            cfg = cfg.within(f.recovered_s)
        key = {"onnx": f.onnx_sha, "model": f.model_sha, "teacher": self.w_sha, "images": self.imgs.list_hash,
               "train": file_list_hash(paths), "data": self.data_sha, **asdict(copts), "qat": asdict(cfg)}

        told = []  # under torchrun the other ranks wait for word whether QAT runs (they train beside this one)

        def run():
            return self._train_qat(copts, cfg, paths, spec, told)

        self.stage("calibrate", key, {**ARTIFACTS, "qat": QAT_RECORD, "qat-onnx": QAT_ONNX}, run)
        if not told:
            dist.wait_for_main(self.d, 0.0)  # no QAT: the other ranks stop waiting

    def _qat_job(self, paths: list, spec):
        from ..models import load
        from ..quantize.qat_export import QAT_STATE
        from ..recover.qat import QatJob

        o = self.o
        model = self.path(RECOVERED) if o.recovers else self.path(PRUNED) if o.pruning else Path(o.weights)
        return QatJob(load(model), load(o.weights), self.path(MODEL_ONNX), self.imgs, paths, self.out,
                      self.path(QAT_ONNX), spec, self.path(QAT_STATE), o.export.batch, o.export.dynamic_batch)

    def _train_qat(self, copts: CalibrationConfig, cfg: QatConfig, paths: list, spec, told: list) -> dict:
        from ..recover import dist
        from ..recover.qat import qat_models

        res, _ = qat_models(self._qat_job(paths, spec), cfg, copts, self.d,
                            ready=lambda minutes: told.append(dist.wait_for_main(self.d, minutes)))
        return {"method": f"qat from {copts.method}", "steps": res.steps, "seconds": round(res.seconds, 1),
                "device": res.device, "world_size": res.world, "start": copts.method}

    def engine(self) -> None:
        from ..core.machine import gpu_facts, tensorrt_usable, tensorrt_version

        o, f = self.o, self.flow
        if f.gate is not None and not f.gate.passed and not o.force:
            return self.skip("engine", "the accuracy gate failed (`force` builds it anyway)")
        if not tensorrt_usable():
            target = ARTIFACTS["trt-fp16"] if o.engine.precision == "int8" else MODEL_ONNX
            self.skip("engine", "TensorRT and a GPU are not available here")
            G_LOGGER.info(f"build the engine on the target GPU with 'fyexport engine {self.path(target)} -o "
                          f"{ENGINE} --precision {o.engine.precision}' (or 'trtexec --onnx={self.path(target)} "
                          f"--stronglyTyped --saveEngine={ENGINE}')")
            return
        from ..trt import import_trt
        from ..trt.engine import build_engine, preferred_qdq_flavour
        from ..trt.sidecar import sidecar_path

        src = self.path(ARTIFACTS[preferred_qdq_flavour(import_trt())] if o.engine.precision == "int8"
                        else MODEL_ONNX)

        def run():
            r = build_engine(src, self.path(ENGINE), o.engine)
            e = r.meta.engine
            return {"int8_layers": e.int8_layers, "layers": e.layers, "tensorrt": e.tensorrt, "gpu": e.gpu,
                    "accuracy": self._engine_accuracy().to_dict()}

        info = self.stage("engine", {"onnx": sha256_file(src), "precision": o.engine.precision,
                                     "trt": tensorrt_version(), "gpu": gpu_facts(with_driver=False).get("gpu"),
                                     "workspace": o.engine.workspace_gib, "table": self.flow.table_key},
                          {"engine": ENGINE, "engine_json": sidecar_path(ENGINE).name}, run).info
        f.engine = self.path(ENGINE)
        f.table[ENGINE_ROW] = AccuracyRow.from_dict(info["accuracy"])  # the gate now judges the engine itself
        f.gate = gate(f.table, o.max_map_drop, o.recover.target if o.recovers else None)
        G_LOGGER.info(gate_line(f.gate) + (" -> passed" if f.gate.passed else " -> FAILED"))

    def _engine_accuracy(self) -> AccuracyRow:
        """The engine's row of the accuracy table, on the table's images, by TensorRT."""
        from .accuracy import UNPRUNED, measure, sources

        _, holdout, spec = self.heldout()
        dev = _device(self.o.device)
        rows = sources({UNPRUNED: self._baseline_onnx(), ENGINE_ROW: self.path(ENGINE)}, {UNPRUNED: self.o.weights},
                       dev)
        return measure(rows, spec, holdout, self.o.eval_images, self.hw)[ENGINE_ROW]

    def _baseline_onnx(self) -> Path:
        from ..bench.plan import baseline_onnx

        return self.path(MODEL_ONNX) if not self.o.pruning else baseline_onnx(self.o.weights, self.out / "bench",
                                                                               self.hw)

    def evaluate(self) -> None:
        """Accuracy of the unpruned FP32, the pruned FP32 and the INT8 models side by side
        (labelled mAP with --data, teacher agreement always), and the gate: the final model
        against the unpruned FP32 model."""
        from .accuracy import BEFORE_QAT, FP32, UNPRUNED, candidates, measure, sources

        o = self.o
        models = candidates(self.out, o.engine.precision, o.pruning, self.path(MODEL_ONNX), ARTIFACTS,
                            self.path(QAT_ONNX) if o.qat_on else None)
        _, holdout, spec = self.heldout()
        dev = _device(o.device)
        trained = {BEFORE_QAT if o.qat_on else FP32: self.flow.model_file} if o.pruning else {}
        checkpoints = {UNPRUNED: o.weights} | trained  # PyTorch runs these on a GPU

        def run():
            paths = {k: (self._baseline_onnx() if v is None else v) for k, v in models.items()}
            rows = measure(sources(paths, checkpoints, dev), spec, holdout, o.eval_images, self.hw)
            table = {k: row.to_dict() for k, row in rows.items()}
            write_json(self.path("eval.json"), table)
            return table

        key = {k: sha256_file(v) if v is not None else self.w_sha for k, v in models.items()} | {
            "data": self.data_sha, "n": o.eval_images, "holdout": [str(p) for p in holdout.images] if holdout else None,
            "device": "cuda" if dev.startswith("cuda") else "cpu"}
        self.flow.table_key = sha256_json(key)
        info = self.stage("eval", key, {"eval": "eval.json"}, run).info
        self.flow.table = {k: AccuracyRow.from_dict(v) for k, v in info.items()}
        self.flow.gate = gate(self.flow.table, o.max_map_drop, o.recover.target if o.recovers else None)

    def bench(self) -> None:
        o, f = self.o, self.flow
        if not o.run_bench:
            return self.skip("bench", "bench off")
        arts = [str(self.path(MODEL_ONNX))]
        if o.engine.precision == "int8":
            arts.append(str(self.path(ARTIFACTS["cpu"])))
        if f.engine:
            arts.append(str(f.engine))

        def run():
            from ..bench import plot, run_bench

            rep = run_bench(arts, o.weights, replace(
                o.bench, runtime="auto" if f.engine else "onnxruntime", device=o.device, batches=(o.export.batch,),
                img_size=self.hw, images=o.calib, images_exclude=(self.out,), workdir=self.out / "bench"))
            write_json(self.path("bench.json"), rep.to_dict())
            plot(rep, self.path("bench.png"))
            return {"rows": [asdict(BenchLine(r.model, r.artifact, r.runtime, r.precision, r.batch, r.speedup,
                                              r.compute_ms["median"])) for r in rep.rows]}

        self.stage("bench", {"artifacts": [sha256_file(a) for a in arts], "baseline": self.w_sha,
                             "size": list(self.hw), "batch": o.export.batch, "duration": o.bench.duration,
                             "images": self.imgs.list_hash}, {"bench": "bench.json", "plot": "bench.png"}, run)

    # -- report ------------------------------------------------------------------------------
    def summary(self) -> "BuildSummary":
        def info(name):
            rec = self.manifest.stages.get(name)
            return rec.info if rec is not None and rec.status != "skipped" else None

        bench = info("bench")
        return BuildSummary(str(self.out), {k: v.status for k, v in self.manifest.stages.items()}, self.flow.base,
                            info("prune"), info("recover"), self.flow.table, self.flow.gate,
                            [BenchLine(**r) for r in bench["rows"]] if bench else None, round(time.time() - self.t0, 1))


def _device(device: str) -> str:
    from ..core.machine import resolve_device

    return resolve_device(device)


def run_build(opts: BuildConfig, command: str | None = None) -> dict | None:
    return Build(opts, command).run()


@dataclass
class DemoConfig:
    """``fyexport demo``: the build on the bundled yolov7-tiny and generated shapes data, sized
    for a few minutes on a 2-core CPU."""

    out: str = "fyexport-demo"
    calib_images: int = 400  # generated images for calibration and recovery
    val_images: int = 100
    prune: float = 0.3
    recover_epochs: int = 100
    recover_minutes: float = 3.5
    device: str = "auto"

    def build_config(self, calib: Path, data: Path) -> BuildConfig:
        from ..models import BUNDLED_CHECKPOINT

        base = BuildConfig()
        return replace(base, weights=str(BUNDLED_CHECKPOINT), calib=str(calib), out=str(Path(self.out) / "build"),
                       data=str(data), device=self.device, prune=replace(base.prune, ratio=self.prune),
                       recover=replace(base.recover, epochs=self.recover_epochs, minutes=self.recover_minutes),
                       calibrate=replace(base.calibrate, num_images=self.calib_images))


@dataclass
class BenchLine:
    """One row of the build's quick benchmark."""

    model: str
    artifact: str
    runtime: str
    precision: str
    batch: int
    speedup: float | None
    median_ms: float


@dataclass
class BuildSummary:
    """What a build did: each stage's status, the records of pruning and recovery, the
    accuracy table, the gate and the quick benchmark (``--json`` prints :meth:`to_dict`)."""

    out: str
    stages: dict  # stage -> done | cached | skipped
    base: dict  # the checkpoint: nc, names, params, gmacs, head, img_size
    prune: dict | None  # the prune stage's record (PruneResult.to_dict)
    recover: dict | None  # the recover stage's record (the Trainer's summary)
    eval: dict | None  # label -> AccuracyRow
    gate: GateResult | None
    bench: list | None  # BenchLine
    seconds: float

    def to_dict(self) -> dict:
        return {"out": self.out, "stages": self.stages, "base": self.base, "prune": self.prune, "recover": self.recover,
                "eval": {k: v.to_dict() for k, v in self.eval.items()} if self.eval else None,
                "gate": self.gate.to_dict() if self.gate else None,
                "bench": {"rows": [asdict(r) for r in self.bench]} if self.bench is not None else None,
                "seconds": self.seconds}


def render_summary(s: BuildSummary) -> None:
    from rich.table import Table

    from ..core.log import table_console

    con = table_console()
    t = Table(title=f"fyexport build -> {s.out}  ({s.seconds:.0f} s)")
    t.add_column("stage")
    t.add_column("status")
    for k, v in s.stages.items():
        t.add_row(k, v)
    con.print(t)
    if s.prune:
        p = s.prune
        con.print(f"pruned {p['ratio']:g}: {p['params_before'] / 1e6:.2f}M -> {p['params_after'] / 1e6:.2f}M params, "
                  f"{p['macs_before'] / 1e9:.2f} -> {p['macs_after'] / 1e9:.2f} GMACs @{p['count_size']} "
                  f"({p['macs_ratio']:.2f}x)")
    if s.recover:
        r = s.recover
        best = r.get("best") or {}
        con.print(f"recovered: {r['iterations']} steps in {r['seconds'] / 60:.1f} min on {r['device']} "
                  f"x{r.get('world_size', 1)}, stopped by {r.get('stopped')}"
                  + (f"; kept {best['kept']:.1%} of the teacher on held-out images" if best else ""))
    if s.eval:
        _render_accuracy(con, s.eval)
    if s.gate:
        con.print(gate_line(s.gate) + " -> " + ("[green]passed[/green]" if s.gate.passed else "[red]FAILED[/red]"))
    if s.bench:
        b = Table(title="speed (median model time, batch as built)")
        for c in ("model", "runtime", "precision", "ms", "speedup vs unpruned FP32"):
            b.add_column(c)
        for r in s.bench:
            speedup = f"{r.speedup:.2f}x" if r.speedup else "-"
            b.add_row(r.artifact, r.runtime, r.precision, f"{r.median_ms:.1f}", speedup)
        con.print(b)


def _render_accuracy(con, table: dict) -> None:
    from rich.table import Table

    labelled = any(v.map is not None for v in table.values())
    e = Table(title="accuracy (images recovery never trained on)")
    for c in ("model", "artifact", *(("mAP@.5", "mAP@.5:.95") if labelled else ()), "teacher agreement"):
        e.add_column(c)
    for k, v in table.items():
        e.add_row(k, v.artifact, *((f"{v.map50:.4f}", f"{v.map:.4f}") if labelled else ()), f"{v.agreement:.4f}")
    con.print(e)
