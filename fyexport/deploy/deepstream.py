"""DeepStream: an nvinfer config, the labels, the bounding-box parser's source and a
deepstream-app example for a model exported by fyexport.

:func:`write_deepstream` takes an ONNX model (FP32, FP16 or Q/DQ), a TensorRT engine with its
``<engine>.json``, or a build folder, and writes into the output folder:

* ``config_infer_primary_fyexport.txt``: the nvinfer config (``[property]`` and
  ``[class-attrs-all]``), every path in it relative to the folder;
* ``labels.txt``: the class names from the model's metadata, one a line;
* the model, copied (an engine with its ``.json``), and ``calib.cache`` for a Q/DQ ONNX, so
  the folder moves to the DeepStream machine as one;
* ``nvdsinfer_custom_impl_fyexport/``: the parser (``fyexport_parse_core.h``, plain C++17, and
  ``nvdsparsebbox_fyexport.cpp``, the nvinfer entry points) and its Makefile;
* ``deepstream_app_config.txt``: a deepstream-app example around the config.

What the config says and why comes from reading DeepStream 6.4, 7.0 and 7.1 themselves
(gst-nvinfer's property parser and ``get_converted_buffer``; nvdsinfer's model builder, its
NMS clustering and its label parsing):

* A build folder gives its ``model.engine`` when the engine's TensorRT is the one of the
  target DeepStream release (6.4 and 7.0 run TensorRT 8.6, 7.1 runs 10.3: a plan does not
  load elsewhere), else ``model.qdq.onnx``, the weakly typed Q/DQ flavour (nvinfer never
  builds strongly typed networks; fyexport itself builds that flavour before TensorRT 10.12),
  else ``model.qdq.fp16.onnx``, else ``model.onnx``.
* network-mode: FP32 ONNX 0, FP16 ONNX 2, engine its own precision (nvinfer only deserializes
  it). A Q/DQ ONNX gets 3 (INT8 + FP16; DeepStream 7.0 and later) or 1 (6.4, which has no
  mode 3), with ``int8-calib-file``: nvinfer sets TensorRT's INT8 flag only when that file is
  readable (else it falls back to FP16 with a warning), and TensorRT takes the scales from
  the Q/DQ nodes and does not use the calibrator.
* Preprocessing: ``net-scale-factor=1/255``, offsets 0, RGB, ``maintain-aspect-ratio=1``,
  ``symmetric-padding=1`` (the letterbox's centred padding, split as fyexport splits it),
  ``scaling-filter=1`` (bilinear like fyexport's INTER_LINEAR; nvinfer's default is nearest)
  on the GPU. What still differs (the padding colour, the rounding of the resized size, odd
  frame sizes) is written in the config's comments and measured by the tests.
* Clustering: the parser runs fyexport's own NMS (``cluster-mode=4``, no clustering by
  nvinfer), so DeepStream keeps the boxes fyexport keeps; ``cluster="nvinfer"`` gives the
  thresholded candidates to nvinfer's NMS instead (``cluster-mode=2``: per-class ``topk``
  instead of fyexport's ``max_det`` over all classes).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..core.config import require
from ..core.errors import InputError, InternalError
from ..core.meta import ArtifactMeta

CONFIG_FILE = "config_infer_primary_fyexport.txt"
APP_CONFIG_FILE = "deepstream_app_config.txt"
LABELS_FILE = "labels.txt"
CALIB_CACHE = "calib.cache"
PARSER_DIR = "nvdsinfer_custom_impl_fyexport"
PARSER_LIB = "libnvdsinfer_custom_impl_fyexport.so"
PARSER_SOURCES = ("fyexport_parse_core.h", "nvdsparsebbox_fyexport.cpp")
PARSE_FUNC = "NvDsInferParseFyexport"
CANDIDATES_FUNC = "NvDsInferParseFyexportCandidates"
MANIFEST = "manifest.json"
BUILD_ENGINE = "model.engine"
BUILD_ONNX = ("model.qdq.onnx", "model.qdq.fp16.onnx", "model.onnx")  # first found is used
DECODED_OUTPUT = "output"
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
CLUSTERS = ("parser", "nvinfer")
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2, "int8+fp16": 3}


@dataclass(frozen=True)
class DsRelease:
    """A DeepStream release: the TensorRT and CUDA it ships (its README) and whether its
    nvinfer accepts network-mode=3 (INT8 + FP16; absent from 6.4's property parser)."""

    version: str
    tensorrt: str
    cuda: str
    best_mode: bool


DS_RELEASES = {r.version: r for r in (DsRelease("6.4", "8.6", "12.2", False), DsRelease("7.0", "8.6", "12.2", True),
                                      DsRelease("7.1", "10.3", "12.6", True))}


@dataclass(frozen=True)
class DeepStreamConfig:
    """What to write: ``source`` (ONNX, engine or build folder) into ``out_dir`` for DeepStream
    ``deepstream``; the score threshold, NMS IoU and detections kept (fyexport's defaults);
    ``batch_size`` (None: the model's static batch, the engine profile's maximum, or 1);
    ``cluster``: ``parser`` (fyexport's NMS in the parser) or ``nvinfer`` (nvinfer's NMS)."""

    source: Path | None = None
    out_dir: Path | None = None
    deepstream: str = "7.1"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    batch_size: int | None = None
    cluster: str = "parser"
    gpu_id: int = 0

    def validate(self) -> None:
        require(self.source is not None, "source", "is needed: an ONNX model, an engine or a build folder")
        require(self.out_dir is not None, "out_dir", "is needed: the folder to write")
        require(self.deepstream in DS_RELEASES, "deepstream",
                f"must be one of {', '.join(DS_RELEASES)}, got {self.deepstream!r}")
        require(self.cluster in CLUSTERS, "cluster", f"must be parser or nvinfer, got {self.cluster!r}")
        require(0 <= self.conf_thres < 1, "conf_thres", f"must be in [0, 1), got {self.conf_thres}")
        require(0 < self.iou_thres <= 1, "iou_thres", f"must be in (0, 1], got {self.iou_thres}")
        require(self.max_det >= 1, "max_det", f"must be >= 1, got {self.max_det}")
        require(self.batch_size is None or self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.gpu_id >= 0, "gpu_id", f"must be >= 0, got {self.gpu_id}")


@dataclass(frozen=True)
class GraphNms:
    """The NMS an export appended to the graph (its thresholds are fixed in the graph)."""

    kind: str
    conf_thres: float
    iou_thres: float
    topk: int


@dataclass(frozen=True)
class ModelFacts:
    """What the nvinfer config needs from the artifact."""

    path: Path
    kind: str  # onnx | engine
    precision: str  # fp32 | fp16 | int8
    names: tuple
    hw: tuple
    batch: int | None  # static batch; None when the batch axis is dynamic
    batch_range: tuple | None  # an engine profile's (min, max) batch
    nms: GraphNms | None  # None: the decoded output 'output'
    tensorrt: str | None = None  # the engine's TensorRT
    flavour: str = ""  # a Q/DQ ONNX's (onnx_facts.onnx_precision): s8s8, or s8s8+fp16 for the FP16 remainder


@dataclass(frozen=True)
class DeepStreamResult:
    out_dir: Path
    config: Path
    labels: Path
    app_config: Path
    parser_dir: Path
    model: Path  # the copy the config points at
    source: Path  # the artifact it was made from
    network_mode: int
    batch_size: int
    num_classes: int
    layout: str  # decoded | nms
    notes: tuple  # what the user must know (one line each)


# -- the artifact ---------------------------------------------------------------------------------

def resolve_source(source: Path, release: DsRelease) -> tuple[Path, tuple]:
    """The artifact to deploy: ``source`` itself, or the one a build folder's choice rule picks
    (module docstring), with a note when its engine is passed over."""
    source = Path(source)
    if not source.is_dir():
        return source, ()
    if not (source / MANIFEST).is_file():
        raise InputError(f"{source}: a folder without {MANIFEST} (not a fyexport build folder)",
                         "Give a build folder, an ONNX model or a TensorRT engine")
    notes = []
    engine = source / BUILD_ENGINE
    if engine.is_file():
        from ..trt.sidecar import read_sidecar

        built = str(read_sidecar(engine).get("tensorrt") or "")
        if _same_minor(built, release.tensorrt):
            return engine, ()
        notes.append(f"{engine}: built with TensorRT {built or 'unknown'}, but DeepStream {release.version} runs "
                     f"TensorRT {release.tensorrt}, where it cannot load; the ONNX is deployed instead")
    for name in BUILD_ONNX:
        if (source / name).is_file():
            return source / name, tuple(notes)
    raise InputError(f"{source}: no {BUILD_ENGINE} nor {', '.join(BUILD_ONNX)} in this build folder",
                     "Run 'fyexport build' into it first")


def _same_minor(version: str, minor: str) -> bool:
    return version == minor or version.startswith(minor + ".")


def read_model_facts(path: Path) -> ModelFacts:
    from ..trt import ENGINE_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return _onnx_facts(Path(path))
    if suffix in ENGINE_SUFFIXES:
        return _engine_facts(Path(path))
    raise InputError(f"{path}: expected an ONNX model (.onnx), a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}) or a "
                     "fyexport build folder")


def _onnx_facts(path: Path) -> ModelFacts:
    from ..onnx.facts import check_onnx_file, graph_facts, io_shapes, onnx_precision, read_meta

    proto = check_onnx_file(path)
    precision, flavour = onnx_precision(proto)
    if flavour.startswith("u8s8"):
        raise InputError(f"{path}: the ONNX Runtime CPU flavour (U8S8 Q/DQ), which TensorRT cannot build",
                         "Give model.qdq.onnx or model.qdq.fp16.onnx from the same folder")
    facts = graph_facts(proto)
    meta = read_meta(proto)
    names = _names(meta, path)
    dims = facts.input.dims
    if len(dims) != 4 or dims[1] != 3 or not all(dims[2:]):
        raise InputError(f"{path}: the image input {facts.input.name} is {list(dims)}, not [batch, 3, H, W] with a "
                         "fixed size", "Export it with 'fyexport export'")
    nms = _graph_nms(meta, facts.outputs, path)
    if nms is None:
        out_dims = io_shapes(proto)[1][0][1]
        if len(out_dims) != 3 or out_dims[2] != len(names) + 5:
            raise InputError(f"{path}: output 'output' is {out_dims}, not [batch, N, 5 + {len(names)} classes]",
                             "Export it with 'fyexport export'")
    return ModelFacts(path, "onnx", precision, names, tuple(dims[2:]), dims[0], None, nms, flavour=flavour)


def _engine_facts(path: Path) -> ModelFacts:
    from ..core.errors import check_file
    from ..trt.sidecar import read_sidecar, sidecar_path

    check_file(path, "TensorRT engine")
    meta = read_sidecar(path)
    if meta.engine is None:
        raise InputError(f"{path}: no {sidecar_path(path).name} beside it, so its inputs, outputs and classes are "
                         "unknown", "Build the engine with 'fyexport engine', or give the ONNX")
    names = _names(meta, path)
    shape = list((meta.engine.input or {}).get("shape") or [])
    if len(shape) != 4 or not meta.img_size or meta.precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"{sidecar_path(path)}: incomplete engine metadata (input shape, img_size, precision)",
                         "Rebuild the engine with 'fyexport engine'")
    profile = meta.engine.profile or None
    batch_range = (int(profile["min"][0]), int(profile["max"][0])) if shape[0] == -1 and profile else None
    nms = _graph_nms(meta, tuple(meta.engine.outputs), path)
    return ModelFacts(path, "engine", meta.precision, names, tuple(meta.img_size),
                      None if shape[0] == -1 else int(shape[0]), batch_range, nms, str(meta.engine.tensorrt or ""))


def _names(meta: ArtifactMeta, path: Path) -> tuple:
    names = list(meta.names)
    if not names:
        raise InputError(f"{path}: no class names in its metadata (not exported by fyexport)",
                         "Export it with 'fyexport export'")
    for n in names:  # nvinfer skips empty lines of labels.txt and splits a line at ';'
        if not isinstance(n, str) or not n.strip() or any(c in n for c in ";\r\n"):
            raise InputError(f"{path}: class name {n!r} cannot be a DeepStream label (empty, or has ';' or a line "
                             "break)", "Rename the class in the checkpoint and export again")
    return tuple(names)


def _graph_nms(meta: ArtifactMeta, outputs: tuple, path: Path) -> GraphNms | None:
    if tuple(outputs) == (DECODED_OUTPUT,):
        return None
    settings = meta.nms
    if set(outputs) != set(NMS_OUTPUTS) or settings is None:
        raise InputError(f"{path}: outputs {', '.join(outputs) or 'none'}; the parser reads 'output' or "
                         f"{', '.join(NMS_OUTPUTS)}", "Export it with 'fyexport export' (with or without NMS)")
    return GraphNms(str(settings.kind), float(settings.conf_thres), float(settings.iou_thres), int(settings.topk))


# -- the choices --------------------------------------------------------------------------------

def network_mode(facts: ModelFacts, release: DsRelease) -> int:
    if facts.kind == "onnx" and facts.precision == "int8":
        return NETWORK_MODES["int8+fp16"] if release.best_mode else NETWORK_MODES["int8"]
    return NETWORK_MODES[facts.precision]


def choose_batch(facts: ModelFacts, requested: int | None) -> int:
    """nvinfer's batch-size: the static batch, or one the engine profile (or nvinfer's own
    profile for a dynamic ONNX, 1 to batch-size) serves, partial batches included."""
    if facts.batch is not None:
        if requested not in (None, facts.batch):
            raise InputError(f"{facts.path}: a static batch of {facts.batch}, so batch-size cannot be {requested}",
                             "Export it with 'fyexport export --dynamic-batch' for another batch size")
        return facts.batch
    if facts.batch_range is not None:
        lo, hi = facts.batch_range
        if lo > 1:
            raise InputError(f"{facts.path}: the engine's profile starts at batch {lo}, and nvinfer sends smaller "
                             "batches when fewer frames are ready",
                             "Rebuild the engine with 'fyexport engine ... --min-batch 1'")
        if requested is not None and requested > hi:
            raise InputError(f"{facts.path}: batch-size {requested} exceeds the engine profile's maximum of {hi}",
                             f"Use a `batch_size` of {hi} or rebuild the engine with "
                             f"'fyexport engine ... --max-batch {requested}'")
        return requested or hi
    return requested or 1


# -- the files ------------------------------------------------------------------------------------

def _num(x: float) -> str:
    return repr(float(x))


def _model_lines(facts: ModelFacts, mode: int, release: DsRelease, calib: bool) -> list:
    if facts.kind == "engine":
        return [f"# built with TensorRT {facts.tensorrt or 'unknown'}: nvinfer deserializes it and does not rebuild; a "
                f"plan loads only on its TensorRT ({release.tensorrt} in DeepStream {release.version}) and GPU",
                f"model-engine-file={facts.path.name}",
                "# the engine's precision (informative: nvinfer builds nothing from an engine)",
                f"network-mode={mode}"]
    lines = [f"onnx-file={facts.path.name}",
             "# nvinfer builds the engine at the first start and writes it beside the model as",
             "# <onnx-file>_b<batch-size>_gpu<gpu-id>_<mode>.engine; point model-engine-file at it to skip the rebuild"]
    if facts.precision == "int8":
        lines += ["# Q/DQ ONNX: nvinfer sets TensorRT's INT8 flag only when int8-calib-file is a readable file (else",
                  "# it builds FP16); TensorRT takes the scales from the Q/DQ nodes and does not use the calibrator"]
        lines += [f"int8-calib-file={CALIB_CACHE}"] if calib else \
                 [f"# int8-calib-file={CALIB_CACHE}  (no calib.cache was beside the model: copy it here first)"]
        lines += ["# 1=INT8 (layers outside Q/DQ pairs in FP32)" + ("; 3=INT8+FP16, the flags fyexport builds "
                                                                     "model.qdq.onnx with before TensorRT 10.12"
                                                                     if release.best_mode else "")]
    else:
        lines += ["# 0=FP32 1=INT8 2=FP16: the precision of the model"]
    return lines + [f"network-mode={mode}"]


def _preprocess_lines() -> list:
    from ..data.images import PAD_VALUE

    return [
        "# fyexport's letterbox: RGB, x/255, aspect ratio kept, centred padding (split as fyexport splits it)",
        f"net-scale-factor={_num(1 / 255)}",
        "offsets=0;0;0",
        "model-color-format=0",
        "maintain-aspect-ratio=1",
        "symmetric-padding=1",
        "# bilinear resize on the GPU, as fyexport's cv2 INTER_LINEAR (nvinfer's default filter is nearest; on Jetson",
        "# its default compute is the VIC)",
        "scaling-filter=1",
        "scaling-compute-hw=1",
        "# Differences that remain: nvinfer pads with black (0), fyexport and YOLOv7's training with grey",
        f"# {PAD_VALUE}, and nvinfer has no padding colour setting; nvinfer truncates the resized side where",
        "# fyexport rounds it (1 px at most); nvinfer drops the last column or row of a frame of odd size (decoded",
        "# video is even); the frame comes from nvstreammux, which scales it to its width x height first (set",
        "# them to the source resolution).",
    ]


def _cluster_lines(facts: ModelFacts, cfg: DeepStreamConfig) -> tuple[list, list]:
    """([property] lines and [class-attrs-all] lines) of the parser and the clustering."""
    parser_lines = [f"custom-lib-path={PARSER_DIR}/{PARSER_LIB}",
                    f"output-blob-names={DECODED_OUTPUT if facts.nms is None else ';'.join(NMS_OUTPUTS)}"]
    attrs = [f"pre-cluster-threshold={_num(cfg.conf_thres)}"]
    if facts.nms is not None:
        n = facts.nms
        return parser_lines + [
            f"# the graph ends in NMS ({n.kind}; score > {n.conf_thres}, IoU {n.iou_thres}, at most {n.topk}, fixed at",
            "# export): the parser reads its four outputs; nvinfer clusters nothing",
            f"parse-bbox-func-name={PARSE_FUNC}", "cluster-mode=4"], attrs + [f"topk={n.topk}"]
    if cfg.cluster == "parser":
        return parser_lines + [
            f"# the parser runs fyexport's NMS (IoU {cfg.iou_thres}, at most {cfg.max_det} boxes, compiled in: make "
            "NMS_IOU=... MAX_DET=...)",
            "# and keeps score > pre-cluster-threshold; 4 = nvinfer clusters nothing more",
            f"parse-bbox-func-name={PARSE_FUNC}", "cluster-mode=4"], attrs + [f"topk={cfg.max_det}"]
    return parser_lines + [
        "# the parser returns the candidates (score > pre-cluster-threshold); 2 = nvinfer's NMS per class, with",
        "# topk per class (fyexport keeps max_det over all classes)",
        f"parse-bbox-func-name={CANDIDATES_FUNC}", "cluster-mode=2"], \
        attrs + [f"nms-iou-threshold={_num(cfg.iou_thres)}", f"topk={cfg.max_det}"]


def nvinfer_config(facts: ModelFacts, cfg: DeepStreamConfig, mode: int, batch: int, calib: bool) -> str:
    """The nvinfer config text (``[property]`` and ``[class-attrs-all]``)."""
    from .. import __version__

    release = DS_RELEASES[cfg.deepstream]
    props, attrs = _cluster_lines(facts, cfg)
    lines = [f"# nvinfer config for {facts.path.name} ({len(facts.names)} classes, input {facts.hw[0]}x{facts.hw[1]}), "
             f"written by fyexport {__version__} for DeepStream {release.version}.",
             f"# Build the parser first: make -C {PARSER_DIR}", "", "[property]", f"gpu-id={cfg.gpu_id}",
             *_model_lines(facts, mode, release, calib), f"batch-size={batch}", *_preprocess_lines(),
             "network-type=0", "process-mode=1", "gie-unique-id=1", f"num-detected-classes={len(facts.names)}",
             f"labelfile-path={LABELS_FILE}", *props, "", "[class-attrs-all]", *attrs]
    return "\n".join(lines) + "\n"


def _package_text(name: str) -> str:
    return (resources.files("fyexport.deploy") / "deepstream_parser" / name).read_text()


def _fill(template: str, values: dict) -> str:
    for k, v in values.items():
        template = template.replace(f"@{k}@", str(v))
    if "@" in template.replace("$@", ""):
        raise InternalError("unfilled placeholder in a DeepStream template of the package")
    return template


def app_config(batch: int, gpu_id: int) -> str:
    rows = 1
    while rows * rows < batch:
        rows += 1
    return _fill(_package_text("deepstream_app_config.txt.in"),
                 {"BATCH": batch, "GPU": gpu_id, "ROWS": rows, "COLUMNS": -(-batch // rows), "CONFIG": CONFIG_FILE})


def parser_files(cfg: DeepStreamConfig) -> dict:
    """{file name: text} of the parser folder."""
    release = DS_RELEASES[cfg.deepstream]
    files = {name: _package_text(name) for name in PARSER_SOURCES}
    files["Makefile"] = _fill(_package_text("Makefile.in"), {"CUDA_VER": release.cuda, "NMS_IOU": _num(cfg.iou_thres),
                                                            "MAX_DET": cfg.max_det})
    return files


def _copy(src: Path, dst: Path) -> None:
    from ..core.artifacts import atomic_path

    if dst.exists() and dst.resolve() == src.resolve():
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_deepstream(cfg: DeepStreamConfig) -> DeepStreamResult:
    """Write the nvinfer config, labels, model copy, parser source and deepstream-app example
    for ``cfg.source`` into ``cfg.out_dir`` (see the module docstring)."""
    from ..core.artifacts import write_text
    from ..trt.sidecar import sidecar_path

    cfg.validate()
    release = DS_RELEASES[cfg.deepstream]
    artifact, notes = resolve_source(Path(cfg.source), release)
    facts = read_model_facts(artifact)
    mode, batch = network_mode(facts, release), choose_batch(facts, cfg.batch_size)
    notes = list(notes)
    if facts.kind == "engine" and not _same_minor(facts.tensorrt or "", release.tensorrt):
        notes.append(f"{artifact}: built with TensorRT {facts.tensorrt or 'unknown'}, but DeepStream "
                     f"{release.version} runs TensorRT {release.tensorrt}; nvinfer will fail to load it")
    out = Path(cfg.out_dir)
    calib_src = artifact.parent / CALIB_CACHE
    calib = facts.kind == "onnx" and facts.precision == "int8" and calib_src.is_file()
    if facts.kind == "onnx" and facts.precision == "int8" and not calib:
        notes.append(f"{artifact}: no {CALIB_CACHE} beside it, so nvinfer would build FP16 without INT8; copy "
                     f"{CALIB_CACHE} from 'fyexport calibrate' into {out} and uncomment int8-calib-file")
    if facts.kind == "onnx" and facts.flavour.endswith("+fp16"):
        notes.append(f"{artifact}: the Q/DQ flavour for strongly typed builds, which nvinfer does not do; "
                     "model.qdq.onnx from the same folder is the flavour for nvinfer's weakly typed build")
    config_text = nvinfer_config(facts, cfg, mode, batch, calib)  # everything refused before anything is written
    _copy(artifact, out / artifact.name)
    if facts.kind == "engine":
        _copy(sidecar_path(artifact), out / sidecar_path(artifact).name)
    if calib:
        _copy(calib_src, out / CALIB_CACHE)
    for name, text in parser_files(cfg).items():
        write_text(out / PARSER_DIR / name, text)
    write_text(out / LABELS_FILE, "\n".join(facts.names) + "\n")
    write_text(out / APP_CONFIG_FILE, app_config(batch, cfg.gpu_id))
    write_text(out / CONFIG_FILE, config_text)
    return DeepStreamResult(out, out / CONFIG_FILE, out / LABELS_FILE, out / APP_CONFIG_FILE, out / PARSER_DIR,
                            out / artifact.name, artifact, mode, batch, len(facts.names),
                            "decoded" if facts.nms is None else "nms", tuple(notes))
