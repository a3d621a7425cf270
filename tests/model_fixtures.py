"""Helpers shared by test_tflite2onnx.py and test_pull.py.

* ``mediapipe_wheel()``: the real mediapipe 0.10.21 wheel, fetched from PyPI once per
  session with the product's own ``download_wheel`` (kept in ``$PRIVACY_FILTER_TEST_CACHE``
  when set, so repeated local runs do not re-download).
* ``tiny_tflite()``: a minimal, valid TFLite flatbuffer with one operator, built with the
  schema's own builder functions, for error paths (unsupported op, wrong input size).
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path

import flatbuffers
import pytest

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
        pytest.skip(f"cannot fetch the mediapipe wheel from PyPI (needs network, or a wheel in "
                    f"$PRIVACY_FILTER_TEST_CACHE): {exc}")


def _m(name: str):  # noqa: ANN202 - schema module
    return importlib.import_module(f"tflite.{name}")


def tiny_tflite(*, builtin: int | None = None, custom: str | None = None,
                in_shape: tuple[int, ...] = (1, 4, 4, 3), out_shape: tuple[int, ...] = (1, 4, 4, 3)) -> bytes:
    """A one-operator float TFLite model: input 'x' → op → output 'y'."""
    b = flatbuffers.Builder(1024)
    T, SG, OP, OC, BUF, MOD = (_m(n) for n in ("Tensor", "SubGraph", "Operator", "OperatorCode", "Buffer", "Model"))

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

    tensors = []
    for name, shape in (("x", in_shape), ("y", out_shape)):
        n = b.CreateString(name)
        s = ivec(T.TensorStartShapeVector, list(shape))
        T.TensorStart(b)
        T.TensorAddShape(b, s)
        T.TensorAddType(b, 0)
        T.TensorAddBuffer(b, 0)
        T.TensorAddName(b, n)
        tensors.append(T.TensorEnd(b))
    tv = ovec(SG.SubGraphStartTensorsVector, tensors)
    op_in = ivec(OP.OperatorStartInputsVector, [0])
    op_out = ivec(OP.OperatorStartOutputsVector, [1])
    OP.OperatorStart(b)
    OP.OperatorAddOpcodeIndex(b, 0)
    OP.OperatorAddInputs(b, op_in)
    OP.OperatorAddOutputs(b, op_out)
    op = OP.OperatorEnd(b)
    ops = ovec(SG.SubGraphStartOperatorsVector, [op])
    sg_in = ivec(SG.SubGraphStartInputsVector, [0])
    sg_out = ivec(SG.SubGraphStartOutputsVector, [1])
    SG.SubGraphStart(b)
    SG.SubGraphAddTensors(b, tv)
    SG.SubGraphAddInputs(b, sg_in)
    SG.SubGraphAddOutputs(b, sg_out)
    SG.SubGraphAddOperators(b, ops)
    sg = SG.SubGraphEnd(b)
    cc = b.CreateString(custom) if custom else None
    code = 32 if custom else int(builtin or 0)  # 32 = CUSTOM
    OC.OperatorCodeStart(b)
    OC.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
    OC.OperatorCodeAddBuiltinCode(b, code)
    if cc is not None:
        OC.OperatorCodeAddCustomCode(b, cc)
    OC.OperatorCodeAddVersion(b, 1)
    opcode = OC.OperatorCodeEnd(b)
    BUF.BufferStart(b)
    buf0 = BUF.BufferEnd(b)
    codes = ovec(MOD.ModelStartOperatorCodesVector, [opcode])
    sgs = ovec(MOD.ModelStartSubgraphsVector, [sg])
    bufs = ovec(MOD.ModelStartBuffersVector, [buf0])
    MOD.ModelStart(b)
    MOD.ModelAddVersion(b, 3)
    MOD.ModelAddOperatorCodes(b, codes)
    MOD.ModelAddSubgraphs(b, sgs)
    MOD.ModelAddBuffers(b, bufs)
    b.Finish(MOD.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())
