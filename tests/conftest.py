"""Shared test fixtures.

The fixtures in ../shared (official-format checkpoints, golden outputs, official cfgs)
are test data only.  Set FYEXPORT_SHARED to point elsewhere.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FYEXPORT_SHARED", REPO.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
CFG_DIR = SHARED / "yolov7-cfg" / "cfg"
TINY = FIXTURES / "yolov7-tiny-shapes.pt"
FULL = FIXTURES / "yolov7-shapes.pt"
GOLDEN = FIXTURES / "golden_outputs.npz"

needs_shared = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared fixtures not found at {SHARED} "
                                  "(set FYEXPORT_SHARED)")


def run_cli(*args, cwd=None, timeout=900):
    """Run ``python -m fyexport ARGS``; return CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "fyexport", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def shared():
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model(shared):
    import fyexport

    return fyexport.load(TINY)


@pytest.fixture(scope="session")
def full_model(shared):
    import fyexport

    return fyexport.load(FULL)


@pytest.fixture(scope="session")
def golden(shared):
    import numpy as np

    return np.load(GOLDEN)


def _make_shapes(root: Path, train: int, val: int) -> Path:
    from fyexport.datasets import shapes

    shapes.generate(root, train=train, val=val)
    return root / "shapes.yaml"


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """A small shapes data set (8 train, 16 val images) with its data yaml."""
    root = tmp_path_factory.mktemp("shapes_small")
    return _make_shapes(root, 8, 16)
