"""Building a TensorRT engine from an ONNX model (``privacy-filter engine build``).

TensorRT 10.x takes FP16/INT8 builder flags (INT8 with a cache-only calibrator); 11.x removed
both and takes the precision the ONNX carries (strong typing).
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from privacy_filter.engines.preprocess import item_shape
from privacy_filter.errors import ModelError, UserError
from privacy_filter.gpu.tensorrt.loader import gpu_name, import_tensorrt, trt_logger, trt_major
from privacy_filter.gpu.tensorrt.sidecar import EngineInfo, onnx_sha256, sidecar_path
from privacy_filter.models.specs import DetectorSpec, ModelSpec

log = logging.getLogger(__name__)


DEFAULT_WORKSPACE_BYTES = 2 << 30  # 2 GiB: ample for 960×544 UNets at batch 4


# TensorRT writes calibration caches with a first line "TRT-<version>-<algorithm>"; the calibrator
# that reads a cache must be of the same algorithm.
_CALIBRATORS = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
    "LegacyCalibration": "IInt8LegacyCalibrator",
}


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8
    max_batch: int = 4
    calib_cache: Path | None = None
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache: Path | None = None  # None: the user cache dir, per TensorRT version
    max_side: int | None = None  # detectors: the largest input side the profile admits (None: the spec's long_side_max)


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
            raise ModelError(f"input {spec.input_name!r} dim {axis} is {got} in the network but {exp} in spec {spec.name!r} ({spec.input_layout} {list(item_shape(spec))})")
    if -1 not in shape:
        return None
    if shape[0] != -1 and shape[0] < max_batch:
        log.warning("input %s has a static batch of %d; --max-batch %d is capped to it", spec.input_name, shape[0], max_batch)

    def fill(batch: int) -> tuple[int, ...]:
        return tuple(batch if (i == 0 and d == -1) else (d if d != -1 else want[i]) for i, d in enumerate(shape))  # type: ignore[misc]

    return fill(1), fill(max_batch), fill(max_batch)


def detector_profile_shapes(network_shape: Sequence[int], spec: DetectorSpec, max_batch: int, max_side: int | None = None) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) for a detector's NCHW input, or None when it is fully static.

    A detector's input size follows the frame (its long side, padded to ``pad_multiple``), so H and
    W are dynamic: from one ``pad_multiple`` to ``max_side`` (default: the spec's
    ``long_side_max``, the largest size ``auto`` picks), both orientations; opt is a 16:9 frame at
    that long side, batch 1 (most frames come alone).  A ``long_side`` above ``max_side`` needs an
    engine built with a larger ``--max-side``.
    """
    shape = tuple(int(d) for d in network_shape)
    if len(shape) != 4 or shape[1] not in (-1, 3):
        raise ModelError(f"input {spec.input_name!r} is {list(shape)}; detector spec {spec.name!r} needs NCHW with 3 channels")
    if -1 not in shape:
        return None
    side = int(max_side or spec.long_side_max)
    m = spec.pad_multiple
    if side < m or side % m:
        raise UserError(f"--max-side {side} must be a multiple of {m} (the detector pads its input to /{m})")
    short = -(-side * 9 // 16)  # a 16:9 frame's short side at that long side, padded up as the detector pads it
    opt_short = max(m, min(side, -(-short // m) * m))

    def fill(batch: int, h: int, w: int) -> tuple[int, ...]:
        return tuple(d if d != -1 else v for d, v in zip(shape, (batch, 3, h, w)))

    return fill(1, m, m), fill(1, opt_short, side), fill(max_batch, side, side)


def _onnx_has_fp16(onnx_path: Path) -> bool:
    """Whether the ONNX already carries FP16 weights (e.g. ModelOpt AutoCast output)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _calibration_cache(path: Path | None) -> tuple[bytes, str]:
    """(cache bytes, calibrator class name) from a TensorRT calibration cache file."""
    if path is None:
        raise UserError(
            "--precision int8 needs --calib-cache FILE: NVIDIA ships one with each PeopleSemSegNet ONNX "
            "(peoplesemsegnet_shuffleseg_int8.txt, peoplesemsegnet_vanilla_unet_int8.txt); "
            "without it use --precision fp16"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"calibration cache {path}: cannot read it ({exc.strerror or exc})") from None
    first = data.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = first.split("-")
    if len(parts) < 3 or parts[0] != "TRT":
        raise UserError(f"calibration cache {path}: first line {first[:60]!r} is not a TensorRT calibration header ('TRT-<version>-<algorithm>')")
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
                "--output_path model_fp16.onnx, then build from model_fp16.onnx",
                trt.__version__,
                onnx_path,
            )
            print(
                f"note: TensorRT {trt.__version__} has no FP16 flag; building FP32 as the ONNX is typed. Convert with ModelOpt AutoCast for FP16 (see README 'GPU deployment').",
                file=sys.stderr,
            )
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


def build_engine(spec: ModelSpec | DetectorSpec, onnx_path: Path, out: Path, options: BuildOptions = BuildOptions()) -> EngineInfo:
    """Parse ``onnx_path``, build a serialized engine for ``spec`` (a segmentation model or a person
    detector) into ``out`` and write its sidecar."""
    trt = import_tensorrt()
    trt_major(trt)
    if options.max_batch < 1:
        raise UserError(f"--max-batch must be at least 1, got {options.max_batch}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"model file not found: {onnx_path}")
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in 10.x/11.x; strong typing is 11.x's default
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: " + ("; ".join(errors) or "no error reported"))

    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if spec.input_name not in inputs:
        raise ModelError(f"{onnx_path}: spec {spec.name!r} feeds input {spec.input_name!r}; the parsed network has {', '.join(inputs) or 'no inputs'}")
    wanted = [*spec.score_outputs, *spec.box_outputs] if isinstance(spec, DetectorSpec) else [spec.output_name]
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise ModelError(f"{onnx_path}: spec {spec.name!r} reads output(s) {', '.join(map(repr, missing))}; the parsed network has {', '.join(outputs) or 'no outputs'}")
    others = [n for n in inputs if n != spec.input_name]
    if others:
        raise ModelError(f"{onnx_path}: extra network inputs {others}; only single-input models are supported")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    network_shape = tuple(inputs[spec.input_name].shape)
    if isinstance(spec, DetectorSpec):
        shapes = detector_profile_shapes(network_shape, spec, options.max_batch, options.max_side)
    else:
        shapes = profile_shapes(network_shape, spec, options.max_batch)
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
        raise ModelError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path} ({precision}, batch 1..{max_batch}); "
            "its log above says why (often: not enough GPU memory for the workspace, or an unsupported layer)"
        )
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
        spec=spec,
        tensorrt_version=str(trt.__version__),
        gpu=gpu_name(),
        precision=precision,
        max_batch=max_batch,
        onnx=str(onnx_path.resolve()),
        onnx_sha256=onnx_sha256(onnx_path),
        built_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    sidecar_path(out).write_text(info.to_json())
    return info
