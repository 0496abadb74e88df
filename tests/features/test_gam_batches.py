"""ComBat over several batch variables (sequential, as nested ComBat) and their diagnostics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import imharmony as ih
from _support.cohorts import crossed_batches_cohort
from imharmony.diagnostics import diagnose_batches
from imharmony.errors import DataError, DesignError


def _site_means_spread(X: np.ndarray, labels: np.ndarray) -> float:
    means = np.stack([X[labels == lvl].mean(axis=0) for lvl in np.unique(labels)])
    return float(np.abs(means - means.mean(axis=0)).max())


def test_sequential_equals_one_combat_per_variable_in_order(tmp_path: Path) -> None:
    X, batch, cov = crossed_batches_cohort()
    model = ih.ComBat()
    out = model.fit_transform(X, batch=batch, covariates=cov)
    step1 = ih.ComBat().fit_transform(X, batch=batch["scanner"], covariates=cov)
    step2 = ih.ComBat().fit_transform(step1, batch=batch["kernel"], covariates=cov)
    np.testing.assert_allclose(out.to_numpy(), step2.to_numpy(), rtol=1e-12, atol=1e-12)
    assert model.batch_columns_ == ["scanner", "kernel"] and len(model.stages_) == 2
    # both batch effects are gone, the other order gives a different (also valid) answer
    for col in batch.columns:
        before = _site_means_spread(X.to_numpy(), batch[col].to_numpy())
        assert _site_means_spread(out.to_numpy(), batch[col].to_numpy()) < 0.2 * before
    again = model.transform(X, batch=batch, covariates=cov)
    np.testing.assert_allclose(again.to_numpy(), out.to_numpy(), rtol=1e-12)
    back = ih.ComBat.load(model.save(tmp_path / "nested.json"))
    np.testing.assert_array_equal(
        back.transform(X, batch=batch, covariates=cov).to_numpy(), again.to_numpy()
    )
    with pytest.raises(DataError, match="'kernel'"):
        back.transform(X, batch=batch[["scanner"]].assign(k=1), covariates=cov)
    with pytest.raises(DesignError, match="reference_batch"):
        ih.ComBat(reference_batch="GE").fit(X, batch=batch, covariates=cov)


def test_one_column_frame_is_plain_combat_and_smooth_terms_work_per_stage() -> None:
    X, batch, cov = crossed_batches_cohort(1)
    a = ih.ComBat().fit_transform(X, batch=batch[["scanner"]], covariates=cov)
    b = ih.ComBat().fit_transform(X, batch=batch["scanner"], covariates=cov)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    gam = ih.ComBat(smooth=["age"], smooth_penalty="gcv").fit(X, batch=batch, covariates=cov)
    assert all(s.smooth_penalty_.shape == (12, 1) for s in gam.stages_)


def test_staged_gam_model_file_round_trip_and_checks(tmp_path: Path) -> None:
    import json

    from imharmony._persist import _digest
    from imharmony.errors import ModelFileError

    X, batch, cov = crossed_batches_cohort(1)
    gam = ih.ComBat(smooth=["age"], smooth_penalty="gcv").fit(X, batch=batch, covariates=cov)
    path = gam.save(tmp_path / "staged.json")
    back = ih.ComBat.load(path)
    assert back.batch_columns_ == ["scanner", "kernel"]
    for a, b in zip(back.stages_, gam.stages_, strict=True):
        np.testing.assert_array_equal(a.smooth_penalty_, b.smooth_penalty_)
        assert a.covariate_spec_ == b.covariate_spec_
    np.testing.assert_array_equal(
        back.transform(X, batch=batch, covariates=cov).to_numpy(),
        gam.transform(X, batch=batch, covariates=cov).to_numpy(),
    )
    doc = json.loads(path.read_text())
    doc["content"]["stages"] = doc["content"]["stages"][:1]  # re-signed, but one stage short
    doc["checksums"]["stages"] = _digest(doc["content"]["stages"])
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="field 'stages'"):
        ih.ComBat.load(path)


def test_diagnostics_per_batch_variable() -> None:
    X, batch, cov = crossed_batches_cohort(2)
    out = ih.ComBat().fit_transform(X, batch=batch, covariates=cov)
    result = diagnose_batches(
        X, out, batch=batch, covariates=cov, max_features=0, n_permutations=50, random_state=0
    )
    assert list(result) == ["scanner", "kernel"]
    for diagnosis in result.values():
        assert isinstance(diagnosis, ih.Diagnosis)
    with pytest.raises(DataError, match="one column per batch variable"):
        diagnose_batches(X, out, batch=batch["kernel"])
