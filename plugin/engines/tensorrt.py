"""Native TensorRT engine on CuPy buffers, and ``privacy-filter engine build|inspect``.

Why this exists next to ONNX Runtime: on an NVIDIA GPU a serialized TensorRT engine is the
fastest way to run PeopleSemSegNet (FP16, or INT8 with NVIDIA's calibration cache on 10.x),
and keeping its input and output in CuPy device buffers lets the CUDA effects read the mask
without a round trip through the host.

Written against the documented TensorRT Python API (research/peoplesemsegnet-gpu-apis.md §2):

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

import argparse
import datetime as _dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.preprocess import item_shape
from privacy_filter.errors import ModelError, UserError
from privacy_filter.models.specs import ModelSpec

log = logging.getLogger(__name__)

def _onnx_sha256(path: Path) -> str:
    from privacy_filter.models.pull import sha256_file  # lazy: pull imports urllib, not needed to run engines

    return sha256_file(path)


SIDECAR_FORMAT = "privacy-filter/tensorrt-engine/1"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
DEFAULT_WORKSPACE_BYTES = 2 << 30  # 2 GiB: ample for 960×544 UNets at batch 4
INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt-cu12 from NVIDIA's index "
    "(pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu12); see README 'GPU deployment'"
)
CUPY_HINT = "CuPy is not installed: pip install 'privacy-filter[gpu]' (cupy-cuda12x); see README 'GPU deployment'"

# TensorRT writes calibration caches with a first line "TRT-<version>-<algorithm>"; the calibrator
# that reads a cache must be of the same algorithm.
_CALIBRATORS = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
    "LegacyCalibration": "IInt8LegacyCalibrator",
}


class TensorRTUnavailable(UserError):
    """TensorRT (or CuPy) cannot be imported on this machine."""


# ---------------------------------------------------------------------------------------------
# Lazy imports and version facts
# ---------------------------------------------------------------------------------------------

def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or one error saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailable(f"{INSTALL_HINT} ({exc})") from None


def import_cupy() -> tuple[ModuleType, ModuleType]:
    """(cupy, cupyx), or one error saying how to install them."""
    try:
        return importlib.import_module("cupy"), importlib.import_module("cupyx")
    except ImportError as exc:
        raise TensorRTUnavailable(f"{CUPY_HINT} ({exc})") from None


def trt_major(trt: ModuleType) -> int:
    """Major version of the imported TensorRT (10 or 11 are supported)."""
    try:
        major = int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        raise TensorRTUnavailable(f"cannot read the TensorRT version from {getattr(trt, '__version__', None)!r}") from None
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is too old: the name-based I/O API needs TensorRT 10 or 11")
    return major


def gpu_name(cp: ModuleType | None = None) -> str:
    """Name of the current CUDA device, or 'unknown' when it cannot be read (recorded, not enforced)."""
    try:
        if cp is None:
            cp, _ = import_cupy()
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is informative only
        return "unknown"


def _logger(trt: ModuleType) -> Any:
    level = trt.Logger.INFO if log.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING
    return trt.Logger(level)


# ---------------------------------------------------------------------------------------------
# Sidecar: what an engine file was built from
# ---------------------------------------------------------------------------------------------

def sidecar_path(engine_path: Path) -> Path:
    return Path(str(engine_path) + ".json")


@dataclass(frozen=True)
class EngineInfo:
    """Contents of ``<engine>.json``."""

    spec: ModelSpec
    tensorrt_version: str
    gpu: str
    precision: str
    max_batch: int
    onnx: str
    onnx_sha256: str
    built_utc: str

    def to_json(self) -> str:
        return json.dumps({
            "format": SIDECAR_FORMAT, "tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
            "precision": self.precision, "max_batch": self.max_batch, "onnx": self.onnx,
            "onnx_sha256": self.onnx_sha256, "built_utc": self.built_utc,
            "spec": self.spec.model_dump(mode="json"),
        }, indent=2)


def read_sidecar(engine_path: Path) -> EngineInfo:
    """Read and validate the sidecar of ``engine_path``; ModelError names what is wrong."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ModelError(f"{engine_path}: no sidecar {side.name} beside the engine; engines must be built with "
                         "'privacy-filter engine build MODEL --out ENGINE' so that their model spec is recorded")
    try:
        data = json.loads(side.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        return EngineInfo(
            spec=ModelSpec(**data["spec"]), tensorrt_version=str(data["tensorrt_version"]), gpu=str(data.get("gpu", "unknown")),
            precision=str(data["precision"]), max_batch=int(data["max_batch"]), onnx=str(data.get("onnx", "")),
            onnx_sha256=str(data.get("onnx_sha256", "")), built_utc=str(data.get("built_utc", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:  # json errors and pydantic ValidationError are ValueErrors
        raise ModelError(f"{side}: unreadable engine sidecar ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def check_engine_compatible(info: EngineInfo, trt: ModuleType, engine_path: Path, current_gpu: str) -> None:
    """Refuse plans from another TensorRT version (TensorRT would reject them with an opaque log line)."""
    if info.tensorrt_version != str(trt.__version__):
        raise ModelError(
            f"{engine_path} was built with TensorRT {info.tensorrt_version} but this is TensorRT {trt.__version__}; "
            f"engines only load in the TensorRT version that built them: rebuild it with "
            f"'privacy-filter engine build {info.onnx or 'MODEL'} --out {engine_path}'"
        )
    if info.gpu not in ("unknown", current_gpu) and current_gpu != "unknown":
        log.warning("%s was built on %s and now runs on %s; rebuild it on this GPU if it fails or is slow",
                    engine_path, info.gpu, current_gpu)


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8
    max_batch: int = 4
    calib_cache: Path | None = None
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache: Path | None = None  # None: the user cache dir, per TensorRT version


def profile_shapes(network_shape: Sequence[int], spec: ModelSpec, max_batch: int) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) for the input, or None when the network's input is fully static.

    Dynamic axes (-1) are filled from the spec; the batch axis spans 1..max_batch with opt = max,
    as NVIDIA's own PeopleSemSegNet engine script does (opt = max = 4).  Static axes must agree
    with the spec.
    """
    want = (None, *item_shape(spec))
    shape = tuple(int(d) for d in network_shape)
    if len(shape) != 4:
        raise ModelError(f"input {spec.input_name!r} has rank {len(shape)} {list(shape)}; spec {spec.name!r} needs rank 4")
    for axis, (got, exp) in enumerate(zip(shape[1:], want[1:]), start=1):
        if got != -1 and got != exp:
            raise ModelError(f"input {spec.input_name!r} dim {axis} is {got} in the network but {exp} in spec {spec.name!r} "
                             f"({spec.input_layout} {list(item_shape(spec))})")
    if -1 not in shape:
        return None
    if shape[0] != -1 and shape[0] < max_batch:
        log.warning("input %s has a static batch of %d; --max-batch %d is capped to it", spec.input_name, shape[0], max_batch)

    def fill(batch: int) -> tuple[int, ...]:
        return tuple(batch if (i == 0 and d == -1) else (d if d != -1 else want[i]) for i, d in enumerate(shape))  # type: ignore[misc]

    return fill(1), fill(max_batch), fill(max_batch)


def _onnx_has_fp16(onnx_path: Path) -> bool:
    """Whether the ONNX already carries FP16 weights (e.g. ModelOpt AutoCast output)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _calibration_cache(path: Path | None) -> tuple[bytes, str]:
    """(cache bytes, calibrator class name) from a TensorRT calibration cache file."""
    if path is None:
        raise UserError("--precision int8 needs --calib-cache FILE: NVIDIA ships one with each PeopleSemSegNet ONNX "
                        "(peoplesemsegnet_shuffleseg_int8.txt, peoplesemsegnet_vanilla_unet_int8.txt); "
                        "without it use --precision fp16")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"calibration cache {path}: cannot read it ({exc.strerror or exc})") from None
    first = data.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = first.split("-")
    if len(parts) < 3 or parts[0] != "TRT":
        raise UserError(f"calibration cache {path}: first line {first[:60]!r} is not a TensorRT calibration header "
                        "('TRT-<version>-<algorithm>')")
    algo = parts[-1]
    if algo not in _CALIBRATORS:
        raise UserError(f"calibration cache {path}: unknown calibration algorithm {algo!r}; known: {', '.join(_CALIBRATORS)}")
    return data, _CALIBRATORS[algo]


def make_cache_calibrator(trt: ModuleType, cache: bytes, base_name: str) -> Any:
    """A calibrator that only replays a cache: TensorRT never asks it for batches when the cache fits."""
    base = getattr(trt, base_name)

    class CacheCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # no data: calibration must come from the cache

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


def apply_precision(trt: ModuleType, config: Any, options: BuildOptions, onnx_path: Path) -> str:
    """Set precision on the builder config the way this TensorRT version supports; returns a label."""
    major = trt_major(trt)
    if options.precision == "int8":
        if major >= 11:
            raise UserError(
                f"INT8 calibration was removed in TensorRT 11 (this is {trt.__version__}): quantize the ONNX offline with "
                "NVIDIA ModelOpt (modelopt.onnx.quantization.quantize(onnx_path, quantize_mode='int8', ...)) and build the "
                "resulting Q/DQ ONNX with --precision fp32 (its INT8 comes from the Q/DQ nodes), or use TensorRT 10.x "
                "with --calib-cache"
            )
        cache, calibrator = _calibration_cache(options.calib_cache)
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels fall back to FP16, not FP32
        config.int8_calibrator = make_cache_calibrator(trt, cache, calibrator)
        return "int8"
    if options.calib_cache is not None:
        raise UserError("--calib-cache applies only to --precision int8")
    if options.precision == "fp16":
        if major >= 11:
            if _onnx_has_fp16(onnx_path):
                return "fp16 (strongly typed ONNX)"
            log.warning(
                "TensorRT %s builds the precision the ONNX carries (strong typing; BuilderFlag.FP16 was removed): "
                "this engine will be FP32. For FP16, convert first: python -m modelopt.onnx.autocast --onnx_path %s "
                "--output_path model_fp16.onnx, then build from model_fp16.onnx", trt.__version__, onnx_path)
            print(f"note: TensorRT {trt.__version__} has no FP16 flag; building FP32 as the ONNX is typed. "
                  "Convert with ModelOpt AutoCast for FP16 (see README 'GPU deployment').", file=sys.stderr)
            return "fp32 (strongly typed ONNX; fp16 needs ModelOpt AutoCast)"
        config.set_flag(trt.BuilderFlag.FP16)
        return "fp16"
    if options.precision != "fp32":
        raise UserError(f"unknown precision {options.precision!r}; choose fp32, fp16 or int8")
    return "fp32"


def default_timing_cache(trt: ModuleType) -> Path:
    """Per-TensorRT-version timing cache in the user cache dir (reused by every build)."""
    from privacy_filter.models.pull import cache_dir

    return cache_dir() / "tensorrt" / f"timing-{trt.__version__}.cache"


def build_engine(spec: ModelSpec, onnx_path: Path, out: Path, options: BuildOptions = BuildOptions()) -> EngineInfo:
    """Parse ``onnx_path``, build a serialized engine for ``spec`` into ``out`` and write its sidecar."""
    trt = import_tensorrt()
    trt_major(trt)
    if options.max_batch < 1:
        raise UserError(f"--max-batch must be at least 1, got {options.max_batch}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"model file not found: {onnx_path}")
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in 10.x/11.x; strong typing is 11.x's default
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: " + ("; ".join(errors) or "no error reported"))

    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if spec.input_name not in inputs:
        raise ModelError(f"{onnx_path}: spec {spec.name!r} feeds input {spec.input_name!r}; the parsed network has "
                         f"{', '.join(inputs) or 'no inputs'}")
    if spec.output_name not in outputs:
        raise ModelError(f"{onnx_path}: spec {spec.name!r} reads output {spec.output_name!r}; the parsed network has "
                         f"{', '.join(outputs) or 'no outputs'}")
    others = [n for n in inputs if n != spec.input_name]
    if others:
        raise ModelError(f"{onnx_path}: extra network inputs {others}; only single-input models are supported")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    shapes = profile_shapes(tuple(inputs[spec.input_name].shape), spec, options.max_batch)
    max_batch = options.max_batch
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(spec.input_name, *shapes)
        config.add_optimization_profile(profile)
        max_batch = shapes[2][0]
    else:
        max_batch = int(tuple(inputs[spec.input_name].shape)[0])
    precision = apply_precision(trt, config, options, onnx_path)

    timing_path = options.timing_cache or default_timing_cache(trt)
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing = config.create_timing_cache(blob)
    config.set_timing_cache(timing, ignore_mismatch=False)

    log.info("building TensorRT %s engine for %s (%s, batch 1..%d); this takes minutes", trt.__version__, spec.name, precision, max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} ({precision}, batch 1..{max_batch}); "
                         "its log above says why (often: not enough GPU memory for the workspace, or an unsupported layer)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(serialized)
    tmp.replace(out)
    cache = config.get_timing_cache()
    if cache is not None:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        timing_path.write_bytes(bytes(cache.serialize()))
    info = EngineInfo(
        spec=spec, tensorrt_version=str(trt.__version__), gpu=gpu_name(), precision=precision, max_batch=max_batch,
        onnx=str(onnx_path.resolve()), onnx_sha256=_onnx_sha256(onnx_path),
        built_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    sidecar_path(out).write_text(info.to_json())
    return info


# ---------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------

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
        out.append(TensorDesc(
            name=name,
            is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
            shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
        ))
    return out


def deserialize(trt: ModuleType, engine_path: Path) -> tuple[Any, Any]:
    """(runtime, engine); the runtime must outlive the engine."""
    try:
        data = Path(engine_path).read_bytes()
    except OSError as exc:
        raise ModelError(f"TensorRT engine {engine_path}: cannot read it ({exc.strerror or exc})") from None
    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ModelError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize this engine (corrupt, or built "
                         "by another TensorRT version / for another GPU); rebuild it with 'privacy-filter engine build'")
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
        if not self.path.is_file():
            raise ModelError(f"TensorRT engine not found: {self.path}")
        trt = import_tensorrt()
        trt_major(trt)
        cp, cpx = import_cupy()
        self._trt, self._cp = trt, cp
        info = read_sidecar(self.path)
        check_engine_compatible(info, trt, self.path, gpu_name(cp))
        self.info = info
        self.spec = spec or info.spec
        self._runtime, self._engine = deserialize(trt, self.path)
        self.io = engine_io(trt, self._engine)
        by_name = {t.name: t for t in self.io}
        inputs = [t for t in self.io if t.is_input]
        if len(inputs) != 1 or inputs[0].name != self.spec.input_name:
            raise ModelError(f"{self.path}: engine inputs [{', '.join(str(t) for t in inputs)}] do not match spec "
                             f"{self.spec.name!r} input {self.spec.input_name!r}")
        if self.spec.output_name not in by_name or by_name[self.spec.output_name].is_input:
            raise ModelError(f"{self.path}: engine has no output {self.spec.output_name!r} "
                             f"(outputs: {', '.join(t.name for t in self.io if not t.is_input)})")
        self.input = inputs[0]
        self.output = by_name[self.spec.output_name]
        if self.spec.output_kind == "argmax" and self.output.dtype.kind not in "iu":
            raise ModelError(f"{self.path}: output {self.output.name!r} is {self.output.dtype.name}, "
                             f"spec {self.spec.name!r} expects argmax class ids")
        # A static batch B > 1 always runs B items: fewer are padded (the padding's output is ignored).
        self.static_batch = self.input.shape[0] != -1
        if not self.static_batch:
            self.max_batch = int(self._engine.get_tensor_profile_shape(self.input.name, 0)[2][0])
        else:
            self.max_batch = int(self.input.shape[0])
        self.item_shape = tuple(item_shape(self.spec))
        if any(d not in (-1, e) for d, e in zip(self.input.shape[1:], self.item_shape)):
            raise ModelError(f"{self.path}: engine input {self.input} does not match spec {self.spec.name!r} "
                             f"[N,{','.join(map(str, self.item_shape))}] ({self.spec.input_layout})")

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
        log.info("TensorRT engine %s (%s, TensorRT %s): %s -> %s, batch 1..%d", self.path, info.precision,
                 trt.__version__, self.input, self.output, self.max_batch)

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
        stream = getattr(self, "stream", None)
        if stream is not None and getattr(self, "_context", None) is not None:
            try:
                stream.synchronize()
            except Exception as exc:  # noqa: BLE001 - a dead context must not stop the release
                log.warning("%s: stream synchronize at close failed: %s", self.path, exc)
        for name in ("_preprocessor", "_context", "_pinned_out", "_pinned_in", "_dev", "stream", "_engine", "_runtime"):
            if hasattr(self, name):
                setattr(self, name, None)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

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
        from privacy_filter.engines.cuda_io import (
            DEFAULT_COLORIMETRY,
            CudaPreprocessor,
            decode_output,
        )

        pre = self._preprocessor
        if pre is None or pre.rt is not rt:  # one per runtime: it caches tables per frame geometry
            pre = self._preprocessor = CudaPreprocessor(self.spec, rt)
        stream = getattr(rt, "stream", None)
        colorimetry = list(colorimetry) if colorimetry is not None else [DEFAULT_COLORIMETRY] * len(frames)
        maps: list[Any] = []
        for start in range(0, len(frames), self.max_batch):
            chunk = list(frames[start : start + self.max_batch])
            _, places = pre(chunk, colorimetry[start : start + len(chunk)], out=self.input_buffer)
            raw = self.run_device(len(chunk), stream)
            prob = decode_output(raw, self.spec, rt)
            maps.extend(place.crop(prob[i]) for i, place in enumerate(places))
        return maps

    # -- Segmenter --------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw output (engine dtype: e.g. int32 or int64 argmax ids) for a prepared host batch."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.item_shape:
            raise ValueError(f"batch of shape {list(batch.shape)} does not match engine input {self.input.name!r} "
                             f"[N,{','.join(map(str, self.item_shape))}]")
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


def is_engine_path(model: str | os.PathLike[str] | None) -> bool:
    """Whether ``--model`` names a serialized TensorRT engine (by suffix)."""
    return model is not None and Path(str(model)).suffix.lower() in ENGINE_SUFFIXES


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

    info = read_sidecar(path)
    onnx = Path(info.onnx)
    if not onnx.is_file():
        raise ModelError(f"{path}: TensorRT cannot be used ({why}) and the ONNX it was built from, {onnx}, is gone; "
                         "give --model that ONNX (or its spec) to run on the CPU")
    (log.warning if warn else log.info)("%s: running its source ONNX %s on ONNX Runtime (CPU) instead of TensorRT: %s",
                                        path, onnx, why)
    return OrtSegmenter(ResolvedModel(info.spec, onnx), device="cpu")


# ---------------------------------------------------------------------------------------------
# CLI handlers
# ---------------------------------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    """``privacy-filter engine build MODEL --out ENGINE [--precision] [--max-batch] [--calib-cache]``."""
    from privacy_filter.models.registry import resolve_model

    out = Path(args.out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"--out {out}: name the engine file with one of {', '.join(ENGINE_SUFFIXES)} so that --model recognises it")
    resolved = resolve_model(args.model)
    options = BuildOptions(
        precision=args.precision, max_batch=int(args.max_batch),
        calib_cache=Path(args.calib_cache) if args.calib_cache else None,
    )
    info = build_engine(resolved.spec, resolved.onnx_path, out, options)
    print(f"wrote {out} ({info.precision}, batch 1..{info.max_batch}, TensorRT {info.tensorrt_version}, {info.gpu})")
    print(f"wrote {sidecar_path(out)}")
    print(f"use it with: privacy-filter process IN OUT --device cuda --model {out}")
    return 0


def describe_engine(info: EngineInfo | None, io: list[TensorDesc] | None, profile: dict[str, Any] | None = None) -> str:
    lines = []
    if info is not None:
        lines += [
            f"built with TensorRT {info.tensorrt_version} on {info.gpu}, {info.built_utc}",
            f"precision {info.precision}, batch 1..{info.max_batch}",
            f"from {info.onnx} (sha256 {info.onnx_sha256[:16]}…)",
            info.spec.describe(),
        ]
    if io is not None:
        lines.append("tensors:")
        for t in io:
            extra = ""
            if profile and t.name in profile:
                mn, opt, mx = profile[t.name]
                extra = f"  profile min {list(mn)} opt {list(opt)} max {list(mx)}"
            lines.append(f"  {t}{extra}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    """``privacy-filter engine inspect ENGINE``: the sidecar, then the engine's own I/O (needs TensorRT)."""
    path = Path(args.engine)
    if not path.is_file():
        raise ModelError(f"TensorRT engine not found: {path}")
    info = read_sidecar(path) if sidecar_path(path).is_file() else None
    if info is None:
        print(f"{path}: no sidecar {sidecar_path(path).name} (not built by privacy-filter); reading the engine only")
    else:
        print(describe_engine(info, None))
    trt = import_tensorrt()
    trt_major(trt)
    if info is not None:
        check_engine_compatible(info, trt, path, gpu_name())
    _runtime, engine = deserialize(trt, path)
    io = engine_io(trt, engine)
    profile = {t.name: engine.get_tensor_profile_shape(t.name, 0) for t in io if t.is_input and -1 in t.shape}
    print(describe_engine(None, io, profile))
    return 0
