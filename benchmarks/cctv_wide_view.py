"""Per-person coverage of the cctv preset on a wide 1080p view of small people, at several detector sizes.

The shared data has no 1080p CCTV clip with ground truth, so one is made (and cached in ``--work``)
by ``tests/support/wide_view.py``: PETS 2009 S2L1 (480x360, 7 fps, 300 frames) tiled into
1920x1080, each copy scaled by ``--scale`` and time-staggered, its ground truth moved with it.
At ``--scale 1.3334`` (3x2 copies of 640x480) people are 49-128 px tall in a 1080p frame, as on
a wide elevated view; at 1.0 (4x3 copies) 37-96 px.  ``--height 720`` (or 480): the same view
from a 720p (480p) camera.

Each ``--long-sides`` entry runs ``eval-video`` (``evaluate_video``) with the cctv preset and the
detector at that input long side (``auto`` = the preset's rule: 640 at 1080p); prints JSON and a
table with the stage's ms per frame of the whole evaluation.

    python benchmarks/cctv_wide_view.py [--scale 1.3334] [--height 1080] [--long-sides auto 768 960] [--work .bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))
sys.path.insert(0, str(REPO / "tests"))

from privacy_filter.backends import create_detector  # noqa: E402
from privacy_filter.config import stream_config  # noqa: E402
from privacy_filter.evaluate import evaluate_video  # noqa: E402
from support.wide_view import make_wide_view  # noqa: E402

SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared"))
PETS = SHARED / "data" / "cctv" / "pets09_s2l1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.3334, help="size of each PETS copy (1.3334: 640x480, 3x2 copies)")
    ap.add_argument("--long-sides", nargs="+", default=["auto", "768", "960"], help="detector input long sides ('auto': the preset's rule)")
    ap.add_argument("--height", type=int, default=1080, help="output height (1080, or e.g. 720: the composed frames scaled down)")
    ap.add_argument("--work", default=str(REPO / ".bench"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not PETS.is_dir():
        sys.exit(f"PETS 2009 clip not found: {PETS} (set PRIVACY_FILTER_SHARED)")
    name = f"pets-wide-{args.scale:g}" + ("" if args.height == 1080 else f"-{args.height}p")
    video = make_wide_view(PETS, work / f"{name}.mp4", args.scale, height=args.height)
    rows = []
    for ls in args.long_sides:
        long_side: int | str = "auto" if ls == "auto" else int(ls)
        detector = create_detector("nanodet", "cpu", long_side=long_side)  # type: ignore[arg-type]
        cfg = stream_config(str(video), "", preset="cctv")
        r = evaluate_video(str(video), video.with_suffix(".csv"), cfg, detector=detector, progress=False)
        rows.append(
            {
                "long_side": ls,
                "hidden": r.hidden,
                "never_exposed": r.never_exposed,
                "people": f"{r.n_never_exposed}/{r.n_people}",
                "false_cover": r.false_cover,
                "ms_per_frame": r.ms_per_frame,
            }
        )
    print(json.dumps({"clip": str(video), "scale": args.scale, "results": rows}, indent=2))
    print(f"\n| detector long side ({video.name}) | hidden | never exposed | false cover | stage ms/frame |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['long_side']} | {row['hidden']:.4f} | {row['people']} ({row['never_exposed']:.2f}) | {row['false_cover']:.3f} | {row['ms_per_frame']:.0f} |")
    print("bars (issue 10): hidden >= 0.98, never exposed >= 0.90, false cover <= 0.10")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
