"""Building a TensorRT engine from an ONNX file (TensorRT 10 and 11).

* Q/DQ models: on 10.0-10.11 weakly typed with the INT8 and FP16 flags (those releases' own,
  undeprecated way); from 10.12, which deprecated weak typing, the FP16 Q/DQ model strongly
  typed (the FP32-remainder model stays weakly typed there, or its remainder would run in
  FP32); on 11, which has no precision flags, strongly typed.
* FP16 without the removed ``BuilderFlag.FP16`` (11.x): the ONNX is baked to FP16 first
  (decode kept in FP32), then built strongly typed.
* ``calibrator='trt-entropy'`` uses TensorRT's own ``IInt8EntropyCalibrator2`` where it still
  exists (10.x), fed by the project's letterbox at the calibration profile's shape (TensorRT
  calibrates at its OPT); on 11 it is refused with a pointer to Q/DQ.
* TensorRT's plugins are registered first (``EfficientNMS_TRT`` for ``--nms trt-plugin``).
* Parser errors are reported in full, ``None`` from the build is an error, a timing cache
  TensorRT refuses is warned about and left alone, and after an INT8 build the DETAILED
  inspector JSON must show INT8 convolutions or the engine is deleted (the silent-FP32 trap);
  layer names do not count, as fused names carry the weights' names (``*_w_int8``).
* The ``.engine`` stays a pure TensorRT plan; facts go to ``<engine>.json`` beside it, with
  file names and hashes rather than absolute paths.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.artifacts import writable_folder, write_bytes
from ..core.config import require
from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER, progress
from ..core.meta import ArtifactMeta
from ..onnx.facts import graph_facts
from . import (
    ENGINE_SUFFIXES,
    has_fp16_flag,
    has_implicit_int8,
    import_trt,
    init_plugins,
    make_logger,
    weak_typing_deprecated,
)
from .sidecar import sidecar_path

PRECISIONS = ("auto", "int8", "fp16", "fp32")  # auto: int8 for a Q/DQ ONNX, else fp32 (the ONNX as it is)
CALIBRATORS = ("qdq", "trt-entropy")


@dataclass
class EngineConfig:
    """The engine stage's settings."""

    precision: str = "auto"
    workspace_gib: float = 4.0  # the workspace memory pool
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    timing_cache: str | None = None  # load and save TensorRT's timing cache here
    optimization_level: int = 3  # builder optimization level 0..5
    calibrator: str = "qdq"  # qdq: explicit Q/DQ from calibrate; trt-entropy: TensorRT 10's own calibrator
    calib_images: str | None = None  # calibration images for trt-entropy
    calib_num_images: int = 500
    calib_batch: int = 8
    verbose: bool = False
    command: str | None = None

    def validate(self) -> None:
        require(self.precision in PRECISIONS, "precision",
                f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        require(self.calibrator in CALIBRATORS, "calibrator", f"must be qdq or trt-entropy, got {self.calibrator!r}")
        require(self.workspace_gib > 0, "workspace_gib", f"must be positive (GiB), got {self.workspace_gib}")
        require(0 <= self.optimization_level <= 5, "optimization_level",
                f"must be 0..5, got {self.optimization_level}")
        for name in ("min_batch", "opt_batch", "max_batch"):
            v = getattr(self, name)
            require(v is None or v >= 1, name, f"must be >= 1, got {v}")
        if self.min_batch and self.max_batch:
            require(self.min_batch <= (self.opt_batch or self.min_batch) <= self.max_batch, "opt_batch",
                    "must lie between the minimum and maximum batch")
        require(self.calibrator != "trt-entropy" or bool(self.calib_images), "calib_images",
                "is needed by the trt-entropy calibrator")
        require(self.calib_batch >= 1, "calib_batch", f"must be >= 1, got {self.calib_batch}")
        require(self.calib_num_images >= 1, "calib_num_images", f"must be >= 1, got {self.calib_num_images}")


BuildConfig = EngineConfig  # the 0.1 name, for one release


@dataclass
class EngineResult:
    engine: Path
    meta_path: Path
    meta: ArtifactMeta = field(default_factory=ArtifactMeta)
    seconds: float = 0.0


@dataclass
class _Precision:
    """How the network is built: from which ONNX, typed how, with which flags."""

    onnx: Path
    strongly_typed: bool
    flags: list = field(default_factory=list)
    calibrator: object = None


def preferred_qdq_flavour(trt) -> str:
    """The Q/DQ flavour to build an INT8 engine from on this TensorRT: the FP32-remainder model
    weakly typed with the INT8 and FP16 flags on 10.0-10.11, the FP16 model strongly typed from
    10.12 (which deprecated weak typing) and on 11.x (which removed it)."""
    if has_implicit_int8(trt) and has_fp16_flag(trt) and not weak_typing_deprecated(trt):
        return "trt"
    return "trt-fp16"


def build_engine(onnx_path, engine_path, cfg: EngineConfig) -> EngineResult:
    """Build ``engine_path`` from ``onnx_path``; writes ``<engine>.json`` beside it."""
    from ..onnx.facts import check_onnx_file

    cfg.validate()
    t0 = time.time()
    engine_path = Path(engine_path)
    if engine_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise InputError(f"{engine_path}: engine files end in .engine or .plan")
    proto = check_onnx_file(onnx_path)
    writable_folder(engine_path.parent)  # before the build (minutes), not after it
    facts = graph_facts(proto)
    if cfg.precision == "auto":
        cfg = replace(cfg, precision="int8" if facts.qdq else "fp32")
    trt = import_trt(onnx_hint=str(onnx_path))
    logger = make_logger(trt, cfg.verbose)
    init_plugins(trt)  # the parser finds EfficientNMS_TRT (--nms trt-plugin) only in the plugin registry
    prec = _precision(trt, proto, facts, cfg, Path(onnx_path), engine_path)
    builder = trt.Builder(logger)
    network = builder.create_network(
        (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if prec.strongly_typed else 0)
    _parse(trt, network, logger, prec.onnx)
    config, cache_obj = _configure(trt, builder, cfg, prec)
    profile_info = _add_profile(trt, builder, network, config, cfg, facts)
    if prec.calibrator is not None:
        _set_calibration_profile(builder, config, facts, prec.calibrator)
    with progress(f"building {cfg.precision} engine (TensorRT {trt.__version__})", None):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise FyexportError(f"TensorRT could not build an engine from {prec.onnx}",
                            "Rerun with --verbose for TensorRT's log")
    data = bytes(plan)
    counts, info_json = _inspect_plan(trt, logger, data)
    if cfg.precision == "int8":
        _check_int8(counts, engine_path)
    sidecar = _write_engine(trt, data, engine_path, onnx_path, proto, facts, cfg, prec, counts, profile_info,
                            info_json)
    if cache_obj is not None:
        write_bytes(cfg.timing_cache, bytes(config.get_timing_cache().serialize()))
    return EngineResult(engine_path, sidecar_path(engine_path), sidecar, time.time() - t0)


def _precision(trt, proto, facts, cfg: EngineConfig, onnx_path: Path, engine_path: Path) -> _Precision:
    if cfg.precision == "int8":
        return _int8_precision(trt, proto, facts, cfg, onnx_path, engine_path)
    if facts.qdq:
        raise InputError(f"{onnx_path}: has Q/DQ nodes; build it with the int8 `precision`"
                         if cfg.precision == "fp16" else
                         f"{onnx_path}: has Q/DQ nodes; an FP32 engine needs the FP32 ONNX")
    if cfg.precision == "fp16" and not facts.fp16:
        if has_fp16_flag(trt):
            return _Precision(onnx_path, False, ["FP16"])
        return _Precision(_bake_fp16(proto, engine_path), True)
    return _Precision(onnx_path, facts.fp16)


def _int8_precision(trt, proto, facts, cfg: EngineConfig, onnx_path: Path, engine_path: Path) -> _Precision:
    if cfg.calibrator == "trt-entropy":
        if not has_implicit_int8(trt):
            raise FyexportError(f"TensorRT {trt.__version__} removed implicit INT8 calibration "
                                "(IInt8EntropyCalibrator2, BuilderFlag.INT8)",
                                "Use the qdq `calibrator` with the Q/DQ ONNX from 'fyexport calibrate' "
                                "(model.qdq.fp16.onnx on TensorRT 11)")
        if facts.qdq:
            raise InputError(f"{onnx_path}: already has Q/DQ; the trt-entropy `calibrator` needs the FP32 ONNX")
        from .calibrator import make_entropy_calibrator

        cache = engine_path.with_name(engine_path.stem + ".calib.cache")
        calibrator = make_entropy_calibrator(trt, proto, cfg.calib_images, cache, cfg.calib_num_images,
                                             cfg.calib_batch)
        return _Precision(onnx_path, False, ["INT8", "FP16"], calibrator)
    if not facts.qdq:
        raise InputError(f"{onnx_path}: INT8 with the qdq `calibrator` needs a Q/DQ ONNX",
                         "Run 'fyexport calibrate MODEL.onnx --images DIR -o OUT' and build from "
                         "OUT/model.qdq.fp16.onnx (TensorRT 10.12 and newer) or OUT/model.qdq.onnx (10.0-10.11)")
    if has_implicit_int8(trt) and has_fp16_flag(trt):
        if not weak_typing_deprecated(trt):  # 10.0-10.11: weak typing is these releases' own way
            return _Precision(onnx_path, False, ["INT8", "FP16"])
        if not facts.fp16:  # 10.12+: strongly typed, the FP32 remainder would run in FP32
            G_LOGGER.info(f"TensorRT {trt.__version__} deprecates weak typing, but {onnx_path.name} has an FP32 "
                          "remainder: built weakly typed (INT8 + FP16 flags); model.qdq.fp16.onnx builds strongly "
                          "typed")
            return _Precision(onnx_path, False, ["INT8", "FP16"])
    if facts.fp16:
        return _Precision(onnx_path, True)
    G_LOGGER.warning(f"{onnx_path}: Q/DQ model with an FP32 remainder: under TensorRT {trt.__version__}'s strong "
                     "typing every non-quantized layer runs in FP32. Build from model.qdq.fp16.onnx for FP16 there")
    return _Precision(onnx_path, True)


def _parse(trt, network, logger, path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        hint = None
        if any("Plugin not found" in e for e in errs):
            hint = ("TensorRT's plugin library (libnvinfer_plugin) is missing or lacks this plugin; for "
                    "--nms trt-plugin it must provide EfficientNMS_TRT")
        raise FyexportError(f"{path}: TensorRT's ONNX parser failed: " + " | ".join(errs or ["(no detail)"]), hint)


def _configure(trt, builder, cfg: EngineConfig, prec: _Precision):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    config.builder_optimization_level = int(cfg.optimization_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for name in prec.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if prec.calibrator is not None:
        config.int8_calibrator = prec.calibrator  # 10.x only (checked by _int8_precision)
    cache_obj = _timing_cache(trt, config, Path(cfg.timing_cache)) if cfg.timing_cache else None
    return config, cache_obj


def _timing_cache(trt, config, path: Path):
    """The timing cache at ``path`` (a new one if there is no file) set on ``config``, or None
    with a warning where TensorRT refuses it: then the build goes on without it and the file
    is left as it is."""
    cache = config.create_timing_cache(path.read_bytes() if path.exists() else b"")
    if cache is None:
        G_LOGGER.warning(f"{path}: TensorRT {trt.__version__} cannot read this timing cache (made by another TensorRT "
                         "version?); building without it, the file is left as it is")
        return None
    if not config.set_timing_cache(cache, False):
        G_LOGGER.warning(f"{path}: this timing cache was made on another GPU; building without it, the file is left "
                         "as it is")
        return None
    return cache


def _set_calibration_profile(builder, config, facts, calibrator) -> None:
    """TensorRT calibrates at the calibration profile's OPT shape (MIN and MAX are overwritten
    by it), whatever ``get_batch_size`` says: make it the calibrator's batch shape, so that
    every image of every batch is used and nothing is read past its buffers."""
    if facts.input.dims[0] is not None:  # a static batch: calibrated at that shape
        return
    shape = tuple(int(v) for v in calibrator.shape)
    profile = builder.create_optimization_profile()
    profile.set_shape(facts.input.name, shape, shape, shape)
    if not config.set_calibration_profile(profile):
        raise FyexportError(f"TensorRT refused the calibration profile {list(shape)} for '{facts.input.name}'")


def _check_int8(counts, engine_path: Path) -> None:
    """Refuse an INT8 build whose convolutions all run in float (the silent-FP32 trap)."""
    if counts is None:
        G_LOGGER.warning(f"{engine_path.name}: the engine inspector gave no per-layer detail, so whether it runs INT8 "
                         "cannot be checked")
        return
    int8 = counts["int8_convs"] if counts["convs"] else counts["int8_layers"]  # no conv recognised: any layer
    if int8:
        return
    raise FyexportError(f"TensorRT built {engine_path.name} without a single INT8 convolution (0 of {counts['convs']}; "
                        "silent FP32 fallback); the engine was not written",
                        "Check that the Q/DQ ONNX is the one from 'fyexport calibrate' and inspect it with "
                        "'fyexport inspect'")


def _write_engine(trt, data: bytes, engine_path: Path, onnx_path, proto, facts, cfg: EngineConfig, prec: _Precision,
                  counts, profile_info, info_json) -> dict:
    """The plan, its metadata file and the inspector's layer JSON; returns the metadata."""
    from ..core.artifacts import sha256_file, write_json
    from ..core.machine import gpu_facts
    from ..onnx.facts import read_meta

    write_bytes(engine_path, data)
    meta = read_meta(proto)
    counts = counts or {}
    sidecar = {
        "format": "fyexport-engine", "version": 1, "tensorrt": str(trt.__version__), **gpu_facts(),
        "precision": cfg.precision, "strongly_typed": bool(prec.strongly_typed), "flags": prec.flags,
        "calibrator": cfg.calibrator if cfg.precision == "int8" else None,
        **{k: counts.get(k) for k in ("layers", "int8_layers", "convs", "int8_convs")},
        "input": {"name": facts.input.name, "shape": [d or -1 for d in facts.input.dims], "dtype": "float32",
                  "profile": profile_info},
        "outputs": list(facts.outputs),
        **{k: meta.to_dict().get(k) for k in ("img_size", "preprocessing", "names", "nc", "stride", "anchors",
                                              "calibration", "prune", "nms")},
        "onnx": {"file": Path(onnx_path).name, "sha256": sha256_file(onnx_path)},
        "build_command": cfg.command or rebuild_command(onnx_path, engine_path, cfg),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(sidecar_path(engine_path), sidecar)
    if info_json is not None:
        write_json(engine_path.with_name(engine_path.name + ".layers.json"), info_json)
    return ArtifactMeta.from_dict(sidecar, str(sidecar_path(engine_path)))


def _add_profile(trt, builder, network, config, cfg: EngineConfig, facts):
    dims = [d or -1 for d in facts.input.dims]
    if dims[0] != -1:
        if any(v is not None for v in (cfg.min_batch, cfg.opt_batch, cfg.max_batch)) and \
                {cfg.min_batch, cfg.opt_batch, cfg.max_batch} - {None, dims[0]}:
            raise InputError(f"the ONNX has a static batch of {dims[0]}; export it with "
                             "'fyexport export --dynamic-batch' "
                             "for a batch range")
        return None
    lo = cfg.min_batch or 1
    hi = cfg.max_batch or max(lo, cfg.opt_batch or 1)
    opt = cfg.opt_batch or hi
    rest = tuple(dims[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(facts.input.name, (lo, *rest), (opt, *rest), (hi, *rest))
    if config.add_optimization_profile(profile) < 0:
        raise InputError(f"TensorRT refused the batch range {lo}..{hi} (opt {opt})")
    return {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}


def _inspect_plan(trt, logger, data: bytes):
    """(layer counts or None, inspector JSON or None) of a serialized plan."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise FyexportError("TensorRT could not load the engine it just built")
    inspector = engine.create_engine_inspector()
    raw = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(raw)
    except (TypeError, ValueError):
        return None, None
    return layer_counts(info), info


_INT8 = re.compile(r"\bint8\b", re.IGNORECASE)


def layer_counts(info) -> dict | None:
    """Layers and convolutions, and how many of each run in INT8, from the DETAILED inspector
    JSON: a layer runs INT8 when an input or output tensor's data type or its weights' type is
    Int8 (10.x: "Format/Datatype" such as "Four wide channel vectorized row major Int8 format";
    11.x: "Datatype" apart from "Format").  Never from names: fused names carry the weights'
    names ("..._w_int8 + ..._Dequantize + Conv").  None where the JSON has no per-layer detail."""
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list) or not all(isinstance(lay, dict) for lay in layers):
        return None
    convs = [lay for lay in layers if _is_conv(lay)]
    return {"layers": len(layers), "int8_layers": sum(map(_runs_int8, layers)), "convs": len(convs),
            "int8_convs": sum(map(_runs_int8, convs))}


def _is_conv(lay: dict) -> bool:
    return lay.get("ParameterType") in ("Convolution", "Deconvolution") or \
        "convolution" in str(lay.get("LayerType", "")).lower()


def _tensor_type(t) -> str:
    if not isinstance(t, dict):
        return ""
    return str(t.get("Datatype") or t.get("DataType") or t.get("Format/Datatype") or t.get("Format") or "")


def _runs_int8(lay: dict) -> bool:
    tensors = list(lay.get("Inputs") or []) + list(lay.get("Outputs") or [])
    weights = lay.get("Weights") if isinstance(lay.get("Weights"), dict) else {}
    return any(_INT8.search(_tensor_type(t)) for t in tensors) or bool(_INT8.search(str(weights.get("Type", ""))))


def _bake_fp16(proto, engine_path: Path) -> Path:
    """An FP16 copy of an FP32 ONNX (decode and I/O in FP32) for strongly typed builds."""
    import onnx

    from ..core.artifacts import atomic_path
    from ..quantize.graph import analyse
    from ..quantize.qdq import to_fp16

    m = to_fp16(proto, analyse(proto))
    out = engine_path.with_name(engine_path.stem + ".fp16.onnx")
    with atomic_path(out) as tmp:
        onnx.save(m, str(tmp))
    G_LOGGER.info(f"TensorRT has no FP16 builder flag: baked {out.name} (FP16 backbone, FP32 decode) and built it "
                  "strongly typed")
    return out


def rebuild_command(onnx_path, engine_path, cfg: EngineConfig) -> str:
    """The command that rebuilds the engine, to run in the engine's folder (paths relative to
    it, so identical builds in different folders record the same command)."""
    engine_path = Path(engine_path)
    onnx_rel = os.path.relpath(Path(onnx_path).resolve(), engine_path.resolve().parent)
    parts = ["fyexport", "engine", onnx_rel, "-o", engine_path.name, "--precision", cfg.precision,
             "--workspace", f"{cfg.workspace_gib:g}"]
    if cfg.max_batch:
        parts += ["--min-batch", str(cfg.min_batch or 1), "--opt-batch", str(cfg.opt_batch or cfg.max_batch),
                  "--max-batch", str(cfg.max_batch)]
    if cfg.precision == "int8" and cfg.calibrator != "qdq":
        parts += ["--calibrator", cfg.calibrator, "--images", str(cfg.calib_images)]
    return " ".join(shlex.quote(p) for p in parts)


def current_command() -> str:
    return " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])
