"""Malformed native-protocol messages for the fuzz test and benchmarks/fuzz_native.py (issue 12's fuzz bar).

Every generated message is checked against ``wire.decode`` here, so the kind it is counted as
is known before it is sent: the receiver's counters must then equal what was sent, kind by kind.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
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
    frames, masked = [], 0
    try:
        while True:
            m = wire.decode(sock.recv_multipart(copy=False))
            if m.kind == "frame":
                assert m.frame is not None
                frames.append(m.seq)
                if m.mask is not None and m.mask.shape == (m.frame.height, m.frame.width):
                    masked += 1
            elif m.kind == "eos":
                break
    except zmq.Again:
        out["timeout"] = True
    finally:
        sock.close(linger=0)
        ctx.term()
    out.update(frames=frames, masked=masked)


def start_stage(folder: Path, timeout_ms: int = 120_000) -> tuple[subprocess.Popen[str], str, threading.Thread, dict[str, Any], Path]:
    """``privacy-filter process zmq+pull:// zmq+push://`` (fill effect, --report) with a consumer
    thread on its output: (process, its input endpoint, the consumer, what it records, report path)."""
    ep_in, ep_out, report = f"ipc://{folder}/in.sock", f"ipc://{folder}/out.sock", folder / "report.json"
    got: dict[str, Any] = {}
    consumer = threading.Thread(target=consume, args=(ep_out, got, timeout_ms), daemon=True)
    consumer.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "privacy_filter", "process", f"zmq+pull://{ep_in}", f"zmq+push://{ep_out}", "--effect", "fill", "--no-progress", "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, ep_in, consumer, got, report
