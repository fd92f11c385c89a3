"""The TensorRT layer.

* Contract tests drive the builder, calibrator, runner, bench and Triton writer against
  stand-ins of TensorRT 10.8, 10.12, 10.16, 11.0 and 11.1 (tests/fake_tensorrt.py) written from
  the real sources: what 11 removed is absent there, enum members carry each release's values,
  and they fail where TensorRT fails (unregistered plugins, shapes outside the profile,
  refused timing caches, non-positive Q/DQ scales...).
* The C++ example is compiled against the real TensorRT headers where they are present
  (FYEXPORT_TRT_HEADERS, default /work/trt-headers/<version>/include; CI has none and skips).
* Real tests build and run engines; they need ``tensorrt`` and an NVIDIA GPU and are skipped
  elsewhere (TensorRT cannot be installed on the machines this project is developed on).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY, run_cli
from fake_tensorrt import PLUGIN_NOT_FOUND, REMOVED_IN_11, SCALE_NOT_POSITIVE, VERSIONS, make_fake_trt
from trt_fixtures import _install

V10_8, V10_12, V10_16, V11_0, V11_1 = VERSIONS
CPP = REPO / "examples" / "cpp"


def _eleven(trt) -> bool:
    return trt.__version__.startswith("11")


def test_fake_surfaces_match_the_real_headers():
    """The stand-ins carry each release's members and values (NvInfer.h of 10.8 ... 11.1)."""
    t8, t12, t16, t110, t11 = (make_fake_trt(v) for v in VERSIONS)
    for name in REMOVED_IN_11["module"]:
        assert hasattr(t16, name) and not hasattr(t11, name) and not hasattr(t110, name)
    for flag in REMOVED_IN_11["BuilderFlag"]:
        assert hasattr(t8.BuilderFlag, flag) and not hasattr(t11.BuilderFlag, flag)
    assert int(t16.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1 and int(t11.NetworkDefinitionCreationFlag
                                                                               .STRONGLY_TYPED) == 0
    assert not hasattr(t11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(t8.NetworkDefinitionCreationFlag, "PREFER_JIT_PYTHON_PLUGINS")
    assert (int(t16.BuilderFlag.VERSION_COMPATIBLE), int(t11.BuilderFlag.VERSION_COMPATIBLE)) == (13, 12)
    assert (int(t16.BuilderFlag.EDITABLE_TIMING_CACHE), int(t110.BuilderFlag.EDITABLE_TIMING_CACHE)) == (27, 26)
    assert not hasattr(t8.BuilderFlag, "DISTRIBUTIVE_INDEPENDENCE") and int(t12.BuilderFlag
                                                                            .DISTRIBUTIVE_INDEPENDENCE) == 28
    assert not hasattr(t8.DataType, "E8M0") and int(t12.DataType.E8M0) == 11
    for t in (t8, t11):
        assert int(t.MemoryPoolType.WORKSPACE) == 0 and int(t.ProfilingVerbosity.DETAILED) == 2
        assert int(t.LayerInformationFormat.JSON) == 1 and int(t.TensorIOMode.INPUT) == 1
        assert int(t.ErrorCode.INVALID_NODE) == 6
        with pytest.raises(TypeError):
            t.nptype(t.DataType.BF16)
        assert not any(hasattr(t.ICudaEngine, a) for a in ("num_bindings", "get_binding_shape", "binding_is_input"))
    cfg = t11.Builder(t11.Logger()).create_builder_config()
    with pytest.raises(AttributeError):
        cfg.int8_calibrator = object()


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_qdq_build_and_run(version, artifacts, tmp_path, monkeypatch):
    """Q/DQ INT8 engines build on every release from the flavour fyexport prefers there, carry
    their metadata beside them (file names, not absolute paths), report INT8 convolutions, and
    run with the same outputs as ONNX Runtime."""
    import onnxruntime as ort

    from fyexport.quantize import ARTIFACTS
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    trt = _install(monkeypatch, version)
    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(trt)]
    eng = tmp_path / "m.engine"
    res = build_engine(src, eng, EngineConfig(precision="int8", timing_cache=str(tmp_path / "t.cache")))
    plan = json.loads(eng.read_bytes())
    weak = version == V10_8
    assert plan["int8"] and plan["strongly_typed"] == (not weak)
    assert set(plan["flags"]) == ({"INT8", "FP16"} if weak else set())
    assert plan["pools"] == {"0": 4 << 30} and plan["timing_cache"]
    text = (tmp_path / "m.engine.json").read_text()
    meta = json.loads(text)
    assert meta["tensorrt"] == version and meta["precision"] == "int8" and meta["int8_convs"] >= 1
    assert meta["names"] == ["circle", "square", "triangle", "star", "cross"] and meta["img_size"] == [256, 256]
    assert meta["preprocessing"]["pad_value"] == 114 and len(meta["onnx"]["sha256"]) == 64
    assert meta["onnx"]["file"] == src.name and str(tmp_path) not in text and str(artifacts) not in text
    assert meta["calibration"]["method"] == "entropy" and meta["calibration"]["cache_sha256"]
    assert (tmp_path / "t.cache").read_bytes().endswith(b"+entries")
    assert res.meta_path.exists() and not eng.read_bytes().startswith(b"{\"format\"")  # plan stays a pure plan

    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    with TrtRunner(eng, device="cpu") as r:
        y = r.infer(x)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.array_equal(y, ref)


# -- defect 1: plugins ---------------------------------------------------------------------------

def test_trt_plugin_nms_needs_the_plugin_library(fake_trt, artifacts, tmp_path, monkeypatch):
    """The parser and the runtime find EfficientNMS_TRT only once init_libnvinfer_plugins has
    registered it: fyexport must call it before parsing and before deserializing (old code did
    not, so the build failed with 'Plugin not found' and the engine could not be loaded)."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    trt = fake_trt
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert not parser.parse_from_file(str(artifacts / "nms.onnx"))  # the stand-in, before registration
    err = parser.get_error(0)
    assert err.desc() == PLUGIN_NOT_FOUND and err.code() == trt.ErrorCode.INVALID_NODE
    assert "operator: EfficientNMS_TRT (checkFallbackPluginImporter): INVALID_NODE" in str(err)

    build_engine(artifacts / "nms.onnx", tmp_path / "n.engine", EngineConfig(precision="fp32", max_batch=2))
    fresh = _install(monkeypatch, trt.__version__)  # a new process: an empty plugin registry
    assert fresh.Runtime(fresh.Logger()).deserialize_cuda_engine((tmp_path / "n.engine").read_bytes()) is None
    x = np.random.default_rng(1).random((2, 3, 256, 256), dtype=np.float32)
    with TrtRunner(tmp_path / "n.engine", device="cpu") as r:
        out = r.run_all(x)
    assert out["num_dets"].dtype == np.int32 and out["num_dets"].shape == (2, 1)
    assert out["det_boxes"].shape == (2, 100, 4) and out["det_classes"].dtype == np.int32


def test_cpp_example_initialises_plugins_and_links_them():
    src, cmake = (CPP / "main.cpp").read_text(), (CPP / "CMakeLists.txt").read_text()
    assert "#include <NvInferPlugin.h>" in src and re.search(r"initLibNvInferPlugins\(\s*&logger", src)
    assert src.index("initLibNvInferPlugins(") < src.index("deserializeCudaEngine(")
    assert "nvinfer_plugin" in cmake


# -- defect 2: the silent-FP32 guard reads data types, not names ----------------------------------

def test_silent_fp32_is_refused(fake_trt, artifacts, tmp_path):
    """Q/DQ convolutions TensorRT could not fuse run in float; the fused layer names still
    contain the weights' names (*_w_int8), which the old name-based count took for INT8."""
    from fyexport.core.errors import FyexportError
    from fyexport.quantize import ARTIFACTS
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(fake_trt)]
    fake_trt._fake_int8_kernels = False
    with pytest.raises(FyexportError, match="silent FP32"):
        build_engine(src, tmp_path / "m.engine", EngineConfig(precision="int8"))
    assert not (tmp_path / "m.engine").exists()


def test_int8_convs_are_counted_from_the_inspector_json(fake_trt, artifacts, tmp_path):
    import onnx

    from fyexport.quantize import ARTIFACTS
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(fake_trt)]
    meta = build_engine(src, tmp_path / "m.engine", EngineConfig(precision="int8")).meta
    g = onnx.load(str(src)).graph
    dq_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in g.node if n.op_type == "Conv"]
    quantized = [n for n in convs if n.input[0] in dq_out and n.input[1] in dq_out]
    assert meta.engine.convs == len(convs) and meta.engine.int8_convs == len(quantized) < len(convs)
    layers = json.loads((tmp_path / "m.engine.layers.json").read_text())
    key = "I/O Tensors" if _eleven(fake_trt) else "Bindings"
    assert key in layers and any("_w_int8 + " in lay["Name"] for lay in layers["Layers"])


def test_layer_counts_on_both_json_layouts():
    from fyexport.trt.engine import layer_counts

    def conv(name, fmt10=None, dt11=None, weights="Int8"):
        t = {"Name": "x", "Location": "Device", "Dimensions": [1, 32, 8, 8]}
        t.update({"Format/Datatype": fmt10} if fmt10 else {"Format": "Row major linear", "Datatype": dt11})
        return {"Name": name, "LayerType": "CaskConvolution", "ParameterType": "Convolution", "Inputs": [t],
                "Outputs": [t], "Weights": {"Type": weights, "Count": 864}}

    v10 = {"Layers": [conv("conv1.weight + QuantizeLinear_7 + Conv_9", "Four wide channel vectorized row major Int8 "
                           "format"),
                      conv("m_w_int8 + DQ + Conv_12", "Row major linear FP32", weights="Float"),
                      {"Name": "Reformatting CopyNode for Output Tensor 0 to Conv_9", "LayerType": "Reformat",
                       "Inputs": [], "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}],
           "Bindings": ["images", "output"]}
    assert layer_counts(v10) == {"layers": 3, "int8_layers": 1, "convs": 2, "int8_convs": 1}
    v11 = {"Layers": [conv("a_w_int8 + DQ + Conv_1", dt11="Half", weights="Half"), conv("b + Conv_2", dt11="Int8")],
           "I/O Tensors": []}
    assert layer_counts(v11)["int8_convs"] == 1
    assert layer_counts({"Layers": ["conv1 + Conv_9"], "Bindings": []}) is None  # not DETAILED: unknown


# -- defect 3: TensorRT's calibrator at the calibration profile's shape ---------------------------

@pytest.mark.parametrize("version", [V10_8, V10_16])
def test_trt_entropy_uses_every_image_at_the_profile_shape(version, artifacts, tmp_path, monkeypatch):
    """TensorRT reads each calibration batch at the calibration profile's OPT shape; with the
    default profile (OPT 1) the old code's batches of 4 fed it one image in four."""
    from fyexport.trt.engine import EngineConfig, build_engine

    _install(monkeypatch, version)
    cfg = EngineConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                      calib_num_images=8, calib_batch=4)
    build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", cfg)
    cal = json.loads((tmp_path / "e.engine").read_bytes())["calibration"]
    assert cal["shape"] == [4, 3, 256, 256] and cal["batches"] == 2 and cal["images"] == 8
    assert (tmp_path / "e.calib.cache").read_bytes().startswith(b"TRT-")  # written from a memoryview
    build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", cfg)  # the cache is read first, then reused
    assert json.loads((tmp_path / "e.engine").read_bytes())["calibration"]["from_cache"]


def test_trt_entropy_calibrator_is_version_gated(fake_trt, artifacts, tmp_path):
    from fyexport.core.errors import FyexportError
    from fyexport.trt.engine import EngineConfig, build_engine

    cfg = EngineConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                      calib_num_images=8, calib_batch=1)
    if _eleven(fake_trt):
        with pytest.raises(FyexportError, match="removed implicit INT8"):
            build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
    else:
        build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
        plan = json.loads((tmp_path / "e.engine").read_bytes())
        assert plan["int8"] and set(plan["flags"]) == {"INT8", "FP16"} and plan["calibration"]["images"] == 8
        assert (tmp_path / "e.calib.cache").read_bytes().startswith(b"TRT-")


# -- defect 4: shapes and addresses TensorRT refuses ----------------------------------------------

def test_batch_outside_the_profile_is_split_into_runs_it_takes(fake_trt, artifacts, tmp_path):
    """set_input_shape returns False outside the profile (it does not raise): the runner never
    asks for such a shape; a batch larger than the profile's maximum runs in pieces."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(min_batch=1, opt_batch=2, max_batch=4))
    with TrtRunner(tmp_path / "d.engine", device="cpu") as r:
        assert r.infer(np.zeros((2, 3, 256, 256), np.float32)).shape == (2, 4032, 10)
        assert not r.context.set_input_shape("images", (8, 3, 256, 256))  # the stand-in, like TensorRT
        x = np.random.default_rng(0).random((8, 3, 256, 256), dtype=np.float32)
        np.testing.assert_allclose(r.infer(x), np.concatenate([r.infer(x[:4]), r.infer(x[4:])]), atol=1e-5)
        assert r.accepted_batches([1, 4, 8]) == [1, 4]


def test_bench_times_only_the_batches_an_engine_accepts(fake_trt, artifacts, tmp_path):
    from fyexport.bench.plan import BenchConfig, Target
    from fyexport.bench.run import _bench_target, _Context
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(min_batch=1, max_batch=2))
    o = BenchConfig(batches=(1, 8), warmup=0.0, duration=0.01, img_size=256, agreement_images=0, e2e=False)
    ctx = _Context(str(TINY), o, "cpu", (256, 256), None, [], tmp_path)
    bar = type("Bar", (), {"advance": lambda self, n=1: None})()
    rows = _bench_target(Target(str(tmp_path / "d.engine"), "candidate", "tensorrt"), ctx, bar)
    assert [r.batch for r in rows] == [1]


# -- defect 5: timing caches TensorRT refuses -------------------------------------------------------

def test_timing_cache_from_another_version_or_gpu(fake_trt, artifacts, tmp_path, warned):
    from fyexport.trt.engine import EngineConfig, build_engine

    other = make_fake_trt(V10_8 if _eleven(fake_trt) else V11_1)
    cache = tmp_path / "t.cache"
    cache.write_bytes(bytes(other.Builder(other.Logger()).create_builder_config().create_timing_cache(b"")
                            .serialize()))
    before = cache.read_bytes()
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(timing_cache=str(cache)))
    assert any("cannot read this timing cache" in w for w in warned) and cache.read_bytes() == before
    assert not json.loads((tmp_path / "a.engine").read_bytes())["timing_cache"]

    cache.unlink()
    fake_trt._fake_gpu = "NVIDIA A100-SXM4-80GB"
    build_engine(artifacts / "fp32.onnx", tmp_path / "b.engine", EngineConfig(timing_cache=str(cache)))
    before = cache.read_bytes()
    fake_trt._fake_gpu = "NVIDIA H200"
    build_engine(artifacts / "fp32.onnx", tmp_path / "c.engine", EngineConfig(timing_cache=str(cache)))
    assert any("made on another GPU" in w for w in warned) and cache.read_bytes() == before
    assert not json.loads((tmp_path / "c.engine").read_bytes())["timing_cache"]


# -- defect 6: FP16 Q/DQ scales and float32-only initializers ------------------------------------

def test_fp16_qdq_model_keeps_scales_positive_and_resize_scales_fp32(artifacts, tmp_path, monkeypatch):
    """A dead channel's activation scale below 2^-24 became 0 in FP16 (the parser refuses it),
    and a Resize scales initializer (as onnxsim leaves it) became FP16 (ONNX requires float)."""
    import onnx
    from onnx import numpy_helper

    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qdq import to_fp16
    from fyexport.trt.engine import EngineConfig, build_engine

    qdq = onnx.load(str(artifacts / "cal/model.qdq.onnx"))
    inits = {i.name: i for i in qdq.graph.initializer}
    act_scale = next(n.input[1] for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    inits[act_scale].CopyFrom(numpy_helper.from_array(np.array(1e-9, np.float32), act_scale))
    resize = next(n for n in qdq.graph.node if n.op_type == "Resize")
    const = next(n for n in qdq.graph.node if n.op_type == "Constant" and n.output[0] == resize.input[2])
    qdq.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(const.attribute[0].t),
                                                         resize.input[2]))
    qdq.graph.node.remove(const)

    m = to_fp16(qdq, analyse(onnx.load(str(artifacts / "fp32.onnx"))))
    out = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert np.all(out[n.input[1]] > 0), n.name
    assert out[resize.input[2]].dtype == np.float32
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(tmp_path / "q16.onnx"))
    trt = _install(monkeypatch, V11_1)
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert parser.parse_from_file(str(tmp_path / "q16.onnx")), [str(parser.get_error(i))
                                                                   for i in range(parser.num_errors)]
    build_engine(tmp_path / "q16.onnx", tmp_path / "q.engine", EngineConfig(precision="int8"))


def test_parser_refuses_zero_scales_like_tensorrt(artifacts, tmp_path):
    import onnx
    from onnx import numpy_helper

    qdq = onnx.load(str(artifacts / "cal/model.qdq.onnx"))
    name = next(n.input[1] for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    for i in qdq.graph.initializer:
        if i.name == name:
            i.CopyFrom(numpy_helper.from_array(np.array(0, np.float32), name))
    onnx.save(qdq, str(tmp_path / "z.onnx"))
    trt = make_fake_trt(V10_16)
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert not parser.parse_from_file(str(tmp_path / "z.onnx")) and parser.get_error(0).desc() == SCALE_NOT_POSITIVE


# -- defect 7: the C++ example ---------------------------------------------------------------------

def test_cpp_example_checks_trt_results_and_sizes_buffers_by_type():
    src, cmake = (CPP / "main.cpp").read_text(), (CPP / "CMakeLists.txt").read_text()
    assert re.search(r"if \(!ctx->setInputShape\(", src) and re.search(r"if \(!ctx->setTensorAddress\(", src)
    assert "getTensorDataType(" in src and "* 4;" not in src
    assert re.search(r"engine->getTensorShape\(inputName", src)  # H and W from the engine
    assert "std::exit" not in src  # buffers and the stream are freed on every path (RAII)
    assert re.search(r"target_include_directories\(fyexport_detect SYSTEM", cmake)


def _trt_headers(version: str) -> Path:
    root = Path(os.environ.get("FYEXPORT_TRT_HEADERS", "/work/trt-headers"))
    return root / version / "include"


def _opencv_include() -> Path | None:
    try:
        out = subprocess.run(["pkg-config", "--cflags-only-I", "opencv4"], capture_output=True, text=True)
        for flag in out.stdout.split():
            if (Path(flag[2:]) / "opencv2/core.hpp").exists():
                return Path(flag[2:])
    except OSError:
        pass
    p = Path("/usr/include/opencv4")
    return p if (p / "opencv2/core.hpp").exists() else None


@pytest.mark.parametrize("version", ["10.8", "10.12", "10.16", "11.0", "11.1"])
def test_cpp_example_compiles_without_warnings(version, tmp_path):
    """g++ -std=c++17 -Wall -Wextra -Wconversion against the real TensorRT headers, included as
    system headers (their own deprecation warnings are not ours): no warning at all."""
    inc, cuda, cv = _trt_headers(version), Path("/usr/local/cuda/include"), _opencv_include()
    if not (inc / "NvInfer.h").exists():
        pytest.skip(f"needs the TensorRT {version} headers at {inc} (set FYEXPORT_TRT_HEADERS; CI has none)")
    if not (cuda / "cuda_runtime_api.h").exists() or cv is None or shutil.which("g++") is None:
        pytest.skip("needs g++, the CUDA headers in /usr/local/cuda/include and the OpenCV 4 headers")
    cmd = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Wconversion", "-isystem", str(inc), "-isystem", str(cuda),
           "-isystem", str(cv), "-c", str(CPP / "main.cpp"), "-o", str(tmp_path / "main.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning" not in proc.stderr, proc.stderr[-3000:]


# -- defect 8: Triton and the profile ---------------------------------------------------------------


# -- defect 9: typing per release -------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_qdq_typing_per_release(version, artifacts, tmp_path, monkeypatch):
    """10.0-10.11 build Q/DQ weakly typed with the INT8 and FP16 flags (not yet deprecated there);
    from 10.12, which deprecated weak typing, the FP16 Q/DQ model is built strongly typed."""
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    trt = _install(monkeypatch, version)
    assert preferred_qdq_flavour(trt) == ("trt" if version == V10_8 else "trt-fp16")
    build_engine(artifacts / "cal/model.qdq.fp16.onnx", tmp_path / "m.engine", EngineConfig(precision="int8"))
    plan = json.loads((tmp_path / "m.engine").read_bytes())
    if version == V10_8:
        assert not plan["strongly_typed"] and set(plan["flags"]) == {"INT8", "FP16"}
    else:
        assert plan["strongly_typed"] and plan["flags"] == []


# -- the rest of the contract ----------------------------------------------------------------------

def test_fp16_without_the_fp16_flag_is_baked(fake_trt, artifacts, tmp_path):
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "fp32.onnx", tmp_path / "h.engine", EngineConfig(precision="fp16"))
    plan = json.loads((tmp_path / "h.engine").read_bytes())
    if _eleven(fake_trt):
        assert plan["strongly_typed"] and plan["onnx"].endswith("h.fp16.onnx") and plan["flags"] == []
    else:
        assert plan["flags"] == ["FP16"] and not plan["strongly_typed"]


def test_dynamic_batch_profile(fake_trt, artifacts, tmp_path):
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(precision="fp32", min_batch=1,
                                                                               opt_batch=4, max_batch=8))
    plan = json.loads((tmp_path / "d.engine").read_bytes())
    assert plan["profiles"] == [{"images": [[1, 3, 256, 256], [4, 3, 256, 256], [8, 3, 256, 256]]}]
    with TrtRunner(tmp_path / "d.engine", device="cpu") as r:
        assert r.info.batch is None and r.infer(np.zeros((3, 3, 256, 256), np.float32)).shape == (3, 4032, 10)


def test_engine_from_another_version_is_refused(artifacts, tmp_path, monkeypatch):
    from fyexport.core.errors import InputError
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    _install(monkeypatch, V10_16)
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(precision="fp32"))
    _install(monkeypatch, V11_1)
    with pytest.raises(InputError, match="Rebuild on this machine with: .*fyexport engine"):
        TrtRunner(tmp_path / "a.engine", device="cpu").load()


def test_parser_errors_are_reported(fake_trt, tmp_path):
    from fyexport.core.errors import FyexportError, InputError
    from fyexport.trt.engine import EngineConfig, build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises((FyexportError, InputError)):
        build_engine(bad, tmp_path / "x.engine", EngineConfig())


def test_engine_command_without_tensorrt(artifacts, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    proc = run_cli("engine", artifacts / "cal/model.qdq.fp16.onnx", "-o", tmp_path / "m.engine")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "fyexport[tensorrt]" in line and "trtexec --onnx=" in line and "--stronglyTyped" in line
    assert len(line.splitlines()) == 1


# -- a small text-format parser and a check against Triton's ModelConfig fields ----------


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

    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    v11 = int(trt.__version__.split(".")[0]) >= 11
    src = artifacts / ("fp32.onnx" if precision == "fp32" else
                       ("cal/model.qdq.fp16.onnx" if v11 else "cal/model.qdq.onnx"))
    res = build_engine(src, tmp_path / "m.engine", EngineConfig(precision=precision))
    if precision == "int8":
        assert res.meta["int8_layers"] > 0
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    with TrtRunner(tmp_path / "m.engine") as r:
        y = r.infer(x)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    tol = 1e-2 if precision == "fp32" else 0.05
    assert np.abs(y[..., 4:] - ref[..., 4:]).max() < tol
