"""The device contract (issue 11, "Device contract"): segmentation and effects devices are separate.

* ``auto`` is resolved per component, each with one log line saying what it chose and why;
* ``--device auto`` with the CPU build of ONNX Runtime and a working CUDA device gives CPU
  segmentation plus CUDA effects; with no working device, everything on the CPU;
* ``--device cuda`` with no usable device is one clear error at start, in ``process`` and ``run``;
* ``--device auto --model x.engine`` falls back to the engine's source ONNX when TensorRT is absent.

"A CUDA device works" is simulated by patching the availability probe
(``effects.cuda.cuda_unavailable_reason``) and running the CUDA effects on the host emulator:
nothing here ran on a GPU.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from privacy_filter.cli import main
from privacy_filter.config import stream_config
from privacy_filter.models.registry import ResolvedModel
from privacy_filter.pipeline import plan_from_stream_config, run_process
from support.media_clips import make_av_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_av_clip(tmp_path_factory.mktemp("dev") / "clip.mp4", frames=4, size=(160, 96), audio=False)


def _real_reason() -> str | None:
    from privacy_filter.gpu.effects import cuda_unavailable_reason

    return cuda_unavailable_reason()


def _plan(device: str, model: Any, **over: Any) -> Any:
    plan = plan_from_stream_config(stream_config("in", "out", overrides={"device": device, "effect": {"kind": "fill"}, **over}))
    plan.model = model
    return plan


@pytest.fixture
def working_cuda_emulated(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Pretend the probe passed; CUDA effects run on the host emulator.  Returns the effects made."""
    from privacy_filter.gpu import effects as cuda
    from support.gpu_emulation import EmulatedRuntime

    made: list[Any] = []
    shared = EmulatedRuntime()  # the stage's one runtime (one stream)

    def create(effect: Any, mask: Any, runtime: Any = None) -> Any:
        fx = cuda.CudaStreamEffect(effect, mask, runtime=runtime or shared)
        made.append(fx)
        return fx

    monkeypatch.setattr(cuda, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(cuda, "create_stream_effect", create)
    monkeypatch.setattr(cuda.StageDevice, "create", classmethod(lambda cls, device=0: cls(shared)))
    return made


def _device_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(("segmentation device", "effects device"))]


@pytest.mark.emulated_gpu
def test_auto_with_cpu_onnxruntime_and_a_working_device_is_cpu_segmentation_and_cuda_effects(
    clip: Path,
    tmp_path: Path,
    selfie_model: ResolvedModel,
    working_cuda_emulated: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import onnxruntime as ort

    if set(ort.get_available_providers()) & {"CUDAExecutionProvider", "TensorrtExecutionProvider"}:
        pytest.skip("this is the GPU build of ONNX Runtime")
    with caplog.at_level(logging.INFO, logger="privacy_filter"):
        rep = run_process(str(clip), str(tmp_path / "o.mkv"), _plan("auto", selfie_model), progress=False)
    assert rep.frames_out == rep.frames_in == 4 and rep.frames_covered_whole == 0
    assert len(working_cuda_emulated) == 1  # the effects are the CUDA backend
    lines = _device_lines(caplog)
    assert len(lines) == 2, lines
    seg, fx = sorted(lines, key=lambda s: not s.startswith("segmentation"))
    assert seg.startswith("segmentation device: cpu") and "onnxruntime" in seg.lower()
    assert fx.startswith("effects device: cuda")


def test_auto_without_a_working_device_is_all_cpu_with_one_line_per_component(clip: Path, tmp_path: Path, selfie_model: ResolvedModel, caplog: pytest.LogCaptureFixture) -> None:
    reason = _real_reason()
    if reason is None:
        pytest.skip("CUDA works here")
    with caplog.at_level(logging.INFO, logger="privacy_filter"):
        rep = run_process(str(clip), str(tmp_path / "o.mkv"), _plan("auto", selfie_model), progress=False)
    assert rep.frames_out == 4 and rep.frames_covered_whole == 0
    lines = _device_lines(caplog)
    assert len(lines) == 2, caplog.text
    assert any(s.startswith("segmentation device: cpu") for s in lines), lines
    assert any(s.startswith("effects device: cpu") and reason in s for s in lines), lines


def test_device_cuda_without_a_usable_device_is_one_error_at_start_in_process(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reason = _real_reason()
    if reason is None:
        pytest.skip("CUDA works here")
    out = tmp_path / "o.mkv"
    assert main(["process", str(clip), str(out), "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and "cuda" in err[0].lower() and reason in err[0], err
    assert not out.exists()  # nothing opened, no frame processed


def test_device_cuda_without_a_usable_device_is_one_error_at_start_in_run(clip: Path, tmp_path: Path) -> None:
    reason = _real_reason()
    if reason is None:
        pytest.skip("CUDA works here")
    out = tmp_path / "o.mkv"
    cfg = {
        "streams": [{"id": "cam", "source": str(clip), "output": str(out), "device": "cuda"}],
        "supervisor": {"max_restarts": 0, "backoff_s": 0.01, "shutdown_timeout_s": 5},
        "metrics": {"dump": str(tmp_path / "metrics.json")},
    }
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(cfg))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "privacy_filter.cli", "run", str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and "cuda" in errors[0].lower() and reason in errors[0], proc.stderr[-3000:]
    assert not out.exists()
    assert time.monotonic() - t0 < 60


def test_segmentation_and_effects_devices_are_separate_settings() -> None:
    cfg = stream_config("in", "out", overrides={"device": "auto", "effects_device": "cpu"})
    assert (cfg.segmentation_device, cfg.effects_device) == (None, "cpu")
    plan = plan_from_stream_config(cfg)
    assert (plan.segmentation_device, plan.effects_device) == ("auto", "cpu")
    plan = plan_from_stream_config(stream_config("in", "out", overrides={"segmentation_device": "cuda"}))
    assert (plan.segmentation_device, plan.effects_device) == ("cuda", "cpu")


@pytest.mark.emulated_gpu
def test_auto_with_an_engine_and_no_tensorrt_falls_back_to_the_source_onnx(
    clip: Path,
    tmp_path: Path,
    selfie_model: ResolvedModel,
    working_cuda_emulated: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from privacy_filter.gpu.tensorrt.sidecar import SIDECAR_FORMAT, sidecar_path

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT absent even where it is installed
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a plan")
    sidecar_path(engine).write_text(
        json.dumps(
            {
                "format": SIDECAR_FORMAT,
                "tensorrt_version": "10.0.0",
                "gpu": "unknown",
                "precision": "fp16",
                "max_batch": 1,
                "onnx": str(selfie_model.onnx_path),
                "onnx_sha256": "",
                "built_utc": "",
                "spec": selfie_model.spec.model_dump(mode="json"),
            }
        )
    )
    with caplog.at_level(logging.INFO, logger="privacy_filter"):
        rep = run_process(str(clip), str(tmp_path / "o.mkv"), _plan("auto", str(engine)), progress=False)
    assert rep.frames_out == 4 and rep.frames_covered_whole == 0
    seg = [s for s in _device_lines(caplog) if s.startswith("segmentation")]
    assert len(seg) == 1 and seg[0].startswith("segmentation device: cpu") and "TensorRT" in seg[0], caplog.text


# --------------------------------------------------------------------------- the availability probe


@pytest.fixture
def device_without_headers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """A host where the driver answers and NVRTC loads, but CuPy's run-time compile fails the way a
    pip-only install without CUDA headers does.  Returns the (code, options) RawModule was given."""
    cupy = pytest.importorskip("cupy")
    from cupy.cuda import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"NVRTC is not loadable here ({exc})")
    seen: list[tuple[str, tuple[str, ...]]] = []

    class NoHeaders:
        def __init__(self, code: str, options: tuple[str, ...] = (), **_: Any) -> None:
            seen.append((code, tuple(options)))
            raise RuntimeError('catastrophic error: cannot open source file "cuda_fp16.h"')

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 1)
    monkeypatch.setattr(cupy, "RawModule", NoHeaders)
    return seen


def test_the_probe_compiles_and_launches_through_the_production_path(device_without_headers: list[Any]) -> None:
    from privacy_filter.gpu import effects as cuda

    reason = cuda.cuda_unavailable_reason()
    assert reason is not None and "cuda_fp16.h" in reason and "docs/gpu.md" in reason
    assert len(device_without_headers) == 1
    code, options = device_without_headers[0]
    assert "__global__" in code and options == tuple(cuda.NVRTC_OPTIONS)


def test_a_host_whose_compile_fails_gets_cpu_effects_under_auto_and_an_error_under_cuda(device_without_headers: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    from privacy_filter.backends import DeviceError, resolve_devices

    with caplog.at_level(logging.INFO, logger="privacy_filter"):
        assert resolve_devices("auto", segmentation=False).effects == "cpu"
    assert "effects device: cpu (auto: CUDA unavailable: the probe kernel did not compile" in caplog.text
    with pytest.raises(DeviceError, match="cuda_fp16.h"):
        resolve_devices("cpu", effects_device="cuda")
