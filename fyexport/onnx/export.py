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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.config import require, validate_nested
from ..core.errors import InputError
from ..core.imgsize import DEFAULT_IMG_SIZE, fit_img_size
from ..core.log import G_LOGGER, native_output_silenced
from ..core.meta import ArtifactMeta, NmsConfig
from ..data.images import PREPROCESSING
from .facts import cpu_session, write_meta

OPSET = 17


@dataclass
class ExportConfig:
    """The export stage's settings."""

    img_size: object = DEFAULT_IMG_SIZE  # N or (H, W); fitted to the model's largest stride
    batch: int = 1  # static batch (ignored with dynamic_batch)
    dynamic_batch: bool = False  # a symbolic batch axis ("batch")
    simplify: bool = True  # onnxsim, checked against the unsimplified graph
    opset: int = OPSET
    nms: NmsConfig | None = None  # end-to-end NMS appended to the graph

    def validate(self) -> None:
        require(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        require(self.opset >= 13, "opset", f"must be >= 13, got {self.opset}")
        if self.nms is not None:
            validate_nested(self, ["nms"])


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
    meta: ArtifactMeta = field(default_factory=ArtifactMeta)
    max_diff: float | None = None


def _compare(a_bytes: bytes, b_bytes: bytes, x: np.ndarray) -> float:
    """Max abs difference of the first outputs of two ONNX models on input ``x``."""
    sa, sb = cpu_session(a_bytes), cpu_session(b_bytes)
    ya = sa.run(None, {sa.get_inputs()[0].name: x})[0]
    yb = sb.run(None, {sb.get_inputs()[0].name: x})[0]
    if ya.shape != yb.shape:
        return float("inf")
    box = np.abs(ya[..., :4] - yb[..., :4]).max(initial=0)
    score = np.abs(ya[..., 4:] - yb[..., 4:]).max(initial=0)
    return float(max(box / 10.0, score))  # boxes are in pixels: 1e-3 px counts like 1e-4 in scores


def export_onnx(model, path, cfg: ExportConfig | None = None, **fields) -> ExportResult:
    """Export ``model`` (a :class:`fyexport.models.Model` in any form; fused on a copy) to
    ``path`` atomically, as ``cfg`` says (``fields`` override its fields)."""
    import onnx
    import torch

    from ..core.artifacts import atomic_path

    cfg = replace(cfg or ExportConfig(), **fields)
    cfg.validate()
    img_size, batch, dynamic_batch, simplify, opset, nms = (cfg.img_size, cfg.batch, cfg.dynamic_batch, cfg.simplify,
                                                          cfg.opset, cfg.nms)
    if Path(path).is_dir():  # found before the export's work, not at the rename
        raise InputError(f"{path}: is a directory, so the output cannot be written there", "Give a file name")
    m = copy.deepcopy(model).float().cpu().eval()
    m.fuse()
    for p in m.parameters():
        p.requires_grad_(False)
    hw = fit_img_size(img_size, int(max(m.head.stride.tolist())))
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
    facts = model_facts(m, hw, batch, dynamic_batch)
    if isinstance(facts.get("source"), str):
        from ..core.artifacts import recorded_path

        facts["source"] = recorded_path(facts["source"], path)  # not the output folder: same model, same bytes
    meta = ArtifactMeta.of(**facts, simplified=simplified)
    if nms is not None:
        from .nms import append_nms

        if nms.kind == "trt-plugin":
            G_LOGGER.warning("EfficientNMS_TRT is deprecated since TensorRT 10.12 (its plugin README) and runs on "
                             "TensorRT only; the default ONNX NonMaxSuppression runs on TensorRT (INMSLayer) and ONNX "
                             "Runtime alike ('fyexport export --nms onnx')", once=True)
        proto = append_nms(proto, nms, nc=m.nc)
        meta = meta.with_(nms=nms.to_dict())
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
