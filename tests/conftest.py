"""Shared test fixtures.

Reference data that is not part of the repository (see ``../shared/data/*/NOTICE.md``) is found at
``<repo>/../shared/data`` or at ``$IMHARMONY_SHARED_DATA``; tests that need it are skipped with a
message saying where it was looked for when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Shared test helpers (tests/dicom_factory.py, tests/physics/*_factory.py) are found through
# pytest's ``pythonpath`` setting in pyproject.toml.


def shared_data_dir() -> Path:
    """Where the shared reference data is expected."""
    env = os.environ.get("IMHARMONY_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared reference data; skips (saying where it looked) when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(
            f"shared reference data not found at {path} (set IMHARMONY_SHARED_DATA to its folder)"
        )
    return path
