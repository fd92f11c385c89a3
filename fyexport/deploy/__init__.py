"""Deployment targets beyond a bare engine: DeepStream's nvinfer (:mod:`.deepstream`)."""
