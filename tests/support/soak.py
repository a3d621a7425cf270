"""A two-stream soak of ``privacy-filter run`` (issue 12's soak bar), shared by the CI test and benchmarks/soak.py.

Stream ``udp``: a real live UDP source. FFmpeg sends a clip of people in a loop, in real time, as
MPEG-TS; the stream uses the cctv preset (detector, motion). Stream ``gen``: FFmpeg's testsrc2
paced by its ``realtime`` filter, so it runs as long as the soak, with the video-call preset
(full-frame segmentation, blur).

Every process's RSS (supervisor, stage, each decoder and encoder) is sampled from /proc. Growth
is measured from the first sample after the warm-up to the highest one after it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def growth(samples: list[tuple[float, int]], warmup_s: float) -> dict[str, Any]:
    """``samples`` of (seconds since start, RSS kB): the base after ``warmup_s``, the peak after it, and the growth in %."""
    after = [kb for t, kb in samples if t >= warmup_s]
    if not after:
        return {"base_kb": None, "peak_kb": None, "end_kb": None, "growth_pct": None, "samples": len(samples)}
    base, peak = after[0], max(after)
    return {"base_kb": base, "peak_kb": peak, "end_kb": after[-1], "growth_pct": round(100.0 * (peak - base) / base, 2), "samples": len(after)}


def run_soak(folder: Path, clip: Path, *, seconds: float, warmup_s: float, every_s: float = 2.0, log: Any = None) -> dict[str, Any]:
    """Run the two streams for ``seconds``, stop with SIGTERM, and return RSS growth per process plus the streams' counters."""
    port = _free_udp_port()
    sender = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(clip),
            "-an",
            "-c",
            "copy",
            "-f",
            "mpegts",
            f"udp://127.0.0.1:{port}?pkt_size=1316",
        ],
        stdin=subprocess.DEVNULL,
    )
    state, metrics = folder / "state.json", folder / "metrics.json"
    cfg = {
        "defaults": {"output": {"preset": "ultrafast"}},
        "streams": [
            {"id": "udp", "preset": "cctv", "source": f"udp://127.0.0.1:{port}", "output": str(folder / "udp.ts")},
            {"id": "gen", "preset": "video-call", "source": "lavfi:testsrc2=size=320x240:rate=25,realtime", "output": str(folder / "gen.mkv")},
        ],
        "supervisor": {"state_file": str(state), "shutdown_timeout_s": 30},
        "metrics": {"dump": str(metrics)},
    }
    config = folder / "soak.yaml"
    config.write_text(json.dumps(cfg))
    with (folder / "stderr.txt").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "privacy_filter", "run", str(config)], stdout=subprocess.PIPE, stderr=err, text=True)
    rss: dict[str, list[tuple[float, int]]] = {}
    pids: dict[str, set[int]] = {}
    t0 = time.monotonic()
    try:
        while (t := time.monotonic() - t0) < seconds and proc.poll() is None:
            try:
                workers = json.loads(state.read_text())["workers"]
            except (OSError, ValueError, KeyError):
                workers = {}
            for role, pid in [("supervisor", proc.pid)] + [(n, w["pid"]) for n, w in workers.items() if w.get("alive") and w.get("pid")]:
                kb = _rss_kb(pid)
                if kb is not None:
                    rss.setdefault(role, []).append((t, kb))
                    pids.setdefault(role, set()).add(pid)
            if log is not None and int(t) % 60 < every_s:
                log(f"{t:6.0f} s: " + ", ".join(f"{r} {s[-1][1] // 1024} MB" for r, s in sorted(rss.items())))
            time.sleep(every_s)
        running = proc.poll() is None
        if running:
            os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        sender.terminate()
        sender.wait(10)
    counters = json.loads(metrics.read_text()) if metrics.exists() else {}
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "warmup_s": warmup_s,
        "ran_to_the_end": running,
        "exit_code": proc.returncode,
        "stdout": out,
        "stderr_tail": (folder / "stderr.txt").read_text(errors="replace")[-3000:],
        "processes": {role: {**growth(s, warmup_s), "restarted": len(pids[role]) > 1} for role, s in sorted(rss.items())},
        "streams": {
            sid: {k: counters.get(sid, {}).get(k) for k in ("frames_in", "frames_out", "frames_dropped", "frames_covered_whole", "worker_restarts", "reconnects")}
            for sid in ("udp", "gen")
        },
    }
