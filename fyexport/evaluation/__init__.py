"""Accuracy: detections of any runner (``detections``), the one NMS (``nms``), mAP against
labels (``metrics``), agreement with the unpruned teacher (``agreement``)."""
