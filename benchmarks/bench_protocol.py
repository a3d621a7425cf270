"""Cost of one ZeroMQ hop for a 1080p I420 frame (docs/protocol.md), between two processes.

What is timed: process A sends a frame with ``protocol.frame_parts`` (zero-copy, the
planes of a real PyAV picture with its padded line size); process B receives it,
validates it and builds the ``YuvFrame`` views (``protocol.decode``), then forwards the
very same message back, as the stage forwards frames.  Hop = round trip / 2, so each
hop includes one full validation + view construction.

Configs, interleaved round by round so machine load hits all alike:

* ``ipc-zero-copy``: the protocol as the service uses it (ipc://, copy=False);
* ``ipc-copy``: the same message with pyzmq ``copy=True`` (one extra copy per side);
* ``tcp-zero-copy``: tcp:// on loopback (roles on several hosts use tcp);
* baseline ``memcpy``: copying the three planes once in one process (np.copyto), the floor
  for moving 3.1 MB.

Also a streaming throughput figure (frames/s one way, HWM 4, as a file stream runs).

    python benchmarks/bench_protocol.py [--rounds 60] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

import av
import numpy as np
import zmq

from privacy_filter import wire as P
from privacy_filter.io.av_source import to_yuv_frame

W, H = 1920, 1080


def _frame() -> Any:
    rng = np.random.default_rng(0)
    f = av.VideoFrame(W, H, "yuv420p")
    for p in f.planes:
        np.frombuffer(p, np.uint8)[:] = rng.integers(0, 256, p.buffer_size, dtype=np.uint8)
    f.pts = 0
    from fractions import Fraction

    return to_yuv_frame(f, 0, "bench", 0, Fraction(1, 90000))


def _sink(ep: str, n: int) -> None:
    ctx = zmq.Context()
    rx = P.socket(ctx, zmq.PULL, ep + "-s", bind=False, hwm=4)
    r = P.Receiver(rx)
    for _ in range(n):
        r.recv()
    tx = P.socket(ctx, zmq.PUSH, ep + "-done", bind=False, hwm=4)
    tx.send(b"done")
    tx.close(1000)
    rx.close(0)
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--json-only", action="store_true")
    a = ap.parse_args()
    frame = _frame()
    parts = P.frame_parts(frame)
    nbytes = sum(memoryview(p).nbytes for p in parts[1:])
    ctx = zmq.Context()
    mpc = mp.get_context("forkserver")
    d = tempfile.mkdtemp(prefix="pf-bench-")
    configs = {"ipc-zero-copy": ("ipc", False), "ipc-copy": ("ipc", True), "tcp-zero-copy": ("tcp", False)}
    socks: dict[str, Any] = {}
    procs = []
    for i, (name, (kind, copy)) in enumerate(configs.items()):
        if kind == "tcp":
            ep = f"tcp://127.0.0.1:{27500 + 10 * i}"
            a_ep, b_ep = ep, f"tcp://127.0.0.1:{27500 + 10 * i + 1}"
        else:
            a_ep, b_ep = f"ipc://{d}/{name}-a", f"ipc://{d}/{name}-b"
        tx = P.socket(ctx, zmq.PUSH, a_ep, bind=True, hwm=4)
        rx = P.socket(ctx, zmq.PULL, b_ep, bind=True, hwm=4)
        p = mpc.Process(target=_echo_pair, args=(a_ep, b_ep, copy, a.rounds + 5))
        p.start()
        procs.append(p)
        socks[name] = (tx, rx, copy)
    # warm up
    for name, (tx, rx, copy) in socks.items():
        for _ in range(5):
            tx.send_multipart(parts, copy=copy)
            P.decode(rx.recv_multipart(copy=copy))
    times: dict[str, list[float]] = {k: [] for k in socks}
    times["memcpy"] = []
    dst = [np.empty_like(np.ascontiguousarray(p)) for p in frame.planes]
    for _ in range(a.rounds):
        for name, (tx, rx, copy) in socks.items():
            t0 = time.perf_counter()
            tx.send_multipart(P.frame_parts(frame), copy=copy)
            m = P.decode(rx.recv_multipart(copy=copy))
            times[name].append((time.perf_counter() - t0) / 2 * 1000)
            assert m.frame is not None and m.frame.width == W
        t0 = time.perf_counter()
        for s, t in zip(frame.planes, dst):
            np.copyto(t, s)
        times["memcpy"].append((time.perf_counter() - t0) * 1000)
    for p in procs:
        p.join(10)
    # streaming throughput, one way, ipc, HWM 4
    n = max(60, a.rounds)
    s_ep = f"ipc://{d}/stream"
    sink_rx_done = P.socket(ctx, zmq.PULL, s_ep + "-done", bind=True, hwm=4)
    s_tx = P.socket(ctx, zmq.PUSH, s_ep + "-s", bind=True, hwm=4)
    sp = mpc.Process(target=_sink, args=(s_ep, n))
    sp.start()
    t0 = time.perf_counter()
    for _ in range(n):
        P.send(s_tx, P.frame_parts(frame))
    sink_rx_done.recv()
    fps = n / (time.perf_counter() - t0)
    sp.join(10)
    res = {
        "frame": f"{W}x{H} yuv420p",
        "bytes": nbytes,
        "rounds": a.rounds,
        "loadavg": os.getloadavg(),
        "hop_ms_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "hop_ms_p90": {k: round(sorted(v)[int(0.9 * (len(v) - 1))], 3) for k, v in times.items()},
        "stream_fps_ipc": round(fps, 1),
    }
    mc = res["hop_ms_median"]["memcpy"]
    res["ratio_vs_memcpy"] = {k: round(v / mc, 2) for k, v in res["hop_ms_median"].items()}
    print(json.dumps(res))
    if not a.json_only:
        print(f"\n1080p I420 frame ({nbytes / 1e6:.2f} MB), {a.rounds} rounds, load {res['loadavg'][0]:.1f}")
        print(f"{'config':<16}{'median ms':>11}{'p90 ms':>9}{'x memcpy':>10}")
        for k in times:
            print(f"{k:<16}{res['hop_ms_median'][k]:>11.3f}{res['hop_ms_p90'][k]:>9.3f}{res['ratio_vs_memcpy'][k]:>10.2f}")
        print(f"streaming over ipc (HWM 4): {fps:.0f} frames/s one way")


def _echo_pair(a_ep: str, b_ep: str, copy: bool, n: int) -> None:
    ctx = zmq.Context()
    rx = P.socket(ctx, zmq.PULL, a_ep, bind=False, hwm=4)
    tx = P.socket(ctx, zmq.PUSH, b_ep, bind=False, hwm=4)
    for _ in range(n):
        if not rx.poll(20000):
            break
        m = P.decode(rx.recv_multipart(copy=copy))
        tx.send_multipart(list(m.parts), copy=copy)
    rx.close(0)
    tx.close(1000)
    ctx.term()


if __name__ == "__main__":
    main()
