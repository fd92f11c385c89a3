"""Building a TensorRT engine from an ONNX file (TensorRT 10.3 to 11.1), through Polygraphy.

Polygraphy (``polygraphy.backend.trt``) makes every call into TensorRT: the network from the
ONNX with the bundled plugins registered (``NetworkFromOnnxPath``), the builder configuration
(``CreateConfig``: precision flags on 10.0-10.11, strong typing from 10.12 and on 11.x, the
optimization profile, the calibrator and calibration profile, the timing cache, the
optimization level, the workspace pool, DLA; TF32 is left on, TensorRT's default), the build
(``EngineBytesFromNetwork``) and the deserialization the inspector needs (``EngineFromBytes``).

What stays fyexport's, because Polygraphy does not do it:

* the choice of typing and Q/DQ flavour per release (:func:`preferred_qdq_flavour`), and the
  FP16 copy of an FP32 ONNX for strongly typed FP16 builds (10.12+ and 11.x have no
  undeprecated FP16 flag);
* checks before building that give one line instead of a failed build: the batch range, DLA
  (release, cores, precision, static shapes, layers without GPU fallback), a GPU present;
* the timing cache's refusal warnings (Polygraphy drops a cache TensorRT refuses without a
  word, and overwrites it; here the file is then left alone) and its atomic write; at
  optimization level 0 TensorRT ignores the cache, so it is neither read nor written;
* the calibration cache's provenance and the partial-calibration check (:mod:`.calibrator`);
* the silent-FP32 guard: after an INT8 build the DETAILED inspector JSON must show INT8
  convolutions, read from data types (never names), on both the 10.x and 11.x layouts;
* the metadata file ``<engine>.json`` (the ``.engine`` stays a pure TensorRT plan) with file
  names and hashes rather than absolute paths, and the command that rebuilds the engine.
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
    builds_strongly_typed,
    dla_supported,
    has_fp16_flag,
    has_implicit_int8,
    import_trt,
    polygraphy_logs,
    trt_logger,
    weak_typing_deprecated,
)
from .sidecar import sidecar_path

PRECISIONS = ("auto", "int8", "fp16", "fp32")  # auto: int8 for a Q/DQ ONNX, else fp32 (the ONNX as it is)
CALIBRATORS = ("qdq", "trt-entropy")
BATCH_FIELDS = ("min_batch", "opt_batch", "max_batch")


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
    dla_core: int | None = None  # build for this DLA core (Jetson); None: the GPU
    gpu_fallback: bool = True  # with a DLA core: layers DLA cannot run go to the GPU (else the build is refused)
    verbose: bool = False
    command: str | None = None

    def validate(self) -> None:
        require(self.precision in PRECISIONS, "precision",
                f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        require(self.calibrator in CALIBRATORS, "calibrator", f"must be qdq or trt-entropy, got {self.calibrator!r}")
        require(self.workspace_gib > 0, "workspace_gib", f"must be positive (GiB), got {self.workspace_gib}")
        require(0 <= self.optimization_level <= 5, "optimization_level",
                f"must be 0..5, got {self.optimization_level}")
        given = [(name, getattr(self, name)) for name in BATCH_FIELDS if getattr(self, name) is not None]
        for name, v in given:
            require(v >= 1, name, f"must be >= 1, got {v}")
        for (a, va), (b, vb) in zip(given, given[1:]):  # TensorRT's MIN <= OPT <= MAX, whichever are given
            require(va <= vb, b, f"must be at least `{a}` ({va}), got {vb}")
        require(self.calibrator != "trt-entropy" or bool(self.calib_images), "calib_images",
                "is needed by the trt-entropy calibrator")
        require(self.calib_batch >= 1, "calib_batch", f"must be >= 1, got {self.calib_batch}")
        require(self.calib_num_images >= 1, "calib_num_images", f"must be >= 1, got {self.calib_num_images}")
        require(self.dla_core is None or self.dla_core >= 0, "dla_core", f"must be >= 0, got {self.dla_core}")

    def batch_range(self) -> tuple:
        """(min, opt, max) of a dynamic-batch profile: the given ones, the rest from them."""
        lo = self.min_batch or 1
        hi = self.max_batch or max(lo, self.opt_batch or 1)
        return lo, self.opt_batch or hi, hi


BuildConfig = EngineConfig  # the 0.1 name, for one release


@dataclass
class EngineResult:
    engine: Path
    meta_path: Path
    meta: ArtifactMeta = field(default_factory=ArtifactMeta)
    seconds: float = 0.0


@dataclass
class _Precision:
    """How the network is built: from which ONNX, typed how, with which precision flags."""

    onnx: Path
    strongly_typed: bool
    fp16: bool = False
    int8: bool = False
    calibration: object = None  # a calibrator.EntropyCalibration for trt-entropy

    @property
    def flags(self) -> list:
        return [f for f, on in (("INT8", self.int8), ("FP16", self.fp16)) if on]


def preferred_qdq_flavour(trt) -> str:
    """The Q/DQ flavour to build an INT8 engine from on this TensorRT: the FP32-remainder model
    weakly typed with the INT8 and FP16 flags on 10.0-10.11, the FP16 model strongly typed from
    10.12 (which deprecated weak typing) and on 11.x (which removed it)."""
    return "trt-fp16" if builds_strongly_typed(trt) else "trt"


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
    _need_gpu(trt)
    profile = batch_profile(cfg, facts)
    _check_dla(trt, cfg, facts, profile)
    prec = _precision(trt, proto, facts, cfg, Path(onnx_path), engine_path)
    plugins = sorted({n.op_type for n in proto.graph.node if n.op_type.endswith("_TRT")})
    cache = TimingCache(trt, cfg)
    try:
        data = _build(trt, prec, cfg, facts.input, profile, cache, plugins)
        calibration = None
        if prec.calibration is not None:
            from .calibrator import finish

            calibration = finish(prec.calibration, engine_path.name)
        built = inspect_plan(trt, data, facts.input.name, cfg.dla_core)
        if cfg.precision == "int8":
            _check_int8(built.counts, engine_path)
        sidecar = _write_engine(trt, data, engine_path, Path(onnx_path), proto, facts, cfg, prec, built, profile,
                                calibration)
        cache.save()
    finally:
        cache.close()
        if prec.calibration is not None:
            prec.calibration.close()
    return EngineResult(engine_path, sidecar_path(engine_path), sidecar, time.time() - t0)


def _need_gpu(trt) -> None:
    from ..core.machine import gpu_count

    if gpu_count() == 0:
        raise InputError(f"TensorRT {trt.__version__} builds engines on an NVIDIA GPU, and the CUDA runtime sees none "
                         "here", "Build on the machine the engine will run on")


def batch_profile(cfg: EngineConfig, facts) -> dict | None:
    """{min, opt, max} input shapes of a dynamic-batch ONNX's profile; None for a static batch
    (then batch settings other than that batch are refused)."""
    dims = [d or -1 for d in facts.input.dims]
    if -1 in dims[1:]:
        raise InputError(f"input '{facts.input.name}' has the shape {dims}: fyexport builds engines with only the "
                         "batch dynamic", "Export with a fixed input size ('fyexport export --img-size N')")
    if dims[0] != -1:
        asked = {getattr(cfg, n) for n in BATCH_FIELDS} - {None}
        if asked - {dims[0]}:
            raise InputError(f"the ONNX has a static batch of {dims[0]}; export it with "
                             "'fyexport export --dynamic-batch' for a batch range")
        return None
    lo, opt, hi = cfg.batch_range()
    rest = dims[1:]
    return {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}


def _check_dla(trt, cfg: EngineConfig, facts, profile) -> None:
    """DLA's documented constraints, each refused in one line before building ("Working with
    DLA", "DLA Supported Layers and Restrictions", TensorRT 10 documentation)."""
    if cfg.dla_core is None:
        return
    if not dla_supported(trt):
        raise InputError(f"TensorRT {trt.__version__} has no DLA support (TensorRT 10.7 was the last 10.x release with "
                         "DLA, and 11.0-11.3 have none)", "Build for the GPU (no `dla_core`), or use JetPack's "
                         "TensorRT on a Jetson")
    cores = trt.Builder(trt_logger()).num_DLA_cores
    if cfg.dla_core >= cores:
        where = f"this machine has {cores} DLA cores" if cores else "this machine has no DLA (discrete GPUs have none)"
        raise InputError(f"`dla_core` {cfg.dla_core}: {where}", "DLA cores exist on Jetson AGX/NX Orin and Xavier"
                         if not cores else f"Use a core from 0 to {cores - 1}")
    if cfg.precision not in ("int8", "fp16"):
        raise InputError(f"DLA runs INT8 and FP16 layers only, not {cfg.precision}",
                         "Build with the int8 (Q/DQ) or fp16 `precision`")
    if profile is not None and not (profile["min"] == profile["opt"] == profile["max"]):
        raise InputError(f"DLA needs static shapes, but the batch range is {profile['min'][0]}..{profile['max'][0]}",
                         "Give one batch size (`min_batch` = `opt_batch` = `max_batch`)")


def _precision(trt, proto, facts, cfg: EngineConfig, onnx_path: Path, engine_path: Path) -> _Precision:
    strong = builds_strongly_typed(trt)
    if cfg.precision == "int8":
        return _int8_precision(trt, proto, facts, cfg, onnx_path, engine_path)
    if facts.qdq:
        raise InputError(f"{onnx_path}: has Q/DQ nodes; build it with the int8 `precision`"
                         if cfg.precision == "fp16" else
                         f"{onnx_path}: has Q/DQ nodes; an FP32 engine needs the FP32 ONNX")
    if cfg.precision == "fp16" and not facts.fp16:
        if not strong:  # 10.0-10.11: the FP16 flag is those releases' own way
            return _Precision(onnx_path, False, fp16=True)
        return _Precision(_bake_fp16(proto, engine_path, trt), True)  # 10.12+ and 11: precision from the graph
    return _Precision(onnx_path, strong or facts.fp16)


def _int8_precision(trt, proto, facts, cfg: EngineConfig, onnx_path: Path, engine_path: Path) -> _Precision:
    if cfg.calibrator == "trt-entropy":
        if not has_implicit_int8(trt):
            raise FyexportError(f"TensorRT {trt.__version__} removed implicit INT8 calibration "
                                "(IInt8EntropyCalibrator2, BuilderFlag.INT8)",
                                "Use the qdq `calibrator` with the Q/DQ ONNX from 'fyexport calibrate' "
                                "(model.qdq.fp16.onnx on TensorRT 11)")
        if facts.qdq:
            raise InputError(f"{onnx_path}: already has Q/DQ; the trt-entropy `calibrator` needs the FP32 ONNX")
        from .calibrator import entropy_calibration

        if weak_typing_deprecated(trt):
            G_LOGGER.warning(f"TensorRT {trt.__version__} deprecates implicit INT8 calibration and weak typing: the "
                             "trt-entropy `calibrator` is kept for comparison with Q/DQ", once=True)
        cal = entropy_calibration(trt, proto, onnx_path, engine_path, cfg.calib_images, cfg.calib_num_images,
                                  cfg.calib_batch)
        return _Precision(onnx_path, False, fp16=True, int8=True, calibration=cal)
    if not facts.qdq:
        raise InputError(f"{onnx_path}: INT8 with the qdq `calibrator` needs a Q/DQ ONNX",
                         "Run 'fyexport calibrate MODEL.onnx --images DIR -o OUT' and build from "
                         "OUT/model.qdq.fp16.onnx (TensorRT 10.12 and newer) or OUT/model.qdq.onnx (10.0-10.11)")
    if not builds_strongly_typed(trt):  # 10.0-10.11: weak typing is these releases' own way
        return _Precision(onnx_path, False, fp16=True, int8=True)
    if not facts.fp16:
        G_LOGGER.warning(f"{onnx_path}: Q/DQ model with an FP32 remainder: under TensorRT {trt.__version__}'s strong "
                         "typing every non-quantized layer runs in FP32. Build from model.qdq.fp16.onnx for FP16 there")
    return _Precision(onnx_path, True)


class TimingCache:
    """The `timing_cache` file as Polygraphy reads and writes it: through temporary files, so
    that a cache TensorRT refuses (another release, another GPU) is warned about and left alone,
    and the new cache replaces the file atomically after a successful build."""

    def __init__(self, trt, cfg: EngineConfig):
        import tempfile

        self.path = Path(cfg.timing_cache) if cfg.timing_cache else None
        self.load = self.out = None
        self.used = False
        if self.path is None:
            return
        if cfg.optimization_level == 0:
            G_LOGGER.warning(f"{self.path}: TensorRT ignores the timing cache at optimization level 0; the file is "
                             "neither read nor written")
            self.path = None
            return
        old = self.path.read_bytes() if self.path.exists() else b""
        if old and not self._accepted(trt, old):
            self.path = None
            return
        self.load, self.out = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.load.write(old)
        self.load.flush()
        self.load.seek(0)
        self.used = True

    def _accepted(self, trt, data: bytes) -> bool:
        config = trt.Builder(trt_logger()).create_builder_config()
        with polygraphy_logs(f"{self.path}: reading the timing cache"):
            cache = config.create_timing_cache(data)
            if cache is None:
                G_LOGGER.warning(f"{self.path}: TensorRT {trt.__version__} cannot read this timing cache (made by "
                                 "another TensorRT version?); building without it, the file is left as it is")
                return False
            if not config.set_timing_cache(cache, False):
                G_LOGGER.warning(f"{self.path}: this timing cache was made on another GPU; building without it, the "
                                 "file is left as it is")
                return False
        return True

    def save(self) -> None:
        """Write the cache TensorRT updated over the file (after a successful build)."""
        if self.out is not None:
            self.out.seek(0)
            data = self.out.read()
            if data:
                write_bytes(self.path, data)

    def close(self) -> None:
        for f in (self.load, self.out):
            if f is not None:
                f.close()
        self.load = self.out = None


def _build(trt, prec: _Precision, cfg: EngineConfig, image_input, profile, cache: TimingCache,
           plugins: list) -> bytes:
    """The serialized engine, built by Polygraphy (a static input gets its own shape as profile,
    which Polygraphy would otherwise fill in with a warning)."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )

    cal = prec.calibration
    input_name = image_input.name
    shapes = (profile["min"], profile["opt"], profile["max"]) if profile else (list(image_input.dims),) * 3
    profiles = [Profile().add(input_name, *shapes)]
    config = CreateConfig(
        tf32=True, fp16=prec.fp16, int8=prec.int8, profiles=profiles, calibrator=cal.calibrator if cal else None,
        load_timing_cache=cache.load, builder_optimization_level=int(cfg.optimization_level),
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(cfg.workspace_gib * (1 << 30))},
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED, use_dla=cfg.dla_core is not None,
        allow_gpu_fallback=cfg.gpu_fallback)

    def finish_config(builder, network, config) -> None:
        if cal is not None and profile is not None:
            _set_calibration_profile(builder, config, input_name, cal.shape)
        if cfg.dla_core is not None:
            _place_on_dla(config, network, cfg)

    loader = EngineBytesFromNetwork(NetworkFromOnnxPath(str(prec.onnx), strongly_typed=prec.strongly_typed),
                                    PostprocessConfig(config, finish_config), save_timing_cache=cache.out)
    hint = f"TensorRT's plugin library (libnvinfer_plugin) must provide {', '.join(plugins)}" if plugins else None
    what = f"{prec.onnx}: TensorRT {trt.__version__} could not build the engine"
    with polygraphy_logs(what, hint), progress(f"building {cfg.precision} engine (TensorRT {trt.__version__})", None):
        return bytes(loader())


def _set_calibration_profile(builder, config, input_name: str, shape) -> None:
    """TensorRT calibrates at the calibration profile's OPT shape (MIN and MAX are overwritten
    by it), whatever ``get_batch_size`` says: make it the calibrator's batch shape, so that
    every image of every batch is used and nothing is read past its buffers."""
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shape, shape, shape)
    if not config.set_calibration_profile(profile):
        raise FyexportError(f"TensorRT refused the calibration profile {list(shape)} for '{input_name}'")


def _place_on_dla(config, network, cfg: EngineConfig) -> None:
    """The DLA core (Polygraphy sets core 0), and the layers DLA cannot run: on the GPU with
    `gpu_fallback`, else the build is refused in one line."""
    config.DLA_core = int(cfg.dla_core)
    if config.DLA_core != cfg.dla_core:
        raise InputError(f"TensorRT refused DLA core {cfg.dla_core}")
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    gpu = [lay for lay in layers if not config.can_run_on_DLA(lay)]
    if not gpu:
        G_LOGGER.info(f"all {len(layers)} layers can run on DLA core {cfg.dla_core}")
        return
    kinds = sorted({str(lay.type).split(".")[-1] for lay in gpu})
    if not cfg.gpu_fallback:
        raise InputError(f"DLA cannot run {len(gpu)} of the {len(layers)} layers ({', '.join(kinds)}; the first is "
                         f"{gpu[0].name}), and GPU fallback is off", "Turn on `gpu_fallback`, or build for the GPU")
    G_LOGGER.info(f"DLA core {cfg.dla_core}: {len(gpu)} of {len(layers)} layers run on the GPU (DLA cannot run "
                  f"{', '.join(kinds)})")


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


@dataclass
class BuiltPlan:
    """What the engine itself says once deserialized."""

    counts: dict | None
    layers_json: dict | None
    input_dtype: str


def inspect_plan(trt, data: bytes, input_name: str, dla_core: int | None = None) -> BuiltPlan:
    """Layer counts, the inspector's JSON and the input's data type of a serialized plan."""
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes

    def runtime():
        rt = trt.Runtime(trt_logger())
        if dla_core is not None:
            rt.DLA_core = int(dla_core)
        return rt

    with polygraphy_logs("TensorRT could not load the engine it just built"):
        engine = EngineFromBytes(data, runtime=runtime)()
    dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(input_name))).name
    raw = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        info = json.loads(raw)
    except (TypeError, ValueError):
        return BuiltPlan(None, None, dtype)
    return BuiltPlan(layer_counts(info), info, dtype)


def _write_engine(trt, data: bytes, engine_path: Path, onnx_path: Path, proto, facts, cfg: EngineConfig,
                  prec: _Precision, built: BuiltPlan, profile, calibration) -> ArtifactMeta:
    """The plan, its metadata file and the inspector's layer JSON; returns the metadata."""
    from ..core.artifacts import sha256_file, write_json
    from ..core.machine import gpu_facts
    from ..onnx.facts import read_meta

    write_bytes(engine_path, data)
    meta = read_meta(proto)
    counts = built.counts or {}
    flags = prec.flags + (["GPU_FALLBACK"] if cfg.dla_core is not None and cfg.gpu_fallback else [])
    sidecar = {
        "format": "fyexport-engine", "version": 1, "tensorrt": str(trt.__version__), **gpu_facts(),
        "precision": cfg.precision, "strongly_typed": bool(prec.strongly_typed or not has_fp16_flag(trt)),
        "flags": flags, "calibrator": cfg.calibrator if cfg.precision == "int8" else None, "dla_core": cfg.dla_core,
        **{k: counts.get(k) for k in ("layers", "int8_layers", "convs", "int8_convs")},
        "input": {"name": facts.input.name, "shape": [d or -1 for d in facts.input.dims], "dtype": built.input_dtype,
                  "profile": profile},
        "outputs": list(facts.outputs),
        **{k: meta.to_dict().get(k) for k in ("img_size", "preprocessing", "names", "nc", "stride", "anchors",
                                              "calibration", "prune", "nms")},
        "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path)},
        "build_command": cfg.command or rebuild_command(onnx_path, engine_path, cfg, profile),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if calibration is not None:
        sidecar["trt_calibration"] = calibration
    write_json(sidecar_path(engine_path), sidecar)
    if built.layers_json is not None:
        write_json(engine_path.with_name(engine_path.name + ".layers.json"), built.layers_json)
    return ArtifactMeta.from_dict(sidecar, str(sidecar_path(engine_path)))


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
    """A convolution, fused ones included: CaskConvolution, and ConvActPool (convolution +
    activation + pooling, its weights under "ConvWeights")."""
    kinds = (str(lay.get("ParameterType", "")), str(lay.get("LayerType", "")), str(lay.get("ConvParameterType", "")))
    return any(k in ("Convolution", "Deconvolution", "ConvActPool") or "convolution" in k.lower() for k in kinds)


def _tensor_type(t) -> str:
    if not isinstance(t, dict):
        return ""
    return str(t.get("Datatype") or t.get("DataType") or t.get("Format/Datatype") or t.get("Format") or "")


def _runs_int8(lay: dict) -> bool:
    tensors = list(lay.get("Inputs") or []) + list(lay.get("Outputs") or [])
    weights = [w for w in (lay.get("Weights"), lay.get("ConvWeights")) if isinstance(w, dict)]
    return any(_INT8.search(_tensor_type(t)) for t in tensors) or any(_INT8.search(str(w.get("Type", "")))
                                                                       for w in weights)


def _bake_fp16(proto, engine_path: Path, trt) -> Path:
    """An FP16 copy of an FP32 ONNX (decode and I/O in FP32) for strongly typed builds."""
    import onnx

    from ..core.artifacts import atomic_path
    from ..quantize.graph import analyse
    from ..quantize.qdq import to_fp16

    m = to_fp16(proto, analyse(proto))
    out = engine_path.with_name(engine_path.stem + ".fp16.onnx")
    with atomic_path(out) as tmp:
        onnx.save(m, str(tmp))
    G_LOGGER.info(f"TensorRT {trt.__version__} builds FP16 strongly typed: baked {out.name} (FP16 backbone, FP32 "
                  "decode) and built it")
    return out


def rebuild_command(onnx_path, engine_path, cfg: EngineConfig, profile: dict | None = None) -> str:
    """The command that rebuilds the engine, to run in the engine's folder (paths relative to
    it, so identical builds in different folders record the same command): every setting that
    changes the engine, the batch range as built."""
    engine_path = Path(engine_path)
    onnx_rel = os.path.relpath(Path(onnx_path).resolve(), engine_path.resolve().parent)
    parts = ["fyexport", "engine", onnx_rel, "-o", engine_path.name, "--precision", cfg.precision,
             "--workspace", f"{cfg.workspace_gib:g}", "--opt-level", str(cfg.optimization_level)]
    if profile is not None:
        parts += ["--min-batch", str(profile["min"][0]), "--opt-batch", str(profile["opt"][0]),
                  "--max-batch", str(profile["max"][0])]
    if cfg.precision == "int8" and cfg.calibrator != "qdq":
        parts += ["--calibrator", cfg.calibrator, "--images", str(cfg.calib_images)]
    if cfg.dla_core is not None:
        parts += ["--dla-core", str(cfg.dla_core)] + ([] if cfg.gpu_fallback else ["--no-gpu-fallback"])
    return " ".join(shlex.quote(p) for p in parts)


def current_command() -> str:
    return " ".join(shlex.quote(a) for a in ["fyexport", *sys.argv[1:]])
