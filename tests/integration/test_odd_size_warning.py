"""Odd picture sizes are padded to even with one visible warning per output (issue 12, rough edges)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.io.av_sink import Encoder
from privacy_filter.media import VideoInfo
from support.media_clips import read_video


def test_odd_size_is_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w, h = 65, 49
    cw, ch = chroma_size(w, h)
    out = tmp_path / "odd.mkv"
    with caplog.at_level(logging.WARNING, logger="privacy_filter.io.av_sink"):
        enc = Encoder(str(out), VideoInfo(w, h, Fraction(1, 25), Fraction(25), None, None, "rawvideo", "yuv420p"))
        for k in range(5):
            enc.write(YuvFrame(np.full((h, w), 100, np.uint8), np.full((ch, cw), 128, np.uint8), np.full((ch, cw), 128, np.uint8), pts=k, time_base=Fraction(1, 25), index=k))
        enc.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "is odd" in r.getMessage()]
    assert len(warnings) == 1 and "65x49" in warnings[0].getMessage() and "66x50" in warnings[0].getMessage()
    assert len(read_video(out)[0]) == 5
