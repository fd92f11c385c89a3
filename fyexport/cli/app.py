"""The ``fyexport`` group, the logging options every command takes, and the entry point
that turns errors into one line and an exit code.

Errors the user can fix print one line (``error: ...``) and exit 2 (bad input) or 1
(failure); tracebacks only with ``--verbose``.
"""
from __future__ import annotations

import functools
import sys

import click

from ..core.errors import FyexportError
from ..core.log import DEBUG, G_LOGGER


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fyexport", message="fyexport %(version)s")
@logging_options
def cli():
    """fyexport: YOLOv7 checkpoint -> pruned, INT8, TensorRT-ready deployment.

    \b
    Pipeline: load -> prune -> recover -> export ONNX -> calibrate -> Q/DQ -> engine -> bench.
    Start with `fyexport demo`, or `fyexport build --weights W.pt --calib DIR -o OUT`.
    """


def _traceback_if(verbose: bool) -> None:
    if verbose:
        import traceback

        traceback.print_exc()


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
        _traceback_if(verbose)
        G_LOGGER.error(str(e))
        return e.exit_code
    except MemoryError:
        G_LOGGER.error("out of memory. Use a smaller --batch or --img-size, or close other programs")
        return 1
    except OSError as e:
        _traceback_if(verbose)
        if e.errno == 28:
            G_LOGGER.error(f"disk full{': ' + e.filename if e.filename else ''}. Free space and rerun")
        else:
            G_LOGGER.error(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
        return 1
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --verbose
        _traceback_if(verbose)
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        G_LOGGER.error(f"unexpected {type(e).__name__}: {msg} (rerun with --verbose for the traceback)")
        return 1
