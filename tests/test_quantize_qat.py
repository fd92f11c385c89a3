"""Quantization-aware training (fyexport.quantize.qat*): the fake-quantized PyTorch model computes
what the Q/DQ models compute, quantizes exactly where PTQ's plan says, starts from PTQ exactly,
trains, and exports through the PTQ path.

About "the same outputs": an INT8 network turns float32 summation-order differences (PyTorch's
convolution against ONNX Runtime's) into rounding flips that cascade, so the same INT8 model run
by two libraries, or by PyTorch in two memory layouts, differs end to end (about 0.2-0.3 points
of mAP on 32 images: benchmarks/README.md).  Parity is therefore shown (1) layer by layer, each
module fed ONNX Runtime's own input, and (2) end to end on a variant of the model whose every
scale is a power of two, where every float operation of the INT8 network is exact and the two
must agree to the last bit before the float decode.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FULL, TINY, needs_shared

# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, its FP32 ONNX at 320, shapes data yaml with 16 val images at 320, calibration dir
    without bias correction)."""
    import fyexport
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize import calibrate

    root = tmp_path_factory.mktemp("qat")
    model = fyexport.load(TINY)
    export_onnx(model, root / "tiny.onnx", img_size=320)
    generate(root / "shapes", train=16, val=16, size=320)
    calibrate(root / "tiny.onnx", root / "shapes" / "images" / "train", root / "ptq", num_images=16, batch=4,
              bias_correction=0)
    return model, root / "tiny.onnx", root / "shapes" / "shapes.yaml", root / "ptq"


def _ranges(cal):
    from fyexport.quantize.qat import QuantRanges

    return QuantRanges.from_calib_json(Path(cal) / "calib.json")


def _images(yaml, split="val", n=2, size=320):
    from fyexport.data.images import iter_prepared
    from fyexport.data.labels import load_data_yaml

    return np.stack(list(iter_prepared(load_data_yaml(yaml).images(split)[:n], (size, size))))


FLAVOUR_FILES = {"trt": "model.qdq.onnx", "cpu": "model.qdq.cpu.onnx"}


# -- the arithmetic ---------------------------------------------------------------------------------

@pytest.mark.parametrize("unsigned", [False, True])
def test_fake_quant_is_onnx_quantize_dequantize_bit_for_bit(unsigned):
    """Ties included (round half to even), saturation, zero point, on ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fyexport.onnx.facts import cpu_session
    from fyexport.quantize.qat import FakeQuant

    rng = np.random.default_rng(0)
    s, zp = np.float32(0.0371), (np.uint8(77) if unsigned else np.int8(0))
    x = (rng.standard_normal((1, 4, 32, 32)) * 4).astype(np.float32)
    x.flat[:600] = ((np.arange(600) - 300 + 0.5) * s).astype(np.float32)  # exact ties and far outside
    dt = TensorProto.UINT8 if unsigned else TensorProto.INT8
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(zp, dtype=zp.dtype), "z")])
    assert dt in (TensorProto.UINT8, TensorProto.INT8)
    y_ort = cpu_session(helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])).run(None, {"x": x})[0]
    qmin, qmax = (0.0, 255.0) if unsigned else (-128.0, 127.0)
    z = torch.tensor(float(zp)) if unsigned else None
    y = FakeQuant.apply(torch.from_numpy(x), torch.tensor(s), z, qmin, qmax).numpy()
    assert np.array_equal(y, y_ort)
    # under bfloat16 autocast the arithmetic stays float32 (only the result is cast back)
    xb = torch.from_numpy(x).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = FakeQuant.apply(xb, torch.tensor(s), z, qmin, qmax)
    ref = FakeQuant.apply(xb.float(), torch.tensor(s), z, qmin, qmax)
    assert yb.dtype == torch.bfloat16 and torch.equal(yb, ref.bfloat16())


def test_fake_quant_gradients_are_lsq():
    """Input: straight through inside the range, zero outside; scale: round(x/s) - x/s inside,
    q - z at the clip; zero point: -s at the clip (checked against the formula elementwise)."""
    from fyexport.quantize.qat import FakeQuant

    x = torch.linspace(-3, 12, 301, dtype=torch.float32).requires_grad_(True)
    s = torch.tensor(0.05, requires_grad=True)
    z = torch.tensor(20.0, requires_grad=True)
    g = torch.rand(301, generator=torch.Generator().manual_seed(1))
    FakeQuant.apply(x, s, z, 0.0, 255.0).backward(g)
    xs = x.detach() / 0.05
    q = torch.round(xs) + 20
    inside = (q >= 0) & (q <= 255)
    assert 0 < int(inside.sum()) < 301
    assert torch.equal(x.grad, g * inside)
    want_s = (g * torch.where(inside, torch.round(xs) - xs, q.clamp(0, 255) - 20)).sum()
    assert s.grad.item() == pytest.approx(want_s.item(), rel=1e-5)
    assert z.grad.item() == pytest.approx((-0.05 * g * ~inside).sum().item(), rel=1e-5)


def test_weights_and_bias_are_quantized_as_qdq_does():
    from fyexport.quantize.qat import fake_quant_bias, fake_quant_weight
    from fyexport.quantize.qdq import quantize_bias, quantize_weight, weight_scales

    rng = np.random.default_rng(3)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.1).astype(np.float32)
    w[3] = 0.0  # a dead channel: the scale floor
    b = (rng.standard_normal(16)).astype(np.float32)
    wq, ws = fake_quant_weight(torch.from_numpy(w))
    sc = weight_scales(w)
    assert np.array_equal(ws.numpy(), sc)
    assert np.array_equal(wq.numpy(), quantize_weight(w, sc).astype(np.float32) * sc[:, None, None, None])
    bq, bs = quantize_bias(b, np.float32(0.0213), sc)
    got = fake_quant_bias(torch.from_numpy(b), torch.tensor(np.float32(0.0213)), ws)
    assert np.array_equal(got.numpy(), bq.astype(np.float32) * bs)


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_scales_and_zero_points_are_qdq_spec_params(tiny, flavour):
    """Every row of the QAT ranges equals qdq.spec_params bit for bit, calibrated and moved."""
    from fyexport.onnx.facts import check_onnx_file
    from fyexport.quantize.qat import QuantRanges, trained_ranges
    from fyexport.quantize.qat_export import start_qat
    from fyexport.quantize.qdq import spec_params

    model, onnx_path, _, cal = tiny
    r = _ranges(cal)
    q = start_qat(model, onnx_path, r, flavour)
    check_onnx_file(onnx_path)
    with torch.no_grad():
        q.qat.amax_rel.copy_(torch.linspace(-0.3, 0.4, len(q.qat.groups)))
        q.qat.gmin_rel.copy_(torch.linspace(0.5, -0.2, len(q.qat.groups)))
    moved = trained_ranges(q)
    assert isinstance(moved, QuantRanges) and moved.amax != r.amax
    scale, zp = q.qat.params()
    for spec, row in q.qat.row.items():
        s_np, z_np = spec_params(spec, moved.amax, moved.gmin, moved.ranges)
        assert scale[row].item() == float(s_np) and zp[row].item() == float(z_np), spec


# -- placement ------------------------------------------------------------------------------------

def test_module_paths_of_exported_node_names():
    from fyexport.quantize.qat_place import module_path

    assert module_path("/m/model.51/cv1/conv/Conv") == ("model.51.cv1.conv", "Conv")
    assert module_path("/m/model.6/Concat") == ("model.6", "Concat")
    assert module_path("/model.0/act/Mul") == ("model.0.act", "Mul")
    assert module_path("Constant_0") == ("", "Constant_0")


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_placement_is_the_ptq_plan(tiny, flavour):
    """(b) The QAT model quantizes exactly the tensors, scale groups and convs the PTQ Q/DQ model does."""
    import onnx

    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat_export import start_qat

    model, onnx_path, _, cal = tiny
    proto = onnx.load(str(onnx_path))
    plan = analyse(proto)
    q = start_qat(model, onnx_path, _ranges(cal), flavour)
    pl = q.qat_placement
    qdq = onnx.load(str(cal / FLAVOUR_FILES[flavour]))
    quantized = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert set(pl.specs) == quantized
    assert set(pl.convs.values()) == set(plan.conv_nodes) and len(plan.excluded_convs) == 3
    weight_dq = {n.output[0] for n in qdq.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0].endswith("_w_int8")}
    assert {n.name for n in qdq.graph.node if n.op_type == "Conv" and n.input[1] in weight_dq} == set(pl.convs.values())
    assert sorted(q.qat.groups) == sorted(plan.groups)
    groups = {s.group for s in pl.specs.values() if s.group is not None}
    images = {"images"} if flavour == "cpu" else set()  # the CPU flavour takes 0..1 images at 1/255
    assert groups | images == set(plan.groups)
    # every Conv2d that reads a quantized input has a quantizer on it, and nothing else is a Conv2d quantizer
    hooked_convs = {p for p, _ in pl.inputs if isinstance(q.get_submodule(p), torch.nn.Conv2d)}
    if flavour == "trt":
        assert hooked_convs == set(pl.convs)
    else:
        assert set(pl.convs) <= hooked_convs


def test_placement_refuses_an_onnx_of_another_model(tiny):
    """The mapping is checked: a Conv's weights must be those of the module its name gives, and
    every node name must name a module."""
    import copy

    import onnx

    from fyexport.core.errors import InputError
    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat import prepare_qat

    model, onnx_path, _, cal = tiny
    proto = onnx.load(str(onnx_path))
    plan = analyse(proto)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model[2].conv.weight.mul_(1.5)
    with pytest.raises(InputError, match="weights are not those of model.2.conv"):
        prepare_qat(other, proto, plan, _ranges(cal), "trt")
    renamed = onnx.ModelProto()
    renamed.CopyFrom(proto)
    for k, n in enumerate(renamed.graph.node):
        n.name = f"node_{k}"
    with pytest.raises(InputError, match="names no module"):
        prepare_qat(model, renamed, analyse(renamed), _ranges(cal), "trt")


def _leaf_io(qat_model, proto, plan):
    """Per leaf module: {argument position: ONNX input tensor} and its ONNX output tensor."""
    from fyexport.models.common import Concat, Shortcut
    from fyexport.quantize.graph import graph_index
    from fyexport.quantize.qat_place import module_path

    producer, consumers, consts = graph_index(proto)
    ins, outs = {}, {}
    for n in proto.graph.node:
        if n.name not in plan.region or n.op_type == "Constant":
            continue
        path, _ = module_path(n.name)
        mod = qat_model.get_submodule(path)
        if list(mod.children()):
            continue
        listy = isinstance(mod, (Concat, Shortcut))
        for k, t in enumerate(n.input):
            if t and t not in consts and (t not in producer or module_path(producer[t].name)[0] != path):
                ins.setdefault(path, {})[k if listy else 0] = t
        for o in n.output:
            if any(module_path(c.name)[0] != path for c in consumers[o]):
                outs[path] = o
    return ins, outs


def forced_parity(qat_model, qdq_path, proto, plan, x) -> dict:
    """Run the Q/DQ model on ONNX Runtime, then every leaf module of the QAT model on ONNX
    Runtime's values of its inputs; {module: (max abs difference, largest |output|)}."""
    import onnx

    from fyexport.onnx.facts import cpu_session

    ins, outs = _leaf_io(qat_model, proto, plan)
    m = onnx.load(str(qdq_path))
    have = {o.name for o in m.graph.output}
    for t in sorted({t for d in ins.values() for t in d.values()} | set(outs.values())):
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = cpu_session(m)
    vals = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))
    got, handles = {}, []
    for path, d in ins.items():
        def feed(module, args, d=d):
            if isinstance(args[0], (list, tuple)):
                return ([torch.from_numpy(vals[d[k]]) if k in d else a for k, a in enumerate(args[0])], *args[1:])
            return (torch.from_numpy(vals[d[0]]), *args[1:])

        mod = qat_model.get_submodule(path)
        handles.append(mod.register_forward_pre_hook(feed, prepend=True))  # before the quantizer
        handles.append(mod.register_forward_hook(lambda _m, _a, o, path=path: got.__setitem__(path, o.numpy())))
    with torch.no_grad():
        qat_model(torch.from_numpy(x))
    for h in handles:
        h.remove()
    return {p: (float(np.abs(got[p] - vals[t]).max()), float(np.abs(vals[t]).max())) for p, t in outs.items()}


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_every_module_computes_what_onnx_runtime_computes(tiny, flavour):
    """(a) Layer by layer, on ONNX Runtime's own inputs: float32 rounding only."""
    import onnx

    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat_export import start_qat

    model, onnx_path, yaml, cal = tiny
    q = start_qat(model, onnx_path, _ranges(cal), flavour)
    proto = onnx.load(str(onnx_path))
    res = forced_parity(q, cal / FLAVOUR_FILES[flavour], proto, analyse(proto), _images(yaml, n=1))
    assert len(res) > 100
    bad = {p: v for p, v in res.items() if v[0] > 2e-5 * max(1.0, v[1])}
    assert bad == {}


@needs_shared
@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_full_yolov7_silu_and_sppcspc_layer_parity(flavour, tmp_path_factory):
    """The full yolov7: SiLU (the CPU flavour quantizes its sigmoid), SPPCSPC's inner Concats
    (their quantization moves to the consumers), merged RepConvs."""
    import onnx

    import fyexport
    from fyexport.data.shapes import generate
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize import calibrate
    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat_export import start_qat

    root = tmp_path_factory.mktemp(f"full_{flavour}")
    model = fyexport.load(FULL)
    export_onnx(model, root / "full.onnx", img_size=160)
    generate(root / "shapes", train=4, val=1, size=160)
    calibrate(root / "full.onnx", root / "shapes" / "images" / "train", root / "ptq", num_images=4, batch=4,
              bias_correction=0, flavours=(flavour,))
    q = start_qat(model, root / "full.onnx", _ranges(root / "ptq"), flavour)
    if flavour == "cpu":
        assert len(q.qat_placement.silu) > 80 and any("model.51/Concat" in n for n in q.qat_placement.moved)
    proto = onnx.load(str(root / "full.onnx"))
    res = forced_parity(q, root / "ptq" / FLAVOUR_FILES[flavour], proto, analyse(proto),
                        _images(root / "shapes" / "shapes.yaml", n=1, size=160))
    bad = {p: v for p, v in res.items() if v[0] > 2e-5 * max(1.0, v[1])}
    assert len(res) > 150 and bad == {}


# -- end to end -----------------------------------------------------------------------------------

def _pow2(model, onnx_path, ranges, flavour, out: Path):
    """The tiny model with every scale a power of two (activation ranges, per-channel weight
    scales; biases on their accumulator's grid; the CPU flavour with minimum 0, so zero points
    are 0): every float operation of its INT8 network is exact.  Returns (QAT model, Q/DQ dir)."""
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize.qat import QuantRanges, strip_qat
    from fyexport.quantize.qat_export import start_qat, write_qat_models

    div = 127.0 if flavour == "trt" else 255.0
    amax = {g: div * 2.0 ** math.floor(math.log2(max(a, 1e-3) / div)) for g, a in ranges.amax.items()}
    gmin = {g: (m if flavour == "trt" else 0.0) for g, m in ranges.gmin.items()}
    r2 = QuantRanges(amax, gmin, dict(ranges.ranges), ranges.exclude)
    q = start_qat(model, onnx_path, r2, flavour, learn=False)
    scale, _ = q.qat.params()
    with torch.no_grad():
        for path in q.qat_placement.convs:
            conv = q.get_submodule(path)
            w = conv.weight.view(conv.out_channels, -1)
            s = 2.0 ** torch.ceil(torch.log2(w.abs().amax(1).clamp_min(1e-8) / 127.0))
            i, k = torch.arange(len(w)), w.abs().argmax(1)
            w[i, k] = torch.sign(w[i, k]) * 127.0 * s
            grid = scale[q.qat.row[q.qat_placement.conv_input[path]]] * s
            conv.bias.copy_(torch.round(conv.bias / grid) * grid)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(strip_qat(q), out / "fp32.onnx", img_size=320)
    q = start_qat(strip_qat(q), out / "fp32.onnx", r2, flavour, learn=False)
    write_qat_models(q, out, img_size=320, flavours=(flavour,))
    return q, out


def _binarized(yaml, out: Path) -> Path:
    """The val split with every pixel 0 or 255 (its labels unchanged): 0..1 inputs then
    dequantize exactly in the CPU flavour's 1/255 input scale."""
    import shutil

    from PIL import Image

    from fyexport.data.labels import load_data_yaml

    spec = load_data_yaml(yaml)
    (out / "images" / "val").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "val").mkdir(parents=True, exist_ok=True)
    for p in spec.images("val"):
        a = np.asarray(Image.open(p).convert("RGB"))
        Image.fromarray(np.where(a > 127, 255, 0).astype(np.uint8)).save(out / "images" / "val" / (p.stem + ".png"))
        shutil.copy(p.parent.parent.parent / "labels" / "val" / (p.stem + ".txt"), out / "labels" / "val")
    y = out / "data.yaml"
    y.write_text(f"val: {out / 'images' / 'val'}\nnc: {spec.nc}\nnames: {list(spec.names)}\n")
    return y


@pytest.mark.parametrize("flavour", ["trt", "cpu"])
def test_end_to_end_parity_and_the_same_map(tiny, tmp_path, flavour):
    """(a) With power-of-two scales the fake-quantized PyTorch model and the exported Q/DQ model on
    ONNX Runtime (all graph optimisations: the CPU flavour runs fused QLinearConv) agree to float
    rounding of the decode, and their mAP on the shapes validation images is the same (CPU
    flavour: binarized images, whose 1/255 input quantization is exact)."""
    from fyexport.evaluation.metrics import evaluate
    from fyexport.onnx.facts import cpu_session
    from fyexport.runners import open_runner
    from fyexport.runners.torch_runner import TorchRunner

    model, onnx_path, yaml, cal = tiny
    q, out = _pow2(model, onnx_path, _ranges(cal), flavour, tmp_path / "pow2")
    data = yaml if flavour == "trt" else _binarized(yaml, tmp_path / "bin")
    x = _images(data, n=2)
    sess = cpu_session(out / FLAVOUR_FILES[flavour])
    for i in range(len(x)):
        y_ort = sess.run(None, {"images": x[i:i + 1]})[0]
        with torch.no_grad():
            y = q(torch.from_numpy(x[i:i + 1]))[0].numpy()
        # the float head convs and the decode round differently; nothing quantized comes after them
        assert np.abs(y[..., 4:] - y_ort[..., 4:]).max() < 1e-5  # scores
        assert np.abs(y[..., :4] - y_ort[..., :4]).max() < 1e-2  # boxes, in pixels
    m_torch = evaluate(TorchRunner(q, img_size=320), data).map
    m_ort = evaluate(open_runner(out / FLAVOUR_FILES[flavour]), data).map
    assert m_ort > 0.01  # it detects (binarized images and power-of-two scales cost accuracy)
    assert abs(m_torch - m_ort) <= 0.001  # 0.1 point


# -- start, train, export -------------------------------------------------------------------------

def test_frozen_scales_reproduce_the_ptq_models(tiny, tmp_path):
    """(c) Before any training step the QAT model exports the PTQ Q/DQ graphs byte for byte."""
    import onnx

    from fyexport.quantize.qat_export import start_qat, write_qat_models

    model, onnx_path, _, cal = tiny
    r = _ranges(cal)
    q = start_qat(model, onnx_path, r, "cpu", learn=False)
    ex = write_qat_models(q, tmp_path, img_size=320)
    for f in ("model.qdq.onnx", "model.qdq.fp16.onnx", "model.qdq.cpu.onnx"):
        a = onnx.load(str(cal / f)).graph.SerializeToString()
        assert a == onnx.load(str(tmp_path / f)).graph.SerializeToString(), f
    assert (cal / "calib.cache").read_bytes() == (tmp_path / "calib.cache").read_bytes()
    assert ex.moved and max(abs(v) for v in ex.moved.values()) == 0.0


def test_a_bias_corrected_ptq_start_is_reproduced(tiny, tmp_path):
    """Starting from a bias-corrected PTQ model (its per-conv shifts absorbed into the biases)
    gives the same outputs as that PTQ model on ONNX Runtime, bit for bit."""
    import onnx

    from fyexport.onnx.facts import cpu_session
    from fyexport.quantize.bias import local_shifts
    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat import prepare_qat
    from fyexport.quantize.qat_export import write_qat_models
    from fyexport.quantize.qdq import build_qdq

    model, onnx_path, yaml, cal = tiny
    r = _ranges(cal)
    proto = onnx.load(str(onnx_path))
    plan = analyse(proto)
    x = _images(yaml, "train", n=4)
    shifts = local_shifts(proto, plan, r.amax, r.gmin, x, "trt")
    ptq = build_qdq(proto, plan, r.amax, r.gmin, r.ranges, "trt", shifts)
    q = prepare_qat(model, proto, plan, r, "trt", learn=False, bias_shift=shifts)
    write_qat_models(q, tmp_path, img_size=320, flavours=("trt",))
    a, b = cpu_session(ptq), cpu_session(tmp_path / "model.qdq.onnx")
    for i in range(2):
        assert np.array_equal(a.run(None, {"images": x[i:i + 1]})[0], b.run(None, {"images": x[i:i + 1]})[0])


def test_copies_strip_and_checkpoint(tiny, tmp_path):
    """A QAT model survives deepcopy after a forward (the EMA, the runners), keeps the plain
    state_dict keys, and strips back to a plain model that saves and loads."""
    import copy

    import fyexport
    from fyexport.core.errors import InputError
    from fyexport.quantize.qat import is_qat, plain_state_dict, strip_qat
    from fyexport.quantize.qat_export import start_qat

    model, onnx_path, yaml, cal = tiny
    q = start_qat(model, onnx_path, _ranges(cal), "cpu")
    x = torch.from_numpy(_images(yaml, n=1))
    q.train()
    sum(r.float().sum() for r in q(x)).backward()
    assert q.qat.amax_rel.grad is not None and q.qat.amax_rel.grad.abs().sum() > 0
    c = copy.deepcopy(q).eval()
    q.eval()
    with torch.no_grad():
        assert torch.equal(c(x)[0], q(x)[0])
        c.qat.amax_rel.add_(0.2)  # the copy's hooks use the copy's ranges
        assert not torch.equal(c(x)[0], q(x)[0])
    fused = copy.deepcopy(model).fuse()
    assert set(plain_state_dict(q)) == set(fused.state_dict())
    plain = strip_qat(q)
    assert not is_qat(plain) and is_qat(q)
    fyexport.save(plain, tmp_path / "p.pt")
    back = fyexport.load(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.allclose(back(x)[0], fused(x)[0], atol=1e-4)
    # the checkpoint carries the trained ranges: the QAT model comes back exactly
    import onnx

    from fyexport.quantize.graph import analyse
    from fyexport.quantize.qat import resume_qat

    with torch.no_grad():
        q.qat.amax_rel.add_(0.05)
    fyexport.save(strip_qat(q), tmp_path / "q.pt")
    proto = onnx.load(str(onnx_path))
    again = resume_qat(fyexport.load(tmp_path / "q.pt"), proto, analyse(proto)).eval()
    with torch.no_grad():
        assert torch.equal(again(x)[0], q(x)[0])
    with pytest.raises(InputError, match="no quantization-aware training record"):
        resume_qat(model, proto, analyse(proto))


@pytest.mark.parametrize("learn", [True, False])
def test_finetune_moves_what_it_should_and_exports(tiny, tmp_path, learn):
    from fyexport.data.labels import load_data_yaml
    from fyexport.quantize.qat_export import start_qat, write_qat_models
    from fyexport.recover.qat import QatConfig, qat_finetune

    model, onnx_path, yaml, cal = tiny
    r = _ranges(cal)
    q = start_qat(model, onnx_path, r, "trt", learn=learn)
    w0 = q.get_submodule("model.0.conv").weight.detach().clone()
    spec = load_data_yaml(yaml)
    cfg = QatConfig(steps=3, batch=4, img_size=320, crop=160, lr=1e-4, scale_lr=1e-2, warmup_iters=1, ema_decay=None,
                    cache="none", workers=0, learn_scales=learn)
    res = qat_finetune(q, model, spec.images("train"), cfg, data=spec)
    assert res.steps == 3 and res.history and math.isfinite(res.history[-1]["loss"])
    assert not torch.equal(res.model.get_submodule("model.0.conv").weight, w0)
    moved = res.model.qat.amax_rel.detach().abs().max().item()
    assert (moved > 0) == learn
    ex = write_qat_models(res.model, tmp_path, img_size=320, flavours=("trt", "cpu"))
    assert (max(abs(v) for v in ex.moved.values()) > 0) == learn
    assert {"trt", "cpu", "cache", "record"} <= set(ex.files)


def test_an_interrupted_finetune_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    """QAT saves its state (every 2 steps here); a run stopped at step 5 and started again with
    the same settings resumes at step 4 and ends with the weights of an uninterrupted run; a
    state saved with other settings is not used; the state file is gone at the end."""
    from fyexport.data.labels import load_data_yaml
    from fyexport.quantize.qat_export import start_qat
    from fyexport.recover import qat as rq

    model, onnx_path, yaml, cal = tiny
    spec = load_data_yaml(yaml)
    cfg = rq.QatConfig(steps=6, batch=4, img_size=320, crop=160, lr=1e-4, warmup_iters=1, cache="none", workers=0)
    monkeypatch.setattr(rq._Run, "SAVE_EVERY", 2)

    def run(state, c=cfg):
        return rq.qat_finetune(start_qat(model, onnx_path, _ranges(cal), "trt"), model, spec.images("train"), c,
                               data=spec, state=state)

    straight = run(None)
    state = tmp_path / "qat.state.pt"
    real_call, calls = rq._Step.__call__, []

    def stop_at_5(self, *a):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_call(self, *a)

    monkeypatch.setattr(rq._Step, "__call__", stop_at_5)
    with pytest.raises(KeyboardInterrupt):
        run(state)
    monkeypatch.setattr(rq._Step, "__call__", real_call)
    assert state.exists()
    other = run(state, replace(cfg, lr=2e-4))  # other settings: starts again, and its end removes the state
    assert other.steps == 6 and not state.exists()
    monkeypatch.setattr(rq._Step, "__call__", stop_at_5)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run(state)
    monkeypatch.setattr(rq._Step, "__call__", real_call)
    resumed = run(state)
    assert resumed.steps == 6 and [h["step"] for h in resumed.history] == [6] and not state.exists()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_step_time_runs_on_the_cpu(tiny):
    from fyexport.quantize.qat_export import start_qat
    from fyexport.recover.qat import qat_step_time

    model, onnx_path, _, cal = tiny
    q = start_qat(model, onnx_path, _ranges(cal), "trt")
    r = qat_step_time(q, model, batch=2, img_size=128, device="cpu", steps=2, warmup=1)
    assert r["qat"] and r["device"] == "cpu" and r["step_s"] > 0 and r["images_per_s"] > 0
    base = qat_step_time(model, model, batch=2, img_size=128, device="cpu", steps=2, warmup=1)
    assert not base["qat"]
