"""One size guard for allocations whose size comes from outside (a header, a spacing, a model).

An image header declaring 10^12 voxels, or a resampling to a 0.001 mm voxel size, must be refused
with the reason before numpy tries (and dies with MemoryError, or the machine swaps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from .errors import DataError

__all__ = ["check_allocation", "memory_limit"]


def memory_limit() -> int:
    """Bytes one array may take: this machine's physical memory (64 GiB when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 64 * 2**30


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_allocation(shape: Iterable[int], itemsize: int, what: str, fix: str) -> int:
    """Refuse an array of ``shape`` x ``itemsize`` bytes larger than :func:`memory_limit`.

    Parameters
    ----------
    shape : iterable of int
        The array's shape as declared (negative sizes are refused too).
    itemsize : int
        Bytes per element.
    what : str
        What is being allocated, for the message (e.g. ``"scan.nii: the header's 4000^3 voxels"``).
    fix : str
        What the user can do.

    Returns
    -------
    int
        The number of bytes.

    Raises
    ------
    DataError
        If a size is negative, or the array would not fit in memory.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise DataError(f"{what}: negative size {dims}; {fix}")
    n_bytes = math.prod(dims) * int(itemsize)
    limit = memory_limit()
    if n_bytes > limit:
        raise DataError(
            f"{what} would need {_gb(n_bytes)} ({'x'.join(map(str, dims))} voxels), more than "
            f"this machine's memory ({_gb(limit)}); {fix}"
        )
    return n_bytes
