"""Engine input and output on the GPU: ``kernels/preprocess.cu`` and ``kernels/outputs.cu``.

The device mirror of :mod:`privacy_filter.engines.preprocess` (YUV 4:2:0 planes, I420 or NV12,
any pitch → resized, normalised RGB/BGR batch, one kernel launch for the whole batch) and
:mod:`privacy_filter.engines.outputs` (argmax/softmax/sigmoid/logits → (N, h, w) float32 person
probability).  With a TensorRT engine bound to CuPy buffers (``TensorRTSegmenter.infer_device``)
this keeps the whole path on the GPU: decoded planes → input tensor → engine → probability →
effect kernels.

The tables the kernels read are built from the same pure functions the CPU path uses
(``preprocess.placement``, ``preprocess.yuv_to_rgb_matrix``, ``ModelSpec.normalisation_arrays``,
``outputs.channel_axis``), never re-derived here, so both paths follow one definition.  The
runtime is an ``effects.cuda.Runtime``: the real ``CupyRuntime``, or the host-emulated one in
tests.  Like ``effects.cuda`` this has **not run on a GPU in this project**; it is verified under
host emulation against the CPU functions (tests/test_kernels_emulated.py,
tests/test_tensorrt_glue.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privacy_filter.engines.outputs import channel_axis
from privacy_filter.engines.preprocess import Placement, placement, yuv_to_rgb_matrix
from privacy_filter.gpu.effects import BLOCK_2D, CupyRuntime, DevicePlanes, Runtime, grid_2d
from privacy_filter.models.specs import ModelSpec

DEFAULT_COLORIMETRY = ("bt601", False)  # what preprocess.frame_colorimetry assumes for untagged video
_MAX_GEOMETRIES = 64  # per-geometry rows kept; a source changes size rarely, so this is never reached in practice

_GeomKey = tuple[int, int, int, int, int, str, bool]
_Rows = tuple[np.ndarray, np.ndarray, Placement]


def device_address(a: Any) -> int:
    """Address of an array's first element: ``.data.ptr`` for CuPy, ``ctypes.data`` for NumPy (emulation)."""
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    return int(ptr) if ptr is not None else int(a.ctypes.data)


class CudaPreprocessor:
    """Fill a model input batch from device frames with one ``preprocess_yuv`` launch.

    Made once per (spec, runtime) and reused frame after frame: the normalisation vector is on the
    device from the start, each frame geometry's table rows (pitches, letterbox placement, colour
    matrix) are computed once, and when a batch has the same planes and geometry as the previous one
    (a decoder's ring of device surfaces) its device tables are reused instead of uploaded again.
    """

    def __init__(self, spec: ModelSpec, runtime: Runtime | None = None) -> None:
        self.spec = spec
        self.rt = runtime if runtime is not None else CupyRuntime()
        self.xp = self.rt.xp
        self._fn = self.rt.function("preprocess.cu", "preprocess_yuv")
        offset, scale = spec.normalisation_arrays()
        with self.rt.stream_context():
            self._norm = self.rt.to_device(np.concatenate([offset, scale]).astype(np.float32))
        self._rows: dict[_GeomKey, _Rows] = {}
        # (host table bytes, device tables) of the last launch; also keeps those tables alive
        # until the asynchronous launch has read them.
        self._last: tuple[bytes, tuple[Any, Any, Any]] | None = None

    @property
    def item_shape(self) -> tuple[int, int, int]:
        s = self.spec
        return (3, s.height, s.width) if s.input_layout == "NCHW" else (s.height, s.width, 3)

    def frame_rows(self, frame: DevicePlanes, matrix: str, full_range: bool) -> _Rows:
        """(geom int32[9], coef float32[12], placement) of one frame geometry, computed once.

        The affine rows are put in model colour order, as ``preprocess.yuv_into`` does.
        """
        key = (frame.width, frame.height, frame.ypitch, frame.cpitch, frame.cstep, matrix, bool(full_range))
        rows = self._rows.get(key)
        if rows is None:
            pl = placement(self.spec, frame.width, frame.height)
            geom = np.array([frame.width, frame.height, frame.ypitch, frame.cpitch, frame.cstep, pl.x, pl.y, pl.width, pl.height], np.int32)
            m = yuv_to_rgb_matrix(matrix, full_range)
            coef = np.ascontiguousarray(m[::-1] if self.spec.color == "bgr" else m, np.float32).reshape(-1)
            if len(self._rows) >= _MAX_GEOMETRIES:
                self._rows.clear()
            rows = self._rows[key] = (geom, coef, pl)
        return rows

    def tables(self, frames: Sequence[DevicePlanes], colorimetry: Sequence[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Placement]]:
        """Host tables of a batch: planes u64 [N,3], geom int32 [N,9], coef float32 [N,12], placements."""
        if len(colorimetry) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(colorimetry)} colorimetry entries")
        n = len(frames)
        planes = np.empty((n, 3), np.uint64)
        geom = np.empty((n, 9), np.int32)
        coef = np.empty((n, 12), np.float32)
        places = []
        for i, (f, (matrix, full)) in enumerate(zip(frames, colorimetry)):
            planes[i] = (device_address(f.y), device_address(f.u), device_address(f.v))
            geom[i], coef[i], pl = self.frame_rows(f, matrix, full)
            places.append(pl)
        return planes, geom, coef, places

    def __call__(self, frames: Sequence[DevicePlanes], colorimetry: Sequence[tuple[str, bool]] | None = None, out: Any | None = None) -> tuple[Any, list[Placement]]:
        """(``out[:N]`` on the device, placements).  ``colorimetry``: (matrix, full_range) per frame.

        ``out`` may hold more items than the batch (an engine's max-batch input buffer); the kernel
        writes the first ``N``.  Without it a new (N, …) float32 array is allocated.
        """
        n = len(frames)
        if n == 0:
            raise ValueError("empty batch")
        colorimetry = list(colorimetry) if colorimetry is not None else [DEFAULT_COLORIMETRY] * n
        planes, geom, coef, places = self.tables(frames, colorimetry)
        item = self.item_shape
        if out is not None and (tuple(out.shape[1:]) != item or out.shape[0] < n or out.dtype != np.float32 or not out.flags.c_contiguous):
            raise ValueError(f"output buffer must be C-contiguous float32 [>={n}, {', '.join(map(str, item))}], got {out.dtype} {list(out.shape)}")
        key = planes.tobytes() + geom.tobytes() + coef.tobytes()
        with self.rt.stream_context():  # copies and launch on the runtime's stream, in order
            if out is None:
                out = self.xp.empty((n, *item), np.float32)
            if self._last is not None and self._last[0] == key:
                d_planes, d_geom, d_coef = self._last[1]
            else:
                d_planes, d_geom, d_coef = (self.rt.to_device(a) for a in (planes, geom, coef))
                self._last = (key, (d_planes, d_geom, d_coef))
            s = self.spec
            self._fn(
                grid_2d(s.width, s.height, z=n), BLOCK_2D, (d_planes, d_geom, d_coef, self._norm, out, np.int32(s.width), np.int32(s.height), np.int32(s.input_layout == "NHWC"))
            )
        return out[:n], places


def decoder_for(raw: Any, spec: ModelSpec) -> tuple[str, int, int, int, int]:
    """(kernel name, channels, height, width, channel index) for a raw output batch; pure, testable.

    Mirrors ``outputs.to_probability``: the class axis comes from ``outputs.channel_axis``; a
    one-channel sigmoid reads channel 0 whatever the spec's person index.
    """
    axis = channel_axis(raw, spec.output_layout)
    shape = tuple(int(d) for d in raw.shape)
    if axis is None:
        c, h, w = 1, shape[1], shape[2]
    elif axis == 1:
        c, h, w = shape[1], shape[2], shape[3]
    else:
        c, h, w = shape[3], shape[1], shape[2]
    kind, dtype = spec.output_kind, np.dtype(raw.dtype)
    index = spec.person_index
    if kind == "argmax":
        names = {np.dtype(np.int32): "decode_argmax_i32", np.dtype(np.int64): "decode_argmax_i64"}
        if dtype not in names:
            raise ValueError(f"argmax output of dtype {dtype} has no decoder (int32 or int64)")
        return names[dtype], c, h, w, index
    if kind in ("softmax", "sigmoid"):
        name = "decode_channel_f32"
        if kind == "sigmoid" and c == 1:
            index = 0
    elif kind == "logits":
        name = "decode_logits_f32"
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    if dtype != np.float32:
        raise ValueError(f"{kind} output of dtype {dtype}: only float32 is decoded on the device")
    if not 0 <= index < c:
        raise ValueError(f"person index {index} out of range for a {c}-channel {kind} output")
    return name, c, h, w, index


def decode_output(raw: Any, spec: ModelSpec, runtime: Runtime, out: Any | None = None) -> Any:
    """(N, h, w) float32 person probability on the device from a raw output batch on the device."""
    name, c, h, w, index = decoder_for(raw, spec)
    n = int(raw.shape[0])
    if not raw.flags.c_contiguous:  # the kernels index the batch densely
        raise ValueError(f"raw output must be C-contiguous, got strides {raw.strides}")
    if out is not None and (tuple(out.shape) != (n, h, w) or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise ValueError(f"probability buffer must be C-contiguous float32 [{n}, {h}, {w}], got {out.dtype} {list(out.shape)}")
    nhwc = np.int32(spec.output_layout == "NHWC" and raw.ndim == 4)
    with runtime.stream_context():
        if out is None:
            out = runtime.xp.empty((n, h, w), np.float32)
        runtime.function("outputs.cu", name)(grid_2d(w, h, z=n), BLOCK_2D, (raw, out, np.int32(c), np.int32(h), np.int32(w), nhwc, np.int32(index)))
    return out
