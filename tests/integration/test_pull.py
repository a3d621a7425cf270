"""Fetching, converting and caching the default model.

The wheel is the real mediapipe 0.10.21 wheel from PyPI (fetched once per session by
``download_wheel``).  Where a test must prove that *no* download happens, or must count
downloads, ``pull.download_wheel`` is replaced by a stand-in that copies that same real
wheel and counts calls; the network failure test runs real pip against a dead index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tflite

from privacy_filter.errors import ModelError, UserError
from privacy_filter.models import pull
from privacy_filter.models.tflite2onnx import CONVERTER_VERSION
from support.model_fixtures import mediapipe_wheel, tiny_tflite


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mediapipe_wheel(tmp_path_factory)


@pytest.fixture(scope="module")
def pulled(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache filled offline from the wheel; tests copy it before changing anything."""
    cache = tmp_path_factory.mktemp("pulled")
    paths = pull.pull_default_models(wheel, cache=cache, progress=False)
    assert set(paths) == {"selfie", "selfie-landscape"}
    return cache


@pytest.fixture
def cache(pulled: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cache"
    shutil.copytree(pulled, dst)
    return dst


@pytest.fixture
def fake_download(wheel: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the PyPI step with a copy of the real wheel; the list records each call."""
    calls: list[Path] = []

    def download(dest: Path, *, progress: bool = True) -> Path:
        calls.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(pull, "download_wheel", download)
    return calls


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never touch the real user cache from tests."""
    monkeypatch.setenv(pull.ENV_CACHE_DIR, str(tmp_path / "env-cache"))


def _manifest(directory: Path) -> dict:
    return json.loads((directory / pull.MANIFEST).read_text())


def test_wheel_holds_the_two_selfie_models(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for m in pull.DEFAULT_MODELS.values():
        assert m.member in names


def test_pull_from_wheel_writes_checksummed_cache(pulled: Path) -> None:
    man = _manifest(pulled)
    assert man["converter_version"] == CONVERTER_VERSION and man["mediapipe_version"] == "0.10.21"
    for name, m in pull.DEFAULT_MODELS.items():
        entry = man["models"][name]
        assert entry["tflite_sha256"] == m.tflite_sha256 == pull.sha256_file(pulled / m.tflite_file)
        assert entry["onnx_sha256"] == pull.sha256_file(pulled / m.onnx_file)
        sess = ort.InferenceSession(str(pulled / m.onnx_file), providers=["CPUExecutionProvider"])
        h, w = m.input_hw
        out = sess.run(None, {"input": np.full((1, 3, h, w), 0.5, np.float32)})[0]
        assert out.shape == (1, 1, h, w)
    assert not list(pulled.glob(".*.tmp")), "temporary files left behind"


def test_first_use_pulls_visibly_then_uses_the_cache(tmp_path: Path, fake_download: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "fresh"
    path = pull.default_model_path("selfie", cache=cache)
    assert path == cache / "selfie.onnx" and path.is_file()
    err = capsys.readouterr().err
    assert "privacy-filter: fetching the default model (mediapipe 0.10.21 wheel, ~35 MB) from PyPI" in err
    assert f"-> {cache / 'selfie.onnx'}" in err and "selfie-landscape" in err
    assert len(fake_download) == 1
    # Second call, and the other model: served from the cache, silently, no download.
    assert pull.default_model_path("selfie", cache=cache) == path
    assert pull.default_model_path("selfie-landscape", cache=cache) == cache / "selfie-landscape.onnx"
    assert pull.pull_default_models(cache=cache)["selfie"] == path
    assert len(fake_download) == 1
    assert capsys.readouterr().err == ""


def test_env_and_argument_choose_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pull.ENV_CACHE_DIR, str(tmp_path / "from-env"))
    assert pull.cache_dir() == tmp_path / "from-env"
    assert pull.cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(pull.ENV_CACHE_DIR)
    assert pull.cache_dir().name == "models" and "privacy-filter" in str(pull.cache_dir())


def test_env_cache_dir_is_used_by_default_model_path(pulled: Path, monkeypatch: pytest.MonkeyPatch, fake_download: list[Path]) -> None:
    monkeypatch.setenv(pull.ENV_CACHE_DIR, str(pulled))
    assert pull.default_model_path("selfie-landscape") == pulled / "selfie-landscape.onnx"
    assert fake_download == []


def test_corrupt_onnx_is_detected_and_rebuilt_offline(cache: Path, fake_download: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    target = cache / "selfie.onnx"
    good = target.read_bytes()
    target.write_bytes(good[:-100] + b"\0" * 100)  # same size, damaged tail
    path = pull.default_model_path("selfie", cache=cache)
    err = capsys.readouterr().err
    assert "cached selfie.onnx failed its sha256 check" in err and "rebuilding" in err
    assert path.read_bytes() == good  # reconverted from the cached TFLite, byte-identical
    assert fake_download == []  # no network needed


def test_corrupt_onnx_and_source_refetches(cache: Path, fake_download: list[Path]) -> None:
    (cache / "selfie.onnx").write_bytes(b"garbage")
    (cache / "selfie_segmentation.tflite").write_bytes(b"garbage too")
    path = pull.default_model_path("selfie", cache=cache)
    assert len(fake_download) == 1
    assert pull.sha256_file(path) == _manifest(cache)["models"]["selfie"]["onnx_sha256"]
    assert pull.sha256_file(cache / "selfie_segmentation.tflite") == pull.DEFAULT_MODELS["selfie"].tflite_sha256


def test_unreadable_manifest_means_rebuild(cache: Path, fake_download: list[Path]) -> None:
    (cache / pull.MANIFEST).write_text("{not json")
    assert pull.default_model_path("selfie-landscape", cache=cache).is_file()
    assert fake_download == []  # cached TFLite files still match their pinned checksums
    assert "selfie-landscape" in _manifest(cache)["models"]


def test_stale_converter_version_is_rebuilt(cache: Path, fake_download: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    man = _manifest(cache)
    man["models"]["selfie"]["converter_version"] = "0"
    (cache / pull.MANIFEST).write_text(json.dumps(man))
    pull.default_model_path("selfie", cache=cache)
    assert "converter version '0'" in capsys.readouterr().err
    assert _manifest(cache)["models"]["selfie"]["converter_version"] == CONVERTER_VERSION


def test_offline_pull_from_single_tflite(wheel: Path, tmp_path: Path, fake_download: list[Path]) -> None:
    src = tmp_path / "some_name.tflite"  # name says nothing: the input shape decides
    with zipfile.ZipFile(wheel) as zf:
        src.write_bytes(zf.read(pull.DEFAULT_MODELS["selfie-landscape"].member))
    cache = tmp_path / "offline"
    paths = pull.pull_default_models(src, cache=cache, progress=False)
    assert set(paths) == {"selfie-landscape"}
    assert pull.default_model_path("selfie-landscape", auto_pull=False, cache=cache) == paths["selfie-landscape"]
    with pytest.raises(ModelError, match=r"default model 'selfie' not in the cache .*models pull --from"):
        pull.default_model_path("selfie", auto_pull=False, cache=cache)
    assert fake_download == []


def test_force_reconverts(cache: Path, wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pull.pull_default_models(wheel, cache=cache)
    assert "converted" not in capsys.readouterr().err  # already up to date
    pull.pull_default_models(wheel, cache=cache, force=True)
    assert capsys.readouterr().err.count("converted") == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name = 'not a model'\n", "neither a mediapipe wheel nor a TFLite model"),
        (None, "no such file"),
    ],
)
def test_non_model_source_is_a_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    src = tmp_path / "pyproject.toml"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        pull.pull_default_models(src, cache=tmp_path / "c", progress=False)
    assert str(src) in str(info.value)
    assert not (tmp_path / "c" / "selfie.onnx").exists()


def test_zip_without_the_models_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(ModelError, match="without the selfie segmentation models"):
        pull.pull_default_models(src, cache=tmp_path / "c", progress=False)


def test_tflite_of_another_size_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "model.tflite"
    src.write_bytes(tiny_tflite(builtin=tflite.BuiltinOperator.RELU, in_shape=(1, 64, 64, 3), out_shape=(1, 64, 64, 3)))
    with pytest.raises(ModelError, match=r"input is 64x64; the default models take 256x256 \(selfie\)"):
        pull.pull_default_models(src, cache=tmp_path / "c", progress=False)


def test_unknown_default_model_name(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown default model 'selfy'.*selfie, selfie-landscape"):
        pull.default_model_path("selfy", cache=tmp_path)


def test_network_failure_explains_offline_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real pip against an index nothing listens on: fails fast, like a machine without network.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(ModelError) as info:
        pull.default_model_path("selfie", cache=tmp_path / "c")
    msg = str(info.value)
    assert "fetching mediapipe==0.10.21 from PyPI failed" in msg
    assert "privacy-filter models pull --from" in msg


def test_concurrent_pulls_do_not_corrupt_the_cache(wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    code = "import sys; from privacy_filter.models import pull; pull.pull_default_models(sys.argv[1], cache=sys.argv[2], force=True, progress=False)"
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(wheel), str(cache)], env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    man = _manifest(cache)
    for name, m in pull.DEFAULT_MODELS.items():
        assert pull.sha256_file(cache / m.onnx_file) == man["models"][name]["onnx_sha256"]
        assert pull.cached_problem(cache, name) is None
    assert not list(cache.glob(".*.tmp"))


# --- direct download (environments without pip) ---------------------------------------------


@pytest.fixture
def fake_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A local HTTP server shaped like PyPI's JSON simple index (PEP 691); yields a setter for the file served."""
    import http.server
    import threading

    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/simple/mediapipe/":
                body = json.dumps({"files": [{"filename": pull.WHEEL_FILE, "url": f"../../files/{pull.WHEEL_FILE}", "size": len(served["wheel"])}]}).encode()
            elif self.path == f"/files/{pull.WHEEL_FILE}":
                body = served["wheel"]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(pull, "PYPI_SIMPLE_URL", f"http://127.0.0.1:{server.server_address[1]}/simple/mediapipe/")
    monkeypatch.setattr(pull, "_have_pip", lambda: False)
    yield lambda data: served.__setitem__("wheel", data)
    server.shutdown()
    server.server_close()


def test_without_pip_the_wheel_is_fetched_directly_with_a_progress_bar(fake_index, wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_index(wheel.read_bytes())
    got = pull.download_wheel(tmp_path / "dl", progress=True)
    assert got.name == pull.WHEEL_FILE and pull.sha256_file(got) == pull.WHEEL_SHA256
    err = capsys.readouterr().err
    assert "100%" in err and pull.WHEEL_FILE in err  # tqdm bar
    assert not list((tmp_path / "dl").glob("*.part"))


def test_direct_download_rejects_a_wrong_checksum(fake_index, tmp_path: Path) -> None:
    fake_index(b"PK\x05\x06" + b"\0" * 18)  # an empty zip, not the pinned wheel
    with pytest.raises(ModelError, match=f"expected {pull.WHEEL_SHA256}"):
        pull.download_wheel(tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_direct_download_network_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull, "PYPI_SIMPLE_URL", "http://127.0.0.1:9/simple/mediapipe/")
    monkeypatch.setattr(pull, "_have_pip", lambda: False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with pytest.raises(ModelError, match=r"from PyPI failed .*models pull --from"):
        pull.default_model_path("selfie", cache=tmp_path / "c")
