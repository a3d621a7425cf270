"""Segmentation engines behind one interface (docs/architecture.md, "Segmentation interface").

    seg = create_segmenter(model="selfie", device="cpu", tiles=None)
    probs = seg.infer_yuv([frame, ...])     # list of (h, w) float32 person probabilities
"""

from __future__ import annotations

from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.outputs import upsample_probability
from privacy_filter.engines.tiling import AutoTiles, TileGrid, parse_tiles
from privacy_filter.models.registry import ResolvedModel, resolve_model

__all__ = ["Segmenter", "create_segmenter", "upsample_probability", "TileGrid", "AutoTiles", "parse_tiles"]


def create_segmenter(
    model: "str | ResolvedModel | None" = None,
    device: str = "cpu",
    tiles: "str | TileGrid | AutoTiles | None" = None,
    threads: int | None = None,
) -> Segmenter:
    """A ready engine for ``model`` (name, path, or an already resolved model).

    ``device``: 'cpu' (ONNX Runtime CPU EP), 'cuda' (ONNX Runtime TensorRT/CUDA EPs; an error if
    absent) or 'auto' (GPU EPs when present, else CPU).  ``tiles``: None/'off', 'auto' or 'CxR'.
    A serialized TensorRT engine (.engine/.plan/.trt) goes to ``engines.tensorrt``.
    """
    from privacy_filter.engines.onnxruntime import OrtSegmenter

    if isinstance(model, str):
        from privacy_filter.engines import tensorrt

        if tensorrt.is_engine_path(model):
            return tensorrt.segmenter_for_engine(model, device, tiles)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    seg = OrtSegmenter(resolved, device=device, threads=threads)
    seg.tiles = parse_tiles(tiles)
    return seg
