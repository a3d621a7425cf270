"""Decode worker: any PyAV-readable source → ``YuvFrame`` (I420 plane views) + audio packets.

Why it is shaped this way:

* Frames leave here as **views into PyAV's own buffers** (no copy, no RGB).  H.264
  decoders keep decoded pictures as references for later ones, and FFmpeg frame
  threading shares those buffers, so writing into a decoded picture corrupts the
  frames after it.  ``make_writable()`` makes the buffer private first (a copy only
  when FFmpeg still holds a reference), after which effects may draw in place.
* Audio is never decoded: compressed packets are forwarded as plain bytes with
  their timing (``AudioPacket``), so they can be muxed bit-identical in this
  process or sent over ZeroMQ to an encoder elsewhere.
* Live sources (network, devices) reconnect with backoff; video and audio timestamps
  are kept monotonic across a reconnect so the muxer never sees time go backwards:
  the new session continues one frame after the last video frame, and the same
  offset (held in seconds) is rescaled into the audio packets' time base.  Audio that
  arrives after a reconnect but before its first video frame (offset not known yet),
  or that would still overlap the previous session's audio, is dropped and counted
  in ``audio_dropped``.  The frames still buffered in the video decoder when a
  source drops are drained and delivered before the reconnect.  A source that stays
  dead raises one ``SourceError`` naming the URL.
* A picture size change mid-stream (a camera switching resolution, spliced files) is
  scaled back to the size the stream opened with, counted in ``frames_resized``, so the
  stream goes on with one output frame per input frame.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from privacy_filter.errors import SourceError
from privacy_filter.frames import ROTATION, YuvFrame, plane_view, quarter_turns
from privacy_filter.media import AudioInfo, AudioPacket, SourceInfo, VideoInfo
from privacy_filter.urls import NETWORK_SCHEMES, is_live_source

log = logging.getLogger(__name__)

TS_PACKET_BYTES = 188  # the unit of FFmpeg's udp fifo_size
_SEQUENCE = re.compile(r"%0?(\d*)d")  # the frame-number field of an image sequence's name


def _sequence_glob(pattern: str) -> str:
    """The glob of the files an image-sequence name (``img%04d.png``, ``img%d.png``) stands for."""

    def digits(m: re.Match[str]) -> str:
        return "[0-9]" * int(m.group(1)) if m.group(1) else "[0-9]*"

    return _SEQUENCE.sub(digits, glob.escape(pattern))


# --------------------------------------------------------------------------- data types


@dataclass
class ReconnectPolicy:
    """Backoff for live sources: delays double from ``initial_s`` up to ``max_s``.

    ``max_attempts`` consecutive failures (without a frame in between) end the
    stream with a ``SourceError``; ``None`` retries forever.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    max_attempts: int | None = 5
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    # udp:// receive buffer (FFmpeg's fifo_size, counted in 188-byte MPEG-TS packets): enough
    # for udp_buffer_s seconds at udp_max_bitrate_bps.  FFmpeg examples use 1,000,000 packets,
    # which is 188 MB per source and let a soak's UDP decoder grow by ~100 MB.  The buffer is a
    # ring whose pages become resident only as the stream first writes through them, so its
    # size shows as slow growth for as long as one lap takes: 15 MB (3 s at 40 Mbit/s) took
    # ~8 minutes at a 0.3 Mbit/s camera's rate (+15.5 % RSS in a 10-minute soak).  2 MB fills
    # within the first minute at such rates and still holds 2 s at 8 Mbit/s; the decoder reads
    # continuously (a live stream drops frames downstream, it never stalls the reader).
    udp_buffer_s: float = 2.0
    udp_max_bitrate_bps: int = 8_000_000  # a typical 1080p camera's highest setting; raise for broadcast feeds

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * (2 ** max(0, attempt - 1)))

    @property
    def udp_fifo_packets(self) -> int:
        """fifo_size for udp:// (2 s at 8 Mbit/s by default: 10,638 packets, 2.0 MB)."""
        return max(1, int(self.udp_buffer_s * self.udp_max_bitrate_bps / (8 * TS_PACKET_BYTES)))


# --------------------------------------------------------------------------- source parsing


def main_video_stream(container: Any) -> Any:
    """The video stream to filter: the one FFmpeg ranks best (``av_find_best_stream``: default
    disposition, frames seen while probing, bitrate), not simply the first, which in some
    files is a one-picture cover art or thumbnail stream."""
    return container.streams.best("video") or container.streams.video[0]


def main_audio_stream(container: Any) -> Any:
    """The audio stream that goes with it (FFmpeg's best, as for video), or None."""
    if not container.streams.audio:
        return None
    return container.streams.best("audio") or container.streams.audio[0]


def open_arguments(url: str, policy: ReconnectPolicy) -> tuple[str, dict[str, Any]]:
    """Map a user source string to ``av.open`` arguments (file, format, options, timeout)."""
    u = str(url)
    kwargs: dict[str, Any] = {"options": {}}
    if u.startswith("lavfi:"):
        kwargs["format"] = "lavfi"
        return u[len("lavfi:") :], kwargs
    if u.startswith("v4l2:"):
        u = u[len("v4l2:") :]
    if u.startswith("/dev/video"):
        kwargs["format"] = "v4l2"
        return u, kwargs
    scheme = u.split("://", 1)[0].lower() if "://" in u else ""
    if scheme in NETWORK_SCHEMES:
        kwargs["timeout"] = (policy.open_timeout_s, policy.read_timeout_s)
        if scheme in ("rtsp", "rtsps"):
            # TCP interleaving survives NAT and packet loss; `timeout` is the socket I/O timeout in µs.
            kwargs["options"].update({"rtsp_transport": "tcp", "timeout": str(int(policy.read_timeout_s * 1e6))})
        elif scheme == "udp":
            kwargs["options"].update({"fifo_size": str(policy.udp_fifo_packets), "overrun_nonfatal": "1"})
    return u, kwargs


# --------------------------------------------------------------------------- zero-copy planes


class PicturePool:
    """Private I420 pictures for decoded frames, each reused once nothing refers to it any more.

    Why: a decoded picture is also the decoder's reference, so the effect must draw into a copy
    (module docstring).  ``make_writable()`` allocates that copy afresh for every frame: at 1080p
    a 3.1 MB block, which ``output.low_memory``'s mapping threshold (``pipeline.bound_heap``) maps
    and unmaps each time, so the kernel faults in and clears ~760 pages per frame.  Pictures
    kept here stay mapped: as many as are in flight between decode and encode, which the
    pipeline's short queues bound (8 for the cctv preset on a file).  Measured on the 1080p
    benchmark clip: system time 0.8 → 0.5 s per 150 frames, wall −2 to −5 %, the same peak RSS
    (interleaved runs, 2026-12-05).

    A picture is free when only the pool refers to it.  That is CPython's reference count:
    every ``YuvFrame`` and every plane view of a picture holds one, so a picture is never
    handed out while anything can still read or write it.  ``make_writable()`` then checks
    FFmpeg's side: a no-op unless an encoder kept its buffer, in which case the picture gets a
    fresh one (libx264 copies its input, measured: no fresh buffer in 150 frames).  Beyond
    ``limit`` pictures in flight, frames fall back to ``make_writable()``.

    The copy carries the pixels, timing and colour tags.  Frame side data does not come
    along (A53 captions, which libx264 would re-embed; the display rotation is read before the
    copy), which is why only ``low_memory`` streams use the pool.
    """

    def __init__(self, limit: int = 12) -> None:
        self.limit = limit
        self._pictures: list[av.VideoFrame] = []
        self._free_refs = 0  # sys.getrefcount of a picture only the pool holds

    def writable(self, frame: av.VideoFrame) -> av.VideoFrame:
        """``frame``'s I420 picture in a buffer nothing else uses: a pooled copy, or ``frame`` made writable."""
        pic = self._take(frame.width, frame.height)
        if pic is None:
            frame.make_writable()
            return frame
        for src, dst in zip(frame.planes, pic.planes):
            np.copyto(plane_view(dst), plane_view(src))
        pic.pts = frame.pts
        if frame.time_base is not None:
            pic.time_base = frame.time_base
        pic.colorspace, pic.color_range = frame.colorspace, frame.color_range
        return pic

    def __len__(self) -> int:
        return len(self._pictures)

    def _take(self, width: int, height: int) -> av.VideoFrame | None:
        pictures = self._pictures
        for i in range(len(pictures)):
            pic = pictures[i]
            # ``pic`` and the call's argument are two more references than the pool's own
            if sys.getrefcount(pic) - 2 <= self._free_refs:
                if (pic.width, pic.height) != (width, height):
                    del pictures[i]  # another size (the stream reopened at another size): let it go
                    break
                pic.make_writable()
                return pic
        if len(pictures) >= self.limit:
            return None
        pictures.append(av.VideoFrame(width, height, "yuv420p"))
        self._free_refs = sys.getrefcount(pictures[-1]) - 1  # less the call's argument
        return pictures[-1]


def to_yuv_frame(
    frame: av.VideoFrame, index: int, stream_id: str, pts: int | None, time_base: Fraction, rotation: float | None = None, pool: PicturePool | None = None
) -> YuvFrame:
    """Wrap a decoded picture as a ``YuvFrame`` of plane views (converting only non-I420 input).

    ``rotation``: the display rotation when ``frame`` is a scaled copy that lost the decoded
    picture's side data; by default the frame's own (its display matrix, recent PyAV).
    ``pool``: where the private copy of an I420 picture comes from (``PicturePool``).
    """
    metadata: dict[str, Any] = dict(colorimetry(frame))
    k = quarter_turns((getattr(frame, "rotation", 0) if rotation is None else rotation) or 0)
    if k:
        metadata[ROTATION] = 90 * k
    if frame.format.name != "yuv420p":
        # GIF palettes (bgra/pal8), yuvj420p, nv12, 4:2:2 ... → I420 once, at source size.
        frame = frame.reformat(format="yuv420p")
    elif pool is not None:
        frame = pool.writable(frame)
    else:
        frame.make_writable()
    y, u, v = (plane_view(p) for p in frame.planes[:3])
    yf = YuvFrame(y, u, v, pts=pts, time_base=time_base, index=index, stream_id=stream_id, metadata=metadata)
    attach_native(yf, frame)
    return yf


def colorimetry(frame: av.VideoFrame) -> dict[str, str]:
    """The frame's colour tags when the stream sets them (the model's YUV→RGB needs the matrix).

    Untagged video (most files) gets nothing: BT.601 limited range is the assumed default.
    """
    md: dict[str, str] = {}
    spc = int(frame.colorspace or 2)
    if spc == 1:  # AVCOL_SPC_BT709
        md["colorspace"] = "bt709"
    elif spc in (5, 6):  # BT470BG / SMPTE170M = BT.601
        md["colorspace"] = "bt601"
    # Full range survives only on yuv420p kept as is: reformatting (yuvj420p, RGB ...) yields limited range.
    if int(frame.color_range or 0) == 2 and frame.format.name == "yuv420p":  # AVCOL_RANGE_JPEG
        md["color_range"] = "jpeg"
    return md


def attach_native(yf: YuvFrame, frame: av.VideoFrame) -> None:
    """Remember the PyAV frame whose buffers ``yf``'s planes view, so an encoder can reuse it."""
    object.__setattr__(yf, "_av_frame", frame)


def native_frame(yf: YuvFrame) -> av.VideoFrame | None:
    """The PyAV frame backing ``yf``'s planes, or None when the planes live elsewhere.

    Checked by pointer so that a frame whose planes were replaced (copied, or
    received over ZeroMQ) is never confused with the original picture.
    """
    frame = getattr(yf, "_av_frame", None)
    if frame is None:
        return None
    try:
        planes = frame.planes
        for arr, plane in zip((yf.y, yf.u, yf.v), planes):
            if arr.__array_interface__["data"][0] != plane.buffer_ptr or arr.shape != (plane.height, plane.width):
                return None
    except Exception:  # pragma: no cover - defensive: a frame in an unexpected state
        return None
    return frame


# --------------------------------------------------------------------------- decoder

#: ``low_memory``: sources up to this many pixels (1080p) are decoded on one thread.
ONE_THREAD_MAX_PIXELS = 1920 * 1088


def decode_threads(width: int, height: int, threads: int = 0, low_memory: bool = False) -> int:
    """The video decoder's thread count; 0 leaves it to FFmpeg (frame threads: cores + 1).

    Why one thread under ``low_memory`` up to 1080p: every frame thread keeps a picture in
    flight and a decoding context of its own, which FFmpeg allocates from its own buffer pools.
    On the 1080p cctv benchmark clip one thread lowered peak RSS by 18-23 MiB (402 -> 379,
    401 -> 383 MiB: medians of 4 and 5 interleaved pairs, 2026-12-05) at the same wall time, a
    1080p H.264 picture decoding in ~4 ms on one core against a frame loop of ~25 ms a frame.
    Larger pictures keep frame threads, where one core could set the pace (4K HEVC), and so does
    a stream whose size is not known yet (0).  ``threads``, when set, wins.
    """
    if threads:
        return threads
    if low_memory and 0 < width * height <= ONE_THREAD_MAX_PIXELS:
        return 1
    return 0


class Decoder:
    """Iterate one source as ``YuvFrame`` and ``AudioPacket`` items, in demux order.

    Usage::

        dec = Decoder("clip.mp4", stream_id="cam1")
        info = dec.open()            # SourceInfo: sizes, time base, rate, frame count, audio
        for item in dec:             # YuvFrame | AudioPacket
            ...
        dec.close()

    ``reconnects`` counts successful reopenings of a live source.  ``low_memory`` (the stream's
    ``output.low_memory``) copies pictures into a ``PicturePool`` and decodes pictures up to
    1080p on one thread (``decode_threads``).
    """

    def __init__(
        self,
        url: str,
        *,
        stream_id: str = "0",
        audio: bool = True,
        live: bool | None = None,
        reconnect: ReconnectPolicy | None = None,
        threads: int = 0,
        should_stop: Callable[[], bool] | None = None,
        low_memory: bool = False,
    ) -> None:
        self.url = str(url)
        # asked between reconnect attempts and during their back-off, so a shutdown is not held
        # up by a live source that stays dead (max_attempts=None retries forever)
        self.should_stop = should_stop or (lambda: False)
        self.stream_id = stream_id
        self.want_audio = audio
        self.live = is_live_source(self.url) if live is None else live
        self.policy = reconnect or ReconnectPolicy()
        self.threads = threads
        self.low_memory = low_memory
        self.reconnects = 0
        self.frames_decoded = 0
        self.frames_resized = 0  # pictures of another size than the first, scaled to it
        self.end_reason: str | None = None  # media sources have no upstream to tell a reason
        self.upstream_stream: str | None = None
        self.info: SourceInfo | None = None
        self._container: Any = None
        self._pts_offset = 0  # added to source pts after a reconnect, keeps time monotonic
        self._last_pts: int | None = None
        self._frame_step = 1  # one frame's duration in time_base units, for reconnect/pts repair
        self._offset_s = Fraction(0)  # the same reconnect offset in seconds, for the audio stream
        self._last_audio_s: Fraction | None = None  # dts (or pts) of the last audio packet yielded
        self.audio_dropped = 0
        # a file that ends before the duration its header declares (a truncated copy): counted
        # and warned about at its end, since FFmpeg's demuxer just reports end-of-file
        self.frames_missing = 0
        self._declared_end_s: float | None = None
        self._pictures = PicturePool() if low_memory else None

    @property
    def bad(self) -> dict[str, int]:
        """Media sources have no messages to be malformed."""
        return {}

    def stop(self) -> None:
        """Nothing to interrupt: a blocked read returns within the read timeout, and
        ``should_stop`` is asked between reconnect attempts."""

    # -- opening ---------------------------------------------------------------------
    def _check_local(self) -> None:
        u = self.url
        if u.startswith("lavfi:") or "://" in u or u.startswith("v4l2:"):
            return
        if not os.path.exists(u):
            if _SEQUENCE.search(u):  # an image sequence (img%04d.png): FFmpeg's image2 reads it
                if not glob.glob(_sequence_glob(u)):
                    raise SourceError(f"no file of the image sequence {u} exists")
                return
            what = "capture device" if u.startswith("/dev/") else "input file"
            raise SourceError(f"{what} not found: {u}")
        if os.path.isdir(u):
            raise SourceError(f"input is a directory, not a video: {u}")

    def _open_container(self) -> Any:
        target, kwargs = open_arguments(self.url, self.policy)
        try:
            container = av.open(target, "r", **kwargs)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open {self.url}: {_reason(exc)}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"no video stream in {self.url}")
        vs = main_video_stream(container)
        vs.thread_type = "AUTO"
        threads = decode_threads(vs.codec_context.width, vs.codec_context.height, self.threads, self.low_memory)
        if threads:
            vs.thread_count = threads
        return container

    def open(self) -> SourceInfo:
        """Open the source and describe it; raises ``SourceError`` naming the URL."""
        self._check_local()
        if self.live:
            try:
                container = self._with_retries(self._open_container)
            except _Stopped:
                raise SourceError(f"source {self.url}: stopped while connecting") from None
        else:
            container = self._open_container()
        self._container = container
        self.info = self._describe(container)
        return self.info

    def _describe(self, container: Any) -> SourceInfo:
        vs = main_video_stream(container)
        cc = vs.codec_context
        tb = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or None
        frames = int(vs.frames) if vs.frames else None
        duration = None
        if vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        if frames is None and duration and rate and not self.live:
            frames = int(round(duration * float(rate)))  # estimate for the progress bar only
        if rate:
            self._frame_step = max(1, int(round(1 / (float(rate) * float(tb)))))
        if not self.live:
            self._declared_end_s = declared_end(vs, container)
        width, height = cc.width, cc.height
        if not width or not height:
            raise SourceError(f"cannot determine the video size of {self.url}")
        video = VideoInfo(width, height, Fraction(tb), Fraction(rate) if rate else None, frames, duration, cc.name, cc.format.name if cc.format else "unknown")
        audio_info = None
        audio_stream = None
        if self.want_audio and container.streams.audio:
            a = main_audio_stream(container)
            ac = a.codec_context
            audio_stream = a
            audio_info = AudioInfo(
                codec=ac.name,
                sample_rate=int(ac.sample_rate or 0),
                channels=int(ac.channels or 0),
                layout=ac.layout.name if ac.layout else "",
                time_base=Fraction(a.time_base or Fraction(1, max(1, ac.sample_rate or 48000))),
                extradata=bytes(ac.extradata) if ac.extradata else None,
                bit_rate=int(ac.bit_rate or 0),
            )
        return SourceInfo(self.url, self.live, video, audio_info, audio_stream)

    def _with_retries(self, fn: Any) -> Any:
        attempt = 0
        while True:
            if self.should_stop():
                raise _Stopped(self.url)
            try:
                return fn()
            except SourceError as exc:
                attempt += 1
                if self.policy.max_attempts is not None and attempt >= self.policy.max_attempts:
                    raise SourceError(f"source {self.url} unreachable after {attempt} attempts: {exc}") from exc
                d = self.policy.delay(attempt)
                log.warning("source %s: %s; retrying in %.1f s", self.url, exc, d)
                deadline = time.monotonic() + d
                while (left := deadline - time.monotonic()) > 0:
                    if self.should_stop():
                        raise _Stopped(self.url) from exc
                    time.sleep(min(left, 0.1))

    # -- iteration -------------------------------------------------------------------
    def __iter__(self) -> Iterator[YuvFrame | AudioPacket]:
        if self._container is None:
            self.open()
        while True:
            try:
                yield from self._demux(self._container)
                self._check_complete()
                return  # clean end of stream
            except (av.FFmpegError, OSError) as exc:
                if not self.live:
                    raise SourceError(f"error decoding {self.url} at frame {self.frames_decoded}: {_reason(exc)}") from exc
                log.warning("source %s dropped (%s); reconnecting", self.url, _reason(exc))
            yield from self._drain(self._container)
            try:
                self._reopen()
            except _Stopped:
                log.info("source %s: stopped while reconnecting", self.url)
                return

    def _check_complete(self) -> None:
        """Count and warn when a file ended well before the end its header declares."""
        video = self.info.video if self.info is not None else None
        if self._declared_end_s is None or self._last_pts is None or video is None or not video.rate or not video.time_base:
            return
        rate = float(video.rate)
        reached = float(self._last_pts * video.time_base) + 1 / rate  # the end of the last frame shown
        missing = missing_frames(reached, self._declared_end_s, rate)
        if missing:
            self.frames_missing = missing
            log.warning(
                "source %s ended at %.2f s, before the %.2f s its header declares: about %d frames missing (a truncated file?) (counted)",
                self.url,
                reached,
                self._declared_end_s,
                missing,
            )

    def _reopen(self) -> None:
        try:
            self._container.close()
        except Exception:  # pragma: no cover - a broken connection may fail to close
            pass
        self._container = self._with_retries(self._open_container)
        self.reconnects += 1
        # The new session's timestamps may restart at 0: continue after the last one.
        self._pts_offset = None  # type: ignore[assignment]  # set from the first new frame
        log.info("source %s reconnected (%d reconnects)", self.url, self.reconnects)

    def _demux(self, container: Any) -> Iterator[YuvFrame | AudioPacket]:
        vs = main_video_stream(container)
        streams = [vs]
        astream = None
        if self.want_audio and container.streams.audio:
            astream = main_audio_stream(container)
            streams.append(astream)
        tb = Fraction(vs.time_base or Fraction(1, 90000))
        for packet in container.demux(*streams):
            if packet.stream is astream:
                if packet.size:
                    ap = self._audio(packet, Fraction(packet.time_base or astream.time_base))
                    if ap is not None:
                        yield ap
                continue
            for frame in packet.decode():
                yield self._wrap(frame, tb)
        # flush of the decoder happens through the final empty packet demux yields

    def _to_opened_size(self, frame: av.VideoFrame) -> av.VideoFrame:
        """A picture whose size changed mid-stream (a camera switching resolution, spliced
        files, a reconnect to another rendition), scaled to the size the stream opened with:
        the mask, the effect and the encoder all work at that size, and the output keeps one
        frame per input frame instead of failing (FFmpeg's CLI does the same)."""
        assert self.info is not None
        width, height = self.info.video.width, self.info.video.height
        self.frames_resized += 1
        if self.frames_resized == 1:
            log.warning(
                "source %s: picture size changed from %dx%d to %dx%d at frame %d; scaling to %dx%d (counted)",
                self.url,
                width,
                height,
                frame.width,
                frame.height,
                self.frames_decoded,
                width,
                height,
            )
        scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    def _drain(self, container: Any) -> Iterator[YuvFrame]:
        """The frames still inside the video decoder when a live source drops: frame threading
        and B-frame reordering hold a few, which a reconnect would otherwise throw away (an
        RTMP server that ends its stream drops the connection after the last packet)."""
        vs = main_video_stream(container)
        tb = Fraction(vs.time_base or Fraction(1, 90000))
        try:
            frames = vs.codec_context.decode(None)
        except (av.FFmpegError, OSError) as exc:  # a decoder broken by the drop: nothing to save
            log.warning("source %s: could not drain the decoder after the drop (%s)", self.url, _reason(exc))
            return
        for frame in frames:
            yield self._wrap(frame, tb)

    def _wrap(self, frame: av.VideoFrame, tb: Fraction) -> YuvFrame:
        rotation = None
        if self.info is not None and (frame.width, frame.height) != (self.info.video.width, self.info.video.height):
            rotation = getattr(frame, "rotation", 0)
            frame = self._to_opened_size(frame)
        pts = frame.pts
        if pts is not None:
            if self._pts_offset is None:  # first frame after a reconnect
                base = (self._last_pts + self._frame_step) if self._last_pts is not None else pts
                self._pts_offset = base - pts
                self._offset_s = self._pts_offset * tb
            pts = pts + self._pts_offset
        yf = to_yuv_frame(frame, self.frames_decoded, self.stream_id, pts, tb, rotation, self._pictures)
        if pts is not None:
            self._last_pts = pts
        self.frames_decoded += 1
        return yf

    def _audio(self, packet: Any, tb: Fraction) -> AudioPacket | None:
        """The packet shifted by the reconnect offset, or None when it cannot be placed in time."""
        if self._pts_offset is None:  # reconnected, but no video frame yet: the offset is unknown
            self.audio_dropped += 1
            return None
        shift = offset_in(self._offset_s, tb)
        pts = packet.pts + shift if packet.pts is not None else None
        dts = packet.dts + shift if packet.dts is not None else None
        t = dts if dts is not None else pts
        if t is not None and self.live:
            if self._last_audio_s is not None and t * tb <= self._last_audio_s:
                self.audio_dropped += 1  # overlaps the audio of the session before the reconnect
                return None
            self._last_audio_s = t * tb
        return AudioPacket(bytes(packet), pts, dts, int(packet.duration or 0), tb, bool(packet.is_keyframe), self.stream_id)

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def declared_end(vs: Any, container: Any) -> float | None:
    """The end time in seconds that a file's header gives its video stream (start + duration), or None.

    Only a stored duration counts (an MP4 ``mdhd``, a Matroska ``Duration``); a stream without
    one (MPEG-TS) gets None rather than FFmpeg's estimate from the bitrate, which is computed
    from the same bytes that were cut.
    """
    if vs.duration and vs.time_base:
        start = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        return start + float(vs.duration * vs.time_base)
    # Matroska stores the duration for the whole segment only; other containers' totals are estimates
    if container.duration and set(container.format.name.split(",")) & _STORED_DURATION_FORMATS:
        start = container.start_time / 1e6 if container.start_time is not None else 0.0
        return start + container.duration / 1e6
    return None


_STORED_DURATION_FORMATS = {"matroska", "webm", "flv", "avi"}


def missing_frames(reached_s: float, declared_end_s: float, rate: float) -> int:
    """Frames between where decoding ended and the declared end; 0 within half a second.

    The slack absorbs what honest files do: a last frame's duration rounded, audio-driven
    durations, an edit list trimming the start.  A truncation that loses less goes unreported.
    """
    gap = declared_end_s - reached_s
    return int(round(gap * rate)) if gap > 0.5 else 0


class _Stopped(Exception):
    """``should_stop`` said yes while a live source was (re)connecting."""


def offset_in(offset_s: Fraction, time_base: Fraction) -> int:
    """A timestamp offset given in seconds, in ``time_base`` units (rounded to the nearest tick)."""
    return round(Fraction(offset_s) / Fraction(time_base))


def _reason(exc: BaseException) -> str:
    """A short reason from an FFmpeg/OS error, without PyAV's repeated file name."""
    msg = getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(msg)).strip() or type(exc).__name__
    if "Immediate exit requested" in text:  # PyAV's timeout interrupts the read this way
        return "no data before the timeout"
    return text


def frame_rate(url: str) -> float | None:
    """A local file's average frame rate, or None when it cannot be read (the cover engine's
    time-based cadences need it before the first frame reaches the stage)."""
    try:
        with av.open(url) as container:
            rate = main_video_stream(container).average_rate
            return float(rate) if rate else None
    except Exception:
        return None


MIN_SLOT_FRAMES_TO_SKIP = 4  # longer than x264's runs of unreferenced B-frames (at most 3 by default)


def sample_lumas(url: str, n: int, reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Y planes of ``n`` frames of a local file, one from each of ``n`` equal slots of its duration.

    For the motion layer's first pass: a median over frames from the whole file is an
    empty-scene background as long as people move, so the file's first seconds need no learning
    period.

    Each slot takes the cheapest frame inside it: the seek goes to the last keyframe before the
    slot's end, which is used when it lies in the slot (one picture decoded); otherwise decoding
    goes on from it to the slot's start.  Seeking to the slots' midpoints instead decoded from
    the keyframe before each midpoint: on the 1080p benchmark clip (a keyframe a second, slots of
    0.6 s) that was every frame of the file for 25 samples.  Times count from the stream's start,
    which MPEG-TS and camera exports put well after 0.

    ``reduce`` (e.g. the motion layer's area resize to its grid, ``engines.motion.to_grid``) is
    applied to each plane as it is decoded, so the samples never sit in memory at full size
    (25 x 2 MB at 1080p, and glibc keeps such freed blocks in the heap: the process's peak RSS,
    measured +52 MB).
    Returns [] when the file cannot be sought (the layer then learns as a live source does).
    """
    try:
        container = av.open(url)
    except Exception:
        return []
    out: list[np.ndarray] = []
    try:
        stream = main_video_stream(container)
        tb = stream.time_base
        duration = float(stream.duration * tb) if stream.duration and tb else (container.duration / 1e6 if container.duration else 0.0)
        if duration <= 0 or tb is None or n <= 0:
            return []
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        slot = duration / n
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        if rate and slot * rate >= MIN_SLOT_FRAMES_TO_SKIP:
            # Frames no other frame refers to (most B-frames) are not decoded by this pass's
            # own decoder, so decoding on to a slot's start costs less: 0.39 → 0.29 s for the
            # 150 frames of the 1080p benchmark clip, whose slots are shorter than its GOP.  With
            # x264's default of at most 3 B-frames in a row, a slot of 4 frames or more holds a
            # reference frame; after longer runs a sample may come from just past its slot.
            stream.codec_context.skip_frame = "NONREF"
        frames: Iterator[Any] = iter(())
        sequential = False
        last = float("-inf")  # time of the last sample taken
        for k in range(n):
            lo, hi = start + k * slot, start + (k + 1) * slot
            just_sought = not sequential
            if just_sought:
                # the last keyframe before the slot's end (not one at its end: the next slot's)
                container.seek(max(0, int(hi / tb) - 1), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
            for frame in frames:
                t = float(frame.pts * tb) if frame.pts is not None else None
                if just_sought:
                    just_sought = False
                    if t is not None and t <= last:
                        # The seek went back past a sample already taken: keyframes are sparser
                        # than the slots (a one-keyframe file would be decoded from its start for
                        # every slot), so decode on from here instead of seeking again.
                        sequential = True
                if t is not None and t + 1e-3 < lo:
                    continue  # before the slot: decode on to it
                yuv = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
                y = plane_view(yuv.planes[0])  # stored Y values, as the stage sees them
                out.append(reduce(y) if reduce is not None else y.copy())
                last = t if t is not None else last
                break
            else:
                break  # the end of the file
    except Exception:
        return out
    finally:
        container.close()
    return out
