"""Write files atomically: to a temporary name beside the target, renamed when complete.

Temporary names are ``.<target name>.<pid>.<random>.part<suffix>``: a failure removes the
temporary at once, and temporaries left by a killed process (whose pid no longer runs) are swept
the next time anything is written to the same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import HarmonizationError, OutputError

__all__ = ["atomic_path", "check_outputs", "sweep_stale", "temporary_path"]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: someone else's live process
        return True
    return True


def sweep_stale(target: str | os.PathLike[str]) -> int:
    """Remove temporaries of ``target`` left behind by processes that no longer run.

    Returns the number removed. Temporaries of live writers (this process included) are kept.
    """
    target = Path(target)
    pattern = re.compile(re.escape(f".{target.name}.") + r"(\d+)\.[^/]*\.part.*")
    removed = 0
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed


def _key(path: Path) -> Any:
    """Identity of a file: (device, inode) when it exists (links included), else its path."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return str(path.resolve())


def check_outputs(
    inputs: Iterable[str | os.PathLike[str] | None],
    outputs: Iterable[str | os.PathLike[str] | None],
) -> None:
    """Refuse outputs that would destroy an input or each other: THE rule for every command.

    An output is refused when it is an input file (also through a link), when it lies inside an
    input folder being read (a DICOM folder, a scanned folder), when it is an existing folder,
    or when two outputs are the same file. ``None`` entries are ignored.

    Raises
    ------
    OutputError
        Naming the output, the input, and what to do.
    """
    known: dict[Any, Path] = {}
    folders: list[tuple[Path, Path]] = []
    for p in inputs:
        if p is None or str(p) == "":
            continue
        src = Path(p)
        known[_key(src)] = src
        if src.is_dir():
            folders.append((src, src.resolve()))
    written: dict[Any, Path] = {}
    for p in outputs:
        if p is None or str(p) == "":
            continue
        out = Path(p)
        if out.is_dir():
            raise OutputError(f"{out}: is a folder; give a file name for the output.")
        key = _key(out)
        if key in known:
            raise OutputError(
                f"{out}: is also an input ({known[key]}); writing it would destroy the input. "
                "Choose another output path."
            )
        if folders:
            where = out.resolve()
            for src, resolved in folders:
                if where.is_relative_to(resolved):
                    raise OutputError(
                        f"{out}: lies inside the input folder {src}, which is being read; write "
                        "the output elsewhere."
                    )
        if key in written:
            raise OutputError(
                f"{out}: given for two outputs ({written[key]}); each output needs its own path."
            )
        written[key] = out


def _explain(target: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable"
    elif exc.errno == errno.EISDIR or target.is_dir():
        why = "it is a folder; give a file name"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        why = "a part of the path is a file, not a folder"
    else:
        why = exc.strerror or str(exc)
    return OutputError(f"{target}: cannot write the output ({why}); choose another location.")


@contextlib.contextmanager
def temporary_path(target: str | os.PathLike[str], *, folder: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary file (or folder) beside ``target``; removed if the body raises.

    The caller moves it into place. Stale temporaries of ``target`` are swept first. OS errors
    while creating it (read-only folder, disk full, target is a folder) become
    :class:`OutputError` naming the target.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give a file name for the output.")
    suffix = "".join(target.suffixes) or ".tmp"
    prefix = f".{target.name}.{os.getpid()}."
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target)
        if folder:
            tmp_path = Path(tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=target.parent))
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".part{suffix}", dir=target.parent)
            os.close(fd)
            tmp_path = Path(tmp)
    except OSError as exc:
        raise _explain(target, exc) from exc
    try:
        yield tmp_path
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if tmp_path.is_dir() and not tmp_path.is_symlink():
                shutil.rmtree(tmp_path)
            else:
                tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, HarmonizationError):
            raise _explain(target, exc) from exc
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    If the body raises, the temporary file is removed and ``target`` is left untouched, so a
    reader never sees a half-written output. The suffix of ``target`` is kept (some writers choose
    the format from it, e.g. ``.nii.gz``). The finished file gets the permissions of the file it
    replaces, or those of an ordinary new file (0666 minus the umask) — not the private mode of
    the temporary. OS errors (read-only folder, full disk, target is a folder) raise
    :class:`OutputError` with the reason.
    """
    target = Path(target)
    with temporary_path(target) as tmp_path:
        yield tmp_path
        if tmp_path.exists():  # a writer may replace the temporary itself
            tmp_path.chmod(_final_mode(target))
        os.replace(tmp_path, target)


def _final_mode(target: Path) -> int:
    if target.is_file():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
