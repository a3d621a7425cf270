"""Gather and scatter square tiles of a uint8 plane, fast.

The CPU effects work on the few tiles that hold the mask's edge: the compositor reads and
writes the frame's 16-px partial tiles, and the mask picks those tiles out of its stack of
computed edge tiles.  Advanced indexing of a (th, T, tw, T) view does that correctly for any plane, but NumPy then copies
every tile row as a separate T-byte sub-array.  When a plane's rows are a multiple of T
bytes apart, each tile row is instead one item of a contiguous array of T-byte void items
laid over the plane's memory, and NumPy moves those as single units: about 5x faster for
both directions at 1080p (16-px tiles: 0.017 vs 0.088 ms for 479 tiles).

Tile (ty, tx) covers rows ty·T … ty·T+T−1 and columns tx·T … tx·T+T−1 of the plane.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided


@lru_cache(maxsize=8)
def _row_dtype(size: int) -> np.dtype:
    return np.dtype((np.void, size))


def row_items(plane: np.ndarray, size: int) -> np.ndarray | None:
    """``plane``'s memory from its first pixel as a contiguous 1-D array of ``size``-byte items,
    when every tile row starts on an item (uint8 rows a multiple of ``size`` bytes apart), else None."""
    if plane.dtype != np.uint8 or plane.ndim != 2 or plane.strides[1] != 1 or plane.strides[0] % size or not plane.size:
        return None
    n = ((plane.shape[0] - 1) * plane.strides[0] + plane.shape[1]) // size
    return as_strided(plane, (n, size), (size, 1)).view(_row_dtype(size))[:, 0]


def row_index(ty: np.ndarray, tx: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(n, size) indices, among :func:`row_items` of a plane with this row stride, of the rows of tiles (ty, tx)."""
    per_row = stride // size  # items per plane row
    first = np.asarray(ty, np.intp) * (size * per_row) + np.asarray(tx, np.intp)  # each tile's first row
    return first[:, None] + np.arange(0, size * per_row, per_row)[None, :]


class TileRows:
    """The tiles (ty, tx) of one plane, gathered and scattered through :func:`row_items` when
    the plane allows it (the index is made once, so a plane read twice and written once pays
    for it once), else by advanced indexing."""

    def __init__(self, plane: np.ndarray, ty: np.ndarray, tx: np.ndarray, size: int, index: np.ndarray | None = None) -> None:
        self.plane, self.ty, self.tx, self.size = plane, ty, tx, size
        self.items = row_items(plane, size)
        self.index = None
        if self.items is not None:
            self.index = index if index is not None else row_index(ty, tx, size, plane.strides[0])

    def gather(self) -> np.ndarray:
        """The tiles as a new (n, size, size) stack."""
        if self.items is None:
            return self._view()[self.ty, :, self.tx, :]
        return self.items[self.index].view(np.uint8).reshape(-1, self.size, self.size)

    def scatter(self, stack: np.ndarray) -> None:
        """Write an (n, size, size) uint8 stack into the tiles, in place."""
        if self.items is None:
            self._view()[self.ty, :, self.tx, :] = stack
            return
        assert self.index is not None
        self.items[self.index] = np.ascontiguousarray(stack, np.uint8).reshape(-1).view(_row_dtype(self.size)).reshape(self.index.shape)

    def _view(self) -> np.ndarray:
        h, w = self.plane.shape
        th, tw = h // self.size, w // self.size
        return self.plane[: th * self.size, : tw * self.size].reshape(th, self.size, tw, self.size)
