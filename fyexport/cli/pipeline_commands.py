"""The pipeline commands: ``build``, ``demo``, ``bench``."""
from __future__ import annotations

import click

from ..bench.run import BenchConfig
from ..core.errors import GateError
from ..core.log import G_LOGGER
from ..pipeline.build import BuildConfig, DemoConfig
from ..quantize import CALIBRATION_METHODS
from ..recover import CACHES
from ..runners import RUNTIMES
from ..trt.engine import PRECISIONS
from .app import cli, logging_options, print_json
from .int8_commands import METHOD_HELP
from .options import BATCH_LIST, Fields

BENCH, BUILD = Fields(BenchConfig), Fields(BuildConfig)
DEMO = Fields(DemoConfig, runs=(BUILD, "build", {"prune.ratio": "prune", "recover.minutes": "recover_minutes",
                                                 "recover.epochs": "recover_epochs", "device": "device"}))


@BENCH.command(cli)
@click.argument("artifacts", nargs=-1)
@click.option("--baseline", required=True, help="The unpruned FP32 checkpoint everything is compared with.")
@BENCH.option("runtime", "--runtime", type=click.Choice(RUNTIMES))
@BENCH.option("device", "--device", help="auto | cpu | cuda.")
@BENCH.option("batches", "--batch", "batches", type=BATCH_LIST, help="Batch sizes, e.g. 1,8,32.")
@BENCH.option("img_size", "--img-size", help="Input size N or H,W (checkpoints; exports have their own).")
@BENCH.option("warmup", "--warmup", help="Warm-up seconds per measurement.")
@BENCH.option("duration", "--duration", help="Measuring seconds per measurement.")
@BENCH.option("data", "--data", type=click.Path(), help="Data yaml: adds mAP@.5:.95 and its drop to every row.")
@BENCH.option("max_eval_images", "--eval-images", type=int, help="Evaluate mAP on the first N validation images only.")
@BENCH.option("images", "--images", type=click.Path(), help="Real images for the end-to-end timing and teacher "
              "agreement (default: the val split).")
@BENCH.option("agreement_images", "--agreement-images", help="Images for teacher agreement with the baseline "
              "(0: none).")
@click.option("--json", "json_out", help="Write the report as JSON (schema: benchmarks/schema.json).")
@click.option("--plot", "plot_out", help="Write a PNG plot (latency vs mAP, speedup bars).")
@logging_options
def bench(cfg, artifacts, baseline, json_out, plot_out):
    """Latency, throughput and accuracy of ARTIFACTS against the unpruned FP32 BASELINE."""
    from .. import bench as b
    from ..core.artifacts import write_json

    report = b.run_bench(list(artifacts), baseline, cfg)
    b.render(report)
    if json_out:
        write_json(json_out, report.to_dict())
        G_LOGGER.info(f"wrote {json_out}")
    if plot_out:
        b.plot(report, plot_out)
        G_LOGGER.info(f"wrote {plot_out}")


@BUILD.command(cli)
@BUILD.option("weights", "--weights", required=True, help="YOLOv7 checkpoint (official or fyexport).")
@BUILD.option("calib", "--calib", required=True, type=click.Path(),
              help="Folder of sample images: calibration, and (with --train-images) recovery.")
@BUILD.option("out", "-o", "--output", "out", required=True, help="Output folder (artifacts + manifest.json).")
@BUILD.option("prune.ratio", "--prune", help="Channel pruning ratio (0: no pruning).")
@BUILD.option("data", "--data", type=click.Path(), help="Data yaml: recovery adds its train split with labels; "
              "accuracy is measured by mAP on its val split (else by agreement with the unpruned model).")
@BUILD.option("train_images", "--train-images", type=click.Path(), help="More images for recovery (the more, the "
              "better).")
@BUILD.option("run_recover", "--recover/--no-recover", help="Recover after pruning (--no-recover: the accuracy gate "
              "decides).")
@BUILD.option("recover.target", "--recover-target",
              help="Stop recovering once the held-out kept fraction of the unpruned score reaches this.")
@BUILD.option("recover.minutes", "--recover-minutes", help="Recovery time limit.  [default: 15 on a CPU, 10 on a "
              "GPU]")
@BUILD.option("recover.epochs", "--recover-epochs", help="Recovery epoch limit (0: no recovery).")
@BUILD.option("img_size", "--img-size", help="Input size N or H,W (rounded up to the model's stride).")
@BUILD.option("export.batch", "--batch", help="Static batch of the exported model.")
@BUILD.option("engine.precision", "--precision", type=click.Choice([p for p in PRECISIONS if p != "auto"]))
@BUILD.option("calibrate.method", "--method", type=click.Choice(CALIBRATION_METHODS), help=METHOD_HELP)
@BUILD.option("max_map_drop", "--max-map-drop", type=float, help="Points of mAP@.5:.95 (teacher agreement without "
              "labels) the final model may lose against the unpruned FP32 model.  [default: (1 - recover target) x "
              "the unpruned score + 1 for quantization; 1 without recovery]")
@BUILD.option("force", "--force", is_flag=True, help="Build the engine even when the accuracy gate fails.")
@BUILD.option("overwrite", "--overwrite", is_flag=True, help="Replace files with the build's names (model.onnx, "
              "calib.cache, ...) in an output folder that is not a fyexport build folder (else refused).")
@BUILD.option("device", "--device", help="auto | cpu | cuda (recovery, engine).")
@BUILD.option("calibrate.num_images", "--num-images", help="Calibration images to sample.")
@BUILD.option("recover.batch", "--recover-batch", help="Recovery images per step per process.")
@BUILD.option("recover.max_images", "--recover-images", help="Use at most N images for recovery.")
@BUILD.option("recover.workers", "--recover-workers", help="Recovery data loader processes.")
@BUILD.option("recover.cache", "--recover-cache", type=click.Choice(CACHES),
              help="Recovery images in RAM, on disk, or streamed; auto: in RAM when they fit 1 GiB.")
@BUILD.option("eval_images", "--eval-images", type=int, help="Evaluate on the first N validation images only.")
@BUILD.option("calibrate.exclude", "--exclude", help="Regex of convs to keep in float when quantizing.")
@BUILD.option("run_bench", "--bench/--no-bench", help="Run the quick benchmark.")
@BUILD.option("bench.duration", "--bench-duration", help="Seconds per bench measurement.")
@BUILD.option("recover.crop", "--recover-crop",
              help="Recover on random crops of this size (320 of 640: 1/4 of the cost; 0: whole images).")
@BUILD.option("calibrate.bias_correction", "--bias-correction", help="Images for INT8 bias correction.")
@BUILD.option("auto_exclude", "--auto-exclude", type=int,
              help="Keep the K most sensitive scale groups in float.  [default: 4 when pruning, else 0]")
@BUILD.option("run_qat", "--qat/--no-qat", help="Train the INT8 models with fake quantization in the loop (every "
              "conv but the detection head in INT8, distilled from the unpruned model), starting from the calibration."
              "  [default: on when pruning and recovering an INT8 build]")
@BUILD.option("qat.minutes", "--qat-minutes", help="Time limit of quantization-aware training.  [default: a quarter "
              "of the recovery time (taken from it), 4 without recovery]")
@BUILD.option("qat.steps", "--qat-steps", help="Step limit of quantization-aware training.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@logging_options
def build(cfg, as_json):
    """Checkpoint + calibration folder -> pruned, recovered, INT8, engine-ready artifacts and a report.

    \b
    Several GPUs or machines: torchrun --nproc-per-node N -m fyexport build ... (recovery runs on
    every process, the other stages on the first).
    """
    from ..pipeline.build import render_summary, run_build

    try:
        s = run_build(cfg)
    except GateError as e:
        if e.summary is not None:
            print_json(e.summary.to_dict()) if as_json else render_summary(e.summary)
        raise
    if s is not None:
        print_json(s.to_dict()) if as_json else render_summary(s)


@DEMO.command(cli)
@DEMO.option("out", "-o", "--output", "out", help="Demo folder.")
@DEMO.option("calib_images", "--calib-images", help="Generated images for calibration and recovery.")
@DEMO.option("val_images", "--val-images")
@DEMO.option("prune", "--prune")
@DEMO.option("recover_epochs", "--recover-epochs", help="Recovery epoch limit.")
@DEMO.option("recover_minutes", "--recover-minutes", help="Recovery time limit.")
@DEMO.option("device", "--device")
@logging_options
def demo(cfg):
    """Run the whole pipeline on the bundled yolov7-tiny sample (no download)."""
    from pathlib import Path

    from ..data.shapes import demo_data
    from ..pipeline.build import render_summary, run_build

    root = Path(cfg.out)
    data = demo_data(root / "data", cfg.calib_images, cfg.val_images)
    try:
        render_summary(run_build(cfg.build_config(root / "data" / "images" / "train", data),
                                 command=f"fyexport demo -o {cfg.out}"))
    except GateError as e:
        if e.summary is not None:
            render_summary(e.summary)
        raise
