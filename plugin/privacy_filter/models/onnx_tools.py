"""Reading and checking ONNX files against specs, and the ArgMax→logits rewrite.

Validation happens once, when a model is resolved, so that a wrong file fails with one message
naming the tensor and both shapes instead of an ONNX Runtime error deep inside a worker.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privacy_filter.errors import ModelError
from privacy_filter.models.specs import ModelSpec

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.dtype.name}[{dims}]"


@dataclass(frozen=True)
class OnnxIO:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    producers: dict[str, str]  # output name -> op type of the node producing it
    opset: int

    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorInfo | None:
        return next((t for t in self.outputs if t.name == name), None)


def _load(path: Path):
    import onnx

    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def _tensor_info(vi) -> TensorInfo:
    from onnx import helper

    tt = vi.type.tensor_type
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(vi.name, tuple(dims), np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)))


def read_io(path: Path) -> OnnxIO:
    """Graph inputs (initializers excluded), outputs, and which op produces each output.

    Served from a small JSON cache keyed by the file's resolved path, size and mtime when the
    same file was read before: parsing needs the ``onnx`` package (~50 ms to import, plus the
    protobuf parse), which every ``process`` start would otherwise pay for an unchanged model.
    """
    path = Path(path)
    key = _io_cache_key(path)
    if key is not None:
        cached = _io_cache_get(key)
        if cached is not None:
            return cached
    io = _read_io_uncached(path)
    if key is not None:
        _io_cache_put(key, io)
    return io


def _io_cache_key(path: Path) -> tuple[Path, str] | None:
    """(cache file, identity of the model file) or None when the file cannot be stat'ed."""
    try:
        real = path.resolve()
        st = real.stat()
    except OSError:
        return None
    from privacy_filter.models.pull import cache_dir

    ident = f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    name = hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json"
    return cache_dir() / "io" / name, ident


def _io_cache_get(key: tuple[Path, str]) -> OnnxIO | None:
    import json

    file, ident = key
    try:
        d = json.loads(file.read_text())
        if d.get("ident") != ident:
            return None

        def ti(t: list) -> TensorInfo:
            return TensorInfo(t[0], tuple(t[1]), np.dtype(t[2]))

        return OnnxIO(tuple(ti(t) for t in d["inputs"]), tuple(ti(t) for t in d["outputs"]), dict(d["producers"]), int(d["opset"]))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # absent or unreadable cache entry: parse the model


def _io_cache_put(key: tuple[Path, str], io: OnnxIO) -> None:
    import json
    import os

    file, ident = key

    def tl(t: TensorInfo) -> list:
        return [t.name, list(t.shape), t.dtype.str]

    d = {"ident": ident, "inputs": [tl(t) for t in io.inputs], "outputs": [tl(t) for t in io.outputs], "producers": io.producers, "opset": io.opset}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, file)
    except OSError:
        pass  # a read-only cache only costs the parse next time


def _read_io_uncached(path: Path) -> OnnxIO:
    model = _load(Path(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(_tensor_info(i) for i in model.graph.input if i.name not in inits)
    outputs = tuple(_tensor_info(o) for o in model.graph.output)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxIO(inputs, outputs, {o.name: producers.get(o.name, "") for o in outputs}, opset)


def _fixed(d: Dim) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def expected_input_shape(spec: ModelSpec) -> tuple[int, int, int]:
    """Per-item input shape (without batch) that the spec implies."""
    return (3, spec.height, spec.width) if spec.input_layout == "NCHW" else (spec.height, spec.width, 3)


def complete_spec(spec: ModelSpec, io: OnnxIO) -> ModelSpec:
    """Fill what a DeepStream config leaves to the model: the input name (nvinfer uses the only
    input) and whether a float output is softmax, sigmoid or raw logits (from its producing op)."""
    update: dict[str, object] = {}
    if not spec.input_name:
        if len(io.inputs) != 1:
            raise ModelError(f"model has {len(io.inputs)} inputs ({', '.join(t.name for t in io.inputs)}); name the one to feed in the spec (input_name)")
        update["input_name"] = io.inputs[0].name
    if not spec.output_name:
        if len(io.outputs) != 1:
            raise ModelError(f"model has {len(io.outputs)} outputs ({', '.join(t.name for t in io.outputs)}); name the one to read in the spec (output_name)")
        update["output_name"] = io.outputs[0].name
    out = io.output(str(update.get("output_name", spec.output_name)))
    if out is not None and spec.output_kind == "auto" and out.dtype.kind in "iu":
        update["output_kind"] = "argmax"
    elif out is not None and spec.output_kind == "auto" and out.dtype.kind == "f":
        op = io.producers.get(out.name, "")
        channels = _channels(out.shape, spec.output_layout)
        if op == "Softmax":
            update["output_kind"] = "softmax"
        elif op == "Sigmoid":
            update["output_kind"] = "sigmoid"
            update["person_index"] = 0
        else:
            update["output_kind"] = "logits"
            if channels == 1:
                update["person_index"] = 0
    return spec.model_copy(update=update) if update else spec


def _channels(shape: tuple[Dim, ...], layout: str) -> int | None:
    if len(shape) == 4:
        return _fixed(shape[1] if layout == "NCHW" else shape[3])
    return 1 if len(shape) == 3 else None


def validate_spec(spec: ModelSpec, io: OnnxIO, path: Path) -> None:
    """Raise ModelError naming the tensor and both shapes when the ONNX cannot serve the spec."""
    inp = io.input(spec.input_name)
    if inp is None:
        raise ModelError(f"{path}: spec {spec.name!r} expects input {spec.input_name!r}, model has {', '.join(str(t) for t in io.inputs) or 'none'}")
    want = expected_input_shape(spec)
    if len(inp.shape) != 4:
        raise ModelError(
            f"{path}: input {inp.name!r} has rank {len(inp.shape)} {list(inp.shape)}; spec {spec.name!r} needs rank 4 [N,{','.join(map(str, want))}] ({spec.input_layout})"
        )
    for got, exp in zip(inp.shape[1:], want):
        if _fixed(got) is not None and got != exp:
            raise ModelError(f"{path}: input {inp.name!r} shape {list(inp.shape)} does not match spec {spec.name!r} [N,{','.join(map(str, want))}] ({spec.input_layout})")
    if inp.dtype != np.float32:
        raise ModelError(f"{path}: input {inp.name!r} is {inp.dtype.name}; only float32 inputs are supported")

    out = io.output(spec.output_name)
    if out is None:
        raise ModelError(f"{path}: spec {spec.name!r} expects output {spec.output_name!r}, model has {', '.join(str(t) for t in io.outputs) or 'none'}")
    if spec.output_kind == "auto":
        raise ModelError(f"{path}: cannot tell what output {spec.output_name!r} holds; set output_kind")
    if spec.output_kind == "argmax":
        if out.dtype.kind not in "iu":
            raise ModelError(f"{path}: output {out.name!r} is {out.dtype.name} but spec {spec.name!r} expects argmax class ids (int32/int64)")
    elif out.dtype.kind != "f":
        raise ModelError(f"{path}: output {out.name!r} is {out.dtype.name} but spec {spec.name!r} expects {spec.output_kind} floats")
    if len(out.shape) not in (3, 4):
        raise ModelError(f"{path}: output {out.name!r} has rank {len(out.shape)} {list(out.shape)}; expected [N,C,H,W] or [N,H,W,C] ({spec.output_layout})")
    ch = _channels(out.shape, spec.output_layout)
    if spec.output_kind == "argmax" and ch not in (None, 1):
        raise ModelError(f"{path}: output {out.name!r} shape {list(out.shape)} has {ch} channels in layout {spec.output_layout}; argmax ids need 1 (spec {spec.name!r})")
    if spec.output_kind == "softmax" and ch is not None and ch < 2:
        raise ModelError(f"{path}: output {out.name!r} shape {list(out.shape)} has {ch} channel(s); softmax needs ≥ 2")
    if spec.output_kind in ("softmax", "logits") and ch is not None and ch >= 2 and spec.person_index >= ch:
        raise ModelError(f"{path}: person_index {spec.person_index} out of range for output {out.name!r} with {ch} channels")
    if spec.output_kind == "sigmoid" and ch not in (None, 1) and spec.person_index >= ch:
        raise ModelError(f"{path}: person_index {spec.person_index} out of range for output {out.name!r} with {ch} channels")
    # A stretch spec whose fixed input is the same size as the output must keep the aspect.
    in_hw = inp.shape[2:4] if spec.input_layout == "NCHW" else inp.shape[1:3]
    out_hw = (out.shape[2:4] if spec.output_layout == "NCHW" else out.shape[1:3]) if len(out.shape) == 4 else out.shape[1:3]
    if all(_fixed(d) for d in (*in_hw, *out_hw)):
        r_in = in_hw[0] / in_hw[1]
        r_out = out_hw[0] / out_hw[1]
        if abs(r_in - r_out) > 0.05 * r_in:
            raise ModelError(f"{path}: output {out.name!r} shape {list(out.shape)} is not laid out as {spec.output_layout} for input {list(inp.shape)} (aspect mismatch)")


# ---------------------------------------------------------------------------------------------
# ArgMax → logits rewrite (soft masks from TAO-style models)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExposedLogits:
    path: Path
    output_name: str
    layout: str  # NCHW or NHWC: where the class axis of the exposed tensor is


def expose_argmax_logits(src: Path, argmax_output: str, dst_dir: Path) -> ExposedLogits:
    """Write a copy of ``src`` whose ArgMax input (the pre-ArgMax scores) is an extra graph output.

    TAO's UNet exporter removes the softmax and appends ``ArgMax(axis=-1) -> argmax_1`` on NHWC
    logits (research §1.3), so the tensor feeding ArgMax is the logits we want.  The class axis of
    the exposed tensor follows the ArgMax ``axis``.  The result is cached by content hash.
    """
    import onnx
    from onnx import helper

    model = _load(src)
    node = next((n for n in model.graph.node if argmax_output in n.output), None)
    if node is None or node.op_type != "ArgMax":
        op = node.op_type if node is not None else "nothing (not a node output)"
        raise ModelError(f"{src}: cannot expose logits: output {argmax_output!r} is produced by {op}, not ArgMax")
    logits = node.input[0]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    # Rank of the ArgMax input: from shape inference when possible, else 4 (image segmentation).
    rank, vi = 4, None
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        vi = next((v for v in list(inferred.graph.value_info) + list(inferred.graph.output) if v.name == logits), None)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            rank = len(vi.type.tensor_type.shape.dim) or 4
        else:
            vi = None
    except Exception:  # shape inference is best effort
        vi = None
    axis = axis % rank
    if rank != 4 or axis not in (1, 3):
        raise ModelError(f"{src}: ArgMax over axis {axis} of a rank-{rank} tensor; expected class axis 1 (NCHW) or 3 (NHWC)")
    layout = "NCHW" if axis == 1 else "NHWC"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / f"{src.stem}.{digest}.logits.onnx"
    if not dst.is_file():
        if not any(o.name == logits for o in model.graph.output):
            out_vi = vi if vi is not None else helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, [None] * 4)
            model.graph.output.append(out_vi)
        tmp = dst.with_suffix(".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(dst)
    return ExposedLogits(dst, logits, layout)
