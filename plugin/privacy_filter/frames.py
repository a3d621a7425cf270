"""The one in-memory picture type that flows decode → stage → encode.

Frames stay in the decoder's native YUV 4:2:0 (I420) planes from end to end; full
resolution RGB is never made.  Planes may be strided views into PyAV or ZeroMQ
buffers (``line_size`` > width), so code must not assume C-contiguity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

#: ``metadata`` key of a frame's display rotation: degrees counterclockwise (90, 180 or 270)
#: that a player turns the stored picture by (the source's display matrix); absent when 0.
ROTATION = "rotation"
_UPRIGHT = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def quarter_turns(degrees: float) -> int:
    """A display rotation in degrees (counterclockwise, any sign) as 0-3 quarter turns, or 0
    when it is not a multiple of 90 (such matrices are ignored, as most players do)."""
    k = round(float(degrees) / 90.0)
    return k % 4 if abs(float(degrees) - 90.0 * k) < 1e-6 else 0


def turn(plane: np.ndarray, k: int) -> np.ndarray:
    """``plane`` turned k quarter turns counterclockwise (``np.rot90``'s sense), as a new array."""
    k %= 4
    return np.ascontiguousarray(plane) if k == 0 else cv2.rotate(plane, _UPRIGHT[k])


def chroma_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of a 4:2:0 chroma plane; odd sizes round up, as FFmpeg does."""
    return (width + 1) // 2, (height + 1) // 2


@dataclass(frozen=True)
class CoverWhole:
    """What a cover engine returns instead of a map when a frame must be covered whole on purpose.

    Why not an all-ones map: the stage then counts the frame (``frames_covered_whole`` and
    ``covered_whole:<reason>``), logs the reason once per stream, and uses the effect's cheap
    whole-frame cover.  ``reason`` is one of ``metrics.COVER_REASONS`` (e.g. ``learning``).
    """

    reason: str


@dataclass
class YuvFrame:
    """One I420 picture plus the timing that must survive the pipeline untouched.

    ``y`` is (H, W) uint8, ``u`` and ``v`` are (ceil(H/2), ceil(W/2)) uint8.
    ``pts`` is in units of ``time_base``; ``None`` only for sources without timestamps.
    ``index`` is the 0-based decode order of the frame within its stream.
    """

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pts: int | None = None
    time_base: Fraction = Fraction(1, 90000)
    index: int = 0
    stream_id: str = "0"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v

    @property
    def turns(self) -> int:
        """Quarter turns (0-3, counterclockwise) that make the stored picture upright on display,
        from ``metadata["rotation"]`` (degrees); 0 when absent or not a number."""
        degrees = self.metadata.get(ROTATION, 0)
        if isinstance(degrees, bool) or not isinstance(degrees, (int, float)):
            return 0  # free metadata from a ZeroMQ sender may hold anything under this key
        return quarter_turns(degrees)

    def upright(self) -> YuvFrame:
        """This frame as it is displayed (its rotation applied), or itself when there is none.

        The model should see people upright: a phone's portrait video is stored sideways with a
        90° display matrix, and the person segmentation misses more of a sideways person
        (portrait_dev turned 90°: person recall 0.931 against 0.989 upright).
        """
        k = self.turns
        if k == 0:
            return self
        meta = {key: val for key, val in self.metadata.items() if key != ROTATION}
        return YuvFrame(turn(self.y, k), turn(self.u, k), turn(self.v, k), self.pts, self.time_base, self.index, self.stream_id, meta)

    def validate(self) -> None:
        """Raise ValueError naming the plane whose geometry is inconsistent."""
        if self.y.dtype != np.uint8 or self.y.ndim != 2:
            raise ValueError(f"Y plane must be 2-D uint8, got {self.y.dtype} {self.y.shape}")
        cw, ch = chroma_size(self.width, self.height)
        for name, plane in (("U", self.u), ("V", self.v)):
            if plane.dtype != np.uint8 or plane.shape != (ch, cw):
                raise ValueError(f"{name} plane must be uint8 {(ch, cw)} for a {self.width}x{self.height} frame, got {plane.dtype} {plane.shape}")

    def copy(self) -> YuvFrame:
        """A deep copy whose planes are writable and C-contiguous."""
        return YuvFrame(
            np.ascontiguousarray(self.y).copy(),
            np.ascontiguousarray(self.u).copy(),
            np.ascontiguousarray(self.v).copy(),
            self.pts,
            self.time_base,
            self.index,
            self.stream_id,
            dict(self.metadata),
        )

    @classmethod
    def blank(cls, width: int, height: int, **kw: Any) -> YuvFrame:
        """A mid-grey frame; handy for tests and for covering a frame whole."""
        cw, ch = chroma_size(width, height)
        return cls(
            np.full((height, width), 128, np.uint8),
            np.full((ch, cw), 128, np.uint8),
            np.full((ch, cw), 128, np.uint8),
            **kw,
        )


def plane_view(plane: Any) -> np.ndarray:
    """A writable (height, width) uint8 view of one PyAV plane, honouring its line size."""
    buf = np.frombuffer(plane, np.uint8)
    rows = buf[: plane.height * plane.line_size].reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]
