"""CPU effects backend vs the NumPy references on real frames and real masks (±2 levels).

Frames are pictures of the CCTV clip scaled to odd and even sizes; masks are portrait
ground truth (large person) and the same shrunk into a corner (a small CCTV figure),
so both the whole-frame and the box-restricted code paths run.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from privacy_filter.backends import create_stream_effect
from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import resolve_geometry
from privacy_filter.effects.cpu import blend_plan, cell_means, composite_into, overlay_into, tint
from privacy_filter.effects.replace import to_i420
from privacy_filter.errors import ConfigError
from privacy_filter.frames import YuvFrame
from support import effects_data as D
from support import reference as R

TOL = 2
KINDS = ["pixelate", "fill", "blur", "replace", "overlay", "none"]
MASK = MaskConfig(threshold=0.5, dilate_px=5, feather_px=3)
PORTRAIT = "images/portrait_dev/images/00001.jpg"


def _probs(data: Path) -> dict[str, np.ndarray]:
    big = D.real_prob(data, "00001")
    return {"big": big, "small": D.shrink_prob(D.real_prob(data, "00003"), 0.3, (0.15, 0.8))}


def _max_diff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> int:
    return max(int(np.abs(x.astype(np.int32) - y).max()) for x, y in zip(a, b))


def _run(data: Path, effect: EffectConfig, mask: MaskConfig, size: tuple[int, int], prob: np.ndarray) -> tuple[YuvFrame, YuvFrame, np.ndarray]:
    frame = D.real_frame(data, *size)
    orig = frame.copy()
    fx = create_stream_effect(effect, mask)
    alpha = fx.apply(frame, prob)
    return orig, frame, alpha


@pytest.mark.parametrize("size", [(641, 361), (768, 432)])
@pytest.mark.parametrize("target", ["person", "background"])
@pytest.mark.parametrize("kind", KINDS)
def test_effect_matches_reference(shared_data: Path, kind: str, target: str, size: tuple[int, int]) -> None:
    effect = EffectConfig(kind=kind, target=target, color=(200, 30, 60), overlay_opacity=0.6)  # type: ignore[arg-type]
    for name, prob in _probs(shared_data).items():
        orig, frame, alpha = _run(shared_data, effect, MASK, size, prob)
        planes, ref_alpha = R.apply_ref(orig.planes, prob, effect, MASK)
        assert np.array_equal(alpha, ref_alpha), name
        assert _max_diff(frame.planes, planes) <= TOL, name
        changed = int((frame.y != orig.y).sum())
        if kind == "none":
            assert changed == 0
        else:
            assert changed > 1000, f"{name}: the effect changed almost nothing"
        # outside the covered area the picture is untouched, bit for bit
        assert np.array_equal(frame.y[alpha == 0], orig.y[alpha == 0])


@pytest.mark.parametrize(
    ("kind", "target"),
    [("pixelate", "background"), ("blur", "person"), ("blur", "background"), ("fill", "person"), ("overlay", "background")],
)
def test_effect_matches_reference_1080p_odd(shared_data: Path, kind: str, target: str) -> None:
    """1918×1078 with the default fractional block/blur sizes and a fractional dilation."""
    effect = EffectConfig(kind=kind, target=target, color=(0, 90, 250))  # type: ignore[arg-type]
    mask = MaskConfig(dilate_frac=0.01, feather_px=6)
    prob = _probs(shared_data)["small"]
    orig, frame, alpha = _run(shared_data, effect, mask, (1918, 1078), prob)
    planes, ref_alpha = R.apply_ref(orig.planes, prob, effect, mask)
    assert np.array_equal(alpha, ref_alpha)
    assert _max_diff(frame.planes, planes) <= TOL


def test_reference_comparison_catches_a_wrong_implementation(shared_data: Path) -> None:
    """The ±2 comparison is not vacuous: a shifted cell grid, a wrong block size, a wrong
    blur or an off-by-one chroma alpha all fail it."""
    prob = _probs(shared_data)["big"]
    orig = D.real_frame(shared_data, 641, 361)
    effect = EffectConfig(kind="pixelate", block_px=16)
    ref_planes, _ = R.apply_ref(orig.planes, prob, effect, MASK)
    wrong_block, _ = R.apply_ref(orig.planes, prob, EffectConfig(kind="pixelate", block_px=18), MASK)
    assert _max_diff(wrong_block, ref_planes) > TOL
    shifted = tuple(np.roll(p, 1, axis=1) for p in orig.planes)
    wrong_grid, _ = R.apply_ref(shifted, prob, effect, MASK)  # type: ignore[arg-type]
    assert _max_diff(wrong_grid, ref_planes) > TOL
    blur = EffectConfig(kind="blur")
    ref_blur, _ = R.apply_ref(orig.planes, prob, blur, MASK)
    weaker, _ = R.apply_ref(orig.planes, prob, EffectConfig(kind="blur", blur_radius_px=6), MASK)
    assert _max_diff(weaker, ref_blur) > TOL
    # and the CPU result itself is caught when perturbed by 3 levels on a single pixel
    frame = orig.copy()
    create_stream_effect(effect, MASK).apply(frame, prob)
    frame.u[100, 100] = np.uint8((int(frame.u[100, 100]) + 3) % 256)
    assert _max_diff(frame.planes, ref_planes) > TOL


def test_tint_is_exact_for_every_colour_alpha_and_pixel() -> None:
    """The overlay's constant-alpha composite (one rounded convertScaleAbs) equals the integer
    formula for all 256 × 256 colour/alpha pairs and every pixel value, on a plane wide
    enough for OpenCV's vector loop, a strided view and a single row."""
    o = np.tile(np.arange(256, dtype=np.uint8), (2, 4))  # every value, 2 × 1024
    strided = np.zeros((2, 1040), np.uint8)[:, 7:1031]
    strided[...] = o
    row = o[:1, :256]
    values = np.arange(256, dtype=np.int64)
    for alpha in range(256):
        table = ((values[None, :] * (255 - alpha) + values[:, None] * alpha + 127) // 255).astype(np.uint8)  # [colour, o]
        got = np.stack([tint(o, color, alpha) for color in range(256)])
        assert np.array_equal(got, np.tile(table, 4)[:, None, :].repeat(2, axis=1)), alpha
        for color in range(0, 256, 15):
            for plane in (strided, row):
                assert np.array_equal(tint(plane, color, alpha), table[color][plane]), (color, alpha, plane.shape)


@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (5, 300), (161, 15), (100, 96)])
def test_composite_is_exact_for_every_alpha(shape: tuple[int, int]) -> None:
    """Tiles, ragged strips, strided views, array and constant pictures: all bit-exact, both
    with rows a multiple of 16 bytes apart (tiles moved as 16-byte items) and not."""
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    a[: h // 3] = 255  # opaque and empty regions too
    a[-(h // 4) :, : w // 2] = 0
    orig = rng.integers(0, 256, shape, dtype=np.uint8)
    eff = rng.integers(0, 256, shape, dtype=np.uint8)
    plan = blend_plan(a)
    for picture in (eff, 77):
        for left, width in ((3, w + 9), (16, -(-w // 16) * 16 + 32)):  # row stride: odd, then a multiple of 16
            buf = np.zeros((h, width), np.uint8)
            dst = buf[:, left : w + left]
            dst[...] = orig
            composite_into(dst, picture, plan)
            assert np.array_equal(dst, R.composite_ref(orig, picture, a))
            assert not buf[:, :left].any() and not buf[:, w + left :].any()
    dst = orig.copy()
    overlay_into(dst, 200, plan, 153)
    ao = ((a.astype(np.int64) * 153 + 127) // 255).astype(np.uint8)
    assert np.array_equal(dst, R.composite_ref(orig, 200, ao))


def test_cell_means_partial_cells(shared_data: Path) -> None:
    y = D.real_frame(shared_data, 641, 361).y
    for cell in (2, 6, 16, 46, 400):
        mine = cell_means(y, cell)
        ref = R.cell_means_ref(y, cell)
        assert mine.shape == (-(-361 // cell), -(-641 // cell))
        assert int(np.abs(mine.astype(int) - ref).max()) <= 1
        if cell >= 12:  # the integer-sum path is exact
            assert np.array_equal(mine, ref)
    # the last (partial) column of 641 px with 16 px cells averages exactly one column
    col = y[:16, 640].astype(int)
    assert cell_means(y, 16)[0, -1] == (2 * col.sum() + 16) // 32


def test_pixelate_cells_are_flat_inside_the_person(shared_data: Path) -> None:
    effect = EffectConfig(kind="pixelate", block_px=12)
    frame = D.real_frame(shared_data, 641, 361)
    alpha = create_stream_effect(effect, MaskConfig(dilate_px=4)).apply(frame, _probs(shared_data)["big"])
    cells = 0
    for cy in range(0, 361 - 12, 12):
        for cx in range(0, 641 - 12, 12):
            if (alpha[cy : cy + 12, cx : cx + 12] == 255).all():
                cells += 1
                assert np.ptp(frame.y[cy : cy + 12, cx : cx + 12]) == 0
                assert np.ptp(frame.u[cy // 2 : cy // 2 + 6, cx // 2 : cx // 2 + 6]) == 0
    assert cells > 100


def test_fill_is_exact_colour_and_blur_is_strong(shared_data: Path) -> None:
    prob = _probs(shared_data)["big"]
    frame = D.real_frame(shared_data, 768, 432)
    alpha = create_stream_effect(EffectConfig(kind="fill", color=(255, 0, 0)), MASK).apply(frame, prob)
    assert (frame.y[alpha == 255] == 81).all()
    orig = D.real_frame(shared_data, 768, 432)
    frame = orig.copy()
    alpha = create_stream_effect(EffectConfig(kind="blur"), MASK).apply(frame, prob)
    inner = cv2.erode((alpha == 255).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)

    def detail(y: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(y.astype(np.float32), cv2.CV_32F))[inner].mean())

    assert detail(frame.y) < detail(orig.y) / 5


def test_nobody_in_frame(shared_data: Path) -> None:
    empty = np.zeros((256, 256), np.float32)
    orig = D.real_frame(shared_data, 641, 361)
    frame = orig.copy()
    assert not create_stream_effect(EffectConfig(kind="pixelate"), MASK).apply(frame, empty).any()
    assert all(np.array_equal(a, b) for a, b in zip(frame.planes, orig.planes))
    alpha = create_stream_effect(EffectConfig(kind="blur", target="background"), MASK).apply(frame, empty)
    assert (alpha == 255).all()
    ref = R.effect_planes_ref("blur", orig.planes, R.geometry_ref(EffectConfig(kind="blur"), MASK, 641, 361))
    assert _max_diff(frame.planes, ref) <= TOL


@pytest.mark.parametrize("kind", KINDS)
def test_cover_whole(shared_data: Path, kind: str) -> None:
    effect = EffectConfig(kind=kind, color=(20, 200, 40))  # type: ignore[arg-type]
    orig = D.real_frame(shared_data, 641, 361)
    frame = orig.copy()
    fx = create_stream_effect(effect, MaskConfig(temporal="hold"))
    alpha = fx.cover_whole(frame)
    assert alpha.shape == (361, 641) and (alpha == 255).all()
    ref = R.cover_whole_ref(orig.planes, effect)
    assert _max_diff(frame.planes, ref) <= TOL
    if kind in ("overlay", "none", "fill", "replace"):
        yuv = resolve_geometry(effect, MaskConfig(), 641, 361).color_yuv
        assert all((p == c).all() for p, c in zip(frame.planes, yuv))
    if kind in ("pixelate", "blur"):
        assert np.ptp(frame.y) > 20  # the effect, not a flat colour


def test_strided_planes_are_filtered_in_place(shared_data: Path) -> None:
    """Decoder planes are views with line_size > width; the padding must stay untouched."""
    src = D.real_frame(shared_data, 641, 361)
    ybuf = np.full((361, 704), 7, np.uint8)
    ubuf = np.full((181, 352), 7, np.uint8)
    vbuf = np.full((181, 352), 7, np.uint8)
    ybuf[:, :641], ubuf[:, :321], vbuf[:, :321] = src.y, src.u, src.v
    frame = YuvFrame(ybuf[:, :641], ubuf[:, :321], vbuf[:, :321])
    prob = _probs(shared_data)["big"]
    for target in ("person", "background"):
        effect = EffectConfig(kind="pixelate", target=target)  # type: ignore[arg-type]
        ref, _ = R.apply_ref(frame.copy().planes, prob, effect, MASK)
        create_stream_effect(effect, MASK).apply(frame, prob)
        assert _max_diff((ybuf[:, :641], ubuf[:, :321], vbuf[:, :321]), ref) <= TOL
        assert (ybuf[:, 641:] == 7).all() and (ubuf[:, 321:] == 7).all()


def test_nan_probability_covers(shared_data: Path) -> None:
    frame = D.real_frame(shared_data, 320, 181)
    alpha = create_stream_effect(EffectConfig(kind="fill"), MaskConfig()).apply(frame, np.full((64, 64), np.nan, np.float32))
    assert (alpha == 255).all() and (frame.y == 16).all()


# ---------------------------------------------------------------------------- replace


def test_replace_image_matches_reference_and_picture(shared_data: Path) -> None:
    path = str(shared_data / PORTRAIT)
    prob = _probs(shared_data)["big"]
    for size in ((641, 361), (768, 432)):
        effect = EffectConfig(kind="replace", replace_image=path)
        orig = D.real_frame(shared_data, *size)
        frame = orig.copy()
        alpha = create_stream_effect(effect, MASK).apply(frame, prob)
        with av.open(path) as c:
            repl = to_i420(next(c.decode(video=0)), *size, "bt601")
        ref, ref_alpha = R.apply_ref(orig.planes, prob, effect, MASK, replacement=repl)
        assert np.array_equal(alpha, ref_alpha) and _max_diff(frame.planes, ref) <= TOL
        # the replacement really is the image: compare luma with an independent OpenCV path
        bgr = cv2.resize(cv2.imread(path), size, interpolation=cv2.INTER_LINEAR)
        expected_y = 16 + 219 * (bgr[..., 2] * 0.299 + bgr[..., 1] * 0.587 + bgr[..., 0] * 0.114) / 255
        inside = alpha == 255
        assert np.median(np.abs(frame.y[inside] - expected_y[inside])) < 4


def test_replace_video_loops(shared_data: Path, tmp_path: Path) -> None:
    clip = tmp_path / "three.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for level in (40, 120, 200):
            img = np.full((64, 96, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    fx = create_stream_effect(EffectConfig(kind="replace", replace_video=str(clip)), MaskConfig())
    full = np.ones((32, 32), np.float32)
    seen = []
    for _ in range(7):
        frame = D.real_frame(shared_data, 161, 91)
        fx.apply(frame, full)
        seen.append(int(np.median(frame.y)))
    lv = [16 + round(219 * v / 255) for v in (40, 120, 200)]
    assert all(abs(s - e) <= 3 for s, e in zip(seen, lv * 3)), seen
    assert seen[3] == seen[0] and seen[4] == seen[1]  # looped


def test_replace_without_media_is_colour(shared_data: Path) -> None:
    frame = D.real_frame(shared_data, 161, 91)
    create_stream_effect(EffectConfig(kind="replace", color=(0, 0, 255)), MaskConfig()).apply(frame, np.ones((8, 8), np.float32))
    assert (frame.y == 41).all() and (frame.u == 240).all() and (frame.v == 110).all()


def test_bad_replacement_names_field_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ConfigError, match=r"effect\.replace_image: file not found: .*nope\.png"):
        create_stream_effect(EffectConfig(kind="replace", replace_image=str(missing)), MaskConfig())
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ConfigError, match=r"effect\.replace_image: .*junk\.png"):
        create_stream_effect(EffectConfig(kind="replace", replace_image=str(junk)), MaskConfig())
    with pytest.raises(ConfigError, match=r"effect\.replace_video: file not found: .*clip\.mp4"):
        create_stream_effect(EffectConfig(kind="replace", replace_video=str(tmp_path / "clip.mp4")), MaskConfig())
    with pytest.raises(ConfigError, match="device"):
        create_stream_effect(EffectConfig(), MaskConfig(), device="tpu")


@pytest.mark.parametrize("target", ["person", "background"])
@pytest.mark.parametrize("kind", ["blur", "pixelate", "overlay"])
def test_pictures_on_the_helper_thread_equal_the_single_thread_result(shared_data: Path, kind: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pictures computed beside the mask (a blur's whole planes from the start; once the box is
    known and covers a quarter of the frame, as the portrait's does, a pixelation's box or
    whole planes and an overlay's tinted box) give the same frame and alpha as computing them
    afterwards on the calling thread, frame after frame."""
    from privacy_filter.effects import cpu

    effect = EffectConfig(kind=kind, target=target)  # type: ignore[arg-type]
    mask = MaskConfig(threshold=0.5, dilate_px=2, feather_px=6, temporal="smooth")
    calls: list[str] = []
    for name in ("_blur_pictures", "_pixelate_pictures", "_tinted_box_pictures"):
        original = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    outputs = []
    for helper in (True, False):
        monkeypatch.setattr(cpu, "HELPER_THREAD", helper)
        fx = create_stream_effect(effect, mask)
        run = []
        for name in ("00001", "00003", "00001"):
            frame = D.real_frame(shared_data, 641, 361)
            alpha = fx.apply(frame, D.real_prob(shared_data, name))
            run.append((alpha, *frame.planes))
        outputs.append(run)
    for with_helper, without in zip(*outputs):
        assert all(np.array_equal(a, b) for a, b in zip(with_helper, without))
    assert 0 < int((outputs[0][0][0] == 255).sum()) < outputs[0][0][0].size
    # the helper really ran, on every frame (blur from the start, the others once the box was known)
    assert len(calls) == 3, calls


def test_a_failing_mask_leaves_the_frame_untouched_while_the_blur_runs_beside_it(shared_data: Path) -> None:
    """The mask raises while the blur pictures are being computed: the error reaches the caller
    (the stage then covers the frame), the frame is not written, and the next frame works."""
    fx = create_stream_effect(EffectConfig(kind="blur"), MaskConfig())
    frame = D.real_frame(shared_data, 641, 361)
    before = frame.copy()
    with pytest.raises(ValueError, match="2-D"):
        fx.apply(frame, np.ones((2, 8, 8), np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(frame.planes, before.planes))
    alpha = fx.apply(frame, D.real_prob(shared_data, "00001"))
    assert int((alpha == 255).sum()) > 0 and not np.array_equal(frame.y, before.y)
