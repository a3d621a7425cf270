"""Frames/s through privacy-filter used as a ZeroMQ pipeline stage, on 640x360 real frames.

What is timed (per round, interleaved so that machine load hits every config alike):

* ``process zmq->zmq``: ``privacy-filter process zmq+pull://IN zmq+push://OUT`` in its own
  process; a producer thread pushes N native frames (backpressure, HWM 4), a consumer
  thread receives them with their masks.  Time runs from the first filtered frame received
  to the eos, so model loading and process start are excluded; fps = (N - 1) / that time.
* baseline ``in-process stage``: the same frames through ``FilterStage.process`` in one
  thread, no ZeroMQ, no threads (what a hand-wired stage does), same model and effect.

Frames: 30 distinct frames of one-by-one-person-detection.mp4 from 10 s (a person in view),
scaled to 640x360, cycled to N with increasing seq/pts.

    python benchmarks/bench_zmq_stage.py [--frames 150] [--rounds 3] [--effect pixelate] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import zmq

from privacy_filter import wire as P
from privacy_filter.frames import YuvFrame, plane_view

W, H = 640, 360
TB = Fraction(1, 10)
VIDEO = Path(os.environ.get("PRIVACY_FILTER_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data/videos/one-by-one-person-detection.mp4"


def load_frames(n_distinct: int = 30) -> list[YuvFrame]:
    out: list[YuvFrame] = []
    with av.open(str(VIDEO)) as c:
        for f in c.decode(video=0):
            if f.time < 10.0:
                continue
            g = f.reformat(width=W, height=H, format="yuv420p")
            y, u, v = (plane_view(p).copy() for p in g.planes[:3])
            out.append(YuvFrame(y, u, v, pts=len(out), time_base=TB, index=len(out), stream_id="bench"))
            if len(out) == n_distinct:
                break
    return out


def _frame(frames: list[YuvFrame], k: int) -> YuvFrame:
    f = frames[k % len(frames)].copy()  # a fresh buffer per message: the stage draws in place
    f.index, f.pts, f.metadata = k, k, {"k": k}
    return f


def run_zmq_stage(frames: list[YuvFrame], n: int, effect: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ep_in, ep_out = f"ipc://{tmp}/in", f"ipc://{tmp}/out"
        ctx = zmq.Context()
        rx = P.Receiver(P.socket(ctx, zmq.PULL, ep_out, bind=True))
        proc = subprocess.Popen(
            [sys.executable, "-m", "privacy_filter.cli", "process", f"zmq+pull://{ep_in}", f"zmq+push://{ep_out}", "--effect", effect, "--no-progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def produce() -> None:
            s = P.socket(ctx, zmq.PUSH, ep_in, bind=False, linger_ms=10_000)
            P.send(s, P.stream_start_parts("bench", video={"width": W, "height": H, "time_base": [1, 10], "rate": [10, 1]}))
            for k in range(n):
                P.send(s, P.frame_parts(_frame(frames, k)))
            P.send(s, P.eos_parts("bench", frames=n))
            s.close()

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        got, t_first, masks = 0, 0.0, 0
        while True:
            m = rx.recv(timeout_ms=120_000)
            if m is None:
                raise RuntimeError("no message for 120 s: " + proc.stderr.read()[-2000:] if proc.stderr else "")
            if m.kind == "frame":
                got += 1
                masks += m.mask is not None
                if got == 1:
                    t_first = time.perf_counter()
            elif m.kind == "eos":
                t_end = time.perf_counter()
                break
        t.join()
        proc.wait(60)
        rx.sock.close(linger=0)
        ctx.term()
    if got != n or masks != n:
        raise RuntimeError(f"received {got} frames ({masks} with masks) of {n}")
    return {"fps": (n - 1) / (t_end - t_first)}


def run_in_process(frames: list[YuvFrame], n: int, effect: str, stage: Any) -> dict[str, float]:
    todo = [_frame(frames, k) for k in range(n)]
    t0 = time.perf_counter()
    for f in todo:
        stage.process([f])
    return {"fps": n / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--effect", default="pixelate")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()

    import cv2

    from privacy_filter.backends import create_segmenter
    from privacy_filter.config import EffectConfig
    from privacy_filter.stage import FilterStage, StageStream

    cv2.setNumThreads(1)  # as the CLI does
    frames = load_frames()
    stage = FilterStage(create_segmenter(None, "cpu", None, threads=1), {"bench": StageStream(effect=EffectConfig(kind=args.effect))})
    res: dict[str, list[float]] = {"process zmq->zmq": [], "in-process stage (baseline)": []}
    for _ in range(args.rounds):
        res["process zmq->zmq"].append(run_zmq_stage(frames, args.frames, args.effect)["fps"])
        res["in-process stage (baseline)"].append(run_in_process(frames, args.frames, args.effect, stage)["fps"])
    stage.close()
    base = statistics.median(res["in-process stage (baseline)"])
    out = {
        "size": f"{W}x{H}",
        "frames": args.frames,
        "rounds": args.rounds,
        "effect": args.effect,
        "cpus": os.cpu_count(),
        "configs": {
            k: {"fps_median": round(statistics.median(v), 1), "fps_all": [round(x, 1) for x in v], "ratio_vs_baseline": round(statistics.median(v) / base, 2)}
            for k, v in res.items()
        },
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))
    if not args.json_only:
        print(f"\n{'config':32} {'fps (median)':>12} {'ratio':>7}   all rounds")
        for k, v in out["configs"].items():
            print(f"{k:32} {v['fps_median']:12.1f} {v['ratio_vs_baseline']:7.2f}   {v['fps_all']}")
        print(f"(load average {out['load_avg_1m']} on {out['cpus']} CPUs: the machine is shared; compare ratios)")


if __name__ == "__main__":
    main()
