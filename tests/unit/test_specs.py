"""Model specs, the registry and spec/ONNX validation, on the real shared ONNX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from privacy_filter.errors import ModelError
from privacy_filter.models import onnx_tools
from privacy_filter.models.registry import resolve_model
from privacy_filter.models.specs import BUILTIN_SPECS, load_deepstream_config
from support.pssn_contract import NVINFER_TXT, write_nvinfer_config
from support.seg_fixtures import REFERENCE_YAML, write_spec


def test_builtin_peoplesemsegnet_contract_values() -> None:
    for name, inp in (("peoplesemsegnet-shuffleseg", "input_2:0"), ("peoplesemsegnet-vanilla", "input_1:0")):
        s = BUILTIN_SPECS[name]
        assert (s.input_name, s.input_layout, s.height, s.width, s.color) == (inp, "NCHW", 544, 960, "bgr")
        assert (s.output_name, s.output_kind, s.output_layout, s.person_index) == ("argmax_1", "argmax", "NHWC", 1)
        off, sc = s.normalisation_arrays()
        # x/127.5 - 1 at both ends of the range (nvinfer's rounded 0.007843)
        assert np.allclose((np.array([0.0, 255.0])[:, None] - off) * sc, [[-1] * 3, [1] * 3], atol=1e-3)
    assert set(BUILTIN_SPECS) == {"selfie", "selfie-landscape", "peoplesemsegnet-shuffleseg", "peoplesemsegnet-vanilla"}
    assert BUILTIN_SPECS["selfie-landscape"].size == (144, 256)


def test_default_resolves_to_selfie_and_names_come_from_the_onnx(selfie_model) -> None:
    if selfie_model.spec.name != "selfie":
        pytest.skip("embedded default unavailable here (no network); reference conversion used instead")
    assert resolve_model(None) == selfie_model
    io = onnx_tools.read_io(selfie_model.onnx_path)
    assert selfie_model.spec.input_name == io.inputs[0].name
    assert selfie_model.spec.output_name == io.outputs[0].name
    landscape = resolve_model("selfie-landscape")
    assert landscape.spec.size == (144, 256)


def test_yaml_spec_mean_std_become_offset_scale(spec_dir: Path) -> None:
    r = resolve_model(str(spec_dir / "sinet.yaml"))
    assert r.spec.color == "bgr" and r.spec.output_kind == "softmax" and r.spec.person_index == 1
    assert np.allclose(r.spec.offset, (102.89, 111.25, 126.91))
    assert np.allclose(r.spec.scale, (1 / 62.93, 1 / 62.82, 1 / 66.36))
    ref = resolve_model(str(spec_dir / "selfie_reference.yaml"))
    assert ref.spec.input_layout == "NHWC" and ref.spec.output_layout == "NHWC"
    assert ref.onnx_path.name == "selfie_segmentation_reference.onnx"


def test_bodypix_dynamic_input_accepts_its_declared_size(spec_dir: Path) -> None:
    r = resolve_model(str(spec_dir / "bodypix.yaml"))
    assert r.spec.size == (513, 513) and r.spec.output_kind == "logits"


@pytest.mark.parametrize("typo", [False, True])
def test_deepstream_txt_config(tmp_path: Path, typo: bool, shared_data: Path) -> None:
    (tmp_path / "models").mkdir()
    onnx_file = tmp_path / "models" / "m.onnx"
    onnx_file.write_bytes(b"")  # parsing only; not loaded here
    cfg = write_nvinfer_config(tmp_path / "pgie_config.txt", "models/m.onnx", typo=typo)
    spec, path = load_deepstream_config(cfg)
    assert path == onnx_file.resolve()
    assert spec.color == "bgr" and spec.size == (544, 960) and spec.input_layout == "NCHW"
    assert spec.scale == (0.007843,) * 3 and spec.offset == (127.5,) * 3
    assert spec.output_name == "argmax_1" and spec.output_layout == "NHWC" and spec.output_kind == "auto"


def test_deepstream_yml_config(tmp_path: Path) -> None:
    cfg = tmp_path / "pgie_config.yml"
    cfg.write_text(
        "property:\n  net-scale-factor: 0.00392156862745098\n  model-color-format: 0\n"
        "  onnx-file: ../x/model.onnx\n  infer-dims: 3;256;256\n  output-blob-names: out\n"
        "  segmentation-output-order: 0\n  offsets: 0;0;0\n"
    )
    spec, path = load_deepstream_config(cfg)
    assert path == (tmp_path / "../x/model.onnx").resolve()
    assert spec.color == "rgb" and spec.output_layout == "NCHW" and spec.size == (256, 256)


def test_deepstream_config_missing_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "pgie.txt"
    cfg.write_text(NVINFER_TXT.format(onnx_key="onnx-file", onnx="m.onnx").replace("infer-dims=3;544;960\n", ""))
    with pytest.raises(ModelError, match="infer-dims"):
        load_deepstream_config(cfg)
    cfg.write_text("[other]\nx=1\n")
    with pytest.raises(ModelError, match=r"\[property\]"):
        load_deepstream_config(cfg)


def test_deepstream_config_on_real_model_fills_input_name_and_kind(tmp_path: Path, shared_data: Path) -> None:
    # The reference selfie ONNX is NHWC-input, which nvinfer configs cannot describe; BodyPix is too.
    # SINet is NCHW with a float output: kind comes from the producing op.
    cfg = tmp_path / "pgie_sinet.txt"
    cfg.write_text(
        "[property]\nnet-scale-factor=0.0158\noffsets=102.89;111.25;126.91\nmodel-color-format=1\n"
        f"onnx-file={shared_data / 'models' / 'sinet_softmax.onnx'}\ninfer-dims=3;320;320\n"
        "output-blob-names=Softmax/1\nsegmentation-output-order=0\n"
    )
    r = resolve_model(str(cfg))
    assert r.spec.input_name == "data" and r.spec.output_layout == "NCHW"
    assert r.spec.output_kind in ("softmax", "logits")  # a float 2-class output, never argmax


def test_unknown_model_name_lists_known_names() -> None:
    with pytest.raises(ModelError) as exc:
        resolve_model("people-net-9000")
    msg = str(exc.value)
    assert "people-net-9000" in msg and "selfie" in msg and "peoplesemsegnet-shuffleseg" in msg


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match="not found.*nope.onnx"):
        resolve_model(str(missing))
    with pytest.raises(ModelError, match="not found.*nope.onnx"):
        resolve_model(f"peoplesemsegnet-shuffleseg:{missing}")
    with pytest.raises(ModelError, match="not shipped.*peoplesemsegnet-vanilla:/path"):
        resolve_model("peoplesemsegnet-vanilla")


def test_corrupt_onnx_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf" * 10)
    with pytest.raises(ModelError, match="broken.onnx.*not a readable ONNX"):
        resolve_model(f"peoplesemsegnet-shuffleseg:{bad}")


def test_spec_onnx_mismatch_names_tensor_and_both_shapes(tmp_path: Path, shared_data: Path) -> None:
    ref = shared_data / "models" / "selfie_segmentation_reference.onnx"
    wrong_size = write_spec(tmp_path, "wrong_size", REFERENCE_YAML.replace("size: [256, 256]", "size: [320, 320]"), ref)
    with pytest.raises(ModelError) as exc:
        resolve_model(str(wrong_size))
    msg = str(exc.value)
    assert "'input_1:0'" in msg and "[1, 256, 256, 3]" in msg and "[N,320,320,3]" in msg

    wrong_layout = write_spec(tmp_path, "wrong_layout", REFERENCE_YAML.replace("input_layout: NHWC", "input_layout: NCHW"), ref)
    with pytest.raises(ModelError, match=r"input_1:0.*\[1, 256, 256, 3\].*\[N,3,256,256\]"):
        resolve_model(str(wrong_layout))

    wrong_out = write_spec(tmp_path, "wrong_out", REFERENCE_YAML.replace("output_name: activation_10", "output_name: softmax_1"), ref)
    with pytest.raises(ModelError, match="softmax_1.*activation_10"):
        resolve_model(str(wrong_out))

    wrong_kind = write_spec(tmp_path, "wrong_kind", REFERENCE_YAML.replace("output_kind: sigmoid", "output_kind: argmax"), ref)
    with pytest.raises(ModelError, match="activation_10.*float32.*argmax"):
        resolve_model(str(wrong_kind))


def test_builtin_spec_on_wrong_onnx_is_rejected(tmp_path: Path, shared_data: Path) -> None:
    # The selfie reference is not a PeopleSemSegNet file: the expected input name is reported.
    ref = shared_data / "models" / "selfie_segmentation_reference.onnx"
    with pytest.raises(ModelError, match=r"expects input 'input_2:0'.*input_1:0"):
        resolve_model(f"peoplesemsegnet-shuffleseg:{ref}")
    # A file with the right names but a 256x256 input: wrong shape for the 544x960 contract.
    x = helper.make_tensor_value_info("input_2:0", TensorProto.FLOAT, ["N", 3, 256, 256])
    y = helper.make_tensor_value_info("argmax_1", TensorProto.INT64, ["N", 256, 256, 1])
    g = helper.make_graph(
        [
            helper.make_node("Transpose", ["input_2:0"], ["t"], perm=[0, 2, 3, 1]),
            helper.make_node("ArgMax", ["t"], ["argmax_1"], axis=-1, keepdims=1),
        ],
        "small",
        [x],
        [y],
    )
    small = tmp_path / "small.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(small))
    with pytest.raises(ModelError) as exc:
        resolve_model(f"peoplesemsegnet-shuffleseg:{small}")
    msg = str(exc.value)
    assert "'input_2:0'" in msg and "['N', 3, 256, 256]" in msg and "[N,3,544,960]" in msg


def test_expose_logits_requires_an_argmax_output(shared_data: Path, tmp_path: Path) -> None:
    ref = shared_data / "models" / "selfie_segmentation_reference.onnx"
    with pytest.raises(ModelError, match="activation_10.*not ArgMax"):
        onnx_tools.expose_argmax_logits(ref, "activation_10", tmp_path)


def test_invalid_yaml_field_is_named(tmp_path: Path, shared_data: Path) -> None:
    ref = shared_data / "models" / "selfie_segmentation_reference.onnx"
    bad = write_spec(tmp_path, "bad", REFERENCE_YAML.replace("color: rgb", "color: cmyk"), ref)
    with pytest.raises(ModelError, match="'color'"):
        resolve_model(str(bad))
    typo = write_spec(tmp_path, "typo", REFERENCE_YAML + "ouput_kind: sigmoid\n", ref)
    with pytest.raises(ModelError, match="ouput_kind"):
        resolve_model(str(typo))
