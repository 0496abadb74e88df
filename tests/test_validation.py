"""One validation for every caller: ComBat, the diagnostics and the CLI agree on the same input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony._validation import (
    CovariateEncoder,
    encode_labels,
    factorize_labels,
    label_text,
    require_columns,
    sorted_levels,
    split_feature_table,
)
from imharmony.diagnostics import diagnose
from imharmony.errors import DataError, DesignError


def test_label_rule_one_and_text_one_are_one_site():
    assert label_text(1) == label_text(1.0) == label_text(np.int64(1)) == label_text("1") == "1"
    assert label_text("1.0") != label_text(1)
    codes, keys = factorize_labels(np.array([2, "1", 1, 1.0, "b", 2.0], dtype=object))
    assert codes.tolist() == [0, 1, 1, 1, 2, 0]
    assert keys == [2, "1", "b"]
    assert sorted_levels([10, "b", 2, "a", 2.0]) == [2, 10, "a", "b"]
    codes, unseen = encode_labels(["1", 3, "x"], [1, 2, 3])
    assert codes.tolist() == [0, 2, -1] and unseen == ["x"]


def test_covariate_encoder_names_and_booleans():
    cov = pd.DataFrame({"age": [50.0, 60, 70, 80], "sex": ["F", "M", "F", "M"],
                        "smoker": [True, False, False, True]})
    enc, _ = CovariateEncoder.learn(cov, 4)
    assert enc.columns == ["age", "sex[M]", "smoker[True]"]
    np.testing.assert_array_equal(enc.encode(cov, 4)[:, 2], [1, 0, 0, 1])
    with pytest.raises(DesignError, match="single level"):
        CovariateEncoder.learn(cov.assign(sex="F"), 4)
    dropped, _ = CovariateEncoder.learn(cov.assign(sex="F"), 4, single_level="drop")
    assert dropped.columns == ["age", "smoker[True]"]


def test_combat_and_diagnose_agree_on_sites_and_design_columns():
    rng = np.random.default_rng(0)
    n = 60
    # the same site written as a number and as text in one column (a merged spreadsheet)
    site = np.array([1, "1", 2, "2", 3, "3"] * 10, dtype=object)
    cov = pd.DataFrame({"age": rng.uniform(30, 80, n), "sex": rng.choice(["F", "M"], n),
                        "smoker": rng.random(n) < 0.4})
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ih.ComBat().fit(X, batch=site, covariates=cov)
        after = model.transform(X, batch=site, covariates=cov)
    d = diagnose(X, after, batch=site, covariates=cov, n_permutations=0, random_state=0,
                 max_features=0)
    assert [label_text(s) for s in model.batches_] == ["1", "2", "3"]
    assert d.n_sites == 3
    assert d.confounding.site_sizes.index.tolist() == ["1", "2", "3"]
    assert model.covariate_columns_ == ["age", "sex[M]", "smoker[True]"]
    assert d.site_after.summary["residualized_on"] == model.covariate_columns_


def test_split_feature_table_roles_pyradiomics_and_excludes():
    df = pd.DataFrame({
        "id": ["s1", "s2", "s3"], "site": ["a", "b", "a"], "age": [1.0, 2, 3],
        "diagnostics_Image-original_Mean": [1.0, 2, 3], "diagnostics_Versions_PyRadiomics": "3",
        "original_firstorder_Mean": [0.1, 0.2, 0.3], "original_shape_Volume": [5.0, 6, 7],
        "scan_no": [7, 8, 9]})
    cols = split_feature_table(df, ["site", "age"], exclude=["scan_*"], source="t.csv")
    assert cols.features == ["original_firstorder_Mean", "original_shape_Volume"]
    assert cols.excluded == ["diagnostics_Image-original_Mean",
                             "diagnostics_Versions_PyRadiomics", "scan_no"]
    assert cols.passthrough == ["id"]


def test_a_mostly_numeric_column_with_bad_cells_is_an_error_naming_row_and_value():
    df = pd.DataFrame({"site": ["a", "b", "a", "b", "a"],
                       "vol": ["1.5", "2", "#NAME?", "4", "5"], "id": list("vwxyz")})
    with pytest.raises(DataError, match=r"t.csv: column 'vol' is numeric except for the value "
                                        r"'#NAME\?' at data row 3"):
        split_feature_table(df, ["site"], source="t.csv")
    # a text column that is mostly text is an id, carried along
    assert split_feature_table(df.drop(columns="vol").assign(f=1.0), ["site"]).passthrough == ["id"]


def test_require_columns_suggests_close_names():
    df = pd.DataFrame({"site": [1], "Age": [2], "original_glcm_Contrast": [3.0]})
    with pytest.raises(DataError, match=r"'age' \(did you mean 'Age'\?\)"):
        require_columns(df, ["age"], "t.csv", "covariate")
    with pytest.raises(DataError, match=r"'stie' \(did you mean 'site'\?\)"):
        require_columns(df, ["stie"], "t.csv", "batch")


def test_fitted_models_hold_new_data_to_their_feature_columns_with_one_rule():
    """ComBat, LongitudinalComBat, TravellingSubjects and AcquisitionMapping: same verdicts."""
    rng = np.random.default_rng(3)
    n = 24
    X = pd.DataFrame(rng.normal(10, 1, (n, 3)), columns=["a", "b", "c"])
    site = np.tile(["s1", "s2", "s3"], n // 3)
    subject = np.repeat([f"p{i}" for i in range(n // 3)], 3)
    cov = pd.DataFrame({"time": rng.uniform(0, 2, n)})
    models = {
        "ComBat": (ih.ComBat().fit(X, batch=site), {"batch": site}),
        "LongitudinalComBat": (
            ih.LongitudinalComBat(formula="time").fit(X, batch=site, covariates=cov,
                                                      subject=subject),
            {"batch": site, "covariates": cov, "subject": subject},
        ),
        "TravellingSubjects": (
            ih.TravellingSubjects(validate=False).fit(X, site=site, subject=subject),
            {"site": site},
        ),
        "AcquisitionMapping": (
            ih.AcquisitionMapping(random_state=0).fit(
                X, 2 * X + 1, source={"EchoTime": 10.0}, target={"EchoTime": 90.0}
            ),
            {},
        ),
    }
    cases = [
        (X[["a", "b"]], r"X has 2 features but the model was fitted on 3; give the feature"),
        (X[["a", "c", "b"]], r"differ from those at fit: same names in a different order"),
        (X.rename(columns={"c": "d"}), r"differ from those at fit: missing 'c'; unexpected 'd'"),
    ]
    for name, (model, side) in models.items():
        for bad, message in cases:
            with pytest.raises(DataError, match=message):
                model.transform(bad, **side)
        # a plain array is checked on its count only, and the names out are those seen at fit
        assert np.isfinite(model.transform(X.to_numpy(), **side)).all(), name
        if hasattr(model, "get_feature_names_out"):
            assert list(model.get_feature_names_out()) == ["a", "b", "c"], name
