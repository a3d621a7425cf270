"""Pictures as the decoder hands them over, for engine tests."""

from __future__ import annotations

import cv2
import numpy as np

from privacy_filter.frames import YuvFrame


def to_i420(bgr: np.ndarray, pad: int = 0) -> YuvFrame:
    """An I420 frame from an even-sized BGR image, with planes as strided views when ``pad``."""
    h, w = bgr.shape[:2]
    flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    n, c = h * w, (h // 2) * (w // 2)
    y, u, v = flat[:n].reshape(h, w), flat[n : n + c].reshape(h // 2, w // 2), flat[n + c :].reshape(h // 2, w // 2)
    if pad:

        def strided(p: np.ndarray) -> np.ndarray:
            big = np.zeros((p.shape[0], p.shape[1] + pad), np.uint8)
            big[:, : p.shape[1]] = p
            return big[:, : p.shape[1]]

        y, u, v = strided(y), strided(u), strided(v)
    return YuvFrame(y, u, v)


def even(img: np.ndarray) -> np.ndarray:
    return img[: img.shape[0] & ~1, : img.shape[1] & ~1]
