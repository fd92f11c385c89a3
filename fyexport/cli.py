"""The ``fyexport`` command line: a thin click layer, one library call per command.

Errors the user can fix print one line (``error: ...``) and exit 2 (bad input) or 1
(failure); tracebacks only with ``--verbose``.
"""
from __future__ import annotations

import functools
import json
import sys

import click

from .errors import FyexportError, InputError
from .log import DEBUG, G_LOGGER


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
    from .artifacts import _json_default

    click.echo(json.dumps(obj, indent=2, default=_json_default))


def parse_img_size(value) -> int | tuple[int, int]:
    if isinstance(value, (int, tuple)):
        return value
    parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--img-size: expected N or H,W, got {value!r}")
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return (nums[0], nums[1])
    raise InputError(f"--img-size: expected N or H,W, got {value!r}")


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
    from .info import describe, render

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
@click.option("--nms", "nms", type=click.Choice(["onnx", "trt-plugin"]), default=None, flag_value="onnx",
              is_flag=False, help="Append NMS: standard ONNX NonMaxSuppression (default) or EfficientNMS_TRT.")
@click.option("--conf-thres", default=0.25, show_default=True, type=float, help="NMS score threshold.")
@click.option("--iou-thres", default=0.45, show_default=True, type=float, help="NMS IoU threshold.")
@click.option("--topk", default=100, show_default=True, type=int, help="NMS detections kept per image.")
@logging_options
def export(weights, output, img_size, batch, dynamic_batch, no_simplify, nms, conf_thres, iou_thres, topk):
    """Export WEIGHTS to ONNX (decoded output [B,N,5+nc], opset 17, onnxsim-simplified)."""
    from .export import export_onnx
    from .models import load

    if not output.lower().endswith(".onnx"):
        raise InputError(f"{output}: the output must end in .onnx")
    nms_cfg = None
    if nms:
        from .nms_onnx import NmsConfig

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
@click.option("--importance", default="l2", show_default=True, help="l2 | l1 | lamp | bn | taylor.")
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
    from . import prune as pr
    from .models import build_model, load, save

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
        from .recover import taylor_loss_fn

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
@click.option("--data", type=click.Path(), help="YOLO data yaml: adds the supervised loss on its train split.")
@click.option("--epochs", default=10, show_default=True, type=int)
@IMG_SIZE
@click.option("--batch", default=16, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--max-images", type=int, help="Use at most this many images (deterministic sample).")
@click.option("--max-minutes", type=float, help="Stop training after this many minutes (schedule fitted to it).")
@click.option("--crop", type=int, help="Train on random CROPxCROP windows of the letterboxed images: same object "
              "scale, a fraction of the compute (e.g. 320 on a CPU).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bfloat16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its per-epoch state file.")
@click.option("-o", "--output", required=True, help="Recovered model (.pt).")
@logging_options
def recover(pruned, teacher, images, data, epochs, img_size, batch, lr, max_images, max_minutes, crop, device, amp,
            seed, resume, output):
    """Recover a pruned model's accuracy by distillation from its unpruned teacher."""
    from .recover import RecoverConfig, recover_from_paths

    size = parse_img_size(img_size)
    if not isinstance(size, int):
        raise InputError("recover trains on square inputs: give one --img-size")
    cfg = RecoverConfig(epochs=epochs, img_size=size, batch=batch, lr=lr, max_images=max_images, seed=seed,
                        device=device, time_budget_s=max_minutes * 60 if max_minutes else None, crop=crop, amp=amp)
    _, summary = recover_from_paths(pruned, teacher, images, data, output, cfg, resume)
    G_LOGGER.info(f"wrote {output} ({summary['iterations']} iterations on {summary['images']} images, "
                  f"{summary['seconds']:.0f} s on {summary['device']})")


@cli.command(name="eval")
@click.argument("artifact")
@click.option("--data", required=True, type=click.Path(), help="YOLO data yaml.")
@click.option("--split", default="val", show_default=True)
@IMG_SIZE
@click.option("--batch", default=8, show_default=True, type=int, help="Ignored for static-batch ONNX/engines.")
@click.option("--conf", default=0.001, show_default=True, type=float)
@click.option("--iou", default=0.65, show_default=True, type=float)
@click.option("--runtime", default="auto", show_default=True, help="auto | torch | onnxruntime | tensorrt.")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-images", type=int, help="Evaluate only the first N images.")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def eval_cmd(artifact, data, split, img_size, batch, conf, iou, runtime, device, max_images, as_json):
    """mAP@.5 and mAP@.5:.95 (pycocotools) of a checkpoint, ONNX model or engine."""
    from .evaluate import evaluate, render
    from .runners import open_runner

    runner = open_runner(artifact, runtime=runtime, device=device, img_size=parse_img_size(img_size))
    with runner:
        res = evaluate(runner, data, split, batch, conf, iou, max_images)
    print_json(res.to_dict()) if as_json else render(res)


# -- INT8 --------------------------------------------------------------------------

@cli.command()
@click.argument("model")
@click.option("--images", required=True, type=click.Path(), help="Folder of calibration images (recursive).")
@click.option("-o", "--output", "out_dir", required=True, help="Output folder.")
@click.option("--num-images", default=500, show_default=True, type=int, help="Images to sample (deterministic).")
@click.option("--batch", default=8, show_default=True, type=int, help="Images per histogram batch.")
@click.option("--method", default="entropy", show_default=True,
              type=click.Choice(["entropy", "minmax", "percentile", "mse", "auto", "search"]),
              help=METHOD_HELP)
@click.option("--percentile", default=99.99, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--exclude", help="Regex of Conv node/tensor names to keep in float (the head's output convs always are).")
@click.option("--auto-exclude", default=0, show_default=True, type=int,
              help="Keep the K most sensitive scale groups in float (output-error sensitivity analysis).")
@click.option("--bias-correction", default=32, show_default=True, type=int,
              help="Images for per-conv bias correction of the Q/DQ models (0: off).")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def calibrate(model, images, out_dir, num_images, batch, method, percentile, seed, exclude, auto_exclude,
              bias_correction, as_json):
    """Calibrate an FP32 ONNX on sample images: TensorRT cache + Q/DQ ONNX models."""
    from .quantize import calibrate as run

    res = run(model, images, out_dir, num_images, batch, method, percentile, seed, exclude,
              auto_exclude=auto_exclude, bias_correction=bias_correction)
    summary = {"out_dir": str(res.out_dir), "files": {k: str(v) for k, v in res.files.items()}, "method": res.method,
               "images_used": res.images_used, "images_skipped": res.images_skipped,
               "seconds": round(res.seconds, 2), "peak_rss_mb": res.peak_rss_mb}
    if as_json:
        print_json(summary)
    else:
        for k, v in res.files.items():
            G_LOGGER.info(f"wrote {v}")
        G_LOGGER.info(f"{res.method} calibration on {res.images_used} images in {res.seconds:.1f} s")


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def inspect(model, as_json):
    """List quantized and float nodes, scales, and Q/DQ placement-rule violations (exit 1 if any)."""
    from .export import check_onnx_file
    from .quantize.inspect import inspect_qdq, render

    rep = inspect_qdq(check_onnx_file(model), str(model))
    print_json(rep.to_dict()) if as_json else render(rep)
    if rep.violations:
        raise click.exceptions.Exit(1)


# -- bench ---------------------------------------------------------------------------

@cli.command()
@click.argument("artifacts", nargs=-1)
@click.option("--baseline", required=True, help="The unpruned FP32 checkpoint everything is compared with.")
@click.option("--runtime", default="auto", show_default=True, help="auto | tensorrt | onnxruntime | torch.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--batch", "batches", default="1", show_default=True, help="Batch sizes, e.g. 1,8,32.")
@IMG_SIZE
@click.option("--warmup", default=0.2, show_default=True, type=float, help="Warm-up seconds per measurement.")
@click.option("--duration", default=3.0, show_default=True, type=float, help="Measuring seconds per measurement.")
@click.option("--data", type=click.Path(), help="Data yaml: adds mAP@.5:.95 and its drop to every row.")
@click.option("--eval-images", type=int, help="Evaluate mAP on the first N validation images only.")
@click.option("--images", type=click.Path(), help="Real images for the end-to-end timing (default: the val split).")
@click.option("--json", "json_out", help="Write the report as JSON (schema: benchmarks/schema.json).")
@click.option("--plot", "plot_out", help="Write a PNG plot (latency vs mAP, speedup bars).")
@logging_options
def bench(artifacts, baseline, runtime, device, batches, img_size, warmup, duration, data, eval_images, images,
          json_out, plot_out):
    """Latency, throughput and accuracy of ARTIFACTS against the unpruned FP32 BASELINE."""
    from . import bench as b

    try:
        sizes = [int(v) for v in str(batches).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--batch: expected comma-separated integers, got {batches!r}")
    report = b.run_bench(list(artifacts), baseline, runtime, device, sizes, parse_img_size(img_size), warmup,
                         duration, data, images, eval_images)
    b.render(report)
    if json_out:
        b.write_json(report, json_out)
        G_LOGGER.info(f"wrote {json_out}")
    if plot_out:
        b.plot(report, plot_out)
        G_LOGGER.info(f"wrote {plot_out}")


# -- TensorRT ---------------------------------------------------------------------------

@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Engine file (.engine / .plan); metadata goes to <engine>.json.")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(["fp32", "fp16", "int8"]))
@click.option("--workspace", default=4.0, show_default=True, type=float, help="Workspace memory pool (GiB).")
@click.option("--batch", type=int, help="Static batch (for a dynamic-batch ONNX: min = opt = max).")
@click.option("--min-batch", type=int)
@click.option("--opt-batch", type=int)
@click.option("--max-batch", type=int)
@click.option("--timing-cache", type=click.Path(), help="Load and save TensorRT's timing cache here.")
@click.option("--opt-level", default=3, show_default=True, type=int, help="Builder optimization level 0..5.")
@click.option("--calibrator", default="qdq", show_default=True, type=click.Choice(["qdq", "trt-entropy"]),
              help="qdq: explicit Q/DQ from 'fyexport calibrate'; trt-entropy: TensorRT 10's own calibrator.")
@click.option("--images", type=click.Path(), help="Calibration images for --calibrator trt-entropy.")
@click.option("--triton-repo", type=click.Path(), help="Also write a Triton model repository here.")
@logging_options
def engine(model, output, precision, workspace, batch, min_batch, opt_batch, max_batch, timing_cache, opt_level,
           calibrator, images, triton_repo):
    """Build a TensorRT engine (TensorRT 10 or 11) from an ONNX model."""
    from .trt.builder import BuildConfig, build_engine, current_command

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
        from .trt.triton import write_repository

        G_LOGGER.info(f"wrote Triton model {write_repository(res.engine, triton_repo)}")


@cli.command()
@click.argument("engine_path")
@click.option("--repo", required=True, type=click.Path(), help="Triton model repository folder.")
@click.option("--name", help="Model name (default: the engine's file stem).")
@click.option("--max-batch", type=int, help="max_batch_size (default: the engine profile's max).")
@logging_options
def triton(engine_path, repo, name, max_batch):
    """Write a Triton model repository (config.pbtxt + model.plan) for a built engine."""
    from .trt.triton import write_repository

    G_LOGGER.info(f"wrote {write_repository(engine_path, repo, name, max_batch)}")


# -- build / demo -----------------------------------------------------------------------

@cli.command()
@click.option("--weights", required=True, help="YOLOv7 checkpoint (official or fyexport).")
@click.option("--calib", required=True, type=click.Path(), help="Folder of calibration images.")
@click.option("-o", "--output", "out", required=True, help="Output folder (artifacts + manifest.json).")
@click.option("--prune", default=0.5, show_default=True, type=float, help="Channel pruning ratio (0: no pruning).")
@click.option("--recover-epochs", default=0, show_default=True, type=int, help="Distillation epochs after pruning.")
@click.option("--data", type=click.Path(), help="Data yaml: mAP of FP32 vs INT8 and the mAP gate.")
@click.option("--img-size", default=640, show_default=True, type=int)
@click.option("--batch", default=1, show_default=True, type=int, help="Static batch of the exported model.")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(["int8", "fp16", "fp32"]))
@click.option("--method", default="search", show_default=True,
              type=click.Choice(["entropy", "minmax", "percentile", "mse", "auto", "search"]),
              help=METHOD_HELP)
@click.option("--max-map-drop", default=1.0, show_default=True, type=float, help="mAP@.5:.95 points INT8 may lose.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (recovery, engine).")
@click.option("--num-images", default=500, show_default=True, type=int, help="Calibration images to sample.")
@click.option("--recover-batch", default=16, show_default=True, type=int)
@click.option("--recover-images", type=int, help="Use at most N images for recovery.")
@click.option("--eval-images", type=int, help="Evaluate on the first N validation images only.")
@click.option("--exclude", help="Regex of convs to keep in float when quantizing.")
@click.option("--no-bench", is_flag=True, help="Skip the quick benchmark.")
@click.option("--bench-duration", default=2.0, show_default=True, type=float, help="Seconds per bench measurement.")
@click.option("--recover-crop", type=int, help="Recover on random crops of this size (e.g. 320: 1/4 of the cost).")
@click.option("--recover-minutes", type=float, help="Time budget for recovery (the schedule is fitted to it).")
@click.option("--bias-correction", default=32, show_default=True, type=int, help="Images for INT8 bias correction.")
@click.option("--auto-exclude", default=None, type=int,
              help="Keep the K most sensitive scale groups in float.  [default: 4 when pruning, else 0]")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@logging_options
def build(weights, calib, out, prune, recover_epochs, data, img_size, batch, precision, method, max_map_drop, device,
          num_images, recover_batch, recover_images, eval_images, exclude, no_bench, bench_duration, recover_crop,
          recover_minutes, bias_correction, auto_exclude, as_json):
    """Checkpoint + calibration folder -> pruned, INT8, engine-ready artifacts and a report."""
    from .build import BuildOptions, render_summary, run_build

    opts = BuildOptions(weights=weights, calib=calib, out=out, prune=prune, recover_epochs=recover_epochs, data=data,
                        img_size=img_size, batch=batch, precision=precision, method=method, max_map_drop=max_map_drop,
                        device=device, num_images=num_images, recover_batch=recover_batch,
                        recover_images=recover_images, recover_crop=recover_crop, recover_minutes=recover_minutes,
                        eval_images=eval_images, exclude=exclude, bench=not no_bench, bench_duration=bench_duration,
                        bias_correction=bias_correction, auto_exclude=auto_exclude)
    s = run_build(opts)
    print_json(s) if as_json else render_summary(s)


@cli.command()
@click.option("-o", "--output", "out", default="fyexport-demo", show_default=True, help="Demo folder.")
@click.option("--calib-images", default=400, show_default=True, type=int,
              help="Generated images for calibration and recovery.")
@click.option("--val-images", default=100, show_default=True, type=int)
@click.option("--prune", default=0.3, show_default=True, type=float)
@click.option("--recover-epochs", default=40, show_default=True, type=int,
              help="Epochs on 320x320 crops (at most 4 minutes of training).")
@click.option("--device", default="auto", show_default=True)
@logging_options
def demo(out, calib_images, val_images, prune, recover_epochs, device):
    """Run the whole pipeline on the bundled yolov7-tiny sample (no download)."""
    from .build import render_summary
    from .demo import run_demo

    render_summary(run_demo(out, calib_images, val_images, prune, recover_epochs, device))


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
