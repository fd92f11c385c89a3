"""The low floor: atomic writes, the folder lock, device resolution, and the old module
names that still import for one release."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from conftest import REPO


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    from fyexport.core.artifacts import atomic_path

    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_folder_lock_refuses_a_second_holder(tmp_path):
    from fyexport.core.artifacts import folder_lock
    from fyexport.core.errors import FyexportError

    code = ("import sys, time; from fyexport.core.artifacts import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'first build'):\n    print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FyexportError, match="another build is running in this folder .*first build"):
            with folder_lock(tmp_path, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path, "third"):  # released when its holder died
        pass


def test_resolve_device_refuses_what_is_not_here():
    import torch

    from fyexport.core.errors import InputError
    from fyexport.core.machine import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="must be cpu, cuda or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("old,name,new", [
    ("fyexport.preprocess", "letterbox", "fyexport.data.images"),
    ("fyexport.preprocess", "list_images", "fyexport.data.selection"),
    ("fyexport.evaluate", "agreement_with", "fyexport.evaluation.agreement"),
    ("fyexport.build", "Build", "fyexport.pipeline.build"),
    ("fyexport.trt.builder", "build_engine", "fyexport.trt.engine"),
    ("fyexport.errors", "InputError", "fyexport.core.errors"),
])
def test_moved_modules_import_under_their_old_names_with_a_warning(old, name, new):
    import importlib

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in seen)
