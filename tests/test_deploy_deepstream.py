"""DeepStream (fyexport.deploy.deepstream): the nvinfer config and what it is made from, the
parser's core on real ONNX Runtime outputs of the bundled model against fyexport's own
postprocess, the parser library built with its Makefile against the real DeepStream headers
and called as nvinfer calls it, and nvinfer's documented preprocessing against fyexport's
letterbox.

No DeepStream can run here: the parser is checked through the code nvinfer runs it with (the
header's function type, one call per image with that image's layers), the config keys against
the real gst-nvinfer property parser's list, and the preprocessing by a reimplementation of
what gst-nvinfer's get_converted_buffer and nvdsinfer's conversion kernel do.

The DeepStream headers (nvdsinfer.h, nvdsinfer_custom_impl.h, gstnvinfer_property_parser.h)
are NVIDIA's and are never in this repository: FYEXPORT_DS_HEADERS names a folder with one
subfolder per release (6.4, 7.0, 7.1), or one release's folder; nvdsinfer_custom_impl.h
includes TensorRT's headers (FYEXPORT_TRT_HEADERS: subfolders by TensorRT version) and those
include CUDA's cuda_runtime_api.h (FYEXPORT_CUDA_HEADERS: subfolders by CUDA version). Each
defaults to the folder of that name beside the repository (../.ds-headers, ../.trt-headers,
../.cuda-headers), then to where a DeepStream install has them; tests skip, saying so, where
they are absent.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO, REPO, TINY, run_cli

PARSER_SRC = REPO / "fyexport" / "deploy" / "deepstream_parser"
SIZE = 256
GXX = shutil.which("g++")
MAKE = shutil.which("make")
needs_gxx = pytest.mark.skipif(GXX is None, reason="g++ is not installed: the parser tests compile C++17")
WARNINGS = ["-std=c++17", "-Wall", "-Wextra", "-Wconversion", "-Werror"]


# -- shared fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The bundled model exported at 256: decoded (dynamic and static batch), and ending in each NMS."""
    import fyexport
    from fyexport.onnx.export import export_onnx
    from fyexport.onnx.nms import NmsConfig

    d = tmp_path_factory.mktemp("ds")
    m = fyexport.load(TINY)
    export_onnx(m, d / "model.onnx", img_size=SIZE, dynamic_batch=True)
    export_onnx(m, d / "nms.onnx", img_size=SIZE, dynamic_batch=True, simplify=False, nms=NmsConfig("onnx"))
    export_onnx(m, d / "plugin.onnx", img_size=SIZE, dynamic_batch=True, simplify=False,
                nms=NmsConfig("trt-plugin"))
    export_onnx(m, d / "static2.onnx", img_size=SIZE, batch=2, simplify=False)
    return d


@pytest.fixture(scope="module")
def calibrated(models):
    """``models`` with cal/: the Q/DQ flavours and calib.cache of model.onnx."""
    from fyexport.data.shapes import generate
    from fyexport.quantize import calibrate

    generate(models / "data", train=8, val=2, size=SIZE)
    calibrate(models / "model.onnx", models / "data/images/train", models / "cal", num_images=8, batch=4,
              bias_correction=0)
    return models


@pytest.fixture(scope="module")
def images():
    """Real pictures (BGR): three shapes images, two crops of other aspect ratios and the photo."""
    from fyexport.data.images import read_image
    from fyexport.data.shapes import make_image

    shapes = [np.asarray(make_image(1_000_003 + i, 640)[0])[:, :, ::-1].copy() for i in range(3)]
    return [*shapes, shapes[0][100:500].copy(), shapes[1][:, 170:470].copy(), read_image(PHOTO)]


@pytest.fixture(scope="module")
def outputs(models, images):
    """ONNX Runtime outputs of the decoded and the NMS model on the letterboxed images."""
    from fyexport.data.images import prepare
    from fyexport.onnx.facts import cpu_session

    x = np.stack([prepare(img, (SIZE, SIZE)).tensor for img in images])
    decoded = cpu_session(models / "model.onnx").run(None, {"images": x})[0]
    sess = cpu_session(models / "nms.onnx")
    nms = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))
    return decoded, nms


def _rows(text: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in text.splitlines()], np.float64).reshape(-1, 6)


def _assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {len(got)} detections, fyexport {len(want)}"
    if len(want):
        assert np.array_equal(got[:, 5], want[:, 5]), f"{what}: classes differ"
        assert np.abs(got[:, :5] - want[:, :5]).max() <= 1e-3, f"{what}: boxes or scores differ"


# -- the parser core on real outputs ------------------------------------------------------------

@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ is not installed: the parser core is C++17")
    exe = tmp_path_factory.mktemp("driver") / "driver"
    proc = subprocess.run([GXX, *WARNINGS, "-O1", f"-I{PARSER_SRC}", str(REPO / "tests/deepstream_core_driver.cpp"),
                           "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run(cmd) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_gxx
@pytest.mark.parametrize("conf,iou,max_det", [(0.25, 0.45, 300), (0.001, 0.45, 300), (0.001, 0.65, 20)])
def test_core_gives_fyexport_boxes_on_the_decoded_output(driver, outputs, tmp_path, conf, iou, max_det):
    """Decode + NMS of the parser's core (compiled with -Wall -Wextra -Wconversion -Werror) on
    ONNX Runtime outputs of real images: fyexport's non_max_suppression, box for box."""
    from fyexport.evaluation.nms import non_max_suppression

    decoded, _ = outputs
    total = 0
    for i, rows in enumerate(decoded):
        f = tmp_path / f"rows{i}.f32"
        rows.astype(np.float32).tofile(f)
        got = _rows(_run([driver, "decoded", f, rows.shape[0], rows.shape[1] - 5, conf, iou, max_det]))
        want = non_max_suppression(rows[None], conf, iou, max_det=max_det)[0]
        _assert_same(got, want, f"image {i} conf {conf} iou {iou} max_det {max_det}")
        total += len(want)
    assert total >= (20 if conf < 0.01 else 10)  # real detections were compared, not empty lists
    if max_det == 20:
        assert total == 20 * len(decoded)  # the cap was reached on every image


@needs_gxx
def test_core_reads_both_nms_exports_as_fyexport_does(driver, models, outputs, tmp_path):
    """The four NMS outputs (--nms onnx, run on ONNX Runtime) through the core: the boxes
    fyexport reads from them, which are its own NMS's boxes on the decoded output. --nms
    trt-plugin cannot run here (TensorRT's EfficientNMS_TRT): its outputs are checked to have the
    same names, types and shapes, which is all the parser relies on."""
    import onnx

    from fyexport.evaluation.nms import non_max_suppression
    from fyexport.onnx.facts import io_shapes
    from fyexport.onnx.nms import detections_from_outputs

    decoded, nms = outputs
    fy_graph = detections_from_outputs(nms)
    fy_numpy = non_max_suppression(decoded, 0.25, 0.45, max_det=100)
    topk = nms["det_boxes"].shape[1]
    for i in range(len(decoded)):
        files = []
        for name, dtype in (("num_dets", np.int32), ("det_boxes", np.float32), ("det_scores", np.float32),
                            ("det_classes", np.int32)):
            files.append(tmp_path / f"{name}{i}.bin")
            nms[name][i].astype(dtype).tofile(files[-1])
        got = _rows(_run([driver, "nms", *files, topk, decoded.shape[2] - 5, 0.25]))
        _assert_same(got, fy_graph[i], f"image {i}: fyexport's reading of the NMS outputs")
        _assert_same(got, fy_numpy[i], f"image {i}: fyexport's NMS on the decoded output")
    onnx_io = io_shapes(onnx.load(str(models / "nms.onnx")))[1]
    plugin_io = io_shapes(onnx.load(str(models / "plugin.onnx")))[1]
    assert onnx_io == plugin_io and [o[0] for o in onnx_io] == ["num_dets", "det_boxes", "det_scores", "det_classes"]


def test_core_defaults_are_fyexports():
    from fyexport.evaluation.nms import MAX_DET, MAX_NMS, MAX_WH

    core = (PARSER_SRC / "fyexport_parse_core.h").read_text()
    assert f"#define FYEXPORT_MAX_DET {MAX_DET}\n" in core and f"max_nms = {MAX_NMS};" in core
    assert f"max_wh = {float(MAX_WH)}f;" in core


# -- the config -----------------------------------------------------------------------------------

def _config(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # keys keep their case
    cp.read(path)
    return cp


def _write(source, out, **kw):
    from fyexport.deploy.deepstream import DeepStreamConfig, write_deepstream

    return write_deepstream(DeepStreamConfig(Path(source), Path(out), **kw))


def test_qdq_fp16_onnx_gives_config_labels_and_parser(calibrated, tmp_path):
    """The issue's acceptance: model.qdq.fp16.onnx of the bundled model (5 classes)."""
    from fyexport.deploy import deepstream as ds
    from fyexport.onnx.facts import read_meta

    src = calibrated / "cal" / "model.qdq.fp16.onnx"
    r = _write(src, tmp_path / "ds")
    p = _config(r.config)["property"]
    assert p["parse-bbox-func-name"] == "NvDsInferParseFyexport" and p["cluster-mode"] == "4"
    assert p["custom-lib-path"] == "nvdsinfer_custom_impl_fyexport/libnvdsinfer_custom_impl_fyexport.so"
    assert p["num-detected-classes"] == "5" and p["labelfile-path"] == "labels.txt"
    assert p["onnx-file"] == "model.qdq.fp16.onnx" and (r.out_dir / p["onnx-file"]).read_bytes() == src.read_bytes()
    # Q/DQ on DeepStream 7.1: INT8 + FP16, with a readable int8-calib-file so that nvinfer sets the INT8 flag
    assert p["network-mode"] == "3" and p["int8-calib-file"] == "calib.cache"
    assert (r.out_dir / "calib.cache").read_bytes() == (calibrated / "cal" / "calib.cache").read_bytes()
    assert p["batch-size"] == "1" and p["output-blob-names"] == "output"
    assert float(p["net-scale-factor"]) == 1 / 255 and p["offsets"] == "0;0;0" and p["model-color-format"] == "0"
    assert p["maintain-aspect-ratio"] == "1" and p["symmetric-padding"] == "1" and p["scaling-filter"] == "1"
    assert r.labels.read_text().splitlines() == list(read_meta(src).names) == ["circle", "square", "triangle", "star",
                                                                             "cross"]
    for name in ds.PARSER_SOURCES:
        assert (r.parser_dir / name).read_text() == (PARSER_SRC / name).read_text()
    make = (r.parser_dir / "Makefile").read_text()
    assert "CUDA_VER ?= 12.6" in make and "NMS_IOU ?= 0.45" in make and "MAX_DET ?= 300" in make
    assert "@" not in make.replace("$@", "")
    assert "config-file=config_infer_primary_fyexport.txt" in r.app_config.read_text()
    assert any("strongly typed" in n for n in r.notes)  # model.qdq.onnx is nvinfer's flavour: said
    again = _write(src, tmp_path / "again")  # identical inputs, identical bytes
    for f in sorted(p for p in r.out_dir.rglob("*") if p.is_file()):
        assert (again.out_dir / f.relative_to(r.out_dir)).read_bytes() == f.read_bytes(), f


def test_network_mode_batch_and_clustering_follow_the_artifact(calibrated, tmp_path):
    fp32 = _config(_write(calibrated / "model.onnx", tmp_path / "a", batch_size=4).config)
    assert fp32["property"]["network-mode"] == "0" and fp32["property"]["batch-size"] == "4"
    old = _write(calibrated / "cal" / "model.qdq.onnx", tmp_path / "b", deepstream="6.4")
    assert old.network_mode == 1 and not old.notes  # 6.4's property parser has no mode 3
    nms = _write(calibrated / "nms.onnx", tmp_path / "c", conf_thres=0.4)
    p, attrs = _config(nms.config)["property"], _config(nms.config)["class-attrs-all"]
    assert nms.layout == "nms" and p["output-blob-names"] == "num_dets;det_boxes;det_scores;det_classes"
    assert p["cluster-mode"] == "4" and attrs["topk"] == "100" and attrs["pre-cluster-threshold"] == "0.4"
    nv = _config(_write(calibrated / "model.onnx", tmp_path / "d", cluster="nvinfer", iou_thres=0.6, max_det=50).config)
    assert nv["property"]["parse-bbox-func-name"] == "NvDsInferParseFyexportCandidates"
    assert nv["property"]["cluster-mode"] == "2" and nv["class-attrs-all"]["nms-iou-threshold"] == "0.6"
    assert nv["class-attrs-all"]["topk"] == "50"
    assert _write(calibrated / "static2.onnx", tmp_path / "e").batch_size == 2


def test_build_folder_picks_the_engine_of_the_target_tensorrt_else_the_weakly_typed_qdq(calibrated, tmp_path):
    import json

    b = tmp_path / "build"
    b.mkdir()
    (b / "manifest.json").write_text("{}")
    for name in ("model.onnx", "cal/model.qdq.onnx", "cal/model.qdq.fp16.onnx", "cal/calib.cache"):
        shutil.copy(calibrated / name, b / Path(name).name)
    r = _write(b, tmp_path / "onnx")
    assert r.source == b / "model.qdq.onnx" and r.network_mode == 3 and not r.notes
    sidecar = {"precision": "int8", "tensorrt": "10.3.0.26", "img_size": [SIZE, SIZE], "names": ["a", "b"], "nc": 2,
               "input": {"name": "images", "shape": [-1, 3, SIZE, SIZE],
                         "profile": {"min": [1, 3, SIZE, SIZE], "opt": [4, 3, SIZE, SIZE], "max": [8, 3, SIZE, SIZE]}},
               "outputs": ["output"]}
    (b / "model.engine").write_bytes(b"plan bytes")
    (b / "model.engine.json").write_text(json.dumps(sidecar))
    e = _write(b, tmp_path / "engine")
    p = _config(e.config)["property"]
    assert e.source == b / "model.engine" and p["model-engine-file"] == "model.engine" and "onnx-file" not in p
    assert p["network-mode"] == "1" and p["batch-size"] == "8" and (e.out_dir / "model.engine.json").is_file()
    assert e.labels.read_text() == "a\nb\n"
    older = _write(b, tmp_path / "ds70", deepstream="7.0")  # TensorRT 8.6: the 10.3 plan cannot load there
    assert older.source == b / "model.qdq.onnx" and "TensorRT 8.6" in older.notes[0]


def _input_error(source, out, **kw) -> str:
    from fyexport.core.errors import InputError

    with pytest.raises(InputError) as e:
        _write(source, out, **kw)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_bad_input_is_one_line_naming_the_file(calibrated, tmp_path):
    import json

    assert "model.qdq.cpu.onnx: the ONNX Runtime CPU flavour" in _input_error(calibrated / "cal/model.qdq.cpu.onnx",
                                                                               tmp_path / "o")
    assert "no such" in _input_error(tmp_path / "missing.onnx", tmp_path / "o")
    assert "not a fyexport build folder" in _input_error(calibrated / "data", tmp_path / "o")
    assert "expected an ONNX model" in _input_error(PHOTO, tmp_path / "o")
    assert "static batch of 2" in _input_error(calibrated / "static2.onnx", tmp_path / "o", batch_size=4)
    assert "`deepstream` must be one of" in _input_error(calibrated / "model.onnx", tmp_path / "o", deepstream="5.1")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    assert "no m.engine.json beside it" in _input_error(engine, tmp_path / "o")
    (tmp_path / "m.engine.json").write_text(json.dumps({
        "precision": "fp16", "tensorrt": "10.3.0", "img_size": [SIZE, SIZE], "names": ["a"], "outputs": ["output"],
        "input": {"shape": [-1, 3, SIZE, SIZE], "profile": {"min": [2, 3, SIZE, SIZE], "max": [8, 3, SIZE, SIZE]}}}))
    assert "profile starts at batch 2" in _input_error(engine, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before anything was written


# -- against the real DeepStream headers --------------------------------------------------------

DS_TOOLCHAIN = {"6.4": ("8.6", "12.2"), "7.0": ("8.6", "12.2"), "7.1": ("10.3", "12.6")}  # DeepStream READMEs
SYSTEM_TRT = (Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"), Path("/usr/include"))
SYSTEM_CUDA = (Path("/usr/local/cuda/include"),)


@dataclass(frozen=True)
class HeaderSet:
    version: str
    ds: Path
    trt: Path | None
    cuda: Path | None


def _headers_root(var: str, name: str) -> Path:
    return Path(os.environ.get(var) or REPO.parent / name)


def _find(root: Path, version: str | None, marker: str, system) -> Path | None:
    """The folder with ``marker``: ``root`` itself, its subfolder for ``version``, or a system one."""
    if (root / marker).is_file():
        return root
    subs = sorted(p for p in root.glob(f"{version}*") if (p / marker).is_file()) if version and root.is_dir() else []
    return subs[-1] if subs else next((s for s in system if (s / marker).is_file()), None)


def _ds_version(folder: Path) -> str:
    text = (folder / "nvds_version.h").read_text() if (folder / "nvds_version.h").is_file() else ""
    nums = [re.search(rf"NVDS_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR")]
    return ".".join(n.group(1) for n in nums) if all(nums) else folder.name


def header_sets() -> list:
    root = _headers_root("FYEXPORT_DS_HEADERS", ".ds-headers")
    if (root / "nvdsinfer_custom_impl.h").is_file():
        found = [root]
    else:
        found = sorted(p for p in root.glob("*") if (p / "nvdsinfer_custom_impl.h").is_file()) if root.is_dir() else []
    sets = []
    for ds in found:
        version = _ds_version(ds)
        trt_v, cuda_v = DS_TOOLCHAIN.get(version[:3], (None, None))
        sets.append(HeaderSet(version, ds, _find(_headers_root("FYEXPORT_TRT_HEADERS", ".trt-headers"), trt_v,
                                                 "NvInfer.h", SYSTEM_TRT),
                              _find(_headers_root("FYEXPORT_CUDA_HEADERS", ".cuda-headers"), cuda_v,
                                    "cuda_runtime_api.h", SYSTEM_CUDA)))
    return sets


def _header_params():
    sets = header_sets()
    if not sets:
        where = _headers_root("FYEXPORT_DS_HEADERS", ".ds-headers")
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"no DeepStream headers (nvdsinfer_custom_impl.h) at {where}: NVIDIA's, never in this repository; "
                   "set FYEXPORT_DS_HEADERS to a folder of them (one subfolder per release)"))]
    return [pytest.param(s, id=f"deepstream-{s.version}") for s in sets]


def _need_toolchain(hs: HeaderSet) -> None:
    if GXX is None or MAKE is None:
        pytest.skip("g++ and make are needed to build the parser")
    missing = [what for what, p in (("TensorRT (NvInfer.h; set FYEXPORT_TRT_HEADERS)", hs.trt),
                                    ("CUDA (cuda_runtime_api.h; set FYEXPORT_CUDA_HEADERS)", hs.cuda)) if p is None]
    if missing:
        pytest.skip(f"DeepStream {hs.version}: nvdsinfer_custom_impl.h includes headers not found here: "
                    f"{', '.join(missing)}")


def _includes(hs: HeaderSet) -> list:
    return [f"-isystem{hs.ds}", f"-isystem{hs.trt}", f"-isystem{hs.cuda}"]


def _call_parser(harness, lib, func, layers, conf=0.25, nc=5) -> np.ndarray:
    specs = [f"{name}:{kind}:{'x'.join(map(str, arr.shape))}:{path}" for name, kind, arr, path in layers]
    for _, kind, arr, path in layers:
        arr.astype(np.int32 if kind == "i32" else np.float32).tofile(path)
    out = _run([harness, lib, func, SIZE, SIZE, nc, conf, *specs])
    rows = _rows(out)  # left top width height confidence class
    return np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4], rows[:, 4:]], 1)


def _clipped(dets: np.ndarray) -> np.ndarray:
    d = np.array(dets, np.float64).reshape(-1, 6)
    d[:, :4] = d[:, :4].clip(0, SIZE)
    return d


@pytest.mark.parametrize("hs", _header_params())
def test_parser_builds_with_its_makefile_and_runs_as_nvinfer_calls_it(hs, models, outputs, tmp_path):
    """The written parser folder builds with its own Makefile against DeepStream's
    nvdsinfer_custom_impl.h (and the TensorRT and CUDA headers it includes) with -Wall -Wextra
    -Wconversion -Werror; the library is then loaded and called through the header's
    NvDsInferParseCustomFunc, one image at a time with that image's layers as nvinfer passes
    them, on the real outputs: fyexport's boxes (clipped to the network input)."""
    from fyexport.evaluation.nms import non_max_suppression
    from fyexport.onnx.nms import detections_from_outputs

    _need_toolchain(hs)
    r = _write(models / "model.onnx", tmp_path / "ds", deepstream=hs.version if hs.version in DS_TOOLCHAIN else "7.1")
    proc = subprocess.run([MAKE, "-C", str(r.parser_dir), f"DS_INCLUDE={hs.ds}", f"TRT_INCLUDE={hs.trt}",
                           f"CUDA_INCLUDE={hs.cuda}", "CXXFLAGS_EXTRA=-Werror -O0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = r.parser_dir / "libnvdsinfer_custom_impl_fyexport.so"
    harness = tmp_path / "harness"
    proc = subprocess.run([GXX, *WARNINGS, *_includes(hs), str(REPO / "tests/deepstream_nvinfer_harness.cpp"), "-o",
                           str(harness), "-ldl"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    decoded, nms = outputs
    want_dec = non_max_suppression(decoded, 0.25, 0.45)
    want_nms = detections_from_outputs(nms)
    for i in range(len(decoded)):
        got = _call_parser(harness, lib, "NvDsInferParseFyexport", [("output", "f32", decoded[i], tmp_path / "o.bin")])
        _assert_same(got, _clipped(want_dec[i]), f"DeepStream {hs.version}, image {i}, decoded")
        layers = [(n, "i32" if n in ("num_dets", "det_classes") else "f32", nms[n][i], tmp_path / f"{n}.bin")
                  for n in ("num_dets", "det_boxes", "det_scores", "det_classes")]
        got = _call_parser(harness, lib, "NvDsInferParseFyexport", layers)
        _assert_same(got, _clipped(want_nms[i]), f"DeepStream {hs.version}, image {i}, NMS outputs")
    cand = _call_parser(harness, lib, "NvDsInferParseFyexportCandidates",
                        [("output", "f32", decoded[0], tmp_path / "o.bin")])
    assert len(cand) > len(want_dec[0]) and cand[:, 4].min() > 0.25  # thresholded, not clustered
    bad = subprocess.run([str(harness), str(lib), "NvDsInferParseFyexport", str(SIZE), str(SIZE), "3", "0.25",
                          f"output:f32:{decoded.shape[1]}x{decoded.shape[2]}:{tmp_path / 'o.bin'}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "set num-detected-classes=5" in bad.stderr  # a wrong class count is refused


@pytest.mark.parametrize("hs", _header_params())
def test_check_macro_refuses_a_wrong_prototype(hs, tmp_path):
    """CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE, used after both entry points, is a real check with
    these headers: a parse function of the wrong type does not compile."""
    _need_toolchain(hs)
    src = tmp_path / "wrong.cpp"
    src.write_text('#include "nvdsinfer_custom_impl.h"\n'
                   'extern "C" bool Wrong(std::vector<NvDsInferLayerInfo> const&, NvDsInferNetworkInfo const&,\n'
                   '                      std::vector<NvDsInferObjectDetectionInfo>&) { return true; }\n'
                   "CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(Wrong);\n")
    proc = subprocess.run([GXX, "-std=c++17", *_includes(hs), "-fsyntax-only", str(src)], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "Wrong" in proc.stderr
    assert "CHECK_CUSTOM_PARSE_FUNC_PROTOTYPE(NvDsInferParseFyexport);" in \
        (PARSER_SRC / "nvdsparsebbox_fyexport.cpp").read_text()


@pytest.mark.parametrize("hs", _header_params())
def test_every_config_key_is_one_nvinfer_knows(hs, calibrated, tmp_path):
    """Each key the configs set is a CONFIG_GROUP_* key of that release's gst-nvinfer property
    parser (gstnvinfer_property_parser.h, beside the headers); values it range-checks too."""
    parser_h = hs.ds / "gstnvinfer_property_parser.h"
    if not parser_h.is_file():
        pytest.skip(f"{parser_h} not found: gst-nvinfer's property parser header lists the keys")
    known = set(re.findall(r'#define CONFIG_GROUP_\w+\s+"([^"]+)"', parser_h.read_text()))
    version = hs.version if hs.version in DS_TOOLCHAIN else "7.1"
    for i, (src, kw) in enumerate([(calibrated / "cal/model.qdq.onnx", {}), (calibrated / "nms.onnx", {}),
                                   (calibrated / "model.onnx", {"cluster": "nvinfer"})]):
        cp = _config(_write(src, tmp_path / str(i), deepstream=version, **kw).config)
        assert cp.sections() == ["property", "class-attrs-all"]
        keys = set(cp["property"]) | set(cp["class-attrs-all"])
        assert keys <= known, f"DeepStream {hs.version} does not know {sorted(keys - known)}"
        assert int(cp["property"]["network-mode"]) <= (3 if version != "6.4" else 2)


# -- preprocessing: nvinfer's (as its source does it) against fyexport's letterbox --------------

def nvinfer_geometry(frame_hw, net_hw) -> tuple:
    """(left, top, width, height) of the resized frame inside the network input, as gst-nvinfer's
    get_converted_buffer computes it with maintain-aspect-ratio=1 and symmetric-padding=1: the
    source rectangle rounded down to even sizes, the other side truncated, the padding split
    with the odd pixel at the right/bottom. Also the even source size."""
    sh, sw = frame_hw[0] // 2 * 2, frame_hw[1] // 2 * 2  # GST_ROUND_DOWN_2
    net_h, net_w = net_hw
    hdest = net_w * sh / sw
    dw, dh = (net_w, int(hdest)) if hdest <= net_h else (int(net_h * sw / sh), net_h)
    return (net_w - dw) // 2, (net_h - dh) // 2, dw, dh, (sh, sw)


def bilinear(src: np.ndarray, dw: int, dh: int) -> np.ndarray:
    """Bilinear resize with pixel centres at +0.5 and edges clamped (the convention of NPP's and
    CUDA's linear filtering, and of cv2's INTER_LINEAR), in floating point, rounded to uint8."""
    def axis(n_out: int, n_in: int):
        s = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), s - i0

    y0, y1, fy = axis(dh, src.shape[0])
    x0, x1, fx = axis(dw, src.shape[1])
    a = src.astype(np.float64)
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return np.floor(top * (1 - fy) + bottom * fy + 0.5).astype(np.uint8)


def nvinfer_input(frame_bgr: np.ndarray, net_hw, prop) -> tuple[np.ndarray, tuple]:
    """The network input nvinfer makes of a decoded frame with the config's [property]: the
    frame converted to RGB (model-color-format=0), the surface cleared to 0 and the resized frame
    placed inside it, then y = net-scale-factor * (x - offsets) per channel in float32
    (nvdsinfer_conversion.cu), planar."""
    assert prop["model-color-format"] == "0" and prop["maintain-aspect-ratio"] == "1"
    assert prop["symmetric-padding"] == "1" and prop["scaling-filter"] == "1"  # 1 = bilinear
    scale = np.float32(float(prop["net-scale-factor"]))
    offsets = np.array([float(v) for v in prop["offsets"].split(";")], np.float32)
    left, top, dw, dh, (sh, sw) = nvinfer_geometry(frame_bgr.shape[:2], net_hw)
    surface = np.zeros((*net_hw, 3), np.uint8)
    surface[top:top + dh, left:left + dw] = bilinear(frame_bgr[:sh, :sw, ::-1], dw, dh)
    y = scale * (surface.astype(np.float32) - offsets)
    return np.ascontiguousarray(y.transpose(2, 0, 1)), (left, top, dw, dh)


def test_nvinfer_preprocessing_matches_the_letterbox_within_rounding(models, images, tmp_path):
    """On real pictures whose even size gives nvinfer and fyexport the same geometry: the same
    tensor inside the picture within one grey level (cv2 rounds its bilinear weights to 11 bits),
    and exactly 0 against fyexport's 114/255 in the padding; scale and offsets to the ulp."""
    from fyexport.data.images import PAD_VALUE, letterbox_geometry, prepare

    prop = _config(_write(models / "model.onnx", tmp_path / "ds").config)["property"]
    checked = 0
    for img in images:  # 640x640, 400x640, 640x300 shapes pictures and the 600x512 photo
        (rw, _), (pw, ph), (nw, nh) = letterbox_geometry(img.shape[:2], (SIZE, SIZE))
        fy = prepare(img, (SIZE, SIZE)).tensor
        ds, (left, top, dw, dh) = nvinfer_input(img, (SIZE, SIZE), prop)
        assert (left, top, dw, dh) == (int(round(pw - 0.1)), int(round(ph - 0.1)), nw, nh), img.shape
        inside = np.zeros((SIZE, SIZE), bool)
        inside[top:top + dh, left:left + dw] = True
        diff = np.abs(ds - fy)[:, inside]
        assert diff.max() <= 1 / 255 + 1e-6 and diff.mean() < 0.2 / 255, img.shape
        assert np.all(ds[:, ~inside] == 0) and np.all(fy[:, ~inside] == np.float32(PAD_VALUE) / np.float32(255))
        checked += int(inside.sum() < SIZE * SIZE)
    assert checked >= 3  # pictures with padding were among them
    v = np.arange(256, dtype=np.float32)
    assert np.abs(np.float32(float(prop["net-scale-factor"])) * v - v / np.float32(255)).max() <= 6e-8


def test_where_nvinfer_and_the_letterbox_differ_in_geometry():
    """The documented differences, over frame sizes from 100 to 2000 px into 640x640. Even
    frames (every decoded video frame: 4:2:0 needs even sizes): nvinfer truncates the resized
    side where fyexport rounds it, so the picture is at most 1 px smaller and starts at most 1 px
    higher or more to the left. Odd frames: nvinfer first drops the last column or row, which
    changes the aspect ratio: the other side then differs by up to 640 / frame side + 2 px."""
    from fyexport.data.images import letterbox_geometry

    worst = {0: 0, 1: 0}
    same = 0
    for h in range(100, 2001, 17):
        for w in range(100, 2001, 23):
            left, top, dw, dh, _ = nvinfer_geometry((h, w), (640, 640))
            _, (pw, ph), (nw, nh) = letterbox_geometry((h, w), (640, 640))
            d = (nw - dw, nh - dh, int(round(pw - 0.1)) - left, int(round(ph - 0.1)) - top)
            odd = (h % 2) | (w % 2)
            bound = 1 if not odd else 640 / min(h, w) + 2
            assert max(map(abs, d)) <= bound, (h, w, d)
            worst[odd] = max(worst[odd], max(map(abs, d)))
            same += d == (0, 0, 0, 0)
    assert worst[0] == 1 and worst[1] > 1 and same > 500  # both differences exist; agreement is the rule
    assert nvinfer_geometry((426, 640), (256, 256))[3] == 170  # floor(170.4); fyexport round(170.4) = 170 too
    assert nvinfer_geometry((428, 640), (256, 256))[3] == 171  # floor(171.2) = fyexport's 171
    assert nvinfer_geometry((1080, 1920), (640, 640))[:4] == (0, 140, 640, 360)  # a 1080p frame: 140 rows of pad


def test_the_command_writes_the_config_or_refuses_in_one_line(calibrated, tmp_path):
    """`fyexport deepstream model.qdq.fp16.onnx -o ds` (the issue's acceptance) through the CLI;
    the CPU flavour and a bad value are one line, exit 2, naming what the user typed."""
    out = tmp_path / "ds"
    proc = run_cli("deepstream", calibrated / "cal/model.qdq.fp16.onnx", "-o", out)
    assert proc.returncode == 0, proc.stderr
    p = _config(out / "config_infer_primary_fyexport.txt")["property"]
    assert p["parse-bbox-func-name"] == "NvDsInferParseFyexport" and p["num-detected-classes"] == "5"
    assert p["custom-lib-path"].startswith("nvdsinfer_custom_impl_fyexport/") and p["labelfile-path"] == "labels.txt"
    assert (out / "labels.txt").is_file()
    assert (out / "nvdsinfer_custom_impl_fyexport/nvdsparsebbox_fyexport.cpp").is_file()
    for args, says in (([calibrated / "cal/model.qdq.cpu.onnx", "-o", tmp_path / "o1"], "the ONNX Runtime CPU flavour"),
                       ([calibrated / "cal/model.qdq.onnx", "-o", tmp_path / "o2", "--max-det", "0"],
                        "--max-det must be >= 1")):
        proc = run_cli("deepstream", *args)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
