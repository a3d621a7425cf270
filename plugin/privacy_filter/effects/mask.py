"""Mask post-processing: model-resolution probability → frame-size alpha (docs/effects.md).

The pure pieces here (sanitising, the temporal filter, 8-bit quantisation, bilinear
tap tables) are shared by every backend; ``cpu_mask_alpha`` is the OpenCV
implementation of the frame-resolution steps.  It works on the bounding box of the
thresholded mask grown by dilation + feather, because everything outside that box has
a known alpha (0 for target person, 255 for background): people usually cover a small
part of a frame, and per-frame cost should follow them, not the frame size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import cv2
import numpy as np

from privacy_filter.config import MaskConfig
from privacy_filter.effects import tiles
from privacy_filter.effects.geometry import Geometry

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), luma pixels
BLEND_TILE = 16  # the compositor blends partial alpha in tiles of this many pixels
QUANTIZE_BAND_BYTES = 1 << 20  # quantize's float64 working copy, per band of rows


def sanitize_prob(prob: np.ndarray) -> np.ndarray:
    """float32 copy with NaN → 1 and values clamped to [0, 1].

    NaN means the model produced garbage; treating it as "person" keeps the frame
    covered (fail closed) and stops a NaN from poisoning the temporal state forever.
    """
    p = np.array(prob, dtype=np.float32, copy=True)
    if p.ndim != 2:
        raise ValueError(f"person probability must be a 2-D (h, w) map, got shape {p.shape}")
    if p.size == 0:
        return p
    lo, hi = float(p.min()), float(p.max())  # a NaN anywhere makes both NaN, so this is also the finiteness check
    if 0.0 <= lo and hi <= 1.0:  # a sigmoid or softmax output: nothing to fix, two passes instead of five
        return p
    if not np.isfinite(p).all():  # only garbage takes the slower path
        np.nan_to_num(p, copy=False, nan=1.0, posinf=1.0, neginf=0.0)
    np.clip(p, 0.0, 1.0, out=p)
    return p


def sanitized(prob: np.ndarray) -> np.ndarray:
    """``prob`` itself when it is already a 2-D float32 map in [0, 1], else ``sanitize_prob(prob)``.

    For readers only (``temporal: none``, whose output is only read): the copy ``sanitize_prob``
    makes is 2 MB a frame for the cctv preset's 960x540 cover map, allocated, filled and freed
    on every frame for nothing when the map needs no fixing, which the engines' maps never do.
    """
    p = np.asarray(prob)
    if p.dtype == np.float32 and p.ndim == 2 and p.size:
        lo, hi = float(p.min()), float(p.max())  # NaN anywhere makes both NaN: the slow path
        if 0.0 <= lo and hi <= 1.0:
            return p
    return sanitize_prob(prob)


class TemporalFilter:
    """Per-stream temporal state at model resolution: ``hold`` (max of last N) or ``smooth`` (EMA).

    Hold is the privacy choice: a person the model loses for a few frames stays covered.
    The state is dropped when the map's shape changes (a different model or tiling).
    """

    def __init__(self, mask: MaskConfig) -> None:
        self.mode = mask.temporal
        self.hold_frames = int(mask.hold_frames)
        self._a = np.float32(mask.smooth_alpha)
        self._b = np.float32(1.0 - float(mask.smooth_alpha))
        self._history: deque[np.ndarray] = deque(maxlen=self.hold_frames)
        self._ema: np.ndarray | None = None

    def reset(self) -> None:
        self._history.clear()
        self._ema = None

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        """The map to use for this frame: float32, finite, in [0, 1]; never to be written into
        (``none`` may hand back ``prob`` itself)."""
        if self.mode == "none":
            return sanitized(prob)
        p = sanitize_prob(prob)
        last = self._ema if self.mode == "smooth" else (self._history[-1] if self._history else None)
        if last is not None and last.shape != p.shape:
            self.reset()
        if self.mode == "hold":
            self._history.append(p)
            out = self._history[0].copy()
            for q in list(self._history)[1:]:
                np.maximum(out, q, out=out)
            return out
        # smooth: each product and the sum rounded to float32 separately (no FMA) — the CUDA
        # kernel does the same with __fmul_rn/__fadd_rn, so both agree bit for bit.
        if self._ema is None:
            self._ema = p
        else:  # in place: p is this call's own copy, and the state is never handed out
            np.multiply(p, self._a, out=p)
            np.multiply(self._ema, self._b, out=self._ema)
            np.add(self._ema, p, out=self._ema)
        return self._ema.copy()


def quantize(m: np.ndarray, sanitized: bool = False) -> np.ndarray:
    """Q = floor(255·M + 0.5) as uint8; sanitizes first unless the caller already did.

    255·M is exact in float64 for a float32 M, and never exactly k + ½ (M would have to be
    (2k+1)/510, which has no binary representation), so rounding to nearest even gives the
    same Q in three cheap passes.  Taken over bands of rows, so the float64 working copy is
    ~1 MB, not 8 bytes a cell at once (4 MB for a 960x540 cover map: +4 MB of peak RSS at 1080p).
    """
    p = m if sanitized else sanitize_prob(m)
    q = np.empty(p.shape, np.uint8)
    rows = max(1, QUANTIZE_BAND_BYTES // max(1, 8 * p.shape[-1]))
    for r in range(0, p.shape[0], rows):
        x = p[r : r + rows].astype(np.float64)
        x *= 255.0
        np.rint(x, out=x)
        q[r : r + rows] = x
    return q


def bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tap tables (i0, i1, w) of the bit-exact 8-bit bilinear resize (cv2.INTER_LINEAR_EXACT).

    ``out[d] = (in[i0]·(256−w) + in[i1]·w) / 256`` per axis.  Computed on the host, once per
    size, and handed to the CUDA kernels so that they never re-derive OpenCV's float64
    coordinate rounding.
    """
    if src < 1 or dst < 1:
        raise ValueError(f"bilinear_taps needs positive sizes, got {src} -> {dst}")
    scale = 1.0 / (float(dst) / float(src))
    x = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(x)
    frac = x - i0
    low = i0 < 0
    high = i0 >= src - 1
    i0[low] = 0
    frac[low] = 0.0
    i0[high] = src - 1
    frac[high] = 0.0
    w = np.rint(frac * 256.0).astype(np.int32)
    i0 = i0.astype(np.int32)
    i1 = np.minimum(i0 + 1, src - 1).astype(np.int32)
    return i0, i1, w


def upsample_u8(q: np.ndarray, width: int, height: int) -> np.ndarray:
    """8-bit bilinear resize with the tables of :func:`bilinear_taps` (OpenCV does it bit-exactly)."""
    return cv2.resize(q, (width, height), interpolation=cv2.INTER_LINEAR_EXACT)


@lru_cache(maxsize=256)
def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bilinear_taps, cached: the frame size is fixed and crop sizes repeat."""
    return bilinear_taps(src, dst)


@lru_cache(maxsize=4096)
def _crop_axis(src: int, dst: int, d0: int, d1: int) -> tuple[int, int, int, int] | None:
    """(s0, s1, e0, e1): a source crop [s0, s1) whose own resize to [e0, e1) reproduces outputs [d0, d1).

    The tap pattern of a ``src``→``dst`` resize repeats every ``src/g`` inputs (``dst/g``
    outputs, g = gcd): a crop cut on that period, one period wider than needed on each side
    so that its edge clamping never reaches [d0, d1), has the same scale and the same taps.
    The tap tables are compared to make sure (the same float64 rounding as OpenCV's); None
    when no smaller crop exists or they differ.
    """
    g = gcd(src, dst)
    ps, pd = src // g, dst // g
    b0, b1 = max(0, d0 // pd - 1), min(g, -(-d1 // pd) + 1)
    if b1 - b0 >= g:
        return None
    s0, e0 = b0 * ps, b0 * pd
    i0, i1, w = _taps(src, dst)
    c0, c1, cw = _taps((b1 - b0) * ps, (b1 - b0) * pd)
    j0, j1 = d0 - e0, d1 - e0
    same = np.array_equal(c0[j0:j1] + s0, i0[d0:d1]) and np.array_equal(c1[j0:j1] + s0, i1[d0:d1]) and np.array_equal(cw[j0:j1], w[d0:d1])
    return (s0, b1 * ps, e0, b1 * pd) if same else None


def _resize_span(src: int, dst: int, d0: int, d1: int) -> tuple[int, int, int, int]:
    """(s0, s1, e0, e1): resizing source [s0, s1) to outputs [e0, e1) ⊇ [d0, d1) reproduces the full resize there."""
    return _crop_axis(src, dst, d0, d1) or (0, src, 0, dst)


def upsample_part(q: np.ndarray, width: int, height: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """``upsample_u8(q, width, height)[r0:r1, c0:c1]``, bit for bit, resizing only a crop where possible."""
    (r0, r1), (c0, c1) = rows, cols
    ys = _resize_span(q.shape[0], height, r0, r1)
    xs = _resize_span(q.shape[1], width, c0, c1)
    u = cv2.resize(q[ys[0] : ys[1], xs[0] : xs[1]], (xs[3] - xs[2], ys[3] - ys[2]), interpolation=cv2.INTER_LINEAR_EXACT)
    return u[r0 - ys[2] : r1 - ys[2], c0 - xs[2] : c1 - xs[2]]


def reachable_span(src_lo: int, src_hi: int, src: int, dst: int) -> tuple[int, int]:
    """Output indices [d0, d1) of a ``src``→``dst`` bilinear resize that read any input in [src_lo, src_hi].

    An output pixel is a convex combination of its taps, so it can reach a threshold only
    if one of its taps does: outside this span the upsampled mask is below threshold.
    """
    i0, i1, _ = _taps(src, dst)  # both non-decreasing
    return int(np.searchsorted(i1, src_lo, "left")), int(np.searchsorted(i0, src_hi, "right"))


@dataclass
class MaskAlpha:
    """Frame alpha stored sparsely: explicit inside ``box``, ``outside`` everywhere else.

    ``box`` has even y0/x0 and even (or frame-edge) y1/x1, so the chroma box is exactly
    the 2×2 blocks of the luma box.
    """

    width: int
    height: int
    outside: int  # 0 (target person) or 255 (background)
    box: Box | None = None
    a: np.ndarray | None = None  # luma alpha inside box
    ac: np.ndarray | None = None  # chroma alpha inside cbox
    # When known (tiled evaluation): the only tiles of ``tile`` luma px, counted from the box
    # origin, where the alpha may be anything but one constant 0 or 255 (the same tiles at
    # tile/2 px hold every partial chroma value).  None: anywhere.
    tile: int = 0
    edge_tiles: tuple[np.ndarray, np.ndarray] | None = None
    # When the alpha was written straight into a frame-size plane (tiled evaluation; ``a`` is
    # a view of it): that plane, which ``full()`` hands out instead of assembling a copy.
    plane: np.ndarray | None = None
    # When known: the BLEND_TILE-sized tiles (from the box/cbox origin) that hold partial
    # alpha, as (ty, tx, alpha stack), found while the edge tiles were computed.
    partial: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    partial_c: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def cbox(self) -> Box | None:
        return None if self.box is None else chroma_box(self.box)

    def full(self) -> np.ndarray:
        """Frame-size luma alpha (uint8, 255 = covered); treat it as read-only."""
        if self.plane is not None:
            return self.plane
        # zeros: fresh zero pages, touched only where the box is written (file outputs never read it)
        shape = (self.height, self.width)
        out = np.zeros(shape, np.uint8) if self.outside == 0 else np.full(shape, self.outside, np.uint8)
        if self.box is not None and self.a is not None:
            y0, y1, x0, x1 = self.box
            out[y0:y1, x0:x1] = self.a
        return out

    def full_chroma(self) -> np.ndarray:
        """Chroma-plane-size alpha."""
        cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
        out = np.full((ch, cw), self.outside, np.uint8)
        if self.cbox is not None and self.ac is not None:
            y0, y1, x0, x1 = self.cbox
            out[y0:y1, x0:x1] = self.ac
        return out


def chroma_box(box: Box) -> Box:
    """The chroma-plane box of a luma box with even starts (its 2×2 blocks)."""
    y0, y1, x0, x1 = box
    return y0 // 2, (y1 + 1) // 2, x0 // 2, (x1 + 1) // 2


def chroma_alpha(a: np.ndarray) -> np.ndarray:
    """(a00+a01+a10+a11+2) >> 2 per 2×2 block, odd last row/column replicated.

    OpenCV's INTER_AREA at exactly half size computes this very rounding.
    """
    h, w = a.shape
    if h % 2 or w % 2:
        a = cv2.copyMakeBorder(a, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(a, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)


def dilate_binary(b: np.ndarray, r: int) -> np.ndarray:
    """Rect dilation (2r+1 square, outside pixels ignored) of a 0/255 mask.

    Small radii go to cv2.dilate (separable running max).  From r ≈ 24 its O(r) per pixel
    loses to "any set pixel in the window": an unnormalised box sum (running sums, O(1)
    per pixel; exact in float32 since 255·(2r+1)² < 2^24 for r <= 127) compared with 0.
    """
    k = 2 * r + 1
    if r <= 24 or r > 127 or b.size < 16:  # OpenCV would take a tiny array for a scalar operand below
        return cv2.dilate(b, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    s = cv2.boxFilter(b, cv2.CV_32F, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return cv2.compare(s, 0, cv2.CMP_GT)


def _grow_box(x: int, y: int, w: int, h: int, margin: int, width: int, height: int) -> Box:
    """Bounding rect grown by ``margin``, clamped, with even starts and even-or-edge ends."""
    y0 = max(0, y - margin) & ~1
    x0 = max(0, x - margin) & ~1
    y1 = min(height, y + h + margin)
    x1 = min(width, x + w + margin)
    y1 = min(height, y1 + (y1 & 1))
    x1 = min(width, x1 + (x1 & 1))
    return y0, y1, x0, x1


def cpu_mask_alpha(m: np.ndarray, geo: Geometry, method: str = "auto", sanitized: bool = False, on_box: Callable[[Box], None] | None = None) -> MaskAlpha:
    """Temporal output M (model resolution) → frame alpha, OpenCV implementation.

    quantize → INTER_LINEAR_EXACT upsample → threshold → dilate (rect kernel; cv2's default
    border ignores outside pixels) → box feather (replicated edges) → target inversion →
    2×2 chroma alpha, bit-exact with docs/effects.md.  Two equivalent evaluations:

    * ``dense``: every step over the bounding box of the thresholded mask grown by r + f;
    * ``tiled``: tiles whose alpha is provably 0 or 255 are filled without any frame-size
      work (:func:`classify_tiles`), and only the tiles on the mask's edge are computed,
      each from its own halo (:func:`_edge_tiles_alpha`).  A person filling the frame has a
      large box but a thin edge, so this is what keeps a video call's cost down.

    ``auto`` takes the dense way for small figures and for r + f > 16, else the tiled way
    unless its edge pieces would hold over half the box's pixels.  ``sanitized``: M is already
    float32, finite and in [0, 1] (TemporalFilter's output).  ``on_box`` is called with the
    box as soon as it is known, before the frame-resolution work, so that a caller can start
    work that needs only the box (the effect's picture) beside it.
    """
    if method not in ("auto", "dense", "tiled"):
        raise ValueError(f"cpu_mask_alpha method must be auto, dense or tiled, got {method!r}")
    q = quantize(m, sanitized)
    above = _at_least(q, int(geo.threshold8))  # the thresholded model map, 0/255
    bbox = cv2.boundingRect(above)
    if bbox[2] == 0 or bbox[3] == 0:  # nobody: nothing above threshold anywhere
        return MaskAlpha(geo.width, geo.height, 255 if geo.invert else 0)
    reach = geo.dilate + geo.feather
    # a small figure's box is cheap anyway, and wide halos make edge pieces dearer than the
    # box: in both cases the classification would cost more than it can save
    small = bbox[2] * bbox[3] * 8 < q.size
    if method == "dense" or (method == "auto" and (reach > 16 or small)):
        return _dense_alpha(q, geo, bbox, on_box)
    tc = classify_tiles(above, geo, _tile_size(reach))
    if tc is None:
        return MaskAlpha(geo.width, geo.height, 255 if geo.invert else 0)
    if method == "auto":
        p = tc.tile + 2 * reach
        y0, y1, x0, x1 = tc.box
        if int(tc.edge.sum()) * p * p > (y1 - y0) * (x1 - x0) // 2:
            return _dense_alpha(q, geo, bbox, on_box)
    if on_box is not None:
        on_box(tc.box)
    return _tiled_alpha(q, geo, tc)


def _at_least(x: np.ndarray, t8: int) -> np.ndarray:
    """255 where ``x >= t8``, else 0 (uint8).  OpenCV would take a tiny array for a scalar
    operand, so NumPy does those."""
    return cv2.compare(x, t8, cv2.CMP_GE) if x.size >= 16 else np.where(x >= t8, 255, 0).astype(np.uint8)


def _tile_size(reach: int) -> int:
    """Tile edge of the tiled evaluation: a multiple of the 16-px blend tiles, at least the halo."""
    return 32 if reach <= 16 else 64


@lru_cache(maxsize=64)
def _tile_spans(src: int, dst: int, tile: int, grow: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output tile [t·T, (t+1)·T) grown by ``grow`` (clamped): the source span [lo, hi] its taps read.

    Zero-weight taps are included, which can only make a uniform tile look mixed.
    """
    i0, i1, _ = _taps(src, dst)
    starts = np.arange(0, dst, tile)
    lo = np.maximum(starts - grow, 0)
    hi = np.minimum(starts + tile + grow, dst) - 1
    return i0[lo].astype(np.intp), i1[hi].astype(np.intp)


@dataclass
class TileClasses:
    """Frame tiles (T×T from the origin, ragged at the right/bottom) by what their alpha must be."""

    tile: int
    full: np.ndarray  # bool (gh, gw): alpha 255 (before target inversion) everywhere in the tile
    edge: np.ndarray  # bool: neither provably 255 nor provably 0
    box: Box  # luma pixels covered by the tiles that are not provably 0


def classify_tiles(above: np.ndarray, geo: Geometry, tile: int) -> TileClasses | None:
    """Prove tiles uniform from the 8-bit model map alone (None: every tile is 0).

    An upsampled pixel is a rounded convex combination of its taps, so it is >= T8 when all
    its taps are and < T8 when none is.  A tile's alpha is therefore 0 when no source pixel
    read by the tile grown by r + f is >= T8 (the feather window of the dilation window
    holds no person pixel), and 255 when every source pixel read by the tile grown by f is
    (the whole feather window is person, dilated or not).  The counts come from one
    integral image of ``above``, the thresholded model map (0/255).
    """
    height, width = geo.height, geo.width
    if not cv2.countNonZero(above):
        return None
    s = cv2.integral(above // 255)

    def counts(grow: int) -> tuple[np.ndarray, np.ndarray]:
        ylo, yhi = _tile_spans(above.shape[0], height, tile, grow)
        xlo, xhi = _tile_spans(above.shape[1], width, tile, grow)
        top, bottom = s[ylo], s[yhi + 1]  # integral rows, then columns (cheaper than np.ix_)
        c = bottom[:, xhi + 1] - top[:, xhi + 1] - bottom[:, xlo] + top[:, xlo]
        return c, np.outer(yhi - ylo + 1, xhi - xlo + 1)

    near, _ = counts(geo.dilate + geo.feather)
    inner, area = counts(geo.feather)
    full = inner == area
    zero = near == 0
    if zero.all():
        return None
    rows = np.flatnonzero(~zero.all(axis=1))
    cols = np.flatnonzero(~zero.all(axis=0))
    box = (int(rows[0]) * tile, min(height, (int(rows[-1]) + 1) * tile), int(cols[0]) * tile, min(width, (int(cols[-1]) + 1) * tile))
    return TileClasses(tile, full, ~(full | zero), box)


def _tiled_alpha(q: np.ndarray, geo: Geometry, tc: TileClasses) -> MaskAlpha:
    """Alpha over ``tc.box``: proven tiles filled, edge tiles computed exactly.

    Inversion is applied to the tile values and the edge tiles before they are spread to
    pixels, and when the box has even sides the chroma alpha is assembled the same way
    (a uniform tile's 2×2 means are that value; an edge tile's are computed from its own
    pixels), so neither costs a pass over the whole box.
    """
    t = tc.tile
    y0, y1, x0, x1 = tc.box
    ty0, ty1, tx0, tx1 = y0 // t, -(-y1 // t), x0 // t, -(-x1 // t)
    grid = np.where(tc.full[ty0:ty1, tx0:tx1] != geo.invert, np.uint8(255), np.uint8(0))
    nty, ntx = grid.shape
    ey, ex = np.nonzero(tc.edge[ty0:ty1, tx0:tx1])
    edge = np.empty((0, t, t), np.uint8)
    if ey.size:
        edge = np.ascontiguousarray(_edge_tiles_alpha(q, geo, t, ey + ty0, ex + tx0))
        if geo.invert:
            cv2.bitwise_not(edge, dst=edge)
    # The frame's alpha plane (padded to whole tiles) is written in place, so that full()
    # costs nothing: the constant around the box, each tile row's values broadcast over its
    # T pixel rows, then the edge tiles scattered in.
    outside = 255 if geo.invert else 0
    frame_alpha = np.empty((-(-geo.height // t) * t, -(-geo.width // t) * t), np.uint8)
    ry1, rx1 = y0 + nty * t, x0 + ntx * t
    for ys, xs in ((slice(0, y0), slice(None)), (slice(ry1, None), slice(None)), (slice(y0, ry1), slice(0, x0)), (slice(y0, ry1), slice(rx1, None))):
        frame_alpha[ys, xs] = outside
    region = frame_alpha[y0:ry1, x0:rx1]
    region.reshape(nty, t, ntx * t)[...] = np.repeat(grid, t, axis=1)[:, None, :]
    if ey.size:
        region.reshape(nty, t, ntx, t)[ey, :, ex, :] = edge
    a = frame_alpha[y0:y1, x0:x1]  # a strided view: OpenCV takes strides
    partial_c = None  # an odd box: its chroma alpha is scanned for partial tiles when composited
    if (y1 - y0) % 2 or (x1 - x0) % 2:  # an odd frame edge: its last row/column is replicated
        ac = chroma_alpha(a)
    else:
        h = t // 2
        cpad = np.repeat(np.repeat(grid, h, axis=1), h, axis=0)
        edge_c = chroma_alpha(edge.reshape(-1, t)).reshape(-1, h, h) if ey.size else np.empty((0, h, h), np.uint8)
        cpad.reshape(nty, h, ntx, h)[ey, :, ex, :] = edge_c
        partial_c = _partial_blend_tiles(edge_c, ey, ex)
        ac = cpad[: (y1 - y0) // 2, : (x1 - x0) // 2]
    partial = _partial_blend_tiles(edge, ey, ex)
    plane = np.ascontiguousarray(frame_alpha[: geo.height, : geo.width])  # a copy only if W is not a multiple of T
    return MaskAlpha(geo.width, geo.height, outside, tc.box, a, ac, tile=t, edge_tiles=(ey, ex), partial=partial, partial_c=partial_c, plane=plane)


def _partial_blend_tiles(edge: np.ndarray, ey: np.ndarray, ex: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ty, tx, alpha) of the BLEND_TILE tiles of the edge tiles (n, s, s) at (ey, ex) that hold
    a partial value (0 < a < 255), read from the contiguous edge stack rather than the box."""
    n, s, _ = edge.shape
    k = s // BLEND_TILE
    if n == 0:
        none = np.empty(0, np.intp)
        return none, none, np.empty((0, BLEND_TILE, BLEND_TILE), np.uint8)
    part = cv2.inRange(edge.reshape(-1, s), 1, 254)
    # tile flags: an INTER_AREA mean of 0/255 over BLEND_TILE² pixels is >= 1 iff any is set
    flags = cv2.resize(part, (k, n * k), interpolation=cv2.INTER_AREA).reshape(n, k, k)
    i, sy, sx = np.nonzero(flags)
    stack = tiles.TileRows(edge.reshape(n * s, s), i * k + sy, sx, BLEND_TILE).gather()
    return (ey[i] * k + sy).astype(np.intp), (ex[i] * k + sx).astype(np.intp), stack


def _edge_tiles_alpha(q: np.ndarray, geo: Geometry, t: int, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Exact feathered alpha (n, T, T) of the tiles at grid positions (gy, gx), before inversion.

    Each tile is computed from a piece of the thresholded upsample: the tile plus a halo of
    R = r + f on every side, which is all its alpha depends on.  The n pieces are gathered
    side by side into one P × n·P strip (P = T + 2R), so the dilation and the feather run as
    one OpenCV call each on long rows; a piece's neighbours in the strip only ever touch its
    halo.  Parts of a piece outside the frame are zeros for the dilation (outside pixels are
    ignored) and are overwritten with the nearest frame row/column of the dilated mask before
    the feather (its BORDER_REPLICATE), so pieces at the frame's edges are exact as well.
    """
    width, height = geo.width, geo.height
    r, f = geo.dilate, geo.feather
    big = r + f
    p = t + 2 * big
    n = gy.size
    # One resize over the edge tiles' bounding box plus halo (clamped to the frame, widened
    # to the tap period by _resize_span), written straight into a zeroed canvas: frame
    # pixel (y, x) is canvas[y − oy, x − ox], and everything outside the frame stays 0.
    cy0, cx0 = int(gy.min()) * t, int(gx.min()) * t
    cy1, cx1 = (int(gy.max()) + 1) * t, (int(gx.max()) + 1) * t
    ys = _resize_span(q.shape[0], height, max(0, cy0 - big), min(height, cy1 + big))
    xs = _resize_span(q.shape[1], width, max(0, cx0 - big), min(width, cx1 + big))
    oy, ox = min(ys[2], cy0 - big), min(xs[2], cx0 - big)
    canvas = np.empty((max(ys[3], cy1 + big) - oy, max(xs[3], cx1 + big) - ox), np.uint8)
    r0, r1, c0, c1 = ys[2] - oy, ys[3] - oy, xs[2] - ox, xs[3] - ox
    into = canvas[r0:r1, c0:c1]
    for ys_, xs_ in ((slice(0, r0), slice(None)), (slice(r1, None), slice(None)), (slice(r0, r1), slice(0, c0)), (slice(r0, r1), slice(c1, None))):
        canvas[ys_, xs_] = 0  # only the parts the resize does not write (outside the frame)
    out = cv2.resize(q[ys[0] : ys[1], xs[0] : xs[1]], (xs[3] - xs[2], ys[3] - ys[2]), dst=into, interpolation=cv2.INTER_LINEAR_EXACT)
    if not np.shares_memory(out, canvas):  # OpenCV reallocated instead of writing into the view
        into[...] = out
    # windows[ly, i, j, lx] = canvas pixel at (row i, column j of the tile grid) + (ly, lx) − R
    base = canvas[cy0 - big - oy :, cx0 - big - ox :]
    s0, s1 = base.strides
    windows = np.lib.stride_tricks.as_strided(base, shape=(p, (cy1 - cy0) // t, (cx1 - cx0) // t, p), strides=(s0, t * s0, t * s1, s1), writeable=False)
    strip = windows[:, gy - cy0 // t, gx - cx0 // t, :].reshape(p, n * p)  # piece i: columns [i·P, (i+1)·P)
    # T8 >= 1 here (at T8 = 0 every tile is full), so the zero padding thresholds to "outside"
    d = cv2.compare(strip, int(geo.threshold8), cv2.CMP_GE)
    if r > 0:
        d = dilate_binary(d, r)
    if f > 0:
        d3 = d.reshape(p, n, p)
        _replicate_into_halo(d3, gy, t, big, height, axis=0)
        _replicate_into_halo(d3, gx, t, big, width, axis=2)
        d = cv2.blur(d, (2 * f + 1, 2 * f + 1), borderType=cv2.BORDER_REPLICATE)
    return d.reshape(p, n, p)[big : big + t, :, big : big + t].transpose(1, 0, 2)


def _replicate_into_halo(d3: np.ndarray, g: np.ndarray, t: int, big: int, size: int, axis: int) -> None:
    """BORDER_REPLICATE along one axis (0: rows, 2: columns of the (P, n, P) strip view) for the
    pieces that reach past the frame, in place; piece i has grid index g[i] along that axis,
    so its local index k is frame index g·T − R + k."""
    p = t + 2 * big
    for gi in np.unique(g[(g * t - big < 0) | (g * t + t + big > size)]).tolist():
        sel = np.flatnonzero(g == gi)
        lo, hi = max(0, big - gi * t), min(p, size - gi * t + big)  # local indices inside the frame
        if axis == 0:
            if lo > 0:
                d3[:lo, sel, :] = d3[lo : lo + 1, sel, :]
            if hi < p:
                d3[hi:, sel, :] = d3[hi - 1 : hi, sel, :]
        else:
            if lo > 0:
                d3[:, sel, :lo] = d3[:, sel, lo : lo + 1]
            if hi < p:
                d3[:, sel, hi:] = d3[:, sel, hi - 1 : hi]


def _dense_alpha(q: np.ndarray, geo: Geometry, bbox: Box, on_box: Callable[[Box], None] | None = None) -> MaskAlpha:
    """Every step over the thresholded mask's bounding box grown by r + f (see cpu_mask_alpha).

    ``bbox``: (x, y, w, h) of the model-resolution pixels at or above threshold, not empty.
    """
    width, height = geo.width, geo.height
    outside = 255 if geo.invert else 0
    t8 = int(geo.threshold8)
    sx, sy, sw, sh = bbox
    # Upsample, threshold and bound only the part of the frame that a source pixel at/above
    # threshold reaches; everything else is below threshold.
    ry0, ry1 = reachable_span(sy, sy + sh - 1, q.shape[0], height)
    rx0, rx1 = reachable_span(sx, sx + sw - 1, q.shape[1], width)
    if ry1 <= ry0 or rx1 <= rx0:  # a shrink that samples none of those pixels
        return MaskAlpha(width, height, outside)
    reach = upsample_part(q, width, height, (ry0, ry1), (rx0, rx1))
    hit = _at_least(reach, t8)
    x, y, w, h = cv2.boundingRect(hit)
    if w == 0 or h == 0:
        return MaskAlpha(width, height, outside)
    r, f = geo.dilate, geo.feather
    box = _grow_box(x + rx0, y + ry0, w, h, r + f, width, height)
    if on_box is not None:
        on_box(box)
    y0, y1, x0, x1 = box
    a = np.zeros((y1 - y0, x1 - x0), np.uint8)  # the thresholded mask over the box
    a[y + ry0 - y0 : y + ry0 - y0 + h, x + rx0 - x0 : x + rx0 - x0 + w] = hit[y : y + h, x : x + w]
    if r > 0:
        a = dilate_binary(a, r)
    if f > 0:
        a = cv2.blur(a, (2 * f + 1, 2 * f + 1), borderType=cv2.BORDER_REPLICATE)
    if geo.invert:
        a = cv2.bitwise_not(a)
    a = np.ascontiguousarray(a)
    return MaskAlpha(width, height, outside, box, a, chroma_alpha(a))


def full_alpha(geo: Geometry, value: int = 255) -> MaskAlpha:
    """An alpha that is ``value`` everywhere (cover_whole)."""
    return MaskAlpha(geo.width, geo.height, value)
