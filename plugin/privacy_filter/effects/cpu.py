"""CPU effects backend (OpenCV/NumPy) on I420 planes, in place.

Matches tests/reference.py within ±1 level (docs/effects.md).  Cost follows the people,
not the frame: the alpha is known outside the mask's box (MaskAlpha), so for target
person only the box is touched; for target background the area outside the box is simply
overwritten with the effect picture.  Inside the box, alpha-255 pixels are copied and only
the 16×16 tiles holding the feathered edge (0 < a < 255) are blended, in exact integer
arithmetic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import tiles
from privacy_filter.effects.geometry import Geometry, resolve_geometry
from privacy_filter.effects.mask import BLEND_TILE, Box, MaskAlpha, TemporalFilter, chroma_box, cpu_mask_alpha, full_alpha
from privacy_filter.effects.replace import Planes, VideoReplacement, open_replacement
from privacy_filter.frames import YuvFrame

Picture = np.ndarray | int  # an effect picture (region-shaped) or a constant


# ------------------------------------------------------------------- effect pictures


def cell_means(plane: np.ndarray, cell: int) -> np.ndarray:
    """Mean of each cell×cell cell aligned to the plane origin (partial edge cells: existing pixels only).

    Small cells go through INTER_AREA at an exact integer factor (a box sum, float-rounded:
    ±1 from round-half-up at most); large cells and the ragged right/bottom cells are
    summed exactly in integers.
    """
    if cell <= 1:
        return np.ascontiguousarray(plane).copy()
    h, w = plane.shape
    nh, nw = h // cell, w // cell
    ch, cw = -(-h // cell), -(-w // cell)
    out = np.empty((ch, cw), np.uint8)
    hf, wf = nh * cell, nw * cell
    if nh and nw:
        if cell >= 12:  # separable integer sums: exact, and ~3x faster than INTER_AREA at large factors
            cols = plane[:hf, :wf].reshape(nh, cell, wf).sum(axis=1, dtype=np.uint16 if cell <= 257 else np.uint32)
            sums = cols.reshape(nh, nw, cell).sum(axis=2, dtype=np.uint32)
            n = cell * cell
            out[:nh, :nw] = (2 * sums + n) // (2 * n)
        else:
            out[:nh, :nw] = cv2.resize(plane[:hf, :wf], (nw, nh), interpolation=cv2.INTER_AREA)
    if cw > nw and nh:
        s = plane[:hf, wf:].reshape(nh, cell, w - wf).sum(axis=(1, 2), dtype=np.int64)
        n = cell * (w - wf)
        out[:nh, nw] = (2 * s + n) // (2 * n)
    if ch > nh and nw:
        s = plane[hf:, :wf].reshape(h - hf, nw, cell).sum(axis=(0, 2), dtype=np.int64)
        n = cell * (h - hf)
        out[nh, :nw] = (2 * s + n) // (2 * n)
    if ch > nh and cw > nw:
        corner = plane[hf:, wf:]
        n = corner.size
        out[nh, nw] = (2 * int(corner.sum(dtype=np.int64)) + n) // (2 * n)
    return out


def pixelate_region(plane: np.ndarray, cell: int, box: Box | None = None) -> np.ndarray:
    """The pixelated picture of ``plane`` inside ``box`` (whole plane when None).

    Only the cells that intersect the box are averaged; the crop starts on a cell boundary,
    so its own origin-aligned cells are the frame's cells.
    """
    h, w = plane.shape
    y0, y1, x0, x1 = box if box is not None else (0, h, 0, w)
    cy0, cx0 = (y0 // cell) * cell, (x0 // cell) * cell
    cy1, cx1 = min(h, -(-y1 // cell) * cell), min(w, -(-x1 // cell) * cell)
    means = cell_means(plane[cy0:cy1, cx0:cx1], cell)
    if cell >= 8:  # NumPy's repeat beats OpenCV's nearest resize for large cells; columns first
        big = np.repeat(np.repeat(means, cell, axis=1), cell, axis=0)  # (then whole rows are copied)
    else:
        big = cv2.resize(means, (means.shape[1] * cell, means.shape[0] * cell), interpolation=cv2.INTER_NEAREST_EXACT)
    return big[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]


def blur_plane(plane: np.ndarray, factor: int, box_radius: int, passes: int) -> np.ndarray:
    """Cell means by ``factor`` → box means at low resolution → bit-exact bilinear back up."""
    h, w = plane.shape
    small = cell_means(plane, factor)
    k = 2 * box_radius + 1
    for _ in range(passes):
        small = cv2.blur(small, (k, k), borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)


# ------------------------------------------------------------------------ composite


def tint(plane: np.ndarray, color: int, alpha: int) -> np.ndarray:
    """(o·(255−alpha) + color·alpha + 127) // 255 for every pixel o: a constant-alpha composite.

    One ``convertScaleAbs`` (o·(255−alpha)/255 + color·alpha/255, rounded to nearest), twice
    as fast as a lookup table.  It is exact: the true value is never a tie (2·(o·(255−α) +
    c·α) is even, 255·(2k+1) is odd) and is at least 1/510 from one, far beyond float32's
    error of ~3e-5 on values below 256 (tests check every o for every colour and alpha).
    """
    return cv2.convertScaleAbs(plane, alpha=(255 - alpha) / 255.0, beta=color * alpha / 255.0)


TILE = BLEND_TILE  # blend tiles: a partial (feathered) edge is blended tile by tile, densely


@dataclass
class BlendPlan:
    """Where one alpha (inside its box) is opaque and where it is partial, found once and
    reused for every plane that shares the alpha (U and V share the chroma alpha).

    Partial pixels (0 < a < 255) are located at tile granularity: the T×T tiles that hold
    any are gathered as a stack and blended densely (exact at a = 0 and 255 as well), which
    is several times cheaper than listing pixel coordinates over a large box.  The ragged
    right/bottom strips that do not fill a tile are listed pixel by pixel.  The alpha itself
    is the copy mask: everything with a > 0 is copied, then the partial tiles and pixels,
    blended from the untouched picture beforehand, are written over it (a == 255 blends to
    the copy exactly), which saves building an a == 255 mask over the whole box.
    """

    full: np.ndarray  # the copy mask: the alpha itself (copy where a > 0; partial pixels are then rewritten)
    th: int  # tiled area: th*TILE rows × tw*TILE columns from the box origin
    tw: int
    ty: np.ndarray  # tiles holding partial pixels
    tx: np.ndarray
    ta: np.ndarray  # uint16 (n, TILE, TILE) alpha of those tiles
    ys: np.ndarray  # partial pixels in the ragged strips
    xs: np.ndarray
    a: np.ndarray  # uint16 alpha at (ys, xs)
    _rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # row stride -> tiles.row_index

    def tiles_of(self, plane: np.ndarray) -> tiles.TileRows:
        """The partial tiles of ``plane`` (box-shaped, like the alpha); the row index is made
        once per plan and row stride (U and V share it)."""
        stride = plane.strides[0]
        rows = tiles.TileRows(plane, self.ty, self.tx, TILE, self._rows.get(stride))
        if rows.index is not None:
            self._rows[stride] = rows.index
        return rows


def _nonzero_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of the nonzero pixels of a uint8 mask; OpenCV's scan is ~3× faster than NumPy's."""
    if mask.size == 0 or not cv2.countNonZero(mask):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    pts = cv2.findNonZero(mask).reshape(-1, 2)
    return pts[:, 1].astype(np.intp), pts[:, 0].astype(np.intp)


def blend_plan(a: np.ndarray, hard: bool = False, partial: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> BlendPlan:
    """Plan the composite of alpha ``a`` (see :class:`BlendPlan`).

    ``hard``: the caller knows ``a`` holds only 0 and 255 (no feather), so there is nothing to
    blend and ``a`` itself is the copy mask; this skips three passes over the box.
    ``partial``: the partial TILE tiles, already found (MaskAlpha.partial): the box is not
    scanned for them; only those inside the tiled area are kept (the ragged strips are
    scanned pixel by pixel either way).
    """
    h, w = a.shape
    if hard:
        none = np.empty(0, np.intp)
        return BlendPlan(a, 0, 0, none, none, np.empty((0, TILE, TILE), np.uint16), none, none, np.empty(0, np.uint16))
    th, tw = h // TILE, w // TILE
    ty = tx = np.empty(0, np.intp)
    ta = np.empty((0, TILE, TILE), np.uint16)
    if partial is not None:
        inside = (partial[0] < th) & (partial[1] < tw)
        ty, tx, ta = partial[0][inside], partial[1][inside], partial[2][inside].astype(np.uint16)
    elif th and tw:
        partial = cv2.inRange(a[: th * TILE, : tw * TILE], 1, 254)
        if cv2.countNonZero(partial):
            # tile flags: an INTER_AREA mean of 0/255 over 256 pixels is >= 1 iff any is set
            grid = cv2.resize(partial, (tw, th), interpolation=cv2.INTER_AREA)
            ty, tx = _nonzero_points(grid)
            ta = tiles.TileRows(a, ty, tx, TILE).gather().astype(np.uint16)
    # the ragged bottom and right strips that do not fill a tile: pixel by pixel
    ys_b, xs_b = _nonzero_points(cv2.inRange(a[th * TILE :, :], 1, 254) if h > th * TILE else a[:0])
    ys_r, xs_r = _nonzero_points(cv2.inRange(a[: th * TILE, tw * TILE :], 1, 254) if th and w > tw * TILE else a[:0])
    ys = np.concatenate([ys_b + th * TILE, ys_r])
    xs = np.concatenate([xs_b, xs_r + tw * TILE])
    return BlendPlan(a, th, tw, ty, tx, ta, ys, xs, a[ys, xs].astype(np.uint16))


def _div255(x: np.ndarray) -> np.ndarray:
    """x // 255 for 0 <= x <= 65152 without a division (exact on that range)."""
    return ((x + 1 + (x >> 8)) >> 8).astype(np.uint8)


def _blend(o: np.ndarray, e: np.ndarray | int, a: np.ndarray) -> np.ndarray:
    """(o·(255−a) + e·a + 127) // 255 for uint16 ``a``, in two uint16 temporaries updated in
    place (the sum is at most 65152; y = sum + 128 then (y + (y >> 8)) >> 8 is that floor
    division exactly, and y + (y >> 8) <= 65535)."""
    x = o.astype(np.uint16)
    x *= 255 - a
    if isinstance(e, np.ndarray):
        y = e.astype(np.uint16)
        y *= a
    else:
        y = a * np.uint16(e)
    x += y
    x += 128
    x += x >> 8
    x >>= 8
    return x.astype(np.uint8)


def composite_into(dst: np.ndarray, eff: Picture, plan: BlendPlan) -> None:
    """dst = (dst·(255−a) + eff·a + 127) // 255, in place; ``eff`` is an array or a constant.

    Everything with a > 0 is copied (``cv2.copyTo`` with the alpha as mask), then the partial
    tiles and pixels are blended and written over it.  Their picture values are read back
    from ``dst`` after the copy, which holds the picture wherever a > 0 and the untouched
    frame where a = 0 (which blends to the frame exactly), so that the picture, whatever its
    layout, is never indexed: only the frame plane, through :mod:`.tiles`.
    """
    is_array = isinstance(eff, np.ndarray)
    rows = plan.tiles_of(dst) if plan.ty.size else None
    tiles_o = rows.gather() if rows is not None else None
    strip_o = dst[plan.ys, plan.xs] if plan.ys.size else None
    cv2.copyTo(eff if is_array else _constant_plane(dst.shape, int(eff)), plan.full, dst)
    if rows is not None:
        rows.scatter(_blend(tiles_o, rows.gather() if is_array else eff, plan.ta))
    if strip_o is not None:
        dst[plan.ys, plan.xs] = _blend(strip_o, dst[plan.ys, plan.xs] if is_array else eff, plan.a)


_constants: dict[int, np.ndarray] = {}
_constants_lock = threading.Lock()


def _constant_plane(shape: tuple[int, ...], value: int) -> np.ndarray:
    """A read-only ``shape`` view of a cached plane filled with ``value`` (cv2.copyTo wants an
    array source; allocating and filling a box-sized one per plane per frame was a full pass)."""
    h, w = shape
    with _constants_lock:
        plane = _constants.get(value)
        if plane is None or plane.shape[0] < h or plane.shape[1] < w:
            if len(_constants) >= 16:  # a handful of colours in practice; never grow without bound
                _constants.clear()
            ph, pw = (max(h, plane.shape[0]), max(w, plane.shape[1])) if plane is not None else (h, w)
            plane = np.full((ph, pw), value, np.uint8)
            plane.flags.writeable = False
            _constants[value] = plane
    return plane[:h, :w]


def overlay_into(dst: np.ndarray, color: int, plan: BlendPlan, opacity8: int, tinted: np.ndarray | None = None) -> None:
    """Tint: composite ``color`` with a_o = (a·o8 + 127) // 255; the common a = 255 case via :func:`tint`.

    As in :func:`composite_into`: partial places blended first, the tinted picture copied
    wherever a > 0, then the blends written over the partial places.  ``tinted``: the tint
    of the untouched ``dst``, when it was made beforehand (on the helper thread).
    """
    if opacity8 == 0:
        return
    if tinted is None:
        tinted = tint(dst, color, opacity8)  # from the untouched picture
    rows = plan.tiles_of(dst) if plan.ty.size else None
    blended = _blend(rows.gather(), color, _div255(plan.ta * opacity8 + 127).astype(np.uint16)) if rows is not None else None
    strip = _blend(dst[plan.ys, plan.xs], color, _div255(plan.a * opacity8 + 127).astype(np.uint16)) if plan.ys.size else None
    cv2.copyTo(tinted, plan.full, dst)
    if rows is not None:
        rows.scatter(blended)
    if strip is not None:
        dst[plan.ys, plan.xs] = strip


def _bands(dst: np.ndarray, box: Box) -> list[tuple[slice, slice]]:
    """The four regions of a plane around ``box`` (top, bottom, left, right)."""
    y0, y1, x0, x1 = box
    h, w = dst.shape
    return [
        (slice(0, y0), slice(0, w)),
        (slice(y1, h), slice(0, w)),
        (slice(y0, y1), slice(0, x0)),
        (slice(y0, y1), slice(x1, w)),
    ]


def _blur_pictures(planes: Planes, geo: Geometry) -> Planes:
    """The blurred Y, U and V planes (whole planes)."""
    y, u, v = planes
    return (
        blur_plane(y, geo.blur_factor, geo.blur_box, geo.blur_passes),
        blur_plane(u, geo.blur_factor_c, geo.blur_box, geo.blur_passes),
        blur_plane(v, geo.blur_factor_c, geo.blur_box, geo.blur_passes),
    )


def _tinted_box_pictures(planes: Planes, geo: Geometry, box: Box) -> Planes:
    """The overlay's tint (its a = 255 result) of each plane over the luma box / chroma box."""
    out = []
    for plane, region, color in zip(planes, (box, chroma_box(box), chroma_box(box)), geo.color_yuv):
        y0, y1, x0, x1 = region
        out.append(tint(plane[y0:y1, x0:x1], color, geo.opacity8))
    return out[0], out[1], out[2]


def _pixelate_pictures(planes: Planes, geo: Geometry, box: Box | None = None) -> Planes:
    """The pixelated Y, U and V pictures over the luma ``box`` and its chroma box (None: whole planes)."""
    y, u, v = planes
    cbox = None if box is None else chroma_box(box)
    return pixelate_region(y, geo.block, box), pixelate_region(u, geo.block_c, cbox), pixelate_region(v, geo.block_c, cbox)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
HELPER_THREAD = True  # False: everything on the calling thread (benchmarks compare the two)


def _picture_pool() -> ThreadPoolExecutor:
    """One helper thread per process, shared by every stream (the stage applies effects one at a time)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privacy-filter-picture")
        return _pool


# ---------------------------------------------------------------------------- stream


class CpuStreamEffect:
    """One stream's effect on the CPU: temporal mask state + replacement source + geometry cache."""

    def __init__(self, effect: EffectConfig, mask: MaskConfig) -> None:
        self.effect = effect
        self.mask = mask
        self.temporal = TemporalFilter(mask)
        self.replacement = open_replacement(effect)
        self._geo: Geometry | None = None

    def geometry(self, width: int, height: int) -> Geometry:
        if self._geo is None or (self._geo.width, self._geo.height) != (width, height):
            self._geo = resolve_geometry(self.effect, self.mask, width, height)
        return self._geo

    def reset(self) -> None:
        """Drop the temporal state (stream restart)."""
        self.temporal.reset()

    def apply(self, frame: YuvFrame, prob: np.ndarray) -> np.ndarray:
        """Filter ``frame`` in place with the person probability computed from it; return the alpha.

        Effect pictures depend on the frame, not on the mask, so they are computed on a helper
        thread while this one works out the mask (OpenCV releases the GIL): whole planes are
        started at once (see :meth:`_early_pictures`), pictures that need the mask's box as
        soon as it is known (:meth:`_box_pictures`), if it covers a quarter of the frame or
        more.  Handing work to the thread costs a few tenths of a millisecond, so smaller
        pictures stay here.  The frame is only written after both are done.
        """
        frame.validate()
        geo = self.geometry(frame.width, frame.height)
        kind = self.effect.kind
        early = self._early_pictures(frame, geo)
        late: list[tuple[str, Future[Planes]]] = []

        def on_box(box: Box) -> None:
            y0, y1, x0, x1 = box
            if early is None and HELPER_THREAD and (y1 - y0) * (x1 - x0) * 4 >= frame.width * frame.height:
                late.extend(self._box_pictures(frame, geo, box))

        try:
            ma = cpu_mask_alpha(self.temporal(prob), geo, sanitized=True, on_box=on_box)
        except BaseException:
            for fut in [early, *(f for _, f in late)]:
                if fut is not None:
                    fut.cancel() or fut.exception()  # never leave it reading a frame we hand back
            raise
        self._render(frame, ma, geo, kind, early, late[0] if late else None)
        return ma.full()

    def _box_pictures(self, frame: YuvFrame, geo: Geometry, box: Box) -> list[tuple[str, Future[Planes]]]:
        """Pictures that need only the frame and the mask's box, started on the helper thread:
        a pixelation's (of the box for target person, of whole planes for the background) and
        an overlay's tinted box."""
        kind, pool = self.effect.kind, _picture_pool()
        if kind == "pixelate":
            if geo.invert:
                return [("whole", pool.submit(_pixelate_pictures, frame.planes, geo))]
            return [("boxed", pool.submit(_pixelate_pictures, frame.planes, geo, box))]
        if kind == "overlay":
            return [("tinted", pool.submit(_tinted_box_pictures, frame.planes, geo, box))]
        return []

    def _early_pictures(self, frame: YuvFrame, geo: Geometry) -> Future[Planes] | None:
        """Start the whole-plane pictures that cost the most and do not depend on the mask: a
        blur's (about a third of the effect's time at 1080p) and the next picture of a
        replacement video (a decode).  Elsewhere the hand-over between threads costs about
        what it saves (A/B in one run at 1080p: blur 0.77x; whole-plane pixelation 0.97x for a
        portrait's background but 1.1-1.2x for a small CCTV figure's)."""
        if not HELPER_THREAD:
            return None
        if self.effect.kind == "blur":
            return _picture_pool().submit(_blur_pictures, frame.planes, geo)
        if self.effect.kind == "replace" and isinstance(self.replacement, VideoReplacement):
            return _picture_pool().submit(self.replacement.planes, frame.width, frame.height)
        return None

    def cover_whole(self, frame: YuvFrame) -> np.ndarray:
        """Fail closed: the effect over the whole frame (overlay/none → solid colour).

        The temporal state is left alone: there is no mask for this frame to add to it.
        """
        frame.validate()
        geo = self.geometry(frame.width, frame.height)
        kind = self.effect.kind if self.effect.kind in ("pixelate", "blur", "replace", "fill") else "fill"
        self._render(frame, full_alpha(geo), geo, kind)
        return np.full((frame.height, frame.width), 255, np.uint8)

    def close(self) -> None:
        if self.replacement is not None:
            self.replacement.close()

    # -- internals

    def _render(
        self,
        frame: YuvFrame,
        ma: MaskAlpha,
        geo: Geometry,
        kind: str,
        early: Future[Planes] | None = None,
        late: tuple[str, Future[Planes]] | None = None,
    ) -> None:
        if kind == "none":
            return
        replacement: Planes | None = None
        tinted: Planes | None = None
        if early is not None:  # whole-plane pictures, computed from the untouched frame:
            kind, replacement = "replace", early.result()  # composited like a replacement
        elif late is not None and late[0] == "whole":
            kind, replacement = "replace", late[1].result()
        elif late is not None and late[0] == "boxed":  # the box's pictures (target person: all that is read)
            kind, replacement = "boxed", late[1].result()
        elif late is not None and late[0] == "tinted":
            tinted = late[1].result()
        elif kind == "replace" and self.replacement is not None:
            replacement = self.replacement.planes(frame.width, frame.height)
        # without feather the luma alpha is 0/255 (threshold, dilation, inversion); chroma
        # alpha is a 2x2 mean and has partial values along the edges
        luma_plan = blend_plan(ma.a, geo.feather == 0, ma.partial) if ma.a is not None else None
        chroma_plan = blend_plan(ma.ac, False, ma.partial_c) if ma.ac is not None else None
        regions = ((ma.box, luma_plan), (ma.cbox, chroma_plan), (ma.cbox, chroma_plan))
        for i, (dst, (box, plan)) in enumerate(zip(frame.planes, regions)):
            if kind == "overlay":
                self._overlay_plane(dst, ma.outside, box, plan, geo.color_yuv[i], geo.opacity8, tinted[i] if tinted else None)
                continue

            def picture(region: Box | None, i: int = i, dst: np.ndarray = dst) -> Picture:
                return self._picture(kind, i, dst, region, geo, replacement)

            self._composite_plane(dst, ma.outside, box, plan, picture)

    @staticmethod
    def _picture(kind: str, i: int, plane: np.ndarray, region: Box | None, geo: Geometry, repl: Planes | None) -> Picture:
        """The effect picture of plane ``i`` over ``region`` (None: whole plane), or a constant."""
        if kind == "pixelate":
            return pixelate_region(plane, geo.block if i == 0 else geo.block_c, region)
        if kind == "blur":
            k = geo.blur_factor if i == 0 else geo.blur_factor_c
            full = blur_plane(plane, k, geo.blur_box, geo.blur_passes)
            return full if region is None else full[region[0] : region[1], region[2] : region[3]]
        if kind == "replace" and repl is not None:
            full = repl[i]
            return full if region is None else full[region[0] : region[1], region[2] : region[3]]
        if kind == "boxed" and repl is not None:  # already cut to the plane's box
            return repl[i]
        return int(geo.color_yuv[i])  # fill, or replace without image/video

    @staticmethod
    def _composite_plane(dst: np.ndarray, outside: int, box: Box | None, plan: BlendPlan | None, picture: Callable[[Box | None], Picture]) -> None:
        if box is None or plan is None:
            if outside == 255:
                dst[...] = picture(None)
            return
        y0, y1, x0, x1 = box
        if outside == 255:
            eff = picture(None)
            for ys, xs in _bands(dst, box):
                dst[ys, xs] = eff[ys, xs] if isinstance(eff, np.ndarray) else eff
            inner = eff[y0:y1, x0:x1] if isinstance(eff, np.ndarray) else eff
        else:
            inner = picture(box)
        composite_into(dst[y0:y1, x0:x1], inner, plan)

    @staticmethod
    def _overlay_plane(dst: np.ndarray, outside: int, box: Box | None, plan: BlendPlan | None, color: int, o8: int, tinted: np.ndarray | None = None) -> None:
        if outside == 255:
            regions = [(slice(None), slice(None))] if box is None else _bands(dst, box)
            for ys, xs in regions:
                if dst[ys, xs].size:
                    dst[ys, xs] = tint(dst[ys, xs], color, o8)
        if box is not None and plan is not None:
            y0, y1, x0, x1 = box
            overlay_into(dst[y0:y1, x0:x1], color, plan, o8, tinted)
