"""Mask post-processing and effects on I420 planes (docs/effects.md).

Pinned API::

    fx = create_stream_effect(effect, mask, device="cpu")   # "cuda": CuPy kernels, imported lazily
    alpha = fx.apply(frame, prob)     # filters frame planes in place; returns H×W uint8, 255 = covered
    alpha = fx.cover_whole(frame)     # fail closed: the whole frame covered; returns all-255
    fx.reset()                        # drop temporal state (stream restart)

The pure helpers (``resolve_geometry``, ``bilinear_taps``, ``rgb_to_yuv``, ``TemporalFilter``,
``open_replacement``) are shared by both backends so each idea has one implementation.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects.color import rgb_to_yuv
from privacy_filter.effects.geometry import Geometry, blur_factors, resolve_geometry, threshold8
from privacy_filter.effects.mask import TemporalFilter, bilinear_taps, quantize, sanitize_prob
from privacy_filter.effects.replace import open_replacement
from privacy_filter.errors import ConfigError
from privacy_filter.frames import YuvFrame


class StreamEffect(Protocol):
    """What the filter stage calls, per stream, whatever the backend."""

    def apply(self, frame: YuvFrame, prob: np.ndarray) -> np.ndarray: ...

    def cover_whole(self, frame: YuvFrame) -> np.ndarray: ...

    def reset(self) -> None: ...


def create_stream_effect(effect: EffectConfig, mask: MaskConfig, device: str = "cpu") -> StreamEffect:
    """The effect for one stream on ``device`` ("cpu" or "cuda").

    Raises ConfigError for an unusable replacement file or an unknown device.
    """
    if device == "cpu":
        from privacy_filter.effects.cpu import CpuStreamEffect

        return CpuStreamEffect(effect, mask)
    if device == "cuda":
        from privacy_filter.effects import cuda  # type: ignore[attr-defined]  # imported lazily: CuPy/NVRTC only when asked for

        return cuda.create_stream_effect(effect, mask)
    raise ConfigError(f"device: unknown effects device {device!r}; allowed: cpu, cuda")


__all__ = [
    "Geometry",
    "StreamEffect",
    "TemporalFilter",
    "bilinear_taps",
    "blur_factors",
    "create_stream_effect",
    "open_replacement",
    "quantize",
    "resolve_geometry",
    "rgb_to_yuv",
    "sanitize_prob",
    "threshold8",
]
