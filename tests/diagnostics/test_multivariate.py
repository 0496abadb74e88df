"""Multivariate site measures: PCA silhouette, guided PCA, cross-validated site prediction."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.cohorts import shifted_sites
from imharmony.diagnostics import guided_pca, pca_silhouette, site_prediction
from imharmony.errors import DesignError


def test_guided_pca_hand_computed():
    # Centred 4 x 2 data; feature 1 has variance 4, feature 2 variance 1 (population).
    X = np.array([[2.0, 1], [2, -1], [-2, 1], [-2, -1]])
    # sites split along feature 1: guided direction = first PC -> delta = 1
    assert guided_pca(X, ["a", "a", "b", "b"], n_permutations=0).delta == pytest.approx(1.0)
    # sites split along feature 2: Var(X e2) / Var(X e1) = 1 / 4
    res = guided_pca(X, ["a", "b", "a", "b"], n_permutations=0)
    assert res.delta == pytest.approx(0.25)
    assert np.isnan(res.p_value)


def test_guided_pca_permutation_p_value():
    X, site, _ = shifted_sites(shift=3.0)
    res = guided_pca(X, site, n_permutations=99, random_state=0)
    assert res.delta > 0.9
    assert res.p_value == pytest.approx(1 / 100)  # no shuffle reaches the observed delta
    again = guided_pca(X, site, n_permutations=99, random_state=0)
    assert again == res
    rng = np.random.default_rng(1)
    null = guided_pca(rng.normal(size=(90, 6)), site, n_permutations=99, random_state=0)
    assert null.p_value > 0.05


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4))
def test_guided_pca_delta_at_most_one(seed, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(5 * k, 4)) * rng.uniform(0.1, 3, 4)
    res = guided_pca(X, np.repeat(np.arange(k), 5), n_permutations=0)
    assert 0 < res.delta <= 1 + 1e-12


def test_silhouette_matches_independent_pipeline():
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    X, site, codes = shifted_sites()
    means = np.stack([X[codes == g].mean(axis=0) for g in range(3)])
    after = X - means[codes]  # sites centred: no more clusters
    sil_b, sil_a = pca_silhouette(X, site, after, n_components=3)
    scaler = StandardScaler().fit(X)
    pca = PCA(n_components=3, svd_solver="full").fit(scaler.transform(X))
    ref_b = silhouette_score(pca.transform(scaler.transform(X)), codes)
    ref_a = silhouette_score(pca.transform(scaler.transform(after)), codes)
    assert sil_b == pytest.approx(ref_b, rel=1e-9)
    assert sil_a == pytest.approx(ref_a, rel=1e-9)
    assert sil_b > 0.2
    assert abs(sil_a) < 0.1 < sil_b
    same_b, same_a = pca_silhouette(X, site, X)
    assert same_a == pytest.approx(same_b)
    assert pca_silhouette(X, site)[1] is None


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.permutations(["a", "b", "c"]))
def test_silhouette_symmetric_in_labels_and_sample_order(seed, names):
    X, site, codes = shifted_sites(seed=seed, n_per=10, shift=1.0)
    renamed = np.array(names)[codes]
    order = np.random.default_rng(seed).permutation(site.size)
    base = pca_silhouette(X, site)[0]
    assert pca_silhouette(X, renamed)[0] == pytest.approx(base, abs=1e-12)
    assert pca_silhouette(X[order], site[order])[0] == pytest.approx(base, abs=1e-12)


class _CentreEachSite:
    """Toy harmonizer: subtracts each site's training mean; records what it was fitted on."""

    fitted_sizes: ClassVar[list[int]] = []

    def fit(self, X, batch):
        X = np.asarray(X)
        self.means_ = {b: X[batch == b].mean(axis=0) for b in np.unique(batch)}
        _CentreEachSite.fitted_sizes.append(X.shape[0])
        return self

    def transform(self, X, batch):
        X = np.asarray(X, dtype=float).copy()
        for b, m in self.means_.items():
            X[batch == b] -= m
        return X


def test_site_prediction_chance_and_harmonizer_inside_folds():
    X, site, _ = shifted_sites(n_per=40, shift=2.0)
    raw = site_prediction(X, site, random_state=0)
    assert raw.chance == pytest.approx(1 / 3)
    assert raw.balanced_accuracy > 0.95
    assert len(raw.fold_scores) == 5
    _CentreEachSite.fitted_sizes = []
    harm = site_prediction(X, site, harmonizer=_CentreEachSite, random_state=0)
    assert harm.balanced_accuracy < raw.chance + 0.15
    assert _CentreEachSite.fitted_sizes == [96] * 5  # fitted on the 4/5 training folds only


def test_site_prediction_adjusts_for_population_differences_in_folds():
    rng = np.random.default_rng(4)
    codes = np.repeat(np.arange(3), 60)
    site = np.array(["a", "b", "c"])[codes]
    dx = (rng.random(180) < np.array([0.1, 0.5, 0.9])[codes]).astype(int)
    X = rng.normal(size=(180, 5)) + 2.0 * dx[:, None]  # no site effect, only biology
    naive = site_prediction(X, site, random_state=0)
    adjusted = site_prediction(X, site, adjust_for=pd.DataFrame({"dx": dx.astype(str)}),
                               random_state=0)
    assert naive.balanced_accuracy > 0.5
    assert adjusted.balanced_accuracy < 1 / 3 + 0.15


def test_site_prediction_errors():
    X, site, _ = shifted_sites(n_per=3)
    with pytest.raises(DesignError, match="at least 5 samples per site"):
        site_prediction(X, site)
    with pytest.raises(DesignError, match="harmonizer"):
        site_prediction(X, site, n_splits=3, harmonizer=42)
