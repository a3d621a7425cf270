"""TensorRT engines: build (``build``), their sidecar (``sidecar``) and running them (``runtime``).

Nothing here imports ``tensorrt`` or ``cupy`` at import time (``loader`` does, on first use).
"""
