"""Encode/publish worker: ``YuvFrame`` + ``AudioPacket`` → a file or a network sink (PyAV).

Why it is shaped this way:

* **Source timestamps survive.**  The encoder's time base is the source's, each
  frame keeps its source pts, and the muxer gets packets in that time base; a file
  in gives exactly one frame out per frame in, at the same times.  A pts that does
  not increase (broken sources, reconnects) is repaired to ``last + 1`` and counted,
  because x264 and every muxer reject non-monotonic time.
* **Few copies.**  A frame still backed by its decoder buffer (in-process
  ``process``) is handed to the encoder as that very ``av.VideoFrame``; other frames
  (from ZeroMQ) are copied once into an encoder-owned picture.
* **Audio is muxed, never re-encoded**: ``copy`` writes the source packets
  bit-identical, ``drop`` writes none.
* Odd frame sizes: H.264 4:2:0 needs even width and height, so an odd frame is
  padded by one replicated row/column (logged once).  Chroma planes already have
  the rounded-up size, so only luma changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from privacy_filter.config import parse_bitrate
from privacy_filter.errors import ConfigError, UserError
from privacy_filter.frames import YuvFrame, plane_view
from privacy_filter.io.av_source import native_frame
from privacy_filter.media import AudioInfo, AudioPacket, VideoInfo

log = logging.getLogger(__name__)

#: Audio packets held back until the first picture (≈ 10 s of AAC); past that the header is
#: written without the picture's display rotation rather than holding more.
EARLY_AUDIO_PACKETS = 512


class SinkError(UserError):
    """An output that cannot be opened or written (bad path, unreachable server, unusable codec)."""


@dataclass
class EncodeSettings:
    """Per-stream codec settings.  Mirrors the output part of the stream config."""

    codec: str = "libx264"  # libx264 | h264_nvenc | libx265 | hevc_nvenc | mpeg4 ...
    preset: str | None = None  # None: the codec's default (config.DEFAULT_PRESET)
    tune: str | None = None
    crf: int | None = None
    bitrate: str | int | None = None  # e.g. "4M" or 4000000
    gop: int | None = None
    audio: str = "copy"  # copy | drop
    format: str | None = None  # container format; inferred from the URL when None
    options: dict[str, str] = field(default_factory=dict)  # extra codec options
    container_options: dict[str, str] = field(default_factory=dict)  # extra muxer options
    threads: int = 0
    mask: bool = True  # ZeroMQ outputs: send each frame's mask (containers have no place for it)
    low_memory: bool = False  # libx264: one encoding thread (unless ``threads`` is set), lookahead in it

    def effective_preset(self) -> str | None:
        """The preset the encoder gets: the one set, else the codec's default (None: FFmpeg's)."""
        from privacy_filter.config import DEFAULT_PRESET

        return self.preset if self.preset else DEFAULT_PRESET.get(self.codec)

    def check(self) -> None:
        """ConfigError naming the allowed values when preset/tune do not belong to the codec."""
        from privacy_filter.config import check_encoder_settings

        try:
            check_encoder_settings(self.codec, self.preset, self.tune)
        except ValueError as exc:
            raise ConfigError(f"output: {exc}") from None

    @classmethod
    def from_config(cls, cfg: Any) -> EncodeSettings:
        """Build from any object (e.g. the config's OutputConfig) with same-named attributes."""
        kw = {}
        for name in cls.__dataclass_fields__:
            if hasattr(cfg, name):
                value = getattr(cfg, name)
                if value is not None or name in ("preset", "tune", "crf", "bitrate", "gop", "format"):
                    kw[name] = value
        for name in ("options", "container_options"):
            if kw.get(name) is None:
                kw.pop(name, None)
        return cls(**kw)


def encoder_options(s: EncodeSettings) -> dict[str, str]:
    """The settings' extra codec options, with ``low_memory``'s x264 parameter merged into any given.

    Why sync-lookahead=0: with frame threading x264 keeps threads + B-frames extra pictures queued
    for a lookahead thread (12 MB each at 1080p).  Running the lookahead in the encoding thread
    gives the identical bitstream (checked: tests/integration/test_encoder_settings.py) with less
    memory.  ``low_memory`` also gives x264 one thread (``encoder_threads``), where it matters
    more; this parameter then only applies when ``threads`` is set too.
    """
    opts = {k: str(v) for k, v in s.options.items()}
    if s.low_memory and s.codec == "libx264":
        given = opts.get("x264-params", "")
        if "sync-lookahead" not in given:
            opts["x264-params"] = f"{given}:sync-lookahead=0" if given else "sync-lookahead=0"
    return opts


def encoder_threads(s: EncodeSettings) -> int:
    """The encoder's thread count: ``threads`` when set; 1 for libx264 with ``low_memory``; else 0 (FFmpeg's choice).

    Why one x264 thread: each frame thread holds its own 1080p pictures (x264's default on two
    cores is three).  Measured on the 1080p cctv benchmark clip, interleaved runs, 2026-12-05:
    peak RSS -38 MB (median 464 -> 426) at the same wall time, because the detector, not x264, sets
    the pace there.  The video is not the same bitstream as a threaded encode but the same
    settings: 1,720,972 vs 1,720,785 bytes and 50.388 vs 50.388 dB PSNR (ffmpeg, 150 frames).
    Where x264 is the bottleneck (a plain transcode, the video-call preset) it costs up to ~30 %
    fps (benchmarks/bench_process.py: ffmpeg 52.4 -> 37.1 fps), hence a per-stream choice that the
    cctv preset makes.
    """
    if s.threads:
        return s.threads
    return 1 if s.low_memory and s.codec == "libx264" else 0


def sink_arguments(url: str, settings: EncodeSettings, live: bool) -> tuple[str, str | None, dict[str, str]]:
    """Map an output URL to (target, container format, muxer options)."""
    u = str(url)
    low = u.lower()
    fmt = settings.format
    opts: dict[str, str] = {}
    if low.startswith("udp://") or low.startswith("srt://"):
        fmt = fmt or "mpegts"
        if low.startswith("udp://") and "pkt_size" not in low:
            u += ("&" if "?" in u else "?") + "pkt_size=1316"
    elif low.startswith("rtmp://") or low.startswith("rtmps://"):
        fmt = fmt or "flv"
    elif low.startswith("rtsp://") or low.startswith("rtsps://"):
        fmt = fmt or "rtsp"
        opts["rtsp_transport"] = "tcp"
    elif low.split("?", 1)[0].endswith(".m3u8"):
        fmt = fmt or "hls"
        opts.update({"hls_time": "2"})
        if live:
            opts.update({"hls_list_size": "6", "hls_flags": "delete_segments"})
        else:
            opts.update({"hls_list_size": "0", "hls_playlist_type": "vod"})
    elif low.endswith(".mp4") or low.endswith(".mov") or low.endswith(".m4v"):
        # moov first is friendlier for players; only for files we can rewrite.
        opts.setdefault("movflags", "+faststart")
    opts.update({k: str(v) for k, v in settings.container_options.items()})
    return u, fmt, opts


def codec_available(name: str) -> bool:
    """True when PyAV's FFmpeg has this encoder (it may still fail to open without hardware)."""
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _open_logging_errors(cc: Any, lines: list[str]) -> None:
    """``cc.open()`` with FFmpeg's error log lines of the attempt collected into ``lines``.

    PyAV's exception only carries the errno ("Operation not permitted"); what went wrong
    ("Cannot load libcuda.so.1", "Unable to parse option value") is in FFmpeg's log.
    """
    import av.logging

    old = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:
            try:
                cc.open()
            finally:
                lines.extend(msg.strip() if not name else f"[{name}] {msg.strip()}" for _level, name, msg in logs if msg.strip())
    finally:
        av.logging.set_level(old)


class Encoder:
    """Encode and mux one stream.

    Usage::

        enc = Encoder("out.mp4", info.video, settings, audio=info.audio_stream)  # or AudioInfo
        enc.write(yuv_frame)        # in presentation order, pts in the source time base
        enc.write_audio(packet)     # AudioPacket, muxed as is
        enc.close()                 # flush; the file is complete and playable

    Counters: ``frames_out``, ``audio_packets_out``, ``pts_repaired``.
    """

    def __init__(
        self,
        url: str,
        video: VideoInfo,
        settings: EncodeSettings | None = None,
        *,
        audio: Any = None,
        live: bool = False,
    ) -> None:
        self.url = str(url)
        self.settings = settings or EncodeSettings()
        self.video = video
        self.live = live
        self.frames_out = 0
        self.end_reason = "end"  # the Sink protocol's; a file has nobody downstream to tell
        self.audio_packets_out = 0
        self.pts_repaired = 0
        self._last_pts: int | None = None
        self._closed = False
        # Nothing is muxed before the first picture, so that its display rotation can still go
        # into the header; audio that comes first waits (up to EARLY_AUDIO_PACKETS).
        self._started = False
        self._early_audio: list[av.Packet] = []
        self.width = video.width + (video.width & 1)
        self.height = video.height + (video.height & 1)
        if (self.width, self.height) != (video.width, video.height):
            log.warning(  # once per output: the picture the viewer sees is one row/column larger than the source
                "%s: %dx%d is odd; H.264 4:2:0 needs even sizes, padding to %dx%d by repeating the last row/column",
                self.url,
                video.width,
                video.height,
                self.width,
                self.height,
            )
        self.time_base = Fraction(video.time_base)
        rate = video.rate or Fraction(25)
        self._step = max(1, int(round(1 / (float(rate) * float(self.time_base)))))
        target, fmt, opts = sink_arguments(self.url, self.settings, live)
        self._check_target(target, fmt)
        try:
            self._out = av.open(target, "w", format=fmt, options=opts)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot open output {self.url}: {exc}") from exc
        try:
            self._vs = self._add_video(rate)
            self._as = self._add_audio(audio) if self.settings.audio == "copy" and audio is not None else None
        except Exception:
            self._out.close()
            raise

    # -- setup ----------------------------------------------------------------------
    def _check_target(self, target: str, fmt: str | None) -> None:
        if "://" in target:
            return
        parent = os.path.dirname(os.path.abspath(target))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise SinkError(f"output folder {parent} is a file, not a folder")
        if not os.path.isdir(parent):
            raise SinkError(f"output folder does not exist: {parent}")

    def _add_video(self, rate: Fraction) -> Any:
        s = self.settings
        if not codec_available(s.codec):
            raise SinkError(f"video codec {s.codec!r} is not available in this FFmpeg build")
        try:
            vs = self._out.add_stream(s.codec, rate=rate)
        except ValueError as exc:
            raise SinkError(f"output {self.url}: {exc}") from exc
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
        cc = vs.codec_context
        cc.time_base = self.time_base
        vs.time_base = self.time_base
        threads = encoder_threads(s)
        if threads:
            cc.thread_count = threads
        if not self.live:
            # PyAV opens encoders with slice threading, which makes x264 split each frame
            # and return only when it is done: the calling thread (which also draws the
            # effect) waits out every frame.  Files use frame threading, as the ffmpeg CLI
            # does (FFmpeg's default), so effects and x264 overlap: measured +15 % fps at
            # 1080p (benchmarks/bench_process.py).  Live outputs keep slices: lower latency.
            cc.thread_type = "AUTO"
        opts: dict[str, str] = {}
        is_nvenc = s.codec.endswith("_nvenc")
        s.check()
        preset = s.effective_preset()
        if preset:
            opts["preset"] = str(preset)
        if s.tune:
            opts["tune"] = str(s.tune)
        if s.crf is not None:
            opts["cq" if is_nvenc else "crf"] = str(s.crf)
        if s.gop:
            cc.gop_size = int(s.gop)
        br = parse_bitrate(s.bitrate)
        if br:
            cc.bit_rate = br
        opts.update(encoder_options(s))
        cc.options = opts
        ffmpeg_says: list[str] = []
        try:
            _open_logging_errors(cc, ffmpeg_says)  # fail now, with FFmpeg's own words, rather than at the first frame
        except Exception as exc:
            said = "; ".join(ffmpeg_says) or str(exc)
            hint = ""
            if is_nvenc and any(k in said.lower() for k in ("libcuda", "libnvidia-encode", "nvenc api", "no capable devices", "driver")):
                hint = " (NVENC needs an NVIDIA GPU, its driver, and in a container NVIDIA_DRIVER_CAPABILITIES including 'video'; or use codec libx264)"
            raise SinkError(f"cannot open video encoder {s.codec} with options {opts}: FFmpeg: {said}{hint}") from exc
        return vs

    def _add_audio(self, audio: Any) -> Any:
        try:
            if isinstance(audio, AudioInfo):
                a = self._out.add_stream(audio.codec, rate=audio.sample_rate)
                if audio.layout:
                    a.layout = audio.layout
                if audio.extradata:
                    a.codec_context.extradata = audio.extradata
                if audio.bit_rate:
                    a.bit_rate = audio.bit_rate
                a.time_base = audio.time_base
                return a
            return self._out.add_stream_from_template(audio)
        except ValueError as exc:
            raise SinkError(f"output {self.url} cannot carry the source audio unchanged ({exc}); use audio: drop or another container") from exc

    # -- writing --------------------------------------------------------------------
    def _next_pts(self, frame: YuvFrame) -> int:
        pts = frame.pts
        if pts is not None and frame.time_base != self.time_base:
            pts = int(round(pts * frame.time_base / self.time_base))
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        elif self._last_pts is not None and pts <= self._last_pts:
            self.pts_repaired += 1
            if self.pts_repaired == 1:
                log.warning("%s: non-increasing pts %s after %s; repairing (counted)", self.url, pts, self._last_pts)
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _picture(self, frame: YuvFrame) -> av.VideoFrame:
        nf = native_frame(frame)
        if nf is not None and (nf.width, nf.height) == (self.width, self.height):
            return nf
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        y = plane_view(out.planes[0])
        h, w = frame.height, frame.width
        y[:h, :w] = frame.y
        if w < self.width:
            y[:h, w] = frame.y[:, -1]
        if h < self.height:
            y[h, :] = y[h - 1, :]
        plane_view(out.planes[1])[:] = frame.u
        plane_view(out.planes[2])[:] = frame.v
        return out

    def write(self, frame: YuvFrame, mask: np.ndarray | None = None) -> None:
        """Encode one picture (planes are read now; the caller may reuse them afterwards).

        ``mask`` is accepted so that every sink has one signature; a video container has no
        place for it (write masks with ``--mask-out``, or use a ZeroMQ output).
        """
        if (frame.width, frame.height) != (self.video.width, self.video.height):
            raise SinkError(f"{self.url}: frame {frame.index} is {frame.width}x{frame.height}, stream was opened for {self.video.width}x{self.video.height}")
        if not self._started:
            self._start(frame.turns)
        pic = self._picture(frame)
        pic.pts = self._next_pts(frame)
        pic.time_base = self.time_base
        pic.pict_type = av.video.frame.PictureType.NONE
        self._mux(self._vs.encode(pic))
        self.frames_out += 1

    def write_audio(self, packet: AudioPacket) -> None:
        if self._as is None:
            return
        p = av.Packet(packet.data)
        p.pts, p.dts = packet.pts, packet.dts
        p.duration = packet.duration
        p.time_base = packet.time_base
        p.is_keyframe = packet.is_keyframe
        p.stream = self._as
        self.audio_packets_out += 1
        if not self._started:
            self._early_audio.append(p)
            if len(self._early_audio) >= EARLY_AUDIO_PACKETS:
                log.warning("%s: %d audio packets before the first picture; writing without its display rotation", self.url, len(self._early_audio))
                self._start(0)
            return
        self._mux([p])

    def _start(self, rotation: int) -> None:
        """Set the stream's display rotation (the source's, so players show the output as they
        showed the input), then mux the audio that waited for it."""
        self._started = True
        if rotation:
            if hasattr(self._vs, "set_display_rotation"):  # recent PyAV only
                self._vs.set_display_rotation(90 * rotation)
            else:
                log.warning("%s: this PyAV cannot write a display rotation; the output will play unrotated", self.url)
        early, self._early_audio = self._early_audio, []
        self._mux(early)

    def _mux(self, packets: Any) -> None:
        try:
            for p in packets:
                self._out.mux(p)
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"writing {self.url} failed: {exc}") from exc

    def close(self) -> None:
        """Flush the encoder and finish the container (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._started:
                self._start(0)
            self._mux(self._vs.encode(None))
            if self.frames_out == 0 and self.audio_packets_out == 0:
                self._out.start_encoding()  # still a valid (empty) file: every frame was dropped
        finally:
            self._out.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
