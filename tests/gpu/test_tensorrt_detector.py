"""The person detector as a TensorRT engine, against a fake of the documented TensorRT/CuPy API.

These tests do NOT exercise real TensorRT, a GPU or device memory (TensorRT cannot be installed
here): the fake's ``execute_async_v3`` runs the engine's ONNX (the NanoDet our own converter made)
with ONNX Runtime on the buffers behind the fake device pointers. They prove the glue:
- builds with a profile dynamic in batch, height and width (up to --max-side), all six outputs
  checked, and a sidecar of kind ``detector``;
- binds input and outputs whose shapes follow each frame's size, and gets the same boxes as the
  ONNX Runtime detector on real photos of people, batched and of different sizes;
- refuses what it cannot run with one error naming it: an input beyond the profile, a
  segmentation engine given as the detector (and the reverse), --max-side for a segmenter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.backends import create_detector
from privacy_filter.cli import main as cli_main
from privacy_filter.engines.detector import OrtDetector
from privacy_filter.errors import ModelError, UserError
from privacy_filter.gpu.tensorrt import build as trt_build
from privacy_filter.gpu.tensorrt import sidecar as trt_sidecar
from privacy_filter.gpu.tensorrt.detector import TensorRTDetector
from privacy_filter.models.registry import resolve_detector
from privacy_filter.models.specs import BUILTIN_SPECS

pytestmark = pytest.mark.mocked_tensorrt


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[np.ndarray]:
    """Penn-Fudan street photos (BGR) of different sizes, several people each."""
    paths = sorted((shared_data / "cctv" / "pennfudan" / "images").glob("*.png"))[:4] or sorted((shared_data / "cctv" / "pennfudan" / "images").glob("*.jpg"))[:4]
    out = [cv2.imread(str(p)) for p in paths]
    assert all(im is not None for im in out) and len({im.shape for im in out}) > 1
    return out


def _engine(nanodet_onnx: Path, out: Path, **kw) -> trt_sidecar.EngineInfo:
    resolved = resolve_detector(f"nanodet:{nanodet_onnx}")
    return trt_build.build_engine(resolved.spec, resolved.onnx_path, out, trt_build.BuildOptions(**kw))


def test_build_has_a_dynamic_profile_and_a_detector_sidecar(install, nanodet_onnx: Path, tmp_path: Path) -> None:
    trt = install()
    info = _engine(nanodet_onnx, tmp_path / "nanodet.engine", max_batch=4)
    assert info.kind == "detector" and info.max_batch == 4
    side = json.loads((tmp_path / "nanodet.engine.json").read_text())
    assert side["kind"] == "detector" and side["spec"]["name"] == "nanodet"
    assert isinstance(trt_sidecar.read_sidecar(tmp_path / "nanodet.engine").spec, type(info.spec))
    profile = trt.last_build["config"].profiles[0].shapes[info.spec.input_name]
    assert [list(s) for s in profile] == [[1, 3, 32, 32], [1, 3, 384, 640], [4, 3, 640, 640]]


def test_engine_finds_the_same_people_as_onnx_runtime(install, nanodet_onnx: Path, photos: list[np.ndarray], tmp_path: Path) -> None:
    install()
    _engine(nanodet_onnx, tmp_path / "nanodet.engine", max_batch=2)
    trt_det = TensorRTDetector(tmp_path / "nanodet.engine", long_side=416)
    ort_det = OrtDetector(resolve_detector(f"nanodet:{nanodet_onnx}"), long_side=416, threads=1)
    got, want = trt_det.detect_bgr(photos), ort_det.detect_bgr(photos)  # 4 photos: two batches of the engine's 2
    assert sum(len(b) for b in want) >= 8, "the photos show people: the comparison must compare boxes"
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-3)
    trt_det.close()


def test_an_input_beyond_the_profile_is_one_error_naming_the_fix(install, nanodet_onnx: Path, photos: list[np.ndarray], tmp_path: Path) -> None:
    install()
    _engine(nanodet_onnx, tmp_path / "nanodet.engine", max_side=320)
    det = TensorRTDetector(tmp_path / "nanodet.engine", long_side=416)
    with pytest.raises(ModelError, match=r"outside the engine's profile .* rebuild with 'privacy-filter engine build nanodet --max-side 416'"):
        det.detect_bgr(photos[:1])


def test_engines_are_refused_where_the_other_kind_belongs(install, nanodet_onnx: Path, tmp_path: Path) -> None:
    from privacy_filter.gpu.tensorrt.runtime import TensorRTSegmenter

    install()
    _engine(nanodet_onnx, tmp_path / "nanodet.engine")
    with pytest.raises(ModelError, match="is a person-detector engine .* give it as detector.name, not --model"):
        TensorRTSegmenter(tmp_path / "nanodet.engine")
    side = json.loads((tmp_path / "nanodet.engine.json").read_text())
    seg = tmp_path / "seg.engine"
    seg.write_bytes((tmp_path / "nanodet.engine").read_bytes())
    side["kind"] = "segmentation"
    side["spec"] = BUILTIN_SPECS["selfie"].model_dump(mode="json")
    (tmp_path / "seg.engine.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="is a segmentation engine .* give it as --model, not detector.name"):
        create_detector(str(seg), device="cuda")


def test_cli_builds_the_detector_engine_and_auto_falls_back_to_its_onnx_without_tensorrt(
    install, nanodet_onnx: Path, photos: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    install()
    out = tmp_path / "nanodet.engine"
    assert cli_main(["engine", "build", f"nanodet:{nanodet_onnx}", "--out", str(out), "--max-side", "640"]) == 0
    assert "use it with: detector: {name: " in capsys.readouterr().out
    assert cli_main(["engine", "build", "selfie", "--out", str(tmp_path / "s.engine"), "--max-side", "640"]) == 2
    assert "--max-side is for detector engines" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT gone: auto runs the engine's source ONNX
    det = create_detector(str(out), device="auto", long_side=416, threads=1)
    assert isinstance(det, OrtDetector) and det.onnx_path == nanodet_onnx.resolve()
    with pytest.raises(UserError, match="TensorRT is not installed"):  # cuda means TensorRT: no silent CPU run
        create_detector(str(out), device="cuda")
