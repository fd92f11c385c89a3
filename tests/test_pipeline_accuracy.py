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
