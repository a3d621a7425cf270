"""The CPU's INT8 copy of NanoDet (``models.quantize``): really quantized, the same people found
as the float model on real frames, made once, and refused for a model its table does not fit.

Real components throughout: the product's own conversion of the pinned tarball (``model_cache``),
ONNX Runtime's quantizer and CPU provider, frames of the shared CCTV clips and Penn-Fudan photos.
The CCTV coverage tests (test_cctv_eval_video.py) run this INT8 copy too: it is what
``precision: auto`` gives the built-in detector on the CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from privacy_filter.backends import create_detector
from privacy_filter.config import stream_config
from privacy_filter.engines.detector import OrtDetector
from privacy_filter.engines.finder import iou_matrix
from privacy_filter.errors import ConfigError, ModelError
from privacy_filter.models.quantize import int8_detector, missing_ranges, ranges_table, table_fits
from privacy_filter.models.specs import NANODET
from support.nanodet import i420_frame, video_frames

OUTPUTS = [*NANODET.score_outputs, *NANODET.box_outputs]


@pytest.fixture(scope="module")
def pair(nanodet_onnx: Path) -> tuple[OrtDetector, OrtDetector]:
    fp32 = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1, precision="fp32")
    int8 = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1, precision="int8")
    assert isinstance(fp32, OrtDetector) and isinstance(int8, OrtDetector)
    return fp32, int8


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list:  # type: ignore[type-arg]
    """People at CCTV scale (PETS, TUD) and close up (Penn-Fudan), as I420 frames."""
    cctv = shared_data / "cctv"
    out = [i420_frame(f) for f in video_frames(cctv / "pets09_s2l1" / "video.mp4", [10, 100, 200, 290])]
    out += [i420_frame(f) for f in video_frames(cctv / "tud_campus" / "video.mp4", [5, 35, 65])]
    for name in ("FudanPed00001", "FudanPed00013", "PennPed00010", "PennPed00058"):
        img = cv2.imread(str(cctv / "pennfudan" / "images" / f"{name}.jpg"))
        assert img is not None
        out.append(i420_frame(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]))
    return out


def test_auto_precision_runs_the_builtin_detector_as_int8_and_others_in_float(pair, nanodet_onnx: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    fp32, int8 = pair
    assert fp32.onnx_path == nanodet_onnx
    assert int8.onnx_path.name.endswith(".int8.onnx") and int8.onnx_path.parent == nanodet_onnx.parent / "derived"
    auto = create_detector(f"nanodet:{nanodet_onnx}", "cpu", threads=1)  # precision: auto, the config default
    assert isinstance(auto, OrtDetector) and auto.onnx_path == int8.onnx_path
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # device auto ends on the CPU here
        either = create_detector(f"nanodet:{nanodet_onnx}", "auto", threads=1)
        assert isinstance(either, OrtDetector) and either.onnx_path == int8.onnx_path
    # an independent conversion of the same network: other tensor names, so the table does not fit
    reference = shared_data / "models" / "nanodet_g_reference.onnx"
    assert not table_fits(reference)
    plain = create_detector(f"nanodet:{reference}", "cpu", threads=1)
    assert isinstance(plain, OrtDetector) and plain.onnx_path == reference


def test_int8_copy_is_quantized_except_the_output_convolutions(pair) -> None:  # type: ignore[no-untyped-def]
    _, int8 = pair
    graph = onnx.load(str(int8.onnx_path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 30 and ops.count("DequantizeLinear") >= 60, ops
    weights = {i.name: i for i in graph.initializer}
    int8_weights = [w for w in weights.values() if w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4]  # not the zero points
    assert len(int8_weights) == 34 - 3  # every Conv's weights but the three float output convolutions
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    for name in ranges_table()["float_nodes"]:
        assert weights[convs[name].input[1]].data_type == onnx.TensorProto.FLOAT, name


def test_int8_copy_finds_the_same_people_as_the_float_model(pair, frames) -> None:  # type: ignore[no-untyped-def]
    """Each person box of the float model (score >= 0.3) is found by the INT8 copy (IoU >= 0.5) and
    the reverse, on 11 real frames; the raw outputs differ, so this compares two models."""
    fp32, int8 = pair
    a, b = fp32.detect_yuv(frames), int8.detect_yuv(frames)
    matched = total = back = back_total = 0
    for fa, fb in zip(a, b, strict=True):
        strong_a, strong_b = fa[fa[:, 4] >= 0.3], fb[fb[:, 4] >= 0.3]
        total += len(strong_a)
        back_total += len(strong_b)
        if len(strong_a):
            matched += int((iou_matrix(strong_a[:, :4], fb[:, :4]).max(axis=1, initial=0) >= 0.5).sum())
        if len(strong_b):
            back += int((iou_matrix(strong_b[:, :4], fa[:, :4]).max(axis=1, initial=0) >= 0.5).sum())
    assert total >= 40, f"only {total} people found by the float model: frames without people?"
    assert matched / total >= 0.97, (matched, total)
    assert back / back_total >= 0.97, (back, back_total)
    x = np.zeros((1, 3, 384, 640), np.float32)
    x[:, :, 100:300, 200:400] = 1.5
    ra = ort.InferenceSession(str(fp32.onnx_path)).run(OUTPUTS, {NANODET.input_name: x})
    rb = ort.InferenceSession(str(int8.onnx_path)).run(OUTPUTS, {NANODET.input_name: x})
    assert any(not np.array_equal(p, q) for p, q in zip(ra, rb, strict=True))


def test_int8_copy_is_made_once_and_keyed_by_the_model(nanodet_onnx: Path, tmp_path: Path) -> None:
    first = int8_detector(nanodet_onnx, tmp_path / "derived", NANODET.input_name, required=True)
    assert first is not None and first.is_file()
    stamp = first.stat().st_mtime_ns
    again = int8_detector(nanodet_onnx, tmp_path / "derived", NANODET.input_name, required=True)
    assert again == first and first.stat().st_mtime_ns == stamp  # found, not made again
    assert sorted(p.name for p in (tmp_path / "derived").iterdir()) == [first.name]  # no work files left
    # another float model (here: the same graph with one weight changed) gets its own copy
    model = onnx.load(str(nanodet_onnx))
    w = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 0.01
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    changed = tmp_path / "nanodet.onnx"
    onnx.save(model, str(changed))
    other = int8_detector(changed, tmp_path / "derived", NANODET.input_name, required=True)
    assert other is not None and other != first


def test_int8_refuses_a_model_the_table_does_not_fit(shared_data: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.onnx"
    shutil.copy(shared_data / "models" / "nanodet_g_reference.onnx", reference)
    with pytest.raises(ModelError, match=r"INT8 calibration table .* has no range for .*precision: fp32"):
        create_detector(f"nanodet:{reference}", "cpu", precision="int8")
    assert not (tmp_path / "derived").exists() or not any((tmp_path / "derived").iterdir())
    assert int8_detector(reference, tmp_path / "derived", NANODET.input_name, required=False) is None


def test_ranges_table_covers_the_converted_graph(nanodet_onnx: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    table = ranges_table()
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(nanodet_onnx), str(pre), skip_symbolic_shape=True)
    assert missing_ranges(onnx.load(str(pre)), table) == []
    assert set(table["float_nodes"]) <= set(table["conv_nodes"])
    assert all(np.isfinite([lo, hi]).all() and lo < hi for lo, hi in table["tensors"].values())


def test_precision_is_checked_in_config() -> None:
    cfg = stream_config("in.mp4", "", preset="cctv")
    assert cfg.detector.precision == "auto"
    assert stream_config("in.mp4", "", preset="cctv", overrides={"detector": {"precision": "fp32"}}).detector.precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        stream_config("in.mp4", "", preset="cctv", overrides={"detector": {"precision": "int4"}})


def test_a_copy_that_disagrees_with_the_float_model_is_refused(nanodet_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Privacy fails closed: ranges that would make the detector blind (here every range cut to
    a hundredth, so every activation saturates) stop the start with a message, no copy is kept."""
    import privacy_filter.models.quantize as quantize

    table = ranges_table()
    assert quantize.relative_error(nanodet_onnx, create_detector(f"nanodet:{nanodet_onnx}", "cpu", precision="int8").onnx_path, NANODET.input_name) < quantize.SELF_CHECK_MAX  # type: ignore[attr-defined]
    shrunk = {**table, "tensors": {k: (lo / 100, hi / 100) for k, (lo, hi) in table["tensors"].items()}}
    monkeypatch.setattr(quantize, "ranges_table", lambda: shrunk)
    monkeypatch.setattr(quantize, "QUANTIZER_VERSION", "test-shrunk")
    with pytest.raises(ModelError, match=r"INT8 copy disagrees with the float model .*precision: fp32"):
        int8_detector(nanodet_onnx, tmp_path / "derived", NANODET.input_name, required=True)
    assert not list((tmp_path / "derived").glob("*.onnx"))
    # precision: auto runs the float model instead (the log says why)
    assert int8_detector(nanodet_onnx, tmp_path / "derived", NANODET.input_name, required=False) is None


def test_models_pull_makes_the_int8_copy_too(model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """So a first ``process`` does not pause for it, and a cache mounted read-only later has it."""
    from privacy_filter.cli import main
    from privacy_filter.models.quantize import int8_path

    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(model_cache))
    assert main(["models", "pull", "nanodet"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = int8_path(model_cache / "nanodet.onnx", model_cache / "derived")
    assert out == [f"nanodet: {model_cache / 'nanodet.onnx'}", f"nanodet (INT8 copy for the CPU): {expected}"]
    assert expected.is_file()
    assert main(["models", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("nanodet"))
    assert line.rstrip().endswith("cached, with its INT8 copy for the CPU"), line
