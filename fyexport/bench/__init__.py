"""``fyexport bench``: speed and accuracy of every artifact beside the unpruned FP32 model.

``plan`` (what is timed), ``timing`` (how), ``run`` (the loop over targets and batches),
``report`` (rows, speedups, the table, the plot)."""
from .plan import BenchConfig
from .report import plot, render
from .run import run_bench

__all__ = ["BenchConfig", "plot", "render", "run_bench"]
