"""ONNX Runtime runner (CPU by default; the CUDA provider when onnxruntime-gpu is installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER
from ..onnx.facts import check_onnx_file, image_input, onnx_precision, read_meta, session_options
from .base import Runner, RunnerInfo


class OrtRunner(Runner):
    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        proto = check_onnx_file(self.path)
        self.meta = read_meta(proto)
        try:
            inp = image_input(proto)
        except InputError as e:
            raise InputError(f"{path}: {e.message}")
        dims = list(inp.dims)
        if len(dims) != 4 or dims[2] is None or dims[3] is None:
            raise InputError(f"{path}: input {inp.name} has shape {dims}; fyexport needs [B,3,H,W] with fixed H,W")
        out_names = tuple(o.name for o in proto.graph.output)
        self.trt_only_ops = sorted({n.op_type for n in proto.graph.node if n.op_type.endswith("_TRT")})
        precision, flavour = onnx_precision(proto)
        nc = self.meta.nc
        if nc is None:
            od = proto.graph.output[0].type.tensor_type.shape.dim
            nc = (od[-1].dim_value - 5) if od and od[-1].dim_value else 0
        self.input_name = inp.name
        self.threads = threads
        self.device = device
        self.info = RunnerInfo(
            path=str(path), runtime="onnxruntime", precision=precision, device=device,
            input_hw=(dims[2], dims[3]), batch=dims[0], nc=int(nc), names=list(self.meta.names),
            mode=flavour, size_mb=round(self.path.stat().st_size / 1e6, 2), prune=self.meta.prune,
            params=self.meta.get("params"), gmacs=self.meta.get("gmacs"),
            batch_range=(dims[0], dims[0]) if dims[0] else (1, None), graph_nms=self.meta.nms, outputs=out_names,
            meta=self.meta,
        )

    def _load(self) -> None:
        import onnxruntime as ort

        if self.trt_only_ops:
            raise InputError(f"{self.path}: uses the TensorRT plugin {', '.join(self.trt_only_ops)}, which runs on "
                             "TensorRT only, not on ONNX Runtime",
                             "Build an engine with 'fyexport engine' and use that, or export with "
                             "'fyexport export --nms onnx' to run it on ONNX Runtime")
        providers = ["CPUExecutionProvider"]
        cuda = self.device.startswith("cuda")
        if cuda:
            from ..core.machine import device_index

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError("onnxruntime has no CUDA provider here",
                                 "Install the [gpu] extra (onnxruntime-gpu) or use the cpu `device`")
            providers = [("CUDAExecutionProvider", {"device_id": device_index(self.device)}), "CPUExecutionProvider"]
        self.sess = ort.InferenceSession(str(self.path), session_options(self.threads), providers=providers)
        if cuda and self.sess.get_providers()[0] != "CUDAExecutionProvider":
            # onnxruntime-gpu falls back to the CPU, silently, when CUDA or cuDNN cannot be loaded
            raise FyexportError(f"{self.path}: ONNX Runtime could not start its CUDA provider on {self.device} "
                                "(CUDA or cuDNN libraries missing or of another version?)",
                                "Check onnxruntime-gpu's CUDA requirements, or use the cpu `device`")
        self.output_names = [o.name for o in self.sess.get_outputs()]
        G_LOGGER.debug(f"onnxruntime {ort.__version__} session on {self.sess.get_providers()[0]}")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(self.output_names[:1], {self.input_name: x})[0]

    def _run_all(self, x: np.ndarray) -> dict:
        return dict(zip(self.output_names, self.sess.run(self.output_names, {self.input_name: x})))

    def _close(self) -> None:
        self.sess = None
