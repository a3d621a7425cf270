"""State every service worker shares with the supervisor: exit codes, endpoints, the board.

Kept apart from the workers and the supervisor so both can import it without importing each other.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from privacy_filter.config import ServiceConfig
from privacy_filter.metrics import Board

log = logging.getLogger(__name__)


EXIT_OK = 0


EXIT_FATAL = 3  # a user-fixable problem (source or sink cannot be opened): restarting will not help


EXIT_EOS_LOST = 4  # a decoder whose eos the stage never confirmed: restarted like a crash (it resumes)


POLL_MS = 200


RETRY_MS = 5  # the stage retries output waiting for a busy encoder this often


@dataclass
class Shared:
    """What every worker sees, created by the supervisor before any worker starts."""

    board: Board
    progress: Any  # RawArray('q'): per stream, seq of the last frame the encoder wrote (-1: none)
    last_pts: Any  # RawArray('q'): per stream, pts of that frame (live restarts continue after it)
    eos_gen: Any  # RawArray('q'): per stream, generation of the last eos the stage has taken in (-1: none)
    stop: Any  # multiprocessing.Event: decoders stop reading and send eos
    index: dict[str, int]  # stream id -> slot in progress
    supervisor_pid: int = 0  # workers stop when this process dies (0: do not watch)
    sizes: Any = None  # RawArray('q'), 2 per stream: width, height of the stream (0: not known yet); survives restarts
    curve: CurveKeys | None = None  # tcp with CURVE: the keys every socket between the workers uses


# =========================================================================== CURVE (zmq.transport: tcp)

KEY_NAMES = ("server", "client")


@dataclass(frozen=True)
class CurveKeys:
    """The service's CURVE keys (Z85): every binding (receiving) worker is a CURVE server that admits
    only clients holding the client secret key; every connecting worker is such a client."""

    folder: str
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    def server(self, sock: Any) -> None:
        """Options of a binding socket (set before bind)."""
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def client(self, sock: Any) -> None:
        """Options of a connecting socket (set before connect)."""
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public


def generate_keys(folder: str) -> list[str]:
    """``privacy-filter keys DIR``: a server and a client key pair (``zmq.auth`` certificate files).

    The folder is created (mode 0700); existing key files are never overwritten.  Returns the files written.
    """
    from pathlib import Path

    import zmq
    import zmq.auth

    from privacy_filter.errors import UserError

    if not zmq.has("curve"):
        raise UserError("this libzmq has no CURVE support")
    d = Path(folder)
    existing = [str(d / f"{n}{ext}") for n in KEY_NAMES for ext in (".key", ".key_secret") if (d / f"{n}{ext}").exists()]
    if existing:
        raise UserError(f"{folder}: key files exist already ({', '.join(existing)}); remove them or choose another folder")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    written = []
    for n in KEY_NAMES:
        pub, sec = zmq.auth.create_certificates(str(d), n)
        os.chmod(sec, 0o600)
        written += [pub, sec]
    return written


def load_keys(folder: str) -> CurveKeys:
    """The keys in ``folder``, or one UserError naming what is missing."""
    from pathlib import Path

    import zmq.auth

    from privacy_filter.errors import UserError

    d = Path(folder)
    got: dict[str, tuple[bytes, bytes]] = {}
    for n in KEY_NAMES:
        path = d / f"{n}.key_secret"
        if not path.is_file():
            raise UserError(f"zmq.keys: {path} not found; make the keys with `privacy-filter keys {folder}`")
        try:
            pub, sec = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise UserError(f"zmq.keys: {path}: not a CURVE key file ({exc})") from None
        if not pub or not sec:
            raise UserError(f"zmq.keys: {path}: no secret key in it")
        got[n] = (pub, sec)
    return CurveKeys(str(d), got["server"][0], got["server"][1], got["client"][0], got["client"][1])


def start_authenticator(ctx: Any, keys: CurveKeys | None) -> Any:
    """In a worker that binds: the ZAP handler (None without CURVE).  It admits the public keys in the keys
    folder (``zmq.auth`` convention: every ``*.key`` there), i.e. the service's own workers."""
    if keys is None:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=logging.getLogger("privacy_filter.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=keys.folder)  # every public *.key there: the service's own
    return auth


def endpoints(cfg: ServiceConfig, ipc_dir: str) -> tuple[dict[str, str], dict[str, str]]:
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


PARENT_GRACE_S = 3.0  # after the supervisor died, a worker stops cleanly within this, else exits hard


def worker_setup(role: str, log_level: int, supervisor_pid: int = 0) -> tuple[dict[str, bool], Any]:
    """Signals and logging of a worker process.

    SIGINT is ignored (Ctrl-C reaches the whole process group; only the supervisor acts on
    it).  SIGTERM sets a flag the worker checks between messages: a decoder then sends eos,
    an encoder closes its container, the stage exits.

    With ``supervisor_pid``, the worker also stops when the supervisor dies, even by SIGKILL
    (see ``watch_parent``).
    """
    flag = {"stop": False}

    def _term(signum: int, frame: Any) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _term)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints the worker's stacks
    logging.basicConfig(level=log_level, format=f"%(levelname)s {role}: %(message)s", force=True)
    if supervisor_pid:
        watch_parent(supervisor_pid, flag)
    import zmq

    return flag, zmq.Context()


def _set_pdeathsig(sig: int) -> bool:
    """Linux: the kernel sends ``sig`` to this process when its parent (thread) dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(1, sig, 0, 0, 0)) == 0  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return False


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists (another user's: the pid was reused, but that is also not our supervisor)
    return False


def watch_parent(supervisor_pid: int, flag: dict[str, bool]) -> None:
    """Stop this worker when the supervisor dies, even by SIGKILL (it cannot stop us then).

    Two mechanisms, because a worker's parent is the forkserver, not the supervisor itself:

    * ``PR_SET_PDEATHSIG`` (Linux): SIGTERM when the parent dies.  The forkserver exits as soon
      as the supervisor is gone, so the SIGTERM handler's clean stop starts at once.
    * a watchdog thread: waits on a pidfd of the supervisor (or polls its pid and our parent
      pid every 0.2 s where there is no pidfd).  It sets the stop flag, and if the worker is
      still running ``PARENT_GRACE_S`` later (blocked, or waiting for a peer that is gone),
      exits hard: nothing may go on writing outputs for a service that no longer exists.
    """
    ppid = os.getppid()
    _set_pdeathsig(signal.SIGTERM)
    pidfd = -1
    try:
        pidfd = os.pidfd_open(supervisor_pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        pidfd = -1

    def gone() -> bool:
        return os.getppid() != ppid or _pid_gone(supervisor_pid)

    def watch() -> None:
        while True:
            if pidfd >= 0:
                r, _, _ = select.select([pidfd], [], [], 0.5)
                if r or gone():
                    break
            else:
                if gone():
                    break
                time.sleep(0.2)
        log.error("the supervisor (pid %d) is gone; stopping", supervisor_pid)
        flag["stop"] = True
        time.sleep(PARENT_GRACE_S)
        logging.shutdown()
        os._exit(1)

    if gone():  # died before the death signal was armed
        flag["stop"] = True
    threading.Thread(target=watch, name="watch-supervisor", daemon=True).start()


def send_until(sock: Any, parts: list[Any], flag: dict[str, bool], shared: Shared, *, give_up_s: float) -> bool:
    """Blocking send that still notices a stop request; gives up ``give_up_s`` after one."""
    from privacy_filter.wire import send

    stop_seen: float | None = None
    while True:
        if send(sock, parts, timeout_ms=POLL_MS):
            return True
        if flag["stop"] or shared.stop.is_set():
            stop_seen = stop_seen or time.monotonic()
            if time.monotonic() - stop_seen > give_up_s:
                return False
