"""Pruning (seed reproduction), the pruned-model format, recovery and evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import CFG_DIR, FIXTURES, TINY, needs_shared, run_cli

pytestmark = needs_shared


def test_seed_reproduction_exact():
    """deploy/yolov7 nc=80, fused, ratio 0.5, L2, head ignored, no rounding, counted at 224."""
    from fyexport import build_model
    from fyexport.prune import prune

    ref = json.loads((FIXTURES / "reference.json").read_text())["seed_pruning_yolov7_fused_224"]
    _, res = prune(build_model(CFG_DIR / "deploy/yolov7.yaml"), 0.5, "l2", round_to=None, count_size=224)
    assert (res.macs_before, res.macs_after) == (ref["macs_before"], ref["macs_after"])
    assert (res.params_before, res.params_after) == (ref["params_before"], ref["params_after"])


def test_prune_keeps_head_outputs_rounds_channels_and_needs_no_grad_flags(tiny_model):
    """A stripped checkpoint has requires_grad off; pruning must still remove channels."""
    from fyexport.prune import prune

    for p in tiny_model.parameters():
        p.requires_grad_(False)
    pruned, res = prune(tiny_model, 0.5, "l2", round_to=8)
    assert res.macs_after < 0.3 * res.macs_before
    assert [c.out_channels for c in pruned.head.m] == [30, 30, 30]
    convs = [m for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d) and ".m." not in n]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert sum(p.numel() for p in tiny_model.parameters()) == 6025812  # the input model is untouched


def test_prune_training_graph_keeps_implicits_consistent(tiny_model):
    from fyexport.prune import prune

    pruned, res = prune(tiny_model, 0.3, fuse=False)
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
    from fyexport.prune import prune

    pruned, _ = prune(tiny_model, 0.5)
    fyexport.save(pruned, tmp_path / "p.pt")
    back = fyexport.load(tmp_path / "p.pt")
    assert back.meta["prune"]["ratio"] == 0.5
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


def test_prune_cli_json(tmp_path):
    proc = run_cli("prune", "--cfg", CFG_DIR / "deploy/yolov7-tiny.yaml", "--nc", "5", "--ratio", "0.25",
                   "--count-size", "320", "--json", "-o", tmp_path / "p.pt")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["macs_after"] < d["macs_before"] and d["count_size"] == 320 and (tmp_path / "p.pt").exists()


def test_recover_improves_on_pruned(tmp_path, tiny_model, shapes_small):
    """A few distillation steps reduce the distillation loss on held-out real images."""
    import fyexport
    from fyexport.loss import DistillLoss
    from fyexport.preprocess import prepare, read_image
    from fyexport.prune import prune
    from fyexport.recover import RecoverConfig, recover, training_images

    pruned, _ = prune(tiny_model, 0.3)
    paths, spec = training_images(data=shapes_small)
    val = spec.images("val")[:4]
    x = torch.from_numpy(np.stack([prepare(read_image(p), 320).tensor for p in val]))
    teacher = fyexport.load(TINY).fuse()
    kd = DistillLoss(3)
    with torch.no_grad():
        t_out = teacher(x)[1]
        before = kd(pruned(x)[1], t_out)[0].item()
    cfg = RecoverConfig(epochs=5, img_size=320, batch=4, lr=2e-3, warmup_iters=2)
    rec, summary = recover(pruned, fyexport.load(TINY), paths, tmp_path / "r.pt", cfg, data=spec)
    with torch.no_grad():
        after = kd(rec(x)[1], t_out)[0].item()
    assert summary["iterations"] == 10 and summary["labels"] is True
    assert after < 0.9 * before
    back = fyexport.load(tmp_path / "r.pt")
    assert back.meta["recover"]["epochs"] == 5 and not (tmp_path / "r.recover-state.pt").exists()


def test_recover_resume_continues(tmp_path, tiny_model, shapes_small, monkeypatch):
    import fyexport
    from fyexport import recover as rec_mod
    from fyexport.prune import prune

    pruned, _ = prune(tiny_model, 0.3)
    paths, _ = rec_mod.training_images(data=shapes_small)
    cfg = rec_mod.RecoverConfig(epochs=2, img_size=256, batch=4, warmup_iters=1)
    calls = {"n": 0}
    real = rec_mod.augment

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # during the second epoch
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(rec_mod, "augment", flaky)
    with pytest.raises(KeyboardInterrupt):
        rec_mod.recover(pruned, fyexport.load(TINY), paths, tmp_path / "r.pt", cfg)
    assert (tmp_path / "r.recover-state.pt").exists() and not (tmp_path / "r.pt").exists()
    monkeypatch.setattr(rec_mod, "augment", real)
    _, summary = rec_mod.recover(pruned, fyexport.load(TINY), paths, tmp_path / "r.pt", cfg, resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def test_recover_bad_inputs(tmp_path, shapes_small):
    from fyexport.models import save

    import fyexport

    other = fyexport.build_model(CFG_DIR / "deploy/yolov7-tiny.yaml", nc=3)
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


def test_random_crop_moves_boxes_with_pixels():
    from fyexport.recover import random_crop

    x = torch.zeros(2, 3, 128, 128)
    # image 0: a white 20x20 square centred at (70, 50); image 1: a box no 64x64 window keeps 30% of
    x[0, :, 40:60, 60:80] = 1.0
    tg = torch.tensor([[0, 2, 70.0, 50.0, 20.0, 20.0], [1, 1, 64.0, 64.0, 120.0, 120.0]])
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for _ in range(20):
        xc, tc = random_crop(x, tg.clone(), 64, gen)
        assert xc.shape == (2, 3, 64, 64)
        for row in tc:
            assert int(row[0]) == 0 and int(row[1]) == 2  # the cut-off box of image 1 is dropped
            cx, cy, w, h = row[2:].tolist()
            x1, y1, x2, y2 = round(cx - w / 2), round(cy - h / 2), round(cx + w / 2), round(cy + h / 2)
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inside = xc[0, 0, y1:y2, x1:x2]
            assert inside.numel() and bool((inside == 1).all())  # the box still frames the square
            assert float(xc[0, 0].sum()) == pytest.approx((x2 - x1) * (y2 - y1))
            seen += 1
    assert seen > 0


def test_eval_matches_between_torch_and_onnx(tmp_path, shapes_small):
    from fyexport.evaluate import evaluate
    from fyexport.export import export_onnx
    from fyexport.runners import open_runner

    import fyexport

    export_onnx(fyexport.load(TINY), tmp_path / "t.onnx")
    a = evaluate(open_runner(str(TINY)), shapes_small)
    b = evaluate(open_runner(str(tmp_path / "t.onnx")), shapes_small)
    assert a.images == b.images == 16 and a.instances > 0
    assert abs(a.map - b.map) < 2e-3 and a.map > 0.2
    assert len(a.per_class) == 5 and all("map50" in c for c in a.per_class)


def test_eval_cli_refuses_class_mismatch(tmp_path, shapes_small):
    import fyexport

    m = fyexport.build_model(CFG_DIR / "deploy/yolov7-tiny.yaml", nc=3)
    fyexport.save(m, tmp_path / "three.pt")
    proc = run_cli("eval", tmp_path / "three.pt", "--data", shapes_small, "--img-size", "256")
    assert proc.returncode == 2 and "3 classes" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name,key", [("yolov7-tiny-shapes.pt", "tiny"), ("yolov7-shapes.pt", "full")])
def test_eval_agrees_with_official_figures(name, key, tmp_path_factory):
    """Acceptance: within 1.0 point of the official test.py figures on 500 validation images."""
    from fyexport.datasets.shapes import generate
    from fyexport.evaluate import evaluate
    from fyexport.export import export_onnx
    from fyexport.runners import open_runner

    import fyexport

    ref = json.loads((FIXTURES / "reference.json").read_text())["fixtures"][name]
    root = tmp_path_factory.getbasetemp() / "shapes_val500"
    if not (root / "shapes.yaml").exists():
        generate(root, train=0, val=500)
    onnx_path = tmp_path_factory.mktemp(key) / "m.onnx"
    export_onnx(fyexport.load(FIXTURES / name), onnx_path)
    res = evaluate(open_runner(str(onnx_path)), root / "shapes.yaml")
    assert abs(res.map50 - ref["official_val_map50"]) <= 0.01
    assert abs(res.map - ref["official_val_map50_95"]) <= 0.01
