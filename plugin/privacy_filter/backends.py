"""Choosing the implementation of each component: CPU or GPU segmentation, CPU or CUDA effects.

This is the one place that knows both backends exist.  The CPU packages (``engines``,
``effects``) and the GPU package (``gpu``) never import each other's implementations; they
share the specs, configs and the ``Segmenter`` / ``StreamEffect`` protocols, and this layer,
above both, picks one per component.  GPU modules are imported lazily, only when asked for.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects import StreamEffect
from privacy_filter.engines.base import Segmenter
from privacy_filter.engines.tiling import AutoTiles, TileGrid, parse_tiles
from privacy_filter.errors import ConfigError, UserError
from privacy_filter.models.registry import ResolvedDetector, ResolvedModel, resolve_detector, resolve_model
from privacy_filter.models.specs import DETECTOR_SPECS

if TYPE_CHECKING:
    from privacy_filter.engines.detector import Detector, LongSide, Tiles

log = logging.getLogger(__name__)


def create_segmenter(
    model: str | ResolvedModel | None = None,
    device: str = "cpu",
    tiles: str | TileGrid | AutoTiles | None = None,
    threads: int | None = None,
) -> Segmenter:
    """A ready engine for ``model`` (name, path, or an already resolved model).

    ``device``: 'cpu' (ONNX Runtime CPU EP), 'cuda' (ONNX Runtime TensorRT/CUDA EPs; an error if
    absent) or 'auto' (GPU EPs when present, else CPU).  ``tiles``: None/'off', 'auto' or 'CxR'.
    A serialized TensorRT engine (.engine/.plan/.trt) goes to ``gpu.tensorrt``.
    """
    from privacy_filter.engines.onnxruntime import OrtSegmenter

    if isinstance(model, str):
        from privacy_filter.gpu.tensorrt.sidecar import is_engine_path

        if is_engine_path(model):
            from privacy_filter.gpu.tensorrt.runtime import segmenter_for_engine

            return segmenter_for_engine(model, device, tiles)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    seg = OrtSegmenter(resolved, device=device, threads=threads)
    seg.tiles = parse_tiles(tiles)
    return seg


def create_detector(
    model: str | ResolvedDetector | None = "nanodet",
    device: str = "cpu",
    *,
    long_side: LongSide = "auto",
    score_threshold: float | None = None,
    tiles: Tiles = "auto",
    tile_size: int | None = None,
    max_batch: int | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> Detector:
    """A ready person detector for ``model``: ``nanodet`` (pulled and converted on first use, with
    a progress bar), ``nanodet:/path.onnx``, a bare NanoDet ``.onnx``, or a resolved detector.

    ``device``: 'cpu', 'cuda' (ONNX Runtime's CUDA/TensorRT execution providers; a ModelError
    naming the problem when this onnxruntime has none) or 'auto', the rule of ``create_segmenter``.
    A TensorRT engine path (``nanodet.engine``, from ``privacy-filter engine build nanodet``) runs
    on TensorRT (``gpu.tensorrt.detector``; ``auto``/``cpu`` fall back to the ONNX it was built
    from).  See ``engines.detector.DetectorEngine`` for ``long_side`` ('auto' = clamp(source long
    side, 512, 640)), ``tiles`` and the threshold.  ``precision``: ``auto`` runs the built-in
    ``nanodet`` on ONNX Runtime's CPU provider (``cpu``, or ``auto`` without a GPU one) as its INT8 copy (``models.quantize``) and anything else in float;
    ``int8`` quantizes whatever ONNX it is given (a ModelError when the calibration table does not
    fit it); ``fp32`` never.  TensorRT engines keep the precision they were built with.
    """
    from privacy_filter.engines.detector import DetectorOptions, OrtDetector
    from privacy_filter.gpu.tensorrt.sidecar import is_engine_path

    options: DetectorOptions = {"long_side": long_side, "score_threshold": score_threshold, "tiles": tiles, "tile_size": tile_size}
    if max_batch:  # unset: the engine's own (TensorRT: up to its profile; ONNX Runtime's CPU provider: 1)
        options["max_batch"] = max_batch
    if isinstance(model, str) and is_engine_path(model):
        from privacy_filter.gpu.tensorrt.detector import detector_for_engine

        return detector_for_engine(model, device, threads=threads, **options)
    if precision not in ("auto", "int8", "fp32"):
        raise ConfigError(f"detector precision: {precision!r}; allowed: auto, int8, fp32")
    resolved = model if isinstance(model, ResolvedDetector) else resolve_detector(model)
    if precision == "int8" or (precision == "auto" and _runs_on_cpu(device) and resolved.spec.name in DETECTOR_SPECS):
        from privacy_filter.models.quantize import int8_detector

        int8 = int8_detector(resolved.onnx_path, None, resolved.spec.input_name, required=precision == "int8")
        if int8 is not None:
            resolved = ResolvedDetector(resolved.spec, int8)
    return OrtDetector(resolved, device=device, threads=threads, **options)


def _runs_on_cpu(device: str) -> bool:
    """``device`` ends on ONNX Runtime's CPU provider: 'cpu', or 'auto' without a GPU provider."""
    if device == "cpu":
        return True
    from privacy_filter.engines.onnxruntime import providers_for

    return device == "auto" and providers_for("auto")[0] == "CPUExecutionProvider"


def create_stream_effect(effect: EffectConfig, mask: MaskConfig, device: str = "cpu", runtime: Any = None) -> StreamEffect:
    """The effect for one stream on ``device`` ("cpu" or "cuda"); ``runtime``: the stage's CUDA
    runtime (``create_stage_device().rt``), whose one stream every effect of the stage shares.

    Raises ConfigError for an unusable replacement file or an unknown device.
    """
    if device == "cpu":
        from privacy_filter.effects.cpu import CpuStreamEffect

        return CpuStreamEffect(effect, mask)
    if device == "cuda":
        from privacy_filter.gpu import effects as cuda_effects  # lazily: CuPy/NVRTC only when asked for

        return cuda_effects.create_stream_effect(effect, mask, runtime=runtime)
    raise ConfigError(f"device: unknown effects device {device!r}; allowed: cpu, cuda")


def create_stage_device(device_index: int = 0) -> Any:
    """The CUDA device of one filter stage (``gpu.effects.StageDevice``): one runtime and stream for the
    segmenter and every effect, device selection per thread, warm-up, the device-resident chain."""
    from privacy_filter.gpu import effects as cuda_effects

    return cuda_effects.StageDevice.create(device_index)


# --------------------------------------------------------------------------- devices
# Which device each component runs on: segmentation and effects are separate settings.
#
# ``device`` (config, ``--device``) is a shorthand for both; ``segmentation_device`` and
# ``effects_device`` (``--segmentation-device``, ``--effects-device``) override it per component.
# Each is ``cpu``, ``cuda`` or ``auto``, resolved here, once, at start:
#
# * segmentation, ONNX model: ``cuda`` means ONNX Runtime's CUDA/TensorRT execution providers
#   (the onnxruntime-gpu build) on a CUDA device; ``auto`` picks them when both are there.
# * segmentation, TensorRT engine (``.engine``/``.plan``/``.trt``): ``cuda`` means TensorRT;
#   ``auto`` falls back to the engine's source ONNX on the CPU when TensorRT or a device is missing.
# * effects: ``cuda`` means the CuPy raw kernels, after the probe of
#   ``gpu.effects.cuda_unavailable_reason`` (compile and launch one kernel).
#
# ``auto`` logs one line per component saying what it chose and why.  A component asked for
# ``cuda`` that cannot run is one :class:`DeviceError` naming every such component and the reason,
# raised before any frame is read: a configuration that cannot work never starts, and never
# silently covers every frame.

DEVICES = ("cpu", "cuda", "auto")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class DeviceError(UserError):
    """A component was asked for a device that cannot run here."""


@dataclass(frozen=True)
class Choice:
    device: str  # "cpu" | "cuda"
    why: str


@dataclass(frozen=True)
class Devices:
    segmentation: str
    effects: str


def requested(device: str | None, segmentation_device: str | None = None, effects_device: str | None = None) -> tuple[str, str]:
    """(segmentation, effects) as asked for: the per-component setting, else ``device``, else cpu."""
    base = device or "cpu"
    seg, fx = segmentation_device or base, effects_device or base
    for name, value in (("segmentation device", seg), ("effects device", fx)):
        if value not in DEVICES:
            raise DeviceError(f"{name}: unknown device {value!r}; allowed: {', '.join(DEVICES)}")
    return seg, fx


# --------------------------------------------------------------------------- per component


def _is_engine(model: Any) -> bool:
    if not isinstance(model, str):
        return False
    from privacy_filter.gpu.tensorrt.sidecar import is_engine_path

    return is_engine_path(model)


def _ort_gpu_problem() -> str | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not any(p in available for p in GPU_PROVIDERS):
        return f"onnxruntime is the CPU build: no CUDA/TensorRT execution provider (available: {', '.join(available)}); install onnxruntime-gpu for CUDA segmentation"
    return None


def _tensorrt_problem() -> str | None:
    try:
        importlib.import_module("tensorrt")
    except ImportError as exc:
        return f"TensorRT is not importable ({exc})"
    return None


def _device_problem() -> str | None:
    from privacy_filter.gpu import effects as cuda

    reason = cuda.cuda_device_reason()
    return None if reason is None else f"no usable CUDA device ({reason})"


def segmentation_choice(want: str, model: Any) -> Choice:
    """Where segmentation runs for ``model``; DeviceError when ``want == 'cuda'`` cannot work."""
    engine = _is_engine(model)
    if want == "cpu":
        return Choice("cpu", "requested" + ("; the TensorRT engine runs as its source ONNX on ONNX Runtime" if engine else ""))
    problem = (_tensorrt_problem() or _device_problem()) if engine else (_ort_gpu_problem() or _device_problem())
    what = "TensorRT" if engine else "ONNX Runtime CUDA/TensorRT execution providers"
    if problem is None:
        return Choice("cuda", f"{want}: {what} on a CUDA device" if want == "auto" else "requested")
    if want == "cuda":
        raise DeviceError(f"segmentation device cuda ({what}) cannot run here: {problem}")
    if engine:
        return Choice("cpu", f"auto: {problem}; running the engine's source ONNX on ONNX Runtime (CPU)")
    return Choice("cpu", f"auto: {problem}")


def effects_choice(want: str) -> Choice:
    """Where the effects run; DeviceError when ``want == 'cuda'`` and the CUDA probe fails."""
    if want == "cpu":
        return Choice("cpu", "requested")
    from privacy_filter.gpu import effects as cuda

    reason = cuda.cuda_unavailable_reason()
    if reason is None:
        return Choice("cuda", "auto: the CUDA probe kernel compiled, ran and read back" if want == "auto" else "requested")
    if want == "cuda":
        raise DeviceError(f"effects device cuda cannot run here: CUDA unavailable: {reason}")
    return Choice("cpu", f"auto: CUDA unavailable: {reason}")


# --------------------------------------------------------------------------- both


def resolve_devices(
    device: str | None,
    segmentation_device: str | None = None,
    effects_device: str | None = None,
    *,
    model: Any = None,
    segmentation: bool = True,
    effects: bool = True,
    announce: bool = True,
    where: str = "",
) -> Devices:
    """Resolve both components; one log line each (``announce``), or one DeviceError for all problems.

    ``segmentation``/``effects`` False: that component is provided by the caller (an injected
    engine or effect) and is neither probed nor logged; its device is reported as requested.
    """
    seg_want, fx_want = requested(device, segmentation_device, effects_device)
    problems: list[str] = []
    seg = fx = None
    if segmentation:
        try:
            seg = segmentation_choice(seg_want, model)
        except DeviceError as exc:
            problems.append(str(exc))
    if effects:
        try:
            fx = effects_choice(fx_want)
        except DeviceError as exc:
            problems.append(str(exc))
    if problems:
        raise DeviceError(where + "; ".join(problems) + "; use --device cpu (or device: cpu) to run on the CPU")
    if announce:
        for name, c in (("segmentation", seg), ("effects", fx)):
            if c is not None:
                fell_back = c.device == "cpu" and c.why.startswith("auto")
                (log.warning if fell_back else log.info)("%s device: %s (%s)", name, c.device, c.why)
    return Devices(seg.device if seg else seg_want, fx.device if fx else fx_want)


def create_cover_engine(
    streams: dict[str, Any],
    *,
    model: str | None = None,
    device: str = "cpu",
    detector: Any = None,
    threads: int | None = None,
) -> Any:
    """The CCTV cover engine (``engines.finder.PersonFinder``) for streams of ``CoverSettings``.

    ``detector`` (anything with ``detect_yuv``) is built from the first stream's ``detector.name``
    when not given; ``model`` is the segmentation model for ``cover: segment`` crops only.
    """
    from privacy_filter.engines.finder import PersonFinder

    settings = list(streams.values())
    if detector is None and any(s.detector.enabled for s in settings):
        chosen = next(s.detector for s in settings if s.detector.enabled)
        detector = create_detector(chosen.name, device=device, long_side=chosen.long_side or "auto", score_threshold=chosen.score, threads=threads, precision=chosen.precision)
    segmenter = None
    if any(s.cover == "segment" for s in settings):
        segmenter = create_segmenter(model, device=device, threads=threads)
    return PersonFinder(streams, detector=detector, segmenter=segmenter)
