"""Per-site covariance distance: hand-checked values and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from imharmony.diagnostics.covariance import covariance_distance
from imharmony.errors import DesignError


def _direct(X: np.ndarray, site: np.ndarray) -> np.ndarray:
    """The definition, with explicit p x p matrices."""
    levels = np.unique(site)
    A = X.astype(float).copy()
    for s in levels:
        A[site == s] -= A[site == s].mean(axis=0)
    n, J = len(X), len(levels)
    A /= np.sqrt((A**2).sum(axis=0) / (n - J))
    covs = [np.cov(A[site == s], rowvar=False) for s in levels]
    pooled = sum((np.sum(site == s) - 1) * c for s, c in zip(levels, covs, strict=True)) / (n - J)
    return np.array([np.linalg.norm(c - pooled) / np.linalg.norm(pooled) for c in covs])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 7))
def test_matches_the_definition(seed: int, p: int) -> None:
    rng = np.random.default_rng(seed)
    site = np.repeat(["a", "b", "c"], [5, 9, 7])
    X = rng.normal(size=(site.size, p)) * rng.uniform(0.1, 10, p)
    res = covariance_distance(X, site)
    np.testing.assert_allclose(res.table["distance"].to_numpy(), _direct(X, site), rtol=1e-10)
    # invariant to feature units and to per-site shifts
    shifted = X * rng.uniform(1, 100, p) + np.where(site == "a", 5.0, -3.0)[:, None]
    np.testing.assert_allclose(covariance_distance(shifted, site).mean, res.mean, rtol=1e-9)


def test_zero_when_sites_share_the_covariance_and_large_when_not() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(30, 4))
    same = np.vstack([block, block + 10])
    site = np.repeat(["a", "b"], 30)
    assert covariance_distance(same, site).mean == pytest.approx(0.0, abs=1e-12)
    mixed = np.vstack([block, block @ np.diag([3.0, 1.0, 1.0, 0.2])])
    assert covariance_distance(mixed, site).mean > 0.5
    assert list(ih.diagnostics.covariance_distance(mixed, site).table.index) == ["a", "b"]


def test_single_sample_site_is_refused() -> None:
    with pytest.raises(DesignError, match="'b'"):
        covariance_distance(np.ones((4, 2)), ["a", "a", "a", "b"])


def test_diagnose_reports_it_before_and_after() -> None:
    rng = np.random.default_rng(1)
    site = np.repeat(["a", "b", "c"], 40)
    load = rng.normal(size=(2, 6))
    scales = np.repeat([[3.0, 0.3], [0.3, 3.0], [1.0, 1.0]], 40, axis=0)
    X = (rng.normal(size=(120, 2)) * scales) @ load + rng.normal(size=(120, 6))
    after = ih.CovBat(n_components=2).fit_transform(X, batch=site)
    d = ih.diagnose(X, after, batch=site, n_permutations=0, n_splits=2)
    row = d.multivariate.loc["covariance_distance"]
    assert row["before"] == pytest.approx(covariance_distance(X, site).mean)
    assert row["after"] == pytest.approx(covariance_distance(after, site).mean)
    assert row["after"] < row["before"]
    from imharmony.report.html import _multivariate_table

    assert "site covariance distance from the pooled covariance" in str(_multivariate_table(d))
