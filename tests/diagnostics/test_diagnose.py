"""End to end: a known site effect and a known biology effect with site-dependent prevalence.

Per-site centring, which ignores the biology, must be caught erasing it; an oracle that removes
only the site effect must be judged to keep it.
"""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest

from imharmony.diagnostics import Diagnosis, Thresholds, diagnose
from imharmony.errors import DataError, DesignError


def simulate(seed: int = 0, n_per: int = 100, p: int = 30, prevalence=(0.2, 0.5, 0.8)):
    """Raw data, the oracle correction and per-site centring, with the truth that made them."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(3), n_per)
    site = np.array(["A", "B", "C"])[codes]
    n = site.size
    dx = (rng.random(n) < np.asarray(prevalence)[codes]).astype(int)
    effect = np.r_[np.linspace(0.6, 1.2, p - 6), np.zeros(6)]  # 6 features carry no biology
    age = rng.normal(60, 8, n)
    clean = dx[:, None] * effect + 0.03 * (age - 60)[:, None] + rng.normal(size=(n, p))
    gamma = rng.normal(0, 1.5, (3, p))  # additive site effects
    delta = np.exp(rng.normal(0, 0.2, (3, p)))  # multiplicative site effects
    raw = gamma[codes] + delta[codes] * clean
    oracle = clean * delta.mean(axis=0) + gamma.mean(axis=0)  # site removed, biology untouched
    centred = raw.copy()
    for g in range(3):
        centred[codes == g] -= raw[codes == g].mean(axis=0)
    cols = [f"f{j}" for j in range(p)]
    frame = lambda a: pd.DataFrame(a, columns=cols)  # noqa: E731
    return {"raw": frame(raw), "oracle": frame(oracle), "centred": frame(centred),
            "site": site, "dx": dx, "covariates": pd.DataFrame({"age": age}), "effect": effect}


@pytest.fixture(scope="module")
def data():
    return simulate()


@pytest.fixture(scope="module")
def oracle_diagnosis(data) -> Diagnosis:
    return diagnose(data["raw"], data["oracle"], batch=data["site"], biology=data["dx"],
                    covariates=data["covariates"], random_state=0, n_permutations=99,
                    max_features=12)


@pytest.fixture(scope="module")
def centred_diagnosis(data) -> Diagnosis:
    return diagnose(data["raw"], data["centred"], batch=data["site"], biology=data["dx"],
                    covariates=data["covariates"], random_state=0, n_permutations=99,
                    max_features=12)


def test_oracle_removes_site_and_keeps_biology(oracle_diagnosis):
    d = oracle_diagnosis
    assert d.verdicts == {"site effect": "removed", "biology": "kept"}
    assert d.site_before.summary["frac_site_effect"] == pytest.approx(1.0)
    assert d.site_after.summary["frac_site_effect"] <= 0.05
    mv = d.multivariate
    assert mv.loc["silhouette", "after"] < 0.05 < mv.loc["silhouette", "before"]
    assert mv.loc["gpca_p", "before"] == pytest.approx(1 / 100)
    assert mv.loc["gpca_p", "after"] > 0.05
    assert mv.loc["site_prediction", "before"] > 0.9
    assert mv.loc["site_prediction", "after"] < 1 / 3 + 0.1
    mixed = d.mixed
    signal = mixed[mixed["verdict"] != "no signal"]
    assert 0.9 <= signal["shrinkage"].median() <= 1.1
    assert mixed["icc_before"].median() > 0.3
    assert mixed["icc_after"].median() < 0.05
    # prevalence 0.2 / 0.5 / 0.8: Cramér's V near 0.5, between "moderate" and "strong"
    v = d.confounding.variables.loc["biology", "cramers_v"]
    assert 0.4 < v < 0.6
    assert d.confounding.level == ("strong" if v >= 0.5 else "moderate")


def test_per_site_centring_erases_biology(centred_diagnosis, data):
    d = centred_diagnosis
    assert d.verdicts["biology"] == "erased"
    signal = d.mixed[d.mixed["verdict"] != "no signal"]
    # Expected loss from the design: centring removes the site mean, which holds prevalence x
    # effect; the pooled OLS slope on the centred data keeps about 3/4 of it here.
    assert 0.6 < signal["shrinkage"].median() < 0.85
    assert (signal["verdict"] == "erased").mean() > 0.8
    # centring with unequal prevalence shifts the sites differently for the same biology: the
    # residual site tests (biology removed first) see the site effect it introduced
    assert d.verdicts["site effect"] in {"reduced", "not removed"}
    assert d.fisher.loc[d.fisher["verdict"] != "no signal", "fisher_ratio"].median() < 0.8


def test_inflated_biology_is_flagged(data):
    exaggerated = data["oracle"] + 0.6 * np.outer(data["dx"], data["effect"])
    d = diagnose(data["raw"], exaggerated, batch=data["site"], biology=data["dx"],
                 covariates=data["covariates"], random_state=0, n_permutations=0,
                 max_features=12)
    assert d.verdicts["biology"] == "inflated"
    assert np.isnan(d.multivariate.loc["gpca_p", "after"])


def test_thresholds_are_named_and_settable(data, centred_diagnosis):
    text = centred_diagnosis.summary()
    assert "biology: ERASED" in text
    assert "shrinkage_kept=(0.9, 1.1)" in text and "site_removed_max_fraction=0.05" in text
    lenient = Thresholds(shrinkage_kept=(0.5, 2.0), fisher_erased_below=0.1)
    d = diagnose(data["raw"], data["centred"], batch=data["site"], biology=data["dx"],
                 covariates=data["covariates"], thresholds=lenient, max_features=5,
                 n_permutations=0, random_state=0)
    assert d.verdicts["biology"] == "kept"
    assert len(d.mixed) == 5
    assert "shrinkage_kept=(0.5, 2.0)" in d.summary()


def test_without_biology_and_with_fisher_only(data):
    d = diagnose(data["raw"], data["oracle"], batch=data["site"], n_permutations=0,
                 random_state=0)
    assert d.verdicts["biology"] == "not assessed"
    assert d.fisher is None and d.mixed is None
    d = diagnose(data["raw"], data["centred"], batch=data["site"], biology=data["dx"],
                 max_features=0, n_permutations=0, random_state=0)
    assert d.mixed is None
    assert d.verdicts["biology"] == "erased"  # from the Fisher ratio alone


def test_complete_confounding_is_not_assessed():
    rng = np.random.default_rng(0)
    site = np.repeat(["a", "b"], 20)
    dx = (site == "b").astype(int)
    X = rng.normal(size=(40, 3)) + dx[:, None]
    d = diagnose(X, X - X.mean(axis=0), batch=site, biology=dx, n_permutations=0,
                 random_state=0)
    assert d.confounding.level == "complete"
    assert d.verdicts["biology"] == "not assessed"
    assert "completely confounded" in d.reasons["biology"][0]


def test_site_prediction_skipped_with_a_reason_for_small_sites():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 2))
    d = diagnose(X, X, batch=np.repeat(["a", "b"], 4), n_permutations=0)
    assert "site_prediction" not in d.multivariate.index
    assert any("site prediction skipped" in r for r in d.reasons["site effect"])


def test_input_errors(data):
    with pytest.raises(DataError, match="shape"):
        diagnose(data["raw"], data["oracle"].iloc[:10], batch=data["site"])
    with pytest.raises(DataError, match="different feature columns"):
        diagnose(data["raw"], data["oracle"].rename(columns={"f0": "g0"}), batch=data["site"])
    with pytest.raises(DesignError, match="one site"):
        diagnose(data["raw"], data["oracle"], batch=["A"] * 300)
    with pytest.raises(DataError, match="batch"):
        diagnose(data["raw"], data["oracle"], batch=data["site"][:5])


def test_to_html_delegates_to_the_report_module(oracle_diagnosis, tmp_path, monkeypatch):
    calls = []

    def render_report(diagnosis, path):
        calls.append((diagnosis, path))
        return path

    fake = types.ModuleType("imharmony.report.html")
    fake.render_report = render_report
    monkeypatch.setitem(sys.modules, "imharmony.report.html", fake)
    out = oracle_diagnosis.to_html(tmp_path / "r.html")
    assert out == tmp_path / "r.html"
    assert calls == [(oracle_diagnosis, tmp_path / "r.html")]


def test_with_combat_fitted_inside_the_folds():
    estimators = pytest.importorskip("imharmony.features.estimators")
    from imharmony.errors import HarmonizationWarning

    data = simulate(seed=1, prevalence=(0.3, 0.5, 0.7))
    cov_with_dx = data["covariates"].assign(dx=data["dx"].astype(str))
    with warnings.catch_warnings():
        # the lead's ComBat may warn about confounding; that is not what is tested here
        warnings.simplefilter("ignore", HarmonizationWarning)
        kept = estimators.ComBat().fit_transform(data["raw"], batch=data["site"],
                                                 covariates=cov_with_dx)
        d = diagnose(data["raw"], kept, batch=data["site"], biology=data["dx"],
                     covariates=data["covariates"], harmonizer=estimators.ComBat,
                     n_permutations=0, max_features=10, random_state=0)
    assert d.verdicts == {"site effect": "removed", "biology": "kept"}
    # ComBat fitted inside the folds (with the biology as covariate): site no longer predictable
    assert d.multivariate.loc["site_prediction_in_folds", "after"] < 1 / 3 + 0.1
    # ...but without the biology it shifts the sites differently for the same diagnosis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HarmonizationWarning)
        d = diagnose(data["raw"], kept, batch=data["site"], biology=data["dx"],
                     covariates=data["covariates"], harmonizer=estimators.ComBat,
                     harmonizer_covariates=data["covariates"], n_permutations=0,
                     max_features=0, random_state=0)
    assert d.multivariate.loc["site_prediction_in_folds", "after"] > 1 / 3 + 0.1
    assert d.verdicts["site effect"] == "reduced"


def test_continuous_biology_kept_by_an_oracle():
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(3), 60)
    site = np.array(["a", "b", "c"])[codes]
    age = rng.normal(60, 8, codes.size) + 3 * codes  # older sites: a real population difference
    clean = 0.05 * age[:, None] * np.ones(6) + rng.normal(size=(codes.size, 6))
    raw = clean + rng.normal(0, 1, (3, 6))[codes]
    d = diagnose(raw, clean, batch=site, biology=age, n_permutations=0, random_state=0)
    assert d.verdicts == {"site effect": "removed", "biology": "kept"}
    assert d.mixed["term"].eq("biology").all()
    assert d.confounding.variables.loc["biology", "kind"] == "continuous"
    with pytest.raises(DataError, match="covariates: 2 row"):
        diagnose(raw, clean, batch=site, covariates=pd.DataFrame({"x": [1, 2]}))


# --- issue 9: some sites hold one class, others mix them (the bladderbatch pattern) -------------


def single_class_cohort(seed: int = 3):
    """3 single-class sites (two all cases, one all controls) and 2 mixed sites, strong batch
    effects; 5 of 60 features carry a disease effect of 2 within-site standard deviations."""
    from imharmony.datasets import make_multisite_features

    return make_multisite_features(
        n_per_site=(11, 14, 9, 10, 13), prevalence=(1, 1, 0, 0.5, 0.5), n_features=60,
        n_disease_features=5, disease_effect=2.0, site_shift_sd=2.0, site_scale_range=(0.5, 2.0),
        random_state=seed)


@pytest.fixture(scope="module")
def single_class():
    import imharmony as ih

    d = single_class_cohort()
    X, site = d.table[d.feature_columns], d.table["site"]
    dx = d.table["disease"].map({0: "normal", 1: "cancer"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the confounding warnings are tested elsewhere
        without = ih.ComBat().fit_transform(X, batch=site)
        with_label = ih.ComBat().fit_transform(X, batch=site, covariates=pd.DataFrame({"dx": dx}))
    kw = {"batch": site, "biology": dx, "n_permutations": 0, "random_state": 0,
          "max_features": 6}
    return {"without": diagnose(X, without, **kw), "with": diagnose(X, with_label, **kw)}


def test_single_class_sites_are_strong_confounding_and_assessed(single_class):
    for d in single_class.values():
        assert d.confounding.biology_level == "strong"
        assert d.confounding.variables.iloc[0]["single_class_sites"] == ("siteA", "siteB", "siteC")
        assert d.confounding.mixed_sites == ("siteD", "siteE")
        # the site tests work on residuals after the biology, even with single-class sites
        assert d.site_after.summary["residualized_on"] == ["disease[normal]"]
        assert set(d.biology_evidence.index) == {
            "pooled Fisher ratio", "within-site Fisher ratio", "mixed-model coefficient"}


def test_combat_without_the_label_erases_the_biology(single_class):
    d = single_class["without"]
    assert d.verdicts == {"site effect": "removed", "biology": "erased"}
    ev = d.biology_evidence
    assert ev.loc["mixed-model coefficient", "ratio"] < 0.6
    assert ev.loc["pooled Fisher ratio", "reading"] == "erased"
    # ComBat is an affine map per site: inside the mixed sites the separation is untouched
    assert ev.loc["within-site Fisher ratio", "ratio"] == pytest.approx(1.0, abs=0.01)
    assert any("siteA, siteB, siteC hold a single class" in r for r in d.reasons["biology"])
    assert any(r.startswith("the fix: give the biology to the harmonizer as a covariate")
               for r in d.reasons["biology"])


def test_combat_with_the_label_keeps_it_and_explains_the_inflation(single_class):
    d = single_class["with"]
    assert d.verdicts == {"site effect": "removed", "biology": "kept"}
    ev = d.biology_evidence
    assert 0.9 <= ev.loc["mixed-model coefficient", "ratio"] <= 1.1
    # the pooled Fisher ratio before carries the site effect: after/before reads inflated, and
    # the report explains why (Nygaard et al. 2016)
    assert ev.loc["pooled Fisher ratio", "reading"] == "inflated"
    assert any("Nygaard" in r for r in d.reasons["biology"])
    assert d.site_after.summary["frac_site_effect"] == 0.0
