"""Commands on models: ``info``, ``export``, ``prune``, ``recover``, ``eval``."""
from __future__ import annotations

from dataclasses import replace

import click

from ..core.errors import InputError
from ..core.log import G_LOGGER
from ..core.meta import NMS_KINDS
from ..evaluation.detections import EvalConfig
from ..info import InfoConfig
from ..onnx.export import ExportConfig
from ..prune import IMPORTANCES, PruneConfig
from ..recover import CACHES, RecoverConfig
from ..recover.qat import QatConfig
from ..runners import RUNTIMES
from .app import cli, logging_options, print_json
from .options import Fields

INFO, EXPORT, PRUNE, RECOVER, EVAL = (Fields(c) for c in (InfoConfig, ExportConfig, PruneConfig, RecoverConfig,
                                                         EvalConfig))
RECOVER_QAT = Fields(QatConfig)  # `recover --qat`: quantization-aware training after recovery


@INFO.command(cli)
@click.argument("target", required=False)
@click.option("--cfg", type=click.Path(), help="Describe a model built from this cfg yaml instead.")
@click.option("--nc", type=int, help="Class count override for --cfg.")
@INFO.option("img_size", "--img-size", help="Input size N or H,W (MACs are counted at it).")
@INFO.option("fuse", "--fuse", is_flag=True, help="Describe the fused deployment form.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@logging_options
def info(cfg_, target, cfg, nc, as_json):
    """Describe a checkpoint, an ONNX file, a build folder (its manifest) or a cfg."""
    from ..info import describe, render

    if (target is None) == (cfg is None):
        raise InputError("give exactly one of TARGET or --cfg")
    d = describe(target, cfg=cfg, nc=nc, img_size=cfg_.img_size, fuse=cfg_.fuse)
    print_json(d) if as_json else render(d)


@EXPORT.command(cli)
@click.argument("weights")
@click.option("-o", "--output", required=True, help="Output .onnx path.")
@EXPORT.option("img_size", "--img-size", help="Input size N or H,W (rounded up to the model's stride).")
@EXPORT.option("batch", "--batch", help="Static batch size.")
@EXPORT.option("dynamic_batch", "--dynamic-batch", is_flag=True, help="Symbolic batch axis.")
@EXPORT.option("simplify", "--simplify/--no-simplify", help="Simplify with onnxsim (checked against the original).")
@click.option("--nms", "nms", type=click.Choice(NMS_KINDS), flag_value="onnx", is_flag=False,
              help="Append NMS: standard ONNX NonMaxSuppression (default; TensorRT's INMSLayer, dynamic batch) or "
                   "trt-plugin: EfficientNMS_TRT (deprecated, as in TensorRT 10.12+).")
@EXPORT.option("nms.conf_thres", "--conf-thres", help="NMS score threshold.")
@EXPORT.option("nms.iou_thres", "--iou-thres", help="NMS IoU threshold.")
@EXPORT.option("nms.topk", "--topk", help="NMS detections kept per image (at most 3840: TensorRT's TopK).")
@logging_options
def export(cfg, weights, output, nms):
    """Export WEIGHTS to ONNX (decoded output [B,N,5+nc], opset 17, onnxsim-simplified)."""
    from ..models import load
    from ..onnx.export import export_onnx

    if not output.lower().endswith(".onnx"):
        raise InputError(f"{output}: the output must end in .onnx")
    cfg = replace(cfg, nms=replace(cfg.nms, kind=nms) if nms else None)
    cfg.validate()
    r = export_onnx(load(weights), output, cfg)
    G_LOGGER.info(f"wrote {r.path}  input {r.input_shape}  output {r.output_shape}  "
                  f"{'simplified' if r.simplified else 'not simplified'}")


@PRUNE.command(cli)
@click.argument("weights", required=False)
@click.option("--cfg", "cfg_yaml", type=click.Path(),
              help="Prune a fresh model built from this cfg instead of WEIGHTS.")
@click.option("--nc", type=int, help="Class count for --cfg.")
@PRUNE.option("ratio", "--ratio", help="Channel pruning ratio, in (0, 1).")
@click.option("-o", "--output", help="Where to save the pruned model (.pt, fyexport format).")
@PRUNE.option("importance", "--importance", type=click.Choice(IMPORTANCES))
@PRUNE.option("round_to", "--round-to", help="Round channel counts (0: no rounding).")
@PRUNE.option("global_pruning", "--global", "global_pruning", is_flag=True, help="Global instead of per-layer ranking.")
@PRUNE.option("count_size", "--count-size", type=int, help="Input size for MAC counting.")
@PRUNE.option("ignore", "--ignore", help="Regex of conv names to leave unpruned (the head's output convs always are).")
@PRUNE.option("fuse", "--fuse/--no-fuse", help="Prune the fused deployment graph (--no-fuse: the training graph, "
              "BN, RepConv, implicits).")
@click.option("--data", type=click.Path(), help="Data yaml (labels) for --importance taylor.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@logging_options
def prune(cfg, weights, cfg_yaml, nc, output, data, as_json):
    """Structured channel pruning (Torch-Pruning DepGraph); prints MACs/params before and after."""
    from .. import prune as pr
    from ..models import build_model, load, save

    if (weights is None) == (cfg_yaml is None):
        raise InputError("give exactly one of WEIGHTS or --cfg")
    cfg.validate()
    if output and not output.endswith((".pt", ".pth")):
        raise InputError(f"{output}: the pruned model is saved as .pt")
    model = build_model(cfg_yaml, nc=nc) if cfg_yaml else load(weights)
    taylor = None
    if cfg.importance == "taylor":
        if not data:
            raise InputError("--importance taylor needs --data (a labelled data yaml) for loss gradients")
        from ..recover import taylor_loss_fn

        taylor = taylor_loss_fn(data, model)
    pruned, res = pr.prune(model, cfg, taylor_batches=taylor)
    if output:
        save(pruned, output)
    if as_json:
        print_json(res.to_dict() | ({"output": output} if output else {}))
        return
    pr.render(res)
    if output:
        G_LOGGER.info(f"wrote {output}")
    G_LOGGER.warning("a pruned model needs recovery before it detects well: run 'fyexport recover'", once=True)


@RECOVER.command(cli)
@click.argument("pruned")
@click.option("--teacher", required=True, help="The unpruned checkpoint the pruned model came from.")
@click.option("--images", type=click.Path(), help="Folder of sample images (label-free distillation).")
@click.option("--data", type=click.Path(), help="YOLO data yaml: adds the supervised loss on its train split; the "
              "kept fraction is then measured by mAP on its val split.")
@RECOVER.option("epochs", "--epochs", help="Epoch limit.")
@RECOVER.option("max_steps", "--max-steps", help="Step limit (optimizer steps), beside the epoch and time limits.")
@RECOVER.option("img_size", "--img-size", help="Input size N or H,W (rounded up to the model's stride).")
@RECOVER.option("batch", "--batch", help="Images per step per process.")
@RECOVER.option("lr", "--lr", help="AdamW learning rate for a global batch of 16 (scaled by sqrt(global batch / 16)).")
@RECOVER.option("max_images", "--max-images", help="Use at most this many images (deterministic sample).")
@RECOVER.option("target", "--target",
                help="Stop once the held-out kept fraction of the teacher's score reaches this (1: never early).")
@RECOVER.option("minutes", "--max-minutes", help="Time limit for training.  [default: 15 on a CPU, 10 on a GPU]")
@RECOVER.option("check_every", "--check-every", help="Steps between held-out checks of the kept fraction.")
@RECOVER.option("crop", "--crop", help="Train on random CROPxCROP windows of the letterboxed images: same object "
                "scale, a fraction of the compute (0: whole images).")
@RECOVER.option("reconstruct", "--reconstruct", help="Refit the pruned convs to the teacher by least squares on "
                "this many crops first (0: off, re-estimate BatchNorm instead).")
@RECOVER.option("workers", "--workers", help="Data loader processes.  [default: 1 on a CPU, up to 8 on a GPU]")
@RECOVER.option("cache", "--cache", type=click.Choice(CACHES),
                help="Keep letterboxed images in RAM or on disk; auto: in RAM when they fit 1 GiB, else streamed.")
@RECOVER.option("device", "--device", help="auto | cpu | cuda.")
@RECOVER.option("amp", "--amp/--no-amp", help="bfloat16 autocast on CUDA and on CPUs with native bf16 (AMX, "
                "AVX512-BF16).")
@RECOVER.option("seed", "--seed")
@click.option("--qat", is_flag=True, help="Then train with INT8 in the loop and write the Q/DQ models beside the "
              "output (every conv but the detection head in INT8), in a quarter of the time limit.")
@RECOVER_QAT.option("minutes", "--qat-minutes", help="Time limit of quantization-aware training.  [default: a "
                    "quarter of --max-minutes, taken from recovery]")
@RECOVER_QAT.option("steps", "--qat-steps", help="Step limit of quantization-aware training.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its state file.")
@click.option("-o", "--output", required=True, help="Recovered model (.pt).")
@logging_options
def recover(cfg, pruned, teacher, images, data, qat, qat_minutes, qat_steps, resume, output):
    """Recover a pruned model's accuracy by distillation from its unpruned teacher.

    \b
    Several GPUs or machines: torchrun --nproc-per-node N -m fyexport recover ...
    """
    from ..recover import recover_from_paths

    qcfg = None
    if not qat and (qat_minutes is not None or qat_steps != QatConfig.steps):
        raise InputError("--qat-minutes and --qat-steps set quantization-aware training", "Add --qat")
    if qat:
        with RECOVER_QAT.flags_named():
            qcfg = RECOVER_QAT.config({"qat_minutes": qat_minutes, "qat_steps": qat_steps})
            qcfg.validate()
    _, summary = recover_from_paths(pruned, teacher, images, data, output, cfg, resume, qcfg)
    if summary is not None:
        best = summary.get("best") or {}
        G_LOGGER.info(f"wrote {output} ({summary['iterations']} steps on {summary['images']} images, "
                      f"{summary['seconds']:.0f} s on {summary['device']} x{summary['world_size']}, stopped by "
                      f"{summary['stopped']}" + (f", kept {best['kept']:.1%}" if best else "") + ")")


@EVAL.command(cli, name="eval")
@click.argument("artifact")
@click.option("--data", type=click.Path(), help="YOLO data yaml: mAP against its labels.")
@click.option("--teacher", type=click.Path(),
              help="The unpruned checkpoint: also (or, without --data, only) its teacher agreement.")
@click.option("--images", type=click.Path(), help="Images for teacher agreement without --data (never trained on).")
@EVAL.option("split", "--split")
@EVAL.option("img_size", "--img-size", help="Input size N or H,W (checkpoints; an ONNX model or engine has its own).")
@EVAL.option("batch", "--batch", help="Images per inference (split to what the artifact accepts).")
@EVAL.option("conf", "--conf")
@EVAL.option("iou", "--iou")
@EVAL.option("runtime", "--runtime", type=click.Choice(RUNTIMES))
@EVAL.option("device", "--device")
@EVAL.option("max_images", "--max-images", help="Evaluate only the first N images.")
@click.option("--json", "as_json", is_flag=True)
@logging_options
def eval_cmd(cfg, artifact, data, teacher, images, as_json):
    """mAP@.5 and mAP@.5:.95 (pycocotools) of a checkpoint, ONNX model or engine; with
    --teacher, the agreement of its detections with the unpruned model's."""
    from ..evaluation.agreement import agreement_with
    from ..evaluation.metrics import evaluate, render
    from ..runners import open_runner

    if not data and not (teacher and images):
        raise InputError("give --data (labels), or --teacher W.pt with --images DIR (teacher agreement)")
    cfg.validate()
    runner = open_runner(artifact, runtime=cfg.runtime, device=cfg.device, img_size=cfg.img_size)
    with runner:
        res = evaluate(runner, data, cfg.split, cfg.batch, cfg.conf, cfg.iou, cfg.max_images) if data else None
        agree = (agreement_with(runner, teacher, data, images, cfg.split, cfg.max_images, cfg.device)
                 if teacher else None)
    if as_json:
        print_json((res.to_dict() if res else {}) | ({"teacher_agreement": agree} if agree else {}))
        return
    if res:
        render(res)
    if agree:
        click.echo(f"teacher agreement {agree['agreement']:.4f} (AP@.5 against {agree['teacher']}'s detections "
                   f"scoring >= {agree['teacher_conf']} on {agree['images']} images; strict, AP@.5:.95: "
                   f"{agree['agreement_strict']:.4f})")
