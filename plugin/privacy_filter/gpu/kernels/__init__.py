"""CUDA C sources of the GPU effects, shipped as package data.

The sources are compiled at run time by NVRTC (through CuPy) on GPU hosts, and by
g++ through the host-emulation shim in ``emu/`` in the test suite.
"""

from __future__ import annotations

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """Path of ``kernels/<name>`` (e.g. ``"effects.cu"``); raises if it does not exist."""
    path = KERNEL_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"kernel source {name!r} not found in {KERNEL_DIR}")
    return path
