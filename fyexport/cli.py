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


# -- entry point ------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    if verbose:
        G_LOGGER.configure(verbose=True)
    try:
        cli.main(args=argv, prog_name="fyexport", standalone_mode=False)
        return 0
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
