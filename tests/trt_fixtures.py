"""Fixtures of the TensorRT tests (tests/test_trt*.py, tests/test_deploy_triton.py): the artifacts
engines are built from, and the TensorRT stand-in of a release (tests/trt_stand_in.py)."""
from __future__ import annotations

import pytest
import trt_stand_in as sti
from conftest import TINY

RELEASES = tuple(sti.RELEASES)  # 10.3 (JetPack 6), 10.8, 10.12, 10.16, 11.0, 11.1
WEAK = ("10.3", "10.8")  # releases fyexport builds weakly typed (before 10.12 deprecated it)
ELEVEN = tuple(r for r in RELEASES if r.startswith("11."))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """The tiny fixture at 256: FP32 static, dynamic-batch FP32, dynamic-batch with ONNX NMS and
    with EfficientNMS_TRT, a small shapes data set, and the Q/DQ models of the static FP32 ONNX."""
    import fyexport
    from fyexport.core.meta import NmsConfig
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize import calibrate

    d = tmp_path_factory.mktemp("trt")
    model = fyexport.load(TINY)
    export_onnx(model, d / "fp32.onnx", img_size=256)
    export_onnx(model, d / "dyn.onnx", img_size=256, dynamic_batch=True)
    export_onnx(model, d / "onnxnms.onnx", img_size=256, dynamic_batch=True, nms=NmsConfig(kind="onnx"))
    export_onnx(model, d / "plug.onnx", img_size=256, dynamic_batch=True, nms=NmsConfig(kind="trt-plugin"))
    generate(d / "data", train=8, val=4, size=256)
    calibrate(d / "fp32.onnx", d / "data/images/train", d / "cal", num_images=8, batch=4, bias_correction=4)
    return d


def install(monkeypatch, version: str, **kw):
    """The stand-in of ``version`` as ``tensorrt`` for this test (undone after it)."""
    return sti.install(version, monkeypatch=monkeypatch, **kw)


@pytest.fixture(params=["10.16", "11.1"])
def stand_in(request, monkeypatch):
    """A 10.x and an 11.x stand-in, for tests whose subject does not change between releases."""
    return install(monkeypatch, request.param)


@pytest.fixture
def warned(monkeypatch):
    """The warnings fyexport logs during the test."""
    from fyexport.core.log import G_LOGGER

    seen = []
    monkeypatch.setattr(G_LOGGER, "warning", lambda msg, once=False, **f: seen.append(str(msg)))
    return seen


def plan_of(path) -> dict:
    """The build facts the stand-in put in a plan (what TensorRT was asked to build)."""
    from pathlib import Path

    return sti._unpack_plan(Path(path).read_bytes())[0]


def precision_flags(plan: dict) -> set:
    return set(plan["flags"]) & {"FP16", "INT8", "BF16", "FP8"}
