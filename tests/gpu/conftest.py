"""GPU-test fixtures: every test starts and ends with empty lazy-stream queues (support.lazy_streams)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Any]:
    """install(version, int64_as, fail_build) → the fake ``tensorrt`` module (support.fake_tensorrt,
    NOT TensorRT), with fake ``cupy``/``cupyx``, in ``sys.modules`` for this test."""
    from support import fake_tensorrt as fake

    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))

    def _install(version: str = "10.8.0.43", int64_as: str = "int64", fail_build: bool = False) -> Any:
        trt = fake.make_fake_tensorrt(version, int64_as=int64_as, fail_build=fail_build)
        cp, cpx = fake.make_fake_cupy()
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "cupy", cp)
        monkeypatch.setitem(sys.modules, "cupyx", cpx)
        return trt

    return _install
