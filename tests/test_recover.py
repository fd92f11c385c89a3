"""Recovery: the streaming input pipeline, distillation, held-out checks and the target,
torch.distributed (gloo on this CPU), resume, and bad input."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_cli

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, *args, env=None, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _weights(path):
    import fyexport

    return {k: v.float() for k, v in fyexport.load(path).state_dict().items() if v.dtype.is_floating_point}


def _pruned(tiny_model, ratio=0.3):
    from fyexport.prune import PruneConfig, prune

    return prune(tiny_model, PruneConfig(ratio=ratio))[0]


def test_recover_improves_on_pruned(tmp_path, tiny_model, shapes_small):
    """A few distillation steps reduce the distillation loss on held-out real images."""
    import fyexport
    from fyexport.data.images import prepare, read_image
    from fyexport.recover import RecoverConfig, recover, training_images
    from fyexport.recover.loss import DistillLoss

    pruned = _pruned(tiny_model)
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
    assert summary["iterations"] == 10 and summary["labels"] is True and summary["stopped"] == "epochs"
    assert summary["images_per_s"] > 0 and 0 <= summary["input_wait_share"] < 1
    assert after < 0.9 * before
    back = fyexport.load(tmp_path / "r.pt")
    assert back.meta.recover["epochs"] == 5 and not (tmp_path / "r.recover-state.pt").exists()


def test_loader_with_workers_yields_the_same_batches(shapes_small):
    from fyexport.recover import training_images
    from fyexport.recover.data import EpochSampler, TrainingSet, make_loader

    paths, spec = training_images(data=shapes_small)
    ds = TrainingSet(paths, (160, 160), spec.nc)
    order = EpochSampler()
    order.indices = [5, 2, 7, 0, 3, 1, 6, 4]
    a = list(make_loader(ds, order, 3, 0, False, 0))
    b = list(make_loader(ds, order, 3, 2, False, 0))
    assert len(a) == len(b) == 2  # the short last batch is dropped
    for (xa, ta, ia, sa), (xb, tb, ib, sb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ta, tb) and ia == ib and sa == sb and not sa.images and not sa.error
    assert a[0][2] == [5, 2, 7] and a[0][0].shape == (3, 3, 160, 160) and a[0][0].dtype == torch.uint8


def test_caches_serve_the_same_pixels_and_a_changed_image_is_not_stale(tmp_path, shapes_small):
    import shutil

    from fyexport.recover import training_images
    from fyexport.recover.data import TrainingSet

    paths, spec = training_images(data=shapes_small)
    imgs = tmp_path / "images" / "train"
    imgs.mkdir(parents=True)
    mine = [Path(shutil.copy(p, imgs / p.name)) for p in paths[:3]]
    plain = TrainingSet(mine, (160, 160))
    disk = TrainingSet(mine, (160, 160), cache="disk", cache_dir=tmp_path / "cache")
    ram = TrainingSet(mine, (160, 160), cache="ram")
    ram.fill_ram()
    for i in range(3):
        assert np.array_equal(plain[i][2], disk[i][2]) and np.array_equal(plain[i][2], ram[i][2])
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3
    assert np.array_equal(disk[0][2], plain[0][2])  # served from the cache now
    shutil.copy(paths[5], mine[0])  # the file changes under the same name
    os.utime(mine[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert np.array_equal(disk[0][2], TrainingSet(mine, (160, 160))[0][2])
    assert not np.array_equal(disk[0][2], plain[1][2])


def test_vanished_images_are_skipped_and_counted(tmp_path, tiny_model, shapes_small):
    import fyexport
    from fyexport.recover import RecoverConfig, recover, training_images

    paths, spec = training_images(data=shapes_small)
    gone = tmp_path / "images" / "train" / "gone.jpg"
    cfg = RecoverConfig(epochs=1, img_size=128, batch=3, warmup_iters=1, workers=0)
    _, summary = recover(_pruned(tiny_model), fyexport.load(TINY), [*paths, gone], tmp_path / "r.pt", cfg, data=spec)
    assert summary["skipped"] == {"unreadable": 1} and summary["iterations"] == 3


def test_label_outside_the_classes_names_the_file(tmp_path, shapes_small):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(shapes_small.parent, root)
    bad = sorted((root / "labels" / "train").glob("*.txt"))[2]
    bad.write_text("7 0.5 0.5 0.1 0.1\n")
    (root / "shapes.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnc: 5\n"
                                      "names: [circle, square, triangle, star, cross]\n")
    pruned = tmp_path / "p.pt"
    assert run_cli("prune", TINY, "--ratio", "0.3", "-o", pruned).returncode == 0
    proc = run_cli("recover", pruned, "--teacher", TINY, "--data", root / "shapes.yaml", "--img-size", "128",
                   "--batch", "2", "--epochs", "1", "-o", tmp_path / "r.pt")
    assert proc.returncode == 2 and bad.name in proc.stderr and "class id 7" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


def test_recovery_stops_at_the_target_and_keeps_the_best_weights(tmp_path, tiny_model, shapes_small):
    """An unpruned copy of the teacher keeps ~100% at once: the first check stops training."""
    import copy

    import fyexport
    from fyexport.recover import HoldOut, RecoverConfig, recover, training_images

    paths, spec = training_images(data=shapes_small)
    held = HoldOut(spec.images("val"), (160, 160), 5, labelled=True)
    cfg = RecoverConfig(epochs=20, img_size=160, batch=2, lr=1e-8, warmup_iters=1, target=0.9, check_every=3,
                        workers=0)
    _, summary = recover(copy.deepcopy(tiny_model).fuse(), fyexport.load(TINY), paths, tmp_path / "r.pt", cfg,
                         data=spec, holdout=held)
    assert summary["stopped"] == "target" and summary["iterations"] == 3
    assert summary["best"]["kept"] >= 0.9 and summary["best"]["step"] == 3
    assert len(summary["checks"]) == 1


def test_the_held_out_images_are_never_trained_on(tmp_path, tiny_model, shapes_small):
    import fyexport
    from fyexport.core.errors import InternalError
    from fyexport.recover import HoldOut, RecoverConfig, holdout_for, recover, split_holdout, training_images

    paths, spec = training_images(images=shapes_small.parent / "images")  # train and val, no labels
    train, held = split_holdout(paths, 4)
    assert len(held) == 4 and not set(train) & set(held) and sorted(train + held) == sorted(paths)
    train2, h2 = holdout_for(paths, None, RecoverConfig(img_size=160), 5, n=4)
    assert train2 == train and h2.images == held and not h2.labelled
    _, spec = training_images(data=shapes_small)
    train3, h3 = holdout_for(paths, spec, RecoverConfig(img_size=160), 5)
    assert h3.labelled and not set(map(str, train3)) & set(map(str, h3.images))
    with pytest.raises(InternalError):
        recover(_pruned(tiny_model), fyexport.load(TINY), paths, tmp_path / "r.pt", RecoverConfig(img_size=160),
                holdout=HoldOut(held, (160, 160), 5, labelled=False))


def test_two_gloo_processes_match_one_process_with_twice_the_batch(tmp_path, shapes_small):
    """Per-rank batch 2 on two processes against batch 4 on one, same seed, two steps, with the
    YOLO loss: the losses normalise by totals averaged over the ranks, so DDP's averaged
    gradient is the one-process gradient.  Tolerance: the mean absolute weight difference
    stays under 0.1% of the mean weight change (only the float summation order differs);
    another seed differs by about as much as training moved the weights.  No reconstruction
    here, so that the weight change is the gradient steps' alone."""
    import fyexport
    from fyexport.prune import PruneConfig, prune

    one, two, other = tmp_path / "one.pt", tmp_path / "two.pt", tmp_path / "other.pt"
    single = [sys.executable, str(HERE / "dist_recover.py")]
    env = {**os.environ, "DIST_RECONSTRUCT": "0"}
    subprocess.run([*single, *map(str, (one, shapes_small, 4, 1, 0))], check=True, cwd=HERE, timeout=600, env=env)
    proc = _torchrun(2, HERE / "dist_recover.py", two, shapes_small, 2, 1, 0, env={"DIST_RECONSTRUCT": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x2:" in proc.stderr and "global batch 4" in proc.stderr
    subprocess.run([*single, *map(str, (other, shapes_small, 4, 1, 1))], check=True, cwd=HERE, timeout=600, env=env)

    def flat(w):
        return torch.cat([v.flatten() for v in w.values()])

    start = prune(fyexport.load(TINY), PruneConfig(ratio=0.3))[0].state_dict()
    w0 = {k: v.float() for k, v in start.items() if v.dtype.is_floating_point}
    z, a, b, c = flat(w0), flat(_weights(one)), flat(_weights(two)), flat(_weights(other))
    moved, apart, seed_apart = (a - z).abs().mean(), (a - b).abs().mean(), (a - c).abs().mean()
    assert moved > 1e-4 and apart < 1e-3 * moved and seed_apart > 0.5 * moved


def test_two_process_run_interrupted_and_resumed_ends_identical(tmp_path, shapes_small):
    straight, resumed = tmp_path / "a" / "r.pt", tmp_path / "b" / "r.pt"
    assert _torchrun(2, HERE / "dist_recover.py", straight, shapes_small, 2, 3, 0).returncode == 0
    cut = _torchrun(2, HERE / "dist_recover.py", resumed, shapes_small, 2, 3, 0, "interrupt-at=3")
    assert cut.returncode != 0 and not resumed.exists() and (resumed.parent / "r.recover-state.pt").exists()
    proc = _torchrun(2, HERE / "dist_recover.py", resumed, shapes_small, 2, 3, 0, "resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming recovery at step 3" in proc.stderr
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_cli_writes_one_output_and_logs_the_world_size(tmp_path, shapes_small):
    pruned = tmp_path / "p.pt"
    assert run_cli("prune", TINY, "--ratio", "0.3", "-o", pruned).returncode == 0
    out = tmp_path / "out" / "r.pt"
    proc = _torchrun(2, "-m", "fyexport", "recover", pruned, "--teacher", TINY, "--data", shapes_small,
                     "--img-size", "128", "--batch", "2", "--epochs", "2", "--workers", "0", "-o", out,
                     env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x2:" in proc.stderr and "world" not in proc.stdout
    assert [p.name for p in out.parent.iterdir()] == ["r.pt"]
    assert proc.stderr.count("wrote ") == 1


def _qat_outputs_ok(folder: Path, stem: str, world: int) -> None:
    import onnx

    from fyexport.quantize.inspection import inspect_qdq

    names = {p.name for p in folder.iterdir()}
    assert {f"{stem}.pt", f"{stem}.onnx", f"{stem}.qat.onnx", "model.qdq.onnx", "model.qdq.fp16.onnx",
            "model.qdq.cpu.onnx", "calib.cache", "calib.json", "qat.json"} <= names, names
    assert not [n for n in names if "state" in n], names
    record = json.loads((folder / "qat.json").read_text())
    assert record["world_size"] == world and record["steps"] >= 1 and record["start"] == "search"
    rep = inspect_qdq(onnx.load(folder / "model.qdq.cpu.onnx"), "model.qdq.cpu.onnx")
    assert len(rep.float_convs) == 3 and not rep.violations


def test_recover_qat_writes_the_int8_models_beside_the_recovered_model(tmp_path, shapes_small):
    """`fyexport recover --qat`: recovery, then quantization-aware training in a quarter of its
    limits; the recovered model, its ONNX, the QAT twin, calibration's files and the Q/DQ models
    (only the 3 head convs in float) side by side; `--qat-steps` without `--qat` is refused."""
    pruned = tmp_path / "p.pt"
    assert run_cli("prune", TINY, "--ratio", "0.3", "-o", pruned).returncode == 0
    out = tmp_path / "out" / "r.pt"
    args = ("recover", pruned, "--teacher", TINY, "--data", shapes_small, "--img-size", "128", "--batch", "2",
            "--epochs", "1", "--workers", "0", "-o", out)
    bad = run_cli(*args, "--qat-steps", "3")
    assert bad.returncode == 2 and "Add --qat" in bad.stderr and not out.parent.exists()
    proc = run_cli(*args, "--qat")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "quantization-aware training: 2 steps" in proc.stderr  # recovery's 4 steps (1 epoch): a third, rounded up
    _qat_outputs_ok(out.parent, "r", 1)


def test_torchrun_recover_qat_trains_on_every_rank(tmp_path, shapes_small):
    pruned = tmp_path / "p.pt"
    assert run_cli("prune", TINY, "--ratio", "0.3", "-o", pruned).returncode == 0
    out = tmp_path / "out" / "r.pt"
    proc = _torchrun(2, "-m", "fyexport", "recover", pruned, "--teacher", TINY, "--data", shapes_small,
                     "--img-size", "128", "--batch", "2", "--epochs", "2", "--workers", "0", "--qat", "-o", out,
                     env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("quantization-aware training:"))
    assert "x2;" in line
    _qat_outputs_ok(out.parent, "r", 2)


def test_a_rank_that_cannot_reach_the_rendezvous_fails_in_one_line(tmp_path, shapes_small):
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "FYEXPORT_DIST_TIMEOUT": "3"}
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "fyexport", "recover", TINY, "--teacher", TINY, "--data",
                           shapes_small, "--img-size", "128", "-o", tmp_path / "r.pt"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1 and time.time() - t < 60
    assert "could not join the process group" in proc.stderr and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("warning: ")]  # "no pruning record"
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 of 2") and "within 3 s" in lines[0], proc.stderr


def test_out_of_memory_says_which_batch_to_try(tmp_path, tiny_model, shapes_small, monkeypatch):
    import fyexport
    from fyexport.core.errors import FyexportError
    from fyexport.recover import RecoverConfig, recover, training_images
    from fyexport.recover.train import Trainer

    def oom(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "_step", oom)
    paths, spec = training_images(data=shapes_small)
    cfg = RecoverConfig(epochs=1, img_size=128, batch=4, workers=0)
    with pytest.raises(FyexportError, match=r"out of memory .* batch of 4 .*Try a batch of 2"):
        recover(_pruned(tiny_model), fyexport.load(TINY), paths, tmp_path / "r.pt", cfg, data=spec)


def test_refit_recovers_a_conv_exactly():
    """The least-squares refit finds the conv that produced the target (stride, padding, bias)."""
    from fyexport.recover.reconstruct import refit

    g = torch.Generator().manual_seed(0)
    true = torch.nn.Conv2d(6, 5, 3, stride=2, padding=1)
    conv = torch.nn.Conv2d(6, 5, 3, stride=2, padding=1)
    x = torch.randn(3, 6, 17, 17, generator=g)
    with torch.no_grad():
        y = true(x)
    err = refit(conv, x, y, g, positions=10**6, lam=1e-9)
    assert err < 1e-5
    assert torch.allclose(conv.weight, true.weight, atol=1e-4) and torch.allclose(conv.bias, true.bias, atol=1e-4)


def test_reconstruction_brings_the_pruned_model_near_the_teacher(tiny_model, shapes_small):
    """On held-out images the reconstructed student's head maps are much closer to the teacher's
    than the freshly pruned student's (each kept channel is matched to its teacher channel)."""
    import fyexport
    from fyexport.data.images import prepare, read_image
    from fyexport.data.labels import load_data_yaml
    from fyexport.prune import PruneConfig, prune
    from fyexport.recover.loss import DistillLoss
    from fyexport.recover.reconstruct import reconstruct

    def batch(paths):
        return torch.from_numpy(np.stack([prepare(read_image(p), 256).tensor for p in paths]))

    spec = load_data_yaml(shapes_small)
    train, val = batch(spec.images("train")[:8]), batch(spec.images("val")[:6])
    teacher = fyexport.load(TINY).eval()
    student, _ = prune(tiny_model, PruneConfig(ratio=0.5, fuse=False))
    kd = DistillLoss(3)
    with torch.no_grad():
        t_out = teacher(val)[1]
        before = kd(student.eval()(val)[1], t_out)[0].item()
    res = reconstruct(student, teacher, train, positions=4096)
    with torch.no_grad():
        after = kd(student.eval()(val)[1], t_out)[0].item()
    assert res["layers"] > 50 and 0 < res["mean_rel_err"] < 1
    assert after < 0.6 * before


def test_training_images_count_a_file_once_however_it_is_spelled(shapes_small, monkeypatch):
    """--calib given as a relative folder and the data yaml's train split naming the same
    folder absolutely: every image once, not twice."""
    from fyexport.data.labels import load_data_yaml
    from fyexport.recover import training_images

    train = load_data_yaml(shapes_small).images("train")
    folder = Path(train[0]).parent
    monkeypatch.chdir(folder.parent)
    paths, _ = training_images(images=folder.name, data=shapes_small)
    assert len(paths) == len(train)


def test_torchrun_build_recovers_on_every_rank_and_writes_one_build(tmp_path, shapes_small):
    """`torchrun --nproc-per-node 2 -m fyexport build`: both processes recover, the first one
    alone runs the other stages; one manifest, one recovered model, exit 0 on both."""
    import json

    from fyexport.data.labels import load_data_yaml

    calib = Path(load_data_yaml(shapes_small).images("train")[0]).parent
    out = tmp_path / "out"
    proc = _torchrun(2, "-m", "fyexport", "build", "--weights", TINY, "--calib", calib, "-o", out, "--data",
                     shapes_small, "--prune", "0.3", "--img-size", "128", "--recover-epochs", "1", "--recover-batch",
                     "2", "--recover-workers", "0", "--num-images", "8", "--no-bench", "--max-map-drop", "100",
                     env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x2:" in proc.stderr and proc.stderr.count("[1/8] load") == 1
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and man["stages"]["recover"]["status"] == "done"
    assert (out / "recovered.pt").exists() and not list(out.glob("*.recover-state.pt"))
    # quantization-aware training (the default of a pruned INT8 build) runs on both processes too
    line = next(x for x in proc.stderr.splitlines() if x.startswith("quantization-aware training:"))
    assert "x2;" in line and (out / "qat.json").exists() and not (out / ".qat-state.pt").exists()
    assert json.loads((out / "qat.json").read_text())["world_size"] == 2
