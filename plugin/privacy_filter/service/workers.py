"""The bodies of the three worker processes of ``run``: decode, stage and encode.

Each runs in its own process (spawned by ``service.supervisor``); everything they share
is in ``service.state``.  Their guarantees are described in ``service.supervisor``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from fractions import Fraction
from typing import Any

from privacy_filter.config import ServiceConfig, StreamConfig
from privacy_filter.metrics import UNKNOWN_STREAM
from privacy_filter.service.state import EXIT_EOS_LOST, EXIT_FATAL, EXIT_OK, POLL_MS, RETRY_MS, Shared, send_until, start_authenticator, worker_setup
from privacy_filter.wire import audio_header, audio_info_from, video_header, video_info_from

log = logging.getLogger(__name__)

#: An encoder takes a frame at most this many seqs after the last one written.  Real gaps (a live
#: stream's drops, on_failure: drop) are far smaller; a forged frame with a huge seq would
#: otherwise make every real frame after it look like a resend.
MAX_SEQ_STEP = 10_000
#: ... unless this many consecutive frames, each following on from the previous one, all lie beyond it
SEQ_RESYNC_FRAMES = 25


def decode_worker(sc: StreamConfig, endpoint: str, shared: Shared, gen: int, resume_after: int, hwm: int, give_up_s: float, log_level: int) -> None:
    """Read one source and push its stream-start, frames, audio and eos to the stage.

    ``resume_after`` is the seq of the last frame the encoder wrote (-1: none).  A file
    stream re-decodes from the start and sends only frames after it.  A live stream
    cannot rewind: it numbers its frames on from there and shifts its timestamps to
    continue after the last written one.
    """
    import zmq

    from privacy_filter.errors import UserError
    from privacy_filter.io import open_source
    from privacy_filter.io.av_source import ReconnectPolicy, offset_in
    from privacy_filter.media import AudioPacket
    from privacy_filter.wire import audio_parts, eos_parts, frame_parts, send, socket, stream_start_parts

    flag, ctx = worker_setup(f"decode:{sc.id}", log_level, shared.supervisor_pid)
    sid = sc.id
    counters = shared.board.counters(f"decode:{sid}")
    live = sc.is_live()
    sock = socket(ctx, zmq.PUSH, endpoint, bind=False, hwm=hwm, linger_ms=int(give_up_s * 1000), setup=shared.curve.client if shared.curve else None)
    slot = shared.index[sid]
    known = (int(shared.sizes[2 * slot]), int(shared.sizes[2 * slot + 1])) if shared.sizes is not None else (0, 0)
    size = known if known[0] > 0 else None  # the stream's size before a restart: it keeps it
    want_audio = sc.source.audio and sc.output.audio == "copy"
    # a file/URL decoder, an upstream ZeroMQ stage (zmq+pull/sub), or imagezmq/NetGear senders (BGR -> I420 here)
    dec: Any = open_source(
        sc.source.url,
        stream_id=sid,
        audio=want_audio,
        live=live,
        reconnect=ReconnectPolicy(max_attempts=None, udp_buffer_s=sc.source.udp_buffer_s, udp_max_bitrate_bps=sc.source.udp_bitrate_bps()) if live else None,
        counters=counters,
        should_stop=lambda: flag["stop"] or shared.stop.is_set(),
        hwm=hwm,
        size=size,
    )
    rc, reason, sent = EXIT_OK, "end", 0
    try:
        info = dec.open()
        if size is None:
            if shared.sizes is not None:
                shared.sizes[2 * slot], shared.sizes[2 * slot + 1] = info.video.width, info.video.height
        elif (info.video.width, info.video.height) != size:
            # the source came back with another size (a camera reconfigured while we restarted):
            # the encoder is open for the stream's size, so scale to it, as decode does mid-file
            log.warning(
                "stream %s: the source is %dx%d after a restart, the stream is %dx%d; frames are scaled (counted)", sid, info.video.width, info.video.height, size[0], size[1]
            )
            info.video = dataclasses.replace(info.video, width=size[0], height=size[1])
        start = stream_start_parts(sid, video=video_header(info.video), audio=audio_header(info.audio), gen=gen, extra={"resume_after": -1 if live else resume_after})
        send_until(sock, start, flag, shared, give_up_s=give_up_s)
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
                    send(
                        sock,
                        audio_parts(sid, audio_seq, item.data, pts=item.pts, dts=item.dts, time_base=item.time_base, duration=item.duration, keyframe=item.is_keyframe, gen=gen),
                        block=False,
                    )
                else:
                    send_until(
                        sock,
                        audio_parts(sid, audio_seq, item.data, pts=item.pts, dts=item.dts, time_base=item.time_base, duration=item.duration, keyframe=item.is_keyframe, gen=gen),
                        flag,
                        shared,
                        give_up_s=give_up_s,
                    )
                continue
            if not live and item.index <= resume_after:
                continue  # already written by the encoder before a restart
            if size is not None and (item.width, item.height) != size:
                item = scale_frame(item, *size)
                counters.inc(sid, "frames_resized")
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
                if not send_until(sock, parts, flag, shared, give_up_s=give_up_s):
                    reason = "stop"
                    break
                # frames_in of a file stream = distinct source frames, however many restarts
                cur = counters.get(sid, "frames_in")
                if item.index + 1 > cur:
                    counters.inc(sid, "frames_in", item.index + 1 - cur)
            sent = item.index + 1
        if reason == "end" and getattr(dec, "frames_missing", 0):
            counters.inc(sid, "source_frames_missing", dec.frames_missing)  # a truncated file (warned by the decoder)
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
    ok = send_until(sock, eos_parts(sid, frames=max(sent, dec.frames_decoded) if reason == "end" else sent, reason=reason, gen=gen), flag, shared, give_up_s=give_up_s)
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


def scale_frame(frame: Any, width: int, height: int) -> Any:
    """``frame`` (a YuvFrame) scaled bilinearly to ``width`` x ``height``, timestamps and metadata kept."""
    import cv2

    from privacy_filter.frames import chroma_size

    cw, ch = chroma_size(width, height)
    return dataclasses.replace(
        frame,
        y=cv2.resize(frame.y, (width, height), interpolation=cv2.INTER_LINEAR),
        u=cv2.resize(frame.u, (cw, ch), interpolation=cv2.INTER_LINEAR),
        v=cv2.resize(frame.v, (cw, ch), interpolation=cv2.INTER_LINEAR),
    )


def stage_worker(cfg: ServiceConfig, endpoints_in: dict[str, str], endpoints_out: dict[str, str], shared: Shared, log_level: int, restarted: bool = False) -> None:
    """The shared filter stage: batches frames of all streams per model, applies each stream's effect.

    Each stream has its own input socket.  A message its encoder cannot take yet waits in
    that stream's queue here, and while anything waits there the stage does not read that
    stream's input: the back-pressure reaches that stream's decoder (a file waits, a live
    source drops) and no other stream is held up behind it.

    A ``restarted`` stage has lost every stream's temporal mask state (hold/smooth): a person
    held covered over the last frames would show.  So each stream's frames are covered whole
    (counted) until its window has been segmented again, unless the stream starts afresh from
    its first frame (then the state is what a run without the crash has).
    """
    import collections

    import zmq

    from privacy_filter.stage import FilterStage, StageStream
    from privacy_filter.wire import Receiver, frame_parts, latest_wins, send, socket

    flag, ctx = worker_setup("stage", log_level, shared.supervisor_pid)
    counters = shared.board.counters("stage")
    streams = {s.id: s for s in cfg.streams}
    live = {s.id for s in cfg.streams if s.is_live()}
    auth = start_authenticator(ctx, shared.curve)
    server = shared.curve.server if shared.curve else None
    client = shared.curve.client if shared.curve else None
    pulls = {sid: socket(ctx, zmq.PULL, ep, bind=True, hwm=cfg.zmq.hwm, setup=server) for sid, ep in endpoints_in.items()}
    push = {sid: socket(ctx, zmq.PUSH, ep, bind=False, hwm=cfg.zmq.hwm, linger_ms=1000, setup=client) for sid, ep in endpoints_out.items()}
    rxs = {sid: Receiver(sock, counters=counters, fallback_stream=UNKNOWN_STREAM, known_streams=list(streams)) for sid, sock in pulls.items()}
    waiting: dict[str, collections.deque[list[Any]]] = {sid: collections.deque() for sid in push}

    # one engine per (model, segmentation device, tiles); streams sharing one are batched together.
    # Devices were checked at start (preflight_devices); one that has gone since ends the stage
    # non-zero (the supervisor decides), it never covers every frame for the whole run.
    from privacy_filter.backends import DeviceError, create_stage_device, create_stream_effect, resolve_devices

    devices: dict[str, Any] = {}
    announced: set[tuple[Any, ...]] = set()
    for s in cfg.streams:
        key = (s.model, s.device, s.segmentation_device, s.effects_device)
        try:
            devices[s.id] = resolve_devices(s.device, s.segmentation_device, s.effects_device, model=s.model, announce=key not in announced, where=f"stream {s.id!r}: ")
        except DeviceError as exc:
            log.error("%s", exc)
            sys.exit(EXIT_FATAL)
        announced.add(key)
    groups: dict[tuple[str, str, str | None], list[str]] = {}
    for s in cfg.streams:
        # CCTV cover streams (detector, motion, zones) share one cover engine per device and model
        kind = "cover" if s.uses_cover_engine() else "segment"
        groups.setdefault((f"{kind}:{s.model}", devices[s.id].segmentation, s.tiles), []).append(s.id)
    stage_of: dict[str, FilterStage] = {}
    for (keyed_model, device, tiles), ids in groups.items():
        kind, model = keyed_model.split(":", 1)
        seg = _load_cover_engine({sid: streams[sid] for sid in ids}, model, device) if kind == "cover" else _load_segmenter(model, device, tiles, ids)
        specs = {sid: StageStream.from_config(streams[sid]) for sid in ids}
        # one CUDA runtime (one stream) per stage, shared by its CUDA effects and its TensorRT engine
        on_cuda = [sid for sid in ids if devices[sid].effects == "cuda"]
        gpu_rt = create_stage_device().rt if on_cuda else None
        effects = {sid: create_stream_effect(specs[sid].effect, specs[sid].mask, device=devices[sid].effects, runtime=gpu_rt if sid in on_cuda else None) for sid in ids}
        fs = FilterStage(seg, specs, counters=counters, effects=effects, device="cuda" if len(on_cuda) == len(ids) else "cpu")
        for sid in ids:
            stage_of[sid] = fs
            if restarted:
                fs.cover_until_refilled(sid)

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
                todo = todo[len(chunk) :]
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
            # every frame carries its mask: an encoder refuses a frame without one (unless on_failure: pass),
            # so a frame that did not come through here cannot reach an output
            forward(m.stream_id, frame_parts(r.frame, mask=r.mask, gen=m.gen), True)

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
                if m.stream_id not in live:
                    stage_of[m.stream_id].cover_until_refilled(m.stream_id, 0)  # from frame 0 the fresh state is exact
                elif m.gen > 0:
                    # a restarted live decoder goes on from the present: its first frames would lack the
                    # masks held from before the restart, so they are covered whole while the window refills
                    stage_of[m.stream_id].cover_until_refilled(m.stream_id)
            segment.append(m)
        run_segment(segment)
    for fs in set(stage_of.values()):
        fs.close()
    for sock in pulls.values():
        sock.close(linger=0)
    for s in push.values():
        s.close(linger=1000)
    if auth is not None:
        auth.stop()
    ctx.term()
    sys.exit(EXIT_OK)


def _file_source(sc: Any) -> str | None:
    """The local file a stream reads, when it is one (not live, not a ZeroMQ or peer source)."""
    from privacy_filter.urls import is_live_source, is_peer_url, is_zmq_url

    url = str(sc.source.url)
    if sc.policy == "live" or is_live_source(url) or is_zmq_url(url) or is_peer_url(url) or not os.path.isfile(url):
        return None
    return url


def _load_cover_engine(cfgs: dict[str, Any], model: str, device: str) -> Any:
    """The CCTV cover engine for these streams, or None (frames covered whole) when it cannot load.

    A stream reading a local file gets the first pass ``process`` gives it: the stage worker samples
    the file itself (it knows the URL from the config), so the file's first seconds are not covered
    whole while a background is learned.  Live streams learn while covered (``covered_whole:learning``).
    """
    try:
        from privacy_filter.backends import create_cover_engine
        from privacy_filter.engines.finder import CoverSettings
        from privacy_filter.engines.motion import to_grid
        from privacy_filter.io.av_source import frame_rate, sample_lumas

        files = {sid: _file_source(c) for sid, c in cfgs.items()}
        rates = {sid: (frame_rate(url) if url else None) or 25.0 for sid, url in files.items()}  # live: 25 assumed
        settings = {sid: CoverSettings.from_config(c, live=files[sid] is None, fps=rates[sid]) for sid, c in cfgs.items()}
        engine = create_cover_engine(settings, model=model, device=device)
    except Exception as exc:  # noqa: BLE001 - any load failure must fail closed, not crash-loop
        log.error("the cover engine for streams %s cannot be loaded (%s); their frames will be covered whole", ", ".join(cfgs), exc)
        return None
    for sid, url in files.items():
        m = settings[sid].motion
        if url is not None and m.enabled and m.first_pass:
            lumas = sample_lumas(url, m.first_pass_samples, reduce=to_grid(m.height))
            if lumas:
                engine.prime(sid, lumas)
            else:
                log.info("%s: no first pass (cannot seek); the motion layer learns from the first frames", url)
    return engine


def _load_segmenter(model: str, device: str, tiles: str | None, ids: list[str]) -> Any:
    """The engine, or None when it cannot load: the stage then covers every frame (fail closed)."""
    try:
        from privacy_filter.backends import create_segmenter

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

    from privacy_filter.errors import UserError
    from privacy_filter.io import open_sink
    from privacy_filter.io.av_sink import EncodeSettings
    from privacy_filter.media import AudioPacket
    from privacy_filter.wire import Receiver, socket

    flag, ctx = worker_setup(f"encode:{sc.id}", log_level, shared.supervisor_pid)
    sid = sc.id
    slot = shared.index[sid]
    counters = shared.board.counters(f"encode:{sid}")
    auth = start_authenticator(ctx, shared.curve)
    pull = socket(ctx, zmq.PULL, endpoint, bind=True, hwm=hwm, setup=shared.curve.server if shared.curve else None)
    rx = Receiver(pull, counters=counters, fallback_stream=sid, known_streams=[sid])
    settings = EncodeSettings.from_config(sc.output)
    enc: Any = None  # an Encoder, or a ZmqSink for zmq+push/pub outputs
    last_audio = -1
    last_audio_s: Fraction | None = None
    audio_gen = -1  # live streams: the decoder generation whose audio is being written
    live = sc.is_live()
    rc = EXIT_OK
    warned_unmasked = warned_jump = False
    jump_run: list[int] = []  # seqs of consecutive frames that each jumped too far (a real gap resyncs after a few)
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
                    enc = open_sink(
                        url,
                        video_info_from(m.header["video"]),
                        settings,
                        audio=audio_info_from(m.header.get("audio")) if sc.output.audio == "copy" else None,
                        live=sc.is_live(),
                        stream_id=sid,
                        hwm=hwm,
                    )
            elif m.kind == "frame":
                if enc is None:
                    counters.inc(sid, "frames_dropped")
                    continue
                if m.mask is None and sc.on_failure != "pass":
                    # the stage sends every frame with its mask; one without did not come from it
                    counters.inc(sid, "frames_refused_unmasked")
                    if not warned_unmasked:
                        warned_unmasked = True
                        log.warning(
                            "stream %s: refusing a frame without a mask (seq %d): only on_failure: pass streams publish unfiltered frames; further ones are only counted",
                            sid,
                            m.seq,
                        )
                    continue
                if m.seq <= shared.progress[slot]:
                    counters.inc(sid, "duplicates_discarded")
                    continue
                if shared.progress[slot] >= 0 and m.seq - shared.progress[slot] > MAX_SEQ_STEP:
                    # a jump this far ahead would make every real frame after it look like a resend
                    if jump_run and 0 < m.seq - jump_run[-1] <= MAX_SEQ_STEP:
                        jump_run.append(m.seq)
                    else:
                        jump_run[:] = [m.seq]
                    if len(jump_run) < SEQ_RESYNC_FRAMES:
                        counters.inc(sid, "seq_jumps")
                        if not warned_jump:
                            warned_jump = True
                            log.warning("stream %s: frame seq jumped from %d to %d (more than %d ahead); refused, counted", sid, int(shared.progress[slot]), m.seq, MAX_SEQ_STEP)
                        continue
                    log.warning("stream %s: %d consecutive frames from seq %d on: taking the jump", sid, len(jump_run), jump_run[0])
                jump_run.clear()
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
                enc.write_audio(
                    AudioPacket(bytes(m.payload), h.get("pts"), h.get("dts"), int(h.get("duration") or 0), Fraction(*h["time_base"]), bool(h.get("keyframe", True)), sid)
                )
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
        if auth is not None:
            auth.stop()
        ctx.term()
    sys.exit(rc)
