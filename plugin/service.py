"""``privacy-filter run CONFIG``: every stream of a config, as supervised worker processes.

Processes and sockets (ZeroMQ, ``ipc://`` in a temporary folder unless ``zmq.transport: tcp``)::

    decode:<id> ──PUSH──▶ PULL stage ──PUSH──▶ PULL encode:<id>      (one decode/encode pair per stream,
    decode:<id> ──PUSH──┘ (one shared process,  └─PUSH──▶ PULL encode:<id>   one stage for all streams)
                           batching across streams)

Receivers bind and senders connect, so a restarted sender just reconnects.  Every
message of a stream (stream-start, frames, audio, eos) goes through the stage, so
order is kept end to end.

Why the supervisor does what it does (the guarantees are in docs/service.md):

* **File streams: exactly once after a crash.**  Each encoder publishes the seq of the
  last frame it wrote in shared memory.  A restarted decoder re-opens the file and
  resumes after that frame; the encoder discards anything at or below it (frames still in
  flight from the dead decoder, counted as ``duplicates_discarded``).  A crashed stage is
  restarted together with the decoders of unfinished file streams, the same way.  A
  crashed *encoder* loses its half-written container, so its stream is restarted from
  the first frame and the output is rewritten; messages of the old decoder generation
  are discarded by ``gen``.
* **Live streams** resume from the present: frames in a dead worker are lost (the
  restart is counted), and a restarted encoder with a local file output writes a new
  file ``<name>.restart<N>.<ext>`` instead of overwriting the recording.
* **Shutdown** (SIGINT/SIGTERM to the supervisor): decoders stop reading and send
  ``eos``; it flows through the stage; encoders flush and close their containers, so
  every output plays.  Workers still running after ``shutdown_timeout_s`` are killed.
  An MP4 output is only playable once its encoder closed it (the ``moov`` index is written
  last; fragmented MP4 would avoid that but shifts B-frame timestamps), so service outputs
  should be ``.mkv`` or ``.ts``, which stay playable up to the last written cluster/packet.
* Counters live in a shared-memory ``metrics.Board`` that survives SIGKILL of any worker.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from privacy_filter.config import ServiceConfig, StreamConfig, load_service
from privacy_filter.metrics import STAGE_STREAM, UNKNOWN_STREAM, Board

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 3  # a user-fixable problem (source or sink cannot be opened): restarting will not help
EXIT_EOS_LOST = 4  # a decoder whose eos the stage never confirmed: restarted like a crash (it resumes)
POLL_MS = 200
RETRY_MS = 5  # the stage retries output waiting for a busy encoder this often


# =========================================================================== shared state


@dataclass
class Shared:
    """What every worker sees, created by the supervisor before any worker starts."""

    board: Board
    progress: Any  # RawArray('q'): per stream, seq of the last frame the encoder wrote (-1: none)
    last_pts: Any  # RawArray('q'): per stream, pts of that frame (live restarts continue after it)
    eos_gen: Any  # RawArray('q'): per stream, generation of the last eos the stage has taken in (-1: none)
    stop: Any  # multiprocessing.Event: decoders stop reading and send eos
    index: dict[str, int]  # stream id -> slot in progress


def _endpoints(cfg: ServiceConfig, ipc_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """Per stream: the stage's input (its decoder connects) and its encoder's input (the stage
    connects).  One stage input per stream lets the stage stop taking a stream whose encoder
    is behind without holding up the others."""
    z = cfg.zmq
    if z.transport == "tcp":
        stage = {s.id: f"tcp://{z.host}:{z.base_port + 2 * i}" for i, s in enumerate(cfg.streams)}
        enc = {s.id: f"tcp://{z.host}:{z.base_port + 2 * i + 1}" for i, s in enumerate(cfg.streams)}
    else:
        stage = {s.id: f"ipc://{ipc_dir}/stage-{i}.sock" for i, s in enumerate(cfg.streams)}
        enc = {s.id: f"ipc://{ipc_dir}/enc-{i}.sock" for i, s in enumerate(cfg.streams)}
    return stage, enc


def _worker_setup(role: str, log_level: int) -> tuple[dict[str, bool], Any]:
    """Signals and logging of a worker process.

    SIGINT is ignored (Ctrl-C reaches the whole process group; only the supervisor acts on
    it).  SIGTERM sets a flag the worker checks between messages: a decoder then sends eos,
    an encoder closes its container, the stage exits.
    """
    flag = {"stop": False}

    def _term(signum: int, frame: Any) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _term)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints the worker's stacks
    logging.basicConfig(level=log_level, format=f"%(levelname)s {role}: %(message)s", force=True)
    import zmq

    return flag, zmq.Context()


# =========================================================================== workers


def _video_header(info: Any) -> dict[str, Any]:
    from privacy_filter.protocol import _tb

    v = info.video
    return {
        "width": v.width,
        "height": v.height,
        "time_base": _tb(v.time_base),
        "rate": _tb(v.rate) if v.rate else None,
        "frames": v.frames,
        "duration_s": v.duration_s,
        "codec": v.codec,
        "pix_fmt": v.pix_fmt,
    }


def _audio_header(a: Any) -> dict[str, Any] | None:
    from privacy_filter.protocol import _tb, b64

    if a is None:
        return None
    return {
        "codec": a.codec,
        "rate": a.sample_rate,
        "channels": a.channels,
        "layout": a.layout,
        "format": None,
        "time_base": _tb(a.time_base),
        "extradata": b64(a.extradata),
        "bit_rate": a.bit_rate,
    }


def video_info_from(h: dict[str, Any]) -> Any:
    """``decode.VideoInfo`` from a stream-start header's ``video`` mapping."""
    from privacy_filter.decode import VideoInfo

    rate = h.get("rate")
    return VideoInfo(
        width=int(h["width"]),
        height=int(h["height"]),
        time_base=Fraction(*h["time_base"]),
        rate=Fraction(*rate) if rate else None,
        frames=h.get("frames"),
        duration_s=h.get("duration_s"),
        codec=str(h.get("codec", "")),
        pix_fmt=str(h.get("pix_fmt", "yuv420p")),
    )


def audio_info_from(h: dict[str, Any] | None) -> Any:
    """``decode.AudioInfo`` from a stream-start header's ``audio`` mapping (None: no audio)."""
    from privacy_filter.decode import AudioInfo
    from privacy_filter.protocol import unb64

    if not h:
        return None
    return AudioInfo(
        codec=str(h["codec"]),
        sample_rate=int(h["rate"]),
        channels=int(h.get("channels") or 0),
        layout=str(h.get("layout") or ""),
        time_base=Fraction(*h["time_base"]),
        extradata=unb64(h.get("extradata")),
        bit_rate=int(h.get("bit_rate") or 0),
    )


def _send_until(sock: Any, parts: list[Any], flag: dict[str, bool], shared: Shared, *, give_up_s: float) -> bool:
    """Blocking send that still notices a stop request; gives up ``give_up_s`` after one."""
    from privacy_filter.protocol import send

    stop_seen: float | None = None
    while True:
        if send(sock, parts, timeout_ms=POLL_MS):
            return True
        if flag["stop"] or shared.stop.is_set():
            stop_seen = stop_seen or time.monotonic()
            if time.monotonic() - stop_seen > give_up_s:
                return False


def decode_worker(sc: StreamConfig, endpoint: str, shared: Shared, gen: int, resume_after: int, hwm: int, give_up_s: float, log_level: int) -> None:
    """Read one source and push its stream-start, frames, audio and eos to the stage.

    ``resume_after`` is the seq of the last frame the encoder wrote (-1: none).  A file
    stream re-decodes from the start and sends only frames after it.  A live stream
    cannot rewind: it numbers its frames on from there and shifts its timestamps to
    continue after the last written one.
    """
    import zmq

    from privacy_filter.decode import AudioPacket, ReconnectPolicy, make_source, offset_in
    from privacy_filter.errors import UserError
    from privacy_filter.protocol import audio_parts, eos_parts, frame_parts, send, socket, stream_start_parts

    flag, ctx = _worker_setup(f"decode:{sc.id}", log_level)
    sid = sc.id
    counters = shared.board.counters(f"decode:{sid}")
    live = sc.is_live()
    sock = socket(ctx, zmq.PUSH, endpoint, bind=False, hwm=hwm, linger_ms=int(give_up_s * 1000))
    want_audio = sc.source.audio and sc.output.audio == "copy"
    # a file/URL decoder, an upstream ZeroMQ stage (zmq+pull/sub), or imagezmq/NetGear senders (BGR -> I420 here)
    dec: Any = make_source(sc.source.url, stream_id=sid, audio=want_audio, live=live,
                           reconnect=ReconnectPolicy(max_attempts=None, udp_buffer_s=sc.source.udp_buffer_s,
                                                     udp_max_bitrate_bps=sc.source.udp_bitrate_bps()) if live else None, counters=counters,
                           should_stop=lambda: flag["stop"] or shared.stop.is_set(), hwm=hwm)
    rc, reason, sent = EXIT_OK, "end", 0
    try:
        info = dec.open()
        start = stream_start_parts(sid, video=_video_header(info), audio=_audio_header(info.audio), gen=gen,
                                   extra={"resume_after": -1 if live else resume_after})
        _send_until(sock, start, flag, shared, give_up_s=give_up_s)
        audio_seq = -1
        reconnects = resized = 0
        seq_base = resume_after + 1 if live else 0
        pts_shift: int | None = None if live and resume_after >= 0 else 0
        v = info.video
        step = max(1, round(1 / (float(v.rate) * float(v.time_base)))) if v.rate else 1
        for item in dec:
            if flag["stop"] or shared.stop.is_set():
                reason = "stop"
                break
            if dec.reconnects != reconnects:
                counters.inc(sid, "reconnects", dec.reconnects - reconnects)
                reconnects = dec.reconnects
            if getattr(dec, "frames_resized", 0) != resized:  # a ZeroMQ source does not resize
                counters.inc(sid, "frames_resized", dec.frames_resized - resized)
                resized = dec.frames_resized
            if isinstance(item, AudioPacket):
                if pts_shift is None:
                    continue  # a live restart: the shift is known from the first video frame on
                if pts_shift and v.time_base:
                    a_shift = offset_in(pts_shift * v.time_base, item.time_base)
                    item.pts = item.pts + a_shift if item.pts is not None else None
                    item.dts = item.dts + a_shift if item.dts is not None else None
                audio_seq += 1
                if live:
                    send(sock, audio_parts(sid, audio_seq, item.data, pts=item.pts, dts=item.dts, time_base=item.time_base, duration=item.duration, keyframe=item.is_keyframe, gen=gen), block=False)
                else:
                    _send_until(sock, audio_parts(sid, audio_seq, item.data, pts=item.pts, dts=item.dts, time_base=item.time_base, duration=item.duration, keyframe=item.is_keyframe, gen=gen), flag, shared, give_up_s=give_up_s)
                continue
            if not live and item.index <= resume_after:
                continue  # already written by the encoder before a restart
            if pts_shift is None:
                last = int(shared.last_pts[shared.index[sid]])
                pts_shift = last + step - item.pts if item.pts is not None and item.pts <= last else 0
            if pts_shift and item.pts is not None:
                item.pts += pts_shift
            parts = frame_parts(item, seq=seq_base + item.index, gen=gen)
            if live:
                counters.inc(sid, "frames_in")
                if not send(sock, parts, block=False):
                    counters.inc(sid, "frames_dropped")  # the stage is behind: drop, never stall a live source
                    continue
            else:
                if not _send_until(sock, parts, flag, shared, give_up_s=give_up_s):
                    reason = "stop"
                    break
                # frames_in of a file stream = distinct source frames, however many restarts
                cur = counters.get(sid, "frames_in")
                if item.index + 1 > cur:
                    counters.inc(sid, "frames_in", item.index + 1 - cur)
            sent = item.index + 1
        if reason == "end" and (flag["stop"] or shared.stop.is_set()):
            reason = "stop"  # a live source that returned because we asked it to
        elif reason == "end" and getattr(dec, "end_reason", None) in ("stop", "error"):
            reason = dec.end_reason  # a ZeroMQ upstream's own eos reason is passed on
    except UserError as exc:
        if flag["stop"] or shared.stop.is_set():
            reason = "stop"  # e.g. a live source still connecting when the shutdown came
        else:
            log.error("stream %s: %s", sid, exc)
            rc, reason = EXIT_FATAL, "error"
    finally:
        dec.close()
    ok = _send_until(sock, eos_parts(sid, frames=max(sent, dec.frames_decoded) if reason == "end" else sent, reason=reason, gen=gen), flag, shared, give_up_s=give_up_s)
    # ZeroMQ's linger does not guarantee delivery: messages still in the kernel's socket buffer
    # when a sender exits can be discarded by the receiving side.  Stay until the stage has
    # taken the eos in; if it never does, exit non-zero so the supervisor resumes this stream.
    deadline = time.monotonic() + give_up_s
    while ok and shared.eos_gen[shared.index[sid]] < gen:
        if time.monotonic() > deadline:
            ok = False
            break
        time.sleep(0.02)
    log.info("stream %s: eos (%s) after %d frames%s", sid, reason, sent, "" if ok else " not confirmed by the stage")
    sock.close(linger=0)
    ctx.term()
    sys.exit(rc if ok or rc else EXIT_EOS_LOST)


def stage_worker(cfg: ServiceConfig, endpoints_in: dict[str, str], endpoints_out: dict[str, str], shared: Shared, log_level: int) -> None:
    """The shared filter stage: batches frames of all streams per model, applies each stream's effect.

    Each stream has its own input socket.  A message its encoder cannot take yet waits in
    that stream's queue here, and while anything waits there the stage does not read that
    stream's input: the back-pressure reaches that stream's decoder (a file waits, a live
    source drops) and no other stream is held up behind it.
    """
    import collections

    import zmq

    from privacy_filter.protocol import Receiver, frame_parts, latest_wins, send, socket
    from privacy_filter.stage import FilterStage, StageStream

    flag, ctx = _worker_setup("stage", log_level)
    counters = shared.board.counters("stage")
    streams = {s.id: s for s in cfg.streams}
    live = {s.id for s in cfg.streams if s.is_live()}
    from privacy_filter.zmq_io import is_zmq_url

    with_mask = {s.id for s in cfg.streams if is_zmq_url(s.output.url) and s.output.mask}  # their encoders publish masks
    pulls = {sid: socket(ctx, zmq.PULL, ep, bind=True, hwm=cfg.zmq.hwm) for sid, ep in endpoints_in.items()}
    push = {sid: socket(ctx, zmq.PUSH, ep, bind=False, hwm=cfg.zmq.hwm, linger_ms=1000) for sid, ep in endpoints_out.items()}
    rxs = {sid: Receiver(sock, counters=counters, fallback_stream=UNKNOWN_STREAM, known_streams=list(streams)) for sid, sock in pulls.items()}
    waiting: dict[str, collections.deque[list[Any]]] = {sid: collections.deque() for sid in push}

    # one engine per (model, device, tiles); streams sharing one are batched together
    from privacy_filter.pipeline import resolve_device

    resolved = {d: resolve_device(d) for d in {s.device for s in cfg.streams}}  # "auto" -> cuda | cpu, once
    groups: dict[tuple[str, str, str | None], list[str]] = {}
    for s in cfg.streams:
        groups.setdefault((s.model, resolved[s.device], s.tiles), []).append(s.id)
    stage_of: dict[str, FilterStage] = {}
    for (model, device, tiles), ids in groups.items():
        seg = _load_segmenter(model, device, tiles, ids)
        fs = FilterStage(seg, {sid: StageStream.from_config(streams[sid]) for sid in ids}, device=device, counters=counters)
        for sid in ids:
            stage_of[sid] = fs

    def forward(sid: str, parts: list[Any], is_frame: bool) -> None:
        """Send now, or queue behind what already waits for this stream's encoder."""
        if not waiting[sid] and send(push[sid], parts, block=False):
            return
        if sid in live and is_frame:
            counters.inc(sid, "frames_dropped")  # the encoder is behind: a live stream drops, never waits
            return
        waiting[sid].append(parts)

    def flush_waiting() -> None:
        for sid, queue in waiting.items():
            while queue and send(push[sid], queue[0], block=False):
                queue.popleft()

    batch_max = cfg.stage.batch_max
    fresh_gen: dict[str, int] = {}  # per stream: gen of its latest start from frame 0

    def run_segment(msgs: list[Any]) -> None:
        """Filter the frames of ``msgs`` in batches (per engine, <= `batch` per stream); emit all in order."""
        results: dict[int, Any] = {}
        frame_msgs = [(i, m) for i, m in enumerate(msgs) if m.kind == "frame"]
        for fs in set(stage_of.values()):
            todo = [(i, m) for i, m in frame_msgs if stage_of[m.stream_id] is fs]
            while todo:
                chunk, per = [], {}
                for i, m in todo:
                    if len(chunk) >= batch_max or per.get(m.stream_id, 0) >= streams[m.stream_id].batch:
                        break
                    chunk.append((i, m))
                    per[m.stream_id] = per.get(m.stream_id, 0) + 1
                todo = todo[len(chunk):]
                for (i, m), r in zip(chunk, fs.process([m.frame for _, m in chunk])):
                    results[i] = r
        for i, m in enumerate(msgs):
            if m.kind != "frame":
                if m.kind == "eos":
                    shared.eos_gen[shared.index[m.stream_id]] = m.gen  # the decoder may now exit
                forward(m.stream_id, list(m.parts), False)
                continue
            r = results[i]
            if r.frame is None:
                continue  # dropped by on_failure: drop (counted by the stage)
            forward(m.stream_id, frame_parts(r.frame, mask=r.mask if m.stream_id in with_mask else None, gen=m.gen), True)

    poller = zmq.Poller()
    polled: set[str] = set()
    while not flag["stop"]:
        flush_waiting()
        takes = {sid for sid in pulls if not waiting[sid]}  # streams whose encoder has room
        for sid in polled - takes:
            poller.unregister(pulls[sid])
        for sid in takes - polled:
            poller.register(pulls[sid], zmq.POLLIN)
        polled = takes
        # with output waiting, come back within RETRY_MS to flush it; otherwise wait for input
        ready = dict(poller.poll(RETRY_MS if len(takes) < len(pulls) else POLL_MS)) if takes else {}
        if not ready:
            if not takes:
                time.sleep(RETRY_MS / 1000)
            continue
        if cfg.stage.batch_wait_ms > 0:
            time.sleep(cfg.stage.batch_wait_ms / 1000)
        msgs: list[Any] = []
        for sid in sorted(takes):  # every stream with room, whether or not it was ready at the poll
            msgs += rxs[sid].drain(batch_max * 2)
        msgs, stale = latest_wins(msgs, live)
        for m in stale:
            counters.inc(m.stream_id, "frames_dropped")
        segment: list[Any] = []
        for m in msgs:
            if m.stream_id not in streams:  # a well-formed message for a stream this service does not run
                counters.inc(UNKNOWN_STREAM, "frames_dropped" if m.kind == "frame" else "bad_messages:field")
                continue
            if m.kind == "frame" and m.gen < fresh_gen.get(m.stream_id, 0):
                counters.inc(m.stream_id, "duplicates_discarded")  # a stream restarted from frame 0 since
                continue
            if m.kind == "stream-start" and m.header.get("resume_after", -1) < 0 and m.gen > fresh_gen.get(m.stream_id, -1):
                # the stream starts again from its first frame: its temporal mask state starts afresh,
                # after everything queued before this message was filtered with the old state
                run_segment(segment)
                segment = []
                fresh_gen[m.stream_id] = m.gen
                stage_of[m.stream_id].effect(m.stream_id).reset()
            segment.append(m)
        run_segment(segment)
    for fs in set(stage_of.values()):
        fs.close()
    for sock in pulls.values():
        sock.close(linger=0)
    for s in push.values():
        s.close(linger=1000)
    ctx.term()
    sys.exit(EXIT_OK)


def _load_segmenter(model: str, device: str, tiles: str | None, ids: list[str]) -> Any:
    """The engine, or None when it cannot load: the stage then covers every frame (fail closed)."""
    try:
        from privacy_filter.engines import create_segmenter

        return create_segmenter(model, device, tiles)
    except Exception as exc:  # noqa: BLE001 - any load failure must fail closed, not crash-loop
        log.error("model %r for streams %s cannot be loaded (%s); their frames will be covered whole", model, ", ".join(ids), exc)
        return None


def encode_worker(sc: StreamConfig, url: str, endpoint: str, shared: Shared, min_gen: int, hwm: int, log_level: int) -> None:
    """Receive one stream's filtered frames and audio from the stage; encode and mux them.

    Frames at or below the last written seq are discarded (resends after a decoder
    restart); so are messages of a decoder generation older than ``min_gen``.
    """
    import zmq

    from privacy_filter.decode import AudioPacket
    from privacy_filter.encode import EncodeSettings, make_sink
    from privacy_filter.errors import UserError
    from privacy_filter.protocol import Receiver, socket

    flag, ctx = _worker_setup(f"encode:{sc.id}", log_level)
    sid = sc.id
    slot = shared.index[sid]
    counters = shared.board.counters(f"encode:{sid}")
    pull = socket(ctx, zmq.PULL, endpoint, bind=True, hwm=hwm)
    rx = Receiver(pull, counters=counters, fallback_stream=sid, known_streams=[sid])
    settings = EncodeSettings.from_config(sc.output)
    enc: Any = None  # an Encoder, or a ZmqSink for zmq+push/pub outputs
    last_audio = -1
    last_audio_s: Fraction | None = None
    audio_gen = -1  # live streams: the decoder generation whose audio is being written
    live = sc.is_live()
    rc = EXIT_OK
    try:
        while not flag["stop"]:
            m = rx.recv(timeout_ms=POLL_MS)
            if m is None or m.stream_id != sid:
                continue
            if m.gen < min_gen:
                if m.kind == "frame":
                    counters.inc(sid, "duplicates_discarded")
                continue
            if m.kind == "stream-start":
                if live and m.gen > audio_gen:
                    # a restarted live decoder numbers its audio from 0 again (its timestamps
                    # continue after the last written frame): stop discarding it as resent
                    audio_gen, last_audio = m.gen, -1
                if enc is None:
                    enc = make_sink(url, video_info_from(m.header["video"]), settings,
                                    audio=audio_info_from(m.header.get("audio")) if sc.output.audio == "copy" else None,
                                    live=sc.is_live(), stream_id=sid, hwm=hwm)
            elif m.kind == "frame":
                if enc is None:
                    counters.inc(sid, "frames_dropped")
                    continue
                if m.seq <= shared.progress[slot]:
                    counters.inc(sid, "duplicates_discarded")
                    continue
                enc.write(m.frame, m.mask)  # a ZeroMQ output publishes the mask; a container ignores it
                shared.progress[slot] = m.seq
                if m.frame.pts is not None:
                    shared.last_pts[slot] = m.frame.pts
                counters.inc(sid, "frames_out")
            elif m.kind == "audio":
                if enc is None or m.seq <= last_audio or (live and m.gen < audio_gen):
                    continue
                last_audio = m.seq
                h = m.header
                t = h.get("dts") if h.get("dts") is not None else h.get("pts")
                if t is not None:
                    t_s = t * Fraction(*h["time_base"])
                    if last_audio_s is not None and t_s <= last_audio_s:
                        continue  # overlaps audio written before a live decoder restart: the muxer would fail
                    last_audio_s = t_s
                enc.write_audio(AudioPacket(bytes(m.payload), h.get("pts"), h.get("dts"), int(h.get("duration") or 0),
                                            Fraction(*h["time_base"]), bool(h.get("keyframe", True)), sid))
            elif m.kind == "eos":
                if m.header.get("reason") == "error":
                    rc = EXIT_FATAL
                if enc is not None and hasattr(enc, "end_reason"):
                    enc.end_reason = str(m.header.get("reason", "end"))
                log.info("stream %s: end of stream (%s), %d frames written", sid, m.header.get("reason"), shared.progress[slot] + 1)
                break
    except UserError as exc:
        log.error("stream %s: %s", sid, exc)
        rc = EXIT_FATAL
    finally:
        if enc is not None:
            enc.close()
        pull.close(linger=0)
        ctx.term()
    sys.exit(rc)


# =========================================================================== supervisor


@dataclass
class Worker:
    name: str  # decode:<id> | encode:<id> | stage
    stream: str | None
    proc: Any = None
    restarts: int = 0
    start_at: float = 0.0  # pending (re)start time; 0 = running or finished
    finished: bool = False
    failed: bool = False


@dataclass
class StreamState:
    gen: int = 0
    encoder_restarts: int = 0
    done: bool = False
    failed: bool = False


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the workers of one service config."""

    cfg: ServiceConfig
    state_file: str | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    streams: dict[str, StreamState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mp = _mp_context()
        ids = [s.id for s in self.cfg.streams]
        roles = ["supervisor", "stage"] + [f"decode:{i}" for i in ids] + [f"encode:{i}" for i in ids]
        self.board = Board(ids, roles, shared=True)
        n = len(ids)
        self.shared = Shared(self.board, self._mp.RawArray("q", [-1] * n), self._mp.RawArray("q", [-1] * n), self._mp.RawArray("q", [-1] * n),
                             self._mp.Event(), {s: i for i, s in enumerate(ids)})
        self.counters = self.board.counters("supervisor")
        self._by_id = {s.id: s for s in self.cfg.streams}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stopping_since: float | None = None
        self._state_written = 0.0
        self._log_level = logging.getLogger().getEffectiveLevel()
        self.rc = 0

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        if self.cfg.zmq.transport == "ipc":
            if self.cfg.zmq.ipc_dir:
                Path(self.cfg.zmq.ipc_dir).mkdir(parents=True, exist_ok=True)
                ipc_dir = self.cfg.zmq.ipc_dir
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="privacy-filter-")
                ipc_dir = self._tmp.name
        else:
            ipc_dir = ""
        self.ep_stage, self.ep_enc = _endpoints(self.cfg, ipc_dir)
        if self.cfg.metrics.port:
            self.board.serve(self.cfg.metrics.port, self.cfg.metrics.addr)
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics.addr, self.cfg.metrics.port)
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.workers["stage"] = Worker("stage", None)
            self._start("stage")
            for s in self.cfg.streams:
                self.streams[s.id] = StreamState()
                self.workers[f"encode:{s.id}"] = Worker(f"encode:{s.id}", s.id)
                self.workers[f"decode:{s.id}"] = Worker(f"decode:{s.id}", s.id)
                self._start(f"encode:{s.id}")
                self._start(f"decode:{s.id}")
            self._write_state()
            self._loop()
        finally:
            self._stop_all()
            for sig, h in old.items():
                signal.signal(sig, h)
            self._dump_metrics()
            if self._tmp is not None:
                self._tmp.cleanup()
        return self.rc

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stopping_since is None:
            log.warning("%s: stopping: decoders send end-of-stream, encoders close their outputs", signal.Signals(signum).name)
            self._stopping_since = time.monotonic()
            self.shared.stop.set()
        elif signum == signal.SIGINT:
            log.warning("second SIGINT: killing workers now")
            self._stopping_since = -1e9

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            for w in list(self.workers.values()):
                if w.start_at and self._stopping_since is not None:
                    self._abandon(w)
                elif w.start_at and now >= w.start_at:
                    self._start(w.name)
                elif w.proc is not None and not w.start_at and not w.finished and w.proc.exitcode is not None:
                    self._exited(w)
            if all(st.done or st.failed for st in self.streams.values()):
                return
            if now - self._state_written > 0.5:
                self._write_state()
            if self._stopping_since is not None and now - self._stopping_since > self.cfg.supervisor.shutdown_timeout_s:
                log.error("shutdown timed out after %.0f s; killing the remaining workers", self.cfg.supervisor.shutdown_timeout_s)
                self.rc = self.rc or 1
                return
            time.sleep(0.05)

    # -- starting ---------------------------------------------------------------------
    def _start(self, name: str) -> None:
        w = self.workers[name]
        w.start_at = 0.0
        hwm = self.cfg.zmq.hwm
        give_up = self.cfg.supervisor.shutdown_timeout_s / 2
        if name == "stage":
            target, args = stage_worker, (self.cfg, self.ep_stage, self.ep_enc, self.shared, self._log_level)
        else:
            assert w.stream is not None
            sc, st = self._by_id[w.stream], self.streams[w.stream]
            if name.startswith("decode:"):
                resume = int(self.shared.progress[self.shared.index[sc.id]])
                target, args = decode_worker, (sc, self.ep_stage[sc.id], self.shared, st.gen, resume, hwm, give_up, self._log_level)
            else:
                target, args = encode_worker, (sc, self._output_url(sc, st), self.ep_enc[sc.id], self.shared, st.gen, hwm, self._log_level)
        w.proc = self._mp.Process(target=target, args=args, name=f"privacy-filter {name}", daemon=False)
        w.proc.start()
        log.info("started %s (pid %d)", name, w.proc.pid)
        self._write_state()

    def _output_url(self, sc: StreamConfig, st: StreamState) -> str:
        url = sc.output.url
        if st.encoder_restarts and sc.is_live() and "://" not in url:
            p = Path(url)
            return str(p.with_name(f"{p.stem}.restart{st.encoder_restarts}{p.suffix}"))
        return url

    def _schedule(self, w: Worker) -> bool:
        """Restart ``w`` after its backoff; False (and the stream fails) past max_restarts."""
        sv = self.cfg.supervisor
        if w.restarts >= sv.max_restarts:
            log.error("%s crashed %d times; giving up", w.name, w.restarts + 1)
            w.failed = True
            return False
        w.restarts += 1
        self.counters.inc(w.stream or STAGE_STREAM, "worker_restarts")
        delay = min(sv.backoff_max_s, sv.backoff_s * 2 ** (w.restarts - 1))
        w.start_at = time.monotonic() + delay
        log.warning("%s exited unexpectedly; restart %d in %.1f s", w.name, w.restarts, delay)
        return True

    # -- exits ------------------------------------------------------------------------
    def _exited(self, w: Worker) -> None:
        code = w.proc.exitcode
        w.proc.join(0)
        log.info("%s exited with code %s", w.name, code)
        stopping = self._stopping_since is not None
        if w.name == "stage":
            if stopping and all(st.done or st.failed for st in self.streams.values()):
                w.finished = True
                return
            log.warning("stage exited (code %s)", code)
            if stopping or not self._schedule(w):
                self.rc = 1
                self._fail_all("the stage process failed")
                return
            # its in-flight frames are gone: file streams resume from what their encoders wrote
            for sid, st in self.streams.items():
                if not (st.done or st.failed) and not self._by_id[sid].is_live():
                    self._restart_decoder(sid, count=False)
            return
        sid = w.stream
        assert sid is not None
        st = self.streams[sid]
        if w.name.startswith("encode:"):
            if code == EXIT_OK:
                w.finished = True
                st.done = True
                log.info("stream %s finished", sid)
                return
            if code == EXIT_FATAL or stopping:
                w.finished, st.failed = True, True
                self.rc = 1
                self._kill(f"decode:{sid}")
                return
            # a dead encoder lost its container: restart the stream (rewrite, or a new file for live)
            if not self._schedule(w):
                st.failed, self.rc = True, 1
                self._kill(f"decode:{sid}")
                return
            st.encoder_restarts += 1
            st.gen += 1
            self.shared.progress[self.shared.index[sid]] = -1
            self.shared.last_pts[self.shared.index[sid]] = -1
            self._kill(f"decode:{sid}")
            dw = self.workers[f"decode:{sid}"]
            dw.finished = False
            dw.start_at = w.start_at
            return
        # decoder
        if code == EXIT_OK:
            w.finished = True  # eos sent; the encoder finishes the stream
            return
        if code == EXIT_FATAL:
            w.finished = True  # eos(reason=error) sent; the encoder closes and exits with EXIT_FATAL
            self.rc = 1
            return
        if stopping or st.done or st.failed:
            # e.g. killed by us because its encoder had already ended the stream (a failed
            # source: the encoder can see the eos before this decoder's own exit): nothing to resume
            w.finished = True
            return
        if self._schedule(w):
            self.streams[sid].gen += 1
        else:
            st.failed, self.rc = True, 1
            self._kill(f"encode:{sid}", term=True)

    def _abandon(self, w: Worker) -> None:
        """Stopping with a restart still pending: do not start it; let the stream's output close."""
        w.start_at, w.finished = 0.0, True
        if w.stream is not None and w.name.startswith("decode:"):
            self._kill(f"encode:{w.stream}", term=True)  # no eos will come: SIGTERM makes it close the file
        elif w.stream is not None:
            self.streams[w.stream].failed = True

    def _restart_decoder(self, sid: str, *, count: bool) -> None:
        name = f"decode:{sid}"
        w = self.workers[name]
        self._kill(name)
        self.streams[sid].gen += 1
        w.finished = False
        w.start_at = time.monotonic() + self.cfg.supervisor.backoff_s
        if count:
            self.counters.inc(sid, "worker_restarts")

    def _kill(self, name: str, term: bool = False) -> None:
        w = self.workers.get(name)
        if w is None or w.proc is None or w.proc.exitcode is not None:
            return
        if term:
            w.proc.terminate()
            w.proc.join(5)
        if w.proc.exitcode is None:
            w.proc.kill()
            w.proc.join(5)

    def _fail_all(self, why: str) -> None:
        log.error("%s; stopping all streams", why)
        for st in self.streams.values():
            if not st.done:
                st.failed = True

    def _stop_all(self) -> None:
        self.shared.stop.set()
        for w in self.workers.values():
            if w.proc is not None and w.proc.exitcode is None:
                w.proc.terminate()
        deadline = time.monotonic() + 5
        for w in self.workers.values():
            if w.proc is not None:
                w.proc.join(max(0.0, deadline - time.monotonic()))
                if w.proc.exitcode is None:
                    w.proc.kill()
                    w.proc.join(2)
        self._write_state()

    # -- reporting --------------------------------------------------------------------
    def _write_state(self) -> None:
        """Worker pids and restart counts as JSON (``supervisor.state_file``): for operators and tests."""
        self._state_written = time.monotonic()
        path = self.state_file or self.cfg.supervisor.state_file
        if not path:
            return
        state = {
            "pid": os.getpid(),
            "workers": {n: {"pid": w.proc.pid if w.proc else None, "alive": bool(w.proc and w.proc.exitcode is None), "restarts": w.restarts} for n, w in self.workers.items()},
            "streams": {s: {"gen": st.gen, "done": st.done, "failed": st.failed, "last_written": int(self.shared.progress[self.shared.index[s]])} for s, st in self.streams.items()},
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, path)

    def _dump_metrics(self) -> None:
        if self.cfg.metrics.dump:
            with open(self.cfg.metrics.dump, "w", encoding="utf-8") as f:
                json.dump(self.board.snapshot(), f, indent=1, sort_keys=True)
        snap = self.board.snapshot()
        for sid in self.streams:
            r = snap[sid]
            log.info("stream %s: in %d, out %d, covered whole %d, passed unfiltered %d, dropped %d, restarts %d", sid, r["frames_in"], r["frames_out"], r["frames_covered_whole"], r["frames_passed_unfiltered"], r["frames_dropped"], r["worker_restarts"])


def _mp_context() -> Any:
    """forkserver: workers fork from a clean server process (no inherited threads or sockets,
    e.g. the metrics HTTP server) yet start fast; spawn where forkserver does not exist."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["privacy_filter.service", "privacy_filter.protocol", "privacy_filter.decode", "privacy_filter.encode", "numpy", "av", "zmq"])
    return ctx


def run_service(cfg: ServiceConfig, *, state_file: str | None = None) -> int:
    return Supervisor(cfg, state_file=state_file).run()


def cmd_run(args: argparse.Namespace) -> int:
    """``privacy-filter run CONFIG``."""
    cfg = load_service(args.config)
    return run_service(cfg)
