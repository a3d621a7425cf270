"""Engines: preprocessing (YUV and RGB), output decoding, batching, tiling — real models, real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from privacy_filter.backends import create_segmenter
from privacy_filter.engines import outputs, preprocess, tiling, upsample_probability
from privacy_filter.engines.onnxruntime import physical_cores
from privacy_filter.errors import ConfigError, ModelError
from privacy_filter.frames import YuvFrame
from privacy_filter.models.registry import ResolvedModel
from support.pictures import even, to_i420
from support.seg_fixtures import image_and_mask, iou


@pytest.fixture(scope="module")
def selfie(selfie_model: ResolvedModel):
    return create_segmenter(selfie_model)


# --- output decoding (pure) ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_decode_argmax_ids(dtype) -> None:
    ids = np.array([[[[0], [1]], [[1], [2]]]], dtype)  # NHWC [1,2,2,1]
    assert outputs.decode_argmax(ids, "NHWC", 1).tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    assert outputs.decode_argmax(ids[..., 0], "NHWC", 1).dtype == np.float32  # rank-3 id maps too


def test_decode_softmax_and_logits_layouts() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # NCHW, 3 classes
    e = np.exp(logits)
    soft = e / e.sum(axis=1, keepdims=True)
    assert np.allclose(outputs.decode_softmax(soft, "NCHW", 2), soft[:, 2])
    assert np.allclose(outputs.decode_softmax(soft.transpose(0, 2, 3, 1), "NHWC", 2), soft[:, 2])
    assert np.allclose(outputs.decode_logits(logits, "NCHW", 2), soft[:, 2], atol=1e-6)
    two = logits[:, :2]
    e2 = np.exp(two)
    assert np.allclose(outputs.decode_logits(two.transpose(0, 2, 3, 1), "NHWC", 1), e2[:, 1] / e2.sum(1), atol=1e-6)
    one = logits[:, :1]
    assert np.allclose(outputs.decode_logits(one, "NCHW", 0), 1 / (1 + np.exp(-one[:, 0])), atol=1e-6)
    big = np.array([[[[-1000.0, 1000.0]]]], np.float32)  # no overflow warnings, saturates
    with np.errstate(all="raise"):
        assert outputs.decode_logits(big, "NHWC", 1).item() == pytest.approx(1.0)
    sig = rng.random((2, 1, 4, 5)).astype(np.float32)
    assert np.array_equal(outputs.decode_sigmoid(sig, "NCHW"), sig[:, 0])


def test_upsample_is_bilinear_not_nearest() -> None:
    hard = np.zeros((4, 4), np.float32)
    hard[:, 2:] = 1.0
    up = upsample_probability(hard, 16, 8)
    assert up.shape == (8, 16)
    assert ((up > 0) & (up < 1)).any()  # soft edge: interpolated, never nearest on labels
    assert np.allclose(up, cv2.resize(hard, (16, 8), interpolation=cv2.INTER_LINEAR))


# --- preprocessing -----------------------------------------------------------------------------


def test_yuv_matrix_matches_opencv_bt601_limited(shared_data: Path) -> None:
    img = even(cv2.imread(str(shared_data / "images/cihp_multi/images/0005008.jpg")))
    f = to_i420(img)
    ref = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2RGB_I420).astype(np.float32)
    up = lambda p: cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    yuv = cv2.merge([f.y, up(f.u), up(f.v)]).astype(np.float32)
    rgb = np.clip(cv2.transform(yuv, preprocess.yuv_to_rgb_matrix("bt601", False)), 0, 255)
    assert np.abs(rgb - ref).mean() < 1.0 and np.abs(rgb - ref).max() <= 3.0


def test_yuv_and_rgb_paths_agree_on_a_real_photo(selfie, shared_data: Path) -> None:
    img, gt = image_and_mask(shared_data, "portrait_dev", "00001")
    img = even(img)
    p_rgb = selfie.infer_rgb([img], order="bgr")[0]
    p_rgb2 = selfie.infer_rgb([np.ascontiguousarray(img[..., ::-1])], order="rgb")[0]
    assert np.array_equal(p_rgb, p_rgb2)
    p_yuv = selfie.infer_yuv([to_i420(img)])[0]
    p_strided = selfie.infer_yuv([to_i420(img, pad=64)])[0]
    assert p_yuv.shape == p_rgb.shape == (256, 256)
    assert np.array_equal(p_yuv, p_strided)
    assert np.abs(p_yuv - p_rgb).mean() < 0.01
    assert iou(p_yuv >= 0.5, p_rgb >= 0.5) > 0.98
    h, w = even(gt).shape
    assert iou(upsample_probability(p_yuv, w, h) >= 0.5, even(gt)) > 0.9


def test_batched_equals_single_and_fixed_batch_loops(selfie, spec_dir: Path, shared_data: Path) -> None:
    imgs = [image_and_mask(shared_data, "people_pseudo", s)[0] for s in ("1", "10", "100")]
    frames = [to_i420(even(i)) for i in imgs]
    batch = selfie.infer_yuv(frames)
    for f, b in zip(frames, batch):
        assert np.allclose(selfie.infer_yuv([f])[0], b, atol=1e-4)
    ref = create_segmenter(str(spec_dir / "selfie_reference.yaml"))
    assert ref.max_batch == 1  # the reference conversion has a fixed batch of 1: loops
    rb = ref.infer_rgb(imgs, order="bgr")
    assert len(rb) == 3 and all(p.shape == (256, 256) for p in rb)
    # Same network, independent conversions: identical maps up to float noise.
    sb = selfie.infer_rgb(imgs, order="bgr")
    assert max(float(np.abs(a - b).max()) for a, b in zip(rb, sb)) < 1e-3


def test_each_spec_on_real_images(selfie, spec_dir: Path, shared_data: Path) -> None:
    img, gt = image_and_mask(shared_data, "portrait_dev", "00003")
    h, w = gt.shape
    results = {}
    for name, seg in (
        ("selfie", selfie),
        ("selfie-landscape", create_segmenter("selfie-landscape") if selfie.spec.name == "selfie" else None),
        ("reference", create_segmenter(str(spec_dir / "selfie_reference.yaml"))),
        ("bodypix", create_segmenter(str(spec_dir / "bodypix.yaml"))),
    ):
        if seg is None:
            continue
        p = seg.infer_rgb([img], order="bgr")[0]
        assert p.dtype == np.float32 and 0.0 <= p.min() and p.max() <= 1.0
        results[name] = iou(upsample_probability(p, w, h) >= 0.5, gt)
    assert results["selfie"] > 0.9 and results["reference"] > 0.9
    if "selfie-landscape" in results:
        assert results["selfie-landscape"] > 0.85
    assert results["bodypix"] > 0.75  # stride-16 logits: coarser edges
    assert create_segmenter(str(spec_dir / "bodypix.yaml")).infer_rgb([img], order="bgr")[0].shape == (33, 33)


def test_sinet_softmax_spec_reads_the_person_channel(spec_dir: Path, shared_data: Path) -> None:
    # The spec plumbing (BGR, mean/std, NCHW softmax channel 1) against a hand-written run of the same file.
    seg = create_segmenter(str(spec_dir / "sinet.yaml"))
    img, _ = image_and_mask(shared_data, "portrait_dev", "00003")
    img = cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)  # model size: no resampling in the path
    got = seg.infer_rgb([img], order="bgr")[0]
    x = img.astype(np.float32)
    x = (x - np.array([102.89, 111.25, 126.91], np.float32)) / np.array([62.93, 62.82, 66.36], np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    raw = ort.InferenceSession(str(shared_data / "models/sinet_softmax.onnx"), so).run(None, {"data": np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0]
    assert np.allclose(got, raw[0, 1], atol=1e-4)


def test_letterbox_spec_returns_the_unletterboxed_content(selfie_model: ResolvedModel, shared_data: Path) -> None:
    spec = selfie_model.spec.model_copy(update={"resize": "letterbox"})
    seg = create_segmenter(ResolvedModel(spec, selfie_model.onnx_path))
    img, gt = image_and_mask(shared_data, "portrait_dev", "00003")  # 600x800 portrait
    p = seg.infer_rgb([img], order="bgr")[0]
    assert p.shape == (256, 192)  # 3:4 content of the 256x256 input; padding cut away
    assert iou(upsample_probability(p, gt.shape[1], gt.shape[0]) >= 0.5, gt) > 0.85
    place = preprocess.placement(spec, 600, 800)
    buf = np.empty(preprocess.item_shape(spec), np.float32)
    preprocess.image_into(img, spec, buf, "bgr")
    assert np.all(buf[:, :, : place.x] == 0.0)  # black bars: (0 - 0) * 1/255


def test_device_cuda_without_gpu_provider_is_a_clear_error(selfie_model: ResolvedModel) -> None:
    if any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
        pytest.skip("this onnxruntime has GPU providers")
    with pytest.raises(ModelError, match="cuda.*onnxruntime-gpu"):
        create_segmenter(selfie_model, device="cuda")
    assert create_segmenter(selfie_model, device="auto").providers == ["CPUExecutionProvider"]


def test_cpu_session_is_tuned(selfie) -> None:
    assert 1 <= physical_cores() <= (len(__import__("os").sched_getaffinity(0)))
    assert selfie.providers == ["CPUExecutionProvider"]


# --- tiling ---------------------------------------------------------------------------------


def test_parse_tiles() -> None:
    assert tiling.parse_tiles(None) is None and tiling.parse_tiles("off") is None
    assert tiling.parse_tiles("2x1") == tiling.TileGrid(2, 1)
    assert isinstance(tiling.parse_tiles("auto"), tiling.AutoTiles)
    with pytest.raises(ConfigError, match="COLSxROWS"):
        tiling.parse_tiles("two")
    with pytest.raises(ConfigError, match="1..8"):
        tiling.parse_tiles("9x1")


@pytest.mark.parametrize("w,h,grid", [(1920, 1080, (2, 1)), (1920, 1080, (3, 2)), (768, 432, (2, 2)), (501, 333, (2, 1))])
def test_tile_rects_cover_the_frame_with_overlap(w: int, h: int, grid: tuple[int, int]) -> None:
    g = tiling.TileGrid(*grid)
    rects = tiling.tile_rects(w, h, g, 256, 256)
    assert len(rects) == g.count
    cover = np.zeros((h, w), np.int32)
    for x0, y0, x1, y1 in rects:
        assert x0 % 2 == 0 and y0 % 2 == 0 and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1  # every pixel seen by some tile
    if g.cols > 1:
        assert rects[0][2] > rects[1][0]  # neighbours overlap


def test_auto_grid_only_for_large_frames() -> None:
    assert tiling.auto_grid(500, 333, 256, 256) is None
    assert tiling.auto_grid(640, 480, 256, 256) == (2, 1)
    assert tiling.auto_grid(480, 640, 256, 256) == (1, 2)
    assert tiling.auto_grid(1920, 1080, 256, 256) == (2, 2)


def test_merge_blends_tiles_and_keeps_whole_frame_maximum() -> None:
    rects = tiling.tile_rects(1000, 500, tiling.TileGrid(2, 1), 256, 256)
    ones = [np.full((256, 256), 0.8, np.float32) for _ in rects]
    merged = tiling.merge(None, ones, rects, 1000, 500, 256)
    assert np.allclose(merged, 0.8, atol=1e-5)  # feathered weights are normalised: no seams
    whole = np.zeros((256, 256), np.float32)
    whole[:, :10] = 1.0
    merged = tiling.merge(whole, ones, rects, 1000, 500, 256)
    assert merged[:, 0].min() == pytest.approx(1.0) and merged[:, -1].max() == pytest.approx(0.8)


def test_tiled_inference_is_one_batch_and_covers_the_frame(selfie_model: ResolvedModel, shared_data: Path) -> None:
    seg = create_segmenter(selfie_model, tiles="2x1")
    calls: list[int] = []
    run = seg.run
    seg.run = lambda batch: (calls.append(len(batch)), run(batch))[1]  # type: ignore[method-assign]
    img, gt = image_and_mask(shared_data, "cihp_multi", "0005008")  # 576x313, several people
    p = seg.infer_rgb([img], order="bgr")[0]
    if seg.max_batch is None:
        assert calls == [3]  # whole frame + 2 tiles in ONE session.run
    h, w = gt.shape
    assert abs(p.shape[1] / p.shape[0] - w / h) < 0.02
    tiled = iou(upsample_probability(p, w, h) >= 0.5, gt)
    plain = iou(upsample_probability(create_segmenter(selfie_model).infer_rgb([img], order="bgr")[0], w, h) >= 0.5, gt)
    assert tiled > 0.7 and tiled >= plain  # measured 0.757 vs 0.715 on this wide group photo
    # YUV path with tiles gives the same map shape and agrees with the RGB path.
    py = seg.infer_yuv([to_i420(even(img))])[0]
    assert iou(py >= 0.5, cv2.resize(p, (py.shape[1], py.shape[0])) >= 0.5) > 0.9


def test_engine_paths_go_to_tensorrt(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="TensorRT engine not found.*missing.plan"):
        create_segmenter(str(tmp_path / "missing.plan"))


@pytest.mark.parametrize("size,target", [((1920, 1080), (256, 256)), ((960, 540), (256, 144)), ((641, 361), (320, 320)), ((600, 800), (256, 256))])
def test_area_resize_equals_opencv_inter_area(shared_data: Path, size, target) -> None:
    img = cv2.imread(str(shared_data / "images/people_pseudo/images/1.jpg"))
    big = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
    for plane in (big[..., 1], big):  # a plane, and a packed 3-channel image (infer_rgb path)
        got = preprocess.area_resize(np.ascontiguousarray(plane), *target)
        want = cv2.resize(plane, target, interpolation=cv2.INTER_AREA)
        diff = np.abs(got.astype(int) - want)
        assert got.shape == want.shape and diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_resize_policy_two_stage_for_big_shrinks_exact_area_otherwise(shared_data: Path) -> None:
    img = cv2.imread(str(shared_data / "images/people_pseudo/images/1.jpg"), cv2.IMREAD_GRAYSCALE)
    y = cv2.resize(img, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    # 7.5x / 4.2x shrink: mean of four bilinear taps = bilinear to 2x, then (a+b+c+d+2) >> 2
    got = preprocess._resize(y, 256, 256)
    up2 = cv2.resize(y, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.int32)
    want = (up2.reshape(256, 2, 256, 2).sum(axis=(1, 3)) + 2) >> 2
    assert np.array_equal(got, want)
    # and it stays close to true area averaging (what it stands in for)
    area = cv2.resize(y, (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(got.astype(int) - area).mean() < 1.5
    # a 2.3x / 2.7x shrink (600x700 → 256x256) is exact area
    small = cv2.resize(img, (600, 700))
    diff = np.abs(preprocess._resize(small, 256, 256).astype(int) - cv2.resize(small, (256, 256), interpolation=cv2.INTER_AREA))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_frame_with_a_display_rotation_is_segmented_upright(selfie, shared_data: Path, k: int) -> None:
    """A picture stored turned (a phone's portrait video: stored sideways, with a display
    rotation) is segmented as it is displayed, upright, and its map lies on the stored
    picture: it is exactly the upright frame's map turned the same way. Without the rotation
    the model sees a sideways or upside-down person and finds less of it."""
    img, gt = image_and_mask(shared_data, "portrait_dev", "00001")
    upright = to_i420(even(img))
    want = selfie.infer_yuv([upright])[0]
    stored = [np.ascontiguousarray(np.rot90(p, -k)) for p in upright.planes]  # turning it k times CCW is upright
    turned = YuvFrame(*stored, metadata={"rotation": 90 * k})
    assert turned.turns == k
    got = selfie.infer_yuv([turned])[0]
    assert np.array_equal(got, np.rot90(want, -k))
    blind = selfie.infer_yuv([YuvFrame(*stored)])[0]
    h, w = stored[0].shape
    truth = np.rot90(even(gt), -k)
    iou_aware = iou(upsample_probability(got, w, h) >= 0.5, truth)
    iou_blind = iou(upsample_probability(blind, w, h) >= 0.5, truth)
    assert iou_aware > 0.9 and iou_aware > iou_blind, (iou_aware, iou_blind)


def test_rotation_metadata_that_is_not_a_quarter_turn_is_ignored() -> None:
    """``meta`` is free user data over ZeroMQ: a "rotation" that is not a number of degrees, or
    not a multiple of 90, leaves the frame as stored instead of failing its segmentation."""
    for value, turns in ((90, 1), (-90, 3), (180.0, 2), (450, 1), (0, 0), (45, 0), ("left", 0), (True, 0), (None, 0), ([90], 0)):
        frame = YuvFrame.blank(8, 6, metadata={"rotation": value})
        assert frame.turns == turns, value
        assert frame.upright().y.shape == ((8, 6) if turns % 2 else (6, 8))
