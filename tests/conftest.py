"""Shared test fixtures.

Tests run on what the repository holds: the bundled yolov7-tiny checkpoint and the small
files in tests/data (its golden outputs, reference figures, a photo).  The full 75 MB
checkpoint, its golden outputs and the official cfg yamls live in ../shared (GPL test data,
never copied here); tests that need them skip with the reason when it is absent.  Set
FYEXPORT_SHARED to point elsewhere.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TINY = REPO / "fyexport" / "assets" / "yolov7-tiny-shapes.pt"  # the bundled checkpoint
PHOTO = DATA / "photo.jpg"  # 512x600, public domain (tests/data/README.md)
SHARED = Path(os.environ.get("FYEXPORT_SHARED", REPO.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
CFG_DIR = SHARED / "yolov7-cfg" / "cfg"
FULL = FIXTURES / "yolov7-shapes.pt"
GOLDEN = FIXTURES / "golden_outputs.npz"

needs_shared = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"needs the full checkpoint or the official cfg "
                                  f"yamls of the shared test data, not found at {SHARED} (set FYEXPORT_SHARED)")


def reference() -> dict:
    import json

    return json.loads((DATA / "reference.json").read_text())


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
def tiny_model():
    import fyexport

    return fyexport.load(TINY)


@pytest.fixture(scope="session")
def full_model(shared):
    import fyexport

    return fyexport.load(FULL)


@pytest.fixture(scope="session")
def golden(shared):
    """The official outputs of both fixtures on bus.jpg and shapes val_000000 (shared data)."""
    import numpy as np

    return np.load(GOLDEN)


@pytest.fixture(scope="session")
def golden_tiny():
    """The official tiny output on shapes val_000000 (tests/data), with the same keys as ``golden``."""
    import numpy as np

    g = np.load(DATA / "golden_tiny.npz")
    out = {k: g[k] for k in g.files if not k.endswith("_u8")}
    out["shapes_val0_input"] = (g["shapes_val0_input_u8"].astype(np.float32) / 255.0)[None]
    return out


def _make_shapes(root: Path, train: int, val: int) -> Path:
    from fyexport.data import shapes

    shapes.generate(root, train=train, val=val)
    return root / "shapes.yaml"


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """A small shapes data set (8 train, 16 val images) with its data yaml."""
    root = tmp_path_factory.mktemp("shapes_small")
    return _make_shapes(root, 8, 16)


from trt_fixtures import artifacts, stand_in, warned  # noqa: E402,F401  (shared by the TensorRT tests)
