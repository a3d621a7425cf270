"""Per-person coverage of CCTV masks (docs/cctv.md, "The metric"): people, not pixels.

Why: pixel IoU rewards covering big, near people and ignores small, far ones, while the product
promise is "every person hidden in every frame".  So coverage is counted per person-frame (head
and body) and per person id (never exposed), with a false-cover rate so that covering the whole
frame cannot win.

Definitions (one mask per decoded frame, nonzero = covered; ground truth ``frame,person_id,x,y,w,h``):

* head coverage = covered fraction of the head box (the given one, else the top 15 % x middle
  50 % of the body box); body coverage = covered fraction of the body box;
* head recall: head coverage >= 0.9; body recall: body coverage >= 0.6; hidden: both; each over
  all person-frames;
* never exposed: share of person ids whose head coverage is >= 0.9 in every frame they appear in;
* false cover: covered pixels outside every body box grown by 12.5 % on each side, over all pixels.

Conventions the definition leaves open, fixed here once so results compare:

* a float box covers the pixels whose centres lie inside it, clipped to the frame and at least
  one pixel wide and tall (a tiny head still counts);
* a ground-truth frame without a mask counts as fully uncovered (a lost frame exposes everyone);
* false cover is summed over every mask given and divided by frames x H x W;
* the worst frame has the most person-frames not hidden (ties: lower mean head coverage, then
  the earlier frame).

Pure NumPy; the CSV readers are the only I/O.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HEAD_THRESHOLD = 0.9
BODY_THRESHOLD = 0.6
FALSE_COVER_GROW = 0.125

Box = tuple[float, float, float, float]  # x, y, w, h in mask pixels
Span = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass(frozen=True)
class Person:
    """One ground-truth person-frame."""

    frame: int
    person_id: int
    box: Box


@dataclass
class CoverageResult:
    """Rates over all person-frames, plus the worst frame for the picture."""

    head_recall: float
    body_recall: float
    hidden: float
    never_exposed: float
    n_never_exposed: int
    n_people: int
    false_cover: float
    n_person_frames: int
    n_frames: int
    worst_frame: int = -1  # -1: every person-frame hidden
    worst_exposed: list[Box] = field(default_factory=list)


BOX_COLUMNS = ("frame", "person_id", "x", "y", "w", "h")


def read_boxes_csv(path: str | Path) -> list[Person]:
    """``frame,person_id,x,y,w,h[,visibility]`` rows (the head CSV has the same columns).

    A missing column or a value that is not a number is a ``ValueError`` naming the line, so a
    wrong file is reported rather than scored as a clip without people.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = [c for c in BOX_COLUMNS if c not in (rows.fieldnames or [])]
        if missing:
            raise ValueError(f"no column {', '.join(missing)} in its header (expected {','.join(BOX_COLUMNS)}[,visibility])")
        people = []
        for r in rows:
            try:
                people.append(Person(int(r["frame"]), int(r["person_id"]), (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]))))
            except (TypeError, ValueError):
                raise ValueError(f"line {rows.line_num}: {','.join(str(r[c]) for c in BOX_COLUMNS)} is not frame,person_id,x,y,w,h as numbers") from None
        return people


def default_head_box(body: Box) -> Box:
    """Head box when none is annotated: the top 15 % x the middle 50 % of the body box."""
    x, y, w, h = body
    return (x + 0.25 * w, y, 0.5 * w, 0.15 * h)


def box_span(box: Box, width: int, height: int) -> Span:
    """Pixels whose centres lie in ``box``, clipped, never empty."""
    x, y, w, h = box
    x0, x1 = int(np.floor(x + 0.5)), int(np.floor(x + w + 0.5))
    y0, y1 = int(np.floor(y + 0.5)), int(np.floor(y + h + 0.5))
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    return x0, y0, min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)


def integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table of ``mask != 0``, so each box fraction costs O(1)."""
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(mask != 0, axis=0, dtype=np.int64), axis=1, out=ii[1:, 1:])
    return ii


def covered_fraction(ii: np.ndarray, span: Span) -> float:
    x0, y0, x1, y1 = span
    s = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return float(s) / float((x1 - x0) * (y1 - y0))


def false_cover_pixels(mask: np.ndarray, bodies: Sequence[Box], grow: float = FALSE_COVER_GROW) -> int:
    """Covered pixels outside every body box grown by ``grow`` of its size on each side."""
    height, width = mask.shape[:2]
    allowed = np.zeros((height, width), bool)
    for x, y, w, h in bodies:
        x0, y0 = max(int(np.floor(x - grow * w)), 0), max(int(np.floor(y - grow * h)), 0)
        x1, y1 = min(int(np.ceil(x + w + grow * w)), width), min(int(np.ceil(y + h + grow * h)), height)
        if x1 > x0 and y1 > y0:
            allowed[y0:y1, x0:x1] = True
    return int(np.count_nonzero((mask != 0) & ~allowed))


class CoverageAccumulator:
    """Scores masks one frame at a time, so a long clip never holds all its masks in memory."""

    def __init__(self, people: Iterable[Person], heads: Iterable[Person] = ()) -> None:
        self.by_frame: dict[int, list[Person]] = {}
        for p in people:
            self.by_frame.setdefault(p.frame, []).append(p)
        self.heads = {(h.frame, h.person_id): h.box for h in heads}
        self.head_ok: list[bool] = []
        self.body_ok: list[bool] = []
        self.min_head: dict[int, float] = {}
        self.false_px = 0
        self.pixels = 0
        self.seen: set[int] = set()
        self._worst: tuple[int, float, int] | None = None
        self.worst_frame = -1
        self.worst_exposed: list[Box] = []

    def add(self, index: int, mask: np.ndarray) -> list[Box]:
        """Score frame ``index``'s mask; returns the boxes of the people it leaves exposed."""
        height, width = mask.shape[:2]
        people = self.by_frame.get(index, [])
        self.seen.add(index)
        self.pixels += height * width
        self.false_px += false_cover_pixels(mask, [p.box for p in people])
        if not people:
            return []
        ii = integral(mask)
        exposed: list[Box] = []
        head_sum = 0.0
        for p in people:
            head = self.heads.get((index, p.person_id)) or default_head_box(p.box)
            hc = covered_fraction(ii, box_span(head, width, height))
            bc = covered_fraction(ii, box_span(p.box, width, height))
            self._record(p.person_id, hc >= HEAD_THRESHOLD, bc >= BODY_THRESHOLD, hc)
            head_sum += hc
            if not (hc >= HEAD_THRESHOLD and bc >= BODY_THRESHOLD):
                exposed.append(p.box)
        key = (len(exposed), -head_sum / len(people), -index)
        if exposed and (self._worst is None or key > self._worst):
            self._worst, self.worst_frame, self.worst_exposed = key, index, exposed
        return exposed

    def _record(self, pid: int, head: bool, body: bool, head_cover: float) -> None:
        self.head_ok.append(head)
        self.body_ok.append(body)
        self.min_head[pid] = min(self.min_head.get(pid, 1.0), head_cover)

    def result(self) -> CoverageResult:
        """Rates so far; ground-truth frames that got no mask count as fully uncovered."""
        head_ok, body_ok, min_head = list(self.head_ok), list(self.body_ok), dict(self.min_head)
        for index, people in self.by_frame.items():
            if index not in self.seen:
                for p in people:
                    head_ok.append(False)
                    body_ok.append(False)
                    min_head[p.person_id] = 0.0
        h, b = np.array(head_ok, bool), np.array(body_ok, bool)
        n = int(h.size)
        never = sum(1 for v in min_head.values() if v >= HEAD_THRESHOLD)
        return CoverageResult(
            head_recall=float(h.mean()) if n else 1.0,
            body_recall=float(b.mean()) if n else 1.0,
            hidden=float((h & b).mean()) if n else 1.0,
            never_exposed=never / len(min_head) if min_head else 1.0,
            n_never_exposed=never,
            n_people=len(min_head),
            false_cover=self.false_px / self.pixels if self.pixels else 0.0,
            n_person_frames=n,
            n_frames=len(self.seen),
            worst_frame=self.worst_frame,
            worst_exposed=list(self.worst_exposed),
        )


def evaluate_coverage(masks: Sequence[np.ndarray], people: Iterable[Person], heads: Iterable[Person] = ()) -> CoverageResult:
    """Score one mask per decoded frame (index = position) against the ground truth."""
    acc = CoverageAccumulator(people, heads)
    for i, m in enumerate(masks):
        acc.add(i, np.asarray(m))
    return acc.result()


def meets_bars(r: CoverageResult, hidden: float = 0.98, never_exposed: float = 0.90, false_cover: float = 0.10) -> bool:
    """The CCTV bars of docs/cctv.md."""
    return r.hidden >= hidden and r.never_exposed >= never_exposed and r.false_cover <= false_cover
