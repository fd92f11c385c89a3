"""Real-world inputs (issue 18): phone photos, segment labels, the Ultralytics and official
YOLOv7 data-set layouts, end-to-end NMS exports, odd Detector inputs, usage errors, full
disks and unwritable outputs, awkward calibration folders, concurrent and failed builds,
and byte-identical artifacts.  Each test names the item it covers."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTO, TINY, run_cli

SIZE = 320  # eval / Detector size: small enough for a CPU, large enough for the shapes to be found
BUILD = ["--prune", "0", "--img-size", "160", "--no-bench", "--num-images", "8", "--method", "entropy",
         "--bias-correction", "0", "--max-map-drop", "100"]


def _cli(capsys, *args) -> tuple[int, str]:
    """``fyexport ARGS`` in this process (fast: the model code is imported already): (exit code, stderr)."""
    from fyexport.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "unexpected" not in err, err
    return lines[0]


def _evaluate(model, data, **kw):
    from fyexport.evaluation.metrics import evaluate
    from fyexport.runners import open_runner

    with open_runner(model if not isinstance(model, Path) else str(model), img_size=SIZE) as r:
        return evaluate(r, data, **kw)


def _copy_split(src_root: Path, dst_root: Path, names: list, split: str = "val", images: str = "images",
                labels: str = "labels") -> None:
    (dst_root / images / split).mkdir(parents=True, exist_ok=True)
    (dst_root / labels / split).mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(src_root / "images" / "val" / n, dst_root / images / split / n)
        shutil.copy(src_root / "labels" / "val" / Path(n).with_suffix(".txt"),
                    dst_root / labels / split / Path(n).with_suffix(".txt"))


def _val_names(shapes_small, n=None) -> list:
    names = sorted(p.name for p in (shapes_small.parent / "images/val").glob("*.jpg"))
    return names[:n] if n else names


def _yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\nnc: 5\nnames: [circle, square, triangle, star, cross]\n")
    return path


def _save_rotated(src: Path, dst: Path, orientation: int = 6) -> None:
    """``src`` stored as a phone stores a portrait photo: pixels on their side and the EXIF
    orientation that turns them upright (6: rotate 90 degrees clockwise to view)."""
    from PIL import Image

    im = Image.open(src).convert("RGB")
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.transpose(stored).save(dst, quality=95, exif=exif)


@pytest.fixture(scope="module")
def reference(shapes_small, tiny_model):
    """mAP of the tiny model on the 16 upright validation images (about .336 at 320)."""
    return _evaluate(tiny_model, shapes_small)


@pytest.fixture(scope="module")
def reference4(shapes_small, tiny_model):
    """mAP of the tiny model on the first 4 validation images: what each layout below must give."""
    return _evaluate(tiny_model, shapes_small, max_images=4).map


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model):
    """The tiny model exported at 320: plain, with ONNX NMS, with EfficientNMS_TRT."""
    from fyexport.onnx.export import export_onnx
    from fyexport.onnx.nms import NmsConfig

    d = tmp_path_factory.mktemp("exports")
    out = {"plain": d / "plain.onnx", "nms": d / "nms.onnx", "trt": d / "trt.onnx"}
    export_onnx(tiny_model, out["plain"], img_size=SIZE, simplify=False)
    export_onnx(tiny_model, out["nms"], img_size=SIZE, simplify=False, nms=NmsConfig("onnx"))
    export_onnx(tiny_model, out["trt"], img_size=SIZE, simplify=False, nms=NmsConfig("trt-plugin"))
    return out


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory, tiny_model):
    """The tiny model at 160 for calibration (simplified: the fp16 Q/DQ flavour fails on the raw graph)."""
    from fyexport.onnx.export import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("small") / "small.onnx", img_size=160).path


# -- 1: EXIF orientation ---------------------------------------------------------------------------

def test_1_exif_rotated_validation_set_scores_like_upright(shapes_small, tiny_model, reference, tmp_path):
    """Old code decoded with IMREAD_UNCHANGED, ignoring the orientation tag: mAP .0003."""
    src = shapes_small.parent
    (tmp_path / "images/val").mkdir(parents=True)
    shutil.copytree(src / "labels/val", tmp_path / "labels/val")  # labels describe the upright pictures
    for p in sorted((src / "images/val").glob("*.jpg")):
        _save_rotated(p, tmp_path / "images/val" / p.name, 6)
    res = _evaluate(tiny_model, _yaml(tmp_path / "rot.yaml", "val: images/val"))
    assert res.images == reference.images == 16
    assert abs(res.map - reference.map) < 0.005, (res.map, reference.map)


def test_1_detector_boxes_come_back_in_the_upright_frame(shapes_small, tmp_path):
    """Old code ran on the sensor frame: the boxes came back sideways (and the image size swapped)."""
    from PIL import Image

    from fyexport import Detector

    up = shapes_small.parent / "images/val/val_000000.jpg"
    for o in (6, 8, 3):
        _save_rotated(up, tmp_path / f"o{o}.jpg", o)
    with Detector(TINY, img_size=SIZE) as det:
        ref = det(up)
        assert len(ref) >= 3
        for o in (6, 8, 3):
            for src in (tmp_path / f"o{o}.jpg", Image.open(tmp_path / f"o{o}.jpg")):
                got = det(src)
                assert len(got) == len(ref), (o, src)
                assert np.abs(got[np.argsort(-got[:, 4])][:, :4] - ref[np.argsort(-ref[:, 4])][:, :4]).max() < 4


def test_1_every_command_reads_images_through_read_image(shapes_small, tmp_path):
    """Calibration, eval, recovery and the Detector decode through data/images.read_image only,
    so they all apply the orientation; recovery's samples come back upright."""
    from fyexport.recover.data import letterboxed_sample

    root = Path(__file__).resolve().parents[1] / "fyexport"
    for f in root.rglob("*.py"):
        if f.relative_to(root).as_posix() == "data/images.py":
            continue
        text = f.read_text()
        assert "imdecode(" not in text and "imread(" not in text and "Image.open(" not in text, f
    up = shapes_small.parent / "images/val/val_000001.jpg"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _save_rotated(up, tmp_path / "images/r.jpg", 6)
    shutil.copy(shapes_small.parent / "labels/val/val_000001.txt", tmp_path / "labels/r.txt")
    a, hw_a, lab_a = letterboxed_sample(up, (160, 160), 5)
    b, hw_b, lab_b = letterboxed_sample(tmp_path / "images/r.jpg", (160, 160), 5)
    assert hw_a == hw_b and np.allclose(lab_a, lab_b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # the same picture, up to JPEG re-encoding


# -- 2: segment (polygon) labels ---------------------------------------------------------------------

def _polygon(row) -> str:
    c, cx, cy, w, h = row
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    pts = [(x1 + .3 * w, y1), (x1 + .7 * w, y1), (x2, y1 + .3 * h), (x2, y1 + .7 * h), (x1 + .7 * w, y2),
           (x1 + .3 * w, y2), (x1, y1 + .7 * h), (x1, y1 + .3 * h)]
    return f"{int(c)} " + " ".join(f"{v:.6f}" for p in pts for v in p)


def test_2_polygon_labels_give_the_same_map_as_their_boxes(shapes_small, tiny_model, reference, tmp_path):
    """Old code read the first five numbers of a polygon row as a box: mAP 0.0000."""
    from fyexport.data.labels import read_labels

    src = shapes_small.parent
    shutil.copytree(src / "images/val", tmp_path / "images/val")
    (tmp_path / "labels/val").mkdir(parents=True)
    for i, lp in enumerate(sorted((src / "labels/val").glob("*.txt"))):
        rows = [[float(v) for v in ln.split()] for ln in lp.read_text().splitlines() if ln.strip()]
        # every other file all polygons, the rest mixed (polygons and boxes in one file)
        lines = [_polygon(r) if (i % 2 == 0 or j % 2 == 0) else " ".join(f"{v:.6f}" for v in r)
                 for j, r in enumerate(rows)]
        (tmp_path / "labels/val" / lp.name).write_text("\n".join(lines) + "\n")
        assert np.allclose(read_labels(tmp_path / "images/val" / lp.with_suffix(".jpg").name),
                           read_labels(src / "images/val" / lp.with_suffix(".jpg").name), atol=1e-5)
    res = _evaluate(tiny_model, _yaml(tmp_path / "seg.yaml", "val: images/val"))
    assert abs(res.map - reference.map) < 1e-4 and abs(res.map50 - reference.map50) < 1e-4


@pytest.mark.parametrize("row, why", [("0 0.5 0.5 0.2", "has 4 numbers"), ("0 0.5 0.5 0.2 0.2 0.9", "has 6 numbers"),
                                      ("1 320 240 64 48", "outside 0..1"), ("0.5 0.5 0.5 0.2 0.2", "class 0.5"),
                                      ("0 0.5 nan 0.2 0.2", "not a finite"), ("a b c d e", "not numbers")])
def test_2_label_rows_that_are_neither_boxes_nor_polygons_are_refused(shapes_small, tiny_model, tmp_path, capsys,
                                                                       row, why):
    """Old code silently dropped short rows, misread 6-number rows and took pixel
    coordinates for normalised ones (a wrong mAP with exit 0)."""
    _copy_split(shapes_small.parent, tmp_path, _val_names(shapes_small, 2))
    bad = sorted((tmp_path / "labels/val").glob("*.txt"))[1]
    bad.write_text(bad.read_text() + row + "\n")
    rc, err = _cli(capsys, "eval", TINY, "--data", _yaml(tmp_path / "d.yaml", "val: images/val"), "--img-size", 160)
    line = _one_line_error(err)
    assert rc == 2 and str(bad) in line and why in line, err


# -- 3: data-yaml layouts ------------------------------------------------------------------------

def test_3_ultralytics_layout_with_path_and_list_splits(shapes_small, tiny_model, reference4, tmp_path, monkeypatch):
    """Old code applied path: relative to the yaml's folder and refused list-valued splits."""
    names = _val_names(shapes_small, 4)
    ds = tmp_path / "datasets/shp"
    _copy_split(shapes_small.parent, ds, names[:2], "part_a")
    _copy_split(shapes_small.parent, ds, names[2:], "part_b")
    _copy_split(shapes_small.parent, ds, names, "val")
    ref = reference4
    body = "train: [images/part_a, images/part_b]\nval: images/val\n"
    from_root = _yaml(tmp_path / "cfg/from_root.yaml", "path: datasets/shp\n" + body)  # relative to the cwd
    from_yaml = _yaml(tmp_path / "cfg/from_yaml.yaml", "path: ../datasets/shp\n" + body)  # or to the yaml
    from fyexport.data.labels import load_data_yaml

    monkeypatch.chdir(tmp_path)
    assert len(load_data_yaml("cfg/from_root.yaml").images("train")) == 4
    assert abs(_evaluate(tiny_model, from_root).map - ref) < 1e-6
    (tmp_path / "x/y").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "x/y")  # anywhere: a path: relative to the yaml still resolves
    assert abs(_evaluate(tiny_model, from_yaml).map - ref) < 1e-6


def test_3_official_yolov7_layout_run_from_its_root(shapes_small, tiny_model, reference4, tmp_path, monkeypatch):
    """data/x.yaml with train: ./shp/train.txt relative to the repository root: old code looked
    in data/data/... and failed from every directory."""
    names = _val_names(shapes_small, 4)
    root = tmp_path / "yolov7"
    _copy_split(shapes_small.parent, root / "shp", names, "val2017")
    (root / "shp/val2017.txt").write_text("".join(f"./images/val2017/{n}\n" for n in names))
    _yaml(root / "data/shp.yaml", "train: ./shp/val2017.txt\nval: ./shp/val2017.txt\n")
    ref = reference4
    monkeypatch.chdir(root)
    assert abs(_evaluate(tiny_model, "data/shp.yaml").map - ref) < 1e-6


def test_3_plain_yaml_beside_its_folders_from_anywhere(shapes_small, tiny_model, reference4, tmp_path, monkeypatch):
    """A relative yaml path (dir/x.yaml) with relative splits: old code applied the folder twice."""
    names = _val_names(shapes_small, 4)
    _copy_split(shapes_small.parent, tmp_path / "plain", names, "val")
    _yaml(tmp_path / "plain/shp.yaml", "val: images/val\n")
    ref = reference4
    monkeypatch.chdir(tmp_path)
    assert abs(_evaluate(tiny_model, "plain/shp.yaml").map - ref) < 1e-6
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert abs(_evaluate(tiny_model, "../plain/shp.yaml").map - ref) < 1e-6


def test_3_a_split_not_found_names_every_place_tried(tmp_path, monkeypatch, capsys):
    """Old code named one (wrong) place."""
    _yaml(tmp_path / "data/x.yaml", "val: ./coco/val2017.txt\n")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    rc, err = _cli(capsys, "eval", TINY, "--data", "../data/x.yaml", "--img-size", 160)
    line = _one_line_error(err)
    assert rc == 2 and str(tmp_path / "data/coco/val2017.txt") in line and str(tmp_path / "run/coco/val2017.txt") \
        in line, line


def test_3_a_split_without_any_label_file_is_refused(shapes_small, tmp_path, capsys):
    """Old code scored an unlabelled folder as mAP 0 with exit 0."""
    shutil.copytree(shapes_small.parent / "images/val", tmp_path / "images/val")
    rc, err = _cli(capsys, "eval", TINY, "--data", _yaml(tmp_path / "d.yaml", "val: images/val"), "--img-size", 160)
    assert rc == 2 and "no label file" in _one_line_error(err)


# -- 5: end-to-end NMS exports ----------------------------------------------------------------------

def test_5_eval_of_an_nms_export_goes_through_its_nms_outputs(exports, shapes_small, capsys):
    """Old code: unexpected IndexError: index 4 is out of bounds."""
    plain = _evaluate(exports["plain"], shapes_small)
    res = _evaluate(exports["nms"], shapes_small)
    err = capsys.readouterr().err
    assert "NMS in its graph" in err and "bound the mAP" in err and "score > 0.25" in err
    assert 0.5 * plain.map < res.map <= plain.map + 1e-6 and res.settings["graph_nms"]["conf_thres"] == 0.25


def test_5_detector_on_an_nms_export_matches_the_project_nms(exports, shapes_small):
    from fyexport import Detector

    imgs = [shapes_small.parent / f"images/val/val_00000{i}.jpg" for i in range(3)]
    with Detector(exports["plain"], conf=0.25, iou=0.45) as a, Detector(exports["nms"], conf=0.25) as b:
        for x, y in zip(a(imgs), b(imgs)):
            assert len(x) == len(y) > 0
            x, y = x[np.argsort(-x[:, 4])], y[np.argsort(-y[:, 4])]
            assert np.allclose(x[:, :5], y[:, :5], atol=1e-2) and np.array_equal(x[:, 5], y[:, 5])


def test_5_an_efficientnms_model_is_refused_on_onnxruntime(exports, shapes_small, capsys):
    """Old code: a raw onnxruntime NOT_IMPLEMENTED error (eval, bench and the Detector)."""
    from fyexport import Detector
    from fyexport.core.errors import InputError

    with pytest.raises(InputError, match="TensorRT only"):
        Detector(exports["trt"])
    rc, err = _cli(capsys, "eval", exports["trt"], "--data", shapes_small)
    line = _one_line_error(err)
    assert rc == 2 and str(exports["trt"]) in line and "EfficientNMS_TRT" in line and "TensorRT only" in line


def test_5_bench_with_data_on_an_nms_export(exports, shapes_small, tmp_path):
    """Old code: unexpected IndexError in the mAP column and in the end-to-end timing."""
    from fyexport.bench.plan import BenchConfig
    from fyexport.bench.run import run_bench

    rep = run_bench([str(exports["nms"])], str(TINY), BenchConfig(
        runtime="onnxruntime", device="cpu", batches=(1,), img_size=SIZE, warmup=0.02, duration=0.05,
        data=str(shapes_small), max_eval_images=4, agreement_images=0, workdir=str(tmp_path)))
    assert any(r.model.startswith(str(exports["nms"])) and r.artifact == exports["nms"].name for r in rep.rows)


# -- 6: the Detector's inputs ------------------------------------------------------------------------

def test_6_detector_takes_pil_images_empty_lists_grayscale_and_refuses_tiny_images(shapes_small):
    """Old code: TypeError for a PIL image, ValueError for [], a refusal for HxW, a
    detection on a 1x1 image."""
    from PIL import Image

    from fyexport import Detector
    from fyexport.core.errors import InputError

    path = shapes_small.parent / "images/val/val_000002.jpg"
    with Detector(TINY, img_size=SIZE) as det:
        ref = det(path)
        assert np.allclose(det(Image.open(path)), ref, atol=1) and len(ref)
        assert det([]) == []
        gray = np.asarray(Image.open(path).convert("L"))
        assert np.allclose(det(gray), det(np.repeat(gray[:, :, None], 3, 2)))
        assert len(det([path, gray, Image.open(path)])) == 3
        batch = np.stack([np.asarray(Image.open(path))[:, :, ::-1]] * 2)  # N x H x W x 3
        assert len(det(batch)) == 2
        for bad, why in ((np.zeros((1, 1, 3), np.uint8), "too small"), (np.zeros((3, 64, 64), np.uint8), "CHW"),
                         (np.zeros((64, 64, 3), np.float32), "uint8"), (42, "int")):
            with pytest.raises(InputError, match=why):
                det(bad)


# -- 7: usage errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, why", [(["--max-images", "0"], "--max-images"), (["--conf", "5"], "--conf"),
                                       (["--iou", "0"], "--iou"), (["--batch", "0"], "--batch"),
                                       (["--img-size", "100000"], "4096")])
def test_7_eval_usage_errors_exit_2_before_any_work(shapes_small, capsys, args, why):
    """Old code: exit 0 for --max-images 0 and --conf 5, a raw ValueError for --batch 0, a 120 GB
    allocation for --img-size 100000."""
    import time

    t = time.time()
    rc, err = _cli(capsys, "eval", TINY, "--data", shapes_small, *args)
    assert rc == 2 and why in _one_line_error(err) and time.time() - t < 30


# -- 8, 9: writing outputs -------------------------------------------------------------------------

def test_8_disk_full_while_writing_a_pt_is_one_line(tmp_path, monkeypatch, capsys):
    """Old code: unexpected RuntimeError: [enforce fail at inline_container.cc:672] (torch's zip
    writer), naming nothing."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full to simulate a full disk")
    real = tempfile.mkstemp

    def on_full_disk(*a, **kw):  # the temporary is a link to /dev/full: every write fails with ENOSPC
        fd, name = real(*a, **kw)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", on_full_disk)
    out = tmp_path / "pruned.pt"
    rc, err = _cli(capsys, "prune", TINY, "--ratio", "0.25", "-o", out, "--count-size", 160)
    line = _one_line_error(err)
    assert rc == 1 and f"{out}: disk full" in line and ".tmp" not in line
    assert os.listdir(tmp_path) == []


def test_8_permission_errors_name_the_output_not_the_temporary(tiny_model, tmp_path, monkeypatch, capsys):
    """Old code: '.../.x.onnx.k2j3.tmp: Permission denied', exit 1."""
    def denied(*a, dir=None, prefix="", suffix="", **kw):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}abc123{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "locked" / "x.pt"
    rc, err = _cli(capsys, "prune", TINY, "--ratio", "0.25", "-o", out, "--count-size", 160)
    line = _one_line_error(err)
    assert rc == 2 and f"{out}: cannot write here (Permission denied)" in line and ".tmp" not in line
    from fyexport.core.errors import InputError
    from fyexport.models import save

    with pytest.raises(InputError, match="x.pt: cannot write here"):
        save(tiny_model, out)


def test_9_output_naming_an_existing_directory(tiny_model, tmp_path, capsys):
    """Old code: '.../.dir.onnx.xxxx.tmp: Is a directory' after the whole export."""
    from fyexport.core.errors import InputError
    from fyexport.models import save

    (tmp_path / "x.onnx").mkdir()
    rc, err = _cli(capsys, "export", TINY, "-o", tmp_path / "x.onnx", "--img-size", 160, "--no-simplify")
    line = _one_line_error(err)
    assert rc == 2 and f"{tmp_path / 'x.onnx'}: is a directory" in line and ".tmp" not in line
    (tmp_path / "m.pt").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        save(tiny_model, tmp_path / "m.pt")
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "x.onnx"] and not os.listdir(tmp_path / "x.onnx")


# -- 10: calibration folders -----------------------------------------------------------------------

def test_10_an_unreadable_calibration_image_is_skipped_and_counted(small_onnx, shapes_small, tmp_path, monkeypatch):
    """Old code: file_list_hash's PermissionError aborted the whole calibration."""
    import builtins
    import pathlib

    from fyexport.quantize import CalibrationOptions, calibrate

    folder = tmp_path / "calib"
    shutil.copytree(shapes_small.parent / "images/train", folder)
    locked = sorted(folder.glob("*.jpg"))[3]
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the file unreadable for this process too
        real_open, real_read = builtins.open, pathlib.Path.read_bytes

        def guarded_open(f, *a, **kw):
            if isinstance(f, (str, os.PathLike)) and os.path.abspath(f) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(f))
            return real_open(f, *a, **kw)

        def guarded_read(self):
            if os.path.abspath(self) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_read(self)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(pathlib.Path, "read_bytes", guarded_read)
    res = calibrate(small_onnx, folder, tmp_path / "out", CalibrationOptions(num_images=8, bias_correction=0))
    assert res.images_used == 7 and res.images_skipped == 1
    info = json.loads((tmp_path / "out/calib.json").read_text())
    assert info["images"]["skipped_reasons"] == {"unreadable": 1}


def test_10_symlinked_subfolders_are_followed_once(shapes_small, tmp_path):
    """Old code skipped symlinked subfolders silently (os.walk without followlinks)."""
    from fyexport.data.selection import select_images

    shutil.copytree(shapes_small.parent / "images/train", tmp_path / "real")
    (tmp_path / "calib").mkdir()
    shutil.copy(shapes_small.parent / "images/val/val_000000.jpg", tmp_path / "calib/own.jpg")
    os.symlink(tmp_path / "real", tmp_path / "calib/linked")
    os.symlink(tmp_path / "real", tmp_path / "calib/linked_again")  # the same folder twice: counted once
    os.symlink(tmp_path / "calib", tmp_path / "real/loop")  # a loop back up: must end
    s = select_images(tmp_path / "calib", None)
    assert s.found == 9 and len({os.path.realpath(p) for p in s.paths}) == 9


# -- 11, 12, 13: builds -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, shapes_small):
    d = tmp_path_factory.mktemp("calib") / "calib"
    shutil.copytree(shapes_small.parent / "images/train", d)
    return d


def test_11_a_second_build_in_the_same_folder_fails_with_one_line(calib_dir, tmp_path):
    """Old code ran both builds in the folder at once, each rerunning the other's stages."""
    from fyexport.core.artifacts import folder_lock

    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "fyexport build --weights first.pt"):
        proc = run_cli("build", "--weights", TINY, "--calib", calib_dir, "-o", out, *BUILD)
    line = _one_line_error(proc.stderr)
    assert proc.returncode == 1 and "another build is running" in line and "first.pt" in line
    assert f"pid {os.getpid()}" in line and not (out / "manifest.json").exists()


def test_12_build_output_inside_the_calibration_folder_is_not_an_input(calib_dir, tmp_path):
    """Old code took the build's own bench.png for a calibration image (9 found) and so
    recalibrated on every build."""
    calib = tmp_path / "calib"
    shutil.copytree(calib_dir, calib)
    out = calib / "build"
    out.mkdir()
    shutil.copy(PHOTO, out / "bench.png")  # what an earlier build (with bench) left there
    first = run_cli("build", "--weights", TINY, "--calib", calib, "-o", out, *BUILD)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "calib.json").read_text())["images"]["found"] == 8
    again = run_cli("build", "--weights", TINY, "--calib", calib, "-o", out, *BUILD)
    assert again.returncode == 0 and "calibrate: cached" in again.stderr, again.stderr


def test_13_a_failed_build_records_failed(calib_dir, tmp_path):
    """Old code left manifest.json at "status": "running"."""
    data = _yaml(tmp_path / "three.yaml", "val: images/val").read_text().replace("nc: 5", "nc: 3")
    (tmp_path / "three.yaml").write_text(data.replace("[circle, square, triangle, star, cross]", "[a, b, c]"))
    proc = run_cli("build", "--weights", TINY, "--calib", calib_dir, "-o", tmp_path / "out", "--data",
                   tmp_path / "three.yaml", *BUILD)
    assert proc.returncode == 2 and "3 classes" in _one_line_error(proc.stderr)
    assert json.loads((tmp_path / "out/manifest.json").read_text())["status"] == "failed"


def test_13_an_interrupted_build_records_interrupted(calib_dir, tmp_path, monkeypatch):
    from fyexport.core.config import make_config
    from fyexport.pipeline.build import Build, BuildConfig, run_build

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Build, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_build(make_config(BuildConfig, {"weights": str(TINY), "calib": str(calib_dir), "out": str(tmp_path / "out"),
                                            "prune.ratio": 0.0, "img_size": 160, "calibrate.num_images": 8,
                                            "run_bench": False}), command="test")
    assert json.loads((tmp_path / "out/manifest.json").read_text())["status"] == "interrupted"


# -- 14: identical inputs, identical bytes ---------------------------------------------------------------

def test_14_a_pt_saved_in_two_folders_has_the_same_bytes(tiny_model, tmp_path):
    """Old code: torch.save named the archive's records after the random temporary file."""
    from fyexport.models import load, save
    from fyexport.models.checkpoint import read_pickle

    a, b = save(tiny_model, tmp_path / "a/m.pt"), save(tiny_model, tmp_path / "b/m.pt")
    assert a.read_bytes() == b.read_bytes()
    # a model loaded from inside the output folder records its source relative to it
    again_a, again_b = save(load(a), tmp_path / "a/n.pt"), save(load(b), tmp_path / "b/n.pt")
    assert again_a.read_bytes() == again_b.read_bytes() and read_pickle(again_a)["meta"]["source"] == "m.pt"


def test_14_onnx_and_calibration_written_in_two_folders_have_the_same_bytes(tiny_model, calib_dir, tmp_path):
    """Old code: the ONNX metadata and calib.json recorded the absolute output folder."""
    from fyexport.models import load, save
    from fyexport.onnx.export import export_onnx
    from fyexport.quantize import ARTIFACTS, CalibrationOptions, calibrate

    for d in ("a", "b"):
        save(tiny_model, tmp_path / d / "model.pt")
        export_onnx(load(tmp_path / d / "model.pt"), tmp_path / d / "model.onnx", img_size=160)
        calibrate(tmp_path / d / "model.onnx", calib_dir, tmp_path / d, CalibrationOptions(num_images=8,
                                                                                          bias_correction=0))
    for name in ("model.pt", "model.onnx", *ARTIFACTS.values()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    info = json.loads((tmp_path / "a/calib.json").read_text())
    assert info["model"]["path"] == "model.onnx" and info["images"]["folder"] == str(calib_dir)
