"""One API-conformance suite for every harmonizer that shares the fit/transform/save contract.

(In the manner of nibabel's image API tests.) Each entry of HARMONIZERS is a factory; every test
runs on every entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony.errors import (
    DataError,
    HarmonizationWarning,
    ModelFileError,
    NotFittedError,
    UnseenBatchError,
)

HARMONIZERS: dict[str, Callable[[], Any]] = {
    "combat-parametric": lambda: ih.ComBat(),
    "combat-nonparametric": lambda: ih.ComBat(nonparametric=True),
    "combat-mean-only": lambda: ih.ComBat(mean_only=True),
    "combat-mean-only-nonparametric": lambda: ih.ComBat(mean_only=True, nonparametric=True),
    "combat-reference": lambda: ih.ComBat(reference_batch="B"),
    "combat-no-eb": lambda: ih.ComBat(eb=False),
}


@pytest.fixture(params=sorted(HARMONIZERS))
def make(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return HARMONIZERS[request.param]


@pytest.fixture
def data() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(42)
    sites = np.repeat(["A", "B", "C"], [15, 20, 25])
    n = sites.size
    cov = pd.DataFrame(
        {"age": rng.uniform(20, 80, n), "sex": rng.choice(["F", "M"], n)},
        index=pd.RangeIndex(100, 100 + n),
    )
    X = rng.normal(10, 2, (n, 8)) + 0.05 * cov["age"].to_numpy()[:, None]
    X += np.select([sites == "A", sites == "B"], [0.0, 3.0], -2.0)[:, None]
    frame = pd.DataFrame(X, columns=[f"feat{i}" for i in range(8)], index=cov.index)
    return frame, pd.Series(sites, index=cov.index, name="site"), cov


def test_fit_returns_self_and_learned_attributes(make, data) -> None:
    X, site, cov = data
    model = make()
    assert model.fit(X, batch=site, covariates=cov) is model
    assert list(model.batches_) == ["A", "B", "C"]
    assert model.n_features_in_ == 8
    assert list(model.get_feature_names_out()) == list(X.columns)


def test_transform_keeps_frame_shape_index_and_columns(make, data) -> None:
    X, site, cov = data
    out = make().fit(X, batch=site, covariates=cov).transform(X, batch=site, covariates=cov)
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(X.index) and list(out.columns) == list(X.columns)
    assert np.isfinite(out.to_numpy()).all()
    arr = make().fit(X.to_numpy(), batch=site.to_numpy(), covariates=cov)
    assert isinstance(
        arr.transform(X.to_numpy(), batch=site.to_numpy(), covariates=cov), np.ndarray
    )


def test_learn_on_train_equals_apply_to_train(make, data) -> None:
    X, site, cov = data
    a = make().fit_transform(X, batch=site, covariates=cov)
    b = make().fit(X, batch=site, covariates=cov).transform(X, batch=site, covariates=cov)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_inputs_are_not_modified(make, data) -> None:
    X, site, cov = data
    X0, site0, cov0 = X.copy(), site.copy(), cov.copy()
    make().fit_transform(X, batch=site, covariates=cov)
    pd.testing.assert_frame_equal(X, X0)
    pd.testing.assert_series_equal(site, site0)
    pd.testing.assert_frame_equal(cov, cov0)


def _npz(path: Path) -> Path:
    (npz,) = path.parent.glob(f"{path.stem}.*.npz")
    return npz


def test_save_load_round_trip(make, data, tmp_path: Path) -> None:
    X, site, cov = data
    model = make().fit(X, batch=site, covariates=cov)
    path = model.save(tmp_path / "model.json")
    npz = _npz(path)
    assert npz.name == f"model.{json.loads(path.read_text())['arrays']['sha256'][:16]}.npz"
    loaded = type(model).load(path)
    assert loaded.get_params() == model.get_params()
    pd.testing.assert_frame_equal(
        loaded.transform(X, batch=site, covariates=cov),
        model.transform(X, batch=site, covariates=cov),
        check_exact=True,
    )
    text = path.read_text()
    assert "pickle" not in text
    with np.load(npz, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    # saving again replaces the model as a whole: one manifest, one arrays file
    make().fit(X.iloc[::-1], batch=site.iloc[::-1], covariates=cov.iloc[::-1]).save(path)
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == "model.json"
    assert len(list(tmp_path.glob("model.*.npz"))) == 1
    assert not list(tmp_path.glob(".*"))

def test_unseen_site_is_an_error_naming_it(make, data) -> None:
    X, site, cov = data
    model = make().fit(X, batch=site, covariates=cov)
    other = site.where(site != "C", "Z")
    with pytest.raises(UnseenBatchError, match="'Z'"):
        model.transform(X, batch=other, covariates=cov)


def test_not_fitted_is_a_clear_error(make, data) -> None:
    X, site, cov = data
    with pytest.raises(NotFittedError, match="not fitted"):
        make().transform(X, batch=site, covariates=cov)


def test_nan_policy_missing_stays_missing(make, data) -> None:
    X, site, cov = data
    X = X.copy()
    X.iloc[[3, 17, 40], [1, 1, 5]] = np.nan
    out = make().fit_transform(X, batch=site, covariates=cov)
    assert out.isna().equals(X.isna())


def test_model_file_errors(data, tmp_path: Path) -> None:
    X, site, cov = data
    path = ih.ComBat().fit(X, batch=site, covariates=cov).save(tmp_path / "m.json")
    doc = json.loads(path.read_text())

    def write(d: dict[str, Any]) -> Path:
        p = tmp_path / "m.json"
        p.write_text(json.dumps(d))
        return p

    with pytest.raises(ModelFileError, match=r"version 99 is not supported.*re-fit"):
        ih.ComBat.load(write({**doc, "kind_version": 99}))
    with pytest.raises(ModelFileError, match=r"not a .imharmony\.combat. model"):
        ih.ComBat.load(write({**doc, "kind": "imharmony.other"}))
    with pytest.raises(ModelFileError, match="not an imharmony model file"):
        ih.ComBat.load(write({**doc, "format": "something.else"}))
    with pytest.raises(ModelFileError, match=r"older imharmony.*re-fit"):
        ih.ComBat.load(write({"format": "imharmony.combat", "format_version": 1}))
    # every field that changes results is under the checksum, which names it
    for field, value in [
        ("batches", ["A", "C", "B"]),
        ("feature_names", [f"feat{i}" for i in (1, 0, 2, 3, 4, 5, 6, 7)]),
        ("reference_index", 1),
        ("covariates", doc["content"]["covariates"][::-1]),
        ("params", {**doc["content"]["params"], "mean_only": True}),
    ]:
        bad = json.loads(json.dumps(doc))
        bad["content"][field] = value
        with pytest.raises(ModelFileError, match=f"'{field}' do not match their checksum"):
            ih.ComBat.load(write(bad))
    write(doc)
    npz = _npz(path)
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum"):
        ih.ComBat.load(path)
    npz.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        ih.ComBat.load(path)
    path.write_text("{not json")
    with pytest.raises(ModelFileError, match="invalid JSON"):
        ih.ComBat.load(path)
    with pytest.raises(ModelFileError, match="no such model file"):
        ih.ComBat.load(tmp_path / "absent.json")


def test_tampered_fields_are_type_checked_by_name(data, tmp_path: Path) -> None:
    """A stranger's file with consistent checksums but bad fields: refused naming the field."""
    from imharmony._persist import _digest

    X, site, cov = data
    path = ih.ComBat().fit(X, batch=site, covariates=cov).save(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    cases = {
        "batches": [["A"], ["A", "A", "B"], "ABC", [["A"], "B", "C"]],
        "n_features": [-1, "8", 8.0, True],
        "feature_names": [["a"], [1, 2, 3, 4, 5, 6, 7, 8]],
        "reference_index": [7, "0"],
        "covariates": [[{"name": "sex", "kind": "categorical", "levels": ["F"]}], [1], "x"],
        "reasons": [{"99": "x"}, {"a": "x"}],
        "params": [{"tol": "x"}, {"reference_batch": ["A"]}, {"bogus": 1}, []],
        "metadata": [[1]],
    }
    for field, values in cases.items():
        for value in values:
            bad = json.loads(json.dumps(doc))
            bad["content"][field] = value
            bad["checksums"][field] = _digest(value)
            path.write_text(json.dumps(bad))
            with pytest.raises(ModelFileError, match=f"field '{field}'"):
                ih.ComBat.load(path)


def test_array_sizes_are_checked_before_reading(data, tmp_path: Path) -> None:
    """A model claiming huge arrays is refused from the sizes alone (no allocation)."""
    from imharmony._persist import _digest

    X, site, cov = data
    path = ih.ComBat().fit(X, batch=site, covariates=cov).save(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    doc["content"]["n_features"] = 10**9
    doc["content"]["feature_names"] = None
    doc["checksums"]["n_features"] = _digest(10**9)
    doc["checksums"]["feature_names"] = _digest(None)
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="'grand_mean' is declared as"):
        ih.ComBat.load(path)


def test_invalid_parameters_get_one_message(data) -> None:
    X, site, cov = data
    for kwargs, text in [
        ({"reference_batch": ["A"]}, "'reference_batch' parameter of ComBat must be one site"),
        ({"tol": 0}, "'tol' parameter of ComBat must be a finite number > 0"),
        ({"max_iter": 1.5}, "'max_iter' parameter of ComBat must be an int >= 1"),
        ({"eb": "yes"}, "'eb' parameter of ComBat must be a bool"),
    ]:
        with pytest.raises(ih.HarmonizationError, match=text):
            ih.ComBat(**kwargs).fit(X, batch=site, covariates=cov)


def test_feature_missing_in_a_whole_site_is_left_unchanged_as_the_warning_says(data) -> None:
    X, site, cov = data
    X = X.copy()
    X.loc[site == "B", "feat3"] = np.nan
    with pytest.warns(HarmonizationWarning, match=r"'feat3': the design is singular on its "
                      r"observed values \(e.g. no value in a whole site\); left unchanged"):
        out = ih.ComBat().fit_transform(X, batch=site, covariates=cov)
    pd.testing.assert_series_equal(out["feat3"], X["feat3"])  # unchanged, NaN where missing
    assert out.drop(columns="feat3").notna().all().all()
    # the other features are harmonized as without the damaged one
    ref = ih.ComBat().fit_transform(X.drop(columns="feat3"), batch=site, covariates=cov)
    pd.testing.assert_frame_equal(out.drop(columns="feat3"), ref, rtol=1e-10)


def test_infinite_covariate_is_a_data_error(data) -> None:
    X, site, cov = data
    cov = cov.copy()
    cov.iloc[4, 0] = np.inf
    with pytest.raises(DataError, match="covariate column 'age' has infinite values"):
        ih.ComBat().fit(X, batch=site, covariates=cov)


def test_every_public_exception_is_importable_from_errors() -> None:
    import imharmony.errors as errors

    for name in errors.__all__:
        obj = getattr(errors, name)
        if name == "optional_import":
            with pytest.raises(errors.OptionalDependencyError, match=r"pip install imh\[x\]"):
                obj("imharmony_no_such_module", "testing", "imh[x]")
        else:
            assert issubclass(obj, errors.HarmonizationError | errors.HarmonizationWarning), name
    from imharmony.io.dicom import DicomError
    from imharmony.io.rasters import OptionalDependencyError

    assert errors.DicomError is DicomError
    assert errors.OptionalDependencyError is OptionalDependencyError
