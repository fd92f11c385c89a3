"""End-to-end NMS appended to the exported graph.

``onnx``: standard ``NonMaxSuppression`` (runs on ONNX Runtime and TensorRT without plugins),
then fixed-size outputs ``num_dets [B,1] int32``, ``det_boxes [B,topk,4]`` (x1,y1,x2,y2 in
input pixels), ``det_scores [B,topk]``, ``det_classes [B,topk] int32`` built with TopK over a
dense [batch, selected] score matrix, so it works with a dynamic batch.  It mirrors
:func:`fyexport.postprocess.non_max_suppression`: score = obj*cls, best class per box,
class-aware suppression through a ``class * 4096`` box offset.

``trt-plugin``: the same four outputs from TensorRT's ``EfficientNMS_TRT`` plugin (needs
TensorRT's plugin library; ONNX Runtime cannot run it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .postprocess import MAX_WH

NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


@dataclass
class NmsConfig:
    kind: str = "onnx"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    topk: int = 100

    def validate(self) -> None:
        if self.kind not in ("onnx", "trt-plugin"):
            raise InputError(f"--nms must be onnx or trt-plugin, got {self.kind!r}")
        if not (0 <= self.conf_thres < 1 and 0 < self.iou_thres <= 1):
            raise InputError("--conf-thres must be in [0, 1) and --iou-thres in (0, 1]")
        if self.topk < 1:
            raise InputError("--topk must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def append_nms(proto, cfg: NmsConfig, nc: int):
    """A new model whose outputs are the four NMS tensors instead of ``output``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg.validate()
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    if [o.name for o in g.output] != ["output"]:
        raise InputError("NMS can only be appended to a graph with the single decoded output 'output'")
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, name=f"nms/{outs[0]}", **kw))
        return outs[0]

    big = np.iinfo(np.int64).max
    const("nms_s0", np.array([0], np.int64))
    const("nms_s2", np.array([2], np.int64))
    const("nms_s4", np.array([4], np.int64))
    const("nms_s5", np.array([5], np.int64))
    const("nms_big", np.array([big], np.int64))
    const("nms_ax2", np.array([2], np.int64))
    node("Slice", ["output", "nms_s0", "nms_s4", "nms_ax2"], ["nms_xywh"])
    node("Slice", ["output", "nms_s4", "nms_s5", "nms_ax2"], ["nms_obj"])
    if nc > 1:
        node("Slice", ["output", "nms_s5", "nms_big", "nms_ax2"], ["nms_cls"])
        node("Mul", ["nms_cls", "nms_obj"], ["nms_scores"])
    else:
        node("Identity", ["nms_obj"], ["nms_scores"])
    node("Slice", ["nms_xywh", "nms_s0", "nms_s2", "nms_ax2"], ["nms_cxcy"])
    node("Slice", ["nms_xywh", "nms_s2", "nms_s4", "nms_ax2"], ["nms_wh"])
    const("nms_half", np.array(0.5, np.float32))
    node("Mul", ["nms_wh", "nms_half"], ["nms_hwh"])
    node("Sub", ["nms_cxcy", "nms_hwh"], ["nms_x1y1"])
    node("Add", ["nms_cxcy", "nms_hwh"], ["nms_x2y2"])
    node("Concat", ["nms_x1y1", "nms_x2y2"], ["nms_boxes"], axis=2)
    topk, iou, conf = int(cfg.topk), float(cfg.iou_thres), float(cfg.conf_thres)
    if cfg.kind == "trt-plugin":
        outs = list(NMS_OUTPUTS)
        nodes.append(helper.make_node(
            "EfficientNMS_TRT", ["nms_boxes", "nms_scores"], outs, name="batched_nms",
            background_class=-1, box_coding=0, iou_threshold=iou, max_output_boxes=topk, plugin_version="1",
            score_activation=0, score_threshold=conf))
    else:
        node("ReduceMax", ["nms_scores"], ["nms_best"], axes=[2], keepdims=1)
        node("ArgMax", ["nms_scores"], ["nms_cls_id"], axis=2, keepdims=1)
        node("Cast", ["nms_cls_id"], ["nms_cls_f"], to=TensorProto.FLOAT)
        const("nms_maxwh", np.array(float(MAX_WH), np.float32))
        node("Mul", ["nms_cls_f", "nms_maxwh"], ["nms_off"])
        node("Add", ["nms_boxes", "nms_off"], ["nms_boxes_off"])
        node("Transpose", ["nms_best"], ["nms_best_t"], perm=[0, 2, 1])
        const("nms_maxout", np.array([topk], np.int64))
        const("nms_iou", np.array([iou], np.float32))
        const("nms_conf", np.array([conf], np.float32))
        node("NonMaxSuppression", ["nms_boxes_off", "nms_best_t", "nms_maxout", "nms_iou", "nms_conf"], ["nms_sel"])
        const("nms_i0", np.array(0, np.int64))
        const("nms_i2", np.array(2, np.int64))
        node("Gather", ["nms_sel", "nms_i0"], ["nms_sel_b"], axis=1)
        node("Gather", ["nms_sel", "nms_i2"], ["nms_sel_n"], axis=1)
        const("nms_ax1", np.array([1], np.int64))
        const("nms_ax0", np.array([0], np.int64))
        node("Unsqueeze", ["nms_sel_b", "nms_ax1"], ["nms_sel_b1"])
        node("Unsqueeze", ["nms_sel_n", "nms_ax1"], ["nms_sel_n1"])
        node("Concat", ["nms_sel_b1", "nms_sel_n1"], ["nms_bn"], axis=1)
        node("Squeeze", ["nms_best", "nms_ax2"], ["nms_best2"])
        node("Squeeze", ["nms_cls_id", "nms_ax2"], ["nms_cls2"])
        node("GatherND", ["nms_best2", "nms_bn"], ["nms_sel_scores"])
        node("GatherND", ["nms_boxes", "nms_bn"], ["nms_sel_boxes"])
        node("GatherND", ["nms_cls2", "nms_bn"], ["nms_sel_cls"])
        # dense [B, K] scores (-1 where a selection belongs to another image), padded by topk
        node("Shape", ["output"], ["nms_shape"])
        node("Gather", ["nms_shape", "nms_i0"], ["nms_B"], axis=0)
        const("nms_one", np.array(1, np.int64))
        node("Range", ["nms_i0", "nms_B", "nms_one"], ["nms_arange"])
        node("Unsqueeze", ["nms_arange", "nms_ax1"], ["nms_arange1"])
        node("Unsqueeze", ["nms_sel_b", "nms_ax0"], ["nms_sel_b0"])
        node("Equal", ["nms_arange1", "nms_sel_b0"], ["nms_mine"])
        node("Unsqueeze", ["nms_sel_scores", "nms_ax0"], ["nms_sel_scores0"])
        const("nms_neg", np.array(-1.0, np.float32))
        node("Where", ["nms_mine", "nms_sel_scores0", "nms_neg"], ["nms_dense"])
        node("Unsqueeze", ["nms_B", "nms_ax0"], ["nms_B1"])
        node("Concat", ["nms_B1", "nms_maxout"], ["nms_pad_shape"], axis=0)
        nodes.append(helper.make_node("ConstantOfShape", ["nms_pad_shape"], ["nms_pad"], name="nms/nms_pad",
                                      value=numpy_helper.from_array(np.array([-1.0], np.float32))))
        node("Concat", ["nms_dense", "nms_pad"], ["nms_dense_p"], axis=1)
        node("TopK", ["nms_dense_p", "nms_maxout"], ["nms_vals", "nms_idx"], axis=1, largest=1, sorted=1)
        const("nms_zero", np.array(0.0, np.float32))
        node("GreaterOrEqual", ["nms_vals", "nms_zero"], ["nms_valid"])
        node("Cast", ["nms_valid"], ["nms_valid_i"], to=TensorProto.INT64)
        node("ReduceSum", ["nms_valid_i", "nms_ax1"], ["nms_count"], keepdims=1)
        node("Cast", ["nms_count"], ["num_dets"], to=TensorProto.INT32)
        const("nms_zbox", np.zeros((topk, 4), np.float32))
        node("Concat", ["nms_sel_boxes", "nms_zbox"], ["nms_boxes_p"], axis=0)
        node("Gather", ["nms_boxes_p", "nms_idx"], ["nms_gboxes"], axis=0)
        node("Cast", ["nms_valid"], ["nms_valid_f"], to=TensorProto.FLOAT)
        node("Unsqueeze", ["nms_valid_f", "nms_ax2"], ["nms_valid_f2"])
        node("Mul", ["nms_gboxes", "nms_valid_f2"], ["det_boxes"])
        node("Where", ["nms_valid", "nms_vals", "nms_zero"], ["det_scores"])
        const("nms_zcls", np.full((topk,), -1, np.int64))
        node("Concat", ["nms_sel_cls", "nms_zcls"], ["nms_cls_p"], axis=0)
        node("Gather", ["nms_cls_p", "nms_idx"], ["nms_gcls"], axis=0)
        const("nms_neg_i", np.array(-1, np.int64))
        node("Where", ["nms_valid", "nms_gcls", "nms_neg_i"], ["nms_cls_v"])
        node("Cast", ["nms_cls_v"], ["det_classes"], to=TensorProto.INT32)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    batch = g.output[0].type.tensor_type.shape.dim[0]
    bdim = batch.dim_param or batch.dim_value
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [bdim, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [bdim, topk, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [bdim, topk]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [bdim, topk]),
    ])
    return m


def detections_from_outputs(outs: dict) -> list:
    """Per image (n, 6) arrays from the four NMS outputs."""
    res = []
    for b in range(outs["num_dets"].shape[0]):
        n = int(outs["num_dets"][b, 0])
        boxes = outs["det_boxes"][b, :n].astype(np.float32)
        res.append(np.concatenate([boxes, outs["det_scores"][b, :n, None].astype(np.float32),
                                   outs["det_classes"][b, :n, None].astype(np.float32)], 1))
    return res
