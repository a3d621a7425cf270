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

import json
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy_filter.config import ServiceConfig, StreamConfig
from privacy_filter.errors import ConfigError
from privacy_filter.metrics import STAGE_STREAM, Board
from privacy_filter.service.state import EXIT_FATAL, EXIT_OK, Shared, endpoints, load_keys
from privacy_filter.service.workers import decode_worker, encode_worker, stage_worker

log = logging.getLogger(__name__)


# =========================================================================== shared state


# =========================================================================== workers


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
    # the user-facing lines (a start line and a summary per stream, as ``process`` prints): the
    # CLI passes print; None leaves them to the INFO log
    say: Callable[[str], None] | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    streams: dict[str, StreamState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mp = _mp_context()
        ids = [s.id for s in self.cfg.streams]
        roles = ["supervisor", "stage"] + [f"decode:{i}" for i in ids] + [f"encode:{i}" for i in ids]
        self.board = Board(ids, roles, shared=True)
        n = len(ids)
        self.shared = Shared(
            self.board,
            self._mp.RawArray("q", [-1] * n),
            self._mp.RawArray("q", [-1] * n),
            self._mp.RawArray("q", [-1] * n),
            self._mp.Event(),
            {s: i for i, s in enumerate(ids)},
            os.getpid(),
            self._mp.RawArray("q", [0] * (2 * n)),
            _curve_keys(self.cfg),
        )
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
        self.ep_stage, self.ep_enc = endpoints(self.cfg, ipc_dir)
        if self.cfg.metrics.port:
            self.board.serve(self.cfg.metrics.port, self.cfg.metrics.addr)
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics.addr, self.cfg.metrics.port)
        _start_forkserver_immune_to_sigterm(self._mp)
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
                self._say(f"stream {s.id}: {s.source.url} -> {s.output.url} ({_what(s)})")
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
            target, args = stage_worker, (self.cfg, self.ep_stage, self.ep_enc, self.shared, self._log_level, w.restarts > 0)
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
            if stopping and code == EXIT_OK:
                # a clean stop of its own: it got SIGTERM too (a process-group or control-group kill).
                # Encoders still open close their outputs on SIGTERM; nothing failed.
                w.finished = True
                for sid, st in self.streams.items():
                    enc = self.workers.get(f"encode:{sid}")
                    if not (st.done or st.failed) and enc is not None and enc.proc is not None and enc.proc.exitcode is None:
                        enc.proc.terminate()
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
                self._failed(code == EXIT_FATAL)
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
            self._failed(fixable=True)
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

    def _failed(self, fixable: bool) -> None:
        """The exit status of a failed stream, as for ``process``: 2 when the user can fix it (a source
        or output that cannot be opened, named in its log line), 1 when something broke that
        restarts did not mend; 1 wins when both happened."""
        self.rc = 1 if not fixable or self.rc == 1 else 2

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
            "streams": {
                s: {"gen": st.gen, "done": st.done, "failed": st.failed, "last_written": int(self.shared.progress[self.shared.index[s]])} for s, st in self.streams.items()
            },
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
        for sid, st in self.streams.items():
            r = snap[sid]
            status = "finished" if st.done else "FAILED" if st.failed else "stopped"
            self._say(
                f"stream {sid}: {status}: {r['frames_out']} frames out of {r['frames_in']} in "
                f"({r['frames_covered_whole']} covered whole, {r['frames_dropped']} dropped"
                + (f", {r['frames_passed_unfiltered']} passed UNFILTERED" if r["frames_passed_unfiltered"] else "")
                + f"), {r['worker_restarts']} worker restarts"
                + (f", {bad} malformed messages dropped" if (bad := sum(self.board.bad_messages(sid).values())) else "")
                + (f", source ENDED EARLY (about {r['source_frames_missing']} frames short)" if r["source_frames_missing"] else "")
            )

    def _say(self, line: str) -> None:
        if self.say is None:
            log.info("%s", line)
        else:
            self.say(line)


def _mp_context() -> Any:
    """forkserver: workers fork from a clean server process (no inherited threads or sockets,
    e.g. the metrics HTTP server) yet start fast; spawn where forkserver does not exist."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(["privacy_filter.service.supervisor", "privacy_filter.wire", "privacy_filter.io.av_source", "privacy_filter.io.av_sink", "numpy", "av", "zmq"])
    return ctx


def _curve_keys(cfg: ServiceConfig) -> Any:
    """The CURVE keys for tcp (a UserError when the folder lacks them), or None, with a warning where tcp runs without."""
    z = cfg.zmq
    if z.transport != "tcp":
        return None
    if not z.curve_enabled():
        log.warning("zmq.curve: off: the workers' tcp ports (%s:%d-%d) accept frames from anyone who can reach them", z.host, z.base_port, z.base_port + 2 * len(cfg.streams) - 1)
        return None
    assert z.keys is not None
    return load_keys(z.keys)


def _start_forkserver_immune_to_sigterm(ctx: Any) -> None:
    """Start the forkserver now, with SIGTERM ignored (exec keeps an ignored signal ignored).

    The forkserver reports each worker's exit status to the supervisor.  A SIGTERM to the whole
    process group (systemd's control-group kill, ``timeout``, ``kill -TERM -PGID``) used to kill
    it along with the workers, so every worker that exited after it read as exit code 255 (its
    status never came): ``stage exited (code 255)`` and exit 1 from a clean stop.  The forkserver
    still ends when the supervisor does (it watches a pipe from it); workers set their own
    SIGTERM handler.
    """
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, old)


def run_service(cfg: ServiceConfig, *, state_file: str | None = None, say: Callable[[str], None] | None = None) -> int:
    """Run every stream of ``cfg`` until each ends (0), or fails (2: a source or output that
    cannot be opened; 1: a crash restarts did not mend).  ``say`` gets a start and a summary line per stream."""
    return Supervisor(cfg, state_file=state_file, say=say).run()


def _what(s: StreamConfig) -> str:
    """The start line's description of what a stream does, e.g. ``cctv: pixelate person, detector nanodet``."""
    parts = [s.preset or "custom", f"{s.effect.kind} {s.effect.target}"]
    if s.uses_cover_engine():
        found = [f"detector {s.detector.name}"] if s.detector.enabled else []
        parts.append(", ".join(found + (["motion"] if s.motion.enabled else []) + ([f"{len(s.zones)} zones"] if s.zones else [])))
    else:
        parts.append(f"model {s.model}")
    parts.append(f"device {s.device}")
    return ", ".join(parts)


def preflight_outputs(cfg: ServiceConfig) -> None:
    """Output files that exist: refused (exit 2, before any worker starts) where a stream says
    ``output.overwrite: false``, else named in a warning, since they are about to be replaced."""
    from privacy_filter.config import existing_output

    refused = []
    for s in cfg.streams:
        path = existing_output(s.output.url)
        if path is None:
            continue
        if s.output.overwrite is False:
            refused.append(f"stream {s.id!r}: output {s.output.url} already exists and output.overwrite is false")
        elif s.output.overwrite is None:
            log.warning("stream %s: output %s already exists and will be replaced (output.overwrite: true quietly, false refuses)", s.id, s.output.url)
    if refused:
        raise ConfigError(" | ".join(refused) + "; remove it or set output.overwrite: true")


def preflight_devices(cfg: ServiceConfig) -> None:
    """Every stream's devices can run here, or one DeviceError (exit 2) before any worker starts.

    Probes in this process: workers start from a forkserver (or spawn), so no CUDA state is inherited.
    """
    from privacy_filter.backends import DeviceError, resolve_devices

    problems = []
    for s in cfg.streams:
        try:
            resolve_devices(s.device, s.segmentation_device, s.effects_device, model=s.model, announce=False, where=f"stream {s.id!r}: ")
        except DeviceError as exc:
            problems.append(str(exc))
    if problems:
        raise DeviceError(" | ".join(problems))
