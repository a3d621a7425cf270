"""``process X X`` and two service streams writing one file (issue 12, defect 14): refused, exit 2, input intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from privacy_filter.cli import main
from privacy_filter.config import load_service
from privacy_filter.errors import ConfigError
from support.media_clips import make_av_clip


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    return make_av_clip(tmp_path / "in.mp4", frames=5, size=(64, 48), audio=False)


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_process_refuses_to_write_over_its_input(clip: Path, tmp_path: Path, spelling: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    before = clip.read_bytes()
    (tmp_path / "sub").mkdir()
    if spelling == "same":
        out = str(clip)
    elif spelling == "dotted":
        monkeypatch.chdir(tmp_path / "sub")
        out = "../sub/./../in.mp4"
    elif spelling == "symlink":
        os.symlink(clip, tmp_path / "link.mp4")
        out = str(tmp_path / "link.mp4")
    else:
        os.link(clip, tmp_path / "hard.mp4")
        out = str(tmp_path / "hard.mp4")
    rc = main(["process", str(clip), out, "--effect", "fill", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is the input file" in lines[0], err
    assert clip.read_bytes() == before


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "svc.yaml"
    p.write_text(text)
    return p


def test_two_service_streams_writing_one_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    out = tmp_path / "out.mkv"
    svc = _write(tmp_path, f"streams:\n  cam1: {{source: a.mp4, output: {out}}}\n  cam2: {{source: b.mp4, output: {tmp_path}/d/../out.mkv}}\n")
    with pytest.raises(ConfigError, match=r"'cam1' and 'cam2' both write"):
        load_service(svc)


def test_a_service_stream_writing_a_source_is_a_config_error(tmp_path: Path, clip: Path) -> None:
    svc = _write(tmp_path, f"streams:\n  cam1: {{source: {clip}, output: a.mkv}}\n  cam2: {{source: b.mp4, output: {clip}}}\n")
    with pytest.raises(ConfigError, match=r"'cam2' writes .* stream 'cam1''s source"):
        load_service(svc)


def test_distinct_outputs_and_urls_still_load(tmp_path: Path) -> None:
    svc = _write(
        tmp_path,
        "streams:\n  cam1: {source: a.mp4, output: a.mkv}\n  cam2: {source: b.mp4, output: b.mkv}\n"
        "  cam3: {source: 'rtsp://h/s', output: 'udp://239.0.0.1:1234'}\n  cam4: {source: 'rtsp://h/s', output: 'udp://239.0.0.1:1234'}\n",
    )
    assert len(load_service(svc).streams) == 4
