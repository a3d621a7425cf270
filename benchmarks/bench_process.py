"""Throughput of ``privacy-filter process --preset cctv`` against plain ffmpeg, same clip, same run.

Issue 3's bar: on a 1080p H.264 clip, ``process`` with the cctv preset and libx264
ultrafast reaches >= 0.6x the throughput (frames per wall-clock second, process
start to exit) of ``ffmpeg -i clip.mp4 -c:v libx264 -preset ultrafast out.mp4``.

The shared data has no 1080p clip with people, so the clip is made here: frames of
one-by-one-person-detection.mp4 from 10 s on (a person is in most frames),
upscaled to 1920x1080 with swscale and encoded with libx264 (medium, crf 23), keeping
the source timestamps (10 fps).  It is cached in ``--work``.

Needs the ffmpeg CLI (``apt-get install -y ffmpeg``).  Runs are interleaved (ffmpeg,
ours, ffmpeg, ours ...) and medians are reported, with the 1-minute load average
before each run as a sign of contention from other processes.

    python benchmarks/bench_process.py [--repeats 3] [--frames 300] [--work .bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"


def make_clip(path: Path, frames: int, start_s: float = 10.0, size: tuple[int, int] = (1920, 1080)) -> Path:
    """Upscale ``frames`` frames of the people part of the shared video to 1080p H.264."""
    if path.exists():
        with av.open(str(path)) as c:
            if c.streams.video[0].frames == frames:
                return path
    if not SOURCE.exists():
        sys.exit(f"source video not found: {SOURCE} (set PRIVACY_FILTER_SHARED)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(SOURCE)) as src, av.open(str(tmp), "w") as dst:
        vs = src.streams.video[0]
        vs.thread_type = "AUTO"
        src.seek(int(start_s / vs.time_base), stream=vs)
        out = dst.add_stream("libx264", rate=vs.average_rate)
        out.width, out.height, out.pix_fmt = size[0], size[1], "yuv420p"
        out.codec_context.time_base = vs.time_base
        out.options = {"preset": "medium", "crf": "23"}
        n = 0
        first = None
        for f in src.decode(vs):
            if f.time < start_s:
                continue
            first = f.pts if first is None else first
            g = f.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC")
            g.pts, g.time_base = f.pts - first, vs.time_base
            for p in out.encode(g):
                dst.mux(p)
            n += 1
            if n >= frames:
                break
        for p in out.encode(None):
            dst.mux(p)
    tmp.rename(path)
    return path


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for _ in c.demux(s) if _.size)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one run of ``cmd``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--work", default=str(REPO / ".bench"))
    ap.add_argument("--json", default=None, help="also write the JSON here")
    ap.add_argument("--model", default=None, help="override the preset's model (e.g. selfie-landscape)")
    args = ap.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        sys.exit("ffmpeg CLI not found: install it with `apt-get install -y ffmpeg` (the baseline of this benchmark)")
    work = Path(args.work)
    clip = make_clip(work / f"people-1080p-{args.frames}.mp4", args.frames)
    n = count_frames(clip)
    cfg = work / "ultrafast.yaml"
    cfg.write_text("defaults:\n  output:\n    preset: ultrafast\n")
    ours_cmd = [sys.executable, "-m", "privacy_filter.cli", "process", str(clip), str(work / "ours.mp4"),
                "--preset", "cctv", "--config", str(cfg), "--no-progress"] + (["--model", args.model] if args.model else [])
    ff_cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", "libx264",
              "-preset", "ultrafast", str(work / "ffmpeg.mp4")]
    runs: dict[str, list[float]] = {"ffmpeg": [], "ours": []}
    cpu: dict[str, list[float]] = {"ffmpeg": [], "ours": []}
    loads: list[float] = []
    for _ in range(args.repeats):
        for name, cmd in (("ffmpeg", ff_cmd), ("ours", ours_cmd)):
            loads.append(os.getloadavg()[0])
            wall, cpu_s = timed(cmd)
            runs[name].append(wall)
            cpu[name].append(cpu_s)
    out_frames = count_frames(work / "ours.mp4")
    med = {k: statistics.median(v) for k, v in runs.items()}
    fps = {k: n / v for k, v in med.items()}
    cpu_ms = {k: 1000 * statistics.median(v) / n for k, v in cpu.items()}
    result = {
        "clip": str(clip), "frames": n, "model": args.model or "preset default", "size": "1920x1080", "frames_out_ours": out_frames,
        "repeats": args.repeats, "wall_s": runs, "median_wall_s": med, "median_fps": fps,
        "ratio_ours_over_ffmpeg": fps["ours"] / fps["ffmpeg"], "bar": 0.6,
        "cpu_s": cpu, "median_cpu_ms_per_frame": cpu_ms,
        "cpu_ratio_ffmpeg_over_ours": cpu_ms["ffmpeg"] / cpu_ms["ours"],
        "loadavg_1m_before_runs": loads, "cpus": os.cpu_count(),
        "ffmpeg": subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()[0],
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"| command (1080p, {n} frames, median of {args.repeats}) | wall s | fps | CPU ms/frame |")
    print("|---|---|---|---|")
    print(f"| ffmpeg -c:v libx264 -preset ultrafast | {med['ffmpeg']:.2f} | {fps['ffmpeg']:.1f} | {cpu_ms['ffmpeg']:.1f} |")
    print(f"| privacy-filter process --preset cctv (ultrafast) | {med['ours']:.2f} | {fps['ours']:.1f} | {cpu_ms['ours']:.1f} |")
    print(f"| ratio ours/ffmpeg (bar >= 0.6) | | **{result['ratio_ours_over_ffmpeg']:.2f}** | "
          f"{result['cpu_ratio_ffmpeg_over_ours']:.2f} (CPU) |")
    print(f"(1-min load average before the runs: {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
