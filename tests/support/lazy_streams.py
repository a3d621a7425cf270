"""Lazy CUDA streams for the host emulator and the TensorRT fake: stream-ordering bugs fail tests.

Test support, not product.  Until this existed the emulator and the fake ran every launch and
copy at once, in program order, so a missing ``synchronize`` or event could never fail a test.
Here every device operation (kernel launch, host↔device copy, TensorRT ``execute_async_v3``) is
*queued* on a stream and runs only when

* that stream is synchronised (``stream.synchronize()``, a blocking ``get``),
* an event recorded on it is synchronised, or waited on by another stream that then runs, or
* the legacy default stream's semantics require it: an operation on the null stream runs after all
  earlier work of every *blocking* stream, and an operation on a blocking stream after earlier
  null-stream work.  Non-blocking streams (what the product uses) order with nothing implicitly.

Every operation declares the byte ranges it reads and writes.  When an operation is queued on
stream S and a still-pending operation of another stream T touches the same bytes (write/read,
read/write, write/write) and S is not ordered after it (no event wait, no default-stream rule),
:class:`RaceError` is raised at once: that is a race on a real GPU.  A host read of an array
with pending writes (:func:`check_host_read`; the ``EmuDeviceArray`` ufunc hook; a blocking copy
to the host) raises the same way.

What it does not model: allocations (``zeros``/``empty``/``full``) happen at once on the host,
whereas CuPy's ``zeros`` is an asynchronous memset on the current stream; addresses read by a
kernel through a pointer table (``preprocess_yuv``'s plane table) are not seen by the hazard check
(the lazy execution still gives wrong data if such a read is not ordered); pinned-buffer reuse by
the host while a copy is pending is only seen through wrong data.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Range = tuple[int, int]


class RaceError(AssertionError):
    """Unordered access to the same device bytes from two streams, or a host read of pending writes."""


def byte_range(a: Any) -> Range | None:
    """[lo, hi) bytes an ndarray spans; None for anything else (scalars, foreign objects)."""
    if not isinstance(a, np.ndarray) or a.size == 0:
        return None
    lo, hi = np.lib.array_utils.byte_bounds(a) if hasattr(np.lib, "array_utils") else np.byte_bounds(a)
    return int(lo), int(hi)


def _overlap(a: Iterable[Range], b: Iterable[Range]) -> bool:
    bl = list(b)
    return any(lo < h and l2 < hi for lo, hi in a for l2, h in bl)


@dataclass
class _Op:
    stream: EmuStream
    seq: int
    name: str
    fn: Callable[[], None]
    reads: list[Range]
    writes: list[Range]
    after: list[tuple[EmuStream, int]] = field(default_factory=list)  # run these streams up to seq first


class Scheduler:
    """All emulated streams of the process (one, like one CUDA context)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.streams: dict[int, EmuStream] = {}
        self._local = threading.local()
        self.executing = 0
        self.null = EmuStream(null=True, scheduler=self)

    # -- current stream (``with stream:``) --------------------------------------------------
    def _stack(self) -> list[EmuStream]:
        st = getattr(self._local, "stack", None)
        if st is None:
            st = self._local.stack = []
        return st

    def current(self) -> EmuStream:
        st = self._stack()
        return st[-1] if st else self.null

    # -- queueing ---------------------------------------------------------------------------
    def _blocking(self) -> list[EmuStream]:
        return [s for s in self.streams.values() if not s.non_blocking and not s.null]

    def enqueue(self, stream: EmuStream | None, name: str, fn: Callable[[], None], reads: Iterable[Range | None] = (), writes: Iterable[Range | None] = ()) -> None:
        s = stream or self.current()
        r = [x for x in reads if x is not None]
        w = [x for x in writes if x is not None]
        with self.lock:
            # default-stream semantics: implicit ordering between the null stream and blocking streams
            implicit = self._blocking() if s.null else ([self.null] if not s.non_blocking else [])
            for t in implicit:
                if t.queue or t.seq:
                    s.order_after(t, t.seq)
            for t in self.streams.values():
                if t is s:
                    continue
                ordered = s.deps.get(t, 0)
                for op in t.queue:
                    if op.seq <= ordered:
                        continue
                    if _overlap(op.writes, r + w) or _overlap(op.reads, w):
                        raise RaceError(
                            f"{name} on {s} touches memory that {op.name} on {t} (still pending) "
                            f"{'writes' if _overlap(op.writes, r + w) else 'reads'}; no event or "
                            "synchronisation orders the two streams"
                        )
            s.seq += 1
            after = [(t, q) for t, q in s.deps.items()]
            s.queue.append(_Op(s, s.seq, name, fn, r, w, after))

    def check_host_read(self, a: Any, what: str = "host read") -> None:
        """Raise when ``a`` has writes still queued on any stream."""
        rng = byte_range(a)
        if rng is None or self.executing:
            return
        with self.lock:
            for t in self.streams.values():
                for op in t.queue:
                    if _overlap(op.writes, [rng]):
                        raise RaceError(f"{what} of an array that {op.name} on {t} has not written yet (the stream was not synchronised)")

    def synchronize_all(self) -> None:
        for s in list(self.streams.values()):
            s.synchronize()

    def pending(self) -> int:
        return sum(len(s.queue) for s in self.streams.values())

    def reset(self) -> None:
        """Drop every queue (between tests)."""
        with self.lock:
            for s in self.streams.values():
                s.queue.clear()
                s.deps.clear()


class EmuStream:
    """``cupy.cuda.Stream`` look-alike whose work is queued (see module docstring)."""

    _next_ptr = 0x7000

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False, *, scheduler: Scheduler | None = None) -> None:
        self.sched = scheduler or SCHED
        self.null = null
        self.non_blocking = non_blocking
        EmuStream._next_ptr += 16
        self.ptr = 0 if null else EmuStream._next_ptr
        self.queue: list[_Op] = []
        self.seq = 0
        self.deps: dict[EmuStream, int] = {}
        self.synchronized = 0
        self.sched.streams[id(self)] = self

    def __repr__(self) -> str:
        kind = "null stream" if self.null else ("non-blocking" if self.non_blocking else "blocking")
        return f"<stream {self.ptr:#x} {kind}>"

    def __hash__(self) -> int:
        return id(self)

    def order_after(self, t: EmuStream, seq: int) -> None:
        if seq > self.deps.get(t, 0):
            self.deps[t] = seq
        for u, q in t.deps.items():  # transitive
            if u is not self and q > self.deps.get(u, 0):
                self.deps[u] = q

    def run_until(self, seq: int) -> None:
        with self.sched.lock:
            while self.queue and self.queue[0].seq <= seq:
                op = self.queue.pop(0)
                for t, q in op.after:
                    if t is not self:
                        t.run_until(q)
                self.sched.executing += 1
                try:
                    op.fn()
                finally:
                    self.sched.executing -= 1

    def synchronize(self) -> None:
        self.synchronized += 1
        self.run_until(self.seq)

    def record(self, event: EmuEvent | None = None) -> EmuEvent:
        ev = event or EmuEvent()
        ev.record(self)
        return ev

    def wait_event(self, event: EmuEvent) -> None:
        if event.stream is not None and event.stream is not self:
            self.order_after(event.stream, event.seq)

    def done(self) -> bool:
        return not self.queue

    def __enter__(self) -> EmuStream:
        self.sched._stack().append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sched._stack().pop()

    def use(self) -> EmuStream:
        self.sched._stack().append(self)
        return self


class EmuEvent:
    """``cupy.cuda.Event`` look-alike: a position in one stream's queue."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.stream: EmuStream | None = None
        self.seq = 0

    def record(self, stream: EmuStream | None = None) -> None:
        s = stream or SCHED.current()
        self.stream, self.seq = s, s.seq

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.run_until(self.seq)

    @property
    def done(self) -> bool:
        return self.stream is None or not any(op.seq <= self.seq for op in self.stream.queue)


SCHED = Scheduler()


def current_stream() -> EmuStream:
    return SCHED.current()


def check_host_read(a: Any, what: str = "host read") -> None:
    SCHED.check_host_read(a, what)


class EmuDeviceArray(np.ndarray):
    """A NumPy array that stands for device memory: NumPy ufuncs and functions on it (a test reading
    it) raise :class:`RaceError` while a stream still has writes to it queued."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        for a in (*inputs, *kwargs.get("out", ())):
            if isinstance(a, EmuDeviceArray):
                SCHED.check_host_read(a, f"numpy {ufunc.__name__}")
        args = [a.view(np.ndarray) if isinstance(a, EmuDeviceArray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, EmuDeviceArray) else a for a in kwargs["out"])
        return getattr(ufunc, method)(*args, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        for a in _flatten(args):
            if isinstance(a, EmuDeviceArray):
                SCHED.check_host_read(a, f"numpy.{func.__name__}")
        return super().__array_function__(func, types, args, kwargs)


def _flatten(args: Any) -> Iterator[Any]:
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flatten(a)
        else:
            yield a


def as_device(a: np.ndarray) -> EmuDeviceArray:
    return a.view(EmuDeviceArray)


@contextlib.contextmanager
def fresh() -> Iterator[Scheduler]:
    """Run a block with empty queues and leave none behind."""
    SCHED.synchronize_all()
    try:
        yield SCHED
    finally:
        SCHED.reset()
