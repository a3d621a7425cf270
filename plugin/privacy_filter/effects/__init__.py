"""Mask post-processing and effects on I420 planes (docs/effects.md).

Pinned API::

    fx = privacy_filter.create_stream_effect(effect, mask, device="cpu")   # "cuda": gpu.effects
    alpha = fx.apply(frame, prob)     # filters frame planes in place; returns H×W uint8, 255 = covered
    alpha = fx.cover_whole(frame)     # fail closed: the whole frame covered; returns all-255
    fx.reset()                        # drop temporal state (stream restart)

The pure helpers (``resolve_geometry``, ``bilinear_taps``, ``rgb_to_yuv``, ``TemporalFilter``,
``open_replacement``) are shared by both backends so each idea has one implementation.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from privacy_filter.effects.color import rgb_to_yuv
from privacy_filter.effects.geometry import Geometry, blur_factors, resolve_geometry, threshold8
from privacy_filter.effects.mask import TemporalFilter, bilinear_taps, quantize, sanitize_prob
from privacy_filter.effects.replace import open_replacement
from privacy_filter.frames import YuvFrame


class StreamEffect(Protocol):
    """What the filter stage calls, per stream, whatever the backend."""

    def apply(self, frame: YuvFrame, prob: np.ndarray) -> np.ndarray: ...

    def cover_whole(self, frame: YuvFrame) -> np.ndarray: ...

    def reset(self) -> None: ...


__all__ = [
    "Geometry",
    "StreamEffect",
    "TemporalFilter",
    "bilinear_taps",
    "blur_factors",
    "open_replacement",
    "quantize",
    "resolve_geometry",
    "rgb_to_yuv",
    "sanitize_prob",
    "threshold8",
]
