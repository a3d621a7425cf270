"""TFLite → ONNX conversion for the embedded default model (MediaPipe selfie segmentation).

Why our own converter: the default model ships only as TFLite inside the mediapipe wheel,
and the usual converters drag in TensorFlow.  The selfie models use a small, fixed set of
float ops, so a direct flatbuffer → ``onnx.helper`` translation is short and auditable.

Layout: TFLite activations are NHWC; every rank-4 activation here is emitted as NCHW, so
the graph needs no Transpose nodes at all.  Only weights and constants are permuted (at
conversion time, in NumPy).  The result uses plain opset-17 ops that ONNX Runtime and the
TensorRT ONNX parser both accept (Conv, ConvTranspose, Add, Mul, Relu, HardSwish, Sigmoid,
GlobalAveragePool/AveragePool, ReduceMean, Resize with ``scales``).

Contract of the produced model: input ``[N, C, H, W]`` float32 (for the selfie models:
RGB in [0, 1]), dynamic batch ``N``; output ``[N, C_out, H, W]`` float32.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from privacy_filter.errors import ModelError

try:  # the flatbuffer schema package; a hard dependency, but fail with a clear message
    import tflite
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ModelError("the 'tflite' package is required to convert TFLite models (pip install tflite)") from exc

from privacy_filter.models.converter_version import CONVERTER_VERSION  # kept importable from here

OPSET = 17

_BUILTIN_NAMES: dict[int, str] = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}

# tflite.TensorType → NumPy dtype of the raw buffer.
_TENSOR_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),  # FLOAT32
    1: np.dtype("<f2"),  # FLOAT16
    2: np.dtype("<i4"),  # INT32
    3: np.dtype("u1"),  # UINT8
    4: np.dtype("<i8"),  # INT64
    7: np.dtype("<i2"),  # INT16
    9: np.dtype("i1"),  # INT8
    10: np.dtype("<f8"),  # FLOAT64
}

# TFLite Padding enum (builtin options) and TfLitePadding (C struct in custom options).
_PAD_SAME, _PAD_VALID = 0, 1
_C_PAD_SAME, _C_PAD_VALID = 1, 2

# NHWC axis → NCHW axis.
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


# ---------------------------------------------------------------------------------------
# Small pure helpers (the maths)


def same_pads(in_size: int, out_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding as explicit (before, after); the odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


def conv_pads(padding: int, in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> list[int]:
    """ONNX ``pads`` ([top, left, bottom, right]) for a TFLite padding mode on static shapes."""
    if padding == _PAD_VALID:
        return [0, 0, 0, 0]
    if padding != _PAD_SAME:
        raise ModelError(f"unsupported TFLite padding mode {padding}")
    t, b = same_pads(in_hw[0], out_hw[0], kernel[0], stride[0], dilation[0])
    left, r = same_pads(in_hw[1], out_hw[1], kernel[1], stride[1], dilation[1])
    return [t, left, b, r]


def transpose_conv_pads(in_size: int, out_size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad_before, pad_after, output_padding) so ONNX ConvTranspose yields ``out_size``.

    ConvTranspose's full output is ``(in-1)*s + k``; TF crops it symmetrically (extra
    pixel at the end) down to the requested size, or grows it when ``k < s``.
    """
    total = (in_size - 1) * stride + kernel - out_size
    if total >= 0:
        return total // 2, total - total // 2, 0
    return 0, 0, -total


def resize_coordinate_mode(align_corners: bool, half_pixel_centers: bool) -> str:
    """ONNX Resize ``coordinate_transformation_mode`` equivalent to TFLite's flags.

    TFLite bilinear with ``half_pixel_centers`` maps ``x_in = (x_out + 0.5)/scale - 0.5``
    and clamps to the edge, which is ONNX ``half_pixel`` (ONNX Runtime clamps the same way);
    ``align_corners`` is ``align_corners``; neither flag is TF's legacy ``asymmetric``.
    """
    if align_corners and half_pixel_centers:
        raise ModelError("RESIZE_BILINEAR with both align_corners and half_pixel_centers is invalid")
    if align_corners:
        return "align_corners"
    if half_pixel_centers:
        return "half_pixel"
    return "asymmetric"


def nhwc_weight_to_oihw(w: np.ndarray) -> np.ndarray:
    """CONV_2D kernel [O, kH, kW, I] → ONNX Conv [O, I, kH, kW]."""
    return np.ascontiguousarray(w.transpose(0, 3, 1, 2))


def depthwise_weight_to_oihw(w: np.ndarray) -> np.ndarray:
    """DEPTHWISE_CONV_2D kernel [1, kH, kW, C*m] → grouped ONNX Conv [C*m, 1, kH, kW]."""
    return np.ascontiguousarray(w.transpose(3, 0, 1, 2))


def transpose_weight_to_iohw(w: np.ndarray) -> np.ndarray:
    """Transposed-conv kernel [O, kH, kW, I] → ONNX ConvTranspose [I, O, kH, kW]."""
    return np.ascontiguousarray(w.transpose(3, 0, 1, 2))


def constant_to_nchw(value: np.ndarray) -> np.ndarray:
    """A constant operand of an elementwise op, re-laid out to broadcast against NCHW.

    Rank 4 is NHWC → NCHW; rank 1..3 broadcasts against the trailing (channel-last) axes
    in TFLite, so it is padded to rank 4 and permuted the same way.
    """
    if value.ndim == 0:
        return value
    if value.ndim > 4:
        raise ModelError(f"constant of rank {value.ndim} cannot be mapped to NCHW")
    v4 = value.reshape((1,) * (4 - value.ndim) + value.shape)
    return np.ascontiguousarray(v4.transpose(0, 3, 1, 2))


def parse_transpose_conv_options(raw: bytes) -> tuple[int, int, int]:
    """MediaPipe ``Convolution2DTransposeBias`` options: a raw ``TfLiteTransposeConvParams``.

    The struct is ``{TfLitePadding padding; int stride_width; int stride_height;}`` as three
    little-endian int32 (padding 1 = SAME, 2 = VALID).  Returns (padding, stride_h, stride_w).
    """
    if len(raw) < 12:
        raise ModelError(f"Convolution2DTransposeBias: custom options are {len(raw)} bytes, expected 12")
    padding, stride_w, stride_h = struct.unpack_from("<3i", raw, 0)
    if padding not in (_C_PAD_SAME, _C_PAD_VALID) or stride_w < 1 or stride_h < 1:
        raise ModelError(f"Convolution2DTransposeBias: bad options padding={padding} stride=({stride_h},{stride_w})")
    return padding, stride_h, stride_w


# ---------------------------------------------------------------------------------------
# The converter


@dataclass
class _Graph:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    used_names: set[str] = field(default_factory=set)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.used_names:
            name, i = f"{base}_{i}", i + 1
        self.used_names.add(name)
        return name

    def initializer(self, base: str, value: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.unique(f"{op}_{len(self.nodes)}"), **attrs))


Handler = Callable[["_Converter", "tflite.Operator"], None]
_HANDLERS: dict[str, Handler] = {}


def _handles(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for n in names:
            _HANDLERS[n] = fn
        return fn

    return register


def op_handler(op_name: str) -> Handler:
    """The converter function for a TFLite op name (builtin name, or custom code)."""
    try:
        return _HANDLERS[op_name]
    except KeyError:
        raise ModelError(f"unsupported TFLite op {op_name!r}: this converter handles {', '.join(sorted(_HANDLERS))}") from None


def supported_ops() -> list[str]:
    return sorted(_HANDLERS)


class _Converter:
    def __init__(self, data: bytes, input_name: str, output_name: str) -> None:
        self.data = data
        try:
            if not tflite.Model.ModelBufferHasIdentifier(data, 0):
                raise ModelError("not a TFLite model (flatbuffer identifier 'TFL3' missing)")
            self.model = tflite.Model.GetRootAsModel(data, 0)
            if self.model.SubgraphsLength() != 1:
                raise ModelError(f"TFLite model has {self.model.SubgraphsLength()} subgraphs; expected 1")
            self.sg = self.model.Subgraphs(0)
        except ModelError:
            raise
        except Exception as exc:  # flatbuffers raises assorted errors on garbage
            raise ModelError(f"not a readable TFLite model: {exc}") from exc
        self.g = _Graph()
        self.names: dict[int, str] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.input_name = input_name
        self.output_name = output_name

    # -- tensors ------------------------------------------------------------------------

    def tensor(self, idx: int) -> tflite.Tensor:
        return self.sg.Tensors(idx)

    def tname(self, idx: int) -> str:
        return self.tensor(idx).Name().decode("utf-8", "replace")

    def shape(self, idx: int) -> tuple[int, ...]:
        t = self.tensor(idx)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def nhwc(self, idx: int) -> tuple[int, int, int, int]:
        s = self.shape(idx)
        if len(s) != 4:
            raise ModelError(f"tensor {self.tname(idx)!r} has shape {list(s)}; only rank-4 activations are supported")
        return s  # type: ignore[return-value]

    def buffer_value(self, idx: int) -> np.ndarray | None:
        """The constant stored in the model for tensor ``idx``, or None for an activation."""
        t = self.tensor(idx)
        buf = self.model.Buffers(t.Buffer())
        if buf is None:
            return None
        if buf.Offset() > 1:  # large-model layout: data appended after the flatbuffer
            raw = self.data[buf.Offset() : buf.Offset() + buf.Size()]
        elif buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        else:
            return None
        dtype = _TENSOR_DTYPES.get(t.Type())
        if dtype is None:
            raise ModelError(f"tensor {self.tname(idx)!r}: unsupported TFLite tensor type {t.Type()}")
        return np.frombuffer(raw, dtype=dtype).reshape(self.shape(idx))

    def const(self, idx: int) -> np.ndarray | None:
        if idx in self.consts:
            return self.consts[idx]
        value = self.buffer_value(idx)
        if value is not None:
            self.consts[idx] = value
        return value

    def require_const(self, idx: int, what: str) -> np.ndarray:
        value = self.const(idx)
        if value is None:
            raise ModelError(f"{what}: tensor {self.tname(idx)!r} must be a constant")
        return value

    def float_const(self, idx: int, what: str) -> np.ndarray:
        return self.require_const(idx, what).astype(np.float32)

    def input(self, idx: int) -> str:
        """ONNX name of an operand; constants are materialised as NCHW-broadcastable initializers."""
        if idx in self.names:
            return self.names[idx]
        value = self.const(idx)
        if value is None:
            raise ModelError(f"tensor {self.tname(idx)!r} is used before it is produced")
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        self.names[idx] = self.g.initializer(self.tname(idx), constant_to_nchw(value))
        return self.names[idx]

    def output(self, idx: int) -> str:
        if idx not in self.names:
            self.names[idx] = self.g.unique(self.tname(idx))
        return self.names[idx]

    def activation(self, x: str, fused: int, out_idx: int) -> None:
        """Apply a TFLite fused activation to ``x`` writing the op's output tensor."""
        out = self.output(out_idx)
        if fused == 0:
            self.g.node("Identity", [x], [out])
        elif fused == 1:
            self.g.node("Relu", [x], [out])
        elif fused in (2, 3):  # RELU_N1_TO_1, RELU6
            lo, hi = (-1.0, 1.0) if fused == 2 else (0.0, 6.0)
            self.g.node("Clip", [x, self.g.initializer("clip_min", np.array(lo, np.float32)), self.g.initializer("clip_max", np.array(hi, np.float32))], [out])
        elif fused == 4:
            self.g.node("Tanh", [x], [out])
        else:
            raise ModelError(f"unsupported TFLite fused activation {fused} on {self.tname(out_idx)!r}")

    def pre_activation(self, out_idx: int, fused: int) -> str:
        """Name for an op's raw result: the output itself when there is no fused activation."""
        return self.output(out_idx) if fused == 0 else self.g.unique(self.tname(out_idx) + "_preact")

    # -- driver -------------------------------------------------------------------------

    def op_name(self, op: tflite.Operator) -> str:
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = _BUILTIN_NAMES.get(code, f"builtin#{code}")
        if name == "CUSTOM":
            return (oc.CustomCode() or b"?").decode("utf-8", "replace")
        return name

    def convert(self) -> onnx.ModelProto:
        sg = self.sg
        if sg.InputsLength() != 1 or sg.OutputsLength() != 1:
            raise ModelError(f"TFLite model has {sg.InputsLength()} inputs and {sg.OutputsLength()} outputs; expected 1 and 1")
        in_idx, out_idx = int(sg.Inputs(0)), int(sg.Outputs(0))
        for idx in (in_idx, out_idx):
            if self.tensor(idx).Type() != 0:
                raise ModelError(f"tensor {self.tname(idx)!r} is not float32; quantized models are not supported")
        _, h, w, c = self.nhwc(in_idx)
        _, oh, ow, oc = self.nhwc(out_idx)
        self.names[in_idx] = self.input_name
        self.g.used_names.add(self.input_name)
        self.names[out_idx] = self.output_name
        self.g.used_names.add(self.output_name)

        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            name = self.op_name(op)
            try:
                handler = op_handler(name)
            except ModelError as exc:
                raise ModelError(f"operator #{i}: {exc}") from None
            try:
                handler(self, op)
            except ModelError as exc:
                raise ModelError(f"{name} (operator #{i}): {exc}") from None

        graph = helper.make_graph(
            self.g.nodes,
            "tflite2onnx",
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, ["N", c, h, w])],
            [helper.make_tensor_value_info(self.output_name, TensorProto.FLOAT, ["N", oc, oh, ow])],
            self.g.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="privacy-filter.tflite2onnx",
            producer_version=CONVERTER_VERSION,
        )
        model.ir_version = 8  # readable by ONNX Runtime >= 1.10 and TensorRT 8.x parsers
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # checker raises ValidationError / InferenceError
            raise ModelError(f"converted ONNX model fails onnx.checker: {exc}") from exc
        return model


def _options(op: tflite.Operator, cls: type) -> object:
    table = op.BuiltinOptions()
    opts = cls()
    if table is None:
        raise ModelError(f"missing {cls.__name__}")
    opts.Init(table.Bytes, table.Pos)
    return opts


def _ins(op: tflite.Operator) -> list[int]:
    return [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []


def _outs(op: tflite.Operator) -> list[int]:
    return [int(i) for i in op.OutputsAsNumpy()]


# ---------------------------------------------------------------------------------------
# Op handlers


@_handles("DEQUANTIZE")
def _dequantize(cv: _Converter, op: tflite.Operator) -> None:
    (src,), (dst,) = _ins(op), _outs(op)
    value = cv.require_const(src, "DEQUANTIZE input")
    t = cv.tensor(src)
    q = t.Quantization()
    if value.dtype.kind in "iu" and q is not None and q.ScaleLength():
        scale = q.ScaleAsNumpy().astype(np.float32)
        zero = q.ZeroPointAsNumpy().astype(np.float32) if q.ZeroPointLength() else np.zeros_like(scale)
        if scale.size > 1:  # per-axis
            shape = [1] * value.ndim
            shape[q.QuantizedDimension()] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        value = (value.astype(np.float32) - zero) * scale
    cv.consts[dst] = value.astype(np.float32)


def _conv_common(cv: _Converter, op: tflite.Operator, depthwise: bool) -> None:
    ins, (out,) = _ins(op), _outs(op)
    x_idx, w_idx = ins[0], ins[1]
    b_idx = ins[2] if len(ins) > 2 else -1
    o = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    w = cv.float_const(w_idx, "filter")
    _, ih, iw, ic = cv.nhwc(x_idx)
    _, oh, ow, _ = cv.nhwc(out)
    kh, kw = w.shape[1], w.shape[2]
    stride = (o.StrideH(), o.StrideW())
    dil = (o.DilationHFactor() or 1, o.DilationWFactor() or 1)
    pads = conv_pads(o.Padding(), (ih, iw), (oh, ow), (kh, kw), stride, dil)
    if depthwise:
        weight, group = depthwise_weight_to_oihw(w), ic
    else:
        weight, group = nhwc_weight_to_oihw(w), 1
        if weight.shape[1] != ic:
            group = ic // weight.shape[1]
    inputs = [cv.input(x_idx), cv.g.initializer(cv.tname(w_idx), weight)]
    if b_idx >= 0:
        inputs.append(cv.g.initializer(cv.tname(b_idx), cv.float_const(b_idx, "bias")))
    fused = o.FusedActivationFunction()
    y = cv.pre_activation(out, fused)
    cv.g.node("Conv", inputs, [y], kernel_shape=[kh, kw], strides=list(stride), dilations=list(dil), pads=pads, group=group)
    if fused:
        cv.activation(y, fused, out)


@_handles("CONV_2D")
def _conv2d(cv: _Converter, op: tflite.Operator) -> None:
    _conv_common(cv, op, depthwise=False)


@_handles("DEPTHWISE_CONV_2D")
def _depthwise(cv: _Converter, op: tflite.Operator) -> None:
    _conv_common(cv, op, depthwise=True)


@_handles("Convolution2DTransposeBias")
def _transpose_conv_bias(cv: _Converter, op: tflite.Operator) -> None:
    (x_idx, w_idx, b_idx), (out,) = _ins(op), _outs(op)
    raw = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
    padding, sh, sw = parse_transpose_conv_options(raw)
    w = cv.float_const(w_idx, "filter")
    kh, kw = w.shape[1], w.shape[2]
    _, ih, iw, _ = cv.nhwc(x_idx)
    _, oh, ow, _ = cv.nhwc(out)
    if padding == _C_PAD_VALID:
        if (oh, ow) != ((ih - 1) * sh + kh, (iw - 1) * sw + kw):
            raise ModelError(f"VALID output {oh}x{ow} does not match input {ih}x{iw}")
    t, b, oph = transpose_conv_pads(ih, oh, kh, sh)
    left, r, opw = transpose_conv_pads(iw, ow, kw, sw)
    attrs: dict[str, object] = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [t, left, b, r]}
    if oph or opw:
        attrs["output_padding"] = [oph, opw]
    cv.g.node(
        "ConvTranspose",
        [cv.input(x_idx), cv.g.initializer(cv.tname(w_idx), transpose_weight_to_iohw(w)), cv.g.initializer(cv.tname(b_idx), cv.float_const(b_idx, "bias"))],
        [cv.output(out)],
        **attrs,
    )


def _binary(onnx_op: str, opts_cls: type | None) -> Handler:
    def handler(cv: _Converter, op: tflite.Operator) -> None:
        (a, b), (out,) = _ins(op), _outs(op)
        fused = _options(op, opts_cls).FusedActivationFunction() if opts_cls and op.BuiltinOptions() else 0
        y = cv.pre_activation(out, fused)
        cv.g.node(onnx_op, [cv.input(a), cv.input(b)], [y])
        if fused:
            cv.activation(y, fused, out)

    return handler


_handles("ADD")(_binary("Add", tflite.AddOptions))
_handles("SUB")(_binary("Sub", tflite.SubOptions))
_handles("MUL")(_binary("Mul", tflite.MulOptions))
_handles("DIV")(_binary("Div", tflite.DivOptions))


def _unary(onnx_op: str) -> Handler:
    def handler(cv: _Converter, op: tflite.Operator) -> None:
        (x,), (out,) = _ins(op)[:1], _outs(op)
        cv.g.node(onnx_op, [cv.input(x)], [cv.output(out)])

    return handler


_handles("RELU")(_unary("Relu"))
_handles("LOGISTIC")(_unary("Sigmoid"))
_handles("HARD_SWISH")(_unary("HardSwish"))
_handles("TANH")(_unary("Tanh"))


@_handles("RELU6")
def _relu6(cv: _Converter, op: tflite.Operator) -> None:
    (x,), (out,) = _ins(op), _outs(op)
    cv.activation(cv.input(x), 3, out)


@_handles("AVERAGE_POOL_2D")
def _avg_pool(cv: _Converter, op: tflite.Operator) -> None:
    (x_idx,), (out,) = _ins(op), _outs(op)
    o = _options(op, tflite.Pool2DOptions)
    _, ih, iw, _ = cv.nhwc(x_idx)
    _, oh, ow, _ = cv.nhwc(out)
    k, s = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
    fused = o.FusedActivationFunction()
    y = cv.pre_activation(out, fused)
    if (oh, ow) == (1, 1) and k == (ih, iw):
        # Whole-map mean (squeeze-excite): GlobalAveragePool is TensorRT's fast path.
        cv.g.node("GlobalAveragePool", [cv.input(x_idx)], [y])
    else:
        pads = conv_pads(o.Padding(), (ih, iw), (oh, ow), k, s)
        # TFLite averages over valid pixels only under SAME padding: count_include_pad=0.
        cv.g.node("AveragePool", [cv.input(x_idx)], [y], kernel_shape=list(k), strides=list(s), pads=pads, count_include_pad=0)
    if fused:
        cv.activation(y, fused, out)


@_handles("MEAN")
def _mean(cv: _Converter, op: tflite.Operator) -> None:
    (x_idx, axes_idx), (out,) = _ins(op), _outs(op)
    axes = sorted(int(a) % 4 for a in np.atleast_1d(cv.require_const(axes_idx, "MEAN axes")))
    keep = _options(op, tflite.ReducerOptions).KeepDims() if op.BuiltinOptions() else False
    cv.nhwc(x_idx)
    if not keep:
        raise ModelError("MEAN without keep_dims would leave rank-4 NCHW layout; not supported")
    if axes == [1, 2]:
        cv.g.node("GlobalAveragePool", [cv.input(x_idx)], [cv.output(out)])
    else:
        cv.g.node("ReduceMean", [cv.input(x_idx)], [cv.output(out)], axes=sorted(_NHWC_TO_NCHW_AXIS[a] for a in axes), keepdims=1)


@_handles("RESIZE_BILINEAR")
def _resize_bilinear(cv: _Converter, op: tflite.Operator) -> None:
    ins, (out,) = _ins(op), _outs(op)
    x_idx = ins[0]
    o = _options(op, tflite.ResizeBilinearOptions)
    mode = resize_coordinate_mode(bool(o.AlignCorners()), bool(o.HalfPixelCenters()))
    _, ih, iw, _ = cv.nhwc(x_idx)
    _, oh, ow, _ = cv.nhwc(out)
    if len(ins) > 1 and cv.const(ins[1]) is not None:
        size = [int(v) for v in cv.const(ins[1])]
        if size != [oh, ow]:
            raise ModelError(f"size constant {size} disagrees with output shape {[oh, ow]}")
    x = cv.input(x_idx)
    if oh % ih == 0 and ow % iw == 0:
        # Integer factors: scales are exact, keep the batch dimension dynamic without shape ops.
        scales = np.array([1, 1, oh // ih, ow // iw], np.float32)
        cv.g.node("Resize", [x, "", cv.g.initializer("resize_scales", scales)], [cv.output(out)], mode="linear", coordinate_transformation_mode=mode)
    else:
        # Non-integer factors: give sizes (runtime scale = out/in, as TFLite) with the batch from Shape.
        nc = cv.g.unique(f"{x}_nc")
        sizes = cv.g.unique(f"{x}_sizes")
        cv.g.node("Shape", [x], [nc], start=0, end=2)
        cv.g.node("Concat", [nc, cv.g.initializer("resize_hw", np.array([oh, ow], np.int64))], [sizes], axis=0)
        cv.g.node("Resize", [x, "", "", sizes], [cv.output(out)], mode="linear", coordinate_transformation_mode=mode)


def convert_tflite(tflite_bytes: bytes, *, input_name: str = "input", output_name: str = "output") -> onnx.ModelProto:
    """Convert a float TFLite model (the MediaPipe selfie family) to NCHW ONNX.

    Raises ``ModelError`` naming the problem: not a TFLite file, an unsupported op, a
    quantized model, or a graph the checker rejects.
    """
    return _Converter(bytes(tflite_bytes), input_name, output_name).convert()
