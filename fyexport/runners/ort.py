"""ONNX Runtime runner (CPU by default; the CUDA provider when onnxruntime-gpu is installed)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..log import G_LOGGER
from .base import Runner, RunnerInfo


def physical_cores() -> int:
    try:
        import psutil  # optional

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def onnx_precision(proto) -> tuple[str, str]:
    """('int8'|'fp16'|'fp32', flavour) from the graph's ops and types."""
    qs = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    inits = {i.name: i for i in proto.graph.initializer}
    if qs:
        flavour = "s8s8"
        for n in qs:
            if len(n.input) > 2 and n.input[2] in inits and inits[n.input[2]].data_type == 2:  # uint8 zero point
                flavour = "u8s8"
                break
        fp16 = any(i.data_type == 10 for i in proto.graph.initializer)
        return "int8", flavour + ("+fp16" if fp16 else "")
    if any(i.data_type == 10 for i in proto.graph.initializer):
        return "fp16", ""
    return "fp32", ""


def session_options(threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class OrtRunner(Runner):
    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        super().__init__()
        import onnx

        from ..export import check_onnx_file, read_meta

        self.path = Path(path)
        proto = check_onnx_file(self.path)
        self.meta = read_meta(proto)
        inp = [i for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
        if len(inp) != 1:
            raise InputError(f"{path}: expected one image input, found {len(inp)}")
        dims = [d.dim_value if d.dim_value else None for d in inp[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or dims[2] is None or dims[3] is None:
            raise InputError(f"{path}: input {inp[0].name} has shape {dims}; fyexport needs [B,3,H,W] with fixed H,W")
        out_names = [o.name for o in proto.graph.output]
        self.has_nms = "num_dets" in out_names
        precision, flavour = onnx_precision(proto)
        nc = self.meta.get("nc")
        if nc is None:
            od = proto.graph.output[0].type.tensor_type.shape.dim
            nc = (od[-1].dim_value - 5) if od and od[-1].dim_value else 0
        self.input_name = inp[0].name
        self.threads = threads
        self.device = device
        self.info = RunnerInfo(
            path=str(path), runtime="onnxruntime", precision=precision, device=device,
            input_hw=(dims[2], dims[3]), batch=dims[0], nc=int(nc), names=list(self.meta.get("names") or []),
            mode=flavour, size_mb=round(self.path.stat().st_size / 1e6, 2), prune=self.meta.get("prune"),
            params=self.meta.get("params"), gmacs=self.meta.get("gmacs"),
        )
        del onnx

    def _load(self) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError("onnxruntime has no CUDA provider here",
                                 "Install the [gpu] extra (onnxruntime-gpu) or use --device cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.sess = ort.InferenceSession(str(self.path), session_options(self.threads), providers=providers)
        self.output_names = [o.name for o in self.sess.get_outputs()]
        G_LOGGER.debug(f"onnxruntime {ort.__version__} session on {self.sess.get_providers()[0]}")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(self.output_names[:1], {self.input_name: x})[0]

    def run_all(self, x: np.ndarray) -> dict:
        """All outputs by name (used for NMS-in-graph models)."""
        return dict(zip(self.output_names, self.sess.run(self.output_names, {self.input_name: x})))

    def _close(self) -> None:
        self.sess = None
