"""Issue 12's soak bar: ``privacy-filter run`` with 2 streams, one of them live UDP, for 10 minutes;
RSS growth of every process after the first minute (bar: < 10 %).

    python benchmarks/soak.py [--minutes 10] [--warmup-s 60] [--clip PATH]

The harness (tests/support/soak.py) is shared with the CI-sized test
(tests/integration/test_soak.py). Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "plugin")]

from support.soak import run_soak  # noqa: E402

DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "videos" / "one-by-one-person-detection.mp4"


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:.0f}" if kb else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="the clip FFmpeg loops over UDP (default: a clip of people from ../shared/data)")
    args = ap.parse_args()
    if not args.clip.exists():
        print(f"clip not found: {args.clip} (pass --clip)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        r = run_soak(Path(d), args.clip, seconds=60 * args.minutes, warmup_s=args.warmup_s, every_s=5.0, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps({k: v for k, v in r.items() if k not in ("stdout", "stderr_tail")}, indent=1))
    print("\n| process | RSS after warm-up MB | peak after MB | end MB | growth % | restarted |\n|---|---|---|---|---|---|")
    for role, p in r["processes"].items():
        print(f"| {role} | {_mb(p['base_kb'])} | {_mb(p['peak_kb'])} | {_mb(p['end_kb'])} | {p['growth_pct']} | {p['restarted']} |")
    print("\n| stream | frames in | out | dropped | covered whole | restarts | reconnects |\n|---|---|---|---|---|---|---|")
    for sid, c in r["streams"].items():
        print(f"| {sid} | {c['frames_in']} | {c['frames_out']} | {c['frames_dropped']} | {c['frames_covered_whole']} | {c['worker_restarts']} | {c['reconnects']} |")
    worst = max((p["growth_pct"] or 0.0) for p in r["processes"].values())
    print(f"\nworst growth {worst} % (bar < 10 %), exit code {r['exit_code']}")
    return 0 if r["exit_code"] == 0 and worst < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
