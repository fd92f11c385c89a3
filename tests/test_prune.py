"""Pruning (seed reproduction), the pruned-model format, recovery (bad input)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CFG_DIR, FIXTURES, TINY, needs_shared, run_cli


@needs_shared
def test_seed_reproduction_exact():
    """deploy/yolov7 nc=80, fused, ratio 0.5, L2, head ignored, no rounding, counted at 224."""
    from fyexport import build_model
    from fyexport.prune import PruneConfig, prune

    ref = json.loads((FIXTURES / "reference.json").read_text())["seed_pruning_yolov7_fused_224"]
    cfg = PruneConfig(ratio=0.5, importance="l2", round_to=0, count_size=224)
    _, res = prune(build_model(CFG_DIR / "deploy/yolov7.yaml"), cfg)
    assert (res.macs_before, res.macs_after) == (ref["macs_before"], ref["macs_after"])
    assert (res.params_before, res.params_after) == (ref["params_before"], ref["params_after"])


def test_prune_keeps_head_outputs_rounds_channels_and_needs_no_grad_flags(tiny_model):
    """A stripped checkpoint has requires_grad off; pruning must still remove channels."""
    from fyexport.prune import PruneConfig, prune

    for p in tiny_model.parameters():
        p.requires_grad_(False)
    pruned, res = prune(tiny_model, PruneConfig(ratio=0.5, importance="l2", round_to=8))
    assert res.macs_after < 0.3 * res.macs_before
    assert [c.out_channels for c in pruned.head.m] == [30, 30, 30]
    convs = [m for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d) and ".m." not in n]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert sum(p.numel() for p in tiny_model.parameters()) == 6025812  # the input model is untouched


def test_prune_training_graph_keeps_implicits_consistent(tiny_model):
    from fyexport.prune import PruneConfig, prune

    pruned, res = prune(tiny_model, PruneConfig(ratio=0.3, fuse=False))
    assert not pruned.is_fused and type(pruned.head).__name__ == "IDetect"
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        a = pruned(x)[0]
        b = pruned.fuse()(x)[0]
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_pruned_model_roundtrip_and_onnx_parity(tmp_path, tiny_model):
    """save -> fyexport.load -> fyexport export -> ONNX Runtime == PyTorch."""
    import onnxruntime as ort

    import fyexport
    from fyexport.prune import PruneConfig, prune

    pruned, _ = prune(tiny_model, PruneConfig(ratio=0.5))
    fyexport.save(pruned, tmp_path / "p.pt")
    back = fyexport.load(tmp_path / "p.pt")
    assert back.meta.prune["ratio"] == 0.5
    proc = run_cli("export", tmp_path / "p.pt", "-o", tmp_path / "p.onnx", "--img-size", "320")
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    y = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        ref = back(torch.from_numpy(x))[0].numpy()
    assert np.abs(y[..., :4] - ref[..., :4]).max() < 1e-3 and np.abs(y[..., 4:] - ref[..., 4:]).max() < 1e-4


@pytest.mark.parametrize("args,needle", [
    (["--ratio", "1.5"], "between 0 and 1"),
    (["--ratio", "0"], "between 0 and 1"),
    (["--importance", "magic"], "--importance"),
])
def test_prune_bad_input(tmp_path, args, needle):
    out = tmp_path / "p.pt"
    proc = run_cli("prune", TINY, "-o", out, *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@needs_shared
def test_prune_cli_json(tmp_path):
    proc = run_cli("prune", "--cfg", CFG_DIR / "deploy/yolov7-tiny.yaml", "--nc", "5", "--ratio", "0.25",
                   "--count-size", "320", "--json", "-o", tmp_path / "p.pt")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["macs_after"] < d["macs_before"] and d["count_size"] == 320 and (tmp_path / "p.pt").exists()


def test_recover_bad_inputs(tmp_path, shapes_small, tiny_model):
    import fyexport
    from fyexport.models import save

    other = fyexport.build_model(tiny_model.yaml, nc=3)  # the bundled checkpoint's own cfg, 3 classes
    save(other, tmp_path / "three.pt")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--teacher", tmp_path / "three.pt", "--data", shapes_small], "classes"),
        (["--teacher", TINY, "--images", tmp_path / "empty"], "no image files"),
        (["--teacher", TINY, "--data", tmp_path / "nowhere.yaml"], "no such data yaml"),
        (["--teacher", TINY, "--data", shapes_small, "--crop", "100"], "--crop must be a multiple of 32"),
    ]
    for args, needle in cases:
        out = tmp_path / "r.pt"
        proc = run_cli("recover", TINY, *args, "--epochs", "1", "-o", out)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()


