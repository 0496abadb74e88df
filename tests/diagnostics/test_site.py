"""Per-feature site tests: hand-computed values, scipy/statsmodels parity, properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from imharmony.diagnostics import (
    anova_oneway,
    benjamini_hochberg,
    brown_forsythe,
    kruskal_wallis,
    site_tests,
)
from imharmony.errors import DataError, DesignError


def test_bh_hand_computed():
    # sorted p: .005 .01 .03 .04 -> m p / i = .02 .02 .04 .04 (already monotone)
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    # step-up: m p / i = .03 .02 -> cumulative minimum from the top gives .02 .02
    np.testing.assert_allclose(benjamini_hochberg([0.015, 0.02]), [0.02, 0.02])
    # capped at 1 and NaN kept out of m
    np.testing.assert_allclose(benjamini_hochberg([np.nan, 0.9, 0.01]), [np.nan, 0.9, 0.02])
    assert np.isnan(benjamini_hochberg([np.nan])).all()


@settings(max_examples=50, deadline=None)
@given(arrays(float, st.integers(1, 40), elements=st.floats(0, 1)))
def test_bh_matches_statsmodels(p):
    from statsmodels.stats.multitest import multipletests

    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12, atol=1e-15)


def test_kruskal_epsilon2_hand_computed_without_ties():
    # ranks A = 1,2,3 (sum 6), B = 4,5,6 (sum 15):
    # H = 12/(6*7) * (36/3 + 225/3) - 3*7 = 27/7; epsilon^2 = H/(n-1) = 27/35
    X = np.array([1.0, 2, 3, 4, 5, 6])[:, None]
    kw = kruskal_wallis(X, np.array([0, 0, 0, 1, 1, 1]))
    assert kw["H"][0] == pytest.approx(27 / 7)
    assert kw["epsilon2"][0] == pytest.approx(27 / 35)
    assert kw["p"][0] == pytest.approx(stats.chi2.sf(27 / 7, 1))


def test_kruskal_hand_computed_with_ties():
    # A = 1,1,2 ; B = 2,3,3 -> mid-ranks 1.5,1.5,3.5 | 3.5,5.5,5.5; uncorrected H = 64/21,
    # tie correction 1 - 3*(2^3-2)/(6^3-6) = 32/35, so H = 10/3 and epsilon^2 = 2/3.
    X = np.array([1.0, 1, 2, 2, 3, 3])[:, None]
    kw = kruskal_wallis(X, np.array([0, 0, 0, 1, 1, 1]))
    assert kw["H"][0] == pytest.approx(10 / 3)
    assert kw["epsilon2"][0] == pytest.approx(2 / 3)


def test_anova_eta2_hand_computed():
    # groups (1,3) (2,4) (6,8): means 2,3,7, grand 4; SSB = 2*(4+1+9) = 28; SSW = 6; SST = 34
    X = np.array([1.0, 3, 2, 4, 6, 8])[:, None]
    a = anova_oneway(X, np.array([0, 0, 1, 1, 2, 2]))
    assert a["eta2"][0] == pytest.approx(28 / 34)
    assert a["F"][0] == pytest.approx((28 / 2) / (6 / 3))
    assert a["p"][0] == pytest.approx(stats.f.sf(7.0, 2, 3))


def test_brown_forsythe_hand_computed():
    # |x - median|: A (1,2,3) -> 1,0,1 ; B (0,5,10) -> 5,0,5; ANOVA on these: F = 32/13
    X = np.array([1.0, 2, 3, 0, 5, 10])[:, None]
    bf = brown_forsythe(X, np.array([0, 0, 0, 1, 1, 1]))
    assert bf["W"][0] == pytest.approx(32 / 13)


def test_vectorized_tests_match_scipy():
    rng = np.random.default_rng(3)
    X = np.round(rng.normal(size=(45, 30)), 1)  # rounding makes ties
    codes = np.repeat([0, 1, 2], 15)
    X[codes == 1] += 0.4
    X[codes == 2] *= 1.8
    groups = [X[codes == g] for g in range(3)]
    kw = kruskal_wallis(X, codes)
    an = anova_oneway(X, codes)
    bf = brown_forsythe(X, codes)
    ref_kw = stats.kruskal(*groups, axis=0)
    ref_an = stats.f_oneway(*groups, axis=0)
    ref_lv = stats.levene(*groups, center="median", axis=0)
    np.testing.assert_allclose(kw["H"], ref_kw.statistic, rtol=1e-10)
    np.testing.assert_allclose(kw["p"], ref_kw.pvalue, rtol=1e-8)
    np.testing.assert_allclose(an["F"], ref_an.statistic, rtol=1e-10)
    np.testing.assert_allclose(an["p"], ref_an.pvalue, rtol=1e-8)
    np.testing.assert_allclose(bf["W"], ref_lv.statistic, rtol=1e-10)
    np.testing.assert_allclose(bf["p"], ref_lv.pvalue, rtol=1e-8)


def test_ancova_matches_statsmodels_type2():
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(5)
    n = 60
    site = np.repeat(["a", "b", "c"], 20)
    age = rng.normal(50, 10, n) + (site == "c") * 5
    sex = rng.choice(["F", "M"], n)
    X = rng.normal(size=(n, 3)) + 0.05 * age[:, None] + (site == "b")[:, None] * 0.8
    cov = pd.DataFrame({"age": age, "sex": sex})
    res = site_tests(X, site, covariates=cov)
    for j in range(3):
        d = cov.assign(y=X[:, j], site=site)
        tab = sm.stats.anova_lm(smf.ols("y ~ C(site) + age + C(sex)", d).fit(), typ=2)
        assert res.table["ancova_F"].iloc[j] == pytest.approx(tab.loc["C(site)", "F"], rel=1e-9)
        assert res.table["ancova_p"].iloc[j] == pytest.approx(tab.loc["C(site)", "PR(>F)"],
                                                               rel=1e-7)
        ss = tab.loc["C(site)", "sum_sq"]
        assert res.table["partial_eta2"].iloc[j] == pytest.approx(
            ss / (ss + tab.loc["Residual", "sum_sq"]), rel=1e-9)


def test_residualizing_keeps_site_effect_removes_population_difference():
    # Site c is older, and the feature depends on age only: no site effect once age is removed.
    rng = np.random.default_rng(1)
    site = np.repeat(["a", "b", "c"], 40)
    age = rng.normal(40, 5, 120) + (site == "c") * 20
    x = 0.2 * age + rng.normal(0, 0.5, 120)
    raw = site_tests(x[:, None], site)
    adj = site_tests(x[:, None], site, covariates=pd.DataFrame({"age": age}))
    assert raw.table["kruskal_q"].iloc[0] < 1e-6
    assert adj.table["kruskal_q"].iloc[0] > 0.05
    # ...while a real offset of site b survives the adjustment
    y = x + (site == "b") * 1.0
    adj_y = site_tests(y[:, None], site, covariates=pd.DataFrame({"age": age}))
    assert adj_y.table["kruskal_q"].iloc[0] < 1e-6
    assert adj_y.summary["residualized_on"] == ["age"]


def test_summary_fractions_and_flags():
    rng = np.random.default_rng(0)
    site = np.repeat([0, 1], 50)
    X = rng.normal(size=(100, 10))
    X[:, :4] += site[:, None] * 2.0  # strong location effect in 4 features
    X[:, 9] *= np.where(site == 1, 4.0, 1.0)  # scale effect in the last
    res = site_tests(X, site, anderson=True)
    flags = res.table["site_effect"].to_numpy()
    assert flags[:4].all() and flags[9]
    assert not flags[4:9].any()
    assert res.summary["frac_site_effect"] == pytest.approx(0.5)
    assert res.summary["frac_kruskal"] == pytest.approx(0.4)
    assert res.table["anderson_q"].iloc[:4].max() < 0.05
    assert res.summary["n_sites"] == 2
    assert list(res.table.index[:2]) == ["feature_0", "feature_1"]


def test_constant_feature_is_nan_not_a_warning():
    X = np.column_stack([np.ones(20), np.arange(20.0)])
    res = site_tests(X, np.repeat([0, 1], 10))
    assert np.isnan(res.table["kruskal_H"].iloc[0])
    assert not res.table["site_effect"].iloc[0]
    assert res.table["kruskal_q"].iloc[1] < 0.05


def test_dataframe_input_and_errors():
    df = pd.DataFrame({"vol": [1.0, 2, 3, 4], "id": ["a", "b", "c", "d"]})
    with pytest.raises(DataError, match=r"\['id'\]"):
        site_tests(df, [0, 0, 1, 1])
    with pytest.raises(DataError, match=r"infinite value.*vol"):
        site_tests(pd.DataFrame({"vol": [1.0, np.inf, 3, 4]}), [0, 0, 1, 1])
    with pytest.raises(DataError, match="one label per sample"):
        site_tests(df[["vol"]], [0, 1, 1])
    with pytest.raises(DesignError, match="only one site"):
        site_tests(df[["vol"]], [0, 0, 0, 0])
    res = site_tests(df[["vol"]], ["x", "x", "y", "y"])
    assert list(res.table.index) == ["vol"]


def test_missing_values_are_tested_per_feature_on_complete_cases():
    rng = np.random.default_rng(4)
    site = np.repeat(["a", "b", "c"], 12)
    age = pd.DataFrame({"age": rng.uniform(30, 80, site.size)})
    X = rng.normal(size=(site.size, 4)) + (site == "b")[:, None] * np.array([2.0, 0, 1, 0])
    holes = X.copy()
    holes[[0, 13, 30], 0] = np.nan  # feature 0 misses three samples
    holes[[5], 2] = np.nan  # feature 2 misses one
    res = site_tests(holes, site, covariates=age).table
    assert res["n_complete"].tolist() == [33, 36, 35, 36]
    for j, keep in ((0, ~np.isin(np.arange(36), [0, 13, 30])), (2, np.arange(36) != 5),
                    (1, np.ones(36, bool))):
        alone = site_tests(X[keep][:, [j]], site[keep], covariates=age[keep]).table.iloc[0]
        for col in ("kruskal_p", "anova_p", "levene_p", "ancova_p", "epsilon2"):
            assert res[col].iloc[j] == pytest.approx(alone[col], rel=1e-10)
    # the false-discovery adjustment runs over all features together
    np.testing.assert_allclose(res["kruskal_q"], benjamini_hochberg(res["kruskal_p"]))


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 10), st.floats(-100, 100), st.integers(0, 10_000))
def test_effect_sizes_invariant_to_affine_rescaling(a, c, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(24, 3))
    codes = np.repeat([0, 1, 2], 8)
    r1 = site_tests(X, codes).table
    r2 = site_tests(a * X + c, codes).table
    for col in ("epsilon2", "eta2", "levene_eta2", "kruskal_H"):
        np.testing.assert_allclose(r1[col], r2[col], rtol=1e-7, atol=1e-12)


def test_negligible_effect_is_the_thresholds_name_and_negligible_still_works():
    rng = np.random.default_rng(3)
    site = np.repeat([0, 1], 30)
    X = rng.normal(size=(60, 2)) + site[:, None] * np.array([2.0, 0.0])
    default = site_tests(X, site)
    strict = site_tests(X, site, negligible_effect=0.99)  # no ε² reaches 0.99
    assert default.table["site_effect"].tolist() == [True, False]
    assert strict.table["site_effect"].tolist() == [False, False]
    assert strict.summary["negligible_effect"] == 0.99
    with pytest.warns(DeprecationWarning, match="'negligible' is deprecated; use "
                                                "'negligible_effect'"):
        former = site_tests(X, site, negligible=0.99)
    assert former.table["site_effect"].tolist() == [False, False]
