"""ComBat with smooth (GAM) covariates: parity with neuroHarmonize 2.5.2, the spline maths, new
samples, penalty selection and persistence."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from _support.cohorts import smooth_age_cohort
from imharmony.errors import DataError, DesignError, HarmonizationWarning
from imharmony.features.gam import SmoothTerm, bspline_knots

FIXTURES = Path(__file__).resolve().parents[1] / "reference" / "combat_gam" / "fixtures"
CASES = json.loads((FIXTURES / "cases.json").read_text())


def _read(path: Path) -> pd.DataFrame:
    # 17-digit fixtures: pandas 3's default parser is exact, pandas 2 needs round_trip
    if int(pd.__version__.split(".")[0]) < 3:
        return pd.read_csv(path, float_precision="round_trip")
    return pd.read_csv(path)


@pytest.mark.reference
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_equals_neuroharmonize_given_its_penalties(case: dict) -> None:
    d = FIXTURES / case["name"]
    X, samples = _read(d / "data.csv"), _read(d / "samples.csv")
    alphas, expected = _read(d / "alphas.csv"), _read(d / "expected.csv")
    cov = samples.drop(columns="SITE")
    cov["sex"] = np.where(cov["sex"] == 1, "M", "F")  # categorical here, 0/1 in neuroHarmonize
    model = ih.ComBat(
        smooth=case["smooth"],
        smooth_penalty=alphas[case["smooth"]].to_numpy(),
        smooth_bounds=tuple(case["bounds"]) if case["bounds"] else None,
        eb=case["eb"],
    )
    out = model.fit_transform(X, batch=samples["SITE"], covariates=cov)
    rel = np.abs(out.to_numpy() - expected.to_numpy()) / np.abs(expected.to_numpy())
    assert rel.max() < 1e-8
    # and the harmonization did something: the output is not the input
    assert np.abs(out.to_numpy() - X.to_numpy()).max() > 1e-3 * np.abs(X.to_numpy()).max()


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(5, 12),
    st.sampled_from([2, 3, 4]),
)
def test_basis_partition_and_penalty_null_space(seed: int, df: int, degree: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 40, 60)
    if df < degree + 1:
        return
    term = SmoothTerm(bspline_knots(x, df, degree), degree)
    B = term.basis(x)
    assert B.shape == (60, df - 1)
    # with the dropped first B-spline the basis is a partition of unity
    full = np.column_stack([1.0 - B.sum(axis=1), B])
    assert full.min() > -1e-12
    S = term.penalty()
    assert np.allclose(S, S.T) and np.linalg.eigvalsh(S).min() > -1e-9 * np.abs(S).max()
    # straight lines have no curvature: Greville abscissae are the coefficients of x
    t, k = term.knots, degree
    grev = np.array([t[i + 1 : i + k + 1].mean() for i in range(t.size - k - 1)])
    c = grev[1:] - grev[0]  # x - x0 in the basis without its first column
    assert np.allclose(B @ c, x - grev[0], atol=1e-9 * np.abs(x).max())
    assert abs(c @ S @ c) <= 1e-8 * np.abs(S).max() * (c @ c)


def test_huge_penalty_is_linear_combat() -> None:
    X, site, cov = smooth_age_cohort()
    # 1e11: large enough to reach the linear limit (measured max |gam - lin| / std: 7e-8 to
    # 5e-7 over six cohorts), small enough that the solve's round-off stays below it (at 1e13 it
    # is 1e-5 for any cohort, 8e-6 to 2e-5 depending on the draw; at 1e15, 5e-4)
    gam = ih.ComBat(smooth=["age"], smooth_penalty=1e11).fit_transform(
        X, batch=site, covariates=cov
    )
    lin = ih.ComBat().fit_transform(X, batch=site, covariates=cov)
    assert np.abs(gam.to_numpy() - lin.to_numpy()).max() < 1e-5 * X.to_numpy().std()
    curvy = ih.ComBat(smooth=["age"], smooth_penalty=1.0).fit_transform(
        X, batch=site, covariates=cov
    )
    assert np.abs(curvy.to_numpy() - lin.to_numpy()).max() > 1e-2


def test_per_feature_penalties_equal_separate_fits() -> None:
    X, site, cov = smooth_age_cohort(G=4)
    alphas = np.array([0.5, 30.0, 30.0, 2e4])
    both = ih.ComBat(smooth=["age"], smooth_penalty=alphas, eb=False).fit_transform(
        X, batch=site, covariates=cov
    )
    for g, a in enumerate(alphas):
        one = ih.ComBat(smooth=["age"], smooth_penalty=float(a), eb=False).fit_transform(
            X.iloc[:, [g]], batch=site, covariates=cov
        )
        np.testing.assert_allclose(both.iloc[:, g], one.iloc[:, 0], rtol=1e-11)


def test_penalty_selection_is_reproducible_and_seeded() -> None:
    X, site, cov = smooth_age_cohort(G=8)
    a = ih.ComBat(smooth=["age"], random_state=3).fit(X, batch=site, covariates=cov)
    b = ih.ComBat(smooth=["age"], random_state=3).fit(X, batch=site, covariates=cov)
    np.testing.assert_array_equal(a.smooth_penalty_, b.smooth_penalty_)
    default = [ih.ComBat(smooth=["age"]).fit(X, batch=site, covariates=cov) for _ in range(2)]
    np.testing.assert_array_equal(default[0].smooth_penalty_, default[1].smooth_penalty_)
    g = ih.ComBat(smooth=["age"], smooth_penalty="gcv").fit(X, batch=site, covariates=cov)
    assert g.smooth_penalty_.shape == (8, 1) and np.all(g.smooth_penalty_ > 0)
    # the selected penalty predicts held-out samples better than extreme ones
    assert np.all(a.smooth_penalty_ < 1e10) and np.all(a.smooth_penalty_ > 1e-4)


def test_new_samples_beyond_the_range_extrapolate_linearly_with_a_warning() -> None:
    X, site, cov = smooth_age_cohort()
    model = ih.ComBat(smooth=["age"], smooth_penalty=10.0).fit(X, batch=site, covariates=cov)
    ages = np.array([90.0, 100.0, 110.0, 5.0, 0.0, -5.0])
    new_cov = pd.DataFrame({"age": ages, "sex": ["F"] * 6})
    new_X = pd.DataFrame(np.zeros((6, X.shape[1])), columns=X.columns)
    with pytest.warns(HarmonizationWarning, match="outside the fitted range"):
        out = model.transform(new_X, batch=["a"] * 6, covariates=new_cov).to_numpy()
    assert np.isfinite(out).all()
    # equal steps in age beyond a bound give equal steps in the output (linear continuation)
    np.testing.assert_allclose(out[1] - out[0], out[2] - out[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out[4] - out[3], out[5] - out[4], rtol=1e-9, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.transform(X, batch=site, covariates=cov)  # inside the range: no warning


def test_save_load_keeps_knots_and_penalties(tmp_path: Path) -> None:
    X, site, cov = smooth_age_cohort()
    model = ih.ComBat(smooth=["age"], smooth_penalty="gcv").fit(X, batch=site, covariates=cov)
    path = model.save(tmp_path / "gam.json")
    back = ih.ComBat.load(path)
    np.testing.assert_array_equal(back.smooth_penalty_, model.smooth_penalty_)
    np.testing.assert_array_equal(
        back.transform(X, batch=site, covariates=cov),
        model.transform(X, batch=site, covariates=cov),
    )
    assert back.covariate_columns_[0] == "age[s1]" and len(back.covariate_columns_) == 10
    assert back.covariate_spec_[0]["knots"] == model.covariate_spec_[0]["knots"]


def test_gam_file_is_type_checked_in_the_model_envelope(tmp_path: Path) -> None:
    from imharmony._persist import _digest
    from imharmony.errors import ModelFileError

    X, site, cov = smooth_age_cohort()
    path = ih.ComBat(smooth=["age"], smooth_penalty=5.0).fit(X, batch=site, covariates=cov).save(
        tmp_path / "gam.json"
    )
    good = json.loads(path.read_text())
    edits = {  # consistent checksums, inconsistent content: each names its field
        "covariates": lambda c: c["covariates"][0].update(knots=c["covariates"][0]["knots"][::-1]),
        "params": lambda c: c["params"].update(smooth_degree=1),
    }
    for field, edit in edits.items():
        doc = json.loads(json.dumps(good))
        edit(doc["content"])
        doc["checksums"][field] = _digest(doc["content"][field])
        path.write_text(json.dumps(doc))
        with pytest.raises(ModelFileError, match=f"field '{field}'"):
            ih.ComBat.load(path)
    edited = json.loads(json.dumps(good))
    edited["content"]["covariates"][0]["knots"][-1] += 1.0  # without re-signing
    path.write_text(json.dumps(edited))
    with pytest.raises(ModelFileError, match="covariates"):
        ih.ComBat.load(path)


def test_missing_values_with_a_given_penalty() -> None:
    X, site, cov = smooth_age_cohort()
    Xm = X.copy()
    Xm.iloc[3, 1] = np.nan
    out = ih.ComBat(smooth=["age"], smooth_penalty=10.0).fit_transform(
        Xm, batch=site, covariates=cov
    )
    assert np.isnan(out.iloc[3, 1]) and np.isfinite(out.drop(index=3)).all().all()
    full = ih.ComBat(smooth=["age"], smooth_penalty=10.0).fit_transform(
        X, batch=site, covariates=cov
    )
    # the complete features are estimated exactly as without the missing value in feature 1
    # except for the EB priors they share: close, not identical
    assert np.abs(out.iloc[:, 0] - full.iloc[:, 0]).max() < 0.05
    with pytest.raises(DataError, match="missing values"):
        ih.ComBat(smooth=["age"]).fit(Xm, batch=site, covariates=cov)


def test_two_smooth_terms_and_bad_input() -> None:
    X, site, cov = smooth_age_cohort()
    cov["bmi"] = np.random.default_rng(1).normal(25, 4, len(cov))
    m = ih.ComBat(smooth=["age", "bmi"], smooth_penalty="gcv").fit(X, batch=site, covariates=cov)
    assert m.smooth_penalty_.shape == (X.shape[1], 2)
    with pytest.raises(DataError, match="'weight'"):
        ih.ComBat(smooth=["weight"]).fit(X, batch=site, covariates=cov)
    with pytest.raises(DesignError, match="must contain its training values"):
        ih.ComBat(smooth=["age"], smooth_bounds=(30, 60)).fit(X, batch=site, covariates=cov)
    with pytest.raises(DesignError, match="ambiguous"):
        ih.ComBat(smooth=["age", "bmi"], smooth_bounds=(0, 100)).fit(X, batch=site, covariates=cov)
    with pytest.raises(ih.HarmonizationError, match="smooth_penalty"):
        ih.ComBat(smooth=["age"], smooth_penalty="reml").fit(X, batch=site, covariates=cov)
    with pytest.raises(DataError, match="one value per feature"):
        ih.ComBat(smooth=["age"], smooth_penalty=[1.0, 2.0]).fit(X, batch=site, covariates=cov)


def test_selection_survives_a_level_missing_from_a_training_fold() -> None:
    X, site, cov = smooth_age_cohort()
    # one sample of "old": its fold's training set has none
    cov["scanner_rev"] = ["old"] + ["new"] * (len(cov) - 1)
    model = ih.ComBat(smooth=["age"]).fit(X, batch=site, covariates=cov)
    assert np.isfinite(model.smooth_penalty_).all()
    assert np.isfinite(model.transform(X, batch=site, covariates=cov).to_numpy()).all()
