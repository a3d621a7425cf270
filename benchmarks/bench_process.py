"""End-to-end throughput on one 1080p clip: privacy-filter against real peers, same run.

Every contender reads the same native-1080p H.264 clip of people and writes H.264 with the
**same encoder settings** (libx264, preset veryfast = privacy-filter's default output, x264's
default CRF, no audio):

* ``ffmpeg``: a plain transcode (the ceiling: decode + encode, no filtering); every ratio is
  against it;
* ``ffmpeg:low-memory``: the same with one x264 thread (``-threads 1``, sync-lookahead=0), as the
  cctv preset's ``output.low_memory`` encodes: the same settings with less memory, slower where
  x264 is the bottleneck, so it is shown but never the ratios' baseline (that would flatter us);
* ``naive``: benchmarks/naive_pixelate.py, what a user writes in an afternoon (PyAV → RGB →
  ONNX Runtime NanoDet → cv2 pixelation of boxes → encode), with the same detector model;
* ``deface``: the deface CLI from PyPI in its own venv (face anonymisation, CenterFace);
* ``ours:<preset>``: ``privacy-filter process --preset <preset>`` for each preset.

Runs are interleaved (every contender once, then again ...) and medians reported.  For each run:
wall seconds (process start to exit), CPU ms per frame (user + sys of the process tree), peak
RSS (GNU time's ``%M`` when installed, see ``timed``), and for ours the CPU seconds of each
thread and the frame loop's own seconds (``process --report``): the fps without the setup
(imports, model load, the motion layer's first pass), shown beside but never instead of the
wall-clock ratios.

The shared data has no 1080p clip with people, so one is made (and cached in ``--work``):
frames of one-by-one-person-detection.mp4 from 10 s on, upscaled to 1920x1080 with swscale and
encoded with libx264 (medium, crf 23), keeping the source timestamps (10 fps; ``--fps 25``
stamps the same frames at 25 fps, as most cameras record).

Needs the ffmpeg CLI, and GNU time (``apt-get install time``) for exact peak RSS.
``--deface-venv DIR`` (default ``.bench/deface-venv``) must hold ``bin/deface`` (``python -m
venv DIR && DIR/bin/pip install deface``); without it deface is skipped and says so.

    python benchmarks/bench_process.py [--repeats 3] [--frames 300] [--work .bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared"))
SOURCE = SHARED / "data" / "videos" / "one-by-one-person-detection.mp4"
PRESET = "veryfast"  # privacy-filter's default libx264 preset: every contender uses it


def make_clip(path: Path, frames: int, start_s: float = 10.0, size: tuple[int, int] = (1920, 1080), fps: int | None = None) -> Path:
    """Upscale ``frames`` frames of the people part of the shared video to 1080p H.264.

    ``fps``: stamp the same frames at this rate instead of the source's (10 fps), e.g. 25 to see
    a 25 fps camera, where the cctv preset's time-based detector cadence runs on every 2nd frame.
    """
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
        out = dst.add_stream("libx264", rate=Fraction(fps) if fps else vs.average_rate)
        out.width, out.height, out.pix_fmt = size[0], size[1], "yuv420p"
        tb = Fraction(1, fps) if fps else vs.time_base
        out.codec_context.time_base = tb
        out.options = {"preset": "medium", "crf": "23"}
        n = 0
        first = None
        for f in src.decode(vs):
            if f.time < start_s:
                continue
            first = f.pts if first is None else first
            g = f.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC")
            g.pts, g.time_base = (n, tb) if fps else (f.pts - first, vs.time_base)
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


GNU_TIME = Path("/usr/bin/time")


def timed(cmd: list[str]) -> dict[str, float]:
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MB) of one run of ``cmd``.

    The peak RSS is taken by GNU time (``%M``) when it is installed, not from this script's
    ``wait4``: Linux carries a process's high-water mark across ``exec``, so a child's
    ``ru_maxrss`` starts at this script's own peak, which after making the clip was ~405 MB and
    showed ffmpeg at 405 instead of ~320.  GNU time's child is forked from a small process.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        gnu_time = GNU_TIME.exists()
        argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *cmd] if gnu_time else cmd
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, ru = os.wait4(proc.pid, 0)  # CPU: the child's and its waited-for descendants'
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
        kb = int(rss_file.read_text().split()[-1]) if gnu_time else ru.ru_maxrss
    return {"wall_s": dt, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": kb / 1024}


def nanodet_model() -> str:
    """The NanoDet ONNX privacy-filter uses (pulled and converted on first use)."""
    from privacy_filter.models.registry import resolve_detector

    return str(resolve_detector("nanodet").onnx_path)


def contenders(args: argparse.Namespace, clip: Path, work: Path) -> dict[str, list[str]]:
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        sys.exit("ffmpeg CLI not found: install it with `apt-get install -y ffmpeg` (the baseline of this benchmark)")
    transcode = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-an", "-c:v", "libx264", "-preset", PRESET, "-pix_fmt", "yuv420p"]
    cmds = {
        "ffmpeg": [*transcode, str(work / "ffmpeg.mp4")],
        "ffmpeg:low-memory": [*transcode, "-threads", "1", "-x264-params", "sync-lookahead=0", str(work / "ffmpeg-low-memory.mp4")],
        "naive": [sys.executable, str(REPO / "benchmarks" / "naive_pixelate.py"), str(clip), str(work / "naive.mp4"), "--model", nanodet_model(), "--preset", PRESET],
    }
    deface = Path(args.deface_venv) / "bin" / "deface"
    if deface.exists():
        config = {"codec": "libx264", "quality": None, "macro_block_size": 2, "ffmpeg_params": ["-preset", PRESET]}
        cmds["deface"] = [str(deface), str(clip), "-o", str(work / "deface.mp4"), "--ffmpeg-config", json.dumps(config)]
    else:
        print(f"deface skipped: {deface} not found (python -m venv {args.deface_venv} && {args.deface_venv}/bin/pip install deface)")
    for preset in args.presets:
        cmds[f"ours:{preset}"] = [
            sys.executable,
            "-m",
            "privacy_filter.cli",
            "process",
            str(clip),
            str(work / f"ours-{preset}.mp4"),
            "--preset",
            preset,
            "--no-progress",
            "-y",
            "--report",
            str(work / f"ours-{preset}.json"),
        ]
    for config in args.configs:
        name = Path(config).stem
        cmds[f"ours:{name}"] = [
            sys.executable,
            "-m",
            "privacy_filter.cli",
            "process",
            str(clip),
            str(work / f"ours-{name}.mp4"),
            "--config",
            str(config),
            "--no-progress",
            "-y",
            "--report",
            str(work / f"ours-{name}.json"),
        ]
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--work", default=str(REPO / ".bench"))
    ap.add_argument("--fps", type=int, default=None, help="stamp the clip at this frame rate (default: the source's, 10)")
    ap.add_argument("--presets", nargs="+", default=["cctv", "video-call"])
    ap.add_argument("--configs", nargs="*", default=[], help="also run `process --config FILE` for each, as ours:<file stem> (e.g. configs/cctv-fast.yaml)")
    ap.add_argument("--deface-venv", default=str(REPO / ".bench" / "deface-venv"))
    ap.add_argument("--only", nargs="*", default=None, help="run only these contenders (ffmpeg is always run)")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args()
    work = Path(args.work)
    name = f"people-1080p-{args.frames}" + (f"-{args.fps}fps" if args.fps else "")
    clip = make_clip(work / f"{name}.mp4", args.frames, fps=args.fps)
    n = count_frames(clip)
    cmds = contenders(args, clip, work)
    if args.only:
        cmds = {k: v for k, v in cmds.items() if k == "ffmpeg" or k in args.only}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in cmds}
    threads: dict[str, list[dict[str, float]]] = {k: [] for k in cmds if k.startswith("ours:")}
    loop_s: dict[str, list[float]] = {k: [] for k in threads}  # ours: the frame loop's own seconds (--report)
    loads: list[float] = []
    for _ in range(args.repeats):
        for name, cmd in cmds.items():
            loads.append(os.getloadavg()[0])
            runs[name].append(timed(cmd))
            if name in threads:
                report = json.loads((work / f"ours-{name[5:]}.json").read_text())
                threads[name].append(report["cpu_s"])
                loop_s[name].append(report["seconds"])
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "cpu_s", "rss_mb")} for k, v in runs.items()}
    fps = {k: n / v["wall_s"] for k, v in med.items()}
    result = {
        "clip": str(clip),
        "frames": n,
        "clip_fps": args.fps or "source (10)",
        "size": "1920x1080",
        "encoder": f"libx264 -preset {PRESET}",
        "repeats": args.repeats,
        "runs": runs,
        "median": med,
        "median_fps": fps,
        "ratio_to_ffmpeg": {k: fps[k] / fps["ffmpeg"] for k in fps},
        "ratio_to_deface": {k: fps[k] / fps["deface"] for k in fps} if "deface" in fps else None,
        "cpu_ms_per_frame": {k: 1000 * v["cpu_s"] / n for k, v in med.items()},
        "ours_cpu_ms_per_frame_by_thread": {k: {t: 1000 * statistics.median(r[t] for r in v) / n for t in v[0]} for k, v in threads.items()},
        # steady state: frames over the frame loop's seconds, without imports, model load and the
        # motion layer's first pass (what a long-running stream sees); the ratios above include them
        "ours_loop_fps": {k: n / statistics.median(v) for k, v in loop_s.items()},
        "ours_setup_s": {k: med[k]["wall_s"] - statistics.median(v) for k, v in loop_s.items()},
        "loadavg_1m_before_runs": loads,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"| contender (1080p, {n} frames, libx264 {PRESET}, median of {args.repeats}) | wall s | fps | x ffmpeg | CPU ms/frame | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for k in cmds:
        print(f"| {k} | {med[k]['wall_s']:.2f} | {fps[k]:.1f} | {result['ratio_to_ffmpeg'][k]:.2f} | {result['cpu_ms_per_frame'][k]:.1f} | {med[k]['rss_mb']:.0f} |")
    for k, v in result["ours_cpu_ms_per_frame_by_thread"].items():
        print(f"{k} CPU ms/frame by thread: " + ", ".join(f"{t} {ms:.1f}" for t, ms in v.items()))
    for k, loop_fps in result["ours_loop_fps"].items():
        print(f"{k} frame loop alone: {loop_fps:.1f} fps ({loop_fps / fps['ffmpeg']:.2f}x ffmpeg's wall fps), setup {result['ours_setup_s'][k]:.1f} s")
    if result["ratio_to_deface"]:
        print("throughput / deface: " + ", ".join(f"{k} {r:.1f}x" for k, r in result["ratio_to_deface"].items()))
    print(f"(1-min load average before the runs: {min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
