"""The Runner contract: any batch size is served whatever the artifact's batch, the input
size is checked, and every runner kind describes its artifact the same way."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    import fyexport
    from fyexport.onnx.export import export_onnx

    d = tmp_path_factory.mktemp("runners")
    model = fyexport.load(TINY)
    export_onnx(model, d / "b2.onnx", img_size=128, batch=2)
    export_onnx(model, d / "dyn.onnx", img_size=128, dynamic_batch=True)
    return d


@pytest.mark.parametrize("name", ["b2.onnx", "dyn.onnx"])
def test_any_batch_is_served_and_matches_one_image_at_a_time(onnx_pair, name):
    from fyexport.runners import open_runner

    x = np.random.default_rng(0).random((5, 3, 128, 128), dtype=np.float32)
    with open_runner(str(onnx_pair / name), img_size=128) as r:
        whole = r.infer(x)
        single = np.concatenate([r.infer(x[i:i + 1]) for i in range(5)])
    assert whole.shape[0] == 5
    np.testing.assert_allclose(whole, single, atol=1e-4)


def test_the_input_size_is_checked(onnx_pair):
    from fyexport.core.errors import InputError
    from fyexport.runners import open_runner

    with open_runner(str(onnx_pair / "dyn.onnx"), img_size=128) as r:
        with pytest.raises(InputError, match=r"built for input \(128, 128\)"):
            r.infer(np.zeros((1, 3, 160, 160), np.float32))


def test_torch_and_onnx_runners_describe_the_same_model(onnx_pair):
    from fyexport.runners import open_runner

    with open_runner(str(TINY), img_size=128) as t, open_runner(str(onnx_pair / "dyn.onnx"), img_size=128) as o:
        assert (t.info.nc, t.info.names, tuple(t.info.input_hw)) == (o.info.nc, o.info.names, tuple(o.info.input_hw))
        assert t.info.runtime == "torch" and o.info.runtime == "onnxruntime" and o.info.batch is None
