"""Hostile and extreme input to every ZeroMQ receiver (issue 12): counted and dropped, never a crash.

Real ZeroMQ sockets (ipc:// and tcp://127.0.0.1), the real imagezmq sender, NetGear's wire
format built by hand (vidgear is not installed), real PyAV encoders.  The segmenter is a
stand-in that finds nobody (these tests are about the transport, not the model).
"""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from privacy_filter import wire as P
from privacy_filter.config import stream_config
from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.io import peer
from privacy_filter.metrics import Board
from privacy_filter.pipeline import plan_from_stream_config, run_process
from support.media_clips import read_video

W, H = 64, 48
TB = Fraction(1, 1000)
NESTED = b"[" * 1000 + b"]" * 1000  # about 2 KB: json.loads raises RecursionError on it


class Nobody:
    """A segmenter that finds nobody (probability 0 everywhere)."""

    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        return [np.zeros((16, 16), np.float32) for _ in frames]


def frame(k: int, *, w: int = W, h: int = H, stream: str = "up") -> YuvFrame:
    cw, ch = chroma_size(w, h)
    y = np.full((h, w), 16 + (k * 7) % 200, np.uint8)
    return YuvFrame(y, np.full((ch, cw), 128, np.uint8), np.full((ch, cw), 128, np.uint8), pts=k * 40, time_base=TB, index=k, stream_id=stream)


def stream_start(stream: str = "up", **video: Any) -> list[Any]:
    return P.stream_start_parts(stream, video={"width": W, "height": H, "time_base": [1, 1000], "rate": [25, 1], **video})


def with_header(parts: list[Any], **changes: Any) -> list[Any]:
    h = json.loads(bytes(parts[0]))
    h.update(changes)
    return [json.dumps(h).encode(), *(bytes(p) for p in parts[1:])]


def hostile_native() -> dict[str, list[Any]]:
    """Malformed native messages by name (each must be counted and dropped)."""
    f = P.frame_parts(frame(0))
    return {
        "nested-header": [NESTED, *(bytes(p) for p in f[1:])],
        "nested-meta": [bytes(f[0]).replace(b'"meta":{}', b'"meta":{"x":' + NESTED + b"}"), *(bytes(p) for p in f[1:])],
        "nested-object": [b'{"a":' * 2000 + b"1" + b"}" * 2000],
        "v-true": with_header(f, v=True),
        "v-float": with_header(f, v=1.0),
        "v-string": with_header(f, v="1"),
        "pts-1e30": with_header(f, pts=10**30),
        "pts-neg-1e30": with_header(f, pts=-(10**30)),
        "tb-den-2^62": with_header(f, time_base=[1, 2**62]),
        "tb-num-2^40": with_header(f, time_base=[2**40, 1]),
        "seq-2^70": with_header(f, seq=2**70),
        "start-tb-2^40": [json.dumps({**json.loads(bytes(stream_start()[0])), "video": {"width": W, "height": H, "time_base": [2**40, 1]}}).encode()],
        "audio-pts-1e30": [
            json.dumps(
                {"v": 1, "kind": "audio", "stream": "up", "seq": 0, "pts": 10**30, "dts": None, "time_base": [1, 48000], "duration": 1024, "keyframe": True, "size": 4}
            ).encode(),
            b"abcd",
        ],
    }


def test_pre_fix_failures_are_bad_messages_on_a_real_receiver(tmp_path: Path) -> None:
    """Every hostile message through a real PUSH/PULL pair: counted by kind and dropped; the next valid frame arrives."""
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/rx.sock"
    rx_sock = P.socket(ctx, zmq.PULL, ep, bind=True, hwm=1000)
    tx = P.socket(ctx, zmq.PUSH, ep, bind=False, hwm=1000)
    board = Board(["up"])
    rx = P.Receiver(rx_sock, counters=board.counters(), known_streams=["up"])
    bad = hostile_native()
    try:
        for parts in bad.values():
            tx.send_multipart(parts)
        P.send(tx, P.frame_parts(frame(1)))
        m = rx.recv(timeout_ms=10_000)
        assert m is not None and m.kind == "frame" and m.seq == 1
        assert sum(rx.bad.values()) == len(bad), rx.bad
        assert rx.bad["json"] == 3 and rx.bad["version"] == 3 and rx.bad["field"] == len(bad) - 6, rx.bad
    finally:
        tx.close(linger=0)
        rx_sock.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("name", sorted(hostile_native()))
def test_each_hostile_native_message_raises_only_protocol_error(name: str) -> None:
    with pytest.raises(P.ProtocolError):
        P.decode(hostile_native()[name])


def test_legal_edges_still_pass() -> None:
    """The bounds leave room for every real stream: 90 kHz, microsecond and Unix-epoch timestamps, deep-ish meta."""
    f = P.frame_parts(frame(0))
    assert P.decode(with_header(f, pts=1_700_000_000 * 90_000, time_base=[1, 90_000])).frame.pts == 1_700_000_000 * 90_000
    assert P.decode(with_header(f, pts=-5, time_base=[2**31 - 1, 2**31 - 1])).frame.pts == -5
    meta = {"a": [[[[{"b": "[" * 40 + "\\"}]]]], "c": '"' + "[" * 40, "d": "]" * 40}  # brackets in strings do not nest
    assert P.decode(with_header(f, meta=meta)).frame.metadata == meta


def _producer(ep: str, messages: list[list[Any]], n_valid: int, gap: int = 3, *, done: threading.Event) -> threading.Thread:
    """stream-start, then valid frames with the hostile messages spread between them, then eos.

    The socket stays open until ``done``: a PUSH closed while its peer still has messages in
    the kernel buffer (the receiver's high-water mark is small) loses them, eos included.
    """

    def run() -> None:
        ctx = zmq.Context()
        s = P.socket(ctx, zmq.PUSH, ep, bind=False, hwm=1000, linger_ms=10_000)
        P.send(s, stream_start())
        bad = list(messages)
        for k in range(n_valid):
            P.send(s, P.frame_parts(frame(k)))
            for _ in range(gap):
                if bad:
                    s.send_multipart(bad.pop(0))
        for parts in bad:
            s.send_multipart(parts)
        P.send(s, P.eos_parts("up", frames=n_valid))
        done.wait(60)
        s.close()
        ctx.term()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


GROUPS = {  # defect 2: nested JSON; defect 4: version types; defect 3: extreme values
    "nested": ("nested-header", "nested-meta", "nested-object"),
    "version": ("v-true", "v-float", "v-string"),
    "extreme": ("pts-1e30", "pts-neg-1e30", "tb-den-2^62", "tb-num-2^40", "seq-2^70", "start-tb-2^40", "audio-pts-1e30"),
}


@pytest.mark.parametrize("group,out_name", [("nested", "out.mkv"), ("version", "out.mkv"), ("extreme", "out.mkv"), ("extreme", "out.mp4")])
def test_process_native_source_survives_hostile_messages_into_a_file(tmp_path: Path, group: str, out_name: str) -> None:
    """``process zmq+pull://... out.mkv``: nested headers, extreme pts/time bases, wrong version types are counted, not a traceback."""
    ep = f"ipc://{tmp_path}/in.sock"
    src, out = f"zmq+pull://{ep}", tmp_path / out_name
    plan = plan_from_stream_config(stream_config(src, str(out), overrides={"effect": {"kind": "fill"}, "output": {"audio": "drop"}}))
    bad = {k: v for k, v in hostile_native().items() if k in GROUPS[group]}
    done = threading.Event()
    t = _producer(ep, list(bad.values()), n_valid=10, done=done)
    try:
        report = run_process(src, str(out), plan, segmenter=Nobody(), progress=False)
    finally:
        done.set()
        t.join(10)
    assert report.frames_out == 10 and report.bad_messages == len(bad)
    times, _ = read_video(out)
    assert len(times) == 10


# --------------------------------------------------------------------------- peers (imagezmq, NetGear)


def _port() -> int:
    import socket as so

    with so.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bgr(w: int = W, h: int = H) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256]).astype(np.uint8)


def test_imagezmq_hub_counts_nested_headers_and_empty_jpegs() -> None:
    """The real imagezmq sender: an empty send_jpg and a nested JSON header are answered, counted, dropped."""
    import imagezmq

    port = _port()
    board = Board(["cam"])
    src = peer.PeerSource(f"imagezmq+rep://127.0.0.1:{port}", stream_id="cam", counters=board.counters())
    img = _bgr()
    replies: list[bytes] = []

    def sender() -> None:
        s = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        replies.append(s.send_jpg("cam", np.zeros(0, np.uint8)))  # empty JPEG: cv2.error before the fix
        s.zmq_socket.send_multipart([NESTED, b"x"])  # nested header: RecursionError before the fix
        replies.append(s.zmq_socket.recv())
        s.zmq_socket.send_multipart([b'{"msg":' + NESTED + b"}", b"x"])
        replies.append(s.zmq_socket.recv())
        replies.append(s.send_jpg("cam", np.frombuffer(b"\xff\xd8\xff\xe0garbage", np.uint8)))  # not a JPEG
        replies.append(s.send_image("cam", img))
        s.close()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        info = src.open()
        t.join(10)
        assert (info.video.width, info.video.height) == (W, H)
    finally:
        src.close()
    assert replies == [b"OK"] * 5
    snap = board.snapshot()["cam"]  # empty: size; not a JPEG/PNG/BMP: field; nested: json
    assert snap["bad_messages:size"] == 1 and snap["bad_messages:field"] == 1 and snap["bad_messages:json"] == 2, snap


def test_netgear_receiver_counts_nested_headers_and_empty_jpegs() -> None:
    port = _port()
    board = Board(["ng"])
    src = peer.PeerSource(f"netgear+rep://127.0.0.1:{port}", stream_id="ng", counters=board.counters())
    img = _bgr()
    ok, jpg = cv2.imencode(".jpg", img)
    hdr = {"terminate_flag": False, "compression": ".jpg", "message": None, "pattern": "1", "dtype": "uint8", "shape": list(img.shape)}
    replies: list[bytes] = []

    def sender() -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.REQ)
        s.connect(f"tcp://127.0.0.1:{port}")
        for parts in (
            [json.dumps(hdr).encode(), b""],  # empty JPEG with compression on
            [NESTED, b"x"],
            [json.dumps({**hdr, "message": "M"}).encode().replace(b'"M"', NESTED), jpg.tobytes()],
            [json.dumps(hdr).encode(), jpg.tobytes()],
        ):
            s.send_multipart(parts)
            replies.append(s.recv())
        s.send(json.dumps({"terminate_flag": True}).encode())
        replies.append(s.recv())
        s.close(0)
        ctx.term()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        src.open()
        rest = list(src)
        t.join(10)
    finally:
        src.close()
    assert len(rest) == 1 and replies == [b"ok"] * 5  # the one good picture (iteration yields the first too)
    snap = board.snapshot()["ng"]
    assert snap["bad_messages:size"] == 1 and snap["bad_messages:json"] == 2, snap


# --------------------------------------------------------------------------- process with every source kind (defects 6, 11)


PEER_KINDS = ["imagezmq+rep", "imagezmq+sub", "netgear+rep", "netgear+sub"]


def _peer_sender(kind: str, port: int, stop: threading.Event) -> threading.Thread:
    """Pictures through ``kind``'s real wire: good ones, one of another size and one malformed per round."""
    good, small = _bgr(), _bgr(32, 24)

    def netgear(img: np.ndarray) -> list[bytes]:
        h = {"terminate_flag": False, "compression": False, "message": None, "pattern": "1", "dtype": "uint8", "shape": list(img.shape)}
        return [json.dumps(h).encode(), np.ascontiguousarray(img).tobytes()]

    def run() -> None:
        rep = kind.endswith("+rep")
        if kind.startswith("imagezmq"):
            import imagezmq

            sender = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}", REQ_REP=rep)  # +sub: the sender's PUB binds
            sock = sender.zmq_socket
            msgs = [[b'{"msg":"cam","dtype":"uint8","shape":[48,64,3]}', good.tobytes()], [b'{"msg":"cam","dtype":"uint8","shape":[24,32,3]}', small.tobytes()], [NESTED, b"x"]]
        else:
            ctx = zmq.Context.instance()
            sock = ctx.socket(zmq.REQ if rep else zmq.PUB)
            sock.connect(f"tcp://127.0.0.1:{port}")  # NetGear senders connect; the receiver binds
            msgs = [netgear(good), netgear(small), [NESTED, b"x"]]
        sock.RCVTIMEO = 2000
        try:
            k = 0
            while not stop.is_set():
                sock.send_multipart(msgs[k % 3])
                k += 1
                if rep:
                    sock.recv()
                time.sleep(0.01)
        except zmq.ZMQError:
            pass  # the receiver went away
        finally:
            sock.close(linger=0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_process_with_each_peer_source_kind(tmp_path: Path, kind: str) -> None:
    """``process imagezmq+.../netgear+...``: no 'PeerSource' has no attribute 'live'; drops and bad messages reach the summary."""
    port = _port()
    src, out = f"{kind}://127.0.0.1:{port}", tmp_path / "out.mkv"
    plan = plan_from_stream_config(stream_config(src, str(out), overrides={"effect": {"kind": "fill"}}))
    stop = threading.Event()
    t = _peer_sender(kind, port, stop)
    try:
        report = run_process(src, str(out), plan, segmenter=Nobody(), progress=False, max_frames=6)
    finally:
        stop.set()
        t.join(10)
    assert report.info is not None and report.info.live
    assert report.frames_out >= 1 and report.frames_in >= 6
    # pictures of another size are dropped by the source: counted in the summary's dropped count
    assert report.frames_dropped >= 4 and report.bad_messages >= 4, report
    assert len(read_video(out)[0]) == report.frames_out


def test_process_counts_zmq_source_drops_in_the_summary(tmp_path: Path) -> None:
    """Frames of another upstream stream or another size, dropped by a ``zmq+pull`` source, are in ``frames_dropped``."""
    ep = f"ipc://{tmp_path}/in.sock"
    src, out = f"zmq+pull://{ep}", tmp_path / "out.mkv"
    plan = plan_from_stream_config(stream_config(src, str(out), overrides={"effect": {"kind": "fill"}, "output": {"audio": "drop"}}))
    others = [P.frame_parts(frame(k, stream="other")) for k in range(5)] + [P.frame_parts(frame(k, w=32, h=24)) for k in range(3)]
    done = threading.Event()
    t = _producer(ep, others, n_valid=6, gap=2, done=done)
    try:
        report = run_process(src, str(out), plan, segmenter=Nobody(), progress=False)
    finally:
        done.set()
        t.join(10)
    assert report.frames_out == 6 and report.frames_dropped == 8 and report.bad_messages == 0, report


# --------------------------------------------------------------------------- size bounds before allocation (defect 5)


def _png_bomb(w: int, h: int) -> bytes:
    """A real, valid 8-bit grey PNG of w x h zeros: a few hundred KB that decode to w*h bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = bytes(w + 1)  # filter byte 0 + w zero pixels
    body = b"".join(z.compress(row * 500) for _ in range(h // 500)) + z.compress(row * (h % 500)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_picture_size_is_read_from_the_header() -> None:
    img = _bgr(53, 37)
    for ext, fmt in ((".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp")):
        assert peer.picture_size(cv2.imencode(ext, img)[1]) == (fmt, 53, 37)
    assert peer.picture_size(_png_bomb(9000, 9000)) == ("png", 9000, 9000)
    assert peer.picture_size(b"\xff\xd8\xff\xe0garbage") is None and peer.picture_size(b"GIF89a") is None


def test_imagezmq_png_declaring_a_huge_picture_is_refused_before_decoding() -> None:
    """A ~80 KB PNG declaring 9000x9000 (81 Mpixel, above the 8K bound) is counted, not decoded; the stream takes the next picture."""
    import imagezmq

    bomb = _png_bomb(9000, 9000)
    assert len(bomb) < 300_000
    port = _port()
    board = Board(["cam"])
    src = peer.PeerSource(f"imagezmq+rep://127.0.0.1:{port}", stream_id="cam", counters=board.counters())
    replies: list[bytes] = []

    def sender() -> None:
        s = imagezmq.ImageSender(connect_to=f"tcp://127.0.0.1:{port}")
        replies.append(s.send_jpg("cam", np.frombuffer(bomb, np.uint8)))
        replies.append(s.send_image("cam", _bgr()))
        s.close()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        info = src.open()
        assert src._sock is not None
        max_msg = src._sock.getsockopt(zmq.MAXMSGSIZE)
        t.join(10)
    finally:
        src.close()
    assert (info.video.width, info.video.height) == (W, H) and replies == [b"OK"] * 2
    assert board.value("cam", "bad_messages:size") == 1
    assert max_msg == 4 * 7680 * 4320  # peers: a raw BGRA picture of the largest legal size


def test_receivers_set_maxmsgsize_from_the_largest_legal_frame(tmp_path: Path) -> None:
    """ZMQ_MAXMSGSIZE is set on zmq+ and peer sources; a part above it never reaches the application."""
    assert P.max_message_bytes() == 2 * 7680 * 4320 and P.max_message_bytes(peer=True) == 4 * 7680 * 4320
    from privacy_filter.io.zmq_native import ZmqSource

    ep = f"ipc://{tmp_path}/in.sock"
    src = ZmqSource(f"zmq+pull://{ep}", stream_id="up", max_pixels=W * H, open_timeout_s=20)
    done = threading.Event()

    def run() -> None:
        ctx = zmq.Context()
        s = P.socket(ctx, zmq.PUSH, ep, bind=False, hwm=100, linger_ms=10_000)
        P.send(s, P.frame_parts(frame(0, w=640, h=480)))  # Y plane 307,200 bytes > 2 * 64 * 48
        time.sleep(1.0)  # ZeroMQ dropped that connection; the PUSH reconnects
        P.send(s, stream_start())
        for k in range(3):
            P.send(s, P.frame_parts(frame(k)))
        P.send(s, P.eos_parts("up", frames=3))
        done.wait(30)
        s.close()
        ctx.term()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        info = src.open()
        assert src._rx is not None and src._rx.sock.getsockopt(zmq.MAXMSGSIZE) == P.max_message_bytes(W * H)
        got = [f.index for f in src if isinstance(f, YuvFrame)]
    finally:
        done.set()
        src.close()
        t.join(10)
    assert (info.video.width, info.video.height) == (W, H) and got == [0, 1, 2]
    default = peer.PeerSource("imagezmq+rep://127.0.0.1:1", stream_id="x")
    assert default.max_pixels == P.MAX_PICTURE_PIXELS
