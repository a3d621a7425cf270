"""Helpers shared by test_tflite2onnx.py and test_pull.py.

* ``mediapipe_wheel()``: the real mediapipe 0.10.21 wheel, fetched from PyPI once per
  session with the product's own ``download_wheel`` (kept in ``$PRIVACY_FILTER_TEST_CACHE``
  when set, so repeated local runs do not re-download).
* ``build_tflite()`` / ``tiny_tflite()``: small valid TFLite flatbuffers built with the
  schema's own builder functions, to test op paths the selfie models do not exercise
  and error paths (unsupported op, wrong input size).
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite

from privacy_filter.errors import ModelError
from privacy_filter.models import pull


@functools.lru_cache(maxsize=1)
def _wheel_in(directory: str) -> Path:
    d = Path(directory)
    found = sorted(d.glob(f"mediapipe-{pull.MEDIAPIPE_VERSION}-*.whl"))
    if found:
        return found[0]
    return pull.download_wheel(d, progress=False)


def mediapipe_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = os.environ.get("PRIVACY_FILTER_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "mediapipe-wheel")
    try:
        return _wheel_in(directory)
    except ModelError as exc:
        pytest.skip(f"cannot fetch the mediapipe wheel from PyPI (needs network, or a wheel in $PRIVACY_FILTER_TEST_CACHE): {exc}")


def _m(name: str):  # noqa: ANN202 - schema module
    return importlib.import_module(f"tflite.{name}")


@dataclass
class T:
    """A tensor of a hand-built model: an activation (data None) or a constant."""

    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    dtype: int = 0  # tflite.TensorType (0 FLOAT32, 1 FLOAT16, 2 INT32)


@dataclass
class Op:
    """An operator: builtin code or custom code, tensor indices, options {field: value}."""

    code: int | str
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, dict[str, int]] | None = None  # ("Conv2DOptions", {"Padding": 0, ...})
    custom_options: bytes | None = None


def build_tflite(tensors: list[T], ops: list[Op], inputs: list[int], outputs: list[int]) -> bytes:
    """Serialise a small float TFLite model with the schema's own builder functions."""
    b = flatbuffers.Builder(4096)
    TS, SG, OP, OC, BUF, MOD = (_m(n) for n in ("Tensor", "SubGraph", "Operator", "OperatorCode", "Buffer", "Model"))

    def ivec(start, values: list[int]) -> int:
        start(b, len(values))
        for v in reversed(values):
            b.PrependInt32(v)
        return b.EndVector()

    def ovec(start, offsets: list[int]) -> int:
        start(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    buffers = [None]  # buffer 0 is the empty one
    t_offsets = []
    for t in tensors:
        buf_idx = 0
        if t.data is not None:
            buffers.append(np.ascontiguousarray(t.data).tobytes())
            buf_idx = len(buffers) - 1
        n = b.CreateString(t.name)
        s = ivec(TS.TensorStartShapeVector, list(t.shape))
        TS.TensorStart(b)
        TS.TensorAddShape(b, s)
        TS.TensorAddType(b, t.dtype)
        TS.TensorAddBuffer(b, buf_idx)
        TS.TensorAddName(b, n)
        t_offsets.append(TS.TensorEnd(b))
    tv = ovec(SG.SubGraphStartTensorsVector, t_offsets)

    codes: list[int | str] = []
    op_offsets = []
    for op in ops:
        if op.code not in codes:
            codes.append(op.code)
        opts = None
        if op.options is not None:
            cls, fields = op.options
            mod = _m(cls)
            getattr(mod, f"{cls}Start")(b)
            for field, value in fields.items():
                getattr(mod, f"{cls}Add{field}")(b, value)
            opts = getattr(mod, f"{cls}End")(b)
        custom = b.CreateNumpyVector(np.frombuffer(op.custom_options, np.uint8)) if op.custom_options else None
        op_in = ivec(OP.OperatorStartInputsVector, op.inputs)
        op_out = ivec(OP.OperatorStartOutputsVector, op.outputs)
        OP.OperatorStart(b)
        OP.OperatorAddOpcodeIndex(b, codes.index(op.code))
        OP.OperatorAddInputs(b, op_in)
        OP.OperatorAddOutputs(b, op_out)
        if opts is not None:
            OP.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options[0]))
            OP.OperatorAddBuiltinOptions(b, opts)
        if custom is not None:
            OP.OperatorAddCustomOptions(b, custom)
        op_offsets.append(OP.OperatorEnd(b))
    opv = ovec(SG.SubGraphStartOperatorsVector, op_offsets)
    sg_in = ivec(SG.SubGraphStartInputsVector, inputs)
    sg_out = ivec(SG.SubGraphStartOutputsVector, outputs)
    SG.SubGraphStart(b)
    SG.SubGraphAddTensors(b, tv)
    SG.SubGraphAddInputs(b, sg_in)
    SG.SubGraphAddOutputs(b, sg_out)
    SG.SubGraphAddOperators(b, opv)
    sg = SG.SubGraphEnd(b)

    oc_offsets = []
    for code in codes:
        cc = b.CreateString(code) if isinstance(code, str) else None
        num = 32 if isinstance(code, str) else code  # 32 = CUSTOM
        OC.OperatorCodeStart(b)
        OC.OperatorCodeAddDeprecatedBuiltinCode(b, min(num, 127))
        OC.OperatorCodeAddBuiltinCode(b, num)
        if cc is not None:
            OC.OperatorCodeAddCustomCode(b, cc)
        OC.OperatorCodeAddVersion(b, 1)
        oc_offsets.append(OC.OperatorCodeEnd(b))
    buf_offsets = []
    for data in buffers:
        vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
        BUF.BufferStart(b)
        if vec is not None:
            BUF.BufferAddData(b, vec)
        buf_offsets.append(BUF.BufferEnd(b))
    codes_v = ovec(MOD.ModelStartOperatorCodesVector, oc_offsets)
    sgs = ovec(MOD.ModelStartSubgraphsVector, [sg])
    bufs = ovec(MOD.ModelStartBuffersVector, buf_offsets)
    MOD.ModelStart(b)
    MOD.ModelAddVersion(b, 3)
    MOD.ModelAddOperatorCodes(b, codes_v)
    MOD.ModelAddSubgraphs(b, sgs)
    MOD.ModelAddBuffers(b, bufs)
    b.Finish(MOD.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tiny_tflite(*, builtin: int | None = None, custom: str | None = None, in_shape: tuple[int, ...] = (1, 4, 4, 3), out_shape: tuple[int, ...] = (1, 4, 4, 3)) -> bytes:
    """A one-operator float TFLite model: input 'x' → op → output 'y'."""
    code: int | str = custom if custom else int(builtin or 0)
    return build_tflite([T("x", in_shape), T("y", out_shape)], [Op(code, [0], [1])], [0], [1])
