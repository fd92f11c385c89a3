"""``fyexport demo``: the whole pipeline on a fresh machine, with no download.

Generates a small shapes calibration and validation set with the bundled generator, then
runs ``build`` on the bundled yolov7-tiny checkpoint (trained on that data): prune,
recover briefly, export, calibrate, Q/DQ, (engine where TensorRT exists), evaluate with
the mAP gate, and benchmark against the unpruned FP32 model.  Sized to finish in a few
minutes on a 2-core CPU; the numbers are a demonstration, not the benchmark
(see benchmarks/).
"""
from __future__ import annotations

from pathlib import Path

from .log import G_LOGGER

ASSET = Path(__file__).parent / "assets" / "yolov7-tiny-shapes.pt"


def make_data(root: Path, calib: int, val: int) -> Path:
    from .datasets.shapes import CLASSES, write_split

    root.mkdir(parents=True, exist_ok=True)
    yaml_path = root / "shapes.yaml"
    have = {s: len(list((root / "images" / s).glob("*.jpg"))) for s in ("train", "val")}
    if have["train"] != calib or have["val"] != val:
        G_LOGGER.info(f"generating {calib} calibration and {val} validation images in {root}")
        for split, count, seed in (("train", calib, 0), ("val", val, 1)):
            d = root / "images" / split
            for old in d.glob("*.jpg") if d.exists() else []:
                old.unlink()
            write_split(root, split, count, seed, 640)
    r = root.resolve()
    yaml_path.write_text(f"train: {r}/images/train\nval: {r}/images/val\nnc: {len(CLASSES)}\nnames: {CLASSES}\n")
    return yaml_path


def run_demo(out="fyexport-demo", calib: int = 400, val: int = 100, prune: float = 0.3, recover_epochs: int = 40,
             device: str = "auto") -> dict:
    from .build import BuildOptions, run_build

    out = Path(out)
    data = make_data(out / "data", calib, val)
    opts = BuildOptions(weights=str(ASSET), calib=str(out / "data" / "images" / "train"), out=str(out / "build"),
                        prune=prune, recover_epochs=recover_epochs, data=str(data), img_size=640, batch=1,
                        precision="int8", method="search", max_map_drop=1.0, device=device, num_images=calib,
                        recover_batch=16, recover_crop=320, recover_minutes=4.0, bench_duration=2.0)
    return run_build(opts, command=f"fyexport demo -o {out}")
