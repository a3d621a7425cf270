"""Stream discipline and the device-resident path (issue 11, build items 4 and 5), without a GPU.

The kernels run under host emulation on lazy streams (support.gpu_emulation / lazy_streams) and
TensorRT is the fake of support.fake_tensorrt; CupyRuntime's staging runs over the fake CuPy.
Nothing here ran on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_tensorrt_glue import _build, _video_frames, pssn_model, pssn_onnx  # noqa: F401  (fixtures)

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.gpu.effects import CudaStreamEffect, CupyRuntime, DeviceMap, PinnedStaging
from privacy_filter.gpu.tensorrt import runtime as trt_runtime
from privacy_filter.stage import FilterStage, StageStream
from support import fake_tensorrt as fake
from support.gpu_emulation import EmulatedRuntime
from support.lazy_streams import RaceError

pytestmark = [pytest.mark.emulated_gpu, pytest.mark.mocked_tensorrt]
TOL = 2  # levels: the emulated CUDA effects against each other / the CPU backend


# ------------------------------------------------------------------ one stream per stage


def _engine(install, pssn_model, tmp_path: Path, max_batch: int = 2):  # noqa: F811
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=max_batch)
    return trt_runtime.TensorRTSegmenter(out)


def test_stage_shares_one_stream_and_uses_the_device_chain(install, pssn_model, shared_data, tmp_path) -> None:  # noqa: F811
    """device cuda + a TensorRT engine: one runtime (one stream) for the engine and every effect,
    warm-up before the first frame (kernels compiled, one inference), and ``process`` takes the
    device-resident chain: its output equals the host path's within the existing tolerances."""
    frames = _video_frames(shared_data, (0, 600, 700))
    streams = {
        "a": StageStream(effect=EffectConfig(kind="pixelate"), mask=MaskConfig(dilate_px=2)),
        "b": StageStream(effect=EffectConfig(kind="blur", target="background"), mask=MaskConfig(feather_px=3)),
    }
    seg = _engine(install, pssn_model, tmp_path)
    rt = EmulatedRuntime()
    effects = {sid: CudaStreamEffect(s.effect, s.mask, rt) for sid, s in streams.items()}
    stage = FilterStage(seg, streams, device="cuda", effects=effects)
    assert stage.resident and stage.gpu.rt is rt and seg.stream is rt.stream
    assert {"mask_temporal_quantize", "preprocess_yuv", "decode_argmax_i64"} <= set(rt.launches), "warm-up"
    for fx in effects.values():
        fx.reset()

    host_seg = trt_runtime.TensorRTSegmenter(seg.path)
    host_rt = EmulatedRuntime()
    host = FilterStage(host_seg, streams, device="cpu", effects={sid: CudaStreamEffect(s.effect, s.mask, host_rt) for sid, s in streams.items()})
    assert not host.resident

    batch = [f.copy() for f in frames]
    for i, f in enumerate(batch):
        f.stream_id = "ab"[i % 2]
    host_batch = [f.copy() for f in batch]
    for f, h in zip(batch, host_batch):
        h.stream_id = f.stream_id
    launches = len(rt.launches)
    got = stage.process(batch)
    want = host.process(host_batch)
    assert rt.launches[launches:].count("preprocess_yuv") == 2, "3 frames: two engine batches (max batch 2) on the device"
    assert host_rt.launches.count("preprocess_yuv") == 0, "the host path preprocesses on the CPU"
    for g, w in zip(got, want):
        assert g.status == w.status == "filtered"
        differ = g.mask != w.mask
        assert differ.mean() <= 0.01, f"{differ.mean():.2%} of the alpha differs from the host path"
        same = ~differ
        d = np.abs(g.frame.y.astype(int) - w.frame.y.astype(int))[same]
        assert d.max() <= TOL or np.mean(d > TOL) <= 0.01


def test_device_chain_output_is_the_host_chains_for_one_frame(install, pssn_model, shared_data, tmp_path) -> None:  # noqa: F811
    """apply_device on infer_device's map = apply on infer_yuv's map (same kernels, maps within 1 %)."""
    (frame,) = _video_frames(shared_data, (600,))
    seg = _engine(install, pssn_model, tmp_path, max_batch=1)
    rt = EmulatedRuntime()
    from privacy_filter.gpu.effects import StageDevice

    dev = StageDevice(rt)
    dev.bind(seg)
    ec, mc = EffectConfig(kind="fill", color=(0, 0, 0)), MaskConfig()
    (item,) = dev.segment(seg, [frame])
    assert isinstance(item, DeviceMap)
    g = frame.copy()
    ga = dev.finish(CudaStreamEffect(ec, mc, rt), g, item)
    h = frame.copy()
    ha = CudaStreamEffect(ec, mc, EmulatedRuntime()).apply(h, trt_runtime.TensorRTSegmenter(seg.path).infer_yuv([frame])[0])
    assert np.mean(ga != ha) <= 0.01 and 0.01 < (ga > 0).mean() < 0.9
    same = ga == ha
    assert np.abs(g.y.astype(int) - h.y.astype(int))[same].max() <= TOL


@pytest.mark.parametrize("event", [True, False], ids=["event", "event-removed"])
def test_crossing_streams_is_ordered_by_an_event(install, pssn_model, tmp_path, monkeypatch, event: bool) -> None:  # noqa: F811
    """A static-batch engine zero-fills its input on its own stream; infer_device on another runtime's
    stream must wait for it (an event), or the preprocessing kernel races with the fill."""
    seg = _engine(install, pssn_model, tmp_path, max_batch=1)
    from support.lazy_streams import SCHED

    with seg.stream:  # pending work of the engine's stream on its input buffer (like the static-batch fill)
        seg.input_buffer.fill(0)
    rt = EmulatedRuntime()
    if not event:
        monkeypatch.setattr(type(rt.stream), "wait_event", lambda self, ev: None)
    from privacy_filter.gpu.effects import DevicePlanes

    y = np.full((90, 160), 100, np.uint8)
    c = np.full((45, 80), 128, np.uint8)
    with rt.stream_context():
        d = DevicePlanes.allocate(rt.xp, 160, 90)
        d.upload(rt, y, c, c)
    if event:
        (prob,) = seg.infer_device([d], rt)
        rt.synchronize()  # runs the engine stream's fill first (the event), then the chain
        assert seg.stream.done() and rt.stream.done() and SCHED.pending() == 0
        assert rt.host(prob).shape == (34, 60)
    else:
        with pytest.raises(RaceError, match="preprocess_yuv .* cupy fill"):
            seg.infer_device([d], rt)


# --------------------------------------------------------------------- pinned staging


@pytest.fixture
def fake_cupy_runtime(monkeypatch) -> CupyRuntime:
    cp, cpx = fake.make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupyx", cpx)
    fake.FakeDevice.selected.clear()
    return CupyRuntime(device=0)


@pytest.mark.parametrize("buffers", [2, 1])
def test_staging_is_double_buffered_and_waits_on_its_own_event(fake_cupy_runtime, monkeypatch, buffers: int) -> None:
    """Three uploads in a row through the same staging key: each buffer is reused only after the copy
    that read it ran (its event).  With the wait removed, a queued copy reads the next frame's bytes."""
    import threading

    rt = fake_cupy_runtime
    assert fake.FakeDevice.selected[threading.get_ident()] == 0, "device selected for this thread"
    rt.staging = PinnedStaging(sys.modules["cupy"], sys.modules["cupyx"], buffers=buffers)
    outs = [sys.modules["cupy"].empty((4, 8), np.uint8) for _ in range(3)]
    for i, o in enumerate(outs):
        rt.to_device(np.full((4, 8), i + 1, np.uint8), o)
    assert rt.stream.queue, "the copies are queued, not run"
    rt.synchronize()
    assert [int(o.view(np.ndarray)[0, 0]) for o in outs] == [1, 2, 3]

    monkeypatch.setattr(PinnedStaging, "release", lambda self, key, slot, stream: None)  # no event: no wait
    for i, o in enumerate(outs):
        rt.to_device(np.full((4, 8), 10 + i, np.uint8), o)
    rt.synchronize()
    got = [int(o.view(np.ndarray)[0, 0]) for o in outs]
    assert got != [10, 11, 12], "without the per-buffer event the reused buffer is overwritten before its copy ran"


def test_staging_is_evicted_when_the_frame_size_changes(fake_cupy_runtime) -> None:
    rt = fake_cupy_runtime
    cp = sys.modules["cupy"]
    small, large = cp.empty((4, 256), np.uint8), cp.empty((8, 512), np.uint8)
    rt.to_device(np.full((4, 200), 5, np.uint8), small)
    rt.to_device(np.zeros((8, 500), np.uint8), large)
    assert len(rt.staging) == 2
    rt.evict_staging([(4, 256)])
    assert len(rt.staging) == 1 and len(rt.stream.queue) == 1, "eviction waited for the copy that used the buffer only"
    assert int(small.view(np.ndarray)[0, 0]) == 5
    rt.staging.max_keys = 3
    for n in range(1, 6):
        rt.to_device(np.zeros((n, 8), np.uint8), cp.empty((n, 8), np.uint8))
    assert len(rt.staging) == 3, "least recently used keys beyond the bound are evicted"


def test_the_effect_evicts_the_old_sizes_staging() -> None:
    rt = EmulatedRuntime()
    evicted: list[tuple[int, ...]] = []
    rt.evict_staging = lambda shapes: evicted.extend(shapes)  # type: ignore[method-assign]
    fx = CudaStreamEffect(EffectConfig(kind="fill"), MaskConfig(), rt)
    from privacy_filter.frames import YuvFrame

    def frame(w: int, h: int) -> YuvFrame:
        return YuvFrame(np.zeros((h, w), np.uint8), np.zeros((h // 2, w // 2), np.uint8), np.zeros((h // 2, w // 2), np.uint8))

    prob = np.zeros((8, 8), np.float32)
    fx.apply(frame(64, 32), prob)
    fx.apply(frame(64, 32), prob)
    assert evicted == []
    fx.apply(frame(128, 64), prob)
    assert (32, 256) in evicted, "the old Y plane's staging goes"
