"""Test-support person detector: the reference NanoDet-g ONNX behind the ``Detector`` protocol.

It stands in for ``backends.create_detector("nanodet")`` until that lands, so the CCTV cover,
``eval-video`` and the dev-clip bars can be tested now.  Spec (research note §3): long side L,
pad to a multiple of 32, BGR normalised by NanoDet's mean/std, NCHW; outputs: sigmoid class
scores and 4x11-bin GFL distances at strides 8/16/32; softmax expectation x stride around the
cell centre, NMS at IoU 0.6, person = class 0.  The planes are resized before the colour
conversion, so no full-resolution BGR picture is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from privacy_filter.frames import YuvFrame

MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
STRIDES = (8, 16, 32)
REG_BINS = 11
NMS_IOU = 0.6
INPUT = "input_1:0"
OUTPUTS = ("Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0", "Identity_4:0", "Identity_5:0")


@dataclass(frozen=True)
class Geometry:
    """Frame → detector input: content size (even), padded size (multiple of 32), scale back."""

    src_w: int
    src_h: int
    w: int
    h: int
    pad_w: int
    pad_h: int

    @classmethod
    def of(cls, src_w: int, src_h: int, long_side: int) -> Geometry:
        s = long_side / float(max(src_w, src_h))
        w = max(2, int(round(src_w * s / 2.0)) * 2)
        h = max(2, int(round(src_h * s / 2.0)) * 2)
        return cls(src_w, src_h, w, h, (w + 31) // 32 * 32, (h + 31) // 32 * 32)


def auto_long_side(src_w: int, src_h: int, lo: int = 512, hi: int = 640) -> int:
    """The source's own long side (rounded up to 32) clamped to [lo, hi]: no far upscaling of small sources."""
    return int(min(hi, max(lo, (max(src_w, src_h) + 31) // 32 * 32)))


def _small_bgr(frame: YuvFrame, w: int, h: int) -> np.ndarray:
    interp = cv2.INTER_AREA if w < frame.width else cv2.INTER_LINEAR
    ys = cv2.resize(frame.y, (w, h), interpolation=interp)
    us = cv2.resize(frame.u, (w // 2, h // 2), interpolation=interp)
    vs = cv2.resize(frame.v, (w // 2, h // 2), interpolation=interp)
    i420 = np.concatenate([ys.reshape(-1), us.reshape(-1), vs.reshape(-1)]).reshape(h * 3 // 2, w)
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def _decode(scores: Sequence[np.ndarray], regs: Sequence[np.ndarray], geo: Geometry, thr: float) -> np.ndarray:
    out = []
    for s, r, stride in zip(scores, regs, STRIDES):
        sc = s[:, 0]
        keep = np.nonzero(sc >= thr)[0]
        if keep.size == 0:
            continue
        gw = geo.pad_w // stride
        cx = (keep % gw + 0.5) * stride
        cy = (keep // gw + 0.5) * stride
        d = r[keep].reshape(-1, 4, REG_BINS)
        d = np.exp(d - d.max(axis=2, keepdims=True))
        d /= d.sum(axis=2, keepdims=True)
        dist = (d @ np.arange(REG_BINS, dtype=np.float32)) * stride
        out.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3], sc[keep]], 1))
    if not out:
        return np.zeros((0, 5), np.float32)
    b = np.concatenate(out).astype(np.float32)
    rects = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1, _ in b]
    idx = np.asarray(cv2.dnn.NMSBoxes(rects, b[:, 4].tolist(), thr, NMS_IOU), int).reshape(-1)
    b = b[idx]
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] * (geo.src_w / geo.w), 0, geo.src_w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] * (geo.src_h / geo.h), 0, geo.src_h)
    return b


class ReferenceDetector:
    """``Detector`` over the reference ONNX (ONNX Runtime, CPU, batch 1 per frame)."""

    def __init__(self, path: str | Path, *, long_side: int | None = None, score: float = 0.2, threads: int = 2) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.long_side = long_side
        self.score = score

    def detect_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
        return [self._one(f) for f in frames]

    def _one(self, frame: YuvFrame) -> np.ndarray:
        long_side = self.long_side or auto_long_side(frame.width, frame.height)
        geo = Geometry.of(frame.width, frame.height, long_side)
        x = np.zeros((1, 3, geo.pad_h, geo.pad_w), np.float32)
        bgr = (_small_bgr(frame, geo.w, geo.h).astype(np.float32) - MEAN_BGR) / STD_BGR
        x[0, :, : geo.h, : geo.w] = bgr.transpose(2, 0, 1)
        outs = self.session.run(list(OUTPUTS), {INPUT: x})
        return _decode([o[0] for o in outs[:3]], [o[0] for o in outs[3:]], geo, self.score)
