"""privacy-filter as one stage of an existing ZeroMQ pipeline: native-protocol sources and sinks.

URL syntax (docs/protocol.md, "privacy-filter as a pipeline stage")::

    zmq+<pattern>[+bind|+connect]://<endpoint>

* ``pattern``: a source is ``pull`` or ``sub``; an output is ``push`` or ``pub``.
* ``endpoint``: a full ZeroMQ endpoint (``tcp://*:5555``, ``ipc:///run/cam.sock``,
  ``inproc://x``) or ``HOST:PORT`` as shorthand for ``tcp://HOST:PORT`` (the same
  shorthand the ``imagezmq+rep://HOST:PORT`` sources use).
* Bind or connect follows the project's rule unless ``+bind``/``+connect`` says otherwise:
  the receiving side of a PUSH/PULL hop binds and senders connect (``zmq+pull`` binds,
  ``zmq+push`` connects), a publisher binds and subscribers connect (``zmq+pub`` binds,
  ``zmq+sub`` connects).

Why these shapes:

* ``ZmqSource`` looks like ``decode.Decoder`` (``open() -> SourceInfo``, iterate
  ``YuvFrame | AudioPacket``, ``close()``), so ``process`` and the service's decode worker
  use it unchanged.  Frames keep the upstream's ``seq`` (as ``index``), ``pts``,
  ``time_base`` and ``meta``; only their stream id becomes this pipeline's, because the
  stage keys its per-stream state by it.
* ``ZmqSink`` looks like ``encode.Encoder`` (``write(frame, mask=)``, ``write_audio``,
  ``close``).  It sends ``stream-start`` when it opens, every frame with its mask plane
  (255 = covered) and ``eos`` when it closes.  It only ever sees what the stage returned,
  so privacy fails closed here as everywhere: a frame leaves unfiltered only under an
  explicit ``on_failure: pass``, and then it has no mask part (``has_mask: false``).
* PUSH blocks (backpressure: a slow next stage slows a file source, nothing is lost);
  PUB never blocks (a slow subscriber loses frames inside ZeroMQ, latest wins).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import zmq

from privacy_filter.errors import ProtocolError, SourceError, UserError
from privacy_filter.frames import YuvFrame
from privacy_filter.urls import ZmqUrl, parse_zmq_url
from privacy_filter.wire import (
    MAX_PICTURE_PIXELS,
    Message,
    Receiver,
    audio_header,
    audio_parts,
    eos_parts,
    frame_parts,
    max_message_bytes,
    socket,
    stream_start_parts,
    video_header,
)

log = logging.getLogger(__name__)

_SOCKET = {"pull": zmq.PULL, "sub": zmq.SUB, "push": zmq.PUSH, "pub": zmq.XPUB}


class ZmqSinkError(UserError):
    """A ZeroMQ output that cannot be opened or written."""


def _open_socket(ctx: zmq.Context, z: ZmqUrl, hwm: int, linger_ms: int, error: type[UserError], max_msg_bytes: int | None = None) -> zmq.Socket:
    try:
        return socket(ctx, _SOCKET[z.pattern], z.endpoint, bind=z.bind, hwm=hwm, linger_ms=linger_ms, max_msg_bytes=max_msg_bytes)
    except zmq.ZMQError as exc:
        raise error(f"cannot {'bind' if z.bind else 'connect'} {z.url} ({z.endpoint}): {exc}") from None


# =========================================================================== source


class ZmqSource:
    """Frames, audio packets and eos from an upstream stage that speaks the native protocol.

    The first ``stream-start`` (or, without one, the first frame) fixes the stream: its
    upstream id, size, time base and audio.  Messages of other upstream streams, frames of
    another size, and malformed messages are counted and dropped; none ends the stream.
    The upstream's ``eos`` ends it (``end_reason`` keeps its reason).
    """

    def __init__(
        self,
        url: str,
        *,
        stream_id: str = "0",
        audio: bool = True,
        live: bool | None = None,
        counters: Any = None,
        should_stop: Callable[[], bool] | None = None,
        hwm: int = 4,
        open_timeout_s: float | None = None,
        max_pixels: int = MAX_PICTURE_PIXELS,
    ) -> None:
        self.z = parse_zmq_url(url, "source")
        self.max_pixels = max_pixels  # bounds each message part (ZMQ_MAXMSGSIZE): see protocol.max_message_bytes
        self.url = str(url)
        self.stream_id = stream_id
        self.want_audio = audio
        self.live = self.z.live if live is None else live
        self.counters = counters
        self.should_stop = should_stop or (lambda: False)
        self.hwm = hwm
        self.open_timeout_s = open_timeout_s
        self.reconnects = 0  # ZeroMQ reconnects by itself
        self.frames_resized = 0  # frames of another size are dropped (counted), never scaled
        self.frames_decoded = 0
        self.upstream_stream: str | None = None
        self.end_reason: str | None = None
        self.dropped: dict[str, int] = {}  # why well-formed messages were dropped: other-stream, size
        self.info: Any = None
        self._ctx: zmq.Context | None = None
        self._rx: Receiver | None = None
        self._pending: list[Message] = []
        self._bad_at_close: dict[str, int] = {}
        self._stop = threading.Event()
        self._logged: set[str] = set()

    # -- counting ---------------------------------------------------------------------
    @property
    def bad(self) -> dict[str, int]:
        """Malformed messages dropped, by ``ProtocolError`` kind (protocol.md)."""
        return dict(self._rx.bad) if self._rx is not None else dict(self._bad_at_close)

    def _drop(self, why: str, detail: str, frame: bool) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1
        if self.counters is not None:
            self.counters.inc(self.stream_id, "frames_dropped" if frame else "bad_messages:field")
        if why not in self._logged:
            self._logged.add(why)
            log.warning("%s: %s; such messages are dropped (counted)", self.url, detail)

    # -- opening ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask a blocked ``open()``/iteration to return (thread-safe; the socket is closed by ``close``)."""
        self._stop.set()

    def _stopped(self) -> bool:
        return self._stop.is_set() or bool(self.should_stop())

    def _recv(self) -> Message | None:
        assert self._rx is not None
        while not self._stopped():
            m = self._rx.recv(timeout_ms=200)
            if m is not None:
                return m
        return None

    def open(self) -> Any:
        """Bind/connect and wait for the upstream's stream-start or first frame."""
        from privacy_filter.media import SourceInfo, VideoInfo
        from privacy_filter.wire import audio_info_from, video_info_from

        self._ctx = zmq.Context()
        sock = _open_socket(self._ctx, self.z, self.hwm, 0, SourceError, max_message_bytes(self.max_pixels))
        self._rx = Receiver(sock, counters=self.counters, fallback_stream=self.stream_id, known_streams=[self.stream_id])
        deadline = None if self.open_timeout_s is None else time.monotonic() + self.open_timeout_s
        video = audio = None
        while video is None:
            if deadline is not None and time.monotonic() > deadline:
                raise SourceError(f"{self.url}: no stream-start or frame from the upstream within {self.open_timeout_s:g} s")
            m = self._rx.recv(timeout_ms=200)
            if m is None:
                if self._stopped():
                    raise SourceError(f"{self.url}: stopped before the upstream sent anything")
                continue
            if m.kind == "stream-start":
                try:
                    video = video_info_from(m.header["video"])
                    audio = audio_info_from(m.header.get("audio")) if self.want_audio else None
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                    self._rx._bad(ProtocolError("field", f"stream-start 'video'/'audio' unusable: {exc!r}"), m.parts)
                    continue
            elif m.kind == "frame":
                assert m.frame is not None
                f = m.frame
                video = VideoInfo(f.width, f.height, Fraction(f.time_base), None, None, None, "rawvideo", "yuv420p")
                self._pending.append(m)
            elif m.kind == "eos":
                raise SourceError(f"{self.url}: the upstream sent end-of-stream ({m.header.get('reason')}) before any frame")
            else:
                continue  # audio before the stream is announced cannot be placed: skip it
            self.upstream_stream = m.stream_id
        self.info = SourceInfo(self.url, self.live, video, audio)
        return self.info

    # -- reading ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        from privacy_filter.media import AudioPacket

        if self.info is None:
            self.open()
        video = self.info.video
        while True:
            m = self._pending.pop(0) if self._pending else self._recv()
            if m is None:
                return
            if m.stream_id != self.upstream_stream:
                self._drop("other-stream", f"upstream stream {m.stream_id!r} is not the one this source follows ({self.upstream_stream!r})", m.kind == "frame")
                continue
            if m.kind == "frame":
                f = m.frame
                assert f is not None
                if (f.width, f.height) != (video.width, video.height):
                    self._drop("size", f"frame {m.seq} is {f.width}x{f.height}, the stream is {video.width}x{video.height}", True)
                    continue
                f.stream_id = self.stream_id
                self.frames_decoded += 1
                yield f
            elif m.kind == "audio":
                if self.want_audio:
                    h = m.header
                    assert m.payload is not None
                    yield AudioPacket(
                        bytes(m.payload), h.get("pts"), h.get("dts"), int(h.get("duration") or 0), Fraction(*h["time_base"]), bool(h.get("keyframe", True)), self.stream_id
                    )
            elif m.kind == "eos":
                self.end_reason = str(m.header.get("reason", "end"))
                if self.end_reason == "error":
                    log.warning("%s: the upstream ended its stream with an error", self.url)
                return
            # a repeated stream-start (upstream restarted) changes nothing here

    def close(self) -> None:
        if self._rx is not None:
            self._bad_at_close = dict(self._rx.bad)
            self._rx.sock.close(linger=0)
            self._rx = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> ZmqSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# =========================================================================== sink


class ZmqSink:
    """Filtered frames with their masks out over ZeroMQ, in the native protocol.

    Sends ``stream-start`` on opening and ``eos`` on ``close`` (``end_reason``: end, stop
    or error).  ``mask=False`` sends frames without the mask part.  ``audio`` is the
    source's ``AudioInfo`` (None: no audio announced, no audio packets sent).

    PUSH waits for the next stage (backpressure; a warning every 10 s while it waits).
    PUB never waits; it holds the first frame back up to ``subscriber_wait_s`` for a first
    subscriber, so an observer started with the pipeline does not miss the stream-start.
    """

    def __init__(
        self,
        url: str,
        video: Any,
        *,
        stream_id: str = "0",
        audio: Any = None,
        mask: bool = True,
        hwm: int = 4,
        linger_s: float = 5.0,
        subscriber_wait_s: float = 1.0,
    ) -> None:
        self.z = parse_zmq_url(url, "output")
        self.url = str(url)
        self.video = video
        self.stream_id = stream_id
        self.wants_mask = mask
        self.audio = audio
        self.frames_out = 0
        self.audio_packets_out = 0
        self.pts_repaired = 0  # never: timestamps go out as they came in
        self.end_reason = "end"
        self.linger_s = linger_s
        self._closed = False
        self._audio_seq = 0
        self._ctx = zmq.Context()
        self._sock = _open_socket(self._ctx, self.z, hwm, int(linger_s * 1000), ZmqSinkError)
        if self.z.pattern == "pub":
            self._wait_subscriber(subscriber_wait_s)

        self._send(stream_start_parts(stream_id, video=video_header(video), audio=audio_header(audio) if audio is not None else None))

    def _wait_subscriber(self, wait_s: float) -> None:
        """XPUB hears subscriptions: wait (bounded) for the first one."""
        if self._sock.poll(int(wait_s * 1000), zmq.POLLIN):
            self._drain_subscriptions()
        else:
            log.info("%s: no subscriber yet; publishing anyway (late subscribers miss what went before)", self.url)

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _send(self, parts: list[Any], give_up_s: float | None = None) -> bool:
        if self.z.pattern == "pub":
            self._drain_subscriptions()
            self._sock.send_multipart(parts, copy=False)  # PUB drops at its HWM, it never blocks
            return True
        waited = 0
        while not self._sock.poll(1000, zmq.POLLOUT):
            waited += 1
            if give_up_s is not None and waited >= give_up_s:
                return False
            if waited % 10 == 0:
                log.warning("%s: the next stage has taken nothing for %d s; waiting (backpressure)", self.url, waited)
        self._sock.send_multipart(parts, copy=False)
        return True

    def write(self, frame: YuvFrame, mask: np.ndarray | None = None) -> None:
        """Send one filtered frame; its planes must not be reused afterwards (zero copy)."""
        if (frame.width, frame.height) != (self.video.width, self.video.height):
            raise ZmqSinkError(f"{self.url}: frame {frame.index} is {frame.width}x{frame.height}, the stream was announced as {self.video.width}x{self.video.height}")
        m = mask if self.wants_mask else None
        if m is not None and m.shape != (frame.height, frame.width):
            raise ValueError(f"mask {m.shape} does not match frame {frame.height}x{frame.width}")
        self._send(frame_parts(frame, mask=m, seq=frame.index, extra={"stream": self.stream_id}))
        self.frames_out += 1

    def write_audio(self, packet: Any) -> None:
        """Forward one compressed audio packet as an ``audio`` message (only when audio was announced)."""
        if self.audio is None:
            return
        self._send(
            audio_parts(
                self.stream_id, self._audio_seq, packet.data, pts=packet.pts, dts=packet.dts, time_base=packet.time_base, duration=packet.duration, keyframe=packet.is_keyframe
            )
        )
        self._audio_seq += 1
        self.audio_packets_out += 1

    def close(self) -> None:
        """Send eos and close; the socket lingers up to ``linger_s`` so queued messages get out."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._send(eos_parts(self.stream_id, frames=self.frames_out, reason=self.end_reason), give_up_s=self.linger_s):
                log.error("%s: the next stage took no end-of-stream within %g s", self.url, self.linger_s)
        finally:
            self._sock.close()
            self._ctx.term()

    def __enter__(self) -> ZmqSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
