"""TensorRT engine glue against a fake of the documented TensorRT/CuPy API (tests/fake_tensorrt.py).

These tests do NOT exercise real TensorRT, a GPU, or CuPy device memory: TensorRT cannot be
installed here.  They prove that the glue
- calls the documented build API in the right way for TensorRT 10 and 11 (network flags, the
  spec's input name and shapes in the optimization profile, workspace limit, FP16 only on 10,
  INT8 through a cache-only calibrator only on 10, refused on 11, timing cache persisted);
- reads the output dtype from the engine at run time (INT32 and INT64 argmax ids);
- moves data correctly: the fake's ``execute_async_v3`` runs the engine's ONNX with ONNX Runtime
  on the numpy buffers behind the fake device pointers, so the maps the glue decodes are compared
  with the project's ONNX Runtime engine on real images (exact equality expected);
- turns every failure (no TensorRT, parser errors, failed build, other TensorRT version, missing
  sidecar, bad calibration cache) into one error naming the problem.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.cli import main as cli_main
from privacy_filter.engines.onnxruntime import OrtSegmenter
from privacy_filter.errors import ModelError, UserError
from privacy_filter.frames import YuvFrame
from privacy_filter.gpu.tensorrt import build as trt_build
from privacy_filter.gpu.tensorrt import loader as trt_loader
from privacy_filter.gpu.tensorrt import runtime as trt_runtime
from privacy_filter.gpu.tensorrt import sidecar as trt_sidecar
from privacy_filter.models.registry import ResolvedModel, resolve_model
from support import fake_tensorrt as fake

pytestmark = pytest.mark.mocked_tensorrt

BODYPIX = "models/bodypix_mobilenetv1_050_float_stride16.onnx"
SELFIE_REF = "models/selfie_segmentation_reference.onnx"
IMAGES = ("people_pseudo/images/101.jpg", "people_pseudo/images/1.jpg", "portrait_dev/images")


# ---------------------------------------------------------------------------------------------
# Real models shaped for the tests (built from ../shared/data, written to a temp dir)
# ---------------------------------------------------------------------------------------------


def _pssn_contract_onnx(bodypix: Path, dst: Path) -> Path:
    """An ONNX with PeopleSemSegNet's exact I/O wrapped around the real BodyPix network.

    ``input_2:0`` float32 NCHW [N,3,544,960] BGR (x-127.5)/127.5 → BGR→RGB, NHWC → BodyPix
    (RGB/127.5-1, the same normalisation) → person logits l → two-class scores [0, l] →
    ``ArgMax(axis=-1, keepdims=1)`` → ``argmax_1`` int64 NHWC [N,34,60,1], like TAO's exporter.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(bodypix))
    inner_in = m.graph.input[0].name
    inner_out = m.graph.output[0].name
    del m.graph.input[:]
    del m.graph.output[:]
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_to_rgb"))
    m.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    pre = [
        helper.make_node("Gather", ["input_2:0", "bgr_to_rgb"], ["rgb_nchw"], axis=1),
        helper.make_node("Transpose", ["rgb_nchw"], [inner_in], perm=[0, 2, 3, 1]),
    ]
    post = [
        helper.make_node("Mul", [inner_out, "zero"], ["bg_logit"]),
        helper.make_node("Concat", ["bg_logit", inner_out], ["scores"], axis=3),
        helper.make_node("ArgMax", ["scores"], ["argmax_1"], axis=-1, keepdims=1),
    ]
    nodes = pre + list(m.graph.node) + post
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.input.append(helper.make_tensor_value_info("input_2:0", TensorProto.FLOAT, ["N", 3, 544, 960]))
    m.graph.output.append(helper.make_tensor_value_info("argmax_1", TensorProto.INT64, ["N", 34, 60, 1]))
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return dst


@pytest.fixture(scope="module")
def pssn_onnx(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pssn_contract_onnx(shared_data / BODYPIX, tmp_path_factory.mktemp("pssn") / "pssn_contract.onnx")


@pytest.fixture(scope="module")
def pssn_model(pssn_onnx: Path) -> ResolvedModel:
    return resolve_model(f"peoplesemsegnet-shuffleseg:{pssn_onnx}")


@pytest.fixture(scope="module")
def selfie_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ResolvedModel:
    """The reference selfie ONNX: static batch 1, NHWC RGB/255, sigmoid output (spec YAML)."""
    d = tmp_path_factory.mktemp("selfie")
    spec = d / "selfie_ref.yaml"
    spec.write_text(
        f"onnx: {shared_data / SELFIE_REF}\n"
        "input_name: 'input_1:0'\noutput_name: activation_10\n"
        "input_layout: NHWC\nsize: [256, 256]\ncolor: rgb\nscale: 0.00392156862745098\noffset: 0\n"
        "output_kind: sigmoid\noutput_layout: NHWC\nperson_index: 0\n"
    )
    return resolve_model(str(spec))


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[np.ndarray]:
    """Three real photos of people (RGB), different sizes."""
    paths = [shared_data / "images" / IMAGES[0], shared_data / "images" / IMAGES[1]]
    paths.append(sorted((shared_data / "images" / IMAGES[2]).glob("*.jpg"))[0])
    out = []
    for p in paths:
        bgr = cv2.imread(str(p))
        assert bgr is not None, p
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


# ---------------------------------------------------------------------------------------------
# Fake installation
# ---------------------------------------------------------------------------------------------


def _build(model: ResolvedModel, out: Path, **kw) -> trt_sidecar.EngineInfo:
    return trt_build.build_engine(model.spec, model.onnx_path, out, trt_build.BuildOptions(**kw))


def _ort(model: ResolvedModel) -> OrtSegmenter:
    return OrtSegmenter(model, device="cpu", threads=1)


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def test_missing_tensorrt_is_one_clear_error(monkeypatch, pssn_model, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(UserError, match="TensorRT is not installed: pip install tensorrt-cu12"):
        trt_loader.import_tensorrt()
    rc = cli_main(["engine", "build", f"peoplesemsegnet-shuffleseg:{pssn_model.onnx_path}", "--out", str(tmp_path / "m.engine")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "TensorRT is not installed" in err and "README" in err


def test_build_trt10_fp16_profile_and_sidecar(install, pssn_model, tmp_path):
    trt = install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    info = _build(pssn_model, out, precision="fp16", max_batch=4)

    assert "create_network(0)" in trt.calls
    net, config = trt.last_build["network"], trt.last_build["config"]
    assert [t.name for t in net.inputs] == ["input_2:0"]
    # the spec's input name and NVIDIA's own profile: min 1, opt = max = --max-batch
    assert config.profiles[0].shapes == {
        "input_2:0": ((1, 3, 544, 960), (4, 3, 544, 960), (4, 3, 544, 960)),
    }
    assert config.pool_limits == {trt.MemoryPoolType.WORKSPACE: trt_build.DEFAULT_WORKSPACE_BYTES}
    assert config.flags == {"BuilderFlag.FP16"}

    side = json.loads(trt_sidecar.sidecar_path(out).read_text())
    assert side["tensorrt_version"] == "10.8.0.43"
    assert side["gpu"] == "Fake GPU H100"
    assert side["precision"] == "fp16" and side["max_batch"] == 4
    assert side["spec"]["input_name"] == "input_2:0" and side["spec"]["output_name"] == "argmax_1"
    assert info.spec == pssn_model.spec
    assert out.read_bytes().startswith(fake.MAGIC)
    # the timing cache went to the user cache dir (PRIVACY_FILTER_CACHE_DIR here), per TensorRT version
    assert (tmp_path / "cache" / "tensorrt" / "timing-10.8.0.43.cache").is_file()


def test_timing_cache_is_persisted_and_reused(install, pssn_model, tmp_path):
    install("10.8.0.43")
    cache = tmp_path / "timing.cache"
    _build(pssn_model, tmp_path / "a.engine", timing_cache=cache)
    first = cache.read_bytes()
    _build(pssn_model, tmp_path / "b.engine", timing_cache=cache)
    # the second build started from the first build's cache (the fake appends one mark per build)
    assert first.count(b"|build") == 1 and cache.read_bytes().count(b"|build") == 2


def test_build_trt11_uses_strong_typing_not_fp16_flag(install, pssn_model, tmp_path, capsys):
    trt = install("11.4.0.106")
    assert not hasattr(trt.BuilderFlag, "FP16")  # removed in 11.x: touching it would raise here
    info = _build(pssn_model, tmp_path / "pssn.engine", precision="fp16")
    assert trt.last_build["config"].flags == set()
    assert info.precision.startswith("fp32") and "AutoCast" in info.precision
    assert "ModelOpt AutoCast" in capsys.readouterr().err


def test_int8_is_refused_on_trt11(install, pssn_model, tmp_path):
    trt = install("11.4.0.106")
    cache = tmp_path / "int8.txt"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput_2:0: 3c010a14\n")
    with pytest.raises(UserError, match="INT8 calibration was removed in TensorRT 11.*ModelOpt.*Q/DQ"):
        _build(pssn_model, tmp_path / "pssn.engine", precision="int8", calib_cache=cache)
    assert "build_serialized_network" not in trt.calls


def test_int8_on_trt10_replays_the_calibration_cache(install, pssn_model, tmp_path):
    trt = install("10.8.0.43")
    cache = tmp_path / "peoplesemsegnet_shuffleseg_int8.txt"
    text = "TRT-8601-EntropyCalibration2\ninput_2:0: 3c010a14\nargmax_1: 3d8cf7a1\n"
    cache.write_text(text)
    out = tmp_path / "pssn_int8.engine"
    info = _build(pssn_model, out, precision="int8", calib_cache=cache)
    config = trt.last_build["config"]
    assert config.flags == {"BuilderFlag.INT8", "BuilderFlag.FP16"}
    assert isinstance(config.int8_calibrator, trt.IInt8EntropyCalibrator2)
    assert config.int8_calibrator.get_batch(["input_2:0"]) is None  # never calibrates from data
    plan = json.loads(out.read_bytes()[len(fake.MAGIC) :])
    assert plan["calibration_cache"] == text and info.precision == "int8"


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "needs --calib-cache"),
        ("garbage\n", "not a TensorRT calibration header"),
        ("TRT-8601-Percentile\n", "unknown calibration algorithm 'Percentile'"),
    ],
)
def test_bad_int8_requests(install, pssn_model, tmp_path, content, match):
    install("10.8.0.43")
    cache = None
    if content is not None:
        cache = tmp_path / "c.txt"
        cache.write_text(content)
    with pytest.raises(UserError, match=match):
        _build(pssn_model, tmp_path / "x.engine", precision="int8", calib_cache=cache)


def test_parser_errors_are_reported(install, pssn_model, tmp_path):
    install("10.8.0.43")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07this is not a protobuf model")
    with pytest.raises(ModelError, match=r"broken.onnx: TensorRT's ONNX parser failed: .*failed to parse ONNX file"):
        trt_build.build_engine(pssn_model.spec, broken, tmp_path / "x.engine")


def test_failed_build_is_a_clear_error(install, pssn_model, tmp_path):
    install("10.8.0.43", fail_build=True)
    out = tmp_path / "x.engine"
    with pytest.raises(ModelError, match="could not build an engine from .*fp16, batch 1..4"):
        _build(pssn_model, out)
    assert not out.exists() and not trt_sidecar.sidecar_path(out).exists()


def test_spec_input_missing_from_network(install, pssn_model, tmp_path):
    install("10.8.0.43")
    spec = pssn_model.spec.model_copy(update={"input_name": "input_1:0"})
    with pytest.raises(ModelError, match="feeds input 'input_1:0'; the parsed network has input_2:0"):
        trt_build.build_engine(spec, pssn_model.onnx_path, tmp_path / "x.engine")


def test_static_batch_model_needs_no_profile(install, selfie_model, tmp_path):
    trt = install("10.8.0.43")
    info = _build(selfie_model, tmp_path / "selfie.engine", max_batch=4)
    assert trt.last_build["config"].profiles == [] and info.max_batch == 1


# ---------------------------------------------------------------------------------------------
# Runtime: data plumbing checked against ONNX Runtime on real images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("int64_as", ["int64", "int32"])
def test_argmax_dtype_read_at_runtime_and_maps_match_ort(install, pssn_model, images, tmp_path, int64_as):
    install("10.8.0.43", int64_as=int64_as)
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=2)
    seg = trt_runtime.TensorRTSegmenter(out)
    assert seg.output.dtype == np.dtype(int64_as)  # what the engine says, not what the ONNX said
    assert seg.max_batch == 2

    got = seg.infer_rgb(images)  # 3 images, max batch 2: two executions (2 + 1)
    want = _ort(pssn_model).infer_rgb(images)
    assert [e for e in seg._context.executions] == [seg.stream.ptr, seg.stream.ptr]
    for g, w in zip(got, want):
        assert g.shape == (34, 60) and g.dtype == np.float32
        np.testing.assert_array_equal(g, w)
    # not vacuous: the photos contain people and background
    fractions = [float(g.mean()) for g in got]
    assert all(0.02 < f < 0.98 for f in fractions), fractions


def test_trt11_runtime_and_yuv_frames_match_ort(install, pssn_model, shared_data, tmp_path):
    install("11.4.0.106")
    out = tmp_path / "pssn.plan"
    _build(pssn_model, out, precision="fp32", max_batch=4)
    seg = trt_runtime.TensorRTSegmenter(out)
    import av

    frames = []
    with av.open(str(shared_data / "videos" / "one-by-one-person-detection.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in (0, 600):  # an empty room, then people in it
                h, w = f.height, f.width
                planes = f.to_ndarray(format="yuv420p")  # (H*3/2, W): Y, then U and V flattened
                u = planes[h : h + h // 4].reshape(h // 2, w // 2)
                v = planes[h + h // 4 :].reshape(h // 2, w // 2)
                frames.append(YuvFrame(planes[:h].copy(), u.copy(), v.copy(), pts=f.pts, index=i))
            if i >= 600:
                break
    got = seg.infer_yuv(frames)
    want = _ort(pssn_model).infer_yuv(frames)
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert float(got[0].mean()) == 0.0 and float(got[1].mean()) > 0.01  # not vacuous


def test_static_batch_engine_runs_one_item_at_a_time(install, selfie_model, images, tmp_path):
    install("10.8.0.43")
    out = tmp_path / "selfie.engine"
    _build(selfie_model, out)
    seg = trt_runtime.TensorRTSegmenter(out)
    got = seg.infer_rgb(images[:2])
    want = _ort(selfie_model).infer_rgb(images[:2])
    assert len(seg._context.executions) == 2
    for g, w in zip(got, want):
        assert g.shape == (256, 256)
        np.testing.assert_allclose(g, w, atol=1e-6)
        assert 0.02 < float((g > 0.5).mean()) < 0.98


def test_device_api_reads_the_output_buffer(install, pssn_model, tmp_path):
    """``run_device`` runs on what a GPU preprocessing kernel wrote into ``input_buffer``."""
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=2)
    seg = trt_runtime.TensorRTSegmenter(out)
    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, 544, 960)).astype(np.float32)
    seg.input_buffer[:1].set(batch, stream=seg.stream)  # on the engine's stream: ordered before the run
    raw_dev = seg.run_device(1)
    np.testing.assert_array_equal(raw_dev.get(stream=seg.stream), seg.run(batch))
    with pytest.raises(ValueError, match="outside the engine's 1..2"):
        seg.run_device(3)


# ---------------------------------------------------------------------------------------------
# Runtime errors
# ---------------------------------------------------------------------------------------------


def test_engine_from_another_trt_version_is_refused(install, pssn_model, tmp_path):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out)
    install("10.9.0.34")
    with pytest.raises(ModelError, match=r"built with TensorRT 10\.8\.0\.43 but this is TensorRT 10\.9\.0\.34.*rebuild"):
        trt_runtime.TensorRTSegmenter(out)


def test_engine_without_sidecar_is_refused(install, pssn_model, tmp_path):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out)
    trt_sidecar.sidecar_path(out).unlink()
    with pytest.raises(ModelError, match="no sidecar pssn.engine.json.*engine build"):
        trt_runtime.TensorRTSegmenter(out)


def test_corrupt_engine_is_refused(install, pssn_model, tmp_path):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out)
    out.write_bytes(b"not an engine")
    with pytest.raises(ModelError, match="could not deserialize this engine"):
        trt_runtime.TensorRTSegmenter(out)


def test_spec_that_does_not_match_the_engine_is_refused(install, pssn_model, tmp_path):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out)
    wrong = pssn_model.spec.model_copy(update={"output_name": "softmax_1"})
    with pytest.raises(ModelError, match="engine has no output 'softmax_1' \\(outputs: argmax_1\\)"):
        trt_runtime.TensorRTSegmenter(out, spec=wrong)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_engine_build_and_inspect(install, pssn_model, tmp_path, capsys):
    install("10.8.0.43", int64_as="int32")
    out = tmp_path / "pssn.engine"
    model = f"peoplesemsegnet-shuffleseg:{pssn_model.onnx_path}"
    assert cli_main(["engine", "build", model, "--out", str(out), "--max-batch", "3"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (fp16, batch 1..3, TensorRT 10.8.0.43, Fake GPU H100)" in text

    assert cli_main(["engine", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input  input_2:0 float32[?,3,544,960]  profile min [1, 3, 544, 960] opt [3, 3, 544, 960] max [3, 3, 544, 960]" in text
    assert "output argmax_1 int32[?,34,60,1]" in text
    assert "spec: peoplesemsegnet-shuffleseg" in text


def test_cli_rejects_unrecognisable_engine_name(install, pssn_model, tmp_path, capsys):
    install("10.8.0.43")
    rc = cli_main(["engine", "build", f"peoplesemsegnet-shuffleseg:{pssn_model.onnx_path}", "--out", str(tmp_path / "x.onnx")])
    assert rc == 2
    assert "name the engine file with one of .engine, .plan, .trt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Engine paths given as --model (what create_segmenter dispatches to)
# ---------------------------------------------------------------------------------------------


def test_engine_path_per_device(install, monkeypatch, pssn_model, images, tmp_path, caplog):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out)
    assert trt_sidecar.is_engine_path(out) and trt_sidecar.is_engine_path("x.PLAN") and not trt_sidecar.is_engine_path("x.onnx")

    seg = trt_runtime.segmenter_for_engine(out, "cuda", tiles="2x1")
    assert isinstance(seg, trt_runtime.TensorRTSegmenter) and seg.tiles is not None
    # --device cpu: the engine's source ONNX on ONNX Runtime, same spec, same maps
    cpu = trt_runtime.segmenter_for_engine(out, "cpu")
    assert isinstance(cpu, OrtSegmenter) and cpu.spec == pssn_model.spec
    np.testing.assert_array_equal(cpu.infer_rgb(images[:1])[0], trt_runtime.segmenter_for_engine(out, "cuda").infer_rgb(images[:1])[0])

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT gone
    with pytest.raises(UserError, match="TensorRT is not installed"):
        trt_runtime.segmenter_for_engine(out, "cuda")
    with caplog.at_level("WARNING"):
        auto = trt_runtime.segmenter_for_engine(out, "auto")
    assert isinstance(auto, OrtSegmenter)
    assert "instead of TensorRT: TensorRT is not installed" in caplog.text


# ---------------------------------------------------------------------------------------------
# Device path: E's preprocessing and decoding kernels (host-emulated) around the engine
# ---------------------------------------------------------------------------------------------


def _video_frames(shared_data: Path, indices: tuple[int, ...]) -> list[YuvFrame]:
    import av

    frames = []
    with av.open(str(shared_data / "videos" / "one-by-one-person-detection.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in indices:
                h, w = f.height, f.width
                planes = f.to_ndarray(format="yuv420p")
                u = planes[h : h + h // 4].reshape(h // 2, w // 2)
                v = planes[h + h // 4 :].reshape(h // 2, w // 2)
                frames.append(YuvFrame(planes[:h].copy(), u.copy(), v.copy(), pts=f.pts, index=i))
            if i >= max(indices):
                break
    return frames


@pytest.mark.emulated_gpu
@pytest.mark.parametrize("layout", ["i420", "nv12"])
def test_device_path_with_emulated_kernels(install, pssn_model, shared_data, tmp_path, layout):
    """Device frames → preprocess_yuv kernel → engine buffers → decode kernel, nothing on the host.

    The kernels are the real ``kernels/*.cu`` run under host emulation; the engine is the fake.
    Checks the glue's tables (plane addresses, pitches, colour matrix, BGR order, normalisation),
    that the kernel writes the very buffer bound to the engine input, and the int64 argmax decode.
    """
    from privacy_filter.engines import preprocess
    from privacy_filter.gpu.effects import DevicePlanes
    from support.gpu_emulation import EmulatedRuntime

    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=2)
    seg = trt_runtime.TensorRTSegmenter(out)
    rt = EmulatedRuntime()
    frames = _video_frames(shared_data, (0, 600, 700))
    dev = []
    for f in frames:
        d = DevicePlanes.allocate(rt.xp, f.width, f.height, layout)
        d.upload(rt, f.y, f.u, f.v)
        dev.append(d)

    maps = seg.infer_device(dev[:2], rt, [preprocess.frame_colorimetry(f) for f in frames[:2]])
    # The engine input the kernel wrote matches the CPU preprocessing up to 8-bit resize rounding:
    # the kernel upsamples in float, OpenCV's 8-bit INTER_LINEAR in fixed point, so a plane sample
    # can differ by 1 code (≈1.2-2.3 RGB levels after the YUV→RGB matrix; measured max 3.2, mean
    # 0.17 levels on this clip).  A wrong table (colour order, pitch, plane address, matrix,
    # normalisation) would be off by tens of levels.
    cpu = np.empty((2, 3, 544, 960), np.float32)
    for i, f in enumerate(frames[:2]):
        preprocess.frame_into(f, pssn_model.spec, cpu[i])
    # The chain ran on rt.stream (a non-blocking stream): read the engine input on that stream, not the
    # default one (reading it on the null stream is a race: the lazy-stream emulator raises).
    levels = np.abs(seg.input_buffer[:2].get(stream=rt.stream) - cpu) / 0.007843
    print(f"input diff in levels: max {levels.max():.2f}, >2 levels {np.mean(levels > 2):.4%}, mean {levels.mean():.3f}")
    assert levels.max() <= 4.0 and np.mean(levels > 2.0) <= 0.05 and levels.mean() <= 0.25
    maps += seg.infer_device(dev[2:], rt)  # a second call with a smaller batch

    want = _ort(pssn_model).infer_yuv(frames)
    rt.synchronize()  # the maps are device arrays written on rt.stream
    assert len(maps) == 3
    for m, w in zip(maps, want):
        assert isinstance(m, np.ndarray) and m.shape == (34, 60) and m.dtype == np.float32
        assert float(np.mean(m != w)) <= 0.01  # argmax may flip at a boundary pixel or two
    assert float(maps[0].mean()) == 0.0 and float(maps[1].mean()) > 0.01


def test_cli_inspect_without_tensorrt_shows_the_sidecar(install, monkeypatch, pssn_model, tmp_path, capsys):
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=2)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert cli_main(["engine", "inspect", str(out)]) == 2
    cap = capsys.readouterr()
    assert "built with TensorRT 10.8.0.43 on Fake GPU H100" in cap.out and "precision fp16, batch 1..2" in cap.out
    assert "TensorRT is not installed" in cap.err


def test_calib_cache_without_int8_is_an_error(install, pssn_model, tmp_path):
    install("10.8.0.43")
    cache = tmp_path / "c.txt"
    cache.write_text("TRT-8601-EntropyCalibration2\n")
    with pytest.raises(UserError, match="--calib-cache applies only to --precision int8"):
        _build(pssn_model, tmp_path / "x.engine", precision="fp16", calib_cache=cache)


def test_trt11_accepts_an_fp16_typed_onnx_without_warning(install, pssn_model, tmp_path, capsys):
    """An ONNX that carries FP16 weights (what ModelOpt AutoCast writes) builds as FP16 on 11.x."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(pssn_model.onnx_path))
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float16), "autocast_marker_fp16"))
    fp16 = tmp_path / "pssn_fp16.onnx"
    onnx.save(m, str(fp16))
    install("11.4.0.106")
    info = trt_build.build_engine(pssn_model.spec, fp16, tmp_path / "x.engine", trt_build.BuildOptions(precision="fp16"))
    assert info.precision == "fp16 (strongly typed ONNX)"
    assert "AutoCast" not in capsys.readouterr().err
