"""Native TensorRT engine on CuPy buffers, and ``privacy-filter engine build|inspect``.

Why this exists next to ONNX Runtime: on an NVIDIA GPU a serialized TensorRT engine is the
fastest way to run PeopleSemSegNet (FP16, or INT8 with NVIDIA's calibration cache on 10.x),
and keeping its input and output in CuPy device buffers lets the CUDA effects read the mask
without a round trip through the host.

Written against the documented TensorRT Python API:

* build: ``Builder`` → ``create_network(0)`` → ``OnnxParser.parse_from_file`` → builder config with
  a workspace pool limit and one optimization profile (batch 1 … ``--max-batch``) →
  ``build_serialized_network``;
* precision: TensorRT 10.x uses ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` with a cache-only
  calibrator.  TensorRT 11.x removed both (strong typing only): the engine takes the precision
  the ONNX carries, FP16 comes from ModelOpt AutoCast, INT8 from Q/DQ nodes (ModelOpt);
* run: name-based I/O (``num_io_tensors``, ``get_tensor_name/mode/dtype/shape``), output dtype read
  at run time with ``trt.nptype`` (PeopleSemSegNet's ``argmax_1`` is INT64 or INT32 depending on
  the TensorRT version), ``set_input_shape``, ``set_tensor_address(arr.data.ptr)``,
  ``execute_async_v3(stream.ptr)`` on a non-blocking CuPy stream.

Entry points: ``TensorRTSegmenter`` (the common ``Segmenter``: host ``run``/``infer_yuv``/
``infer_rgb``, plus ``infer_device`` for frames already on the GPU), ``segmenter_for_engine`` (what
``create_segmenter`` calls for a ``.engine``/``.plan``/``.trt`` model path), ``build_engine``, and the
CLI handlers ``cmd_build`` / ``cmd_inspect``.

Every engine file gets a sidecar ``<engine>.json`` with the model spec, the TensorRT version and
the GPU it was built on.  Plans are only valid for the TensorRT version that built them, so a
mismatch is refused with a message saying how to rebuild, instead of TensorRT's opaque error.

Nothing here is imported unless the TensorRT backend is asked for: ``tensorrt`` and ``cupy`` are
imported lazily, and their absence is one clear error.  The tests run this module against a fake
of the documented API (tests/fake_tensorrt.py); it has not been run against real TensorRT here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.preprocess import item_shape
from privacy_filter.errors import ModelError
from privacy_filter.gpu.tensorrt.loader import TensorRTUnavailable, gpu_name, import_cupy, import_tensorrt, trt_logger, trt_major
from privacy_filter.gpu.tensorrt.sidecar import EngineInfo, check_engine_compatible, read_sidecar
from privacy_filter.models.specs import ModelSpec

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Lazy imports and version facts
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Sidecar: what an engine file was built from
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------


def open_engine(path: Path) -> tuple[ModuleType, ModuleType, EngineInfo]:
    """(tensorrt, cupy, sidecar) for an engine file that this TensorRT can load: one error naming
    what is missing (the file, TensorRT, CuPy, the sidecar) or why it cannot load (another TensorRT version)."""
    if not path.is_file():
        raise ModelError(f"TensorRT engine not found: {path}")
    trt = import_tensorrt()
    trt_major(trt)
    cp, _ = import_cupy()
    info = read_sidecar(path)
    check_engine_compatible(info, trt, path, gpu_name(cp))
    return trt, cp, info


def release_in_order(owner: Any, names: Sequence[str]) -> None:
    """Wait for ``owner.stream``, then drop ``owner``'s attributes ``names`` in that order.

    TensorRT needs an execution context released before its engine and the engine before its
    runtime; buffers go while the context that may still read them is idle.
    """
    stream = getattr(owner, "stream", None)
    if stream is not None and getattr(owner, "_context", None) is not None:
        try:
            stream.synchronize()
        except Exception as exc:  # noqa: BLE001 - a dead context must not stop the release
            log.warning("%s: stream synchronize at close failed: %s", getattr(owner, "path", owner), exc)
    for name in names:
        if hasattr(owner, name):
            setattr(owner, name, None)


@dataclass(frozen=True)
class TensorDesc:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for dynamic axes

    def __str__(self) -> str:
        dims = ",".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{'input ' if self.is_input else 'output'} {self.name} {self.dtype.name}[{dims}]"


def engine_io(trt: ModuleType, engine: Any) -> list[TensorDesc]:
    """Every I/O tensor by name, with its dtype as TensorRT reports it at run time."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        out.append(
            TensorDesc(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
            )
        )
    return out


def deserialize(trt: ModuleType, engine_path: Path) -> tuple[Any, Any]:
    """(runtime, engine); the runtime must outlive the engine."""
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise ModelError(f"TensorRT engine {engine_path}: cannot read it ({exc.strerror or exc})") from None
    runtime = trt.Runtime(trt_logger(trt))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ModelError(
            f"{engine_path}: TensorRT {trt.__version__} could not deserialize this engine (corrupt, or built "
            "by another TensorRT version / for another GPU); rebuild it with 'privacy-filter engine build'"
        )
    return runtime, engine


class TensorRTSegmenter(Segmenter):
    """A serialized TensorRT engine behind the common ``Segmenter`` interface.

    ``run`` (raw output for a prepared batch) is all the base class needs: preprocessing,
    batching, tiling and decoding are shared with ONNX Runtime, so both give the same maps for
    the same input.  Buffers are allocated once for the engine's maximum batch: device input and
    outputs as CuPy arrays bound by address, plus pinned host staging buffers so host↔device copies
    are asynchronous on the engine's own non-blocking stream.  The device API (``input_buffer``,
    ``run_device``) lets a GPU pipeline keep the batch and the output on the device.
    """

    def __init__(self, engine_path: str | Path, spec: ModelSpec | None = None) -> None:
        self.path = Path(engine_path)
        trt, cp, info = open_engine(self.path)
        _, cpx = import_cupy()
        self._trt, self._cp = trt, cp
        self.info = info
        self.spec = spec or info.segmentation_spec(self.path)
        self._runtime, self._engine = deserialize(trt, self.path)
        self.io = engine_io(trt, self._engine)
        by_name = {t.name: t for t in self.io}
        inputs = [t for t in self.io if t.is_input]
        if len(inputs) != 1 or inputs[0].name != self.spec.input_name:
            raise ModelError(f"{self.path}: engine inputs [{', '.join(str(t) for t in inputs)}] do not match spec {self.spec.name!r} input {self.spec.input_name!r}")
        if self.spec.output_name not in by_name or by_name[self.spec.output_name].is_input:
            raise ModelError(f"{self.path}: engine has no output {self.spec.output_name!r} (outputs: {', '.join(t.name for t in self.io if not t.is_input)})")
        self.input = inputs[0]
        self.output = by_name[self.spec.output_name]
        if self.spec.output_kind == "argmax" and self.output.dtype.kind not in "iu":
            raise ModelError(f"{self.path}: output {self.output.name!r} is {self.output.dtype.name}, spec {self.spec.name!r} expects argmax class ids")
        # A static batch B > 1 always runs B items: fewer are padded (the padding's output is ignored).
        self.static_batch = self.input.shape[0] != -1
        if not self.static_batch:
            self.max_batch = int(self._engine.get_tensor_profile_shape(self.input.name, 0)[2][0])
        else:
            self.max_batch = int(self.input.shape[0])
        self.item_shape = tuple(item_shape(self.spec))
        if any(d not in (-1, e) for d, e in zip(self.input.shape[1:], self.item_shape)):
            raise ModelError(f"{self.path}: engine input {self.input} does not match spec {self.spec.name!r} [N,{','.join(map(str, self.item_shape))}] ({self.spec.input_layout})")

        self._context = self._engine.create_execution_context()
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._set_batch(self.max_batch)
        self._dev: dict[str, Any] = {}
        self._preprocessor: Any = None  # engines.cuda_io.CudaPreprocessor of the last infer_device runtime
        for t in self.io:
            shape = (self.max_batch, *self.item_shape) if t.is_input else tuple(self._context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise ModelError(f"{self.path}: output {t.name!r} has a data-dependent shape {list(shape)}; not supported")
            # Every I/O tensor needs an address, including outputs we do not read.
            self._dev[t.name] = cp.empty(shape, dtype=t.dtype)
            if not self._context.set_tensor_address(t.name, self._dev[t.name].data.ptr):
                raise ModelError(f"{self.path}: TensorRT refused the buffer address of tensor {t.name!r}")
        if self.static_batch and self.max_batch > 1:
            with self.stream:  # padding items read zeros, not uninitialised memory; ordered before every run
                self._dev[self.input.name].fill(0)
        self._pinned_in = cpx.empty_pinned(self._dev[self.input.name].shape, dtype=self.input.dtype)
        self._pinned_out = cpx.empty_pinned(self._dev[self.output.name].shape, dtype=self.output.dtype)
        log.info("TensorRT engine %s (%s, TensorRT %s): %s -> %s, batch 1..%d", self.path, info.precision, trt.__version__, self.input, self.output, self.max_batch)

    # -- plumbing -------------------------------------------------------------------------
    def _set_batch(self, n: int) -> None:
        if not self._context.set_input_shape(self.input.name, (n, *self.item_shape)):
            raise ModelError(f"{self.path}: batch {n} is outside the engine's profile (batch 1..{self.max_batch})")
        self._batch = n

    def _execute(self, n: int, stream: Any = None) -> None:
        n = self.max_batch if self.static_batch else n  # a static engine's input shape is fixed
        if n != self._batch:
            self._set_batch(n)
        if not self._context.execute_async_v3((stream or self.stream).ptr):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path} (batch {n})")

    def close(self) -> None:
        """Release in reverse creation order once the stream is idle: execution context, buffers,
        engine, runtime (TensorRT requires the context to go before its engine, the engine before
        its runtime; left to the garbage collector, the order is the instance dict's)."""
        release_in_order(self, ("_preprocessor", "_context", "_pinned_out", "_pinned_in", "_dev", "stream", "_engine", "_runtime"))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def use_stream(self, stream: Any) -> None:
        """Run this engine on ``stream`` (the filter stage's one stream) from now on; work already
        queued on the old stream is finished first."""
        if stream is not self.stream:
            self.stream.synchronize()
            self.stream = stream

    # -- device API: the GPU pipeline keeps data on the device ----------------------------
    @property
    def input_buffer(self) -> Any:
        """Device input array (max batch); a GPU preprocessing kernel writes items ``[:n]`` of it."""
        return self._dev[self.input.name]

    def run_device(self, n: int, stream: Any = None) -> Any:
        """Enqueue the engine for the first ``n`` items of ``input_buffer`` on ``stream`` (default: its own).

        Returns the raw device output ``[:n]`` (dtype ``self.output.dtype``); decode it on the same
        stream, or synchronize before reading.
        """
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"batch {n} outside the engine's 1..{self.max_batch}")
        self._execute(n, stream)
        return self._dev[self.output.name][:n]

    def infer_device(self, frames: Sequence[Any], rt: Any, colorimetry: Sequence[tuple[str, bool]] | None = None) -> list[Any]:
        """Person probability maps kept on the device, for frames already on the device.

        ``frames`` are ``effects.cuda.DevicePlanes`` (I420 or NV12); ``rt`` is the effects
        ``Runtime`` whose stream the whole chain runs on: the preprocessing kernel writes the engine's
        input buffer, the engine runs, the decoding kernel writes the maps.  Nothing is copied to the
        host.  Maps are (h, w) float32 device arrays at model resolution (letterbox content only).
        Device planes carry no display rotation: pass them upright (the host path, ``infer_yuv``,
        turns frames by their ``rotation`` metadata itself).
        """
        from privacy_filter.gpu.model_io import DEFAULT_COLORIMETRY, CudaPreprocessor, decode_output

        pre = self._preprocessor
        if pre is None or pre.rt is not rt:  # one per runtime: it caches tables per frame geometry
            pre = self._preprocessor = CudaPreprocessor(self.spec, rt)
        stream: Any = getattr(rt, "stream", None)
        # The engine's buffers were last used on self.stream (run(), the static-batch zero fill): when the
        # chain runs on another stream, order it after that work with an event, and order later work on
        # self.stream after the chain with another.  On the stage's shared stream there is nothing to order.
        crossing = stream is not None and stream is not self.stream
        if crossing:
            stream.wait_event(self.stream.record())
        colorimetry = list(colorimetry) if colorimetry is not None else [DEFAULT_COLORIMETRY] * len(frames)
        maps: list[Any] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = list(frames[start : start + self.max_batch])
            _, places = pre(chunk, colorimetry[start : start + len(chunk)], out=self.input_buffer)
            raw = self.run_device(len(chunk), stream)
            prob = decode_output(raw, self.spec, rt)
            maps.extend(place.crop(prob[i]) for i, place in enumerate(places))
        if crossing:
            self.stream.wait_event(stream.record())
        return maps

    # -- Segmenter --------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw output (engine dtype: e.g. int32 or int64 argmax ids) for a prepared host batch."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.item_shape:
            raise ValueError(f"batch of shape {list(batch.shape)} does not match engine input {self.input.name!r} [N,{','.join(map(str, self.item_shape))}]")
        outs = []
        for start in range(0, batch.shape[0], self.max_batch):
            chunk = batch[start : start + self.max_batch]
            n = chunk.shape[0]
            np.copyto(self._pinned_in[:n], chunk, casting="same_kind")
            self._dev[self.input.name][:n].set(self._pinned_in[:n], stream=self.stream)
            self._execute(n)
            self._dev[self.output.name][:n].get(stream=self.stream, out=self._pinned_out[:n])
            self.stream.synchronize()
            outs.append(self._pinned_out[:n].copy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)


def segmenter_for_engine(path: str | os.PathLike[str], device: str = "cuda", tiles: Any = None) -> Segmenter:
    """The segmenter for ``--model ENGINE`` (what ``create_segmenter`` calls for engine paths).

    ``cuda``: TensorRT, or an error saying what is missing.  ``auto``: TensorRT when it can be
    imported, else ONNX Runtime on the CPU with the ONNX the engine was built from (recorded in
    its sidecar), with one warning.  ``cpu``: that ONNX on ONNX Runtime directly.
    """
    from privacy_filter.engines.tiling import parse_tiles

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"TensorRT engine not found: {path}")
    seg: Segmenter
    if device == "cuda":
        seg = TensorRTSegmenter(path)
    elif device in ("auto", "cpu"):
        try:
            if device == "cpu":
                raise TensorRTUnavailable("--device cpu")
            seg = TensorRTSegmenter(path)
        except TensorRTUnavailable as exc:
            seg = _onnx_fallback(path, str(exc), warn=device == "auto")
    else:
        raise ModelError(f"unknown device {device!r}; expected cpu, cuda or auto")
    seg.tiles = parse_tiles(tiles)
    return seg


def _onnx_fallback(path: Path, why: str, warn: bool) -> Segmenter:
    """ONNX Runtime on the CPU with the engine's source ONNX and spec, from the sidecar."""
    from privacy_filter.engines.onnxruntime import OrtSegmenter
    from privacy_filter.models.registry import ResolvedModel

    info, onnx = engine_source_onnx(path, why, warn)
    return OrtSegmenter(ResolvedModel(info.segmentation_spec(path), onnx), device="cpu")


def engine_source_onnx(path: Path, why: str, warn: bool) -> tuple[EngineInfo, Path]:
    """The sidecar and the ONNX an engine was built from, for running it on ONNX Runtime (CPU) where TensorRT cannot run."""
    info = read_sidecar(path)
    onnx = Path(info.onnx)
    if not onnx.is_file():
        raise ModelError(f"{path}: TensorRT cannot be used ({why}) and the ONNX it was built from, {onnx}, is gone; give that ONNX (or its spec) to run on the CPU")
    (log.warning if warn else log.info)("%s: running its source ONNX %s on ONNX Runtime (CPU) instead of TensorRT: %s", path, onnx, why)
    return info, onnx


# ---------------------------------------------------------------------------------------------
# CLI handlers
# ---------------------------------------------------------------------------------------------
