"""Malformed messages for the fuzz test and benchmarks/fuzz.py (issue 12's fuzz bar): native protocol, imagezmq and NetGear.

Every generated message is checked against ``wire.decode`` here, so the kind it is counted as
is known before it is sent: the receiver's counters must then equal what was sent, kind by kind.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from privacy_filter import wire as P
from privacy_filter.errors import ProtocolError
from privacy_filter.frames import YuvFrame

STREAM = "fuzz"
TB = Fraction(1, 1000)

#: generator kind -> the bad-message kind a receiver counts it as (None: found by wire.decode)
KINDS: dict[str, str | None] = {
    "parts": "parts",
    "header-size": "header-size",
    "json": "json",
    "version": "version",
    "kind": "kind",
    "field": "field",
    "size": "size",
    "random": None,
}
#: legal-JSON headers that once crashed a receiver or an encoder (issue 12 defects 2-4): nesting, extreme values, version types
HOSTILE_HEADER_KINDS = ("nested-json", "extreme-values", "version-types")


def frame(k: int, width: int = 128, height: int = 96) -> YuvFrame:
    rng = np.random.default_rng(k)
    return YuvFrame(
        rng.integers(16, 235, (height, width), np.uint8),
        rng.integers(16, 240, (height // 2, width // 2), np.uint8),
        rng.integers(16, 240, (height // 2, width // 2), np.uint8),
        pts=10 * k,
        time_base=TB,
        index=k,
        stream_id=STREAM,
    )


def _as_bytes(parts: list[Any]) -> list[bytes]:
    return [bytes(p) if not isinstance(p, bytes) else p for p in parts]


def _header(parts: list[Any]) -> dict[str, Any]:
    return json.loads(bytes(parts[0]))


def _with_header(parts: list[Any], h: dict[str, Any]) -> list[bytes]:
    return [json.dumps(h).encode()] + _as_bytes(parts[1:])


def malformed(kind: str, rng: random.Random, template: list[Any]) -> list[bytes]:
    """One malformed message of ``kind``; ``template`` is a valid frame message to spoil."""
    h = _header(template)
    if kind == "parts":
        return _as_bytes(template[: rng.choice([1, 2, 3])]) if rng.random() < 0.7 else _as_bytes(template) + [b"extra"]
    if kind == "header-size":
        return [b"{" + b" " * (P.MAX_HEADER_BYTES + rng.randint(1, 5000)) + b"}"] + _as_bytes(template[1:])
    if kind == "json":
        return [rng.choice([b"{not json", b'{"v": 1, "kind": "fr', b"[1, 2]", b"null", b"\xff\xfe" + rng.randbytes(rng.randint(0, 300))])] + _as_bytes(template[1:])
    if kind == "version":
        return _with_header(template, {**h, "v": rng.choice([0, 2, 99, "1", None, [1]])})
    if kind == "kind":
        return _with_header(template, {**h, "kind": rng.choice(["bogus", "", 7, None, "FRAME"])})
    if kind == "field":
        key, bad = rng.choice(
            [
                ("width", -5),
                ("height", "x"),
                ("time_base", [0, 1]),
                ("stream", ""),
                ("seq", "7"),
                ("pts", 1.5),
                ("strides", [1]),
                ("has_mask", "yes"),
                ("meta", [1]),
                ("pix_fmt", "rgb24"),
            ]
        )
        return _with_header(template, {**h, key: bad})
    if kind == "size":
        parts = _as_bytes(template)
        i = rng.randint(1, 3)
        parts[i] = parts[i][: -rng.randint(1, 64)] if rng.random() < 0.5 else parts[i] + b"\0" * rng.randint(1, 64)
        return parts
    if kind == "random":
        return [rng.randbytes(rng.randint(0, 2000)) for _ in range(rng.randint(1, 5))]
    if kind == "nested-json":
        depth = rng.randint(1000, 5000)
        return [b'{"v": 1, "kind": "frame", "stream": "fuzz", "meta": ' + b"[" * depth + b"]" * depth + b"}"] + _as_bytes(template[1:])
    if kind == "extreme-values":
        key, bad = rng.choice([("pts", 10**30), ("time_base", [1, 2**62]), ("time_base", [2**40, 1])])
        return _with_header(template, {**h, key: bad, "seq": h["seq"]})
    if kind == "version-types":
        return _with_header(template, {**h, "v": rng.choice([True, 1.0])})
    raise ValueError(kind)


def counted_as(parts: list[bytes]) -> str:
    """The bad-message kind ``wire.decode`` gives ``parts`` (AssertionError if it decodes)."""
    try:
        P.decode(parts)
    except ProtocolError as err:
        return err.kind
    raise AssertionError("the message decodes: not malformed")


def stream(n_bad: int, n_valid: int, *, kinds: tuple[str, ...] = tuple(KINDS), seed: int = 0) -> Iterator[tuple[str, list[Any]]]:
    """("start" | "frame" | <counted kind> | "eos", parts): a stream-start, ``n_valid`` frames with
    ``n_bad`` malformed messages spread between them (kinds in turn), and an eos."""
    rng = random.Random(seed)
    f0 = frame(0)
    yield "start", P.stream_start_parts(STREAM, video={"width": f0.width, "height": f0.height, "time_base": [1, 1000], "rate": [25, 1]})
    template = P.frame_parts(frame(0), seq=0)
    bad_per_frame = n_bad / max(1, n_valid)
    sent_bad = 0
    for k in range(n_valid):
        while sent_bad < round((k + 1) * bad_per_frame):
            g = kinds[sent_bad % len(kinds)]
            parts = malformed(g, rng, template)
            yield (counted_as(parts) if g in KINDS else g), parts
            sent_bad += 1
        yield "frame", P.frame_parts(frame(k), seq=k)
    yield "eos", P.eos_parts(STREAM, frames=n_valid, reason="end")


# --------------------------------------------------------------------------- the stage under fuzz


def consume(endpoint: str, out: dict[str, Any], timeout_ms: int = 120_000) -> None:
    """Bind a PULL at ``endpoint`` and record the frames the stage publishes (seq list, how many
    with a frame-sized mask) until its eos; ``out["timeout"]`` when it went quiet instead."""
    from privacy_filter import wire

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.bind(endpoint)
    frames: list[int] = []
    out["frames"], out["masked"] = frames, 0  # filled as frames arrive: a caller may watch them
    masked = 0
    try:
        while True:
            m = wire.decode(sock.recv_multipart(copy=False))
            if m.kind == "frame":
                assert m.frame is not None
                if m.mask is not None and m.mask.shape == (m.frame.height, m.frame.width):
                    masked += 1
                    out["masked"] = masked
                frames.append(m.seq)
            elif m.kind == "eos":
                break
    except zmq.Again:
        out["timeout"] = True
    finally:
        sock.close(linger=0)
        ctx.term()
    out.update(frames=frames, masked=masked)


def start_stage(folder: Path, timeout_ms: int = 120_000, source: str | None = None) -> tuple[subprocess.Popen[str], str, threading.Thread, dict[str, Any], Path]:
    """``privacy-filter process SOURCE zmq+push://`` (fill effect, --report) with a consumer thread on
    its output: (process, its input endpoint, the consumer, what it records, report path).
    ``source`` defaults to a native ``zmq+pull://`` on an ipc endpoint (returned as the endpoint)."""
    ep_in, ep_out, report = f"ipc://{folder}/in.sock", f"ipc://{folder}/out.sock", folder / "report.json"
    url = source or f"zmq+pull://{ep_in}"
    got: dict[str, Any] = {}
    consumer = threading.Thread(target=consume, args=(ep_out, got, timeout_ms), daemon=True)
    consumer.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "privacy_filter", "process", url, f"zmq+push://{ep_out}", "--effect", "fill", "--no-progress", "--report", str(report)],
        stdout=subprocess.PIPE,
        # a file, not a pipe: libjpeg writes a line per corrupt JPEG to stderr, and a pipe nobody reads
        # until the end fills (64 KB) and blocks the process mid-fuzz
        stderr=(folder / "stderr.txt").open("w"),
        text=True,
    )
    return proc, ep_in, consumer, got, report


def stderr_of(folder: Path) -> str:
    """What the process started by ``start_stage`` in ``folder`` wrote to stderr."""
    return (folder / "stderr.txt").read_text(errors="replace")


# --------------------------------------------------------------------------- imagezmq and NetGear peers

#: the size of every valid peer picture (H, W): the first one fixes the stream's size
PEER_SHAPE = (96, 128, 3)
#: malformed or refused peer messages, in turn (protocol.md, "Foreign senders"); "other-size" is a
#: valid picture of another size, dropped and counted in frames_dropped rather than bad_messages
PEER_KINDS = ("parts", "json", "nested-json", "kind", "field", "size", "empty-jpeg", "png-bomb", "jpeg-bomb", "corrupt-jpeg", "oversized-shape", "random", "other-size")


def _bgr(k: int, shape: tuple[int, ...] = PEER_SHAPE) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 256, shape, np.uint8)


def _png_bomb(width: int, height: int) -> bytes:
    """A small, valid PNG (one zlib stream of zero rows) that declares ``width`` x ``height``: decoded, it would be width*height*3 bytes."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = zlib.compressobj(9)
    raw = b"".join(rows.compress(b"\0" * (1 + 3 * width)) for _ in range(64)) + rows.flush()  # 64 rows suffice for the header check
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int, rng: random.Random) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    import cv2

    ok, enc = cv2.imencode(".jpg", _bgr(rng.randint(0, 10**6), (16, 16, 3)))
    b = bytearray(enc.tobytes())
    i = b.index(b"\xff\xc0")
    b[i + 5 : i + 7], b[i + 7 : i + 9] = height.to_bytes(2, "big"), width.to_bytes(2, "big")
    return bytes(b)


def peer_picture(proto: str, img: np.ndarray, *, jpeg: bool) -> list[bytes]:
    """A valid ``proto`` ("imagezmq" | "netgear") message for ``img``, raw or JPEG, as their senders pack it."""
    import cv2

    payload = cv2.imencode(".jpg", img)[1].tobytes() if jpeg else np.ascontiguousarray(img).tobytes()
    if proto == "imagezmq":  # ImageSender.send_image: {msg, dtype, shape}; send_jpg: {msg}
        h: dict[str, Any] = {"msg": "cam"} if jpeg else {"msg": "cam", "dtype": "uint8", "shape": list(img.shape)}
    else:
        h = {"terminate_flag": False, "compression": ".jpg" if jpeg else False, "message": None, "pattern": "1", "dtype": "uint8", "shape": list(img.shape)}
    return [json.dumps(h).encode(), payload]


def peer_malformed(kind: str, proto: str, rng: random.Random) -> list[bytes]:
    """One bad ``proto`` message of ``kind`` (see PEER_KINDS)."""
    good = peer_picture(proto, _bgr(rng.randint(0, 10**6)), jpeg=rng.random() < 0.5)
    h = json.loads(good[0])
    jpeg_h = {"msg": "cam"} if proto == "imagezmq" else {**h, "compression": ".jpg"}
    if kind == "parts":
        return good[:1] if rng.random() < 0.5 else good + [b"extra"]
    if kind == "json":
        return [rng.choice([b"{not json", b'{"msg": "ca', b"[1, 2]", b"null", b"\xff\xfe" + rng.randbytes(rng.randint(0, 300))]), good[1]]
    if kind == "nested-json":
        depth = rng.randint(1000, 5000)
        return [b'{"msg": ' + b"[" * depth + b"]" * depth + b"}", good[1]]
    if kind == "kind":
        return [json.dumps({"camera": "cam", "shape": [1, 1]} if rng.random() < 0.5 else {}).encode(), good[1]]
    if kind == "field":
        raw = {"msg": "cam"} if proto == "imagezmq" else {**h, "compression": False}
        key, bad = rng.choice([("dtype", "float32"), ("dtype", None), ("shape", [96]), ("shape", [0, 128, 3]), ("shape", "96x128"), ("shape", [96, 128, 3, 1])])
        return [json.dumps({**raw, "dtype": "uint8", "shape": list(PEER_SHAPE), key: bad}).encode(), good[1]]
    if kind == "size":  # a raw array whose bytes do not match its shape
        raw = {"msg": "cam"} if proto == "imagezmq" else {**h, "compression": False}
        payload = _bgr(1).tobytes()
        payload = payload[: -rng.randint(1, 500)] if rng.random() < 0.5 else payload + b"\0" * rng.randint(1, 500)
        return [json.dumps({**raw, "dtype": "uint8", "shape": list(PEER_SHAPE)}).encode(), payload]
    if kind == "empty-jpeg":
        return [json.dumps(jpeg_h).encode(), b""]
    if kind == "png-bomb":  # decompression bomb: ~2 KB that would decode to 16000 x 16000 x 3 = 768 MB
        return [json.dumps(jpeg_h).encode(), _png_bomb(16000, 16000)]
    if kind == "jpeg-bomb":
        return [json.dumps(jpeg_h).encode(), _jpeg_declaring(rng.choice([20000, 65000]), rng.choice([20000, 65000]), rng)]
    if kind == "corrupt-jpeg":  # a readable size, then garbage where the picture should be
        head = _jpeg_declaring(128, 96, rng)
        return [json.dumps(jpeg_h).encode(), head[: head.index(b"\xff\xda")] + rng.randbytes(rng.randint(10, 2000))]
    if kind == "oversized-shape":  # a raw array that declares more than the pixel limit (nothing is allocated)
        raw = {"msg": "cam"} if proto == "imagezmq" else {**h, "compression": False}
        return [json.dumps({**raw, "dtype": "uint8", "shape": [16000, 16000, 3]}).encode(), b"\0" * rng.randint(0, 4096)]
    if kind == "random":
        return [rng.randbytes(rng.randint(0, 2000)) for _ in range(rng.choice([1, 2, 2, 3]))]
    if kind == "other-size":
        return peer_picture(proto, _bgr(rng.randint(0, 10**6), (48, 64, 3)), jpeg=False)
    raise ValueError(kind)


def peer_counted_as(parts: list[bytes]) -> str:
    """How a peer source counts ``parts``: a bad-message kind from ``decode_foreign``, or
    "frames_dropped" for a valid picture of another size than PEER_SHAPE."""
    from privacy_filter.io.peer import decode_foreign

    try:
        m = decode_foreign(parts, stream_id="x", seq=0, pts=0, time_base=TB)
    except ProtocolError as err:
        return err.kind
    assert m.frame is not None and (m.frame.height, m.frame.width) != PEER_SHAPE[:2], "the message decodes to a valid picture: not malformed"
    return "frames_dropped"


def peer_stream(proto: str, n_bad: int, n_valid: int, *, seed: int = 0, kinds: tuple[str, ...] = PEER_KINDS) -> Iterator[tuple[str, list[bytes]]]:
    """("frame" | <counted kind> | "frames_dropped", parts): ``n_valid`` pictures (raw and JPEG in
    turn) with ``n_bad`` bad messages spread between them (kinds in turn)."""
    rng = random.Random(seed)
    per_frame = n_bad / max(1, n_valid)
    sent_bad = 0
    for k in range(n_valid):
        yield "frame", peer_picture(proto, _bgr(k), jpeg=bool(k % 2))
        while sent_bad < round((k + 1) * per_frame):
            parts = peer_malformed(kinds[sent_bad % len(kinds)], proto, rng)
            yield peer_counted_as(parts), parts
            sent_bad += 1


# --------------------------------------------------------------------------- the runs (the CI test and benchmarks/fuzz.py)


def run_native(
    folder: Path, n_bad: int, n_valid: int, kinds: tuple[str, ...] = tuple(KINDS), *, seed: int = 0, sample: Callable[[int, int], None] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Counter[str], dict[str, Any]]:
    """Native messages (``stream``) into ``process zmq+pull://``; ``sample(pid, i)`` every 500 messages (RSS)."""
    proc, ep_in, consumer, got, report = start_stage(folder, timeout_ms=300_000)
    ctx = zmq.Context()
    s = P.socket(ctx, zmq.PUSH, ep_in, bind=False, linger_ms=0)
    s.setsockopt(zmq.SNDTIMEO, 60_000)
    sent: Counter[str] = Counter()
    try:
        for i, (kind, parts) in enumerate(stream(n_bad, n_valid, kinds=kinds, seed=seed)):
            if sample is not None and i % 500 == 0:
                sample(proc.pid, i)
            if proc.poll() is not None:
                break  # it crashed: the assertions below say so
            try:
                s.send_multipart(parts, copy=False)
            except zmq.Again:
                break
            sent[kind] += 1
        # keep the socket open until the process is done: a loaded machine may take longer than any
        # linger to drain what is queued, and a discarded eos would leave it waiting forever
        out, _ = proc.communicate(timeout=600)
    finally:
        _close(proc, s, ctx)
    return _result(proc, out, folder, consumer, report), got, sent, _report(report)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_peer(
    folder: Path, proto: str, n_bad: int, n_valid: int, *, seed: int = 0, pace_s: float = 0.004, sample: Callable[[int, int], None] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Counter[str], dict[str, Any]]:
    """Bad and valid ``proto`` messages from a REQ sender into ``process {proto}+rep://`` (the
    hub answers each message, so nothing is lost in transit and every one is counted).

    NetGear ends the stream with its terminate message; imagezmq has no end-of-stream, so the run
    is stopped with SIGINT, as a user stops a live source, once its output has gone quiet."""
    port = _free_port()
    proc, _, consumer, got, report = start_stage(folder, source=f"{proto}+rep://127.0.0.1:{port}", timeout_ms=300_000)
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 30_000)
    s.connect(f"tcp://127.0.0.1:{port}")
    sent: Counter[str] = Counter()
    try:
        for i, (kind, parts) in enumerate(peer_stream(proto, n_bad, n_valid, seed=seed)):
            if sample is not None and i % 500 == 0:
                sample(proc.pid, i)
            if proc.poll() is not None:
                break  # it crashed: the assertions below say so
            s.send_multipart(parts)
            try:
                s.recv()  # the hub's reply: "OK" / "ok"
            except zmq.Again:
                break
            sent[kind] += 1
            if kind == "frame":
                time.sleep(pace_s)  # a camera's pace, not a flood of pictures (bad messages come as fast as they can)
        if proto == "netgear":
            s.send(json.dumps({"terminate_flag": True}).encode())
            s.recv()
        else:
            quiet, last = time.monotonic(), -1
            while time.monotonic() - quiet < 2.0 and proc.poll() is None:
                if len(got.get("frames") or []) != last:
                    quiet, last = time.monotonic(), len(got.get("frames") or [])
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=600)
    finally:
        _close(proc, s, ctx)
    return _result(proc, out, folder, consumer, report), got, sent, _report(report)


def _close(proc: subprocess.Popen[str], sock: zmq.Socket, ctx: zmq.Context) -> None:
    if proc.poll() is None:
        proc.kill()
    sock.close(linger=0)
    ctx.term()


def _result(proc: subprocess.Popen[str], out: str, folder: Path, consumer: threading.Thread, report: Path) -> subprocess.CompletedProcess[str]:
    consumer.join(30)  # it has the stage's eos, or times out
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, stderr_of(folder))


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
