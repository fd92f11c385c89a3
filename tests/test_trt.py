"""The TensorRT layer, on every release of the matrix (10.3, 10.8, 10.12, 10.16, 11.0, 11.1).

* Contract tests build engines through Polygraphy and run them with fyexport's runner on the
  TensorRT stand-in of each release (tests/trt_stand_in.py, written from the real sources):
  its engines execute the ONNX they were built from, and it fails where TensorRT fails.
  Tests whose subject does not change between releases run on a 10.x and an 11.x stand-in.
* One test per defect of issue 23 (and the ones found while replacing the stand-in); each
  was run against the code before its fix and failed there.
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
import sys
from pathlib import Path

import numpy as np
import pytest
import trt_stand_in as sti
from conftest import REPO, TINY, run_cli
from trt_fixtures import ELEVEN, RELEASES, WEAK, install, plan_of, precision_flags

CPP = REPO / "examples" / "cpp"


def _eleven(trt) -> bool:
    return trt.__version__.startswith("11")


def _ort(path, x) -> list:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})


def _images(artifacts, n: int) -> np.ndarray:
    """``n`` letterboxed validation images of the shapes data (real detections, unlike noise)."""
    from fyexport.data.images import iter_prepared
    from fyexport.data.selection import list_images

    return np.stack(list(iter_prepared(list_images(artifacts / "data/images/val")[:n], (256, 256))))


def _script(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tests" / "trt_stand_in.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize("version", RELEASES)
def test_int8_qdq_build_and_run(version, artifacts, tmp_path, monkeypatch):
    """Q/DQ INT8 engines build through Polygraphy on every release from the flavour fyexport
    prefers there (weakly typed with INT8 + FP16 before 10.12, strongly typed from 10.12), keep
    TensorRT's TF32 default, carry their metadata beside them (file names, not absolute paths),
    report INT8 convolutions, and run with the same outputs as ONNX Runtime."""
    from fyexport.quantize import ARTIFACTS
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    trt = install(monkeypatch, version)
    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(trt)]
    eng = tmp_path / "m.engine"
    res = build_engine(src, eng, EngineConfig(precision="int8", timing_cache=str(tmp_path / "t.cache")))
    plan = plan_of(eng)
    weak = version in WEAK
    assert plan["strongly_typed"] == (not weak) and precision_flags(plan) == ({"INT8", "FP16"} if weak else set())
    assert "TF32" in plan["flags"] and plan["opt_level"] == 3
    assert plan["pools"] == {"WORKSPACE": 4 << 30} and plan["verbosity"] == 2
    text = (tmp_path / "m.engine.json").read_text()
    meta = json.loads(text)
    assert meta["tensorrt"] == sti.RELEASES[version] and meta["precision"] == "int8" and meta["int8_convs"] >= 1
    assert meta["strongly_typed"] == (not weak) and meta["input"]["dtype"] == "float32" and meta["dla_core"] is None
    assert meta["gpu"] == (sti.JETSON_GPU if version == "10.3" else sti.DISCRETE_GPU)[0]
    assert meta["names"] == ["circle", "square", "triangle", "star", "cross"] and meta["img_size"] == [256, 256]
    assert meta["preprocessing"]["pad_value"] == 114 and len(meta["onnx"]["sha256"]) == 64
    assert meta["onnx"]["file"] == src.name and str(tmp_path) not in text and str(artifacts) not in text
    assert meta["calibration"]["method"] == "entropy" and meta["calibration"]["cache_sha256"]
    assert (tmp_path / "t.cache").read_bytes().startswith(sti._CACHE_MAGIC)
    assert res.meta_path.exists() and eng.read_bytes().startswith(sti._PLAN_MAGIC)  # the plan stays a pure plan

    x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
    with TrtRunner(eng) as r:
        assert r.info.device == "cuda" and r.info.batch_range == (1, 1)
        y = r.infer(x)  # two runs of the static batch 1
    np.testing.assert_allclose(y, np.concatenate([_ort(src, x[:1])[0], _ort(src, x[1:])[0]]), rtol=0, atol=1e-6)


# -- plugins --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ("10.3", "10.16", "11.1"))
def test_plugin_engines_load_in_a_fresh_process(version, artifacts, tmp_path, monkeypatch):
    """The runtime finds EfficientNMS_TRT only once init_libnvinfer_plugins has registered it:
    fyexport's runner registers it before deserializing, in a process that built nothing."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    build_engine(artifacts / "plug.onnx", tmp_path / "n.engine", EngineConfig(precision="fp32", max_batch=2))
    fresh = install(monkeypatch, version)  # a new process: an empty plugin registry
    assert fresh.Runtime(fresh.Logger(fresh.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(
        (tmp_path / "n.engine").read_bytes()) is None
    with TrtRunner(tmp_path / "n.engine") as r:
        out = r.run_all(_images(artifacts, 3))  # 3 images in runs of at most 2
    assert out["num_dets"].dtype == np.int32 and out["num_dets"].shape == (3, 1) and out["num_dets"].sum() > 0
    assert out["det_boxes"].shape == (3, 100, 4) and out["det_classes"].dtype == np.int32


def test_cpp_example_initialises_plugins_and_links_them():
    src, cmake = (CPP / "main.cpp").read_text(), (CPP / "CMakeLists.txt").read_text()
    assert "#include <NvInferPlugin.h>" in src and re.search(r"initLibNvInferPlugins\(\s*&logger", src)
    assert src.index("initLibNvInferPlugins(") < src.index("deserializeCudaEngine(")
    assert "nvinfer_plugin" in cmake


# -- the silent-FP32 guard reads data types, not names ---------------------------------------------

@pytest.mark.parametrize("version", RELEASES)
def test_silent_fp32_is_refused(version, artifacts, tmp_path, monkeypatch):
    """Q/DQ convolutions TensorRT could not fuse run in float; the fused layer names still
    contain the weights' names (*_w_int8), which a name-based count takes for INT8."""
    from fyexport.core.errors import FyexportError
    from fyexport.quantize import ARTIFACTS
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    trt = install(monkeypatch, version)
    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(trt)]
    trt._stand_in.int8_kernels = False
    with pytest.raises(FyexportError, match="silent FP32"):
        build_engine(src, tmp_path / "m.engine", EngineConfig(precision="int8"))
    assert not (tmp_path / "m.engine").exists()


def test_int8_convs_are_counted_from_the_inspector_json(stand_in, artifacts, tmp_path):
    """Defect 9: every convolution counts, the fused ConvActPool ones too (weights under
    "ConvWeights"): ``convs`` equals the ONNX's Conv nodes."""
    import onnx

    from fyexport.quantize import ARTIFACTS
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    src = artifacts / "cal" / ARTIFACTS[preferred_qdq_flavour(stand_in)]
    meta = build_engine(src, tmp_path / "m.engine", EngineConfig(precision="int8")).meta
    g = onnx.load(str(src)).graph
    dq_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in g.node if n.op_type == "Conv"]
    quantized = [n for n in convs if n.input[0] in dq_out and n.input[1] in dq_out]
    layers = json.loads((tmp_path / "m.engine.layers.json").read_text())
    assert any(lay.get("LayerType") == "ConvActPool" for lay in layers["Layers"])  # the case of defect 9 is here
    assert meta.engine.convs == len(convs) and meta.engine.int8_convs == len(quantized) < len(convs)
    key = "I/O Tensors" if _eleven(stand_in) else "Bindings"
    assert key in layers and any("_w_int8 + " in lay["Name"] for lay in layers["Layers"])


def test_layer_counts_on_both_json_layouts():
    from fyexport.trt.engine import layer_counts

    def conv(name, fmt10=None, dt11=None, weights="Int8"):
        t = {"Name": "x", "Location": "Device", "Dimensions": [1, 32, 8, 8]}
        t.update({"Format/Datatype": fmt10} if fmt10 else {"Format": "Row major linear", "Datatype": dt11})
        return {"Name": name, "LayerType": "CaskConvolution", "ParameterType": "Convolution", "Inputs": [t],
                "Outputs": [t], "Weights": {"Type": weights, "Count": 864}}

    pool = {"Name": "w + DQ + Conv_3 + Relu_4 + MaxPool_5", "LayerType": "ConvActPool", "ParameterType": "ConvActPool",
            "Inputs": [{"Format/Datatype": "Row major linear FP32"}], "Outputs": [], "ConvWeights": {"Type": "Int8"}}
    v10 = {"Layers": [conv("conv1.weight + QuantizeLinear_7 + Conv_9", "Four wide channel vectorized row major Int8 "
                           "format"),
                      conv("m_w_int8 + DQ + Conv_12", "Row major linear FP32", weights="Float"),
                      {"Name": "Reformatting CopyNode for Output Tensor 0 to Conv_9", "LayerType": "Reformat",
                       "Inputs": [], "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}, pool],
           "Bindings": ["images", "output"]}
    assert layer_counts(v10) == {"layers": 4, "int8_layers": 2, "convs": 3, "int8_convs": 2}
    v11 = {"Layers": [conv("a_w_int8 + DQ + Conv_1", dt11="Half", weights="Half"), conv("b + Conv_2", dt11="Int8")],
           "I/O Tensors": []}
    assert layer_counts(v11)["int8_convs"] == 1
    assert layer_counts({"Layers": ["conv1 + Conv_9"], "Bindings": []}) is None  # not DETAILED: unknown


# -- TensorRT's own calibrator (10.x) ----------------------------------------------------------------

@pytest.mark.parametrize("version", ("10.3", "10.8", "10.16"))
def test_trt_entropy_uses_every_image_at_the_profile_shape(version, artifacts, tmp_path, monkeypatch, warned):
    """TensorRT reads each calibration batch at the calibration profile's OPT shape (Polygraphy's
    Calibrator, fyexport's calibration profile); the cache and its provenance are written, reused
    for the same inputs and (defect 5) not reused for other images."""
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    cfg = EngineConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                       calib_num_images=8, calib_batch=4, max_batch=4)
    build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", cfg)
    cal = plan_of(tmp_path / "e.engine")["calibration"]
    assert cal["shape"] == [4, 3, 256, 256] and cal["batches"] == 2 and cal["images"] == 8
    assert (tmp_path / "e.calib.cache").read_bytes().startswith(b"TRT-")  # written from a memoryview
    prov = json.loads((tmp_path / "e.calib.cache.json").read_text())
    assert prov["tensorrt"] == sti.RELEASES[version] and prov["shape"] == [4, 3, 256, 256]
    build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", cfg)  # same inputs: the cache is read
    assert plan_of(tmp_path / "e.engine")["calibration"]["from_cache"]
    meta = json.loads((tmp_path / "e.engine.json").read_text())
    assert meta["trt_calibration"]["reused"] and meta["trt_calibration"]["cache"] == "e.calib.cache"

    other = tmp_path / "other"  # defect 5: another image set must not reuse the cache
    other.mkdir()
    for p in sorted((artifacts / "data/images/val").iterdir()):
        shutil.copy(p, other / p.name)
    build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", EngineConfig(**{**cfg.__dict__,
                                                                              "calib_images": str(other)}))
    assert not plan_of(tmp_path / "e.engine")["calibration"]["from_cache"]
    assert any("e.calib.cache: made from another images_sha256" in w for w in warned)


@pytest.mark.parametrize("version", ("10.8", "10.16"))
def test_a_calibration_stopped_by_an_error_is_refused(version, artifacts, tmp_path, monkeypatch):
    """Defect 4: TensorRT's binding prints an exception raised in get_batch and reads it as the end
    of the data; the engine would be calibrated on part of the images without a word."""
    import fyexport.data.images as images
    from fyexport.core.errors import FyexportError
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    real = images.iter_prepared

    def breaks_at_the_fifth(paths, size, skipped=None):
        for i, x in enumerate(real(paths, size, skipped)):
            if i == 4:
                raise OSError("a disk read failed")
            yield x

    monkeypatch.setattr(images, "iter_prepared", breaks_at_the_fifth)
    cfg = EngineConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                       calib_num_images=8, calib_batch=4)
    with pytest.raises(FyexportError, match=r"stopped after 1 of 2 batches \(OSError: a disk read failed\)"):
        build_engine(artifacts / "dyn.onnx", tmp_path / "e.engine", cfg)
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "e.calib.cache").exists()


@pytest.mark.parametrize("version", RELEASES)
def test_trt_entropy_calibrator_is_version_gated(version, artifacts, tmp_path, monkeypatch):
    from fyexport.core.errors import FyexportError
    from fyexport.trt.engine import EngineConfig, build_engine

    trt = install(monkeypatch, version)
    cfg = EngineConfig(precision="int8", calibrator="trt-entropy", calib_images=str(artifacts / "data/images/train"),
                       calib_num_images=8, calib_batch=1)
    if _eleven(trt):
        with pytest.raises(FyexportError, match="removed implicit INT8"):
            build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
        return
    build_engine(artifacts / "fp32.onnx", tmp_path / "e.engine", cfg)
    plan = plan_of(tmp_path / "e.engine")
    assert precision_flags(plan) == {"INT8", "FP16"} and not plan["strongly_typed"]
    assert plan["calibration"]["images"] == 8 and plan["calibration"]["shape"] == [1, 3, 256, 256]


# -- batches and profiles ------------------------------------------------------------------------------

def test_batch_outside_the_profile_is_split_into_runs_it_takes(stand_in, artifacts, tmp_path):
    """set_input_shape returns False outside the profile (it does not raise): the runner never
    asks for such a shape; a batch larger than the profile's maximum runs in pieces."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(min_batch=1, opt_batch=2, max_batch=4))
    with TrtRunner(tmp_path / "d.engine") as r:
        assert r.infer(np.zeros((2, 3, 256, 256), np.float32)).shape == (2, 4032, 10)
        assert not r.context.set_input_shape("images", (8, 3, 256, 256))  # the stand-in, like TensorRT
        x = np.random.default_rng(0).random((8, 3, 256, 256), dtype=np.float32)
        np.testing.assert_allclose(r.infer(x), np.concatenate([r.infer(x[:4]), r.infer(x[4:])]), atol=1e-5)
        assert r.accepted_batches([1, 4, 8]) == [1, 4]


def test_bench_times_only_the_batches_an_engine_accepts(stand_in, artifacts, tmp_path):
    from fyexport.bench.plan import BenchConfig, Target
    from fyexport.bench.run import _bench_target, _Context
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(min_batch=1, max_batch=2))
    o = BenchConfig(batches=(1, 8), warmup=0.0, duration=0.01, img_size=256, agreement_images=0, e2e=False)
    ctx = _Context(str(TINY), o, "cpu", (256, 256), None, [], tmp_path)  # PyTorch on the CPU, the engine on the GPU
    bar = type("Bar", (), {"advance": lambda self, n=1: None})()
    rows = _bench_target(Target(str(tmp_path / "d.engine"), "candidate", "tensorrt"), ctx, bar)
    assert [r.batch for r in rows] == [1] and rows[0].device == "cuda" and rows[0].compute_ms["median"] > 0


@pytest.mark.parametrize("fields,bad", [({"opt_batch": 8, "max_batch": 4}, "max_batch"),
                                        ({"min_batch": 4, "opt_batch": 2}, "opt_batch"),
                                        ({"min_batch": 8, "max_batch": 2}, "max_batch")])
def test_batch_order_is_checked_whichever_are_given(fields, bad):
    """Defect 3: MIN <= OPT <= MAX was checked only when both ends were given; TensorRT refuses
    the profile (``IOptimizationProfile`` is invalid, ``add_optimization_profile`` gives -1)."""
    from fyexport.core.config import ConfigError
    from fyexport.trt.engine import EngineConfig

    with pytest.raises(ConfigError) as e:
        EngineConfig(**fields).validate()
    assert e.value.field == bad


def test_engine_batch_order_error_names_the_flags(artifacts, tmp_path):
    proc = run_cli("engine", artifacts / "dyn.onnx", "-o", tmp_path / "e.engine", "--opt-batch", "8", "--max-batch",
                   "4")
    assert proc.returncode == 2 and "--max-batch must be at least --opt-batch (8), got 4" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_dynamic_batch_profile_and_the_rebuild_command(stand_in, artifacts, tmp_path):
    """Defect 11: the recorded rebuild command keeps the optimization level and the batch range as
    built, whichever batch settings were given."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "d.engine", EngineConfig(precision="fp32", opt_batch=4,
                                                                              optimization_level=5))
    plan = plan_of(tmp_path / "d.engine")
    assert plan["profiles"] == [{"images": [[1, 3, 256, 256], [4, 3, 256, 256], [4, 3, 256, 256]]}]
    assert plan["opt_level"] == 5
    cmd = json.loads((tmp_path / "d.engine.json").read_text())["build_command"]
    assert cmd.endswith("-o d.engine --precision fp32 --workspace 4 --opt-level 5 --min-batch 1 --opt-batch 4 "
                        "--max-batch 4") and str(tmp_path) not in cmd
    with TrtRunner(tmp_path / "d.engine") as r:
        assert r.info.batch is None and r.infer(np.zeros((3, 3, 256, 256), np.float32)).shape == (3, 4032, 10)


# -- timing caches --------------------------------------------------------------------------------------

def test_timing_cache_from_another_version_or_gpu(stand_in, artifacts, tmp_path, warned):
    """A cache TensorRT refuses is warned about and left alone (Polygraphy would drop it without a
    word and overwrite the file)."""
    from fyexport.trt.engine import EngineConfig, build_engine

    other = sti.make_module("10.8" if _eleven(stand_in) else "11.1")
    cache = tmp_path / "t.cache"
    cache.write_bytes(bytes(other.Builder(other.Logger()).create_builder_config().create_timing_cache(b"")
                            .serialize()))
    before = cache.read_bytes()
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(timing_cache=str(cache)))
    assert any("cannot read this timing cache" in w for w in warned) and cache.read_bytes() == before

    a100 = sti.make_module(stand_in.__version__, cuda=sti.CudaRuntime([("NVIDIA A100-SXM4-80GB", (8, 0))]))
    cache.write_bytes(bytes(a100.Builder(a100.Logger()).create_builder_config().create_timing_cache(b"").serialize()))
    before = cache.read_bytes()
    build_engine(artifacts / "fp32.onnx", tmp_path / "c.engine", EngineConfig(timing_cache=str(cache)))
    assert any("made on another GPU" in w for w in warned) and cache.read_bytes() == before


def test_timing_cache_is_not_touched_at_optimization_level_0(stand_in, artifacts, tmp_path, warned):
    """TensorRT "will also not respect a timing cache" at level 0 (NvInfer.h
    setBuilderOptimizationLevel): fyexport neither reads nor writes it, and says so."""
    from fyexport.trt.engine import EngineConfig, build_engine

    cache = tmp_path / "t.cache"
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(timing_cache=str(cache),
                                                                                optimization_level=0))
    assert not cache.exists() and any("optimization level 0" in w for w in warned)
    assert plan_of(tmp_path / "a.engine")["opt_level"] == 0
    build_engine(artifacts / "fp32.onnx", tmp_path / "b.engine", EngineConfig(timing_cache=str(cache)))
    first = cache.read_bytes()  # level 3 makes it
    build_engine(artifacts / "fp32.onnx", tmp_path / "c.engine", EngineConfig(timing_cache=str(cache)))
    assert cache.read_bytes() == first  # read, and no new tactic to add


# -- Q/DQ models TensorRT parses --------------------------------------------------------------------------

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
    trt = install(monkeypatch, "11.1")
    parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
    assert parser.parse_from_file(str(tmp_path / "q16.onnx")), [str(parser.get_error(i))
                                                                   for i in range(parser.num_errors)]
    build_engine(tmp_path / "q16.onnx", tmp_path / "q.engine", EngineConfig(precision="int8"))


def test_calibrate_an_unsimplified_export_gives_valid_fp16_qdq(tmp_path, monkeypatch, tiny_model):
    """``fyexport calibrate`` on an export made with simplify off wrote an invalid
    model.qdq.fp16.onnx: the FP16 conversion cast the unsimplified head's INT64 shape constants
    to FP32 at the decode boundary (ONNX Runtime: "Type Error: Type 'tensor(float)' of input
    parameter (/m/model.77/Constant_2_output_0_fp32) of operator (Reshape)")."""
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize import calibrate
    from fyexport.trt.engine import EngineConfig, build_engine

    export_onnx(tiny_model, tmp_path / "ns.onnx", img_size=256, simplify=False)
    generate(tmp_path / "data", train=4, val=1, size=256)
    calibrate(tmp_path / "ns.onnx", tmp_path / "data/images/train", tmp_path / "cal", num_images=4, batch=4,
              bias_correction=0)
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    y16, y = _ort(tmp_path / "cal/model.qdq.fp16.onnx", x)[0], _ort(tmp_path / "cal/model.qdq.onnx", x)[0]
    assert np.abs(y16[..., 4:] - y[..., 4:]).max() < 0.1  # the FP16 remainder, not a broken graph
    install(monkeypatch, "11.1")
    build_engine(tmp_path / "cal/model.qdq.fp16.onnx", tmp_path / "m.engine", EngineConfig())


def test_tensorrt_messages_go_to_stderr_never_stdout(artifacts, tmp_path):
    """TensorRT's default logger prints to stdout (pyCore.cpp DefaultLogger), which belongs to
    tables and --json documents: fyexport gives TensorRT Polygraphy's logger, whose log goes to
    fyexport's on stderr.  A parser error (a zero Q/DQ scale) ends as one line there."""
    import onnx
    from onnx import numpy_helper

    qdq = onnx.load(str(artifacts / "cal/model.qdq.fp16.onnx"))
    name = next(n.input[1] for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    for i in qdq.graph.initializer:
        if i.name == name:
            i.CopyFrom(numpy_helper.from_array(np.zeros((), numpy_helper.to_array(i).dtype), name))
    onnx.save(qdq, str(tmp_path / "z.onnx"))
    proc = _script("10.16", "engine", tmp_path / "z.onnx", "-o", tmp_path / "z.engine", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert sti.SCALE_NOT_POSITIVE in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# -- typing per release ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", RELEASES)
def test_qdq_typing_per_release(version, artifacts, tmp_path, monkeypatch):
    """10.0-10.11 build Q/DQ weakly typed with the INT8 and FP16 flags (not yet deprecated there);
    from 10.12, which deprecated weak typing, the FP16 Q/DQ model is built strongly typed."""
    from fyexport.trt.engine import EngineConfig, build_engine, preferred_qdq_flavour

    trt = install(monkeypatch, version)
    assert preferred_qdq_flavour(trt) == ("trt" if version in WEAK else "trt-fp16")
    build_engine(artifacts / "cal/model.qdq.fp16.onnx", tmp_path / "m.engine", EngineConfig())  # auto: int8
    plan = plan_of(tmp_path / "m.engine")
    if version in WEAK:
        assert not plan["strongly_typed"] and precision_flags(plan) == {"INT8", "FP16"}
    else:
        assert plan["strongly_typed"] and precision_flags(plan) == set()


@pytest.mark.parametrize("version", RELEASES)
def test_fp16_engines_per_release(version, artifacts, tmp_path, monkeypatch):
    """Defect 12: 10.12-10.16 built FP16 weakly typed with the FP16 flag 10.12 deprecated; from
    10.12 the ONNX is baked to FP16 (decode in FP32) and built strongly typed, as on 11.x."""
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    build_engine(artifacts / "fp32.onnx", tmp_path / "h.engine", EngineConfig(precision="fp16"))
    plan = plan_of(tmp_path / "h.engine")
    if version in WEAK:
        assert precision_flags(plan) == {"FP16"} and not plan["strongly_typed"]
    else:
        assert plan["strongly_typed"] and precision_flags(plan) == set() and plan["path"].endswith("h.fp16.onnx")
    assert json.loads((tmp_path / "h.engine.json").read_text())["strongly_typed"] == (version not in WEAK)


@pytest.mark.parametrize("version", ELEVEN)
def test_sidecar_says_strongly_typed_on_11(version, artifacts, tmp_path, monkeypatch):
    """Every 11.x network is strongly typed (NvInfer.h createNetworkV2 @ v11.0): an FP32 engine's
    metadata said it was not."""
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    meta = build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(precision="fp32")).meta
    assert meta.engine.strongly_typed and plan_of(tmp_path / "a.engine")["strongly_typed"]


# -- the runner ---------------------------------------------------------------------------------------------

def _fp16_io_model(path):
    """images (FLOAT16) -> Conv -> output (FLOAT16): an engine whose input is FP16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float16), "w")
    conv = helper.make_node("Conv", ["images", "w"], ["output"], pads=[1, 1, 1, 1], name="conv")
    g = helper.make_graph([conv], "fp16io",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["batch", 3, 16, 16])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT16, ["batch", 4, 16, 16])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_runner_feeds_the_engines_input_type(stand_in, tmp_path):
    """Defect 6: the runner bound float32 data to an FP16 input whatever the engine said, and the
    metadata recorded float32."""
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    src = _fp16_io_model(tmp_path / "h.onnx")
    build_engine(src, tmp_path / "h.engine", EngineConfig(max_batch=2))
    assert json.loads((tmp_path / "h.engine.json").read_text())["input"]["dtype"] == "float16"
    x = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    with TrtRunner(tmp_path / "h.engine") as r:
        y = r.infer(x)
    ref = _ort(src, x.astype(np.float16))[0].astype(np.float32)
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-3)


def test_no_execution_context_is_one_line(stand_in, artifacts, tmp_path, monkeypatch):
    """Defect 7: create_execution_context() returns None when TensorRT cannot allocate the
    context; the runner went on with None."""
    from fyexport.core.errors import FyexportError
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig())
    monkeypatch.setattr(stand_in.ICudaEngine, "create_execution_context", lambda self, strategy=None: None)
    with pytest.raises(FyexportError, match="could not create an execution context"):
        TrtRunner(tmp_path / "a.engine").load()


def test_cuda_n_selects_gpu_n_and_checks_the_engine_against_it(artifacts, tmp_path, monkeypatch):
    """Defect 8: ``cuda:1`` ran on GPU 0 and the compatibility check looked at GPU 0."""
    from fyexport.core.config import ConfigError
    from fyexport.core.errors import InputError
    from fyexport.runners import open_runner
    from fyexport.trt.engine import EngineConfig, build_engine

    cuda = sti.CudaRuntime([sti.DISCRETE_GPU, ("NVIDIA A100-SXM4-80GB", (8, 0))])
    install(monkeypatch, "11.1", cuda=cuda)
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig())
    with open_runner(tmp_path / "a.engine", device="cuda:0") as r:
        assert cuda.current == 0 and r.infer(np.zeros((1, 3, 256, 256), np.float32)).shape == (1, 4032, 10)
    with pytest.raises(InputError, match=r"sm_9\.0 \(here NVIDIA A100-SXM4-80GB sm_8\.0\)"):
        open_runner(tmp_path / "a.engine", device="cuda:1").load()
    assert cuda.current == 1
    with pytest.raises(ConfigError, match="cuda:2 is not a GPU here"):
        open_runner(tmp_path / "a.engine", device="cuda:2").load()


def test_engine_from_another_version_is_refused(artifacts, tmp_path, monkeypatch):
    from fyexport.core.errors import InputError
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, "10.16")
    build_engine(artifacts / "fp32.onnx", tmp_path / "a.engine", EngineConfig(precision="fp32"))
    install(monkeypatch, "11.1")
    with pytest.raises(InputError, match="Rebuild on this machine with: .*fyexport engine"):
        TrtRunner(tmp_path / "a.engine").load()


def test_parser_errors_are_reported(stand_in, tmp_path):
    from fyexport.core.errors import FyexportError
    from fyexport.trt.engine import EngineConfig, build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(FyexportError):
        build_engine(bad, tmp_path / "x.engine", EngineConfig())


def test_no_gpu_is_one_line(artifacts, tmp_path, monkeypatch):
    from fyexport.core.errors import InputError
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, "11.1", gpu=False)
    with pytest.raises(InputError, match="the CUDA runtime sees none"):
        build_engine(artifacts / "fp32.onnx", tmp_path / "x.engine", EngineConfig())


def test_engine_command_without_tensorrt(artifacts, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    proc = run_cli("engine", artifacts / "cal/model.qdq.fp16.onnx", "-o", tmp_path / "m.engine")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "fyexport[tensorrt]" in line and "trtexec --onnx=" in line and "--stronglyTyped" in line
    assert len(line.splitlines()) == 1


# -- ONNX Runtime's CUDA provider (open_runner's other GPU path) ------------------------------------------

def test_ort_cuda_device_needs_a_working_cuda_provider(artifacts, monkeypatch):
    """ONNX Runtime falls back to the CPU, silently, when its CUDA provider cannot start: a
    ``cuda`` runner must not measure the CPU under the GPU's name."""
    import onnxruntime as ort

    from fyexport.core.errors import FyexportError, InputError
    from fyexport.runners import open_runner

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="onnxruntime has no CUDA provider here"):
            open_runner(artifacts / "fp32.onnx", device="cuda").load()
    seen = {}

    class CpuOnly(ort.InferenceSession):  # what onnxruntime-gpu gives without CUDA libraries
        def __init__(self, path, opts=None, providers=None):
            seen["providers"] = providers
            super().__init__(path, opts, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", CpuOnly)
    with pytest.raises(FyexportError, match="could not start its CUDA provider"):
        open_runner(artifacts / "fp32.onnx", device="cuda:1").load()
    assert seen["providers"][0] == ("CUDAExecutionProvider", {"device_id": 1})


# -- the C++ example -----------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("version", RELEASES)
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


# -- real TensorRT (skipped where it cannot run) ---------------------------------------------------------------

def _real_trt_or_skip():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("needs TensorRT (pip install 'fyexport[tensorrt]'), which cannot be installed on this machine")
    if getattr(sys.modules["tensorrt"], "_stand_in", None) is not None:
        pytest.skip("the TensorRT stand-in is installed, not TensorRT")
    from fyexport.core.machine import gpu_count

    if gpu_count() == 0:
        pytest.skip("needs an NVIDIA GPU visible to the CUDA runtime")


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_real_engine_matches_onnxruntime(precision, artifacts, tmp_path):
    _real_trt_or_skip()
    import tensorrt as trt

    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    v11 = int(trt.__version__.split(".")[0]) >= 11
    src = artifacts / ("fp32.onnx" if precision == "fp32" else
                       ("cal/model.qdq.fp16.onnx" if v11 else "cal/model.qdq.onnx"))
    res = build_engine(src, tmp_path / "m.engine", EngineConfig(precision=precision))
    if precision == "int8":
        assert res.meta.engine.int8_layers > 0
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    with TrtRunner(tmp_path / "m.engine") as r:
        y = r.infer(x)
    ref = _ort(src, x)[0]
    tol = 1e-2 if precision == "fp32" else 0.05
    assert np.abs(y[..., 4:] - ref[..., 4:]).max() < tol


# -- NMS: the project's, ONNX NonMaxSuppression (ONNX Runtime and INMSLayer), EfficientNMS_TRT ----------------

def _nms_tail(path, kind: str, rows: int, nc: int, conf: float, iou: float, topk: int):
    """A graph from raw decoded rows ``raw`` [B, N, 5+nc] to fyexport's end-to-end NMS of ``kind``."""
    import onnx
    from onnx import TensorProto, helper

    from fyexport.core.meta import NmsConfig
    from fyexport.onnx.nms import append_nms

    shape = ["batch", rows, 5 + nc]
    g = helper.make_graph([helper.make_node("Identity", ["raw"], ["output"], name="id")], "tail",
                          [helper.make_tensor_value_info("raw", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(append_nms(m, NmsConfig(kind, conf, iou, topk), nc), str(path))
    return path


def _all_nms(raw, tmp_path, monkeypatch, version, conf, iou, topk) -> dict:
    """Per image (n, 6) detections of the same raw rows by the project's NMS, ONNX NMS on ONNX
    Runtime, ONNX NMS on TensorRT (INMSLayer) and EfficientNMS_TRT on TensorRT."""
    import onnxruntime as ort
    from polygraphy.backend.trt import EngineFromPath, TrtRunner

    from fyexport.evaluation.nms import non_max_suppression
    from fyexport.onnx.nms import detections_from_outputs
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    rows, nc, out = raw.shape[1], raw.shape[2] - 5, {}
    out["project"] = non_max_suppression(raw, conf, iou, max_det=topk)
    onnx_tail = _nms_tail(tmp_path / "onnx.onnx", "onnx", rows, nc, conf, iou, topk)
    sess = ort.InferenceSession(str(onnx_tail), providers=["CPUExecutionProvider"])
    out["onnxruntime"] = detections_from_outputs(dict(zip([o.name for o in sess.get_outputs()],
                                                          sess.run(None, {"raw": raw}))))
    for kind in ("onnx", "trt-plugin"):
        src = onnx_tail if kind == "onnx" else _nms_tail(tmp_path / "plug.onnx", kind, rows, nc, conf, iou, topk)
        eng = tmp_path / f"{kind}.engine"
        build_engine(src, eng, EngineConfig(max_batch=len(raw)))
        with TrtRunner(EngineFromPath(str(eng))) as r:
            out[f"tensorrt {kind}"] = detections_from_outputs(r.infer({"raw": raw}))
    return out


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, atol=1e-4) for x, y in zip(a, b))


@pytest.mark.parametrize("version", ("10.16", "11.1"))
def test_the_nms_options_agree_with_the_projects_nms(version, artifacts, tmp_path, monkeypatch):
    """The same raw outputs of the tiny model on real images: the project's NMS, ONNX
    NonMaxSuppression on ONNX Runtime and as TensorRT's INMSLayer, and EfficientNMS_TRT give the
    same detections (before, EfficientNMS_TRT kept a box once per class above the threshold and
    used >= where the project uses >)."""
    raw = _ort(artifacts / "dyn.onnx", _images(artifacts, 4))[0]
    for conf, iou in ((0.25, 0.45), (0.05, 0.6)):
        got = _all_nms(raw, tmp_path, monkeypatch, version, conf, iou, 100)
        assert sum(len(d) for d in got["project"]) > 8
        for name, dets in got.items():
            assert _same(dets, got["project"]), (conf, iou, name)


def test_tensorrt_nms_considers_5000_candidates(tmp_path, monkeypatch):
    """TensorRT's INMSLayer and EfficientNMS_TRT look at the 5000 best candidates per image
    (NvInfer.h INMSLayer; efficientNMSPlugin.cpp numSelectedBoxes), the project's NMS at 30000
    and ONNX Runtime at all: with 5000 overlapping high-scoring boxes before 1000 separate lower
    ones, TensorRT keeps one box where the others keep 100."""
    n_dup, n_sep = 5000, 1000
    raw = np.zeros((1, n_dup + n_sep, 7), np.float32)
    raw[0, :n_dup, :4] = (30, 30, 40, 40)
    raw[0, :n_dup, 4] = np.linspace(0.9, 0.5, n_dup)
    raw[0, :n_dup, 5] = 1.0
    i = np.arange(n_sep)
    raw[0, n_dup:, 0], raw[0, n_dup:, 1], raw[0, n_dup:, 2:4] = (i % 40) * 20 + 10, (i // 40) * 20 + 10, 10
    raw[0, n_dup:, 4] = np.linspace(0.45, 0.3, n_sep)
    raw[0, n_dup:, 6] = 1.0
    got = _all_nms(raw, tmp_path, monkeypatch, "11.1", 0.25, 0.45, 100)
    assert len(got["project"][0]) == len(got["onnxruntime"][0]) == 100
    assert _same(got["onnxruntime"], got["project"])
    assert len(got["tensorrt onnx"][0]) == len(got["tensorrt trt-plugin"][0]) == 1


def test_topk_is_at_most_tensorrts_limit(tmp_path):
    """Defect 10: --topk above 3840 was accepted and the engine build failed late (ITopKLayer
    takes K <= 3840)."""
    from fyexport.core.config import ConfigError
    from fyexport.core.meta import NmsConfig

    with pytest.raises(ConfigError, match="at most 3840"):
        NmsConfig(topk=3841).validate()
    NmsConfig(topk=3840).validate()
    proc = run_cli("export", TINY, "-o", tmp_path / "m.onnx", "--nms", "--topk", "4000", "--img-size", "64")
    assert proc.returncode == 2 and "--topk must be at most 3840" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("version", ("10.16", "11.1"))
def test_plugin_nms_export_fp16_and_int8_engines(version, artifacts, tmp_path, monkeypatch):
    """Defect 2: an FP16 engine of a --nms trt-plugin export failed in ONNX's version converter
    ("No Op registered for EfficientNMS_TRT"), and calibrate on such an export failed in ONNX
    Runtime (NOT_IMPLEMENTED).  Now both build, and the Q/DQ engine keeps the plugin NMS; the CPU
    Q/DQ model gets the same NMS as ONNX NonMaxSuppression."""
    import onnx

    from fyexport.onnx.facts import read_meta
    from fyexport.quantize import calibrate
    from fyexport.runners.trt import TrtRunner
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    build_engine(artifacts / "plug.onnx", tmp_path / "h.engine", EngineConfig(precision="fp16", max_batch=2))
    calibrate(artifacts / "plug.onnx", artifacts / "data/images/train", tmp_path / "cal", num_images=8, batch=4,
              bias_correction=0)
    cpu = onnx.load(str(tmp_path / "cal/model.qdq.cpu.onnx"))
    assert "NonMaxSuppression" in {n.op_type for n in cpu.graph.node} and read_meta(cpu).nms.kind == "onnx"
    build_engine(tmp_path / "cal/model.qdq.fp16.onnx", tmp_path / "q.engine", EngineConfig(max_batch=2))
    x = _images(artifacts, 2)
    for eng in ("h.engine", "q.engine"):
        with TrtRunner(tmp_path / eng) as r:
            assert r.info.has_graph_nms and r.run_all(x)["num_dets"].sum() > 0, eng
