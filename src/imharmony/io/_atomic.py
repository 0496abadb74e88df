"""Write files atomically: to a temporary name beside the target, renamed when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    If the body raises, the temporary file is removed and ``target`` is left untouched, so a
    reader never sees a half-written output. The suffix of ``target`` is kept (some writers choose
    the format from it, e.g. ``.nii.gz``). The finished file gets the permissions of the file it
    replaces, or those of an ordinary new file (0666 minus the umask) — not the private mode of
    the temporary.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # a writer may replace the temporary itself
            tmp_path.chmod(_final_mode(target))
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _final_mode(target: Path) -> int:
    if target.is_file():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
