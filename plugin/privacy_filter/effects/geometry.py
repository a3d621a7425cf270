"""Integer parameters of every mask and effect operation for one frame size.

The configs speak in fractions and colours; the kernels need integers.  This is the
single place that converts one into the other (docs/effects.md, "Parameters"), so the
CPU backend and the CUDA backend cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects.color import rgb_to_yuv


@dataclass(frozen=True)
class Geometry:
    """Everything a backend needs to filter frames of one size (all plain ints)."""

    width: int
    height: int
    threshold8: int  # person where the upsampled 8-bit probability >= threshold8
    dilate: int  # square dilation radius r (luma px)
    feather: int  # box feather radius f (luma px)
    block: int  # pixelate luma cell (even); chroma cell is block // 2
    blur_factor: int  # blur: luma block-mean downscale factor k
    blur_factor_c: int  # blur: chroma downscale factor
    blur_box: int  # blur: radius of each low-resolution box pass
    blur_passes: int
    color_yuv: tuple[int, int, int]
    opacity8: int  # overlay opacity 0..255
    invert: bool  # target background: alpha = 255 − person alpha

    @property
    def block_c(self) -> int:
        return self.block // 2


def threshold8(threshold: float) -> int:
    """Smallest 8-bit level counted as person: ceil(255·t), guarded against float fuzz (0.2·255)."""
    return int(min(255, max(0, math.ceil(threshold * 255.0 - 1e-6))))


def blur_factors(radius: int) -> tuple[int, int, int]:
    """(k, k_c, box) for a blur radius R: downscale by k = R//4, then box radius ≈ R/(2k).

    Two box passes of radius ρ at 1/k resolution give σ ≈ k·sqrt(2ρ(ρ+1)/3) ≈ R/2,
    at a cost independent of R.
    """
    k = max(1, radius // 4)
    box = max(1, (radius + k) // (2 * k))
    return k, max(1, k // 2), box


def resolve_geometry(effect: EffectConfig, mask: MaskConfig, width: int, height: int) -> Geometry:
    """The integer parameters for a ``width``×``height`` frame (see docs/effects.md)."""
    k, kc, box = blur_factors(effect.blur_radius(height))
    return Geometry(
        width=int(width),
        height=int(height),
        threshold8=threshold8(mask.threshold),
        dilate=mask.dilate_radius(height),
        feather=int(mask.feather_px),
        block=effect.block_size(height),
        blur_factor=k,
        blur_factor_c=kc,
        blur_box=box,
        blur_passes=2,
        color_yuv=rgb_to_yuv(effect.color, effect.color_matrix),
        opacity8=int(math.floor(effect.overlay_opacity * 255.0 + 0.5)),
        invert=effect.target == "background",
    )
