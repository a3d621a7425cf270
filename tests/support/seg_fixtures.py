"""Fixtures shared by the segmentation tests (specs, engines, contract, segment/eval CLI).

``selfie_model``: the embedded default, pulled/converted on first use (network to PyPI).  Where
that is impossible the same network from ../shared (an independent conversion, NHWC) is used
through a spec YAML, so the engine tests still run on a real model; the fallback is reported.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from privacy_filter.errors import ModelError
from privacy_filter.models.registry import ResolvedModel, resolve_model

REFERENCE_YAML = """\
onnx: {onnx}
input_name: "input_1:0"
input_layout: NHWC
size: [256, 256]
color: rgb
scale: 0.00392156862745098
output_name: activation_10
output_kind: sigmoid
output_layout: NHWC
person_index: 0
"""

BODYPIX_YAML = """\
onnx: {onnx}
input_name: image_nhwc
input_layout: NHWC
size: [513, 513]
mean: 127.5
std: 127.5
output_name: segment_logits_nhwc
output_kind: logits
output_layout: NHWC
person_index: 0
"""

SINET_YAML = """\
onnx: {onnx}
input_name: data
size: [320, 320]
color: bgr
mean: [102.89, 111.25, 126.91]
std: [62.93, 62.82, 66.36]
output_name: Softmax/1
output_kind: softmax
person_index: 1
"""


def write_spec(directory: Path, name: str, template: str, onnx: Path) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(template.format(onnx=onnx))
    return path


@pytest.fixture(scope="session")
def spec_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    d = tmp_path_factory.mktemp("specs")
    models = shared_data / "models"
    write_spec(d, "selfie_reference", REFERENCE_YAML, models / "selfie_segmentation_reference.onnx")
    write_spec(d, "bodypix", BODYPIX_YAML, models / "bodypix_mobilenetv1_050_float_stride16.onnx")
    write_spec(d, "sinet", SINET_YAML, models / "sinet_softmax.onnx")
    return d


@pytest.fixture(scope="session")
def selfie_model(spec_dir: Path) -> ResolvedModel:
    try:
        return resolve_model("selfie")
    except ModelError as exc:
        warnings.warn(f"embedded default unavailable ({exc}); using the shared reference conversion")
        return resolve_model(str(spec_dir / "selfie_reference.yaml"))


def image_and_mask(shared_data: Path, dataset: str, stem: str):
    from privacy_filter.evaluate import read_image, read_mask

    folder = shared_data / "images" / dataset
    img_path = next(p for p in (folder / "images").iterdir() if p.stem == stem)
    img = read_image(img_path)
    return img, read_mask(folder / "masks" / f"{stem}.png", img.shape[1], img.shape[0])


def iou(a, b) -> float:
    inter = (a & b).sum()
    union = (a | b).sum()
    return float(inter / union) if union else 1.0
