"""How many threads imharmony's own parallel work may use: one policy for every module.

CPU-bound loops (ComBat's empirical Bayes, Gaussian transforms, sorting a reference) use
:func:`cpu_threads`: the CPUs this process may run on, capped by the thread limits the user set
for the numerical libraries (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or a threadpoolctl
context) and by ``IMHARMONY_NUM_THREADS``. A process restricted to one BLAS thread therefore runs
imharmony's own loops on one thread too. Waiting on files (reading many DICOM slices) is not
CPU-bound: :func:`io_threads` allows twice as many, at most 8.
"""

from __future__ import annotations

import logging
import os

__all__ = ["ENV_VAR", "cpu_threads", "io_threads"]

logger = logging.getLogger(__name__)

#: Environment variable capping imharmony's own threads (a positive integer).
ENV_VAR = "IMHARMONY_NUM_THREADS"


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _env_limit() -> int | None:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        logger.warning("%s=%r is not a positive integer; ignoring it.", ENV_VAR, text)
        return None
    return value


def _numerical_library_limit() -> int | None:
    try:
        from threadpoolctl import threadpool_info

        counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("num_threads")]
    except Exception:  # pragma: no cover - threadpoolctl missing or unreadable
        return None
    return min(counts) if counts else None


def cpu_threads() -> int:
    """Threads for CPU-bound work: available CPUs, capped by the BLAS/OpenMP limits in force and
    by ``IMHARMONY_NUM_THREADS``; at least 1."""
    limits = [_available_cpus()]
    for limit in (_numerical_library_limit(), _env_limit()):
        if limit is not None:
            limits.append(limit)
    return max(1, min(limits))


def io_threads() -> int:
    """Threads for work that waits on files: twice :func:`cpu_threads`, at most 8."""
    return max(1, min(8, 2 * cpu_threads()))
