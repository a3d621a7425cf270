"""The sidecar ``<engine>.json`` beside each engine: spec, TensorRT version, GPU.

Plans are valid only for the TensorRT version (and GPU) that built them, so a mismatch is
refused with a message saying how to rebuild, instead of TensorRT's opaque error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from privacy_filter.errors import ModelError
from privacy_filter.models.specs import DetectorSpec, ModelSpec

log = logging.getLogger(__name__)


def onnx_sha256(path: Path) -> str:
    from privacy_filter.models.pull import sha256_file  # lazy: pull imports urllib, not needed to run engines

    return sha256_file(path)


SIDECAR_FORMAT = "privacy-filter/tensorrt-engine/1"


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def sidecar_path(engine_path: Path) -> Path:
    return Path(str(engine_path) + ".json")


@dataclass(frozen=True)
class EngineInfo:
    """Contents of ``<engine>.json``."""

    spec: ModelSpec | DetectorSpec  # a segmentation model, or a person detector (``kind`` in the JSON)
    tensorrt_version: str
    gpu: str
    precision: str
    max_batch: int
    onnx: str
    onnx_sha256: str
    built_utc: str

    @property
    def kind(self) -> str:
        """``segmentation`` or ``detector``: what the engine is for, so each path refuses the other's."""
        return "detector" if isinstance(self.spec, DetectorSpec) else "segmentation"

    def segmentation_spec(self, engine: Path) -> ModelSpec:
        """The spec of a segmentation engine; a detector engine given as a model is refused by name."""
        if isinstance(self.spec, ModelSpec):
            return self.spec
        raise ModelError(f"{engine} is a person-detector engine ({self.spec.name}), not a segmentation model: give it as detector.name, not --model")

    def detector_spec(self, engine: Path) -> DetectorSpec:
        """The spec of a detector engine; a segmentation engine given as a detector is refused by name."""
        if isinstance(self.spec, DetectorSpec):
            return self.spec
        raise ModelError(f"{engine} is a segmentation engine ({self.spec.name}), not a person detector: give it as --model, not detector.name")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": SIDECAR_FORMAT,
                "tensorrt_version": self.tensorrt_version,
                "gpu": self.gpu,
                "precision": self.precision,
                "max_batch": self.max_batch,
                "onnx": self.onnx,
                "onnx_sha256": self.onnx_sha256,
                "built_utc": self.built_utc,
                "kind": self.kind,
                "spec": self.spec.model_dump(mode="json"),
            },
            indent=2,
        )


def read_sidecar(engine_path: Path) -> EngineInfo:
    """Read and validate the sidecar of ``engine_path``; ModelError names what is wrong."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ModelError(
            f"{engine_path}: no sidecar {side.name} beside the engine; engines must be built with "
            "'privacy-filter engine build MODEL --out ENGINE' so that their model spec is recorded"
        )
    try:
        data = json.loads(side.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        kind = data.get("kind", "segmentation")  # sidecars from before detector engines have no kind
        if kind not in ("segmentation", "detector"):
            raise ValueError(f"kind {kind!r}, expected 'segmentation' or 'detector'")
        return EngineInfo(
            spec=DetectorSpec(**data["spec"]) if kind == "detector" else ModelSpec(**data["spec"]),
            tensorrt_version=str(data["tensorrt_version"]),
            gpu=str(data.get("gpu", "unknown")),
            precision=str(data["precision"]),
            max_batch=int(data["max_batch"]),
            onnx=str(data.get("onnx", "")),
            onnx_sha256=str(data.get("onnx_sha256", "")),
            built_utc=str(data.get("built_utc", "")),
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
        log.warning("%s was built on %s and now runs on %s; rebuild it on this GPU if it fails or is slow", engine_path, info.gpu, current_gpu)


def is_engine_path(model: str | os.PathLike[str] | None) -> bool:
    """Whether ``--model`` names a serialized TensorRT engine (by suffix)."""
    return model is not None and Path(str(model)).suffix.lower() in ENGINE_SUFFIXES
