"""End to end: ``eval-video --preset cctv`` on the CCTV dev clips meets the bars (docs/cctv.md).

The detector is the reference NanoDet-g conversion behind the ``Detector`` protocol
(tests/support/reference_detector.py) until the product's own engine is merged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy_filter.config import stream_config
from privacy_filter.evaluate import evaluate_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(shared_data: Path):  # type: ignore[no-untyped-def]
    from support.reference_detector import ReferenceDetector

    model = shared_data / "models" / "nanodet_g_reference.onnx"
    if not model.is_file():
        pytest.skip(f"reference detector not found at {model}")
    return ReferenceDetector(model)


@pytest.mark.parametrize("clip", ["pets09_s2l1", "tud_campus"])
def test_cctv_preset_hides_every_person(clip: str, shared_data: Path, detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = shared_data / "cctv" / clip
    video = str(d / "video.mp4")
    cfg = stream_config(video, "", preset="cctv")
    picture = tmp_path / "worst.png"
    r = evaluate_video(video, d / "gt.csv", cfg, picture=picture, detector=detector, progress=False)
    assert r.hidden >= 0.98, r
    assert r.never_exposed >= 0.90, r
    assert r.false_cover <= 0.10, r
    assert r.frames_covered_whole == 0  # a file's background comes from the first pass: no learning period
    assert (r.worst_frame < 0) == (r.worst_picture is None)
