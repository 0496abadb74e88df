"""One API-conformance suite for every harmonizer that shares the fit/transform/save contract.

(In the manner of nibabel's image API tests.) Each entry of HARMONIZERS is a factory; every test
runs on every entry.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import imharmony as ih
from imharmony import Image
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
    return _cohort()


def _cohort() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
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


# ------------------------------------------------------------------------------------------------
# The contract every harmonizer keeps, whatever its data: feature tables (ComBat) or images (the
# Nyúl standardizer). Each entry says how to build the estimator, its training data, how to fit
# it and how to apply it; every test below runs on every entry.


@dataclass(frozen=True)
class Contract:
    make: Callable[[], Any]
    data: Callable[[], Any]
    fit: Callable[[Any, Any], Any]  # fit(model, data) -> what fit returned
    apply: Callable[[Any, Any], np.ndarray]  # apply(model, data) -> the corrected values


def _scanners() -> tuple[list[Image], list[np.ndarray], Image, np.ndarray]:
    """Three training images of one anatomy from scanners with their own gain and offset (the
    masks cover the object, not the zero background), and a fourth image to standardize."""
    rng = np.random.default_rng(7)
    z, y, x = np.mgrid[-1:1:10j, -1:1:12j, -1:1:14j]
    inside = x**2 + y**2 + z**2 < 0.8
    tissue = np.where(x > 0, 60.0, 100.0) + 10 * z
    images, masks = [], []
    for gain, offset in [(1.0, 0.0), (1.6, 20.0), (0.7, -5.0), (2.2, 40.0)]:
        arr = np.where(inside, gain * tissue + offset, 0.0) + rng.normal(0, 2, inside.shape)
        images.append(Image(arr.astype(np.float32), spacing=(2.0, 1.0, 1.0),
                            meta={"history": [{"step": "earlier"}]}))
        masks.append(inside.copy())
    return images[:3], masks[:3], images[3], masks[3]


def _visits() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, np.ndarray]:
    """The cohort as 20 subjects with three visits each (one subject stays at one site)."""
    X, site, cov = _cohort()
    return X, site, cov, np.repeat([f"s{i:02d}" for i in range(20)], 3)


_FEATURES = Contract(
    make=ih.ComBat,
    data=_cohort,
    fit=lambda m, d: m.fit(d[0], batch=d[1], covariates=d[2]),
    apply=lambda m, d: m.transform(d[0], batch=d[1], covariates=d[2]).to_numpy(),
)


def _nyul(**params: Any) -> Contract:
    return Contract(
        make=lambda: ih.HistogramStandardizer(**params),
        data=_scanners,
        fit=lambda m, d: m.fit(d[0], d[1]),
        apply=lambda m, d: m.transform(d[2], d[3]).array,
    )


CONTRACTS: dict[str, Contract] = {
    "combat": _FEATURES,
    "combat-nonparametric-reference": Contract(
        lambda: ih.ComBat(nonparametric=True, reference_batch="B"), *astuple(_FEATURES)[1:]
    ),
    "covbat": Contract(lambda: ih.CovBat(n_components=3), *astuple(_FEATURES)[1:]),
    "covbat-reference-no-standardize": Contract(
        lambda: ih.CovBat(reference_batch="B", standardize_scores=False), *astuple(_FEATURES)[1:]
    ),
    "longitudinal-combat": Contract(
        lambda: ih.LongitudinalComBat(formula="age + sex"),
        _visits,
        lambda m, d: m.fit(d[0], batch=d[1], covariates=d[2], subject=d[3]),
        lambda m, d: m.transform(d[0], batch=d[1], covariates=d[2], subject=d[3]).to_numpy(),
    ),
    "nyul-deciles": _nyul(),
    "nyul-quartiles-foreground-mean": _nyul(landmarks="quartiles", foreground="mean"),
    "nyul-own-landmarks": _nyul(landmarks=(2.0, 25.0, 50.0, 75.0, 98.0), output_range=(1, 4)),
}


@pytest.fixture(params=sorted(CONTRACTS))
def contract(request: pytest.FixtureRequest) -> Contract:
    return CONTRACTS[request.param]


def _same(a: Any, b: Any) -> bool:
    """Equal to the bit: arrays (values and dtype), dataclasses, images, containers, scalars."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, pd.DataFrame | pd.Series):
        return type(a) is type(b) and a.equals(b) and a.index.equals(b.index)
    if isinstance(a, Image):
        return isinstance(b, Image) and all(
            _same(getattr(a, k), getattr(b, k))
            for k in ("array", "spacing", "origin", "direction", "meta")
        )
    if is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    return type(a) is type(b) and a == b


def _learned(model: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(model).items() if k.endswith("_") and k != "metadata_"}


def test_contract_params_clone_and_set_params(contract: Contract) -> None:
    model = contract.make()
    params = model.get_params()
    assert sorted(params) == sorted(inspect.signature(type(model)).parameters)
    assert vars(model) == params  # __init__ stores the hyper-parameters and nothing else
    twin = clone(model)
    assert twin is not model and twin.get_params() == params
    fitted = contract.fit(contract.make(), contract.data())
    assert clone(fitted).get_params() == params and not _learned(clone(fitted))
    name = sorted(params)[0]
    assert twin.set_params(**{name: params[name]}) is twin
    with pytest.raises(ValueError, match="Invalid parameter"):
        twin.set_params(no_such_parameter=1)


def test_contract_every_invalid_parameter_gets_the_one_message(contract: Contract) -> None:
    cls = type(contract.make())
    for name in contract.make().get_params():
        model = contract.make().set_params(**{name: object()})
        with pytest.raises(ih.HarmonizationError,
                           match=f"^The '{name}' parameter of {cls.__name__} must be .*; got <"):
            contract.fit(model, contract.data())


def test_contract_fit_returns_self_and_learns_only_attributes_ending_in_underscore(
    contract: Contract,
) -> None:
    model = contract.make()
    params = model.get_params()
    assert contract.fit(model, contract.data()) is model
    assert model.get_params() == params  # fit does not touch the hyper-parameters
    learned = set(vars(model)) - set(params)
    assert learned and all(k.endswith("_") and not k.startswith("_") for k in learned), learned


def test_contract_not_fitted_is_a_clear_error(contract: Contract, tmp_path: Path) -> None:
    model = contract.make()
    with pytest.raises(NotFittedError, match="not fitted"):
        contract.apply(model, contract.data())
    with pytest.raises(NotFittedError, match="not fitted"):
        model.save(tmp_path / "m.json")
    assert not list(tmp_path.iterdir())


def test_contract_save_load_round_trip_is_exact(contract: Contract, tmp_path: Path) -> None:
    data = contract.data()
    model = contract.fit(contract.make(), data)
    path = model.save(tmp_path / "model.json", metadata={"study": "contract"})
    doc = json.loads(path.read_text())
    assert doc["format"] == "imharmony.model" and doc["kind"] == model._model_kind
    with np.load(_npz(path), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = type(model).load(path)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert loaded.metadata_ == {"study": "contract"}
    assert _learned(loaded).keys() == _learned(model).keys()
    for name, value in _learned(model).items():
        assert _same(getattr(loaded, name), value), name
    assert _same(contract.apply(loaded, data), contract.apply(model, data))
    # a model file of one kind is refused by every other kind
    for other in {type(c.make()) for c in CONTRACTS.values()} - {type(model)}:
        with pytest.raises(ModelFileError, match=f"holds a {re.escape(repr(model._model_kind))}"):
            other.load(path)


def test_contract_edited_or_corrupted_files_are_refused(
    contract: Contract, tmp_path: Path
) -> None:
    from imharmony._persist import _digest

    model = contract.fit(contract.make(), contract.data())
    path = model.save(tmp_path / "m.json")
    good = path.read_text()
    doc = json.loads(good)
    edited = json.loads(good)
    edited["content"]["params"] = {**doc["content"]["params"], "bogus": 1}
    path.write_text(json.dumps(edited))
    with pytest.raises(ModelFileError, match="'params' do not match their checksum"):
        type(model).load(path)
    edited["checksums"]["params"] = _digest(edited["content"]["params"])
    path.write_text(json.dumps(edited))
    with pytest.raises(ModelFileError, match="field 'params'"):
        type(model).load(path)
    path.write_text(good)
    npz = _npz(path)
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum"):
        type(model).load(path)


def test_contract_inputs_are_not_modified(contract: Contract) -> None:
    data = contract.data()
    before = copy.deepcopy(data)
    model = contract.fit(contract.make(), data)
    contract.apply(model, data)
    assert _same(data, before)
