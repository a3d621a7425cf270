"""``privacy-filter process``: one stream, start to finish, in one process.

decode (reader thread) → segmentation (this thread) → effect (drawer thread) →
encode (writer thread), with bounded queues between them so they overlap on separate
cores (PyAV, ONNX Runtime and OpenCV release the GIL while they work).
File sources apply backpressure, so every input frame comes out, once, with its
source timestamp.  Live sources never wait for a slow stage: the reader keeps only
the newest frames and counts the stale ones it drops.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privacy_filter.errors import UserError
from privacy_filter.frames import YuvFrame
from privacy_filter.io import Sink, Source, open_sink, open_source
from privacy_filter.io.av_sink import EncodeSettings
from privacy_filter.media import AudioPacket, SourceInfo
from privacy_filter.metrics import Board, Counters
from privacy_filter.stage import EngineFailure, FilterStage, StageStream

log = logging.getLogger(__name__)

_END = object()


@dataclass
class ProcessPlan:
    """Everything ``process`` needs for one stream, resolved from preset/config/flags."""

    stage: StageStream
    encode: EncodeSettings
    model: str | None = None
    device: str = "cpu"  # shorthand for both components (privacy_filter.backends)
    segmentation_device: str | None = None  # None: ``device``
    effects_device: str | None = None  # None: ``device``
    tiles: Any = None
    policy: str | None = None  # "live" | "file" | None (decided from the source)
    stream_id: str = "0"
    # One ONNX Runtime thread for full-frame segmentation: decode and x264 already run on the
    # other threads, and a second intra-op thread mostly spin-waits for a core (measured: same fps,
    # +40 % CPU on 2 cores).
    engine_threads: int | None = 1
    # The CCTV detector is the stage's critical path (~85 ms per 1080p frame on one core) while
    # decode and x264 leave a core partly idle, so it gets every physical core (None), as in the
    # service.  Measured, 1080p cctv, 100 frames, 3 interleaved repeats on the idle 2-core machine:
    # 10.5 -> 14.1 fps (1.34x) at the same CPU per frame (126 ms; intra-op spinning is off);
    # under load from other jobs an earlier A/B gave 0.96x.
    detector_threads: int | None = None
    # The CCTV cover (detector, motion, zones) in place of full-frame segmentation: the stream
    # config it is read from (``StreamConfig.uses_cover_engine``), or None.
    cover: Any = None
    overwrite: bool | None = None  # an existing output file: None replaces it with a warning, True quietly, False refuses (-n)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run (``run_process`` on the main thread takes both); its output
    was closed and stays playable.

    A ``KeyboardInterrupt``, so callers that do not look for it stop as before; ``report`` is
    what the run did up to the stop (the CLI prints it: a live source usually ends this way).
    """

    def __init__(self, report: ProcessReport) -> None:
        super().__init__("interrupted")
        self.report = report


@dataclass
class ProcessReport:
    """What happened, for the summary line and for tests."""

    frames_in: int = 0
    frames_out: int = 0
    frames_covered_whole: int = 0
    frames_passed_unfiltered: int = 0  # on_failure: pass published these without privacy filtering
    frames_dropped: int = 0
    stale_dropped: int = 0
    audio_packets: int = 0
    reconnects: int = 0
    frames_resized: int = 0  # pictures of another size than the stream's first, scaled to it
    pts_repaired: int = 0
    masks_written: int = 0
    bad_messages: int = 0  # malformed messages from a ZeroMQ upstream, counted and dropped
    frames_missing: int = 0  # a file that ended before its declared duration (truncated): about this many frames short
    bad_messages_by_kind: dict[str, int] = field(default_factory=dict)  # the same, by kind (protocol.md)
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # per thread: decode, stage, encode, process total
    info: SourceInfo | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- device


# --------------------------------------------------------------------------- threads


class _Reader(threading.Thread):
    """Decode into a queue; live sources drop the oldest frame rather than wait."""

    def __init__(self, decoder: Source, q: queue.Queue[Any], live: bool, counters: Counters, sid: str) -> None:
        super().__init__(name="decode", daemon=True)
        self.decoder, self.q, self.live, self.counters, self.sid = decoder, q, live, counters, sid
        self.stop = threading.Event()
        self.stale_dropped = 0
        self.lost_at_stop = 0
        self.cpu_s = 0.0
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        if not self._put(item) and isinstance(item, YuvFrame):
            self.lost_at_stop += 1  # decoded, counted in, never queued: a stop came first

    def _put(self, item: Any) -> bool:
        """Queue ``item``; False when a stop came first.  A live source's frame evicts the oldest
        queued frame rather than wait (audio and other items always wait for a slot)."""
        evict = self.live and not isinstance(item, AudioPacket)
        while not self.stop.is_set():
            if evict and self._drop_oldest_frame():
                self.stale_dropped += 1  # added to frames_dropped at the end (one writer per counter)
            try:
                # blocks only when the queue holds no frame to evict (all audio): the consumer frees a slot
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _drop_oldest_frame(self) -> bool:
        """Evict the oldest queued frame when the queue is full; audio and other items keep their order."""
        with self.q.mutex:  # the consumer takes items under the same lock
            if self.q.maxsize <= 0 or len(self.q.queue) < self.q.maxsize:
                return False
            for i, old in enumerate(self.q.queue):
                if isinstance(old, YuvFrame):
                    del self.q.queue[i]
                    self.q.not_full.notify()
                    return True
        return False

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.cpu_s = time.thread_time()
            self.decoder.close()  # here, never from another thread while a read may be in flight

    def _run(self) -> None:
        try:
            for item in self.decoder:
                if self.stop.is_set():
                    break
                if isinstance(item, YuvFrame):
                    self.counters.inc(self.sid, "frames_in")
                self.put(item)
            self.put(_END)
        except BaseException as exc:  # handed to the main thread
            self.put(_Failure(exc))


class _Consumer(threading.Thread):
    """A step after the stage: takes audio packets and (frame, payload) pairs in order until the end.

    On an error it records it (the main loop reads ``error`` and stops) and keeps draining, so the
    producer never blocks; ``done`` runs either way.
    """

    def __init__(self, name: str, q: queue.Queue[Any]) -> None:
        super().__init__(name=name, daemon=True)
        self.q = q
        self.error: BaseException | None = None
        self.cpu_s = 0.0  # this thread only: FFmpeg's and x264's own threads are not in it

    def run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is _END:
                    break
                if isinstance(item, AudioPacket):
                    self.audio(item)
                else:
                    self.frame(*item)
        except BaseException as exc:
            self.error = exc
            while self.q.get() is not _END:
                pass
        finally:
            self.cpu_s = time.thread_time()
            self.done()

    def audio(self, packet: AudioPacket) -> None:
        raise NotImplementedError

    def frame(self, frame: YuvFrame, payload: Any) -> None:
        raise NotImplementedError

    def done(self) -> None:
        """Called last, after an error too."""


class _Drawer(_Consumer):
    """Draw each frame's effect with its own mask (``FilterStage.finish``), between the stage and
    the encoder.

    A thread of its own because the encoder is the pipeline's longest step: at 1080p with the
    cctv preset x264 on one thread takes ~31 ms of wall time per frame, and the effect ~8 more
    when drawn on the same thread, which made that thread the bottleneck while the others
    waited.  Items are audio packets or (frame, probability maps | failure) pairs, in frame
    order, so each mask meets the frame it was computed from and temporal state stays ordered.
    """

    def __init__(self, q: queue.Queue[Any], out: queue.Queue[Any], stage: FilterStage) -> None:
        super().__init__("effect", q)
        self.out, self.stage = out, stage

    def audio(self, packet: AudioPacket) -> None:
        self.out.put(packet)

    def frame(self, frame: YuvFrame, probs: Any) -> None:
        (res,) = self.stage.finish([frame], probs)
        self.out.put((frame, res))

    def done(self) -> None:
        self.out.put(_END)  # the writer ends after what was drawn


class _Writer(_Consumer):
    """Encode/mux the drawn frames (and audio packets) in order, while the effect of the next
    frame is drawn and the engine segments the ones after it."""

    def __init__(self, encoder: Sink, q: queue.Queue[Any], masks: MaskWriter | None) -> None:
        super().__init__("encode", q)
        self.encoder, self.masks = encoder, masks

    def audio(self, packet: AudioPacket) -> None:
        self.encoder.write_audio(packet)

    def frame(self, frame: YuvFrame, res: Any) -> None:
        if res.frame is None:
            return
        self.encoder.write(res.frame, res.mask)  # ZeroMQ outputs send the mask along; files ignore it
        if self.masks is not None:
            mask = res.mask if res.mask is not None else np.zeros((frame.height, frame.width), np.uint8)
            self.masks.put(frame.index, mask)


class MaskWriter(threading.Thread):
    """Write masks as DIR/000000.png (frame index) in the background; PNG zlib is slow."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(name="mask-out", daemon=True)
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --mask-out folder {self.dir}: {exc}") from exc
        self.q: queue.Queue[Any] = queue.Queue(maxsize=32)
        self.written = 0
        self.error: BaseException | None = None

    def put(self, index: int, mask: np.ndarray) -> None:
        self.q.put((index, np.array(mask, np.uint8, copy=True)))

    def finish(self) -> None:
        self.q.put(_END)
        self.join()
        if self.error is not None:
            raise UserError(f"writing masks to {self.dir} failed: {self.error}")

    def run(self) -> None:
        import cv2

        while True:
            item = self.q.get()
            if item is _END:
                return
            if self.error is not None:
                continue
            index, mask = item
            path = self.dir / f"{index:06d}.png"
            try:
                if not cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                    raise OSError(f"cv2.imwrite refused {path}")
                self.written += 1
            except Exception as exc:
                self.error = exc


@dataclass
class _Failure:
    exc: BaseException


# --------------------------------------------------------------------------- the run


def run_process(
    source: str,
    output: str,
    plan: ProcessPlan,
    *,
    segmenter: Any = None,
    effects: dict[str, Any] | None = None,
    mask_out: str | None = None,
    progress: bool = True,
    max_frames: int | None = None,
    detector: Any = None,
) -> ProcessReport:
    """Filter ``source`` into ``output``.  ``segmenter=None`` builds the plan's model.

    ``effects`` ({stream_id: effect}), ``segmenter`` and the CCTV cover's ``detector`` can be
    injected (tests, the demo).
    """
    from privacy_filter.backends import resolve_devices
    from privacy_filter.config import existing_output, same_file

    if same_file(source, output):  # as ffmpeg does: encoding over the input would destroy it while reading it
        raise UserError(f"output {output} is the input file {source}; choose another output (the input would be destroyed)")
    if existing_output(output):
        if plan.overwrite is False:
            raise UserError(f"output {output} already exists and overwriting is off (-n, output.overwrite: false); remove it, or pass -y")
        if plan.overwrite is None:
            log.warning("output %s already exists and will be replaced (-y: quietly; -n: refuse)", output)
    sid = plan.stream_id
    # Before anything is opened: a device that cannot work is one error now, not covered frames later.
    devices = resolve_devices(
        plan.device, plan.segmentation_device, plan.effects_device, model=plan.model, segmentation=segmenter is None, effects=not (effects and sid in effects)
    )
    live = None if plan.policy is None else plan.policy == "live"
    board = Board([sid])
    counters = board.counters()
    # the counters go to the source too: a ZeroMQ or peer source counts what it drops (other
    # streams, other sizes, malformed messages), and the summary must include those drops
    decoder = open_source(source, stream_id=sid, audio=plan.encode.audio == "copy", live=live, counters=counters, low_memory=plan.encode.low_memory)
    info = decoder.open()
    try:
        if segmenter is None and plan.cover is not None:
            segmenter = build_cover_engine(plan, source, info, decoder.live, devices.segmentation, detector)
        if segmenter is None:
            from privacy_filter.backends import create_segmenter

            segmenter = create_segmenter(model=plan.model, device=devices.segmentation, tiles=plan.tiles, threads=plan.engine_threads)
        stage = FilterStage(segmenter, {sid: plan.stage}, device=devices.effects, counters=counters, effects=effects)
        masks = MaskWriter(mask_out) if mask_out else None
        try:
            # a ZeroMQ output keeps a ZeroMQ upstream's stream id, so the next stage sees the same stream
            encoder = open_sink(output, info.video, plan.encode, audio=info.audio_stream, audio_info=info.audio, live=decoder.live, stream_id=decoder.upstream_stream or sid)
        except BaseException:
            stage.close()
            raise
    except BaseException:
        decoder.close()
        raise
    if masks:
        masks.start()

    # Short queues: each item holds a decoded frame (3 MB at 1080p), and a file waits for us anyway.
    # Measured 1080p cctv: peak RSS -14 MB from 8 to 3; from 3 to 1, -6 MB on the 10 fps bench clip
    # and -13 MB at 25 fps, where the detector runs on every 2nd frame and the encoder sets the pace
    # so every queue is full (3 interleaved runs each, 2026-12-05), fps within noise.  Live sources
    # keep slack for network jitter.
    in_q: queue.Queue[Any] = queue.Queue(maxsize=1 if not decoder.live else 4)
    out_q: queue.Queue[Any] = queue.Queue(maxsize=1 if not decoder.live else 3)
    drawn_q: queue.Queue[Any] = queue.Queue(maxsize=1 if not decoder.live else 3)
    reader = _Reader(decoder, in_q, decoder.live, counters, sid)
    drawer = _Drawer(out_q, drawn_q, stage)
    writer = _Writer(encoder, drawn_q, masks)
    bar = _progress(progress, info, source)
    report = ProcessReport(info=info)
    t0 = time.perf_counter()
    cpu0, stage_cpu0 = time.process_time(), time.thread_time()
    if plan.encode.low_memory:
        trim_heap()
    reader.start()
    drawer.start()
    writer.start()
    failure: BaseException | None = None
    interrupted = False
    stop = _StopRequest()
    # File streams with the detector on every Nth frame: N frames per engine call, so the frames
    # between runs get boxes moved between two runs (PersonFinder.frames_per_call); audio packets
    # read meanwhile wait with them, so the writer still gets everything in order.
    per_call = stage.frames_per_call(sid)
    group: list[Any] = []

    def flush() -> None:
        frames = [g for g in group if isinstance(g, YuvFrame)]
        probs = stage.segment(frames) if frames else []
        k = 0
        while group:  # popped as handed on: a stop in between counts only what was not
            g = group.pop(0)
            if isinstance(g, YuvFrame):
                out_q.put((g, probs if isinstance(probs, EngineFailure) else probs[k : k + 1]))
                k += 1
            else:
                out_q.put(g)
        if bar is not None and frames:
            bar.update(len(frames))

    try:
        stop.install()
        n = 0
        while True:
            if stop.requested:
                raise KeyboardInterrupt
            try:
                item = in_q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                break
            if isinstance(item, _Failure):
                failure = item.exc
                break
            if writer.error is not None or drawer.error is not None:
                break
            if isinstance(item, AudioPacket):
                report.audio_packets += 1
                if group:
                    group.append(item)
                else:
                    out_q.put(item)
                continue
            group.append(item)
            n += 1
            if n % per_call == 0:
                flush()
            if max_frames is not None and n >= max_frames:
                break
        flush()  # the end (or a failed source): the frames already read are filtered, not lost
    except KeyboardInterrupt:
        log.warning("interrupted; finishing the output so that it stays playable")
        interrupted = True
    finally:
        # frames read but not yet filtered when a stop came are lost to the output: counted
        counters.inc(sid, "frames_dropped", sum(isinstance(g, YuvFrame) for g in group))
        group.clear()
        stop.uninstall()
        stage_cpu = time.thread_time() - stage_cpu0
        reader.stop.set()
        decoder.stop()  # a ZeroMQ source waiting for its upstream returns now
        # unblock the reader; frames still queued (a stop, a failure) are lost to the output: counted
        counters.inc(sid, "frames_dropped", _drain(in_q))
        out_q.put(_END)  # the drawer hands it on to the writer
        drawer.join()
        writer.join()
        reader.join(timeout=15)  # a live read returns within its read timeout; the reader closes the source
        counters.inc(sid, "frames_dropped", _drain(in_q))  # a frame the reader queued as the first drain made room
        if reader.is_alive():
            log.warning("source %s still blocked in a read; leaving it to its timeout", source)
        stage.close()
        # a ZeroMQ output tells the next stage why the stream ended
        encoder.end_reason = "error" if failure or writer.error or drawer.error else "stop" if interrupted else decoder.end_reason or "end"
        try:
            encoder.close()
        finally:
            if bar is not None:
                bar.close()
            if masks is not None:
                masks.finish()
    if failure is not None:
        raise failure
    if drawer.error is not None:
        raise drawer.error
    if writer.error is not None:
        raise writer.error
    report.seconds = time.perf_counter() - t0
    # threads of this process's own: FFmpeg's decoder and x264's worker threads are only in the total
    report.cpu_s = {"decode": reader.cpu_s, "stage": stage_cpu + stage.engine_cpu_s, "effect": drawer.cpu_s, "encode": writer.cpu_s, "total": time.process_time() - cpu0}
    counters.inc(sid, "reconnects", decoder.reconnects)
    counters.inc(sid, "frames_resized", decoder.frames_resized)
    counters.inc(sid, "frames_dropped", reader.stale_dropped + reader.lost_at_stop)
    counters.inc(sid, "frames_out", encoder.frames_out)
    snap = board.snapshot()[sid]
    report.frames_in = snap["frames_in"]
    report.frames_out = encoder.frames_out
    report.frames_covered_whole = snap["frames_covered_whole"]
    report.frames_passed_unfiltered = snap["frames_passed_unfiltered"]
    report.frames_dropped = snap["frames_dropped"]
    report.stale_dropped = reader.stale_dropped
    report.reconnects = decoder.reconnects
    report.frames_resized = decoder.frames_resized
    report.pts_repaired = encoder.pts_repaired
    report.masks_written = masks.written if masks else 0
    report.bad_messages = sum(decoder.bad.values())
    report.frames_missing = getattr(decoder, "frames_missing", 0)
    counters.inc(sid, "source_frames_missing", report.frames_missing)
    report.bad_messages_by_kind = {k: n for k, n in decoder.bad.items() if n}
    if interrupted:
        raise Interrupted(report)
    return report


class _StopRequest:
    """SIGINT/SIGTERM as a flag the frame loop reads between frames, not an exception raised wherever
    the main thread happens to be.

    A ``KeyboardInterrupt`` thrown into a queue's or a lock's internals can leave them held, and the
    clean-up after it (draining the queue, joining the threads) then waits forever: seen as a
    ``process`` that never exited after Ctrl-C under load.  A second signal stops at once.
    Installed only on the main thread (signal handlers can live nowhere else); elsewhere the
    caller's own handling is left alone.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.requested = True  # the loop logs it and closes the output


#: ``low_memory``: heap blocks this large or larger are mapped on their own and returned at free
#: (glibc's M_MMAP_THRESHOLD); a 1080p I420 picture is 3.1 MB, its Y plane alone 2.07 MB.
FRAME_MMAP_THRESHOLD = 2_500_000
PR_SET_THP_DISABLE = 41  # prctl(2)


def bound_heap(low_memory: bool = False) -> bool:
    """Two glibc malloc arenas instead of up to 8 per core: less memory held in per-thread heaps;
    with ``low_memory`` (the stream's ``output.low_memory``), whole pictures mapped on their own.

    Why: a process run allocates and frees frame-sized buffers (maps, masks, effect pictures) on
    a dozen threads (decode, stage, encode, effect helper, x264's and FFmpeg's), and each thread
    that mallocs gets its own arena whose freed blocks stay resident.  Measured on a 100-frame
    1080p ``--preset cctv`` run: peak RSS 530 → 503 MB, same CPU.

    ``low_memory``: every decoded picture is copied once (the effect draws into it, and frame
    threading shares the decoder's), and those 3.1 MB blocks, freed on another thread, fragment the
    heap.  Above ``FRAME_MMAP_THRESHOLD`` they are mapped and unmapped instead.  Measured on the
    1080p cctv benchmark clip with one x264 thread, interleaved runs (2026-12-05): peak RSS 426 →
    393-400 MB; system time ~0.7 s per 150 frames (0.5-0.7 before) once the detector's input
    batch was reused and the trim threshold set as below.  A 256 KB threshold had saved about as
    much but cost ~1.3 s per 100 frames (every plane and map mapped), and 4 MB saves nothing.
    Process-wide, so only the CLI calls it; False where this is not glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_arena_max, m_mmap_threshold, m_trim_threshold = -8, -3, -1
        # A fixed mmap threshold also stops glibc raising the trim threshold with it (to twice the
        # mmap threshold, its own rule): without that, the heap's top is returned and faulted in
        # again around every sub-threshold block (measured: 0.5 -> 5 ms for the detector's
        # normalisation, whose three 0.9 MB planes sit there).
        ok = bool(libc.mallopt(m_arena_max, 2))
        if low_memory:
            ok = bool(libc.mallopt(m_mmap_threshold, FRAME_MMAP_THRESHOLD) and libc.mallopt(m_trim_threshold, 2 * FRAME_MMAP_THRESHOLD)) and ok
            # x264 asks for transparent huge pages for its picture buffers (~120 MB at 1080p, in
            # 6 and 10 MB blocks rounded up to 2 MB pages, each resident whole once touched).
            # Without them: peak RSS -2 MiB, the same wall time (4 interleaved pairs, 2026-12-05).
            libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)  # Linux >= 3.15; ignored where it is not
        return ok
    except (OSError, AttributeError):
        return False


def trim_heap() -> None:
    """Return the heap memory freed during setup to the system, before the frame loop.

    Why: loading the models and the first pass free a few MB in the middle of the heap, which
    glibc keeps resident; the frame loop's peak then sits on top of them.  Measured with the
    cctv preset on the 300-frame 1080p clip: peak RSS -2 MiB (4 interleaved pairs).
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def build_cover_engine(plan: ProcessPlan, source: str, info: SourceInfo, live: bool, device: str, detector: Any = None) -> Any:
    """The CCTV cover engine for the plan's stream; a file source's motion background is learned first.

    The first pass seeks to frames spread over the file (``io.av_source.sample_lumas``); a source
    that cannot be sought falls back to the live behaviour (whole frames while learning).
    """
    from privacy_filter.backends import create_cover_engine
    from privacy_filter.engines.finder import CoverSettings

    rate = info.video.rate
    # grouped: process and eval-video pass a file's frames in groups of frames_per_call
    settings = CoverSettings.from_config(plan.cover, live=live, fps=float(rate) if rate else 25.0, grouped=not live)
    engine = create_cover_engine({plan.stream_id: settings}, model=plan.model, device=device, detector=detector, threads=plan.detector_threads)
    m = settings.motion
    if m.enabled and m.first_pass and not live and os.path.isfile(source):
        from privacy_filter.engines.motion import to_grid
        from privacy_filter.io.av_source import sample_lumas

        lumas = sample_lumas(source, m.first_pass_samples, reduce=to_grid(m.height))
        if lumas:
            engine.prime(plan.stream_id, lumas)
        else:
            log.info("%s: no first pass (cannot seek); the motion layer learns while covering frames whole", source)
    return engine


def _drain(q: queue.Queue[Any]) -> int:
    """Empty ``q``; the number of frames it held."""
    frames = 0
    try:
        while True:
            frames += isinstance(q.get_nowait(), YuvFrame)
    except queue.Empty:
        return frames


def _progress(enabled: bool, info: SourceInfo, source: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=info.video.frames, unit="frame", desc=os.path.basename(source) or source, dynamic_ncols=True, smoothing=0.1)


# --------------------------------------------------------------------------- CLI


def plan_from_stream_config(cfg: Any) -> ProcessPlan:
    """A ProcessPlan from a stream config object (effect, mask, output, model, on_failure ...)."""
    out = getattr(cfg, "output", None)
    return ProcessPlan(
        stage=StageStream.from_config(cfg),
        encode=EncodeSettings.from_config(out) if out is not None else EncodeSettings(),
        model=getattr(cfg, "model", None),
        device=getattr(cfg, "device", "cpu") or "cpu",
        segmentation_device=getattr(cfg, "segmentation_device", None) or getattr(cfg, "device", "cpu") or "cpu",
        effects_device=getattr(cfg, "effects_device", None) or getattr(cfg, "device", "cpu") or "cpu",
        tiles=getattr(cfg, "tiles", None),
        policy=None if getattr(cfg, "policy", "auto") == "auto" else cfg.policy,
        stream_id=str(getattr(cfg, "id", "0") or "0"),
        cover=cfg if callable(getattr(cfg, "uses_cover_engine", None)) and cfg.uses_cover_engine() else None,
        overwrite=getattr(out, "overwrite", None),
    )


def process(
    source: str,
    output: str,
    *,
    preset: str | None = None,
    config: str | None = None,
    mask_out: str | None = None,
    progress: bool = False,
    **overrides: Any,
) -> ProcessReport:
    """Filter one source into one output: what ``privacy-filter process`` does, in one call.

    ``preset`` ("cctv", "video-call") and ``config`` (a YAML file's ``defaults:``) are layered
    as on the command line; ``overrides`` are config keys, nested as in the YAML, and win over
    both (e.g. ``effect={"kind": "fill"}``, ``device="cpu"``).  Raises ``UserError`` subclasses
    (``ConfigError``, ``SourceError``, ``ModelError``) with one line naming the problem.
    """
    from privacy_filter.config import stream_config

    cfg = stream_config(source, output, preset=preset, config_path=config, overrides=overrides)
    return run_process(source, output, plan_from_stream_config(cfg), mask_out=mask_out, progress=progress)
