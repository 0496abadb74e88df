"""TravellingSubjects against generated truth: additive and multiplicative bias, incomplete and
hub-and-spoke designs, sites recruiting different populations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sklearn
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from imharmony.calibration.cohorts import make_travelling_study
from imharmony.calibration.travelling import fit_bias
from imharmony.errors import DesignError, ModelFileError, NotFittedError, UnseenBatchError


def _fit(study, **kw):
    tr = study.travellers
    feats = [c for c in tr.columns if c.startswith("f")]
    model = ih.TravellingSubjects(**kw).fit(tr[feats], site=tr["site"], subject=tr["subject"])
    return model, feats


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


@pytest.mark.parametrize("design", ["complete", "incomplete", "hub"])
def test_additive_bias_recovered_within_its_standard_errors(design: str) -> None:
    study = make_travelling_study(n_sites=4, n_travellers=12, n_features=40, design=design,
                                  noise_sd=0.2, random_state=1)
    model, _ = _fit(study)
    z = (model.offset_ - study.offset.to_numpy()) / model.offset_se_
    # the standard errors are honest: z-scores of 160 estimates look standard normal
    assert np.abs(z).max() < 4.5
    assert 0.75 < z.std() < 1.3
    assert np.allclose(model.gain_, 1.0) and np.all(model.gain_se_ == 0)
    assert np.allclose(model.offset_.sum(axis=0), 0.0, atol=1e-10)  # relative to the mean site
    assert model.residual_sd_ == pytest.approx(np.full(40, 0.2), rel=0.5)
    assert np.median(model.residual_sd_) == pytest.approx(0.2, rel=0.15)


def test_linear_bias_recovered_and_additive_model_cannot() -> None:
    study = make_travelling_study(n_sites=3, n_travellers=15, n_features=30, gain_spread=0.25,
                                  noise_sd=0.1, random_state=2)
    model, feats = _fit(study, scale="linear")
    zg = (model.gain_ - study.gain.to_numpy()) / model.gain_se_
    za = (model.offset_ - study.offset.to_numpy()) / model.offset_se_
    assert np.abs(zg).max() < 4.5 and np.abs(za).max() < 4.5
    assert 0.7 < zg.std() < 1.4
    assert np.allclose(model.gain_.mean(axis=0), 1.0)
    cohort = study.cohort
    lin = _rmse(model.transform(cohort[feats], site=cohort["site"]), study.cohort_truth)
    additive, _ = _fit(study)
    add = _rmse(additive.transform(cohort[feats], site=cohort["site"]), study.cohort_truth)
    assert lin < 0.2  # noise 0.1 divided by gains, plus estimation error
    assert add > 2 * lin  # a gain is not an offset


def test_population_differences_between_sites_survive_where_combat_erases_them() -> None:
    study = make_travelling_study(n_sites=4, n_travellers=10, n_features=10, n_cohort_per_site=60,
                                  population_shift_sd=1.5, noise_sd=0.1, random_state=3)
    model, feats = _fit(study)
    cohort = study.cohort
    harmonized = model.transform(cohort[feats], site=cohort["site"])
    truth = study.cohort_truth
    err_ts = _rmse(harmonized, truth)
    combat = ih.ComBat().fit_transform(cohort[feats], batch=cohort["site"])
    err_combat = _rmse(combat, truth)
    assert err_ts < 0.15
    assert err_combat > 3 * err_ts
    # the sites' mean differences after harmonization are the true population differences
    means = harmonized.groupby(cohort["site"].to_numpy()).mean()
    true_means = truth.groupby(cohort["site"].to_numpy()).mean()
    assert np.abs((means - means.mean()) - (true_means - true_means.mean())).to_numpy().max() < 0.1


def test_reference_site_maps_onto_that_site() -> None:
    study = make_travelling_study(n_sites=3, n_travellers=10, n_features=6, gain_spread=0.2,
                                  random_state=4)
    model, feats = _fit(study, scale="linear", reference_site="site1")
    assert np.all(model.offset_[1] == 0) and np.all(model.gain_[1] == 1)
    assert np.all(model.offset_se_[1] == 0)
    cohort = study.cohort
    out = model.transform(cohort[feats], site=cohort["site"])
    a, b = study.offset.to_numpy()[1], study.gain.to_numpy()[1]
    assert _rmse(out, a + b * study.cohort_truth.to_numpy()) < 0.25
    at_ref = (cohort["site"] == "site1").to_numpy()
    assert np.array_equal(out.to_numpy()[at_ref], cohort[feats].to_numpy()[at_ref])


def test_leave_one_traveller_out_agreement_improves() -> None:
    study = make_travelling_study(n_sites=3, n_travellers=8, n_features=5, offset_sd=2.0,
                                  random_state=5)
    model, feats = _fit(study)
    agr = model.agreement_
    assert list(agr.index) == feats
    assert (agr["icc_after"] > agr["icc_before"]).all()
    assert (agr["icc_after"] > 0.99).all() and (agr["ccc_after"] > 0.99).all()
    assert (agr["ccc_before"] < 0.9).all()


def test_missing_value_leaves_only_that_visit_out() -> None:
    study = make_travelling_study(n_sites=3, n_travellers=8, n_features=3, noise_sd=0.0,
                                  random_state=6)
    tr = study.travellers.copy()
    tr.loc[4, "f001"] = np.nan
    model = ih.TravellingSubjects(validate=False).fit(
        tr[["f000", "f001", "f002"]], site=tr["site"], subject=tr["subject"]
    )
    assert np.allclose(model.offset_, study.offset.to_numpy(), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    n_sites=st.integers(2, 5),
    n_travellers=st.integers(3, 7),
    seed=st.integers(0, 10_000),
    linear=st.booleans(),
)
def test_noise_free_bias_is_recovered_exactly(n_sites, n_travellers, seed, linear) -> None:
    rng = np.random.default_rng(seed)
    J, S, G = n_sites, n_travellers, 3
    site = np.tile(np.arange(J), S)
    subject = np.repeat(np.arange(S), J)
    keep = rng.random(site.size) > 0.2
    keep |= subject < 2  # two travellers everywhere keep every site identified
    site, subject = site[keep], subject[keep]
    subject = np.unique(subject, return_inverse=True)[1]
    a = rng.normal(0, 3, (J, G))
    b = rng.uniform(0.5, 1.5, (J, G)) if linear else np.ones((J, G))
    a -= a.mean(axis=0)
    b /= b.mean(axis=0)
    t = rng.normal(0, 5, (subject.max() + 1, G))
    X = a[site] + b[site] * t[subject]
    n_params = subject.max() + 1 + (J - 1) * (2 if linear else 1)
    if X.shape[0] <= n_params:
        with pytest.raises(DesignError, match="degrees of freedom"):
            fit_bias(X, site, subject, J, subject.max() + 1, ref=None, linear=linear)
        return
    est = fit_bias(X, site, subject, J, subject.max() + 1, ref=None, linear=linear)
    assert np.allclose(est["offset"], a, atol=1e-6)
    assert np.allclose(est["gain"], b, atol=1e-6)


def test_design_errors_name_the_sites() -> None:
    X = np.arange(8.0)[:, None] + np.random.default_rng(0).normal(0, 0.1, (8, 1))
    # two groups of sites with no shared traveller
    site = np.array(["a", "b", "a", "b", "c", "d", "c", "d"])
    subject = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    with pytest.raises(DesignError, match=r"\{a, b\}; \{c, d\}"):
        ih.TravellingSubjects().fit(X, site=site, subject=subject)
    with pytest.raises(DesignError, match="single value"):
        ih.TravellingSubjects().fit(X, site=["a"] * 8, subject=subject)
    # site c seen only by participants who never travelled
    with pytest.raises(DesignError, match=r"'c'.*no travelling subject"):
        ih.TravellingSubjects().fit(X, site=["a", "b"] * 3 + ["c", "c"],
                                    subject=[1, 1, 2, 2, 3, 3, 4, 5])
    # a gain at a site with one traveller
    site3 = ["a", "b", "c", "a", "b", "a", "b", "a"]
    subj3 = [1, 1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(DesignError, match=r"'c'.*fewer than 2 travelling"):
        ih.TravellingSubjects(scale="linear").fit(X, site=site3, subject=subj3)
    with pytest.raises(DesignError, match="reference_site='z'"):
        ih.TravellingSubjects(reference_site="z").fit(X, site=site3, subject=subj3)
    with pytest.raises(ih.HarmonizationError, match="'scale'"):
        ih.TravellingSubjects(scale="log").fit(X, site=site3, subject=subj3)


def test_unseen_site_is_named_and_save_load_round_trip(tmp_path) -> None:
    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=4, gain_spread=0.1,
                                  random_state=7)
    model, feats = _fit(study, scale="linear")
    cohort = study.cohort
    with pytest.raises(UnseenBatchError, match="'elsewhere'"):
        model.transform(cohort[feats], site=["elsewhere"] * len(cohort))
    path = model.save(tmp_path / "ts.json", metadata={"site_column": "site"})
    loaded = ih.TravellingSubjects.load(path)
    assert loaded.get_params() == model.get_params()
    assert loaded.metadata_ == {"site_column": "site"}
    pd.testing.assert_frame_equal(loaded.agreement_, model.agreement_)
    pd.testing.assert_frame_equal(
        loaded.transform(cohort[feats], site=cohort["site"]),
        model.transform(cohort[feats], site=cohort["site"]),
    )
    assert "pickle" not in (tmp_path / "ts.json").read_text()
    doc = json.loads((tmp_path / "ts.json").read_text())
    doc["arrays"]["sha256"] = "0" * 64
    (tmp_path / "ts.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="checksum"):
        ih.TravellingSubjects.load(tmp_path / "ts.json")
    ih.ComBat().fit(cohort[feats], batch=cohort["site"]).save(tmp_path / "c.json")
    with pytest.raises(ModelFileError, match=r"not a 'imharmony\.travelling_subjects' model"):
        ih.TravellingSubjects.load(tmp_path / "c.json")
    with pytest.raises(NotFittedError):
        ih.TravellingSubjects().transform(cohort[feats], site=cohort["site"])


def test_metadata_routing_in_a_pipeline() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=3, random_state=8)
    tr = study.travellers
    feats = ["f000", "f001", "f002"]
    with sklearn.config_context(enable_metadata_routing=True):
        ts = ih.TravellingSubjects(validate=False).set_fit_request(site=True, subject=True)
        ts.set_transform_request(site=True)
        pipe = make_pipeline(ts, LinearRegression())
        pipe.fit(tr[feats], tr["f000"], site=tr["site"], subject=tr["subject"])
        pred = pipe.predict(tr[feats], site=tr["site"])
    assert np.allclose(pred, ts.transform(tr[feats], site=tr["site"])["f000"])


def test_demo_step_keeps_population_differences_that_combat_removes(tmp_path) -> None:
    from imharmony.workflows.demo import travelling_step

    table, files = travelling_step(tmp_path, random_state=1)
    ts, combat = table.set_index("method").loc["travelling subjects"], \
        table.set_index("method").loc["ComBat"]
    assert ts["rmse"] < 0.2 < combat["rmse"]
    assert 0.9 < ts["population_difference_kept"] < 1.1
    assert combat["population_difference_kept"] < 0.1
    assert all(p.exists() for p in files.values())
    assert ih.TravellingSubjects.load(files["travelling_model"]).scale == "linear"


def test_additive_fit_matches_statsmodels_ols_with_sum_and_treatment_contrasts() -> None:
    import statsmodels.formula.api as smf

    study = make_travelling_study(n_sites=4, n_travellers=7, n_features=2, design="incomplete",
                                  noise_sd=0.3, random_state=21)
    tr = study.travellers
    for ref in (None, "site2"):
        model, _ = _fit(study, reference_site=ref, validate=False)
        for g, feat in enumerate(["f000", "f001"]):
            contrast = "Sum" if ref is None else f"Treatment(reference='{ref}')"
            res = smf.ols(f"{feat} ~ C(subject) + C(site, {contrast})", data=tr).fit()
            names = [n for n in res.params.index if n.startswith("C(site")]
            cov = res.cov_params().loc[names, names].to_numpy()
            if ref is None:  # sum contrasts: the last site is minus the sum of the others
                L = np.vstack([np.eye(3), -np.ones((1, 3))])
            else:
                L = np.insert(np.eye(3), 2, 0.0, axis=0)
            np.testing.assert_allclose(model.offset_[:, g], L @ res.params[names].to_numpy(),
                                       atol=1e-10)
            np.testing.assert_allclose(model.offset_se_[:, g], np.sqrt(np.diag(L @ cov @ L.T)),
                                       rtol=1e-8, atol=1e-12)
            assert model.residual_sd_[g] == pytest.approx(np.sqrt(res.scale), rel=1e-9)


def test_linear_fit_matches_scipy_least_squares() -> None:
    from scipy.optimize import least_squares

    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=1, gain_spread=0.3,
                                  noise_sd=0.2, random_state=22)
    tr = study.travellers
    model, _ = _fit(study, scale="linear", reference_site="site0", validate=False)
    site = tr["site"].str[-1].astype(int).to_numpy()
    subject = pd.factorize(tr["subject"], sort=True)[0]
    x = tr["f000"].to_numpy()

    def resid(p: np.ndarray) -> np.ndarray:
        a = np.r_[0.0, p[6:8]]
        b = np.r_[1.0, p[8:10]]
        return x - a[site] - b[site] * p[:6][subject]

    start = np.r_[np.zeros(6), np.zeros(2), np.ones(2)]
    sol = least_squares(resid, start, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(model.offset_[1:, 0], sol.x[6:8], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.gain_[1:, 0], sol.x[8:10], rtol=1e-7)
    J = sol.jac
    sigma2 = (sol.fun**2).sum() / (x.size - 10)
    se = np.sqrt(np.diag(np.linalg.inv(J.T @ J)) * sigma2)
    np.testing.assert_allclose(model.gain_se_[1:, 0], se[8:10], rtol=1e-5)
    np.testing.assert_allclose(model.offset_se_[1:, 0], se[6:8], rtol=1e-5)
