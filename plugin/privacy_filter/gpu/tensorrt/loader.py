"""Loading TensorRT and CuPy lazily, so that a host without them gets one clear error."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from privacy_filter.errors import UserError

log = logging.getLogger(__name__)


INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt-cu12 from NVIDIA's index (pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12); see README 'GPU deployment'"
)


CUPY_HINT = "CuPy is not installed: pip install 'privacy-filter[gpu]' (cupy-cuda12x); see README 'GPU deployment'"


class TensorRTUnavailable(UserError):
    """TensorRT (or CuPy) cannot be imported on this machine."""


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or one error saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailable(f"{INSTALL_HINT} ({exc})") from None


def import_cupy() -> tuple[ModuleType, ModuleType]:
    """(cupy, cupyx), or one error saying how to install them."""
    try:
        return importlib.import_module("cupy"), importlib.import_module("cupyx")
    except ImportError as exc:
        raise TensorRTUnavailable(f"{CUPY_HINT} ({exc})") from None


def trt_major(trt: ModuleType) -> int:
    """Major version of the imported TensorRT (10 or 11 are supported)."""
    try:
        major = int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        raise TensorRTUnavailable(f"cannot read the TensorRT version from {getattr(trt, '__version__', None)!r}") from None
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: the name-based I/O API needs TensorRT 10 or 11")
    return major


def gpu_name(cp: ModuleType | None = None) -> str:
    """Name of the current CUDA device, or 'unknown' when it cannot be read (recorded, not enforced)."""
    try:
        if cp is None:
            cp, _ = import_cupy()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is informative only
        return "unknown"


def trt_logger(trt: ModuleType) -> Any:
    level = trt.Logger.INFO if log.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING
    return trt.Logger(level)
