"""Segmentation cost per frame (preprocessing from I420 included) and, optionally, quality.

Speed (default): one call of ``seg.infer_yuv([frame])`` on a real picture (people_pseudo/1.jpg
scaled to 1920x1080 and converted to I420, planes as a decoder gives them): shrink Y/U/V to the
model size, YUV→RGB + normalisation, ONNX Runtime, sigmoid/argmax decode.  Rows:

* ``selfie`` (the default, 256x256) with each downscale filter: two-stage (shipped: bilinear to
  2x the target, then an exact 2:1 box), and the baselines it is measured against: exact area
  averaging via an integral image (= INTER_AREA), OpenCV's INTER_AREA (slow non-integer path)
  and INTER_LINEAR (fast, aliases on big shrinks);
* ``selfie`` preprocessing alone and inference alone (breakdown);
* ``selfie`` batch of 4 frames, per frame;
* ``selfie-landscape`` (144x256);
* the PeopleSemSegNet-contract model (tests/pssn_contract.py: the default graph wrapped in
  NVIDIA's 960x544 BGR → argmax_1 interface), from a 960x544 I420 frame.

Rounds are interleaved (every row once per round) so load from other processes hits all rows
alike; medians and p90 are reported with the load average.  Bar: selfie ≤ 8 ms median.

Quality (``--quality``): pooled 2-class mIoU of the default model on portrait_dev and
people_pseudo (bars 0.94 / 0.90), and cihp_multi, each with tiles off and auto — the same
numbers as ``privacy-filter eval --images DIR/images --masks DIR/masks [--tiles auto]``.

    python benchmarks/bench_segmentation.py [--rounds 40] [--quality] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from privacy_filter.backends import create_segmenter  # noqa: E402
from privacy_filter.engines import preprocess
from privacy_filter.frames import YuvFrame  # noqa: E402
from privacy_filter.models.registry import resolve_model  # noqa: E402

SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared")) / "data"


def i420_frame(bgr: np.ndarray) -> YuvFrame:
    h, w = bgr.shape[:2]
    flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    n, c = h * w, (h // 2) * (w // 2)
    return YuvFrame(flat[:n].reshape(h, w), flat[n : n + c].reshape(h // 2, w // 2), flat[n + c :].reshape(h // 2, w // 2))


def with_filter(mode, fn):
    def run():
        old = preprocess.DOWNSCALE
        preprocess.DOWNSCALE = mode
        try:
            fn()
        finally:
            preprocess.DOWNSCALE = old

    return run


def speed(rounds: int) -> dict:
    picture = cv2.imread(str(SHARED / "images/people_pseudo/images/1.jpg"))
    f1080 = i420_frame(cv2.resize(picture, (1920, 1080), interpolation=cv2.INTER_CUBIC))
    f544 = i420_frame(cv2.resize(picture, (960, 544), interpolation=cv2.INTER_AREA))
    selfie = create_segmenter("selfie")
    landscape = create_segmenter("selfie-landscape")
    tmp = Path(tempfile.mkdtemp(prefix="bench-seg-"))
    from support.pssn_contract import build_contract_onnx

    contract_path = build_contract_onnx(selfie.onnx_path, tmp / "pssn.onnx", inner_layout=selfie.spec.input_layout)
    contract = create_segmenter(f"peoplesemsegnet-shuffleseg:{contract_path}")
    item = np.empty((1, *preprocess.item_shape(selfie.spec)), np.float32)
    preprocess.frame_into(f1080, selfie.spec, item[0])

    rows = {
        "selfie 1080p (two-stage, shipped)": (1, with_filter("two-stage", lambda: selfie.infer_yuv([f1080]))),
        "selfie 1080p (exact area, integral)": (1, with_filter("area", lambda: selfie.infer_yuv([f1080]))),
        "selfie 1080p (INTER_LINEAR)": (1, with_filter(cv2.INTER_LINEAR, lambda: selfie.infer_yuv([f1080]))),
        "selfie 1080p (INTER_AREA)": (1, with_filter(cv2.INTER_AREA, lambda: selfie.infer_yuv([f1080]))),
        "selfie 1080p preprocessing only": (1, lambda: preprocess.frame_into(f1080, selfie.spec, item[0])),
        "selfie inference only (256x256)": (1, lambda: selfie.infer_batch(item)),
        "selfie 1080p batch of 4 (per frame)": (4, lambda: selfie.infer_yuv([f1080] * 4)),
        "selfie-landscape 1080p": (1, lambda: landscape.infer_yuv([f1080])),
        "pssn-contract 960x544": (1, lambda: contract.infer_yuv([f544])),
    }
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(3):  # warm-up
        for per, fn in rows.values():
            fn()
    for _ in range(rounds):
        for name, (per, fn) in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000 / per)
    base = statistics.median(times["selfie 1080p (INTER_AREA)"])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"median_ms": round(med, 3), "p90_ms": round(float(np.percentile(ts, 90)), 3), "vs_INTER_AREA": round(med / base, 3)}
    return out


def quality() -> dict:
    from privacy_filter import evaluate as ev

    res = {}
    for ds in ("portrait_dev", "people_pseudo", "cihp_multi"):
        d = SHARED / "images" / ds
        pairs = ev.pair_masks(ev.collect_images([d / "images"]), d / "masks")
        for tiles in ("off", "auto"):
            r = ev.evaluate(create_segmenter("selfie", tiles=tiles), pairs, progress=False, tiles=tiles)
            res[f"{ds} tiles={tiles}"] = {
                "miou": round(r.miou, 4),
                "person_iou": round(r.person_iou, 4),
                "recall": round(r.person_recall, 4),
                "median_ms": round(r.median_ms, 2),
                "images": r.images,
                "command": f"privacy-filter eval --images {d}/images --masks {d}/masks --tiles {tiles}",
            }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--quality", action="store_true", help="also compute mIoU on the shared datasets (minutes)")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    resolve_model("selfie")  # pull before timing
    result = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count(), "speed": speed(args.rounds)}
    if args.quality:
        result["quality"] = quality()
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json_only:
        return
    print(f"\n{'segmentation, per frame':<40} {'median ms':>10} {'p90 ms':>8} {'vs AREA':>8}")
    for name, r in result["speed"].items():
        print(f"{name:<40} {r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['vs_INTER_AREA']:>8.2f}")
    bar = result["speed"]["selfie 1080p (two-stage, shipped)"]["median_ms"]
    print(f"bar: selfie 1080p ≤ 8 ms median → {bar:.2f} ms ({'met' if bar <= 8 else 'MISSED'})")
    if args.quality:
        print(f"\n{'quality (pooled 2-class mIoU)':<36} {'mIoU':>7} {'pIoU':>7} {'recall':>7} {'ms/img':>7}")
        for name, r in result["quality"].items():
            print(f"{name:<36} {r['miou']:>7.4f} {r['person_iou']:>7.4f} {r['recall']:>7.4f} {r['median_ms']:>7.2f}")
    print(f"load average before/after: {result['load_avg_before']} / {result['load_avg_after']}")


if __name__ == "__main__":
    main()
