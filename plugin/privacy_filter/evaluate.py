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

import cv2
import numpy as np

from privacy_filter.engines import Segmenter, upsample_probability
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


def person_probability(seg: Segmenter, image_bgr: np.ndarray, refine: Refine = DEFAULT_REFINE) -> np.ndarray:
    """Probability at the image's size: model → guided-filter refinement (default) or plain
    bilinear upsample (``refine='off'``, what the video pipeline does)."""
    prob = seg.infer_rgb([image_bgr], order="bgr")[0]
    if refine == "guided":
        return refine_guided(prob, image_bgr)
    if refine != "off":
        raise UserError(f"unknown --refine {refine!r}: expected 'guided' or 'off'")
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


def evaluate(seg: Segmenter, pairs: list[tuple[Path, Path]], progress: bool = True, tiles: str = "off",
             refine: Refine = DEFAULT_REFINE) -> EvalResult:
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
        model=seg.spec.name, tiles=tiles, refine=refine, images=len(pairs), miou=total.miou, person_iou=total.person_iou,
        background_iou=total.background_iou, person_recall=total.recall,
        miou_per_image_mean=float(np.mean([r["miou"] for r in per_image])) if per_image else float("nan"),
        median_ms=statistics.median(times) if times else float("nan"), per_image=per_image,
    )


def format_table(r: EvalResult) -> str:
    rows = [
        ("model", r.model), ("tiles", r.tiles), ("refine", r.refine), ("images", r.images),
        ("mIoU (2-class, pooled)", f"{r.miou:.4f}"), ("person IoU", f"{r.person_iou:.4f}"),
        ("background IoU", f"{r.background_iou:.4f}"), ("person recall", f"{r.person_recall:.4f}"),
        ("mIoU per-image mean", f"{r.miou_per_image_mean:.4f}"), ("median ms/image", f"{r.median_ms:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


