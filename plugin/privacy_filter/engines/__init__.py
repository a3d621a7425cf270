"""Segmentation on the CPU (ONNX Runtime) behind the ``Segmenter`` interface.

    seg = privacy_filter.create_segmenter(model="selfie", device="cpu", tiles=None)
    probs = seg.infer_yuv([frame, ...])     # list of (h, w) float32 person probabilities

``backends.create_segmenter`` chooses between this package and ``gpu.tensorrt``.
"""

from __future__ import annotations

from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.outputs import upsample_probability
from privacy_filter.engines.tiling import AutoTiles, TileGrid, parse_tiles

__all__ = ["Segmenter", "upsample_probability", "TileGrid", "AutoTiles", "parse_tiles"]
