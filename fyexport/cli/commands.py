"""The ``fyexport`` command line: a thin click layer, one library call per command.

Errors the user can fix print one line (``error: ...``) and exit 2 (bad input) or 1
(failure); tracebacks only with ``--verbose``.
"""
from __future__ import annotations

import functools
import sys

import click

from ..core.errors import FyexportError, GateError, InputError
from ..core.log import DEBUG, G_LOGGER
from ..data.images import parse_img_size
from ..onnx.nms import NMS_KINDS
from ..prune import IMPORTANCES
from ..quantize import CALIBRATION_METHODS, DEFAULT_BATCH
from ..recover import CACHES, DEFAULT_TARGET, RecoverConfig
from ..runners import RUNTIMES
from ..trt.engine import CALIBRATORS, PRECISIONS


def logging_options(f):
    """-v/--verbose, -q/--quiet and --log-json on every command (and on the group)."""

    @click.option("-v", "--verbose", is_flag=True, help="Debug output and full tracebacks.")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors and results.")
    @click.option("--log-json", is_flag=True, help="Log JSON lines on stderr (for machines).")
    @functools.wraps(f)
    def wrapper(*args, verbose=False, quiet=False, log_json=False, **kwargs):
        if verbose or quiet or log_json:
            G_LOGGER.configure(verbose=verbose or G_LOGGER.level == DEBUG, quiet=quiet, log_json=log_json)
        return f(*args, **kwargs)

    return wrapper


def print_json(obj) -> None:
    from ..core.artifacts import dumps

    click.echo(dumps(obj))


IMG_SIZE = click.option("--img-size", default="640", show_default=True, help="Input size N or H,W.")


METHOD_HELP = ("entropy: TensorRT's KL search; mse: NVIDIA's Histogram(MSE); search: per scale group, entropy "
               "unless another method's amax clearly lowers the error of the convs reading it; auto: the one method "
               "whose INT8 outputs stay closest to FP32 on a few calibration images.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fyexport", message="fyexport %(version)s")
@logging_options
def cli():
    """fyexport: YOLOv7 checkpoint -> pruned, INT8, TensorRT-ready deployment.

    \b
    Pipeline: load -> prune -> recover -> export ONNX -> calibrate -> Q/DQ -> engine -> bench.
    Start with `fyexport demo`, or `fyexport build --weights W.pt --calib DIR -o OUT`.
    """


# -- info / export -------------------------------------------------------------

@cli.command()
@click.argument("target", required=False)
@click.option("--cfg", type=click.Path(), help="Describe a model built from this cfg yaml instead.")
@click.option("--nc", type=int, help="Class count override for --cfg.")
@IMG_SIZE
@click.option("--fuse", is_flag=True, help="Describe the fused deployment form.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@logging_options
def info(target, cfg, nc, img_size, fuse, as_json):
    """Describe a checkpoint, an ONNX file, a build folder (its manifest) or a cfg."""
    from ..info import describe, render

    if (target is None) == (cfg is None):
        raise InputError("give exactly one of TARGET or --cfg")
    d = describe(target, cfg=cfg, nc=nc, img_size=parse_img_size(img_size), fuse=fuse)
    print_json(d) if as_json else render(d)


@cli.command()
@click.argument("weights")
@click.option("-o", "--output", required=True, help="Output .onnx path.")
@IMG_SIZE
@click.option("--batch", default=1, show_default=True, type=int, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch axis.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--nms", "nms", type=click.Choice(NMS_KINDS), default=None, flag_value="onnx",
              is_flag=False, help="Append NMS: standard ONNX NonMaxSuppression (default) or EfficientNMS_TRT.")
@click.option("--conf-thres", default=0.25, show_default=True, type=float, help="NMS score threshold.")
@click.option("--iou-thres", default=0.45, show_default=True, type=float, help="NMS IoU threshold.")
@click.option("--topk", default=100, show_default=True, type=int, help="NMS detections kept per image.")
@logging_options
def export(weights, output, img_size, batch, dynamic_batch, no_simplify, nms, conf_thres, iou_thres, topk):
    """Export WEIGHTS to ONNX (decoded output [B,N,5+nc], opset 17, onnxsim-simplified)."""
    from ..models import load
    from ..onnx.export import export_onnx

    if not output.lower().endswith(".onnx"):
        raise InputError(f"{output}: the output must end in .onnx")
    nms_cfg = None
    if nms:
        from ..onnx.nms import NmsConfig

        nms_cfg = NmsConfig(kind=nms, conf_thres=conf_thres, iou_thres=iou_thres, topk=topk)
    model = load(weights)
    r = export_onnx(model, output, parse_img_size(img_size), batch, dynamic_batch, not no_simplify, nms=nms_cfg)
    G_LOGGER.info(f"wrote {r.path}  input {r.input_shape}  output {r.output_shape}  "
                  f"{'simplified' if r.simplified else 'not simplified'}")


# -- prune / recover / eval ---------------------------------------------------------

@cli.command()
@click.argument("weights", required=False)
@click.option("--cfg", type=click.Path(), help="Prune a fresh model built from this cfg instead of WEIGHTS.")
@click.option("--nc", type=int, help="Class count for --cfg.")
@click.option("--ratio", default=0.5, show_default=True, type=float, help="Channel pruning ratio, in (0, 1).")
@click.option("-o", "--output", help="Where to save the pruned model (.pt, fyexport format).")
@click.option("--importance", default="l2", show_default=True, type=click.Choice(IMPORTANCES))
@click.option("--round-to", default=8, show_default=True, type=int, help="Round channel counts (0: no rounding).")
@click.option("--global", "global_pruning", is_flag=True, help="Global instead of per-layer ranking.")
@click.option("--count-size", default=640, show_default=True, type=int, help="Input size for MAC counting.")
@click.option("--ignore", help="Regex of conv names to leave unpruned (the head's output convs always are).")
@click.option("--no-fuse", is_flag=True, help="Prune the training graph (BN, RepConv, implicits) instead.")
@click.option("--data", type=click.Path(), help="Data yaml (labels) for --importance taylor.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@logging_options
def prune(weights, cfg, nc, ratio, output, importance, round_to, global_pruning, count_size, ignore, no_fuse, data,
          as_json):
    """Structured channel pruning (Torch-Pruning DepGraph); prints MACs/params before and after."""
    from .. import prune as pr
    from ..models import build_model, load, save

    if (weights is None) == (cfg is None):
        raise InputError("give exactly one of WEIGHTS or --cfg")
    pr.validate(ratio, importance, not no_fuse, round_to)
    if output and not output.endswith((".pt", ".pth")):
        raise InputError(f"{output}: the pruned model is saved as .pt")
    model = build_model(cfg, nc=nc) if cfg else load(weights)
    taylor = None
    if importance == "taylor":
        if not data:
            raise InputError("--importance taylor needs --data (a labelled data yaml) for loss gradients")
        from ..recover import taylor_loss_fn

        taylor = taylor_loss_fn(data, model)
    pruned, res = pr.prune(model, ratio, importance, round_to, global_pruning, count_size, ignore, not no_fuse,
                           taylor_batches=taylor)
    if output:
        save(pruned, output)
    if as_json:
        print_json(res.to_dict() | ({"output": output} if output else {}))
    else:
        pr.render(res)
        if output:
            G_LOGGER.info(f"wrote {output}")
        G_LOGGER.warning("a pruned model needs recovery before it detects well: run 'fyexport recover'", once=True)


@cli.command()
@click.argument("pruned")
@click.option("--teacher", required=True, help="The unpruned checkpoint the pruned model came from.")
@click.option("--images", type=click.Path(), help="Folder of sample images (label-free distillation).")
@click.option("--data", type=click.Path(), help="YOLO data yaml: adds the supervised loss on its train split; the "
              "kept fraction is then measured by mAP on its val split.")
@click.option("--epochs", default=RecoverConfig.epochs, show_default=True, type=int, help="Epoch limit.")
@click.option("--max-steps", type=int, help="Step limit (optimizer steps), beside the epoch and time limits.")
@IMG_SIZE
@click.option("--batch", default=RecoverConfig.batch, show_default=True, type=int, help="Images per step per process.")
@click.option("--lr", default=RecoverConfig.lr, show_default=True, type=float,
              help="AdamW learning rate for a global batch of 16 (scaled by sqrt(global batch / 16)).")
@click.option("--max-images", type=int, help="Use at most this many images (deterministic sample).")
@click.option("--target", default=DEFAULT_TARGET, show_default=True, type=float,
              help="Stop once the held-out kept fraction of the teacher's score reaches this (1: never early).")
@click.option("--max-minutes", type=float, help="Time limit for training.  [default: 15 on a CPU, 10 on a GPU]")
@click.option("--check-every", default=RecoverConfig.check_every, show_default=True, type=int,
              help="Steps between held-out checks of the kept fraction.")
@click.option("--crop", default=RecoverConfig.crop, show_default=True, type=int,
              help="Train on random CROPxCROP windows of the letterboxed images: same object scale, a fraction of "
                   "the compute (0: whole images).")
@click.option("--reconstruct", default=RecoverConfig.reconstruct, show_default=True, type=int,
              help="Refit the pruned convs to the teacher by least squares on this many crops first (0: off, "
                   "re-estimate BatchNorm instead).")
@click.option("--workers", type=int, help="Data loader processes.  [default: 1 on a CPU, up to 8 on a GPU]")
@click.option("--cache", default="auto", show_default=True, type=click.Choice(CACHES),
              help="Keep letterboxed images in RAM or on disk; auto: in RAM when they fit 1 GiB, else streamed.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bfloat16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its state file.")
@click.option("-o", "--output", required=True, help="Recovered model (.pt).")
@logging_options
def recover(pruned, teacher, images, data, epochs, max_steps, img_size, batch, lr, max_images, target, max_minutes,
            check_every, crop, reconstruct, workers, cache, device, amp, seed, resume, output):
    """Recover a pruned model's accuracy by distillation from its unpruned teacher.

    \b
    Several GPUs or machines: torchrun --nproc-per-node N -m fyexport recover ...
    """
    from ..data.images import normalize_img_size
    from ..recover import default_minutes, recover_from_paths

    minutes = max_minutes if max_minutes is not None else default_minutes(device)
    cfg = RecoverConfig(epochs=epochs, max_steps=max_steps, img_size=normalize_img_size(img_size), batch=batch,
                        lr=lr, max_images=max_images, seed=seed, device=device, time_budget_s=minutes * 60,
                        crop=crop or None,
                        amp=amp, target=target if target < 1 else None, check_every=check_every, workers=workers,
                        cache=cache, reconstruct=reconstruct)
    _, summary = recover_from_paths(pruned, teacher, images, data, output, cfg, resume)
    if summary is not None:
        best = summary.get("best") or {}
        G_LOGGER.info(f"wrote {output} ({summary['iterations']} steps on {summary['images']} images, "
                      f"{summary['seconds']:.0f} s on {summary['device']} x{summary['world_size']}, stopped by "
                      f"{summary['stopped']}" + (f", kept {best['kept']:.1%}" if best else "") + ")")


@cli.command(name="eval")
@click.argument("artifact")
@click.option("--data", type=click.Path(), help="YOLO data yaml: mAP against its labels.")
@click.option("--teacher", type=click.Path(),
              help="The unpruned checkpoint: also (or, without --data, only) its teacher agreement.")
@click.option("--images", type=click.Path(), help="Images for teacher agreement without --data (never trained on).")
@click.option("--split", default="val", show_default=True)
@IMG_SIZE
@click.option("--batch", default=8, show_default=True, type=int, help="Ignored for static-batch ONNX/engines.")
@click.option("--conf", default=0.001, show_default=True, type=float)
@click.option("--iou", default=0.65, show_default=True, type=float)
@click.option("--runtime", default="auto", show_default=True, type=click.Choice(RUNTIMES))
@click.option("--device", default="auto", show_default=True)
@click.option("--max-images", type=int, help="Evaluate only the first N images.")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def eval_cmd(artifact, data, teacher, images, split, img_size, batch, conf, iou, runtime, device, max_images,
             as_json):
    """mAP@.5 and mAP@.5:.95 (pycocotools) of a checkpoint, ONNX model or engine; with
    --teacher, the agreement of its detections with the unpruned model's."""
    from ..evaluation.agreement import agreement_with
    from ..evaluation.metrics import evaluate, render
    from ..runners import open_runner

    if not data and not (teacher and images):
        raise InputError("give --data (labels), or --teacher W.pt with --images DIR (teacher agreement)")
    runner = open_runner(artifact, runtime=runtime, device=device, img_size=parse_img_size(img_size))
    with runner:
        res = evaluate(runner, data, split, batch, conf, iou, max_images) if data else None
        agree = agreement_with(runner, teacher, data, images, split, max_images, device) if teacher else None
    if as_json:
        print_json((res.to_dict() if res else {}) | ({"teacher_agreement": agree} if agree else {}))
        return
    if res:
        render(res)
    if agree:
        click.echo(f"teacher agreement {agree['agreement']:.4f} (AP@.5 against {agree['teacher']}'s detections "
                   f"scoring >= {agree['teacher_conf']} on {agree['images']} images; strict, AP@.5:.95: "
                   f"{agree['agreement_strict']:.4f})")


# -- INT8 --------------------------------------------------------------------------

@cli.command()
@click.argument("model")
@click.option("--images", required=True, type=click.Path(), help="Folder of calibration images (recursive).")
@click.option("-o", "--output", "out_dir", required=True, help="Output folder.")
@click.option("--num-images", default=500, show_default=True, type=int, help="Images to sample (deterministic).")
@click.option("--batch", default=DEFAULT_BATCH, show_default=True, type=int, help="Images per histogram batch.")
@click.option("--method", default="entropy", show_default=True, type=click.Choice(CALIBRATION_METHODS),
              help=METHOD_HELP)
@click.option("--percentile", default=99.99, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--exclude",
              help="Regex of Conv node/tensor names to keep in float (the head's output convs always are).")
@click.option("--auto-exclude", default=0, show_default=True, type=int,
              help="Keep the K most sensitive scale groups in float (output-error sensitivity analysis).")
@click.option("--bias-correction", default=32, show_default=True, type=int,
              help="Images for per-conv bias correction of the Q/DQ models (0: off).")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def calibrate(model, images, out_dir, num_images, batch, method, percentile, seed, exclude, auto_exclude,
              bias_correction, as_json):
    """Calibrate an FP32 ONNX on sample images: TensorRT cache + Q/DQ ONNX models."""
    from ..quantize import CalibrationOptions
    from ..quantize import calibrate as run

    res = run(model, images, out_dir, CalibrationOptions(
        num_images=num_images, batch=batch, method=method, percentile=percentile, seed=seed, exclude=exclude,
        auto_exclude=auto_exclude, bias_correction=bias_correction))
    summary = {"out_dir": str(res.out_dir), "files": {k: str(v) for k, v in res.files.items()}, "method": res.method,
               "images_used": res.images_used, "images_skipped": res.images_skipped,
               "seconds": round(res.seconds, 2), "peak_rss_mb": res.peak_rss_mb}
    if as_json:
        print_json(summary)
    else:
        for v in res.files.values():
            G_LOGGER.info(f"wrote {v}")
        G_LOGGER.info(f"{res.method} calibration on {res.images_used} images in {res.seconds:.1f} s")


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def inspect(model, as_json):
    """List quantized and float nodes, scales, and Q/DQ placement-rule violations (exit 1 if any)."""
    from ..onnx.facts import check_onnx_file
    from ..quantize.inspection import inspect_qdq, render

    rep = inspect_qdq(check_onnx_file(model), str(model))
    print_json(rep.to_dict()) if as_json else render(rep)
    if rep.violations:
        raise click.exceptions.Exit(1)


# -- bench ---------------------------------------------------------------------------

@cli.command()
@click.argument("artifacts", nargs=-1)
@click.option("--baseline", required=True, help="The unpruned FP32 checkpoint everything is compared with.")
@click.option("--runtime", default="auto", show_default=True, type=click.Choice(RUNTIMES))
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch sizes, e.g. 1,8,32.")
@IMG_SIZE
@click.option("--warmup", default=0.2, show_default=True, type=float, help="Warm-up seconds per measurement.")
@click.option("--duration", default=3.0, show_default=True, type=float, help="Measuring seconds per measurement.")
@click.option("--data", type=click.Path(), help="Data yaml: adds mAP@.5:.95 and its drop to every row.")
@click.option("--eval-images", type=int, help="Evaluate mAP on the first N validation images only.")
@click.option("--images", type=click.Path(), help="Real images for the end-to-end timing and teacher agreement "
              "(default: the val split).")
@click.option("--agreement-images", default=100, show_default=True, type=int,
              help="Images for teacher agreement with the baseline (0: none).")
@click.option("--json", "json_out", help="Write the report as JSON (schema: benchmarks/schema.json).")
@click.option("--plot", "plot_out", help="Write a PNG plot (latency vs mAP, speedup bars).")
@logging_options
def bench(artifacts, baseline, runtime, device, batches, img_size, warmup, duration, data, eval_images, images,
          agreement_images, json_out, plot_out):
    """Latency, throughput and accuracy of ARTIFACTS against the unpruned FP32 BASELINE."""
    from .. import bench as b
    from ..core.artifacts import write_json

    try:
        sizes = tuple(int(v) for v in str(batches).split(",") if v.strip())
    except ValueError:
        raise InputError(f"--batch: expected comma-separated integers, got {batches!r}")
    report = b.run_bench(list(artifacts), baseline, b.BenchOptions(
        runtime=runtime, device=device, batches=sizes, img_size=parse_img_size(img_size), warmup=warmup,
        duration=duration, data=data, images=images, max_eval_images=eval_images, agreement_images=agreement_images))
    b.render(report)
    if json_out:
        write_json(json_out, report)
        G_LOGGER.info(f"wrote {json_out}")
    if plot_out:
        b.plot(report, plot_out)
        G_LOGGER.info(f"wrote {plot_out}")


# -- TensorRT ---------------------------------------------------------------------------

@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Engine file (.engine / .plan); metadata goes to <engine>.json.")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(PRECISIONS))
@click.option("--workspace", default=4.0, show_default=True, type=float, help="Workspace memory pool (GiB).")
@click.option("--batch", type=int, help="Static batch (for a dynamic-batch ONNX: min = opt = max).")
@click.option("--min-batch", type=int)
@click.option("--opt-batch", type=int)
@click.option("--max-batch", type=int)
@click.option("--timing-cache", type=click.Path(), help="Load and save TensorRT's timing cache here.")
@click.option("--opt-level", default=3, show_default=True, type=int, help="Builder optimization level 0..5.")
@click.option("--calibrator", default="qdq", show_default=True, type=click.Choice(CALIBRATORS),
              help="qdq: explicit Q/DQ from 'fyexport calibrate'; trt-entropy: TensorRT 10's own calibrator.")
@click.option("--images", type=click.Path(), help="Calibration images for --calibrator trt-entropy.")
@click.option("--triton-repo", type=click.Path(), help="Also write a Triton model repository here.")
@logging_options
def engine(model, output, precision, workspace, batch, min_batch, opt_batch, max_batch, timing_cache, opt_level,
           calibrator, images, triton_repo):
    """Build a TensorRT engine (TensorRT 10 or 11) from an ONNX model."""
    from ..trt.engine import BuildConfig, build_engine, current_command

    if batch is not None:
        min_batch = opt_batch = max_batch = batch
    cfg = BuildConfig(precision=precision, workspace_gib=workspace, min_batch=min_batch, opt_batch=opt_batch,
                      max_batch=max_batch, timing_cache=timing_cache, optimization_level=opt_level,
                      calibrator=calibrator, calib_images=images, verbose=G_LOGGER.level <= 10,
                      command=current_command())
    res = build_engine(model, output, cfg)
    G_LOGGER.info(f"wrote {res.engine} ({res.meta['int8_layers']} INT8 layers of {res.meta['layers']}) and "
                  f"{res.meta_path} in {res.seconds:.0f} s")
    if triton_repo:
        from ..deploy.triton import write_repository

        G_LOGGER.info(f"wrote Triton model {write_repository(res.engine, triton_repo)}")


@cli.command()
@click.argument("engine_path")
@click.option("--repo", required=True, type=click.Path(), help="Triton model repository folder.")
@click.option("--name", help="Model name (default: the engine's file stem).")
@click.option("--max-batch", type=int, help="max_batch_size (default: the engine profile's max).")
@logging_options
def triton(engine_path, repo, name, max_batch):
    """Write a Triton model repository (config.pbtxt + model.plan) for a built engine."""
    from ..deploy.triton import write_repository

    G_LOGGER.info(f"wrote {write_repository(engine_path, repo, name, max_batch)}")


# -- build / demo -----------------------------------------------------------------------

@cli.command()
@click.option("--weights", required=True, help="YOLOv7 checkpoint (official or fyexport).")
@click.option("--calib", required=True, type=click.Path(),
              help="Folder of sample images: calibration, and (with --train-images) recovery.")
@click.option("-o", "--output", "out", required=True, help="Output folder (artifacts + manifest.json).")
@click.option("--prune", default=0.5, show_default=True, type=float, help="Channel pruning ratio (0: no pruning).")
@click.option("--data", type=click.Path(), help="Data yaml: recovery adds its train split with labels; accuracy is "
              "measured by mAP on its val split (else by agreement with the unpruned model).")
@click.option("--train-images", type=click.Path(), help="More images for recovery (the more, the better).")
@click.option("--no-recover", is_flag=True, help="Do not recover after pruning (the accuracy gate decides).")
@click.option("--recover-target", default=DEFAULT_TARGET, show_default=True, type=float,
              help="Stop recovering once the held-out kept fraction of the unpruned score reaches this.")
@click.option("--recover-minutes", type=float, help="Recovery time limit.  [default: 15 on a CPU, 10 on a GPU]")
@click.option("--recover-epochs", default=100, show_default=True, type=int, help="Recovery epoch limit (0: none).")
@IMG_SIZE
@click.option("--batch", default=1, show_default=True, type=int, help="Static batch of the exported model.")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(PRECISIONS))
@click.option("--method", default="search", show_default=True, type=click.Choice(CALIBRATION_METHODS),
              help=METHOD_HELP)
@click.option("--max-map-drop", type=float, help="Points of mAP@.5:.95 (teacher agreement without labels) the final "
              "model may lose against the unpruned FP32 model.  [default: (1 - recover target) x the unpruned score "
              "+ 1 for quantization; 1 without recovery]")
@click.option("--force", is_flag=True, help="Build the engine even when the accuracy gate fails.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (recovery, engine).")
@click.option("--num-images", default=500, show_default=True, type=int, help="Calibration images to sample.")
@click.option("--recover-batch", default=16, show_default=True, type=int, help="Recovery images per step per process.")
@click.option("--recover-images", type=int, help="Use at most N images for recovery.")
@click.option("--recover-workers", type=int, help="Recovery data loader processes.")
@click.option("--recover-cache", default="auto", show_default=True, type=click.Choice(CACHES),
              help="Recovery images in RAM, on disk, or streamed; auto: in RAM when they fit 1 GiB.")
@click.option("--eval-images", type=int, help="Evaluate on the first N validation images only.")
@click.option("--exclude", help="Regex of convs to keep in float when quantizing.")
@click.option("--no-bench", is_flag=True, help="Skip the quick benchmark.")
@click.option("--bench-duration", default=2.0, show_default=True, type=float, help="Seconds per bench measurement.")
@click.option("--recover-crop", default=RecoverConfig.crop, show_default=True, type=int,
              help="Recover on random crops of this size (320 of 640: 1/4 of the cost; 0: whole images).")
@click.option("--bias-correction", default=32, show_default=True, type=int, help="Images for INT8 bias correction.")
@click.option("--auto-exclude", default=None, type=int,
              help="Keep the K most sensitive scale groups in float.  [default: 4 when pruning, else 0]")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@logging_options
def build(weights, calib, out, prune, data, train_images, no_recover, recover_target, recover_minutes, recover_epochs,
          img_size, batch, precision, method, max_map_drop, force, device, num_images, recover_batch, recover_images,
          recover_workers, recover_cache, eval_images, exclude, no_bench, bench_duration, recover_crop,
          bias_correction, auto_exclude, as_json):
    """Checkpoint + calibration folder -> pruned, recovered, INT8, engine-ready artifacts and a report.

    \b
    Several GPUs or machines: torchrun --nproc-per-node N -m fyexport build ... (recovery runs on
    every process, the other stages on the first).
    """
    from ..pipeline.build import BuildOptions, render_summary, run_build

    opts = BuildOptions(
        weights=weights, calib=calib, out=out, prune=prune, data=data, train_images=train_images,
        recover=not no_recover, recover_target=recover_target, recover_minutes=recover_minutes,
        recover_epochs=recover_epochs, img_size=parse_img_size(img_size), batch=batch, precision=precision,
        method=method, max_map_drop=max_map_drop, force=force, device=device, num_images=num_images,
        recover_batch=recover_batch, recover_images=recover_images, recover_workers=recover_workers,
        recover_cache=recover_cache, recover_crop=recover_crop, eval_images=eval_images, exclude=exclude,
        bench=not no_bench, bench_duration=bench_duration, bias_correction=bias_correction, auto_exclude=auto_exclude)
    try:
        s = run_build(opts)
    except GateError as e:
        s = getattr(e, "summary", None)
        if s is not None and not as_json:
            render_summary(s)
        raise
    if s is not None:
        print_json(s) if as_json else render_summary(s)


@cli.command()
@click.option("-o", "--output", "out", default="fyexport-demo", show_default=True, help="Demo folder.")
@click.option("--calib-images", default=400, show_default=True, type=int,
              help="Generated images for calibration and recovery.")
@click.option("--val-images", default=100, show_default=True, type=int)
@click.option("--prune", default=0.3, show_default=True, type=float)
@click.option("--recover-epochs", default=100, show_default=True, type=int, help="Recovery epoch limit.")
@click.option("--recover-minutes", default=3.5, show_default=True, type=float, help="Recovery time limit.")
@click.option("--device", default="auto", show_default=True)
@logging_options
def demo(out, calib_images, val_images, prune, recover_epochs, recover_minutes, device):
    """Run the whole pipeline on the bundled yolov7-tiny sample (no download)."""
    from pathlib import Path

    from ..data.shapes import demo_data
    from ..pipeline.build import demo_options, render_summary, run_build

    root = Path(out)
    data = demo_data(root / "data", calib_images, val_images)
    opts = demo_options(root / "build", root / "data" / "images" / "train", data, calib_images, prune, recover_epochs,
                        recover_minutes, device)
    try:
        render_summary(run_build(opts, command=f"fyexport demo -o {out}"))
    except GateError as e:
        if getattr(e, "summary", None) is not None:
            render_summary(e.summary)
        raise


# -- entry point ------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    if verbose:
        G_LOGGER.configure(verbose=True)
    try:
        rc = cli.main(args=argv, prog_name="fyexport", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        G_LOGGER.error("interrupted; finished artifacts are kept and a rerun resumes")
        return 130
    except FyexportError as e:
        if verbose:
            import traceback

            traceback.print_exc()
        G_LOGGER.error(str(e))
        return e.exit_code
    except MemoryError:
        G_LOGGER.error("out of memory. Use a smaller --batch or --img-size, or close other programs")
        return 1
    except OSError as e:
        if verbose:
            import traceback

            traceback.print_exc()
        if e.errno == 28:
            G_LOGGER.error(f"disk full{': ' + e.filename if e.filename else ''}. Free space and rerun")
        else:
            G_LOGGER.error(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        return 1
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --verbose
        if verbose:
            import traceback

            traceback.print_exc()
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        G_LOGGER.error(f"unexpected {type(e).__name__}: {msg} (rerun with --verbose for the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
