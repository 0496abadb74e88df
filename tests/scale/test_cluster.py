"""The one rule for where Dask work runs (imharmony.scale.cluster)."""

from __future__ import annotations

import pytest

from imharmony.errors import HarmonizationError
from imharmony.scale.cluster import ClusterError, dask_client, parse_memory


def test_memory_sizes_parse_like_dask() -> None:
    assert parse_memory("2GiB") == 2 * 2**30
    assert parse_memory("512MB") == 512 * 10**6
    assert parse_memory(None) is None
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(HarmonizationError, match="--memory-limit"):
            parse_memory(bad)


def test_malformed_address_is_refused_before_connecting() -> None:
    with pytest.raises(ClusterError, match="tcp://HOST:PORT"), dask_client("localhost:8786"):
        pass


def test_local_cluster_runs_in_this_process() -> None:
    import dask.array as da

    with dask_client(memory_limit=2**30) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 1
        assert next(iter(workers.values()))["memory_limit"] == 2**30
        assert float(da.arange(10, chunks=3).sum().compute()) == 45.0
