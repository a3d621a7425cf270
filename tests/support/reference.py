"""NumPy references for mask post-processing and effects: the executable spec.

Every backend (``privacy_filter.effects.cpu`` and the CUDA kernels) is tested against
these functions; docs/effects.md states the same definitions in words.  They are
written to be obviously right, not fast: integer arithmetic wherever a backend
could otherwise disagree, explicit loops over window offsets, no OpenCV.

Conventions
-----------
* Planes are I420: Y is (H, W) uint8, U and V are (ceil(H/2), ceil(W/2)) uint8.
* Alpha is uint8, 255 = fully covered (the effect's picture), 0 = untouched.
* "round half up" of a non-negative rational ``p/q`` is ``(2p + q) // (2q)``.
* Bilinear resampling is OpenCV's ``INTER_LINEAR_EXACT`` (bit-exact, 8 fractional
  weight bits): the CPU backend calls it, the CUDA kernels receive the same tap
  tables computed on the host by ``bilinear_taps``.

This module deliberately does not import ``privacy_filter.effects``: it must be able
to catch a wrong implementation there.  It only uses the config models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig

# --------------------------------------------------------------------------- colour


# (Kr, Kb) luma coefficients of each matrix.
_KRKB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def rgb_to_yuv_ref(rgb: Sequence[int], matrix: str = "bt601") -> tuple[int, int, int]:
    """Full-range 8-bit RGB → limited-range ("TV", 16..235 / 16..240) 8-bit Y'CbCr.

    Y = 16 + 219·E_Y, U = 128 + 224·(B−E_Y)/(2(1−Kb)), V = 128 + 224·(R−E_Y)/(2(1−Kr))
    with E_Y = Kr·R + (1−Kr−Kb)·G + Kb·B and R, G, B in 0..1; each rounded half up
    (floor(x + 0.5)) and clamped to 0..255.
    """
    kr, kb = _KRKB[matrix]
    r, g, b = (c / 255.0 for c in rgb)
    ey = kr * r + (1.0 - kr - kb) * g + kb * b
    y = 16.0 + 219.0 * ey
    u = 128.0 + 224.0 * (b - ey) / (2.0 * (1.0 - kb))
    v = 128.0 + 224.0 * (r - ey) / (2.0 * (1.0 - kr))
    return tuple(int(min(255, max(0, math.floor(c + 0.5)))) for c in (y, u, v))  # type: ignore[return-value]


# ------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class GeometryRef:
    """Integer parameters of every operation for one frame size."""

    threshold8: int  # B = U >= threshold8
    dilate: int  # r
    feather: int  # f
    block: int  # pixelate luma cell (even); chroma cell is block // 2
    blur_factor: int  # k: luma block-mean downscale factor
    blur_factor_c: int  # chroma downscale factor
    blur_box: int  # radius of each low-res box pass (luma and chroma)
    blur_passes: int
    color_yuv: tuple[int, int, int]
    opacity8: int  # overlay opacity in 0..255
    invert: bool  # target background


def threshold8_ref(threshold: float) -> int:
    """Smallest 8-bit level counted as person: ceil(255·t), with a 1e-6 guard against float fuzz."""
    return int(min(255, max(0, math.ceil(threshold * 255.0 - 1e-6))))


def geometry_ref(effect: EffectConfig, mask: MaskConfig, width: int, height: int) -> GeometryRef:
    radius = effect.blur_radius(height)  # R, luma pixels
    k = max(1, radius // 4)
    box = max(1, (radius + k) // (2 * k))  # round half up of R / (2k)
    return GeometryRef(
        threshold8=threshold8_ref(mask.threshold),
        dilate=mask.dilate_radius(height),
        feather=int(mask.feather_px),
        block=effect.block_size(height),
        blur_factor=k,
        blur_factor_c=max(1, k // 2),
        blur_box=box,
        blur_passes=2,
        color_yuv=rgb_to_yuv_ref(effect.color, effect.color_matrix),
        opacity8=int(math.floor(effect.overlay_opacity * 255.0 + 0.5)),
        invert=effect.target == "background",
    )


# ------------------------------------------------------------ mask: model resolution


def sanitize_prob_ref(p: np.ndarray) -> np.ndarray:
    """float32 probability with NaN → 1 (fail closed) and values clamped to [0, 1]."""
    p = np.asarray(p, dtype=np.float32)
    p = np.where(np.isnan(p), np.float32(1.0), p)
    return np.clip(p, np.float32(0.0), np.float32(1.0)).astype(np.float32)


def temporal_ref(probs: Sequence[np.ndarray], mask: MaskConfig) -> list[np.ndarray]:
    """Temporal filter over a stream of sanitized model-resolution maps, one output per input.

    none:   M_t = P_t
    hold:   M_t = elementwise max(P_{t-N+1}, ..., P_t)   (fewer at the start)
    smooth: M_0 = P_0;  M_t = fl(fl(a·P_t) + fl(b·M_{t-1}))   in float32, a = float32(α),
            b = float32(1 − α) computed in float64 then rounded; each product and the sum
            rounded to float32 separately (no fused multiply-add).
    """
    out: list[np.ndarray] = []
    a = np.float32(mask.smooth_alpha)
    b = np.float32(1.0 - float(mask.smooth_alpha))
    prev: np.ndarray | None = None
    for t, p in enumerate(probs):
        p = sanitize_prob_ref(p)
        if mask.temporal == "hold":
            window = [sanitize_prob_ref(q) for q in probs[max(0, t - mask.hold_frames + 1) : t + 1]]
            m = window[0].copy()
            for q in window[1:]:
                m = np.maximum(m, q)
        elif mask.temporal == "smooth":
            if prev is None:
                m = p.copy()
            else:
                ap = (a * p).astype(np.float32)
                bm = (b * prev).astype(np.float32)
                m = (ap + bm).astype(np.float32)
            prev = m
        else:
            m = p
        out.append(m)
    return out


def quantize_ref(m: np.ndarray) -> np.ndarray:
    """Q = floor(255·M + 0.5) as uint8; exact (float64 holds 255·float32 exactly)."""
    m = sanitize_prob_ref(m).astype(np.float64)
    return np.floor(m * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------ bilinear


def bilinear_taps_ref(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w) per output index: out = (in[i0]·(256−w) + in[i1]·w) / 256.

    OpenCV INTER_LINEAR_EXACT: s = 1 / (dst / src) in float64;
    x = (d + 0.5)·s − 0.5; i0 = floor(x); w = rint(256·(x − i0)) (half to even);
    i0 < 0 → (i0, w) = (0, 0); i0 >= src − 1 → (i0, w) = (src − 1, 0); i1 = min(i0 + 1, src − 1).
    """
    scale = 1.0 / (float(dst) / float(src))
    i0 = np.zeros(dst, np.int32)
    w = np.zeros(dst, np.int32)
    for d in range(dst):
        x = (d + 0.5) * scale - 0.5
        i = math.floor(x)
        frac = x - i
        if i < 0:
            i, frac = 0, 0.0
        if i >= src - 1:
            i, frac = src - 1, 0.0
        i0[d] = i
        w[d] = int(np.rint(frac * 256.0))
    i1 = np.minimum(i0 + 1, src - 1).astype(np.int32)
    return i0, i1, w


def resize_bilinear_ref(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 bilinear resize, half-pixel centres, clamped edges, bit-exact INTER_LINEAR_EXACT.

    Horizontal pass keeps 8 fraction bits: h = s[i0]·(256−wx) + s[i1]·wx (≤ 65280);
    vertical pass: v = h[j0]·(256−wy) + h[j1]·wy; out = (v + 2^15) >> 16.
    """
    sh, sw = img.shape
    x0, x1, wx = bilinear_taps_ref(sw, width)
    y0, y1, wy = bilinear_taps_ref(sh, height)
    s = img.astype(np.int64)
    h = s[:, x0] * (256 - wx)[None, :] + s[:, x1] * wx[None, :]
    v = h[y0, :] * (256 - wy)[:, None] + h[y1, :] * wy[:, None]
    return ((v + (1 << 15)) >> 16).astype(np.uint8)


# ------------------------------------------------------------ mask: frame resolution


def dilate_ref(binary: np.ndarray, r: int) -> np.ndarray:
    """Square (Chebyshev) max filter of radius r; pixels outside the frame are ignored."""
    if r <= 0:
        return binary.copy()
    h, w = binary.shape
    rows = binary.copy()
    for d in range(1, min(r, w - 1) + 1):  # horizontal max over [x-r, x+r]
        rows[:, : w - d] = np.maximum(rows[:, : w - d], binary[:, d:])
        rows[:, d:] = np.maximum(rows[:, d:], binary[:, : w - d])
    out = rows.copy()
    for d in range(1, min(r, h - 1) + 1):  # vertical max over [y-r, y+r]
        out[: h - d, :] = np.maximum(out[: h - d, :], rows[d:, :])
        out[d:, :] = np.maximum(out[d:, :], rows[: h - d, :])
    return out


def box_sum_ref(plane: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)² window with edges replicated (int64, via an integral image)."""
    h, w = plane.shape
    padded = np.pad(plane.astype(np.int64), r, mode="edge")
    integral = np.zeros((h + 2 * r + 1, w + 2 * r + 1), np.int64)
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    k = 2 * r + 1
    return integral[k:, k:] - integral[:h, k:] - integral[k:, :w] + integral[:h, :w]


def box_mean_ref(plane: np.ndarray, r: int) -> np.ndarray:
    """Box mean of radius r, edges replicated, rounded half up: (2S + n) // (2n), n = (2r+1)²."""
    if r <= 0:
        return plane.copy()
    n = (2 * r + 1) ** 2
    s = box_sum_ref(plane, r)
    return ((2 * s + n) // (2 * n)).astype(np.uint8)


def chroma_alpha_ref(alpha: np.ndarray) -> np.ndarray:
    """(a00 + a01 + a10 + a11 + 2) >> 2 over each 2×2 block; an odd last row/column is replicated."""
    h, w = alpha.shape
    a = np.pad(alpha.astype(np.int32), ((0, h % 2), (0, w % 2)), mode="edge")
    s = a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


def mask_alpha_ref(m: np.ndarray, width: int, height: int, geo: GeometryRef) -> tuple[np.ndarray, np.ndarray]:
    """Model-resolution temporal output M → (luma alpha H×W, chroma alpha), target applied.

    Q = quantize(M) → U = bilinear(Q) → B = 255·(U >= T8) → D = dilate(B, r) →
    A8 = box_mean(D, f) → A = 255 − A8 for target background → Ac = chroma_alpha(A).
    """
    q = quantize_ref(m)
    u = resize_bilinear_ref(q, width, height)
    b = np.where(u >= geo.threshold8, 255, 0).astype(np.uint8)
    d = dilate_ref(b, geo.dilate)
    a8 = box_mean_ref(d, geo.feather)
    a = (255 - a8).astype(np.uint8) if geo.invert else a8
    return a, chroma_alpha_ref(a)


# --------------------------------------------------------------------------- effects


def cell_means_ref(plane: np.ndarray, cell: int) -> np.ndarray:
    """Mean of each cell×cell cell aligned to the plane origin, rounded half up.

    Shape (ceil(h/cell), ceil(w/cell)); a partial last cell averages only the pixels
    that exist.
    """
    h, w = plane.shape
    ys = np.arange(0, h, cell)  # first row of each cell row
    xs = np.arange(0, w, cell)
    sums = np.add.reduceat(np.add.reduceat(plane.astype(np.int64), ys, axis=0), xs, axis=1)
    rows = np.minimum(ys + cell, h) - ys  # pixels that exist in each cell row / column
    cols = np.minimum(xs + cell, w) - xs
    n = rows[:, None] * cols[None, :]
    return ((2 * sums + n) // (2 * n)).astype(np.uint8)


def pixelate_plane_ref(plane: np.ndarray, cell: int) -> np.ndarray:
    """Every pixel takes the mean of its cell."""
    means = cell_means_ref(plane, cell)
    h, w = plane.shape
    return np.repeat(np.repeat(means, cell, axis=0), cell, axis=1)[:h, :w].copy()


def blur_plane_ref(plane: np.ndarray, factor: int, box: int, passes: int) -> np.ndarray:
    """Strong cheap blur: cell means by `factor` → `passes` box means of radius `box`
    (edges replicated, each rounded) at low resolution → bilinear back to plane size."""
    h, w = plane.shape
    small = cell_means_ref(plane, factor)
    for _ in range(passes):
        small = box_mean_ref(small, box)
    return resize_bilinear_ref(small, w, h)


def composite_ref(orig: np.ndarray, eff: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """out = (orig·(255 − a) + eff·a + 127) // 255, per pixel, integers."""
    o = orig.astype(np.int64)
    e = np.broadcast_to(np.asarray(eff, dtype=np.int64), o.shape)
    a = alpha.astype(np.int64)
    return ((o * (255 - a) + e * a + 127) // 255).astype(np.uint8)


Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def effect_planes_ref(kind: str, planes: Planes, geo: GeometryRef, replacement: Planes | None = None) -> Planes:
    """The effect's full picture (before compositing) for pixelate/fill/blur/replace."""
    y, u, v = planes
    if kind == "pixelate":
        return (
            pixelate_plane_ref(y, geo.block),
            pixelate_plane_ref(u, geo.block // 2),
            pixelate_plane_ref(v, geo.block // 2),
        )
    if kind == "blur":
        return (
            blur_plane_ref(y, geo.blur_factor, geo.blur_box, geo.blur_passes),
            blur_plane_ref(u, geo.blur_factor_c, geo.blur_box, geo.blur_passes),
            blur_plane_ref(v, geo.blur_factor_c, geo.blur_box, geo.blur_passes),
        )
    if kind == "replace" and replacement is not None:
        return replacement
    if kind in ("fill", "replace"):  # replace without image/video = colour
        cy, cu, cv = geo.color_yuv
        return (np.full_like(y, cy), np.full_like(u, cu), np.full_like(v, cv))
    raise ValueError(f"no effect picture for kind {kind!r}")


def apply_ref(
    planes: Planes,
    m: np.ndarray,
    effect: EffectConfig,
    mask: MaskConfig,
    replacement: Planes | None = None,
) -> tuple[Planes, np.ndarray]:
    """Filter one frame given the temporal output M. Returns (new planes, luma alpha A).

    overlay: colour composited with alpha a_o = (a·o8 + 127) // 255 (both planes' alphas);
    none: planes unchanged.  A is the returned mask for every kind.
    """
    y, u, v = planes
    h, w = y.shape
    geo = geometry_ref(effect, mask, w, h)
    a, ac = mask_alpha_ref(m, w, h, geo)
    if effect.kind == "none":
        return (y.copy(), u.copy(), v.copy()), a
    if effect.kind == "overlay":
        cy, cu, cv = geo.color_yuv
        ao = ((a.astype(np.int64) * geo.opacity8 + 127) // 255).astype(np.uint8)
        aoc = ((ac.astype(np.int64) * geo.opacity8 + 127) // 255).astype(np.uint8)
        return (composite_ref(y, cy, ao), composite_ref(u, cu, aoc), composite_ref(v, cv, aoc)), a
    ey, eu, ev = effect_planes_ref(effect.kind, planes, geo, replacement)
    return (composite_ref(y, ey, a), composite_ref(u, eu, ac), composite_ref(v, ev, ac)), a


def cover_whole_ref(planes: Planes, effect: EffectConfig, replacement: Planes | None = None) -> Planes:
    """Fail-closed picture: the effect at alpha 255 everywhere; overlay/none → solid colour."""
    y, _, _ = planes
    h, w = y.shape
    geo = geometry_ref(effect, MaskConfig(), w, h)
    kind = effect.kind if effect.kind in ("pixelate", "blur", "replace", "fill") else "fill"
    return effect_planes_ref(kind, planes, geo, replacement)
