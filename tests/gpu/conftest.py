"""GPU-test fixtures: every test starts and ends with empty lazy-stream queues (support.lazy_streams)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import lazy_streams


@pytest.fixture(autouse=True)
def _empty_stream_queues() -> Iterator[None]:
    lazy_streams.SCHED.reset()
    yield
    lazy_streams.SCHED.reset()
