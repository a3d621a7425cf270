"""Shared fixtures.

Test data lives in ``../shared/data`` beside the repository (never copied in).  Tests
that need it skip with a clear reason when it is absent; in CI it is present.
Override the location with ``PRIVACY_FILTER_SHARED``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
