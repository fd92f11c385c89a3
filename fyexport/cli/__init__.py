"""The ``fyexport`` command line (click): thin commands over the library."""
from .commands import cli, main

__all__ = ["cli", "main"]
