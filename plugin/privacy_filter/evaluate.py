"""``segment`` and ``eval``: person masks for still images, and their quality against ground truth.

Metric (the PeopleSemSegNet card's KPI): 2-class mean IoU = mean of the person IoU and the
background IoU, each computed from **pixel totals pooled over the whole dataset** (one confusion
matrix for all images, as TAO's evaluation accumulates it) — not an average of per-image IoUs,
which would let tiny masks dominate.  The per-image average is reported too, labelled as such.

Predictions: probability at model resolution → to the image size, by default with the colour
guided filter of ``engines.refine`` (edge-aware; ``--refine off`` = the plain bilinear upsample
the video pipeline uses) → threshold 0.5.  Ground truth: any nonzero pixel is person;
a mask whose size differs from its image is resized with nearest-neighbour.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from privacy_filter.engines import Segmenter, upsample_probability
from privacy_filter.engines.finder import PersonFinder
from privacy_filter.engines.refine import Refine, refine_guided
from privacy_filter.errors import SourceError, UserError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
THRESHOLD = 0.5


# ---------------------------------------------------------------------------------------------
# image I/O at the edge
# ---------------------------------------------------------------------------------------------


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in named folders."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS))
        elif p.is_file():
            found.append(p)
        else:
            raise SourceError(f"no such image or folder: {p}")
    return found


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR; SourceError naming the file when it cannot be decoded."""
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    if data is None:
        raise SourceError(f"no such image: {path}")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise SourceError(f"cannot decode image {path} (corrupt or not an image)")
    return img


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """Ground truth as bool (H, W): nonzero = person; nearest-resized to the image when sizes differ."""
    data = np.fromfile(str(path), np.uint8)
    m = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if m is None:
        raise SourceError(f"cannot decode mask {path}")
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.shape != (height, width):
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
    return m > 0


DEFAULT_REFINE: Refine = "guided"


def person_probability(seg: Segmenter | PersonFinder, image_bgr: np.ndarray, refine: Refine = DEFAULT_REFINE) -> np.ndarray:
    """Probability at the image's size: model → guided-filter refinement (default) or plain
    bilinear upsample (``refine='off'``, what the video pipeline does).  A cover engine's map
    (detector boxes or crops) is never refined: its edges are the padded boxes, not the picture's."""
    if refine not in ("guided", "off"):
        raise UserError(f"unknown --refine {refine!r}: expected 'guided' or 'off'")
    prob = seg.infer_rgb([image_bgr], order="bgr")[0]
    if refine == "guided" and not isinstance(seg, PersonFinder):
        return refine_guided(prob, image_bgr)
    return upsample_probability(prob, image_bgr.shape[1], image_bgr.shape[0])


def progress_bar(items: list, desc: str, enabled: bool = True) -> Iterator:
    if not enabled or len(items) < 2:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit="img", file=sys.stderr, leave=False)


# ---------------------------------------------------------------------------------------------
# segment
# ---------------------------------------------------------------------------------------------


def mask_png(prob: np.ndarray, soft: bool) -> np.ndarray:
    """8-bit mask: 255 person / 0 background, or round(probability × 255) with ``soft``."""
    if soft:
        return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    return np.where(prob >= THRESHOLD, 255, 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------


@dataclass
class Confusion:
    """Pixel totals for the person class (background is the complement)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> Confusion:
        tp = int(np.count_nonzero(pred & gt))
        p, g = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
        c = Confusion(tp, p - tp, g - tp, pred.size - p - g + tp)
        self.tp += c.tp
        self.fp += c.fp
        self.fn += c.fn
        self.tn += c.tn
        return c

    @property
    def person_iou(self) -> float:
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0

    @property
    def background_iou(self) -> float:
        d = self.tn + self.fp + self.fn
        return self.tn / d if d else 1.0

    @property
    def miou(self) -> float:
        return (self.person_iou + self.background_iou) / 2

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class EvalResult:
    model: str
    tiles: str
    refine: str
    images: int
    miou: float  # pooled over the dataset's pixel totals (the KPI)
    person_iou: float
    background_iou: float
    person_recall: float
    miou_per_image_mean: float  # average of per-image mIoUs, for reference only
    median_ms: float  # preprocessing + inference + upsample/refine + threshold, per image (decode excluded)
    pooling: str = "dataset pixel totals"
    per_image: list[dict] = field(default_factory=list)


def pair_masks(images: list[Path], masks_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs by stem; SourceError listing images without a mask."""
    if not masks_dir.is_dir():
        raise SourceError(f"no such masks folder: {masks_dir}")
    by_stem = {p.stem: p for p in masks_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SourceError(f"no ground-truth mask in {masks_dir} for {', '.join(missing[:5])}{more}")
    return [(p, by_stem[p.stem]) for p in images]


def evaluate(seg: Segmenter | PersonFinder, pairs: list[tuple[Path, Path]], progress: bool = True, tiles: str = "off", refine: Refine = DEFAULT_REFINE) -> EvalResult:
    if isinstance(seg, PersonFinder):
        refine = "off"  # a cover engine's map is padded boxes or crops: never refined
    total = Confusion()
    per_image: list[dict] = []
    times: list[float] = []
    for img_path, mask_path in progress_bar(pairs, "eval", progress):
        img = read_image(img_path)
        gt = read_mask(mask_path, img.shape[1], img.shape[0])
        t0 = time.perf_counter()
        pred = person_probability(seg, img, refine) >= THRESHOLD
        times.append((time.perf_counter() - t0) * 1000)
        c = total.add(pred, gt)
        per_image.append({"image": img_path.name, "miou": round(c.miou, 5), "person_iou": round(c.person_iou, 5)})
    return EvalResult(
        model=seg.name if isinstance(seg, PersonFinder) else seg.spec.name,
        tiles=tiles,
        refine=refine,
        images=len(pairs),
        miou=total.miou,
        person_iou=total.person_iou,
        background_iou=total.background_iou,
        person_recall=total.recall,
        miou_per_image_mean=float(np.mean([r["miou"] for r in per_image])) if per_image else float("nan"),
        median_ms=statistics.median(times) if times else float("nan"),
        per_image=per_image,
    )


def format_table(r: EvalResult) -> str:
    rows = [
        ("model", r.model),
        ("tiles", r.tiles),
        ("refine", r.refine),
        ("images", r.images),
        ("mIoU (2-class, pooled)", f"{r.miou:.4f}"),
        ("person IoU", f"{r.person_iou:.4f}"),
        ("background IoU", f"{r.background_iou:.4f}"),
        ("person recall", f"{r.person_recall:.4f}"),
        ("mIoU per-image mean", f"{r.miou_per_image_mean:.4f}"),
        ("median ms/image", f"{r.median_ms:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# ---------------------------------------------------------------------------------------------
# eval-video: per-person coverage of a whole pipeline on a clip (privacy_filter.coverage)
# ---------------------------------------------------------------------------------------------


@dataclass
class VideoEvalReport:
    """``eval-video`` result: the metric, what was covered whole, time per frame, the worst frame."""

    video: str
    hidden: float
    head_recall: float
    body_recall: float
    never_exposed: float
    n_never_exposed: int
    n_people: int
    false_cover: float
    n_person_frames: int
    frames: int
    frames_covered_whole: int
    ms_per_frame: float
    worst_frame: int
    worst_exposed: int
    worst_picture: str | None
    settings: str = ""


def evaluate_video(
    video: str,
    boxes_csv: str | Path,
    cfg: Any,
    *,
    heads_csv: str | Path | None = None,
    picture: str | Path | None = None,
    detector: Any = None,
    progress: bool = True,
) -> VideoEvalReport:
    """Run ``cfg``'s stage (cover engine or segmenter, mask settings, effect) over ``video`` and score each
    frame's final mask with the per-person metric; the worst frame is written to ``picture`` with the
    exposed people's boxes drawn in red."""
    from privacy_filter.coverage import CoverageAccumulator, read_boxes_csv
    from privacy_filter.io import open_source
    from privacy_filter.media import AudioPacket
    from privacy_filter.pipeline import build_cover_engine, plan_from_stream_config
    from privacy_filter.stage import FilterStage

    def read(path: str | Path, what: str) -> list[Any]:
        try:
            return read_boxes_csv(path)
        except OSError as exc:
            raise SourceError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise SourceError(f"the {what} {path}: {exc}") from None

    people = read(boxes_csv, "boxes CSV (--boxes)")
    heads = read(heads_csv, "heads CSV (--heads)") if heads_csv else []
    plan = plan_from_stream_config(cfg)
    decoder = open_source(video, stream_id=plan.stream_id, audio=False, live=False)
    info = decoder.open()
    if plan.cover is not None:
        engine = build_cover_engine(plan, video, info, False, "cpu", detector)
    else:
        from privacy_filter.backends import create_segmenter

        engine = create_segmenter(plan.model, device="cpu", tiles=plan.tiles)
    stage = FilterStage(engine, {plan.stream_id: plan.stage})
    acc = CoverageAccumulator(people, heads)
    worst_bgr: np.ndarray | None = None
    worst_seen = -1
    covered_whole = 0
    spent = 0.0
    bar = _video_bar(progress, info.video.frames, video)
    try:
        frames = (item for item in decoder if not isinstance(item, AudioPacket))
        for group in in_groups(frames, stage.frames_per_call(plan.stream_id)):
            t0 = time.perf_counter()
            results = stage.process(group)
            spent += time.perf_counter() - t0
            for frame, res in zip(group, results):
                covered_whole += res.status == "covered"
                mask = res.mask if res.mask is not None else np.zeros((frame.height, frame.width), np.uint8)
                acc.add(frame.index, mask)
                if acc.worst_frame != worst_seen and acc.worst_frame == frame.index and res.frame is not None:
                    worst_seen = frame.index
                    worst_bgr = _draw_exposed(res.frame, acc.worst_exposed)
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
        decoder.close()
        stage.close()
    r = acc.result()
    written = None
    if picture is not None and worst_bgr is not None:
        if not cv2.imwrite(str(picture), worst_bgr):
            raise UserError(f"cannot write {picture}")
        written = str(picture)
    return VideoEvalReport(
        video=video,
        hidden=r.hidden,
        head_recall=r.head_recall,
        body_recall=r.body_recall,
        never_exposed=r.never_exposed,
        n_never_exposed=r.n_never_exposed,
        n_people=r.n_people,
        false_cover=r.false_cover,
        n_person_frames=r.n_person_frames,
        frames=r.n_frames,
        frames_covered_whole=covered_whole,
        ms_per_frame=1000.0 * spent / max(1, r.n_frames),
        worst_frame=r.worst_frame,
        worst_exposed=len(r.worst_exposed),
        worst_picture=written,
        settings=_describe_settings(cfg),
    )


def in_groups(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``n`` (the last may be shorter): a stream's frames as the engine wants them per call."""
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _describe_settings(cfg: Any) -> str:
    if not cfg.uses_cover_engine():
        return f"model {cfg.model} (full frame)"
    d, m = cfg.detector, cfg.motion
    every = f"every {d.every}" + (f", rate {d.rate}/s" if d.rate is not None else "") + (f", files every {d.file_every} down to {d.min_rate}/s" if d.file_every > 1 else "")
    det = f"detector {d.name} score {d.score} {every}" if d.enabled else "no detector"
    return f"{det}, cover {cfg.cover}, motion {'on' if m.enabled else 'off'}, {len(cfg.zones)} zones"


def _draw_exposed(frame: Any, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """The filtered frame as BGR with each exposed person's box in red."""
    h, w = frame.height, frame.width
    eh, ew = h + (h & 1), w + (w & 1)
    y = np.zeros((eh, ew), np.uint8)
    y[:h, :w] = frame.y
    u, v = np.asarray(frame.u), np.asarray(frame.v)
    i420 = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(eh * 3 // 2, ew)
    bgr = np.ascontiguousarray(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)[:h, :w])
    for x, yy, bw, bh in boxes:
        cv2.rectangle(bgr, (int(x), int(yy)), (int(x + bw), int(yy + bh)), (0, 0, 255), 2)
    return bgr


def _video_bar(enabled: bool, total: int | None, video: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=Path(video).name, dynamic_ncols=True, leave=False)


def format_video_report(r: VideoEvalReport) -> str:
    """The human-readable ``eval-video`` summary."""
    bars = "meets" if (r.hidden >= 0.98 and r.never_exposed >= 0.90 and r.false_cover <= 0.10) else "MISSES"
    lines = [
        f"{r.video}: {r.frames} frames, {r.n_person_frames} person-frames, {r.n_people} people ({r.settings})",
        f"  hidden          {r.hidden:.3f}   (head recall {r.head_recall:.3f}, body recall {r.body_recall:.3f})",
        f"  never exposed   {r.never_exposed:.3f}   ({r.n_never_exposed} of {r.n_people} people)",
        f"  false cover     {r.false_cover:.3f}",
        f"  covered whole   {r.frames_covered_whole} frames",
        f"  stage time      {r.ms_per_frame:.1f} ms per frame",
        f"  CCTV bars (hidden >= 0.98, never exposed >= 0.90, false cover <= 0.10): {bars}",
    ]
    if r.worst_frame >= 0:
        lines.append(f"  worst frame     {r.worst_frame} ({r.worst_exposed} exposed)" + (f" -> {r.worst_picture}" if r.worst_picture else ""))
    else:
        lines.append("  worst frame     none: every person-frame hidden")
    return "\n".join(lines)
