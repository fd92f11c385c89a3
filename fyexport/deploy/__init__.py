"""Where an engine is deployed: a Triton model repository (``triton``), DeepStream
(``deepstream``)."""
