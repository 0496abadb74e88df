"""Longitudinal ComBat: new visits and subjects, persistence, errors and the REML maths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import imharmony as ih
from _support.cohorts import longitudinal_cohort
from imharmony.errors import (
    DataError,
    DesignError,
    HarmonizationError,
    ModelFileError,
    NotFittedError,
    UnseenBatchError,
)
from imharmony.features._reml import MixedDesign, _profile, fit_reml


@pytest.mark.parametrize("random", ["intercept", "slope"])
def test_learn_on_train_equals_apply_to_train(random: str) -> None:
    X, scanner, cov, subject = longitudinal_cohort()
    model = ih.LongitudinalComBat(random=random)
    a = model.fit_transform(X, batch=scanner, covariates=cov, subject=subject)
    b = model.transform(X, batch=scanner, covariates=cov, subject=subject)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert model.get_params()["random"] == random
    assert model.theta_.shape == (X.shape[1], 1 if random == "intercept" else 3)
    # the scanner shifts (B +2, C -1.5 against A) are found, and gone once harmonized
    assert np.ptp(model.batch_effects_.mean(axis=1)) > 2.0
    again = ih.LongitudinalComBat(random=random).fit(
        a, batch=scanner, covariates=cov, subject=subject
    )
    assert np.ptp(again.batch_effects_.mean(axis=1)) < 0.1 * np.ptp(
        model.batch_effects_.mean(axis=1)
    )


@pytest.mark.parametrize("random", ["intercept", "slope"])
def test_a_new_subject_gets_the_random_effects_it_would_have_had(random: str) -> None:
    """Relabelling training subjects as unknown gives the same output: the random effects
    predicted from their visits with the fitted model are the fitted ones."""
    X, scanner, cov, subject = longitudinal_cohort(seed=1)
    model = ih.LongitudinalComBat(random=random).fit(
        X, batch=scanner, covariates=cov, subject=subject
    )
    known = model.transform(X, batch=scanner, covariates=cov, subject=subject)
    renamed = subject.where(~subject.isin(["sub-001", "sub-002", "sub-007"]), "new-" + subject)
    as_new = model.transform(X, batch=scanner, covariates=cov, subject=renamed)
    np.testing.assert_allclose(as_new.to_numpy(), known.to_numpy(), rtol=0, atol=1e-9)


def test_new_visits_are_harmonized_like_a_fit_that_saw_them() -> None:
    X, scanner, cov, subject = longitudinal_cohort(seed=2, n_subjects=60)
    rng = np.random.default_rng(3)
    held = rng.random(len(X)) < 0.15  # new visits of known subjects
    newsub = subject.isin([f"sub-{i:03d}" for i in range(50, 60)]).to_numpy()  # new subjects
    train = ~held & ~newsub
    model = ih.LongitudinalComBat(formula="age + diagnosis*time").fit(
        X[train], batch=scanner[train], covariates=cov[train], subject=subject[train]
    )
    full = ih.LongitudinalComBat(formula="age + diagnosis*time").fit_transform(
        X, batch=scanner, covariates=cov, subject=subject
    )
    test = ~train
    out = model.transform(X[test], batch=scanner[test], covariates=cov[test], subject=subject[test])
    sd = X.std().to_numpy()
    before = np.abs(X[test].to_numpy() - full[test].to_numpy()) / sd
    after = np.abs(out.to_numpy() - full[test].to_numpy()) / sd
    # measured: median 0.042 SD from the full fit, against 0.38 SD before harmonization
    assert np.median(after) < 0.2 * np.median(before), (np.median(after), np.median(before))


def test_save_load_round_trip(tmp_path: Path) -> None:
    X, scanner, cov, subject = longitudinal_cohort()
    model = ih.LongitudinalComBat(random="slope", sigma="msr", n_iter=10).fit(
        X, batch=scanner, covariates=cov, subject=subject
    )
    path = model.save(tmp_path / "long.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "imharmony.longitudinal_combat"
    loaded = ih.LongitudinalComBat.load(path)
    assert loaded.get_params() == model.get_params()
    renamed = subject.where(subject != "sub-003", "new")
    for subj in (subject, renamed):
        pd.testing.assert_frame_equal(
            loaded.transform(X, batch=scanner, covariates=cov, subject=subj),
            model.transform(X, batch=scanner, covariates=cov, subject=subj),
            check_exact=True,
        )
    with pytest.raises(ModelFileError, match=r"not a 'imharmony\.combat' model"):
        ih.ComBat.load(path)
    from imharmony._persist import _digest

    extra = doc["content"]["longitudinal"]
    extra["subjects"] = extra["subjects"][:-1]  # a consistent-looking but edited file
    doc["checksums"]["longitudinal"] = _digest(extra)
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="long_random_effects"):
        ih.LongitudinalComBat.load(path)


def test_errors_name_the_column_and_the_fix() -> None:
    X, scanner, cov, subject = longitudinal_cohort()
    kw = {"batch": scanner, "subject": subject}
    with pytest.raises(DataError, match="'sex' is not a column"):
        ih.LongitudinalComBat(formula="age + sex").fit(X, covariates=cov, **kw)
    with pytest.raises(DataError, match="time column 'visit'"):
        ih.LongitudinalComBat(random="slope", time="visit", formula="age").fit(
            X, covariates=cov, **kw
        )
    with pytest.raises(HarmonizationError, match="'random'"):
        ih.LongitudinalComBat(random="curve").fit(X, covariates=cov, **kw)
    with pytest.raises(HarmonizationError, match="'sigma'"):
        ih.LongitudinalComBat(sigma="ml").fit(X, covariates=cov, **kw)
    with pytest.raises(DesignError, match="left-hand side"):
        ih.LongitudinalComBat(formula="y ~ age").fit(X, covariates=cov, **kw)
    with pytest.raises(NotFittedError, match="not fitted"):
        ih.LongitudinalComBat().transform(X, covariates=cov, **kw)
    Xn = X.copy()
    Xn.iloc[0, 2] = np.nan
    with pytest.raises(DataError, match=r"'f2'.*missing"):
        ih.LongitudinalComBat().fit(Xn, covariates=cov, **kw)
    lone = scanner.copy()
    lone.iloc[0] = "Z"
    with pytest.raises(DesignError, match=r"'Z'.*single visit"):
        ih.LongitudinalComBat().fit(X, covariates=cov, batch=lone, subject=subject)
    model = ih.LongitudinalComBat().fit(X, covariates=cov, **kw)
    with pytest.raises(UnseenBatchError, match="'Z'"):
        model.transform(X, covariates=cov, batch=lone, subject=subject)
    odd = cov.assign(diagnosis=cov["diagnosis"].replace("AD", "FTD"))
    with pytest.raises(DataError, match="'FTD' not seen at fit"):
        model.transform(X, covariates=odd, **kw)
    with pytest.raises(DesignError, match="rank deficient"):
        ih.LongitudinalComBat(formula="age + age2").fit(
            X, covariates=cov.assign(age2=2 * cov["age"]), **kw
        )


def _dense_reml(X, Z, groups, y, theta):
    """The REML criterion written directly with the n x n covariance (the definition)."""
    n, p = X.shape
    q = Z.shape[1]
    L = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    L[rows[order], cols[order]] = theta
    V = np.eye(n)
    for s in np.unique(groups):
        r = groups == s
        V[np.ix_(r, r)] += Z[r] @ L @ L.T @ Z[r].T
    Vi = np.linalg.inv(V)
    XVX = X.T @ Vi @ X
    beta = np.linalg.solve(XVX, X.T @ Vi @ y)
    r = y - X @ beta
    return (
        (n - p) * np.log(r @ Vi @ r) + np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1]
    ), beta


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    theta=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
)
def test_vectorized_criterion_equals_the_dense_definition(seed: int, theta: list[float]) -> None:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(6), rng.integers(1, 5, 6))
    n = groups.size
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    t = rng.uniform(0, 3, n)
    y = rng.normal(size=n) + rng.normal(size=6)[groups]
    for Z, th in ((np.ones((n, 1)), theta[:1]), (np.column_stack([np.ones(n), t]), theta)):
        design = MixedDesign(X, groups, Z)
        dev, beta, _ = _profile(
            design,
            np.array([th]),
            X.T @ y[:, None],
            np.array([y @ y]),
            design.subject_sums(y[:, None]),
            coefficients=True,
        )
        ref_dev, ref_beta = _dense_reml(X, Z, groups, y, np.array(th))
        np.testing.assert_allclose(dev[0], ref_dev, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(beta[0], ref_beta, rtol=1e-8, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_random_intercept_reml_is_the_minimum_of_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(12), rng.integers(1, 5, 12))
    n = groups.size
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    Y = rng.normal(size=(n, 3)) + rng.normal(0, rng.uniform(0, 2), (12, 3))[groups]
    Z = np.ones((n, 1))
    fit = fit_reml(MixedDesign(X, groups, Z), Y)
    for g in range(3):
        res = optimize.minimize_scalar(
            lambda t, g=g: _dense_reml(X, Z, groups, Y[:, g], np.array([t]))[0],
            bounds=(0.0, 50.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        best = min(res.fun, _dense_reml(X, Z, groups, Y[:, g], np.array([0.0]))[0])
        ours = _dense_reml(X, Z, groups, Y[:, g], fit.theta[g])[0]
        assert ours <= best + 1e-9


def test_pipeline_routes_batch_covariates_and_subject_to_the_folds() -> None:
    import sklearn
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold, cross_validate
    from sklearn.pipeline import make_pipeline

    X, scanner, cov, subject = longitudinal_cohort(seed=4)
    y = cov["age"].to_numpy()
    with sklearn.config_context(enable_metadata_routing=True):
        harmonizer = (
            ih.LongitudinalComBat(formula="age + diagnosis*time")
            .set_fit_request(batch=True, covariates=True, subject=True)
            .set_transform_request(batch=True, covariates=True, subject=True)
        )
        pipe = make_pipeline(harmonizer, Ridge())
        res = cross_validate(
            pipe,
            X,
            y,
            cv=GroupKFold(3),
            params={"batch": scanner, "covariates": cov, "subject": subject, "groups": subject},
            return_estimator=True,
        )
    # each fold's harmonizer saw only its training subjects (the test subjects are new to it)
    seen = [set(est[0].subjects_) for est in res["estimator"]]
    assert all(len(s) < subject.nunique() for s in seen)
    assert set.union(*seen) == set(subject)
