"""The CCTV cover: motion layer (learning, global change, first pass), zones, the fused cover map,
and the stage's handling of frames covered whole on purpose.  Synthetic frames only."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from privacy_filter.config import DetectorConfig, EffectConfig, MaskConfig, MotionConfig, ZoneConfig
from privacy_filter.engines.finder import CoverSettings, PersonFinder, hold_missed, pad_boxes
from privacy_filter.engines.motion import MotionLayer, RunningMedian, dilate_ellipse, ellipse_rects, first_pass_background, grid_size, median_background
from privacy_filter.engines.zones import zone_masks
from privacy_filter.frames import CoverWhole, YuvFrame
from privacy_filter.stage import FilterStage, StageStream

W, H, FPS = 320, 240, 10.0


def scene(t: int, person: bool = True, level: int = 100) -> YuvFrame:
    """A flat background with a bright 20x40 'person' walking right 4 px per frame."""
    f = YuvFrame.blank(W, H, index=t, stream_id="cam")
    f.y[...] = level
    if person:
        x = 20 + 4 * t
        f.y[100:140, x : x + 20] = 220
    return f


def motion(**kw: float) -> MotionConfig:
    return MotionConfig(enabled=True, **kw)  # type: ignore[arg-type]


def test_grid_size_keeps_aspect_and_never_upscales() -> None:
    assert grid_size(1920, 1080, 240) == (427, 240)
    assert grid_size(320, 180, 240) == (320, 180)


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((1920, 1080), (960, 540)),
        ((1280, 720), (960, 540)),
        ((3840, 2160), (960, 540)),
        ((1024, 576), (960, 540)),
        ((720, 576), (675, 540)),
        ((720, 540), (720, 540)),
        ((640, 480), (640, 480)),
        ((480, 360), (480, 360)),
        ((320, 180), (320, 180)),
    ],
)
def test_unset_grid_height_is_the_source_height_up_to_540_rows(size: tuple[int, int], grid: tuple[int, int]) -> None:
    assert grid_size(*size, None) == grid
    assert MotionConfig().height is None  # the default, and the cctv preset's


@pytest.mark.parametrize("count", [25, 24, 1])
def test_median_background_in_row_bands_equals_the_stacked_median(count: int) -> None:
    """25 samples of a 960x540 grid take 21 bands of 1 MB; odd, even and single counts."""
    rng = np.random.default_rng(count)
    lumas = [rng.integers(0, 256, (540, 960), np.uint8) for _ in range(count)]
    got = median_background(lumas)
    assert got.dtype == np.uint8 and got.shape == (540, 960)
    assert np.array_equal(got, np.median(np.stack(lumas), axis=0).astype(np.uint8))


@pytest.mark.parametrize("k", [1, 3, 5, 9, 15, 23, 31, 45])
def test_ellipse_dilation_by_rectangles_is_opencvs_bit_for_bit(k: int) -> None:
    """The motion layer's dilation must be exactly ``cv2.dilate`` with OpenCV's ellipse: sparse
    specks (isolated pixels show the element itself), blobs, and marks on every border."""
    rng = np.random.default_rng(k)
    for density in (0.0005, 0.01, 0.2):
        m = np.where(rng.random((97, 131)) < density, 255, 0).astype(np.uint8)
        m[0, 5] = m[-1, -3] = m[40, 0] = m[7, -1] = 255
        expected = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        np.testing.assert_array_equal(dilate_ellipse(m, k), expected)
    one = np.zeros((k + 4, k + 4), np.uint8)
    one[(k + 4) // 2, (k + 4) // 2] = 255
    element = dilate_ellipse(one, k)[2 : k + 2, 2 : k + 2]
    np.testing.assert_array_equal(element > 0, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) > 0)
    assert len(ellipse_rects(k)) <= k // 2 + 1  # fewer rectangles than element rows: the point of it


def test_running_median_is_worked_out_in_bands_and_swapped_in_whole() -> None:
    """A live background's new median is spread over the frames until the next sample (a band of
    ceil(h / every) rows each), then replaces the old one at once: never half old, half new."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (40, 30), np.uint8) for _ in range(12)]
    rm = RunningMedian(history=4 * 15)  # a sample every 4th frame
    assert rm.every == 4
    seen = []
    for f in frames:
        rm.foreground(f, 18.0)
        assert rm.background is not None
        seen.append(rm.background.copy())
    # seen[k] is the background after frame k + 1; samples at frames 4 and 8 (k = 3, 7), each
    # worked out over 4 calls (bands of 10 rows) and swapped in at the 4th
    two = np.median(np.stack([frames[0], frames[3]]), axis=0).astype(np.uint8)
    three = np.median(np.stack([frames[0], frames[3], frames[7]]), axis=0).astype(np.uint8)
    assert all(np.array_equal(seen[k], frames[0]) for k in range(6))
    assert all(np.array_equal(seen[k], two) for k in range(6, 10))
    assert np.array_equal(seen[10], three) and np.array_equal(seen[11], three)


def test_live_source_covers_whole_while_learning_then_finds_the_mover() -> None:
    layer = MotionLayer(W, H, FPS, motion(learn_s=1.0), live=True)
    reasons = [layer.step(scene(t).y)[1] for t in range(10)]
    assert reasons == ["learning"] * 10  # learn_s x fps frames
    mask, reason = layer.step(scene(10).y)
    assert reason is None
    assert mask[120, 60 + 10] == 255  # the person now (x = 60..80)
    assert mask[20, 300] == 0  # static background


def test_file_with_first_pass_needs_no_learning_period() -> None:
    layer = MotionLayer(W, H, FPS, motion(), live=False)
    layer.prime(first_pass_background([scene(0, person=False).y] * 5))
    mask, reason = layer.step(scene(0).y)
    assert reason is None and mask[120, 30] == 255 and mask[20, 300] == 0


def test_global_change_covers_whole_then_relearns() -> None:
    layer = MotionLayer(W, H, FPS, motion(relearn_s=0.5, hold_frames=0), live=False)
    layer.prime(first_pass_background([scene(0, person=False).y] * 5))
    for t in range(3):
        assert layer.step(scene(t).y)[1] is None
    # lights switched on: every pixel changes by far more than the threshold
    out = [layer.step(scene(t, level=180).y)[1] for t in range(3, 12)]
    assert out[:5] == ["global_change"] * 5  # relearn_s x fps
    assert out[-1] is None
    mask, _ = layer.step(scene(12, level=180).y)
    assert mask[20, 300] == 0  # the new background is learned, not covered


def test_zones_rasterise_normalised_polygons() -> None:
    z = zone_masks([ZoneConfig(mode="privacy", points=[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)])], 100, 50)
    assert z.exclude is None and z.privacy is not None
    assert z.privacy[10, 10] == 255 and z.privacy[40, 80] == 0 and z.privacy[24, 49] == 255


def test_pad_boxes_margin_and_head_extra() -> None:
    b = pad_boxes(np.array([[100, 100, 120, 200, 0.9]], np.float32), 1000, 500, pad_frac=0.01, head_extra=0.1)
    np.testing.assert_allclose(b[0, :4], [95, 85, 125, 205])


def test_hold_missed_keeps_only_unmatched_boxes_for_n_runs() -> None:
    a = np.array([[0, 0, 10, 10, 1]], np.float32)
    held = hold_missed([], a, 2)
    held = hold_missed(held, np.zeros((0, 5), np.float32), 2)  # missed once: kept
    assert len(held) == 1 and held[0][1] == 1
    held = hold_missed(held, np.array([[1, 1, 11, 11, 1]], np.float32), 2)  # found again: the new box only
    assert len(held) == 1 and held[0][1] == 0
    for _ in range(3):
        held = hold_missed(held, np.zeros((0, 5), np.float32), 2)
    assert held == []


class FixedDetector:
    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = boxes
        self.calls = 0

    def detect_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
        self.calls += 1
        return [self.boxes for _ in frames]


def test_cover_map_is_motion_or_boxes_or_privacy_minus_exclude_for_motion_only() -> None:
    still = np.array([[200, 20, 240, 100, 0.9]], np.float32)  # a person standing still, found by the detector
    zones = (
        ZoneConfig(mode="privacy", points=[(0.0, 0.9), (0.1, 0.9), (0.1, 1.0), (0.0, 1.0)]),
        ZoneConfig(mode="exclude", points=[(0.0, 0.0), (1.0, 0.0), (1.0, 0.55), (0.0, 0.55)]),
    )  # top half
    s = CoverSettings(detector=DetectorConfig(name="test", pad_frac=0.0, head_extra=0.0), motion=motion(hold_frames=0), zones=zones)
    finder = PersonFinder({"cam": s}, detector=FixedDetector(still))
    finder.prime("cam", [scene(0, person=False).y] * 5)
    (m,) = finder.infer_yuv([scene(0)])
    assert isinstance(m, np.ndarray) and m.shape == (240, 320)
    assert m[137, 30] == 1.0 and m[110, 30] == 0.0  # moving person: covered below the exclude zone only
    assert m[60, 220] == 1.0  # detector box inside the exclude zone stays covered
    assert m[235, 5] == 1.0  # privacy zone
    assert m[200, 300] == 0.0
    # motion inside the exclude zone is not covered
    f = scene(1)
    f.y[20:40, 20:40] = 250
    (m2,) = finder.infer_yuv([f])
    assert isinstance(m2, np.ndarray) and m2[30, 30] == 0.0


def test_a_file_keeps_its_first_pass_background_across_a_size_change() -> None:
    """Only the first pass's median is kept; a new frame size gets it resized, not a learning
    period (a file has no live start to learn at) and no ghost of the old size."""
    s = CoverSettings(detector=DetectorConfig(name="none"), motion=motion(hold_frames=0))
    finder = PersonFinder({"cam": s})
    finder.prime("cam", [scene(t, person=t % 2 == 0).y for t in range(0, 50, 2)])  # a person in half the samples: a median, not a mean
    (m,) = finder.infer_yuv([scene(0)])
    assert isinstance(m, np.ndarray) and m[120, 30] == 1.0 and m[20, 300] == 0.0
    big = YuvFrame.blank(2 * W, 2 * H, index=1, stream_id="cam")
    big.y[...] = 100  # the same empty scene at twice the size ...
    big.y[300:380, 400:440] = 220  # ... with one person
    (m2,) = finder.infer_yuv([big])
    assert isinstance(m2, np.ndarray), m2  # not CoverWhole("learning")
    gh, gw = m2.shape
    assert m2[gh * 340 // 480, gw * 420 // 640] == 1.0
    assert m2[gh // 12, gw * 600 // 640] == 0.0 and m2[gh // 2, gw // 10] == 0.0


def test_first_pass_samples_of_two_sizes_are_brought_to_one() -> None:
    """A file whose size changes part way: the first pass samples both sizes, and the median is
    still taken (each sample resized to the first's), not a crash at start."""
    s = CoverSettings(detector=DetectorConfig(name="none"), motion=motion(hold_frames=0))
    finder = PersonFinder({"cam": s})
    big = YuvFrame.blank(2 * W, 2 * H, index=0, stream_id="cam")
    big.y[...] = 100
    finder.prime("cam", [scene(0, person=False).y] * 3 + [big.y] * 3)
    (m,) = finder.infer_yuv([scene(0)])
    assert isinstance(m, np.ndarray) and m[120, 30] == 1.0 and m[20, 300] == 0.0


def test_detector_every_n_frames_reuses_boxes() -> None:
    """Frames passed one at a time (live): runs on the first frame, then on the last of every N
    (frames 0, 2, 5), the boxes held in between."""
    det = FixedDetector(np.array([[10, 10, 50, 90, 0.9]], np.float32))
    s = CoverSettings(detector=DetectorConfig(name="test", every=3))
    finder = PersonFinder({"cam": s}, detector=det)
    maps = [finder.infer_yuv([scene(t, person=False)])[0] for t in range(6)]
    assert det.calls == 3 and all(isinstance(m, np.ndarray) and m[50, 30] == 1.0 for m in maps)


def test_detector_rate_ties_the_cadence_to_time() -> None:
    d = DetectorConfig(name="test", rate=12.5)
    assert [d.every_at(fps) for fps in (7.0, 10.0, 12.5, 25.0, 30.0, 50.0)] == [1, 1, 1, 2, 2, 4]
    assert DetectorConfig(name="test", every=3, rate=12.5).every_at(25.0) == 3  # `every` stays the least step
    assert DetectorConfig(name="test", every=2).every_at(50.0) == 2  # no rate: frames, whatever the fps
    det = FixedDetector(np.array([[10, 10, 50, 90, 0.9]], np.float32))
    finder = PersonFinder({"cam": CoverSettings(detector=d, fps=25.0)}, detector=det)
    maps = [finder.infer_yuv([scene(t, person=False)])[0] for t in range(6)]
    assert det.calls == 4 and all(isinstance(m, np.ndarray) and m[50, 30] == 1.0 for m in maps)  # frames 0, 1, 3, 5


def test_file_every_applies_only_where_boxes_are_moved_and_keeps_a_minimum_rate() -> None:
    """The preset's file cadence: every 2nd frame at least for files filtered in groups (boxes
    moved between runs), never below 3.5 runs per second; live sources and ungrouped callers (the
    service) hold boxes, so they keep the time rule alone."""
    d = DetectorConfig(name="test", rate=12.5, file_every=2, min_rate=3.5)
    fps = (5.0, 6.9, 7.0, 10.0, 25.0, 50.0)
    assert [d.every_at(f, moved=True) for f in fps] == [1, 1, 2, 2, 2, 4]
    assert [d.every_at(f) for f in fps] == [1, 1, 1, 1, 2, 4]
    assert DetectorConfig(name="test", file_every=3, min_rate=2.0).every_at(30.0, moved=True) == 3  # no rate: file_every, bounded by min_rate
    assert DetectorConfig(name="test", file_every=3, min_rate=10.0).every_at(25.0, moved=True) == 2
    grouped = CoverSettings.from_config(SimpleNamespace(detector=d), live=False, fps=10.0, grouped=True)
    live = CoverSettings.from_config(SimpleNamespace(detector=d), live=True, fps=10.0, grouped=True)
    service = CoverSettings.from_config(SimpleNamespace(detector=d), live=False, fps=10.0)
    assert (grouped.detector_every, live.detector_every, service.detector_every) == (2, 1, 1)
    det = WalkingDetector()
    finder = PersonFinder({"cam": grouped}, detector=det)
    assert finder.frames_per_call("cam") == 2
    for start in range(0, 6, 2):
        finder.infer_yuv([YuvFrame.blank(W, H, index=t, stream_id="cam") for t in range(start, start + 2)])
    assert det.seen == [0, 1, 3, 5]


class WalkingDetector:
    """Finds one 20x40 person at x = 20 + 8 t on frame t (the frame's index), and records which frames it saw."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def detect_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
        self.seen += [f.index for f in frames]
        return [np.array([[20 + 8 * f.index, 100, 40 + 8 * f.index, 140, 0.9]], np.float32) for f in frames]


def test_frames_between_runs_get_boxes_moved_between_the_runs_when_the_call_ends_on_a_run() -> None:
    """A file stream, detector on every 4th frame, frames passed 4 at a time (``frames_per_call``):
    each frame between runs is covered where the person is then, not where the last run saw them."""
    s = CoverSettings(detector=DetectorConfig(name="test", every=4, pad_frac=0.0, head_extra=0.0))
    det = WalkingDetector()
    finder = PersonFinder({"cam": s}, detector=det)
    assert finder.frames_per_call("cam") == 4
    maps: list = []
    for start in (0, 4, 8):
        maps += finder.infer_yuv([YuvFrame.blank(W, H, index=t, stream_id="cam") for t in range(start, start + 4)])
    assert det.seen == [0, 3, 7, 11]
    for t in range(12):
        m = maps[t]
        assert isinstance(m, np.ndarray)
        x0, x1 = 20 + 8 * t, 40 + 8 * t  # the person on frame t
        assert (m[100:140, x0:x1] == 1.0).all(), t
        # moved, not held: the box never reaches back to where the previous run saw the person
        # (grown by BETWEEN_GROW of the 32 px move, ~3 px, on each side)
        if t not in det.seen and t > 3:
            assert not m[120, : x0 - 5].any(), t


def test_a_live_stream_is_not_batched_and_holds_boxes() -> None:
    s = CoverSettings(detector=DetectorConfig(name="test", every=4), live=True)
    assert PersonFinder({"cam": s}, detector=WalkingDetector()).frames_per_call("cam") == 1
    assert PersonFinder({"cam": CoverSettings(detector=DetectorConfig(name="test", every=4))}, detector=WalkingDetector()).frames_per_call("cam") == 4
    assert PersonFinder({"cam": CoverSettings()}).frames_per_call("cam") == 1  # no detector: nothing to wait for


def test_the_stage_asks_the_engine_how_many_frames_to_batch() -> None:
    spec = {"cam": StageStream(effect=EffectConfig(kind="fill"))}
    finder = PersonFinder({"cam": CoverSettings(detector=DetectorConfig(name="test", every=3))}, detector=WalkingDetector())
    assert FilterStage(finder, spec).frames_per_call("cam") == 3

    class Plain:  # a segmenter without per-stream state: any batch will do
        def infer_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
            return [np.zeros((f.height, f.width), np.float32) for f in frames]

    assert FilterStage(Plain(), spec).frames_per_call("cam") == 1


def test_match_people_pairs_by_centre_distance_so_small_fast_people_match() -> None:
    from privacy_filter.engines.finder import match_people

    before = np.array([[0, 0, 10, 30, 0.9], [100, 0, 110, 30, 0.9], [200, 0, 260, 180, 0.9]], np.float32)
    # person 0 moved 15 px (more than their width: no overlap), person 1 left, a near person (200)
    # is not paired with a far one of a third of their height
    after = np.array([[15, 0, 25, 30, 0.9], [205, 0, 215, 30, 0.9]], np.float32)
    assert match_people(before, after) == [(0, 0)]


def test_between_runs_moves_matched_boxes_and_keeps_unmatched_ones() -> None:
    from privacy_filter.engines.finder import BETWEEN_GROW, between_runs

    before = np.array([[0, 0, 10, 30, 0.9], [300, 0, 310, 30, 0.9]], np.float32)
    after = np.array([[20, 0, 30, 30, 0.9], [500, 0, 510, 30, 0.9]], np.float32)
    out = between_runs(before, after, 0.5)
    g = BETWEEN_GROW * 20
    np.testing.assert_allclose(out[0, :4], [10 - g, 0, 20 + g, 30], atol=1e-5)  # halfway, grown by a share of the move
    assert {tuple(b[:4]) for b in out[1:]} == {(300, 0, 310, 30), (500, 0, 510, 30)}  # one end only: kept as found
    assert between_runs(np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32), 0.5).shape == (0, 5)


def test_hold_missed_does_not_hold_a_person_who_walked_off_their_box() -> None:
    old = hold_missed([], np.array([[0, 0, 10, 30, 0.9]], np.float32), 2)
    moved = np.array([[14, 0, 24, 30, 0.9]], np.float32)  # no overlap with the old box: the same person, moved
    assert [tuple(b[:4]) for b, _ in hold_missed(old, moved, 2)] == [(14, 0, 24, 30)]


def test_stage_covers_learning_frames_whole_and_counts_the_reason() -> None:
    s = CoverSettings(motion=motion(learn_s=0.3), live=True, fps=FPS)
    finder = PersonFinder({"cam": s})
    stage = FilterStage(finder, {"cam": StageStream(effect=EffectConfig(kind="fill"), mask=MaskConfig())})
    res = [stage.process([scene(t)])[0] for t in range(5)]
    assert [r.status for r in res] == ["covered"] * 3 + ["filtered"] * 2
    assert res[0].reason == "learning" and res[0].mask is not None and (res[0].mask == 255).all()
    assert stage.counters.get("cam", "covered_whole:learning") == 3
    assert stage.counters.get("cam", "frames_covered_whole") == 3
    assert isinstance(finder.infer_yuv([scene(5)])[0], np.ndarray)
    assert CoverWhole("learning").reason == "learning"


def test_a_failing_detector_fails_closed() -> None:
    class Broken:
        def detect_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
            raise RuntimeError("boom")

    finder = PersonFinder({"cam": CoverSettings(detector=DetectorConfig(name="x"))}, detector=Broken())
    stage = FilterStage(finder, {"cam": StageStream(effect=EffectConfig(kind="fill"))})
    (r,) = stage.process([scene(0)])
    assert r.status == "covered" and r.mask is not None and (r.mask == 255).all()


def test_stills_any_size_go_through_the_finder() -> None:
    det = FixedDetector(np.array([[10, 10, 50, 90, 0.9]], np.float32))
    finder = PersonFinder({"still": CoverSettings(detector=DetectorConfig(name="test"))}, detector=det)
    for h, w in ((414, 455), (101, 77)):
        (m,) = finder.infer_rgb([np.zeros((h, w, 3), np.uint8)], order="bgr")
        assert m.shape == (h, w) and m[50, 30] == 1.0


def test_segment_pastes_a_small_silhouette_and_fills_the_box_only_when_the_crop_is_nearly_empty() -> None:
    """``cover: segment``'s fallback: a crop mask covering under MIN_CROP_FILL (5 %) of its box is a
    model miss, and the box is filled; a smaller but real silhouette is pasted as it is (docs/cctv.md)."""
    from privacy_filter.engines.finder import MIN_CROP_FILL, paste_crop

    assert MIN_CROP_FILL == 0.05
    rect, box = (0, 0, 100, 100), np.array([0, 0, 100, 100, 0.9], np.float32)
    for share, pasted in ((0.10, True), (0.06, True), (0.03, False), (0.0, False)):
        prob = np.zeros((100, 100), np.float32)
        prob[: int(round(share * 100)), :] = 1.0  # the top `share` of the box is person
        grid = np.zeros((50, 50), np.float32)
        assert paste_crop(grid, prob, rect, box, 0.5, 0.5) is pasted, share
        assert grid.mean() == (share if pasted else 0.0), share  # pasted exactly, or left for fill_boxes


@pytest.mark.parametrize(("fill_score", "filled"), [(0.3, {0.9, 0.3}), (0.0, {0.9, 0.3, 0.25}), (0.95, set())])
def test_segment_fills_an_empty_crop_only_for_a_box_scored_at_least_fill_score(fill_score: float, filled: set[float]) -> None:
    """``cover: segment`` where the segmenter finds nobody in any crop: a box is filled whole only
    when its score reaches ``detector.fill_score``; a weaker one stays uncovered (both models doubt it)."""
    from privacy_filter.engines.finder import fills_empty_crop

    scores = (0.9, 0.3, 0.25)
    boxes = np.array([[10 + 100 * i, 20, 60 + 100 * i, 180, s] for i, s in enumerate(scores)], np.float32)

    class NobodySegmenter:  # every crop comes back empty: the fallback decides alone
        def infer_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
            return [np.zeros((f.height, f.width), np.float32) for f in frames]

    s = CoverSettings(detector=DetectorConfig(name="test", fill_score=fill_score, pad_frac=0.0, head_extra=0.0), cover="segment")
    finder = PersonFinder({"still": s}, detector=FixedDetector(boxes), segmenter=NobodySegmenter())
    (m,) = finder.infer_rgb([np.full((200, 320, 3), 90, np.uint8)])
    for i, score in enumerate(scores):
        inside = m[20:180, 10 + 100 * i : 60 + 100 * i]
        assert inside.min() == inside.max() == (1.0 if score in filled else 0.0), (score, fill_score)
    assert m[:, 62:108].max() == 0.0  # nothing outside the boxes
    assert fills_empty_crop(np.array([0, 0, 5, 5], np.float32), 0.99)  # a box without a score: always filled
