"""``fyexport build``: artifacts and manifest, stage caching, safe failure, the mAP gate."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import TINY, needs_shared, run_cli

pytestmark = needs_shared

COMMON = ["--img-size", "320", "--num-images", "16", "--bench-duration", "0.2", "--bias-correction", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fyexport.datasets.shapes import generate

    root = tmp_path_factory.mktemp("bdata")
    yaml_path = generate(root, train=16, val=12, size=320)
    return root, yaml_path


def _build(out, calib, yaml_path, *extra):
    return run_cli("build", "--weights", TINY, "--calib", calib, "-o", out, "--data", yaml_path, *COMMON, *extra)


def test_build_end_to_end_cache_and_calib_change(data, tmp_path):
    root, yaml_path = data
    calib = tmp_path / "calib"
    shutil.copytree(root / "images/train", calib)
    out = tmp_path / "out"
    args = ("--prune", "0.3", "--recover-epochs", "1", "--recover-batch", "8", "--recover-crop", "160")
    proc = _build(out, calib, yaml_path, *args)
    assert proc.returncode == 0, proc.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and "fyexport build" in man["command"]
    names = {a["artifact"] for a in man["artifacts"]}
    assert {"model", "onnx", "cache", "qdq", "qdq_fp16", "qdq_cpu", "eval", "bench", "plot"} <= names
    for a in man["artifacts"]:
        from fyexport.artifacts import sha256_file

        assert sha256_file(out / a["path"]) == a["sha256"]
    assert man["stages"]["engine"]["status"] == "skipped" and "trtexec --onnx=" in proc.stderr
    assert not list(out.glob(".*.tmp"))
    info = run_cli("info", out)
    assert info.returncode == 0 and "calib.cache" in info.stdout

    t = time.time()
    again = _build(out, calib, yaml_path, *args)
    assert again.returncode == 0, again.stderr
    assert time.time() - t < 10
    for stage in ("load", "prune", "recover", "export", "calibrate", "eval", "bench"):
        assert f"{stage}: cached" in again.stderr

    # a different calibration folder: calibration and what follows rerun, nothing before it
    from PIL import Image

    Image.open(sorted(calib.glob("*.jpg"))[0]).transpose(Image.FLIP_LEFT_RIGHT).save(calib / "extra.jpg")
    third = _build(out, calib, yaml_path, *args)
    assert third.returncode == 0, third.stderr
    for stage in ("load", "prune", "recover", "export"):
        assert f"{stage}: cached" in third.stderr
    for stage in ("calibrate", "eval", "bench"):
        assert f"{stage}: inputs or settings changed" in third.stderr


def test_interrupted_calibration_resumes_byte_identical(data, tmp_path, monkeypatch):
    import fyexport.preprocess as pre
    from fyexport.build import BuildOptions, run_build

    root, yaml_path = data
    kw = dict(weights=str(TINY), calib=str(root / "images/train"), prune=0.0, img_size=320, num_images=16,
              bench=False, bias_correction=4)
    run_build(BuildOptions(out=str(tmp_path / "ref"), **kw), command="test")
    real, calls = pre.read_image, {"n": 0}

    def flaky(p):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(p)

    monkeypatch.setattr(pre, "read_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_build(BuildOptions(out=str(tmp_path / "run"), **kw), command="test")
    assert not (tmp_path / "run/calib.cache").exists()
    monkeypatch.setattr(pre, "read_image", real)
    run_build(BuildOptions(out=str(tmp_path / "run"), **kw), command="test")
    for name in ("model.onnx", "calib.cache", "calib.json", "model.qdq.onnx", "model.qdq.fp16.onnx",
                 "model.qdq.cpu.onnx"):
        a, b = (tmp_path / "ref" / name).read_bytes(), (tmp_path / "run" / name).read_bytes()
        if name == "calib.json":  # absolute folder paths differ between the two runs
            a, b = json.loads(a), json.loads(b)
            for d in (a, b):
                d["model"].pop("path")
        assert a == b, name


def test_awkward_calibration_folder_completes(data, tmp_path):
    from test_quantize import _bad_image_folder

    root, yaml_path = data
    folder = _bad_image_folder(tmp_path / "mixed", root / "images/train")
    proc = run_cli("build", "--weights", TINY, "--calib", folder, "-o", tmp_path / "out", "--prune", "0",
                   "--no-bench", *COMMON)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 4" in proc.stderr and "Traceback" not in proc.stderr


def test_map_gate(data, tmp_path):
    """Calibrated on 2 blank images, INT8 must fail the gate (exit 1, artifacts kept)."""
    from PIL import Image

    root, yaml_path = data
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(2):
        Image.new("RGB", (320, 320), (114, 114, 114)).save(blank / f"b{i}.png")
    # 12 validation images are noisy, hence the wide gate; the blank calibration is far outside it
    bad = _build(tmp_path / "bad", blank, yaml_path, "--prune", "0", "--no-bench", "--max-map-drop", "5")
    assert bad.returncode == 1, bad.stderr
    assert "mAP gate failed" in bad.stderr and "Traceback" not in bad.stderr
    assert (tmp_path / "bad/model.qdq.cpu.onnx").exists()
    assert json.loads((tmp_path / "bad/manifest.json").read_text())["status"] == "failed-gate"
    good = _build(tmp_path / "good", root / "images/train", yaml_path, "--prune", "0", "--no-bench", "--max-map-drop",
                  "5")
    assert good.returncode == 0, good.stderr
    assert "passed" in good.stdout


@pytest.mark.parametrize("case", ["missing_weights", "text_weights", "empty_folder", "bad_prune"])
def test_build_usage_errors(case, tmp_path, data):
    root, yaml_path = data
    weights, calib, extra = TINY, root / "images/train", []
    if case == "missing_weights":
        weights = tmp_path / "nope.pt"
    elif case == "text_weights":
        weights = tmp_path / "t.pt"
        weights.write_text("hello")
    elif case == "empty_folder":
        calib = tmp_path / "empty"
        calib.mkdir()
    else:
        extra = ["--prune", "1.5"]
    proc = run_cli("build", "--weights", weights, "--calib", calib, "-o", tmp_path / "o", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in proc.stderr


def test_log_json_events(data, tmp_path):
    root, yaml_path = data
    proc = run_cli("build", "--weights", TINY, "--calib", root / "images/train", "-o", tmp_path / "o", "--prune", "0",
                   "--no-bench", "--log-json", *COMMON)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.startswith("{")]
    stages = [r["stage"] for r in recs if r.get("event") == "stage" and r.get("status") == "done"]
    assert "calibrate" in stages and "export" in stages


def test_demo_runs_small(tmp_path):
    """The README's main command, shrunk: generated data, build on the bundled checkpoint, summary."""
    out = tmp_path / "demo"
    proc = run_cli("demo", "-o", out, "--calib-images", "8", "--val-images", "4", "--recover-epochs", "1")
    assert proc.returncode == 0, proc.stderr
    man = json.loads((out / "build" / "manifest.json").read_text())
    assert man["status"] == "done" and "fyexport demo" in man["command"]
    ev = json.loads((out / "build" / "eval.json").read_text())
    assert {"unpruned fp32", "fp32", "int8"} <= set(ev) and ev["unpruned fp32"]["images"] == 4
    assert (out / "build" / "model.qdq.cpu.onnx").exists() and "mAP gate" in proc.stdout
