"""``privacy-filter demo``: a clip with real people, both presets, a before/after picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.cli import main
from support.media_clips import has_audio, read_audio_packets, read_video

pytest.importorskip("skimage", reason="the demo's sample photo comes from scikit-image (test extra)")


def test_demo_makes_both_outputs_and_a_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = ["input.mp4", "cctv.mp4", "video-call.mp4", "before-after.png"]
    for name in names:
        assert (out / name).is_file()
        assert str(out / name) in printed

    t_in, y_in = read_video(out / "input.mp4")
    t_cctv, y_cctv = read_video(out / "cctv.mp4")
    t_call, y_call = read_video(out / "video-call.mp4")
    assert len(t_in) == 100 and t_cctv == t_in and t_call == t_in
    # audio: dropped by cctv, copied bit for bit by video-call
    assert not has_audio(out / "cctv.mp4")
    assert read_audio_packets(out / "video-call.mp4") == read_audio_packets(out / "input.mp4") != []

    # the people were found and changed; cctv leaves most of the room alone, video-call most of the people
    k = 30
    d_cctv = np.abs(y_in[k].astype(int) - y_cctv[k])
    d_call = np.abs(y_in[k].astype(int) - y_call[k])
    changed_cctv = (d_cctv > 12).mean()
    assert 0.02 < changed_cctv < 0.5
    assert np.median(d_cctv) <= 2  # the background is the input, up to codec noise
    assert np.median(d_call) > np.median(d_cctv)  # the room is blurred

    pic = cv2.imread(str(out / "before-after.png"))
    assert pic.shape == (360, 3 * 640, 3)
