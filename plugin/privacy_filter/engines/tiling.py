"""Tiled inference for wide, high-resolution scenes with small people.

A low-resolution model sees a 1080p crowd scene at 256 px: people a few pixels tall vanish.
Overlapping tiles at the model's aspect, each shrunk less than the whole frame, are inferred in
the SAME batch as (optionally) the whole-frame pass and blended into one probability map:

* tiles among themselves: feathered weights (linear ramps across the overlaps), so seams vanish;
* tiles with the whole-frame pass: per-pixel maximum, so a person seen at either scale is kept
  (privacy prefers recall; the whole pass still finds people larger than a tile).

The merged map is returned at "tile resolution" (about one model pixel per tile pixel), which
maps onto the frame by plain scaling like any other probability map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from privacy_filter.errors import ConfigError

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (luma pixels, x0/y0 even)

#: Largest side of a merged map; larger frames are merged at reduced resolution.
MAX_MERGED_SIDE = 1536


@dataclass(frozen=True)
class TileGrid:
    cols: int
    rows: int
    overlap: float = 0.2  # fraction of a tile shared with its neighbour
    whole: bool = True  # also infer the whole frame in the same batch

    def __post_init__(self) -> None:
        if not (1 <= self.cols <= 8 and 1 <= self.rows <= 8):
            raise ConfigError(f"tiles: COLSxROWS must be 1..8 each, got {self.cols}x{self.rows}")
        if not 0.0 <= self.overlap < 0.9:
            raise ConfigError(f"tiles: overlap must be in [0, 0.9), got {self.overlap}")

    @property
    def count(self) -> int:
        return self.cols * self.rows


@dataclass(frozen=True)
class AutoTiles:
    """Pick a grid per frame from its size and aspect (see ``auto_grid``)."""

    overlap: float = 0.2
    whole: bool = True


TileSetting = TileGrid | AutoTiles | None


def parse_tiles(value: str | TileGrid | AutoTiles | None) -> TileSetting:
    """``None``/'off' → no tiling; 'auto'; 'CxR' (e.g. '2x1'); objects pass through."""
    if value is None or isinstance(value, (TileGrid, AutoTiles)):
        return value
    text = str(value).strip().lower()
    if text in ("", "off", "none", "0", "false"):
        return None
    if text == "auto":
        return AutoTiles()
    m = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", text)
    if not m:
        raise ConfigError(f"tiles: expected 'off', 'auto' or COLSxROWS like '2x1', got {value!r}")
    grid = TileGrid(int(m.group(1)), int(m.group(2)))
    return None if grid.count == 1 else grid


def auto_grid(width: int, height: int, model_w: int, model_h: int) -> tuple[int, int] | None:
    """Grid for 'auto', from what was measured (docs in benchmarks/bench_segmentation.py --tiles):
    2 tiles along the long side when it is at least twice the model's, 2x2 when both sides are
    at least four times; finer grids cut people into pieces and lost mIoU.  Small frames → None."""
    long_side, model_long = max(width, height), max(model_w, model_h)
    if long_side < 2 * model_long:
        return None
    if min(width, height) >= 4 * min(model_w, model_h):
        return 2, 2
    return (2, 1) if width >= height else (1, 2)


def grid_for(setting: TileSetting, width: int, height: int, model_w: int, model_h: int) -> TileGrid | None:
    if setting is None:
        return None
    if isinstance(setting, AutoTiles):
        cr = auto_grid(width, height, model_w, model_h)
        return None if cr is None else TileGrid(cr[0], cr[1], setting.overlap, setting.whole)
    return setting


def _even(v: float) -> int:
    return int(v) & ~1


def tile_rects(width: int, height: int, grid: TileGrid, model_w: int, model_h: int) -> list[Rect]:
    """Overlapping rectangles covering the frame, each near the model's aspect (clamped to the frame)."""
    o = grid.overlap
    tw = width / (grid.cols - (grid.cols - 1) * o)
    th_cover = height / (grid.rows - (grid.rows - 1) * o)
    th = max(th_cover, tw * model_h / model_w)  # cover the height; never flatter than the model
    tw, th = min(width, int(np.ceil(tw))), min(height, int(np.ceil(th)))
    rects: list[Rect] = []
    for r in range(grid.rows):
        y0 = _even(r * (height - th) / (grid.rows - 1)) if grid.rows > 1 else _even((height - th) / 2)
        for c in range(grid.cols):
            x0 = _even(c * (width - tw) / (grid.cols - 1)) if grid.cols > 1 else _even((width - tw) / 2)
            # Even origins (chroma alignment) may shift a tile left/up by 1 px: the last column/row
            # extends to the frame edge so nothing is left uncovered.
            x1 = width if c == grid.cols - 1 else min(width, x0 + tw)
            y1 = height if r == grid.rows - 1 else min(height, y0 + th)
            rects.append((x0, y0, x1, y1))
    return rects


def merged_size(width: int, height: int, rects: list[Rect], model_w: int) -> tuple[int, int]:
    """(w, h) of the merged map: about one model pixel per tile pixel, capped."""
    tile_w = max(x1 - x0 for x0, _, x1, _ in rects)
    s = model_w / tile_w
    s = min(s, MAX_MERGED_SIDE / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


def _ramp(n: int, lo_edge: bool, hi_edge: bool, ramp: int) -> np.ndarray:
    """1-D weights: linear ramps of ``ramp`` px at inner edges, flat at frame borders."""
    w = np.ones(n, np.float32)
    if ramp <= 0:
        return w
    r = np.linspace(1.0 / (ramp + 1), 1.0, ramp, dtype=np.float32)[:n]
    if not lo_edge:
        w[: len(r)] = np.minimum(w[: len(r)], r)
    if not hi_edge:
        w[n - len(r) :] = np.minimum(w[n - len(r) :], r[::-1])
    return w


def merge(
    whole: np.ndarray | None,
    tiles: list[np.ndarray],
    rects: list[Rect],
    width: int,
    height: int,
    model_w: int,
) -> np.ndarray:
    """Blend tile maps (feathered) and the whole-frame map (max) into one map covering the frame."""
    mw, mh = merged_size(width, height, rects, model_w)
    sx, sy = mw / width, mh / height
    acc = np.zeros((mh, mw), np.float32)
    wsum = np.zeros((mh, mw), np.float32)
    for prob, (x0, y0, x1, y1) in zip(tiles, rects):
        a0, b0 = round(x0 * sx), round(y0 * sy)
        a1, b1 = max(a0 + 1, round(x1 * sx)), max(b0 + 1, round(y1 * sy))
        p = cv2.resize(prob.astype(np.float32, copy=False), (a1 - a0, b1 - b0), interpolation=cv2.INTER_LINEAR)
        ramp_x = int((a1 - a0) * 0.2)
        ramp_y = int((b1 - b0) * 0.2)
        w = np.outer(_ramp(b1 - b0, b0 == 0, b1 >= mh, ramp_y), _ramp(a1 - a0, a0 == 0, a1 >= mw, ramp_x))
        acc[b0:b1, a0:a1] += w * p
        wsum[b0:b1, a0:a1] += w
    merged = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    if whole is not None:
        up = cv2.resize(whole.astype(np.float32, copy=False), (mw, mh), interpolation=cv2.INTER_LINEAR)
        np.maximum(merged, up, out=merged)
        # Pixels no tile covered (should not happen with a full grid) keep the whole-frame value.
    return merged
