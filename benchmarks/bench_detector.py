"""Person detector cost per frame at each offered input size, on a 1080p I420 frame.

One ``det.detect_yuv(frames)`` call per measurement, preprocessing from I420 included (planes
shrunk to the detector size, YUV→BGR + normalisation at that size), ONNX Runtime, GFL decoding
and NMS.  The frame is a real CCTV picture (TUD-Campus frame 35, scaled to 1920x1080 and
converted to I420 as a decoder gives it).  Rows: long side 320/416/512/640 with one frame per
call, and with a batch of 4 frames (ms per frame), as several streams' frames are batched; each
in float and as the CPU's INT8 copy (``detector.precision``; ``--precisions`` picks).

Rounds are interleaved (every row once per round) so load from other processes hits all rows
alike; medians and p90 are reported with the load average.

    python benchmarks/bench_detector.py [--model nanodet|PATH.onnx] [--rounds 9] [--threads N]
        [--precisions fp32 int8] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from privacy_filter.backends import create_detector  # noqa: E402
from privacy_filter.frames import YuvFrame  # noqa: E402

SIZES = (320, 416, 512, 640)
DATA = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared")) / "data"


def frame_1080p() -> YuvFrame:
    cap = cv2.VideoCapture(str(DATA / "cctv" / "tud_campus" / "video.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 35)
    ok, bgr = cap.read()
    if not ok:
        raise SystemExit(f"cannot read {DATA / 'cctv' / 'tud_campus' / 'video.mp4'} (set PRIVACY_FILTER_SHARED)")
    bgr = cv2.resize(bgr, (1920, 1080), interpolation=cv2.INTER_LINEAR)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    rest = yuv[1080:].reshape(-1)
    q = 540 * 960
    return YuvFrame(yuv[:1080].copy(), rest[:q].reshape(540, 960).copy(), rest[q:].reshape(540, 960).copy())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="nanodet")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: physical cores)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()

    frame = frame_1080p()
    rows = [(p, L, b) for p in args.precisions for L in SIZES for b in (1, 4)]
    # max_batch=b: the batch rows are one ONNX Runtime run of b pictures (the CPU default runs one
    # picture per call, engines.detector.CPU_MAX_BATCH); the batch-1 rows are the product's setting.
    dets = {(p, L, b): create_detector(args.model, "cpu", long_side=L, threads=args.threads, max_batch=b, precision=p) for p, L, b in rows}
    found = {}
    for p, L, b in rows:  # warm-up: ORT plans each shape on its first run
        found[(p, L)] = len(dets[(p, L, b)].detect_yuv([frame] * b)[0])
    times: dict[tuple[str, int, int], list[float]] = {r: [] for r in rows}
    for _ in range(args.rounds):
        for p, L, b in rows:
            t0 = time.perf_counter()
            dets[(p, L, b)].detect_yuv([frame] * b)
            times[(p, L, b)].append(1e3 * (time.perf_counter() - t0) / b)
    result = {
        "frame": "1920x1080 I420 (tud_campus #35 upscaled)",
        "threads": args.threads or "physical cores",
        "rounds": args.rounds,
        "loadavg": os.getloadavg()[0],
        "rows": [
            {
                "precision": p,
                "long_side": L,
                "batch": b,
                "input": "x".join(map(str, _input(L))),
                "people": found[(p, L)],
                "ms_per_frame_median": round(float(np.median(times[(p, L, b)])), 1),
                "ms_per_frame_p90": round(float(np.percentile(times[(p, L, b)], 90)), 1),
            }
            for p, L, b in rows
        ],
    }
    if not args.json_only:
        print(f"{'precision':>9} {'long side':>9} {'input':>9} {'batch':>5} {'people':>6} {'median ms/frame':>16} {'p90':>7}")
        for r in result["rows"]:
            print(f"{r['precision']:>9} {r['long_side']:>9} {r['input']:>9} {r['batch']:>5} {r['people']:>6} {r['ms_per_frame_median']:>16} {r['ms_per_frame_p90']:>7}")
        print(f"load average {result['loadavg']:.2f}")
    print(json.dumps(result))
    return 0


def _input(L: int) -> tuple[int, int]:
    from privacy_filter.engines.detector import input_geometry

    g = input_geometry(1920, 1080, L)
    return g.pad_w, g.pad_h


if __name__ == "__main__":
    sys.exit(main())
