"""ZeroMQ wire protocol between the roles (pinned; the normative text is docs/protocol.md).

A message is one ZeroMQ multipart message:

* ``frame``:        ``[header, Y, U, V]`` or ``[header, Y, U, V, mask]``
* ``audio``:        ``[header, packet]`` (one compressed audio packet, copied as is)
* ``stream-start``: ``[header]`` (the stream's video/audio parameters, for a remote encoder)
* ``eos``:          ``[header]`` (end of stream; carries the number of frames sent)

The header is UTF-8 JSON, at most ``MAX_HEADER_BYTES``.  Planes travel as they sit in
memory: a strided plane (PyAV pads rows to ``line_size``) is sent with its stride in the
header instead of being packed, and the receiver builds NumPy views on the received
buffers (``copy=False`` both ways), so a 1080p frame crosses a hop without a single
pixel copy in Python.

Receivers must survive anything a peer sends: ``decode`` raises ``ProtocolError(kind,
detail)`` for every malformed message and ``Receiver`` counts it (per kind, in
``privacy_filter.metrics``), logs it once per kind and drops it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import zmq

from privacy_filter.errors import ProtocolError
from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.media import AudioInfo, VideoInfo

log = logging.getLogger(__name__)

VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_DIM = 16384
#: A time base is ``[num, den]`` of FFmpeg ``AVRational`` terms: C ints, 1 .. 2^31 - 1.
MAX_TB_TERM = 2**31 - 1
#: Largest ``|pts| * time_base`` (and dts/duration) accepted, in seconds: 2^31 s (68 years;
#: Unix-epoch seconds fit).  Any such time rescaled into any time base of 32-bit terms stays
#: below 2^62, so an encoder's int64 arithmetic never overflows.
MAX_TIME_S = 2**31
#: Largest picture area a receiver facing the outside accepts (8K UHD): it bounds ZMQ_MAXMSGSIZE
#: (``max_message_bytes``) and the size a compressed peer picture may declare before it is decoded.
MAX_PICTURE_PIXELS = 7680 * 4320
MAX_INT64 = 2**63 - 1  # seq, gen, eos frames: counters, never beyond int64
#: Largest JSON nesting accepted in a header (real headers nest 3 deep: ``meta`` may add some).
MAX_JSON_DEPTH = 32
KINDS = ("frame", "audio", "stream-start", "eos")
PIX_FMTS = ("yuv420p",)


Part = Any  # zmq.Frame | bytes | memoryview | bytearray


@dataclass
class Message:
    """One decoded message.  ``frame``/``mask`` are views on ``parts`` (kept alive here)."""

    kind: str
    stream_id: str
    seq: int
    header: dict[str, Any]
    frame: YuvFrame | None = None
    mask: np.ndarray | None = None
    payload: memoryview | None = None
    parts: Sequence[Part] = field(default_factory=tuple, repr=False)

    @property
    def gen(self) -> int:
        """Sender generation (service mode: bumped each time a stream's decoder restarts)."""
        return int(self.header.get("gen", 0))


# --------------------------------------------------------------------------- encode side


def _tb(tb: Fraction) -> list[int]:
    tb = Fraction(tb)
    return [tb.numerator, tb.denominator]


def plane_buffer(a: np.ndarray) -> tuple[memoryview, int]:
    """Zero-copy byte view of a 2-D uint8 plane and its row stride.

    A row-strided view (PyAV's padded planes, a crop) is sent from its first byte to the
    end of its last row, padding included, so nothing is packed or copied.  Anything more
    exotic (column strides, negative strides) is packed once.
    """
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"plane must be 2-D uint8, got {a.dtype} {a.shape}")
    rows, cols = a.shape
    s0, s1 = a.strides
    if rows and cols and s1 == 1 and s0 >= cols:
        n = s0 * (rows - 1) + cols
        flat = np.lib.stride_tricks.as_strided(a, shape=(n,), strides=(1,))
        return memoryview(flat.data), int(s0)
    c = np.ascontiguousarray(a)
    return memoryview(c.reshape(-1).data), int(cols)


def _header_bytes(h: dict[str, Any]) -> bytes:
    try:
        raw = json.dumps(h, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:  # metadata the user put in that JSON cannot carry
        raise ValueError(f"message header is not JSON-serialisable: {exc}") from exc
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError(f"message header is {len(raw)} bytes; the limit is {MAX_HEADER_BYTES}")
    return raw


def frame_parts(
    frame: YuvFrame,
    *,
    mask: np.ndarray | None = None,
    seq: int | None = None,
    gen: int = 0,
    extra: dict[str, Any] | None = None,
) -> list[Part]:
    """Multipart parts for one frame (and optional uint8 mask, 255 = covered)."""
    bufs, strides = [], []
    for p in frame.planes:
        b, s = plane_buffer(p)
        bufs.append(b)
        strides.append(s)
    h: dict[str, Any] = {
        "v": VERSION,
        "kind": "frame",
        "stream": str(frame.stream_id),
        "seq": int(frame.index if seq is None else seq),
        "gen": int(gen),
        "pts": None if frame.pts is None else int(frame.pts),
        "time_base": _tb(frame.time_base),
        "width": frame.width,
        "height": frame.height,
        "pix_fmt": "yuv420p",
        "strides": strides,
        "has_mask": mask is not None,
        "meta": frame.metadata,
    }
    if mask is not None:
        mb, ms = plane_buffer(mask)
        h["mask"] = {"width": int(mask.shape[1]), "height": int(mask.shape[0]), "stride": ms}
        bufs.append(mb)
    if extra:
        h.update(extra)
    return [_header_bytes(h), *bufs]


def audio_parts(
    stream_id: str,
    seq: int,
    packet: bytes | memoryview,
    *,
    pts: int | None,
    dts: int | None,
    time_base: Fraction,
    duration: int | None = None,
    keyframe: bool = True,
    gen: int = 0,
) -> list[Part]:
    """Parts for one compressed audio packet, copied downstream bit for bit."""
    payload = memoryview(packet)
    h = {
        "v": VERSION,
        "kind": "audio",
        "stream": str(stream_id),
        "seq": int(seq),
        "gen": int(gen),
        "pts": None if pts is None else int(pts),
        "dts": None if dts is None else int(dts),
        "time_base": _tb(time_base),
        "duration": None if duration is None else int(duration),
        "keyframe": bool(keyframe),
        "size": payload.nbytes,
    }
    return [_header_bytes(h), payload]


def stream_start_parts(
    stream_id: str, *, video: dict[str, Any], audio: dict[str, Any] | None = None, gen: int = 0, seq: int = 0, extra: dict[str, Any] | None = None
) -> list[Part]:
    """Parts announcing a stream: what a remote encoder needs before the first frame.

    ``video``: ``width``, ``height``, ``time_base`` [num, den], ``rate`` [num, den] or null.
    ``audio`` (or null): ``codec``, ``rate``, ``layout``, ``format``, ``time_base``,
    ``bit_rate`` and ``extradata`` (base64), enough to add an output audio stream for packet copy.
    ``extra`` adds top-level fields (service mode: ``resume_after``, the last frame already written).
    """
    h = {"v": VERSION, "kind": "stream-start", "stream": str(stream_id), "seq": int(seq), "gen": int(gen), "video": video, "audio": audio, **(extra or {})}
    return [_header_bytes(h)]


def eos_parts(stream_id: str, *, frames: int, reason: str = "end", gen: int = 0, seq: int = 0) -> list[Part]:
    """End of stream.  ``frames`` is how many frame messages the sender produced in total."""
    h = {"v": VERSION, "kind": "eos", "stream": str(stream_id), "seq": int(seq), "gen": int(gen), "frames": int(frames), "reason": str(reason)}
    return [_header_bytes(h)]


def b64(data: bytes | None) -> str | None:
    return None if not data else base64.b64encode(bytes(data)).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    return None if not text else base64.b64decode(text)


# --------------------------------------------------------------------------- decode side


def part_buffer(part: Part) -> memoryview:
    if isinstance(part, zmq.Frame):
        return part.buffer
    return memoryview(part)


def _int(h: dict[str, Any], key: str, lo: int = 0, hi: int | None = None, *, optional: bool = False) -> int | None:
    v = h.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ProtocolError("field", f"{key!r} must be an integer {rng}, got {shorten(v)}")
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _time_base(h: dict[str, Any], key: str = "time_base") -> Fraction:
    tb = h.get(key)
    if not (isinstance(tb, list) and len(tb) == 2 and all(_is_int(x) and 0 < x <= MAX_TB_TERM for x in tb)):
        raise ProtocolError("field", f"{key!r} must be [num, den] of integers in 1..{MAX_TB_TERM}, got {shorten(tb)}")
    return Fraction(tb[0], tb[1])


def shorten(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _timestamp(h: dict[str, Any], key: str, tb: Fraction) -> int | None:
    """An optional integer timestamp in ``tb`` units, at most ``MAX_TIME_S`` seconds either way."""
    v = h.get(key)
    if v is None:
        return None
    if not _is_int(v):
        raise ProtocolError("field", f"{key!r} must be an integer or null, got {shorten(v)}")
    if abs(v) * tb > MAX_TIME_S:
        raise ProtocolError("field", f"{key!r} {shorten(v)} x time_base {tb} is beyond {MAX_TIME_S} s")
    return v


def _plane_view(buf: memoryview, rows: int, cols: int, stride: int, what: str) -> np.ndarray:
    if stride < cols:
        raise ProtocolError("size", f"{what} stride {stride} < row width {cols}")
    lo, hi = stride * (rows - 1) + cols, stride * rows
    n = buf.nbytes
    if not lo <= n <= hi:
        raise ProtocolError("size", f"{what} is {n} bytes; {cols}x{rows} with stride {stride} needs {lo}..{hi}")
    flat = np.frombuffer(buf, dtype=np.uint8)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(stride, 1))


def _json_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text (brackets inside strings not counted).

    Exact for valid JSON (for anything else, a number that ``json.loads`` then rejects anyway);
    a text with at most ``MAX_JSON_DEPTH`` brackets returns their count without scanning.
    """
    opening = data.count(b"[") + data.count(b"{")
    if opening <= MAX_JSON_DEPTH:  # the usual header: cannot nest deeper than it has brackets
        return opening
    a = np.frombuffer(data.replace(b"\\\\", b"  "), np.uint8)  # escaped backslashes escape nothing
    quote = a == ord('"')
    quote[1:] &= a[:-1] != ord("\\")  # an escaped quote does not end a string
    inside = (np.cumsum(quote) & 1).astype(bool) | quote
    step = np.zeros(a.shape, np.int64)
    step[(a == ord("[")) | (a == ord("{"))] = 1
    step[(a == ord("]")) | (a == ord("}"))] = -1
    step[inside] = 0
    return int(np.cumsum(step).max(initial=0))


def json_object(raw: memoryview) -> dict[str, Any]:
    """A size-bounded JSON object: the first part of native, imagezmq and NetGear messages alike."""
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError("header-size", f"header is {raw.nbytes} bytes; the limit is {MAX_HEADER_BYTES}")
    data = bytes(raw)
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:  # checked before parsing: deep nesting makes json.loads raise RecursionError
        raise ProtocolError("json", f"header nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        h = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("json", f"header is not UTF-8 JSON: {shorten(str(exc), 120)}") from None
    if not isinstance(h, dict):
        raise ProtocolError("json", f"header must be a JSON object, got {type(h).__name__}")
    return h


def parse_header(raw: memoryview) -> dict[str, Any]:
    """Bounded, validated JSON header (the common part of every kind)."""
    h = json_object(raw)
    v = h.get("v")
    if not (type(v) is int and v == VERSION):  # not True, not 1.0: only the integer 1 is version 1
        raise ProtocolError("version", f"protocol version {shorten(v)} is not supported (this receiver speaks the integer {VERSION})")
    if h.get("kind") not in KINDS:
        raise ProtocolError("kind", f"message kind {h.get('kind')!r} is not one of {', '.join(KINDS)}")
    if not isinstance(h.get("stream"), str) or not h["stream"]:
        raise ProtocolError("field", f"'stream' must be a non-empty string, got {h.get('stream')!r}")
    _int(h, "seq", 0, MAX_INT64)
    _int(h, "gen", 0, MAX_INT64, optional=True)
    return h


def decode(parts: Sequence[Part]) -> Message:
    """Validate and decode one multipart message without copying its payload.

    Raises ``ProtocolError`` naming what is wrong; never anything else for bad input.
    """
    if not parts:
        raise ProtocolError("parts", "empty message")
    h = parse_header(part_buffer(parts[0]))
    kind, sid, seq = h["kind"], h["stream"], h["seq"]
    if kind == "frame":
        return _decode_frame(h, parts)
    if kind == "audio":
        if len(parts) != 2:
            raise ProtocolError("parts", f"audio message has {len(parts)} parts, expected 2")
        payload = part_buffer(parts[1])
        tb = _time_base(h)
        for k in ("pts", "dts", "duration"):
            _timestamp(h, k, tb)
        if h.get("size") != payload.nbytes:
            raise ProtocolError("size", f"audio packet is {payload.nbytes} bytes, header says {h.get('size')!r}")
        return Message(kind, sid, seq, h, payload=payload, parts=parts)
    if len(parts) != 1:
        raise ProtocolError("parts", f"{kind} message has {len(parts)} parts, expected 1")
    if kind == "eos":
        _int(h, "frames", 0, MAX_INT64)
    else:
        video = h.get("video")
        if not isinstance(video, dict):
            raise ProtocolError("field", "'video' must be an object")
        _int(video, "width", 1, MAX_DIM)
        _int(video, "height", 1, MAX_DIM)
        _time_base(video)
        if video.get("rate") is not None:
            _time_base(video, "rate")
        if h.get("audio") is not None:
            if not isinstance(h["audio"], dict):
                raise ProtocolError("field", "'audio' must be an object or null")
            if h["audio"].get("time_base") is not None:
                _time_base(h["audio"])
    return Message(kind, sid, seq, h, parts=parts)


def _decode_frame(h: dict[str, Any], parts: Sequence[Part]) -> Message:
    w = _int(h, "width", 1, MAX_DIM)
    ht = _int(h, "height", 1, MAX_DIM)
    assert w is not None and ht is not None
    if h.get("pix_fmt") not in PIX_FMTS:
        raise ProtocolError("field", f"pix_fmt {h.get('pix_fmt')!r} is not one of {', '.join(PIX_FMTS)}")
    tb = _time_base(h)
    pts = _timestamp(h, "pts", tb)
    strides = h.get("strides")
    if not (isinstance(strides, list) and len(strides) == 3 and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 4 * MAX_DIM for s in strides)):
        raise ProtocolError("field", f"'strides' must be 3 positive integers, got {strides!r}")
    has_mask = h.get("has_mask")
    if not isinstance(has_mask, bool):
        raise ProtocolError("field", f"'has_mask' must be true or false, got {has_mask!r}")
    meta = h.get("meta", {})
    if not isinstance(meta, dict):
        raise ProtocolError("field", f"'meta' must be an object, got {type(meta).__name__}")
    want = 5 if has_mask else 4
    if len(parts) != want:
        raise ProtocolError("parts", f"frame message has {len(parts)} parts, expected {want} (has_mask={has_mask})")
    cw, ch = chroma_size(w, ht)
    y = _plane_view(part_buffer(parts[1]), ht, w, strides[0], "Y plane")
    u = _plane_view(part_buffer(parts[2]), ch, cw, strides[1], "U plane")
    v = _plane_view(part_buffer(parts[3]), ch, cw, strides[2], "V plane")
    mask = None
    if has_mask:
        m = h.get("mask")
        if not isinstance(m, dict):
            raise ProtocolError("field", "'mask' geometry object missing while has_mask is true")
        mw = _int(m, "width", 1, MAX_DIM)
        mh = _int(m, "height", 1, MAX_DIM)
        ms = _int(m, "stride", 1, 4 * MAX_DIM)
        assert mw is not None and mh is not None and ms is not None
        mask = _plane_view(part_buffer(parts[4]), mh, mw, ms, "mask")
    frame = YuvFrame(y, u, v, pts=pts, time_base=tb, index=h["seq"], stream_id=h["stream"], metadata=meta)
    return Message("frame", h["stream"], h["seq"], h, frame=frame, mask=mask, parts=parts)


# --------------------------------------------------------------------------- sockets


def max_message_bytes(max_pixels: int = MAX_PICTURE_PIXELS, *, peer: bool = False) -> int:
    """ZMQ_MAXMSGSIZE for a receiver: the largest legal part of a message (libzmq checks each part).

    Native: a Y plane or mask of ``max_pixels`` whose rows may be padded up to twice their
    width (PyAV's line alignment, a crop of a wider picture).  Peers: a raw BGRA picture
    (4 bytes a pixel); a compressed one is smaller.  Never below ``MAX_HEADER_BYTES``.
    A larger part makes ZeroMQ drop the connection (the sender reconnects) before any of
    it is allocated.
    """
    return max(MAX_HEADER_BYTES, (4 if peer else 2) * int(max_pixels))


def socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    *,
    bind: bool,
    hwm: int = 4,
    linger_ms: int = 2000,
    max_msg_bytes: int | None = None,
    setup: Callable[[zmq.Socket], None] | None = None,
) -> zmq.Socket:
    """A socket with small high-water marks (backpressure, bounded staleness) and a bounded linger.

    ``bind`` follows one rule in this project: the receiving side of a PUSH/PULL hop binds,
    senders connect (so restarted senders simply reconnect; no REQ/REP lock-step to hang).
    ``setup`` sets further options (e.g. CURVE keys) before the bind or connect.
    """
    s = ctx.socket(kind)
    if setup is not None:
        setup(s)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    s.setsockopt(zmq.LINGER, linger_ms)
    if max_msg_bytes is not None:  # before bind/connect: libzmq applies it to the connections made afterwards
        s.setsockopt(zmq.MAXMSGSIZE, int(max_msg_bytes))
    if kind == zmq.SUB:
        s.setsockopt(zmq.SUBSCRIBE, b"")
    (s.bind if bind else s.connect)(endpoint)
    return s


def send(sock: zmq.Socket, parts: list[Part], *, block: bool = True, timeout_ms: int | None = None) -> bool:
    """Send one message without copying; False when it could not be queued (latest-wins callers drop it).

    ``block=False`` never waits (a live source must not stall on a slow consumer);
    ``timeout_ms`` waits at most that long for room.
    """
    if not block:
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
    if timeout_ms is not None:
        if not sock.poll(timeout_ms, zmq.POLLOUT):
            return False
    sock.send_multipart(parts, copy=False)
    return True


class Receiver:
    """Receives, validates and hands out messages; bad ones are counted and dropped.

    ``counters`` is an optional ``privacy_filter.metrics.Counters`` (any object with
    ``inc(stream, name, n)``); bad messages are counted as ``bad_messages:<kind>``
    against the stream named in the header when it can be read, else ``fallback_stream``.
    """

    def __init__(self, sock: zmq.Socket, *, counters: Any = None, fallback_stream: str = "unknown", known_streams: Sequence[str] | None = None) -> None:
        self.sock = sock
        self.counters = counters
        self.fallback_stream = fallback_stream
        self.known = set(known_streams) if known_streams is not None else None
        self.bad: dict[str, int] = {}
        self._logged: set[str] = set()

    def _bad(self, err: ProtocolError, parts: Sequence[Part]) -> None:
        self.bad[err.kind] = self.bad.get(err.kind, 0) + 1
        stream = self.fallback_stream
        try:  # attribute to the stream when the header at least names one we know
            h = json.loads(bytes(part_buffer(parts[0]))) if parts and part_buffer(parts[0]).nbytes <= MAX_HEADER_BYTES else None
            if isinstance(h, dict) and isinstance(h.get("stream"), str) and (self.known is None or h["stream"] in self.known):
                stream = h["stream"]
        except Exception:  # noqa: BLE001 - best effort only; the message is dropped anyway
            pass
        if self.counters is not None:
            self.counters.inc(stream, f"bad_messages:{err.kind}")
        if err.kind not in self._logged:
            self._logged.add(err.kind)
            log.warning("dropping malformed message (%s); further %r errors are only counted", err, err.kind)

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """The next valid message, or None after ``timeout_ms`` without one (None = wait forever)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            if deadline is not None:
                left = int(max(0.0, deadline - time.monotonic()) * 1000)
                if not self.sock.poll(left, zmq.POLLIN):
                    return None
            parts = self.sock.recv_multipart(copy=False)
            try:
                return decode(parts)
            except ProtocolError as err:
                self._bad(err, parts)

    def drain(self, max_messages: int = 256) -> list[Message]:
        """Every valid message already waiting, without blocking."""
        out: list[Message] = []
        while len(out) < max_messages:
            try:
                parts = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                out.append(decode(parts))
            except ProtocolError as err:
                self._bad(err, parts)
        return out


def latest_wins(messages: list[Message], live: Container[str] | None = None) -> tuple[list[Message], list[Message]]:
    """Keep only the newest frame of each live stream (all streams when ``live`` is None).

    Every other message keeps its place.
    Returns ``(kept, dropped_frames)``.  Used for live sources so that a slow consumer
    shows the present instead of working through a backlog of stale frames.
    """
    newest: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m.kind == "frame" and (live is None or m.stream_id in live):
            newest[m.stream_id] = i
    kept, dropped = [], []
    for i, m in enumerate(messages):
        if m.kind == "frame" and newest.get(m.stream_id, i) != i:
            dropped.append(m)
        else:
            kept.append(m)
    return kept, dropped


# --------------------------------------------------------------------------- foreign senders (imagezmq, NetGear)
#
# Peers that send packed BGR (or grey, or JPEG) pictures are converted to I420 at the edge,
# once, so nothing downstream ever sees a full-resolution RGB frame.  Formats (checked
# against imagezmq 1.2.0 and vidgear 0.3.x NetGear on loopback, see the research notes):
#   imagezmq:  [JSON {"msg", "dtype", "shape"}, raw C-order array]  or  [JSON {"msg"}, JPEG]
#   NetGear:   [JSON {"terminate_flag", "compression", "message", "pattern", "dtype", "shape"}, raw or JPEG]
#              and a single-part JSON {"terminate_flag": true} when the sender closes.


def video_header(v: VideoInfo) -> dict[str, Any]:
    """The stream-start ``video`` mapping of a ``VideoInfo`` (inverse of ``video_info_from``)."""
    return {
        "width": v.width,
        "height": v.height,
        "time_base": _tb(v.time_base),
        "rate": _tb(v.rate) if v.rate else None,
        "frames": v.frames,
        "duration_s": v.duration_s,
        "codec": v.codec,
        "pix_fmt": v.pix_fmt,
    }


def audio_header(a: AudioInfo | None) -> dict[str, Any] | None:
    """The stream-start ``audio`` mapping of an ``AudioInfo`` (None: no audio)."""
    if a is None:
        return None
    return {
        "codec": a.codec,
        "rate": a.sample_rate,
        "channels": a.channels,
        "layout": a.layout,
        "format": None,
        "time_base": _tb(a.time_base),
        "extradata": b64(a.extradata),
        "bit_rate": a.bit_rate,
    }


def video_info_from(h: dict[str, Any]) -> VideoInfo:
    """``VideoInfo`` from a stream-start header's ``video`` mapping."""
    rate = h.get("rate")
    return VideoInfo(
        width=int(h["width"]),
        height=int(h["height"]),
        time_base=Fraction(*h["time_base"]),
        rate=Fraction(*rate) if rate else None,
        frames=h.get("frames"),
        duration_s=h.get("duration_s"),
        codec=str(h.get("codec", "")),
        pix_fmt=str(h.get("pix_fmt", "yuv420p")),
    )


def audio_info_from(h: dict[str, Any] | None) -> AudioInfo | None:
    """``AudioInfo`` from a stream-start header's ``audio`` mapping (None: no audio)."""
    if not h:
        return None
    return AudioInfo(
        codec=str(h["codec"]),
        sample_rate=int(h["rate"]),
        channels=int(h.get("channels") or 0),
        layout=str(h.get("layout") or ""),
        time_base=Fraction(*h["time_base"]),
        extradata=unb64(h.get("extradata")),
        bit_rate=int(h.get("bit_rate") or 0),
    )
