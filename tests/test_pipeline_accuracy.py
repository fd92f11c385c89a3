"""Teacher agreement and the build's accuracy gate."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY


class BlankRunner:
    """A model that detects nothing (objectness 0 everywhere)."""

    def __init__(self, hw=(320, 320), nc=5):
        from fyexport.runners import RunnerInfo

        self.info = RunnerInfo(path="<blank>", runtime="numpy", precision="fp32", device="cpu", input_hw=hw,
                               batch=None, nc=nc)

    def load(self):
        return self

    def infer(self, x):
        return np.zeros((x.shape[0], 6300, 5 + self.info.nc), np.float32)


@pytest.fixture(scope="module")
def teacher_dets(shapes_small):
    from fyexport.data.labels import load_data_yaml
    from fyexport.evaluation.detections import detect
    from fyexport.runners import open_runner

    images = load_data_yaml(shapes_small).images("val")
    return images, detect(open_runner(str(TINY), img_size=320), images)


def test_teacher_agreement_of_the_teacher_with_itself_is_one(teacher_dets):
    from fyexport.evaluation.agreement import teacher_agreement, teacher_boxes

    _, t = teacher_dets
    assert sum(len(v) for v in teacher_boxes(t).values()) > 10  # a real pseudo ground truth
    assert teacher_agreement(t, t, 5) == 1.0


def test_teacher_agreement_of_a_blank_model_is_zero(teacher_dets):
    from fyexport.evaluation.agreement import teacher_agreement
    from fyexport.evaluation.detections import detect

    images, t = teacher_dets
    assert teacher_agreement(detect(BlankRunner(), images), t, 5) == 0.0


def test_teacher_agreement_falls_with_a_worse_model(teacher_dets, tiny_model):
    """A pruned, unrecovered model agrees less than a lightly perturbed copy of the teacher."""
    import copy

    import torch

    from fyexport.evaluation.agreement import teacher_agreement
    from fyexport.evaluation.detections import detect
    from fyexport.prune import PruneConfig, prune
    from fyexport.runners.torch_runner import TorchRunner

    images, t = teacher_dets
    noisy = copy.deepcopy(tiny_model).fuse()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in noisy.parameters():
            p.mul_(1 + 0.02 * torch.randn(p.shape, generator=g))
    close = teacher_agreement(detect(TorchRunner(noisy, img_size=320), images), t, 5)
    pruned_model = prune(tiny_model, PruneConfig(ratio=0.5))[0]
    pruned = teacher_agreement(detect(TorchRunner(pruned_model, img_size=320), images), t, 5)
    assert 0.3 < close < 1.0 and pruned < 0.5 * close


def _ev(unpruned, fp32, int8_trt, int8_cpu, metric="map"):
    from fyexport.pipeline.accuracy import FP32, INT8, UNPRUNED, AccuracyRow

    def row(v):
        if metric == "map":
            return AccuracyRow("m.onnx", 10, agreement=0.0, agreement_strict=0.0, map50=0.0, map=v)
        return AccuracyRow("m.onnx", 10, agreement=v, agreement_strict=0.0)

    return {UNPRUNED: row(unpruned), FP32: row(fp32), INT8["trt"]: row(int8_trt), INT8["cpu"]: row(int8_cpu)}


def test_gate_compares_the_final_model_with_the_unpruned_model():
    from fyexport.pipeline.accuracy import gate, gate_failure_line

    # a dead pruning: INT8 and pruned FP32 agree perfectly with each other, and detect nothing
    g = gate(_ev(0.4512, 0.0, 0.0, 0.0), None, None)
    assert not g.passed and g.drop_points == 45.12 and g.pruning_points == 45.12
    assert g.quantization_points == 0.0 and g.max_drop == 1.0
    line = gate_failure_line(g, "out")
    assert "FAILED" in line and "0.4512" in line and "`recover.minutes`" in line and "\n" not in line
    # recovered to 96%, INT8 costs 0.3 more: inside the default allowance for a 0.95 target
    g = gate(_ev(0.4512, 0.4330, 0.4300, 0.4310), None, 0.95)
    assert g.passed and g.final_model == "int8 (TensorRT Q/DQ)" and g.drop_points == 2.12
    assert g.max_drop == round(100 * 0.05 * 0.4512 + 1.0, 2)
    # the worse INT8 flavour decides, and an explicit --max-map-drop wins
    assert not gate(_ev(0.4512, 0.4330, 0.4300, 0.3000), None, 0.95).passed
    assert not gate(_ev(0.4512, 0.4330, 0.4300, 0.4310), 1.0, 0.95).passed


def test_gate_without_labels_uses_teacher_agreement():
    """Without labels the gate is in points of agreement: a 0.95 target reads as 0.93 there
    (agreement falls about 1.4 times as fast), and quantization may cost 3 points."""
    from fyexport.evaluation.agreement import agreement_target
    from fyexport.pipeline.accuracy import gate

    assert agreement_target(0.95) == pytest.approx(0.93)
    g = gate(_ev(1.0, 0.92, 0.917, 0.919, metric="agreement"), None, 0.95)
    assert g.metric.startswith("teacher agreement") and g.reference == 1.0 and g.drop_points == 8.3
    assert g.passed and g.max_drop == 10.0
    assert not gate(_ev(1.0, 0.85, 0.84, 0.845, metric="agreement"), None, 0.95).passed
    assert not gate(_ev(1.0, 1.0, 0.96, 0.97, metric="agreement"), None, None).passed  # INT8 alone: 3 points


def test_rows_run_where_the_user_deploys():
    """On a GPU the FP32 rows run their checkpoint in PyTorch, an engine runs on TensorRT, and
    the Q/DQ rows run on ONNX Runtime (its CUDA provider only with the [gpu] extra); without
    one everything runs on ONNX Runtime on the CPU."""
    from fyexport.onnx.facts import ort_has_cuda
    from fyexport.pipeline.accuracy import ENGINE_ROW, FP32, INT8, UNPRUNED, sources

    paths = {UNPRUNED: "b.onnx", FP32: "m.onnx", INT8["trt"]: "m.qdq.onnx", ENGINE_ROW: "m.engine"}
    ckpts = {UNPRUNED: "w.pt", FP32: "r.pt"}
    gpu = sources(paths, ckpts, "cuda:1")
    assert (gpu[UNPRUNED].runtime, str(gpu[UNPRUNED].run), gpu[UNPRUNED].device) == ("torch", "w.pt", "cuda:1")
    assert gpu[FP32].runtime == "torch" and str(gpu[FP32].artifact) == "m.onnx"
    assert gpu[INT8["trt"]].runtime == "onnxruntime" and gpu[INT8["trt"]].device == ("cuda:1" if ort_has_cuda()
                                                                                      else "cpu")
    assert gpu[ENGINE_ROW].runtime == "tensorrt"
    cpu = sources(paths, ckpts, "cpu")
    assert all(s.runtime == "onnxruntime" and s.device == "cpu" for k, s in cpu.items() if k != ENGINE_ROW)


def test_a_checkpoint_row_measures_what_its_onnx_row_measures(tmp_path, shapes_small):
    """Why a GPU runs the FP32 rows from their checkpoints: PyTorch on the checkpoint and ONNX
    Runtime on its export give the same row (here both on the CPU)."""
    from fyexport.data.labels import load_data_yaml
    from fyexport.onnx.export import export_onnx
    from fyexport.pipeline.accuracy import UNPRUNED, RowSource, measure

    export_onnx(__import__("fyexport").load(TINY), tmp_path / "m.onnx", img_size=256)
    spec = load_data_yaml(shapes_small)
    on = {UNPRUNED: RowSource(tmp_path / "m.onnx", tmp_path / "m.onnx", "onnxruntime", "cpu")}
    pt = {UNPRUNED: RowSource(tmp_path / "m.onnx", TINY, "torch", "cpu")}
    a, b = measure(on, spec, None, None, (256, 256))[UNPRUNED], measure(pt, spec, None, None, (256, 256))[UNPRUNED]
    assert a.artifact == b.artifact == "m.onnx" and a.images == b.images == 16
    assert abs(a.map - b.map) < 2e-3 and abs(a.map50 - b.map50) < 2e-3 and a.agreement == b.agreement == 1.0


def test_the_gate_judges_the_engine_when_there_is_one():
    """With an engine row the gate judges the engine, even when a Q/DQ row scores lower; without
    one, the worse INT8 flavour."""
    from fyexport.pipeline.accuracy import ENGINE_ROW, FP32, INT8, UNPRUNED, AccuracyRow, gate

    def row(m):
        return AccuracyRow(artifact="x", images=10, agreement=1.0, agreement_strict=1.0, map50=m, map=m)

    table = {UNPRUNED: row(0.50), FP32: row(0.49), INT8["trt"]: row(0.40), INT8["cpu"]: row(0.47)}
    g = gate(table, 2.0, None)
    assert g.final_model == INT8["trt"] and not g.passed
    g = gate(table | {ENGINE_ROW: row(0.485)}, 2.0, None)
    assert g.final_model == ENGINE_ROW and g.passed and abs(g.quantization_points - 0.5) < 1e-9


def test_a_failed_gate_says_what_was_built_and_advises_what_fits():
    """A failing engine was built (the gate judged it after the build): the line says so; with
    nothing lost to pruning, the advice is about quantization only."""
    from fyexport.pipeline.accuracy import ENGINE_ROW, GateResult, gate_failure_line

    g = GateResult("mAP@.5:.95", 0.2442, ENGINE_ROW, 0.2324, 0.2442, 1.18, 0.0, 1.18, 1.0, "1 for quantization", False)
    line = gate_failure_line(g, "out")
    assert "engine was built" in line and "no engine built" not in line
    assert "`calibrate.exclude`" in line and "`recover.minutes`" not in line and "\n" not in line
    qat = gate_failure_line(g, "out", qat=True)  # QAT keeps every conv in INT8: no auto-exclusion to advise
    assert "`qat.minutes`" in qat and "`calibrate.exclude`" in qat and "auto_exclude" not in qat
