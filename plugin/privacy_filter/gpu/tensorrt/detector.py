"""A person detector (NanoDet) as a serialized TensorRT engine.

Only ``run`` is TensorRT's: planning, preprocessing from the I420 planes, batching, GFL decoding
and NMS are ``engines.detector.DetectorEngine``'s, shared with ONNX Runtime, so both backends find
the same boxes for the same network outputs.

The input is dynamic in batch, height and width (a frame's long side, padded to 32), within the
engine's optimization profile (``engine build nanodet``: batch 1..--max-batch, sides up to
--max-side, default 640).  Device buffers follow the input's shape and are bound by address each
run; output shapes are read from the context after ``set_input_shape``, as they follow the input's.

Written against the documented TensorRT 10/11 Python API, as ``runtime.TensorRTSegmenter`` is.
The tests run it against a fake of that API (tests/support/fake_tensorrt.py, which runs the
engine's ONNX with ONNX Runtime); it has not run on a GPU here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import Unpack

from privacy_filter.engines.detector import DetectorEngine, DetectorOptions, OrtDetector
from privacy_filter.errors import ModelError
from privacy_filter.gpu.tensorrt.loader import TensorRTUnavailable
from privacy_filter.gpu.tensorrt.runtime import deserialize, engine_io, engine_source_onnx, open_engine, release_in_order
from privacy_filter.models.registry import ResolvedDetector

log = logging.getLogger(__name__)


class TensorRTDetector(DetectorEngine):
    """``DetectorEngine`` whose network is a TensorRT engine built by ``privacy-filter engine build nanodet``."""

    def __init__(self, engine_path: str | os.PathLike[str], **options: Unpack[DetectorOptions]) -> None:
        self.path = Path(engine_path)
        trt, cp, info = open_engine(self.path)
        self._cp = cp
        super().__init__(info.detector_spec(self.path), **options)
        self.info = info
        self._runtime, self._engine = deserialize(trt, self.path)
        io = {t.name: t for t in engine_io(trt, self._engine)}
        inputs = [t for t in io.values() if t.is_input]
        if len(inputs) != 1 or inputs[0].name != self.spec.input_name:
            raise ModelError(f"{self.path}: engine inputs [{', '.join(map(str, inputs))}] do not match detector spec {self.spec.name!r} input {self.spec.input_name!r}")
        self._outputs = [*self.spec.score_outputs, *self.spec.box_outputs]
        missing = [n for n in self._outputs if n not in io or io[n].is_input]
        if missing:
            raise ModelError(f"{self.path}: engine has no output(s) {', '.join(missing)} that detector spec {self.spec.name!r} reads")
        self.io = io
        self.input = inputs[0]
        if -1 in self.input.shape:
            mn, _, mx = (tuple(int(d) for d in s) for s in self._engine.get_tensor_profile_shape(self.input.name, 0))
        else:
            mn = mx = tuple(int(d) for d in self.input.shape)
        self.profile_min, self.profile_max = mn, mx
        self.max_batch = min(self.max_batch, mx[0])
        self._context = self._engine.create_execution_context()
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._dev: dict[str, Any] = {}  # name -> device buffer of the last shape run
        log.info(
            "detector %s: TensorRT engine %s (%s, TensorRT %s), input %s, batch 1..%d, sides %d..%d",
            self.spec.name,
            self.path,
            info.precision,
            trt.__version__,
            self.input.name,
            self.max_batch,
            min(mn[2], mn[3]),
            max(mx[2], mx[3]),
        )

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A device array of ``shape`` for tensor ``name``, bound to the context by address.

        Kept while the shape stays (a stream's frames share one input size); a new shape gets a new
        array, after the stream has finished with the old one.
        """
        buf = self._dev.get(name)
        if buf is None or tuple(buf.shape) != shape:
            self.stream.synchronize()
            buf = self._dev[name] = self._cp.empty(shape, dtype=dtype)
        if not self._context.set_tensor_address(name, buf.data.ptr):
            raise ModelError(f"{self.path}: TensorRT refused the buffer address of tensor {name!r}")
        return buf

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=self.input.dtype)
        n, c, h, w = batch.shape
        lo, hi = self.profile_min, self.profile_max
        if not (lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3]):
            raise ModelError(
                f"{self.path}: a detector input of {w}x{h} is outside the engine's profile ({lo[3]}x{lo[2]} .. {hi[3]}x{hi[2]}); "
                f"use a smaller detector long_side, or rebuild with 'privacy-filter engine build nanodet --max-side {max(h, w)}'"
            )
        parts: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for start in range(0, n, self.max_batch):
            chunk = batch[start : start + self.max_batch]
            if not self._context.set_input_shape(self.input.name, chunk.shape):
                raise ModelError(f"{self.path}: TensorRT refused input shape {list(chunk.shape)} (profile {list(lo)} .. {list(hi)})")
            dev_in = self._buffer(self.input.name, chunk.shape, self.input.dtype)
            dev_in.set(chunk, stream=self.stream)
            outs = {}
            for name, t in self.io.items():  # every I/O tensor needs an address, read or not
                if t.is_input:
                    continue
                shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ModelError(f"{self.path}: output {name!r} has no shape for input {list(chunk.shape)}")
                outs[name] = self._buffer(name, shape, t.dtype)
            if not self._context.execute_async_v3(self.stream.ptr):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path} (input {list(chunk.shape)})")
            host = [outs[name].get(stream=self.stream) for name in self._outputs]
            self.stream.synchronize()
            for k, arr in enumerate(host):
                parts[k].append(np.asarray(arr, np.float32))
        return [p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in parts]

    def close(self) -> None:
        """Release context, buffers, engine, runtime in that order once the stream is idle (TensorRT
        requires a context to go before its engine, and the engine before its runtime)."""
        release_in_order(self, ("_context", "_dev", "stream", "_engine", "_runtime"))


def detector_for_engine(path: str | os.PathLike[str], device: str = "cuda", *, threads: int | None = None, **options: Unpack[DetectorOptions]) -> DetectorEngine:
    """The detector for ``detector.name: ENGINE`` (what ``backends.create_detector`` calls).

    ``cuda``: TensorRT, or an error saying what is missing.  ``auto``: TensorRT when it can be
    imported, else the ONNX the engine was built from on ONNX Runtime (CPU), with one warning.
    ``cpu``: that ONNX directly.  ``options``: ``DetectorEngine``'s (long side, threshold, tiles ...).
    """
    path = Path(path)  # ``threads``: ONNX Runtime's, for the CPU fallback
    if not path.is_file():
        raise ModelError(f"TensorRT engine not found: {path}")
    if device not in ("cuda", "auto", "cpu"):
        raise ModelError(f"unknown device {device!r}; expected cpu, cuda or auto")
    try:
        if device == "cpu":
            raise TensorRTUnavailable("device cpu")
        return TensorRTDetector(path, **options)
    except TensorRTUnavailable as exc:
        if device == "cuda":
            raise
        info, onnx = engine_source_onnx(path, str(exc), warn=device == "auto")
        return OrtDetector(ResolvedDetector(info.detector_spec(path), onnx), device="cpu", threads=threads, **options)
