"""The TensorRT stand-in (tests/trt_stand_in.py): fails where TensorRT fails, runs what it builds,
and serves NVIDIA's Polygraphy, for every release of the matrix (10.3, 10.8, 10.12, 10.16, 11.0, 11.1).

* The difference tests (``test_diff_*``) each pin one behaviour read from the real sources, on
  which the previous stand-in (tests/fake_tensorrt.py) differed; they build through the raw API
  with :func:`make`, so they can be pointed at another implementation of the module.
* The Polygraphy tests build and run engines through ``polygraphy.backend.trt`` (network from ONNX
  with the plugins, CreateConfig with fp16/int8/strong typing per release, profiles, Polygraphy's
  Calibrator on 10.x, timing cache, engine bytes, save_engine, TrtRunner) and compare with ONNX Runtime.
* The script test walks ``python tests/trt_stand_in.py VERSION fyexport ARGS``.
"""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import numpy as np
import pytest
import trt_stand_in as sti
from conftest import REPO
from onnx import TensorProto, helper, numpy_helper

RELEASES = tuple(sti.RELEASES)
TEN = tuple(r for r in RELEASES if r.startswith("10."))
ELEVEN = tuple(r for r in RELEASES if r.startswith("11."))


@pytest.fixture
def make(monkeypatch):
    """The implementation under test: ``make(version, **kw)`` gives a fresh ``tensorrt`` module of that
    release (not installed as ``tensorrt``) and hands its CUDA runtime to Polygraphy's CUDA wrapper, which
    the tests use for device buffers (one CUDA runtime per process, as with libcudart)."""
    def _make(version: str, **kw):
        trt = sti.make_module(version, **kw)
        sti._install_polygraphy_cuda(trt._stand_in.cuda, monkeypatch)
        return trt

    return _make


def _save(tmp_path, name, nodes, inputs, outputs, inits=(), opset=17):
    import onnx

    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 17 else 10
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, str(path))
    return path


def conv_model(tmp_path, dtype=TensorProto.FLOAT, batch="batch", pool=True):
    """images -> Conv -> Relu [-> MaxPool] -> out (weights of ``dtype``)."""
    np_t = helper.tensor_dtype_to_np_dtype(dtype)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np_t), "w")
    b = numpy_helper.from_array(np.zeros(4, np_t), "b")
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r" if pool else "out"], name="relu")]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["out"], kernel_shape=[2, 2], strides=[2, 2], name="pool"))
    hw = 4 if pool else 8
    return _save(tmp_path, f"conv{dtype}{int(pool)}", nodes,
                 [helper.make_tensor_value_info("images", dtype, [batch, 3, 8, 8])],
                 [helper.make_tensor_value_info("out", dtype, [batch, 4, hw, hw])], [w, b])


def parse(trt, path, flags=0, logger=None):
    logger = logger or trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    return builder, network, parser, ok


def build(trt, path, profile=((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8)), flags=(), strongly=False, logger=None,
          calibrator=None, calib_shape=None):
    """(plan or None, config) for the ONNX at ``path`` built with the raw API."""
    net_flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly else 0
    builder, network, parser, ok = parse(trt, path, net_flags, logger)
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    import onnx

    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    if profile is not None:
        p = builder.create_optimization_profile()
        p.set_shape(name, *profile)
        assert config.add_optimization_profile(p) == 0
    if calibrator is not None:
        config.int8_calibrator = calibrator
        if calib_shape is not None:
            cp = builder.create_optimization_profile()
            cp.set_shape(name, calib_shape, calib_shape, calib_shape)
            config.set_calibration_profile(cp)
    return builder.build_serialized_network(network, config), config


def run(trt, plan, feeds: dict) -> dict:
    """Execute a plan on device buffers from Polygraphy's CUDA wrapper; {output: array} (None if enqueue fails)."""
    from polygraphy import cuda as pcuda

    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    bufs, outs = [], {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            x = np.ascontiguousarray(feeds[name])
            d = pcuda.DeviceArray(x.shape, x.dtype).copy_from(x)
            assert ctx.set_input_shape(name, x.shape)
            assert ctx.set_tensor_address(name, d.ptr)
            bufs.append(d)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(ctx.get_tensor_shape(name))
            d = pcuda.DeviceArray(shape, trt.nptype(engine.get_tensor_dtype(name)))
            assert ctx.set_tensor_address(name, d.ptr)
            outs[name] = d
    if not ctx.execute_async_v3(0):
        return None
    return {k: v.numpy() for k, v in outs.items()}


class Recorder:
    """A logger that keeps TensorRT's messages."""

    def __new__(cls, trt):
        class _Rec(trt.ILogger if hasattr(trt, "ILogger") else trt.Logger):
            def __init__(self):
                super().__init__()
                self.messages = []

            def log(self, severity, msg):
                self.messages.append(str(msg))

        return _Rec()


def _ort(path, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


# == differences from TensorRT in the previous stand-in ==================================================

@pytest.mark.parametrize("version", RELEASES)
def test_diff_profile_order_is_checked_by_is_valid(version, make):
    """[pyCore.cpp opt_profile_set_shape / __bool__ = isValid; NvInferRuntime.h setDimensions]: MIN > OPT
    does not raise in set_shape; ``bool(profile)`` is False and the builder refuses the profile."""
    trt = make(version)
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    p = builder.create_optimization_profile()
    p.set_shape("x", (4, 3), (2, 3), (8, 3))  # order is not set_shape's business
    assert not bool(p)
    assert builder.create_builder_config().add_optimization_profile(p) == -1
    ok = builder.create_optimization_profile()
    ok.set_shape("x", (1, 3), (2, 3), (8, 3))
    assert bool(ok) and ok.get_shape("x")[1] == (2, 3)


@pytest.mark.parametrize("version", RELEASES)
def test_diff_set_shape_raises_on_negative_dims_and_rank_mismatch(version, make):
    """setDimensions returns false for a negative dimension or a rank differing from one already set,
    which the binding turns into RuntimeError "Shape provided for <sel> is inconsistent with other shapes."."""
    trt = make(version)
    p = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_optimization_profile()
    with pytest.raises(RuntimeError, match="Shape provided for min is inconsistent"):
        p.set_shape("x", (-1, 3), (2, 3), (8, 3))
    with pytest.raises(RuntimeError, match="Shape provided for opt is inconsistent"):
        p.set_shape("y", (1, 3), (2, 3, 1), (8, 3))


class _Batches:
    """Calibration batches of ``shape`` on the device; ``fail_at``: the batch whose get_batch raises."""

    def __init__(self, shape, n, fail_at=None):
        from polygraphy import cuda as pcuda

        rng = np.random.default_rng(0)
        self.bufs = [pcuda.DeviceArray(shape, np.float32).copy_from(rng.random(shape, dtype=np.float32))
                     for _ in range(n)]
        self.fail_at, self.calls = fail_at, 0

    def next(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ValueError("a corrupt image")
        return [self.bufs[self.calls - 1].ptr] if self.calls <= len(self.bufs) else None


def _calibrator(trt, batches, with_batch_size=True, call_base_init=True):
    class Cal(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            if call_base_init:
                trt.IInt8EntropyCalibrator2.__init__(self)
            self.written = None

        def get_batch(self, names):
            return batches.next()

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            self.written = bytes(cache)

    if with_batch_size:
        Cal.get_batch_size = lambda self: 2
    return Cal()


@pytest.mark.parametrize("version", TEN)
def test_diff_calibrator_exception_is_printed_and_ends_calibration(version, tmp_path, capsys, make):
    """[pyInt8.cpp pyCalibratorTrampoline::getBatch]: an exception in get_batch is caught, printed
    ("[ERROR] Exception caught in get_batch(): ...") and returns false, which TensorRT reads as the end
    of the data: the build goes on with the batches before it."""
    trt = make(version)
    batches = _Batches((2, 3, 8, 8), 4, fail_at=3)
    cal = _calibrator(trt, batches)
    plan, _ = build(trt, conv_model(tmp_path), flags=("INT8",), calibrator=cal, calib_shape=(2, 3, 8, 8))
    assert plan is not None and batches.calls == 3
    assert "[ERROR] Exception caught in get_batch(): a corrupt image" in capsys.readouterr().err
    assert cal.written.startswith(b"TRT-")


@pytest.mark.parametrize("version", TEN)
def test_diff_get_batch_size_is_pure_virtual(version, capsys, make):
    """get_batch_size is PYBIND11_OVERLOAD_PURE: a calibrator that does not define it gets -1 and a printed
    error from the base method, not a default batch size."""
    trt = make(version)

    class Cal(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

    with pytest.warns(DeprecationWarning):
        assert Cal().get_batch_size() == -1
    assert "pure virtual" in capsys.readouterr().err


@pytest.mark.parametrize("version", RELEASES)
def test_diff_trampoline_base_init_is_required(version, make):
    """pybind11 trampolines: a subclass overriding __init__ without calling the base __init__ cannot be
    instantiated ("... __init__() must be called when overriding __init__")."""
    trt = make(version)
    bases = [trt.ILogger] + ([trt.IInt8EntropyCalibrator2] if version in TEN else [])
    for base in bases:
        cls = type("Sub", (base,), {"__init__": lambda self: None, "log": lambda self, s, m: None})
        with pytest.raises(TypeError, match=r"__init__\(\) must be called when overriding __init__"):
            cls()


@pytest.mark.parametrize("version", RELEASES)
def test_diff_inspector_fuses_conv_act_pool(version, tmp_path, make):
    """A Conv -> activation -> MaxPool chain is one "ConvActPool" layer whose weights are under
    "ConvWeights" [trt-engine-explorer sample engines @ v10.16]; 10.x tensors carry "Format/Datatype",
    11.x "Format" and "Datatype", and the engine lists "Bindings" (10.x) or "I/O Tensors" (11.x)."""
    trt = make(version)
    builder, network, parser, ok = parse(trt, conv_model(tmp_path))
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    p = builder.create_optimization_profile()
    p.set_shape("images", (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))
    config.add_optimization_profile(p)
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    fused = [lay for lay in info["Layers"] if lay["LayerType"] == "ConvActPool"]
    assert len(fused) == 1 and fused[0]["ConvWeights"]["Count"] == 4 * 3 * 3 * 3
    assert fused[0]["Name"] == "w + conv + relu + pool"
    tensor = fused[0]["Inputs"][0]
    if version in TEN:
        assert "Format/Datatype" in tensor and info["Bindings"] == ["images", "out"]
    else:
        assert tensor["Datatype"] == "Float" and "Format/Datatype" not in tensor
        io = {t["Name"]: t for t in info["I/O Tensors"]}
        assert io["images"]["ProfileInfo"][0]["MaxShape"] == [2, 3, 8, 8]


@pytest.mark.parametrize("version", RELEASES)
def test_diff_strongly_typed_quantize_scale_must_match_input(version, tmp_path, make):
    """[NvInfer.h IQuantizeLayer]: "For strongly typed networks, if the scale data type is kHALF or kBF16,
    it must match the input data type" (11.x networks are always strongly typed)."""
    trt = make(version)
    scale = numpy_helper.from_array(np.array(0.05, np.float16), "s")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")]
    path = _save(tmp_path, "qmix", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4])], [scale], opset=23)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    _, _, parser, ok = parse(trt, path, strongly)
    assert not ok and parser.get_error(0).node_operator() == "QuantizeLinear"
    assert "strongly typed" in parser.get_error(0).desc()


@pytest.mark.parametrize("version", TEN)
def test_diff_strongly_typed_network_refuses_precision_flags(version, tmp_path, make):
    """IBuilder::buildSerializedNetwork: "Parameter check failed, condition: !config.getFlag(BuilderFlag::kFP16)"
    for a strongly typed network (NVIDIA/TensorRT#4253)."""
    trt = make(version)
    log = Recorder(trt)
    plan, _ = build(trt, conv_model(tmp_path), flags=("FP16",), strongly=True, logger=log)
    assert plan is None and any("kFP16" in m for m in log.messages)
    assert build(trt, conv_model(tmp_path), strongly=True)[0] is not None


@pytest.mark.parametrize("version", RELEASES)
def test_diff_fp16_input_keeps_its_type(version, tmp_path, make):
    """Network inputs take the ONNX input's type: an FP16 input is HALF, read as FP16 from its buffer."""
    trt = make(version)
    path = conv_model(tmp_path, TensorProto.FLOAT16)
    plan, _ = build(trt, path, strongly=version in TEN)
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    assert engine.get_tensor_dtype("images") == trt.DataType.HALF
    assert engine.get_tensor_dtype("out") == trt.DataType.HALF
    x = np.random.default_rng(2).random((2, 3, 8, 8)).astype(np.float16)
    out = run(trt, plan, {"images": x})
    assert out["out"].dtype == np.float16
    np.testing.assert_array_equal(out["out"], _ort(path, {"images": x})["out"])


def nms_plugin_model(tmp_path, boxes, scores, score_t, iou_t):
    b = numpy_helper.from_array(np.asarray(boxes, np.float32)[None], "boxes")
    s = numpy_helper.from_array(np.asarray(scores, np.float32)[None], "scores")
    ident = [helper.make_node("Add", ["x", "boxes"], ["bx"], name="add"),
             helper.make_node("Identity", ["scores"], ["sc"], name="id")]
    nms = helper.make_node("EfficientNMS_TRT", ["bx", "sc"], ["num", "det_boxes", "det_scores", "det_classes"],
                           name="nms", domain="", score_threshold=float(score_t), iou_threshold=float(iou_t),
                           max_output_boxes=4, background_class=-1, score_activation=0, box_coding=0,
                           plugin_version="1")
    n = len(boxes)
    return _save(tmp_path, "effnms", ident + [nms], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, 4])],
                 [helper.make_tensor_value_info("num", TensorProto.INT32, [1, 1]),
                  helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, 4, 4]),
                  helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, 4]),
                  helper.make_tensor_value_info("det_classes", TensorProto.INT32, [1, 4])], [b, s])


@pytest.mark.parametrize("version", RELEASES)
def test_diff_efficient_nms_thresholds_are_inclusive(version, tmp_path, make):
    """[efficientNMSInference.cu @ each tag]: a candidate is kept when score >= score_threshold (gte_mp) and
    dropped when IoU >= iou_threshold against a kept box."""
    trt = make(version)
    trt.init_libnvinfer_plugins(None, "")
    # box 1 overlaps box 0 with IoU exactly 0.5; box 2 scores exactly the threshold
    boxes = [[0, 0, 4, 1], [0, 0, 2, 1], [10, 10, 12, 12]]
    scores = [[0.9], [0.8], [0.5]]
    path = nms_plugin_model(tmp_path, boxes, scores, score_t=0.5, iou_t=0.5)
    plan, _ = build(trt, path, profile=None)
    out = run(trt, plan, {"x": np.zeros((1, 3, 4), np.float32)})
    assert out["num"].tolist() == [[2]]
    np.testing.assert_allclose(out["det_scores"][0], [0.9, 0.5, 0, 0])
    assert not out["det_boxes"][0, 2:].any()


@pytest.mark.parametrize("version", RELEASES)
def test_diff_nms_layer_considers_5000_candidates(version, tmp_path, make):
    """[NvInfer.h INMSLayer]: only the 5000 highest-scoring boxes of an image are considered (ONNX Runtime
    considers all): 6000 disjoint boxes give 5000 selections."""
    trt = make(version)
    n = 6000
    xy = np.arange(n, dtype=np.float32)[:, None] * 3
    boxes = np.concatenate([xy, xy, xy + 1, xy + 1], axis=1)[None]
    scores = np.linspace(0.9, 0.5, n, dtype=np.float32)[None, None]
    inits = [numpy_helper.from_array(np.array([n], np.int64), "mx"), numpy_helper.from_array(
        np.array([0.5], np.float32), "iou"), numpy_helper.from_array(np.array([0.1], np.float32), "st")]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "mx", "iou", "st"], ["sel"], name="nms")
    path = _save(tmp_path, "nmslayer", [node], [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
                                                helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, n])],
                 [helper.make_tensor_value_info("sel", TensorProto.INT64, [None, 3])], inits)
    assert len(_ort(path, {"boxes": boxes, "scores": scores})["sel"]) == n
    builder, network, _, _ = parse(trt, path)
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    assert tuple(ctx.get_tensor_shape("sel")) == (-1, 3)  # data-dependent: needs an output allocator
    sel = _run_with_allocator(trt, ctx, {"boxes": boxes, "scores": scores}, "sel", np.int64)
    assert sel.shape == (sti.NMS_TOPK_BOX_LIMIT, 3) and sel[:, 2].max() == sti.NMS_TOPK_BOX_LIMIT - 1


def _run_with_allocator(trt, ctx, feeds, out_name, dtype):
    from polygraphy import cuda as pcuda

    class Allocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buf, self.shape = None, None

        def reallocate_output_async(self, name, memory, size, alignment, stream):
            self.buf = pcuda.DeviceArray.raw((size,))
            return self.buf.ptr

        def notify_shape(self, name, shape):
            self.shape = tuple(shape)

    keep = []
    for name, x in feeds.items():
        d = pcuda.DeviceArray(x.shape, x.dtype).copy_from(np.ascontiguousarray(x))
        keep.append(d)
        assert ctx.set_input_shape(name, x.shape) and ctx.set_tensor_address(name, d.ptr)
    alloc = Allocator()
    assert ctx.set_output_allocator(out_name, alloc)
    assert ctx.execute_async_v3(0)
    return alloc.buf.view(alloc.shape, dtype).numpy()


@pytest.mark.parametrize("version", RELEASES)
def test_diff_topk_k_above_3840_is_refused(version, tmp_path, make):
    """[NvInfer.h ITopKLayer]: "Currently only values up to 3840 are supported"."""
    trt = make(version)

    def topk(k):
        inits = [numpy_helper.from_array(np.array([k], np.int64), "k")]
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, name="topk")
        return _save(tmp_path, f"topk{k}", [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])],
                     [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, k]),
                      helper.make_tensor_value_info("i", TensorProto.INT64, [1, k])], inits)

    assert build(trt, topk(3840), profile=None)[0] is not None
    log = Recorder(trt)
    assert build(trt, topk(3841), profile=None, logger=log)[0] is None
    assert any("3840" in m for m in log.messages)


@pytest.mark.parametrize("version", RELEASES)
def test_diff_execution_reads_device_memory_only(version, tmp_path, make):
    """TensorRT reads and writes device memory: a host pointer bound to a tensor makes enqueue fail
    (an illegal memory access), it is not silently read."""
    trt = make(version)
    plan, _ = build(trt, conv_model(tmp_path))
    engine = trt.Runtime(trt.Logger(trt.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    x = np.zeros((1, 3, 8, 8), np.float32)
    y = np.zeros((1, 4, 4, 4), np.float32)
    assert ctx.set_input_shape("images", x.shape)
    ctx.set_tensor_address("images", x.ctypes.data)
    ctx.set_tensor_address("out", y.ctypes.data)
    assert ctx.execute_async_v3(0) is False


@pytest.mark.parametrize("version", RELEASES)
def test_diff_plan_refuses_another_gpu(version, tmp_path, make):
    """Plans do not move between GPU architectures: deserializing on another compute capability gives None
    ("The engine plan file is generated on an incompatible device")."""
    trt = make(version)
    plan, _ = build(trt, conv_model(tmp_path))
    other = sti.make_module(version, cuda=sti.CudaRuntime([("NVIDIA A100-SXM4-80GB", (8, 0))]))
    log = Recorder(other)
    assert other.Runtime(log).deserialize_cuda_engine(plan) is None
    assert any("incompatible device" in m for m in log.messages)
    assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan) is not None


@pytest.mark.parametrize("version", RELEASES)
def test_diff_no_gpu_no_builder(version):
    """Without a CUDA device createInferBuilder returns nullptr: the binding raises TypeError."""
    trt = sti.make_module(version, gpu=False)
    with pytest.raises(TypeError, match="factory function returned nullptr"):
        trt.Builder(trt.Logger())
    with pytest.raises(TypeError):
        trt.Runtime(trt.Logger())


@pytest.mark.parametrize("version", TEN)
def test_diff_stale_calibration_cache_leaves_layers_in_float(version, tmp_path, make):
    """TensorRT takes whatever read_calibration_cache returns: a cache from another network has no scales
    for this one's tensors ("Missing scale and zero-point for tensor ..."), and those layers run in float."""
    trt = make(version)

    class Cached(trt.IInt8EntropyCalibrator2):
        def __init__(self, cache):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache = cache

        def get_batch_size(self):
            return 2

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache):
            pass

    stale = b"TRT-100300-EntropyCalibration2\nother/tensor: 3c010a14\n"
    log = Recorder(trt)
    plan, _ = build(trt, conv_model(tmp_path, pool=False), flags=("INT8",), calibrator=Cached(stale), logger=log,
                    calib_shape=(2, 3, 8, 8))
    assert any("Missing scale and zero-point for tensor" in m for m in log.messages)
    eng = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan)
    # calibrated freshly, the same convolution runs in INT8
    plan2, _ = build(trt, conv_model(tmp_path, pool=False), flags=("INT8",), calib_shape=(2, 3, 8, 8),
                     calibrator=_calibrator(trt, _Batches((2, 3, 8, 8), 2)))

    def int8_layers(p):
        e = trt.Runtime(trt.Logger()).deserialize_cuda_engine(p)
        return e.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON).count("Int8")

    assert eng is not None and int8_layers(plan) == 0 < int8_layers(plan2)


# == release surfaces ====================================================================================

def test_surfaces_per_release(make):
    """What each release binds [pyCore.cpp, pyInt8.cpp, NvInfer.h @ each tag]."""
    mods = {v: make(v) for v in RELEASES}
    for v, trt in mods.items():
        ten = v in TEN
        assert trt.__version__ == sti.RELEASES[v]
        for name in ("IInt8EntropyCalibrator2", "IInt8Calibrator", "CalibrationAlgoType"):
            assert hasattr(trt, name) == ten
        assert hasattr(trt.BuilderFlag, "INT8") == ten and hasattr(trt.BuilderFlag, "FP16") == ten
        assert hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") == ten
        assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == (1 if ten else 0)
        assert hasattr(trt, "IStreamReader") == ten and hasattr(trt, "IStreamReaderV2") == (v != "10.3")
        assert hasattr(trt.DataType, "FP4") == (v != "10.3") and hasattr(trt.DataType, "E8M0") == (
            v not in ("10.3", "10.8"))
        assert hasattr(trt.BuilderFlag, "DISTRIBUTIVE_INDEPENDENCE") == (v not in ("10.3", "10.8"))
        assert hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY") == (v not in ("10.3", "10.8"))
        config = trt.Builder(trt.Logger()).create_builder_config()
        assert hasattr(config, "int8_calibrator") == ten and hasattr(config, "set_calibration_profile") == ten
        # DLA members stay bound in 11.x; only Jetson (10.3) has cores
        assert trt.Builder(trt.Logger()).num_DLA_cores == (2 if v == "10.3" else 0)
        assert config.DLA_core == -1 and config.default_device_type == trt.DeviceType.GPU
        assert config.get_memory_pool_limit(trt.MemoryPoolType.DLA_MANAGED_SRAM) == 1 << 20
        assert config.builder_optimization_level == 3
        with pytest.raises(TypeError):
            config.set_flag(3)  # enums, not ints
    t16, t11 = mods["10.16"], mods["11.1"]
    assert (int(t16.BuilderFlag.VERSION_COMPATIBLE), int(t11.BuilderFlag.VERSION_COMPATIBLE)) == (13, 12)
    assert (int(t16.BuilderFlag.EDITABLE_TIMING_CACHE), int(t11.BuilderFlag.EDITABLE_TIMING_CACHE)) == (27, 26)
    with pytest.raises(AttributeError):
        t11.Builder(t11.Logger()).create_builder_config().int8_calibrator = object()
    with pytest.raises(ValueError, match="DLA"):
        sti.make_module("11.1", dla_cores=2)


def test_dla_on_jetson_10_3(tmp_path, make):
    """DLA runs FP16/INT8 layers with static shapes; others need kGPU_FALLBACK ("Working with DLA",
    "DLA Supported Layers and Restrictions")."""
    trt = make("10.3")
    static = ((2, 3, 8, 8),) * 3

    def dla_build(flags, profile=static):
        builder, network, _, _ = parse(trt, conv_model(tmp_path))
        config = builder.create_builder_config()
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 1
        for f in flags:
            config.set_flag(getattr(trt.BuilderFlag, f))
        p = builder.create_optimization_profile()
        p.set_shape("images", *profile)
        config.add_optimization_profile(p)
        assert config.can_run_on_DLA(network.get_layer(0)) and config.DLA_core == 1
        plan = builder.build_serialized_network(network, config)
        return None if plan is None else sti._unpack_plan(bytes(plan))[0]["dla"]

    assert dla_build(()) is None  # FP32 cannot run on DLA, no fallback
    fp16 = dla_build(("FP16",))
    assert fp16["core"] == 1 and fp16["on_gpu"] == [] and len(fp16["on_dla"]) == 3
    dyn = ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    assert dla_build(("FP16",), dyn) is None  # min != max
    assert dla_build(("FP16", "GPU_FALLBACK"), dyn)["on_dla"] == []
    t11 = make("11.1")
    c = t11.Builder(t11.Logger()).create_builder_config()
    c.DLA_core = 0  # "if getNbDLACores() returns 0, then this function does nothing"
    assert c.DLA_core == -1


@pytest.mark.parametrize("version", RELEASES)
def test_weak_typing_and_nms_plugins_per_release(version, tmp_path, make):
    """Weak typing (per-layer precision) is deprecated in 10.12 [pyGraph.cpp ILayer.precision @ v10.12.0] and
    gone in 11.0, where every network is strongly typed; EfficientNMS_ONNX_TRT is registered through 10.16
    and gone in 11.0 [plugin/api/inferPlugin.cpp], EfficientNMS_TRT stays (deprecated since 10.12)."""
    import warnings

    trt = make(version)
    _, network, _, _ = parse(trt, conv_model(tmp_path))
    layer = network.get_layer(0)
    assert layer.type == trt.LayerType.CONVOLUTION
    if version in ELEVEN:
        assert not hasattr(layer, "precision") and network._strongly_typed
    else:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            layer.precision = trt.DataType.HALF
        assert any(issubclass(w.category, DeprecationWarning) for w in seen) == (version not in ("10.3", "10.8"))
        assert layer.precision_is_set
    trt.init_libnvinfer_plugins(None, "")
    names = {c.name for c in trt.get_plugin_registry().all_creators}
    assert "EfficientNMS_TRT" in names and ("EfficientNMS_ONNX_TRT" in names) == (version in TEN)


@pytest.mark.parametrize("version", ("10.8", "11.1"))
def test_timing_cache_and_optimization_level(version, tmp_path, make):
    """A timing cache gains entries from a build, not at optimization level 0 ("will also not respect a
    timing cache"); another version's cache is refused; combine() skips another version's cache."""
    trt = make(version)
    builder, network, _, _ = parse(trt, conv_model(tmp_path, batch=1))
    for level, grows in ((0, False), (3, True)):
        config = builder.create_builder_config()
        cache = config.create_timing_cache(b"")
        assert config.set_timing_cache(cache, False)
        config.builder_optimization_level = level
        assert builder.build_serialized_network(network, config) is not None
        assert (len(cache._keys) > 0) == grows
    blob = bytes(cache.serialize())
    assert config.create_timing_cache(blob) is not None
    other = make("10.16" if version == "11.1" else "11.1")
    oc = other.Builder(other.Logger()).create_builder_config()
    assert oc.create_timing_cache(blob) is None
    assert not oc.create_timing_cache(b"").combine(cache, True)


@pytest.mark.parametrize("version", RELEASES)
def test_plugins_need_init_and_shape_outside_profile_is_false(version, tmp_path, make):
    """The parser and the runtime find EfficientNMS_TRT only after init_libnvinfer_plugins; a shape
    outside the profile is refused by set_input_shape returning False (not raising)."""
    trt = make(version)
    path = nms_plugin_model(tmp_path, [[0, 0, 1, 1]], [[0.9]], 0.25, 0.45)
    _, _, parser, ok = parse(trt, path)
    assert not ok and parser.get_error(0).desc() == sti.PLUGIN_NOT_FOUND
    trt.init_libnvinfer_plugins(None, "")
    plan, _ = build(trt, path, profile=None)
    fresh = make(version)
    assert fresh.Runtime(fresh.Logger(fresh.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(plan) is None
    plan, _ = build(trt, conv_model(tmp_path))
    ctx = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan).create_execution_context()
    assert not ctx.set_input_shape("images", (8, 3, 8, 8)) and ctx.set_input_shape("images", (4, 3, 8, 8))


# == Polygraphy drives the stand-in ======================================================================

def _images(d, n):
    from fyexport.data.images import iter_prepared
    from fyexport.data.selection import select_images

    paths = select_images(d / "data/images/val", n).paths
    return np.stack(list(iter_prepared(paths, (256, 256))))


def test_polygraphy_builds_a_small_onnx_model(tmp_path, monkeypatch):
    """network_from_onnx_path, CreateConfig (profile, fp16 on 10.x, strongly typed on 11.x, timing cache,
    optimization level, memory pool), engine_bytes_from_network, engine_from_bytes, save_engine and
    TrtRunner on every release; outputs equal ONNX Runtime's."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromPath,
        Profile,
        TrtRunner,
        engine_bytes_from_network,
        engine_from_bytes,
        network_from_onnx_path,
        save_engine,
    )

    path = conv_model(tmp_path)
    x = np.random.default_rng(3).random((3, 3, 8, 8), dtype=np.float32)
    ref = _ort(path, {"images": x})["out"]
    for version in RELEASES:
        trt = sti.install(version, monkeypatch=monkeypatch)
        cache = tmp_path / f"{version}.cache"
        net = network_from_onnx_path(str(path), strongly_typed=version in ELEVEN)
        cfg = CreateConfig(fp16=version in TEN, profiles=[Profile().add("images", (1, 3, 8, 8), (2, 3, 8, 8),
                                                                         (4, 3, 8, 8))],
                           load_timing_cache=str(cache), builder_optimization_level=4,
                           memory_pool_limits={trt.MemoryPoolType.WORKSPACE: 1 << 30})
        data = engine_bytes_from_network(net, cfg, save_timing_cache=str(cache))
        header = sti._unpack_plan(bytes(data))[0]
        assert header["opt_level"] == 4 and header["pools"] == {"WORKSPACE": 1 << 30}
        assert header["flags"] == (["FP16"] if version in TEN else []) and cache.stat().st_size > 0
        save_engine(engine_from_bytes(data), str(tmp_path / f"{version}.engine"))
        with TrtRunner(EngineFromPath(str(tmp_path / f"{version}.engine"))) as runner:
            out = runner.infer({"images": x})["out"]
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("version", RELEASES)
def test_polygraphy_builds_and_runs_the_tiny_checkpoint(version, artifacts, monkeypatch):
    """The exported checkpoint through Polygraphy: raw dynamic batch, ONNX NMS (INMSLayer), EfficientNMS_TRT
    (Polygraphy registers the plugins), the FP16 Q/DQ model strongly typed, and on 10.x the FP32-remainder
    Q/DQ model with the INT8 and FP16 flags; outputs equal ONNX Runtime's (the plugin against the ONNX NMS)."""
    from polygraphy.backend.trt import CreateConfig, Profile, TrtRunner, engine_from_network, network_from_onnx_path

    sti.install(version, monkeypatch=monkeypatch)
    x = _images(artifacts, 2)
    dyn = [Profile().add("images", (1, 3, 256, 256), (2, 3, 256, 256), (4, 3, 256, 256))]
    cases = [("dyn.onnx", dyn, {}), ("onnxnms.onnx", dyn, {}), ("plug.onnx", dyn, {}),
             ("cal/model.qdq.fp16.onnx", [], {"strongly_typed": True})]
    if version in TEN:
        cases.append(("cal/model.qdq.onnx", [], {"int8": True, "fp16": True}))
    for name, profiles, kw in cases:
        strongly = kw.pop("strongly_typed", False) or version in ELEVEN
        feed = x if profiles else x[:1]
        engine = engine_from_network(network_from_onnx_path(str(artifacts / name), strongly_typed=strongly),
                                     CreateConfig(profiles=profiles, **kw))
        with TrtRunner(engine) as runner:
            out = runner.infer({"images": feed})
        path = artifacts / name
        ref = _plugin_reference(path, feed) if name == "plug.onnx" else _ort(path, {"images": feed})
        for k, v in out.items():
            np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-4, err_msg=f"{version} {name} {k}")
        if "nms" in name or "plug" in name:
            assert out["num_dets"].min() > 0  # real detections were compared


def _plugin_reference(path, x) -> dict:
    """EfficientNMS_TRT's outputs computed here from ONNX Runtime's values of the plugin's inputs, written
    from the kernel's rules (score >= threshold, same-class IoU >= threshold suppresses, best first)."""
    import onnx

    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type == "EfficientNMS_TRT")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    m.graph.node.remove(node)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in node.input[:2])
    cut = path.with_name("plugin_inputs.onnx")
    onnx.save(m, str(cut))
    boxes, scores = _ort(cut, {"images": x}).values()
    k = attrs["max_output_boxes"]
    out = {"num_dets": np.zeros((len(x), 1), np.int32), "det_boxes": np.zeros((len(x), k, 4), np.float32),
           "det_scores": np.zeros((len(x), k), np.float32), "det_classes": np.zeros((len(x), k), np.int32)}
    for b in range(len(x)):
        cand = sorted(((float(scores[b, i, c]), i, c) for i in range(scores.shape[1]) for c in range(scores.shape[2])
                       if scores[b, i, c] >= attrs["score_threshold"]), key=lambda t: -t[0])
        kept = []
        for s, i, c in cand:
            if len(kept) < k and all(c2 != c or sti._iou(boxes[b, i], boxes[b, i2]) < attrs["iou_threshold"]
                                     for _, i2, c2 in kept):
                kept.append((s, i, c))
        out["num_dets"][b, 0] = len(kept)
        for t, (s, i, c) in enumerate(kept):
            out["det_boxes"][b, t], out["det_scores"][b, t], out["det_classes"][b, t] = boxes[b, i], s, c
    return out


@pytest.mark.parametrize("version", TEN)
def test_polygraphy_calibrator_on_10x(version, artifacts, tmp_path, monkeypatch):
    """Polygraphy's Calibrator (IInt8EntropyCalibrator2) with a calibration profile: batches at the OPT shape,
    the cache written, then read back instead of calibrating again; on 11.x int8 is unavailable."""
    from polygraphy.backend.trt import (
        Calibrator,
        CreateConfig,
        Profile,
        engine_bytes_from_network,
        network_from_onnx_path,
    )

    sti.install(version, monkeypatch=monkeypatch)
    x = _images(artifacts, 4)
    cache = tmp_path / "calib.cache"

    def batches():
        for i in range(0, 4, 2):
            yield {"images": x[i:i + 2]}

    profiles = [Profile().add("images", (1, 3, 256, 256), (2, 3, 256, 256), (4, 3, 256, 256))]
    for fresh in (True, False):
        cal = Calibrator(data_loader=batches(), cache=str(cache))
        data = engine_bytes_from_network(network_from_onnx_path(str(artifacts / "dyn.onnx")),
                                         CreateConfig(int8=True, fp16=True, profiles=profiles, calibrator=cal))
        facts = sti._unpack_plan(bytes(data))[0]
        assert facts["calibration"]["from_cache"] is not fresh
        if fresh:
            assert facts["calibration"]["batches"] == 2 and facts["calibration"]["shape"] == [2, 3, 256, 256]
            assert cache.read_bytes().startswith(f"TRT-{version.replace('.', '')}".encode()[:6])
        assert sum('"Int8"' in json.dumps(lay) for lay in facts["layers"]) > 0


@pytest.mark.parametrize("version", ELEVEN)
def test_polygraphy_reports_int8_unavailable_on_11x(version, artifacts, monkeypatch):
    from polygraphy.backend.trt import CreateConfig, engine_bytes_from_network, network_from_onnx_path
    from polygraphy.exception import PolygraphyException

    sti.install(version, monkeypatch=monkeypatch)
    with pytest.raises(PolygraphyException, match="int8 in CreateConfig is not available on TensorRT version 11"):
        engine_bytes_from_network(network_from_onnx_path(str(artifacts / "fp32.onnx")), CreateConfig(int8=True))


@pytest.mark.parametrize("version", ("10.16", "11.1"))
def test_polygraphy_reads_the_inspector_json(version, artifacts, monkeypatch):
    """Polygraphy 0.53.6's engine extractor reads the layer data types of both inspector layouts."""
    from polygraphy.backend.trt import CreateConfig, engine_from_network, network_from_onnx_path
    from polygraphy.tools.inspect.subtool.model.extractors import graph_data_from_trt_engine

    sti.install(version, monkeypatch=monkeypatch)
    qdq = artifacts / "cal/model.qdq.fp16.onnx"
    engine = engine_from_network(network_from_onnx_path(str(qdq), strongly_typed=True),
                                 CreateConfig())
    graph = graph_data_from_trt_engine(engine, engine.create_execution_context())
    dtypes = {str(t.dtype) for n in graph.per_profile_nodes[0] for t in n.inputs}
    assert "int8" in dtypes and "float16" in dtypes


# == installing, and the script ==========================================================================

def test_install_gives_fyexport_a_gpu_and_polygraphy_cuda_memory(monkeypatch):
    from polygraphy import cuda as pcuda

    import fyexport.core.machine as machine

    trt = sti.install("10.3", monkeypatch=monkeypatch)
    assert machine.tensorrt_usable() and machine.tensorrt_version() == "10.3.0.26"
    assert machine.gpu_facts(with_driver=False) == {"gpu": "Orin", "compute_capability": "8.7", "cuda": "12.8"}
    a = pcuda.DeviceArray((4,), np.float32).copy_from(np.arange(4, dtype=np.float32))
    assert trt._stand_in.cuda.is_device(a.ptr, 16) and a.numpy().tolist() == [0, 1, 2, 3]
    ms = ctypes.c_float()
    h = pcuda.wrapper().handle
    e1, e2 = ctypes.c_void_p(), ctypes.c_void_p()
    assert h.cudaEventCreate(ctypes.byref(e1)) == 0 and h.cudaEventCreate(ctypes.byref(e2)) == 0
    h.cudaEventRecord(e1, 0), h.cudaEventRecord(e2, 0)
    assert h.cudaEventElapsedTime(ctypes.byref(ms), e1, e2) == 0 and ms.value >= 0
    sti.install("11.1", gpu=False, monkeypatch=monkeypatch)
    assert not machine.tensorrt_usable()


def _script(*args, cwd):
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tests" / "trt_stand_in.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize("version", ("10.8", "10.16", "11.1"))
def test_script_builds_an_engine_with_fyexport(version, artifacts, tmp_path):
    """``python tests/trt_stand_in.py VERSION engine ...`` runs fyexport's engine command with the stand-in."""
    proc = _script(version, "engine", artifacts / "dyn.onnx", "-o", tmp_path / "m.engine", "--precision", "fp32",
                   "--max-batch", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["tensorrt"] == sti.RELEASES[version] and meta["gpu"] == sti.DISCRETE_GPU[0]
    assert meta["input"]["profile"]["max"][0] == 4
    assert sti._unpack_plan((tmp_path / "m.engine").read_bytes())[0]["trt"] == sti.RELEASES[version]


def test_script_evaluates_an_engine(artifacts, tmp_path):
    proc = _script("10.16", "engine", artifacts / "dyn.onnx", "-o", tmp_path / "m.engine", "--precision", "fp32",
                   "--max-batch", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _script("10.16", "eval", tmp_path / "m.engine", "--data", artifacts / "data/shapes.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_script_usage():
    proc = _script(cwd=REPO)
    assert proc.returncode == 2 and "VERSION" in proc.stderr
    proc = _script("9.0", "info", cwd=REPO)
    assert proc.returncode == 2 and "no stand-in for TensorRT 9.0" in proc.stderr
