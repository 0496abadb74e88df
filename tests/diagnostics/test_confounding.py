"""Confounding of site with biology and covariates, checked from the labels alone."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from imharmony.diagnostics import ConfoundingThresholds, check_confounding, cramers_v
from imharmony.errors import ConfoundingError, HarmonizationWarning


def test_cramers_v_hand_computed():
    assert cramers_v([[10, 0], [0, 10]]) == pytest.approx(1.0)
    # n = 60, expected 15 per cell, chi2 = 4 * 25/15 = 20/3, V = sqrt(chi2 / 60) = 1/3
    assert cramers_v([[20, 10], [10, 20]]) == pytest.approx(1 / 3)
    assert cramers_v([[5, 5], [5, 5]]) == pytest.approx(0.0)
    assert np.isnan(cramers_v([[5, 5]]))


def _labels(counts: dict[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    site, dx = [], []
    for s, (n_ad, n_cn) in counts.items():
        site += [s] * (n_ad + n_cn)
        dx += ["AD"] * n_ad + ["CN"] * n_cn
    return np.array(site), np.array(dx)


def test_levels_from_site_by_class_table():
    cov = lambda dx: pd.DataFrame({"dx": dx})  # noqa: E731
    site, dx = _labels({"a": (25, 25), "b": (25, 25)})
    none = check_confounding(site, cov(dx), biology="dx")
    assert none.level == "none" and none.messages == ()
    assert none.variables.loc["dx", "cramers_v"] == pytest.approx(0.0)
    assert none.biology_in_covariates is True

    site, dx = _labels({"a": (20, 10), "b": (10, 20)})  # V = 1/3
    rep = check_confounding(site, cov(dx), biology="dx")
    assert rep.level == "moderate"
    chi2 = stats.chi2_contingency([[20, 10], [10, 20]], correction=False)[0]
    assert rep.variables.loc["dx", "chi2"] == pytest.approx(chi2)
    assert rep.table.loc["a", "AD"] == 20

    site, dx = _labels({"a": (40, 10), "b": (10, 40)})  # V = 0.6
    assert check_confounding(site, cov(dx), biology="dx").level == "strong"

    site, dx = _labels({"a": (30, 0), "b": (0, 30)})  # V = 1
    rep = check_confounding(site, cov(dx), biology="dx")
    assert rep.level == "complete"
    with pytest.raises(ConfoundingError, match="dx"):
        rep.raise_if_complete()


def test_a_site_holding_one_class_is_strong_not_complete_and_settable():
    # issue 9: one single-class site among mixed ones is strong confounding; the mixed sites
    # still separate site from biology
    site, dx = _labels({"a": (20, 0), "b": (20, 20), "c": (20, 15)})
    rep = check_confounding(site, pd.DataFrame({"dx": dx}), biology="dx")
    assert rep.level == "strong" and rep.biology_level == "strong"
    assert rep.variables.loc["dx", "single_class_sites"] == ("a",)
    assert rep.variables.loc["dx", "single_class_detail"] == ("site a: 20 sample(s), all AD",)
    assert rep.mixed_sites == ("b", "c")
    assert any("site a: 20 sample(s), all AD" in m for m in rep.messages)
    rep.raise_if_complete()  # does not raise
    strict = check_confounding(site, pd.DataFrame({"dx": dx}), biology="dx",
                               thresholds=ConfoundingThresholds(single_class_site_level="complete"))
    assert strict.level == "complete"
    # every site holding one class (some sharing it, so V < 1 is impossible to use): complete
    site, dx = _labels({"a": (20, 0), "b": (15, 0), "c": (0, 20)})
    rep = check_confounding(site, pd.DataFrame({"dx": dx}), biology="dx")
    assert rep.level == "complete" and rep.mixed_sites == ()


def test_covariate_imbalance_in_a_tiny_site_is_reported_as_such():
    rng = np.random.default_rng(1)
    site = np.repeat(["big1", "big2", "tiny"], [40, 40, 3])
    sex = np.where(site == "tiny", "F", rng.choice(["F", "M"], site.size))
    dx = np.tile(["AD", "CN"], 42)[: site.size]
    cov = pd.DataFrame({"dx": dx, "sex": sex})
    rep = check_confounding(site, cov, biology="dx")
    assert rep.biology_level == "none"
    assert rep.variables.loc["sex", "level"] == "strong"
    msg = next(f.message for f in rep.findings if f.variable == "sex")
    assert "site tiny: 3 sample(s), all F" in msg and "imbalance of covariate 'sex'" in msg


def test_biology_not_given_as_covariate_is_reported():
    site, dx = _labels({"a": (25, 25), "b": (25, 25)})
    rep = check_confounding(site, pd.DataFrame({"age": np.arange(100.0)}), biology="dx")
    assert rep.biology_in_covariates is False
    assert any("'dx' is not among the covariates" in m for m in rep.messages)
    rep2 = check_confounding(site, None, biology=dx)
    assert rep2.biology_in_covariates is False and rep2.level == "none"
    rep3 = check_confounding(site, pd.DataFrame({"diagnosis": dx}), biology=dx)
    assert rep3.biology_in_covariates is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep2.warn()
    assert [w.category for w in caught] == [HarmonizationWarning]


def test_continuous_biology_smd_and_complete():
    site = np.repeat(["a", "b"], 3)
    # means 2 and 4, sds 1 and 1: SMD = 2 / sqrt((1 + 1) / 2) = 2
    age = np.array([1.0, 2, 3, 3, 4, 5])
    rep = check_confounding(site, pd.DataFrame({"age": age}), biology="age",
                            biology_type="continuous")
    assert rep.variables.loc["age", "max_smd"] == pytest.approx(2.0)
    assert rep.level == "strong"
    # age constant within each site: eta^2 = 1, complete (and the design is rank deficient)
    rep = check_confounding(site, pd.DataFrame({"age": np.repeat([30.5, 60.5], 3)}),
                            biology="age")  # "auto": non-integer values are continuous
    assert rep.variables.loc["age", "eta2"] == pytest.approx(1.0)
    assert rep.level == "complete"
    assert rep.design_rank < rep.design_columns


def test_design_rank_and_condition_number():
    rng = np.random.default_rng(0)
    site = np.repeat(["a", "b", "c"], 30)
    ok = pd.DataFrame({"age": rng.normal(70, 3, 90), "sex": rng.choice(["F", "M"], 90)})
    rep = check_confounding(site, ok)
    assert rep.level == "none"
    assert rep.design_rank == rep.design_columns == 5
    assert rep.condition_number < 30  # age far from 0 is not collinear with the intercept
    # a covariate that is a linear function of site indicators
    bad = ok.assign(scanner_field=np.where(site == "a", 1.5, 3.0))
    rep = check_confounding(site, bad)
    assert rep.level == "complete"
    assert np.isinf(rep.condition_number)
    assert any("rank" in m for m in rep.messages)


def test_sample_size_messages_do_not_change_level():
    site = np.array(["big"] * 100 + ["small"] * 4 + ["tiny"])
    rep = check_confounding(site)
    assert rep.level == "none"
    assert rep.site_sizes["tiny"] == 1
    text = " ".join(rep.messages)
    assert "['tiny'] have fewer than 2" in text
    assert "['small'] have fewer than 20" in text
    assert "100 times the smallest" in text


def test_deterministic_and_cheap():
    rng = np.random.default_rng(1)
    site = rng.choice(list("abcde"), 5000)
    cov = pd.DataFrame({"dx": rng.choice(["AD", "CN"], 5000), "age": rng.normal(60, 10, 5000)})
    a = check_confounding(site, cov, biology="dx")
    b = check_confounding(site, cov, biology="dx")
    assert a.level == b.level and a.messages == b.messages
    pd.testing.assert_frame_equal(a.variables, b.variables)
