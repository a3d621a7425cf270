"""Lazy-stream emulation (support.lazy_streams): stream-ordering bugs fail tests without a GPU.

Each race of issue 11 has a parametrised test with the ordered pattern (passes) and the racy
one (raises RaceError or reads stale data).  The kernels run under host emulation, TensorRT is the
fake of support.fake_tensorrt: nothing here ran on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tensorrt_glue import _build, pssn_model, pssn_onnx  # noqa: F401  (fixtures)

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.frames import YuvFrame
from privacy_filter.gpu.effects import CudaStreamEffect, DevicePlanes
from privacy_filter.gpu.model_io import decode_output
from privacy_filter.gpu.tensorrt import runtime as trt_runtime
from privacy_filter.models.specs import SELFIE
from support.gpu_emulation import EmulatedRuntime
from support.lazy_streams import SCHED, EmuEvent, EmuStream, RaceError, as_device

pytestmark = pytest.mark.emulated_gpu


# ------------------------------------------------------------------------ the scheduler itself


def test_work_runs_only_when_its_stream_is_synchronised() -> None:
    s = EmuStream(non_blocking=True)
    a = as_device(np.zeros(4, np.int32))
    SCHED.enqueue(s, "write", lambda: a.view(np.ndarray).fill(7), writes=[(a.ctypes.data, a.ctypes.data + a.nbytes)])
    assert a.view(np.ndarray).tolist() == [0, 0, 0, 0], "queued, not run"
    with pytest.raises(RaceError, match="has not written yet"):
        _ = a + 1  # a host read of pending writes
    s.synchronize()
    assert (a + 1).tolist() == [8, 8, 8, 8]


def test_an_event_orders_two_non_blocking_streams() -> None:
    s, t = EmuStream(non_blocking=True), EmuStream(non_blocking=True)
    a = as_device(np.zeros(4, np.int32))
    b = as_device(np.zeros(4, np.int32))
    ra = (a.ctypes.data, a.ctypes.data + a.nbytes)
    rb = (b.ctypes.data, b.ctypes.data + b.nbytes)
    SCHED.enqueue(s, "produce", lambda: a.view(np.ndarray).fill(3), writes=[ra])
    with pytest.raises(RaceError, match="produce on <stream"):
        SCHED.enqueue(t, "consume", lambda: None, reads=[ra], writes=[rb])
    ev = EmuEvent()
    ev.record(s)
    t.wait_event(ev)
    SCHED.enqueue(t, "consume", lambda: np.copyto(b.view(np.ndarray), a.view(np.ndarray) * 2), reads=[ra], writes=[rb])
    t.synchronize()  # runs s up to the event first
    assert b.view(np.ndarray).tolist() == [6, 6, 6, 6] and s.done()


def test_legacy_default_stream_orders_blocking_streams_only() -> None:
    a = as_device(np.zeros(4, np.int32))
    ra = (a.ctypes.data, a.ctypes.data + a.nbytes)
    blocking = EmuStream()
    SCHED.enqueue(blocking, "w", lambda: a.view(np.ndarray).fill(1), writes=[ra])
    SCHED.enqueue(SCHED.null, "r", lambda: None, reads=[ra])  # the null stream waits for blocking streams
    SCHED.null.synchronize()
    assert blocking.done()
    nb = EmuStream(non_blocking=True)
    SCHED.enqueue(nb, "w", lambda: None, writes=[ra])
    with pytest.raises(RaceError):
        SCHED.enqueue(SCHED.null, "r", lambda: None, reads=[ra])


# ---------------------------------------------------------------- the races issue 11 lists


@pytest.mark.parametrize("variant", ["ordered", "upload-on-default-stream", "read-on-default-stream"])
def test_gpu_smoke_decode_pattern(variant: str) -> None:
    """scripts/gpu_smoke.py's decode check: input uploaded and result read on the runtime's stream.

    The script used to upload on the default stream (consumed by the non-blocking stream) and read
    the result on the default stream without a synchronisation; both are races."""
    rt = EmulatedRuntime()
    spec = SELFIE.model_copy(update={"output_kind": "logits"})
    logits = np.linspace(-4, 4, 2 * 16 * 16, dtype=np.float32).reshape(2, 1, 16, 16)
    if variant == "upload-on-default-stream":
        d_logits = rt.xp.asarray(logits)  # the current stream is the default stream here
        with pytest.raises(RaceError, match="decode_logits_f32 on .* cupy.asarray"):
            decode_output(d_logits, spec, rt)
        return
    with rt.stream_context():
        d_logits = rt.to_device(logits)
    prob = decode_output(d_logits, spec, rt)
    if variant == "read-on-default-stream":
        with pytest.raises(RaceError, match="decode_logits_f32"):
            prob.get() if hasattr(prob, "get") else np.subtract(prob, 0)
        return
    got = rt.to_host(prob, np.empty(prob.shape, np.float32))
    np.testing.assert_allclose(got, 1.0 / (1.0 + np.exp(-logits[:, 0])), atol=1e-5)


@pytest.mark.mocked_tensorrt
@pytest.mark.parametrize("variant", ["engine-stream", "set-on-default-stream", "get-on-default-stream"])
def test_tensorrt_device_api_pattern(install, pssn_model, tmp_path: Path, variant: str) -> None:  # noqa: F811
    """The glue test's pattern: a batch written into ``input_buffer`` and the raw output read back
    must be on the engine's stream (or ordered with it); on the default stream they race."""
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=1)
    seg = trt_runtime.TensorRTSegmenter(out)
    batch = np.random.default_rng(0).uniform(-1, 1, (1, 3, 544, 960)).astype(np.float32)
    if variant == "set-on-default-stream":
        seg.input_buffer[:1].set(batch)
        with pytest.raises(RaceError, match="execute_async_v3 .* cupy set"):
            seg.run_device(1)
        return
    seg.input_buffer[:1].set(batch, stream=seg.stream)
    raw = seg.run_device(1)
    if variant == "get-on-default-stream":
        with pytest.raises(RaceError, match="cupy get .* execute_async_v3"):
            raw.get()
        return
    np.testing.assert_array_equal(raw.get(stream=seg.stream), seg.run(batch))


def _frame(w: int = 128, h: int = 96) -> YuvFrame:
    rng = np.random.default_rng(1)
    return YuvFrame(rng.integers(0, 256, (h, w), dtype=np.uint8), rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8), rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8))


@pytest.mark.parametrize("sync", [True, False], ids=["with-sync", "sync-removed"])
def test_removing_the_sync_before_the_host_read_fails(monkeypatch, sync: bool) -> None:
    """CupyRuntime.to_host copies on the stream and synchronises it before the host reads the staging
    buffer.  The emulator mirrors it; with that one synchronisation removed the effect's output is
    read before the kernels ran, and the test sees it."""
    rt = EmulatedRuntime()
    if not sync:

        def to_host_without_sync(dev, out):  # CupyRuntime.to_host minus self.stream.synchronize()
            src = dev[tuple(slice(0, s) for s in out.shape)]
            stage = np.empty(out.shape, out.dtype)
            SCHED.enqueue(rt.stream, "to_host (d2h)", lambda: np.copyto(stage, src), reads=[])
            out[...] = stage  # the copy has not run: stale or uninitialised bytes
            return out

        monkeypatch.setattr(rt, "to_host", to_host_without_sync)
    fx = CudaStreamEffect(EffectConfig(kind="fill", color=(0, 0, 0)), MaskConfig(), rt)
    frame = _frame()
    prob = np.zeros((24, 32), np.float32)
    prob[:, 16:] = 1.0
    alpha = fx.apply(frame, prob)
    ok = alpha[:, :60].max() == 0 and alpha[:, 68:].min() == 255 and frame.y[:, 68:].max() == 16
    assert ok == sync


@pytest.mark.mocked_tensorrt
@pytest.mark.parametrize("shared", [True, False], ids=["shared-stage-stream", "engine-own-stream"])
def test_device_chain_needs_one_stream_or_an_event(install, pssn_model, tmp_path: Path, monkeypatch, shared: bool) -> None:  # noqa: F811
    """infer_device → apply_device: preprocessing, engine, decoding and effects on the stage's one
    stream need no synchronisation.  The engine on its own stream (what a private stream per
    component gave) without an event races with the preprocessing kernel that fills its input."""
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=1)
    seg = trt_runtime.TensorRTSegmenter(out)
    rt = EmulatedRuntime()
    if not shared:
        real = seg.run_device
        monkeypatch.setattr(seg, "run_device", lambda n, stream=None: real(n, None))
    f = _frame(320, 180)
    with rt.stream_context():
        d = DevicePlanes.allocate(rt.xp, f.width, f.height, "i420")
        d.upload(rt, f.y, f.u, f.v)
    if not shared:
        with pytest.raises(RaceError, match="execute_async_v3 .* preprocess_yuv"):
            seg.infer_device([d], rt)
        return
    (prob,) = seg.infer_device([d], rt)
    fx = CudaStreamEffect(EffectConfig(kind="fill"), MaskConfig(), rt)
    alpha = fx.apply_device(d, prob)
    host = rt.to_host(alpha, np.empty((f.height, f.width), np.uint8))
    assert host.shape == (180, 320)
