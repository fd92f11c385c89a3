"""ONNX export: checker, ORT CPU parity with PyTorch, dynamic batch, onnxsim fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FULL, TINY, needs_shared, run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import fyexport
    from fyexport.onnx.export import export_onnx

    out = {}
    d = tmp_path_factory.mktemp("onnx")
    for key, path in (("tiny", TINY), ("full", FULL)):
        if not path.exists():
            continue
        model = fyexport.load(path, fuse=True)
        res = export_onnx(model, d / f"{key}.onnx")
        out[key] = (model, res)
    return out


@pytest.mark.parametrize("key", ["tiny", pytest.param("full", marks=needs_shared)])
def test_onnx_checker_and_ort_cpu_parity(exported, key, golden_tiny, request):
    import onnx
    import onnxruntime as ort

    model, res = exported[key]
    proto = onnx.load(str(res.path))
    onnx.checker.check_model(proto)
    assert res.simplified
    assert [i.name for i in proto.graph.input] == ["images"] and [o.name for o in proto.graph.output] == ["output"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    golden = request.getfixturevalue("golden") if key == "full" else golden_tiny
    for img in ("bus", "shapes_val0") if key == "full" else ("shapes_val0",):
        x = golden[f"{img}_input"]
        y = sess.run(None, {"images": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x))[0].numpy()
        assert y.shape == (1, 25200, 10)
        assert np.abs(y[..., :4] - ref[..., :4]).max() <= 1e-3
        assert np.abs(y[..., 4:] - ref[..., 4:]).max() <= 1e-4


def test_metadata_travels_in_the_onnx(exported):
    from fyexport.onnx.facts import read_meta

    meta = read_meta(exported["tiny"][1].path)
    assert meta.names == ("circle", "square", "triangle", "star", "cross")
    assert meta.img_size == (640, 640) and meta.stride == (8, 16, 32) and meta.batch == 1
    assert meta.preprocessing["pad_value"] == 114
    assert meta.to_dict()["names"] == list(meta.names)  # written back as it was read


def test_dynamic_batch(tmp_path, tiny_model):
    import onnxruntime as ort

    from fyexport.onnx.export import export_onnx

    res = export_onnx(tiny_model, tmp_path / "dyn.onnx", img_size=320, dynamic_batch=True)
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"
    x = np.random.default_rng(0).random((3, 3, 320, 320), dtype=np.float32)
    y = sess.run(None, {"images": x})[0]
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x))[0].numpy()
    assert y.shape == ref.shape == (3, 6300, 10)
    assert np.abs(y[..., 4:] - ref[..., 4:]).max() <= 1e-4


def test_onnxsim_failure_keeps_unsimplified_graph(tmp_path, tiny_model, monkeypatch):
    import onnxsim

    from fyexport.onnx.export import export_onnx

    def boom(*a, **k):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", boom)
    res = export_onnx(tiny_model, tmp_path / "raw.onnx", img_size=256)
    assert not res.simplified and res.path.exists()


def test_export_cli_and_size_rounding(tmp_path):
    out = tmp_path / "t.onnx"
    proc = run_cli("export", TINY, "-o", out, "--img-size", "300,416")
    assert proc.returncode == 0, proc.stderr
    assert "320" in proc.stderr  # 300 rounded up to a multiple of 32
    from fyexport.onnx.facts import read_meta

    assert read_meta(out).img_size == (320, 416)


def test_export_cli_refuses_bad_output_name(tmp_path):
    proc = run_cli("export", TINY, "-o", tmp_path / "x.txt")
    assert proc.returncode == 2 and "must end in .onnx" in proc.stderr and "Traceback" not in proc.stderr


def test_the_plugin_nms_is_exported_with_its_deprecation_said(tmp_path, monkeypatch):
    """--nms trt-plugin still exports EfficientNMS_TRT, and says once that TensorRT deprecated it
    in 10.12 and which NMS runs everywhere."""
    import onnx

    import fyexport
    from fyexport.core.log import G_LOGGER
    from fyexport.core.meta import NmsConfig
    from fyexport.onnx.export import export_onnx

    seen = []
    monkeypatch.setattr(G_LOGGER, "warning", lambda msg, once=False, **f: seen.append(str(msg)))
    export_onnx(fyexport.load(TINY), tmp_path / "p.onnx", img_size=160, simplify=False,
                nms=NmsConfig(kind="trt-plugin"))
    assert any(n.op_type == "EfficientNMS_TRT" for n in onnx.load(tmp_path / "p.onnx").graph.node)
    assert any("deprecated since TensorRT 10.12" in w and "--nms onnx" in w for w in seen)
