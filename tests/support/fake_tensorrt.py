"""A fake of the documented TensorRT and CuPy Python API surface that the engine glue uses.

THIS IS NOT TENSORRT.  Full TensorRT cannot be installed on the machines that build this
project (no GPU, and its wheels come from NVIDIA's own index), so the glue in
``privacy_filter.gpu.tensorrt.runtime`` is tested against this stand-in.  It implements exactly
the calls the glue makes, with the names and behaviour documented by NVIDIA (TensorRT 10.x
Python API, the 10.x → 11.x migration guide) and CuPy:

- ``Logger``, ``Builder.create_network(0)``, ``OnnxParser.parse_from_file`` / ``num_errors`` /
  ``get_error``, ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)``,
  ``set_flag(BuilderFlag.FP16 | INT8)`` (both removed in the TensorRT 11 fake, as in 11.x),
  ``int8_calibrator`` + ``IInt8EntropyCalibrator2`` (10.x only), optimization profiles,
  timing caches, ``build_serialized_network`` (``None`` on failure, as documented);
- ``Runtime.deserialize_cuda_engine`` (``None`` for a foreign or other-version plan), the
  name-based I/O API of ``ICudaEngine`` / ``IExecutionContext`` and ``nptype``;
- a CuPy-shaped device: ``cupy.empty``, ``ndarray.data.ptr`` / ``set`` / ``get`` / prefix
  slicing, ``cupy.cuda.Stream(non_blocking=True).ptr``, ``cupyx.empty_pinned``.

What it proves and what it does not: a "serialized engine" here is a JSON description of
the parsed ONNX, and ``execute_async_v3`` queues a run of that ONNX with ONNX Runtime on the
given lazy stream (support.lazy_streams; it runs when that stream is synchronised or waited on),
reading and writing the numpy buffers behind the fake device pointers.  So a test can check
the glue's *data plumbing* (which tensor goes to which address, shapes, batch handling,
output dtype handling, decoding) against the real model's output, and that the glue calls
the documented API in the right order per version.  It does NOT exercise TensorRT's parser,
builder, kernels, precision, or real device memory.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from support.lazy_streams import SCHED, EmuDeviceArray, EmuEvent, EmuStream, byte_range, current_stream

MAGIC = b"FAKE-TRT-PLAN\n"


# --------------------------------------------------------------------------------------
# Fake device memory: "device pointers" are the addresses of host numpy buffers.
# --------------------------------------------------------------------------------------
class FakeMemory:
    """Allocations keyed by address, so a raw pointer can be turned back into an array."""

    def __init__(self) -> None:
        self.allocations: dict[int, np.ndarray] = {}

    def alloc(self, nbytes: int) -> np.ndarray:
        buf = np.zeros(max(int(nbytes), 1), np.uint8)
        self.allocations[buf.ctypes.data] = buf
        return buf

    def view(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The array of ``shape``/``dtype`` at ``ptr``; raises if it is not inside one allocation."""
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        for base, buf in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                off = ptr - base
                return buf[off : off + nbytes].view(dtype).reshape(shape)
        raise RuntimeError(f"fake TensorRT: address {ptr:#x} (+{nbytes} B) is not fake device memory")


MEMORY = FakeMemory()


class FakeDevice:
    """``cupy.cuda.Device(n)``: ``use()`` records the device selected for the calling thread."""

    selected: dict[int, int] = {}

    def __init__(self, device: int = 0) -> None:
        self.id = int(device)

    def use(self) -> None:
        import threading

        FakeDevice.selected[threading.get_ident()] = self.id

    def __enter__(self) -> FakeDevice:
        self.use()
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Data:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class PinnedArray(np.ndarray):
    """``cupyx.empty_pinned``: a copy from it reads it when the copy runs, not when it is queued."""


class FakeDeviceArray(EmuDeviceArray):
    """A numpy array standing in for ``cupy.ndarray``: ``.data.ptr``, ``set``, ``get`` and slicing.

    Being a real numpy array, it can also be handed to the CUDA kernels run under host emulation
    (support.gpu_emulation), exactly as a CuPy array is handed to the real kernels.  Copies are
    queued on a lazy stream (support.lazy_streams), as CuPy queues them on a CUDA stream.
    """

    @property
    def data(self) -> _Data:  # type: ignore[override]
        return _Data(self.ctypes.data)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Host → device on ``stream`` (default: the current stream), asynchronous like CuPy's."""
        if not isinstance(arr, PinnedArray):
            arr = np.array(arr, copy=True)  # pageable memory is staged at the call
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"fake cupy set: {arr.dtype}{arr.shape} into {self.dtype}{self.shape}")
        dst = self.view(np.ndarray)
        SCHED.enqueue(stream, "cupy set (h2d)", lambda: np.copyto(dst, arr.view(np.ndarray)), writes=[byte_range(dst)])

    def get(self, stream: Any = None, out: np.ndarray | None = None) -> np.ndarray:
        """Device → host on ``stream`` (default: the current stream), then that stream is synchronised
        (CuPy's ``blocking=True``): pending writes to this array on *another* stream are a race."""
        src = self.view(np.ndarray)
        if out is not None and (out.shape != self.shape or out.dtype != self.dtype):
            raise ValueError(f"fake cupy get: {self.dtype}{self.shape} into {out.dtype}{out.shape}")
        dst = out if out is not None else np.empty(self.shape, self.dtype)
        s = stream or SCHED.current()
        SCHED.enqueue(s, "cupy get (d2h)", lambda: np.copyto(dst, src), reads=[byte_range(src)])
        s.synchronize()
        return dst

    def fill(self, value: Any) -> None:
        dst = self.view(np.ndarray)
        SCHED.enqueue(None, "cupy fill", lambda: dst.fill(value), writes=[byte_range(dst)])


#: ``cupy.cuda.Stream`` of the fake: the lazy stream of the host emulator.
FakeStream = EmuStream


def make_fake_cupy(gpu_name: str = "Fake GPU H100") -> tuple[types.ModuleType, types.ModuleType]:
    """(cupy, cupyx) modules offering the documented calls the glue uses, over ``MEMORY``."""
    cp = types.ModuleType("cupy")
    cp.__fake__ = True  # type: ignore[attr-defined]
    cp.ndarray = FakeDeviceArray  # type: ignore[attr-defined]

    def empty(shape: Any, dtype: Any = np.float32) -> FakeDeviceArray:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = MEMORY.alloc(nbytes)
        return buf[:nbytes].view(dtype).reshape(shape).view(FakeDeviceArray)

    cp.empty = empty  # type: ignore[attr-defined]
    runtime = types.SimpleNamespace(
        getDevice=lambda: 0,
        getDeviceProperties=lambda dev: {"name": gpu_name.encode(), "major": 9, "minor": 0},
    )
    cp.cuda = types.SimpleNamespace(
        Stream=FakeStream,
        Event=EmuEvent,
        runtime=runtime,  # type: ignore[attr-defined]
        is_available=lambda: True,
        get_current_stream=current_stream,
        Device=FakeDevice,
    )

    cpx = types.ModuleType("cupyx")

    def empty_pinned(shape: Any, dtype: Any = np.float32) -> np.ndarray:
        return np.empty(shape, dtype).view(PinnedArray)

    cpx.empty_pinned = empty_pinned  # type: ignore[attr-defined]
    return cp, cpx


# --------------------------------------------------------------------------------------
# Fake TensorRT
# --------------------------------------------------------------------------------------
class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 9


_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL, 2: DataType.UINT8, 7: DataType.INT64}


def nptype(dt: DataType) -> type:
    return _NP[dt]


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class Logger:
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4

    def __init__(self, min_severity: int = 2) -> None:
        self.min_severity = min_severity
        self.messages: list[str] = []

    def log(self, severity: int, msg: str) -> None:
        self.messages.append(msg)


@dataclass
class ITensor:
    name: str
    shape: tuple[int, ...]
    dtype: DataType
    is_input: bool


@dataclass
class INetworkDefinition:
    flags: int
    inputs: list[ITensor] = field(default_factory=list)
    outputs: list[ITensor] = field(default_factory=list)
    onnx_path: str = ""
    has_qdq: bool = False

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, i: int) -> ITensor:
        return self.inputs[i]

    def get_output(self, i: int) -> ITensor:
        return self.outputs[i]


class _ParserError:
    def __init__(self, desc: str) -> None:
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return f"In node -1 (parseGraph): INVALID_GRAPH: {self._desc}"


class OnnxParser:
    """Reads I/O names, shapes and dtypes from the ONNX (initializers are weights, not inputs)."""

    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self.network = network
        self._errors: list[_ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, i: int) -> _ParserError:
        return self._errors[i]

    def parse_from_file(self, model: str) -> bool:
        import onnx

        try:
            m = onnx.load(model)
        except Exception as exc:  # the real parser reports, it does not raise
            self._errors.append(_ParserError(f"failed to parse ONNX file {model}: {exc.__class__.__name__}"))
            return False
        inits = {i.name for i in m.graph.initializer}

        def tensor(vi: Any, is_input: bool) -> ITensor:
            tt = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            return ITensor(vi.name, dims, _FROM_ONNX[tt.elem_type], is_input)

        self.network.inputs = [tensor(v, True) for v in m.graph.input if v.name not in inits]
        self.network.outputs = [tensor(v, False) for v in m.graph.output]
        self.network.onnx_path = str(Path(model).resolve())
        self.network.has_qdq = any(n.op_type == "QuantizeLinear" for n in m.graph.node)
        if not self.network.outputs:
            self._errors.append(_ParserError("graph has no outputs"))
            return False
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - documented names
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


class IHostMemory(bytes):
    """Bytes-like, as the real IHostMemory supports the buffer protocol."""

    def serialize(self) -> IHostMemory:
        return self


class ITimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = bytes(blob) or b"fake-timing-cache"
        self.builds = 0

    def serialize(self) -> IHostMemory:
        return IHostMemory(self.blob + b"|build" * self.builds)


class _Flags:
    """Namespace of BuilderFlag members; missing names raise AttributeError like the real enum."""

    def __init__(self, names: list[str]) -> None:
        for i, n in enumerate(names):
            setattr(self, n, f"BuilderFlag.{n}")


class IBuilderConfig:
    def __init__(self, major: int) -> None:
        self._major = major
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.flags: set[str] = set()
        self.profiles: list[IOptimizationProfile] = []
        self._calibrator: Any = None
        self.timing_cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pool_limits[pool] = int(pool_size)

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def get_flag(self, flag: str) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self.timing_cache

    # int8_calibrator exists in 10.x (deprecated) and is removed in 11.x.
    @property
    def int8_calibrator(self) -> Any:
        if self._major >= 11:
            raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'int8_calibrator'")
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: Any) -> None:
        if self._major >= 11:
            raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'int8_calibrator'")
        self._calibrator = value


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.module: types.ModuleType = _CURRENT["module"]
        self.module.calls.append("Builder")

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        self.module.calls.append(f"create_network({flags})")
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self.module.major)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        """Checks what the real builder would reject, then 'serializes' a JSON description."""
        mod = self.module
        mod.calls.append("build_serialized_network")
        mod.last_build = {"network": network, "config": config}
        if mod.fail_build:
            self.logger.log(Logger.ERROR, "fake: build failed (forced)")
            return None
        profile_shapes: dict[str, Any] = {}
        for t in network.inputs:
            if -1 in t.shape:
                prof = next((p for p in config.profiles if t.name in p.shapes), None)
                if prof is None:
                    self.logger.log(Logger.ERROR, f"Network has dynamic input {t.name} but no optimization profile")
                    return None
                mn, op, mx = prof.shapes[t.name]
                for s in (mn, op, mx):
                    if len(s) != len(t.shape) or any(d != -1 and d != v for d, v in zip(t.shape, s)):
                        self.logger.log(Logger.ERROR, f"profile shape {s} does not match {t.name} {t.shape}")
                        return None
                if not all(a <= b <= c for a, b, c in zip(mn, op, mx)):
                    self.logger.log(Logger.ERROR, f"profile for {t.name} is not min <= opt <= max")
                    return None
                profile_shapes[t.name] = [list(mn), list(op), list(mx)]
            else:
                profile_shapes[t.name] = [list(t.shape)] * 3
        calib = None
        if mod.major < 11 and "BuilderFlag.INT8" in config.flags and not network.has_qdq:
            if config._calibrator is None:
                self.logger.log(Logger.ERROR, "INT8 requested without calibrator or Q/DQ")
                return None
            cache = config._calibrator.read_calibration_cache()
            if not cache:
                self.logger.log(Logger.ERROR, "calibrator returned no cache and the fake cannot calibrate")
                return None
            calib = bytes(cache).decode("latin-1")
        if config.timing_cache is not None:
            config.timing_cache.builds += 1

        def io(t: ITensor) -> dict[str, Any]:
            dt = t.dtype
            if dt == DataType.INT64 and mod.int64_as == "int32":
                dt = DataType.INT32
            return {"name": t.name, "shape": list(t.shape), "dtype": dt.name, "input": t.is_input}

        plan = {
            "version": mod.__version__,
            "onnx": network.onnx_path,
            "io": [io(t) for t in network.inputs + network.outputs],
            "profile": profile_shapes,
            "flags": sorted(config.flags),
            "workspace": config.pool_limits.get(MemoryPoolType.WORKSPACE),
            "calibration_cache": calib,
        }
        return IHostMemory(MAGIC + json.dumps(plan).encode())


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.module: types.ModuleType = _CURRENT["module"]

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            self.logger.log(Logger.ERROR, "The engine plan file is not compatible with this version of TensorRT")
            return None
        plan = json.loads(data[len(MAGIC) :])
        if plan["version"] != self.module.__version__:
            self.logger.log(Logger.ERROR, f"plan built by {plan['version']}, this is {self.module.__version__}")
            return None
        return ICudaEngine(plan, self.module)


class ICudaEngine:
    def __init__(self, plan: dict[str, Any], module: types.ModuleType) -> None:
        self.plan = plan
        self.module = module
        self._io = {t["name"]: t for t in plan["io"]}
        self._order = [t["name"] for t in plan["io"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self._order)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, index: int) -> str:
        return self._order[index]

    def _t(self, name: str) -> dict[str, Any]:
        if name not in self._io:  # the real API logs an error and returns a sentinel; keep it loud here
            raise KeyError(f"fake TensorRT: no tensor named {name!r}")
        return self._io[name]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if self._t(name)["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._t(name)["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._t(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.plan["profile"][name]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    """Runs the engine's ONNX with ONNX Runtime on the buffers at the bound fake addresses."""

    _sessions: dict[str, Any] = {}

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions: list[int] = []

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(s) for s in shape)
        mn, _, mx = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(mn) or not all(a <= s <= b for a, s, b in zip(mn, shape, mx)):
            return False
        self.input_shapes[name] = shape
        return True

    def _batch(self) -> int:
        return next(iter(self.input_shapes.values()))[0] if self.input_shapes else 1

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        t = self.engine._t(name)
        if t["input"]:
            return self.input_shapes.get(name, tuple(t["shape"]))
        if -1 in t["shape"][1:] and self.input_shapes:
            # Dimensions that follow the input's height and width (a detector's cells per stride):
            # TensorRT resolves them once every input shape is set; the fake asks the ONNX for them.
            return self._resolved_output_shapes()[name]
        return tuple(self._batch() if d == -1 else d for d in t["shape"])

    _shapes: dict[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], dict[str, tuple[int, ...]]] = {}

    def _resolved_output_shapes(self) -> dict[str, tuple[int, ...]]:
        key = (self.engine.plan["onnx"], tuple(sorted(self.input_shapes.items())))
        if key not in self._shapes:
            sess = self._session()
            outputs = [n for n in self.engine._order if not self.engine._io[n]["input"]]
            feeds = {n: np.zeros(s, nptype(self.engine.get_tensor_dtype(n))) for n, s in self.input_shapes.items()}
            self._shapes[key] = {n: tuple(np.shape(v)) for n, v in zip(outputs, sess.run(outputs, feeds))}
        return self._shapes[key]

    def _session(self) -> Any:
        import onnxruntime as ort

        onnx = self.engine.plan["onnx"]
        sess = self._sessions.get(onnx)
        if sess is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
            self._sessions[onnx] = sess
        return sess

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.engine._t(name)
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Queue the engine on the stream whose handle is given (it runs when that stream is
        synchronised or waited on, like TensorRT's enqueue); False where TensorRT fails at once."""
        self.executions.append(int(stream_handle))
        eng = self.engine
        names = eng._order
        if any(n not in self.addresses for n in names):
            return False  # the real runtime reports "address not set" and fails
        inputs = [n for n in names if eng._io[n]["input"]]
        outputs = [n for n in names if not eng._io[n]["input"]]
        if any(-1 in eng.get_tensor_shape(n) and n not in self.input_shapes for n in inputs):
            return False
        stream = next((s for s in SCHED.streams.values() if s.ptr == int(stream_handle)), None)
        if stream is None:
            raise RuntimeError(f"fake TensorRT: {stream_handle:#x} is not a stream handle")
        ins = {n: MEMORY.view(self.addresses[n], self.get_tensor_shape(n), nptype(eng.get_tensor_dtype(n))) for n in inputs}
        outs = {n: MEMORY.view(self.addresses[n], self.get_tensor_shape(n), nptype(eng.get_tensor_dtype(n))) for n in outputs}

        def run() -> None:
            vals = self._session().run(outputs, {n: a.copy() for n, a in ins.items()})
            for n, val in zip(outputs, vals):
                outs[n][...] = np.asarray(val).astype(outs[n].dtype)

        SCHED.enqueue(stream, "TensorRT execute_async_v3", run, reads=[byte_range(a) for a in ins.values()], writes=[byte_range(a) for a in outs.values()])
        return True


class IInt8EntropyCalibrator2:
    """Base class the glue subclasses for a cache-only calibrator (TensorRT 10.x only)."""

    def __init__(self) -> None:
        pass


_CURRENT: dict[str, types.ModuleType] = {}

_FLAGS_10 = ["FP16", "INT8", "BF16", "FP8", "REFIT", "STRICT_TYPES", "OBEY_PRECISION_CONSTRAINTS", "VERSION_COMPATIBLE"]
_FLAGS_11 = ["REFIT", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]


def make_fake_tensorrt(version: str = "10.8.0.43", int64_as: str = "int64", fail_build: bool = False) -> types.ModuleType:
    """A module named ``tensorrt`` with the documented API of ``version`` (10.x or 11.x).

    ``int64_as="int32"`` makes the built engine report ONNX INT64 outputs as INT32, the case
    the glue must handle by reading the dtype at runtime (older TensorRT / Triton configs).
    """
    major = int(version.split(".")[0])
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version  # type: ignore[attr-defined]
    mod.__fake__ = True  # type: ignore[attr-defined]
    mod.major = major  # type: ignore[attr-defined]
    mod.int64_as = int64_as  # type: ignore[attr-defined]
    mod.fail_build = fail_build  # type: ignore[attr-defined]
    mod.calls = []  # type: ignore[attr-defined]
    mod.last_build = None  # type: ignore[attr-defined]
    for obj in (Logger, Builder, Runtime, OnnxParser, DataType, TensorIOMode, MemoryPoolType, nptype):
        setattr(mod, obj.__name__, obj)
    mod.BuilderFlag = _Flags(_FLAGS_10 if major < 11 else _FLAGS_11)  # type: ignore[attr-defined]
    if major < 11:
        mod.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]
    _CURRENT["module"] = mod
    return mod
