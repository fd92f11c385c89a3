"""INT8 commands: ``calibrate``, ``inspect``."""
from __future__ import annotations

import click

from ..core.log import G_LOGGER
from ..quantize import CALIBRATION_METHODS, CalibrationConfig
from .app import cli, logging_options, print_json
from .options import Fields

CALIBRATE = Fields(CalibrationConfig)
METHOD_HELP = ("entropy: TensorRT's KL search; mse: NVIDIA's Histogram(MSE); search: per scale group, entropy "
               "unless another method's amax clearly lowers the error of the convs reading it; auto: the one method "
               "whose INT8 outputs stay closest to FP32 on a few calibration images.")


@CALIBRATE.command(cli)
@click.argument("model")
@click.option("--images", required=True, type=click.Path(), help="Folder of calibration images (recursive).")
@click.option("-o", "--output", "out_dir", required=True, help="Output folder.")
@CALIBRATE.option("num_images", "--num-images", help="Images to sample (deterministic).")
@CALIBRATE.option("batch", "--batch", help="Images per histogram batch.")
@CALIBRATE.option("method", "--method", type=click.Choice(CALIBRATION_METHODS), help=METHOD_HELP)
@CALIBRATE.option("percentile", "--percentile")
@CALIBRATE.option("seed", "--seed")
@CALIBRATE.option("exclude", "--exclude",
                  help="Regex of Conv node/tensor names to keep in float (the head's output convs always are).")
@CALIBRATE.option("auto_exclude", "--auto-exclude",
                  help="Keep the K most sensitive scale groups in float (output-error sensitivity analysis).")
@CALIBRATE.option("bias_correction", "--bias-correction",
                  help="Images for per-conv bias correction of the Q/DQ models (0: off).")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def calibrate(cfg, model, images, out_dir, as_json):
    """Calibrate an FP32 ONNX on sample images: TensorRT cache + Q/DQ ONNX models."""
    from ..quantize import calibrate as run

    res = run(model, images, out_dir, cfg)
    summary = {"out_dir": str(res.out_dir), "files": {k: str(v) for k, v in res.files.items()}, "method": res.method,
               "images_used": res.images_used, "images_skipped": res.images_skipped,
               "seconds": round(res.seconds, 2), "peak_rss_mb": res.peak_rss_mb}
    if as_json:
        print_json(summary)
        return
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
