"""Choosing the implementation of each component: CPU or GPU segmentation, CPU or CUDA effects.

This is the one place that knows both backends exist.  The CPU packages (``engines``,
``effects``) and the GPU package (``gpu``) never import each other's implementations; they
share the specs, configs and the ``Segmenter`` / ``StreamEffect`` protocols, and this layer,
above both, picks one per component.  GPU modules are imported lazily, only when asked for.
"""

from __future__ import annotations

import logging

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import StreamEffect
from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.tiling import AutoTiles, TileGrid, parse_tiles
from privacy_filter.errors import ConfigError
from privacy_filter.models.registry import ResolvedModel, resolve_model

log = logging.getLogger(__name__)


def create_segmenter(
    model: str | ResolvedModel | None = None,
    device: str = "cpu",
    tiles: str | TileGrid | AutoTiles | None = None,
    threads: int | None = None,
) -> Segmenter:
    """A ready engine for ``model`` (name, path, or an already resolved model).

    ``device``: 'cpu' (ONNX Runtime CPU EP), 'cuda' (ONNX Runtime TensorRT/CUDA EPs; an error if
    absent) or 'auto' (GPU EPs when present, else CPU).  ``tiles``: None/'off', 'auto' or 'CxR'.
    A serialized TensorRT engine (.engine/.plan/.trt) goes to ``gpu.tensorrt``.
    """
    from privacy_filter.engines.onnxruntime import OrtSegmenter

    if isinstance(model, str):
        from privacy_filter.gpu.tensorrt.sidecar import is_engine_path

        if is_engine_path(model):
            from privacy_filter.gpu.tensorrt.runtime import segmenter_for_engine

            return segmenter_for_engine(model, device, tiles)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    seg = OrtSegmenter(resolved, device=device, threads=threads)
    seg.tiles = parse_tiles(tiles)
    return seg


def create_stream_effect(effect: EffectConfig, mask: MaskConfig, device: str = "cpu") -> StreamEffect:
    """The effect for one stream on ``device`` ("cpu" or "cuda").

    Raises ConfigError for an unusable replacement file or an unknown device.
    """
    if device == "cpu":
        from privacy_filter.effects.cpu import CpuStreamEffect

        return CpuStreamEffect(effect, mask)
    if device == "cuda":
        from privacy_filter.gpu import effects as cuda_effects  # lazily: CuPy/NVRTC only when asked for

        return cuda_effects.create_stream_effect(effect, mask)
    raise ConfigError(f"device: unknown effects device {device!r}; allowed: cpu, cuda")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when the CUDA backend can run here, else ``cpu`` with one log line saying why.

    Asks the same question ``effects.cuda.create_stream_effect`` does (device, driver *and* NVRTC),
    so ``auto`` never picks a CUDA path that would then refuse to start.
    """
    if device != "auto":
        return device
    from privacy_filter.gpu.effects import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is None:
        return "cuda"
    log.warning("--device auto: CUDA unavailable: %s; using the CPU", reason)
    return "cpu"
