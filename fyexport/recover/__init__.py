"""Accuracy recovery for a pruned model: knowledge distillation from the unpruned teacher,
plus the supervised YOLO loss when labels are given.

* :mod:`.data`: the streaming input pipeline (Dataset + DataLoader, optional caches);
* :mod:`.augment`: on-device augmentation and random crops, seeded per sample;
* :mod:`.dist`: torch.distributed (torchrun: NCCL on GPUs, gloo on CPUs);
* :mod:`.check`: the kept fraction on held-out images (labelled mAP or teacher agreement);
* :mod:`.train`: the loop (AdamW, EMA, target / time / epoch stops, resumable state).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..core.errors import InputError
from ..core.log import G_LOGGER
from .check import HoldOut, split_holdout
from .config import CACHES, DEFAULT_MINUTES, DEFAULT_TARGET, RecoverConfig
from .train import state_path

HOLDOUT_IMAGES = 200  # images held out of label-free training to measure teacher agreement


def recover(student, teacher, images, output, cfg: RecoverConfig, data=None, resume: bool = False,
            holdout: HoldOut | None = None):
    """Train ``student`` (a pruned Model) towards ``teacher`` on ``images`` (paths) and save
    the best checked EMA weights to ``output`` in fyexport's format (rank 0 of a torchrun
    job; the other ranks return None).  Returns (model, summary dict)."""
    from .train import Trainer

    output = Path(output)
    if teacher.nc != student.nc:
        raise InputError(f"teacher has {teacher.nc} classes but the pruned model has {student.nc}",
                         "Use the checkpoint the pruned model was made from as the teacher")
    cfg.validate()
    paths = list(images)
    if cfg.max_images:
        from ..data.selection import sample_images

        paths = sample_images(paths, cfg.max_images, cfg.seed)
    trainer = Trainer(student, teacher, paths, output, cfg, data=data, holdout=holdout)
    if resume:
        trainer.restore()
    res = trainer.run()
    return res if res is not None else (None, None)


def training_images(images=None, data=None, exclude=(), extra=()) -> tuple[list, object]:
    """(image paths, DataSpec or None): the images of the folder ``images``, the ``data``
    yaml's train split and the ``extra`` folders, without duplicates, validated."""
    from ..data.labels import load_data_yaml
    from ..data.selection import list_images

    spec = load_data_yaml(data) if data else None
    paths: list = []
    for folder in [f for f in (images, *extra) if f]:
        p = Path(folder)
        if not p.is_dir():
            raise InputError(f"{p}: not a folder of images")
        found = list_images(p, exclude=exclude)
        if not found:
            raise InputError(f"{p}: no image files (jpg, png, bmp, webp, tiff) found")
        paths += found
    if spec is not None:
        paths += spec.images("train")
    if not paths:
        raise InputError("no training images", "Give a folder of images (label-free) and/or a data yaml (with labels)")
    unique: dict = {}
    for p in paths:  # the same file reached by another spelling (relative, symlinked) counts once
        unique.setdefault(os.path.realpath(p), Path(p))
    return sorted(unique.values(), key=str), spec


def recover_from_paths(pruned, teacher, images, data, output, cfg: RecoverConfig, resume: bool = False,
                       qat=None):
    """The ``fyexport recover`` command: validate everything, hold out images to measure the
    kept fraction on (the validation split with labels), then :func:`recover`; with ``qat`` (a
    QatConfig) :func:`recover_then_qat`."""
    from ..models import load

    out = Path(output)
    if out.suffix not in (".pt", ".pth"):
        raise InputError(f"{output}: the recovered model is saved as .pt")
    cfg.validate()  # usage errors before any work
    from ..core.artifacts import writable_folder

    writable_folder(out.parent)  # the state and the model are written there: a read-only place fails now
    paths, spec = training_images(images, data)
    student = load(pruned)
    if not student.meta.get("prune"):
        G_LOGGER.warning(f"{pruned}: has no pruning record; recovering it anyway")
    teach = load(teacher)
    if spec is not None and spec.nc != student.nc:
        raise InputError(f"{spec.path}: has {spec.nc} classes but the model has {student.nc}")
    paths, holdout = holdout_for(paths, spec, cfg, student.nc)
    if qat is not None:
        return recover_then_qat(student, teach, paths, out, cfg, qat, data=spec, resume=resume, holdout=holdout)
    return recover(student, teach, paths, out, cfg, data=spec, resume=resume, holdout=holdout)


def recover_then_qat(student, teacher, paths: list, output: Path, cfg: RecoverConfig, qat, data=None,
                     resume: bool = False, holdout: HoldOut | None = None):
    """Recovery, then quantization-aware training in ``qat.share`` of its time (``fyexport
    recover --qat``): ``output`` is the recovered FP32 model; beside it go its ONNX export
    (``<stem>.onnx``), the FP32 twin of the QAT weights (``<stem>.qat.onnx``), calibration's
    files and the Q/DQ models with the trained weights and ranges, and qat.json.  A resumed run
    whose recovery had finished goes on with QAT.  Returns (model, summary) on rank 0."""
    from ..core.machine import resolve_device
    from ..models import load
    from . import dist

    d = dist.setup(resolve_device(cfg.device))
    limit_s, qcfg = qat.sharing(cfg.time_limit_s(d.device), cfg.step_limit(len(paths), d.world))
    rcfg = replace(cfg, minutes=limit_s / 60)
    qcfg = replace(qcfg, img_size=rcfg.hw, seed=cfg.seed, device=cfg.device)
    qat_state = output.with_name(output.stem + ".qat-state.pt")
    if not resume:
        qat_state.unlink(missing_ok=True)
    model, summary = None, None
    recovered = resume and qat_state.exists() and output.exists() and not state_path(output).exists()
    if recovered:
        G_LOGGER.info(f"{output}: recovery had finished; resuming quantization-aware training")
    else:
        model, summary = recover(student, teacher, paths, output, rcfg, data=data, resume=resume, holdout=holdout)
    done = (load(output).meta.get("recover") or {}) if d.main else {}
    if qat.minutes is None and done.get("stopped") == "target":  # recovery ended early: QAT keeps its share
        qcfg = qcfg.within(done["seconds"])
    _qat_after_recovery(output, teacher, paths, qcfg, data, qat_state, d)
    dist.teardown(d)
    return model, summary


def _qat_after_recovery(output: Path, teacher, paths: list, qcfg, data, state: Path, d) -> None:
    """Export the recovered model, calibrate it on (a sample of) the training images and train
    with INT8 in the loop; rank 0 writes the models, the other ranks train beside it."""
    from ..data.selection import ImageSet, file_list_hash, sample_images
    from ..models import load
    from ..onnx.export import ExportConfig, export_onnx
    from ..quantize.calibration import BUILD_METHOD, CalibrationConfig
    from . import dist
    from .qat import QatJob, qat_models

    onnx_path = output.with_suffix(".onnx")
    calib = CalibrationConfig(method=BUILD_METHOD, seed=qcfg.seed)
    sample = sample_images(paths, calib.num_images, calib.seed)
    images = ImageSet(sample, len(paths), file_list_hash(sample), str(Path(os.path.commonpath(sample))))
    if d.main:
        export_onnx(load(output), onnx_path, ExportConfig(img_size=qcfg.hw))
    else:
        qcfg = replace(qcfg, minutes=dist.wait_for_main(d))  # rank 0's time limit: one schedule and state key
    job = QatJob(load(output), teacher, onnx_path, images, paths, output.parent, output.with_suffix(".qat.onnx"),
                 data, state)
    done = qat_models(job, qcfg, calib, d, ready=(lambda m: dist.wait_for_main(d, m)) if d.main else None)
    if done is not None:
        files = [onnx_path, job.fp32_onnx, *done[1].files.values()]
        G_LOGGER.info("wrote " + ", ".join(str(f) for f in files))


def holdout_for(paths: list, spec, cfg: RecoverConfig, nc: int, n: int = HOLDOUT_IMAGES):
    """(training paths, HoldOut): the validation split when there are labels (training keeps
    every image), else ``n`` images taken out of the training images."""
    if spec is not None and "val" in spec.splits:
        from ..data.selection import sample_images

        val = sample_images(spec.images("val"), n, cfg.seed)
        held = set(map(os.path.realpath, val))
        return [p for p in paths if os.path.realpath(p) not in held], HoldOut(val, cfg.hw, nc, labelled=True)
    train, held = split_holdout(paths, n, cfg.seed)
    return train, (HoldOut(held, cfg.hw, nc, labelled=False) if held else None)


def taylor_loss_fn(data, model, batches: int = 4, batch: int = 8, img_size: int = 640):
    """For Taylor importance: a callable that accumulates YOLO-loss gradients on a few
    labelled batches."""
    from ..data.labels import load_data_yaml
    from .data import TrainingSet, collate
    from .loss import YoloLoss

    spec = load_data_yaml(data)
    if spec.nc != model.nc:
        raise InputError(f"{spec.path}: has {spec.nc} classes but the model has {model.nc}")
    ds = TrainingSet(spec.images("train")[: batches * batch], (img_size, img_size), spec.nc)

    def run(m):
        loss_fn = YoloLoss(m.head, img_size=img_size)
        m.train()
        for i in range(0, len(ds), batch):
            x, tg, _, _ = collate([ds[k] for k in range(i, min(i + batch, len(ds)))])
            if x is not None:
                loss_fn(m(x.float() / 255.0), tg)[0].backward()
        m.eval()

    return run


__all__ = ["CACHES", "DEFAULT_MINUTES", "DEFAULT_TARGET", "HoldOut", "RecoverConfig",
           "holdout_for", "recover", "recover_from_paths", "split_holdout", "state_path", "taylor_loss_fn",
           "training_images"]
