"""ComBat as a scikit-learn citizen, and its errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline

import imharmony as ih
from _support.cohorts import combat_cohort
from imharmony.errors import (
    DataError,
    DesignError,
    HarmonizationError,
    HarmonizationWarning,
)


def test_get_params_and_clone() -> None:
    model = ih.ComBat(nonparametric=True, reference_batch="a", max_iter=50)
    assert model.get_params() == {
        "nonparametric": True,
        "mean_only": False,
        "reference_batch": "a",
        "eb": True,
        "tol": 1e-4,
        "max_iter": 50,
        "smooth": None,
        "smooth_penalty": "cv",
        "smooth_df": 10,
        "smooth_degree": 3,
        "smooth_bounds": None,
        "random_state": None,
    }
    assert clone(model).get_params() == model.get_params()


def test_pipeline_cross_validation_fits_harmonization_on_training_folds_only() -> None:
    X, y, site, cov = combat_cohort()
    cov = cov[["age"]]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    with sklearn.config_context(enable_metadata_routing=True):
        combat = (
            ih.ComBat()
            .set_fit_request(batch=True, covariates=True)
            .set_transform_request(batch=True, covariates=True)
        )
        pipe = make_pipeline(combat, LogisticRegression(max_iter=1000))
        res = cross_validate(
            pipe,
            X,
            y,
            cv=cv,
            params={"batch": site, "covariates": cov},
            return_estimator=True,
            return_indices=True,
        )
        # each fold's ComBat saw exactly the training rows of that fold
        for est, train in zip(res["estimator"], res["indices"]["train"], strict=True):
            fitted = est[0]
            assert fitted.fit_.batch_sizes.sum() == train.size
            expected = [np.sum(site[train] == s) for s in fitted.batches_]
            assert list(fitted.fit_.batch_sizes) == expected
        inside = res["test_score"]
        again = cross_val_score(pipe, X, y, cv=cv, params={"batch": site, "covariates": cov})
    np.testing.assert_array_equal(inside, again)
    # leaky: harmonize everything first, then cross-validate the classifier
    leaked = ih.ComBat().fit_transform(X, batch=site, covariates=cov)
    leaky = cross_val_score(LogisticRegression(max_iter=1000), leaked, y, cv=cv)
    assert not np.allclose(inside, leaky)


def test_covariate_confounded_with_site_is_an_error_naming_it() -> None:
    X, _, site, cov = combat_cohort(seed=1)
    scanner = pd.Series(site).map(
        {"site0": "ge", "site1": "ge", "site2": "siemens", "site3": "siemens"}
    )
    covs = pd.DataFrame({"age": cov["age"], "scanner": scanner})
    with pytest.raises(DesignError, match=r"'scanner\[siemens\]'.*confounded with site"):
        ih.ComBat().fit(X, batch=site, covariates=covs)
    const = pd.DataFrame({"age": cov["age"], "field": 3.0})
    with pytest.raises(DesignError, match="'field'"):
        ih.ComBat().fit(X, batch=site, covariates=const)


def test_single_sample_site_needs_mean_only() -> None:
    X, _, site, _ = combat_cohort(seed=2)
    site = site.astype(object)
    site[0] = "lonely"
    with pytest.raises(DesignError, match=r"'lonely'.*single sample.*mean_only=True"):
        ih.ComBat().fit(X, batch=site)
    out = ih.ComBat(mean_only=True).fit_transform(X, batch=site)
    assert np.isfinite(out).all()


def test_bad_features_are_errors_naming_the_column() -> None:
    X, _, site, _ = combat_cohort(seed=3)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    bad = frame.assign(f3=["x"] * len(frame))
    with pytest.raises(DataError, match=r"'f3'.*not numeric"):
        ih.ComBat().fit(bad, batch=site)
    inf = frame.copy()
    inf.loc[5, "f7"] = np.inf
    with pytest.raises(DataError, match=r"'f7'.*infinite"):
        ih.ComBat().fit(inf, batch=site)
    with pytest.raises(DataError, match="one label per sample"):
        ih.ComBat().fit(frame, batch=site[:-1])
    with pytest.raises(DataError, match="missing label"):
        ih.ComBat().fit(frame, batch=pd.Series(site).where(np.arange(len(site)) != 4))
    with pytest.raises(DesignError, match="single site"):
        ih.ComBat().fit(frame, batch=np.repeat("a", len(frame)))


def test_transform_checks_columns_and_covariates() -> None:
    X, _, site, cov = combat_cohort(seed=4)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = ih.ComBat().fit(frame, batch=site, covariates=cov[["age", "disease"]])
    with pytest.raises(DataError, match="missing 'f0'; unexpected 'g0'"):
        model.transform(
            frame.rename(columns={"f0": "g0"}), batch=site, covariates=cov[["age", "disease"]]
        )
    with pytest.raises(DataError, match="fitted with covariates"):
        model.transform(frame, batch=site)
    odd = cov[["age", "disease"]].assign(disease="maybe")
    with pytest.raises(DataError, match="'disease' has level"):
        model.transform(frame, batch=site, covariates=odd)


def test_parameter_validation() -> None:
    X, _, site, _ = combat_cohort(seed=5)
    with pytest.raises(HarmonizationError, match="'max_iter'"):
        ih.ComBat(max_iter=0).fit(X, batch=site)
    with pytest.raises(HarmonizationError, match="'nonparametric'"):
        ih.ComBat(nonparametric="yes").fit(X, batch=site)  # type: ignore[arg-type]
    with pytest.raises(DesignError, match="reference_batch='nowhere'"):
        ih.ComBat(reference_batch="nowhere").fit(X, batch=site)


def test_categorical_covariates_follow_treatment_coding() -> None:
    X, _, site, cov = combat_cohort(seed=6)
    model = ih.ComBat().fit(X, batch=site, covariates=cov)
    assert model.covariate_columns_ == ["age", "disease[1]"]
    grade = pd.Categorical(np.resize(["low", "mid", "high"], len(site)), ["low", "mid", "high"])
    m2 = ih.ComBat().fit(X, batch=site, covariates=pd.DataFrame({"grade": grade}))
    assert m2.covariate_columns_ == ["grade[mid]", "grade[high]"]


def test_integer_site_labels_and_cli_style_reference() -> None:
    X, _, site, _ = combat_cohort(seed=7)
    codes = pd.Series(site).str[-1].astype(int).to_numpy()
    model = ih.ComBat(reference_batch="2").fit(X, batch=codes)
    assert model.batches_.tolist() == [0, 1, 2, 3]
    assert model.reference_index_ == 2
    out = model.transform(X, batch=codes)
    np.testing.assert_array_equal(out[codes == 2], X[codes == 2])


def test_confounding_is_checked_before_fitting() -> None:
    X, y, site, cov = combat_cohort(seed=8)
    disease = pd.Series(y.astype(str), name="disease")
    # a site holding a single class while others mix them: strong, warned with the site named
    only_cases = np.where(site == "site3", "1", disease)
    with pytest.warns(HarmonizationWarning, match="site site3: .* all 1"):
        ih.ComBat().fit(
            X, batch=site, covariates=pd.DataFrame({"disease": only_cases}), biology="disease"
        )
    # every site holding one class: complete confounding (a rank-deficient design), refused
    one_each = np.where(np.isin(site, ["site0", "site1"]), "0", "1")
    with pytest.raises(DesignError, match="disease"):
        ih.ComBat().fit(
            X, batch=site, covariates=pd.DataFrame({"disease": one_each}), biology="disease"
        )
    # the biology named but not given as a covariate: ComBat would remove it
    with pytest.warns(HarmonizationWarning, match="not among the covariates"):
        ih.ComBat().fit(X, batch=site, covariates=cov[["age"]], biology=disease)
    # given as a covariate: strong (not complete) confounding is reported and the fit proceeds
    rng = np.random.default_rng(0)
    skewed = (
        np.where(
            np.isin(site, ["site0", "site1"]),
            rng.random(site.size) < 0.1,
            rng.random(site.size) < 0.9,
        )
        .astype(int)
        .astype(str)
    )
    cov = cov.assign(disease=skewed)
    with pytest.warns(HarmonizationWarning, match="strong confounding of site with the biology"):
        model = ih.ComBat().fit(X, batch=site, covariates=cov, biology="disease")
    assert model.covariate_columns_ == ["age", "disease[1]"]


def test_acquisitions_that_measure_different_things_are_refused() -> None:
    from imharmony.physics.compatibility import NotHarmonizableError

    X, _, site, _ = combat_cohort(seed=9)
    t1 = {"RepetitionTime": 500.0, "EchoTime": 12.0, "ScanningSequence": "SE"}
    t2 = {"RepetitionTime": 4000.0, "EchoTime": 100.0, "ScanningSequence": "SE"}
    mixed = pd.DataFrame([t1 if s in ("site0", "site1") else t2 for s in site])
    with pytest.raises(NotHarmonizableError, match="T1w"):
        ih.ComBat().fit(X, batch=site, acquisitions=mixed)
    # the same weighting everywhere (TR varying by 10%) is harmonizable
    same = pd.DataFrame([{**t1, "RepetitionTime": 500.0 + 50 * (s == "site2")} for s in site])
    ih.ComBat().fit(X, batch=site, acquisitions=same)
    # only a fitted AcquisitionMapping between these acquisitions lifts the refusal
    # (tests/calibration/test_mapping.py); any other object is refused
    with pytest.raises(DataError, match=r"fitted imharmony\.AcquisitionMapping"):
        ih.ComBat().fit_transform(X, batch=site, acquisitions=mixed, mapping=object())
