"""Parity with R ``CovBat::covbat`` 0.1.0 on committed fixtures (tests/reference/covbat/README.md).

The fixtures were written by R (``make_fixtures.R``); the tests run without R. Every value must
agree to a relative error below 1e-8 (of the feature's spread), and the number of harmonized
components must be R's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih

FIXTURES = Path(__file__).parent / "covbat" / "fixtures"
SPECS = json.loads((FIXTURES / "cases.json").read_text())

pytestmark = pytest.mark.reference


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_matches_r_covbat(spec: dict) -> None:
    folder = FIXTURES / spec["name"]
    data = pd.read_csv(folder / "data.csv", dtype=float)
    expected = pd.read_csv(folder / "expected.csv", dtype=float)
    samples = pd.read_csv(folder / "samples.csv", dtype={"batch": str, "sex": str})
    assert data.shape == expected.shape == (spec["n_samples"], spec["n_features"])
    covariates = samples[spec["covariates"]] if spec["covariates"] else None
    model = ih.CovBat(
        percent_var=spec["percent_var"],
        n_components=spec["n_pc"],
        standardize_scores=spec["std_var"],
    )
    out = model.fit_transform(data, batch=samples["batch"], covariates=covariates)
    assert model.n_components_ == spec["npc_used"]
    err = np.abs(out.to_numpy() - expected.to_numpy()) / data.std().to_numpy()
    assert err.max() < 1e-8, err.max()
    # the reference did change the data: the comparison is not trivially satisfied
    assert np.abs(expected.to_numpy() - data.to_numpy()).max() > 1.0
