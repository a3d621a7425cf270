"""imagezmq and NetGear senders as a live source: their packed pictures become ``YuvFrame``s.

Foreign peers speak their own wire formats (a pickled/JSON header plus a raw or JPEG
picture), so they are adapters at the I/O edge, not part of privacy-filter's own protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import zmq

from privacy_filter.errors import ProtocolError, SourceError
from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.media import AudioPacket, SourceInfo, VideoInfo
from privacy_filter.wire import (
    MAX_DIM,
    MAX_PICTURE_PIXELS,
    VERSION,
    Message,
    Part,
    json_object,
    max_message_bytes,
    part_buffer,
    shorten,
    socket,
)

log = logging.getLogger(__name__)


def bgr_to_yuv_frame(img: np.ndarray, **kw: Any) -> YuvFrame:
    """Packed BGR (H, W, 3) or grey (H, W) uint8 → I420 planes (BT.601, as OpenCV converts).

    Odd sizes are handled by replicating the last row/column for the conversion and
    cropping luma back, which gives the ceil-sized chroma planes that I420 defines.
    """
    import cv2

    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ProtocolError("field", f"picture must be uint8 (H, W), (H, W, 3) BGR or (H, W, 4) BGRA, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if img.ndim == 2:
        cw, ch = chroma_size(w, h)
        return YuvFrame(img, np.full((ch, cw), 128, np.uint8), np.full((ch, cw), 128, np.uint8), **kw)
    if img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if (h | w) & 1:
        img = cv2.copyMakeBorder(img, 0, h & 1, 0, w & 1, cv2.BORDER_REPLICATE)
    eh, ew = img.shape[:2]
    y = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420)[:eh][:h, :w]
    # OpenCV's I420 takes chroma from one pixel per 2x2 block; average the block instead, as
    # FFmpeg's scaler does (the conversion is linear, so converting the block mean is exact).
    small = cv2.resize(img, (ew // 2, eh // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    uv = small @ _BGR_TO_UV.T + 128.0
    u = np.clip(np.rint(uv[..., 0]), 0, 255).astype(np.uint8)
    v = np.clip(np.rint(uv[..., 1]), 0, 255).astype(np.uint8)
    return YuvFrame(y, u, v, **kw)


# BT.601 limited range ("studio swing"), rows U and V, columns B, G, R
_BGR_TO_UV = np.array([[112.0, -74.203, -37.797], [-18.214, -93.786, 112.0]], np.float32) / 255.0


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)


def picture_size(data: memoryview | bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` declared by a JPEG, PNG or BMP header, read without decoding; None if unknown."""
    b = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    n = len(b)
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        if n >= 24 and b[12:16] == b"IHDR":
            return "png", int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        return None
    if b[:2] == b"BM" and n >= 26:
        return "bmp", abs(int.from_bytes(b[18:22], "little", signed=True)), abs(int.from_bytes(b[22:26], "little", signed=True))
    if b[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= n:
            if b[i] != 0xFF:
                return None
            marker = b[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                i += 2
                continue
            if marker in _JPEG_SOF:
                if i + 9 > n:
                    return None
                return "jpeg", int.from_bytes(b[i + 7 : i + 9], "big"), int.from_bytes(b[i + 5 : i + 7], "big")
            if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
                return None
            i += 2 + int.from_bytes(b[i + 2 : i + 4], "big")
    return None


def _foreign_picture(h: dict[str, Any], payload: memoryview, jpeg: bool, max_pixels: int = MAX_PICTURE_PIXELS) -> np.ndarray:
    if jpeg:
        import cv2

        if payload.nbytes == 0:
            raise ProtocolError("size", "compressed picture payload is empty")
        declared = picture_size(payload)
        if declared is None:
            raise ProtocolError("field", f"compressed picture of {payload.nbytes} bytes is not a JPEG, PNG or BMP with a readable size")
        fmt, w, ht = declared
        if not (0 < w <= MAX_DIM and 0 < ht <= MAX_DIM and w * ht <= max_pixels):  # before decoding: a small file can declare a huge picture
            raise ProtocolError("size", f"{fmt.upper()} declares {w}x{ht}; the limit is {MAX_DIM} a side and {max_pixels} pixels")
        try:
            img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # OpenCV raises for some bad input rather than returning None
            raise ProtocolError("size", f"compressed picture of {payload.nbytes} bytes cannot be decoded: {shorten(str(exc).strip(), 120)}") from None
        if img is None:
            raise ProtocolError("size", f"compressed picture of {payload.nbytes} bytes cannot be decoded")
        return img
    dtype, shape = h.get("dtype"), h.get("shape")
    if dtype != "uint8":
        raise ProtocolError("field", f"'dtype' must be 'uint8' (8-bit pictures), got {dtype!r}")
    if not (isinstance(shape, list) and len(shape) in (2, 3) and all(isinstance(x, int) and 0 < x <= MAX_DIM for x in shape)):
        raise ProtocolError("field", f"'shape' must be [H, W] or [H, W, C], got {shape!r}")
    if shape[0] * shape[1] > max_pixels:
        raise ProtocolError("size", f"picture {shape[1]}x{shape[0]} is above the limit of {max_pixels} pixels")
    n = int(np.prod(shape))
    if payload.nbytes != n:
        raise ProtocolError("size", f"array is {payload.nbytes} bytes, shape {shape} needs {n}")
    return np.frombuffer(payload, np.uint8).reshape(shape)


def decode_foreign(parts: Sequence[Part], *, stream_id: str, seq: int, pts: int | None, time_base: Fraction, max_pixels: int = MAX_PICTURE_PIXELS) -> Message:
    """An imagezmq or NetGear message as a ``frame`` Message (or ``eos`` for NetGear's terminate).

    The sender's text (imagezmq ``msg``, NetGear ``message``) goes to ``frame.metadata``
    under ``"msg"`` / ``"message"``.  Raises ``ProtocolError`` like ``decode``.
    """
    if not parts:
        raise ProtocolError("parts", "empty message")
    raw = part_buffer(parts[0])
    h = json_object(raw)
    netgear = "terminate_flag" in h
    if netgear and h.get("terminate_flag"):
        return Message("eos", stream_id, 0, {"v": VERSION, "kind": "eos", "stream": stream_id, "seq": 0, "frames": seq, "reason": "end"}, parts=parts)
    if len(parts) != 2:
        raise ProtocolError("parts", f"{'NetGear' if netgear else 'imagezmq'} frame message has {len(parts)} parts, expected 2")
    payload = part_buffer(parts[1])
    if netgear:
        jpeg = bool(h.get("compression"))
        meta = {"message": h.get("message")}
    elif "msg" in h:
        jpeg = "dtype" not in h and "shape" not in h  # send_jpg carries only msg
        meta = {"msg": h.get("msg")}
    else:
        raise ProtocolError("kind", "neither an imagezmq ({msg, dtype, shape}) nor a NetGear ({terminate_flag, ...}) header")
    img = _foreign_picture(h, payload, jpeg, max_pixels)
    import cv2

    try:
        frame = bgr_to_yuv_frame(img, pts=pts, time_base=time_base, index=seq, stream_id=stream_id, metadata=meta)
    except cv2.error as exc:  # a picture OpenCV decoded but cannot convert: the peer's fault, not ours
        raise ProtocolError("field", f"picture {img.dtype} {img.shape} cannot be converted: {shorten(str(exc).strip(), 120)}") from None
    header = {"v": VERSION, "kind": "frame", "stream": stream_id, "seq": seq, "foreign": "netgear" if netgear else "imagezmq"}
    return Message("frame", stream_id, seq, header, frame=frame, parts=parts)


#: Source URLs that receive from foreign peers: scheme -> (socket type, bind?, reply to each message?)
PEER_SCHEMES: dict[str, tuple[int, bool, bytes | None]] = {
    "imagezmq+rep": (zmq.REP, True, b"OK"),  # imagezmq ImageSender() default: REQ connects, the hub binds and answers OK
    "imagezmq+sub": (zmq.SUB, False, None),  # ImageSender(REQ_REP=False): the sender's PUB binds, we connect
    "netgear+sub": (zmq.SUB, True, None),  # NetGear pattern=2: the receiver's SUB binds, the sender's PUB connects
    "netgear+rep": (zmq.REP, True, b"ok"),  # NetGear pattern=1: REQ sender waits for any reply
}


class PeerSource:
    """A live source fed by imagezmq / NetGear senders, shaped like ``decode.Decoder``.

    ``imagezmq+rep://0.0.0.0:5555`` binds a hub that answers every message at once (so a
    sender never waits on our pipeline); ``imagezmq+sub://camera-host:5555`` subscribes to
    a publishing sender; ``netgear+sub://0.0.0.0:5555`` / ``netgear+rep://...`` bind as
    NetGear receivers do.  Pictures are converted to I420 once, here.  Timestamps are the
    arrival time in milliseconds since the first picture (these senders carry none).
    The first picture fixes the stream's size, unless ``size`` (width, height) is given: a
    restarted service worker passes the size the stream already has, so the first picture
    after a restart cannot change it.  Pictures of another size are dropped and counted.
    Malformed messages are counted by kind and dropped.
    """

    def __init__(
        self, url: str, *, stream_id: str, counters: Any = None, should_stop: Any = None, hwm: int = 2, max_pixels: int = MAX_PICTURE_PIXELS, size: tuple[int, int] | None = None
    ) -> None:
        scheme, _, rest = str(url).partition("://")
        self.kind, self.bind, self.reply = PEER_SCHEMES[scheme.lower()]
        self.endpoint = "tcp://" + rest
        self.url = str(url)
        self.stream_id = stream_id
        self.counters = counters
        self.should_stop = should_stop or (lambda: False)
        self.hwm = hwm
        self.max_pixels = max_pixels
        self.live = True  # a peer sends in real time and never waits for us
        self.reconnects = 0  # ZeroMQ reconnects by itself
        self.frames_decoded = 0
        self.frames_resized = 0  # pictures of another size are dropped (size_mismatch), not scaled
        self.size_mismatch = 0
        self.end_reason: str | None = None
        self.upstream_stream: str | None = None
        self._bad: dict[str, int] = {}
        self._stopped = False
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._first: YuvFrame | None = None
        self._size = size  # (width, height) every picture must have; None: the first picture's
        self._t0: float | None = None
        self._logged: set[str] = set()
        self.info: Any = None

    def _next(self) -> YuvFrame | None:
        """The next valid picture; None at the sender's terminate or on stop."""
        assert self._sock is not None
        while not (self._stopped or self.should_stop()):
            if not self._sock.poll(200, zmq.POLLIN):
                continue
            parts = self._sock.recv_multipart(copy=False)
            if self.reply is not None:
                self._sock.send(self.reply)  # answer before filtering: the sender never waits on us
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            try:
                m = decode_foreign(
                    parts, stream_id=self.stream_id, seq=self.frames_decoded, pts=int(round((now - self._t0) * 1000)), time_base=Fraction(1, 1000), max_pixels=self.max_pixels
                )
            except ProtocolError as err:
                self._bad[err.kind] = self._bad.get(err.kind, 0) + 1
                if self.counters is not None:
                    self.counters.inc(self.stream_id, f"bad_messages:{err.kind}")
                if err.kind not in self._logged:
                    self._logged.add(err.kind)
                    log.warning("%s: dropping malformed message (%s); further %r errors are only counted", self.url, err, err.kind)
                continue
            if m.kind == "eos":
                self.end_reason = "end"
                return None
            assert m.frame is not None
            want = self._size or ((self._first.width, self._first.height) if self._first is not None else None)
            if want is not None and (m.frame.width, m.frame.height) != want:
                self.size_mismatch += 1
                if self.counters is not None:
                    self.counters.inc(self.stream_id, "frames_dropped")
                if "size" not in self._logged:
                    self._logged.add("size")
                    log.warning("%s: picture size changed from %dx%d to %dx%d; such pictures are dropped (counted)", self.url, want[0], want[1], m.frame.width, m.frame.height)
                continue
            self.frames_decoded += 1
            return m.frame
        return None

    @property
    def bad(self) -> dict[str, int]:
        """Malformed messages dropped, by ``ProtocolError`` kind."""
        return dict(self._bad)

    def stop(self) -> None:
        """Ask a waiting ``open()``/iteration to return within one poll (thread-safe)."""
        self._stopped = True

    def open(self) -> SourceInfo:
        """Bind/connect and wait for the first picture (its size is the stream's)."""
        self._ctx = zmq.Context()
        try:
            self._sock = socket(self._ctx, self.kind, self.endpoint, bind=self.bind, hwm=self.hwm, linger_ms=0, max_msg_bytes=max_message_bytes(self.max_pixels, peer=True))
        except zmq.ZMQError as exc:
            raise SourceError(f"cannot {'bind' if self.bind else 'connect'} {self.url}: {exc}") from None
        first = self._next()
        if first is None:
            raise SourceError(f"{self.url}: no picture received before the stream was stopped")
        self._first = first
        video = VideoInfo(first.width, first.height, Fraction(1, 1000), None, None, None, "rawvideo", "bgr24")
        self.info = SourceInfo(self.url, True, video, None)
        return self.info

    def __iter__(self) -> Iterator[YuvFrame | AudioPacket]:
        if self._first is None:
            self.open()
        assert self._first is not None  # open() returned or raised
        yield self._first
        while True:
            f = self._next()
            if f is None:
                return
            yield f

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
