"""``fyexport build``: artifacts and manifest, stage caching, safe failure, the accuracy gate."""
from __future__ import annotations

import json
import shutil
import time

import pytest
from conftest import CFG_DIR, TINY, run_cli

COMMON = ["--img-size", "320", "--num-images", "16", "--bench-duration", "0.2", "--bias-correction", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from fyexport.data.shapes import generate

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
    # one recovery epoch cannot recover anything: a wide gate, so that the caching is what is tested
    args = ("--prune", "0.3", "--recover-epochs", "1", "--recover-batch", "8", "--recover-crop", "160",
            "--max-map-drop", "100")
    proc = _build(out, calib, yaml_path, *args)
    assert proc.returncode == 0, proc.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "done" and "fyexport build" in man["command"]
    names = {a["artifact"] for a in man["artifacts"]}
    assert {"model", "onnx", "cache", "json", "trt", "trt-fp16", "cpu", "eval", "bench", "plot"} <= names
    for a in man["artifacts"]:
        from fyexport.core.artifacts import sha256_file

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

    # another calibration sample: calibration and what follows rerun, nothing before it
    third = _build(out, calib, yaml_path, *args, "--num-images", "12")
    assert third.returncode == 0, third.stderr
    for stage in ("load", "prune", "recover", "export"):
        assert f"{stage}: cached" in third.stderr
    for stage in ("calibrate", "eval", "bench"):
        assert f"{stage}: inputs or settings changed" in third.stderr
    # a new image in the calibration folder: it is a training image too, so recovery reruns
    from PIL import Image

    Image.open(sorted(calib.glob("*.jpg"))[0]).transpose(Image.FLIP_LEFT_RIGHT).save(calib / "extra.jpg")
    fourth = _build(out, calib, yaml_path, *args, "--num-images", "12")
    assert fourth.returncode == 0, fourth.stderr
    assert "prune: cached" in fourth.stderr and "recover: inputs or settings changed" in fourth.stderr


def test_interrupted_calibration_resumes_byte_identical(data, tmp_path, monkeypatch):
    import fyexport.data.images as pre
    from fyexport.core.config import make_config
    from fyexport.pipeline.build import BuildConfig, run_build

    root, yaml_path = data
    kw = {"weights": str(TINY), "calib": str(root / "images/train"), "prune.ratio": 0.0, "img_size": 320,
          "calibrate.num_images": 16, "run_bench": False, "calibrate.bias_correction": 4}
    run_build(make_config(BuildConfig, {"out": str(tmp_path / "ref"), **kw}), command="test")
    real, calls = pre.read_image, {"n": 0}

    def flaky(p):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(p)

    monkeypatch.setattr(pre, "read_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_build(make_config(BuildConfig, {"out": str(tmp_path / "run"), **kw}), command="test")
    assert not (tmp_path / "run/calib.cache").exists()
    monkeypatch.setattr(pre, "read_image", real)
    run_build(make_config(BuildConfig, {"out": str(tmp_path / "run"), **kw}), command="test")
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
    assert "accuracy gate:" in bad.stderr and "FAILED" in bad.stderr and "Traceback" not in bad.stderr
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


def test_no_recover_fails_the_gate_against_the_unpruned_model(data, tmp_path):
    """Pruned 0.5 and not recovered, the model detects nothing: exit 1, the gate's one line
    names the numbers and what to try, the artifacts and a failed-gate manifest stay, no engine."""
    root, yaml_path = data
    proc = _build(tmp_path / "o", root / "images/train", yaml_path, "--no-recover", "--no-bench")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "FAILED" in line[0] and "unpruned FP32" in line[0] and "--recover-minutes" in line[0]
    man = json.loads((tmp_path / "o/manifest.json").read_text())
    assert man["status"] == "failed-gate" and man["stages"]["engine"]["status"] == "skipped"
    assert man["gate"]["passed"] is False and man["gate"]["reference"] > 0  # the gate's numbers are kept
    assert (tmp_path / "o/model.qdq.cpu.onnx").exists() and (tmp_path / "o/pruned.pt").exists()
    assert "passed" not in proc.stdout and "FAILED" in proc.stdout  # the report is shown too


def test_without_labels_the_gate_uses_teacher_agreement(data, tmp_path):
    root, _ = data
    proc = run_cli("build", "--weights", TINY, "--calib", root / "images/train", "-o", tmp_path / "o", *COMMON,
                   "--no-recover", "--no-bench")
    assert proc.returncode == 1 and "teacher agreement" in proc.stderr and "Traceback" not in proc.stderr
    ev = json.loads((tmp_path / "o/eval.json").read_text())
    assert ev["unpruned fp32"]["agreement"] == 1.0 and ev["fp32"]["agreement"] < 0.2 and "map" not in ev["fp32"]


def test_demo_runs_small(tmp_path):
    """The README's main command, shrunk: generated data, build on the bundled checkpoint and a
    report; one epoch of recovery on 8 images cannot pass the gate, which must then say so."""
    out = tmp_path / "demo"
    proc = run_cli("demo", "-o", out, "--calib-images", "8", "--val-images", "4", "--recover-epochs", "1")
    assert proc.returncode in (0, 1), proc.stderr
    man = json.loads((out / "build" / "manifest.json").read_text())
    assert man["status"] == ("done" if proc.returncode == 0 else "failed-gate") and "fyexport demo" in man["command"]
    ev = json.loads((out / "build" / "eval.json").read_text())
    assert {"unpruned fp32", "fp32", "int8 (TensorRT Q/DQ)", "int8 (CPU Q/DQ)"} <= set(ev)
    assert ev["unpruned fp32"]["images"] == 4
    assert (out / "build" / "model.qdq.cpu.onnx").exists() and "accuracy gate:" in proc.stdout
    if proc.returncode == 1:
        assert "FAILED" in proc.stderr and "passed" not in proc.stdout


@pytest.mark.skipif(not (CFG_DIR / "deploy/yolov7-w6.yaml").is_file(), reason=f"needs the official cfg yamls (shared "
                    f"test data), not found under {CFG_DIR}")
def test_a_p6_model_builds_at_the_size_rounded_to_its_stride(data, tmp_path, monkeypatch):
    """An official-format P6 checkpoint (stride 64) at --img-size 672, a multiple of 32 but not
    of 64: the first stage fits the size to 704 once, and MAC counting, pruning and the export
    use it (the old build rounded to 32 and stopped in its first stage with an unexpected
    RuntimeError).  Narrowed to 1/8 of the width so that the build's first stages take seconds."""
    import onnx
    import yaml
    from official_format import save_official

    from fyexport.core.config import make_config
    from fyexport.models import build_model
    from fyexport.pipeline.build import Build, BuildConfig, run_build

    cfg = yaml.safe_load((CFG_DIR / "deploy/yolov7-w6.yaml").read_text())
    cfg.update(nc=5, width_multiple=0.125)
    save_official(build_model(cfg), tmp_path / "w6.pt")

    class Stop(Exception):
        pass

    def stop(self):
        raise Stop

    monkeypatch.setattr(Build, "calibrate", stop)
    root, _ = data
    with pytest.raises(Stop):
        run_build(make_config(BuildConfig, {"weights": str(tmp_path / "w6.pt"), "calib": str(root / "images/train"),
                                            "out": str(tmp_path / "b"), "img_size": 672, "prune.ratio": 0.3,
                                            "run_recover": False}), command="test")
    stages = json.loads((tmp_path / "b/manifest.json").read_text())["stages"]
    assert stages["load"]["info"]["img_size"] == [704, 704]
    assert stages["prune"]["info"]["count_size"] == [704, 704] and stages["prune"]["info"]["macs_ratio"] > 1
    dims = onnx.load(str(tmp_path / "b/model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 704, 704]


def test_qat_build_trains_every_conv_but_the_head_in_int8(data, tmp_path):
    """A pruned build (QAT by default): the Q/DQ models carry the weights and ranges trained with
    fake quantization (their metadata says so, qat.json records the training), no conv but the
    three detection-head convs stays in float although the build prunes, and a second run is
    cached."""
    import onnx

    from fyexport.onnx.facts import read_meta
    from fyexport.quantize.inspection import inspect_qdq

    root, yaml_path = data
    out = tmp_path / "out"
    args = ("--prune", "0.3", "--recover-epochs", "3", "--recover-batch", "8", "--recover-crop", "160",
            "--max-map-drop", "100", "--qat-steps", "2")  # QAT is the default; recovery's 6 steps give it 2
    proc = _build(out, root / "images/train", yaml_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "quantization-aware training: 2 steps" in proc.stderr
    assert json.loads((out / "manifest.json").read_text())["stages"]["recover"]["info"]["iterations"] == 6
    record = json.loads((out / "qat.json").read_text())
    assert record["steps"] == 2 and record["start"] == "search" and record["quantized_convs"] > 50
    for name in ("model.qdq.onnx", "model.qdq.cpu.onnx"):
        proto = onnx.load(out / name)
        assert read_meta(proto).calibration["method"] == "qat"
        rep = inspect_qdq(proto, name)
        assert len(rep.float_convs) == 3 and not rep.violations, (rep.float_convs, rep.violations)
    man = json.loads((out / "manifest.json").read_text())
    assert man["stages"]["calibrate"]["info"]["method"] == "qat from search"
    # the FP32 row is the INT8 models' FP32 twin: the quantization's share of the loss is its own
    ev = json.loads((out / "eval.json").read_text())
    assert ev["fp32"]["artifact"] == "model.qat.onnx" and ev["fp32 before QAT"]["artifact"] == "model.onnx"
    again = _build(out, root / "images/train", yaml_path, *args)
    assert again.returncode == 0 and "calibrate: cached" in again.stderr


def test_qat_build_of_an_unpruned_model_is_its_own_teacher(data, tmp_path):
    """``build --prune 0 --qat``: the unpruned model fine-tuned with INT8 in the loop against its own
    FP32 copy; nothing but the head in float (an unpruned build never excludes groups)."""
    from fyexport.quantize.inspection import inspect_qdq

    root, yaml_path = data
    out = tmp_path / "out"
    proc = _build(out, root / "images/train", yaml_path, "--prune", "0", "--qat", "--qat-steps", "1", "--no-bench")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "qat.json").read_text())
    assert record["steps"] == 1 and record["learned_ranges"] is False  # the default: frozen ranges
    assert len(inspect_qdq(__import__("onnx").load(out / "model.qdq.cpu.onnx")).float_convs) == 3


def test_qat_is_on_by_default_when_pruning_and_takes_its_time_from_recovery(tmp_path):
    """The build's QAT default: on exactly when it quantizes a model it prunes and recovers; it
    takes a quarter of recovery's time limit (and of its step limit) from recovery; an explicit
    `--qat-minutes` takes nothing from recovery; `--prune 0 --qat` trains 4 minutes alone."""
    from dataclasses import replace

    from fyexport.onnx.nms import NmsConfig
    from fyexport.pipeline.build import BuildConfig

    base = BuildConfig(device="cpu")
    pruned, unpruned = (replace(base, prune=replace(base.prune, ratio=r)) for r in (0.3, 0.0))
    assert pruned.qat_on and pruned.sensitive_groups_in_float == 0
    assert pruned.recovery(320).minutes == pytest.approx(15 * 0.75)
    q = pruned.qat_training(320, n_images=400)
    assert q.minutes == pytest.approx(15 * 0.25) and q.steps == min(base.qat.steps, 100 * 25 // 3 + 1)
    assert pruned.qat_training(320, n_images=16).steps == 34  # recovery: 100 steps (1 an epoch), QAT a third
    assert q.within(6 * 60).minutes == pytest.approx(2.0)  # recovery at its target after 6 min: QAT 2 of 8
    assert q.within(3600).minutes == q.minutes
    given = replace(pruned, qat=replace(base.qat, minutes=2.0))
    assert given.recovery(320).minutes is None and given.qat_training(320).minutes == 2.0
    for off in (unpruned, replace(pruned, run_qat=False), replace(pruned, run_recover=False),
                replace(pruned, engine=replace(base.engine, precision="fp16")),
                replace(pruned, export=replace(base.export, nms=NmsConfig()))):
        assert not off.qat_on and off.recovery(320).minutes is None
    assert replace(pruned, run_qat=False).sensitive_groups_in_float == 4
    alone = replace(unpruned, run_qat=True)
    assert alone.qat_on and alone.qat_training(320).time_budget_s == 4 * 60


def test_auto_exclude_with_qat_is_refused_in_one_line(tmp_path):
    """QAT keeps every conv but the head in INT8: `--auto-exclude` would be ignored, so a build
    that trains with QAT (the default when pruning) refuses it, naming the flags to use."""
    (tmp_path / "calib").mkdir()
    proc = run_cli("build", "--weights", TINY, "--calib", tmp_path / "calib", "-o", tmp_path / "b",
                   "--auto-exclude", "4")
    assert proc.returncode == 2 and "--auto-exclude does not apply to quantization-aware training" in proc.stderr
    assert "--exclude" in proc.stderr and "--qat" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
