"""The CPU effect's shortcuts stay bit-exact: thresholding only where the mask can reach, the
no-blend plan for hard (feather 0) masks such as the cctv preset's, and the tiled evaluation
(tiles proven 0/255 at model resolution, only the edge tiles computed, each from its halo).

Both are checked against the NumPy references (tests/reference.py) on real masks, and the
reachable-span bound against a brute-force full-frame threshold on random maps, including
shrinks (which sample only some source pixels) and tiny frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.backends import create_stream_effect
from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import resolve_geometry
from privacy_filter.effects.cpu import blend_plan
from privacy_filter.effects.mask import cpu_mask_alpha, dilate_binary, quantize, reachable_span, upsample_part, upsample_u8
from support import effects_data as D
from support import reference as R

HARD = MaskConfig(threshold=0.3, dilate_frac=0.02, feather_px=0)  # the cctv preset's mask


@pytest.mark.parametrize("size", [(641, 361), (1918, 1078)])
@pytest.mark.parametrize("target", ["person", "background"])
@pytest.mark.parametrize("kind", ["pixelate", "fill", "blur", "overlay"])
def test_hard_mask_effects_match_reference(shared_data: Path, kind: str, target: str, size: tuple[int, int]) -> None:
    effect = EffectConfig(kind=kind, target=target, color=(200, 30, 60))  # type: ignore[arg-type]
    for prob in (D.real_prob(shared_data, "00001"), D.shrink_prob(D.real_prob(shared_data, "00003"), 0.3, (0.15, 0.8))):
        frame = D.real_frame(shared_data, *size)
        orig = frame.copy()
        alpha = create_stream_effect(effect, HARD).apply(frame, prob)
        planes, ref_alpha = R.apply_ref(orig.planes, prob, effect, HARD)
        assert np.array_equal(alpha, ref_alpha)
        assert set(np.unique(alpha).tolist()) <= {0, 255}
        assert 0 < int((alpha == 255).sum()) < alpha.size
        diff = max(int(np.abs(a.astype(np.int32) - b).max()) for a, b in zip(frame.planes, planes))
        assert diff <= 2


def test_reachable_span_bounds_the_threshold_exactly() -> None:
    """Outside the span nothing reaches threshold; inside, the CPU alpha equals the reference."""
    rng = np.random.default_rng(7)
    boxes = 0
    for trial in range(240):
        sh, sw = [(144, 256), (256, 256), (3, 5), (1, 1), (17, 33), (2, 1)][trial % 6]
        width, height = [(1920, 1080), (641, 361), (2, 2), (1, 3), (5, 3), (7, 1)][trial % 6 - (trial // 6) % 2]
        m = rng.random((sh, sw)).astype(np.float32)
        if trial % 3 == 0:
            m = cv2.GaussianBlur(m, (0, 0), 3) ** 4
        elif trial % 3 == 1:
            m[:] = 0
            m[rng.integers(0, sh), rng.integers(0, sw)] = rng.random()
        t8 = int(rng.integers(1, 256))
        q = quantize(m)
        full = upsample_u8(q, width, height) >= t8
        ys, xs = np.nonzero(q >= t8)
        if ys.size:
            y0, y1 = reachable_span(int(ys.min()), int(ys.max()), sh, height)
            x0, x1 = reachable_span(int(xs.min()), int(xs.max()), sw, width)
            inside = np.zeros_like(full)
            inside[y0:y1, x0:x1] = True
            assert not (full & ~inside).any(), trial
        mask = MaskConfig(threshold=t8 / 255, dilate_px=int(rng.choice([0, 2])), feather_px=int(rng.choice([0, 2])))
        effect = EffectConfig(target=str(rng.choice(["person", "background"])))  # type: ignore[arg-type]
        ma = cpu_mask_alpha(m, resolve_geometry(effect, mask, width, height))
        a, ac = R.mask_alpha_ref(m, width, height, R.geometry_ref(effect, mask, width, height))
        assert np.array_equal(ma.full(), a) and np.array_equal(ma.full_chroma(), ac), trial
        boxes += ma.box is not None
    assert boxes > 60  # the comparison covered real boxes, not only empty masks


@pytest.mark.parametrize(
    ("src", "dst"),
    [((144, 256), (1920, 1080)), ((256, 256), (1920, 1080)), ((256, 256), (1280, 720)), ((144, 256), (641, 361)), ((144, 256), (3840, 2160)), ((256, 256), (128, 96))],
)
def test_upsample_part_equals_the_full_resize(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Cropped resizes (used where the tap pattern repeats) give the full resize's pixels."""
    rng = np.random.default_rng(11)
    q = rng.integers(0, 256, src, dtype=np.uint8)
    width, height = dst
    full = upsample_u8(q, width, height)
    assert np.array_equal(full, R.resize_bilinear_ref(q, width, height))
    for _ in range(40):
        r0, r1 = sorted(rng.integers(0, height + 1, 2).tolist())
        c0, c1 = sorted(rng.integers(0, width + 1, 2).tolist())
        r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
        assert np.array_equal(upsample_part(q, width, height, (r0, r1), (c0, c1)), full[r0:r1, c0:c1])


def test_dilate_binary_equals_the_reference_dilation() -> None:
    """Box-sum dilation == rect max dilation (outside ignored), at the edges and for tiny masks."""
    rng = np.random.default_rng(5)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        b = np.where(rng.random((h, w)) < rng.choice([0.002, 0.02, 0.3]), 255, 0).astype(np.uint8)
        r = int(rng.choice([1, 3, 22, 60]))
        assert np.array_equal(dilate_binary(b, r), R.dilate_ref(b, r)), trial


def _blob_prob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth random 0..1 map: blobs with soft edges, like a segmentation output."""
    m = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), float(rng.choice([1.5, 3.0, 6.0])))
    return (m - m.min()) / (m.max() - m.min() + 1e-6)


def test_tiled_and_dense_alpha_equal_the_reference_at_frame_edges() -> None:
    """Both evaluations == mask_alpha_ref, for masks that touch every frame edge, ragged frame
    sizes (tiles cut by the edge), radii larger than a tile, and both targets."""
    rng = np.random.default_rng(23)
    edge_pieces = 0
    for trial in range(90):
        sh, sw = [(144, 256), (256, 256), (40, 30)][trial % 3]
        width, height = [(1920, 1080), (641, 361), (97, 53), (1280, 720), (33, 17)][trial % 5]
        m = _blob_prob(rng, (sh, sw))
        side = trial % 4  # a person cut by the top, bottom, left or right edge of the frame
        if side == 0:
            m[:3, :] = 1
        elif side == 1:
            m[-3:, :] = 1
        elif side == 2:
            m[:, :3] = 1
        else:
            m[:, -3:] = 1
        mask = MaskConfig(threshold=float(rng.integers(20, 240)) / 255, dilate_px=int(rng.choice([0, 1, 2, 5, 22, 40])), feather_px=int(rng.choice([0, 1, 6, 20])))
        effect = EffectConfig(target=str(rng.choice(["person", "background"])))  # type: ignore[arg-type]
        geo = resolve_geometry(effect, mask, width, height)
        a, ac = R.mask_alpha_ref(m, width, height, R.geometry_ref(effect, mask, width, height))
        for method in ("tiled", "dense", "auto"):
            ma = cpu_mask_alpha(m, geo, method)
            assert np.array_equal(ma.full(), a), (trial, method)
            assert np.array_equal(ma.full_chroma(), ac), (trial, method)
        tiled = cpu_mask_alpha(m, geo, "tiled")
        if tiled.edge_tiles is not None:
            t = tiled.tile
            gy, gx = tiled.edge_tiles[0] + tiled.box[0] // t, tiled.edge_tiles[1] + tiled.box[2] // t
            reach = geo.dilate + geo.feather
            edge_pieces += int(((gy * t < reach) | ((gy + 1) * t + reach > height) | (gx * t < reach) | ((gx + 1) * t + reach > width)).sum())
    assert edge_pieces > 200  # the halo replication at the frame's edges was exercised


@pytest.mark.parametrize("name", ["00001", "00003", "00007"])
@pytest.mark.parametrize("preset", ["video-call", "cctv"])
def test_tiled_alpha_on_real_masks_proves_most_tiles(shared_data: Path, name: str, preset: str) -> None:
    """On a real person at 1080p the tiled evaluation equals the reference, and most of the box
    is proven at model resolution (only the edge is computed at frame resolution)."""
    from privacy_filter.config import load_preset

    mask = MaskConfig(**load_preset(preset)["mask"])
    prob = D.real_prob(shared_data, name)
    geo = resolve_geometry(EffectConfig(), mask, 1920, 1080)
    a, ac = R.mask_alpha_ref(prob, 1920, 1080, R.geometry_ref(EffectConfig(), mask, 1920, 1080))
    ma = cpu_mask_alpha(prob, geo, "tiled")
    assert np.array_equal(ma.full(), a) and np.array_equal(ma.full_chroma(), ac)
    assert ma.edge_tiles is not None and ma.box is not None
    y0, y1, x0, x1 = ma.box
    edge_area = ma.edge_tiles[0].size * ma.tile**2
    assert 0 < edge_area < 0.5 * (y1 - y0) * (x1 - x0)


def test_blend_plan_from_edge_tiles_equals_the_full_scan(shared_data: Path) -> None:
    """Taking the partial tiles found while the edge tiles were computed gives exactly the
    partial tiles and pixels a full scan of the box finds (odd boxes' chroma: no hint, a scan)."""
    mask = MaskConfig(threshold=0.5, dilate_px=2, feather_px=6)
    for name, (width, height) in (("00001", (1920, 1080)), ("00003", (641, 361)), ("00007", (1918, 1078))):
        for target in ("person", "background"):
            geo = resolve_geometry(EffectConfig(target=target), mask, width, height)  # type: ignore[arg-type]
            ma = cpu_mask_alpha(D.real_prob(shared_data, name), geo, "tiled")
            assert ma.a is not None and ma.ac is not None
            even = (ma.box[1] - ma.box[0]) % 2 == 0 and (ma.box[3] - ma.box[2]) % 2 == 0  # type: ignore[index]
            assert ma.partial is not None and (ma.partial_c is not None) == even
            for alpha, partial in ((ma.a, ma.partial), (ma.ac, ma.partial_c)):
                full = blend_plan(alpha)
                for fast in (blend_plan(alpha, False, partial),):
                    assert fast.ty.size > 0
                    assert sorted(zip(fast.ty.tolist(), fast.tx.tolist())) == sorted(zip(full.ty.tolist(), full.tx.tolist()))
                    order_f, order_s = np.lexsort((fast.tx, fast.ty)), np.lexsort((full.tx, full.ty))
                    assert np.array_equal(fast.ta[order_f], full.ta[order_s])
                    assert np.array_equal(fast.ys, full.ys) and np.array_equal(fast.xs, full.xs) and np.array_equal(fast.full, full.full)


@pytest.mark.parametrize("target", ["person", "background"])
@pytest.mark.parametrize("kind", ["pixelate", "fill", "blur", "replace", "overlay"])
def test_tile_row_gather_equals_the_indexed_path_and_the_reference(shared_data: Path, kind: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planes whose rows are a multiple of 16 bytes apart (1280×720, chroma 640) blend their
    partial tiles through 16-byte row items; the result is bit for bit the advanced-indexing
    path's (forced by disabling the row items) and within ±2 of the reference, and the fast
    path was really taken for every plane."""
    from privacy_filter.effects import tiles

    effect = EffectConfig(kind=kind, target=target, color=(200, 30, 60))  # type: ignore[arg-type]
    mask = MaskConfig(threshold=0.5, dilate_px=2, feather_px=6)  # feathered: many partial tiles
    prob = D.real_prob(shared_data, "00001")
    taken: list[bool] = []
    original = tiles.row_items
    monkeypatch.setattr(tiles, "row_items", lambda plane, size: taken.append(original(plane, size) is not None) or original(plane, size))
    results = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(tiles, "row_items", lambda plane, size: None)
        frame = D.real_frame(shared_data, 1280, 720)
        orig = frame.copy()
        alpha = create_stream_effect(effect, mask).apply(frame, prob)
        results.append((alpha, *frame.planes))
    assert taken and all(taken), "the 16-byte row path was not taken"
    assert all(np.array_equal(a, b) for a, b in zip(*results))
    planes, ref_alpha = R.apply_ref(orig.planes, prob, effect, mask)
    assert np.array_equal(results[0][0], ref_alpha)
    assert 0 < int(((ref_alpha > 0) & (ref_alpha < 255)).sum())
    assert max(int(np.abs(a.astype(np.int32) - b).max()) for a, b in zip(results[0][1:], planes)) <= 2
