"""The person-detector interface the CCTV cover is built on (docs/cctv.md).

Why a Protocol and not a base class: the cover logic (``engines.finder``) only needs boxes per
frame, so any runtime (ONNX Runtime, TensorRT, a test double) fits as long as it answers
``detect_yuv``.  ``backends.create_detector(name_or_path, device=...)`` returns one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from privacy_filter.frames import YuvFrame


@runtime_checkable
class Detector(Protocol):
    """Person boxes for batches of frames.

    ``detect_yuv(frames)[i]`` is an ``(N, 5)`` float32 array ``x0, y0, x1, y1, score`` in pixels
    of frame ``i`` (the stored picture), already filtered by the detector's score threshold and
    non-maximum suppression.  An empty frame gives shape ``(0, 5)``.
    """

    def detect_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]: ...
