"""ComBat on Dask arrays gives the in-memory numbers (imharmony.scale.combat)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from imharmony.errors import ConvergenceWarning, DataError

ESTIMATES = ("grand_mean", "var_pooled", "beta", "gamma_hat", "delta_hat", "gamma_star",
             "delta_star", "gamma_bar", "tau2", "a_prior", "b_prior")


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads", num_workers=2):
        yield


def make(seed: int = 0, n: int = 45, G: int = 300, nan: bool = True):
    rng = np.random.default_rng(seed)
    site = np.repeat(["a", "b", "c"], n // 3)
    age = rng.uniform(20, 80, n)
    X = rng.normal(size=(n, G)) * rng.uniform(0.5, 2.0, G) + 0.03 * age[:, None]
    X[site == "b"] += rng.normal(1.0, 0.3, G)
    X[site == "c"] *= 1.6
    if nan:
        X[3, 7] = np.nan
        X[10:14, 100] = np.nan
    return X, site, pd.DataFrame({"age": age})


def assert_same_fit(mem, dsk) -> None:
    for key in ESTIMATES:
        a, b = getattr(mem.fit_, key), getattr(dsk.fit_, key)
        if key in ("a_prior", "b_prior") and mem.reference_index_ is not None:
            # the reference batch's prior is never used (and ill-conditioned): skip it
            a, b = np.delete(a, mem.reference_index_), np.delete(b, mem.reference_index_)
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13, err_msg=key)
    np.testing.assert_array_equal(dsk.fit_.n_iter, mem.fit_.n_iter)
    np.testing.assert_array_equal(dsk.fit_.adjusted, mem.fit_.adjusted)
    assert dsk.fit_.reasons == mem.fit_.reasons


@pytest.mark.parametrize(
    "params",
    [{}, {"mean_only": True}, {"eb": False}, {"reference_batch": "b"}, {"nonparametric": True}],
    ids=["parametric", "mean-only", "no-eb", "reference", "nonparametric"],
)
def test_dask_fit_and_transform_match_numpy(params) -> None:
    X, site, cov = make()
    mem = ih.ComBat(**params).fit(X, batch=site, covariates=cov)
    dsk = ih.ComBat(**params).fit(da.from_array(X, chunks=(20, 64)), batch=site, covariates=cov)
    assert_same_fit(mem, dsk)
    assert mem.fit_.n_iter.max() > 1 or params  # the parametric case really iterates
    out = dsk.transform(da.from_array(X, chunks=(45, 50)), batch=site, covariates=cov)
    assert isinstance(out, da.Array)
    assert out.chunks[1] == da.from_array(X, chunks=(45, 50)).chunks[1]
    expected = mem.transform(X, batch=site, covariates=cov)
    np.testing.assert_allclose(out.compute(), expected, rtol=1e-10, atol=1e-12)
    assert np.isnan(out[3, 7].compute())


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(1, 120))
def test_any_chunking_gives_the_same_estimates(seed: int, width: int) -> None:
    X, site, _ = make(seed=seed, n=30, G=90, nan=False)
    mem = ih.ComBat().fit(X, batch=site)
    dsk = ih.ComBat().fit(da.from_array(X, chunks=(30, width)), batch=site)
    assert_same_fit(mem, dsk)


def test_fitted_on_dask_saves_and_applies_to_numpy(tmp_path) -> None:
    X, site, cov = make(nan=False)
    dsk = ih.ComBat().fit(da.from_array(X, chunks=(45, 100)), batch=site, covariates=cov)
    dsk.save(tmp_path / "m.json")
    loaded = ih.ComBat.load(tmp_path / "m.json")
    np.testing.assert_allclose(
        loaded.transform(X, batch=site, covariates=cov),
        ih.ComBat().fit_transform(X, batch=site, covariates=cov),
        rtol=1e-10,
    )


def test_infinite_value_in_a_block_names_the_column() -> None:
    X, site, _ = make(nan=False)
    X[5, 201] = np.inf
    with pytest.raises(DataError, match=r"\[201\].*infinite"):
        ih.ComBat().fit(da.from_array(X, chunks=(45, 100)), batch=site)


def _slow_to_converge():
    rng = np.random.default_rng(3)
    site = np.repeat(["a", "b"], 20)
    X = rng.normal(size=(40, 200))
    X[site == "b"] = X[site == "b"] * rng.uniform(0.2, 5, 200) + rng.normal(0, 3, 200)
    return X, site


def test_more_iterations_than_the_first_trace_horizon() -> None:
    X, site = _slow_to_converge()
    mem = ih.ComBat(tol=1e-15).fit(X, batch=site)
    assert mem.fit_.n_iter.max() > 16  # past imharmony.scale.combat._HORIZON
    dsk = ih.ComBat(tol=1e-15).fit(da.from_array(X, chunks=(40, 33)), batch=site)
    assert_same_fit(mem, dsk)


def test_iteration_cap_warns_and_matches() -> None:
    X, site = _slow_to_converge()
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        mem = ih.ComBat(tol=1e-15, max_iter=5).fit(X, batch=site)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        dsk = ih.ComBat(tol=1e-15, max_iter=5).fit(da.from_array(X, chunks=(40, 33)), batch=site)
    assert_same_fit(mem, dsk)
    assert not dsk.fit_.converged.any()


def test_a_zarr_store_on_disk_is_harmonized_out_of_core_into_another(tmp_path) -> None:
    # the out-of-core use: features stored on disk in Zarr (chunked over features), read lazily,
    # harmonized block by block and written back to Zarr without the matrix in memory
    X, site, cov = make(seed=3, G=200)
    da.from_array(X, chunks=(len(X), 50)).to_zarr(str(tmp_path / "features.zarr"))
    lazy = da.from_zarr(str(tmp_path / "features.zarr"))
    model = ih.ComBat().fit(lazy, batch=site, covariates=cov)
    model.transform(lazy, batch=site, covariates=cov).to_zarr(str(tmp_path / "harmonized.zarr"))
    mem = ih.ComBat().fit(X, batch=site, covariates=cov)
    assert_same_fit(mem, model)
    np.testing.assert_allclose(da.from_zarr(str(tmp_path / "harmonized.zarr")).compute(),
                               mem.transform(X, batch=site, covariates=cov),
                               rtol=1e-10, atol=1e-12, equal_nan=True)
