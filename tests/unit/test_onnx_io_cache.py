"""The read_io cache (models.onnx_tools): same answer as parsing, and never stale for a changed file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from privacy_filter.models import onnx_tools


def _real_model() -> Path:
    from privacy_filter.models.pull import default_model_path

    try:
        return Path(default_model_path(name="selfie", auto_pull=False))
    except Exception as exc:  # no converted model in this environment
        pytest.skip(f"default model not available: {exc}")


def test_cached_io_equals_parsed_and_follows_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _real_model()
    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    shutil.copyfile(src, model)

    parsed = onnx_tools._read_io_uncached(model)
    first = onnx_tools.read_io(model)  # parses and stores
    assert first == parsed
    assert len(list((tmp_path / "cache" / "io").glob("*.json"))) == 1

    # Served from the cache: a poisoned parser is never called.
    monkeypatch.setattr(onnx_tools, "_read_io_uncached", lambda p: pytest.fail("cache missed"))
    assert onnx_tools.read_io(model) == parsed
    monkeypatch.undo()
    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))

    # A different file at the same path (a rewritten model) is parsed again, not served stale.
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Sigmoid", ["pixels"], ["probs"])], "g", [x], [y])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    io = onnx_tools.read_io(model)
    assert [t.name for t in io.inputs] == ["pixels"] and io.producers == {"probs": "Sigmoid"} and io.opset == 13


def test_missing_file_still_raises_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privacy_filter.errors import ModelError

    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="model file not found"):
        onnx_tools.read_io(tmp_path / "absent.onnx")
