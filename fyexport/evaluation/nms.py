"""The one NMS (docs/yolov7-architecture.md, 3.4), in numpy so every runtime shares it.

Rows ``cx, cy, w, h, obj, cls...`` -> per image ``x1, y1, x2, y2, score, class``:
drop obj <= conf, score = cls * obj, best class (or every class above conf with
``multi_label``), top ``max_nms`` candidates, class-aware greedy IoU suppression via a
``class * max_wh`` offset, at most ``max_det`` kept.
"""
from __future__ import annotations

import numpy as np

MAX_WH = 4096
MAX_NMS = 30000
MAX_DET = 300


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (N,4) and b (M,4)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_keep: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS in descending score order (suppress IoU > iou_thres).

    Greedy NMS keeps boxes in score order, so stopping after ``max_keep`` picks gives
    exactly the first ``max_keep`` of the full result."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-12)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(pred: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45, classes=None,
                        agnostic: bool = False, multi_label: bool = False, max_det: int = MAX_DET,
                        max_nms: int = MAX_NMS) -> list[np.ndarray]:
    """Per image (n, 6) float32 arrays ``x1, y1, x2, y2, score, class``.

    Args:
        pred: (B, N, 5+nc) decoded rows, or (N, 5+nc) for one image.
    """
    pred = np.asarray(pred)
    if pred.ndim == 2:
        pred = pred[None]
    nc = pred.shape[2] - 5
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            out.append(np.zeros((0, 6), np.float32))
            continue
        x = x.astype(np.float32, copy=True)
        if nc == 1:
            x[:, 5:] = x[:, 4:5]
        else:
            x[:, 5:] *= x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = np.nonzero(x[:, 5:] > conf_thres)
            det = np.concatenate([box[i], x[i, j + 5, None], j[:, None].astype(np.float32)], 1)
        else:
            j = x[:, 5:].argmax(1)
            conf = x[np.arange(len(x)), j + 5]
            m = conf > conf_thres
            det = np.concatenate([box[m], conf[m, None], j[m, None].astype(np.float32)], 1)
        if classes is not None:
            det = det[np.isin(det[:, 5], np.asarray(classes))]
        if not det.shape[0]:
            out.append(np.zeros((0, 6), np.float32))
            continue
        if det.shape[0] > max_nms:
            det = det[np.argsort(-det[:, 4], kind="stable")[:max_nms]]
        offset = det[:, 5:6] * (0 if agnostic else MAX_WH)
        keep = greedy_nms(det[:, :4] + offset, det[:, 4], iou_thres, max_det)
        out.append(det[keep].astype(np.float32))
    return out
