"""The facts that travel with every artifact made from a model, one type for all of them:
a checkpoint's ``meta``, an ONNX model's ``metadata_props["fyexport"]`` and an engine's
sidecar ``<engine>.json``.

An :class:`ArtifactMeta` reads as typed attributes (``meta.nc``, ``meta.nms.topk``,
``meta.engine.tensorrt``) and writes back exactly the keys it carries, in their order,
so a model's metadata round-trips byte for byte and an older fyexport's files still read.
Keys this release does not know are kept.  ``schema`` is the layout's version: files
without the key are schema 1 (every file fyexport wrote before the key existed); a
reader refuses a schema newer than it knows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import require
from .errors import InputError

SCHEMA = 1
NMS_KINDS = ("onnx", "trt-plugin")
MAX_TOPK = 3840  # TensorRT's TopK takes K <= 3840 (NvInfer.h ITopKLayer::setK, 10.3-11.1)


@dataclass(frozen=True)
class NmsConfig:
    """End-to-end NMS appended to an exported graph (and recorded in its metadata)."""

    kind: str = "onnx"  # onnx: the standard NonMaxSuppression op | trt-plugin: EfficientNMS_TRT (deprecated)
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    topk: int = 100

    def validate(self) -> None:
        require(self.kind in NMS_KINDS, "kind", f"must be onnx or trt-plugin, got {self.kind!r}")
        require(0 <= self.conf_thres < 1, "conf_thres", f"must be in [0, 1), got {self.conf_thres}")
        require(0 < self.iou_thres <= 1, "iou_thres", f"must be in (0, 1], got {self.iou_thres}")
        require(self.topk >= 1, "topk", f"must be >= 1, got {self.topk}")
        require(self.topk <= MAX_TOPK, "topk", f"must be at most {MAX_TOPK} (TensorRT's TopK limit), got {self.topk}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EngineFacts:
    """What only an engine's sidecar says: how and for what it was built."""

    tensorrt: str | None = None
    gpu: str | None = None
    compute_capability: str | None = None
    cuda: str | None = None
    driver: str | None = None
    strongly_typed: bool | None = None
    flags: tuple = ()
    calibrator: str | None = None
    layers: int | None = None
    int8_layers: int | None = None
    convs: int | None = None
    int8_convs: int | None = None
    input: dict | None = None  # {name, shape, dtype, profile: {min, opt, max}}
    outputs: tuple = ()
    onnx: dict | None = None  # {file, sha256}
    build_command: str | None = None
    built: str | None = None
    dla_core: int | None = None

    @property
    def input_dtype(self) -> str:
        return (self.input or {}).get("dtype") or "float32"

    @property
    def profile(self) -> dict | None:
        return (self.input or {}).get("profile")


ENGINE_KEYS = tuple(f.name for f in dataclasses.fields(EngineFacts))


@dataclass(frozen=True)
class ArtifactMeta:
    """Typed view of one artifact's fyexport metadata (every field may be absent: None)."""

    keys: tuple = ()  # the keys carried, in order (what to_dict writes)
    extra: dict = field(default_factory=dict)  # keys this release does not know
    schema: int = SCHEMA
    # the model
    producer: str | None = None
    nc: int | None = None
    names: tuple = ()
    stride: tuple = ()
    anchors: tuple = ()
    img_size: tuple | None = None  # (h, w) the artifact was made for
    batch: int | None = None  # static batch; None with a dynamic batch
    dynamic_batch: bool | None = None
    output: str | None = None
    preprocessing: dict | None = None
    # where it came from
    prune: dict | None = None
    recover: dict | None = None
    source: str | None = None
    source_format: str | None = None
    source_dtype: str | None = None
    source_form: str | None = None
    simplified: bool | None = None
    # what was added to the graph, how it was quantized
    nms: NmsConfig | None = None
    calibration: dict | None = None
    precision: str | None = None
    flavour: str | None = None
    # an engine's sidecar
    format: str | None = None
    engine: EngineFacts | None = None

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "metadata") -> "ArtifactMeta":
        d = dict(d or {})
        schema = d.get("schema", SCHEMA)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise InputError(f"{where}: written by a newer fyexport (metadata schema {schema}, this one reads "
                             f"{SCHEMA})", "Upgrade fyexport")
        known = {f.name for f in dataclasses.fields(cls)} - {"keys", "extra", "engine"}
        values = {k: _typed(k, d[k]) for k in d if k in known}
        engine = {k: _typed(k, d[k]) for k in d if k in ENGINE_KEYS and k not in known}
        extra = {k: v for k, v in d.items() if k not in known and k not in ENGINE_KEYS}
        return cls(keys=tuple(d), extra=extra, engine=EngineFacts(**engine) if engine else None, **values)

    @classmethod
    def of(cls, **values) -> "ArtifactMeta":
        """Metadata carrying exactly ``values`` (in this order)."""
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return {k: _plain(self._value(k)) for k in self.keys}

    def _value(self, key: str):
        if key in self.extra:
            return self.extra[key]
        if key in ENGINE_KEYS and not hasattr(self, key):
            return getattr(self.engine, key)
        return getattr(self, key)

    def with_(self, **changes) -> "ArtifactMeta":
        """A copy with ``changes`` set (new keys go last)."""
        d = self.to_dict()
        d.update(changes)
        return ArtifactMeta.from_dict(d)

    def without(self, *keys: str) -> "ArtifactMeta":
        """A copy without ``keys``."""
        return ArtifactMeta.from_dict({k: v for k, v in self.to_dict().items() if k not in keys})

    def get(self, key: str, default=None):
        """A key by name (for keys this release does not type, and for display)."""
        if key in self.keys:
            v = self._value(key)
            return default if v is None else v
        return default

    @property
    def hw(self) -> tuple | None:
        return tuple(self.img_size) if self.img_size else None


def _typed(key: str, v):
    if v is None:
        return None
    if key == "nms":
        return NmsConfig(kind=v["kind"], conf_thres=v["conf_thres"], iou_thres=v["iou_thres"], topk=v["topk"])
    if key in ("names", "stride", "anchors", "flags", "outputs"):
        return tuple(tuple(a) if isinstance(a, list) else a for a in v)
    if key == "img_size":
        return tuple(int(a) for a in v)
    return v


def _plain(v):
    """JSON-able form (lists, dicts), as the files have always held it."""
    if isinstance(v, NmsConfig):
        return dataclasses.asdict(v)
    if isinstance(v, tuple):
        return [_plain(a) for a in v]
    return v
