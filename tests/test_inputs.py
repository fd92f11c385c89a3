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
    from fyexport.pipeline.manifest import Manifest

    Manifest(out, "fyexport build ...", {}, "x").save("done")  # what an earlier build (with bench) left there
    shutil.copy(PHOTO, out / "bench.png")
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


# == round 3 (issue 27) ===============================================================================

def _thin_png(path: Path, w: int = 10000, h: int = 10) -> Path:
    """A real, decodable, very thin image: at 160 (or 416) its short side shrinks to 0 rows."""
    import cv2

    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


# -- r3 1: very thin images ------------------------------------------------------------------------

def test_r3_1_a_thin_image_is_skipped_and_counted_by_calibration(small_onnx, shapes_small, tmp_path):
    """Old code: 'unexpected error: OpenCV ... inv_scale_x > 0 in function resize', exit 1."""
    folder = tmp_path / "calib"
    shutil.copytree(shapes_small.parent / "images/train", folder)
    _thin_png(folder / "thin.png")
    _tall = _thin_png(folder / "tall.png", 10, 10000)  # the other way round too
    assert _tall.exists()
    from fyexport.quantize import CalibrationOptions, calibrate

    res = calibrate(small_onnx, folder, tmp_path / "out", CalibrationOptions(num_images=None, bias_correction=0))
    assert res.images_used == 8 and res.images_skipped == 2
    info = json.loads((tmp_path / "out/calib.json").read_text())
    assert info["images"]["skipped_reasons"] == {"too thin": 2}


def test_r3_1_thin_images_in_eval_bench_and_the_geometry(shapes_small, tiny_model, tmp_path):
    """Every reader: eval skips and counts it, bench leaves it out of the end-to-end images, and
    the one letterbox geometry refuses it with a reason (old code: a cv2.error from each)."""
    from fyexport.bench.run import _load_bench_images
    from fyexport.data.images import BadImage, letterbox, letterbox_geometry

    with pytest.raises(BadImage) as e:
        letterbox(np.full((10, 10000, 3), 128, np.uint8), 416)
    assert e.value.reason == "too thin" and "10000x10" in str(e.value)
    assert letterbox_geometry((10, 10000), 416, scale_fill=True)  # stretching has rows to show
    assert letterbox(np.full((40, 10000, 3), 128, np.uint8), 416)[0].shape == (416, 416, 3)  # 2 rows left: used

    root = tmp_path / "d"
    _copy_split(shapes_small.parent, root, _val_names(shapes_small, 4))
    _thin_png(root / "images/val/thin.png")
    (root / "labels/val/thin.txt").write_text("0 0.5 0.5 0.1 0.5\n")
    data = _yaml(root / "d.yaml", "val: images/val")
    res = _evaluate(TINY, data)
    assert res.images == 4 and res.skipped == 1
    imgs = _load_bench_images(root / "images/val", None, (SIZE, SIZE))
    assert len(imgs) == 4


def test_r3_1_the_detector_names_a_thin_image(tmp_path):
    """Old code: a raw cv2.error from fyexport.Detector(...)(np.full((8, 20000, 3), 128, np.uint8))."""
    from fyexport import Detector
    from fyexport.core.errors import InputError

    thin = _thin_png(tmp_path / "thin.png")
    with Detector(TINY, img_size=SIZE) as det:
        with pytest.raises(InputError, match=r"image 0: cannot use this image \(too thin \(20000x8"):
            det(np.full((8, 20000, 3), 128, np.uint8))
        with pytest.raises(InputError, match=f"{thin}: cannot use this image .too thin"):
            det([np.full((64, 64, 3), 128, np.uint8), thin])


# -- r3 2: PIL images in every mode give the pixels their file gives -------------------------------------

def test_r3_2_pil_images_of_every_mode_match_reading_the_file(shapes_small, tmp_path):
    """Old code: a 16-bit grayscale PIL image ("I;16") went through convert("RGB"), which clips
    its samples at 255: an all-white picture (6 boxes instead of 116)."""
    import cv2
    from PIL import Image

    from fyexport import Detector
    from fyexport.data.images import read_image
    from fyexport.detector import as_images

    src = shapes_small.parent / "images/val/val_000002.jpg"
    rgb = Image.open(src).convert("RGB")
    bgr = cv2.imread(str(src))
    noise = np.random.default_rng(0).integers(0, 256, bgr.shape[:2]).astype(np.uint16)
    gray16 = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 256 + noise  # low bytes that matter not
    files = {"I;16": tmp_path / "gray16.png", "I;16B": tmp_path / "gray16b.tif", "I": tmp_path / "int32.tif",
             "F": tmp_path / "float.tif", "CMYK": tmp_path / "cmyk.jpg", "P": tmp_path / "p.png",
             "LA": tmp_path / "la.png", "RGBA": tmp_path / "rgba.png", "RGB": tmp_path / "rgb16.png"}
    cv2.imwrite(str(files["I;16"]), gray16)
    Image.frombytes("I;16B", rgb.size, gray16.astype(">u2").tobytes()).save(files["I;16B"])
    cv2.imwrite(str(files["I"]), gray16.astype(np.int32))
    cv2.imwrite(str(files["F"]), gray16.astype(np.float32) / 65535)
    rgb.convert("CMYK").save(files["CMYK"], quality=95)
    for mode in ("P", "LA", "RGBA"):
        rgb.convert(mode).save(files[mode])
    cv2.imwrite(str(files["RGB"]), bgr.astype(np.uint16) * 257)  # 16-bit RGB
    for mode, f in files.items():
        im = Image.open(f)
        assert im.mode == mode, (f, im.mode)
        from_pil, from_path = as_images(im)[0][0], read_image(f)
        tol = 1 if mode == "CMYK" else 0  # PIL's and libjpeg's CMYK -> RGB round differently
        assert from_pil.shape == from_path.shape and np.abs(from_pil.astype(int) - from_path).max() <= tol, mode
    with Detector(TINY, img_size=SIZE, conf=0.01) as det:
        by_path, by_pil = det(files["I;16"]), det(Image.open(files["I;16"]))
    assert len(by_path) and len(by_pil) == len(by_path) and np.allclose(by_pil, by_path, atol=1e-3)


# -- r3 3: read-only output folders ----------------------------------------------------------------

def _writable(d: Path) -> bool:
    try:
        (d / ".probe").write_bytes(b"")
    except OSError:
        return False
    (d / ".probe").unlink()
    return True


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder this process cannot write in.  Mode 0555 stops a normal user; root ignores it
    (the tests run as root here), so as root the folder is made immutable (chattr +i, which
    stops root's writes with EPERM).  Where neither works, os.mkdir, os.open and open refuse
    paths below it (in-process commands only), and the test says so."""
    import builtins
    import subprocess

    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if _writable(d):
        immutable = shutil.which("chattr") is not None and subprocess.run(
            ["chattr", "+i", str(d)], capture_output=True).returncode == 0 and not _writable(d)
    if _writable(d):
        print(f"{d}: cannot be made read-only for uid {os.geteuid()}; refusing writes below it by monkeypatch")
        below = str(d) + os.sep
        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

        def denied(path):
            return os.path.abspath(path).startswith(below)

        def mkdir(path, *a, **kw):
            if denied(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *a, **kw)

        def os_open(path, flags, *a, **kw):
            if denied(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_os_open(path, flags, *a, **kw)

        def open_(f, mode="r", *a, **kw):
            if isinstance(f, (str, os.PathLike)) and denied(f) and any(c in mode for c in "wax+"):
                raise PermissionError(errno.EACCES, "Permission denied", str(f))
            return real_open(f, mode, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory, small_onnx):
    """An fp32 engine of the small model, built on the TensorRT stand-in of the newest release (for
    `triton`)."""
    import trt_stand_in as sti

    from fyexport.trt.engine import EngineConfig, build_engine

    with pytest.MonkeyPatch.context() as mp:
        sti.install(list(sti.RELEASES)[-1], monkeypatch=mp)
        return build_engine(small_onnx, tmp_path_factory.mktemp("engine") / "m.engine",
                            EngineConfig(precision="fp32")).engine


def BENCH_FAST(d):  # noqa: N802 - a command line, like the WRITERS
    return ["bench", d["onnx"], "--baseline", TINY, "--img-size", 160, "--batch", 1, "--warmup", 0, "--duration", 0.05,
            "--agreement-images", 0]


WRITERS = {
    "export": lambda ro, d: ["export", TINY, "-o", ro / "x.onnx", "--img-size", 160, "--no-simplify"],
    "prune": lambda ro, d: ["prune", TINY, "--ratio", "0.25", "-o", ro / "p.pt", "--count-size", 160],
    "recover": lambda ro, d: ["recover", TINY, "--teacher", TINY, "--images", d["calib"], "-o", ro / "r.pt",
                              "--img-size", 160, "--max-steps", 1],
    "calibrate": lambda ro, d: ["calibrate", d["onnx"], "--images", d["calib"], "-o", ro / "int8",
                                "--num-images", 8],
    "engine": lambda ro, d: ["engine", d["onnx"], "-o", ro / "m.engine"],
    "triton": lambda ro, d: ["triton", d["engine"], "--repo", ro / "repo"],
    "bench --json": lambda ro, d: [*BENCH_FAST(d), "--json", ro / "b.json"],
    "bench --plot": lambda ro, d: [*BENCH_FAST(d), "--plot", ro / "b.png"],
    "build": lambda ro, d: ["build", "--weights", TINY, "--calib", d["calib"], "-o", ro / "b", *BUILD],
    "demo": lambda ro, d: ["demo", "-o", ro / "demo"],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_r3_3_every_command_that_writes_says_one_line_for_a_read_only_folder(command, read_only, small_onnx,
                                                                              small_engine, calib_dir, capsys):
    """Old code: calibrate, build, triton and demo created the folder with a bare mkdir:
    'error: ro/b: Permission denied', exit 1; engine built first, then failed."""
    args = WRITERS[command](read_only, {"onnx": small_onnx, "calib": calib_dir, "engine": small_engine})
    rc, err = _cli(capsys, *args)
    line = _one_line_error(err)
    assert rc == 2 and "cannot write here" in line and "permissions" in line and str(read_only) in line, line
    assert ".tmp" not in line and os.listdir(read_only) == []


# -- r3 4: a build never deletes or replaces a user's files -----------------------------------------------

def _user_folder(d: Path) -> dict:
    (d / "sub").mkdir(parents=True)
    files = {"notes.txt": b"my notes\n", "photo.jpg": PHOTO.read_bytes(), "model.onnx": b"my own model",
             "calib.cache": b"TRT-8601-EntropyCalibration2\nimages: 3c010a14\n", ".notes.tmp": b"an editor's swap",
             "sub/keep.txt": b"keep\n"}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return files


def test_r3_4_a_build_refuses_a_folder_holding_files_it_would_replace(calib_dir, tmp_path, capsys):
    """Old code: exit 0, .notes.tmp deleted, model.onnx and calib.cache replaced without a word."""
    import time

    user = tmp_path / "userdir"
    files = _user_folder(user)
    t = time.time()
    rc, err = _cli(capsys, "build", "--weights", TINY, "--calib", calib_dir, "-o", user, *BUILD)
    line = _one_line_error(err)
    assert rc == 2 and "model.onnx, calib.cache" in line and "--overwrite" in line and "not a fyexport build" in line
    assert "[1/8]" not in err and time.time() - t < 20  # refused before any stage ran
    assert {n: (user / n).read_bytes() for n in files} == files
    assert sorted(p.name for p in user.iterdir()) == sorted([".notes.tmp", "calib.cache", "model.onnx",
                                                               "notes.txt", "photo.jpg", "sub"])


def test_r3_4_with_overwrite_only_the_builds_own_files_change(calib_dir, tmp_path, capsys):
    user = tmp_path / "userdir"
    files = _user_folder(user)
    (user / ".fyexport-model.onnx.k2j3x9.tmp").write_bytes(b"left by a killed run")
    rc, err = _cli(capsys, "build", "--weights", TINY, "--calib", calib_dir, "-o", user, *BUILD, "--overwrite")
    assert rc == 0, err
    assert "removed 1 temporary file" in err and not (user / ".fyexport-model.onnx.k2j3x9.tmp").exists()
    for name in ("notes.txt", "photo.jpg", ".notes.tmp", "sub/keep.txt"):
        assert (user / name).read_bytes() == files[name], name
    assert (user / "model.onnx").read_bytes() != files["model.onnx"]
    # the names the policy guards are every name a build writes
    from fyexport.pipeline.build import build_files

    made = {p.name for p in user.iterdir()} - set(files) - {"sub", ".fyexport.lock"}
    assert made <= set(build_files()), made - set(build_files())
    # the folder is a build's now: a rerun replaces its own files without --overwrite
    rc, err = _cli(capsys, "build", "--weights", TINY, "--calib", calib_dir, "-o", user, *BUILD)
    assert rc == 0 and "calibrate: cached" in err, err


def test_r3_4_temporaries_are_recognisably_fyexports_and_cleanup_takes_only_those(tmp_path):
    from fyexport.core.artifacts import atomic_path, cleanup_temporaries

    for name in (".notes.tmp", ".model.onnx.abc.tmp", "x.tmp", ".fyexport-calib.cache.q1w2e3.tmp"):
        (tmp_path / name).write_bytes(b"")
    with atomic_path(tmp_path / "model.onnx") as tmp:
        assert tmp.name.startswith(".fyexport-model.onnx.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
    assert cleanup_temporaries(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == [".model.onnx.abc.tmp", ".notes.tmp", "model.onnx", "x.tmp"]


# -- r3 5: a ratio that cannot prune ----------------------------------------------------------------------

def test_r3_5_a_ratio_that_prunes_nothing_names_the_real_cause(tiny_model, tmp_path, capsys):
    """Old code: 'pruning removed nothing. Check --ignore; every prunable layer may be excluded'
    with no --ignore given, and `build --prune 0.99` accepted the value."""
    rc, err = _cli(capsys, "prune", TINY, "--ratio", "0.99", "-o", tmp_path / "p.pt", "--count-size", 160)
    line = _one_line_error(err)
    assert rc == 2 and "--ratio 0.99 prunes nothing" in line and "512 channels" in line and "at most 0.984" in line
    assert "ignore" not in line and not (tmp_path / "p.pt").exists()
    from fyexport.core.errors import InputError
    from fyexport.prune import PruneConfig, kept_channels, prune

    # the boundary named is Torch-Pruning's: 0.984 narrows the 512-channel layers to 8, 0.985 nothing
    pm, res = prune(tiny_model, PruneConfig(ratio=0.984, count_size=160))
    assert res.macs_after < res.macs_before and kept_channels(512, 0.984, 8) == 8
    assert any(w == [512, 8] for w in res.widths.values())
    with pytest.raises(InputError, match="prunes nothing"):
        prune(tiny_model, PruneConfig(ratio=0.985, count_size=160))
    rc, err = _cli(capsys, "build", "--weights", TINY, "--calib", tmp_path, "-o", tmp_path / "b", "--prune", "0.99")
    line = _one_line_error(err)
    assert rc == 2 and "--prune 0.99 prunes nothing" in line and not (tmp_path / "b").exists()


# -- r3 6: build folders are never images -------------------------------------------------------------------

def test_r3_6_image_searches_leave_out_every_fyexport_build_folder(shapes_small, tmp_path):
    """Old code found C/out/bench.png: a build's plot became a calibration image."""
    from fyexport.core.artifacts import LOCK_FILE
    from fyexport.core.errors import InputError
    from fyexport.data.selection import list_images, select_images
    from fyexport.pipeline.manifest import MANIFEST, Manifest

    c = tmp_path / "C"
    shutil.copytree(shapes_small.parent / "images/train", c)
    (c / "out").mkdir()
    Manifest(c / "out", "fyexport build ...", {}, "x").save("done")  # a real build's manifest
    shutil.copy(PHOTO, c / "out/bench.png")
    (c / "running").mkdir()  # a build still at its first stage: only its lock file
    (c / "running" / LOCK_FILE).write_text("pid 1")
    shutil.copy(PHOTO, c / "running/x.png")
    (c / "other").mkdir()  # somebody else's manifest.json: an ordinary folder of images
    (c / "other/manifest.json").write_text('{"name": "my photos"}')
    shutil.copy(PHOTO, c / "other/photo.jpg")
    found = {p.relative_to(c).as_posix() for p in list_images(c)}
    assert len(found) == 9 and "other/photo.jpg" in found and not any(f.startswith(("out/", "running/"))
                                                                      for f in found)
    assert select_images(c, None).found == 9
    with pytest.raises(InputError, match="is a fyexport build folder"):
        select_images(c / "out", None)
    from fyexport.core.artifacts import BUILD_MANIFEST

    assert BUILD_MANIFEST == MANIFEST


# -- r3 7: recovery counts each unusable image once, with its reason ----------------------------------------

@pytest.mark.parametrize("cache", ["ram", "none"])
def test_r3_7_recovery_counts_every_unusable_image_once_with_its_reason(cache, shapes_small, tmp_path, capsys):
    """Old code: 'skipped 3 unusable training images (3 unreadable)' for 5 broken files: the
    ram cache called every one "unreadable", each was counted per batch it met (and not at all
    when met by the reconstruction, or held out for the check)."""
    from fyexport.recover import RecoverConfig, recover_from_paths

    folder = tmp_path / "imgs"
    shutil.copytree(shapes_small.parent / "images/val", folder)
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("not a picture")
    (folder / "noise.png").write_bytes(np.random.default_rng(0).bytes(3000))
    import cv2

    cv2.imwrite(str(folder / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    _thin_png(folder / "thin.png")
    # 22 images, 4 held out: 18 to train on, 3 batches of 6 (none dropped), so streaming reads all too
    cfg = RecoverConfig(img_size=160, batch=6, epochs=1, crop=0, reconstruct=0, bn_adapt=6, cache=cache,
                        workers=1 if cache == "none" else 0, minutes=5)
    _, summary = recover_from_paths(TINY, TINY, folder, None, tmp_path / "r.pt", cfg)
    assert summary["skipped"] == {"empty file": 1, "not a decodable image": 2, "too small": 1, "too thin": 1,
                                  "truncated": 1}
    assert "recovery skipped 6 unusable images of the 22 it read (1 empty file, 2 not a decodable image" in \
        capsys.readouterr().err


# -- r3 8: corrupted images and label lines, generated ------------------------------------------------------

REASONS = {"unreadable", "empty file", "truncated", "not a decodable image", "too small", "too thin"}


def _encodings() -> dict:
    import cv2

    rng = np.random.default_rng(1)
    img = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    out = {}
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tif"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        out[ext] = buf.tobytes()
    return out


def _with_dims(data: bytes, ext: str, w: int, h: int) -> bytes:
    """``data`` with the width and height its header records replaced (the pixels unchanged)."""
    import struct

    b = bytearray(data)
    if ext == ".png":  # IHDR: width, height big-endian at 16
        b[16:24] = struct.pack(">II", w, h)
    elif ext == ".bmp":  # BITMAPINFOHEADER: width, height little-endian signed at 18
        b[18:26] = struct.pack("<ii", min(w, 2**31 - 1), min(h, 2**31 - 1))
    elif ext == ".jpg":  # the first start-of-frame: height, width big-endian after the precision byte
        k = next(i for i in range(2, len(b) - 9) if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC1, 0xC2))
        b[k + 5:k + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif ext == ".webp":  # VP8 / VP8L frame header dimensions
        k = b.find(b"VP8")
        if b[k + 3:k + 4] == b" ":
            b[k + 14:k + 18] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
        else:
            bits = ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)
            b[k + 9:k + 13] = struct.pack("<I", bits)
    return bytes(b)


def test_r3_8_corrupted_image_bytes_are_read_or_skipped_with_a_reason(tmp_path):
    """Truncated, damaged and absurd-dimension JPEG/PNG/WebP/BMP/TIFF files, empty files and
    random bytes under an image suffix: each is read (an upright 8-bit BGR image that letterboxes)
    or refused with a BadImage reason; nothing else escapes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from fyexport.data.images import BadImage, prepare, read_image

    enc = _encodings()
    dims = st.sampled_from([0, 1, 7, 9, 300, 65535, 2**31 - 1])

    @st.composite
    def corrupted(draw):
        ext = draw(st.sampled_from(sorted(enc)))
        data = enc[ext]
        kind = draw(st.sampled_from(["truncate", "damage", "dims", "empty", "random", "intact"]))
        if kind == "truncate":
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif kind == "damage":
            b = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                b[draw(st.integers(0, min(len(b), 96) - 1))] = draw(st.integers(0, 255))
            data = bytes(b)
        elif kind == "dims":
            data = _with_dims(data, ext, draw(dims), draw(dims))
        elif kind == "empty":
            data = b""
        elif kind == "random":
            data = draw(st.binary(min_size=1, max_size=600))
        return ext, data, draw(st.sampled_from([160, (96, 416), 416]))

    seen = {"read": 0, "skipped": 0}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(corrupted())
    def check(case):
        ext, data, size = case
        f = tmp_path / f"x{ext}"
        f.write_bytes(data)
        try:
            p = prepare(read_image(f), size)
        except BadImage as e:
            assert e.reason in REASONS and "\n" not in str(e), str(e)
            seen["skipped"] += 1
            return
        hw = (size, size) if isinstance(size, int) else size
        assert p.tensor.shape == (3, *hw) and p.tensor.dtype == np.float32 and np.isfinite(p.tensor).all()
        seen["read"] += 1

    check()
    assert seen["read"] and seen["skipped"]


def test_r3_8_generated_label_lines_are_read_or_refused_in_one_line(tmp_path):
    """Random tokens, NaN, inf, huge numbers, too few or many columns: each label file is read
    into finite rows within 0..1 and class ids below nc, or refused by one InputError line
    naming the file (old code: an OverflowError for a class id like 1e308)."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    from fyexport.core.errors import InputError
    from fyexport.data.labels import read_labels

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img, lbl = tmp_path / "images/a.jpg", tmp_path / "labels/a.txt"
    odd = st.sampled_from(["nan", "inf", "-inf", "1e308", "1e400", "-1e-320", "-0", "0x10", "1_0", "5.", ".5",
                           "1.0000001", "-0.02", "3.5"])
    word = st.text(min_size=1, max_size=6).filter(lambda t: t.split() == [t])
    anything = st.one_of(odd, word, st.floats(allow_nan=True, allow_infinity=True).map(repr))
    cls = st.one_of(st.integers(0, 7).map(str), st.sampled_from(["1e308", "1e39", "16777217", "3.5", "-1", "nan"]),
                    anything)
    valid = st.floats(0, 1).map(lambda v: f"{v:.6f}")
    coord = st.one_of(valid, valid, valid, st.floats(0, 1).map(repr), anything)
    # mostly well-formed rows (a box, a polygon) with one column wrong, plus rows of any length
    row = st.tuples(cls, st.sampled_from([4, 4, 4, 6, 6, 3, 5, 2]).flatmap(
        lambda k: st.lists(coord, min_size=k, max_size=k))).map(lambda r: " ".join([r[0], *r[1]]))
    line = st.one_of(row, row, st.lists(anything, max_size=9).map(" ".join))

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(line, min_size=1, max_size=3), st.sampled_from([None, 5]))
    @example(["1e308 0.5 0.5 0.1 0.1"], 5)  # the class id float32 cannot hold
    def check(lines, nc):
        lbl.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        try:
            rows = read_labels(img, nc)
        except InputError as e:
            assert str(lbl) in str(e) and "\n" not in str(e)
            return
        assert rows.dtype == np.float32 and rows.shape[1] == 5 and np.isfinite(rows).all()
        if len(rows):
            assert rows[:, 0].min() >= 0 and (nc is None or rows[:, 0].max() < nc)
            assert (rows[:, 1:] >= -0.01).all() and (rows[:, 1:] <= 1.01).all()

    check()


def test_r3_8_one_cli_run_over_every_kind_of_broken_file(small_onnx, shapes_small, tmp_path, capsys):
    """The one-line promise end to end: calibration over a folder holding each kind of broken
    image completes and counts them; eval over a data set with a broken label line stops in one
    line with exit 2."""
    import cv2

    folder = tmp_path / "calib"
    shutil.copytree(shapes_small.parent / "images/train", folder)
    enc = _encodings()
    for ext, data in enc.items():
        (folder / f"cut{ext}").write_bytes(data[: len(data) // 3])
        (folder / f"huge{ext}").write_bytes(_with_dims(data, ext, 65535, 65535))
        (folder / f"empty{ext}").write_bytes(b"")
        (folder / f"noise{ext}").write_bytes(np.random.default_rng(len(ext)).bytes(500))
    _thin_png(folder / "thin.png")
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((3, 3), np.uint8))
    rc, err = _cli(capsys, "calibrate", small_onnx, "--images", folder, "-o", tmp_path / "out", "--num-images", 100,
                   "--bias-correction", 0)
    assert rc == 0 and "Traceback" not in err and "unexpected" not in err, err
    info = json.loads((tmp_path / "out/calib.json").read_text())["images"]
    assert info["used"] >= 8 and info["used"] + info["skipped"] == 8 + 4 * len(enc) + 2
    assert set(info["skipped_reasons"]) <= REASONS
    root = tmp_path / "d"
    _copy_split(shapes_small.parent, root, _val_names(shapes_small, 2))
    (root / "labels/val" / Path(_val_names(shapes_small, 2)[1]).with_suffix(".txt")).write_text("0 0.5 nan 0.1 1e308\n")
    rc, err = _cli(capsys, "eval", TINY, "--data", _yaml(root / "d.yaml", "val: images/val"), "--img-size", SIZE)
    assert rc == 2 and "not a finite number" in _one_line_error(err)
