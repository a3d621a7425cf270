"""Per-frame cost of every CPU effect on a 1080p frame, mask pipeline included.

What one call of ``fx.apply(frame, prob)`` does is timed: temporal hold at model
resolution → 8-bit quantise → bilinear upsample of the 256×256 probability to 1920×1080
→ threshold → dilation → feather → chroma alpha → effect → composite on Y, U and V.

Inputs are real: a picture of videos/one-by-one-person-detection.mp4 upscaled to 1080p
with swscale, and portrait_dev ground-truth masks resized to 256×256 (soft edges) as the
model output: ``portrait`` (a person filling much of the frame, video-call-like) and
``cctv`` (the same person at 35 % size, a figure in a room).  Profiles: ``cctv`` = cctv
scene + the cctv preset's mask (threshold 0.3, dilation 2 % of the height = 22 px, hold 8);
``video-call`` = portrait scene + the video-call preset's mask (dilate 2, feather 6, smooth);
``stress`` = portrait scene + the cctv mask (a frame-filling person, large dilation).

Baselines in the same run, on the same frame: a copy of the three planes, and
``cv2.GaussianBlur`` of the Y plane alone with σ = 16 px (the blur strength of our
``blur`` at 1080p) — what a naive "blur the frame" costs before any masking.

A blur's pictures are computed on a helper thread while the mask is worked out; the
``[one thread]`` rows time the same blur with that switched off, so the table shows
both the wall time and what the overlap saves (the cpu column is the work done).

Rounds are interleaved (every config once per round) so that load from other processes
hits all configs alike; medians and p90 are reported with the load average.

    python benchmarks/bench_effects.py [--rounds 40] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from privacy_filter.backends import create_stream_effect  # noqa: E402
from privacy_filter.config import EffectConfig, MaskConfig, load_preset  # noqa: E402
from privacy_filter.effects import cpu as cpu_effects  # noqa: E402
from support import effects_data as D  # noqa: E402

SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared")) / "data"
KINDS = ["pixelate", "fill", "blur", "replace-image", "overlay", "none"]
TARGETS = ["person", "background"]


def _effect(kind: str, target: str) -> EffectConfig:
    if kind == "replace-image":
        return EffectConfig(kind="replace", target=target, replace_image=str(SHARED / "images/portrait_dev/images/00001.jpg"))  # type: ignore[arg-type]
    return EffectConfig(kind=kind, target=target, color=(30, 30, 30))  # type: ignore[arg-type]


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's choice)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED} (set PRIVACY_FILTER_SHARED)")

    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    src = D.real_frame(SHARED, 1920, 1080)
    probs = {
        "portrait": D.real_prob(SHARED, "00001"),
        "cctv": D.shrink_prob(D.real_prob(SHARED, "00003"), 0.35, (0.3, 0.7)),
    }
    masks = {name: MaskConfig(**load_preset(name)["mask"]) for name in ("cctv", "video-call")}
    # (profile, scene, mask): each preset's mask on the scene it is made for, plus the
    # worst case: a frame-filling person under the cctv preset's large dilation.
    profiles = [("cctv", "cctv", "cctv"), ("video-call", "portrait", "video-call"), ("stress", "portrait", "cctv")]
    work = src.copy()

    def restore() -> None:
        for dst, s in zip(work.planes, src.planes):
            np.copyto(dst, s)

    cases: dict[str, tuple[object, np.ndarray, bool]] = {}
    for profile, scene, mask_name in profiles:
        kinds = KINDS if profile != "stress" else ["pixelate", "fill"]
        for kind in kinds:
            for target in TARGETS:
                fx = create_stream_effect(_effect(kind, target), masks[mask_name])
                cases[f"{profile}:{kind}/{target}"] = (fx, probs[scene], True)
                if kind == "blur" and profile == "video-call":
                    one = create_stream_effect(_effect(kind, target), masks[mask_name])
                    cases[f"{profile}:{kind}/{target} [one thread]"] = (one, probs[scene], False)
    cover = create_stream_effect(EffectConfig(kind="pixelate"), masks["cctv"])
    times: dict[str, list[float]] = {name: [] for name in ["baseline:copy", "baseline:gaussian-y"] + list(cases) + ["cover_whole/pixelate"]}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    covered: dict[str, float] = {}

    load_before = os.getloadavg()[0]

    def timed(name: str, fn: Callable[[], object]) -> object:
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times[name].append(time.perf_counter() - t)
        cpu[name].append(time.process_time() - c)
        return out

    for _ in range(args.rounds):
        timed("baseline:copy", lambda: (src.y.copy(), src.u.copy(), src.v.copy()))
        timed("baseline:gaussian-y", lambda: cv2.GaussianBlur(src.y, (0, 0), 16))
        for name, (fx, prob, helper) in cases.items():
            cpu_effects.HELPER_THREAD = helper
            restore()
            alpha = timed(name, lambda fx=fx, prob=prob: fx.apply(work, prob))  # type: ignore[attr-defined]
            covered[name] = float((alpha == 255).mean())  # type: ignore[operator]
        cpu_effects.HELPER_THREAD = True
        restore()
        timed("cover_whole/pixelate", lambda: cover.cover_whole(work))  # type: ignore[attr-defined]
    load_after = os.getloadavg()[0]

    base = statistics.median(times["baseline:gaussian-y"])
    results = {
        name: {
            "median_ms": round(statistics.median(ts) * 1e3, 3),
            "min_ms": round(min(ts) * 1e3, 3),
            "p90_ms": round(_percentile(ts, 0.9) * 1e3, 3),
            "cpu_median_ms": round(statistics.median(cpu[name]) * 1e3, 3),
            "ratio_to_gaussian_y": round(statistics.median(ts) / base, 3),
            "covered_fraction": round(covered.get(name, float("nan")), 3),
        }
        for name, ts in times.items()
    }
    report = {
        "frame": "1920x1080 I420 (real, upscaled)",
        "model_map": "256x256 float32",
        "profiles": {p: {"scene": sc, "mask": masks[m].model_dump()} for p, sc, m in profiles},
        "rounds": args.rounds,
        "cv2_threads": cv2.getNumThreads(),
        "cpus": os.cpu_count(),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
        "results": results,
    }
    print(json.dumps(report, indent=1))
    if not args.json_only:
        print(f"\n{'case':44s} {'median ms':>10s} {'min ms':>8s} {'p90 ms':>8s} {'cpu ms':>8s} {'x gauss-Y':>10s} {'covered':>8s}")
        for name, r in results.items():
            print(
                f"{name:44s} {r['median_ms']:10.2f} {r['min_ms']:8.2f} {r['p90_ms']:8.2f} {r['cpu_median_ms']:8.2f} {r['ratio_to_gaussian_y']:10.2f} {r['covered_fraction']:8.3f}"
            )
        worst = max((r["median_ms"], n) for n, r in results.items() if not n.startswith("baseline") and "[one thread]" not in n)
        print(f"\nslowest effect: {worst[1]} {worst[0]:.2f} ms median (bar: 8 ms); load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
