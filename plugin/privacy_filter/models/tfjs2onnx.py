"""Convert a TensorFlow.js *graph model* (model.json + .bin shards) to ONNX.

Why our own converter: the product must not depend on TensorFlow or tf2onnx (hundreds of MB,
fragile pins) just to turn one 7.6 MB TF.js file into ONNX on the user's machine.  numpy and
onnx are enough, because a TF.js graph model is a TensorFlow GraphDef written as JSON plus a
flat weights buffer.

Design
------
* ``load_graph_model`` parses ``modelTopology`` (nodes: op / input / attr) and decodes
  ``weightsManifest`` (float32, int32, bool; float16 and affine uint8/uint16 quantisation are
  upcast to the original dtype).
* Nodes are visited in topological order.  A node whose inputs are all constants and whose op
  has a numpy evaluator in ``FOLDERS`` is folded at conversion time (this removes the
  SparseToDense -> AddV2 sub-graphs that compute reshape targets).  Everything else goes
  through ``HANDLERS``: one small function per TF op that emits ONNX nodes.
* Each ONNX tensor keeps the *TF layout* of the TF tensor it represents, so every handler is
  local and obviously correct.  NHWC-only ops (Conv2D, MaxPool, ResizeBilinear) are wrapped in
  NHWC<->NCHW Transposes; two graph passes then fuse bias Adds into Conv and cancel Transpose
  pairs, so the result is as lean as a hand-written NCHW graph.
* Resizes are emitted with *scale factors* (from the nominal shapes), not fixed output sizes,
  so the spatial dims stay dynamic.
* A symbolic batch dim in ``input_shapes`` makes the batch dynamic: TF.js bakes batch 1 into
  reshape targets (NanoDet's heads reshape to ``[1, C, -1]``); such a leading 1 that carries
  the batch becomes ONNX's 0 ("copy the input's dim"), so frames can be batched.
* Anything unsupported raises :class:`UnsupportedOpError` naming the op and the node.

Bump ``converter_version.TFJS_CONVERTER_VERSION`` whenever the produced graph changes: the
model cache rebuilds every ONNX made by another version.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from privacy_filter.errors import ModelError

__all__ = [
    "ConversionError",
    "UnsupportedOpError",
    "TFNode",
    "GraphModel",
    "load_graph_model",
    "convert",
    "convert_file",
    "NANODET_INPUT_SHAPES",
]

DEFAULT_OPSET = 17
#: NanoDet-g's input with batch, height and width dynamic (H, W multiples of 32).
NANODET_INPUT_SHAPES: dict[str, list[int | str]] = {"input_1:0": ["N", 3, "H", "W"]}

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]


class ConversionError(ModelError):
    """Any failure converting a graph model; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UnsupportedOpError(ConversionError):
    """The graph holds an op (or op variant) this converter has no handler for."""

    def __init__(self, op: str, node: str, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(f"unsupported TF op {op!r} in node {node!r}{extra}")
        self.op, self.node = op, node


# =========================================================================== parsing


@dataclass
class TFNode:
    """One GraphDef node; ``inputs`` are normalised tensor names ``node:idx``."""

    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphModel:
    """A parsed TF.js graph model: nodes, decoded weights and the signature."""

    nodes: list[TFNode]
    weights: dict[str, np.ndarray]
    signature: dict[str, Any]


def tensor_name(ref: str) -> str:
    """Normalise a GraphDef input reference to ``node:idx`` (``x`` means ``x:0``)."""
    return ref if re.search(r":\d+$", ref) else f"{ref}:0"


_TF_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "int32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}
_QUANT_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
}


def _decode_weight(spec: dict[str, Any], buf: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """Decode one manifest entry at ``offset``; returns (array, bytes consumed)."""
    name, shape = spec["name"], [int(d) for d in spec.get("shape", [])]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = spec["dtype"]
    if dtype not in _TF_DTYPES:
        raise ConversionError(f"weight {name!r}: unsupported dtype {dtype!r}")
    quant = spec.get("quantization")
    stored = _QUANT_DTYPES.get(quant["dtype"]) if quant else _TF_DTYPES[dtype]
    if stored is None:
        raise ConversionError(f"weight {name!r}: unsupported quantization {quant!r}")
    nbytes = count * stored.itemsize
    if offset + nbytes > len(buf):
        raise ConversionError(f"weight {name!r} runs past the end of the weights data")
    raw = np.frombuffer(buf[offset : offset + nbytes], dtype=stored.newbyteorder("<"), count=count)
    if quant and quant["dtype"] in ("uint8", "uint16"):
        # Affine quantisation: value = q * scale + min (TF.js convention).
        raw = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
    return raw.astype(_TF_DTYPES[dtype]).reshape(shape), nbytes


def _decode_weights(manifest: list[dict[str, Any]], base_dir: Path) -> dict[str, np.ndarray]:
    """Decode every group of ``weightsManifest``; each group's shards are concatenated."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            data = b"".join((base_dir / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise ConversionError(f"cannot read weights shard: {exc}") from exc
        buf, offset = memoryview(data), 0
        for spec in group["weights"]:
            weights[spec["name"]], used = _decode_weight(spec, buf, offset)
            offset += used
        if offset != len(buf):
            raise ConversionError(f"weights shards {group['paths']} hold {len(buf)} bytes, manifest uses {offset}")
    return weights


def load_graph_model(model_json: str | Path) -> GraphModel:
    """Parse a TF.js graph-model JSON and its weight shards (looked up beside it)."""
    model_json = Path(model_json)
    try:
        doc = json.loads(model_json.read_text(encoding="utf-8"))
        topology = doc["modelTopology"]
        raw_nodes = topology["node"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{model_json.name} is not a TF.js graph model: {exc}") from exc
    if topology.get("library", {}).get("function"):
        raise ConversionError("graph uses function libraries (control flow); not supported")
    nodes = [
        TFNode(
            name=n["name"],
            op=n["op"],
            inputs=[tensor_name(i) for i in n.get("input", []) if not i.startswith("^")],
            attr=n.get("attr", {}),
        )
        for n in raw_nodes
    ]
    weights = _decode_weights(doc.get("weightsManifest", []), model_json.parent)
    return GraphModel(nodes=nodes, weights=weights, signature=doc.get("signature", {}))


# =========================================================================== attr helpers


def _attr_str(node: TFNode, key: str, default: str = "") -> str:
    """String attrs are base64 in GraphDef JSON."""
    value = node.attr.get(key, {}).get("s")
    return base64.b64decode(value).decode() if value is not None else default


def _attr_ints(node: TFNode, key: str) -> list[int]:
    return [int(i) for i in node.attr.get(key, {}).get("list", {}).get("i", [])]


def _attr_float(node: TFNode, key: str, default: float) -> float:
    return float(node.attr.get(key, {}).get("f", default))


def _attr_bool(node: TFNode, key: str, default: bool = False) -> bool:
    return bool(node.attr.get(key, {}).get("b", default))


def _placeholder_shape(node: TFNode) -> list[int]:
    dims = node.attr.get("shape", {}).get("shape", {}).get("dim", [])
    return [int(d.get("size", -1)) for d in dims]


_TF_ENUM_TO_NP = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64, "DT_BOOL": np.bool_}


def _inline_const(node: TFNode) -> np.ndarray:
    """Value of a Const whose data is inline in ``attr.value.tensor`` (not in the manifest)."""
    tensor = node.attr.get("value", {}).get("tensor")
    if tensor is None:
        raise ConversionError(f"Const {node.name!r} has no value in weights or attrs")
    dtype = _TF_ENUM_TO_NP.get(tensor.get("dtype", ""))
    if dtype is None:
        raise ConversionError(f"Const {node.name!r}: unsupported dtype {tensor.get('dtype')}")
    shape = [int(d.get("size", 0)) for d in tensor.get("tensorShape", {}).get("dim", [])]
    flat: np.ndarray
    if "tensorContent" in tensor:
        flat = np.frombuffer(base64.b64decode(tensor["tensorContent"]), dtype=dtype)
    else:
        vals = tensor.get("floatVal") or tensor.get("intVal") or tensor.get("int64Val") or tensor.get("boolVal") or []
        flat = np.asarray(vals, dtype=dtype)
        count = int(np.prod(shape)) if shape else 1
        if flat.size == 1 and count != 1:
            flat = np.full(count, flat[0], dtype=dtype)  # TF "splat" encoding
    return flat.reshape(shape).copy()


# =========================================================================== conversion context


class _Context:
    """Mutable state of one conversion: folded constants, emitted ONNX nodes, initialisers."""

    def __init__(self, opset: int, nominal_inputs: dict[str, list[int]]) -> None:
        self.opset = opset
        self.consts: dict[str, np.ndarray] = {}  # TF tensor name -> folded value
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.nominal_inputs = nominal_inputs  # graph input -> static shape for inference
        self.input_dtypes: dict[str, int] = {}
        self.dynamic_batch = False  # a symbolic leading dim was asked for on the inputs
        self._uid = 0
        self._shape_cache: dict[str, list[int]] = {}

    # -- naming / emission ------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A new unique ONNX tensor/node name derived from ``hint``."""
        self._uid += 1
        return f"{hint}__{self._uid}"

    def emit(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))

    def const_value(self, tensor: str) -> np.ndarray | None:
        return self.consts.get(tensor)

    def require_const(self, node: TFNode, index: int, what: str) -> np.ndarray:
        """Inputs such as paddings/perm/axis must be compile-time constants."""
        value = self.consts.get(node.inputs[index])
        if value is None:
            raise UnsupportedOpError(node.op, node.name, f"non-constant {what}")
        return value

    def initializer(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers[name] = np.ascontiguousarray(value)
        return name

    def value(self, tensor: str) -> str:
        """ONNX name for a runtime input: constants become initialisers on first use."""
        if tensor in self.consts and tensor not in self.initializers:
            value = self.consts[tensor]
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            self.initializers[tensor] = np.ascontiguousarray(value)
        return tensor

    # -- static shapes at the nominal input size ----------------------------------------
    def static_shape(self, tensor: str) -> list[int]:
        """Shape of ``tensor`` when inputs have their nominal (model.json) shapes.

        Only needed where TF bakes sizes in (ResizeBilinear's target size) and we
        must turn them into scale factors; uses ONNX shape inference on the
        graph emitted so far.
        """
        if tensor in self.consts:
            return list(self.consts[tensor].shape)
        if tensor not in self._shape_cache:
            graph = helper.make_graph(
                self.nodes,
                "partial",
                [helper.make_tensor_value_info(n, self.input_dtypes[n], s) for n, s in self.nominal_inputs.items()],
                [],
                [numpy_helper.from_array(v, k) for k, v in self.initializers.items()],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
            for vi in inferred.graph.value_info:
                dims = vi.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") for d in dims):
                    self._shape_cache[vi.name] = [d.dim_value for d in dims]
            for n, s in self.nominal_inputs.items():
                self._shape_cache[n] = list(s)
        if tensor not in self._shape_cache:
            raise ConversionError(f"cannot infer a static shape for {tensor!r}")
        return self._shape_cache[tensor]

    # -- layout helpers --------------------------------------------------------------
    def transpose(self, tensor: str, perm: list[int], hint: str) -> str:
        out = self.fresh(hint)
        self.emit("Transpose", [tensor], [out], name=out, perm=perm)
        return out


Handler = Callable[[_Context, TFNode], None]
Folder = Callable[[TFNode, list[np.ndarray]], list[np.ndarray]]


def _out(node: TFNode, index: int = 0) -> str:
    return f"{node.name}:{index}"


# =========================================================================== op handlers


def _h_placeholder(ctx: _Context, node: TFNode) -> None:
    # Graph inputs are declared by convert(); the tensor already exists.
    if _out(node) not in ctx.nominal_inputs:
        raise ConversionError(f"placeholder {node.name!r} has no shape")


def _h_identity(ctx: _Context, node: TFNode) -> None:
    ctx.emit("Identity", [ctx.value(node.inputs[0])], [_out(node)], name=node.name)


def _unary(onnx_op: str, **fixed: Any) -> Handler:
    def handler(ctx: _Context, node: TFNode) -> None:
        ctx.emit(onnx_op, [ctx.value(node.inputs[0])], [_out(node)], name=node.name, **fixed)

    handler.__doc__ = f"TF element-wise op -> ONNX {onnx_op}."
    return handler


def _binary(onnx_op: str) -> Handler:
    def handler(ctx: _Context, node: TFNode) -> None:
        a, b = (ctx.value(t) for t in node.inputs[:2])
        ctx.emit(onnx_op, [a, b], [_out(node)], name=node.name)

    handler.__doc__ = f"TF broadcasting binary op -> ONNX {onnx_op} (same broadcast rules)."
    return handler


def _h_leaky_relu(ctx: _Context, node: TFNode) -> None:
    alpha = _attr_float(node, "alpha", 0.2)  # TF default alpha is 0.2
    ctx.emit("LeakyRelu", [ctx.value(node.inputs[0])], [_out(node)], name=node.name, alpha=alpha)


def _h_pad(ctx: _Context, node: TFNode) -> None:
    """Pad/PadV2: TF paddings [[before, after]] per dim -> ONNX [all befores, all afters]."""
    paddings = ctx.require_const(node, 1, "paddings").astype(np.int64).reshape(-1, 2)
    pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
    inputs = [ctx.value(node.inputs[0]), ctx.initializer(pads, f"{node.name}/pads")]
    if node.op == "PadV2":
        inputs.append(ctx.value(node.inputs[2]))
    ctx.emit("Pad", inputs, [_out(node)], name=node.name, mode="constant")


def _h_transpose(ctx: _Context, node: TFNode) -> None:
    perm = [int(p) for p in ctx.require_const(node, 1, "perm").reshape(-1)]
    ctx.emit("Transpose", [ctx.value(node.inputs[0])], [_out(node)], name=node.name, perm=perm)


def _spatial(values: list[int], data_format: str) -> list[int]:
    """The H, W entries of a 4-element TF attr list in the given layout."""
    return values[1:3] if data_format == "NHWC" else values[2:4]


def _tf_padding(node: TFNode, data_format: str) -> dict[str, Any]:
    """TF padding attr -> ONNX pads/auto_pad attributes."""
    padding = _attr_str(node, "padding", "VALID")
    if padding == "VALID":
        return {"pads": [0, 0, 0, 0]}
    if padding == "SAME":
        return {"auto_pad": "SAME_UPPER"}  # TF puts the odd pixel at the end, like SAME_UPPER
    if padding == "EXPLICIT":
        explicit = np.asarray(_attr_ints(node, "explicit_paddings")).reshape(4, 2)
        hw = explicit[1:3] if data_format == "NHWC" else explicit[2:4]
        return {"pads": [int(hw[0, 0]), int(hw[1, 0]), int(hw[0, 1]), int(hw[1, 1])]}
    raise UnsupportedOpError(node.op, node.name, f"padding {padding!r}")


def _in_nchw(ctx: _Context, node: TFNode, data_format: str, emit_core: Callable[[str, str], None]) -> None:
    """Run an NCHW-only ONNX op on a TF tensor, transposing in/out when TF uses NHWC."""
    x = ctx.value(node.inputs[0])
    if data_format == "NCHW":
        emit_core(x, _out(node))
        return
    if data_format != "NHWC":
        raise UnsupportedOpError(node.op, node.name, f"data_format {data_format!r}")
    core_out = ctx.fresh(f"{node.name}/nchw")
    emit_core(ctx.transpose(x, NHWC_TO_NCHW, f"{node.name}/to_nchw"), core_out)
    ctx.emit("Transpose", [core_out], [_out(node)], name=f"{node.name}/to_nhwc", perm=NCHW_TO_NHWC)


def _h_conv2d(ctx: _Context, node: TFNode) -> None:
    """Conv2D (HWIO filter) -> ONNX Conv (OIHW).  Grouped Conv2D is not supported."""
    data_format = _attr_str(node, "data_format", "NHWC")
    filt = ctx.const_value(node.inputs[1])
    if filt is None or filt.ndim != 4:
        raise UnsupportedOpError(node.op, node.name, "filter must be a constant 4-D tensor")
    weight = ctx.initializer(filt.transpose(3, 2, 0, 1), f"{node.name}/W")
    attrs = {
        "kernel_shape": list(filt.shape[:2]),
        "strides": _spatial(_attr_ints(node, "strides") or [1, 1, 1, 1], data_format),
        "dilations": _spatial(_attr_ints(node, "dilations") or [1, 1, 1, 1], data_format),
        **_tf_padding(node, data_format),
    }

    def core(x: str, y: str) -> None:
        ctx.emit("Conv", [x, weight], [y], name=node.name, **attrs)

    _in_nchw(ctx, node, data_format, core)


def _h_maxpool(ctx: _Context, node: TFNode) -> None:
    data_format = _attr_str(node, "data_format", "NHWC")
    attrs = {
        "kernel_shape": _spatial(_attr_ints(node, "ksize"), data_format),
        "strides": _spatial(_attr_ints(node, "strides"), data_format),
        **_tf_padding(node, data_format),
    }

    def core(x: str, y: str) -> None:
        ctx.emit("MaxPool", [x], [y], name=node.name, **attrs)

    _in_nchw(ctx, node, data_format, core)


def _h_concat(ctx: _Context, node: TFNode) -> None:
    """ConcatV2: the last input is the axis."""
    axis = int(ctx.require_const(node, len(node.inputs) - 1, "axis"))
    parts = [ctx.value(t) for t in node.inputs[:-1]]
    ctx.emit("Concat", parts, [_out(node)], name=node.name, axis=axis)


def _h_resize_bilinear(ctx: _Context, node: TFNode) -> None:
    """ResizeBilinear (NHWC, fixed target size) -> ONNX Resize with *scales*.

    TF bakes the output size computed at the nominal input size into the graph;
    dividing by the nominal input size recovers the scale (x2, x0.5), which
    keeps H and W dynamic in the ONNX model.
    """
    size = ctx.require_const(node, 1, "size").reshape(-1).astype(np.float64)
    in_h, in_w = ctx.static_shape(node.inputs[0])[1:3]
    scales = np.array([1.0, 1.0, size[0] / in_h, size[1] / in_w], dtype=np.float32)
    if _attr_bool(node, "align_corners"):
        mode = "align_corners"
    elif _attr_bool(node, "half_pixel_centers"):
        mode = "half_pixel"
    else:
        mode = "asymmetric"
    scales_name = ctx.initializer(scales, f"{node.name}/scales")

    def core(x: str, y: str) -> None:
        ctx.emit(
            "Resize",
            [x, "", scales_name],
            [y],
            name=node.name,
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    _in_nchw(ctx, node, "NHWC", core)


def _h_splitv(ctx: _Context, node: TFNode) -> None:
    """SplitV(value, size_splits, axis) -> ONNX Split with a split-sizes input."""
    sizes = ctx.require_const(node, 1, "size_splits").astype(np.int64).reshape(-1)
    axis = int(ctx.require_const(node, 2, "split_dim"))
    if (sizes < 0).any():  # one -1 entry means "the rest"
        total = ctx.static_shape(node.inputs[0])[axis]
        sizes[sizes < 0] = total - sizes[sizes >= 0].sum()
    outputs = [_out(node, i) for i in range(len(sizes))]
    split = ctx.initializer(sizes, f"{node.name}/split")
    ctx.emit("Split", [ctx.value(node.inputs[0]), split], outputs, name=node.name, axis=axis)


def _h_reshape(ctx: _Context, node: TFNode) -> None:
    """Reshape to a constant target; a batch-carrying leading 1 becomes 0 when the batch is dynamic.

    TF.js bakes the nominal batch (1) into targets such as ``[1, C, -1]``.  ONNX's 0 copies the
    input's dim 0, which is the batch exactly when the input's nominal dim 0 is that same 1.
    """
    shape = ctx.require_const(node, 1, "shape").astype(np.int64).reshape(-1).copy()
    if ctx.dynamic_batch and shape.size > 1 and shape[0] == 1 and ctx.static_shape(node.inputs[0])[:1] == [1]:
        shape[0] = 0
    target = ctx.initializer(shape, f"{node.name}/shape")
    ctx.emit("Reshape", [ctx.value(node.inputs[0]), target], [_out(node)], name=node.name)


HANDLERS: dict[str, Handler] = {
    "Placeholder": _h_placeholder,
    "Identity": _h_identity,
    "Pad": _h_pad,
    "PadV2": _h_pad,
    "Transpose": _h_transpose,
    "Conv2D": _h_conv2d,
    "Add": _binary("Add"),
    "AddV2": _binary("Add"),
    "LeakyRelu": _h_leaky_relu,
    "MaxPool": _h_maxpool,
    "ConcatV2": _h_concat,
    "ResizeBilinear": _h_resize_bilinear,
    "SplitV": _h_splitv,
    "Sigmoid": _unary("Sigmoid"),
    "Reshape": _h_reshape,
}


# =========================================================================== constant folding


def _f_sparse_to_dense(node: TFNode, args: list[np.ndarray]) -> list[np.ndarray]:
    """SparseToDense(indices, output_shape, values, default) evaluated in numpy."""
    indices, shape, values, default = args
    out = np.full(shape.reshape(-1).astype(np.int64), default, dtype=values.dtype)
    # indices: scalar, [N] (1-D output) or [N, rank]
    idx = indices.reshape(-1, 1) if indices.ndim < 2 else indices
    if idx.shape[0]:
        out[tuple(idx.T)] = np.broadcast_to(values, (idx.shape[0],))
    return [out]


FOLDERS: dict[str, Folder] = {
    "Identity": lambda n, a: [a[0]],
    "Add": lambda n, a: [np.add(a[0], a[1]).astype(a[0].dtype)],
    "AddV2": lambda n, a: [np.add(a[0], a[1]).astype(a[0].dtype)],
    "Reshape": lambda n, a: [a[0].reshape(a[1].astype(np.int64))],
    "Transpose": lambda n, a: [a[0].transpose(a[1].astype(np.int64))],
    "ConcatV2": lambda n, a: [np.concatenate(a[:-1], axis=int(a[-1]))],
    "SparseToDense": _f_sparse_to_dense,
}


# =========================================================================== graph passes


def _consumers(nodes: list[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            users[i].append(n)
    return users


def _rename_uses(nodes: Iterable[onnx.NodeProto], old: str, new: str) -> None:
    for n in nodes:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new


def _fuse_conv_bias(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: set[str]) -> list[onnx.NodeProto]:
    """Conv -> Transpose(to channels-last) -> Add(const [C])  ==>  Conv(B) -> Transpose.

    TF expresses bias as a separate Add in NHWC; ONNX Conv takes it directly,
    which also lets the NHWC<->NCHW transposes around it cancel.
    """
    users = _consumers(nodes)
    producer = {o: n for n in nodes for o in n.output}
    removed: set[int] = set()
    for add in nodes:
        if add.op_type != "Add":
            continue
        for x_idx, b_idx in ((0, 1), (1, 0)):
            bias = inits.get(add.input[b_idx])
            tr = producer.get(add.input[x_idx])
            if bias is None or bias.ndim != 1 or tr is None or tr.op_type != "Transpose":
                continue
            perm = list(helper.get_attribute_value(tr.attribute[0]))
            conv = producer.get(tr.input[0])
            if (
                perm[-1] != 1
                or conv is None
                or conv.op_type != "Conv"
                or len(conv.input) != 2
                or len(users[tr.output[0]]) != 1
                or len(users[conv.output[0]]) != 1
                or tr.output[0] in outputs
                or conv.output[0] in outputs
            ):
                continue
            weight = inits.get(conv.input[1])
            if weight is None or weight.shape[0] != bias.shape[0]:
                continue
            conv.input.append(add.input[b_idx])
            tr.output[0] = add.output[0]  # the Transpose now produces what Add produced
            removed.add(id(add))
            break
    return [n for n in nodes if id(n) not in removed]


def _cancel_transposes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Compose Transpose(Transpose(x)); drop the pair when the composition is identity."""
    changed = True
    while changed:
        changed = False
        producer = {o: n for n in nodes for o in n.output}
        for t2 in nodes:
            if t2.op_type != "Transpose":
                continue
            t1 = producer.get(t2.input[0])
            if t1 is None or t1.op_type != "Transpose":
                continue
            p1 = list(helper.get_attribute_value(t1.attribute[0]))
            p2 = list(helper.get_attribute_value(t2.attribute[0]))
            composed = [p1[i] for i in p2]
            t2.input[0] = t1.input[0]
            del t2.attribute[:]
            t2.attribute.append(helper.make_attribute("perm", composed))
            if composed == sorted(composed) and t2.output[0] not in outputs:
                _rename_uses(nodes, t2.output[0], t2.input[0])
                nodes = [n for n in nodes if n is not t2]
            changed = True
            break
    return nodes


def _prune(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], outputs: set[str]) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Drop nodes and initialisers that no graph output depends on."""
    producer = {o: n for n in nodes for o in n.output}
    live: set[int] = set()
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        n = producer.get(t)
        if n is not None and id(n) not in live:
            live.add(id(n))
            stack.extend(i for i in n.input if i)
    return [n for n in nodes if id(n) in live], {k: v for k, v in inits.items() if k in needed}


# =========================================================================== driver


def _topological(nodes: list[TFNode]) -> list[TFNode]:
    """GraphDef node lists are not guaranteed to be in dependency order."""
    by_name = {n.name: n for n in nodes}
    order: list[TFNode] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    for root in nodes:
        stack: list[tuple[TFNode, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                if state.get(node.name) == 2:
                    continue
                state[node.name] = 1
            deps = [by_name[t.rsplit(":", 1)[0]] for t in node.inputs if t.rsplit(":", 1)[0] in by_name]
            if i < len(deps):
                stack.append((node, i + 1))
                dep = deps[i]
                if state.get(dep.name) == 1:
                    raise ConversionError(f"graph has a cycle through {dep.name!r}")
                if state.get(dep.name) != 2:
                    stack.append((dep, 0))
            else:
                state[node.name] = 2
                order.append(node)
    return order


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _output_names(model: GraphModel, nodes: list[TFNode]) -> list[str]:
    """Graph outputs: the signature's, else tensors nobody consumes; natural order."""
    names = list(model.signature.get("outputs", {}))
    if not names:
        used = {t for n in nodes for t in n.inputs}
        names = [_out(n) for n in nodes if _out(n) not in used and n.op not in ("Const", "Placeholder")]
    return sorted((tensor_name(n) for n in names), key=_natural_key)


_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def convert(
    model: GraphModel,
    *,
    input_shapes: dict[str, list[int | str]] | None = None,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
) -> onnx.ModelProto:
    """Convert a parsed graph model to an ONNX ModelProto.

    ``input_shapes`` overrides placeholder shapes; strings are symbolic
    (dynamic) dims, e.g. ``{"input_1:0": [1, 3, "H", "W"]}``.  Static shapes
    stay the model.json ones for the few places that need sizes at conversion
    time (resize scales).
    """
    input_shapes = dict(input_shapes or {})
    nodes = _topological(model.nodes)
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    nominal = {_out(n): _placeholder_shape(n) for n in placeholders}
    for name, shape in nominal.items():
        if any(d < 0 for d in shape) and name not in input_shapes:
            raise ConversionError(f"input {name!r} has unknown dims {shape}; pass input_shapes")
    ctx = _Context(opset, nominal)
    ctx.dynamic_batch = any(bool(s) and isinstance(s[0], str) for s in input_shapes.values())
    for n in placeholders:
        dtype = _TF_ENUM_TO_NP.get(n.attr.get("dtype", {}).get("type", "DT_FLOAT"), np.float32)
        ctx.input_dtypes[_out(n)] = _NP_TO_ONNX[np.dtype(dtype)]

    for node in nodes:
        if node.op == "Const":
            value = model.weights.get(node.name)
            ctx.consts[_out(node)] = value if value is not None else _inline_const(node)
            continue
        args = [ctx.consts.get(t) for t in node.inputs]
        folder = FOLDERS.get(node.op)
        if folder is not None and args and all(a is not None for a in args):
            for i, value in enumerate(folder(node, args)):  # type: ignore[arg-type]
                ctx.consts[_out(node, i)] = np.asarray(value)
            continue
        handler = HANDLERS.get(node.op)
        if handler is None:
            raise UnsupportedOpError(node.op, node.name)
        handler(ctx, node)

    outputs = _output_names(model, nodes)
    out_set = set(outputs)
    onnx_nodes, inits = ctx.nodes, ctx.initializers
    if optimize:
        onnx_nodes = _fuse_conv_bias(onnx_nodes, inits, out_set)
        onnx_nodes = _cancel_transposes(onnx_nodes, out_set)
    onnx_nodes, inits = _prune(onnx_nodes, inits, out_set)

    graph_inputs = [helper.make_tensor_value_info(name, ctx.input_dtypes[name], input_shapes.get(name, shape)) for name, shape in nominal.items()]
    graph = helper.make_graph(
        onnx_nodes,
        "tfjs_graph_model",
        graph_inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="privacy-filter tfjs2onnx")
    onnx_model.ir_version = 8  # readable by onnxruntime >= 1.10
    return _annotate_outputs(onnx_model)


def _annotate_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give outputs their inferred dtype/rank; unknown dims get symbolic names."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        vi = known.get(out.name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            continue
        out.type.CopyFrom(vi.type)
        for i, dim in enumerate(out.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and (not dim.dim_param or dim.dim_param.startswith("unk__")):
                dim.dim_param = f"{out.name}_d{i}"
    onnx.checker.check_model(model)
    return model


def convert_file(
    model_json: str | Path,
    output: str | Path,
    *,
    input_shapes: dict[str, list[int | str]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Convert model.json (+ shards beside it) and write the ONNX file atomically."""
    model = convert(load_graph_model(model_json), input_shapes=input_shapes, opset=opset)
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    try:
        onnx.save(model, tmp)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return model
