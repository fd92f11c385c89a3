"""TensorRT 10's own entropy calibration (``calibrator = trt-entropy``), fed by the project's letterbox.

Only for comparison with explicit Q/DQ: TensorRT 11 removed ``IInt8EntropyCalibrator2``, and
NVIDIA measured it costing YOLOv7 5.5 mAP points.  The calibrator is Polygraphy's
(``polygraphy.backend.trt.Calibrator``: device buffers, the cache callbacks); fyexport adds
what it does not do:

* **No silent partial calibration.**  TensorRT's binding catches an exception raised in
  ``get_batch``, prints it and returns false, which TensorRT reads as the end of the data
  (python/src/infer/pyInt8.cpp).  The batches are counted here, and a calibration that stopped
  before its last batch refuses the engine with the reason.
* **No stale cache.**  ``<engine>.calib.cache`` is reused only when ``<engine>.calib.cache.json``
  says it was made from the same ONNX, images, batch and TensorRT release; otherwise TensorRT
  calibrates again (with a warning) and both files are replaced, atomically.

TensorRT calibrates at the calibration profile's OPT shape, not at ``get_batch_size()``: the
builder sets that profile to :attr:`EntropyCalibration.shape` (the static batch of a
static-batch model, else the requested batch), and every batch handed out has that shape.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.artifacts import read_json, sha256_file, write_bytes, write_json
from ..core.errors import FyexportError, InputError
from ..core.log import G_LOGGER

ALGORITHM = "EntropyCalibration2"


def calibration_batches(paths, hw, batch: int):
    """Letterboxed float32 batches (B,3,H,W) of ``paths``, skipping unreadable files; a short
    last batch is dropped (TensorRT calibrates at one fixed shape)."""
    from ..data.images import iter_prepared

    buf = []
    for x in iter_prepared(paths, hw):
        buf.append(x)
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []


class Batches:
    """The calibration data Polygraphy's Calibrator reads (``{input: batch}`` per step), counting
    what was handed out and keeping the error that ended it early, if any."""

    def __init__(self, name: str, paths: list, hw, batch: int):
        self.name, self.paths, self.hw, self.batch = name, paths, hw, batch
        self.given, self.finished, self.error = 0, False, None

    @property
    def expected(self) -> int:
        return len(self.paths) // self.batch

    def __iter__(self):
        try:
            for x in calibration_batches(self.paths, self.hw, self.batch):
                self.given += 1
                yield {self.name: x}
        except Exception as e:  # noqa: BLE001 - TensorRT would swallow it: kept to refuse the engine
            self.error = e
            raise
        self.finished = True


@dataclass
class EntropyCalibration:
    """One TensorRT calibration: Polygraphy's calibrator, its data, and the cache it reads and writes."""

    calibrator: object
    batches: Batches
    shape: tuple
    cache_path: Path
    provenance: dict
    reused: bool
    cache_io: object = field(repr=False, default=None)  # a temporary file Polygraphy reads and writes

    def close(self) -> None:
        if self.cache_io is not None:
            self.cache_io.close()
            self.cache_io = None


def provenance_path(cache_path) -> Path:
    return Path(str(cache_path) + ".json")


def entropy_calibration(trt, proto, onnx_path, engine_path, images_dir, num_images: int, batch: int):
    """An :class:`EntropyCalibration` for building ``engine_path`` from ``onnx_path`` on the images
    of ``images_dir``: an ``IInt8EntropyCalibrator2`` from Polygraphy, with the cache
    ``<engine>.calib.cache`` when its provenance matches."""
    from polygraphy.backend.trt import Calibrator

    from ..data.selection import select_images
    from ..onnx.facts import image_input

    inp = image_input(proto)
    if inp.batch not in (None, batch):
        batch = inp.batch  # a static batch is the calibration shape
    imgs = select_images(images_dir, num_images)
    if len(imgs.paths) < batch:
        raise InputError(f"{images_dir}: {len(imgs.paths)} image(s), fewer than one calibration batch of {batch}",
                         "Give more images or a smaller calibration batch")
    if len(imgs.paths) % batch:
        G_LOGGER.info(f"TensorRT calibrator: batches of {batch}; the last {len(imgs.paths) % batch} image(s) are "
                      "unused")
    shape = (batch, 3, *inp.hw)
    cache_path = Path(engine_path).with_name(Path(engine_path).stem + ".calib.cache")
    prov = {"format": "fyexport-trt-calibration", "tensorrt": str(trt.__version__), "algorithm": ALGORITHM,
            "onnx_sha256": sha256_file(onnx_path), "images_sha256": imgs.list_hash, "images": len(imgs.paths),
            "shape": list(shape)}
    old = _reusable_cache(cache_path, prov)
    cache_io = tempfile.TemporaryFile()  # noqa: SIM115 - closed by EntropyCalibration.close
    if old is not None:
        cache_io.write(old)
        cache_io.flush()
        cache_io.seek(0)
    data = Batches(inp.name, imgs.paths, inp.hw, batch)
    cal = Calibrator(data, cache=cache_io, BaseClass=trt.IInt8EntropyCalibrator2)
    return EntropyCalibration(cal, data, shape, cache_path, prov, old is not None, cache_io)


def _reusable_cache(cache_path: Path, prov: dict) -> bytes | None:
    """The cache's bytes when its recorded provenance is ``prov``, else None (with the reason)."""
    if not cache_path.exists():
        return None
    rec = provenance_path(cache_path)
    try:
        recorded = read_json(rec) if rec.exists() else None
    except FyexportError:
        recorded = None
    if recorded is None:
        G_LOGGER.warning(f"{cache_path}: no record of what it was calibrated from ({rec.name}); not reused, "
                         "TensorRT calibrates again and replaces it")
        return None
    changed = [k for k in prov if recorded.get(k) != prov[k] and k != "format"]
    if changed:
        G_LOGGER.warning(f"{cache_path}: made from another {', '.join(changed)}; not reused, TensorRT calibrates "
                         "again and replaces it")
        return None
    G_LOGGER.info(f"TensorRT calibrator: reusing {cache_path} (same ONNX, images, shape and TensorRT)")
    return cache_path.read_bytes()


def finish(cal: EntropyCalibration, engine_name: str) -> dict:
    """After the build: refuse a calibration that stopped early, write the cache and its
    provenance, and return what the engine's metadata records about the calibration."""
    b = cal.batches
    if not cal.reused and (b.error is not None or not b.finished):
        why = f"{type(b.error).__name__}: {b.error}" if b.error is not None else "TensorRT stopped asking for data"
        raise FyexportError(f"TensorRT's calibration stopped after {b.given} of {b.expected} batches ({why}); "
                            f"{engine_name} was not written", "Fix or remove the image named above and build again")
    if not cal.reused:
        cal.cache_io.seek(0)
        data = cal.cache_io.read()
        if not data:
            raise FyexportError(f"TensorRT calibrated {engine_name} but wrote no calibration cache")
        write_bytes(cal.cache_path, data)
        write_json(provenance_path(cal.cache_path), cal.provenance)
    return {"cache": cal.cache_path.name, "cache_sha256": sha256_file(cal.cache_path), "reused": cal.reused,
            "batches": b.given, "shape": list(cal.shape), "images_sha256": cal.provenance["images_sha256"]}
