"""Run and compile-check the CUDA kernels of ``kernels/`` without a GPU.

Nothing here is a production path.  It exists because no machine of this project has a GPU:

* :class:`HostRawModule` is a look-alike of ``cupy.RawModule``.  It compiles the *same*
  ``.cu`` source with g++ through ``tests/support/emu/cuda_host_shim.h`` and the grid launcher
  ``tests/support/emu/cuda_host_runtime.cpp`` (OpenMP over blocks, fibers for ``__syncthreads``),
  loads it with ctypes and launches kernels on NumPy arrays.  Every launch is type-checked
  against the C signature (:mod:`privacy_filter.gpu.kernel_abi`), like the CuPy backend's.
  Libraries are cached by a hash of everything that goes into them, in a cache directory
  (``$PRIVACY_FILTER_EMU_CACHE`` or the user cache dir), never in the repository.
* :func:`nvrtc_compile` compiles a source to PTX with NVRTC through CuPy's low-level bindings,
  which work without a driver (``RawModule`` compilation does not).
* :func:`nvcc_compile` compiles a source to a cubin for one ``sm_XX`` with ``nvcc``.

The emulator is 10-25x slower than OpenCV and does not model warps or intra-kernel races: it
proves the arithmetic, indexing and edge handling of the kernels, not their speed (docs/gpu.md).
Stream ordering *is* modelled: :class:`EmulatedRuntime` queues its work on lazy streams
(:mod:`support.lazy_streams`), so a missing synchronisation or event fails a test.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privacy_filter.gpu.effects import Runtime
from privacy_filter.gpu.kernel_abi import KernelSignature, check_args, expand_includes, parse_kernels
from privacy_filter.gpu.kernels import KERNEL_DIR
from support.lazy_streams import SCHED, EmuDeviceArray, EmuStream, as_device, byte_range, check_host_read

EMU_DIR = Path(__file__).resolve().parent / "emu"  # the host shim: test harness, not product
MODE_AUTO, MODE_PLAIN, MODE_FIBER = "auto", "plain", "fiber"
_MODES = {MODE_PLAIN: 0, MODE_FIBER: 1}
_RC_TEXT = {-1: "exception in kernel", -2: "__syncthreads() called in PLAIN mode", -3: "bad launch geometry"}
_CXXFLAGS = ("-O2", "-std=c++17", "-fopenmp", "-fPIC", "-shared", "-U_FORTIFY_SOURCE", "-mtls-dialect=gnu2", "-fno-strict-aliasing", "-ffp-contract=off", "-w")
_build_lock = threading.Lock()

_SCALAR_CTYPES = {
    np.dtype(np.int32): ctypes.c_int32,
    np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.int64): ctypes.c_int64,
    np.dtype(np.uint8): ctypes.c_uint8,
    np.dtype(np.int8): ctypes.c_int8,
    np.dtype(np.uint16): ctypes.c_uint16,
    np.dtype(np.int16): ctypes.c_int16,
    np.dtype(np.float64): ctypes.c_double,
}


class EmulationError(RuntimeError):
    """A kernel launch failed under emulation (bad geometry, barrier in PLAIN mode...)."""


def cache_dir() -> Path:
    env = os.environ.get("PRIVACY_FILTER_EMU_CACHE")
    if env:
        d = Path(env)
    else:
        import platformdirs

        d = Path(platformdirs.user_cache_dir("privacy-filter")) / "hostcuda"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _include_dirs(options: Sequence[str]) -> list[str]:
    return [o[2:] for o in options if o.startswith("-I")]


def _headers_text(dirs: Sequence[str | Path]) -> str:
    """Text of every .cuh/.h that a kernel may include, for the cache key."""
    parts = []
    for d in dirs:
        for p in sorted(Path(d).glob("*.cuh")) + sorted(Path(d).glob("*.h")):
            parts.append(p.name + "\n" + p.read_text())
    return "\n".join(parts)


class HostFunction:
    """One kernel of a :class:`HostRawModule`; call it like ``cupy.RawKernel``."""

    def __init__(self, module: HostRawModule, sig: KernelSignature, mode: str) -> None:
        self._mod = module
        self.sig = sig
        self.mode = mode
        self._call = getattr(module._lib, f"emu_call_{sig.name}")

    def __call__(self, grid: Sequence[int], block: Sequence[int], args: Sequence[Any], *, mode: str | None = None, workers: int = 0) -> None:
        check_args(self.sig, args)
        holders: list[Any] = []
        for p, a in zip(self.sig.params, args):
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"kernel {self.sig.name} argument {p.name}: host emulation needs a NumPy array")
                if not p.decl.startswith("const") and not a.flags.writeable:
                    raise ValueError(f"kernel {self.sig.name} argument {p.name}: output array is read-only")
                holders.append(ctypes.c_void_p(a.ctypes.data))
            else:
                holders.append(_SCALAR_CTYPES[p.dtype](a.item()))
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        g = tuple(int(v) for v in grid) + (1,) * (3 - len(grid))
        b = tuple(int(v) for v in block) + (1,) * (3 - len(block))
        m = mode or self.mode
        if m == MODE_AUTO:
            m = MODE_FIBER if self.sig.uses_syncthreads else MODE_PLAIN
        rc = self._mod._lib.emu_launch(ctypes.cast(self._call, ctypes.c_void_p), argv, *g, *b, _MODES[m], int(workers))
        if rc != 0:
            detail = self._mod._lib.emu_last_error().decode(errors="replace")
            raise EmulationError(f"emu_launch {self.sig.name} rc={rc} ({_RC_TEXT.get(rc, 'error')}): {detail}")


class HostRawModule:
    """``cupy.RawModule`` look-alike that runs the kernels on the CPU (see module docstring).

    ``code`` is CUDA source text, ``path`` a ``.cu`` file (unlike CuPy, where ``path`` is a
    cubin).  ``options`` accepts ``-I<dir>`` and ``-D<macro>`` like NVRTC.
    """

    def __init__(self, code: str | None = None, *, path: str | Path | None = None, options: Sequence[str] = (), extra_cxxflags: Sequence[str] = ()) -> None:
        if (code is None) == (path is None):
            raise ValueError("give exactly one of code= and path=")
        self.source = Path(path).read_text() if path is not None else str(code)
        self.options = tuple(options)
        self.kernels = parse_kernels(self.source)
        if not self.kernels:
            raise ValueError('no extern "C" __global__ kernels found in the source')
        extra = tuple(extra_cxxflags) + tuple(os.environ.get("HOSTCUDA_EXTRA_FLAGS", "").split())
        self.library = self._build(extra)
        self._lib = ctypes.CDLL(str(self.library))
        self._lib.emu_launch.restype = ctypes.c_int
        self._lib.emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_int, ctypes.c_int]
        self._lib.emu_last_error.restype = ctypes.c_char_p

    def _translation_unit(self) -> str:
        lines = ['#include "cuda_host_shim.h"', '#line 1 "kernel.cu"', self.source, ""]
        for sig in self.kernels.values():
            call = ", ".join(f"*({p.decl}*)a[{i}]" for i, p in enumerate(sig.params))
            lines.append(f'extern "C" void emu_call_{sig.name}(void** a) {{ {sig.name}({call}); }}')
        return "\n".join(lines) + "\n"

    def _build(self, extra: Sequence[str]) -> Path:
        tu = self._translation_unit()
        incs = [str(EMU_DIR), str(KERNEL_DIR)] + _include_dirs(self.options)
        defines = [o for o in self.options if o.startswith("-D")]
        runtime = (EMU_DIR / "cuda_host_runtime.cpp").read_text()
        key = hashlib.sha256("\0".join([tu, runtime, _headers_text(incs), " ".join(_CXXFLAGS + tuple(extra)), " ".join(defines), _cxx_version()]).encode()).hexdigest()[:24]
        out = cache_dir() / f"kern_{key}.so"
        if out.exists():
            return out
        with _build_lock, tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            src = Path(tmp) / "tu.cpp"
            src.write_text(tu)
            tmp_so = Path(tmp) / "k.so"
            cmd = [_cxx(), *_CXXFLAGS, *extra, *defines, *(f"-I{d}" for d in incs), str(src), str(EMU_DIR / "cuda_host_runtime.cpp"), "-o", str(tmp_so)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise EmulationError(f"g++ failed to build the host emulation:\n{res.stderr[-4000:]}")
            os.replace(tmp_so, out)  # atomic: parallel test workers never see a half-written library
        return out

    def get_function(self, name: str, mode: str = MODE_AUTO) -> HostFunction:
        if name not in self.kernels:
            raise KeyError(f"kernel {name!r} not in module (has {sorted(self.kernels)})")
        return HostFunction(self, self.kernels[name], mode)


def _cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        raise EmulationError("g++ not found: host emulation of the CUDA kernels needs a C++17 compiler with OpenMP")
    return cxx


_CXX_VERSION: str | None = None


def _cxx_version() -> str:
    global _CXX_VERSION
    if _CXX_VERSION is None:
        _CXX_VERSION = subprocess.run([_cxx(), "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    return _CXX_VERSION


def load_kernel_module(name: str, options: Sequence[str] = ()) -> HostRawModule:
    """HostRawModule of ``kernels/<name>``, from the same self-contained string the CuPy backend compiles."""
    return HostRawModule(code=expand_includes((KERNEL_DIR / name).read_text(), KERNEL_DIR), options=options)


# --------------------------------------------------------------------------- compile checks


def nvrtc_compile(source: str, arch: str = "compute_75", options: Sequence[str] = (), name: str = "kernel.cu", include_kernel_dir: bool = True) -> bytes:
    """PTX of ``source`` from NVRTC via ``cupy.cuda.nvrtc`` (no driver needed); raises with the log."""
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(source, name, [], [])
    try:
        opts = [f"-arch={arch}", *(["-std=c++17", f"-I{KERNEL_DIR}"] if include_kernel_dir else []), *options]
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise EmulationError(f"NVRTC ({arch}) failed to compile {name}: {exc}\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if log.strip() and "warning" in log:
        raise EmulationError(f"NVRTC ({arch}) warnings for {name}:\n{log}")
    return ptx if isinstance(ptx, bytes) else ptx.encode()


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or (str(Path("/usr/local/cuda/bin/nvcc")) if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def nvcc_compile(path: Path, archs: Sequence[str], workdir: Path) -> tuple[bytes, str]:
    """Fatbin of ``path`` with one cubin per ``sm_XX`` in ``archs`` and ptxas's resource report.

    Warnings are errors.  One nvcc process for all architectures (it is the slow part).
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise EmulationError("nvcc not found on PATH")
    out = workdir / f"{path.stem}.fatbin"
    gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in archs]
    res = subprocess.run(
        [nvcc, "-fatbin", *gencode, "-std=c++17", "-Xptxas", "-v", "-Werror", "all-warnings", f"-I{KERNEL_DIR}", str(path), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise EmulationError(f"nvcc ({', '.join(archs)}) failed for {path.name}:\n{res.stderr[-4000:]}")
    return out.read_bytes(), res.stderr


def ptx_entries(ptx: bytes) -> list[str]:
    """Kernel entry points named in a PTX text."""
    return [e.decode() for e in re.findall(rb"\.entry\s+(\w+)", ptx)]


class _EmuXp:
    """The ``xp`` of :class:`EmulatedRuntime`: NumPy, but new arrays are :class:`EmuDeviceArray`.

    Allocations are immediate (CuPy's are asynchronous memsets on the current stream: not modelled).
    ``asarray`` of host data is a copy queued on the current stream, like CuPy's.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def empty(self, shape: Any, dtype: Any = np.float32) -> EmuDeviceArray:
        return as_device(np.full(shape, 0xCD if np.dtype(dtype).kind in "iu" else np.nan, dtype))

    def zeros(self, shape: Any, dtype: Any = np.float32) -> EmuDeviceArray:
        return as_device(np.zeros(shape, dtype))

    def full(self, shape: Any, value: Any, dtype: Any = None) -> EmuDeviceArray:
        return as_device(np.full(shape, value, dtype))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        if isinstance(a, EmuDeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        host = np.array(a, dtype=dtype, copy=True)  # pageable source: staged at the call
        dev = self.empty(host.shape, host.dtype)
        SCHED.enqueue(None, "cupy.asarray (h2d)", lambda: np.copyto(dev.view(np.ndarray), host), writes=[byte_range(dev)])
        return dev

    def ascontiguousarray(self, a: Any, dtype: Any = None) -> Any:
        if isinstance(a, np.ndarray) and a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
            return a
        src = a
        dev = self.empty(np.shape(a), dtype or a.dtype)
        SCHED.enqueue(None, "ascontiguousarray (d2d)", lambda: np.copyto(dev.view(np.ndarray), src, casting="unsafe"), reads=[byte_range(src)], writes=[byte_range(dev)])
        return dev


_XP = _EmuXp()


class EmulatedRuntime(Runtime):
    """Host emulation of :class:`CupyRuntime`: the same kernels built by g++, and the same stream
    behaviour: launches and copies are queued on this runtime's non-blocking stream
    (:mod:`support.lazy_streams`) and run only when the stream is synchronised or waited on."""

    def __init__(self, workers: int = 0, stream: EmuStream | None = None) -> None:
        self.xp = _EmuXp()
        self._load = load_kernel_module
        self._modules: dict[str, Any] = {}
        self.workers = workers
        self.stream = stream if stream is not None else EmuStream(non_blocking=True)
        self.launches: list[str] = []  # kernel names in launch order, for tests
        self.profile: dict[str, list[float]] | None = None

    def function(self, filename: str, name: str) -> Callable[..., None]:
        if filename not in self._modules:
            self._modules[filename] = self._load(filename)
        fn = self._modules[filename].get_function(name)
        params = fn.sig.params

        def launch(grid: Sequence[int], block: Sequence[int], args: Sequence[Any]) -> None:
            check_args(fn.sig, args)  # at the call, as CuPy does
            self.launches.append(name)
            args = tuple(args)
            reads = [byte_range(a) for p, a in zip(params, args) if p.pointer]
            writes = [byte_range(a) for p, a in zip(params, args) if p.pointer and not p.decl.startswith("const")]

            def run() -> None:
                t0 = time.perf_counter()
                fn(grid, block, args, workers=self.workers)  # HostFunction checks the types itself
                if self.profile is not None:
                    self.profile.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

            SCHED.enqueue(self.stream, name, run, reads=reads, writes=writes)

        return launch

    def kernel_times(self) -> dict[str, list[float]]:
        """Milliseconds per launch on the CPU (emulation, not GPU time)."""
        self.stream.synchronize()
        return self.profile or {}

    def to_device(self, host: np.ndarray, out: Any | None = None) -> Any:
        if out is None:  # CupyRuntime: xp.asarray on the current stream
            return _XP.asarray(host)
        src = np.array(host, copy=True)  # through the staging buffer (CupyRuntime waits before reusing it)
        dst = out[tuple(slice(0, s) for s in host.shape)]
        SCHED.enqueue(self.stream, "to_device (h2d)", lambda: np.copyto(dst.view(np.ndarray), src), writes=[byte_range(dst)])
        return out

    def to_host(self, dev: Any, out: np.ndarray) -> np.ndarray:
        src = dev[tuple(slice(0, s) for s in out.shape)]
        stage = np.empty(out.shape, out.dtype)
        SCHED.enqueue(self.stream, "to_host (d2h)", lambda: np.copyto(stage, src), reads=[byte_range(src)])
        self.stream.synchronize()
        out[...] = stage
        return out

    def host(self, dev: Any) -> np.ndarray:
        """What a test reads: a host copy, refused while a stream still has writes to ``dev`` queued."""
        check_host_read(dev)
        return np.array(dev, copy=True).view(np.ndarray)

    def is_device_array(self, a: Any) -> bool:
        return isinstance(a, np.ndarray)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def stream_context(self) -> Any:
        return self.stream
