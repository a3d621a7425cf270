"""The CCTV cover engine: each frame's cover map = motion ∪ padded people ∪ privacy zones.

It stands where a segmenter stands in the filter stage (``infer_yuv(frames)`` → one map per
frame), so everything downstream is unchanged: the stage applies each map to the frame it was
computed from, the stream's mask settings (threshold, hold, dilate, feather) and effect apply,
and any exception here makes the stage cover the frame whole (fail closed).  A frame the motion
layer cannot judge yet (learning, global change) comes back as ``CoverWhole(reason)``, which the
stage covers, counts and logs once.

Maps are float32 0/1 on a reduced grid (the motion height: by default the source's rows, at most
540; the frame's own size when motion is off, e.g. stills): boxes are rounded outwards to whole
grid cells, so a grid cell never covers less than the box, and the effect's bilinear upsampling
stays cheap.

Per-stream state (motion model, held boxes, detector cadence) is keyed by ``frame.stream_id``;
frames of one stream must arrive in order, which the stage guarantees.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from privacy_filter.config import DetectorConfig, MotionConfig, ZoneConfig
from privacy_filter.engines.detector import Detector
from privacy_filter.engines.motion import MotionLayer, first_pass_background, grid_size
from privacy_filter.engines.zones import ZoneMasks, zone_masks
from privacy_filter.frames import CoverWhole, YuvFrame, chroma_size

log = logging.getLogger(__name__)

MATCH_IOU = 0.3  # a new box this close to a held one means the person was found again
# between runs: a moved box is grown by this share of its move on each side, for uneven walking and
# the detector's lag on people entering (PETS at every 2nd frame: 0 -> 10 of 11 never exposed,
# 0.1 -> 11 of 11; TUD-Campus false cover at the preset's cadence 0.0963 / 0.0984 / 0.1023 at 0 / 0.1 / 0.25)
BETWEEN_GROW = 0.1
MATCH_REACH = 1.0  # between runs: boxes whose centres are this many box heights apart can be one person
CROP_PAD = 0.2  # segment: square crops padded by 20 % (research: best recall on COCO)
# segment: a crop mask covering less of its box than this → fill the box.  The fallback is for
# crops where the model finds nobody (13 % of square CCTV crops, research note); 5 %, not the
# research note's 20 %: a box where the model found a small silhouette is mostly a false or
# partial detection, and filling it whole cost mIoU for no person covered (pennfudan, 170 photos:
# mIoU 0.784 -> 0.800, pixel recall 0.953 -> 0.952, people under half covered 5 of 423 at both;
# people_pseudo mIoU 0.890 -> 0.912).  0 % (no fallback) left 7 people under half covered.
MIN_CROP_FILL = 0.05


@dataclass(frozen=True)
class CoverSettings:
    """What the cover engine needs to know about one stream."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    zones: tuple[ZoneConfig, ...] = ()
    cover: str = "box"
    live: bool = False
    fps: float = 25.0
    max_grid_height: int = 1080  # grid height when motion is off (stills: the image's own, up to this)
    # The caller passes the stream's frames in groups of ``frames_per_call`` (process and
    # eval-video do for files; the service does not), so boxes between runs are moved, not held.
    grouped: bool = False

    @classmethod
    def from_config(cls, cfg: object, *, live: bool, fps: float = 25.0, grouped: bool = False) -> CoverSettings:
        """From a ``StreamConfig`` (detector, motion, zones, cover)."""
        return cls(
            detector=getattr(cfg, "detector", DetectorConfig()),
            motion=getattr(cfg, "motion", MotionConfig()),
            zones=tuple(getattr(cfg, "zones", ()) or ()),
            cover=str(getattr(cfg, "cover", "box")),
            live=live,
            fps=fps,
            grouped=grouped and not live,
        )

    @property
    def detector_every(self) -> int:
        """Frames between detector runs on this stream (``DetectorConfig.every_at``)."""
        return self.detector.every_at(self.fps, moved=self.grouped)


# ------------------------------------------------------------------------------------------ boxes


def pad_boxes(boxes: np.ndarray, width: int, height: int, pad_frac: float, head_extra: float) -> np.ndarray:
    """Grow (N, ≥4) x0,y0,x1,y1 boxes by ``pad_frac`` of the frame height per side and ``head_extra``
    of their own height on top, clipped to the frame.

    Why both: a fixed margin rescues tiny far people (a relative one is a pixel or two there) and
    costs little on near ones; detector boxes often end a few pixels low at the head, which the
    metric and privacy care about most (measured on PETS: 5 % of boxes ≥ 7 % short at the top).
    """
    if len(boxes) == 0:
        return np.zeros((0, 5), np.float32)
    b = np.array(boxes, np.float32, copy=True)
    m = pad_frac * height
    b[:, 1] -= head_extra * (b[:, 3] - b[:, 1])
    b[:, 0] -= m
    b[:, 1] -= m
    b[:, 2] += m
    b[:, 3] += m
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x0,y0,x1,y1 boxes, shape (len(a), len(b))."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def hold_missed(held: list[tuple[np.ndarray, int]], boxes: np.ndarray, hold: int) -> list[tuple[np.ndarray, int]]:
    """New boxes (age 0) plus old ones no new box matches, for up to ``hold`` detector runs.

    Why only unmatched ones: holding every box smears walking people (false cover on near ones),
    while the privacy risk is a person the detector misses for a run or two.  An old box counts
    as found when a new one overlaps it or ``match_people`` pairs them by centre distance: between
    runs a small walking person can move off their old box entirely, which would otherwise be held
    as a ghost (TUD-Campus false cover 0.0973 -> 0.0963 at the preset's cadence).
    """
    out = [(b, 0) for b in boxes]
    if hold <= 0 or not held:
        return out
    old = np.stack([b for b, _ in held])
    iou = iou_matrix(old, boxes)
    found = {i for i, _ in match_people(old, boxes)} | {k for k in range(len(held)) if iou.shape[1] and float(iou[k].max()) >= MATCH_IOU}
    out += [(b, age + 1) for k, (b, age) in enumerate(held) if age < hold and k not in found]
    return out


def match_people(a: np.ndarray, b: np.ndarray, reach: float = MATCH_REACH) -> list[tuple[int, int]]:
    """Pairs (i, j) of boxes in ``a`` and ``b`` that are one person seen at two detector runs.

    Greedy on centre distance over box height, not IoU: a small far person walks more than their
    own width between runs, so their two boxes often do not overlap at all.  Heights must agree
    within a factor of 1.5 (a near and a far person are not one).
    """
    if len(a) == 0 or len(b) == 0:
        return []
    ca = (a[:, :2] + a[:, 2:4]) / 2
    cb = (b[:, :2] + b[:, 2:4]) / 2
    ha = np.maximum(a[:, 3] - a[:, 1], 1.0)
    hb = np.maximum(b[:, 3] - b[:, 1], 1.0)
    hmax = np.maximum(ha[:, None], hb[None, :])
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / hmax
    ratio = hmax / np.minimum(ha[:, None], hb[None, :])
    dist[(ratio > 1.5) | (dist > reach)] = np.inf
    pairs: list[tuple[int, int]] = []
    while np.isfinite(dist).any():
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        pairs.append((int(i), int(j)))
        dist[i, :] = np.inf
        dist[:, j] = np.inf
    return pairs


def between_runs(before: np.ndarray, after: np.ndarray, t: float) -> np.ndarray:
    """Boxes for a frame a fraction ``t`` of the way from one detector run to the next.

    A person found at both runs gets the box moved linearly from one to the other, grown by
    ``BETWEEN_GROW`` of the move on each side (people do not walk at an even pace); anyone found at
    only one run keeps that run's box over the whole gap, so nobody found at either end is left
    uncovered (a person entering, or missed once, is covered early rather than late).
    """
    pairs = match_people(before, after)
    out = []
    for i, j in pairs:
        a, b = before[i], after[j]
        box = (1 - t) * a + t * b
        grow = BETWEEN_GROW * np.abs(b[:4] - a[:4])
        box[:2] -= np.maximum(grow[0], grow[2]), np.maximum(grow[1], grow[3])
        box[2:4] += np.maximum(grow[0], grow[2]), np.maximum(grow[1], grow[3])
        out.append(box)
    used_a = {i for i, _ in pairs}
    used_b = {j for _, j in pairs}
    out += [before[i] for i in range(len(before)) if i not in used_a]
    out += [after[j] for j in range(len(after)) if j not in used_b]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 5), np.float32)


def grid_rect(box: np.ndarray, sx: float, sy: float, gw: int, gh: int) -> tuple[int, int, int, int]:
    """A frame box as grid cells, rounded outwards (x0, y0, x1, y1), clipped."""
    x0, y0 = int(np.floor(box[0] * sx)), int(np.floor(box[1] * sy))
    x1, y1 = int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))
    return max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), gw), min(max(y1, y0 + 1), gh)


def fill_boxes(grid: np.ndarray, boxes: np.ndarray, sx: float, sy: float) -> None:
    """``cover: box``: every box's cells set to 1."""
    gh, gw = grid.shape
    for b in boxes:
        x0, y0, x1, y1 = grid_rect(b, sx, sy, gw, gh)
        grid[y0:y1, x0:x1] = 1.0


# ------------------------------------------------------------------------------------ segment


def square_crop(box: np.ndarray, width: int, height: int, pad: float = CROP_PAD) -> tuple[int, int, int, int]:
    """The box grown to a square, padded by ``pad``, clipped; even corners so chroma aligns."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (1 + pad) / 2
    x0, y0 = max(0, int(np.floor(cx - half)) & ~1), max(0, int(np.floor(cy - half)) & ~1)
    x1, y1 = min(width, int(np.ceil(cx + half)) + 1 & ~1), min(height, int(np.ceil(cy + half)) + 1 & ~1)
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def crop_frame(frame: YuvFrame, rect: tuple[int, int, int, int]) -> YuvFrame:
    """A view of the frame's planes inside ``rect`` (even x0, y0)."""
    x0, y0, x1, y1 = rect
    cw, ch = chroma_size(x1 - x0, y1 - y0)
    u = frame.u[y0 // 2 : y0 // 2 + ch, x0 // 2 : x0 // 2 + cw]
    v = frame.v[y0 // 2 : y0 // 2 + ch, x0 // 2 : x0 // 2 + cw]
    return YuvFrame(frame.y[y0:y1, x0:x1], u, v, stream_id=frame.stream_id, metadata=dict(frame.metadata))


def paste_crop(grid: np.ndarray, prob: np.ndarray, rect: tuple[int, int, int, int], box: np.ndarray, sx: float, sy: float, threshold: float = 0.5) -> bool:
    """Paste a crop's person mask onto the grid; False (nothing pasted) when it covers < MIN_CROP_FILL of the box.

    The fallback matters: on CCTV boxes the selfie model finds nobody in about 13 % of square crops.
    """
    x0, y0, x1, y1 = rect
    ph, pw = prob.shape
    bx0 = int(np.clip((box[0] - x0) / (x1 - x0) * pw, 0, pw - 1))
    bx1 = int(np.clip(np.ceil((box[2] - x0) / (x1 - x0) * pw), bx0 + 1, pw))
    by0 = int(np.clip((box[1] - y0) / (y1 - y0) * ph, 0, ph - 1))
    by1 = int(np.clip(np.ceil((box[3] - y0) / (y1 - y0) * ph), by0 + 1, ph))
    if float(np.mean(prob[by0:by1, bx0:bx1] >= threshold)) < MIN_CROP_FILL:
        return False
    gh, gw = grid.shape
    gx0, gy0, gx1, gy1 = grid_rect(np.array([x0, y0, x1, y1], np.float32), sx, sy, gw, gh)
    part = cv2.resize(prob.astype(np.float32), (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_LINEAR)
    np.maximum(grid[gy0:gy1, gx0:gx1], (part >= threshold).astype(np.float32), out=grid[gy0:gy1, gx0:gx1])
    return True


def fills_empty_crop(box: np.ndarray, fill_score: float) -> bool:
    """Whether a box whose crop mask came back (nearly) empty is filled whole: when its score is
    at least ``fill_score`` (a box without a score column always is).

    Why not every box: at the detector's privacy-first threshold (0.2), a box scored 0.2-0.3 whose
    crop the segmenter also finds empty is two weak signals agreeing, and mostly not a person.
    Filling them whole put 6.2 % of the pixels of 74 person-free street crops under cover (4.6 %
    without), the false pixels that pulled pooled mIoU on those crops plus pennfudan to 0.786.  At
    0.3 (the research note's balanced point): 0.817, pennfudan mIoU 0.800 -> 0.829, pixel recall
    0.9518 -> 0.9512, people under half covered 5 -> 6 of 423 (docs/cctv.md).  Real people the
    segmenter misses mostly score higher, and their boxes are still filled.
    """
    return len(box) < 5 or float(box[4]) >= fill_score


# ------------------------------------------------------------------------------------ the engine


@dataclass
class _Stream:
    """One stream's state."""

    settings: CoverSettings
    motion: MotionLayer | None = None
    size: tuple[int, int] | None = None  # frame (w, h) the state was built for
    grid: tuple[int, int] = (0, 0)
    zones: ZoneMasks = field(default_factory=lambda: ZoneMasks(None, None))
    held: list[tuple[np.ndarray, int]] = field(default_factory=list)
    frames: int = 0
    last_run: int = -1  # the stream's frame index of the last detector run
    primer: np.ndarray | None = None  # the first pass's median background, kept for a size change

    def due(self, n: int) -> bool:
        """The detector runs on the stream's first frame and then on every Nth frame's last,
        n = N-1, 2N-1, ...: so a call of N frames from frame 0 on ends on a run (``frames_per_call``)."""
        every = self.settings.detector_every
        return n == 0 or (n + 1) % every == 0

    def boxes(self) -> np.ndarray:
        return np.stack([b for b, _ in self.held]) if self.held else np.zeros((0, 5), np.float32)


class PersonFinder:
    """``infer_yuv(frames) -> [map | CoverWhole]`` for the CCTV cover of any number of streams.

    ``detector`` (``Detector`` protocol) is needed when a stream's ``detector.name`` is not none;
    ``segmenter`` (a ``Segmenter``) only for ``cover: segment``.
    """

    ready = True

    def __init__(self, streams: dict[str, CoverSettings], detector: Detector | None = None, segmenter: object | None = None) -> None:
        for sid, s in streams.items():
            if s.detector.enabled and detector is None:
                raise ValueError(f"stream {sid}: detector {s.detector.name!r} configured but none given")
            if s.cover == "segment" and segmenter is None:
                raise ValueError(f"stream {sid}: cover: segment needs a segmentation model")
        self.detector = detector
        self.segmenter = segmenter
        self._streams = {sid: _Stream(s) for sid, s in streams.items()}

    @property
    def name(self) -> str:
        kinds = {f"{s.settings.detector.name}+{s.settings.cover}" for s in self._streams.values()}
        return ",".join(sorted(kinds))

    def state_window(self, stream_id: str) -> int:
        """Frames over which this engine's per-stream state (held boxes, the motion layer's held
        foreground) reaches back: after a restart loses it, a map equals a fault-free run's only
        once this many frames have been seen, so the stage covers those frames whole."""
        s = self._streams[stream_id].settings
        window = 0
        if s.detector.enabled:
            window = max(window, (s.detector.hold_missed + 1) * s.detector_every)
        if s.motion.enabled:
            window = max(window, s.motion.hold_frames + 1)
        return window

    def prime(self, stream_id: str, lumas: Sequence[np.ndarray]) -> None:
        """File sources: the motion background from Y planes sampled across the file (no learning period)."""
        st = self._streams[stream_id]
        if not lumas:
            return
        # only the median is kept: 25 samples held for the stream's life were 13 MB at a 540-row grid
        # (52 MB for the service's full-size planes), and a size change only needs it resized
        st.primer = first_pass_background(lumas)
        if st.motion is not None:
            st.motion.prime(st.primer)

    # -------------------------------------------------------------------------------------
    def frames_per_call(self, stream_id: str) -> int:
        """Consecutive frames of the stream a caller should pass in one ``infer_yuv`` call (file sources).

        With the detector on every Nth frame, a call of N frames ends on a detector run, so the
        frames before it are covered by boxes moved between the last run and that one
        (``between_runs``) instead of the last run's boxes held still: a person moves away from a
        held box, not from an interpolated one.  Live sources get 1 (no added latency; boxes held).
        """
        s = self._streams[stream_id].settings
        return s.detector_every if s.detector.enabled and not s.live else 1

    def infer_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray | CoverWhole]:
        states = [self._state(f) for f in frames]
        numbers: list[int] = []  # each frame's index in its stream
        seen: Counter[int] = Counter()
        for st in states:
            numbers.append(st.frames + seen[id(st)])
            seen[id(st)] += 1
        due = [i for i, st in enumerate(states) if st.settings.detector.enabled and st.due(numbers[i])]
        found: dict[int, np.ndarray] = {}
        if due:
            assert self.detector is not None
            runs = self.detector.detect_yuv([frames[i] for i in due])
            if len(runs) != len(due):
                raise RuntimeError(f"detector returned {len(runs)} box sets for {len(due)} frames")
            for i, boxes in zip(due, runs):
                d, f = states[i].settings.detector, frames[i]
                found[i] = pad_boxes(np.asarray(boxes, np.float32).reshape(-1, 5), f.width, f.height, d.pad_frac, d.head_extra)
        maps: list[np.ndarray | CoverWhole] = []
        boxes_of: list[np.ndarray] = []
        for i, (f, st) in enumerate(zip(frames, states)):
            if i in found:
                st.held = hold_missed(st.held, found[i], st.settings.detector.hold_missed)
                st.last_run = numbers[i]
                boxes = st.boxes()
            else:
                nxt = next((j for j in due if j > i and states[j] is st), None)
                if nxt is None:
                    boxes = st.boxes()
                elif st.last_run < 0:
                    boxes = found[nxt]
                else:
                    boxes = between_runs(st.boxes(), found[nxt], (numbers[i] - st.last_run) / (numbers[nxt] - st.last_run))
            st.frames += 1
            boxes_of.append(boxes)
            maps.append(self._cover_map(f, st, boxes))
        segs = [i for i, (st, m) in enumerate(zip(states, maps)) if st.settings.cover == "segment" and isinstance(m, np.ndarray) and len(boxes_of[i])]
        if segs:
            self._segment([frames[i] for i in segs], [boxes_of[i] for i in segs], [maps[i] for i in segs])
        return maps

    def infer_rgb(self, images: Sequence[np.ndarray], order: str = "rgb") -> list[np.ndarray]:
        """Stills (``segment``/``eval``): each image is its own one-frame stream, no motion."""
        out: list[np.ndarray] = []
        for img in images:
            frame = yuv_from_image(img, order)
            frame.stream_id = next(iter(self._streams))
            self._streams[frame.stream_id] = _Stream(self._streams[frame.stream_id].settings)
            m = self.infer_yuv([frame])[0]
            out.append(np.ones(img.shape[:2], np.float32) if isinstance(m, CoverWhole) else m)
        return out

    def close(self) -> None:
        for obj in (self.detector, self.segmenter):
            close = getattr(obj, "close", None)
            if callable(close):
                close()

    # -------------------------------------------------------------------------------------
    def _state(self, frame: YuvFrame) -> _Stream:
        st = self._streams.get(frame.stream_id)
        if st is None:
            raise ValueError(f"frame from stream {frame.stream_id!r}, which the cover engine does not know")
        size = (frame.width, frame.height)
        if st.size != size:  # first frame, or a size change: rebuild what depends on the size
            s = st.settings
            st.size = size
            gh = s.motion.height if s.motion.enabled else min(frame.height, s.max_grid_height)
            st.grid = grid_size(frame.width, frame.height, gh)
            st.zones = zone_masks(s.zones, *st.grid)
            st.held = []
            st.last_run = -1
            if s.motion.enabled:
                st.motion = MotionLayer(frame.width, frame.height, s.fps, s.motion, live=s.live)
                if st.primer is not None and not s.live and s.motion.first_pass:
                    st.motion.prime(st.primer)
        return st

    def _cover_map(self, frame: YuvFrame, st: _Stream, boxes: np.ndarray) -> np.ndarray | CoverWhole:
        gw, gh = st.grid
        grid = np.zeros((gh, gw), np.float32)
        if st.motion is not None:
            moving, reason = st.motion.step(frame.y)
            if reason is not None:
                return CoverWhole(reason)
            if st.zones.exclude is not None:
                moving = cv2.bitwise_and(moving, cv2.bitwise_not(st.zones.exclude))
            grid[moving > 0] = 1.0
        if st.settings.cover == "box" and len(boxes):
            fill_boxes(grid, boxes, gw / frame.width, gh / frame.height)
        if st.zones.privacy is not None:
            grid[st.zones.privacy > 0] = 1.0
        return grid

    def _segment(self, frames: list[YuvFrame], boxes_of: list[np.ndarray], grids: list[np.ndarray | CoverWhole]) -> None:
        """``cover: segment``: all crops of all frames in one batch, pasted back; misses filled whole."""
        jobs: list[tuple[int, tuple[int, int, int, int], np.ndarray]] = []
        crops: list[YuvFrame] = []
        for k, (f, boxes) in enumerate(zip(frames, boxes_of)):
            for b in boxes:
                rect = square_crop(b, f.width, f.height)
                jobs.append((k, rect, b))
                crops.append(crop_frame(f, rect))
        probs = self.segmenter.infer_yuv(crops)  # type: ignore[union-attr]
        for (k, rect, b), prob in zip(jobs, probs):
            grid = grids[k]
            assert isinstance(grid, np.ndarray)
            f = frames[k]
            sx, sy = grid.shape[1] / f.width, grid.shape[0] / f.height
            if not paste_crop(grid, np.asarray(prob), rect, b, sx, sy) and fills_empty_crop(b, self._streams[f.stream_id].settings.detector.fill_score):
                fill_boxes(grid, b[None, :], sx, sy)


def yuv_from_image(img: np.ndarray, order: str = "rgb") -> YuvFrame:
    """A packed (H, W, 3) uint8 image as an I420 frame (BT.601 limited, odd sizes replicated)."""
    if order not in ("rgb", "bgr"):
        raise ValueError(f"order must be 'rgb' or 'bgr', got {order!r}")
    bgr = img if order == "bgr" else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    if (h | w) & 1:
        bgr = cv2.copyMakeBorder(bgr, 0, h & 1, 0, w & 1, cv2.BORDER_REPLICATE)
    eh, ew = bgr.shape[:2]
    flat = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2YUV_I420).reshape(-1)
    n, q = eh * ew, (eh // 2) * (ew // 2)
    y = flat[:n].reshape(eh, ew)
    u = flat[n : n + q].reshape(eh // 2, ew // 2)
    v = flat[n + q : n + 2 * q].reshape(eh // 2, ew // 2)
    cw, ch = chroma_size(w, h)
    return YuvFrame(np.ascontiguousarray(y[:h, :w]), np.ascontiguousarray(u[:ch, :cw]), np.ascontiguousarray(v[:ch, :cw]))
