"""Issue 12's fuzz bar, bounded for CI: malformed native messages of every kind, interleaved with
valid frames, into ``privacy-filter process`` with a native ZeroMQ source (a real subprocess, real
ipc sockets).  0 crashes, 0 unfiltered frames, and the counters equal what was sent, kind by kind.

The long run is ``benchmarks/fuzz_native.py`` (>= 20,000 messages).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zmq

from privacy_filter import wire as P
from support import fuzz


def fuzz_process(
    tmp_path: Path, n_bad: int, n_valid: int, kinds: tuple[str, ...] = tuple(fuzz.KINDS)
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Counter[str], dict[str, Any]]:
    proc, ep_in, consumer, got, report = fuzz.start_stage(tmp_path)
    ctx = zmq.Context()
    s = P.socket(ctx, zmq.PUSH, ep_in, bind=False, linger_ms=0)
    s.setsockopt(zmq.SNDTIMEO, 60_000)
    sent: Counter[str] = Counter()
    try:
        for kind, parts in fuzz.stream(n_bad, n_valid, kinds=kinds):
            if proc.poll() is not None:
                break  # it crashed: the assertions below say so
            try:
                s.send_multipart(parts, copy=False)
            except zmq.Again:
                break
            sent[kind] += 1
        # keep the socket open until the process is done: a loaded machine may take longer than any
        # linger to drain what is queued, and a discarded eos would leave it waiting forever
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        s.close(linger=0)
        ctx.term()
    consumer.join(30)
    rep = json.loads(report.read_text()) if report.exists() else {}
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), got, sent, rep


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_thousand_malformed_messages_interleaved_with_frames(tmp_path: Path) -> None:
    r, got, sent, rep = fuzz_process(tmp_path, 2000, 200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    bad_sent = {k: n for k, n in sent.items() if k not in ("start", "frame", "eos")}
    assert sum(bad_sent.values()) == 2000 and sent["frame"] == 200
    # 0 unfiltered: every valid frame came out of the stage, once, in order, with its mask
    assert got.get("frames") == list(range(200)) and got["masked"] == 200
    assert rep["frames_out"] == 200 and rep["frames_passed_unfiltered"] == 0
    # counters equal to what was sent, kind by kind
    assert rep["bad_messages"] == 2000
    assert rep["bad_messages_by_kind"] == bad_sent


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", fuzz.HOSTILE_HEADER_KINDS)
def test_hostile_header_kinds_are_counted_and_dropped(tmp_path: Path, kind: str) -> None:
    r, got, sent, rep = fuzz_process(tmp_path, 20, 10, kinds=(kind,))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert got.get("frames") == list(range(10)) and got["masked"] == 10
    assert rep["bad_messages"] == 20
