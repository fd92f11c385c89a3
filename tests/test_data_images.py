from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, needs_shared


@needs_shared
def test_letterbox_reproduces_golden_bus(golden):
    from fyexport.data.images import prepare, read_image

    img = read_image(FIXTURES / "bus.jpg")
    p = prepare(img, 640)
    ref = golden["bus_input"][0]
    assert np.array_equal(np.round(p.tensor * 255).astype(np.uint8), np.round(ref * 255).astype(np.uint8))
    assert np.allclose(p.ratio, golden["bus_ratio"]) and np.allclose(p.pad, golden["bus_pad"])
    assert tuple(p.orig_hw) == tuple(golden["bus_orig_hw"])


def test_letterbox_reproduces_golden_shapes_val0(golden_tiny, shapes_small):
    from fyexport.data.images import prepare, read_image

    img = read_image(shapes_small.parent / "images/val/val_000000.jpg")
    p = prepare(img, 640)
    assert np.array_equal(np.round(p.tensor * 255).astype(np.uint8),
                          np.round(golden_tiny["shapes_val0_input"][0] * 255).astype(np.uint8))


@pytest.mark.parametrize("hw", [(480, 640), (1080, 810), (333, 777), (640, 640), (100, 50)])
def test_letterbox_fixed_shape_and_scale_boxes_roundtrip(hw):
    from fyexport.data.images import letterbox, scale_boxes

    img = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    out, ratio, pad = letterbox(img, 320)
    assert out.shape == (320, 320, 3)
    h, w = hw
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.5, w * 0.75, h * 0.9]], np.float32)
    lb = boxes.copy()
    lb[:, [0, 2]] = lb[:, [0, 2]] * ratio[0] + pad[0]
    lb[:, [1, 3]] = lb[:, [1, 3]] * ratio[1] + pad[1]
    back = scale_boxes(lb, ratio, pad, hw)
    assert np.allclose(back, boxes, atol=1e-3)


def test_letterbox_auto_pads_to_stride_multiple():
    from fyexport.data.images import letterbox

    img = np.zeros((480, 640, 3), np.uint8)
    out, _, pad = letterbox(img, 640, auto=True)
    assert out.shape == (480, 640, 3) and pad == (0.0, 0.0)
    img = np.zeros((500, 640, 3), np.uint8)
    out, _, _ = letterbox(img, 640, auto=True)
    assert out.shape[0] % 32 == 0 and out.shape[0] >= 500


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pil(tmp_path, orientation):
    """Issue 18 item 1: read_image decoded with IMREAD_UNCHANGED and ignored the EXIF
    orientation a phone records; every one of the 8 must come out as PIL's exif_transpose."""
    from PIL import Image, ImageOps

    from fyexport.data.images import read_image

    a = np.random.default_rng(orientation).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(tmp_path / "x.png", exif=exif)  # lossless, so the pixels compare exactly
    ref = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "x.png")))[:, :, ::-1]
    assert np.array_equal(read_image(tmp_path / "x.png"), ref)


def test_to_bgr8_converts_arrays_and_refuses_what_is_no_image():
    from fyexport.data.images import BadImage, to_bgr8

    g = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    assert to_bgr8(g).shape == (64, 48, 3) and np.array_equal(to_bgr8(g)[:, :, 1], g)
    assert np.array_equal(to_bgr8(np.dstack([g, g, g, g])), np.dstack([g, g, g]))
    assert np.array_equal(to_bgr8(g.astype(np.uint16) << 8), to_bgr8(g))
    for bad in (np.zeros((4, 4, 3), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10), bool)):
        with pytest.raises(BadImage):
            to_bgr8(bad)
