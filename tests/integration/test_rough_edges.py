"""What a new user hit (issue 12, "Rough edges"): each behaviour asserted through the CLI a user runs.

Real clips (PyAV-encoded here, then cut), the real CLI entry point, real files.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from privacy_filter.cli import main
from privacy_filter.config import ConfigError, stream_config
from privacy_filter.io.av_source import missing_frames
from support.media_clips import make_av_clip

FRAMES = 100  # 4 s at 25 fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_av_clip(tmp_path_factory.mktemp("clip") / "in.mp4", frames=FRAMES, size=(96, 64), audio=False)


def _faststart_copy(src: Path, dst: Path) -> Path:
    """The clip remuxed with its index (moov) first, as web downloads are: a cut copy still opens."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        vs = inp.streams.video[0]
        o = out.add_stream_from_template(vs)
        for pkt in inp.demux(vs):
            if pkt.dts is None:
                continue
            pkt.stream = o
            out.mux(pkt)
    return dst


def _frames(path: Path) -> int:
    """Pictures that decode; the packet cut in half at a truncation point does not, as in ffmpeg."""
    n = 0
    with av.open(str(path)) as c:
        for pkt in c.demux(video=0):
            try:
                n += len(pkt.decode())
            except av.error.InvalidDataError:
                continue
    return n


def _process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["process", *args, "--effect", "fill", "--no-progress"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --------------------------------------------------------------------------- truncated input


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_truncated_file_ends_with_a_warning_and_the_missing_frames_counted(
    clip: Path, tmp_path: Path, container: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    whole = _faststart_copy(clip, tmp_path / "whole.mp4") if container == "mp4" else tmp_path / "whole.mkv"
    if container == "mkv":
        with av.open(str(clip)) as inp, av.open(str(whole), "w") as out:
            o = out.add_stream_from_template(inp.streams.video[0])
            for pkt in inp.demux(video=0):
                if pkt.dts is not None:
                    pkt.stream = o
                    out.mux(pkt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(data[: len(data) // 2])
    decodable = _frames(cut)
    assert 10 < decodable < FRAMES - 20, decodable

    report = tmp_path / "r.json"
    rc, out, err = _process(capsys, str(cut), str(tmp_path / "o.mkv"), "--report", str(report))
    assert rc == 0, err
    missing = json.loads(report.read_text())["frames_missing"]
    assert abs(missing - (FRAMES - decodable)) <= 2, (missing, decodable)
    assert f"the source ENDED EARLY, about {missing} frames short" in out
    assert "before the 4.00 s its header declares" in caplog.text and "truncated" in caplog.text
    caplog.clear()

    # the same file whole: no warning, nothing counted
    rc, out, err = _process(capsys, str(whole), str(tmp_path / "o2.mkv"), "--report", str(report))
    assert rc == 0 and json.loads(report.read_text())["frames_missing"] == 0
    assert "ENDED EARLY" not in out and "declares" not in caplog.text


def test_missing_frames_allows_half_a_second_of_slack() -> None:
    assert missing_frames(3.6, 4.0, 25.0) == 0  # rounding, a last frame's duration, edit lists
    assert missing_frames(2.0, 4.0, 25.0) == 50
    assert missing_frames(4.2, 4.0, 25.0) == 0


# --------------------------------------------------------------------------- overwriting an output


def test_an_existing_output_is_replaced_with_a_warning_quietly_with_y_and_refused_with_n(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "o.mkv"
    out.write_bytes(b"precious")
    rc, _, err = _process(capsys, str(clip), str(out), "-n")
    assert rc == 2 and out.read_bytes() == b"precious"
    assert err.strip().splitlines() == [f"privacy-filter process: error: output {out} already exists and overwriting is off (-n, output.overwrite: false); remove it, or pass -y"]

    rc, _, err = _process(capsys, str(clip), str(out))  # the default: replaced, and the log says so
    assert rc == 0 and _frames(out) == FRAMES
    assert f"output {out} already exists and will be replaced" in caplog.text
    caplog.clear()

    rc, _, err = _process(capsys, str(clip), str(out), "-y")
    assert rc == 0 and _frames(out) == FRAMES and "already exists" not in caplog.text


def test_a_service_output_with_overwrite_false_is_refused_before_anything_starts(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.mkv"
    out.write_bytes(b"precious")
    svc = tmp_path / "svc.yaml"
    svc.write_text(f"streams:\n  - {{id: lobby, source: {clip}, output: {{url: {out}, overwrite: false}}}}\n")
    rc = main(["run", str(svc)])
    err = capsys.readouterr().err
    assert rc == 2 and out.read_bytes() == b"precious"
    assert f"stream 'lobby': output {out} already exists and output.overwrite is false" in err


# --------------------------------------------------------------------------- --tiles on process


def test_process_takes_tiles_and_refuses_them_where_no_full_frame_segmentation_runs(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from privacy_filter.cli import build_parser
    from privacy_filter.cli.commands import build_plan

    args = build_parser().parse_args(["process", str(clip), str(tmp_path / "o.mkv"), "--tiles", "2x1"])
    assert build_plan(args).tiles == "2x1"
    rc, _, err = _process(capsys, str(clip), str(tmp_path / "o.mkv"), "--preset", "cctv", "--tiles", "2x1")
    assert rc == 2
    assert "tiles: 2x1 tiles the full-frame segmentation, which does not run with the cctv cover" in err


# --------------------------------------------------------------------------- error wording


def test_a_colour_out_of_range_and_short_names_both_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        stream_config("in.mp4", "out.mkv", overrides={"effect": {"kind": "fill", "color": [300, 0]}})
    assert str(e.value) == ("stream 'main': effect.color: must be [R, G, B], each an integer 0..255: 2 values given, 3 needed; [0] = 300 is not an integer 0..255; got [300, 0]")
    assert stream_config("in.mp4", "out.mkv", overrides={"effect": {"color": [255, 0, 7]}}).effect.color == (255, 0, 7)


def test_a_file_that_is_not_a_model_is_named_as_such_not_as_an_unknown_model(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _process(capsys, str(clip), str(tmp_path / "o.mkv"), "--model", str(clip))
    assert rc == 2
    assert f"error: {clip} is a .mp4 file, not a model: give an .onnx file, a spec .yaml or a DeepStream config" in err
    assert "unknown model" not in err


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_closes_its_output_prints_its_summary_and_accounts_for_every_frame(tmp_path: Path, sig: signal.Signals) -> None:
    """A live source ends when the user stops it: the MP4 must still play (its index is written at
    close), the summary must still come, and every frame taken in is either out or counted dropped."""
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "privacy_filter", "process", "lavfi:testsrc2=size=160x120:rate=25,realtime", str(out), "--effect", "fill", "--no-progress", "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 2000):  # frames are flowing
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    rep = json.loads(report.read_text())
    assert rep["interrupted"] is True and rep["frames_out"] >= 20
    assert rep["frames_in"] == rep["frames_out"] + rep["frames_dropped"], rep
    assert f"{out}: {rep['frames_out']} frames out of {rep['frames_in']} in" in stdout and "(interrupted; the output was closed)" in stdout
    assert _frames(out) == rep["frames_out"]  # a complete, playable MP4
