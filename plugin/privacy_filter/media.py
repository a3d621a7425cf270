"""What a source says about its media, as plain data: picklable, wire-safe, free of PyAV.

These types cross every boundary of the pipeline (decoder → stage → encoder, in one process
or over ZeroMQ), so they live at the bottom layer where every other module may import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class VideoInfo:
    """What the encoder needs to know about the video before the first frame."""

    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate, when the container knows it
    frames: int | None  # total frame count, when the container knows it (files)
    duration_s: float | None
    codec: str
    pix_fmt: str


@dataclass(frozen=True)
class AudioInfo:
    """Codec parameters of the source audio, as plain data (picklable, wire-safe)."""

    codec: str
    sample_rate: int
    channels: int
    layout: str
    time_base: Fraction
    extradata: bytes | None
    bit_rate: int


@dataclass
class AudioPacket:
    """One compressed audio packet, forwarded untouched (``data`` is the exact payload)."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    is_keyframe: bool = True
    stream_id: str = "0"


@dataclass
class SourceInfo:
    """Result of opening a source.

    ``audio_stream`` is the live PyAV stream (in-process encoders use it as a mux
    template for a bit-exact copy); ``audio`` is the same as plain data for other processes.
    """

    url: str
    live: bool
    video: VideoInfo
    audio: AudioInfo | None = None
    audio_stream: Any = field(default=None, repr=False, compare=False)
