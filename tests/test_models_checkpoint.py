"""Safe checkpoint loading: official formats, our own format, refusal of anything else."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from conftest import CFG_DIR, TINY, needs_shared, run_cli
from official_format import save_official


def _one_line_error(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_loads_without_yolov7_sources(tiny_model):
    assert "models" not in sys.modules and "utils" not in sys.modules
    assert tiny_model.training is False
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert tiny_model.names == ["circle", "square", "triangle", "star", "cross"]
    assert tiny_model.meta.source_dtype == "float16"


def test_refuses_os_system_and_does_not_run_it(tmp_path):
    import fyexport
    from fyexport.core.errors import InputError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "ema": None}, bad)
    with pytest.raises(InputError, match=r"(posix|os)\.system"):
        fyexport.load(bad)
    assert not marker.exists()
    line = _one_line_error(run_cli("info", bad))
    assert "system" in line and "whitelist" in line
    assert not marker.exists()


def test_refuses_any_unlisted_global(tmp_path):
    import fyexport
    from fyexport.core.errors import InputError

    bad = tmp_path / "builtins.pt"
    with open(bad, "wb") as f:  # a legacy (non-zip) pickle calling builtins.eval
        f.write(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    with pytest.raises(InputError, match="builtins.eval"):
        fyexport.load(bad)


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "state_dict_only", "other_family"])
def test_bad_files_give_one_line_errors(tmp_path, kind, monkeypatch):
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(TINY.read_bytes()[: 3_000_000])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "state_dict_only":
        torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    else:  # a YOLOv5-style checkpoint: models.yolo.Model holding a models.common.C3
        import types

        mod = types.ModuleType("models.common")

        class C3(torch.nn.Module):
            pass

        C3.__module__, C3.__qualname__ = "models.common", "C3"
        mod.C3 = C3
        monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
        monkeypatch.setitem(sys.modules, "models.common", mod)
        torch.save({"model": C3()}, path)
        monkeypatch.delitem(sys.modules, "models.common")
        monkeypatch.delitem(sys.modules, "models")
    line = _one_line_error(run_cli("info", path))
    assert str(path) in line
    if kind == "other_family":
        assert "models.common.C3" in line


@needs_shared
def test_official_deploy_format_with_ema_precedence(tmp_path):
    """A released-style deploy file (Detect head, RepConv unfused), with an EMA that must win."""
    import fyexport
    from fyexport import build_model

    model = build_model(CFG_DIR / "deploy/yolov7-tiny.yaml", nc=3)
    ema = build_model(CFG_DIR / "deploy/yolov7-tiny.yaml", nc=3)
    model.names = ["a", "b", "c"]
    ema.names = ["a", "b", "c"]
    path = tmp_path / "deploy.pt"
    save_official(model, path, ema_model=ema, extra={"best_fitness": np.array([0.25])})
    loaded = fyexport.load(path)
    assert loaded.meta.get("which") == "ema" and type(loaded.head).__name__ == "Detect"
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        ref = ema.half().float()(x)[0]
        out = loaded(x)[0]
    assert torch.allclose(out, ref, atol=1e-3)
    assert loaded.names == ["a", "b", "c"]


@needs_shared
def test_official_p6_training_format(tmp_path):
    import fyexport
    from fyexport import build_model

    model = build_model(CFG_DIR / "training/yolov7-w6.yaml", nc=2)
    path = tmp_path / "w6.pt"
    save_official(model, path)
    loaded = fyexport.load(path, fuse=True)
    assert type(loaded.head).__name__ == "Detect" and loaded.head.stride.tolist() == [8, 16, 32, 64]
    assert sum(p.numel() for p in loaded.parameters()) < sum(p.numel() for p in model.parameters())


def test_own_format_roundtrip(tmp_path, tiny_model):
    import fyexport

    path = tmp_path / "mine.pt"
    m = fyexport.load(TINY, fuse=True)
    fyexport.save(m, path, meta={"note": "x"})
    back = fyexport.load(path)
    assert back.is_fused and back.meta.get("note") == "x" and back.names == m.names
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(back(x)[0], m(x)[0])
    # the file holds no classes at all: the stock weights-only loader accepts it
    torch.load(path, weights_only=True)
