#!/usr/bin/env python3
"""Put privacy-filter into an existing ZeroMQ pipeline: send frames in, get filtered frames + masks back.

Three parts, each what a real deployment runs as its own process:

* **producer** - your pipeline's decoder.  It sends each picture as one native protocol message
  (``privacy_filter.wire.frame_parts``: a JSON header + the Y, U, V planes, zero-copy) on a
  PUSH socket, after a stream-start and before an end-of-stream message.
* **privacy-filter** - the product itself, no code of yours::

      privacy-filter process zmq+pull://ipc:///tmp/to-stage zmq+push://ipc:///tmp/from-stage --preset cctv

  It binds the PULL socket, segments each frame, applies the effect in place, and sends the
  frame on with its mask (255 = covered) as a fifth part, then the end-of-stream.  Seq, pts,
  time base and your ``meta`` pass through untouched.  ``privacy-filter run`` does the same for
  a stream whose ``source``/``output`` are such URLs (docs/service.md).
* **consumer** - your pipeline's next step.  A ``Receiver`` validates every message (bad ones are
  counted and dropped, never crash it) and hands out ``YuvFrame`` views on the received buffers.

Run (any video file; the default model is fetched once from PyPI on first use)::

    python examples/zmq_stage_client.py ../shared/data/videos/one-by-one-person-detection.mp4 \
        --skip 600 --frames 30 --out masked.png

Sockets follow the project rule: the receiving side of each PUSH/PULL hop binds, senders
connect; PUSH/PULL gives backpressure, so a slow stage slows the producer instead of losing frames.
Across hosts use ``tcp://host:port`` endpoints instead of ``ipc://`` (docs/protocol.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import zmq

from privacy_filter.frames import YuvFrame
from privacy_filter.io.av_source import Decoder
from privacy_filter.wire import Receiver, eos_parts, frame_parts, send, socket, stream_start_parts

STREAM = "cam1"


def producer(ctx: zmq.Context, endpoint: str, video: str, max_frames: int, skip: int = 0) -> int:
    """Decode ``video`` and push up to ``max_frames`` frames (after ``skip``) into the stage; returns how many were sent."""
    push = socket(ctx, zmq.PUSH, endpoint, bind=False, linger_ms=10_000)
    sent = 0
    with Decoder(video, stream_id=STREAM, audio=False) as dec:
        v = dec.open().video
        send(
            push,
            stream_start_parts(
                STREAM,
                video={
                    "width": v.width,
                    "height": v.height,
                    "rate": [v.rate.numerator, v.rate.denominator] if v.rate else None,
                    "time_base": [v.time_base.numerator, v.time_base.denominator],
                },
            ),
        )
        for item in dec:
            if not isinstance(item, YuvFrame) or item.index < skip:
                continue
            item.metadata["source"] = Path(video).name  # your own data rides along untouched
            send(push, frame_parts(item, seq=sent))
            sent += 1
            if sent >= max_frames:
                break
    send(push, eos_parts(STREAM, frames=sent))
    push.close()
    return sent


def privacy_filter(endpoint_in: str, endpoint_out: str, model: str | None) -> subprocess.Popen:
    """The product as one pipeline stage: ``privacy-filter process zmq+pull://IN zmq+push://OUT``."""
    cmd = [sys.executable, "-m", "privacy_filter.cli", "process", f"zmq+pull://{endpoint_in}", f"zmq+push://{endpoint_out}", "--preset", "cctv", "--no-progress"]
    if model:
        cmd += ["--model", model]
    return subprocess.Popen(cmd)


def consumer(ctx: zmq.Context, endpoint: str, out_png: Path | None) -> dict[str, float]:
    """Your next pipeline step: read filtered frames and their masks until end of stream."""
    rx = Receiver(socket(ctx, zmq.PULL, endpoint, bind=True))
    frames, covered = 0, []
    while True:
        msg = rx.recv(timeout_ms=120_000)
        if msg is None:
            raise TimeoutError("no message from the stage for 2 minutes")
        if msg.kind == "eos":
            break
        if msg.kind != "frame" or msg.frame is None:
            continue
        frames += 1
        if msg.mask is not None:
            covered.append(float((msg.mask > 0).mean()))
            if out_png is not None and covered[-1] == max(covered):
                write_png(out_png, msg.frame, msg.mask)
    rx.sock.close()
    return {"frames": frames, "with_mask": len(covered), "max_covered": max(covered, default=0.0), "bad_messages": sum(rx.bad.values())}


def write_png(path: Path, frame: YuvFrame, mask: np.ndarray) -> None:
    """Filtered picture beside its mask (for looking at; RGB is made only here, at the edge)."""
    import cv2

    i420 = np.concatenate([np.ascontiguousarray(frame.y), np.ascontiguousarray(frame.u).reshape(-1, frame.width), np.ascontiguousarray(frame.v).reshape(-1, frame.width)])
    bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    cv2.imwrite(str(path), np.hstack([bgr, cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", help="any video file PyAV can decode (even width and height)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--skip", type=int, default=0, help="skip this many frames first")
    ap.add_argument("--model", default=None, help="model name or path (default: the embedded selfie model)")
    ap.add_argument("--out", type=Path, default=None, help="PNG of the most-covered filtered frame beside its mask")
    args = ap.parse_args()

    ctx = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        to_stage, from_stage = f"ipc://{tmp}/to-stage", f"ipc://{tmp}/from-stage"
        result: dict[str, dict[str, float]] = {}
        t_consumer = threading.Thread(target=lambda: result.update(out=consumer(ctx, from_stage, args.out)))
        t_consumer.start()
        stage = privacy_filter(to_stage, from_stage, args.model)
        sent = producer(ctx, to_stage, args.video, args.frames, args.skip)
        t_consumer.join()
        if stage.wait(timeout=60) != 0:
            raise SystemExit(f"privacy-filter exited with {stage.returncode}")
    ctx.term()
    out = result["out"]
    print(
        f"sent {sent} frames, received {int(out['frames'])} filtered frames, {int(out['with_mask'])} with masks; "
        f"largest covered share {out['max_covered']:.1%}; bad messages {int(out['bad_messages'])}"
    )
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
