"""The TF.js graph → ONNX converter on small graphs written here (no download, no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from privacy_filter.errors import ModelError
from privacy_filter.models import tfjs2onnx
from support.nanodet import tiny_graph_model, tiny_reference


def _session(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_tiny_graph_matches_numpy_with_dynamic_batch(tmp_path: Path) -> None:
    path, weights = tiny_graph_model(tmp_path)
    model = tfjs2onnx.convert(tfjs2onnx.load_graph_model(path), input_shapes={"input_1:0": ["N", 3, "H", "W"]})
    reshape = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert len(reshape) == 1
    target = next(i for i in model.graph.initializer if i.name == reshape[0].input[1])
    from onnx import numpy_helper

    assert numpy_helper.to_array(target).tolist() == [0, -1, 4], "the baked batch 1 must become 0 (copy N)"
    x = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    got = _session(model).run(None, {"input_1:0": x})[0]
    np.testing.assert_allclose(got, tiny_reference(x, weights), atol=1e-5)


def test_static_batch_keeps_the_baked_one(tmp_path: Path) -> None:
    path, weights = tiny_graph_model(tmp_path)
    model = tfjs2onnx.convert(tfjs2onnx.load_graph_model(path), input_shapes={"input_1:0": [1, 3, "H", "W"]})
    x = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_session(model).run(None, {"input_1:0": x})[0], tiny_reference(x, weights), atol=1e-5)


def test_unsupported_op_is_one_line_naming_op_and_node(tmp_path: Path) -> None:
    path, _ = tiny_graph_model(tmp_path, extra_op="Erf")
    with pytest.raises(tfjs2onnx.UnsupportedOpError) as info:
        tfjs2onnx.convert(tfjs2onnx.load_graph_model(path), input_shapes={"input_1:0": ["N", 3, "H", "W"]})
    assert isinstance(info.value, ModelError)
    msg = str(info.value)
    assert "\n" not in msg and "'Erf'" in msg and "'odd'" in msg


def test_not_a_graph_model_and_short_weights(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(tfjs2onnx.ConversionError, match="not a TF.js graph model"):
        tfjs2onnx.load_graph_model(bad)
    path, _ = tiny_graph_model(tmp_path / "short")
    (path.parent / "tiny.bin").write_bytes(b"\0" * 16)
    with pytest.raises(tfjs2onnx.ConversionError, match="runs past the end"):
        tfjs2onnx.load_graph_model(path)


def test_convert_file_writes_atomically(tmp_path: Path) -> None:
    path, _ = tiny_graph_model(tmp_path)
    out = tmp_path / "out" / "tiny.onnx"
    out.parent.mkdir()
    tfjs2onnx.convert_file(path, out, input_shapes={"input_1:0": ["N", 3, "H", "W"]})
    assert [p.name for p in out.parent.iterdir()] == ["tiny.onnx"]
