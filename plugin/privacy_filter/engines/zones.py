"""Static zones of a CCTV stream: normalised polygons → masks on the cover grid.

``privacy`` zones are always covered (a neighbour's window); ``exclude`` zones remove only the
*motion* cover (a swaying tree, a screen), never a person the detector found, so a person walking
through an excluded area stays hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from privacy_filter.config import ZoneConfig


@dataclass(frozen=True)
class ZoneMasks:
    """uint8 masks (255 inside) at one grid size; None when no zone of that mode exists."""

    privacy: np.ndarray | None
    exclude: np.ndarray | None


def polygons_mask(polygons: Sequence[Sequence[tuple[float, float]]], width: int, height: int) -> np.ndarray | None:
    """Normalised polygons filled at ``width`` x ``height``; None for no polygons.

    A point (x, y) maps to (x·width, y·height), so [0, 1] spans the whole grid; the filled
    region includes its boundary cells, which errs towards covering.
    """
    if not polygons:
        return None
    mask = np.zeros((height, width), np.uint8)
    pts = [np.round(np.asarray(p, np.float64) * [width, height] - 0.5).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, 255)
    cv2.polylines(mask, pts, True, 255)
    return mask


def zone_masks(zones: Sequence[ZoneConfig], width: int, height: int) -> ZoneMasks:
    """The stream's privacy and exclude masks at the given grid size."""
    return ZoneMasks(
        privacy=polygons_mask([z.points for z in zones if z.mode == "privacy"], width, height),
        exclude=polygons_mask([z.points for z in zones if z.mode == "exclude"], width, height),
    )
