"""Where Dask work runs: an existing ``dask.distributed`` cluster, or a local one for this machine.

One rule for every command that takes ``--scheduler``: with an address, connect to that
scheduler (its workers are other processes, possibly other machines that see the same
filesystem); without one, start a local cluster of one worker with as many threads as
:func:`imharmony._threads.cpu_threads` allows, inside this process, so nothing is copied between
processes and the memory limit holds for the whole job. The worker's threads are the
parallelism: BLAS runs one thread per task (``dask worker`` sets the same for its processes).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from ..errors import HarmonizationError

__all__ = ["ClusterError", "dask_client", "parse_memory", "release_memory"]

logger = logging.getLogger(__name__)

_ADDRESS = re.compile(r"^(tcp|tls|inproc|ws|wss|ucx)://[^\s/]+$")


class ClusterError(HarmonizationError):
    """The Dask scheduler given with ``--scheduler`` is malformed or cannot be reached."""


def parse_memory(text: str | int | None) -> int | None:
    """Bytes of a size such as ``"2GiB"``, ``"512MB"`` or ``1073741824`` (None stays None)."""
    if text is None:
        return None
    from dask.utils import parse_bytes

    try:
        value = int(parse_bytes(text))
    except (ValueError, TypeError) as exc:
        raise HarmonizationError(
            f"--memory-limit: {text!r} is not a size; give e.g. 2GiB, 512MB or a number of bytes."
        ) from exc
    if value <= 0:
        raise HarmonizationError(f"--memory-limit: {text!r} must be positive.")
    return value


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, memory_limit: int | None = None,
                timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` for the duration of the block (closed afterwards).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, ``tcp://HOST:PORT``. None starts a local cluster.
    memory_limit : int, optional
        Bytes the local worker may hold before Dask spills or pauses (ignored with
        ``scheduler``: a cluster's workers have their own limits).
    timeout : float
        Seconds to wait for the scheduler.

    Raises
    ------
    ClusterError
        When the address is malformed or no scheduler answers there.
    """
    from distributed import Client, LocalCluster

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its start-up chatter is not the user's business
    try:
        with _client(scheduler, memory_limit, timeout, Client, LocalCluster) as client:
            yield client
    finally:
        quiet.setLevel(level)


@contextlib.contextmanager
def _client(scheduler: str | None, memory_limit: int | None, timeout: float, Client: Any,
            LocalCluster: Any) -> Iterator[Any]:
    if scheduler is not None:
        if not _ADDRESS.match(scheduler):
            raise ClusterError(
                f"--scheduler: {scheduler!r} is not a scheduler address; give tcp://HOST:PORT "
                "(what `dask scheduler` prints), or omit it to run on this machine."
            )
        try:
            client = Client(scheduler, timeout=f"{timeout}s", set_as_default=True)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"--scheduler: no Dask scheduler answers at {scheduler} ({exc}); start one with "
                "`dask scheduler` and workers with `dask worker ADDRESS`, or omit --scheduler."
            ) from None
        logger.info("Dask: scheduler %s, %d worker(s)", scheduler,
                    len(client.scheduler_info().get("workers", {})))
        with client:
            yield client
        return
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, so that the limit below reaches it)
    from threadpoolctl import threadpool_limits

    from .._threads import cpu_threads

    threads = cpu_threads()
    # the worker's threads are the parallelism: a BLAS call inside a task runs on one thread
    # (several threads per call on small blocks cost far more than they gain: 10x on a
    # least-squares solve of a few thousand voxels)
    limits = threadpool_limits(limits=1, user_api="blas")
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=threads, processes=False,
        memory_limit=memory_limit if memory_limit is not None else "auto",
        dashboard_address=":0",  # a free port: never collides with another cluster
    )
    logger.info("Dask: local cluster, 1 worker x %d thread(s)", threads)
    with limits, cluster, Client(cluster, set_as_default=True) as client:
        yield client


def release_memory() -> None:
    """Give the memory freed by this process's finished step back to the system (glibc's
    ``malloc_trim``; a no-op elsewhere). The local worker runs in this process: between steps,
    freed blocks would otherwise stay resident, and the limit on summed memory counts them. (A
    Dask nanny sets ``MALLOC_TRIM_THRESHOLD_`` for its worker processes instead, which makes
    every large allocation page-fault anew: measured 1.7x slower here.)"""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return
