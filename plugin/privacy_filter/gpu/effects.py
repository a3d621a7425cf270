"""CUDA backend of the mask pipeline and effects: CuPy raw kernels from ``kernels/*.cu``.

**This path has never run on a GPU in this project**: no machine here has one.  What is
verified instead (docs/gpu.md): every kernel compiles with NVRTC and with nvcc for sm_75..sm_90,
and *this module's own orchestration code* runs under host emulation — the same ``.cu``
sources built by g++ (``support.gpu_emulation``), numpy standing in for cupy — and
matches the NumPy references of tests/reference.py and the CPU backend within ±2 levels
(in practice bit-exact).  ``scripts/gpu_smoke.py`` is the end-to-end check for a user with a GPU.

Design:

* kernels come from ``cupy.RawModule(code=source, options=...)``, compiled by NVRTC at
  run time and cached by CuPy (``~/.cupy/kernel_cache``);
* every launch goes through :func:`typed_launch`, which refuses a Python ``int``/``float``
  (CuPy would pass them as 64-bit) and arrays of the wrong dtype — the same check the
  emulator does;
* all work of one filter stage runs on one non-blocking CUDA stream (:class:`StageDevice`), shared
  by every stream's effect and the TensorRT engine; host↔device copies go through double-buffered
  pinned buffers (:class:`PinnedStaging`);
* the mask stays on the device from the probability map to the composite: only the final
  planes and the alpha come back.  :meth:`CudaStreamEffect.apply_device` takes device
  planes (I420 or NV12) and a device probability map and copies nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects.geometry import Geometry, resolve_geometry
from privacy_filter.effects.mask import bilinear_taps
from privacy_filter.effects.replace import open_replacement
from privacy_filter.errors import UserError
from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.gpu.kernel_abi import KernelSignature, check_args, expand_includes, parse_kernels
from privacy_filter.gpu.kernels import KERNEL_DIR

log = logging.getLogger(__name__)

KERNEL_FILES = ("mask.cu", "effects.cu", "preprocess.cu", "outputs.cu")
NVRTC_OPTIONS = ("-std=c++17",)  # CuPy adds -arch=... and -ftz=true itself
BLOCK_2D = (32, 8, 1)
BLOCK_1D = (256, 1, 1)
PIXELATE_THREADS = 128  # power of two (tree reduction in pixelate_composite)
SEG = 32  # must equal SEG in kernels/mask.cu
PITCH_ALIGN = 256  # bytes; device planes are pitched like cudaMallocPitch's


def kernel_source(filename: str) -> str:
    """The self-contained source string of ``kernels/<filename>`` exactly as NVRTC gets it at run time."""
    return expand_includes((KERNEL_DIR / filename).read_text(), KERNEL_DIR)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def grid_2d(w: int, h: int, block: tuple[int, int, int] = BLOCK_2D, z: int = 1) -> tuple[int, int, int]:
    return (_cdiv(w, block[0]), _cdiv(h, block[1]), z)


def aligned_pitch(width: int, align: int = PITCH_ALIGN) -> int:
    return _cdiv(width, align) * align


def typed_launch(kernel: Callable[..., Any], sig: KernelSignature, grid: Sequence[int], block: Sequence[int], args: Sequence[Any]) -> None:
    """Launch after checking ``args`` against the C signature (TypeError on a Python int/float)."""
    check_args(sig, args)
    kernel(tuple(grid), tuple(block), tuple(args))


# ------------------------------------------------------------------------------- runtimes


def compile_module(cupy: Any, source: str) -> Any:
    """The one way a kernel source becomes a module: ``cupy.RawModule`` with NVRTC_OPTIONS.

    Used by :class:`CupyRuntime` and by the availability probe, so that a host where this fails
    (e.g. a pip-only install where CuPy cannot find the CUDA headers, docs/gpu.md) fails the
    probe at start instead of every frame.
    """
    return cupy.RawModule(code=source, options=NVRTC_OPTIONS)


class Runtime:
    """Where kernels run and how memory moves; the backend code is the same for both."""

    xp: Any

    def function(self, filename: str, name: str) -> Callable[[Sequence[int], Sequence[int], Sequence[Any]], None]:
        raise NotImplementedError

    def to_device(self, host: np.ndarray, out: Any | None = None) -> Any:
        raise NotImplementedError

    def to_host(self, dev: Any, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def is_device_array(self, a: Any) -> bool:
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def kernel_times(self) -> dict[str, list[float]]:
        return {}

    def stream_context(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def select(self) -> None:
        """Make this runtime's device current for the calling thread (``cupy.cuda.Device(n).use()``)."""

    def evict_staging(self, shapes: Sequence[tuple[int, ...]]) -> None:
        """Free the pinned staging buffers of device buffers of these shapes (a frame size no longer used)."""


_StagingKey = tuple[str, tuple[int, ...], str]


class PinnedStaging:
    """Double-buffered pinned host buffers for asynchronous copies, per (direction, shape, dtype).

    Each key has two buffers used in turn.  After a copy is queued from (or into) a buffer an event
    is recorded on the stream; before the host writes that buffer again it waits on *that event*
    only, so frame N+1's upload does not wait for frame N's compute (a full stream synchronisation
    did).  Keys are evicted when the frame size they belong to goes away (:meth:`evict`) and, as a
    bound, the least recently used beyond ``max_keys``; an evicted buffer's pending copy is waited for.
    """

    def __init__(self, cupy: Any, cupyx: Any, buffers: int = 2, max_keys: int = 16) -> None:
        from collections import OrderedDict

        self._cp, self._cpx = cupy, cupyx
        self.buffers = buffers
        self.max_keys = max_keys
        self._pool: OrderedDict[_StagingKey, list[Any]] = OrderedDict()  # key -> [bufs, events, next]

    def __len__(self) -> int:
        return len(self._pool)

    def acquire(self, direction: str, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, _StagingKey, int]:
        key = (direction, tuple(int(d) for d in shape), np.dtype(dtype).str)
        entry = self._pool.get(key)
        if entry is None:
            entry = self._pool[key] = [[self._cpx.empty_pinned(shape, dtype) for _ in range(self.buffers)], [None] * self.buffers, 0]
            while len(self._pool) > self.max_keys:
                self._drop(next(iter(self._pool)))
        self._pool.move_to_end(key)
        slot = entry[2]
        entry[2] = (slot + 1) % self.buffers
        ev = entry[1][slot]
        if ev is not None:  # the copy that last used this buffer must have run before the host touches it
            ev.synchronize()
            entry[1][slot] = None
        return entry[0][slot], key, slot

    def release(self, key: _StagingKey, slot: int, stream: Any) -> None:
        """Record, on ``stream``, the end of the copy just queued with this buffer."""
        ev = self._cp.cuda.Event(block=False, disable_timing=True)
        ev.record(stream)
        self._pool[key][1][slot] = ev

    def evict(self, shapes: Sequence[tuple[int, ...]]) -> None:
        wanted = {tuple(int(d) for d in s) for s in shapes}
        for key in [k for k in self._pool if k[1] in wanted]:
            self._drop(key)

    def _drop(self, key: _StagingKey) -> None:
        for ev in self._pool[key][1]:
            if ev is not None:
                ev.synchronize()
        del self._pool[key]


class CupyRuntime(Runtime):
    """The real thing: NVRTC-compiled raw kernels on one non-blocking stream, pinned staging.

    One runtime per filter stage and device (:class:`StageDevice`): its stream is shared by the
    effects of every stream of the stage and by the TensorRT engine, so the device-resident chain
    needs no synchronisation; work that crosses to another stream is ordered with events.
    """

    def __init__(self, device: int = 0) -> None:
        import cupy
        import cupyx

        self.xp = cupy
        self._cupyx = cupyx
        self.device = int(device)
        self.select()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._modules: dict[str, Any] = {}
        self._sigs: dict[str, dict[str, KernelSignature]] = {}
        self.staging = PinnedStaging(cupy, cupyx)
        self.profile: dict[str, list[float]] | None = None  # set to {} to time every launch
        self._events: list[tuple[str, Any, Any]] = []

    def select(self) -> None:
        self.xp.cuda.Device(self.device).use()

    def _module(self, filename: str) -> Any:
        if filename not in self._modules:
            source = kernel_source(filename)
            self._modules[filename] = compile_module(self.xp, source)
            self._sigs[filename] = parse_kernels(source)
        return self._modules[filename]

    def function(self, filename: str, name: str) -> Callable[..., None]:
        kernel = self._module(filename).get_function(name)
        sig = self._sigs[filename][name]

        def launch(grid: Sequence[int], block: Sequence[int], args: Sequence[Any]) -> None:
            with self.stream:
                if self.profile is None:
                    typed_launch(kernel, sig, grid, block, args)
                    return
                start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
                start.record(self.stream)
                typed_launch(kernel, sig, grid, block, args)
                end.record(self.stream)
                self._events.append((name, start, end))

        return launch

    def kernel_times(self) -> dict[str, list[float]]:
        """Milliseconds per launch, by kernel name, from CUDA events (needs ``profile = {}``)."""
        self.stream.synchronize()
        for name, start, end in self._events:
            self.profile.setdefault(name, []).append(self.xp.cuda.get_elapsed_time(start, end))
        self._events.clear()
        return self.profile

    def to_device(self, host: np.ndarray, out: Any | None = None) -> Any:
        if out is None:  # small tables, made once per size: a copy on the current stream
            return self.xp.asarray(host)
        stage, key, slot = self.staging.acquire("h2d", out.shape, out.dtype)
        stage[tuple(slice(0, s) for s in host.shape)] = host
        out.set(stage, stream=self.stream)
        self.staging.release(key, slot, self.stream)
        return out

    def to_host(self, dev: Any, out: np.ndarray) -> np.ndarray:
        stage, key, slot = self.staging.acquire("d2h", dev.shape, dev.dtype)
        dev.get(stream=self.stream, out=stage)  # blocking: CuPy synchronises the stream after the copy
        self.stream.synchronize()
        out[...] = stage[tuple(slice(0, s) for s in out.shape)]
        return out

    def evict_staging(self, shapes: Sequence[tuple[int, ...]]) -> None:
        self.staging.evict(shapes)

    def is_device_array(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def stream_context(self) -> Any:
        return self.stream


#: The availability probe's kernel: compiled and launched through the production path.
PROBE_SOURCE = r"""
extern "C" __global__ void privacy_filter_probe(const int* __restrict__ x, int* __restrict__ out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2 * x[i] + 1;
}
"""
PROBE_N = 64


def cuda_device_reason() -> str | None:
    """None when CuPy sees at least one CUDA device with a working driver, else a short reason.

    The cheap half of the probe (no compile): what ONNX Runtime's and TensorRT's CUDA paths need.
    """
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError or a broken CUDA install: both mean 'no'
        return f"CuPy not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError (no driver) and friends: report the reason
        msg = str(exc).split(":")[0].strip() or type(exc).__name__
        return msg
    if n < 1:
        return "no CUDA device found"
    return None


def probe_kernel() -> None:
    """Compile PROBE_SOURCE with :func:`compile_module`, launch it with :func:`typed_launch` on a
    non-blocking stream, and read the result back; raises whatever fails, or RuntimeError on a wrong result."""
    import cupy

    sig = parse_kernels(PROBE_SOURCE)["privacy_filter_probe"]
    fn = compile_module(cupy, PROBE_SOURCE).get_function("privacy_filter_probe")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        x = cupy.arange(PROBE_N, dtype=cupy.int32)
        out = cupy.zeros(PROBE_N, dtype=cupy.int32)
        typed_launch(fn, sig, (1, 1, 1), (PROBE_N, 1, 1), (x, out, np.int32(PROBE_N)))
        got = out.get(stream=stream)
    stream.synchronize()
    want = 2 * np.arange(PROBE_N, dtype=np.int32) + 1
    if not np.array_equal(got, want):
        raise RuntimeError(f"the probe kernel ran but returned wrong values ({got[:4].tolist()} ...)")


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA effects can run here, else a short reason (e.g. cudaErrorInsufficientDriver).

    A device and a driver are not enough: this compiles and launches one tiny kernel through the
    production path (:func:`compile_module`, :func:`typed_launch`) and reads its result back, so that a
    host whose NVRTC or CUDA headers are missing fails here, at start, rather than at every frame.
    """
    reason = cuda_device_reason()
    if reason is not None:
        return reason
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - a missing libnvrtc raises a loader error, not an NVRTCError
        return f"NVRTC not available ({exc}); install nvidia-cuda-nvrtc-cu12 or cupy-cuda12x[ctk]"
    try:
        probe_kernel()
    except Exception as exc:  # noqa: BLE001 - compile, load, launch or copy: any failure means 'no'
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"the probe kernel did not compile and run ({type(exc).__name__}: {first}); see docs/gpu.md 'CUDA headers and NVRTC'"
    return None


# ---------------------------------------------------------------------------- device frames


@dataclass
class DevicePlanes:
    """A YUV 4:2:0 picture in device memory: pitched Y, and U/V (I420) or interleaved UV (NV12).

    ``u``/``v`` are the arrays whose first element is the first U/V sample: for NV12 they
    are views of the UV plane at offsets 0 and 1, with ``cstep = 2``.
    """

    width: int
    height: int
    y: Any
    u: Any
    v: Any
    ypitch: int
    cpitch: int
    cstep: int
    uv: Any | None = None  # NV12: the whole UV plane
    u_plane: Any | None = None  # I420: the whole U plane (for copies)
    v_plane: Any | None = None

    @classmethod
    def allocate(cls, xp: Any, width: int, height: int, layout: str = "i420", pitch_align: int = PITCH_ALIGN) -> DevicePlanes:
        cw, ch = chroma_size(width, height)
        yp = aligned_pitch(width, pitch_align)
        y = xp.zeros((height, yp), np.uint8)
        if layout == "nv12":
            cp = aligned_pitch(2 * cw, pitch_align)
            uv = xp.zeros((ch, cp), np.uint8)
            flat = uv.reshape(-1)
            return cls(width, height, y, flat, flat[1:], yp, cp, 2, uv=uv)
        if layout != "i420":
            raise ValueError(f"unknown device plane layout {layout!r} (i420 or nv12)")
        cp = aligned_pitch(cw, pitch_align)
        u = xp.zeros((ch, cp), np.uint8)
        v = xp.zeros((ch, cp), np.uint8)
        return cls(width, height, y, u, v, yp, cp, 1, u_plane=u, v_plane=v)

    @property
    def layout(self) -> str:
        return "nv12" if self.cstep == 2 else "i420"

    def frame_args(self) -> tuple[Any, ...]:
        """The (Y, ypitch, U, V, cpitch, cstep, W, H) prefix of every composite kernel."""
        return (self.y, np.int32(self.ypitch), self.u, self.v, np.int32(self.cpitch), np.int32(self.cstep), np.int32(self.width), np.int32(self.height))

    def upload(self, rt: Runtime, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        rt.to_device(y, self.y)
        if self.cstep == 2:
            cw, ch = chroma_size(self.width, self.height)
            inter = np.empty((ch, 2 * cw), np.uint8)
            inter[:, 0::2] = u
            inter[:, 1::2] = v
            rt.to_device(inter, self.uv)
        else:
            rt.to_device(u, self.u_plane)
            rt.to_device(v, self.v_plane)

    def download(self, rt: Runtime, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        rt.to_host(self.y, y)
        if self.cstep == 2:
            cw, ch = chroma_size(self.width, self.height)
            inter = np.empty((ch, 2 * cw), np.uint8)
            rt.to_host(self.uv, inter)
            u[...] = inter[:, 0::2]
            v[...] = inter[:, 1::2]
        else:
            rt.to_host(self.u_plane, u)
            rt.to_host(self.v_plane, v)


# ----------------------------------------------------------------------------- the effect


@dataclass
class _SizeState:
    """Device buffers and tables for one frame size (re-made when the size changes)."""

    geo: Geometry
    frame: DevicePlanes
    bin_a: Any  # u8 mask ping
    bin_b: Any  # u8 mask pong
    counts: Any  # u16 feather row counts
    alpha: Any  # u8 luma alpha (H, apitch)
    apitch: int
    full_alpha: Any | None = None  # all-255 alpha for cover_whole
    blur: dict[str, Any] | None = None
    repl: DevicePlanes | None = None


class CudaStreamEffect:
    """Mask post-processing + effect for one stream on the GPU; same interface as the CPU backend.

    ``apply(frame, prob)`` filters the I420 ``frame`` in place with the model-resolution
    person probability ``prob`` (NumPy or, on the CuPy runtime, a device array) and returns
    the frame-size alpha (uint8, 255 = covered).  ``cover_whole(frame)`` is the fail-closed
    picture; ``reset()`` drops the temporal state.
    """

    device = "cuda"

    def __init__(self, effect: EffectConfig, mask: MaskConfig, runtime: Runtime | None = None, layout: str = "i420") -> None:
        self.effect = effect
        self.mask = mask
        self.rt = runtime if runtime is not None else CupyRuntime()
        self.xp = self.rt.xp
        self.layout = layout
        self._replacement = open_replacement(effect)
        self._size: _SizeState | None = None
        self._q_shape: tuple[int, int] | None = None
        self._t = 0
        self._k: dict[tuple[str, str], Callable[..., None]] = {}

    # -- plumbing -----------------------------------------------------------------------

    def _fn(self, filename: str, name: str) -> Callable[..., None]:
        key = (filename, name)
        if key not in self._k:
            self._k[key] = self.rt.function(filename, name)
        return self._k[key]

    def _taps(self, src: int, dst: int) -> Any:
        i0, i1, w = bilinear_taps(src, dst)
        return self.rt.to_device(np.concatenate([i0, i1, w]).astype(np.int32))

    def _size_state(self, width: int, height: int) -> _SizeState:
        st = self._size
        if st is not None and (st.geo.width, st.geo.height) == (width, height):
            return st
        xp = self.xp
        if st is not None:  # a new frame size: the old size's pinned staging buffers go
            old = [a.shape for a in (st.frame.y, st.frame.uv, st.frame.u_plane, st.frame.v_plane, st.alpha) if a is not None]
            self.rt.evict_staging(old)
        geo = resolve_geometry(self.effect, self.mask, width, height)
        ap = aligned_pitch(width)
        st = _SizeState(
            geo=geo,
            frame=DevicePlanes.allocate(xp, width, height, self.layout),
            bin_a=xp.zeros((height, ap), np.uint8),
            bin_b=xp.zeros((height, ap), np.uint8),
            counts=xp.zeros((height, ap), np.uint16),
            alpha=xp.zeros((height, ap), np.uint8),
            apitch=ap,
        )
        self._size = st
        return st

    # -- mask ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the temporal state (new scene, stream restart)."""
        self._t = 0
        self._q_shape = None

    def _temporal_quantize(self, prob: Any) -> Any:
        """Sanitize + temporal + quantize at model resolution → Q (h, w) uint8 on the device."""
        xp = self.xp
        if self.rt.is_device_array(prob):
            if prob.ndim != 2:
                raise ValueError(f"person probability must be a 2-D (h, w) map, got shape {tuple(prob.shape)}")
            # A letterboxed map is a strided view of the engine's output: compact it on the device
            # (np.asarray of a CuPy array raises TypeError; a host round trip is not wanted anyway).
            p = prob if prob.dtype == np.float32 and prob.flags.c_contiguous else xp.ascontiguousarray(prob, dtype=np.float32)
        else:
            host = np.ascontiguousarray(np.asarray(prob, dtype=np.float32))
            if host.ndim != 2:
                raise ValueError(f"person probability must be a 2-D (h, w) map, got shape {host.shape}")
            p = self.rt.to_device(host, getattr(self, "_p_dev", None) if self._q_shape == host.shape else None)
            self._p_dev = p
        h, w = p.shape
        n = h * w
        if self._q_shape != (h, w):  # new model resolution: fresh temporal state
            self._q_shape = (h, w)
            self._t = 0
            self._q = xp.zeros((h, w), np.uint8)
            nslots = self.mask.hold_frames if self.mask.temporal == "hold" else 1
            self._ring = xp.zeros((nslots, n), np.float32)
            self._state = xp.zeros((n,), np.float32)
        mode = {"none": 0, "hold": 1, "smooth": 2}[self.mask.temporal]
        nslots = self._ring.shape[0]
        slot, count = self._t % nslots, min(self._t + 1, nslots)
        a = np.float32(self.mask.smooth_alpha)
        b = np.float32(1.0 - float(self.mask.smooth_alpha))
        self._fn("mask.cu", "mask_temporal_quantize")(
            (_cdiv(n, BLOCK_1D[0]), 1, 1),
            BLOCK_1D,
            (p, self._q, np.int32(n), np.int32(mode), self._ring, np.int32(slot), np.int32(count), self._state, a, b, np.int32(self._t == 0)),
        )
        self._t += 1
        return self._q

    def _alpha(self, st: _SizeState, q: Any) -> None:
        """Q → frame alpha in ``st.alpha`` (threshold, dilation, feather, target)."""
        geo = st.geo
        W, H, ap = geo.width, geo.height, np.int32(st.apitch)
        final_on, final_off = (0, 255) if geo.invert else (255, 0)
        r, f = geo.dilate, geo.feather
        qh, qw = q.shape
        if getattr(self, "_taps_key", None) != (qw, qh, W, H):
            self._taps_key = (qw, qh, W, H)
            self._xt, self._yt = self._taps(qw, W), self._taps(qh, H)
        last = r == 0 and f == 0
        on, off = (final_on, final_off) if last else (255, 0)
        dst = st.alpha if last else st.bin_a
        self._fn("mask.cu", "mask_upsample_threshold")(
            grid_2d(W, H), BLOCK_2D, (q, np.int32(qw), self._xt, self._yt, dst, np.int32(W), np.int32(H), ap, np.int32(geo.threshold8), np.int32(on), np.int32(off))
        )
        src = st.bin_a
        if r > 0:
            self._fn("mask.cu", "dilate_rows")(grid_2d(_cdiv(W, SEG), H), BLOCK_2D, (st.bin_a, ap, st.bin_b, ap, np.int32(W), np.int32(H), np.int32(r)))
            on, off = (final_on, final_off) if f == 0 else (255, 0)
            dst = st.alpha if f == 0 else st.bin_a
            self._fn("mask.cu", "dilate_cols")(grid_2d(W, _cdiv(H, SEG)), BLOCK_2D, (st.bin_b, ap, dst, ap, np.int32(W), np.int32(H), np.int32(r), np.int32(on), np.int32(off)))
        if f > 0:
            self._fn("mask.cu", "feather_rows")(grid_2d(_cdiv(W, SEG), H), BLOCK_2D, (src, ap, st.counts, ap, np.int32(W), np.int32(H), np.int32(f)))
            self._fn("mask.cu", "feather_cols_alpha")(
                grid_2d(W, _cdiv(H, SEG)), BLOCK_2D, (st.counts, ap, st.alpha, ap, np.int32(W), np.int32(H), np.int32(f), np.int32(geo.invert))
            )

    # -- effects ------------------------------------------------------------------------

    def _composite(self, st: _SizeState, frame: DevicePlanes, alpha: Any, kind: str) -> None:
        geo = st.geo
        W, H = geo.width, geo.height
        cw, ch = chroma_size(W, H)
        head = frame.frame_args() + (alpha, np.int32(st.apitch))
        if kind == "none":
            return
        if kind == "replace" and self._replacement is not None:
            ry, ru, rv = self._replacement.planes(W, H)
            if st.repl is None:
                st.repl = DevicePlanes.allocate(self.xp, W, H, "i420")
            st.repl.upload(self.rt, ry, ru, rv)
            r = st.repl
            self._fn("effects.cu", "composite_planes")(grid_2d(cw, ch), BLOCK_2D, head + (r.y, np.int32(r.ypitch), r.u, r.v, np.int32(r.cpitch), np.int32(r.cstep)))
        elif kind in ("fill", "replace", "overlay"):
            cy, cu, cv = geo.color_yuv
            o8 = geo.opacity8 if kind == "overlay" else 255
            self._fn("effects.cu", "composite_const")(grid_2d(cw, ch), BLOCK_2D, head + (np.int32(cy), np.int32(cu), np.int32(cv), np.int32(o8)))
        elif kind == "pixelate":
            b = geo.block
            self._fn("effects.cu", "pixelate_composite")((_cdiv(W, b), _cdiv(H, b), 1), (PIXELATE_THREADS, 1, 1), head + (np.int32(b),))
        elif kind == "blur":
            self._blur(st, frame, head)
        else:
            raise ValueError(f"unknown effect kind {kind!r}")

    def _blur(self, st: _SizeState, frame: DevicePlanes, head: tuple[Any, ...]) -> None:
        geo = st.geo
        W, H = geo.width, geo.height
        cw, ch = chroma_size(W, H)
        k, kc, box = geo.blur_factor, geo.blur_factor_c, geo.blur_box
        sw, sh = _cdiv(W, k), _cdiv(H, k)
        scw, sch = _cdiv(cw, kc), _cdiv(ch, kc)
        if st.blur is None:
            xp = self.xp
            st.blur = {
                "y": [xp.zeros((sh, sw), np.uint8) for _ in range(2)],
                "u": [xp.zeros((sch, scw), np.uint8) for _ in range(2)],
                "v": [xp.zeros((sch, scw), np.uint8) for _ in range(2)],
                "taps": (self._taps(sw, W), self._taps(sh, H), self._taps(scw, cw), self._taps(sch, ch)),
            }
        bl = st.blur
        planes = (
            ("y", frame.y, frame.ypitch, 1, W, H, k, sw, sh),
            ("u", frame.u, frame.cpitch, frame.cstep, cw, ch, kc, scw, sch),
            ("v", frame.v, frame.cpitch, frame.cstep, cw, ch, kc, scw, sch),
        )
        for name, src, pitch, step, pw, ph, kk, w, h in planes:
            ping, pong = bl[name]
            self._fn("effects.cu", "cell_means")(grid_2d(w, h), BLOCK_2D, (src, np.int32(pitch), np.int32(step), np.int32(pw), np.int32(ph), np.int32(kk), ping, np.int32(w)))
            for _ in range(geo.blur_passes):
                self._fn("effects.cu", "box_mean")(grid_2d(w, h), BLOCK_2D, (ping, np.int32(w), pong, np.int32(w), np.int32(w), np.int32(h), np.int32(box)))
                ping, pong = pong, ping
            bl[name + "_out"] = ping
        lxt, lyt, cxt, cyt = bl["taps"]
        self._fn("effects.cu", "composite_blur")(grid_2d(cw, ch), BLOCK_2D, head + (bl["y_out"], np.int32(sw), bl["u_out"], bl["v_out"], np.int32(scw), lxt, lyt, cxt, cyt))

    # -- public -------------------------------------------------------------------------

    def apply_device(self, frame: DevicePlanes, prob: Any) -> Any:
        """Filter device planes in place; returns the device alpha (H, pitch) view [:, :W]."""
        # Everything (allocations' memsets and table copies included) is issued on this
        # effect's non-blocking stream, which does not synchronise with the legacy default stream.
        with self.rt.stream_context():
            st = self._size_state(frame.width, frame.height)
            q = self._temporal_quantize(prob)
            self._alpha(st, q)
            self._composite(st, frame, st.alpha, self.effect.kind)
        return st.alpha[:, : frame.width]

    def apply(self, frame: YuvFrame, prob: Any) -> np.ndarray:
        """Filter ``frame`` in place (I420 planes) and return its alpha (H, W) uint8."""
        with self.rt.stream_context():
            st = self._size_state(frame.width, frame.height)
            st.frame.upload(self.rt, frame.y, frame.u, frame.v)
            self.apply_device(st.frame, prob)
            _writable(frame)
            st.frame.download(self.rt, frame.y, frame.u, frame.v)
            alpha = np.empty((frame.height, frame.width), np.uint8)
            self.rt.to_host(st.alpha, alpha)
        return alpha

    def cover_whole(self, frame: YuvFrame) -> np.ndarray:
        """Fail-closed picture: the effect at alpha 255 everywhere (overlay/none → fill)."""
        kind = self.effect.kind if self.effect.kind in ("pixelate", "blur", "replace", "fill") else "fill"
        with self.rt.stream_context():
            st = self._size_state(frame.width, frame.height)
            if st.full_alpha is None:
                st.full_alpha = self.xp.full((frame.height, st.apitch), 255, np.uint8)
            st.frame.upload(self.rt, frame.y, frame.u, frame.v)
            self._composite(st, st.frame, st.full_alpha, kind)
            _writable(frame)
            st.frame.download(self.rt, frame.y, frame.u, frame.v)
        return np.full((frame.height, frame.width), 255, np.uint8)

    def warm_up(self, width: int = 64, height: int = 64) -> None:
        """Compile every kernel module this effect uses and run it once on a blank frame, so that the
        first NVRTC compile and the first allocations happen before the first real frame's deadline.
        The temporal state is reset afterwards."""
        with self.rt.stream_context():
            for filename in ("mask.cu", "effects.cu"):
                self._fn(filename, "mask_temporal_quantize" if filename == "mask.cu" else "composite_const")
        cw, ch = chroma_size(width, height)
        frame = YuvFrame(np.zeros((height, width), np.uint8), np.full((ch, cw), 128, np.uint8), np.full((ch, cw), 128, np.uint8))
        self.apply(frame, np.zeros((max(1, height // 4), max(1, width // 4)), np.float32))
        self.reset()

    def close(self) -> None:
        if self._replacement is not None:
            self._replacement.close()


def create_stream_effect(effect: EffectConfig, mask: MaskConfig, runtime: Runtime | None = None) -> CudaStreamEffect:
    """The CUDA effect for one stream on ``runtime`` (the stage's :class:`StageDevice` runtime, whose
    stream all effects of a stage share); a UserError naming the reason when CUDA cannot run here."""
    if runtime is None:
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise UserError(f"device cuda: CUDA unavailable: {reason}")
    return CudaStreamEffect(effect, mask, runtime=runtime)


# ------------------------------------------------------------------------ the stage's device


@dataclass
class DeviceMap:
    """A frame on the device and its probability map there: what the device-resident path's
    ``segment`` hands to ``finish`` (the frame went up once; the map never comes down)."""

    planes: DevicePlanes
    prob: Any


class StageDevice:
    """One device of one filter stage: one runtime (one CUDA stream) for the segmenter and every
    stream's effect, device selection per thread, warm-up, and the device-resident chain.

    The chain (:meth:`segment` then :meth:`finish`): each frame's planes are uploaded once on the
    stage stream, ``segmenter.infer_device`` fills the engine input with the preprocessing kernel,
    runs the engine and decodes the map on that stream, ``CudaStreamEffect.apply_device`` draws the
    mask and the effect on the same planes, and only the finished planes and the alpha come back.
    One stream, so no synchronisation inside the chain; the host waits only to read the results.
    """

    def __init__(self, runtime: Runtime | None = None, device: int = 0) -> None:
        self.rt = runtime if runtime is not None else CupyRuntime(device)

    @classmethod
    def create(cls, device: int = 0) -> StageDevice:
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise UserError(f"device cuda: CUDA unavailable: {reason}")
        return cls(device=device)

    def select(self) -> None:
        """Make the stage's device current for the calling thread (each thread that launches work)."""
        self.rt.select()

    def bind(self, segmenter: Any) -> None:
        """Put the segmenter's device work on the stage stream (a TensorRT engine's ``use_stream``)."""
        use = getattr(segmenter, "use_stream", None)
        stream = getattr(self.rt, "stream", None)
        if callable(use) and stream is not None:
            use(stream)

    @staticmethod
    def resident(segmenter: Any, effects: Sequence[Any], runtime: Runtime) -> bool:
        """Whether the device-resident chain applies: an engine with ``infer_device``, untiled, and
        every effect a CUDA effect on this runtime."""
        return (
            callable(getattr(segmenter, "infer_device", None))
            and not getattr(segmenter, "tiles", None)
            and bool(effects)
            and all(isinstance(fx, CudaStreamEffect) and fx.rt is runtime for fx in effects)
        )

    def warm_up(self, effects: Sequence[Any], segmenter: Any | None = None, resident: bool = False) -> None:
        """Kernel compile and one run of every effect, and one inference (device chain when
        ``segmenter`` is given), before the first frame."""
        self.select()
        for fx in effects:
            if isinstance(fx, CudaStreamEffect):
                fx.warm_up()
        if segmenter is not None:
            blank = YuvFrame(np.zeros((64, 64), np.uint8), np.full((32, 32), 128, np.uint8), np.full((32, 32), 128, np.uint8))
            if resident:
                self.segment(segmenter, [blank])
                self.rt.synchronize()
            elif callable(getattr(segmenter, "infer_yuv", None)):
                segmenter.infer_yuv([blank])

    def segment(self, segmenter: Any, frames: Sequence[YuvFrame]) -> list[DeviceMap]:
        from privacy_filter.engines.preprocess import frame_colorimetry

        rt = self.rt
        planes = []
        with rt.stream_context():  # allocation (CuPy: a memset) and upload on the stage stream
            for f in frames:
                d = DevicePlanes.allocate(rt.xp, f.width, f.height, "i420")
                d.upload(rt, f.y, f.u, f.v)
                planes.append(d)
        probs = segmenter.infer_device(planes, rt, [frame_colorimetry(f) for f in frames])
        return [DeviceMap(d, p) for d, p in zip(planes, probs)]

    def finish(self, effect: CudaStreamEffect, frame: YuvFrame, item: DeviceMap) -> np.ndarray:
        """Draw the effect on the device planes and bring the finished planes and the alpha back."""
        alpha_dev = effect.apply_device(item.planes, item.prob)
        _writable(frame)
        with self.rt.stream_context():
            item.planes.download(self.rt, frame.y, frame.u, frame.v)
            alpha = np.empty((frame.height, frame.width), np.uint8)
            self.rt.to_host(alpha_dev, alpha)
        return alpha


def _writable(frame: YuvFrame) -> None:
    """Replace read-only planes (PyAV / ZeroMQ buffers) by writable copies before writing back."""
    if not (frame.y.flags.writeable and frame.u.flags.writeable and frame.v.flags.writeable):
        frame.y, frame.u, frame.v = (np.array(p, copy=True) for p in frame.planes)
