"""Deployment commands: ``engine`` (TensorRT), ``triton``."""
from __future__ import annotations

from dataclasses import replace

import click

from ..core.log import G_LOGGER
from ..deploy.triton import TritonConfig
from ..trt.engine import CALIBRATORS, PRECISIONS, EngineConfig
from .app import cli, logging_options
from .options import Fields

ENGINE, TRITON = Fields(EngineConfig), Fields(TritonConfig)


@ENGINE.command(cli)
@click.argument("model")
@click.option("-o", "--output", required=True, help="Engine file (.engine / .plan); metadata goes to <engine>.json.")
@ENGINE.option("precision", "--precision", type=click.Choice(PRECISIONS))
@ENGINE.option("workspace_gib", "--workspace", help="Workspace memory pool (GiB).")
@click.option("--batch", type=int, help="Static batch (for a dynamic-batch ONNX: min = opt = max).")
@ENGINE.option("min_batch", "--min-batch")
@ENGINE.option("opt_batch", "--opt-batch")
@ENGINE.option("max_batch", "--max-batch")
@ENGINE.option("timing_cache", "--timing-cache", type=click.Path(), help="Load and save TensorRT's timing cache here.")
@ENGINE.option("optimization_level", "--opt-level", help="Builder optimization level 0..5.")
@ENGINE.option("calibrator", "--calibrator", type=click.Choice(CALIBRATORS),
               help="qdq: explicit Q/DQ from 'fyexport calibrate'; trt-entropy: TensorRT 10's own calibrator.")
@ENGINE.option("calib_images", "--images", type=click.Path(), help="Calibration images for --calibrator trt-entropy.")
@ENGINE.option("dla_core", "--dla-core", type=int,
               help="Build for this DLA core (Jetson, TensorRT 10.3-10.7 or 11.4+): INT8 or FP16 only, one batch size.")
@ENGINE.option("gpu_fallback", "--gpu-fallback/--no-gpu-fallback",
               help="With --dla-core: layers DLA cannot run go to the GPU (off: such a build is refused).")
@click.option("--triton-repo", type=click.Path(), help="Also write a Triton model repository here.")
@logging_options
def engine(cfg, model, output, batch, triton_repo):
    """Build a TensorRT engine (TensorRT 10 or 11) from an ONNX model."""
    from ..trt.engine import build_engine, current_command

    if batch is not None:
        cfg = replace(cfg, min_batch=batch, opt_batch=batch, max_batch=batch)
    cfg = replace(cfg, verbose=G_LOGGER.level <= 10, command=current_command())
    res = build_engine(model, output, cfg)
    G_LOGGER.info(f"wrote {res.engine} ({res.meta.engine.int8_layers} INT8 layers of {res.meta.engine.layers}) and "
                  f"{res.meta_path} in {res.seconds:.0f} s")
    if triton_repo:
        from ..deploy.triton import write_repository

        G_LOGGER.info(f"wrote Triton model {write_repository(res.engine, triton_repo)}")


@TRITON.command(cli)
@click.argument("engine_path")
@click.option("--repo", required=True, type=click.Path(), help="Triton model repository folder.")
@TRITON.option("name", "--name", help="Model name (default: the engine's file stem).")
@TRITON.option("max_batch", "--max-batch", help="max_batch_size (default: the engine profile's max).")
@logging_options
def triton(cfg, engine_path, repo):
    """Write a Triton model repository (config.pbtxt + model.plan) for a built engine."""
    from ..deploy.triton import write_repository

    G_LOGGER.info(f"wrote {write_repository(engine_path, repo, cfg.name, cfg.max_batch)}")
