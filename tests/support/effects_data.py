"""Real frames and real masks for effect tests and benchmarks (from ../shared/data, never copied).

Frames: pictures of videos/one-by-one-person-detection.mp4 scaled by PyAV/swscale to any
size (odd sizes included).  Probabilities: portrait_dev ground-truth masks resized to a
model resolution with INTER_AREA, which gives soft 0..1 edges like a real model output.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from privacy_filter.effects.replace import to_i420
from privacy_filter.frames import YuvFrame

VIDEO = "videos/one-by-one-person-detection.mp4"
_frames: dict[tuple[str, int], av.VideoFrame] = {}


def source_picture(data: Path, index: int = 900) -> av.VideoFrame:
    """The ``index``-th decoded picture of the CCTV clip (people are in from ~frame 400)."""
    key = (str(data), index)
    if key not in _frames:
        with av.open(str(data / VIDEO)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == index:
                    _frames[key] = frame
                    break
    return _frames[key]


def real_frame(data: Path, width: int, height: int, index: int = 900) -> YuvFrame:
    """A real picture scaled to width×height as writable, contiguous I420 planes."""
    y, u, v = to_i420(source_picture(data, index), width, height, "bt601")
    return YuvFrame(y.copy(), u.copy(), v.copy(), index=index)


def mask_names(data: Path) -> list[str]:
    return sorted(p.stem for p in (data / "images/portrait_dev/masks").glob("*.png"))


def real_prob(data: Path, name: str = "00001", size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """Ground-truth person mask → float32 probability (w, h = size), soft edges from INTER_AREA."""
    path = data / "images/portrait_dev/masks" / f"{name}.png"
    gt = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gt is None:
        raise FileNotFoundError(path)
    binary = np.where(gt > 0, 255, 0).astype(np.uint8)
    return cv2.resize(binary, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def shrink_prob(prob: np.ndarray, scale: float, offset: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """The same person smaller and elsewhere (a CCTV-like figure), same map size."""
    h, w = prob.shape
    small = cv2.resize(prob, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    out = np.zeros_like(prob)
    y0 = int((h - small.shape[0]) * offset[1])
    x0 = int((w - small.shape[1]) * offset[0])
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out
