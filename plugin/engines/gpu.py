"""Device-side engine front and back end: YUV planes → model input, model output → probability.

The launch code for two kernels of ``kernels/`` (written for the effects backend):
``preprocess.cu:preprocess_yuv`` fills the engine's input batch straight from device YUV 4:2:0
planes (I420 or NV12, any pitch), and ``outputs.cu:decode_*`` turns the engine's raw output into
an (N, h, w) float32 person probability.  With a TensorRT engine bound to CuPy buffers this keeps
the whole path on the GPU: decoded planes → input tensor → engine → probability → effect kernels.

The tables the kernels read are built here from the same pure functions the CPU path uses
(``preprocess.placement``, ``preprocess.yuv_to_rgb_matrix``, ``ModelSpec`` normalisation), so
both paths follow one definition.  ``rt`` is a ``privacy_filter.effects.cuda.Runtime``: the real
``CupyRuntime``, or the host-emulated one in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privacy_filter.engines.outputs import channel_axis
from privacy_filter.engines.preprocess import Placement, placement, yuv_to_rgb_matrix
from privacy_filter.models.specs import ModelSpec

BLOCK = (32, 8, 1)


def device_ptr(a: Any) -> int:
    """Address of an array's first element: ``.data.ptr`` for CuPy, ``ctypes.data`` for NumPy (emulation)."""
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    return int(ptr) if ptr is not None else int(a.ctypes.data)


def _grid(w: int, h: int, n: int) -> tuple[int, int, int]:
    return (-(-w // BLOCK[0]), -(-h // BLOCK[1]), n)


def preprocess_tables(frames: Sequence[Any], spec: ModelSpec, colorimetry: Sequence[tuple[str, bool]]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Placement]]:
    """(planes u64 [N,3], geom int32 [N,9], coef float32 [N,12], norm float32 [6], placements).

    ``frames`` are ``effects.cuda.DevicePlanes``; ``colorimetry`` is ``(matrix, full_range)`` per
    frame (``preprocess.frame_colorimetry`` of the source frame).  The affine rows are put in model
    colour order, as ``preprocess.yuv_into`` does.
    """
    n = len(frames)
    planes = np.empty((n, 3), np.uint64)
    geom = np.empty((n, 9), np.int32)
    coef = np.empty((n, 12), np.float32)
    places = []
    for i, (f, (matrix, full)) in enumerate(zip(frames, colorimetry)):
        place = placement(spec, f.width, f.height)
        places.append(place)
        planes[i] = (device_ptr(f.y), device_ptr(f.u), device_ptr(f.v))
        geom[i] = (f.width, f.height, f.ypitch, f.cpitch, f.cstep, place.x, place.y, place.width, place.height)
        m = yuv_to_rgb_matrix(matrix, full)
        coef[i] = (m[::-1] if spec.color == "bgr" else m).reshape(-1)
    offset, scale = spec.normalisation_arrays()
    norm = np.concatenate([offset, scale]).astype(np.float32)
    return planes, geom, coef, norm, places


def launch_preprocess(rt: Any, frames: Sequence[Any], spec: ModelSpec, out: Any,
                      colorimetry: Sequence[tuple[str, bool]] | None = None) -> list[Placement]:
    """Fill ``out[:N]`` (float32, the spec's layout) from device frames; returns each frame's placement."""
    n = len(frames)
    if colorimetry is None:
        colorimetry = [("bt601", False)] * n
    planes, geom, coef, norm, places = preprocess_tables(frames, spec, colorimetry)
    args = (rt.to_device(planes), rt.to_device(geom), rt.to_device(coef), rt.to_device(norm), out,
            np.int32(spec.width), np.int32(spec.height), np.int32(spec.input_layout == "NHWC"))
    rt.function("preprocess.cu", "preprocess_yuv")(_grid(spec.width, spec.height, n), BLOCK, args)
    return places


def _chw(raw: Any, layout: str) -> tuple[int, int, int]:
    """(C, H, W) of a raw output batch, per ``outputs.channel_axis``."""
    axis = channel_axis(raw, layout)
    if axis is None:
        return 1, int(raw.shape[1]), int(raw.shape[2])
    if axis == 1:
        return int(raw.shape[1]), int(raw.shape[2]), int(raw.shape[3])
    return int(raw.shape[3]), int(raw.shape[1]), int(raw.shape[2])


def launch_decode(rt: Any, raw: Any, spec: ModelSpec, out: Any) -> Any:
    """Decode a raw device output batch into ``out`` (N, H, W) float32; mirrors ``outputs.to_probability``."""
    c, h, w = _chw(raw, spec.output_layout)
    nhwc = np.int32(spec.output_layout == "NHWC" and raw.ndim == 4)
    dtype = np.dtype(raw.dtype)
    if spec.output_kind == "argmax":
        if dtype == np.int32:
            name = "decode_argmax_i32"
        elif dtype == np.int64:
            name = "decode_argmax_i64"
        else:
            raise ValueError(f"argmax output of dtype {dtype} has no decoder (int32 or int64)")
        index = spec.person_index
    elif spec.output_kind in ("softmax", "sigmoid"):
        name = "decode_channel_f32"
        index = spec.person_index if (spec.output_kind == "softmax" or c > 1) else 0
    else:
        name = "decode_logits_f32"
        index = spec.person_index
    if spec.output_kind != "argmax" and dtype != np.float32:
        raise ValueError(f"{spec.output_kind} output of dtype {dtype}: only float32 is decoded on the device")
    n = int(raw.shape[0])
    rt.function("outputs.cu", name)(_grid(w, h, n), BLOCK, (raw, out, np.int32(c), np.int32(h), np.int32(w), nhwc, np.int32(index)))
    return out
