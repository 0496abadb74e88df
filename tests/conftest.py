"""Shared test fixtures.

Reference data that is not part of the repository (see ``../shared/data/*/NOTICE.md``) is found at
``<repo>/../shared/data`` or at ``$IMHARMONY_SHARED_DATA``; tests that need it are skipped with a
message saying where it was looked for when it is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Shared test support (tests/_support: the DICOM factory and the cohorts) is imported as
# ``_support``, found through pytest's ``pythonpath`` setting in pyproject.toml.

# The scripts that produced the reference fixtures (tests/reference/<tool>/*.py) run in the peers'
# own environments (R, GDAL, other venvs): pytest's --doctest-modules must not import them.
collect_ignore_glob = ["reference/*/*.py"]


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


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """The CLI configures the root logger (``basicConfig(force=True)``); put it back after each
    test so that a later test, or a docstring example, does not see the CLI's handler."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
