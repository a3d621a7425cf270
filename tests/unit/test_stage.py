"""Filter stage with the real default model and the real CPU effects.

Fail-closed injection uses small engines that raise, stall or are absent: those are
the failure being tested, not stand-ins for the model.  Everything else is real.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.frames import YuvFrame
from privacy_filter.io.av_source import Decoder
from privacy_filter.stage import FilterStage, StageStream

FILL_BLACK = EffectConfig(kind="fill", color=(0, 0, 0))  # covered pixels become Y=16, U=V=128 (BT.601)


@pytest.fixture(scope="module")
def people_frames(shared_data: Path) -> list[YuvFrame]:
    """Four consecutive frames with a person standing in the room (10 s into the video)."""
    out = []
    with Decoder(str(shared_data / "videos" / "one-by-one-person-detection.mp4")) as dec:
        for f in dec:
            if f.index >= 100:
                out.append(f.copy())
            if len(out) == 4:
                break
    return out


@pytest.fixture(scope="module")
def segmenter():
    from privacy_filter.backends import create_segmenter

    return create_segmenter(threads=1)


def fresh(frames: list[YuvFrame], stream_id: str = "a") -> list[YuvFrame]:
    out = []
    for f in frames:
        c = f.copy()
        c.stream_id = stream_id
        out.append(c)
    return out


def fully_black(f: YuvFrame) -> bool:
    return bool((f.y == 16).all() and (f.u == 128).all() and (f.v == 128).all())


class Raising:
    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class Stalling:
    """Blocks until released (or 3 s), like an engine hung in a driver call."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        self.calls += 1
        self.release.wait(3.0)
        return self.inner.infer_yuv(frames)


class Counting:
    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.batches: list[int] = []

    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        self.batches.append(len(frames))
        return self.inner.infer_yuv(frames)


def test_real_model_covers_the_person_and_leaves_the_background(people_frames, segmenter) -> None:  # noqa: ANN001
    stage = FilterStage(segmenter, {"a": StageStream(effect=FILL_BLACK, mask=MaskConfig(threshold=0.5))})
    frames = fresh(people_frames)
    before = [f.y.copy() for f in frames]
    results = stage.process(frames)
    for res, orig in zip(results, before):
        assert res.status == "filtered" and res.frame is not None and res.mask is not None
        covered = res.mask == 255
        assert 0.03 < covered.mean() < 0.4, "a standing person covers a few % of the frame"
        assert (res.frame.y[covered] == 16).all()
        np.testing.assert_array_equal(res.frame.y[res.mask == 0], orig[res.mask == 0])
    assert stage.counters.get("a", "frames_covered_whole") == 0


def test_batch_across_streams_is_one_inference_and_each_mask_fits_its_own_frame(people_frames, segmenter) -> None:  # noqa: ANN001
    spy = Counting(segmenter)
    stage = FilterStage(
        spy,
        {
            "a": StageStream(effect=FILL_BLACK),
            "b": StageStream(effect=EffectConfig(kind="none")),
        },
    )
    a = fresh(people_frames[:1], "a")[0]
    b = fresh(people_frames[:1], "b")[0]
    b.y, b.u, b.v = (np.ascontiguousarray(p[:, ::-1]) for p in (b.y, b.u, b.v))  # mirrored picture
    b_before = b.y.copy()
    ra, rb = stage.process([a, b])
    assert spy.batches == [2]
    # the mirrored frame's mask is the mirror of the original's (within the model's own asymmetry)
    agree = ((ra.mask[:, ::-1] == 255) == (rb.mask == 255)).mean()
    assert agree > 0.97 and (rb.mask == 255).mean() > 0.03
    np.testing.assert_array_equal(rb.frame.y, b_before)  # kind none: mask only, picture untouched
    assert (ra.frame.y[ra.mask == 255] == 16).all()


@pytest.mark.parametrize("engine", ["raises", "not-ready", "wrong-count"])
def test_engine_failure_covers_every_frame_whole(people_frames, engine: str) -> None:  # noqa: ANN001
    seg = {"raises": Raising(), "not-ready": None, "wrong-count": type("W", (), {"infer_yuv": lambda self, f: []})()}[engine]
    stage = FilterStage(seg, {"a": StageStream(effect=FILL_BLACK)})
    results = stage.process(fresh(people_frames))
    assert [r.status for r in results] == ["covered"] * 4
    for r in results:
        assert fully_black(r.frame) and (r.mask == 255).all()
    assert stage.counters.get("a", "frames_covered_whole") == 4


def test_cctv_pixelate_cover_whole_leaves_no_detail(people_frames) -> None:  # noqa: ANN001
    from privacy_filter.config import stream_config

    cfg = stream_config("in.mp4", "out.mp4", preset="cctv")
    stage = FilterStage(Raising(), {"a": StageStream.from_config(cfg)})
    (r,) = stage.process(fresh(people_frames[:1]))
    cell = cfg.effect.block_size(r.frame.height)
    y = r.frame.y[: (r.frame.height // cell) * cell, : (r.frame.width // cell) * cell]
    blocks = y.reshape(y.shape[0] // cell, cell, y.shape[1] // cell, cell)
    assert (blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max() == 0  # every cell one flat value


def test_stalled_engine_misses_its_deadline_and_frames_are_covered_not_delayed(people_frames, segmenter) -> None:  # noqa: ANN001
    stall = Stalling(segmenter)
    stage = FilterStage(stall, {"a": StageStream(effect=FILL_BLACK, deadline_ms=150)})
    t = time.perf_counter()
    first = stage.process(fresh(people_frames[:2]))
    second = stage.process(fresh(people_frames[2:]))  # engine still stuck in the first call
    elapsed = time.perf_counter() - t
    assert [r.status for r in first + second] == ["covered"] * 4
    assert all(fully_black(r.frame) for r in first + second)
    assert elapsed < 2.0, "a stalled engine must not hold frames back"
    assert stall.calls == 1  # no pile-up of calls on a hung engine
    stall.release.set()
    time.sleep(0.2)
    third = stage.process(fresh(people_frames[:1]))
    assert third[0].status == "filtered"
    assert stage.counters.get("a", "frames_covered_whole") == 4


def test_on_failure_drop_publishes_nothing(people_frames) -> None:  # noqa: ANN001
    stage = FilterStage(Raising(), {"a": StageStream(effect=FILL_BLACK, on_failure="drop")})
    results = stage.process(fresh(people_frames))
    assert all(r.frame is None and r.status == "dropped" for r in results)
    assert stage.counters.get("a", "frames_dropped") == 4
    assert stage.counters.get("a", "frames_covered_whole") == 0


def test_on_failure_pass_publishes_unfiltered_only_when_explicit(people_frames) -> None:  # noqa: ANN001
    frames = fresh(people_frames)
    before = [f.y.copy() for f in frames]
    stage = FilterStage(Raising(), {"a": StageStream(effect=FILL_BLACK, on_failure="pass"), "b": StageStream(effect=FILL_BLACK)})
    results = stage.process(frames)
    assert [r.status for r in results] == ["passed"] * 4
    for r, y in zip(results, before):
        np.testing.assert_array_equal(r.frame.y, y)
    assert stage.counters.get("a", "frames_passed_unfiltered") == 4  # exported as a metric
    # the default (no on_failure written) is cover, never pass
    assert StageStream().on_failure == "cover"
    (rb,) = stage.process(fresh(people_frames[:1], "b"))
    assert rb.status == "covered" and fully_black(rb.frame)


def test_broken_effect_still_fails_closed(people_frames, segmenter) -> None:  # noqa: ANN001
    class Broken:
        def apply(self, frame, prob):  # noqa: ANN001, ANN201
            raise MemoryError("no memory for the blur buffer")

        def cover_whole(self, frame):  # noqa: ANN001, ANN201
            raise RuntimeError("also broken")

    stage = FilterStage(segmenter, {"a": StageStream(effect=FILL_BLACK)}, effects={"a": Broken()})
    (r,) = stage.process(fresh(people_frames[:1]))
    assert r.status == "covered" and fully_black(r.frame) and (r.mask == 255).all()


def test_unknown_stream_is_refused(people_frames, segmenter) -> None:  # noqa: ANN001
    stage = FilterStage(segmenter, {"a": StageStream()})
    with pytest.raises(ValueError, match="'zz'"):
        stage.process(fresh(people_frames[:1], "zz"))
