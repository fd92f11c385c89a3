"""End-to-end NMS appended to the exported graph.

``onnx``: standard ``NonMaxSuppression`` (runs on ONNX Runtime and TensorRT without plugins),
then fixed-size outputs ``num_dets [B,1] int32``, ``det_boxes [B,topk,4]`` (x1,y1,x2,y2 in
input pixels), ``det_scores [B,topk]``, ``det_classes [B,topk] int32`` built with TopK over a
dense [batch, selected] score matrix, so it works with a dynamic batch.  It mirrors
:func:`fyexport.evaluation.nms.non_max_suppression`: score = obj*cls, best class per box,
class-aware suppression through a ``class * 4096`` box offset.

``trt-plugin`` (deprecated, like the plugin itself since TensorRT 10.12): the same four
outputs from TensorRT's ``EfficientNMS_TRT`` plugin (needs TensorRT's plugin library; ONNX
Runtime cannot run it), given the same candidates: each box with its best class only (the
other classes' scores zeroed), and thresholds nudged to the next float32 so that the kernel's
``score >= t`` and ``IoU >= t`` mean the project's ``score > t`` and ``IoU > t``.

Where the three can still differ (tests/test_trt.py compares them on the same raw outputs):
TensorRT's INMSLayer and EfficientNMS_TRT consider at most the 5000 best candidates per
image (2000 on SM 5.3/6.2) where the project's NMS takes 30000 and ONNX Runtime's
NonMaxSuppression all of them: with a low score threshold at 640 (25200 rows) they can keep
different boxes.  IoUs are computed in float32 on the GPU and in float64 here, so a pair at
exactly the threshold can go either way, and equal scores can come out in another order.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.meta import NMS_KINDS, NmsConfig
from ..evaluation.nms import MAX_WH

NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
__all__ = ["NMS_KINDS", "NMS_OUTPUTS", "NmsConfig", "append_nms", "runner_detections"]


class _Nodes:
    """Nodes and initializers to append to a graph, named under ``nms/``."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, arr) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, ins, outs, **kw) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, outs, name=f"nms/{outs[0]}", **kw))
        return outs[0]


def append_nms(proto, cfg: NmsConfig, nc: int):
    """A new model whose outputs are the four NMS tensors instead of ``output``."""
    import onnx
    from onnx import TensorProto, helper

    cfg.validate()
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    if [o.name for o in g.output] != ["output"]:
        raise InputError("NMS can only be appended to a graph with the single decoded output 'output'")
    b = _Nodes()
    _scores_and_boxes(b, nc)
    if cfg.kind == "trt-plugin":
        _best_class_only(b, nc)
        b.nodes.append(helper.make_node(
            "EfficientNMS_TRT", ["nms_boxes", "nms_scores_best"], list(NMS_OUTPUTS), name="batched_nms",
            background_class=-1, box_coding=0, iou_threshold=_above(cfg.iou_thres), max_output_boxes=int(cfg.topk),
            plugin_version="1", score_activation=0, score_threshold=_above(cfg.conf_thres)))
    else:
        _select(b, int(cfg.topk), float(cfg.iou_thres), float(cfg.conf_thres))
        _dense_topk(b, int(cfg.topk))
    g.node.extend(b.nodes)
    g.initializer.extend(b.inits)
    batch = g.output[0].type.tensor_type.shape.dim[0]
    bdim = batch.dim_param or batch.dim_value
    topk = int(cfg.topk)
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [bdim, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [bdim, topk, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [bdim, topk]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [bdim, topk]),
    ])
    return m


def _scores_and_boxes(b: _Nodes, nc: int) -> None:
    """``nms_scores`` (obj * cls) and ``nms_boxes`` (x1, y1, x2, y2) from ``output``."""
    big = np.iinfo(np.int64).max
    b.const("nms_s0", np.array([0], np.int64))
    b.const("nms_s2", np.array([2], np.int64))
    b.const("nms_s4", np.array([4], np.int64))
    b.const("nms_s5", np.array([5], np.int64))
    b.const("nms_big", np.array([big], np.int64))
    b.const("nms_ax2", np.array([2], np.int64))
    b.node("Slice", ["output", "nms_s0", "nms_s4", "nms_ax2"], ["nms_xywh"])
    b.node("Slice", ["output", "nms_s4", "nms_s5", "nms_ax2"], ["nms_obj"])
    if nc > 1:
        b.node("Slice", ["output", "nms_s5", "nms_big", "nms_ax2"], ["nms_cls"])
        b.node("Mul", ["nms_cls", "nms_obj"], ["nms_scores"])
    else:
        b.node("Identity", ["nms_obj"], ["nms_scores"])
    b.node("Slice", ["nms_xywh", "nms_s0", "nms_s2", "nms_ax2"], ["nms_cxcy"])
    b.node("Slice", ["nms_xywh", "nms_s2", "nms_s4", "nms_ax2"], ["nms_wh"])
    b.const("nms_half", np.array(0.5, np.float32))
    b.node("Mul", ["nms_wh", "nms_half"], ["nms_hwh"])
    b.node("Sub", ["nms_cxcy", "nms_hwh"], ["nms_x1y1"])
    b.node("Add", ["nms_cxcy", "nms_hwh"], ["nms_x2y2"])
    b.node("Concat", ["nms_x1y1", "nms_x2y2"], ["nms_boxes"], axis=2)


def _above(t: float) -> float:
    """The next float32 above ``t``: EfficientNMS_TRT keeps ``score >= threshold`` and suppresses
    ``IoU >= threshold`` (efficientNMSInference.cu), the project ``score > t`` and ``IoU > t``."""
    return float(np.nextafter(np.float32(t), np.float32(np.inf)))


def _best_class_only(b: _Nodes, nc: int) -> None:
    """``nms_scores_best``: the scores with every class but each box's best zeroed, so that
    EfficientNMS_TRT (which takes every box and class above the threshold) sees the project's
    candidates (one class per box)."""
    b.node("ArgMax", ["nms_scores"], ["nms_best_cls"], axis=2, keepdims=0)
    b.const("nms_depth", np.array([nc], np.int64))
    b.const("nms_onehot_values", np.array([0.0, 1.0], np.float32))
    b.node("OneHot", ["nms_best_cls", "nms_depth", "nms_onehot_values"], ["nms_best_mask"], axis=-1)
    b.node("Mul", ["nms_scores", "nms_best_mask"], ["nms_scores_best"])


def _select(b: _Nodes, topk: int, iou: float, conf: float) -> None:
    """Class-aware NonMaxSuppression (best class per box, boxes offset by class * MAX_WH) and
    the selected boxes' scores, boxes and classes."""
    from onnx import TensorProto

    b.node("ReduceMax", ["nms_scores"], ["nms_best"], axes=[2], keepdims=1)
    b.node("ArgMax", ["nms_scores"], ["nms_cls_id"], axis=2, keepdims=1)
    b.node("Cast", ["nms_cls_id"], ["nms_cls_f"], to=TensorProto.FLOAT)
    b.const("nms_maxwh", np.array(float(MAX_WH), np.float32))
    b.node("Mul", ["nms_cls_f", "nms_maxwh"], ["nms_off"])
    b.node("Add", ["nms_boxes", "nms_off"], ["nms_boxes_off"])
    b.node("Transpose", ["nms_best"], ["nms_best_t"], perm=[0, 2, 1])
    b.const("nms_maxout", np.array([topk], np.int64))
    b.const("nms_iou", np.array([iou], np.float32))
    b.const("nms_conf", np.array([conf], np.float32))
    b.node("NonMaxSuppression", ["nms_boxes_off", "nms_best_t", "nms_maxout", "nms_iou", "nms_conf"], ["nms_sel"])
    b.const("nms_i0", np.array(0, np.int64))
    b.const("nms_i2", np.array(2, np.int64))
    b.node("Gather", ["nms_sel", "nms_i0"], ["nms_sel_b"], axis=1)
    b.node("Gather", ["nms_sel", "nms_i2"], ["nms_sel_n"], axis=1)
    b.const("nms_ax1", np.array([1], np.int64))
    b.const("nms_ax0", np.array([0], np.int64))
    b.node("Unsqueeze", ["nms_sel_b", "nms_ax1"], ["nms_sel_b1"])
    b.node("Unsqueeze", ["nms_sel_n", "nms_ax1"], ["nms_sel_n1"])
    b.node("Concat", ["nms_sel_b1", "nms_sel_n1"], ["nms_bn"], axis=1)
    b.node("Squeeze", ["nms_best", "nms_ax2"], ["nms_best2"])
    b.node("Squeeze", ["nms_cls_id", "nms_ax2"], ["nms_cls2"])
    b.node("GatherND", ["nms_best2", "nms_bn"], ["nms_sel_scores"])
    b.node("GatherND", ["nms_boxes", "nms_bn"], ["nms_sel_boxes"])
    b.node("GatherND", ["nms_cls2", "nms_bn"], ["nms_sel_cls"])


def _dense_topk(b: _Nodes, topk: int) -> None:
    """Fixed-size outputs: a dense [B, K] score matrix (-1 where a selection belongs to
    another image), padded by topk, TopK, and the boxes and classes gathered to match."""
    from onnx import TensorProto, helper, numpy_helper

    b.node("Shape", ["output"], ["nms_shape"])
    b.node("Gather", ["nms_shape", "nms_i0"], ["nms_B"], axis=0)
    b.const("nms_one", np.array(1, np.int64))
    b.node("Range", ["nms_i0", "nms_B", "nms_one"], ["nms_arange"])
    b.node("Unsqueeze", ["nms_arange", "nms_ax1"], ["nms_arange1"])
    b.node("Unsqueeze", ["nms_sel_b", "nms_ax0"], ["nms_sel_b0"])
    b.node("Equal", ["nms_arange1", "nms_sel_b0"], ["nms_mine"])
    b.node("Unsqueeze", ["nms_sel_scores", "nms_ax0"], ["nms_sel_scores0"])
    b.const("nms_neg", np.array(-1.0, np.float32))
    b.node("Where", ["nms_mine", "nms_sel_scores0", "nms_neg"], ["nms_dense"])
    b.node("Unsqueeze", ["nms_B", "nms_ax0"], ["nms_B1"])
    b.node("Concat", ["nms_B1", "nms_maxout"], ["nms_pad_shape"], axis=0)
    b.nodes.append(helper.make_node("ConstantOfShape", ["nms_pad_shape"], ["nms_pad"], name="nms/nms_pad",
                                    value=numpy_helper.from_array(np.array([-1.0], np.float32))))
    b.node("Concat", ["nms_dense", "nms_pad"], ["nms_dense_p"], axis=1)
    b.node("TopK", ["nms_dense_p", "nms_maxout"], ["nms_vals", "nms_idx"], axis=1, largest=1, sorted=1)
    b.const("nms_zero", np.array(0.0, np.float32))
    b.node("GreaterOrEqual", ["nms_vals", "nms_zero"], ["nms_valid"])
    b.node("Cast", ["nms_valid"], ["nms_valid_i"], to=TensorProto.INT64)
    b.node("ReduceSum", ["nms_valid_i", "nms_ax1"], ["nms_count"], keepdims=1)
    b.node("Cast", ["nms_count"], ["num_dets"], to=TensorProto.INT32)
    b.const("nms_zbox", np.zeros((topk, 4), np.float32))
    b.node("Concat", ["nms_sel_boxes", "nms_zbox"], ["nms_boxes_p"], axis=0)
    b.node("Gather", ["nms_boxes_p", "nms_idx"], ["nms_gboxes"], axis=0)
    b.node("Cast", ["nms_valid"], ["nms_valid_f"], to=TensorProto.FLOAT)
    b.node("Unsqueeze", ["nms_valid_f", "nms_ax2"], ["nms_valid_f2"])
    b.node("Mul", ["nms_gboxes", "nms_valid_f2"], ["det_boxes"])
    b.node("Where", ["nms_valid", "nms_vals", "nms_zero"], ["det_scores"])
    b.const("nms_zcls", np.full((topk,), -1, np.int64))
    b.node("Concat", ["nms_sel_cls", "nms_zcls"], ["nms_cls_p"], axis=0)
    b.node("Gather", ["nms_cls_p", "nms_idx"], ["nms_gcls"], axis=0)
    b.const("nms_neg_i", np.array(-1, np.int64))
    b.node("Where", ["nms_valid", "nms_gcls", "nms_neg_i"], ["nms_cls_v"])
    b.node("Cast", ["nms_cls_v"], ["det_classes"], to=TensorProto.INT32)


def detections_from_outputs(outs: dict) -> list:
    """Per image (n, 6) float32 arrays ``x1, y1, x2, y2, score, class`` (input pixels) from
    the four NMS outputs (padding rows beyond ``num_dets`` dropped)."""
    missing = [k for k in NMS_OUTPUTS if k not in outs]
    if missing:
        raise InputError(f"the model's NMS outputs lack {', '.join(missing)} (has {', '.join(outs) or 'none'})",
                         "Re-export it with 'fyexport export --nms'")
    res = []
    num = np.asarray(outs["num_dets"]).reshape(len(outs["num_dets"]), -1)
    for b in range(num.shape[0]):
        n = max(0, min(int(num[b, 0]), outs["det_boxes"].shape[1]))
        boxes = np.asarray(outs["det_boxes"][b, :n], np.float32).reshape(n, 4)
        res.append(np.concatenate([boxes, np.asarray(outs["det_scores"][b, :n], np.float32).reshape(n, 1),
                                   np.asarray(outs["det_classes"][b, :n], np.float32).reshape(n, 1)], 1))
    return res


def has_graph_nms(runner) -> bool:
    """Whether a (loaded) runner's model ends in NMS (``fyexport export --nms``): its outputs
    are the four NMS tensors instead of the decoded predictions."""
    return runner.info.has_graph_nms


def graph_nms_settings(runner) -> NmsConfig | None:
    """The NMS settings recorded at export (ONNX metadata, or an engine's sidecar)."""
    return runner.info.graph_nms


def run_graph_nms(runner, x: np.ndarray) -> list:
    """Per image (n, 6) detections in input pixels from a runner whose graph ends in NMS."""
    return detections_from_outputs(runner.run_all(x))


def runner_detections(runner, x: np.ndarray, conf: float = 0.25, iou: float = 0.45, multi_label: bool = False,
                      max_det: int = 300, classes=None) -> list:
    """Per image (n, 6) ``x1, y1, x2, y2, score, class`` detections in input pixels of a
    loaded runner on the batch ``x``: the project's NMS on its decoded predictions, or, for a
    model whose graph ends in NMS, its own NMS outputs (``conf``, ``classes`` and ``max_det``
    then filter what the export's thresholds kept; ``iou`` is the export's)."""
    from ..evaluation.nms import non_max_suppression

    if not has_graph_nms(runner):
        return non_max_suppression(runner.infer(x), conf, iou, classes=classes, multi_label=multi_label,
                                   max_det=max_det)
    dets = [d[d[:, 4] > conf] for d in run_graph_nms(runner, x)]
    if classes is not None:
        dets = [d[np.isin(d[:, 5], np.asarray(classes))] for d in dets]
    return [d[:max_det] for d in dets]


def graph_nms_note(runner) -> str:
    """One line on what evaluating through a model's own NMS means for its mAP."""
    s = graph_nms_settings(runner)
    fixed = f" (score > {s.conf_thres}, IoU {s.iou_thres}, at most {s.topk} per image)" if s else ""
    return (f"{runner.info.path}: evaluated through the NMS in its graph{fixed}: those thresholds, fixed at "
            "export, bound the mAP (`conf` and `iou` do not apply; export without NMS for the reference figure)")


def plugin_ops(proto) -> list:
    """The TensorRT plugin ops of a graph (``EfficientNMS_TRT``...): ONNX Runtime cannot run them."""
    import onnx

    return sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain or "")})


def strip_nms(proto):
    """The graph up to its decoded ``output`` (a graph that ends in NMS without it), for the
    work ONNX Runtime does on a model whose NMS it cannot run (the EfficientNMS_TRT plugin)."""
    import onnx
    from onnx import TensorProto, helper

    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    if "output" not in producer:
        raise InputError("the graph has no decoded 'output' before its NMS", "Export it with 'fyexport export'")
    keep, stack = set(), ["output"]
    while stack:
        n = producer.get(stack.pop())
        if n is not None and n.name not in keep:
            keep.add(n.name)
            stack.extend(i for i in n.input if i)
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    used = {i for n in g.node if n.name in keep for i in n.input}
    nodes = [n for n in m.graph.node if n.name in keep]
    inits = [i for i in m.graph.initializer if i.name in used]
    batch = g.input[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch.dim_param or batch.dim_value or None,
                                                                      None, None])
    for field, items in ((m.graph.node, nodes), (m.graph.initializer, inits), (m.graph.output, [out])):
        del field[:]
        field.extend(items)
    del m.graph.value_info[:]
    return m


def reattach_nms(model, original):
    """``model`` (made from :func:`strip_nms`'s graph, its ``output`` unchanged) with the NMS of
    ``original`` appended again: the nodes after ``output``, their initializers and outputs."""
    import onnx

    body = {n.name for n in strip_nms(original).graph.node}
    tail = [n for n in original.graph.node if n.name not in body]
    used = {i for n in tail for i in n.input}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {i.name for i in m.graph.initializer}
    m.graph.node.extend(tail)
    m.graph.initializer.extend(i for i in original.graph.initializer if i.name in used and i.name not in have)
    del m.graph.output[:]
    m.graph.output.extend(original.graph.output)
    return m
