"""Mask post-processing: CPU backend vs the NumPy references (tests/reference.py), on real masks.

The mask must be bit-exact: a single flipped threshold pixel would be a 255-level error
after compositing, far outside the ±2 effect tolerance.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.backends import create_stream_effect
from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import bilinear_taps, resolve_geometry, rgb_to_yuv, threshold8
from privacy_filter.effects.mask import TemporalFilter, chroma_alpha, cpu_mask_alpha, quantize, upsample_u8
from support import effects_data as D
from support import reference as R

SIZES = [(641, 361), (1918, 1078), (768, 432), (2, 2), (1, 3)]


# ------------------------------------------------------------------- pure definitions


@pytest.mark.parametrize("src", [1, 2, 3, 144, 256, 270, 513])
@pytest.mark.parametrize("dst", [1, 3, 361, 641, 1078, 1918, 3840])
def test_bilinear_taps_match_reference(src: int, dst: int) -> None:
    for mine, ref in zip(bilinear_taps(src, dst), R.bilinear_taps_ref(src, dst)):
        assert np.array_equal(mine, ref)


@pytest.mark.parametrize("size", [(641, 361), (1918, 1078), (768, 432), (5, 3)])
def test_upsample_is_bit_exact_and_reference_catches_plain_linear(shared_data: Path, size: tuple[int, int]) -> None:
    q = quantize(D.real_prob(shared_data, "00004"))
    ref = R.resize_bilinear_ref(q, *size)
    assert np.array_equal(upsample_u8(q, *size), ref)
    if size[0] > 100:
        # OpenCV's non-exact INTER_LINEAR rounds differently: the reference must notice.
        assert not np.array_equal(cv2.resize(q, size, interpolation=cv2.INTER_LINEAR), ref)


def test_quantize_and_sanitize() -> None:
    m = np.array([[0.0, 1.0, 0.5, 0.4999], [np.nan, -3.0, 7.0, 1 / 255 * 0.5]], np.float32)
    q = quantize(R.sanitize_prob_ref(m))
    assert q.tolist() == [[0, 255, 128, 127], [255, 0, 255, 1]]
    assert np.array_equal(q, R.quantize_ref(m))


def test_quantize_rounds_half_up_at_every_level_boundary() -> None:
    """The fast rounding (to nearest) equals floor(255·M + 0.5) on the float32 values closest to
    every k + 1/2 boundary, where the two roundings could only ever differ."""
    levels = (np.arange(255, dtype=np.float64) + 0.5) / 255.0
    up = down = levels.astype(np.float32)
    near = [up]
    for _ in range(4):  # four float32 steps either side of each boundary
        up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-1))
        near += [up, down]
    m = np.concatenate(near + [np.array([0.0, 1.0], np.float32)]).astype(np.float32).reshape(1, -1)
    assert np.array_equal(quantize(m), R.quantize_ref(m))
    assert np.array_equal(quantize(m, sanitized=True), R.quantize_ref(m))


@pytest.mark.parametrize("shape", [(540, 960), (2160, 3840), (1, 1), (3, 200_000)])
def test_quantize_in_row_bands_equals_the_whole_map_at_once(shape: tuple[int, int]) -> None:
    """quantize works over bands of rows (a 1 MB float64 copy at a time): every band, the last
    partial one and a single row wider than a band must give the reference's values."""
    m = np.random.default_rng(7).random(shape, dtype=np.float32)
    m.flat[:: max(1, m.size // 97)] = np.float32(0.5 / 255)  # a boundary value in many bands
    assert np.array_equal(quantize(m, sanitized=True), R.quantize_ref(m))


@pytest.mark.parametrize(("t", "t8"), [(0.0, 0), (0.2, 51), (0.5, 128), (0.7, 179), (1.0, 255)])
def test_threshold8(t: float, t8: int) -> None:
    assert threshold8(t) == t8 == R.threshold8_ref(t)


def test_rgb_to_yuv_known_values_and_reference() -> None:
    assert rgb_to_yuv((255, 255, 255)) == (235, 128, 128)
    assert rgb_to_yuv((0, 0, 0)) == (16, 128, 128)
    assert rgb_to_yuv((255, 0, 0), "bt601") == (81, 90, 240)
    assert rgb_to_yuv((255, 0, 0), "bt709") == (63, 102, 240)
    rng = np.random.default_rng(3)
    for rgb in rng.integers(0, 256, (200, 3)).tolist():
        for matrix in ("bt601", "bt709"):
            assert rgb_to_yuv(rgb, matrix) == R.rgb_to_yuv_ref(rgb, matrix)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "effect",
    [
        EffectConfig(),
        EffectConfig(block_px=16, blur_radius_px=3, target="background", color=(10, 200, 30), color_matrix="bt709"),
        EffectConfig(block_frac=0.1, blur_radius_frac=0.2, overlay_opacity=0.33),
    ],
)
def test_resolve_geometry_matches_reference(size: tuple[int, int], effect: EffectConfig) -> None:
    mask = MaskConfig(threshold=0.3, dilate_frac=0.02, feather_px=4)
    geo = resolve_geometry(effect, mask, *size)
    ref = R.geometry_ref(effect, mask, *size)
    for field in ref.__dataclass_fields__:
        assert getattr(geo, field) == getattr(ref, field), field
    assert geo.block % 2 == 0 and geo.blur_factor >= 1


# ----------------------------------------------------------------------- the pipeline


def _alpha(m: np.ndarray, effect: EffectConfig, mask: MaskConfig, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    ma = cpu_mask_alpha(m, resolve_geometry(effect, mask, w, h))
    return ma.full(), ma.full_chroma()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("target", ["person", "background"])
@pytest.mark.parametrize(
    "mask",
    [
        MaskConfig(),
        MaskConfig(threshold=0.3, dilate_px=7, feather_px=3),
        MaskConfig(threshold=0.8, dilate_frac=0.02, feather_px=9),
        MaskConfig(threshold=0.0),
    ],
    ids=["plain", "dilate-feather", "frac-wide-feather", "threshold0"],
)
def test_mask_alpha_bit_exact(shared_data: Path, size: tuple[int, int], target: str, mask: MaskConfig) -> None:
    effect = EffectConfig(target=target)  # type: ignore[arg-type]
    for m in (D.real_prob(shared_data, "00001"), D.shrink_prob(D.real_prob(shared_data, "00007"), 0.25, (0.9, 0.1))):
        a, ac = _alpha(m, effect, mask, *size)
        ra, rac = R.mask_alpha_ref(m, *size, R.geometry_ref(effect, mask, *size))
        assert np.array_equal(a, ra)
        assert np.array_equal(ac, rac)
        assert ac.shape == ((size[1] + 1) // 2, (size[0] + 1) // 2)


def test_reference_catches_wrong_dilation_and_threshold(shared_data: Path) -> None:
    m = D.real_prob(shared_data, "00001")
    eff = EffectConfig()
    good = MaskConfig(dilate_px=6, feather_px=2)
    ra, _ = R.mask_alpha_ref(m, 641, 361, R.geometry_ref(eff, good, 641, 361))
    wrong = (
        MaskConfig(dilate_px=5, feather_px=2),
        MaskConfig(dilate_px=6, feather_px=3),
        MaskConfig(threshold=0.51, dilate_px=6, feather_px=2),
    )
    for bad in wrong:
        a, _ = _alpha(m, eff, bad, 641, 361)
        assert not np.array_equal(a, ra)


def test_nobody_gives_empty_or_full_alpha() -> None:
    m = np.zeros((256, 256), np.float32)
    a, ac = _alpha(m, EffectConfig(), MaskConfig(dilate_px=9), 641, 361)
    assert not a.any() and not ac.any()
    a, ac = _alpha(m, EffectConfig(target="background"), MaskConfig(), 641, 361)
    assert (a == 255).all() and (ac == 255).all()


def test_nan_probability_fails_closed() -> None:
    m = np.full((64, 64), np.nan, np.float32)
    a, _ = _alpha(m, EffectConfig(), MaskConfig(), 320, 240)
    assert (a == 255).all()


# ------------------------------------------------------------------ dilation / feather


def _single_pixel(w: int, h: int, y: int, x: int) -> np.ndarray:
    """A frame-resolution map (identity upsample) with one person pixel."""
    m = np.zeros((h, w), np.float32)
    m[y, x] = 1.0
    return m


@pytest.mark.parametrize(("r", "f"), [(0, 0), (5, 0), (5, 2), (3, 3), (0, 4)])
def test_dilation_radius_and_feather_reach(r: int, f: int) -> None:
    w, h, y, x = 101, 81, 40, 50
    a, _ = _alpha(_single_pixel(w, h, y, x), EffectConfig(), MaskConfig(dilate_px=r, feather_px=f), w, h)
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.maximum(abs(yy - y), abs(xx - x))  # Chebyshev
    assert (a[dist <= r + f] > 0).all()  # distance r (and up to r+f) is covered
    assert (a[dist >= r + f + 1] == 0).all()  # r+1+f is not
    if f == 0:
        assert (a[dist <= r] == 255).all()
    else:
        assert (a[dist == r + f] < 255).all()  # soft edge
    # the square shape: the diagonal pixel (r, r) is covered like (r, 0)
    assert a[y + r, x + r] > 0 and a[y + r + f + 1, x + r + f + 1] == 0
    if f == 0:
        assert a[y + r, x + r] == a[y + r, x] == a[y, x + r] == 255


def test_dilation_near_frame_edge_ignores_outside() -> None:
    a, _ = _alpha(_single_pixel(40, 30, 0, 0), EffectConfig(), MaskConfig(dilate_px=4), 40, 30)
    assert (a[:5, :5] == 255).all() and not a[5:, :].any() and not a[:, 5:].any()


@pytest.mark.parametrize(("r", "f"), [(4, 4), (9, 3), (2, 0)])
def test_feather_keeps_thresholded_pixels_opaque_when_r_ge_f(shared_data: Path, r: int, f: int) -> None:
    m = D.real_prob(shared_data, "00003")
    mask = MaskConfig(dilate_px=r, feather_px=f)
    a, _ = _alpha(m, EffectConfig(), mask, 641, 361)
    b = R.resize_bilinear_ref(R.quantize_ref(m), 641, 361) >= R.threshold8_ref(mask.threshold)
    assert b.any() and (a[b] == 255).all()
    # and the guarantee really depends on r >= f: with r < f the edge softens inside the person
    a2, _ = _alpha(m, EffectConfig(), MaskConfig(dilate_px=0, feather_px=f + 2), 641, 361)
    assert (a2[b] < 255).any()


# -------------------------------------------------------------------------- chroma alpha


def test_chroma_alpha_rounding_and_odd_edges() -> None:
    a = np.array([[255, 255, 7], [0, 0, 9], [1, 2, 200]], np.uint8)
    # (255+255+0+0+2)>>2 = 128; (7+7+9+9+2)>>2 = 8 (column replicated); (1+2+1+2+2)>>2 = 2; 200
    assert chroma_alpha(a).tolist() == [[128, 8], [2, 200]]
    rng = np.random.default_rng(5)
    for h, w in [(361, 641), (1, 1), (2, 5), (1078, 1918)]:
        x = rng.integers(0, 256, (h, w), dtype=np.uint8)
        assert np.array_equal(chroma_alpha(x), R.chroma_alpha_ref(x))


def test_background_alpha_is_inverted_before_chroma(shared_data: Path) -> None:
    m = D.real_prob(shared_data, "00001")
    mask = MaskConfig(dilate_px=3, feather_px=3)
    ap, acp = _alpha(m, EffectConfig(target="person"), mask, 641, 361)
    ab, acb = _alpha(m, EffectConfig(target="background"), mask, 641, 361)
    assert np.array_equal(ab, 255 - ap)
    assert np.array_equal(acb, R.chroma_alpha_ref(255 - ap))
    assert not np.array_equal(acb, 255 - acp)  # the order matters (rounding), and it is pinned


# ------------------------------------------------------------------------------ temporal


def test_hold_keeps_a_vanished_person_covered_for_n_frames(shared_data: Path) -> None:
    """Frames 0-3 see the person; the model loses them from frame 4: covered until 4+N-1."""
    n = 3
    fx = create_stream_effect(EffectConfig(kind="fill"), MaskConfig(temporal="hold", hold_frames=n))
    person = D.real_prob(shared_data, "00001")
    empty = np.zeros_like(person)
    seen = person > 0.9
    seen_px = cv2.resize(seen.astype(np.uint8), (641, 361), interpolation=cv2.INTER_NEAREST).astype(bool)
    seq = [person] * 4 + [empty] * (n + 2)
    ref = R.temporal_ref(seq, MaskConfig(temporal="hold", hold_frames=n))
    covered = []
    for t, p in enumerate(seq):
        frame = D.real_frame(shared_data, 641, 361)
        a = fx.apply(frame, p)
        assert np.array_equal(a, R.mask_alpha_ref(ref[t], 641, 361, R.geometry_ref(EffectConfig(kind="fill"), MaskConfig(), 641, 361))[0])
        covered.append(bool((a[seen_px] == 255).mean() > 0.99))
    assert covered == [True] * (4 + n - 1) + [False] * 3
    fx.apply(D.real_frame(shared_data, 641, 361), person)
    fx.reset()  # a restart forgets the held person at once
    assert not fx.apply(D.real_frame(shared_data, 641, 361), empty).any()


def test_smooth_ema_values(shared_data: Path) -> None:
    alpha = 0.6
    tf = TemporalFilter(MaskConfig(temporal="smooth", smooth_alpha=alpha))
    p = D.real_prob(shared_data, "00001")
    zero = np.zeros_like(p)
    seq = [p, zero, zero, p]
    outs = [tf(x) for x in seq]
    refs = R.temporal_ref(seq, MaskConfig(temporal="smooth", smooth_alpha=alpha))
    for o, r in zip(outs, refs):
        assert o.dtype == np.float32 and np.array_equal(o, r)  # bit-exact float32 recurrence
    np.testing.assert_allclose(outs[0], p)
    np.testing.assert_allclose(outs[1], 0.4 * p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outs[2], 0.16 * p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outs[3], 0.6 * p + 0.4 * 0.16 * p, rtol=1e-6, atol=1e-7)


def test_temporal_none_reads_a_valid_map_in_place_and_fixes_a_bad_one_in_a_copy() -> None:
    """``temporal: none`` hands a float32 map in [0, 1] back as it is (no 2 MB copy a frame);
    anything else (NaN, out of range, another dtype) comes back fixed in a copy, the input untouched."""
    tf = TemporalFilter(MaskConfig(temporal="none"))
    good = np.array([[0.0, 0.25], [1.0, 0.5]], np.float32)
    assert tf(good) is good
    bad = np.array([[np.nan, -3.0], [7.0, 0.5]], np.float32)
    fixed = tf(bad)
    assert not np.shares_memory(fixed, bad) and np.isnan(bad[0, 0]) and bad[1, 0] == 7.0
    assert fixed.tolist() == [[1.0, 0.0], [1.0, 0.5]]
    as_float64 = tf(good.astype(np.float64))
    assert as_float64.dtype == np.float32 and np.array_equal(as_float64, good)
    with pytest.raises(ValueError, match="2-D"):
        tf(np.zeros((1, 4, 6), np.float32))


def test_temporal_resets_on_shape_change() -> None:
    tf = TemporalFilter(MaskConfig(temporal="hold", hold_frames=4))
    tf(np.ones((8, 8), np.float32))
    out = tf(np.zeros((4, 6), np.float32))
    assert out.shape == (4, 6) and not out.any()
    with pytest.raises(ValueError, match="2-D"):
        tf(np.zeros((1, 4, 6), np.float32))


def test_cover_whole_leaves_the_hold_state_alone(shared_data: Path) -> None:
    """A failed segmentation (cover_whole) between frames neither adds to nor clears the hold."""
    fx = create_stream_effect(EffectConfig(kind="fill"), MaskConfig(temporal="hold", hold_frames=2))
    person = D.real_prob(shared_data, "00001")
    empty = np.zeros_like(person)
    a0 = fx.apply(D.real_frame(shared_data, 320, 181), person)
    assert (fx.cover_whole(D.real_frame(shared_data, 320, 181)) == 255).all()
    assert np.array_equal(fx.apply(D.real_frame(shared_data, 320, 181), empty), a0)  # still held
    assert not fx.apply(D.real_frame(shared_data, 320, 181), empty).any()  # then released
