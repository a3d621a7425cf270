"""Engine input and output on the GPU: ``kernels/preprocess.cu`` and ``kernels/outputs.cu``.

The device mirror of :mod:`privacy_filter.engines.preprocess` (YUV planes → resized,
normalised RGB/BGR batch, one kernel for the whole batch) and
:mod:`privacy_filter.engines.outputs` (argmax/softmax/sigmoid/logits → probability).  The
parameters (placement, YUV→RGB matrix, normalisation) come from those modules' functions,
never re-derived here.  Like ``effects.cuda`` this has **not run on a GPU in this project**;
it is verified under host emulation against the CPU functions (tests/test_kernels_emulated.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from privacy_filter.effects.cuda import (
    BLOCK_2D,
    CupyRuntime,
    DevicePlanes,
    Runtime,
    grid_2d,
)
from privacy_filter.engines.preprocess import Placement, placement, yuv_to_rgb_matrix
from privacy_filter.models.specs import ModelSpec


class CudaPreprocessor:
    """Fill a model input batch from device frames with one ``preprocess_yuv`` launch."""

    def __init__(self, spec: ModelSpec, runtime: Runtime | None = None) -> None:
        self.spec = spec
        self.rt = runtime if runtime is not None else CupyRuntime()
        self.xp = self.rt.xp
        self._fn = self.rt.function("preprocess.cu", "preprocess_yuv")
        offset, scale = spec.normalisation_arrays()
        with self.rt.stream_context():
            self._norm = self.rt.to_device(np.concatenate([offset, scale]).astype(np.float32))

    def tables(self, frames: Sequence[DevicePlanes], colorimetry: Sequence[tuple[str, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Placement]]:
        """Host tables (plane addresses, geometry, affine maps) for a batch; pure, testable."""
        n = len(frames)
        planes = np.zeros((n, 3), np.uint64)
        geom = np.zeros((n, 9), np.int32)
        coef = np.zeros((n, 12), np.float32)
        places = []
        for i, (f, (matrix, full)) in enumerate(zip(frames, colorimetry)):
            planes[i] = [_address(f.y), _address(f.u), _address(f.v)]
            pl = placement(self.spec, f.width, f.height)
            places.append(pl)
            geom[i] = [f.width, f.height, f.ypitch, f.cpitch, f.cstep, pl.x, pl.y, pl.width, pl.height]
            m = yuv_to_rgb_matrix(matrix, full)
            if self.spec.color == "bgr":
                m = m[::-1]
            coef[i] = np.ascontiguousarray(m).reshape(-1)
        return planes, geom, coef, places

    def __call__(self, frames: Sequence[DevicePlanes], colorimetry: Sequence[tuple[str, bool]] | None = None,
                 out: Any | None = None) -> tuple[Any, list[Placement]]:
        """(batch tensor on the device, placements).  ``colorimetry``: (matrix, full_range) per frame."""
        if not frames:
            raise ValueError("empty batch")
        colorimetry = colorimetry or [("bt601", False)] * len(frames)
        planes, geom, coef, places = self.tables(frames, colorimetry)
        s = self.spec
        shape = (len(frames), 3, s.height, s.width) if s.input_layout == "NCHW" else (len(frames), s.height, s.width, 3)
        if out is not None and (tuple(out.shape) != shape or out.dtype != np.float32):
            raise ValueError(f"output buffer must be float32 {shape}, got {out.dtype} {tuple(out.shape)}")
        with self.rt.stream_context():  # copies and launch on the runtime's stream, in order
            if out is None:
                out = self.xp.empty(shape, np.float32)
            d_planes, d_geom, d_coef = (self.rt.to_device(a) for a in (planes, geom, coef))
            self._fn(grid_2d(s.width, s.height, z=len(frames)), BLOCK_2D,
                     (d_planes, d_geom, d_coef, self._norm, out, np.int32(s.width), np.int32(s.height),
                      np.int32(s.input_layout == "NHWC")))
        self._keep = (d_planes, d_geom, d_coef)  # alive until the (asynchronous) launch has run
        return out, places


def _address(a: Any) -> int:
    """Device (CuPy) or host (emulation) address of an array's first element."""
    if hasattr(a, "data") and hasattr(a.data, "ptr"):
        return int(a.data.ptr)
    return int(a.ctypes.data)


def decode_output(raw: Any, spec: ModelSpec, runtime: Runtime, out: Any | None = None) -> Any:
    """(N, h, w) float32 person probability on the device from a raw output batch on the device."""
    layout = spec.output_layout
    if raw.ndim == 3:
        n, h, w = raw.shape
        c, nhwc = 1, 0
    elif raw.ndim == 4:
        nhwc = int(layout == "NHWC")
        n, c, h, w = (raw.shape[0], raw.shape[3], raw.shape[1], raw.shape[2]) if nhwc else raw.shape
    else:
        raise ValueError(f"expected a rank-3 or rank-4 output, got shape {tuple(raw.shape)}")
    kind = spec.output_kind
    person = spec.person_index
    if kind == "argmax":
        if raw.dtype == np.int32:
            name = "decode_argmax_i32"
        elif raw.dtype == np.int64:
            name = "decode_argmax_i64"
        else:
            raise ValueError(f"argmax output must be int32 or int64, got {raw.dtype}")
    elif kind in ("softmax", "sigmoid"):
        name = "decode_channel_f32"
        if kind == "sigmoid" and c == 1:
            person = 0
    elif kind == "logits":
        name = "decode_logits_f32"
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    if name.endswith("f32") and raw.dtype != np.float32:
        raise ValueError(f"{kind} output must be float32 here, got {raw.dtype}")
    if person >= c and not (kind == "argmax"):
        raise ValueError(f"person index {person} out of range for {c} channels")
    with runtime.stream_context():
        if out is None:
            out = runtime.xp.empty((n, h, w), np.float32)
        runtime.function("outputs.cu", name)(
            grid_2d(w, h, z=n), BLOCK_2D,
            (raw, out, np.int32(c), np.int32(h), np.int32(w), np.int32(nhwc), np.int32(person)))
    return out
