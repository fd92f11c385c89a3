"""ONNX export: fused model -> ``images`` [B,3,H,W] -> ``output`` [B,N,5+nc] decoded in-graph.

Like the official ``export.py --grid`` (docs/yolov7-architecture.md, 4): one output with
the decode inside the graph.  Opset 17, static batch unless ``dynamic_batch``.  The graph
is simplified with onnxsim and the simplified graph is checked against the unsimplified
one on ONNX Runtime; when onnxsim fails or disagrees the unsimplified graph is kept with a
warning.  Model facts (class names, strides, anchors, input size, preprocessing, provenance)
go into the ONNX ``metadata_props`` under the key ``fyexport``, where every fyexport
command reads them back.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import FyexportError, InputError
from .log import G_LOGGER, native_output_silenced
from .preprocess import PREPROCESSING

OPSET = 17
META_KEY = "fyexport"


def normalize_img_size(img_size, max_stride: int = 32) -> tuple[int, int]:
    """(h, w) rounded up to a multiple of the model's largest stride."""
    if isinstance(img_size, int):
        hw = (img_size, img_size)
    else:
        hw = tuple(int(v) for v in img_size)
        if len(hw) == 1:
            hw = (hw[0], hw[0])
    if any(v <= 0 for v in hw):
        raise InputError(f"--img-size must be positive, got {img_size}")
    out = tuple(int(np.ceil(v / max_stride) * max_stride) for v in hw)
    if out != hw:
        G_LOGGER.warning(f"image size {hw} is not a multiple of stride {max_stride}; using {out}")
    return out  # type: ignore[return-value]


def model_facts(model, img_hw, batch, dynamic_batch: bool) -> dict:
    head = model.head
    return {
        "producer": f"fyexport {__version__}",
        "nc": int(model.nc),
        "names": list(model.names),
        "stride": [int(s) for s in head.stride.tolist()],
        "anchors": head.anchor_grid.detach().float().view(head.nl, -1).tolist(),
        "img_size": list(img_hw),
        "batch": None if dynamic_batch else int(batch),
        "dynamic_batch": bool(dynamic_batch),
        "output": "cx,cy,w,h,obj,cls... (input pixels, after sigmoid)",
        "preprocessing": PREPROCESSING,
        "prune": model.meta.get("prune"),
        "source": model.meta.get("source"),
    }


def read_meta(onnx_model_or_path) -> dict:
    """The ``fyexport`` metadata of an ONNX model ({} if absent)."""
    import onnx

    m = onnx_model_or_path
    if not isinstance(m, onnx.ModelProto):
        m = onnx.load(str(m), load_external_data=False)
    for p in m.metadata_props:
        if p.key == META_KEY:
            try:
                return json.loads(p.value)
            except ValueError:
                return {}
    return {}


def write_meta(model_proto, meta: dict) -> None:
    for p in list(model_proto.metadata_props):
        if p.key == META_KEY:
            model_proto.metadata_props.remove(p)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)


def decoded_only(model):
    """Wrap ``model`` so the traced graph returns only the decoded tensor."""
    import torch

    class DecodedOnly(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[0]

    return DecodedOnly(model)


@dataclass
class ExportResult:
    path: Path
    simplified: bool
    input_shape: list
    output_shape: list
    meta: dict = field(default_factory=dict)
    max_diff: float | None = None


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _compare(a_bytes: bytes, b_bytes: bytes, x: np.ndarray) -> float:
    """Max abs difference of the first outputs of two ONNX models on input ``x``."""
    sa, sb = _ort_session(a_bytes), _ort_session(b_bytes)
    ya = sa.run(None, {sa.get_inputs()[0].name: x})[0]
    yb = sb.run(None, {sb.get_inputs()[0].name: x})[0]
    if ya.shape != yb.shape:
        return float("inf")
    box = np.abs(ya[..., :4] - yb[..., :4]).max(initial=0)
    score = np.abs(ya[..., 4:] - yb[..., 4:]).max(initial=0)
    return float(max(box / 10.0, score))  # boxes are in pixels: 1e-3 px counts like 1e-4 in scores


def export_onnx(model, path, img_size=640, batch: int = 1, dynamic_batch: bool = False, simplify: bool = True,
                opset: int = OPSET, nms=None) -> ExportResult:
    """Export ``model`` (fused on a copy) to ``path`` atomically.

    Args:
        model: a :class:`fyexport.models.Model` (any form; it is fused on a copy).
        img_size: int or (h, w); rounded up to a stride multiple.
        batch: static batch size (ignored with ``dynamic_batch``).
        dynamic_batch: make the batch axis symbolic ("batch").
        simplify: run onnxsim and verify it.
        nms: None, or an :class:`fyexport.nms_onnx.NmsConfig` to append NMS to the graph.
    """
    import onnx
    import torch

    from .artifacts import atomic_path

    if batch < 1:
        raise InputError(f"--batch must be >= 1, got {batch}")
    m = copy.deepcopy(model).float().cpu().eval()
    m.fuse()
    for p in m.parameters():
        p.requires_grad_(False)
    hw = normalize_img_size(img_size, int(max(m.head.stride.tolist())))
    x = torch.zeros(batch, 3, *hw)
    wrapper = decoded_only(m).eval()
    dyn = {"images": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    import io
    import warnings

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (x,), buf, input_names=["images"], output_names=["output"], opset_version=opset,
                          dynamo=False, dynamic_axes=dyn, do_constant_folding=True)
    raw = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(raw)
    proto, simplified, max_diff = raw, False, None
    if simplify:
        proto, simplified, max_diff = _simplify(raw, batch, hw)
    meta = model_facts(m, hw, batch, dynamic_batch)
    meta["simplified"] = simplified
    if nms is not None:
        from .nms_onnx import append_nms

        proto = append_nms(proto, nms, nc=m.nc)
        meta["nms"] = nms.to_dict()
    write_meta(proto, meta)
    if nms is None or nms.kind != "trt-plugin":  # the plugin op is known to TensorRT only
        onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    out_shape = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    return ExportResult(Path(path), simplified, [("batch" if dynamic_batch else batch), 3, *hw], out_shape, meta,
                        max_diff)


def _simplify(raw, batch: int, hw):
    import onnx

    G_LOGGER.debug("simplifying with onnxsim")
    try:
        from onnxsim import simplify as onnxsim_simplify

        with native_output_silenced():
            simp, ok = onnxsim_simplify(raw)
        if not ok:
            raise RuntimeError("onnxsim's own check failed")
        onnx.checker.check_model(simp)
    except Exception as e:  # noqa: BLE001 - any onnxsim failure falls back to the raw graph
        G_LOGGER.warning(f"onnxsim failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                         "keeping the unsimplified graph")
        return raw, False, None
    rng = np.random.default_rng(0)
    x = rng.random((batch, 3, *hw), dtype=np.float32)
    diff = _compare(raw.SerializeToString(), simp.SerializeToString(), x)
    if not diff <= 1e-4:
        G_LOGGER.warning(f"onnxsim changed the outputs (max difference {diff:.2e}); keeping the unsimplified graph")
        return raw, False, diff
    G_LOGGER.debug(f"onnxsim ok: {len(raw.graph.node)} -> {len(simp.graph.node)} nodes, max diff {diff:.2e}")
    return simp, True, diff


def check_onnx_file(path) -> "object":
    """Load an ONNX file with a one-line error on failure."""
    import onnx

    from .errors import check_file

    p = check_file(path, "ONNX model", (".onnx",))
    try:
        return onnx.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__})", "Export it again with fyexport export")


def raise_if_not_fyexport(meta: dict, path) -> None:
    if not meta:
        raise FyexportError(f"{path}: this ONNX has no fyexport metadata",
                            "Export it with 'fyexport export' so names, strides and input size are known")
