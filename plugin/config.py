"""Configuration: what each stream does, validated once at the edge (pydantic-settings).

A YAML file holds ``defaults:`` and ``streams:``; environment variables with the
``PRIVACY_FILTER_`` prefix and CLI flags override it.  Every model here is strict
(``extra="forbid"``) so that a typo is an error naming the stream and the field,
never a silently ignored setting.

This module is shared by the CPU and GPU backends: both read the same
``MaskConfig`` and ``EffectConfig``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RGB = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MaskConfig(_Strict):
    """How a model-resolution person probability becomes a frame-size alpha mask.

    Order (identical on every backend, see docs/effects.md):
    temporal (hold/smooth, at model resolution) → bilinear upsample to frame size →
    threshold → square dilation → box feather → alpha in 0..255.
    """

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="person if probability >= threshold")
    dilate_px: int | None = Field(None, ge=0, le=512, description="dilation radius in pixels")
    dilate_frac: float = Field(0.0, ge=0.0, le=0.25, description="dilation radius as a fraction of frame height (used when dilate_px is unset)")
    feather_px: int = Field(0, ge=0, le=256, description="box-feather radius in pixels; soft edge width")
    temporal: Literal["none", "hold", "smooth"] = "none"
    hold_frames: int = Field(5, ge=1, le=120, description="hold: max over the last N masks")
    smooth_alpha: float = Field(0.6, gt=0.0, le=1.0, description="smooth: EMA weight of the newest mask")

    def dilate_radius(self, frame_height: int) -> int:
        """Dilation radius in pixels for a frame of this height."""
        if self.dilate_px is not None:
            return int(self.dilate_px)
        return int(round(self.dilate_frac * frame_height))


class EffectConfig(_Strict):
    """What is done to the covered pixels.

    ``target: person`` covers people; ``target: background`` covers everything else.
    Colours are RGB 0..255 and are converted to YUV with ``color_matrix``.
    """

    kind: Literal["pixelate", "fill", "blur", "replace", "overlay", "none"] = "pixelate"
    target: Literal["person", "background"] = "person"
    color: RGB = (0, 0, 0)
    color_matrix: Literal["bt601", "bt709"] = "bt601"
    block_px: int | None = Field(None, ge=2, le=512, description="pixelate cell size in pixels (even)")
    block_frac: float = Field(1 / 24, gt=0.0, le=0.5, description="pixelate cell size as a fraction of frame height, when block_px is unset")
    blur_radius_px: int | None = Field(None, ge=1, le=1024)
    blur_radius_frac: float = Field(0.03, gt=0.0, le=0.5, description="blur radius as a fraction of frame height, when blur_radius_px is unset")
    replace_image: str | None = Field(None, description="replace: path of a still image scaled to the frame")
    replace_video: str | None = Field(None, description="replace: path of a video looped and scaled to the frame")
    overlay_opacity: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "EffectConfig":
        if self.block_px is not None and self.block_px % 2:
            raise ValueError("block_px must be even so that chroma cells align (got %d)" % self.block_px)
        if self.replace_image and self.replace_video:
            raise ValueError("set only one of replace_image and replace_video")
        return self

    def block_size(self, frame_height: int) -> int:
        """Even pixelation cell size in luma pixels for a frame of this height (≥ 2)."""
        if self.block_px is not None:
            return int(self.block_px)
        b = int(round(self.block_frac * frame_height))
        return max(2, b + (b % 2))

    def blur_radius(self, frame_height: int) -> int:
        if self.blur_radius_px is not None:
            return int(self.blur_radius_px)
        return max(1, int(round(self.blur_radius_frac * frame_height)))
