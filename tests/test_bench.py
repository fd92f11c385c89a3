"""bench (method, JSON schema, plot, refusals), the Detector API and NMS in the graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO, REPO, TINY, run_cli


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    import fyexport
    from fyexport.onnx.export import export_onnx
    from fyexport.onnx.nms import NmsConfig

    d = tmp_path_factory.mktemp("bench")
    m = fyexport.load(TINY)
    export_onnx(m, d / "tiny320.onnx", img_size=320)
    export_onnx(m, d / "tiny640.onnx")
    export_onnx(m, d / "nms.onnx", dynamic_batch=True, nms=NmsConfig(topk=100))
    return d


def test_bench_report_validates_against_schema_and_plots(onnx_models, tmp_path, shapes_small):
    import jsonschema

    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    proc = run_cli("bench", onnx_models / "tiny320.onnx", "--baseline", TINY, "--img-size", "320", "--duration", "0.3",
                   "--warmup", "0.05", "--data", shapes_small, "--eval-images", "8", "--json", out_json, "--plot",
                   out_png)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    jsonschema.validate(report, json.loads((REPO / "benchmarks/schema.json").read_text()))
    rows = {(r["runtime"], r["role"]): r for r in report["rows"]}
    assert set(rows) == {("torch", "baseline"), ("onnxruntime", "baseline"), ("onnxruntime", "candidate")}
    base_ort = rows[("onnxruntime", "baseline")]
    assert base_ort["speedup"] == 1.0 and rows[("onnxruntime", "candidate")]["speedup"] > 0
    assert all(r["map"] is not None and r["compute_ms"]["n"] >= 10 for r in report["rows"])
    assert rows[("onnxruntime", "candidate")]["map_drop"] is not None
    assert report["machine"]["cpu"] and report["machine"]["onnxruntime"]
    from PIL import Image

    img = Image.open(out_png)
    assert img.format == "PNG" and img.size[0] >= 800


def test_bench_refuses_mismatches(onnx_models, tmp_path, shapes_small):
    proc = run_cli("bench", onnx_models / "tiny320.onnx", "--baseline", TINY, "--img-size", "640", "--duration", "0.1")
    assert proc.returncode == 2 and "built for input (320, 320)" in proc.stderr and "Traceback" not in proc.stderr
    bad_yaml = tmp_path / "three.yaml"
    bad_yaml.write_text(f"val: {shapes_small.parent / 'images/val'}\nnc: 3\nnames: [a, b, c]\n")
    proc = run_cli("bench", onnx_models / "tiny320.onnx", "--baseline", TINY, "--img-size", "320", "--duration",
                   "0.1", "--data", bad_yaml)
    assert proc.returncode == 2 and "classes" in proc.stderr


def test_stats_and_speedups():
    from fyexport.bench.report import Row, fill_speedups
    from fyexport.bench.timing import Stats

    s = Stats.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.min == 1.0 and s.max == 100.0 and s.n == 5 and s.cv > 1
    mk = lambda role, rt, ms, mode="eager": Row("m", "m", role, rt, mode, "fp32", "cpu", 1, None, None, None,  # noqa: E731
                                             {"median": ms}, None, 1.0)
    rows = [mk("baseline", "torch", 100.0), mk("baseline", "onnxruntime", 50.0), mk("candidate", "onnxruntime", 10.0)]
    fill_speedups(rows)
    assert rows[2].speedup == 5.0 and rows[2].speedup_vs_torch == 10.0


def test_detector_onnx_and_torch_agree():
    """Same detections from ONNX Runtime and PyTorch on a real photo and a shapes image."""
    import glob

    from fyexport.data.shapes import make_image
    from fyexport.detector import Detector

    img, _ = make_image(1_000_003)  # val image 0's seed
    arr = np.asarray(img)[:, :, ::-1].copy()
    d_torch = Detector(str(TINY), conf=0.25)
    import tempfile

    import fyexport
    from fyexport.onnx.export import export_onnx

    with tempfile.TemporaryDirectory() as td:
        export_onnx(fyexport.load(TINY), Path(td) / "m.onnx")
        d_onnx = Detector(str(Path(td) / "m.onnx"), conf=0.25)
        for src in (PHOTO, arr):
            a, b = d_torch(src), d_onnx(src)
            assert len(a) == len(b) and len(a) > 0
            from fyexport.evaluation.nms import box_iou

            iou = box_iou(a[:, :4], b[:, :4])
            assert np.all(iou.max(1) >= 0.99)
            assert np.allclose(np.sort(a[:, 4]), np.sort(b[:, 4]), atol=1e-3)
        many = d_onnx([PHOTO, arr])
        assert isinstance(many, list) and len(many) == 2
        photo_h, photo_w = 600, 512
        assert many[0][:, [0, 2]].max() <= photo_w and many[0][:, [1, 3]].max() <= photo_h
    del glob


def test_nms_in_graph_matches_python_nms(onnx_models):
    import onnxruntime as ort

    from fyexport.data.images import prepare, read_image
    from fyexport.data.shapes import make_image
    from fyexport.evaluation.nms import non_max_suppression
    from fyexport.onnx.nms import detections_from_outputs

    imgs = [read_image(PHOTO)] + [np.asarray(make_image(1_000_003 + i)[0])[:, :, ::-1].copy()
                                                for i in range(3)]
    x = np.stack([prepare(im, 640).tensor for im in imgs])
    s = ort.InferenceSession(str(onnx_models / "nms.onnx"), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"images": x})))
    assert outs["num_dets"].shape == (4, 1) and outs["det_boxes"].shape == (4, 100, 4)
    assert outs["num_dets"].dtype == np.int32 and outs["det_classes"].dtype == np.int32
    plain = ort.InferenceSession(str(onnx_models / "tiny640.onnx"), providers=["CPUExecutionProvider"])
    ref = non_max_suppression(np.concatenate([plain.run(None, {"images": xi[None]})[0] for xi in x]), 0.25, 0.45,
                              max_det=100)
    for got, want in zip(detections_from_outputs(outs), ref):
        assert got.shape == want.shape and got.shape[0] > 0
        assert np.allclose(got, want, atol=1e-3)


def test_detector_with_nms_graph(onnx_models):
    from fyexport.detector import Detector

    d = Detector(str(onnx_models / "nms.onnx"))
    p = Detector(str(onnx_models / "tiny640.onnx"))
    a, b = d(PHOTO), p(PHOTO)
    assert d.has_nms and a.shape == b.shape and np.allclose(a, b, atol=1e-2)


def test_trt_plugin_nms_graph(tmp_path):
    import onnx

    import fyexport
    from fyexport.onnx.export import export_onnx
    from fyexport.onnx.nms import NmsConfig

    export_onnx(fyexport.load(TINY), tmp_path / "p.onnx", img_size=320, nms=NmsConfig(kind="trt-plugin", topk=50))
    m = onnx.load(str(tmp_path / "p.onnx"))
    node = [n for n in m.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(node) == 1 and [o.name for o in m.graph.output] == ["num_dets", "det_boxes", "det_scores",
                                                                   "det_classes"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node[0].attributes} if hasattr(node[0], "attributes") \
        else {a.name: onnx.helper.get_attribute_value(a) for a in node[0].attribute}
    assert attrs["max_output_boxes"] == 50 and attrs["background_class"] == -1
