"""Evaluation: mAP of every runner kind against labels, against the official figures."""
from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, TINY, needs_shared, reference, run_cli


def test_eval_matches_between_torch_and_onnx(tmp_path, shapes_small):
    import fyexport
    from fyexport.evaluation.metrics import evaluate
    from fyexport.onnx.export import export_onnx
    from fyexport.runners import open_runner

    export_onnx(fyexport.load(TINY), tmp_path / "t.onnx")
    a = evaluate(open_runner(str(TINY)), shapes_small)
    b = evaluate(open_runner(str(tmp_path / "t.onnx")), shapes_small)
    assert a.images == b.images == 16 and a.instances > 0
    assert abs(a.map - b.map) < 2e-3 and a.map > 0.2
    assert len(a.per_class) == 5 and all("map50" in c for c in a.per_class)


def test_eval_cli_refuses_class_mismatch(tmp_path, shapes_small, tiny_model):
    import fyexport

    m = fyexport.build_model(tiny_model.yaml, nc=3)
    fyexport.save(m, tmp_path / "three.pt")
    proc = run_cli("eval", tmp_path / "three.pt", "--data", shapes_small, "--img-size", "256")
    assert proc.returncode == 2 and "3 classes" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name,key", [("yolov7-tiny-shapes.pt", "tiny"),
                                      pytest.param("yolov7-shapes.pt", "full", marks=needs_shared)])
def test_eval_agrees_with_official_figures(name, key, tmp_path_factory):
    """Acceptance: within 1.0 point of the official test.py figures on 500 validation images."""
    import fyexport
    from fyexport.data.shapes import generate
    from fyexport.evaluation.metrics import evaluate
    from fyexport.onnx.export import export_onnx
    from fyexport.runners import open_runner

    ref = (reference() if key == "tiny" else json.loads((FIXTURES / "reference.json").read_text()))["fixtures"][name]
    root = tmp_path_factory.getbasetemp() / "shapes_val500"
    if not (root / "shapes.yaml").exists():
        generate(root, train=0, val=500)
    onnx_path = tmp_path_factory.mktemp(key) / "m.onnx"
    export_onnx(fyexport.load(TINY if key == "tiny" else FIXTURES / name), onnx_path)
    res = evaluate(open_runner(str(onnx_path)), root / "shapes.yaml")
    assert abs(res.map50 - ref["official_val_map50"]) <= 0.01
    assert abs(res.map - ref["official_val_map50_95"]) <= 0.01
