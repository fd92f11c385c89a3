"""The clean-room YOLOv7 against the official figures and golden outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CFG_DIR, FIXTURES, FULL, TINY, needs_shared


def _reference():
    return json.loads((FIXTURES / "reference.json").read_text())


def _cfgs():
    if not FIXTURES.is_dir():
        return []
    return sorted(_reference()["params_as_built_nc80"].items())


@needs_shared
@pytest.mark.parametrize("cfg,expected", _cfgs())
def test_param_counts_match_official(cfg, expected):
    from fyexport import build_model

    model = build_model(CFG_DIR / f"{cfg}.yaml")
    assert sum(p.numel() for p in model.parameters()) == expected


@needs_shared
@pytest.mark.parametrize("cfg,key", [("deploy/yolov7", "yolov7"), ("training/yolov7", "yolov7"),
                                     ("deploy/yolov7x", "yolov7x"), ("training/yolov7-tiny", "yolov7-tiny")])
def test_fused_param_counts(cfg, key):
    from fyexport import build_model

    model = build_model(CFG_DIR / f"{cfg}.yaml").fuse()
    assert sum(p.numel() for p in model.parameters()) == _reference()["params_fused_nc80"][key]
    assert type(model.head).__name__ == "Detect"


@needs_shared
def test_seed_macs_and_params_at_224():
    from fyexport import build_model
    from fyexport.models.stats import count_macs_params

    ref = _reference()["seed_pruning_yolov7_fused_224"]
    model = build_model(CFG_DIR / "deploy/yolov7.yaml").fuse()
    macs, params = count_macs_params(model, 224)
    assert (macs, params) == (ref["macs_before"], ref["params_before"])


@needs_shared
def test_batchnorm_eps_and_momentum():
    from fyexport import build_model

    model = build_model(CFG_DIR / "training/yolov7-tiny.yaml")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)


def test_strides_and_anchors_as_official(tiny_model):
    head = tiny_model.head
    assert head.stride.tolist() == [8, 16, 32]
    # anchors buffer in grid units, anchor_grid in pixels
    assert torch.allclose(head.anchors[0, 0], torch.tensor([10 / 8, 13 / 8]))
    assert head.anchor_grid.shape == (3, 1, 3, 1, 1, 2)
    assert head.anchor_grid[2, 0, 2, 0, 0].tolist() == [373.0, 326.0]


@pytest.mark.parametrize("path", [TINY, pytest.param(FULL, marks=needs_shared)], ids=["tiny", "full"])
def test_state_dict_keys_identical_to_official(path):
    import fyexport
    from fyexport.models.checkpoint import _official_model_stub, read_pickle, stub_state_dict

    stub, _ = _official_model_stub(path, read_pickle(path))
    official = stub_state_dict(stub)
    ours = fyexport.load(path).state_dict()
    assert list(ours.keys()) == list(official.keys())
    assert all(ours[k].shape == official[k].shape for k in ours)
    for key in ("model.0.conv.weight", "model.0.bn.running_var", "model.77.ia.0.implicit", "model.77.anchors",
                "model.77.anchor_grid") if path == TINY else ("model.102.rbr_dense.0.weight",
                                                               "model.104.rbr_1x1.1.weight", "model.105.im.2.implicit"):
        assert key in ours


@pytest.mark.parametrize("name,key", [(TINY, "tiny"), pytest.param(FULL, "full", marks=needs_shared)],
                         ids=["tiny", "full"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_golden_outputs(name, key, fused, golden_tiny, request):
    """The official outputs: on shapes val_000000 (tests/data) and, with the shared data, on bus.jpg."""
    import fyexport

    shared = FIXTURES.is_dir()
    golden = request.getfixturevalue("golden") if shared else golden_tiny
    model = fyexport.load(name, fuse=fused)
    assert model.is_fused == fused
    for img in ("bus", "shapes_val0") if shared else ("shapes_val0",):
        with torch.no_grad():
            out = model(torch.from_numpy(golden[f"{img}_input"]))[0].numpy()
        ref = golden[f"{key}_{img}_output"]
        assert out.shape == ref.shape == (1, 25200, 10)
        assert np.abs(out[..., :4] - ref[..., :4]).max() <= 1e-3
        assert np.abs(out[..., 4:] - ref[..., 4:]).max() <= 1e-4


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
        elif type(m).__name__ in ("ImplicitA", "ImplicitM"):
            m.implicit.data.add_(torch.randn(m.implicit.shape, generator=g) * 0.05)


@needs_shared
@pytest.mark.parametrize("cfg", ["training/yolov7", "training/yolov7-w6", "training/yolov7-e6e",
                                 "deploy/yolov7-tiny-silu"])
def test_fuse_preserves_output(cfg):
    """Fused == unfused within 1e-4 relative, for IDetect, IAuxDetect (+ aux layers dropped),
    RepConv and Shortcut models."""
    from fyexport import build_model

    model = build_model(CFG_DIR / f"{cfg}.yaml", nc=5)
    _randomize_bn(model)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        ref = model(x)[0]
        model.fuse()
        out = model(x)[0]
    assert model.is_fused and type(model.head).__name__ == "Detect"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    rel = ((out - ref).abs() / (ref.abs() + 1e-3)).max().item()
    assert rel <= 1e-4, rel


def test_repconv_identity_branch_merges():
    """RepConv with c1 == c2, s == 1 has an identity BN branch (unused by the shipped cfgs)."""
    from fyexport.models.common import RepConv

    rep = RepConv(16, 16)
    assert rep.rbr_identity is not None
    for bn in (rep.rbr_dense[1], rep.rbr_1x1[1], rep.rbr_identity):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
    rep.eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        ref = rep(x)
        rep.fuse()
        out = rep(x)
    assert rep.rbr_identity is None and rep.rbr_reparam is not None
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_eval_returns_decoded_first_and_training_returns_raw(tiny_model):
    x = torch.rand(2, 3, 320, 256)
    with torch.no_grad():
        dec, raw = tiny_model(x)
    assert dec.shape == (2, 3 * (40 * 32 + 20 * 16 + 10 * 8), 10)
    assert [r.shape[2:4] for r in raw] == [(40, 32), (20, 16), (10, 8)]
    tiny_model.train()
    try:
        with torch.no_grad():
            out = tiny_model(x)
        assert isinstance(out, list) and out[0].shape == (2, 3, 40, 32, 10)
    finally:
        tiny_model.eval()


@needs_shared
def test_cfg_parser_rejects_unknown_names(tmp_path):
    from fyexport import build_model
    from fyexport.core.errors import InputError
    from fyexport.models import load_cfg

    cfg = load_cfg(CFG_DIR / "training/yolov7-tiny.yaml")
    cfg["backbone"][0] = [-1, 1, "Conv", [32, 3, 2, "None", 1, "__import__('os').system('true')"]]
    with pytest.raises(InputError, match="unsupported argument"):
        build_model(cfg)
    cfg = load_cfg(CFG_DIR / "training/yolov7-tiny.yaml")
    cfg["backbone"][2][2] = "C3"
    with pytest.raises(InputError, match="unsupported module 'C3'"):
        build_model(cfg)


@needs_shared
def test_build_model_nc_override():
    from fyexport import build_model

    model = build_model(CFG_DIR / "deploy/yolov7-tiny.yaml", nc=3)
    assert model.nc == 3 and model.head.no == 8
    assert model.head.m[0].out_channels == 24
