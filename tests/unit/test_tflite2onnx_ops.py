"""Converter op paths that the selfie models do not exercise, against NumPy references.

Each test builds a small TFLite model with the schema's builder (odd sizes, SAME padding
with an odd pixel, fused activations, fp16 weights, every resize mode, non-integer resize
factors, transposed convs that crop) and compares ONNX Runtime's output on the converted
model with a direct NumPy implementation of TensorFlow's semantics in NHWC.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tflite

from privacy_filter.errors import ModelError
from privacy_filter.models.tflite2onnx import convert_tflite
from support.model_fixtures import Op, T, build_tflite

OPS = tflite.BuiltinOperator
RNG = np.random.default_rng(7)


def run(tensors: list[T], ops: list[Op], x: np.ndarray) -> np.ndarray:
    """Convert, run on NCHW, return NHWC for comparison with the references."""
    model = convert_tflite(build_tflite(tensors, ops, [0], [len(tensors) - 1]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.transpose(0, 3, 1, 2).copy()})[0]
    return out.transpose(0, 2, 3, 1)


# --- NumPy references (TensorFlow semantics, NHWC) ---------------------------------------


def tf_same(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """(output size, pad before) of TF SAME padding."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return out, total // 2


def ref_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int, padding: str, d: int = 1, depthwise_mult: int = 0) -> np.ndarray:
    n, h, wd, _ = x.shape
    _, kh, kw, _ = w.shape
    if padding == "SAME":
        (oh, pt), (ow, pl) = tf_same(h, kh, s, d), tf_same(wd, kw, s, d)
    else:
        oh, ow, pt, pl = (h - (kh - 1) * d - 1) // s + 1, (wd - (kw - 1) * d - 1) // s + 1, 0, 0
    need_h, need_w = (oh - 1) * s + (kh - 1) * d + 1, (ow - 1) * s + (kw - 1) * d + 1
    xp = np.pad(x, ((0, 0), (pt, max(need_h - h - pt, 0)), (pl, max(need_w - wd - pl, 0)), (0, 0)))
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * d : i * d + (oh - 1) * s + 1 : s, j * d : j * d + (ow - 1) * s + 1 : s, :]
            if depthwise_mult:
                out = out + np.repeat(patch, depthwise_mult, axis=3) * w[0, i, j, :]
            else:
                out = out + patch @ w[:, i, j, :].T
    return out + b


def ref_transpose_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int, out_hw: tuple[int, int]) -> np.ndarray:
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    full = np.zeros((n, (h - 1) * s + kh, (wd - 1) * s + kw, o), np.float64)
    for i in range(kh):
        for j in range(kw):
            full[:, i : i + (h - 1) * s + 1 : s, j : j + (wd - 1) * s + 1 : s, :] += x @ w[:, i, j, :].T
    pt, pl = (full.shape[1] - out_hw[0]) // 2, (full.shape[2] - out_hw[1]) // 2
    return full[:, pt : pt + out_hw[0], pl : pl + out_hw[1]] + b


def ref_resize(x: np.ndarray, out_hw: tuple[int, int], align_corners: bool, half_pixel: bool) -> np.ndarray:
    def axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if align_corners and size_out > 1:
            scale = (size_in - 1) / (size_out - 1)
        else:
            scale = size_in / size_out
        o = np.arange(size_out, dtype=np.float64)
        src = (o + 0.5) * scale - 0.5 if half_pixel else o * scale
        lo = np.floor(src)
        frac = src - lo
        return np.clip(lo, 0, size_in - 1).astype(int), np.clip(np.ceil(src), 0, size_in - 1).astype(int), frac

    y0, y1, fy = axis(x.shape[1], out_hw[0])
    x0, x1, fx = axis(x.shape[2], out_hw[1])
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def ref_avg_pool_same(x: np.ndarray, k: int, s: int) -> np.ndarray:
    n, h, w, c = x.shape
    (oh, pt), (ow, pl) = tf_same(h, k, s), tf_same(w, k, s)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - pt, j * s - pl
            win = x[:, max(r0, 0) : min(r0 + k, h), max(c0, 0) : min(c0 + k, w), :]
            out[:, i, j] = win.mean(axis=(1, 2))  # padding excluded from the count
    return out


# --- tests -------------------------------------------------------------------------------


def test_conv_chain_with_fp16_weights_same_padding_and_fused_activations() -> None:
    x = RNG.uniform(0, 1, (2, 8, 10, 3)).astype(np.float32)
    w1 = RNG.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float16)
    b1 = RNG.normal(0, 0.1, 6).astype(np.float16)
    w2 = RNG.normal(0, 0.5, (1, 3, 3, 12)).astype(np.float32)
    b2 = RNG.normal(0, 0.1, 12).astype(np.float32)
    per_channel = RNG.normal(0, 1, 12).astype(np.float32)
    tensors = [
        T("x", (1, 8, 10, 3)),  # 0
        T("w1_fp16", w1.shape, w1, dtype=1),
        T("b1_fp16", b1.shape, b1, dtype=1),  # 1, 2
        T("w1", w1.shape),
        T("b1", b1.shape),  # 3, 4 (DEQUANTIZE outputs)
        T("c1", (1, 4, 5, 6)),  # 5: stride 2 SAME on 8x10, odd pixel padded after
        T("w2", w2.shape, w2),
        T("b2", b2.shape, b2),  # 6, 7
        T("d1", (1, 4, 5, 12)),  # 8: depthwise multiplier 2
        T("k", per_channel.shape, per_channel),  # 9
        T("y", (1, 4, 5, 12)),  # 10
    ]
    ops = [
        Op(OPS.DEQUANTIZE, [1], [3]),
        Op(OPS.DEQUANTIZE, [2], [4]),
        Op(OPS.CONV_2D, [0, 3, 4], [5], ("Conv2DOptions", {"Padding": 0, "StrideW": 2, "StrideH": 2, "FusedActivationFunction": 3, "DilationWFactor": 1, "DilationHFactor": 1})),
        Op(
            OPS.DEPTHWISE_CONV_2D,
            [5, 6, 7],
            [8],
            ("DepthwiseConv2DOptions", {"Padding": 0, "StrideW": 1, "StrideH": 1, "DepthMultiplier": 2, "FusedActivationFunction": 1, "DilationWFactor": 1, "DilationHFactor": 1}),
        ),
        Op(OPS.ADD, [8, 9], [10], ("AddOptions", {"FusedActivationFunction": 0})),
    ]
    got = run(tensors, ops, x)
    c1 = np.clip(ref_conv(x, w1.astype(np.float32), b1.astype(np.float32), 2, "SAME"), 0, 6)
    want = np.maximum(ref_conv(c1, w2, b2, 1, "SAME", depthwise_mult=2), 0) + per_channel
    assert got.shape == want.shape == (2, 4, 5, 12)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_valid_dilated_conv() -> None:
    x = RNG.uniform(-1, 1, (1, 9, 8, 4)).astype(np.float32)
    w = RNG.normal(0, 0.5, (5, 3, 3, 4)).astype(np.float32)
    b = np.zeros(5, np.float32)
    tensors = [T("x", x.shape), T("w", w.shape, w), T("b", b.shape, b), T("y", (1, 5, 4, 5))]
    ops = [Op(OPS.CONV_2D, [0, 1, 2], [3], ("Conv2DOptions", {"Padding": 1, "StrideW": 1, "StrideH": 1, "DilationWFactor": 2, "DilationHFactor": 2}))]
    np.testing.assert_allclose(run(tensors, ops, x), ref_conv(x, w, b, 1, "VALID", d=2), atol=1e-4)


@pytest.mark.parametrize("align_corners, half_pixel", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("out_hw", [(10, 14), (8, 11), (3, 4)])
def test_resize_bilinear_modes_and_factors(align_corners: bool, half_pixel: bool, out_hw: tuple[int, int]) -> None:
    x = RNG.uniform(0, 1, (2, 5, 7, 3)).astype(np.float32)
    size = np.array(out_hw, np.int32)
    tensors = [T("x", (1, 5, 7, 3)), T("size", (2,), size, dtype=2), T("y", (1, *out_hw, 3))]
    ops = [Op(OPS.RESIZE_BILINEAR, [0, 1], [2], ("ResizeBilinearOptions", {"AlignCorners": align_corners, "HalfPixelCenters": half_pixel}))]
    got = run(tensors, ops, x)
    np.testing.assert_allclose(got, ref_resize(x, out_hw, align_corners, half_pixel), atol=1e-5)


def test_average_pool_same_excludes_padding_and_means() -> None:
    x = RNG.uniform(0, 1, (2, 8, 10, 4)).astype(np.float32)
    axes_hw = np.array([1, 2], np.int32)
    axes_c = np.array([3], np.int32)
    tensors = [
        T("x", (1, 8, 10, 4)),
        T("p", (1, 4, 5, 4)),
        T("axes_hw", (2,), axes_hw, dtype=2),
        T("m", (1, 1, 1, 4)),
        T("axes_c", (1,), axes_c, dtype=2),
        T("mc", (1, 4, 5, 1)),
        T("y", (1, 4, 5, 4)),
    ]
    ops = [
        Op(OPS.AVERAGE_POOL_2D, [0], [1], ("Pool2DOptions", {"Padding": 0, "StrideW": 2, "StrideH": 2, "FilterWidth": 3, "FilterHeight": 3})),
        Op(OPS.MEAN, [1, 2], [3], ("ReducerOptions", {"KeepDims": True})),
        Op(OPS.MEAN, [1, 4], [5], ("ReducerOptions", {"KeepDims": True})),
        Op(OPS.MUL, [1, 3], [6], ("MulOptions", {"FusedActivationFunction": 0})),
    ]
    y = run(tensors, ops, x)
    p = ref_avg_pool_same(x, 3, 2)
    np.testing.assert_allclose(y, p * p.mean(axis=(1, 2), keepdims=True), atol=1e-5)
    # The channel mean goes through ReduceMean on axis 1 of NCHW.
    tensors_c = [T("x", (1, 8, 10, 4)), T("p", (1, 4, 5, 4)), T("axes_c", (1,), axes_c, dtype=2), T("y", (1, 4, 5, 1))]
    ops_c = [ops[0], Op(OPS.MEAN, [1, 2], [3], ("ReducerOptions", {"KeepDims": True}))]
    np.testing.assert_allclose(run(tensors_c, ops_c, x), p.mean(axis=3, keepdims=True), atol=1e-5)


@pytest.mark.parametrize(
    "k, padding, in_hw, out_hw",
    [
        (2, 1, (4, 5), (8, 10)),  # MediaPipe's case
        (3, 1, (4, 5), (8, 10)),  # SAME, crops one pixel at the end
        (4, 1, (4, 5), (8, 10)),  # SAME, crops one at each side
        (3, 2, (4, 5), (9, 11)),  # VALID, full output
    ],
)
def test_convolution2d_transpose_bias(k: int, padding: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    x = RNG.uniform(-1, 1, (2, *in_hw, 6)).astype(np.float32)
    w = RNG.normal(0, 0.5, (3, k, k, 6)).astype(np.float32)
    b = RNG.normal(0, 0.1, 3).astype(np.float32)
    opts = np.array([padding, 2, 2], "<i4").tobytes()
    tensors = [T("x", (1, *in_hw, 6)), T("w", w.shape, w), T("b", b.shape, b), T("y", (1, *out_hw, 3))]
    ops = [Op("Convolution2DTransposeBias", [0, 1, 2], [3], custom_options=opts)]
    np.testing.assert_allclose(run(tensors, ops, x), ref_transpose_conv(x, w, b, 2, out_hw), atol=1e-4)


def test_unsupported_fused_activation_is_named() -> None:
    x = T("x", (1, 4, 4, 3))
    ops = [Op(OPS.ADD, [0, 0], [1], ("AddOptions", {"FusedActivationFunction": 5}))]
    with pytest.raises(ModelError, match=r"ADD \(operator #0\): unsupported TFLite fused activation 5"):
        convert_tflite(build_tflite([x, T("y", (1, 4, 4, 3))], ops, [0], [1]))


def test_quantized_input_is_rejected() -> None:
    tensors = [T("x", (1, 4, 4, 3), dtype=3), T("y", (1, 4, 4, 3), dtype=3)]
    with pytest.raises(ModelError, match="'x' is not float32; quantized models are not supported"):
        convert_tflite(build_tflite(tensors, [Op(OPS.RELU, [0], [1])], [0], [1]))
