"""Where an engine is deployed: a Triton model repository (``triton``), DeepStream
(``deepstream``: nvinfer config, labels, parser library, deepstream-app example)."""
