"""Small GPU-path bugs of issue 11, each reproduced without a GPU.

* ``typing.Self`` (Python 3.11+) broke imports on Python 3.10, which pyproject.toml supports;
* a sticky CUDA error left the stage covering frames on a dead context: it must end the stage;
* a letterboxed device probability map (a strided CuPy view) went through ``np.asarray``;
* a static-batch TensorRT engine with B > 1 refused a single frame;
* TensorRT objects were released in garbage-collection order (runtime before its engine).
TensorRT is the fake of tests/fake_tensorrt.py and device arrays are stand-ins: nothing here ran on a GPU.
"""

from __future__ import annotations

import ast
import gc
import json
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from test_tensorrt_glue import _build, pssn_model, pssn_onnx  # noqa: F401  (fixtures)

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.engines.onnxruntime import OrtSegmenter
from privacy_filter.frames import YuvFrame
from privacy_filter.gpu.tensorrt import runtime as trtglue
from privacy_filter.stage import FilterStage, StageStream
from support import fake_tensorrt as fake

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- Python 3.10


def test_no_module_uses_typing_self_which_python_3_10_lacks() -> None:
    bad = []
    for path in sorted([*(REPO / "plugin").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in ("typing", "typing_extensions") and node.module == "typing":
                bad += [f"{path.relative_to(REPO)}:{node.lineno}" for a in node.names if a.name == "Self"]
            elif isinstance(node, ast.Attribute) and node.attr == "Self" and getattr(node.value, "id", None) == "typing":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, f"typing.Self needs Python 3.11: {bad}"


# --------------------------------------------------------------------------- sticky CUDA errors


class CUDARuntimeError(RuntimeError):
    """Named like cupy_backends.cuda.api.runtime.CUDARuntimeError."""


def _frame() -> YuvFrame:
    return YuvFrame(np.full((8, 8), 100, np.uint8), np.full((4, 4), 128, np.uint8), np.full((4, 4), 128, np.uint8), stream_id="cam", index=0)


class _Effect:
    def __init__(self, exc: Exception | None) -> None:
        self.exc = exc

    def apply(self, frame: YuvFrame, prob: np.ndarray) -> np.ndarray:
        if self.exc is not None:
            raise self.exc
        return np.zeros((frame.height, frame.width), np.uint8)

    def cover_whole(self, frame: YuvFrame) -> np.ndarray:
        return np.full((frame.height, frame.width), 255, np.uint8)

    def reset(self) -> None:
        pass


class _Seg:
    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc

    def infer_yuv(self, frames: list[YuvFrame]) -> list[np.ndarray]:
        if self.exc is not None:
            raise self.exc
        return [np.zeros((4, 4), np.float32) for _ in frames]


def _stage(seg: Any, fx: Any) -> FilterStage:
    return FilterStage(seg, {"cam": StageStream(on_failure="cover")}, effects={"cam": fx})


def test_an_ordinary_effect_error_covers_the_frame_and_the_stage_keeps_running() -> None:
    stage = _stage(_Seg(), _Effect(ValueError("bad table")))
    (r,) = stage.process([_frame()])
    assert r.status == "covered"
    stage.close()


@pytest.mark.parametrize("where", ["effect", "segmentation"])
def test_a_sticky_cuda_error_ends_the_stage_instead_of_covering_every_frame(where: str) -> None:
    err = CUDARuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
    stage = _stage(_Seg(err if where == "segmentation" else None), _Effect(err if where == "effect" else None))
    with pytest.raises(RuntimeError, match="cudaErrorIllegalAddress") as ei:
        stage.process([_frame()])
    assert type(ei.value).__name__ == "DeviceLost"  # not an EngineFailure/effect failure that covers and carries on
    stage.close()


# --------------------------------------------------------------------------- letterboxed device maps


class _DeviceArray:
    """A device array stand-in that, like a CuPy array, refuses implicit conversion to NumPy."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    flags = property(lambda self: self._a.flags)

    def __getitem__(self, key: Any) -> _DeviceArray:
        return _DeviceArray(self._a[key])

    def __array__(self, *args: Any, **kw: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly.")


def test_a_letterboxed_device_map_stays_on_the_device() -> None:
    from privacy_filter.gpu.effects import CudaStreamEffect
    from support.gpu_emulation import EmulatedRuntime

    class Runtime(EmulatedRuntime):
        def __init__(self) -> None:
            super().__init__()

            def ascontiguousarray(a: Any, dtype: Any = None) -> np.ndarray:
                return np.ascontiguousarray(a._a if isinstance(a, _DeviceArray) else a, dtype=dtype)

            self.xp = SimpleNamespace(**{k: getattr(np, k) for k in ("zeros", "full", "empty", "uint8", "float32")}, ascontiguousarray=ascontiguousarray)

        def is_device_array(self, a: Any) -> bool:
            return isinstance(a, (np.ndarray, _DeviceArray))

    prob = np.zeros((64, 64), np.float32)
    prob[8:56, 20:44] = 1.0
    letterboxed = _DeviceArray(prob)[8:56, 4:60]  # the content of a letterboxed engine output: a strided view
    assert not letterboxed.flags.c_contiguous
    fx = CudaStreamEffect(EffectConfig(kind="fill"), MaskConfig(), runtime=Runtime())
    frame = YuvFrame(np.full((96, 128), 100, np.uint8), np.full((48, 64), 128, np.uint8), np.full((48, 64), 128, np.uint8))
    alpha = fx.apply(frame, letterboxed)
    assert alpha.shape == (96, 128) and alpha.max() == 255 and alpha.min() == 0


# --------------------------------------------------------------------------- TensorRT


def _static_engine(out: Path, batch: int) -> None:
    """Rewrite a (fake) dynamic-batch plan into a static batch of ``batch`` without a profile range."""
    data = out.read_bytes()
    plan = json.loads(data[len(fake.MAGIC) :])
    for t in plan["io"]:
        t["shape"] = [batch if d == -1 else d for d in t["shape"]]
    plan["profile"] = {k: [[batch if i == 0 else d for i, d in enumerate(v[0])]] * 3 for k, v in plan["profile"].items()}
    out.write_bytes(fake.MAGIC + json.dumps(plan).encode())


def test_a_static_batch_engine_pads_a_single_frame(install, pssn_model, tmp_path):  # noqa: F811
    install("10.8.0.43")
    out = tmp_path / "static4.engine"
    _build(pssn_model, out, max_batch=4)
    _static_engine(out, 4)
    seg = trtglue.TensorRTSegmenter(out)
    assert seg.max_batch == 4
    img = np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8)
    (got,) = seg.infer_rgb([img])
    (want,) = OrtSegmenter(pssn_model, device="cpu", threads=1).infer_rgb([img])
    np.testing.assert_array_equal(got, want)
    assert seg.run_device(1).shape[0] == 1
    seg.close()


def test_tensorrt_objects_are_released_context_then_engine_then_runtime(install, pssn_model, tmp_path):  # noqa: F811
    install("10.8.0.43")
    out = tmp_path / "pssn.engine"
    _build(pssn_model, out, max_batch=2)
    for how in ("garbage collection", "close"):
        seg = trtglue.TensorRTSegmenter(out)
        order: list[str] = []
        for name in ("_context", "_engine", "_runtime"):
            weakref.finalize(getattr(seg, name), order.append, name)
        if how == "close":
            seg.close()
            assert order == ["_context", "_engine", "_runtime"]
        del seg
        gc.collect()
        assert order == ["_context", "_engine", "_runtime"], how
