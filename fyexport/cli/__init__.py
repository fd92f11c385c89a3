"""The ``fyexport`` command line (click): thin commands over the library, their options
made from the stages' configurations (:mod:`.options`)."""
from . import deploy_commands, int8_commands, model_commands, pipeline_commands  # noqa: F401 (register the commands)
from .app import cli, main

__all__ = ["cli", "main"]
