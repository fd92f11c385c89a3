"""Loading checkpoints without executing anything from them.

Official YOLOv7 ``.pt`` files are pickles of ``models.yolo.Model`` objects.  They are
read here with a restricted unpickler: only tensor/storage rebuilds, ``OrderedDict``,
``set``, numpy array/scalar reconstruction and the known yolov7 and ``torch.nn`` class
names are resolved, and those classes are mapped to an inert stand-in (:class:`Stub`)
that merely records the pickled attribute dict.  The cfg (``yaml``), ``names`` and the
tensors are then read off the stand-ins and a fresh :class:`Model` is built by our own
code.  Any other global stops the load with an error that names it.

fyexport's own format (pruned models included) is a plain dict of builtins and tensors:
the cfg, the form (training or deployment), class names, a state_dict and metadata.
Layer widths are implied by the tensor shapes, so pruned models rebuild exactly.
"""
from __future__ import annotations

import collections
import io
import pickle
import types
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..core.errors import InputError
from ..core.meta import ArtifactMeta

FORMAT = "fyexport-model"
FORMAT_VERSION = 1

# yolov7 classes that may appear in an official pickle (models/common.py, models/yolo.py,
# models/experimental.py).  They become inert stand-ins; nothing of theirs runs.
YOLOV7_CLASSES = {
    "models.yolo": {"Model", "Detect", "IDetect", "IAuxDetect", "IKeypoint", "IBin"},
    "models.common": {"Conv", "RepConv", "MP", "SP", "SPPCSPC", "DownC", "ReOrg", "Concat", "Shortcut",
                      "ImplicitA", "ImplicitM", "SPP", "SPPF", "Focus", "Bottleneck", "NMS"},
    "models.experimental": {"Ensemble", "CrossConv", "Sum", "MixConv2d"},
}


class UnsafeGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        self.module, self.qualname = module, name
        super().__init__(f"{module}.{name}")


class Stub:
    """Inert stand-in for a pickled class: keeps the pickled state, does nothing else."""

    _fy_qualname = "?"

    def __init__(self, *args, **kwargs):  # only reached through REDUCE on a whitelisted class
        self.__dict__["_fy_args"] = args

    def __setstate__(self, state):
        self.__dict__["_fy_state"] = state

    @property
    def state(self) -> dict:
        st = self.__dict__.get("_fy_state")
        return st if isinstance(st, dict) else {}


_stub_types: dict[str, type] = {}


def _stub(qualname: str) -> type:
    t = _stub_types.get(qualname)
    if t is None:
        t = type(qualname.rsplit(".", 1)[-1], (Stub,), {"_fy_qualname": qualname})
        _stub_types[qualname] = t
    return t


def _torch_nn_class(module: str, name: str) -> bool:
    if not module.startswith("torch.nn.modules"):
        return False
    obj = getattr(nn, name, None)
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _numpy_global(module: str, name: str):
    import numpy as np

    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        mod = getattr(np, "_core", None) or np.core
        return getattr(mod.multiarray, name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy", "numpy.dtypes") and name.endswith("DType"):  # numpy 2 dtype classes
        import numpy.dtypes as npd

        obj = getattr(npd, name, None)
        if isinstance(obj, type):
            return obj
    return None


def find_whitelisted(module: str, name: str):
    """Resolve one pickle global, or raise :class:`UnsafeGlobal`."""
    if module in ("collections",) and name == "OrderedDict":
        return collections.OrderedDict
    if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "slice", "bytearray", "complex"):
        return getattr(__import__("builtins"), name)
    if module == "_codecs" and name == "encode":
        import codecs

        return codecs.encode
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter",
                                            "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy"):
        return getattr(torch._utils, name)
    if module == "torch" and name == "Size":
        return torch.Size
    if module == "torch" and name == "device":
        return torch.device
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module == "torch.nn.parameter" and name == "Parameter":
        return nn.Parameter
    if module.startswith("numpy"):
        obj = _numpy_global(module, name)
        if obj is not None:
            return obj
    if name in YOLOV7_CLASSES.get(module, ()):
        return _stub(f"{module}.{name}")
    if _torch_nn_class(module, name):
        return _stub(f"{module}.{name}")
    raise UnsafeGlobal(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return find_whitelisted(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# ``torch.load(pickle_module=...)`` subclasses ``pickle_module.Unpickler`` and calls
# ``pickle_module.load`` for legacy files, so this module-like object is all it needs.
restricted_pickle = types.ModuleType("fyexport_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.loads = lambda data, **kw: RestrictedUnpickler(io.BytesIO(data), **kw).load()
restricted_pickle.__dict__["UnpicklingError"] = pickle.UnpicklingError


def read_pickle(path) -> object:
    """``torch.load`` through the restricted unpickler, with one-line errors."""
    path = Path(path)
    head = path.read_bytes()[:8] if path.is_file() else b""
    if not head:
        raise InputError(f"{path}: empty file, not a checkpoint")
    is_zip = head[:4] == b"PK\x03\x04"
    if not is_zip and head[:1] != b"\x80":
        raise InputError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)",
                         "Pass a .pt file saved by YOLOv7's train.py or by fyexport")
    if is_zip:
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            if bad is not None:
                raise InputError(f"{path}: checkpoint is corrupt (bad CRC in {bad})", "Copy the file again")
        except zipfile.BadZipFile:
            raise InputError(f"{path}: checkpoint is truncated or corrupt (unreadable zip archive)",
                             "Copy or download the file again")
    try:
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    except UnsafeGlobal as e:
        family = ""
        if e.module.startswith(("models.", "utils.")):
            family = (" (a class of another model family or code version: this is not a YOLOv7 checkpoint fyexport "
                      "understands)")
        elif e.module.startswith("ultralytics"):
            family = " (an Ultralytics checkpoint, not YOLOv7)"
        raise InputError(f"{path}: refused to load: the pickle references '{e.module}.{e.qualname}', which is not on "
                         f"fyexport's whitelist{family}; nothing from the file was executed")
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read checkpoint ({type(e).__name__}: {first[:200]})",
                         "The file may be truncated or not a PyTorch checkpoint")


def stub_state_dict(obj: Stub, prefix: str = "", out=None) -> "collections.OrderedDict[str, torch.Tensor]":
    """Collect parameters and persistent buffers from a tree of stand-ins, as
    ``nn.Module.state_dict`` would."""
    out = collections.OrderedDict() if out is None else out
    st = obj.state
    skip = set(st.get("_non_persistent_buffers_set", ()) or ())
    for k, v in (st.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v.detach()
    for k, v in (st.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v.detach()
    for k, child in (st.get("_modules") or {}).items():
        if isinstance(child, Stub):
            stub_state_dict(child, prefix + k + ".", out)
    return out


def _official_model_stub(path, obj):
    """Pick the model stand-in out of an official checkpoint dict (or a bare pickled model)."""
    if isinstance(obj, Stub):
        return obj, {}
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a YOLOv7 checkpoint (top level is {type(obj).__name__}, expected a dict)")
    cand = obj.get("ema") if obj.get("ema") is not None else obj.get("model")
    if cand is None:
        keys = ", ".join(sorted(map(str, obj.keys()))[:8])
        raise InputError(f"{path}: not a YOLOv7 checkpoint (no 'model' or 'ema' entry; keys: {keys})",
                         "A state_dict alone has no cfg: pass the checkpoint saved by train.py")
    if not isinstance(cand, Stub) or cand._fy_qualname != "models.yolo.Model":
        name = getattr(cand, "_fy_qualname", type(cand).__name__)
        raise InputError(f"{path}: not a YOLOv7 checkpoint (its model is {name}, expected models.yolo.Model)")
    extra = {k: obj.get(k) for k in ("epoch", "best_fitness") if isinstance(obj.get(k), (int, float))}
    extra["which"] = "ema" if obj.get("ema") is not None else "model"
    return cand, extra


def resize_to_state_dict(model: nn.Module, sd: dict) -> int:
    """Give every Conv2d / BatchNorm2d / implicit tensor the shape it has in ``sd``
    (pruned checkpoints).  Returns the number of modules resized."""
    from .common import ImplicitA, ImplicitM

    changed = 0
    for name, mod in list(model.named_modules()):
        pre = f"{name}." if name else ""
        if isinstance(mod, nn.Conv2d) and pre + "weight" in sd:
            w = sd[pre + "weight"]
            if tuple(w.shape) != tuple(mod.weight.shape):
                out_c, in_per_g = w.shape[0], w.shape[1]
                g = mod.groups
                new = nn.Conv2d(in_per_g * g, out_c, mod.kernel_size, mod.stride, mod.padding, mod.dilation, g,
                                bias=(pre + "bias") in sd)
                _replace(model, name, new)
                changed += 1
        elif isinstance(mod, nn.BatchNorm2d) and pre + "weight" in sd:
            n = sd[pre + "weight"].shape[0]
            if n != mod.num_features:
                _replace(model, name, nn.BatchNorm2d(n, eps=mod.eps, momentum=mod.momentum))
                changed += 1
        elif isinstance(mod, (ImplicitA, ImplicitM)) and pre + "implicit" in sd:
            shape = sd[pre + "implicit"].shape
            if tuple(shape) != tuple(mod.implicit.shape):
                mod.implicit = nn.Parameter(torch.zeros(shape))
                changed += 1
    return changed


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _is_fused_state(sd: dict) -> bool:
    has_bn = any(".bn." in k or k.endswith(".bn.weight") for k in sd)
    has_reparam = any("rbr_reparam" in k for k in sd)
    return has_reparam or not has_bn


def model_from_state(cfg: dict, sd: dict, fused: bool | None, path, nc: int | None = None):
    """Build our Model for ``cfg`` and load ``sd`` into it (float32, eval)."""
    from .yolo import Model

    model = Model(cfg, nc=nc, init_biases=False)
    if fused is None:
        fused = _is_fused_state(sd)
    if fused:
        model.fuse()
    sd = collections.OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items())
    resize_to_state_dict(model, sd)
    ours = model.state_dict()
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise InputError(f"{path}: weights do not match the checkpoint's own cfg: {'; '.join(parts)}",
                         "The file may come from a modified YOLOv7 fork fyexport does not support")
    bad = [k for k in ours if tuple(ours[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise InputError(f"{path}: tensor {bad[0]} has shape {tuple(sd[bad[0]].shape)}, the cfg needs "
                         f"{tuple(ours[bad[0]].shape)}")
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


def load(path, fuse: bool = False):
    """Load a YOLOv7 model from an official checkpoint (training, stripped or deploy form)
    or from fyexport's own format, without executing code from the file.

    Returns an ``nn.Module`` (:class:`fyexport.models.yolo.Model`) in eval mode, float32,
    with ``names``, ``nc``, ``stride`` and ``meta`` set.  ``fuse=True`` returns the
    deployment form.
    """
    from ..core.errors import check_file

    path = check_file(path, "checkpoint")
    obj = read_pickle(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model = _load_own(path, obj)
    else:
        stub, extra = _official_model_stub(path, obj)
        st = stub.state
        cfg = st.get("yaml")
        if not isinstance(cfg, dict) or "backbone" not in cfg:
            raise InputError(f"{path}: the pickled model carries no YOLOv7 cfg ('yaml' attribute)")
        sd = stub_state_dict(stub)
        if not sd:
            raise InputError(f"{path}: the pickled model holds no tensors")
        model = model_from_state(cfg, sd, fused=None, path=path, nc=cfg.get("nc"))
        names = st.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if isinstance(names, (list, tuple)) and len(names) == model.nc:
            model.names = [str(n) for n in names]
        dtype = next((v.dtype for v in sd.values() if v.is_floating_point()), torch.float32)
        model.meta = model.meta.with_(source_format="yolov7", source_dtype=str(dtype).replace("torch.", ""),
                                      source_form="deployment" if _is_fused_state(sd) else "training", **extra)
    model.meta = model.meta.with_(source=str(path))
    if fuse:
        model.fuse()
    return model


def _load_own(path, obj: dict):
    ver = obj.get("version", 0)
    if ver > FORMAT_VERSION:
        raise InputError(f"{path}: saved by a newer fyexport (format {ver})", "Upgrade fyexport")
    sd = obj.get("state_dict")
    if not isinstance(sd, dict) or not isinstance(obj.get("cfg"), dict):
        raise InputError(f"{path}: damaged fyexport model (no cfg or state_dict)")
    model = model_from_state(obj["cfg"], sd, fused=bool(obj.get("fused")), path=path)
    names = obj.get("names")
    if isinstance(names, list) and len(names) == model.nc:
        model.names = [str(n) for n in names]
    saved = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    model.meta = ArtifactMeta.from_dict({**saved, "source_format": FORMAT}, str(path))
    return model


def save(model, path, meta: dict | None = None) -> Path:
    """Save ``model`` in fyexport's format (atomic).  Loads back with :func:`load`.

    The same model gives the same bytes wherever it is saved: the archive is serialised in
    memory (``torch.save`` would name its records after the temporary file) and a source
    inside the output's folder is recorded relative to it."""
    from ..core.artifacts import recorded_path, write_torch

    sd = collections.OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    m = model.meta.to_dict()
    m.update(meta or {})
    m = {k: v for k, v in m.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    if isinstance(m.get("source"), str):
        m["source"] = recorded_path(m["source"], path)
    obj = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "cfg": model.yaml,
        "fused": bool(model.is_fused),
        "nc": int(model.nc),
        "names": list(model.names),
        "stride": [float(s) for s in model.stride],
        "state_dict": sd,
        "meta": m,
    }
    return write_torch(path, obj)
