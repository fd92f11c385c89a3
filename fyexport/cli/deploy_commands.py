"""Deployment commands: ``engine`` (TensorRT), ``triton``, ``deepstream``."""
from __future__ import annotations

from dataclasses import replace

import click

from ..core.log import G_LOGGER
from ..deploy.deepstream import CLUSTERS, DS_RELEASES, DeepStreamConfig
from ..deploy.triton import TritonConfig
from ..trt.engine import CALIBRATORS, PRECISIONS, EngineConfig
from .app import cli, logging_options
from .options import Fields

ENGINE, TRITON, DEEPSTREAM = Fields(EngineConfig), Fields(TritonConfig), Fields(DeepStreamConfig)


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


@DEEPSTREAM.command(cli)
@click.argument("source")
@DEEPSTREAM.option("out_dir", "-o", "--output", "out_dir", required=True, type=click.Path(),
                   help="Output folder: nvinfer config, labels.txt, the model, the parser source, a deepstream-app "
                        "config.")
@DEEPSTREAM.option("deepstream", "--deepstream", type=click.Choice(list(DS_RELEASES)),
                   help="DeepStream release to target (its network modes, CUDA_VER, the TensorRT an engine must "
                        "match).")
@DEEPSTREAM.option("conf_thres", "--conf-thres", help="pre-cluster-threshold: keep detections scoring above this.")
@DEEPSTREAM.option("iou_thres", "--iou-thres",
                   help="NMS IoU (compiled into the parser; nvinfer's nms-iou-threshold with --cluster nvinfer).")
@DEEPSTREAM.option("max_det", "--max-det", help="Detections kept per image (topk).")
@DEEPSTREAM.option("batch_size", "--batch-size", type=int, help="nvinfer batch-size.  [default: the model's static "
                   "batch, the engine profile's maximum, or 1]")
@DEEPSTREAM.option("cluster", "--cluster", type=click.Choice(CLUSTERS),
                   help="parser: fyexport's NMS runs in the parser, so DeepStream keeps fyexport's boxes; nvinfer: "
                        "the parser gives candidates to nvinfer's per-class NMS (cluster-mode=2).")
@DEEPSTREAM.option("gpu_id", "--gpu-id", help="nvinfer gpu-id.")
@logging_options
def deepstream(cfg, source):
    """Write a DeepStream nvinfer config, labels, the parser library's source and a deepstream-app
    example for an ONNX model, a TensorRT engine or a build folder."""
    from pathlib import Path

    from ..deploy.deepstream import write_deepstream

    r = write_deepstream(replace(cfg, source=Path(source), out_dir=Path(cfg.out_dir)))
    for note in r.notes:
        G_LOGGER.warning(note)
    G_LOGGER.info(f"wrote {r.config} for {r.source.name} ({r.layout} output, {r.num_classes} classes, "
                  f"network-mode={r.network_mode}, batch-size={r.batch_size}), {r.labels.name}, {r.parser_dir.name}/ "
                  f"and {r.app_config.name}")
    G_LOGGER.info(f"on the DeepStream machine: 'make -C {r.parser_dir}' then 'deepstream-app -c {r.app_config}'")
