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


# ---------------------------------------------------------------- outputs vs inputs, OS errors


def test_check_outputs_refuses_inputs_folders_and_repeats(tmp_path: Path) -> None:
    from imharmony.errors import OutputError
    from imharmony.io._atomic import check_outputs

    table = tmp_path / "in.csv"
    table.write_text("a\n1\n")
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    link = tmp_path / "link.csv"
    os.link(table, link)
    check_outputs([table, dicom], [tmp_path / "out.csv", None])  # fine
    cases = [
        ([table], [table], "is also an input"),
        ([table], [tmp_path / "." / "in.csv"], "is also an input"),
        ([table], [link], "is also an input"),  # a hard link is the same file
        ([dicom], [dicom / "x.nii.gz"], "inside the input folder"),
        ([table], [dicom], "is a folder"),
        ([table], [tmp_path / "a.csv", tmp_path / "a.csv"], "given for two outputs"),
    ]
    for ins, outs, message in cases:
        with pytest.raises(OutputError, match=message):
            check_outputs(ins, outs)


def test_os_errors_become_output_errors_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    import errno

    from imharmony.errors import OutputError

    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(OutputError, match="is a folder"), atomic_path(folder) as tmp:
        tmp.write_text("x")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="the disk is full"), atomic_path(tmp_path / "a") as tmp:
        tmp.write_text("x")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_temporaries_of_dead_writers_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    target = tmp_path / "table.csv"
    # a writer killed mid-write leaves its temporary (named with its pid) behind
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".table.csv.{dead.stdout.strip()}.abc123.part.csv"
    stale.write_text("half")
    live = tmp_path / f".table.csv.{os.getpid()}.xyz.part.csv"  # a live writer's: kept
    live.write_text("busy")
    other = tmp_path / ".other.csv.1.abc.part.csv"  # another target's: not ours to judge
    other.write_text("x")
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name,
                                                                 other.name])
