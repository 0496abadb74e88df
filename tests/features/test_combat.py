"""ComBat: the numbers, checked against hand-derived formulas and mathematical properties."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from _support.cohorts import combat_sites
from imharmony.errors import ConvergenceWarning, HarmonizationWarning
from imharmony.features import combat as core

# ---------------------------------------------------------------- closed forms (no EB)


def test_no_eb_is_per_site_standardization_to_pooled_moments() -> None:
    X, batch, _ = combat_sites()
    out = ih.ComBat(eb=False).fit_transform(X, batch=batch)
    n = X.shape[0]
    sites = np.unique(batch)
    means = {s: X[batch == s].mean(axis=0) for s in sites}
    sds = {s: X[batch == s].std(axis=0, ddof=1) for s in sites}
    grand = X.mean(axis=0)  # batch means weighted by n_j / n
    resid = X - np.stack([means[s] for s in batch])
    pooled_sd = np.sqrt((resid**2).sum(axis=0) / n)  # R: divide by n
    expected = np.empty_like(X)
    for s in sites:
        r = batch == s
        expected[r] = (X[r] - means[s]) / sds[s] * pooled_sd + grand
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # every site now has the same mean and the same (n-1) standard deviation
    for s in sites:
        np.testing.assert_allclose(out[batch == s].mean(axis=0), grand, rtol=1e-12)
        np.testing.assert_allclose(out[batch == s].std(axis=0, ddof=1), pooled_sd, rtol=1e-12)


def test_mean_only_no_eb_shifts_each_site_to_the_grand_mean() -> None:
    X, batch, _ = combat_sites(seed=3)
    out = ih.ComBat(eb=False, mean_only=True).fit_transform(X, batch=batch)
    expected = X.copy()
    for s in np.unique(batch):
        r = batch == s
        expected[r] += X.mean(axis=0) - X[r].mean(axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-10)


def test_reference_batch_no_eb_maps_sites_onto_the_reference() -> None:
    X, batch, _ = combat_sites(seed=4)
    out = ih.ComBat(eb=False, reference_batch="s1").fit_transform(X, batch=batch)
    ref = batch == "s1"
    np.testing.assert_array_equal(out[ref], X[ref])  # returned exactly as given
    mu_ref = X[ref].mean(axis=0)
    sd_ref = np.sqrt(((X[ref] - mu_ref) ** 2).mean(axis=0))  # R: reference variance over n_ref
    for s in ("s0", "s2"):
        r = batch == s
        expected = (X[r] - X[r].mean(axis=0)) / X[r].std(axis=0, ddof=1) * sd_ref + mu_ref
        np.testing.assert_allclose(out[r], expected, rtol=1e-12)


def test_covariate_effect_is_preserved_no_eb_mean_only() -> None:
    # x = site shift + 2 * age exactly: removing the site shift must leave 2 * age + common mean.
    rng = np.random.default_rng(7)
    batch = np.repeat(["a", "b", "c"], [10, 15, 20])
    age = rng.uniform(20, 80, batch.size)
    shift = {"a": 0.0, "b": 5.0, "c": -3.0}
    X = np.column_stack([2.0 * age + np.array([shift[b] for b in batch]) + k for k in range(3)])
    X += rng.normal(0, 1e-3, X.shape)
    out = ih.ComBat(eb=False, mean_only=True).fit_transform(
        X, batch=batch, covariates=pd.DataFrame({"age": age})
    )
    for k in range(3):
        slope = np.polyfit(age, out[:, k], 1)[0]
        assert slope == pytest.approx(2.0, abs=1e-3)
        res = out[:, k] - 2.0 * age
        site_means = [res[batch == s].mean() for s in "abc"]
        assert np.ptp(site_means) < 1e-3


# ---------------------------------------------------------------- EB against literal formulas


def _standardized(X: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n = X.shape[0]
    means = {s: X[batch == s].mean(axis=0) for s in np.unique(batch)}
    resid = X - np.stack([means[s] for s in batch])
    sd = np.sqrt((resid**2).sum(axis=0) / n)
    return (X - X.mean(axis=0)) / sd, means


def test_parametric_eb_matches_the_literal_fixed_point() -> None:
    X, batch, _ = combat_sites(seed=11)
    model = ih.ComBat().fit(X, batch=batch)
    S, _ = _standardized(X, batch)
    for j, site in enumerate(model.batches_):
        s = S[batch == site]
        n = s.shape[0]
        g_hat = s.mean(axis=0)
        d_hat = s.var(axis=0, ddof=1)
        g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
        m, v = d_hat.mean(), d_hat.var(ddof=1)
        a, b = (2 * v + m**2) / v, (m * v + m**3) / v
        g, d = g_hat.copy(), d_hat.copy()
        for _ in range(10_000):  # literal per-sample sums, no sufficient statistics
            g_new = (t2 * n * g_hat + d * g_bar) / (t2 * n + d)
            d_new = (0.5 * ((s - g_new) ** 2).sum(axis=0) + b) / (n / 2 + a - 1)
            change = max(np.max(np.abs(g_new - g) / g), np.max(np.abs(d_new - d) / d))
            g, d = g_new, d_new
            if change <= 1e-4:
                break
        np.testing.assert_allclose(model.fit_.gamma_star[j], g, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(model.fit_.delta_star[j], d, rtol=1e-12)


def test_nonparametric_eb_matches_the_literal_likelihood_average() -> None:
    X, batch, _ = combat_sites(n_per_site=(6, 9), n_features=30, seed=5)
    model = ih.ComBat(nonparametric=True).fit(X, batch=batch)
    S, _ = _standardized(X, batch)
    for j, site in enumerate(model.batches_):
        s = S[batch == site]
        n = s.shape[0]
        g_hat = s.mean(axis=0)
        d_hat = s.var(axis=0, ddof=1)
        for g in range(X.shape[1]):
            others = np.arange(X.shape[1]) != g
            sum2 = ((s[:, g][None, :] - g_hat[others][:, None]) ** 2).sum(axis=1)
            lh = (2 * np.pi * d_hat[others]) ** (-n / 2) * np.exp(-sum2 / (2 * d_hat[others]))
            assert lh.max() > 1e-250  # the literal product is in normal range here
            assert model.fit_.gamma_star[j, g] == pytest.approx(
                (g_hat[others] * lh).sum() / lh.sum(), rel=1e-10
            )
            assert model.fit_.delta_star[j, g] == pytest.approx(
                (d_hat[others] * lh).sum() / lh.sum(), rel=1e-10
            )


def test_nonparametric_does_not_underflow_on_large_batches() -> None:
    # 400 samples per site: the literal likelihood product underflows to 0 (R returns NaN).
    X, batch, _ = combat_sites(n_per_site=(400, 400), n_features=40, seed=2)
    out = ih.ComBat(nonparametric=True).fit_transform(X, batch=batch)
    assert np.isfinite(out).all()


def test_mean_only_parametric_uses_unit_variance_posterior() -> None:
    X, batch, _ = combat_sites(seed=12)
    model = ih.ComBat(mean_only=True).fit(X, batch=batch)
    g_hat = model.fit_.gamma_hat
    t2 = g_hat.var(axis=1, ddof=1)[:, None]
    g_bar = g_hat.mean(axis=1)[:, None]
    np.testing.assert_allclose(model.fit_.gamma_star, (t2 * g_hat + g_bar) / (t2 + 1), rtol=1e-13)
    np.testing.assert_array_equal(model.fit_.delta_star, 1.0)


# ---------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-1e4, 1e4),
    method=st.sampled_from(["parametric", "nonparametric", "none"]),
)
def test_affine_equivariance(seed: int, scale: float, offset: float, method: str) -> None:
    """ComBat works on standardized data: a positive affine change of units commutes with it."""
    X, batch, _ = combat_sites(n_per_site=(8, 11, 9), n_features=12, seed=seed)
    kw = {"eb": method != "none", "nonparametric": method == "nonparametric"}
    out = ih.ComBat(**kw).fit_transform(X, batch=batch)
    out2 = ih.ComBat(**kw).fit_transform(scale * X + offset, batch=batch)
    np.testing.assert_allclose(out2, scale * out + offset, rtol=1e-8, atol=1e-8 * (abs(offset) + 1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), nonparametric=st.booleans())
def test_sample_feature_and_label_permutations(seed: int, nonparametric: bool) -> None:
    X, batch, _ = combat_sites(n_per_site=(7, 10, 8), n_features=9, seed=seed)
    rng = np.random.default_rng(seed)
    out = ih.ComBat(nonparametric=nonparametric).fit_transform(X, batch=batch)
    rows = rng.permutation(X.shape[0])
    cols = rng.permutation(X.shape[1])
    renamed = np.array([{"s0": "z", "s1": "a", "s2": "m"}[b] for b in batch])
    out_p = ih.ComBat(nonparametric=nonparametric).fit_transform(
        X[rows][:, cols], batch=renamed[rows]
    )
    np.testing.assert_allclose(out_p, out[rows][:, cols], rtol=1e-9, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_block_size_does_not_change_results(seed: int) -> None:
    X, batch, age = combat_sites(n_per_site=(9, 13, 6), n_features=17, seed=seed, covariate=True)
    cov = pd.DataFrame({"age": age})
    expected = ih.ComBat().fit_transform(X, batch=batch, covariates=cov)
    old = core._BLOCK_BYTES
    try:
        core._BLOCK_BYTES = 8 * 17 * 2  # two rows per block
        got = ih.ComBat().fit_transform(X, batch=batch, covariates=cov)
    finally:
        core._BLOCK_BYTES = old
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_learn_on_train_equals_apply_to_train_and_new_samples_use_training_estimates() -> None:
    X, batch, age = combat_sites(seed=21, covariate=True)
    cov = pd.DataFrame({"age": age})
    model = ih.ComBat().fit(X, batch=batch, covariates=cov)
    np.testing.assert_array_equal(
        model.transform(X, batch=batch, covariates=cov),
        ih.ComBat().fit_transform(X, batch=batch, covariates=cov),
    )
    # a new sample is corrected with the stored estimates, independently of other new samples
    rng = np.random.default_rng(0)
    new = X[:5] + rng.normal(0, 0.1, (5, X.shape[1]))
    one_by_one = np.vstack(
        [
            model.transform(new[i : i + 1], batch=batch[i : i + 1], covariates=cov[i : i + 1])
            for i in range(5)
        ]
    )
    np.testing.assert_allclose(
        model.transform(new, batch=batch[:5], covariates=cov[:5]), one_by_one, rtol=1e-14
    )
    f = model.fit_
    j = list(model.batches_).index(batch[0])
    m = f.grand_mean + age[0] * f.beta[0]
    sd = np.sqrt(f.var_pooled)
    expected = ((new[0] - m) / sd - f.gamma_star[j]) / np.sqrt(f.delta_star[j]) * sd + m
    np.testing.assert_allclose(one_by_one[0], expected, rtol=1e-12)


# ---------------------------------------------------------------- awkward data


def test_missing_values_are_ignored_and_stay_missing() -> None:
    X, batch, _ = combat_sites(seed=8)
    Xn = X.copy()
    rng = np.random.default_rng(1)
    holes = rng.random(X.shape) < 0.05
    holes[:, 10:] = False  # features 10.. are complete
    Xn[holes] = np.nan
    out = ih.ComBat(eb=False, mean_only=True).fit_transform(Xn, batch=batch)
    assert np.array_equal(np.isnan(out), holes)
    # closed form with missing values: per-site means of the observed values, weights n_j / n
    sites = np.unique(batch)
    means = {s: np.nanmean(Xn[batch == s], axis=0) for s in sites}
    grand = sum((batch == s).sum() / batch.size * means[s] for s in sites)
    for s in sites:
        r = batch == s
        np.testing.assert_allclose(out[r], Xn[r] - means[s] + grand, rtol=1e-12)
    # features without holes are unaffected by holes elsewhere when there is no EB pooling
    full = ~holes.any(axis=0)
    ref = ih.ComBat(eb=False, mean_only=True).fit_transform(X[:, full], batch=batch)
    np.testing.assert_allclose(out[:, full], ref, rtol=1e-12)


def test_zero_variance_feature_passes_through_with_a_warning() -> None:
    X, batch, _ = combat_sites(seed=9)
    X[batch == "s1", 3] = 7.0
    with pytest.warns(HarmonizationWarning, match="zero variance"):
        model = ih.ComBat().fit(X, batch=batch)
    out = model.transform(X, batch=batch)
    np.testing.assert_array_equal(out[:, 3], X[:, 3])
    assert model.unadjusted_features_ == {3: "constant inside a batch (zero variance)"}
    # the other features are corrected as if feature 3 were absent (it does not enter the priors)
    others = np.arange(X.shape[1]) != 3
    ref = ih.ComBat().fit_transform(X[:, others], batch=batch)
    np.testing.assert_allclose(out[:, others], ref, rtol=1e-12)


def test_eb_iteration_cap_reports_non_convergence() -> None:
    X, batch, _ = combat_sites(seed=10)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = ih.ComBat(max_iter=1).fit(X, batch=batch)
    assert not model.fit_.converged.any()
    assert (model.fit_.n_iter == 1).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converged = ih.ComBat().fit(X, batch=batch)
    assert converged.fit_.converged.all()
    assert (converged.fit_.n_iter > 1).all()


def test_design_check_names_positions() -> None:
    codes = np.repeat([0, 1], 5)
    C = np.column_stack([np.arange(10.0), codes * 3.0])  # second covariate = site
    with pytest.raises(core._RankDeficient) as err:
        core.check_design(codes, 2, C)
    assert err.value.columns == [1]


@pytest.mark.parametrize("order", ["C", "F"])
def test_memory_layout_does_not_change_results(order: str) -> None:
    X, batch, age = combat_sites(n_per_site=(9, 13, 6), n_features=17, seed=3, covariate=True)
    X[2, 4] = np.nan
    cov = pd.DataFrame({"age": age})
    expected = ih.ComBat(reference_batch="s1").fit_transform(X, batch=batch, covariates=cov)
    old = core._BLOCK_BYTES
    try:
        core._BLOCK_BYTES = 8 * 28 * 3  # three columns (F) or a few rows (C) per panel
        got = ih.ComBat(reference_batch="s1").fit_transform(
            np.asarray(X, order=order), batch=batch, covariates=cov
        )
    finally:
        core._BLOCK_BYTES = old
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.isnan(got[2, 4]) and np.isnan(got).sum() == 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 400), outlier=st.floats(0.0, 1e4))
def test_nonparametric_prior_equals_a_log_sum_exp_reference(
    seed: int, n: int, outlier: float
) -> None:
    """The shifted, folded product agrees with a plain row-max log-sum-exp, including rows whose
    weights all underflow under the analytic shift (an outlying feature)."""
    rng = np.random.default_rng(seed)
    G = 40
    gamma = rng.normal(0, 0.5, G)
    delta = rng.gamma(5, 0.2, G)
    gamma[0] += outlier  # feature 0 far from every other feature
    ss = delta * (n - 1) * rng.uniform(0.5, 1.5, G)
    nn = np.full(G, float(n))
    g_star, d_star = core._nonparametric_eb(gamma, delta, ss, nn)
    logl = -(nn[:, None] / 2) * np.log(delta)[None, :] - (
        ss[:, None] + nn[:, None] * (gamma[:, None] - gamma[None, :]) ** 2
    ) / (2 * delta[None, :])
    np.fill_diagonal(logl, -np.inf)
    w = np.exp(logl - logl.max(axis=1, keepdims=True))
    np.testing.assert_allclose(g_star, (w @ gamma) / w.sum(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_star, (w @ delta) / w.sum(axis=1), rtol=1e-9)


def _literal_no_eb(X: np.ndarray, batch: np.ndarray, C: np.ndarray) -> np.ndarray:
    """ComBat without EB written literally: explicit design, residuals and standardized data."""
    sites = np.unique(batch)
    D = np.column_stack([(batch == s).astype(float) for s in sites] + [C])
    B = np.linalg.lstsq(D, X, rcond=None)[0]
    resid = X - D @ B
    sd = np.sqrt((resid**2).mean(axis=0))
    n_j = np.array([(batch == s).sum() for s in sites])
    grand = (n_j / batch.size) @ B[: sites.size]
    m = grand + C @ B[sites.size :]
    S = (X - m) / sd
    out = np.empty_like(X)
    for s in sites:
        r = batch == s
        out[r] = (S[r] - S[r].mean(axis=0)) / S[r].std(axis=0, ddof=1) * sd + m[r]
    return out


def test_covariates_explaining_almost_all_variance_stay_exact() -> None:
    """The residual sum of squares comes from moments; where the covariates explain all but a
    1e-12 fraction of a feature's variance, it is recomputed from explicit residuals."""
    rng = np.random.default_rng(3)
    batch = np.repeat(["a", "b", "c"], [20, 25, 30])
    age = rng.uniform(20, 80, batch.size)
    X = rng.normal(10, 2, (batch.size, 6))
    X[:, 0] = 1e3 * age + rng.normal(0, 1e-3, batch.size)  # R^2 = 1 - 1e-12
    X[:, 1] = 1e6 + rng.normal(0, 1e-2, batch.size)  # large mean, tiny spread
    X += np.where(batch == "b", 0.5, 0.0)[:, None]
    model = ih.ComBat(eb=False).fit(X, batch=batch, covariates=age[:, None])
    out = model.transform(X, batch=batch, covariates=age[:, None])
    np.testing.assert_allclose(out, _literal_no_eb(X, batch, age[:, None]), rtol=1e-10)
    # the pooled variance itself (what cancellation would spoil) to 1e-9
    D = np.column_stack([(batch == s).astype(float) for s in "abc"] + [age])
    resid = X - D @ np.linalg.lstsq(D, X, rcond=None)[0]
    np.testing.assert_allclose(model.fit_.var_pooled, (resid**2).mean(axis=0), rtol=1e-9)


def test_nonparametric_prior_is_the_same_on_several_threads() -> None:
    rng = np.random.default_rng(5)
    G = 1500
    gamma, delta = rng.normal(0, 0.5, G), rng.gamma(5, 0.2, G)
    ss, n = delta * 14 * rng.uniform(0.5, 1.5, G), np.full(G, 15.0)
    one = core._nonparametric_eb(gamma, delta, ss, n, threads=1)
    four = core._nonparametric_eb(gamma, delta, ss, n, threads=4, max_bytes=1 << 16)
    # the same numbers up to the summation order of the products (block shapes differ)
    np.testing.assert_allclose(four[0], one[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(four[1], one[1], rtol=1e-12)
