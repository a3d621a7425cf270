"""The per-stream motion layer: cover whatever moves against a learned background (docs/cctv.md).

Why: a detector misses small, occluded or unusual people, and motion does not care what moves;
motion misses people who stand still (they are learned into the background), which the
detector covers.  Their union is what commercial CCTV privacy products ship.

Choice (measured on the dev clips, docs/cctv.md): a running median of the luma at a reduced
height (240 px there) beat a running average, MOG2 and KNN in the fused result at lower cost;
|Y − background| > 18 (22 since the grid takes the source's rows, ``auto_height``), a 3 px
opening against noise, dilation by 2 % of the height, and the last 2 frames' foreground kept
(it lags a walking person).

Fail closed: a live source has no background yet, so the whole frame is covered for
``learn_s`` (reason ``learning``); when most of the frame changes at once (camera moved, lights
switched), the model restarts and the whole frame is covered for ``relearn_s`` (reason
``global_change``).  A file can instead be primed with a background from frames sampled across
it (``first_pass_background``, ``MotionLayer.prime``), so its first seconds are not covered whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np

from privacy_filter.config import MotionConfig

MEDIAN_LEN = 15  # frames in the running-median buffer, spread over history_s
GRID_ROWS = 540  # an unset grid height: the source's own rows, at most this many
MEDIAN_BAND_BYTES = 1 << 20  # the median is taken over row bands of about this many bytes


def auto_height(source_height: int) -> int:
    """The grid height when none is configured: the source's full height, at most 540 rows.

    Why: what the layer needs is enough cells per person, and a far pedestrian is a few per cent
    of the frame height at any resolution.  On a wide view of people 5-12 % of the frame height,
    a grid of 240 rows makes a person 11-28 cells tall: the 3-cell opening thins them away, and
    area-averaged cells dilute a thin body's contrast under the threshold.  On such a view 9 of
    66 people were exposed at least once at 240 rows, at 1080p, 720p and 480p alike; none at 540
    rows (1080p, 720p) or at the full 480 rows of a 480p source (at 360 rows, 6 and 8 exposed
    still).  540 is where it stops: at 1080p 600 and 720 rows found nobody more, for 8-10 ms more
    per frame.  A grid this fine passes more shadow and edge detail than an averaged one, which
    the threshold of 22 (was 18) holds back (docs/cctv.md, "Wide views of small people").
    """
    return min(source_height, GRID_ROWS)


def grid_size(width: int, height: int, grid_height: int | None) -> tuple[int, int]:
    """(w, h) of the reduced grid: ``grid_height`` (None: ``auto_height``; never above the source's), aspect kept."""
    if grid_height is None:
        grid_height = auto_height(height)
    h = max(1, min(grid_height, height))
    return max(1, int(round(width * h / height))), h


def reduce_luma(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resize the Y plane to ``size`` (w, h); area filtering also averages sensor noise away."""
    if (y.shape[1], y.shape[0]) == size:
        return np.ascontiguousarray(y)
    return cv2.resize(y, size, interpolation=cv2.INTER_AREA)


def to_grid(grid_height: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """A first pass's ``reduce``: each sampled Y plane to its own copy on the motion grid, so the
    samples held until the median is taken are grid-sized, not frame-sized (1080p: 0.5 vs 2 MB each)."""

    def reduce(y: np.ndarray) -> np.ndarray:
        return reduce_luma(y, grid_size(y.shape[1], y.shape[0], grid_height)).copy()

    return reduce


@lru_cache(maxsize=8)
def ellipse_rects(k: int) -> tuple[tuple[int, int], ...]:
    """OpenCV's ``k``x``k`` elliptic structuring element as a union of centred rectangles (w, h).

    Each row of the ellipse is a centred run, and the runs narrow away from the middle row, so
    the element is the union of, for each run width, the rectangle that wide and as tall as the
    rows at least that wide.  Read off ``cv2.getStructuringElement`` itself, so it is that element
    exactly, whatever OpenCV's rounding.
    """
    rows = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)).sum(axis=1)
    r = k // 2
    tallest: dict[int, int] = {}
    for dy, width in enumerate(rows.tolist()):
        if width:
            tallest[width] = max(tallest.get(width, 0), abs(dy - r))
    return tuple((w, 2 * h + 1) for w, h in sorted(tallest.items()))


def dilate_ellipse(m: np.ndarray, k: int) -> np.ndarray:
    """``cv2.dilate(m, ellipse k x k)``, bit for bit, as the maximum of rectangle dilations.

    Why: OpenCV dilates by a non-rectangular element row by row of the element, while a
    rectangle is separable (a run maximum along each axis).  At the cctv preset's 23 px on the
    960x540 grid: 1.84 -> 1.10 ms a frame (30 foreground maps of the 1080p benchmark clip, the
    same pixels on every one; tests/unit/test_cctv_cover.py).
    """
    out: np.ndarray | None = None
    for w, h in ellipse_rects(k):
        d = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_RECT, (w, h)))
        out = d if out is None else cv2.max(out, d, dst=out)
    return m.copy() if out is None else out


def clean_foreground(fg: np.ndarray, open_px: int, dilate_px: int) -> np.ndarray:
    """Binary foreground → opened (drops specks) → dilated (covers the silhouette plus a margin)."""
    m = fg
    if open_px > 1:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (open_px, open_px)))
    if dilate_px > 0:
        m = dilate_ellipse(m, 2 * dilate_px + 1)
    return m


def median_background(lumas: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel median: an empty-scene estimate when people move across the samples.

    Taken over bands of rows: stacking 25 whole 960x540 samples and sorting a copy cost ~30 MB
    at once, which the heap then keeps for the rest of the run (RSS after setup +18 MB at 1080p).
    """
    first = lumas[0]
    out = np.empty(first.shape, np.uint8)
    rows = max(1, MEDIAN_BAND_BYTES // max(1, first[:1].nbytes * len(lumas)))
    for r in range(0, first.shape[0], rows):
        out[r : r + rows] = np.median(np.stack([y[r : r + rows] for y in lumas]), axis=0)
    return out


def first_pass_background(lumas: Sequence[np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """The median of a first pass's Y planes, each area-resized to ``size`` (w, h; None: the first
    plane's), so samples of two sizes (a file whose size changes part way) still give one."""
    first = np.asarray(lumas[0])
    size = size or (first.shape[1], first.shape[0])
    return median_background([reduce_luma(np.asarray(y), size) for y in lumas])


class RunningMedian:
    """Background = median of ``MEDIAN_LEN`` frames sampled evenly over ``history`` frames.

    Each new sample's median is worked out over the ``every`` frames until the next sample, a
    band of rows per frame, and swapped in whole when done: taken at once it cost 120 ms on one
    frame of a 1080p live stream's 960x540 grid (27 ms at 240 rows) every ``every`` frames (1.3 s
    at 25 fps), a stall for a live stage; in bands it is ~4 ms a frame.  The background thus
    trails the newest sample by up to ``every`` frames, against a ``history`` of 15 times that.
    """

    def __init__(self, history: int) -> None:
        self.every = max(1, history // MEDIAN_LEN)
        self.buf: deque[np.ndarray] = deque(maxlen=MEDIAN_LEN)
        self.background: np.ndarray | None = None
        self.n = 0
        self.frozen = False
        self._samples: list[np.ndarray] | None = None  # the buffer whose median is being worked out
        self._next: np.ndarray | None = None  # that median, filled a band of rows at a time
        self._row = 0

    def seed(self, background: np.ndarray, *, frozen: bool = False) -> None:
        """Start from ``background``; ``frozen``: keep it (a file's first-pass median) instead of learning."""
        self.buf.clear()
        self.buf.extend([background] * MEDIAN_LEN)
        self.background = background
        self.n = 0
        self.frozen = frozen
        self._samples = self._next = None

    def foreground(self, luma: np.ndarray, threshold: float) -> np.ndarray:
        """This frame's foreground (uint8 0/255) against the current background; then learn from it."""
        if self.background is None:
            self.background = luma.copy()
            self.buf.append(self.background)
        fg = cv2.threshold(cv2.absdiff(luma, self.background), threshold, 255, cv2.THRESH_BINARY)[1]
        self.n += 1
        if not self.frozen and self.n % self.every == 0:  # the last sample's bands are all done by now
            self.buf.append(luma.copy())
            self._samples, self._next, self._row = list(self.buf), np.empty_like(luma), 0
        self._advance(-(-luma.shape[0] // self.every))
        return fg

    def _advance(self, rows: int) -> None:
        """Work out ``rows`` more rows of the pending median; swap it in when complete."""
        if self._samples is None or self._next is None:
            return
        r0 = self._row
        r1 = min(self._next.shape[0], r0 + rows)
        self._next[r0:r1] = median_background([s[r0:r1] for s in self._samples])
        self._row = r1
        if r1 == self._next.shape[0]:
            self.background, self._samples, self._next = self._next, None, None


class MotionLayer:
    """One stream's motion cover: ``step(Y plane) -> (grid mask uint8 0/255 | None, reason | None)``.

    A reason (``learning``, ``global_change``) means: cover the whole frame.
    """

    def __init__(self, width: int, height: int, fps: float, cfg: MotionConfig, *, live: bool) -> None:
        self.cfg = cfg
        self.fps = fps if fps > 0 else 25.0
        self.size = grid_size(width, height, cfg.height)
        self.dilate_px = int(round(cfg.dilate_frac * self.size[1]))
        self.history = max(2, int(cfg.history_s * self.fps))
        self.model = RunningMedian(self.history)
        self.recent: deque[np.ndarray] = deque(maxlen=cfg.hold_frames + 1)
        self.frames = 0
        self.whole_until = self._frames(cfg.learn_s) if live else 0
        self.reason = "learning"
        self.primed = False

    def _frames(self, seconds: float) -> int:
        return int(round(seconds * self.fps))

    def prime(self, background: np.ndarray) -> None:
        """Start from a file's first-pass median (``first_pass_background``; at any size: it is
        area-resized to the grid), so no learning period is needed.

        The file's median is kept, not updated frame by frame: it already is the best background
        the file has, and a background that depends only on the file (not on which frames this
        process happened to see) makes a restarted stage draw exactly the cover an uninterrupted
        one draws, once its short hold window has refilled.  A global change still relearns.
        """
        self.model.seed(reduce_luma(background, self.size), frozen=True)
        self.whole_until = 0
        self.primed = True

    def step(self, y: np.ndarray) -> tuple[np.ndarray, str | None]:
        """The grid mask of this frame's moving pixels, or a reason to cover the frame whole."""
        i = self.frames
        self.frames += 1
        luma = reduce_luma(y, self.size)
        fg = self.model.foreground(luma, self.cfg.threshold)
        if i >= self.whole_until and np.count_nonzero(fg) > self.cfg.global_frac * fg.size:
            self.model = RunningMedian(self.history)
            self.model.foreground(luma, self.cfg.threshold)
            self.recent.clear()
            self.whole_until = i + max(1, self._frames(self.cfg.relearn_s))
            self.reason = "global_change"
        mask = clean_foreground(fg, self.cfg.open_px, self.dilate_px)
        self.recent.append(mask)
        if i < self.whole_until:
            return mask, self.reason
        out = self.recent[0].copy()
        for m in list(self.recent)[1:]:
            np.bitwise_or(out, m, out=out)
        return out, None
