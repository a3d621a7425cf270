"""Model-input preparation from I420 planes or packed RGB/BGR, following a ModelSpec.

From YUV the planes are first shrunk to the model size (Y and chroma separately, so full
resolution RGB is never made), then the small 4:4:4 picture goes through one 3×4 affine map
that folds YUV→RGB (BT.601 limited range unless the frame says otherwise), the colour order and
the spec's normalisation; values are clipped to the normalised image of RGB [0, 255], so
out-of-gamut YUV gives the same input as a decoded-then-converted picture would.

All functions write into a caller-provided item buffer so a batch is filled without copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from privacy_filter.frames import YuvFrame
from privacy_filter.models.specs import ModelSpec

#: Downscale policy.  Shrinking averages (no aliasing of thin limbs):
#:
#: * by 3x or more in either axis ("two-stage"): OpenCV bilinear to twice the target, then an
#:   exact 2:1 box, ``(a+b+c+d+2) >> 2`` (OpenCV's INTER_AREA fast path) — the mean of four
#:   bilinear taps per output pixel, about 0.3 ms for a 1080p luma plane;
#: * otherwise exact area averaging (INTER_AREA semantics, ``area_resize``).
#:
#: Exact area for the big shrinks costs 11.8 ms per 1080p frame end to end against 7.6 ms for
#: two-stage (benchmarks/bench_segmentation.py, same run, load < 0.4), with the same pooled
#: mIoU on portrait_dev / people_pseudo / cihp_multi (0.9376 / 0.9359 / 0.6350 vs 0.9376 /
#: 0.9360 / 0.6350).  "area" forces exact area everywhere, "opencv" cv2 INTER_AREA, an int that cv2 flag
#: (the benchmark's baselines).  kernels/preprocess.cu mirrors ``_resize``.
DOWNSCALE: str | int = "two-stage"
UPSCALE = cv2.INTER_LINEAR

# YUV → RGB matrices (rows R, G, B applied to [Y, Cb-128, Cr-128]) before range scaling.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def yuv_to_rgb_matrix(matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """3×4 affine map taking [Y, U, V, 1] (0..255 codes) to RGB in 0..255."""
    kr, kb = _KR_KB[matrix]
    kg = 1.0 - kr - kb
    ys, cs = (1.0, 1.0) if full_range else (255.0 / 219.0, 255.0 / 224.0)
    y0 = 0.0 if full_range else 16.0
    m = np.array(
        [
            [ys, 0.0, cs * 2 * (1 - kr)],
            [ys, -cs * 2 * (1 - kb) * kb / kg, -cs * 2 * (1 - kr) * kr / kg],
            [ys, cs * 2 * (1 - kb), 0.0],
        ],
        np.float64,
    )
    bias = -m @ np.array([y0, 128.0, 128.0])
    return np.hstack([m, bias[:, None]]).astype(np.float32)


@dataclass(frozen=True)
class Placement:
    """Where the picture content sits inside the model input (letterbox) in model pixels."""

    x: int
    y: int
    width: int
    height: int
    model_h: int
    model_w: int

    def crop(self, prob: np.ndarray) -> np.ndarray:
        """Cut a model-resolution map back to the content (scaled when the output is smaller)."""
        h, w = prob.shape[:2]
        if (self.width, self.height) == (self.model_w, self.model_h):
            return prob
        return prob[self.y * h // self.model_h : (self.y + self.height) * h // self.model_h, self.x * w // self.model_w : (self.x + self.width) * w // self.model_w]


def placement(spec: ModelSpec, src_w: int, src_h: int) -> Placement:
    """Content rectangle: the whole input for stretch; aspect-preserving and centred for letterbox."""
    if spec.resize == "stretch":
        return Placement(0, 0, spec.width, spec.height, spec.height, spec.width)
    s = min(spec.width / src_w, spec.height / src_h)
    w = max(1, min(spec.width, round(src_w * s)))
    h = max(1, min(spec.height, round(src_h * s)))
    return Placement((spec.width - w) // 2, (spec.height - h) // 2, w, h, spec.height, spec.width)


def item_shape(spec: ModelSpec) -> tuple[int, int, int]:
    return (3, spec.height, spec.width) if spec.input_layout == "NCHW" else (spec.height, spec.width, 3)


@lru_cache(maxsize=32)
def _area_plan(pw: int, ph: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Flat indices of the integral-image corners around each output cell boundary, and weights."""
    xb = np.arange(w + 1) * (pw / w)
    yb = np.arange(h + 1) * (ph / h)
    x0 = np.minimum(xb.astype(np.intp), pw - 1)
    y0 = np.minimum(yb.astype(np.intp), ph - 1)
    stride = pw + 1
    base = y0[:, None] * stride + x0[None, :]  # (h+1, w+1) index of the corner above-left
    idx = np.stack([base, base + 1, base + stride, base + stride + 1])
    fx = (xb - x0)[None, :]
    fy = (yb - y0)[:, None]
    return idx, fx, fy, w * h / (pw * ph)


def area_resize(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    """INTER_AREA downscale (w ≤ width, h ≤ height) of a uint8 plane or image, from its integral image.

    The integral of a piecewise-constant picture is bilinear inside each pixel, so sampling the
    integral image bilinearly at the output cell corners and differencing gives every cell's
    exact coverage-weighted sum.  Rounded like OpenCV (half to even): equal to cv2 INTER_AREA
    (≤ 1 level on a few pixels in 10^5, float rounding), at a fraction of its cost for
    non-integer factors.  float64 throughout: float32 rounding flips ~0.1 % of the .5 ties.
    """
    ph, pw = plane.shape[:2]
    ii = cv2.integral(plane, sdepth=cv2.CV_32S if pw * ph * 255 < 2**31 - 1 else cv2.CV_64F)
    idx, fx, fy, norm = _area_plan(pw, ph, w, h)
    a, b, c, d = ii.reshape(-1, *ii.shape[2:])[idx].astype(np.float64)  # one gather, 4 corner sets
    if plane.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = a + fx * (b - a)
    corners = top + fy * (c + fx * (d - c) - top)
    cell = np.diff(np.diff(corners, axis=0), axis=1)
    cell *= norm
    return np.rint(cell, out=cell).astype(np.uint8)  # means of 0..255 stay in range: no clip


def _resize(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    """The one resize of model-input planes (the CUDA preprocessing kernel mirrors it): averaging
    when shrinking both axes (see DOWNSCALE), bilinear (half-pixel centres) otherwise."""
    ph, pw = plane.shape[:2]
    if (pw, ph) == (w, h):
        return plane
    if not (w <= pw and h <= ph):
        return cv2.resize(plane, (w, h), interpolation=UPSCALE)
    if isinstance(DOWNSCALE, int):
        return cv2.resize(plane, (w, h), interpolation=DOWNSCALE)
    if DOWNSCALE == "two-stage" and (pw >= 3 * w or ph >= 3 * h):
        plane = cv2.resize(plane, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA)
    integer = pw % w == 0 and ph % h == 0  # OpenCV's own fast path
    if DOWNSCALE == "opencv" or integer:
        return cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA)
    return area_resize(np.ascontiguousarray(plane), w, h)


def _affine_into(small: np.ndarray, m: np.ndarray, clip: bool, spec: ModelSpec, place: Placement, out: np.ndarray) -> None:
    """small: (h, w, 3) uint8 codes; ``m`` (3×4) maps them to 0..255 colour in *model* order.

    The spec's ``(x − offset)·scale`` is folded into ``m`` so one cv2.transform pass gives the
    normalised input; ``clip`` bounds each channel to the normalised image of [0, 255] (what
    clipping RGB before normalising does).  Letterbox bars are black, as TAO's resize_padding.
    """
    offset, scale = spec.normalisation_arrays()
    mn = m * scale[:, None]
    mn[:, 3] -= offset * scale
    v = cv2.transform(small.astype(np.float32), mn)
    if clip:
        lo, hi = (0.0 - offset) * scale, (255.0 - offset) * scale
        # Per-channel bounds as OpenCV scalars: one pass each, ~15x faster than np.clip broadcasting.
        v = cv2.min(cv2.max(v, (*np.minimum(lo, hi).tolist(), 0.0)), (*np.maximum(lo, hi).tolist(), 0.0))
    if spec.resize == "letterbox" and (place.width, place.height) != (spec.width, spec.height):
        pad = (0.0 - offset) * scale
        out[...] = pad[:, None, None] if spec.input_layout == "NCHW" else pad
    ys, xs = slice(place.y, place.y + place.height), slice(place.x, place.x + place.width)
    if spec.input_layout == "NCHW":
        out[:, ys, xs] = v.transpose(2, 0, 1)
    else:
        out[ys, xs, :] = v


_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], np.float32)
_KEEP = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32)


def frame_colorimetry(frame: YuvFrame) -> tuple[str, bool]:
    """(matrix, full_range) from the decoder's metadata when present, else BT.601 limited (SD video's
    default and what libx264 writes untagged)."""
    md = frame.metadata
    matrix = "bt709" if str(md.get("colorspace", md.get("color_matrix", ""))).lower() in ("bt709", "itu709", "709") else "bt601"
    full = str(md.get("color_range", "")).lower() in ("jpeg", "full", "pc", "2")
    return matrix, full


def yuv_into(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    spec: ModelSpec,
    out: np.ndarray,
    matrix: str = "bt601",
    full_range: bool = False,
) -> Placement:
    """Fill one model input item from I420 planes (any strides); returns the content placement."""
    place = placement(spec, y.shape[1], y.shape[0])
    w, h = place.width, place.height
    small = cv2.merge([_resize(y, w, h), _resize(u, w, h), _resize(v, w, h)])
    m = yuv_to_rgb_matrix(matrix, full_range)
    if spec.color == "bgr":
        m = m[::-1].copy()
    _affine_into(small, m, True, spec, place, out)
    return place


def frame_into(frame: YuvFrame, spec: ModelSpec, out: np.ndarray) -> Placement:
    matrix, full = frame_colorimetry(frame)
    return yuv_into(frame.y, frame.u, frame.v, spec, out, matrix, full)


def image_into(image: np.ndarray, spec: ModelSpec, out: np.ndarray, order: str = "rgb") -> Placement:
    """Fill one model input item from an (H, W, 3) uint8 image in ``order`` ('rgb' or 'bgr')."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    place = placement(spec, image.shape[1], image.shape[0])
    small = _resize(image, place.width, place.height)
    _affine_into(small, _KEEP if order == spec.color else _SWAP, False, spec, place, out)
    return place


def crop_yuv(frame: YuvFrame, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the planes for the luma rectangle [x0, x1) × [y0, y1); x0, y0 must be even."""
    return (frame.y[y0:y1, x0:x1], frame.u[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2], frame.v[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2])
