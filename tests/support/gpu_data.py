"""Real test pictures for the kernel tests: video frames and person probability maps.

Frames come from ``videos/one-by-one-person-detection.mp4`` (decoded with PyAV, people in
the room from ~40 s on), resized per plane to the odd sizes the tests need; probability
maps come from portrait_dev ground-truth masks shrunk to model resolution (INTER_AREA gives
soft, realistic edges).  Everything is cached per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import av
import cv2
import numpy as np

from privacy_filter.frames import YuvFrame, chroma_size

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]
VIDEO = "videos/one-by-one-person-detection.mp4"


@functools.lru_cache(maxsize=4)
def video_frames(data: Path, count: int = 4, start_s: float = 62.0) -> tuple[Planes, ...]:
    """``count`` consecutive decoded I420 frames (768×432) from ``start_s`` seconds on."""
    out: list[Planes] = []
    with av.open(str(data / VIDEO)) as c:
        s = c.streams.video[0]
        c.seek(int(start_s / s.time_base), stream=s)
        for fr in c.decode(s):
            if fr.time is not None and fr.time < start_s:
                continue
            f = fr.to_ndarray(format="yuv420p")  # (H*3/2, W) for even sizes
            h, w = fr.height, fr.width
            y = f[:h].copy()
            u = f[h : h + h // 4].reshape(h // 2, w // 2).copy()
            v = f[h + h // 4 :].reshape(h // 2, w // 2).copy()
            out.append((y, u, v))
            if len(out) == count:
                break
    assert len(out) == count, f"could not decode {count} frames from {VIDEO}"
    return tuple(out)


def resized(planes: Planes, width: int, height: int) -> Planes:
    """Per-plane bilinear resize of real frame content to ``width``×``height`` (odd sizes allowed)."""
    cw, ch = chroma_size(width, height)
    y, u, v = planes
    return (
        cv2.resize(y, (width, height), interpolation=cv2.INTER_LINEAR),
        cv2.resize(u, (cw, ch), interpolation=cv2.INTER_LINEAR),
        cv2.resize(v, (cw, ch), interpolation=cv2.INTER_LINEAR),
    )


def frame(data: Path, width: int, height: int, index: int = 0) -> YuvFrame:
    y, u, v = resized(video_frames(data)[index], width, height)
    return YuvFrame(y, u, v, index=index)


@functools.lru_cache(maxsize=8)
def portrait_masks(data: Path, count: int = 4) -> tuple[np.ndarray, ...]:
    files = sorted((data / "images/portrait_dev/masks").glob("*.png"))[:count]
    assert files, "no portrait_dev masks"
    return tuple(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in files)


def prob_map(data: Path, h: int = 144, w: int = 256, index: int = 0) -> np.ndarray:
    """A model-resolution person probability from a real ground-truth mask (soft edges)."""
    m = portrait_masks(data)[index]
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def portrait_image(data: Path, index: int = 0) -> Path:
    return sorted((data / "images/portrait_dev/images").glob("*.jpg"))[index]
