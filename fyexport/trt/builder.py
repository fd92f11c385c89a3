"""Building a TensorRT engine from an ONNX file (TensorRT 10 and 11).

* Q/DQ and FP16-baked models get a strongly typed network (precision comes from the graph;
  the only way on 11, opted into on 10).  On 10 an FP32-remainder Q/DQ model may instead be
  built weakly typed with the INT8 and FP16 flags.
* FP16 without the removed ``BuilderFlag.FP16`` (11.x): the ONNX is baked to FP16 first
  (decode kept in FP32), then built strongly typed.
* ``calibrator='trt-entropy'`` uses TensorRT's own ``IInt8EntropyCalibrator2`` where it still
  exists (10.x), fed by the project's letterbox; on 11 it is refused with a pointer to Q/DQ.
* Parser errors are reported in full, ``None`` from the build is an error, and after an
  INT8 build the engine inspector must show INT8 layers or the engine is deleted (the
  silent-FP32 trap).
* The ``.engine`` stays a pure TensorRT plan; facts go to ``<engine>.json`` beside it.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import FyexportError, InputError
from ..log import G_LOGGER, progress
from . import has_fp16_flag, has_implicit_int8, import_trt, make_logger, version_tuple

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATORS = ("qdq", "trt-entropy")


@dataclass
class BuildConfig:
    precision: str = "fp32"
    workspace_gib: float = 4.0
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    timing_cache: str | None = None
    optimization_level: int = 3
    calibrator: str = "qdq"
    calib_images: str | None = None
    calib_num_images: int = 500
    calib_batch: int = 8
    verbose: bool = False
    command: str | None = None

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.calibrator not in CALIBRATORS:
            raise InputError(f"--calibrator must be qdq or trt-entropy, got {self.calibrator!r}")
        if self.workspace_gib <= 0:
            raise InputError("--workspace must be positive (GiB)")
        if not (0 <= self.optimization_level <= 5):
            raise InputError("--opt-level must be 0..5")
        b = [v for v in (self.min_batch, self.opt_batch, self.max_batch) if v is not None]
        if any(v < 1 for v in b):
            raise InputError("batch sizes must be >= 1")
        if self.min_batch and self.max_batch and not (self.min_batch <= (self.opt_batch or self.min_batch)
                                                      <= self.max_batch):
            raise InputError("need --min-batch <= --opt-batch <= --max-batch")
        if self.calibrator == "trt-entropy" and not self.calib_images:
            raise InputError("--calibrator trt-entropy needs --images DIR")


@dataclass
class EngineResult:
    engine: Path
    meta_path: Path
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def onnx_kind(proto) -> dict:
    ops = {n.op_type for n in proto.graph.node}
    fp16 = any(i.data_type == 10 for i in proto.graph.initializer)
    inits = {i.name for i in proto.graph.initializer}
    inp = [i for i in proto.graph.input if i.name not in inits][0]
    dims = [d.dim_value if d.dim_value else -1 for d in inp.type.tensor_type.shape.dim]
    return {"qdq": "QuantizeLinear" in ops, "fp16": fp16, "input": inp.name, "dims": dims}


def gpu_facts() -> dict:
    out = {}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out = {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
    except Exception:  # noqa: BLE001
        pass
    from ..bench import _nvidia_driver

    out["driver"] = _nvidia_driver()
    return out


def build_engine(onnx_path, engine_path, cfg: BuildConfig) -> EngineResult:
    """Build ``engine_path`` from ``onnx_path``; writes ``<engine>.json`` beside it."""
    import onnx

    from ..artifacts import atomic_path, sha256_file, write_bytes, write_json
    from ..export import check_onnx_file, read_meta

    cfg.validate()
    t0 = time.time()
    proto = check_onnx_file(onnx_path)
    kind = onnx_kind(proto)
    trt = import_trt(onnx_hint=str(onnx_path))
    ver = version_tuple(trt)
    logger = make_logger(trt, cfg.verbose)
    engine_path = Path(engine_path)
    if engine_path.suffix.lower() not in (".engine", ".plan", ".trt"):
        raise InputError(f"{engine_path}: engine files end in .engine or .plan")

    build_onnx = Path(onnx_path)
    strongly_typed = kind["qdq"] or kind["fp16"]
    flags_to_set: list[str] = []
    calibrator = None
    if cfg.precision == "int8":
        if cfg.calibrator == "trt-entropy":
            if not has_implicit_int8(trt):
                raise FyexportError(f"TensorRT {trt.__version__} removed implicit INT8 calibration "
                                    "(IInt8EntropyCalibrator2, BuilderFlag.INT8)",
                                    "Use --calibrator qdq with the Q/DQ ONNX from 'fyexport calibrate' "
                                    "(model.qdq.fp16.onnx on TensorRT 11)")
            if kind["qdq"]:
                raise InputError(f"{onnx_path}: already has Q/DQ; --calibrator trt-entropy needs the FP32 ONNX")
            from .calibrator import make_entropy_calibrator

            cache = engine_path.with_name(engine_path.stem + ".calib.cache")
            calibrator = make_entropy_calibrator(trt, proto, cfg.calib_images, cache, cfg.calib_num_images,
                                                 cfg.calib_batch)
            strongly_typed = False
            flags_to_set += ["INT8", "FP16"]
        else:
            if not kind["qdq"]:
                raise InputError(f"{onnx_path}: INT8 with --calibrator qdq needs a Q/DQ ONNX",
                                 "Run 'fyexport calibrate MODEL.onnx --images DIR -o OUT' and build from "
                                 "OUT/model.qdq.fp16.onnx (TensorRT 11) or OUT/model.qdq.onnx (TensorRT 10)")
            if not kind["fp16"]:
                if has_implicit_int8(trt) and has_fp16_flag(trt):
                    # TensorRT 10: explicit quantization, weakly typed, FP16 allowed for the rest
                    strongly_typed = False
                    flags_to_set += ["INT8", "FP16"]
                else:
                    G_LOGGER.warning(f"{onnx_path}: Q/DQ model with an FP32 remainder: under TensorRT "
                                     f"{trt.__version__}'s strong typing every non-quantized layer runs in FP32. "
                                     "Build from model.qdq.fp16.onnx for FP16 there")
    elif cfg.precision == "fp16":
        if kind["qdq"]:
            raise InputError(f"{onnx_path}: has Q/DQ nodes; build it with --precision int8")
        if not kind["fp16"]:
            if has_fp16_flag(trt):
                flags_to_set.append("FP16")
            else:
                build_onnx = _bake_fp16(proto, engine_path)
                strongly_typed = True
    else:
        if kind["qdq"]:
            raise InputError(f"{onnx_path}: has Q/DQ nodes; an FP32 engine needs the FP32 ONNX")
        strongly_typed = kind["fp16"]

    builder = trt.Builder(logger)
    net_flags = 0
    if strongly_typed:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(build_onnx)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise FyexportError(f"{build_onnx}: TensorRT's ONNX parser failed: " + " | ".join(errs or ["(no detail)"]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    config.builder_optimization_level = int(cfg.optimization_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for name in flags_to_set:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if calibrator is not None:
        config.int8_calibrator = calibrator  # 10.x only (checked above)
    cache_obj = None
    if cfg.timing_cache:
        tc = Path(cfg.timing_cache)
        cache_obj = config.create_timing_cache(tc.read_bytes() if tc.exists() else b"")
        config.set_timing_cache(cache_obj, False)
    profile_info = _add_profile(trt, builder, network, config, cfg, kind)

    with progress(f"building {cfg.precision} engine (TensorRT {trt.__version__})", None):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise FyexportError(f"TensorRT could not build an engine from {build_onnx}",
                            "Rerun with --verbose for TensorRT's log")
    data = bytes(plan)
    layers, int8_layers, info_json = _inspect_plan(trt, logger, data)
    if cfg.precision == "int8" and int8_layers == 0:
        raise FyexportError(f"TensorRT built {engine_path.name} without a single INT8 layer (silent FP32 "
                            "fallback); the engine was not written",
                            "Check that the Q/DQ ONNX is the one from 'fyexport calibrate' and inspect it with "
                            "'fyexport inspect'")
    write_bytes(engine_path, data)
    if cfg.timing_cache and cache_obj is not None:
        write_bytes(cfg.timing_cache, bytes(config.get_timing_cache().serialize()))
    meta = read_meta(proto)
    sidecar = {
        "format": "fyexport-engine", "version": 1, "tensorrt": str(trt.__version__),
        **gpu_facts(),
        "precision": cfg.precision, "strongly_typed": bool(strongly_typed), "flags": flags_to_set,
        "calibrator": cfg.calibrator if cfg.precision == "int8" else None,
        "layers": layers, "int8_layers": int8_layers,
        "input": {"name": kind["input"], "shape": kind["dims"], "dtype": "float32", "profile": profile_info},
        "outputs": [o.name for o in proto.graph.output],
        "img_size": meta.get("img_size"), "preprocessing": meta.get("preprocessing"), "names": meta.get("names"),
        "nc": meta.get("nc"), "stride": meta.get("stride"), "anchors": meta.get("anchors"),
        "calibration": meta.get("calibration"), "prune": meta.get("prune"), "nms": meta.get("nms"),
        "onnx": {"path": str(Path(onnx_path).resolve()), "sha256": sha256_file(onnx_path)},
        "build_command": cfg.command or rebuild_command(onnx_path, engine_path, cfg),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_path = engine_path.with_name(engine_path.name + ".json")
    write_json(meta_path, sidecar)
    if info_json is not None:
        write_json(engine_path.with_name(engine_path.name + ".layers.json"), info_json)
    del atomic_path, onnx
    return EngineResult(engine_path, meta_path, sidecar, time.time() - t0)


def _add_profile(trt, builder, network, config, cfg: BuildConfig, kind: dict):
    dims = kind["dims"]
    if dims[0] != -1:
        if any(v is not None for v in (cfg.min_batch, cfg.opt_batch, cfg.max_batch)) and \
                {cfg.min_batch, cfg.opt_batch, cfg.max_batch} - {None, dims[0]}:
            raise InputError(f"the ONNX has a static batch of {dims[0]}; export it with --dynamic-batch for a "
                             "batch range")
        return None
    lo = cfg.min_batch or 1
    hi = cfg.max_batch or max(lo, cfg.opt_batch or 1)
    opt = cfg.opt_batch or hi
    rest = tuple(dims[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(kind["input"], (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    return {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}


def _inspect_plan(trt, logger, data: bytes):
    """(layer count, INT8 layer count, inspector JSON) of a serialized plan."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise FyexportError("TensorRT could not load the engine it just built")
    inspector = engine.create_engine_inspector()
    raw = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(raw)
    except (TypeError, ValueError):
        return 0, 0, None
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    n8 = sum(1 for lay in layers if "int8" in json.dumps(lay).lower())
    return len(layers), n8, info


def _bake_fp16(proto, engine_path: Path) -> Path:
    """An FP16 copy of an FP32 ONNX (decode and I/O in FP32) for strongly typed builds."""
    import onnx

    from ..artifacts import atomic_path
    from ..quantize.graph import analyse
    from ..quantize.qdq import to_fp16

    m = to_fp16(proto, analyse(proto))
    out = engine_path.with_name(engine_path.stem + ".fp16.onnx")
    with atomic_path(out) as tmp:
        onnx.save(m, str(tmp))
    G_LOGGER.info(f"TensorRT has no FP16 builder flag: baked {out.name} (FP16 backbone, FP32 decode) and built it "
                  "strongly typed")
    return out


def rebuild_command(onnx_path, engine_path, cfg: BuildConfig) -> str:
    parts = ["fyexport", "engine", str(onnx_path), "-o", str(engine_path), "--precision", cfg.precision,
             "--workspace", f"{cfg.workspace_gib:g}"]
    if cfg.max_batch:
        parts += ["--min-batch", str(cfg.min_batch or 1), "--opt-batch", str(cfg.opt_batch or cfg.max_batch),
                  "--max-batch", str(cfg.max_batch)]
    if cfg.precision == "int8" and cfg.calibrator != "qdq":
        parts += ["--calibrator", cfg.calibrator, "--images", str(cfg.calib_images)]
    return " ".join(shlex.quote(p) for p in parts)


def current_command() -> str:
    return " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])


def as_dict(cfg: BuildConfig) -> dict:
    return asdict(cfg)
