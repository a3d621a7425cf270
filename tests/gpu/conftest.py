"""GPU-test fixtures: every test starts and ends with empty lazy-stream queues (support.lazy_streams)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import lazy_streams


@pytest.fixture(autouse=True)
def _empty_stream_queues() -> Iterator[None]:
    lazy_streams.SCHED.reset()
    yield
    lazy_streams.SCHED.reset()


@pytest.fixture(params=["emulated", pytest.param("cupy", marks=pytest.mark.gpu)])
def make_runtime(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """The CUDA runtime a parity test runs the kernels on: the host emulator here, and real CuPy on
    a machine with a usable device (``pytest -m gpu`` selects those cases; without a device they skip
    with the probe's reason, never pass)."""
    if request.param == "emulated":
        from support.gpu_emulation import EmulatedRuntime

        return EmulatedRuntime
    from privacy_filter.gpu.effects import CupyRuntime, cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is not None:
        pytest.skip(f"CuPy case: no usable CUDA device here ({reason})")
    return CupyRuntime
