"""Wire protocol over real ZeroMQ sockets with real decoded frames (docs/protocol.md)."""

from __future__ import annotations

import json
import logging
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import zmq

from privacy_filter import wire as P
from privacy_filter.errors import BAD_KINDS, ProtocolError
from privacy_filter.frames import YuvFrame
from privacy_filter.io import peer
from privacy_filter.io.av_source import to_yuv_frame
from privacy_filter.metrics import Board


@pytest.fixture()
def pair(tmp_path: Path):
    """A PUSH/PULL pair over ipc:// (the service's default transport)."""
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/t.sock"
    rx = P.socket(ctx, zmq.PULL, ep, bind=True, hwm=64)
    tx = P.socket(ctx, zmq.PUSH, ep, bind=False, hwm=64)
    yield tx, rx
    tx.close(linger=0)
    rx.close(linger=0)
    ctx.term()


def _frames(path: Path, n: int, *, size: tuple[int, int] | None = None) -> list[YuvFrame]:
    """Real decoded frames as the decode worker wraps them: views on PyAV's (padded) plane buffers."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for i, f in enumerate(c.decode(s)):
            if size is not None:  # an odd size, rows padded by FFmpeg's scaler
                f = f.reformat(width=size[0], height=size[1], format="yuv420p")
            out.append(to_yuv_frame(f, i, "cam-1", f.pts, Fraction(s.time_base)))
            if len(out) == n:
                break
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


@pytest.mark.parametrize("size", [None, (641, 361)], ids=["768x432", "odd-641x361"])
def test_round_trip_real_frames_bit_identical(shared_data: Path, pair, size) -> None:
    tx, rx = pair
    frames = _frames(shared_data / "videos/one-by-one-person-detection.mp4", 3, size=size)
    meta = {"camera": {"site": "Zürich", "floor": 2}, "tags": ["a", "b"], "score": 0.5}
    for f in frames:
        f.metadata = meta
        P.send(tx, P.frame_parts(f))
    for f in frames:
        m = P.Receiver(rx).recv(timeout_ms=5000)
        assert m is not None and m.kind == "frame"
        g = m.frame
        assert g is not None
        assert all(_same(a, b) for a, b in zip(g.planes, f.planes))
        assert (g.pts, g.time_base, g.index, g.stream_id) == (f.pts, f.time_base, f.index, "cam-1")
        assert g.metadata == meta  # passed through untouched
        assert m.header["strides"] == [int(p.strides[0]) for p in f.planes]
        g.validate()
    if size is not None:  # the odd size really was sent with padded rows
        assert frames[0].y.strides[0] > 641 and frames[0].u.shape == (181, 321)


def test_strided_planes_sent_without_packing(shared_data: Path) -> None:
    """The sender's buffer is the plane's own memory (from its first byte, row padding included)."""
    big = np.arange(100 * 64, dtype=np.uint8).reshape(100, 64)
    crop = big[10:50, 5:37]  # stride 64, width 32
    buf, stride = P.plane_buffer(crop)
    assert stride == 64
    assert np.shares_memory(np.frombuffer(buf, np.uint8), big)
    assert buf.nbytes == 64 * 39 + 32
    # a column-strided view cannot be sent as rows: packed once
    buf2, stride2 = P.plane_buffer(big[:, ::2])
    assert stride2 == 32 and buf2.nbytes == 100 * 32


def test_received_planes_are_views_on_the_message(pair) -> None:
    tx, rx = pair
    f = YuvFrame.blank(1920, 1080, pts=7, stream_id="s")
    f.y[:] = np.arange(1920, dtype=np.uint8)[None, :]
    P.send(tx, P.frame_parts(f))
    m = P.Receiver(rx).recv(timeout_ms=5000)
    assert m is not None and m.frame is not None
    for arr, part in zip(m.frame.planes, m.parts[1:4]):
        assert isinstance(part, zmq.Frame)
        base = np.frombuffer(part.buffer, np.uint8)
        assert np.shares_memory(arr, base), "plane was copied out of the ZeroMQ message"
    # views are writable in place (effects draw on them) and stay valid while the message lives
    m.frame.y[0, 0] = 3
    assert np.frombuffer(m.parts[1].buffer, np.uint8)[0] == 3
    assert _same(m.frame.u, f.u)


def test_mask_part_round_trip(pair) -> None:
    tx, rx = pair
    f = YuvFrame.blank(33, 17, pts=None, stream_id="m")
    full = np.zeros((40, 48), np.uint8)
    full[2:19, 1:34] = np.random.default_rng(0).integers(0, 256, (17, 33), dtype=np.uint8)
    mask = full[2:19, 1:34]  # strided view
    P.send(tx, P.frame_parts(f, mask=mask, seq=41, gen=2))
    m = P.Receiver(rx).recv(timeout_ms=5000)
    assert m is not None and m.mask is not None
    assert _same(m.mask, mask) and m.header["mask"] == {"width": 33, "height": 17, "stride": 48}
    assert (m.seq, m.gen, m.frame.pts, m.frame.u.shape) == (41, 2, None, (9, 17))


def test_audio_stream_start_and_eos(pair) -> None:
    tx, rx = pair
    payload = bytes(range(256)) * 3
    P.send(
        tx,
        P.stream_start_parts(
            "a", video={"width": 4, "height": 2, "time_base": [1, 25], "rate": [25, 1]}, audio={"codec": "aac", "rate": 48000, "layout": "mono", "extradata": P.b64(b"\x11\x90")}
        ),
    )
    P.send(tx, P.audio_parts("a", 5, payload, pts=1024, dts=1024, time_base=Fraction(1, 48000), duration=1024))
    P.send(tx, P.eos_parts("a", frames=12, reason="stop"))
    r = P.Receiver(rx)
    s, a, e = (r.recv(timeout_ms=5000) for _ in range(3))
    assert s.kind == "stream-start" and P.unb64(s.header["audio"]["extradata"]) == b"\x11\x90"
    assert a.kind == "audio" and bytes(a.payload) == payload and (a.seq, a.header["pts"], a.header["duration"]) == (5, 1024, 1024)
    assert e.kind == "eos" and e.header["frames"] == 12 and e.header["reason"] == "stop"


def _good(seq: int) -> list:
    return P.frame_parts(YuvFrame.blank(64, 48, pts=seq, index=seq, stream_id="cam"))


def _hdr(**over) -> bytes:
    h = json.loads(bytes(_good(0)[0]))
    h.update(over)
    return json.dumps(h).encode()


def _malformed() -> list[tuple[str, list]]:
    g = _good(0)
    y, u, v = (bytes(x) for x in g[1:4])
    return [
        ("size", [g[0], y[:-100], u, v]),  # truncated Y plane
        ("size", [g[0], y, u + b"\0" * 40, v]),  # U plane too big for its geometry
        ("parts", [g[0], y, u]),  # missing V plane
        ("parts", [g[0], y, u, v, b"extra"]),  # mask part without has_mask
        ("version", [_hdr(v=99), y, u, v]),  # unknown version
        ("header-size", [b"{" + b" " * (P.MAX_HEADER_BYTES + 1) + b"}", y, u, v]),  # oversized header
        ("json", [b"{not json", y, u, v]),  # bad JSON
        ("json", [b"\xff\xfe\x00", y, u, v]),  # not UTF-8
        ("json", [b"[1, 2, 3]", y, u, v]),  # JSON but not an object
        ("kind", [_hdr(kind="video"), y, u, v]),  # unknown kind
        ("field", [_hdr(width=None), y, u, v]),  # missing width
        ("field", [_hdr(time_base=[1, 0]), y, u, v]),  # zero denominator
        ("field", [_hdr(has_mask=True), y, u, v, b"m" * 10]),  # has_mask without geometry
        ("size", [_hdr(strides=[10, 32, 32]), y, u, v]),  # stride smaller than the row
        ("field", [_hdr(stream=""), y, u, v]),  # empty stream id
        ("size", [json.dumps({"v": 1, "kind": "audio", "stream": "cam", "seq": 0, "time_base": [1, 48000], "size": 9}).encode(), b"12345"]),
        ("parts", [json.dumps({"v": 1, "kind": "eos", "stream": "cam", "seq": 0, "frames": 1}).encode(), b"x"]),
    ]


def test_decode_names_each_problem() -> None:
    for kind, parts in _malformed():
        with pytest.raises(ProtocolError) as ei:
            P.decode(parts)
        assert ei.value.kind == kind, (kind, str(ei.value))
        assert str(ei.value).startswith(kind + ": ")


def test_malformed_messages_counted_logged_once_and_dropped(pair, caplog: pytest.LogCaptureFixture) -> None:
    """Every bad message is counted by kind and dropped; the good message after each one still arrives."""
    tx, rx = pair
    board = Board(["cam"])
    r = P.Receiver(rx, counters=board.counters(), fallback_stream="_unknown", known_streams=["cam"])
    bad = _malformed()
    with caplog.at_level(logging.WARNING, logger="privacy_filter.wire"):
        for i, (_, parts) in enumerate(bad):
            tx.send_multipart(parts)
            P.send(tx, _good(i))
            m = r.recv(timeout_ms=5000)
            assert m is not None and m.seq == i and m.frame is not None and m.frame.pts == i
    want: dict[str, int] = {}
    for kind, _ in bad:
        want[kind] = want.get(kind, 0) + 1
    assert r.bad == want
    assert board.bad_messages() == {k: want.get(k, 0) for k in BAD_KINDS}
    # attributed to the stream when the header names it, else to _unknown
    assert board.value("cam", "bad_messages:size") == want["size"]
    assert board.value("_unknown", "bad_messages:json") == want["json"]
    assert board.value("_unknown", "bad_messages:header-size") == 1
    warnings = [rec for rec in caplog.records if "malformed" in rec.getMessage()]
    assert len(warnings) == len(want), "each kind must be logged exactly once"


def test_drain_and_latest_wins(pair) -> None:
    tx, rx = pair
    for i in range(5):
        P.send(tx, P.frame_parts(YuvFrame.blank(16, 16, index=i, stream_id="live")))
        P.send(tx, P.frame_parts(YuvFrame.blank(16, 16, index=i, stream_id="file")))
    P.send(tx, P.eos_parts("live", frames=5))
    r = P.Receiver(rx)
    msgs: list[P.Message] = []
    while len(msgs) < 11:
        first = r.recv(timeout_ms=5000)
        assert first is not None
        msgs += [first] + r.drain()
    kept, dropped = P.latest_wins(msgs, live={"live"})
    assert [m.seq for m in dropped] == [0, 1, 2, 3] and all(m.stream_id == "live" for m in dropped)
    assert [m.seq for m in kept if m.stream_id == "file"] == [0, 1, 2, 3, 4]
    assert [(m.kind, m.seq) for m in kept if m.stream_id == "live"] == [("frame", 4), ("eos", 0)]


def test_nonblocking_send_reports_a_full_queue(tmp_path: Path) -> None:
    ctx = zmq.Context()
    tx = P.socket(ctx, zmq.PUSH, f"ipc://{tmp_path}/nobody.sock", bind=False, hwm=1)
    try:  # no receiver yet: once the small queue is full, a live sender is told to drop, never blocked
        results = [P.send(tx, _good(i), block=False) for i in range(10)]
        assert results[0] is True and results[-1] is False
        assert sum(results) <= 2  # the queue holds about SNDHWM messages, not more
        assert P.send(tx, _good(0), timeout_ms=50) is False
    finally:
        tx.close(linger=0)
        ctx.term()


def test_unserialisable_metadata_is_a_clear_sender_error() -> None:
    f = YuvFrame.blank(8, 8, metadata={"when": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        P.frame_parts(f)


# --------------------------------------------------------------------------- foreign senders


def _bt601(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reference: BT.601 limited range, chroma from the mean of each 2x2 block (edges replicated)."""
    h, w = img.shape[:2]
    p = np.pad(img.astype(np.float64), ((0, h & 1), (0, w & 1), (0, 0)), mode="edge")
    b, g, r = p[..., 0], p[..., 1], p[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    blk = lambda a: a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))  # noqa: E731
    return y[:h, :w], blk(u), blk(v)


def _bgr_frame(shared_data: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    with av.open(str(shared_data / "videos/classroom.gif")) as c:
        f = next(iter(c.decode(video=0)))
        if size:
            f = f.reformat(width=size[0], height=size[1])
        return f.to_ndarray(format="bgr24")


@pytest.mark.parametrize("size", [None, (317, 181)], ids=["480x270", "odd-317x181"])
def test_bgr_to_i420_matches_bt601_reference(shared_data: Path, size) -> None:
    img = _bgr_frame(shared_data, size)
    f = peer.bgr_to_yuv_frame(img, stream_id="x")
    f.validate()
    y, u, v = _bt601(img)
    assert np.abs(f.y - y).max() <= 1 and np.abs(f.u - u).max() <= 1 and np.abs(f.v - v).max() <= 1


def _port() -> int:
    import socket as so

    with so.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_imagezmq_sender_req_rep_into_peer_source(shared_data: Path) -> None:
    """The real imagezmq ImageSender (REQ) talking to our hub: raw BGR, JPEG, and garbage, all answered."""
    import threading

    import cv2
    import imagezmq

    port = _port()
    board = Board(["cam"])
    src = peer.PeerSource(f"imagezmq+rep://127.0.0.1:{port}", stream_id="cam", counters=board.counters())
    img = _bgr_frame(shared_data)
    replies: list[bytes] = []

    def sender() -> None:
        s = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        replies.append(s.send_image("host|cam0", img))
        replies.append(s.send_image("host|cam0", np.zeros((10, 10), np.uint16)))  # wrong dtype: answered, counted, dropped
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        replies.append(s.send_jpg("host|cam0", jpg))
        replies.append(s.send_image("host|cam0", img[:100, :100]))  # another size: dropped and counted
        replies.append(s.send_image("host|cam0", img[::-1].copy()))
        s.close()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    info = src.open()
    assert (info.video.width, info.video.height, info.live) == (480, 270, True)
    frames = [f for _, f in zip(range(3), src)]
    t.join(10)
    src.close()
    assert replies == [b"OK"] * 5  # the sender is never left hanging, whatever it sent
    y, u, v = _bt601(img)
    assert np.abs(frames[0].y - y).max() <= 1 and frames[0].metadata == {"msg": "host|cam0"}
    assert np.abs(frames[1].y.astype(int) - y).mean() < 3  # the JPEG, decoded and converted
    assert np.abs(frames[2].y - _bt601(img[::-1])[0]).max() <= 1
    assert [f.index for f in frames] == [0, 1, 2] and frames[0].pts <= frames[1].pts <= frames[2].pts
    assert board.value("cam", "bad_messages:field") == 1 and board.value("cam", "frames_dropped") == 1


def test_imagezmq_pub_sub_into_peer_source(shared_data: Path) -> None:
    import imagezmq

    port = _port()
    img = _bgr_frame(shared_data, (64, 48))
    sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}", REQ_REP=False)  # PUB binds
    src = peer.PeerSource(f"imagezmq+sub://127.0.0.1:{port}", stream_id="pub")
    import threading

    stop = threading.Event()

    def pump() -> None:  # PUB/SUB loses messages until the subscription is through (slow joiner)
        while not stop.is_set():
            sender.send_image("pub", img)
            time.sleep(0.02)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        info = src.open()
        assert (info.video.width, info.video.height) == (64, 48)
        f = next(iter(src))
        assert np.abs(f.y - _bt601(img)[0]).max() <= 1
    finally:
        stop.set()
        t.join(5)
        src.close()
        sender.close()


def test_netgear_wire_format_into_peer_source(shared_data: Path) -> None:
    """NetGear frames and terminate, built from its documented wire format (vidgear itself is not installed)."""
    port = _port()
    src = peer.PeerSource(f"netgear+sub://127.0.0.1:{port}", stream_id="ng")  # NetGear's receiver SUB binds
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    img = _bgr_frame(shared_data, (96, 54))
    hdr = {"terminate_flag": False, "compression": False, "message": {"camera": "c1"}, "pattern": "2", "dtype": "uint8", "shape": list(img.shape)}
    import threading

    def pump() -> None:
        for _ in range(50):  # until the slow joiner is subscribed
            pub.send_json(hdr, zmq.SNDMORE)
            pub.send(np.ascontiguousarray(img))
            time.sleep(0.02)
        pub.send_json({"terminate_flag": True})

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        src.open()
        frames = list(src)  # ends at the terminate message
        t.join(10)
        assert 1 <= len(frames) <= 50  # some frames were lost to the slow joiner; terminate ended the stream
        f = frames[0]
        assert f.metadata == {"message": {"camera": "c1"}} and f.stream_id == "ng"
        assert np.abs(f.y - _bt601(img)[0]).max() <= 1
    finally:
        src.close()
        pub.close(0)
        ctx.term()
