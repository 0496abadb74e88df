"""Biology preservation: Fisher ratios (hand-computed) and mixed-model coefficients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imharmony.diagnostics import (
    fisher_preservation,
    fisher_ratio,
    mixed_effects,
    within_site_fisher,
)
from imharmony.errors import DataError, DesignError


def test_fisher_two_class_hand_computed():
    # class 0: 1, 3 (mean 2, variance 1); class 1: 5, 9 (mean 7, variance 4): 25 / 5 = 5
    X = np.array([1.0, 3, 5, 9])[:, None]
    assert fisher_ratio(X, ["ctl", "ctl", "pat", "pat"])[0] == pytest.approx(5.0)


def test_fisher_multi_class_hand_computed():
    # classes (1,3) (2,4) (6,8): sum n_c (mu_c - mu)^2 = 2 (4 + 1 + 9) = 28; sum n_c s_c^2 = 6
    X = np.array([1.0, 3, 2, 4, 6, 8])[:, None]
    assert fisher_ratio(X, [0, 0, 1, 1, 2, 2])[0] == pytest.approx(28 / 6)


def test_fisher_continuous_hand_computed():
    # x = 1,3,2,4 vs b = 1.5,2.5,3.5,4.5: r = 0.8, R^2 / (1 - R^2) = 0.64 / 0.36
    X = np.array([1.0, 3, 2, 4])[:, None]
    assert fisher_ratio(X, [1.5, 2.5, 3.5, 4.5])[0] == pytest.approx(0.64 / 0.36)
    assert fisher_ratio(X, [1, 2, 3, 4], biology_type="continuous")[0] == pytest.approx(
        0.64 / 0.36)
    # "kind", the former name of the keyword, still works and says which name to use
    with pytest.warns(DeprecationWarning, match="'kind' is deprecated; use 'biology_type'"):
        assert fisher_ratio(X, [1, 2, 3, 4], kind="continuous")[0] == pytest.approx(0.64 / 0.36)
    # read as categorical, the same numbers give another (hand-computed) ratio: 4 classes of one
    # sample each have no within-class variance
    assert fisher_ratio(X, [1, 2, 3, 4], biology_type="categorical")[0] == np.inf


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 100), st.floats(-1e3, 1e3),
       st.sampled_from([2, 3]), st.booleans())
def test_fisher_invariant_to_common_affine_transform(seed, a, c, k, negate):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), 6)
    X = rng.normal(size=(labels.size, 3)) + labels[:, None] * rng.normal(size=3)
    a = -a if negate else a
    f1 = fisher_ratio(X, labels)
    assume(np.all(np.isfinite(f1)))
    np.testing.assert_allclose(fisher_ratio(a * X + c, labels), f1, rtol=1e-6)


def test_fisher_preservation_bands():
    rng = np.random.default_rng(0)
    dx = np.repeat([0, 1], 50)
    noise = rng.normal(size=(100, 1))
    before = np.column_stack([noise[:, 0] + 2 * dx, noise[:, 0] + 2 * dx, noise[:, 0] + 2 * dx,
                              rng.normal(size=100)])
    after = before.copy()
    after[:, 1] = noise[:, 0] + 1.0 * dx  # signal halved: ratio ~ (1/2)^2 -> erased
    after[:, 2] = noise[:, 0] * 0.5 + 2 * dx  # noise halved: ratio ~ 4 -> inflated
    tab = fisher_preservation(before, after, dx, feature_names=["same", "half", "sharp", "none"])
    assert list(tab["verdict"]) == ["kept", "erased", "inflated", "no signal"]
    assert tab.loc["same", "fisher_ratio"] == pytest.approx(1.0)
    f_half = fisher_ratio(after[:, [1]], dx)[0] / fisher_ratio(before[:, [1]], dx)[0]
    assert tab.loc["half", "fisher_ratio"] == pytest.approx(f_half)
    strict = fisher_preservation(before, after, dx, erased_below=0.1, inflated_above=10)
    assert list(strict["verdict"]) == ["kept", "kept", "kept", "no signal"]


def test_fisher_errors():
    with pytest.raises(DesignError, match="one class"):
        fisher_ratio(np.ones((4, 1)), [1, 1, 1, 1])
    with pytest.raises(DataError, match="shape"):
        fisher_preservation(np.ones((4, 2)), np.ones((5, 2)), [0, 0, 1, 1])
    with pytest.raises(DataError, match="different feature columns"):
        fisher_preservation(pd.DataFrame({"a": [1.0, 2, 3, 4]}),
                            pd.DataFrame({"b": [1.0, 2, 3, 4]}), [0, 0, 1, 1])


def _mixed_data(seed=0, n_per=40, p=3):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(4), n_per)
    site = np.array(list("abcd"))[codes]
    dx = (rng.random(codes.size) < np.array([0.3, 0.5, 0.6, 0.7])[codes]).astype(int)
    age = rng.normal(60, 8, codes.size)
    beta = np.linspace(0.8, 1.2, p)
    clean = dx[:, None] * beta + 0.05 * (age[:, None] - 60) + rng.normal(size=(codes.size, p))
    offsets = rng.normal(0, 1.0, (4, p))
    return clean + offsets[codes], clean, site, dx, age


def test_mixed_coefficients_match_statsmodels_formula_fits():
    import statsmodels.formula.api as smf

    raw, clean, site, dx, age = _mixed_data()
    cov = pd.DataFrame({"age": age})
    tab = mixed_effects(raw, clean, dx, site, covariates=cov, max_features=None)
    for j in range(raw.shape[1]):
        d = pd.DataFrame({"y": raw[:, j], "dx": dx, "age": age, "site": site})
        m = smf.mixedlm("y ~ C(dx) + age", d, groups=d["site"]).fit(reml=True)
        row = tab.loc[f"feature_{j}"]
        assert row["beta_raw"] == pytest.approx(m.fe_params["C(dx)[T.1]"], rel=1e-3)
        assert row["se_raw"] == pytest.approx(m.bse_fe["C(dx)[T.1]"], rel=1e-2)
        icc = float(m.cov_re.iloc[0, 0]) / (float(m.cov_re.iloc[0, 0]) + m.scale)
        assert row["icc_before"] == pytest.approx(icc, rel=1e-2)
        d["y"] = clean[:, j]
        o = smf.ols("y ~ C(dx) + age", d).fit()
        assert row["beta_after"] == pytest.approx(o.params["C(dx)[T.1]"], rel=1e-9)
        assert row["se_after"] == pytest.approx(o.bse["C(dx)[T.1]"], rel=1e-9)
        assert row["shrinkage"] == pytest.approx(row["beta_after"] / row["beta_raw"], rel=1e-9)
        assert row["se_ratio"] == pytest.approx(row["se_after"] / row["se_raw"], rel=1e-9)


def test_mixed_verdicts_kept_and_erased_and_boundary_fits_recorded():
    raw, clean, site, dx, _ = _mixed_data(seed=1, n_per=150)
    kept = mixed_effects(raw, clean, dx, site)
    assert (kept["verdict"] == "kept").all()
    assert kept["icc_before"].min() > 0.2
    assert kept["icc_after"].max() < 0.05
    # an ICC of 0 after is the boundary of the parameter space: recorded, not raised
    assert kept["note"].str.contains("boundary|singular", regex=True).any()
    erased = mixed_effects(raw, clean * 0.5, dx, site)
    assert (erased["verdict"] == "erased").all()
    np.testing.assert_allclose(erased["shrinkage"], 0.5 * kept["shrinkage"], rtol=1e-9)


def test_mixed_max_features_takes_most_site_affected():
    raw, clean, site, dx, _ = _mixed_data(seed=2, p=4)
    codes = np.unique(site, return_inverse=True)[1]
    raw[:, 2] += np.array([0.0, 8, -8, 4])[codes]  # by far the most site-affected
    tab = mixed_effects(raw, clean, dx, site, max_features=1)
    assert list(tab.index) == ["feature_2"]
    tab = mixed_effects(raw, clean, dx, site, max_features=2, rank_by=[0, 0, 1, 5])
    assert list(tab.index) == ["feature_3", "feature_2"]


def test_mixed_multi_class_and_no_signal():
    rng = np.random.default_rng(3)
    codes = np.repeat(np.arange(3), 50)
    site = np.array(["a", "b", "c"])[codes]
    stage = rng.choice(["I", "II", "III"], codes.size)
    effect = pd.Series({"I": 0.0, "II": 1.0, "III": 2.0})[stage].to_numpy()
    clean = np.column_stack([effect + rng.normal(size=150), rng.normal(size=150)])
    raw = clean + rng.normal(0, 1, (3, 2))[codes]
    tab = mixed_effects(raw, clean, stage, site)
    assert tab.loc["feature_0", "term"] == "biology[III]"
    assert tab.loc["feature_0", "verdict"] == "kept"
    assert tab.loc["feature_1", "verdict"] == "no signal"


def test_mixed_collinear_design_is_an_error():
    raw, clean, site, dx, _ = _mixed_data()
    with pytest.raises(DesignError, match="collinear"):
        mixed_effects(raw, clean, dx, site, covariates=pd.DataFrame({"dx_copy": dx * 2.0}))


def test_within_site_fisher_uses_the_sites_that_mix_classes():
    rng = np.random.default_rng(2)
    site = np.repeat(["a", "b", "c"], [12, 8, 10])
    dx = np.r_[np.tile([0, 1], 6), np.ones(8, int), np.tile([0, 1], 5)]
    X = rng.normal(size=(30, 3)) + dx[:, None] * [1.0, 0.0, 2.0]
    ratio, used = within_site_fisher(X, dx, site)
    assert used == ["a", "c"]  # site b holds one class
    a, c = site == "a", site == "c"
    expected = (12 * fisher_ratio(X[a], dx[a]) + 10 * fisher_ratio(X[c], dx[c])) / 22
    np.testing.assert_allclose(ratio, expected, rtol=1e-12)
    none, used = within_site_fisher(X, (site == "a").astype(int), site)  # complete confounding
    assert used == [] and np.isnan(none).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3),
       st.lists(st.floats(-50, 50), min_size=3, max_size=3), st.integers(0, 1000))
def test_within_site_fisher_ignores_a_per_site_affine_map(gain, offset, seed):
    # what a location-scale harmonizer (ComBat without covariates) does inside a site
    rng = np.random.default_rng(seed)
    codes = np.repeat([0, 1, 2], 10)
    dx = np.tile([0, 1], 15)
    X = rng.normal(size=(30, 4)) + dx[:, None]
    Y = X * np.asarray(gain)[codes, None] + np.asarray(offset)[codes, None]
    np.testing.assert_allclose(within_site_fisher(Y, dx, codes)[0],
                               within_site_fisher(X, dx, codes)[0], rtol=1e-8)


def test_missing_values_use_each_features_complete_cases():
    rng = np.random.default_rng(5)
    site = np.repeat(["a", "b", "c"], 16)
    dx = np.tile([0, 1], 24)
    X = rng.normal(size=(48, 2)) + dx[:, None] * [1.5, 1.0] + (site == "b")[:, None]
    after = X - (site == "b")[:, None]
    holes_b, holes_a = X.copy(), after.copy()
    holes_b[[1, 20], 0] = np.nan
    holes_a[[33], 0] = np.nan  # missing after only: that sample is left out too
    keep = ~np.isin(np.arange(48), [1, 20, 33])
    tab = fisher_preservation(holes_b, holes_a, dx, batch=site)
    alone = fisher_preservation(X[keep][:, [0]], after[keep][:, [0]], dx[keep], batch=site[keep])
    for col in ("fisher_before", "fisher_after", "within_before", "within_after"):
        assert tab[col].iloc[0] == pytest.approx(alone[col].iloc[0], rel=1e-12)
    mixed = mixed_effects(holes_b, holes_a, dx, site, max_features=None)
    ref = mixed_effects(X[keep][:, [0]], after[keep][:, [0]], dx[keep], site[keep])
    assert mixed.loc["feature_0", "beta_raw"] == pytest.approx(ref["beta_raw"].iloc[0], rel=1e-6)
    assert mixed.loc["feature_0", "shrinkage"] == pytest.approx(ref["shrinkage"].iloc[0],
                                                                rel=1e-6)
