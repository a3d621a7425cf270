"""Per-stream counters (count everything: every drop and every covered frame has a counter), shared across worker processes.

Service mode runs each role in its own process, and a worker may be SIGKILLed at any
moment, so counts live in one shared-memory array laid out as (role, stream, counter)
and created by the supervisor before it starts the workers.  Each role writes only its
own block (no locks, nothing lost when a worker dies); readers sum over roles.  The
same ``Board`` works in one process (``shared=False``) for ``process`` and for tests.

Prometheus exposure is a custom collector over the array, so the supervisor serves
``/metrics`` without prometheus-client's multiprocess mode:

* ``privacy_filter_frames_in_total{stream}`` and likewise ``frames_out``,
  ``frames_covered_whole``, ``frames_passed_unfiltered``, ``frames_dropped``, ``reconnects``, ``frames_resized``, ``worker_restarts``,
  ``duplicates_discarded``;
* ``privacy_filter_bad_messages_total{stream,kind}`` with ``kind`` from
  ``privacy_filter.wire.BAD_KINDS``;
* ``privacy_filter_frames_covered_whole_by_reason_total{stream,reason}``: the frames the CCTV cover
  chose to cover whole (``reason`` from ``COVER_REASONS``: the motion layer learning its background,
  or a global change); they are counted in ``frames_covered_whole`` too.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are served or exposed (~50 ms at start-up)
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry

from privacy_filter.errors import BAD_KINDS

PLAIN_COUNTERS = (
    "frames_in",
    "frames_out",
    "frames_covered_whole",
    "frames_covered_after_restart",
    "frames_passed_unfiltered",
    "frames_dropped",
    "reconnects",
    "frames_resized",
    "worker_restarts",
    "duplicates_discarded",
    "frames_refused_unmasked",
    "seq_jumps",
    "source_frames_missing",
)
#: Why the CCTV cover (engines.finder) covered a frame whole on purpose, not by failure.
COVER_REASONS = ("learning", "global_change")
COUNTERS = PLAIN_COUNTERS + tuple(f"bad_messages:{k}" for k in BAD_KINDS) + tuple(f"covered_whole:{r}" for r in COVER_REASONS)
UNKNOWN_STREAM = "_unknown"  # bad messages whose header names no known stream
STAGE_STREAM = "_stage"  # events of the shared stage process itself (its restarts)

_HELP = {
    "frames_in": "frames received from the source",
    "frames_out": "frames written or published",
    "frames_covered_whole": "frames covered whole because segmentation failed, timed out or was not ready (fail closed), after a restart (frames_covered_after_restart), or on purpose (see frames_covered_whole_by_reason)",
    "frames_covered_after_restart": "of frames_covered_whole: covered because a restart (of the stage, or of a live stream's decoder) lost the stream's temporal mask state (hold/smooth) and its window had not refilled yet",
    "frames_passed_unfiltered": "frames published unfiltered because segmentation failed and the stream has on_failure: pass",
    "frames_dropped": "frames dropped (live staleness, on_failure: drop, or lost to a crash)",
    "reconnects": "source reconnects of live streams",
    "frames_resized": "frames of another size than the stream's first, scaled to it (a resolution change mid-stream)",
    "worker_restarts": "worker processes restarted by the supervisor",
    "duplicates_discarded": "frames received twice after a worker restart and discarded",
    "frames_refused_unmasked": "frames an encoder refused because they came without a mask (not from the stage) on a stream without on_failure: pass",
    "seq_jumps": "frames an encoder refused because their seq jumped too far ahead of the last one written",
    "source_frames_missing": "frames a file source lacks: it ended before the duration its header declares (a truncated file), estimated from the frame rate",
}


class Counters:
    """Write handle for one role: ``inc(stream, name, n)``."""

    def __init__(self, board: Board, role: int) -> None:
        self._board = board
        self._role = role

    def inc(self, stream: str, name: str, n: int = 1) -> None:
        b = self._board
        b.array[self._role, b.stream_row(stream), b.counter_col(name)] += n

    def get(self, stream: str, name: str) -> int:
        """This role's own count (tests, and workers resuming after a restart)."""
        b = self._board
        return int(b.array[self._role, b.stream_row(stream), b.counter_col(name)])


class Board:
    """The counter array of a set of streams and roles, optionally in shared memory."""

    def __init__(self, streams: Sequence[str], roles: Sequence[str] = ("main",), *, shared: bool = False) -> None:
        self.streams = list(streams) + [UNKNOWN_STREAM, STAGE_STREAM]
        self.roles = list(roles)
        self._srow = {s: i for i, s in enumerate(self.streams)}
        self._ccol = {c: i for i, c in enumerate(COUNTERS)}
        n = len(self.roles) * len(self.streams) * len(COUNTERS)
        self._raw: Any = multiprocessing.RawArray("q", n) if shared else np.zeros(n, np.int64)
        self._arr: np.ndarray | None = None

    # pickling (spawned workers): the RawArray travels, the NumPy view is rebuilt
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_arr"] = None
        return d

    @property
    def array(self) -> np.ndarray:
        if self._arr is None:
            flat = np.frombuffer(self._raw, dtype=np.int64) if not isinstance(self._raw, np.ndarray) else self._raw
            self._arr = flat.reshape(len(self.roles), len(self.streams), len(COUNTERS))
        return self._arr

    def stream_row(self, stream: str) -> int:
        return self._srow.get(stream, self._srow[UNKNOWN_STREAM])

    def counter_col(self, name: str) -> int:
        try:
            return self._ccol[name]
        except KeyError:
            raise KeyError(f"unknown counter {name!r}; known: {', '.join(COUNTERS)}") from None

    def counters(self, role: str = "main") -> Counters:
        return Counters(self, self.roles.index(role))

    def value(self, stream: str, name: str) -> int:
        """Sum over all roles."""
        return int(self.array[:, self.stream_row(stream), self.counter_col(name)].sum())

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{stream: {counter: total}} over all roles; bad messages as ``bad_messages:<kind>``."""
        tot = self.array.sum(axis=0)
        return {s: {c: int(tot[i, j]) for j, c in enumerate(COUNTERS)} for i, s in enumerate(self.streams)}

    def bad_messages(self, stream: str | None = None) -> dict[str, int]:
        """{kind: count} for one stream, or summed over all streams."""
        snap = self.snapshot()
        rows = [snap[stream]] if stream is not None else list(snap.values())
        return {k: sum(r[f"bad_messages:{k}"] for r in rows) for k in BAD_KINDS}

    # --- prometheus ------------------------------------------------------------------
    def collector(self) -> Collector:
        return _BoardCollector(self)

    def registry(self) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry

        reg = CollectorRegistry(auto_describe=True)
        reg.register(self.collector())
        return reg

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Start the ``/metrics`` HTTP endpoint in a daemon thread of this process."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=addr, registry=self.registry())


class _BoardCollector:
    """A Prometheus custom collector; duck-typed (``collect``) rather than subclassing
    ``prometheus_client.registry.Collector`` so that importing this module does not import
    prometheus_client, which a plain ``process`` run never uses."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily

        snap = self.board.snapshot()
        for name in PLAIN_COUNTERS:
            fam = CounterMetricFamily(f"privacy_filter_{name}", _HELP[name], labels=["stream"])
            for s, row in snap.items():
                fam.add_metric([s], row[name])
            yield fam
        fam = CounterMetricFamily("privacy_filter_bad_messages", "malformed ZeroMQ messages dropped, by kind", labels=["stream", "kind"])
        for s, row in snap.items():
            for k in BAD_KINDS:
                fam.add_metric([s, k], row[f"bad_messages:{k}"])
        yield fam
        fam = CounterMetricFamily("privacy_filter_frames_covered_whole_by_reason", "frames covered whole on purpose by the CCTV cover, by reason", labels=["stream", "reason"])
        for s, row in snap.items():
            for r in COVER_REASONS:
                fam.add_metric([s, r], row[f"covered_whole:{r}"])
        yield fam


def parse_exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text page as {(name, labels): value}; for tests and tools."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
