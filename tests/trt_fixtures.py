"""Fixtures of the TensorRT tests (tests/test_trt.py, tests/test_deploy_triton.py): the
artifacts engines are built from and the TensorRT stand-in of a release."""
from __future__ import annotations

import sys

import pytest
from conftest import TINY
from fake_tensorrt import VERSIONS, make_fake_trt

V10_8, V10_12, V10_16, V11_0, V11_1 = VERSIONS


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """FP32, Q/DQ (fp32 remainder), Q/DQ fp16, a dynamic-batch FP32 and a dynamic-batch
    EfficientNMS_TRT ONNX of the tiny fixture at 256."""
    import fyexport
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.onnx.nms import NmsConfig
    from fyexport.quantize import calibrate

    d = tmp_path_factory.mktemp("trt")
    model = fyexport.load(TINY)
    export_onnx(model, d / "fp32.onnx", img_size=256)
    export_onnx(model, d / "dyn.onnx", img_size=256, dynamic_batch=True)
    export_onnx(model, d / "nms.onnx", img_size=256, dynamic_batch=True, nms=NmsConfig(kind="trt-plugin"))
    generate(d / "data", train=8, val=4, size=256)
    calibrate(d / "fp32.onnx", d / "data/images/train", d / "cal", num_images=8, batch=4)
    return d


def _install(monkeypatch, version: str):
    trt = make_fake_trt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture(params=[V10_16, V11_1])
def fake_trt(request, monkeypatch):
    return _install(monkeypatch, request.param)


@pytest.fixture
def warned(monkeypatch):
    """The warnings fyexport logs during the test."""
    from fyexport.core.log import G_LOGGER

    seen = []
    monkeypatch.setattr(G_LOGGER, "warning", lambda msg, once=False, **f: seen.append(str(msg)))
    return seen


