"""The folder walk every DICOM reader uses: which files under a path are looked at."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import DataError

__all__ = ["walk_files"]


def walk_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    what: str = "a DICOM series folder",
    error: type[DataError] = DataError,
) -> list[tuple[Path, str]]:
    """Files under ``paths`` with their display names, in a stable order.

    Folders are walked recursively without following symbolic links to folders; names that start
    with a dot are ignored; a file given twice is listed once. The display name is the path
    relative to the folder given (the file name for a file given directly).

    Parameters
    ----------
    paths : path or iterable of paths
        Files and folders.
    what : str
        What the caller expects, for the message when a path does not exist.
    error : type
        The exception raised for a missing path.

    Returns
    -------
    list of (pathlib.Path, str)

    Raises
    ------
    DataError
        (or ``error``) if a path is neither a file nor a folder.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def add(p: Path, name: str) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            files.append((p, name))

    for raw in paths:
        source = Path(raw)
        if source.is_file():
            add(source, source.name)
        elif source.is_dir():
            for root, dirs, names in os.walk(source, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    if n.startswith("."):
                        continue
                    p = Path(root) / n
                    if p.is_file():
                        add(p, str(p.relative_to(source)))
        else:
            raise error(f"{source}: no such file or folder; give {what}.")
    return files
