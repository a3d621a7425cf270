"""PeopleSemSegNet contract: a real network with exactly NVIDIA's I/O, run through our spec path.

The NGC files cannot be fetched here, so ``pssn_contract.build_contract_onnx`` wraps the default
model's graph in PeopleSemSegNet's interface (input_2:0 NCHW BGR x/127.5-1 → argmax_1 NHWC int64).
If our spec, preprocessing and argmax decoding follow the contract, the whole path must give the
same person mask as running the default model directly.

Bar: pooled IoU of the two masks ≥ 0.99 over the images, and ≥ 0.95 on every image.  The residual
differences are resampling: the contract path shrinks to 960x544 (ours) and then to 256x256 inside
the graph (bilinear, no antialias), the direct path shrinks once (INTER_AREA).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privacy_filter.backends import create_segmenter
from privacy_filter.engines import upsample_probability
from privacy_filter.evaluate import read_image
from privacy_filter.models import onnx_tools
from privacy_filter.models.registry import ResolvedModel, resolve_model
from support.pssn_contract import build_contract_onnx, write_nvinfer_config

IMAGES = [("people_pseudo", s) for s in ("1", "10", "100", "101")] + [("portrait_dev", "00001"), ("cihp_multi", "0005008")]


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory, selfie_model: ResolvedModel) -> Path:
    d = tmp_path_factory.mktemp("pssn")
    layout = selfie_model.spec.input_layout
    return build_contract_onnx(selfie_model.onnx_path, d / "models" / "peoplesemsegnet_shuffleseg.onnx", inner_layout=layout)


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[np.ndarray]:
    out = []
    for ds, stem in IMAGES:
        folder = shared_data / "images" / ds / "images"
        out.append(read_image(next(p for p in folder.iterdir() if p.stem == stem)))
    return out


@pytest.fixture(scope="module")
def direct_masks(selfie_model: ResolvedModel, images: list[np.ndarray]) -> list[np.ndarray]:
    seg = create_segmenter(selfie_model)
    return [upsample_probability(seg.infer_rgb([im], order="bgr")[0], im.shape[1], im.shape[0]) for im in images]


def _masks(model: str, images: list[np.ndarray]) -> tuple[list[np.ndarray], object]:
    seg = create_segmenter(model)
    probs = seg.infer_rgb(images, order="bgr")  # one batch of 6 frames
    return [upsample_probability(p, im.shape[1], im.shape[0]) for p, im in zip(probs, images)], seg


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    inter = union = 0
    worst = 1.0
    for x, y in zip(a, b):
        X, Y = x >= 0.5, y >= 0.5
        i, u = int((X & Y).sum()), int((X | Y).sum())
        inter, union = inter + i, union + u
        worst = min(worst, i / u if u else 1.0)
    return inter / union, worst


def test_contract_model_has_exactly_peoplesemsegnets_io(contract: Path) -> None:
    io = onnx_tools.read_io(contract)
    (inp,), (out,) = io.inputs, io.outputs
    assert inp.name == "input_2:0" and inp.shape[1:] == (3, 544, 960) and inp.dtype == np.float32
    assert out.name == "argmax_1" and out.shape[1:] == (544, 960, 1) and out.dtype == np.int64
    assert io.producers["argmax_1"] == "ArgMax"


def test_builtin_spec_path_matches_the_default_model(contract: Path, images, direct_masks) -> None:
    masks, seg = _masks(f"peoplesemsegnet-shuffleseg:{contract}", images)
    assert seg.spec.name == "peoplesemsegnet-shuffleseg"
    assert all(set(np.unique(p)) <= {0.0, 1.0} for p in seg.infer_rgb(images[:1], order="bgr"))  # hard ids
    pooled, worst = _agreement(masks, direct_masks)
    assert pooled >= 0.99 and worst >= 0.95, (pooled, worst)


def test_bare_onnx_is_recognised_by_its_tensor_names(contract: Path) -> None:
    assert resolve_model(str(contract)).spec.name == "peoplesemsegnet-shuffleseg"


@pytest.mark.parametrize("typo", [False, True], ids=["onnx-file", "onnx-file:= (NVIDIA vanilla typo)"])
def test_deepstream_config_path_matches_the_default_model(contract: Path, images, direct_masks, typo: bool) -> None:
    cfg = write_nvinfer_config(contract.parent.parent / f"pgie_peoplesemsegnet_{int(typo)}.txt", "models/peoplesemsegnet_shuffleseg.onnx", typo=typo)
    masks, seg = _masks(str(cfg), images)
    assert (seg.spec.input_name, seg.spec.output_kind, seg.spec.color) == ("input_2:0", "argmax", "bgr")
    pooled, worst = _agreement(masks, direct_masks)
    assert pooled >= 0.99 and worst >= 0.95, (pooled, worst)


def test_int32_argmax_and_yuv_input(tmp_path: Path, selfie_model: ResolvedModel, images, direct_masks) -> None:
    # TensorRT-8-era engines report argmax_1 as INT32; the vanilla model's input is input_1:0.
    path = build_contract_onnx(selfie_model.onnx_path, tmp_path / "vanilla_i32.onnx", inner_layout=selfie_model.spec.input_layout, input_name="input_1:0", out_dtype="int32")
    assert onnx_tools.read_io(path).outputs[0].dtype == np.int32
    seg = create_segmenter(f"peoplesemsegnet-vanilla:{path}")
    from support.pictures import even, to_i420

    im = even(images[0])
    p = seg.infer_yuv([to_i420(im)])[0]
    assert p.shape == (544, 960)
    got = upsample_probability(p, im.shape[1], im.shape[0])
    pooled, _ = _agreement([got], [direct_masks[0][: im.shape[0], : im.shape[1]]])
    assert pooled >= 0.97  # YUV 4:2:0 input: chroma subsampling adds a little on top


def test_exposed_logits_give_a_soft_mask_consistent_with_the_hard_one(contract: Path, images, direct_masks) -> None:
    soft_masks, seg = _masks(f"peoplesemsegnet-shuffleseg+soft:{contract}", images)
    assert seg.spec.output_kind == "logits" and seg.spec.output_layout == "NHWC"
    assert seg.spec.output_name != "argmax_1"
    hard_masks, _ = _masks(f"peoplesemsegnet-shuffleseg:{contract}", images)
    for soft, hard, direct in zip(soft_masks, hard_masks, direct_masks):
        assert 0.0 <= soft.min() and soft.max() <= 1.0
        assert ((soft > 0.02) & (soft < 0.98)).mean() > 0.001  # genuinely soft: edges in between
        # Thresholding the soft map reproduces the hard argmax mask.
        pooled, _ = _agreement([soft], [hard])
        assert pooled >= 0.995
        # The exposed logits are log(1-p), log p, so the soft map is the default model's probability.
        assert float(np.abs(soft - direct).mean()) < 0.02  # measured ≤ 0.012 (resampling differences)
