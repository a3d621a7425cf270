"""The per-person coverage metric (privacy_filter.coverage) against hand-made masks and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from privacy_filter.coverage import (
    CoverageAccumulator,
    Person,
    box_span,
    default_head_box,
    evaluate_coverage,
    false_cover_pixels,
    read_boxes_csv,
)

H, W = 100, 200


def blank() -> np.ndarray:
    return np.zeros((H, W), np.uint8)


def test_default_head_box_is_top_15_percent_middle_half() -> None:
    assert default_head_box((10.0, 20.0, 40.0, 100.0)) == (20.0, 20.0, 20.0, 15.0)


def test_box_span_uses_pixel_centres_and_is_never_empty() -> None:
    assert box_span((10.0, 10.0, 10.0, 20.0), W, H) == (10, 10, 20, 30)
    assert box_span((10.4, 10.6, 0.2, 0.2), W, H) == (10, 11, 11, 12)  # tiny head: one pixel
    assert box_span((-5.0, 90.0, 300.0, 50.0), W, H) == (0, 90, W, H)  # clipped


def test_fully_covered_person_is_hidden_and_never_exposed() -> None:
    m = blank()
    m[10:50, 20:40] = 255
    r = evaluate_coverage([m], [Person(0, 1, (20.0, 10.0, 20.0, 40.0))])
    assert (r.head_recall, r.body_recall, r.hidden, r.never_exposed) == (1.0, 1.0, 1.0, 1.0)
    assert r.worst_frame == -1 and r.false_cover == 0.0


def test_head_uncovered_body_covered_counts_as_exposed() -> None:
    # body 20x40 at (20,10); default head = x 25..35, y 10..16.  Cover only rows 16.. (the body below the head).
    m = blank()
    m[16:50, 20:40] = 255
    r = evaluate_coverage([m], [Person(0, 1, (20.0, 10.0, 20.0, 40.0))])
    assert r.head_recall == 0.0 and r.body_recall == 1.0 and r.hidden == 0.0
    assert r.n_never_exposed == 0 and r.worst_frame == 0 and r.worst_exposed == [(20.0, 10.0, 20.0, 40.0)]


def test_thresholds_are_inclusive_head_09_body_06() -> None:
    # head box given: 10x10 at (0,0); cover exactly 9 of its 10 rows -> 0.9; body 10x10 at (50,0) 6 of 10 rows -> 0.6
    m = blank()
    m[0:9, 0:10] = 1
    m[0:6, 50:60] = 1
    r = evaluate_coverage([m], [Person(0, 7, (50.0, 0.0, 10.0, 10.0))], heads=[Person(0, 7, (0.0, 0.0, 10.0, 10.0))])
    assert r.head_recall == 1.0 and r.body_recall == 1.0 and r.hidden == 1.0
    m[8, 0:10] = 0  # head 0.8
    r = evaluate_coverage([m], [Person(0, 7, (50.0, 0.0, 10.0, 10.0))], heads=[Person(0, 7, (0.0, 0.0, 10.0, 10.0))])
    assert r.head_recall == 0.0 and r.hidden == 0.0


def test_never_exposed_needs_every_frame() -> None:
    covered = blank()
    covered[:, :] = 1
    people = [Person(0, 1, (10.0, 10.0, 10.0, 20.0)), Person(1, 1, (10.0, 10.0, 10.0, 20.0)), Person(0, 2, (100.0, 10.0, 10.0, 20.0)), Person(1, 2, (100.0, 10.0, 10.0, 20.0))]
    cover2 = blank()
    cover2[:, 50:] = 1  # frame 1: only person 2 covered
    r = evaluate_coverage([covered, cover2], people)
    assert r.n_people == 2 and r.n_never_exposed == 1 and r.never_exposed == 0.5
    assert r.hidden == 0.75 and r.n_person_frames == 4
    assert r.worst_frame == 1


def test_false_cover_excludes_grown_body_boxes() -> None:
    m = np.ones((H, W), np.uint8)
    # body 40x40 at (80,30) grown by 12.5 % = 5 px each side -> 50x50 allowed
    assert false_cover_pixels(m, [(80.0, 30.0, 40.0, 40.0)]) == H * W - 50 * 50
    r = evaluate_coverage([m, blank()], [Person(0, 1, (80.0, 30.0, 40.0, 40.0))])
    assert r.false_cover == pytest.approx((H * W - 2500) / (2 * H * W))


def test_frame_without_mask_counts_as_uncovered() -> None:
    m = np.ones((H, W), np.uint8)
    r = evaluate_coverage([m], [Person(0, 1, (0.0, 0.0, 10.0, 10.0)), Person(3, 1, (0.0, 0.0, 10.0, 10.0))])
    assert r.hidden == 0.5 and r.n_never_exposed == 0


def test_accumulator_returns_exposed_boxes_per_frame() -> None:
    acc = CoverageAccumulator([Person(0, 1, (0.0, 0.0, 10.0, 10.0))])
    assert acc.add(0, blank()) == [(0.0, 0.0, 10.0, 10.0)]
    assert acc.result().n_frames == 1


def test_read_boxes_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "gt.csv"
    p.write_text("frame,person_id,x,y,w,h,visibility\n0,1,1.5,2,3,4,-1\n")
    assert read_boxes_csv(p) == [Person(0, 1, (1.5, 2.0, 3.0, 4.0))]


def test_read_boxes_csv_names_a_wrong_file_instead_of_scoring_no_people(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "gt.csv"
    p.write_text("frame,id,left,top,w,h\n0,1,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"no column person_id, x, y in its header"):
        read_boxes_csv(p)
    p.write_text("frame,person_id,x,y,w,h\n0,1,1,2,3,4\n1,1,1,2,,4\n")
    with pytest.raises(ValueError, match=r"line 3: 1,1,1,2,,4 is not frame,person_id"):
        read_boxes_csv(p)
