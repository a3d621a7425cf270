"""Small real media files for the pipeline tests, made with PyAV (nothing is mocked).

* ``make_av_clip``: synthetic moving picture + an AAC sine track (for audio copy/drop).
* ``cut_people_segment``: re-encodes a stretch of one-by-one-person-detection.mp4 in
  which a person stands in the room, keeping the original timestamps.
* ``read_video`` / ``read_audio_packets``: what a player would see.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from privacy_filter.frames import plane_view


def make_av_clip(path: Path, *, frames: int = 50, size: tuple[int, int] = (320, 240), rate: int = 25, audio: bool = True) -> Path:
    w, h = size
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast"}
        a = None
        if audio:
            a = out.add_stream("aac", rate=48000)
            a.layout = "stereo"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(frames):
            y = ((xx + 4 * i) % 256).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(np.vstack([y, np.full((h // 2, w), 128, np.uint8)]), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, rate)
            for p in v.encode(f):
                out.mux(p)
        if a is not None:
            n = int(48000 * frames / rate) // 1024
            for k in range(n):
                t = (np.arange(1024) + k * 1024) / 48000
                s = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, k * 1024, Fraction(1, 48000)
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


def cut_people_segment(src: Path, dst: Path, start_s: float = 10.0, frames: int = 30) -> Path:
    """Re-encode ``frames`` frames from ``start_s`` (original pts kept) into ``dst``."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        o = out.add_stream("libx264", rate=vs.average_rate)
        o.width, o.height, o.pix_fmt = vs.codec_context.width, vs.codec_context.height, "yuv420p"
        o.codec_context.time_base = vs.time_base
        o.options = {"preset": "ultrafast", "crf": "18"}
        n = 0
        for f in c.decode(vs):
            if f.time < start_s:
                continue
            f.pict_type = av.video.frame.PictureType.NONE
            for p in o.encode(f):
                out.mux(p)
            n += 1
            if n >= frames:
                break
        for p in o.encode(None):
            out.mux(p)
    return dst


def read_video(path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    """(presentation times in seconds, Y planes) of every frame, in order."""
    times, ys = [], []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            times.append(Fraction(f.pts) * f.time_base)
            if f.format.name != "yuv420p":
                f = f.reformat(format="yuv420p")
            ys.append(plane_view(f.planes[0]).copy())  # the coded Y plane itself, no range conversion
    return times, ys


def read_audio_packets(path: Path) -> list[tuple[bytes, Fraction]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        a = c.streams.audio[0]
        return [(bytes(p), Fraction(p.pts) * p.time_base) for p in c.demux(a) if p.size]


def has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)
