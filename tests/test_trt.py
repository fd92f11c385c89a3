"""The TensorRT layer.

* Contract tests drive the builder, calibrator and runtime against fake modules with exactly
  the API surface of TensorRT 10.x and 11.x (tests/fake_tensorrt.py): anything 11 removed is
  absent there, so touching it fails.
* Real tests build and run engines; they need ``tensorrt`` and an NVIDIA GPU and are skipped
  elsewhere (TensorRT cannot be installed on the machines this project is developed on).
"""
from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

from conftest import TINY, needs_shared, run_cli
from fake_tensorrt import REMOVED_IN_11, make_fake_trt

pytestmark = needs_shared


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """FP32, Q/DQ (fp32 remainder), Q/DQ fp16 and a dynamic-batch FP32 ONNX of the tiny fixture at 256."""
    import fyexport
    from fyexport.datasets.shapes import generate
    from fyexport.export import export_onnx
    from fyexport.quantize import calibrate

    d = tmp_path_factory.mktemp("trt")
    model = fyexport.load(TINY)
    export_onnx(model, d / "fp32.onnx", img_size=256)
    export_onnx(model, d / "dyn.onnx", img_size=256, dynamic_batch=True)
    generate(d / "data", train=8, val=4, size=256)
    calibrate(d / "fp32.onnx", d / "data/images/train", d / "cal", num_images=8, batch=4)
    return d


@pytest.fixture(params=["10.16.1", "11.1.0"])
def fake_trt(request, monkeypatch):
    trt = make_fake_trt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def test_fake_surfaces_match_the_documented_removals():
    t10, t11 = make_fake_trt("10.16.1"), make_fake_trt("11.1.0")
    for name in REMOVED_IN_11["module"][:3]:
        assert hasattr(t10, name) and not hasattr(t11, name)
    for flag in ("INT8", "FP16"):
        assert hasattr(t10.BuilderFlag, flag) and not hasattr(t11.BuilderFlag, flag)
    assert not hasattr(t11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert hasattr(t11.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    cfg = t11.Builder(t11.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        cfg.int8_calibrator = object()
    for t in (t10, t11):  # gone since 10.0
        eng_cls = t.ICudaEngine
        assert not any(hasattr(eng_cls, a) for a in ("num_bindings", "get_binding_shape", "binding_is_input"))


def test_int8_qdq_build_and_run(fake_trt, artifacts, tmp_path):
    """Q/DQ INT8 engines build on both versions with only common or present APIs, carry their
    metadata beside them, report INT8 layers, and run with the same outputs as ONNX Runtime."""
    from fyexport.trt.builder import BuildConfig, build_engine
    from fyexport.trt.runtime import TrtRunner

    src = artifacts / "cal" / ("model.qdq.fp16.onnx" if fake_trt.__version__.startswith("11") else "model.qdq.onnx")
    eng = tmp_path / "m.engine"
    res = build_engine(src, eng, BuildConfig(precision="int8", timing_cache=str(tmp_path / "t.cache")))
    plan = json.loads(eng.read_bytes())
    assert plan["int8"] and plan["strongly_typed"] == fake_trt.__version__.startswith("11")
    if fake_trt.__version__.startswith("10"):
        assert set(plan["flags"]) == {"INT8", "FP16"}  # weakly typed explicit quantization on 10
    else:
        assert plan["flags"] == []  # no precision flags exist on 11
    assert plan["pools"] == {"0": 4 << 30}
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["tensorrt"] == fake_trt.__version__ and meta["precision"] == "int8" and meta["int8_layers"] >= 1
    assert meta["names"] == ["circle", "square", "triangle", "star", "cross"] and meta["img_size"] == [256, 256]
    assert meta["preprocessing"]["pad_value"] == 114 and len(meta["onnx"]["sha256"]) == 64
    assert meta["calibration"]["method"] == "entropy" and meta["calibration"]["cache_sha256"]
    assert (tmp_path / "t.cache").read_bytes().endswith(b"+fake-timing")
    assert res.meta_path.exists() and not eng.read_bytes().startswith(b"{\"format\"")  # plan stays a pure plan

    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    with TrtRunner(eng, device="cpu") as r:
        y = r.infer(x)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.array_equal(y, ref)


def test_silent_fp32_is_refused(fake_trt, artifacts, tmp_path, monkeypatch):
    """If the built engine has no INT8 layer, the build fails and no engine is written."""
    from fyexport.errors import FyexportError
    from fyexport.trt import builder

    monkeypatch.setattr(builder, "_inspect_plan", lambda trt, logger, data: (40, 0, {"Layers": []}))
    with pytest.raises(FyexportError, match="silent FP32"):
        builder.build_engine(artifacts / "cal/model.qdq.onnx", tmp_path / "m.engine",
                             builder.BuildConfig(precision="int8"))
    assert not (tmp_path / "m.engine").exists()


def test_fp16_without_the_fp16_flag_is_baked(fake_trt, artifacts, tmp_path):
    from fyexport.trt.builder import BuildConfig, build_engine

    build_engine(artifacts / "fp32.onnx", tmp_path / "h.engine", BuildConfig(precision="fp16"))
    plan = json.loads((tmp_path / "h.engine").read_bytes())
    if fake_trt.__version__.startswith("11"):
        assert plan["strongly_typed"] and plan["onnx"].endswith("h.fp16.onnx") and plan["flags"] == []
    else:
        assert plan["flags"] == ["FP16"] and not plan["strongly_typed"]


def test_dynamic_batch_profile(fake_trt, artifacts, tmp_path):
    from fyexport.trt.builder import BuildConfig, build_engine
    from fyexport.trt.runtime import TrtRunner

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", BuildConfig(precision="fp32", min_batch=1,
                                                                               opt_batch=4, max_batch=8))
    plan = json.loads((tmp_path / "d.engine").read_bytes())
    assert plan["profiles"] == [{"images": [[1, 3, 256, 256], [4, 3, 256, 256], [8, 3, 256, 256]]}]
    with TrtRunner(tmp_path / "d.engine", device="cpu") as r:
        assert r.info.batch is None and r.infer(np.zeros((3, 3, 256, 256), np.float32)).shape == (3, 4032, 10)


def test_trt_entropy_calibrator_is_version_gated(fake_trt, artifacts, tmp_path):
    from fyexport.errors import FyexportError
    from fyexport.trt.builder import BuildConfig, build_engine

    cfg = BuildConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                      calib_num_images=8, calib_batch=1)
    if fake_trt.__version__.startswith("11"):
        with pytest.raises(FyexportError, match="removed implicit INT8"):
            build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
    else:
        build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
        plan = json.loads((tmp_path / "e.engine").read_bytes())
        assert plan["int8"] and set(plan["flags"]) == {"INT8", "FP16"}
        assert (tmp_path / "e.calib.cache").read_bytes().startswith(b"TRT-")


def test_engine_from_another_version_is_refused(artifacts, tmp_path, monkeypatch):
    from fyexport.errors import InputError
    from fyexport.trt.builder import BuildConfig, build_engine
    from fyexport.trt.runtime import TrtRunner

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.16.1"))
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", BuildConfig(precision="fp32"))
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("11.1.0"))
    with pytest.raises(InputError, match="Rebuild on this machine with: .*fyexport engine"):
        TrtRunner(tmp_path / "a.engine", device="cpu").load()


def test_parser_errors_are_reported(fake_trt, tmp_path):
    from fyexport.errors import FyexportError, InputError
    from fyexport.trt.builder import BuildConfig, build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises((FyexportError, InputError)):
        build_engine(bad, tmp_path / "x.engine", BuildConfig())


def test_engine_command_without_tensorrt(artifacts, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    proc = run_cli("engine", artifacts / "cal/model.qdq.fp16.onnx", "-o", tmp_path / "m.engine")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "fyexport[tensorrt]" in line and "trtexec --onnx=" in line and "--stronglyTyped" in line
    assert len(line.splitlines()) == 1


def test_triton_repository(fake_trt, artifacts, tmp_path):
    from fyexport.trt.builder import BuildConfig, build_engine
    from fyexport.trt.triton import write_repository

    build_engine(artifacts / "dyn.onnx", tmp_path / "m.engine", BuildConfig(precision="fp32", max_batch=8))
    model_dir = write_repository(tmp_path / "m.engine", tmp_path / "repo", name="yolov7")
    assert (model_dir / "1/model.plan").read_bytes() == (tmp_path / "m.engine").read_bytes()
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    check_triton_config(cfg)
    assert cfg["name"] == "yolov7" and cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 8
    assert cfg["input"][0]["name"] == "images" and cfg["input"][0]["dims"] == [3, 256, 256]
    assert cfg["output"][0]["name"] == "output" and cfg["output"][0]["dims"] == [4032, 10]
    assert cfg["output"][0]["data_type"] == "TYPE_FP32" and "dynamic_batching" in cfg


# -- a small text-format parser and a check against Triton's ModelConfig fields ----------

MODEL_CONFIG_FIELDS = {"name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input",
                       "output", "batch_input", "batch_output", "optimization", "dynamic_batching",
                       "sequence_batching", "ensemble_scheduling", "instance_group", "default_model_filename",
                       "cc_model_filenames", "metric_tags", "parameters", "model_warmup", "model_operation_policy",
                       "model_transaction_policy", "response_cache", "model_repository_agents"}
IO_FIELDS = {"name", "data_type", "format", "dims", "reshape", "is_shape_tensor", "allow_ragged_batch", "optional",
             "label_filename", "is_non_linear_format_io"}
DATA_TYPES = {"TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
              "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"}


def parse_pbtxt(text: str) -> dict:
    import re

    tokens = re.findall(r'"[^"]*"|[{}\[\],:]|[^\s{}\[\],:]+', text)
    pos = 0

    def value():
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "{":
            return message("}")
        if t == "[":
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        if t.startswith('"'):
            return t[1:-1]
        try:
            return int(t)
        except ValueError:
            return t

    def message(end):
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            if tokens[pos] == ",":
                pos += 1
                continue
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [v]
            else:
                out[key] = v
        pos += 1
        return out

    return message(None)


def check_triton_config(cfg: dict) -> None:
    assert set(cfg) <= MODEL_CONFIG_FIELDS, set(cfg) - MODEL_CONFIG_FIELDS
    assert isinstance(cfg["name"], str) and cfg["platform"] == "tensorrt_plan"
    assert isinstance(cfg["max_batch_size"], int) and cfg["max_batch_size"] >= 0
    for io in cfg["input"] + cfg["output"]:
        assert set(io) <= IO_FIELDS and io["data_type"] in DATA_TYPES
        assert all(isinstance(d, int) and (d > 0 or d == -1) for d in io["dims"])


# -- real TensorRT (skipped where it cannot run) -----------------------------------------------

def _real_trt_or_skip():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("needs TensorRT (pip install 'fyexport[tensorrt]'), which cannot be installed on this machine")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU visible to torch")


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_real_engine_matches_onnxruntime(precision, artifacts, tmp_path):
    _real_trt_or_skip()
    import onnxruntime as ort
    import tensorrt as trt

    from fyexport.trt.builder import BuildConfig, build_engine
    from fyexport.trt.runtime import TrtRunner

    v11 = int(trt.__version__.split(".")[0]) >= 11
    src = artifacts / ("fp32.onnx" if precision == "fp32" else
                       ("cal/model.qdq.fp16.onnx" if v11 else "cal/model.qdq.onnx"))
    res = build_engine(src, tmp_path / "m.engine", BuildConfig(precision=precision))
    if precision == "int8":
        assert res.meta["int8_layers"] > 0
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    with TrtRunner(tmp_path / "m.engine") as r:
        y = r.infer(x)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    tol = 1e-2 if precision == "fp32" else 0.05
    assert np.abs(y[..., 4:] - ref[..., 4:]).max() < tol
