"""RGB → Y'CbCr constants for effect colours.

Config colours are full-range 8-bit RGB, video planes are limited-range ("TV") 8-bit
Y'CbCr, which is what decoders hand us for ordinary H.264/HEVC.  One conversion, used
by every backend (the CUDA backend receives the three integers, not the formula).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# (Kr, Kb) per matrix; Kg = 1 − Kr − Kb.
LUMA_COEFFICIENTS: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
}

# PyAV/swscale colour-space names, for converting replacement pictures the same way.
SWSCALE_COLORSPACE: dict[str, str] = {"bt601": "ITU601", "bt709": "ITU709"}


def _round_clamp(x: float) -> int:
    return int(min(255, max(0, math.floor(x + 0.5))))


def rgb_to_yuv(rgb: Sequence[int], matrix: str = "bt601") -> tuple[int, int, int]:
    """Full-range RGB (0..255) → limited-range (Y 16..235, Cb/Cr 16..240) Y'CbCr, rounded half up."""
    if matrix not in LUMA_COEFFICIENTS:
        raise ValueError(f"unknown color_matrix {matrix!r}; allowed: {', '.join(LUMA_COEFFICIENTS)}")
    kr, kb = LUMA_COEFFICIENTS[matrix]
    r, g, b = (float(c) / 255.0 for c in rgb)
    ey = kr * r + (1.0 - kr - kb) * g + kb * b
    return (
        _round_clamp(16.0 + 219.0 * ey),
        _round_clamp(128.0 + 224.0 * (b - ey) / (2.0 * (1.0 - kb))),
        _round_clamp(128.0 + 224.0 * (r - ey) / (2.0 * (1.0 - kr))),
    )
