"""A user's whole TensorRT path, walked on the stand-in of each release (issue 23 Deliver 1 and
Acceptance; issue 25 item 3, Jetson).

Each command runs as ``python tests/trt_stand_in.py VERSION ARGS`` does: the stand-in of that
release installed as ``tensorrt`` (with its CUDA runtime in Polygraphy's wrapper), then
``fyexport ARGS`` in this process (``walk``), and it must exit as a user expects, with no
traceback and nothing "unexpected".  The Jetson acceptance commands run the script itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trt_stand_in as sti
from conftest import REPO, TINY
from trt_fixtures import WEAK, install, plan_of

WALKED = ("10.3", "10.8", "10.16", "11.1")


def _fyexport(*args) -> int:
    from fyexport.cli import main

    return main([str(a) for a in args])


def _walk(monkeypatch, capsys, version: str, *args, rc: int = 0) -> tuple:
    """``python tests/trt_stand_in.py VERSION ARGS...``, in this process: (stdout, stderr)."""
    install(monkeypatch, version)
    got = _fyexport(*args)
    out, err = capsys.readouterr()
    assert got == rc, f"fyexport {' '.join(map(str, args))} on TensorRT {version}: exit {got}\n{err[-3000:]}"
    assert "Traceback" not in err and "unexpected" not in err.lower(), err[-3000:]
    if rc:
        assert len(err.strip().splitlines()) == 1, err
    return out, err


def _script(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tests" / "trt_stand_in.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """What a user makes before the engine: a small shapes data set, and with ``fyexport export``
    and ``fyexport calibrate`` the tiny fixture at 256 with a dynamic batch, raw and with each NMS,
    and the Q/DQ models of both NMS exports."""
    from fyexport.data.shapes import generate

    d = tmp_path_factory.mktemp("walk")
    generate(d / "data", train=8, val=4, size=256)
    common = ("--img-size", 256, "--dynamic-batch")
    assert _fyexport("export", TINY, "-o", d / "dyn.onnx", *common) == 0
    assert _fyexport("export", TINY, "-o", d / "onnxnms.onnx", *common, "--nms") == 0
    assert _fyexport("export", TINY, "-o", d / "plug.onnx", *common, "--nms", "trt-plugin") == 0
    for name in ("onnxnms", "plug"):
        assert _fyexport("calibrate", d / f"{name}.onnx", "--images", d / "data/images/train", "-o", d / f"cal_{name}",
                         "--num-images", 8, "--bias-correction", 0) == 0
    return d


def _val_images(walk) -> list:
    from fyexport.data.images import read_image
    from fyexport.data.selection import list_images

    return [read_image(p) for p in list_images(walk / "data/images/val")[:3]]


@pytest.mark.parametrize("version", WALKED)
def test_the_engine_path_with_defaults(version, walk, tmp_path, monkeypatch, capsys):
    """``engine`` with its defaults on a dynamic-batch export (profile 1..1), then ``eval`` (batches
    of 8), ``bench`` (agreement passes of 4, the baseline engine built at the largest --batch), the
    Detector on a list and on a stack of three images (defect 1: each split into runs the profile
    takes), and ``triton``."""
    from fyexport import Detector

    eng = tmp_path / "m.engine"
    _walk(monkeypatch, capsys, version, "engine", walk / "dyn.onnx", "-o", eng)
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["tensorrt"] == sti.RELEASES[version] and meta["input"]["profile"]["max"][0] == 1
    out, _ = _walk(monkeypatch, capsys, version, "eval", eng, "--data", walk / "data/shapes.yaml")
    assert "tensorrt fp32 cuda" in out and "mAP@.5:.95" in out
    if version != "10.3":
        out, _ = _walk(monkeypatch, capsys, version, "bench", eng, "--baseline", TINY, "--images",
                       walk / "data/images/val", "--img-size", 256, "--duration", 0.02, "--warmup", 0,
                       "--agreement-images", 4, "--runtime", "tensorrt", "--json", tmp_path / "bench.json")
        rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
        assert {r["artifact"] for r in rows} >= {"baseline.engine", "m.engine"}
        assert all(r["agreement"] is not None for r in rows)
    imgs = _val_images(walk)
    install(monkeypatch, version)
    with Detector(eng) as det, Detector(walk / "dyn.onnx") as ref:
        listed, stacked, expected = det(imgs), det(np.stack(imgs)), ref(imgs)
    assert len(listed) == len(stacked) == 3 and sum(len(d) for d in listed) > 0
    for a, b, c in zip(listed, stacked, expected):
        np.testing.assert_allclose(a, c, atol=1e-4)
        np.testing.assert_allclose(b, c, atol=1e-4)
    _walk(monkeypatch, capsys, version, "triton", eng, "--repo", tmp_path / "repo")
    assert "tensorrt_plan" in (tmp_path / "repo/m/config.pbtxt").read_text()


@pytest.mark.parametrize("version", WALKED)
def test_fp16_and_int8_engines_with_each_nms(version, walk, tmp_path, monkeypatch, capsys):
    """FP16 and INT8 engines of both end-to-end NMS exports build (the FP16 engine of a --nms
    trt-plugin export too: "builds or is refused in one line"), and the Detector runs the INT8
    ones on three images."""
    from fyexport import Detector

    flavour = "model.qdq.onnx" if version in WEAK else "model.qdq.fp16.onnx"
    built = {}
    for name in ("onnxnms", "plug"):
        _walk(monkeypatch, capsys, version, "engine", walk / f"{name}.onnx", "-o", tmp_path / f"{name}.fp16.engine",
              "--precision", "fp16", "--max-batch", 2)
        _walk(monkeypatch, capsys, version, "engine", walk / f"cal_{name}" / flavour, "-o",
              tmp_path / f"{name}.int8.engine", "--max-batch", 2)
        built[name] = tmp_path / f"{name}.int8.engine"
        meta = json.loads((tmp_path / f"{name}.int8.engine.json").read_text())
        assert meta["precision"] == "int8" and meta["int8_convs"] > 0 and meta["nms"]["kind"] == name.replace(
            "onnxnms", "onnx").replace("plug", "trt-plugin")
    imgs = _val_images(walk)
    install(monkeypatch, version)
    with Detector(built["onnxnms"]) as a, Detector(built["plug"]) as b:
        da, db = a(imgs), b(imgs)
    assert len(da) == len(db) == 3 and sum(len(d) for d in da) > 0
    for x, y in zip(da, db):  # the same Q/DQ backbone and the same NMS semantics
        assert len(x) == len(y) and np.allclose(x, y, atol=1e-3)


def test_the_readme_build_on_every_walked_release(walk, tmp_path, monkeypatch, capsys):
    """The README's main command (the tiny fixture, --prune 0 --img-size 256, a few images, no
    benchmark: `bench` of engines is walked above) runs the engine stage once TensorRT and a GPU
    are there: on 11.1, then in the same folder on 10.3, 10.8 and 10.16, where only the engine
    stage runs again (its key holds the TensorRT version)."""
    out = tmp_path / "build"
    args = ("build", "--weights", TINY, "--calib", walk / "data/images/train", "-o", out, "--data",
            walk / "data/shapes.yaml", "--prune", 0, "--img-size", 256, "--bias-correction", 4, "--no-bench")
    for version in ("11.1", "10.3", "10.8", "10.16"):
        _walk(monkeypatch, capsys, version, *args)
        meta = json.loads((out / "model.engine.json").read_text())
        assert meta["tensorrt"] == sti.RELEASES[version] and meta["precision"] == "int8"
        assert meta["onnx"]["file"] == ("model.qdq.onnx" if version in WEAK else "model.qdq.fp16.onnx")
        stages = json.loads((out / "manifest.json").read_text())["stages"]
        assert stages["engine"]["status"] == "done"
        assert stages["calibrate"]["status"] == ("done" if version == "11.1" else "cached")
        # the engine has its own accuracy row, run by TensorRT (the stand-in runs the ONNX it was built
        # from), and the gate judges the engine rather than the Q/DQ ONNX
        row = stages["engine"]["info"]["accuracy"]
        table = json.loads((out / "eval.json").read_text())
        qdq = table["int8 (TensorRT Q/DQ)"]
        assert row["artifact"] == "model.engine" and row["images"] == qdq["images"]
        assert abs(row["map"] - qdq["map"]) < 0.02 and row["agreement"] > 0.9
        assert json.loads((out / "manifest.json").read_text())["gate"]["final_model"] == "engine (TensorRT)"


# -- Jetson: TensorRT 10.3 (JetPack 6) and DLA ---------------------------------------------------------------

def test_jetson_dla_acceptance(walk, tmp_path):
    """Issue 25's acceptance, through the script: 10.3 builds the Q/DQ model for the GPU and for DLA
    core 0 (exit 0); 11.1 refuses a DLA core in one line (exit 2)."""
    src = walk / "cal_onnxnms/model.qdq.onnx"
    for extra in ((), ("--dla-core", 0)):
        proc = _script("10.3", "engine", src, "-o", tmp_path / "m.engine", *extra, cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["dla_core"] == 0 and "GPU_FALLBACK" in meta["flags"] and meta["gpu"] == sti.JETSON_GPU[0]
    dla = plan_of(tmp_path / "m.engine")["dla"]
    assert dla["core"] == 0 and dla["on_dla"] and dla["on_gpu"]  # the decode (Pow, constants) falls back
    proc = _script("11.1", "engine", src, "-o", tmp_path / "n.engine", "--dla-core", 0, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "TensorRT 11.1.0.106 has no DLA support" in proc.stderr and not (tmp_path / "n.engine").exists()


@pytest.mark.parametrize("args,version,says", [
    (("--dla-core", 0, "--no-gpu-fallback"), "10.3", "and GPU fallback is off"),
    (("--dla-core", 2), "10.3", "--dla-core 2: this machine has 2 DLA cores"),
    (("--dla-core", 0), "10.8", "TensorRT 10.8.0.43 has no DLA support"),
    (("--dla-core", 0, "--precision", "fp32", "--max-batch", 1), "10.3", "DLA runs INT8 and FP16 layers only"),
    (("--dla-core", 0, "--precision", "fp16", "--max-batch", 4), "10.3", "DLA needs static shapes"),
])
def test_dla_constraints_are_one_line(args, version, says, walk, tmp_path, monkeypatch, capsys):
    src = walk / ("dyn.onnx" if "--max-batch" in args else "cal_onnxnms/model.qdq.onnx")
    _, err = _walk(monkeypatch, capsys, version, "engine", src, "-o", tmp_path / "m.engine", *args, rc=2)
    assert says in err and not (tmp_path / "m.engine").exists()


def test_a_machine_without_dla_is_one_line(walk, tmp_path):
    """JetPack's TensorRT on a machine with no DLA core (Orin Nano; the stand-in's --dla-cores 0)."""
    proc = _script("10.3", "--dla-cores", 0, "engine", walk / "cal_onnxnms/model.qdq.onnx", "-o",
                   tmp_path / "m.engine", "--dla-core", 0, cwd=tmp_path)
    assert proc.returncode == 2 and "this machine has no DLA" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_runner_and_the_detector_load_dla_engines(walk, tmp_path, monkeypatch, capsys):
    """A DLA engine runs on the core it was built for (the sidecar's dla_core sets the runtime's
    DLA core), with the GPU engine's detections; on a machine without that core it is refused."""
    from fyexport import Detector
    from fyexport.core.errors import InputError

    src = walk / "cal_plug/model.qdq.onnx"
    _walk(monkeypatch, capsys, "10.3", "engine", src, "-o", tmp_path / "gpu.engine")
    _walk(monkeypatch, capsys, "10.3", "engine", src, "-o", tmp_path / "dla.engine", "--dla-core", 1)
    imgs = _val_images(walk)
    trt = install(monkeypatch, "10.3")
    with Detector(tmp_path / "dla.engine") as dla, Detector(tmp_path / "gpu.engine") as gpu:
        assert dla.runner.runtime.DLA_core == 1
        for a, b in zip(dla(imgs), gpu(imgs)):
            np.testing.assert_allclose(a, b, atol=1e-4)
    assert trt._stand_in.dla_cores == 2
    install(monkeypatch, "10.3", dla_cores=0)
    with pytest.raises(InputError, match="built for DLA core 1, and this machine has no DLA core"):
        Detector(tmp_path / "dla.engine")
