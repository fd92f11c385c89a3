"""INT8: histograms, the KL search, the TensorRT cache, calibration and Q/DQ placement."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import REPO, TINY, run_cli

# -- the KL search against an independent, straightforward implementation ---------------

def reference_entropy_amax(hist, width, nbins_q=128, start=128):
    """Direct transcription of the algorithm (docs/int8-tensorrt.md, 5), one candidate at a
    time with explicit P and Q arrays."""
    bins = np.asarray(hist, dtype=np.float64).copy()
    bins[0] = bins[1]
    total = bins.sum()
    best_i, best_kl = None, np.inf
    for i in range(start, len(bins) + 1):
        p = bins[:i].copy()
        p[i - 1] += bins[i:].sum()
        group = np.digitize(np.arange(i), np.linspace(0, i, nbins_q + 1)) - 1
        q = np.zeros(i)
        for g in range(nbins_q):
            sel = (group == g)
            nonzero = sel & (bins[:i] > 0)
            if nonzero.any():
                q[nonzero] = bins[:i][sel].sum() / nonzero.sum()
        p /= total
        if q.sum() == 0:
            continue
        q /= q.sum()
        mask = p > 0
        if np.any(q[mask] == 0):
            kl = np.inf
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl <= best_kl:  # last minimum on ties
            best_kl, best_i = kl, i
    return best_i * width


def _hist_of(x, bins=2048):
    from fyexport.quantize.histogram import AbsHistogram

    h = AbsHistogram(bins)
    h.update(x.astype(np.float32))
    return h


def _synthetic_hist(dist: str, seed: int, bins: int = 512):
    """|x| histogram of a synthetic distribution (few bins keep the O(N^2) reference loops quick)."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        x = rng.uniform(-1, 1, 200_000)
    elif dist == "gaussian":
        x = rng.normal(0, 1, 200_000)
    else:
        x = np.concatenate([rng.laplace(0, 0.5, 200_000), rng.uniform(20, 40, 30)])
    return _hist_of(x, bins=bins)


@pytest.mark.parametrize("dist", ["uniform", "gaussian", "laplace_outliers"])
def test_kl_search_matches_reference_loop(dist):
    from fyexport.quantize.entropy import entropy_amax

    h = _synthetic_hist(dist, seed=1)
    fast = entropy_amax(h.counts, h.width)
    ref = reference_entropy_amax(h.counts, h.width)
    assert fast == pytest.approx(ref, rel=1e-12)
    if dist == "uniform":
        assert fast == pytest.approx(1.0, rel=0.02)  # nothing to clip
    elif dist == "laplace_outliers":
        assert fast < 0.6 * h.amax  # clips the outliers away
    assert 0 < fast <= h.amax * (1 + 1e-6)


def test_kl_is_nonnegative_and_finite_at_full_range():
    from fyexport.quantize.entropy import kl_divergences

    rng = np.random.default_rng(0)
    h = _hist_of(rng.normal(0, 1, 100_000))
    cands, kl = kl_divergences(h.counts)
    assert cands[-1] == len(h.counts) and h.counts[-1] > 0
    assert np.all(kl >= 0) and np.isfinite(kl[-1])


def reference_mse_amax(hist, width, start=128):
    """NVIDIA's Histogram(MSE), one candidate at a time: fake-quantize every bin centre to
    127 symmetric levels with each candidate amax and weight the squared error by counts."""
    counts = np.asarray(hist, dtype=np.float64)
    centers = (np.arange(len(counts)) + 0.5) * width
    best, best_err = None, np.inf
    for i in range(start, len(centers)):
        amax = centers[i]
        q = np.clip(np.round(centers * (127 / amax)), -127, 127) / (127 / amax)
        err = float(((q - centers) ** 2 * counts).sum())
        if err < best_err:  # first minimum
            best, best_err = amax, err
    return best


@pytest.mark.parametrize("dist", ["uniform", "gaussian", "laplace_outliers"])
def test_mse_search_matches_reference_loop(dist):
    from fyexport.quantize.entropy import entropy_amax, mse_amax

    h = _synthetic_hist(dist, seed=2)
    fast = mse_amax(h.counts, h.width, chunk=37)  # odd chunks exercise the chunk boundaries
    assert fast == pytest.approx(reference_mse_amax(h.counts, h.width), rel=1e-12)
    if dist == "uniform":
        assert fast == pytest.approx(1.0, rel=0.02)
    elif dist == "laplace_outliers":
        # 30 far outliers cost more squared error clipped than rounded: MSE keeps far more
        # of the tail than the KL search, which clips them away
        assert entropy_amax(h.counts, h.width) < 0.6 * h.amax < fast


def test_percentile_and_minmax():
    from fyexport.quantize.entropy import compute_amax

    x = np.linspace(-1, 1, 100_001)
    h = _hist_of(x)
    assert compute_amax(h, "minmax") == pytest.approx(1.0)
    assert compute_amax(h, "percentile", 50.0) == pytest.approx(0.5, abs=2e-3)


# -- histograms -----------------------------------------------------------------------------

def test_histogram_merge_equals_one_shot():
    from fyexport.quantize.histogram import AbsHistogram, count_abs

    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 50_000).astype(np.float32)
    b = rng.normal(0, 4, 50_000).astype(np.float32)  # a larger range: the histogram grows
    h = AbsHistogram()
    h.update(a)
    h.update(b)
    assert len(h.counts) > 2048
    one, over, _, _ = count_abs(np.concatenate([a, b]), h.width, len(h.counts), use_fast=False)
    assert over == 0 and np.array_equal(h.counts, one) and h.total == 100_000


def _fast_vs_numpy_cases():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(1_000_003) * 3).astype(np.float32)
    x[::1000] = 0.0
    x[5000:9000] = 1.5  # a run of one bin (sub-histograms must not lose increments)
    x[::777] *= -1.0
    cases = [(x, nbins) for nbins in (2048, 3000)]
    for n in (1, 15, 16, 17, 1023, 1024, 1025, 4096 + 1024 + 3):  # block and vector tails
        cases.append((x[:n].copy(), 2048))
    bad = x[:5000].copy()
    bad[[7, 100, 4999]] = [np.nan, np.inf, -np.inf]  # non-finite values count as overflow
    cases.append((bad, 2048))
    cases.append((x, 100))  # most values beyond the bins: overflow
    cases.append((x[:200_000].copy(), 2048))  # counted right after both (scratch left clean)
    return cases


def test_fast_counter_equals_numpy():
    """The C counter (AVX-512, SSE2 or plain C block pass) gives numpy's bins, overflow, min and max."""
    import subprocess
    import sys

    from fyexport.quantize.histogram import _FAST, count_abs

    if _FAST is None:
        pytest.skip("the optional C accelerator was not built (no compiler at install time)")
    for x, nbins in _fast_vs_numpy_cases():
        a = count_abs(x, 0.004, nbins)
        b = count_abs(x, 0.004, nbins, use_fast=False)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1], x.size
        if np.isfinite(x).all():
            assert a[2:] == b[2:]
    # the SSE2 pass, chosen once per process, in a process without AVX-512
    code = ("import numpy as np; from test_quantize import _fast_vs_numpy_cases as c; "
            "from fyexport.quantize.histogram import count_abs as f\n"
            "for x, n in c():\n a, b = f(x, 0.004, n), f(x, 0.004, n, use_fast=False)\n"
            " assert np.array_equal(a[0], b[0]) and a[1] == b[1]")
    env = {**os.environ, "FYEXPORT_NO_AVX512": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_nonfinite_activation_is_an_error():
    from fyexport.quantize.histogram import AbsHistogram

    h = AbsHistogram()
    h.update(np.ones(10, np.float32))
    bad = np.ones(10, np.float32)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        h.update(bad)


# -- the TensorRT cache format ----------------------------------------------------------------

def test_cache_scale_encoding_round_trip():
    from fyexport.quantize.cache import decode_scale, encode_scale, format_cache, parse_cache

    assert encode_scale(1.0) == "3c010204"
    assert encode_scale(2.0) == "3c810204"
    assert encode_scale(0.5) == "3b810204"
    assert decode_scale("3c010204") == pytest.approx(1 / 127)
    text = format_cache({"b": 3.5, "a": 1.0}, version=101600)
    assert text.splitlines()[0] == "TRT-101600-EntropyCalibration2"
    assert text.splitlines()[1] == "a: 3c010204"
    header, amax = parse_cache(text)
    assert amax["a"] == pytest.approx(1.0) and amax["b"] == pytest.approx(3.5, rel=1e-6)


def test_cache_version_numbers():
    from fyexport.quantize.cache import trt_version_number

    assert trt_version_number("10.3.0") == 100300
    assert trt_version_number("10.16.1.11") == 101601
    assert trt_version_number("8.5.1") == 8501


# -- calibration on the tiny fixture --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    if not TINY.exists():
        pytest.skip("fixtures missing")
    import fyexport
    from fyexport.onnx.export import export_onnx

    path = tmp_path_factory.mktemp("q") / "tiny.onnx"
    export_onnx(fyexport.load(TINY), path, img_size=320)
    return path


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory):
    from fyexport.data.shapes import generate

    root = tmp_path_factory.mktemp("calib")
    generate(root, train=20, val=0, size=320)
    return root / "images" / "train"


def _bad_image_folder(root, good_dir):
    """Good shapes images plus every kind of awkward file."""
    import shutil

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for p in sorted(good_dir.glob("*.jpg"))[:6]:
        shutil.copy(p, root / p.name)
    src = sorted(good_dir.glob("*.jpg"))[0]
    (root / "zero.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(src.read_bytes()[:2000])
    (root / "text.jpg").write_text("not an image at all\n")
    Image.new("RGB", (1, 1), (10, 20, 30)).save(root / "one_pixel.png")
    img = Image.open(src)
    img.convert("L").save(root / "gray.png")
    img.convert("RGBA").save(root / "rgba.png")
    img.convert("CMYK").save(root / "cmyk.jpg")
    arr16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(root / "sixteen.png")
    sub = root / "nested" / "deeper"
    sub.mkdir(parents=True)
    shutil.copy(src, sub / "again.bmp")
    return root


def test_calibration_outputs_and_determinism(tiny_onnx, calib_images, tmp_path):
    from fyexport.quantize import calibrate
    from fyexport.quantize.cache import parse_cache

    a = calibrate(tiny_onnx, calib_images, tmp_path / "a", num_images=12, batch=4)
    calibrate(tiny_onnx, calib_images, tmp_path / "b", num_images=12, batch=4)
    ca, cb = (tmp_path / "a/calib.cache").read_bytes(), (tmp_path / "b/calib.cache").read_bytes()
    assert ca == cb
    for name in ("model.qdq.onnx", "model.qdq.fp16.onnx", "model.qdq.cpu.onnx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    header, amax = parse_cache(ca.decode())
    assert header.startswith("TRT-") and header.endswith("-EntropyCalibration2")
    assert set(amax) == set(a.info["tensors"]) and all(v > 0 for v in amax.values())
    assert a.info["images"]["used"] == 12 and len(a.info["model"]["sha256"]) == 64
    # every tensor of a scale group is calibrated by itself and the group takes the largest
    # amax; Concat outputs only repeat their inputs' values and are not histogrammed
    import onnx

    from fyexport.quantize import load_collected
    from fyexport.quantize.entropy import compute_amax

    producer = {o: n.op_type for n in onnx.load(str(tiny_onnx)).graph.node for o in n.output}
    stats = tmp_path / "a" / "calib.stats.json"
    col = load_collected(stats, json.loads(stats.read_text())["key"])
    multi = 0
    for g in a.info["groups"].values():
        assert all(producer.get(t) != "Concat" for t in g["histogrammed"])
        assert set(g["histogrammed"]) <= set(g["tensors"]) and set(col.hists) >= set(g["histogrammed"])
        own = [compute_amax(col.hists[t], "entropy") for t in g["histogrammed"]]
        assert g["amax"] == max(own)
        multi += len(own) > 1 and min(own) < 0.9 * max(own)
    assert multi >= 2  # concat groups whose inputs need different ranges exist, and the widest wins
    # another method reuses the statistics and gives another cache
    c = calibrate(tiny_onnx, calib_images, tmp_path / "a", num_images=12, batch=4, method="minmax")
    assert c.infer_seconds == 0.0
    _, mm = parse_cache((tmp_path / "a/calib.cache").read_text())
    assert any(mm[k] > amax[k] * 1.0001 for k in amax)  # minmax never clips, entropy does somewhere


def test_interrupted_calibration_resumes_identically(tiny_onnx, calib_images, tmp_path, monkeypatch):
    import fyexport.data.images as pre
    from fyexport.quantize import calibrate

    ref = calibrate(tiny_onnx, calib_images, tmp_path / "ref", num_images=16, batch=2)
    real = pre.read_image
    calls = {"n": 0}

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(pre, "read_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        calibrate(tiny_onnx, calib_images, tmp_path / "run", num_images=16, batch=2)
    assert not (tmp_path / "run/calib.cache").exists()
    assert (tmp_path / "run/.calib-state.json").exists()
    monkeypatch.setattr(pre, "read_image", real)
    calibrate(tiny_onnx, calib_images, tmp_path / "run", num_images=16, batch=2)
    assert (tmp_path / "run/calib.cache").read_bytes() == (tmp_path / "ref/calib.cache").read_bytes()
    assert (tmp_path / "run/model.qdq.cpu.onnx").read_bytes() == (tmp_path / "ref/model.qdq.cpu.onnx").read_bytes()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    del ref


def test_awkward_calibration_folder(tiny_onnx, calib_images, tmp_path):
    folder = _bad_image_folder(tmp_path / "mixed", calib_images)
    proc = run_cli("calibrate", tiny_onnx, "--images", folder, "-o", tmp_path / "out", "--num-images", "100",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    d = json.loads(proc.stdout)
    # zero-byte, truncated, text-as-jpg and 1x1 are skipped; gray, RGBA, CMYK, 16-bit, nested bmp are used
    assert d["images_skipped"] == 4 and d["images_used"] == 6 + 5
    assert "skipped 4" in proc.stderr


def test_empty_or_missing_folder_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"x")
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        proc = run_cli("calibrate", tmp_path / "m.onnx", "--images", folder, "-o", tmp_path / "o")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_qdq_models_follow_the_rules_and_run(tiny_onnx, calib_images, tmp_path):
    import onnx
    import onnxruntime as ort

    from fyexport.quantize import calibrate
    from fyexport.quantize.inspection import inspect_qdq

    calibrate(tiny_onnx, calib_images, tmp_path, num_images=12, batch=4)
    trt = inspect_qdq(onnx.load(str(tmp_path / "model.qdq.onnx")))
    assert not trt.violations and trt.activation_dtype == "int8"
    assert len(trt.float_convs) == 3 and len(trt.quantized_convs) == 55  # head convs stay float
    fp16 = inspect_qdq(onnx.load(str(tmp_path / "model.qdq.fp16.onnx")))
    assert not fp16.violations
    assert any(i.data_type == 10 for i in onnx.load(str(tmp_path / "model.qdq.fp16.onnx")).graph.initializer)
    cpu = inspect_qdq(onnx.load(str(tmp_path / "model.qdq.cpu.onnx")))
    assert not cpu.violations and cpu.activation_dtype == "uint8"
    # the CPU flavour runs as real INT8 kernels in ONNX Runtime
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(tmp_path / "model.qdq.cpu.onnx"), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 55
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    assert sess.run(None, {"images": x})[0].shape == (1, 6300, 10)
    # a broken concat scale is reported
    from onnx import numpy_helper

    m = onnx.load(str(tmp_path / "model.qdq.onnx"))
    for init in m.graph.initializer:
        if init.name == "m_model.10_act_LeakyRelu_output_0_scale":
            init.CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), init.name))
    bad = inspect_qdq(m)
    assert any("Concat" in v for v in bad.violations)


def test_int8_accuracy_close_to_fp32(tiny_onnx, calib_images, tmp_path, shapes_small):
    """A real (small) accuracy check: INT8 on 16 validation images stays near FP32."""
    from fyexport.evaluation.metrics import evaluate
    from fyexport.quantize import calibrate
    from fyexport.runners import open_runner

    calibrate(tiny_onnx, calib_images, tmp_path, num_images=20, batch=4)
    maps = {}
    for name, path in (("fp32", tiny_onnx), ("s8s8", tmp_path / "model.qdq.onnx"),
                       ("u8s8", tmp_path / "model.qdq.cpu.onnx")):
        maps[name] = evaluate(open_runner(path), shapes_small).map
    assert maps["fp32"] > 0.2
    assert abs(maps["s8s8"] - maps["fp32"]) < 0.05 and abs(maps["u8s8"] - maps["fp32"]) < 0.05


def test_auto_exclude_keeps_the_most_harmful_groups_in_float(tiny_onnx, calib_images, tmp_path):
    """The sensitivity pass ranks groups by the output error left when each one alone stays
    float, keeps the K best in float, and the Q/DQ models follow that choice."""

    import onnx

    from fyexport.quantize import calibrate
    from fyexport.quantize.inspection import inspect_qdq

    calibrate(tiny_onnx, calib_images, tmp_path, num_images=12, batch=4, auto_exclude=2, sensitivity_images=2,
              bias_correction=0)
    info = json.loads((tmp_path / "calib.json").read_text())
    sens = info["sensitivity"]
    errs = [r["error_if_float"] for r in sens["ranking"]]
    assert errs == sorted(errs) and len(errs) > 10
    assert sens["kept_float"] == [r["group"] for r in sens["ranking"][:2]]
    assert errs[0] < sens["error_all_quantized"]  # floating the worst group really removes error
    kept = sorted({c for r in sens["ranking"][:2] for c in r["convs"]})
    for name in ("model.qdq.onnx", "model.qdq.cpu.onnx"):
        rep = inspect_qdq(onnx.load(str(tmp_path / name)))
        assert not rep.violations
        convs = [c for c in kept if c in rep.float_convs or c in rep.quantized_convs]
        assert convs and set(convs) <= set(rep.float_convs)
        assert len(rep.float_convs) == 3 + len(convs) and len(rep.quantized_convs) == 55 - len(convs)


def test_build_keeps_sensitive_groups_float_by_default_only_when_pruning_without_qat():
    """The post-training path keeps 4 scale groups in float when it prunes; QAT (the pruned
    build's default) keeps none."""
    from fyexport.core.config import make_config
    from fyexport.pipeline.build import AUTO_EXCLUDE_PRUNED, BuildConfig

    def opts(ratio, **kw):
        return make_config(BuildConfig, {"weights": "w.pt", "calib": "c", "out": "o", "prune.ratio": ratio, **kw})

    assert opts(0.5, run_qat=False).sensitive_groups_in_float == AUTO_EXCLUDE_PRUNED == 4
    assert opts(0.5, run_recover=False).sensitive_groups_in_float == AUTO_EXCLUDE_PRUNED  # no recovery: no QAT
    assert opts(0.5).sensitive_groups_in_float == 0 and opts(0.5).qat_on
    assert opts(0.0).sensitive_groups_in_float == 0
    assert opts(0.5, auto_exclude=0).sensitive_groups_in_float == 0
    assert opts(0.0, auto_exclude=2).sensitive_groups_in_float == 2


def test_method_auto_picks_the_lowest_output_error(tiny_onnx, calib_images, tmp_path):

    from fyexport.quantize import calibrate

    r = calibrate(tiny_onnx, calib_images, tmp_path / "auto", num_images=12, batch=4, method="auto",
                  sensitivity_images=2, bias_correction=0)
    info = json.loads((tmp_path / "auto" / "calib.json").read_text())
    sel = info["method_selection"]
    errs = sel["output_error"]
    assert set(errs) == {"entropy", "minmax", "percentile", "mse"} and all(v > 0 for v in errs.values())
    assert sel["chosen"] == min(errs, key=errs.get) == info["method"] == r.method
    # the artifacts are exactly those of calibrating with the chosen method
    fixed = calibrate(tiny_onnx, calib_images, tmp_path / "fixed", num_images=12, batch=4, method=sel["chosen"],
                      bias_correction=0)
    assert (tmp_path / "auto" / "calib.cache").read_bytes() == fixed.files["cache"].read_bytes()


def test_amax_search_scores_consumers_and_prefers_entropy(tiny_onnx, calib_images, tmp_path):
    """--method search: every candidate's error is the relative squared error of the group's
    consumer convs (activated) with the input fake-quantized at that amax and int8 weights,
    checked here against torch for one group; entropy stays unless beaten by the tolerance."""

    import onnx
    import torch
    from onnx import numpy_helper

    from fyexport.onnx.facts import session_options
    from fyexport.quantize import calibrate
    from fyexport.quantize.collect import calibration_model
    from fyexport.quantize.graph import analyse, graph_index
    from fyexport.quantize.qdq import quantize_weight, weight_scales
    from fyexport.quantize.search import candidate_amax, search_amax

    r = calibrate(tiny_onnx, calib_images, tmp_path, num_images=12, batch=4, method="search",
                  sensitivity_images=3, bias_correction=0)
    info = json.loads((tmp_path / "calib.json").read_text())
    assert info["method"] == "search" and r.method == "search"
    groups = info["method_selection"]["groups"]
    assert len(groups) >= 5
    for gid, rep in groups.items():
        assert info["groups"][gid]["amax"] == pytest.approx(rep["amax"])
        err = rep["error"]
        best = min(err.values())
        assert all(v >= 0 for v in err.values())
        if rep["chosen"] != "entropy":
            assert err[rep["chosen"]] == best and err["entropy"] > 2.0 * best
        else:
            assert err["entropy"] <= 2.0 * best

    # the error of one single-reader group, recomputed with torch
    import onnxruntime as ort

    from fyexport.data.selection import select_images
    from fyexport.quantize.calibration import load_collected, probe_images

    proto = onnx.load(str(tiny_onnx))
    plan = analyse(proto)
    _, consumers, _ = graph_index(proto)
    readers = {g: [c for t in plan.groups[g] for c in consumers[t] if c.name in plan.conv_nodes] for g in groups}
    gid = next(g for g, cs in readers.items() if len(cs) == 1
               and plan.activations.get(cs[0].output[0], ("none",))[0] in ("silu", "leaky"))
    conv = readers[gid][0]
    kind = plan.activations[conv.output[0]]
    alpha = next((a.f for n in proto.graph.node if kind[0] == "leaky" and n.name == kind[1]
                  for a in n.attribute if a.name == "alpha"), 0.01)
    probe = probe_images(proto, select_images(calib_images, 12, 0), 3)
    sess = ort.InferenceSession(calibration_model(proto, [conv.input[0]]), session_options(),
                                providers=["CPUExecutionProvider"])
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w = inits[conv.input[1]].astype(np.float32)
    b = torch.from_numpy(inits[conv.input[2]].astype(np.float32))
    att = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    sc = weight_scales(w)
    wq = torch.from_numpy(quantize_weight(w, sc).astype(np.float32) * sc[:, None, None, None])

    def conv_act(x, weight):
        p = att.get("pads", [0, 0, 0, 0])
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (p[1], p[3], p[0], p[2])), weight, b,
                                       stride=att.get("strides", [1, 1]), dilation=att.get("dilations", [1, 1]),
                                       groups=att.get("group", 1))
        return torch.nn.functional.silu(y) if kind[0] == "silu" else torch.nn.functional.leaky_relu(y, alpha)

    stats = tmp_path / "calib.stats.json"
    col = load_collected(stats, json.loads(stats.read_text())["key"])
    cands = candidate_amax([col.hists[t] for t in plan.reps[gid]])
    assert set(cands) == set(groups[gid]["error"])
    for label, a in cands.items():
        num = den = 0.0
        for img in probe:
            x = torch.from_numpy(sess.run(None, {"images": img[None]})[0])
            s = np.float32(a / 127.0)
            xq = torch.clamp(torch.round(x / s), -128, 127) * s
            ref = conv_act(x, torch.from_numpy(w))
            num += float(((conv_act(xq, wq) - ref) ** 2).mean())
            den += float((ref ** 2).mean())
        # per-image means summed over the probe images; one reader: error = sum(mse) / sum(energy)
        assert groups[gid]["error"][label] == pytest.approx(num / den, rel=2e-3, abs=1e-7)

    # tolerance: huge keeps entropy everywhere, 1 is the plain argmin
    _, rep_e = search_amax(proto, plan, col.hists, probe, tolerance=1e9)
    assert all(v["chosen"] == "entropy" for v in rep_e.values())
    _, rep_1 = search_amax(proto, plan, col.hists, probe, tolerance=1.0)
    assert all(v["chosen"] == min(v["error"], key=v["error"].get) for v in rep_1.values())
