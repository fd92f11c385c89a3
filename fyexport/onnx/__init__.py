"""ONNX: the export (``export``), end-to-end NMS in the graph (``nms``), and facts about an
ONNX model that every stage reads (``facts``)."""
