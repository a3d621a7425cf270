"""Replacement pictures for ``kind: replace``: a still image or a looping video, as I420 planes.

Decoded and scaled by PyAV/swscale (bilinear, limited range, the effect's colour matrix),
so any format FFmpeg reads works and odd frame sizes get correct ceil-sized chroma.  Shared by
the CPU and CUDA backends (the latter uploads the planes).  Files are checked when the
effect is created, so a bad path is one ConfigError naming the field and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privacy_filter.config import EffectConfig
from privacy_filter.effects.color import SWSCALE_COLORSPACE
from privacy_filter.errors import ConfigError
from privacy_filter.frames import plane_view

if TYPE_CHECKING:
    import av

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _av() -> Any:
    """PyAV, imported when a replacement picture is opened rather than with the effects."""
    import av

    return av


def to_i420(frame: av.VideoFrame, width: int, height: int, matrix: str) -> Planes:
    """Scale + convert one PyAV picture to contiguous I420 planes of exactly width×height."""
    out = frame.reformat(
        width=width,
        height=height,
        format="yuv420p",
        dst_colorspace=SWSCALE_COLORSPACE[matrix],
        dst_color_range="MPEG",
        interpolation="BILINEAR",
    )
    y, u, v = (np.ascontiguousarray(plane_view(p)) for p in out.planes[:3])
    return y, u, v


def _open(path_str: str, field: str) -> Any:
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise ConfigError(f"effect.{field}: file not found: {path}")
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ConfigError(f"effect.{field}: cannot open {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise ConfigError(f"effect.{field}: {path} has no picture (no video stream)")
    return container


def _first_frame(container: Any, path: str, field: str) -> av.VideoFrame:
    av = _av()
    try:
        for frame in container.decode(video=0):
            return frame
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ConfigError(f"effect.{field}: cannot decode {path}: {exc}") from None
    raise ConfigError(f"effect.{field}: {path} contains no decodable picture")


class ImageReplacement:
    """A still image, scaled once per frame size."""

    def __init__(self, path: str, matrix: str) -> None:
        container = _open(path, "replace_image")
        try:
            self._frame = _first_frame(container, path, "replace_image")
        finally:
            container.close()
        self._matrix = matrix
        self._cache: dict[tuple[int, int], Planes] = {}

    def planes(self, width: int, height: int) -> Planes:
        key = (width, height)
        if key not in self._cache:
            self._cache.clear()  # one stream, one size at a time
            self._cache[key] = to_i420(self._frame, width, height, self._matrix)
        return self._cache[key]

    def close(self) -> None:
        self._cache.clear()


class VideoReplacement:
    """A video played one picture per filtered frame, looping at its end."""

    def __init__(self, path: str, matrix: str) -> None:
        self._path = path
        self._matrix = matrix
        self._container = _open(path, "replace_video")
        first = _first_frame(self._container, path, "replace_video")
        self._pending: av.VideoFrame | None = first
        self._iter = self._container.decode(video=0)

    def _next_frame(self) -> av.VideoFrame:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        try:
            return next(self._iter)
        except StopIteration:
            pass
        except _av().FFmpegError:
            pass  # a damaged tail: loop rather than stop covering
        self._container.seek(0)
        self._iter = self._container.decode(video=0)
        return next(self._iter)

    def planes(self, width: int, height: int) -> Planes:
        return to_i420(self._next_frame(), width, height, self._matrix)

    def close(self) -> None:
        self._container.close()


Replacement = ImageReplacement | VideoReplacement


def open_replacement(effect: EffectConfig) -> Replacement | None:
    """The replacement source of a ``replace`` effect, or None (colour replacement / other kinds)."""
    if effect.kind != "replace":
        return None
    if effect.replace_image:
        return ImageReplacement(effect.replace_image, effect.color_matrix)
    if effect.replace_video:
        return VideoReplacement(effect.replace_video, effect.color_matrix)
    return None
