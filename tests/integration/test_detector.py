"""The NanoDet person detector end to end: our conversion against an independent one, batching,
boxes against Penn-Fudan ground truth, the I420 path against the BGR path, and tiling.

Needs the real tarball (see the ``nanodet_tgz`` fixture) and ../shared/data (skips otherwise).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from privacy_filter.backends import create_detector
from privacy_filter.cli import main
from privacy_filter.engines.detector import OrtDetector, input_geometry, preprocess_bgr
from privacy_filter.engines.finder import iou_matrix
from privacy_filter.errors import ModelError
from privacy_filter.models.registry import resolve_detector
from privacy_filter.models.specs import NANODET
from support.nanodet import i420_frame, video_frames

OUTPUTS = [*NANODET.score_outputs, *NANODET.box_outputs]
PENN = ["FudanPed00001", "FudanPed00002", "FudanPed00007", "FudanPed00013", "FudanPed00050", "PennPed00010", "PennPed00026", "PennPed00058"]


@pytest.fixture(scope="session")
def detector(nanodet_onnx: Path) -> OrtDetector:
    det = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1)
    assert isinstance(det, OrtDetector)
    return det


@pytest.fixture(scope="session")
def penn(shared_data: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Penn-Fudan images (BGR) and their GT boxes (x0, y0, x1, y1)."""
    root = shared_data / "cctv" / "pennfudan"
    gt: dict[str, list[list[float]]] = defaultdict(list)
    with open(root / "gt.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
            gt[row["image"]].append([x, y, x + w, y + h])
    images = {n: cv2.imread(str(root / "images" / f"{n}.jpg")) for n in PENN}
    assert all(im is not None for im in images.values())
    return images, {n: np.asarray(gt[n], np.float32) for n in PENN}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return iou_matrix(a, b)


def _recall(found: dict[str, np.ndarray], gt: dict[str, np.ndarray], iou: float = 0.5) -> float:
    hits = sum(int((_iou(g, found[n][:, :4]).max(axis=1, initial=0) >= iou).sum()) for n, g in gt.items())
    return hits / sum(len(g) for g in gt.values())


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _tensor(image: np.ndarray, long_side: int) -> np.ndarray:
    geo = input_geometry(image.shape[1], image.shape[0], long_side)
    x = np.zeros((1, 3, geo.pad_h, geo.pad_w), np.float32)
    preprocess_bgr(image, geo, NANODET, x[0])
    return x


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("long_side", [416, 640])
def test_parity_with_reference_on_real_frames(nanodet_onnx: Path, shared_data: Path, penn, long_side: int) -> None:
    cctv = shared_data / "cctv"
    images = video_frames(cctv / "pets09_s2l1" / "video.mp4", [0, 150]) + video_frames(cctv / "tud_campus" / "video.mp4", [35])
    images += [penn[0]["FudanPed00001"], penn[0]["PennPed00026"]]
    ours, ref = _session(nanodet_onnx), _session(shared_data / "models" / "nanodet_g_reference.onnx")
    worst, person = 0.0, 0.0
    for image in images:
        x = _tensor(image, long_side)
        got, want = ours.run(OUTPUTS, {"input_1:0": x}), ref.run(OUTPUTS, {"input_1:0": x})
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            worst = max(worst, float(np.abs(g - w).max()))
        person = max(person, *(float(g[0, :, 0].max()) for g in got[:3]))
    print(f"\nparity L={long_side}: max |ours - reference| = {worst:.3g} over {len(images)} frames x 6 outputs")
    assert person > 0.5, "no confident person on frames full of people: preprocessing broken?"
    assert worst <= 1e-4


def test_batch_of_two_equals_two_single_runs(nanodet_onnx: Path, shared_data: Path) -> None:
    session = _session(nanodet_onnx)
    assert isinstance(session.get_inputs()[0].shape[0], str), "batch must be dynamic"
    a, b = video_frames(shared_data / "cctv" / "pets09_s2l1" / "video.mp4", [10, 200])
    xa, xb = _tensor(a, 416), _tensor(b, 416)
    both = session.run(OUTPUTS, {"input_1:0": np.concatenate([xa, xb])})
    for k, x in enumerate((xa, xb)):
        single = session.run(OUTPUTS, {"input_1:0": x})
        for s, t in zip(single, both, strict=True):
            np.testing.assert_allclose(t[k : k + 1], s, atol=1e-5)


def test_cpu_detector_runs_one_picture_at_a_time_with_the_same_boxes(nanodet_onnx: Path, shared_data: Path) -> None:
    """ONNX Runtime's CPU provider gets one picture per run by default (a batch's activations
    stay in its arena; engines.detector.CPU_MAX_BATCH); frames given together still get exactly
    the boxes of a batched run, and an explicit max_batch is honoured."""
    frames = [i420_frame(f) for f in video_frames(shared_data / "cctv" / "pets09_s2l1" / "video.mp4", [10, 150, 290])]
    one = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1)
    many = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1, max_batch=4)
    assert isinstance(one, OrtDetector) and isinstance(many, OrtDetector)
    assert (one.max_batch, many.max_batch) == (1, 4)
    sizes: dict[str, list[int]] = {"one": [], "many": []}
    for name, det in (("one", one), ("many", many)):
        run = det.run
        det.run = lambda batch, run=run, name=name: sizes[name].append(len(batch)) or run(batch)  # type: ignore[method-assign]
    got_one, got_many = one.detect_yuv(frames), many.detect_yuv(frames)
    assert sizes == {"one": [1, 1, 1], "many": [3]}
    assert sum(len(b) for b in got_one) >= 3, "PETS frames full of people: nobody found?"
    for a, b in zip(got_one, got_many, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_models_list_and_resolve(model_cache: Path, nanodet_onnx: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(model_cache))
    assert main(["models", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("nanodet"))
    assert line.split("boxes", 1)[1].strip().startswith("cached"), line  # then what it says of the INT8 copy
    assert resolve_detector("nanodet").onnx_path == nanodet_onnx  # by name, from the cache, no pull
    assert resolve_detector(str(nanodet_onnx)).spec is NANODET  # by path
    with pytest.raises(ModelError, match="not a nanodet detector"):
        resolve_detector(str(shared_data / "models" / "selfie_segmentation_reference.onnx"))
    with pytest.raises(ModelError, match="unknown detector"):
        resolve_detector("yolo")


def test_cuda_without_a_gpu_build_is_a_clear_error(nanodet_onnx: Path) -> None:
    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers")
    with pytest.raises(ModelError, match="device 'cuda' requested"):
        create_detector(str(nanodet_onnx), "cuda")


# --------------------------------------------------------------------------- detection


def test_boxes_find_the_pennfudan_people(detector: OrtDetector, penn) -> None:
    images, gt = penn
    found = dict(zip(images, detector.detect_yuv([i420_frame(im) for im in images.values()]), strict=True))
    recall = _recall(found, gt)
    print(f"\npennfudan recall (IoU>=0.5, score>=0.2) on {len(gt)} images: {recall:.3f}")
    assert recall >= 0.9
    for boxes in found.values():
        assert boxes.dtype == np.float32 and boxes.shape[1] == 5 and (boxes[:, 4] >= 0.2).all()


def test_i420_path_agrees_with_bgr_path(detector: OrtDetector, penn) -> None:
    images, _ = penn
    names = list(images)[:4]
    yuv = detector.detect_yuv([i420_frame(images[n]) for n in names])
    bgr = detector.detect_bgr([images[n] for n in names])
    for n, a, b in zip(names, yuv, bgr, strict=True):
        sa, sb = a[a[:, 4] >= 0.5], b[b[:, 4] >= 0.5]
        assert len(sa) and len(sb), n
        assert (_iou(sa[:, :4], b[:, :4]).max(axis=1) >= 0.8).all(), n
        assert (_iou(sb[:, :4], a[:, :4]).max(axis=1) >= 0.8).all(), n


def test_frames_of_different_sizes_in_one_call(detector: OrtDetector, penn, shared_data: Path) -> None:
    images, gt = penn
    pets = video_frames(shared_data / "cctv" / "pets09_s2l1" / "video.mp4", [0])[0]
    frames = [i420_frame(images["FudanPed00001"]), i420_frame(pets), i420_frame(images["FudanPed00002"])]
    out = detector.detect_yuv(frames)
    alone = [detector.detect_yuv([f])[0] for f in frames]
    for a, b in zip(out, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert _recall({"FudanPed00001": out[0]}, {"FudanPed00001": gt["FudanPed00001"]}) == 1.0


def test_tiles_find_the_people_of_an_upscaled_frame(nanodet_onnx: Path, penn) -> None:
    images, gt = penn
    det = create_detector(str(nanodet_onnx), "cpu", long_side=320, tiles="on", tile_size=640, threads=1)
    assert isinstance(det, OrtDetector)
    names = ["FudanPed00001", "FudanPed00007", "PennPed00026"]
    big = [cv2.resize(images[n], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR) for n in names]
    assert all(len(det._parts(b.shape[1], b.shape[0])[1]) >= 4 for b in big), "expected a grid of tiles"
    found = dict(zip(names, det.detect_yuv([i420_frame(b) for b in big]), strict=True))
    recall = _recall(found, {n: gt[n] * 2 for n in names})
    plain = create_detector(str(nanodet_onnx), "cpu", long_side=320, tiles="off", threads=1)
    base = _recall(dict(zip(names, plain.detect_yuv([i420_frame(b) for b in big]), strict=True)), {n: gt[n] * 2 for n in names})
    print(f"\n2x upscaled pennfudan at long side 320: recall {recall:.3f} with tiles, {base:.3f} without")
    assert recall >= 0.9 and recall >= base


def test_normalisation_plane_by_plane_equals_the_numpy_formula(penn) -> None:
    """The OpenCV normalisation writes exactly ``(bgr - mean) / std`` as CHW into the top-left of the
    input, and leaves the pad as it was (zero: the mean colour after normalisation)."""
    from privacy_filter.engines.detector import _normalise_into

    images, _ = penn
    bgr = cv2.resize(images["FudanPed00001"], (416, 300))
    mean, inv_std = NANODET.normalisation_arrays()
    out = np.zeros((3, 320, 416), np.float32)
    _normalise_into(bgr, out, mean, inv_std)
    expected = ((bgr.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1)
    np.testing.assert_array_equal(out[:, :300, :], expected)
    assert not out[:, 300:, :].any()


def test_reused_input_batch_is_zeroed_and_per_thread(detector: OrtDetector, penn) -> None:
    """The input batch is reused per thread; a frame with a shorter picture in the same padded
    shape must not see the previous frame's rows in its pad: its boxes equal a fresh engine's."""
    import threading

    images, _ = penn
    a = detector._batch_buffer((1, 3, 64, 64))
    a.fill(1.0)
    b = detector._batch_buffer((1, 3, 64, 64))
    assert b is a and not b.any()
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(detector._batch_buffer((1, 3, 64, 64))))
    t.start()
    t.join()
    assert other[0] is not a
    img = images["FudanPed00002"]
    tall = i420_frame(cv2.resize(img, (1920, 1100)))  # 640x366 in a 640x384 input
    wide = i420_frame(cv2.resize(img, (1920, 1080)))  # 640x360 in the same input shape
    detector.detect_yuv([tall])
    after = detector.detect_yuv([wide])[0]
    fresh = create_detector(f"nanodet:{detector.onnx_path}", "cpu", threads=1).detect_yuv([wide])[0]
    assert len(after)
    np.testing.assert_array_equal(after, fresh)
