"""Triton: a model repository for a built engine (config.pbtxt checked against Triton's
ModelConfig fields, the plan, the batch range), engines built on the TensorRT stand-in of each
release (tests/trt_stand_in.py)."""
from __future__ import annotations

import pytest
from trt_fixtures import RELEASES, install


def test_triton_max_batch_must_fit_the_profile(stand_in, artifacts, tmp_path):
    from fyexport.core.errors import InputError
    from fyexport.deploy.triton import write_repository
    from fyexport.trt.engine import EngineConfig, build_engine

    build_engine(artifacts / "dyn.onnx", tmp_path / "m.engine", EngineConfig(max_batch=8))
    with pytest.raises(InputError, match="exceeds the engine's profile maximum of 8"):
        write_repository(tmp_path / "m.engine", tmp_path / "repo", max_batch=16)
    assert not (tmp_path / "repo").exists()
    assert "max_batch_size: 4" in (write_repository(tmp_path / "m.engine", tmp_path / "repo", max_batch=4)
                                   / "config.pbtxt").read_text()
    build_engine(artifacts / "dyn.onnx", tmp_path / "b.engine", EngineConfig(min_batch=2, max_batch=8))
    with pytest.raises(InputError, match="starts at batch 2"):
        write_repository(tmp_path / "b.engine", tmp_path / "repo2")


@pytest.mark.parametrize("version", RELEASES)
def test_triton_repository(version, artifacts, tmp_path, monkeypatch):
    from fyexport.deploy.triton import write_repository
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    build_engine(artifacts / "dyn.onnx", tmp_path / "m.engine", EngineConfig(precision="fp32", max_batch=8))
    model_dir = write_repository(tmp_path / "m.engine", tmp_path / "repo", name="yolov7")
    assert (model_dir / "1/model.plan").read_bytes() == (tmp_path / "m.engine").read_bytes()
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    check_triton_config(cfg)
    assert cfg["name"] == "yolov7" and cfg["platform"] == "tensorrt_plan" and cfg["max_batch_size"] == 8
    assert cfg["input"][0]["name"] == "images" and cfg["input"][0]["dims"] == [3, 256, 256]
    assert cfg["output"][0]["name"] == "output" and cfg["output"][0]["dims"] == [4032, 10]
    assert cfg["output"][0]["data_type"] == "TYPE_FP32" and "dynamic_batching" in cfg


@pytest.mark.parametrize("version", ("10.3", "11.1"))
def test_triton_repository_of_an_nms_engine(version, artifacts, tmp_path, monkeypatch):
    """An engine ending in ONNX NMS (INMSLayer): Triton's outputs are the four NMS tensors."""
    from fyexport.deploy.triton import write_repository
    from fyexport.trt.engine import EngineConfig, build_engine

    install(monkeypatch, version)
    build_engine(artifacts / "onnxnms.onnx", tmp_path / "n.engine", EngineConfig(max_batch=4))
    cfg = parse_pbtxt((write_repository(tmp_path / "n.engine", tmp_path / "repo") / "config.pbtxt").read_text())
    check_triton_config(cfg)
    assert [o["name"] for o in cfg["output"]] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert cfg["output"][1]["dims"] == [100, 4] and cfg["output"][3]["data_type"] == "TYPE_INT32"


MODEL_CONFIG_FIELDS = {"name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input",
                       "output", "batch_input", "batch_output", "optimization", "dynamic_batching",
                       "sequence_batching", "ensemble_scheduling", "instance_group", "default_model_filename",
                       "cc_model_filenames", "metric_tags", "parameters", "model_warmup", "model_operation_policy",
                       "model_transaction_policy", "response_cache", "model_repository_agents"}


IO_FIELDS = {"name", "data_type", "format", "dims", "reshape", "is_shape_tensor", "allow_ragged_batch", "optional",
             "label_filename", "is_non_linear_format_io"}


DATA_TYPES = {"TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
              "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"}


def parse_pbtxt(text: str) -> dict:
    import re

    tokens = re.findall(r'"[^"]*"|[{}\[\],:]|[^\s{}\[\],:]+', text)
    pos = 0

    def value():
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "{":
            return message("}")
        if t == "[":
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        if t.startswith('"'):
            return t[1:-1]
        try:
            return int(t)
        except ValueError:
            return t

    def message(end):
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            if tokens[pos] == ",":
                pos += 1
                continue
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [v]
            else:
                out[key] = v
        pos += 1
        return out

    return message(None)


def check_triton_config(cfg: dict) -> None:
    assert set(cfg) <= MODEL_CONFIG_FIELDS, set(cfg) - MODEL_CONFIG_FIELDS
    assert isinstance(cfg["name"], str) and cfg["platform"] == "tensorrt_plan"
    assert isinstance(cfg["max_batch_size"], int) and cfg["max_batch_size"] >= 0
    for io in cfg["input"] + cfg["output"]:
        assert set(io) <= IO_FIELDS and io["data_type"] in DATA_TYPES
        assert all(isinstance(d, int) and (d > 0 or d == -1) for d in io["dims"])
