"""``fyexport build``: checkpoint + calibration folder -> deployable artifacts and a report.

Stages (each in its own module; this one only sequences them, caches them and keeps the
manifest): load -> prune -> recover -> export -> calibrate -> engine -> eval (+ mAP gate)
-> bench.  A stage's key hashes its input files and settings; a rerun whose key and output
hashes match does no work, so changing the calibration folder reruns calibration and what
follows only.  Every artifact is written to a temporary name and renamed when complete,
and ``manifest.json`` lists each one with its sha256, the stage that made it, the settings
and the exact command.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .artifacts import cleanup_temporaries, read_json, sha256_file, sha256_json, write_json
from .errors import GateError, InputError
from .log import G_LOGGER

MANIFEST = "manifest.json"


AUTO_EXCLUDE_PRUNED = 4


@dataclass
class BuildOptions:
    weights: str
    calib: str
    out: str
    prune: float = 0.5
    recover_epochs: int = 0
    data: str | None = None
    img_size: int = 640
    batch: int = 1
    precision: str = "int8"
    method: str = "search"  # entropy per group unless it clearly hurts (quantize/search.py)
    max_map_drop: float = 1.0
    device: str = "auto"
    num_images: int = 500
    seed: int = 0
    importance: str = "l2"
    round_to: int = 8
    exclude: str | None = None
    recover_batch: int = 16
    recover_lr: float = 1e-3
    recover_crop: int | None = None
    recover_minutes: float | None = None
    recover_images: int | None = None
    eval_images: int | None = None
    bench: bool = True
    bench_duration: float = 2.0
    bias_correction: int = 32
    auto_exclude: int | None = None  # None: AUTO_EXCLUDE_PRUNED when pruning, else 0
    workspace_gib: float = 4.0

    @property
    def sensitive_groups_in_float(self) -> int:
        """--auto-exclude as given, else 4 for a pruned model and 0 for an unpruned one: plain
        entropy calibration cost the 80-min pruned+recovered yolov7-shapes 2.0 / 1.8 points of
        mAP@.5:.95 (U8S8 / S8S8), and keeping its four most sensitive scale groups in float
        brought that to 0.4 / 0.15 (--method search: 0.26 / 0.08)."""
        if self.auto_exclude is not None:
            return self.auto_exclude
        return AUTO_EXCLUDE_PRUNED if self.prune > 0 else 0

    def validate(self) -> None:
        from .errors import check_file

        check_file(self.weights, "checkpoint", (".pt", ".pth"))
        c = Path(self.calib)
        if not c.is_dir():
            raise InputError(f"{c}: calibration folder not found" if not c.exists() else f"{c}: not a folder",
                             "Give a folder of sample images with --calib")
        if not (0.0 <= self.prune < 1.0):
            raise InputError(f"--prune must be in [0, 1), got {self.prune}")
        if self.recover_epochs < 0:
            raise InputError("--recover-epochs must be >= 0")
        if self.recover_epochs and not self.prune:
            raise InputError("--recover-epochs needs --prune > 0 (there is nothing to recover)")
        if self.precision not in ("int8", "fp16", "fp32"):
            raise InputError(f"--precision must be int8, fp16 or fp32, got {self.precision!r}")
        if self.batch < 1 or self.img_size < 32:
            raise InputError("--batch must be >= 1 and --img-size >= 32")
        if self.recover_epochs:
            from .recover import RecoverConfig

            RecoverConfig(epochs=self.recover_epochs, img_size=self.img_size, batch=self.recover_batch,
                          crop=self.recover_crop).validate()
        if self.data is not None:
            from .data import load_data_yaml

            load_data_yaml(self.data)


@dataclass
class StageRecord:
    key: str
    status: str
    outputs: dict = field(default_factory=dict)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


class Build:
    def __init__(self, opts: BuildOptions, command: str | None = None):
        self.o = opts
        self.out = Path(opts.out)
        self.command = command or " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])
        self.manifest = self._load_manifest()
        self.stages: dict[str, StageRecord] = {}
        self.t0 = time.time()

    # -- manifest ------------------------------------------------------------------
    def _load_manifest(self) -> dict:
        p = self.out / MANIFEST
        if p.exists():
            try:
                return json.loads(p.read_text())
            except ValueError:
                G_LOGGER.warning(f"{p}: unreadable manifest; every stage reruns")
        return {}

    def save_manifest(self, status: str = "running") -> None:
        artifacts = []
        for name, rec in self.stages.items():
            for label, o in rec.outputs.items():
                artifacts.append({"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"], "stage": name,
                                  "artifact": label})
        doc = {"fyexport": __version__, "status": status, "command": self.command,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": asdict(self.o),
               "stages": {k: asdict(v) for k, v in self.stages.items()}, "artifacts": artifacts}
        write_json(self.out / MANIFEST, doc)

    # -- caching ---------------------------------------------------------------------
    def _outputs_intact(self, rec: dict) -> bool:
        for o in rec.get("outputs", {}).values():
            p = self.out / o["path"]
            if not p.exists() or p.stat().st_size != o["bytes"] or sha256_file(p) != o["sha256"]:
                return False
        return True

    def stage(self, name: str, key_inputs: dict, outputs: dict, fn, n: int, total: int) -> StageRecord:
        """Run ``fn()`` unless a previous run with the same key left intact outputs.
        ``outputs`` maps labels to file names (relative to the build folder)."""
        key = sha256_json(key_inputs)
        prev = (self.manifest.get("stages") or {}).get(name)
        label = f"[{n}/{total}] {name}"
        if prev and prev.get("key") == key and prev.get("status") in ("done", "cached") and self._outputs_intact(prev):
            rec = StageRecord(key, "cached", prev["outputs"], 0.0, prev.get("info", {}))
            G_LOGGER.info(f"{label}: cached")
            G_LOGGER.event("stage", stage=name, status="cached")
            self.stages[name] = rec
            return rec
        if prev and prev.get("key") != key:
            G_LOGGER.info(f"{label}: inputs or settings changed, running again")
        else:
            G_LOGGER.info(f"{label}: running")
        G_LOGGER.event("stage", stage=name, status="running")
        t = time.time()
        info = fn() or {}
        outs = {}
        for lab, fname in outputs.items():
            p = self.out / fname
            if p.exists():
                outs[lab] = {"path": fname, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        rec = StageRecord(key, "done", outs, round(time.time() - t, 2), info)
        self.stages[name] = rec
        self.save_manifest()
        G_LOGGER.event("stage", stage=name, status="done", seconds=rec.seconds)
        return rec

    def skip(self, name: str, why: str, n: int, total: int) -> None:
        G_LOGGER.info(f"[{n}/{total}] {name}: skipped ({why})")
        self.stages[name] = StageRecord("", "skipped", {}, 0.0, {"reason": why})

    def path(self, name: str) -> Path:
        return self.out / name

    # -- the pipeline -----------------------------------------------------------------
    def run(self) -> dict:
        o = self.o
        o.validate()
        self.out.mkdir(parents=True, exist_ok=True)
        removed = cleanup_temporaries(self.out)
        if removed:
            G_LOGGER.info(f"removed {removed} temporary file(s) left by an interrupted run")
        trt_ok = _tensorrt_available()
        total = 8
        w_sha = sha256_file(o.weights)
        from .quantize.collect import select_images

        imgs = select_images(o.calib, o.num_images, o.seed)
        data_sha = sha256_file(o.data) if o.data else None

        # 1. load (validates the checkpoint once; cached by its hash)
        def do_load():
            from .info import describe_model
            from .models import load

            m = load(o.weights)
            d = describe_model(m.fuse(), o.img_size)
            return {"nc": d["nc"], "names": d["names"], "params": d["params"], "gmacs": d["gmacs"],
                    "head": d["source_head"]}

        base = self.stage("load", {"weights": w_sha, "img": o.img_size}, {}, do_load, 1, total).info
        if o.data:
            from .data import load_data_yaml

            spec = load_data_yaml(o.data)
            if spec.nc != base["nc"]:
                raise InputError(f"{o.data}: has {spec.nc} classes but {o.weights} has {base['nc']}")

        # 2. prune
        model_file, model_sha = o.weights, w_sha
        if o.prune > 0:
            def do_prune():
                from .models import load, save
                from .prune import prune

                pm, res = prune(load(o.weights), o.prune, o.importance, o.round_to or None, count_size=o.img_size,
                                ignore=None)
                save(pm, self.path("pruned.pt"))
                return res.to_dict()

            rec = self.stage("prune", {"weights": w_sha, "ratio": o.prune, "importance": o.importance,
                                       "round_to": o.round_to, "size": o.img_size}, {"model": "pruned.pt"},
                             do_prune, 2, total)
            model_file, model_sha = str(self.path("pruned.pt")), rec.outputs["model"]["sha256"]
        else:
            self.skip("prune", "--prune 0", 2, total)

        # 3. recover: on the data set's training split when --data is given (labels add the
        # supervised loss), else label-free on the calibration images
        if o.prune > 0 and o.recover_epochs > 0:
            if o.data:
                from .data import load_data_yaml
                from .preprocess import file_list_hash

                rspec = load_data_yaml(o.data)
                rpaths = rspec.images("train")
                r_hash = file_list_hash(rpaths)
            else:
                rspec, rpaths, r_hash = None, imgs.paths, imgs.list_hash

            def do_recover():
                from .models import load
                from .recover import RecoverConfig, recover

                cfg = RecoverConfig(epochs=o.recover_epochs, img_size=o.img_size, batch=o.recover_batch,
                                    lr=o.recover_lr, max_images=o.recover_images, seed=o.seed, device=o.device,
                                    crop=o.recover_crop,
                                    time_budget_s=o.recover_minutes * 60 if o.recover_minutes else None)
                _, summary = recover(load(model_file), load(o.weights), rpaths, self.path("recovered.pt"), cfg,
                                     data=rspec, resume=True)
                return {k: v for k, v in summary.items() if k != "history"}

            rec = self.stage("recover", {"model": model_sha, "teacher": w_sha, "images": r_hash,
                                         "data": data_sha, "epochs": o.recover_epochs, "batch": o.recover_batch,
                                         "lr": o.recover_lr, "max": o.recover_images, "seed": o.seed,
                                         "crop": o.recover_crop, "minutes": o.recover_minutes,
                                         "size": o.img_size}, {"model": "recovered.pt"}, do_recover, 3, total)
            model_file, model_sha = str(self.path("recovered.pt")), rec.outputs["model"]["sha256"]
        else:
            self.skip("recover", "no pruning" if not o.prune else "--recover-epochs 0", 3, total)
            if o.prune > 0:
                G_LOGGER.warning("the pruned model was not recovered: expect a large accuracy loss "
                                 "(use --recover-epochs)")

        # 4. export
        def do_export():
            from .export import export_onnx
            from .models import load

            r = export_onnx(load(model_file), self.path("model.onnx"), o.img_size, o.batch)
            return {"simplified": r.simplified, "input": r.input_shape, "output": r.output_shape}

        rec = self.stage("export", {"model": model_sha, "size": o.img_size, "batch": o.batch},
                         {"onnx": "model.onnx"}, do_export, 4, total)
        onnx_sha = rec.outputs["onnx"]["sha256"]

        # 5. calibrate + Q/DQ
        deploy_onnx = self.path("model.onnx")
        if o.precision == "int8":
            def do_calibrate():
                from .quantize import calibrate

                r = calibrate(self.path("model.onnx"), o.calib, self.out, o.num_images, 8, o.method,
                              seed=o.seed, exclude=o.exclude, bias_correction=o.bias_correction,
                              auto_exclude=o.sensitive_groups_in_float)
                return {"method": r.method, "images_used": r.images_used, "images_skipped": r.images_skipped,
                        "seconds": round(r.seconds, 1)}

            self.stage("calibrate", {"onnx": onnx_sha, "images": imgs.list_hash, "method": o.method,
                                     "num": o.num_images, "seed": o.seed, "exclude": o.exclude,
                                     "bias_correction": o.bias_correction, "auto_exclude": o.sensitive_groups_in_float},
                       {"cache": "calib.cache", "calib_json": "calib.json", "qdq": "model.qdq.onnx",
                        "qdq_fp16": "model.qdq.fp16.onnx", "qdq_cpu": "model.qdq.cpu.onnx"}, do_calibrate, 5, total)
            deploy_onnx = self.path("model.qdq.fp16.onnx")
        else:
            self.skip("calibrate", f"--precision {o.precision}", 5, total)

        # 6. engine
        engine_file = None
        if trt_ok:
            def do_engine():
                from .trt.builder import BuildConfig, build_engine

                import tensorrt as trt

                src = deploy_onnx
                if o.precision == "int8" and int(trt.__version__.split(".")[0]) < 11:
                    src = self.path("model.qdq.onnx")
                r = build_engine(src, self.path("model.engine"), BuildConfig(precision=o.precision,
                                                                             workspace_gib=o.workspace_gib))
                return {"int8_layers": r.meta["int8_layers"], "layers": r.meta["layers"],
                        "tensorrt": r.meta["tensorrt"], "gpu": r.meta.get("gpu")}

            self.stage("engine", {"onnx": sha256_file(deploy_onnx), "precision": o.precision,
                                  "trt": _trt_version(), "gpu": _gpu_name()},
                       {"engine": "model.engine", "engine_json": "model.engine.json"}, do_engine, 6, total)
            engine_file = self.path("model.engine")
        else:
            target = "model.qdq.fp16.onnx" if o.precision == "int8" else "model.onnx"
            self.skip("engine", "TensorRT and a GPU are not available here", 6, total)
            G_LOGGER.info(f"build the engine on the target GPU with: fyexport engine {self.path(target)} -o "
                          f"model.engine --precision {o.precision}   (or: trtexec --onnx={self.path(target)} "
                          f"--stronglyTyped --saveEngine=model.engine)")

        # 7. eval + gate
        gate = None
        if o.data:
            cands = {"fp32": self.path("model.onnx")}
            if o.precision == "int8":
                cands["int8"] = engine_file or self.path("model.qdq.cpu.onnx")
            elif engine_file:
                cands[o.precision] = engine_file

            def do_eval():
                from .evaluate import evaluate
                from .runners import open_runner

                res = {}
                if o.prune > 0:  # the unpruned model too, so the cost of pruning is visible
                    base_onnx = self.out / "bench" / "baseline.fp32.onnx"
                    if not base_onnx.exists():
                        from .export import export_onnx
                        from .models import load

                        export_onnx(load(o.weights), base_onnx, o.img_size, dynamic_batch=True)
                    cands_all = {"unpruned fp32": base_onnx, **cands}
                else:
                    cands_all = cands
                for k, p in cands_all.items():
                    with open_runner(str(p), device=o.device if str(p).endswith(".engine") else "cpu") as r:
                        e = evaluate(r, o.data, max_images=o.eval_images, description=f"mAP {k}")
                    res[k] = {"artifact": Path(p).name, "map50": e.map50, "map": e.map, "images": e.images}
                write_json(self.path("eval.json"), res)
                return res

            rec = self.stage("eval", {k: sha256_file(v) for k, v in cands.items()} |
                             {"data": data_sha, "n": o.eval_images, "weights": w_sha, "prune": o.prune},
                             {"eval": "eval.json"}, do_eval, 7, total)
            ev = rec.info
            low = [k for k in ev if k not in ("fp32", "unpruned fp32")]
            if low:
                drop = 100 * (ev["fp32"]["map"] - ev[low[0]]["map"])
                gate = {"precision": low[0], "drop_points": round(drop, 2), "max_drop": o.max_map_drop,
                        "passed": drop <= o.max_map_drop}
        else:
            self.skip("eval", "no --data", 7, total)

        # 8. bench
        if o.bench:
            arts = [str(self.path("model.onnx"))]
            if o.precision == "int8":
                arts.append(str(self.path("model.qdq.cpu.onnx")))
            if engine_file:
                arts.append(str(engine_file))

            def do_bench():
                from .bench import plot, run_bench, write_json as write_report

                rep = run_bench(arts, o.weights, runtime="auto" if engine_file else "onnxruntime", device=o.device,
                                batches=(o.batch,), img_size=o.img_size, warmup=0.2, duration=o.bench_duration,
                                images=o.calib, e2e=True, workdir=self.out / "bench")
                write_report(rep, self.path("bench.json"))
                plot(rep, self.path("bench.png"))
                return {"rows": [{k: r[k] for k in ("model", "runtime", "precision", "batch", "speedup")}
                                 | {"median_ms": r["compute_ms"]["median"]} for r in rep["rows"]]}

            self.stage("bench", {"artifacts": [sha256_file(a) for a in arts], "baseline": w_sha,
                                 "size": o.img_size, "batch": o.batch, "duration": o.bench_duration,
                                 "images": imgs.list_hash}, {"bench": "bench.json", "plot": "bench.png"},
                       do_bench, 8, total)
        else:
            self.skip("bench", "--no-bench", 8, total)

        status = "done" if gate is None or gate["passed"] else "failed-gate"
        self.save_manifest(status)
        summary = self.summary(base, gate)
        if gate is not None and not gate["passed"]:
            summary["status"] = status
            raise GateError(f"mAP gate failed: {gate['precision']} loses {gate['drop_points']:.2f} points of "
                            f"mAP@.5:.95 against FP32 (allowed {o.max_map_drop}); artifacts kept in {self.out}",
                            "Try another --method (search, minmax, mse), --auto-exclude 4 or 8, "
                            "or more calibration images")
        return summary

    def summary(self, base: dict, gate) -> dict:
        def info(name):
            rec = self.stages.get(name)
            return rec.info if rec is not None and rec.status != "skipped" else None

        return {"out": str(self.out), "stages": {k: v.status for k, v in self.stages.items()},
                "base": base, "prune": info("prune"), "eval": info("eval"), "gate": gate, "bench": info("bench"),
                "seconds": round(time.time() - self.t0, 1)}


def _tensorrt_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def _trt_version() -> str | None:
    try:
        import tensorrt as trt

        return trt.__version__
    except ImportError:
        return None


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def run_build(opts: BuildOptions, command: str | None = None) -> dict:
    return Build(opts, command).run()


def render_summary(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .log import table_console

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
    if s.get("eval"):
        e = Table(title="accuracy (validation split)")
        for c in ("model", "artifact", "mAP@.5", "mAP@.5:.95"):
            e.add_column(c)
        for k, v in s["eval"].items():
            e.add_row(k, v["artifact"], f"{v['map50']:.4f}", f"{v['map']:.4f}")
        con.print(e)
    if s.get("gate"):
        g = s["gate"]
        con.print(f"mAP gate: {g['precision']} drop {g['drop_points']:+.2f} points (max {g['max_drop']}) -> "
                  + ("[green]passed[/green]" if g["passed"] else "[red]FAILED[/red]"))
    if s.get("bench"):
        b = Table(title="speed (median model time, batch as built)")
        for c in ("model", "runtime", "precision", "ms", "speedup vs unpruned FP32"):
            b.add_column(c)
        for r in s["bench"]["rows"]:
            b.add_row(Path(r["model"].split(" (")[0]).name, r["runtime"], r["precision"], f"{r['median_ms']:.1f}",
                      f"{r['speedup']:.2f}x" if r.get("speedup") else "-")
        con.print(b)


def read_manifest(folder) -> dict:
    p = Path(folder) / MANIFEST
    if not p.exists():
        raise InputError(f"{folder}: no {MANIFEST} (not a fyexport build folder)")
    return read_json(p)


def render_manifest(d: dict, con=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .log import table_console

    con = con or table_console()
    con.print(f"[bold]build[/bold] status {d.get('status')}  fyexport {d.get('fyexport')}  {d.get('created')}")
    con.print(f"[bold]command[/bold] {d.get('command')}")
    t = Table(title="artifacts")
    for c in ("artifact", "stage", "path", "bytes", "sha256"):
        t.add_column(c)
    for a in d.get("artifacts", []):
        t.add_row(a["artifact"], a["stage"], a["path"], f"{a['bytes']:,}", a["sha256"][:16] + "...")
    con.print(t)
    s = Table(title="stages")
    for c in ("stage", "status", "seconds", "key"):
        s.add_column(c)
    for k, v in d.get("stages", {}).items():
        s.add_row(k, v["status"], str(v["seconds"]), (v["key"] or "")[:12])
    con.print(s)
