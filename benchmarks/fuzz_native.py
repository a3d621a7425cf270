"""Issue 12's fuzz bar, the long run: >= 20,000 malformed native messages interleaved with valid
frames into ``privacy-filter process zmq+pull://… zmq+push://…`` (a real subprocess, real ipc).

Reports: exit code (0 crashes), frames out with a mask (0 unfiltered), bad-message counters
against what was sent (per kind), and the process's RSS after start-up vs at the end.
The generator and the CI-sized version live in tests/support/fuzz.py and
tests/integration/test_fuzz.py.

    python benchmarks/fuzz_native.py [--bad 20000] [--frames 2000] [--with-other-fix-kinds]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "plugin")]

from privacy_filter import wire as P  # noqa: E402
from support import fuzz  # noqa: E402


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bad", type=int, default=20000)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--with-other-fix-kinds", action="store_true", help="also nested JSON, extreme values, version types")
    args = ap.parse_args()
    kinds = tuple(fuzz.KINDS) + (fuzz.HOSTILE_HEADER_KINDS if args.with_other_fix_kinds else ())
    with tempfile.TemporaryDirectory() as d:
        proc, ep_in, consumer, got, report = fuzz.start_stage(Path(d), timeout_ms=300_000)
        ctx = zmq.Context()
        s = P.socket(ctx, zmq.PUSH, ep_in, bind=False, linger_ms=0)
        s.setsockopt(zmq.SNDTIMEO, 120_000)
        sent: Counter[str] = Counter()
        rss: list[int] = []
        t0 = time.monotonic()
        for i, (kind, parts) in enumerate(fuzz.stream(args.bad, args.frames, kinds=kinds, seed=1)):
            if proc.poll() is not None:
                break
            s.send_multipart(parts, copy=False)
            sent[kind] += 1
            if i % 500 == 0:
                rss.append(_rss_kb(proc.pid))
        rss.append(_rss_kb(proc.pid))
        out, err = proc.communicate(timeout=600)
        wall = time.monotonic() - t0
        s.close(linger=0)
        ctx.term()
        consumer.join(30)
        rep = json.loads(report.read_text()) if report.exists() else {}
    bad_sent = {k: n for k, n in sent.items() if k not in ("start", "frame", "eos")}
    # RSS growth after start-up: the first sample once frames flow (~10 % in) vs the last one
    base = rss[max(1, len(rss) // 10)] if len(rss) > 2 else (rss[0] if rss else 0)
    result = {
        "exit_code": proc.returncode,
        "traceback": "Traceback" in err,
        "malformed_sent": sum(bad_sent.values()),
        "malformed_sent_by_kind": bad_sent,
        "malformed_counted": rep.get("bad_messages"),
        "malformed_counted_by_kind": rep.get("bad_messages_by_kind"),
        "counters_equal_sent": rep.get("bad_messages_by_kind") == {k: n for k, n in bad_sent.items() if k not in fuzz.HOSTILE_HEADER_KINDS},
        "frames_sent": sent["frame"],
        "frames_out": len(got.get("frames") or []),
        "frames_out_with_mask": got.get("masked"),
        "unfiltered_frames": len(got.get("frames") or []) - (got.get("masked") or 0),
        "rss_kb_after_startup": base,
        "rss_kb_end": rss[-1] if rss else 0,
        "rss_growth_pct": round(100 * (rss[-1] - base) / base, 2) if base else None,
        "wall_s": round(wall, 1),
    }
    print(json.dumps(result, indent=1))
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    return 0 if proc.returncode == 0 and result["unfiltered_frames"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
