"""Model output → person probability, as small pure functions (the CUDA kernels mirror these).

Every decoder takes the raw batch tensor and returns (N, h, w) float32 in [0, 1]:

* argmax ids (int32/int64)  → 1.0 where id == person index, else 0.0;
* softmax scores            → the person channel;
* sigmoid probabilities     → as they are (the person channel if several);
* logits                    → sigmoid for one channel, softmax over channels for two or more
  (for two classes that is sigmoid(l_person − l_other), computed stably).
"""

from __future__ import annotations

import cv2
import numpy as np

from privacy_filter.models.specs import ModelSpec


def channel_axis(raw: np.ndarray, layout: str) -> int | None:
    """Class axis of a batch tensor; None for rank-3 (N, H, W) id maps."""
    if raw.ndim == 3:
        return None
    if raw.ndim != 4:
        raise ValueError(f"expected a rank-3 or rank-4 output, got shape {raw.shape}")
    return 1 if layout == "NCHW" else 3


def _take(raw: np.ndarray, axis: int | None, index: int) -> np.ndarray:
    if axis is None:
        return raw
    return np.take(raw, index, axis=axis)


def decode_argmax(raw: np.ndarray, layout: str, person_index: int) -> np.ndarray:
    ids = _take(raw, channel_axis(raw, layout), 0)
    return (ids == person_index).astype(np.float32)


def decode_softmax(raw: np.ndarray, layout: str, person_index: int) -> np.ndarray:
    return np.ascontiguousarray(_take(raw, channel_axis(raw, layout), person_index), dtype=np.float32)


def decode_sigmoid(raw: np.ndarray, layout: str, person_index: int = 0) -> np.ndarray:
    axis = channel_axis(raw, layout)
    index = person_index if axis is not None and raw.shape[axis] > 1 else 0
    return np.ascontiguousarray(_take(raw, axis, index), dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)  # tanh form: no overflow warnings


def decode_logits(raw: np.ndarray, layout: str, person_index: int) -> np.ndarray:
    axis = channel_axis(raw, layout)
    if axis is None or raw.shape[axis] == 1:
        return sigmoid(_take(raw, axis, 0))
    x = raw.astype(np.float32, copy=False)
    if raw.shape[axis] == 2:
        return sigmoid(_take(x, axis, person_index) - _take(x, axis, 1 - person_index))
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return (_take(e, axis, person_index) / e.sum(axis=axis)).astype(np.float32)


DECODERS = {
    "argmax": decode_argmax,
    "softmax": decode_softmax,
    "sigmoid": decode_sigmoid,
    "logits": decode_logits,
}


def to_probability(raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, h, w) float32 person probability from the raw output batch of ``spec``'s model."""
    return DECODERS[spec.output_kind](raw, spec.output_layout, spec.person_index)


def upsample_probability(prob: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear (half-pixel centres, edges clamped) resize of a probability map to width×height.

    Used for ``segment``/``eval``; the mask pipeline does the same at frame size.  Never nearest
    on labels: a 0/1 argmax map is upsampled as a float so its edges stay sub-pixel.
    """
    if prob.shape[:2] == (height, width):
        return prob.astype(np.float32, copy=False)
    return cv2.resize(prob.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)
