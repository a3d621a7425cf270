"""Filter stage: frames from one or more streams → one batched segmentation → each stream's effect.

Privacy fails closed.  Inference runs on a worker thread and is
waited for with the tightest deadline of the streams in the batch, so a stalled
engine cannot hold frames back or let them through.  When the engine raises,
misses the deadline, is still busy with an earlier stalled call, or is not ready,
every affected frame is covered whole (``on_failure: cover``, the default) or
dropped (``drop``), and counted.  Only an explicit ``on_failure: pass`` publishes
a frame unfiltered.  Each mask is applied to the very frame it was computed from.

An engine may also answer ``CoverWhole(reason)`` for a frame instead of a map (the CCTV cover
while its motion layer learns, or after a global change): that frame is covered whole, counted
in ``frames_covered_whole`` and ``covered_whole:<reason>``, and the reason is logged once.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.frames import CoverWhole, YuvFrame
from privacy_filter.metrics import Board, Counters

log = logging.getLogger(__name__)

OnFailure = Literal["cover", "drop", "pass"]
STALL_GUARD_S = 30.0  # a stream without deadline_ms still never waits longer than this for a mask
Status = Literal["filtered", "covered", "dropped", "passed"]


@dataclass
class StageStream:
    """What the stage needs to know about one stream (a subset of the stream config)."""

    effect: EffectConfig = field(default_factory=lambda: EffectConfig())
    mask: MaskConfig = field(default_factory=lambda: MaskConfig())
    on_failure: OnFailure = "cover"
    deadline_ms: float | None = None  # None: no per-frame budget, only the stall guard

    def budget_s(self) -> float:
        """Seconds to wait for a batch: the deadline, or ``STALL_GUARD_S`` so nothing waits forever."""
        return STALL_GUARD_S if self.deadline_ms is None else self.deadline_ms / 1000.0

    @classmethod
    def from_config(cls, cfg: Any) -> StageStream:
        """From a stream config object with ``effect``, ``mask``, ``on_failure``, ``deadline_ms``."""
        kw: dict[str, Any] = {}
        for name in ("effect", "mask", "on_failure", "deadline_ms"):
            value = getattr(cfg, name, None)
            if value is not None:
                kw[name] = value
        return cls(**kw)


@dataclass
class StageResult:
    """One frame after the stage.

    ``frame`` is None when dropped.  ``mask`` is the (H, W) uint8 coverage of this
    frame (255 = covered), None when the frame was dropped or passed unfiltered.
    """

    frame: YuvFrame | None
    mask: np.ndarray | None
    status: Status
    reason: str | None = None


class EngineFailure(RuntimeError):
    """Segmentation did not produce usable masks for a batch (raised, timed out, not ready)."""


@runtime_checkable
class StatefulEngine(Protocol):
    """An engine with per-stream state across frames (the CCTV cover's held boxes and motion)."""

    def state_window(self, stream_id: str) -> int:
        """Frames the stream's state reaches back over."""
        ...

    def frames_per_call(self, stream_id: str) -> int:
        """Consecutive frames of the stream the engine would like in one call (1: any)."""
        ...


class DeviceLost(RuntimeError):
    """A sticky CUDA error: the context is unusable until the process exits.

    Not a per-frame failure: covering frames on a dead context would cover every frame for the
    rest of the run.  It propagates out of the stage, so ``process`` fails and a service stage
    exits non-zero and is restarted by its supervisor with a fresh context.
    """


#: CUDA errors after which the context is corrupted ("sticky", CUDA Runtime API docs): every later
#: call fails too.  Runtime and driver API spellings.
STICKY_CUDA_ERRORS = (
    "cudaErrorIllegalAddress",
    "cudaErrorLaunchFailure",
    "cudaErrorHardwareStackError",
    "cudaErrorIllegalInstruction",
    "cudaErrorMisalignedAddress",
    "cudaErrorInvalidAddressSpace",
    "cudaErrorInvalidPc",
    "cudaErrorECCUncorrectable",
    "cudaErrorAssert",
    "cudaErrorContextIsDestroyed",
    "CUDA_ERROR_ILLEGAL_ADDRESS",
    "CUDA_ERROR_LAUNCH_FAILED",
    "CUDA_ERROR_HARDWARE_STACK_ERROR",
    "CUDA_ERROR_ILLEGAL_INSTRUCTION",
    "CUDA_ERROR_MISALIGNED_ADDRESS",
    "CUDA_ERROR_INVALID_ADDRESS_SPACE",
    "CUDA_ERROR_INVALID_PC",
    "CUDA_ERROR_ECC_UNCORRECTABLE",
    "CUDA_ERROR_ASSERT",
    "CUDA_ERROR_CONTEXT_IS_DESTROYED",
)


def sticky_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) reports a sticky CUDA error."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        text = f"{type(e).__name__}: {e}"
        if any(code in text for code in STICKY_CUDA_ERRORS):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def cover_planes(frame: YuvFrame) -> None:
    """Last-resort whole-frame cover (black) when even the effect's own cover fails."""
    frame.y[...] = 16
    frame.u[...] = 128
    frame.v[...] = 128


class FilterStage:
    """Holds the shared segmenter and one effect per stream.

    Usage::

        stage = FilterStage(segmenter, {"cam1": StageStream(effect=..., mask=...)})
        results = stage.process([frame_a, frame_b])   # frames of any registered streams

    ``segmenter`` is anything with ``infer_yuv(list[YuvFrame]) -> list[np.ndarray]``;
    ``None`` (or ``segmenter.ready == False``) means not ready, and frames are covered.
    The stage counts its own decisions, ``frames_covered_whole`` and
    ``frames_dropped`` per stream, into ``counters`` (or an own ``Board``); frames
    in and out are counted where they enter and leave (decoder, encoder).
    """

    def __init__(
        self,
        segmenter: Any,
        streams: dict[str, StageStream],
        *,
        device: str = "cpu",
        counters: Counters | None = None,
        effects: dict[str, Any] | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.streams = dict(streams)
        self.device = device
        if counters is None:
            self.board: Board | None = Board(list(self.streams))
            counters = self.board.counters()
        else:
            self.board = None
        self.counters = counters
        self._effects: dict[str, Any] = dict(effects or {})
        # device "cuda": one StageDevice (one runtime, one CUDA stream) for the segmenter and every effect
        self.gpu: Any = None
        if device == "cuda":
            self.gpu = _stage_device(self._effects, [sid for sid in self.streams if sid not in self._effects])
        for sid, spec in self.streams.items():
            if sid not in self._effects:
                self._effects[sid] = _make_effect(spec, device, self.gpu.rt if self.gpu is not None else None)
        self.resident = False  # the device-resident chain: infer_device -> apply_device, one upload per frame
        if self.gpu is not None:
            self.gpu.bind(segmenter)
            self.resident = self.gpu.resident(segmenter, list(self._effects.values()), self.gpu.rt)
            log.info("filter stage on cuda: %s", "device-resident chain (TensorRT infer_device -> apply_device)" if self.resident else "host segmentation maps, CUDA effects")
            self.gpu.warm_up(list(self._effects.values()), segmenter if segmenter is not None and getattr(segmenter, "ready", True) else None, resident=self.resident)
        # the segmentation thread selects the stage's device too (CuPy's current device is per thread)
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment", initializer=self.gpu.select if self.gpu is not None else None)
        self._pending: cf.Future | None = None  # an earlier inference still running (stalled)
        self._lock = threading.Lock()
        self.engine_cpu_s = 0.0  # CPU seconds of the engine calls, on the pool thread (reports)
        self._logged: set[tuple[str, str]] = set()
        self._refill: dict[str, int] = {}  # per stream: frames still to cover whole while the temporal state refills

    def state_window(self, stream_id: str) -> int:
        """Frames the stream's temporal mask state spans: after losing it, this many frames must be
        segmented before a mask is again what a run without the loss would have drawn."""
        engine = self.segmenter.state_window(stream_id) if isinstance(self.segmenter, StatefulEngine) else 0
        return max(engine, self._mask_window(stream_id))

    def frames_per_call(self, stream_id: str) -> int:
        """How many consecutive frames of a file stream a caller should batch per ``segment`` call:
        the CCTV cover moves boxes between detector runs when a call ends on one."""
        return max(1, self.segmenter.frames_per_call(stream_id)) if isinstance(self.segmenter, StatefulEngine) else 1

    def _mask_window(self, stream_id: str) -> int:
        m = self.streams[stream_id].mask
        temporal = getattr(m, "temporal", "none")
        if temporal == "hold":
            return int(m.hold_frames)
        if temporal == "smooth":
            alpha = float(m.smooth_alpha)
            if alpha >= 1.0:
                return 0
            # until the lost part of the average weighs under 1 %: (1 - alpha)^n < 0.01
            return min(120, max(1, math.ceil(math.log(0.01) / math.log(1.0 - alpha))))
        return 0

    def cover_until_refilled(self, stream_id: str, frames: int | None = None) -> None:
        """The stream's temporal state was lost (a restart): segment its next frames as usual,
        so the state refills, but cover them whole (counted) until a full window has been seen."""
        n = self.state_window(stream_id) if frames is None else frames
        if n > 0:
            self._refill[stream_id] = n
        else:
            self._refill.pop(stream_id, None)

    # -- public -----------------------------------------------------------------------
    def effect(self, stream_id: str) -> Any:
        return self._effects[stream_id]

    def process(self, frames: Sequence[YuvFrame]) -> list[StageResult]:
        """Filter a batch; results are in the order of ``frames``."""
        return self.finish(frames, self.segment(frames))

    def segment(self, frames: Sequence[YuvFrame]) -> list[np.ndarray | CoverWhole] | EngineFailure:
        """First half of ``process``: the batch's probability maps, or why there are none.

        Split out so a pipeline can segment frame N+1 while frame N's effect is drawn on
        another thread; ``finish`` must then be called in frame order.
        """
        if not frames:
            return []
        for f in frames:
            if f.stream_id not in self.streams:
                raise ValueError(f"frame from unregistered stream {f.stream_id!r}; known: {sorted(self.streams)}")
        deadline_s = min(self.streams[f.stream_id].budget_s() for f in frames)
        try:
            return self._infer(list(frames), deadline_s)
        except EngineFailure as exc:
            return exc

    def finish(self, frames: Sequence[YuvFrame], probs: list[np.ndarray | CoverWhole] | EngineFailure) -> list[StageResult]:
        """Second half of ``process``: each frame's effect with its own map, or the failure policy."""
        if isinstance(probs, EngineFailure):
            return [self._fail(f, str(probs)) for f in frames]
        return [self._apply(f, p) for f, p in zip(frames, probs)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        # An engine with device resources is released explicitly (TensorRT: context, engine, runtime in
        # that order), unless a stalled call may still be using it.
        close = getattr(self.segmenter, "close", None)
        if callable(close) and (self._pending is None or self._pending.done()):
            close()

    # -- internals --------------------------------------------------------------------
    def _infer(self, frames: list[YuvFrame], deadline_s: float) -> list[np.ndarray | CoverWhole]:
        seg = self.segmenter
        if seg is None or getattr(seg, "ready", True) is False:
            raise EngineFailure("segmentation engine not ready")
        t0 = time.perf_counter()
        with self._lock:
            if self._pending is not None and not self._pending.done():
                # An earlier call overran its deadline; give it this batch's budget to finish.
                try:
                    self._pending.result(timeout=deadline_s)
                except Exception:
                    pass
                if not self._pending.done():
                    raise EngineFailure("segmentation engine still busy with a stalled call")
            self._pending = None
            if self.resident and all(f.turns == 0 for f in frames):
                fut = self._pool.submit(self._timed, self.gpu.segment, seg, frames)  # maps stay on the device (DeviceMap)
            else:
                fut = self._pool.submit(self._timed, seg.infer_yuv, frames)
            remaining = max(0.0, deadline_s - (time.perf_counter() - t0))
            try:
                probs = fut.result(timeout=remaining)
            except cf.TimeoutError:
                self._pending = fut
                raise EngineFailure(f"segmentation exceeded its deadline of {deadline_s * 1000:.0f} ms") from None
            except Exception as exc:  # the engine's own error: fail closed, keep running
                if sticky_cuda_error(exc):
                    raise DeviceLost(f"segmentation: sticky CUDA error, the context is lost: {type(exc).__name__}: {exc}") from exc
                raise EngineFailure(f"segmentation failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(probs, (list, tuple)) or len(probs) != len(frames):
            raise EngineFailure(f"segmentation returned {len(probs) if hasattr(probs, '__len__') else probs!r} maps for {len(frames)} frames")
        return list(probs)

    def _timed(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the pool thread, its CPU time added to ``engine_cpu_s``."""
        t = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.engine_cpu_s += time.thread_time() - t

    def _apply(self, frame: YuvFrame, prob: Any) -> StageResult:
        """``prob``: a host probability map, the device-resident chain's DeviceMap, or CoverWhole."""
        if isinstance(prob, CoverWhole):
            if self._refill.get(frame.stream_id, 0) > 0:  # covered whole anyway; the state has seen one more frame
                self._refill[frame.stream_id] -= 1
            return self._cover_on_purpose(frame, prob.reason)
        try:
            if self.resident and not isinstance(prob, np.ndarray):  # a DeviceMap of the device-resident chain
                mask = self.gpu.finish(self._effects[frame.stream_id], frame, prob)
            else:
                mask = self._effects[frame.stream_id].apply(frame, prob)
        except Exception as exc:
            if sticky_cuda_error(exc):
                raise DeviceLost(f"stream {frame.stream_id}: effect: sticky CUDA error, the context is lost: {type(exc).__name__}: {exc}") from exc
            return self._fail(frame, f"effect failed: {type(exc).__name__}: {exc}")
        left = self._refill.get(frame.stream_id, 0)
        if left > 0:  # the mask lacks the frames before a restart: cover whole, the state has now seen one more
            self._refill[frame.stream_id] = left - 1
            self._log_once(frame.stream_id, "restarted: temporal mask state lost until its window refills", "cover")
            mask = self._cover(frame)
            self.counters.inc(frame.stream_id, "frames_covered_whole")
            self.counters.inc(frame.stream_id, "frames_covered_after_restart")
            return StageResult(frame, mask, "covered", "temporal state refilling after a restart")
        return StageResult(frame, mask, "filtered")

    def _fail(self, frame: YuvFrame, reason: str) -> StageResult:
        sid = frame.stream_id
        policy = self.streams[sid].on_failure
        self._log_once(sid, reason, policy)
        if policy == "drop":
            self.counters.inc(sid, "frames_dropped")
            return StageResult(None, None, "dropped", reason)
        if policy == "pass":
            self.counters.inc(sid, "frames_passed_unfiltered")
            return StageResult(frame, None, "passed", reason)
        mask = self._cover(frame)
        self.counters.inc(sid, "frames_covered_whole")
        return StageResult(frame, mask, "covered", reason)

    def _cover_on_purpose(self, frame: YuvFrame, reason: str) -> StageResult:
        """The engine asked for the whole frame (e.g. the background is being learned): cover, count, log once."""
        sid = frame.stream_id
        key = (sid, f"on purpose: {reason}")
        if key not in self._logged:
            self._logged.add(key)
            log.warning("stream %s: covering frames whole: %s (counted as covered_whole:%s)", sid, reason, reason)
        mask = self._cover(frame)
        self.counters.inc(sid, "frames_covered_whole")
        self.counters.inc(sid, f"covered_whole:{reason}")
        return StageResult(frame, mask, "covered", reason)

    def _cover(self, frame: YuvFrame) -> np.ndarray:
        effect = self._effects.get(frame.stream_id)
        try:
            if effect is None:
                raise RuntimeError("no effect")
            mask = effect.cover_whole(frame)
        except Exception as exc:
            if sticky_cuda_error(exc):
                raise DeviceLost(f"stream {frame.stream_id}: cover: sticky CUDA error, the context is lost: {exc}") from exc
            log.error("stream %s: cover_whole failed (%s); blacking the frame out", frame.stream_id, exc)
            cover_planes(frame)
            mask = None
        if mask is None:
            mask = np.full((frame.height, frame.width), 255, np.uint8)
        return mask

    def _log_once(self, sid: str, reason: str, policy: str) -> None:
        key = (sid, reason.split(":")[0])
        if key not in self._logged:
            self._logged.add(key)
            action = {"cover": "covering frames whole", "drop": "dropping frames", "pass": "PASSING FRAMES UNFILTERED (on_failure: pass)"}[policy]
            log.warning("stream %s: %s; %s (counted)", sid, reason, action)


def _stage_device(effects: dict[str, Any], missing: list[str]) -> Any:
    """The stage's CUDA device: the runtime the given effects already share (tests, embedding), or a
    new one when effects must be made here; None when there is nothing on CUDA to share."""
    runtimes = {id(rt): rt for rt in (getattr(fx, "rt", None) for fx in effects.values()) if rt is not None}
    if len(runtimes) == 1:
        from privacy_filter.gpu.effects import StageDevice

        return StageDevice(next(iter(runtimes.values())))
    if missing:
        from privacy_filter.backends import create_stage_device

        return create_stage_device()
    return None


def _make_effect(spec: StageStream, device: str, runtime: Any = None) -> Any:
    """The stream's effect from the effects module.

    Raises (``ConfigError`` for an unknown device or effect) instead of returning a
    placeholder: a stream whose effect cannot be built must not start at all.
    """
    from privacy_filter.backends import create_stream_effect

    return create_stream_effect(spec.effect, spec.mask, device=device, runtime=runtime)
