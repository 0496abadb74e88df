"""Atomic writes: nothing half-written, and ordinary permissions on the result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imharmony.io._atomic import atomic_path


def test_result_has_ordinary_permissions_and_keeps_a_replaced_files_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.csv"
        with atomic_path(new) as tmp:
            tmp.write_text("a")
        assert new.stat().st_mode & 0o777 == 0o644
        old = tmp_path / "old.csv"
        old.write_text("x")
        old.chmod(0o640)
        with atomic_path(old) as tmp:
            tmp.write_text("b")
        assert old.read_text() == "b" and old.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_failure_leaves_the_target_untouched_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
