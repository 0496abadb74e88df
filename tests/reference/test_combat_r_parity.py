"""Parity with R ``sva::ComBat`` 3.46 on committed fixtures (see tests/reference/combat/README.md).

The fixtures were produced by R from data generated in Python; the tests run without R. Each case
must agree to a relative error below 1e-8 in every value (measured: ~1e-14).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony.errors import HarmonizationWarning

_spec = importlib.util.spec_from_file_location(
    "combat_fixtures", Path(__file__).parent / "combat" / "load.py"
)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

pytestmark = pytest.mark.reference


@pytest.mark.parametrize("name", fixtures.case_names())
def test_matches_r_sva_combat(name: str) -> None:
    case = fixtures.load_case(name)
    spec = case["spec"]
    samples: pd.DataFrame = case["samples"]
    cov_names = [c["name"] for c in spec["covariates"]]
    covariates = None
    if cov_names:
        covariates = samples[cov_names].copy()
        for c in spec["covariates"]:
            if c["kind"] == "categorical":
                covariates[c["name"]] = covariates[c["name"]].astype(str)
    model = ih.ComBat(
        nonparametric=not spec["par_prior"],
        mean_only=spec["mean_only"],
        reference_batch=spec["ref_batch"],
        eb=spec["eb"],
    )
    with warnings.catch_warnings():
        if spec["unadjusted_features"]:
            warnings.simplefilter("ignore", HarmonizationWarning)
        out = model.fit_transform(case["data"], batch=samples["batch"], covariates=covariates)
    assert sorted(model.unadjusted_features_) == sorted(spec["unadjusted_features"])
    got = out.to_numpy()
    expected = case["expected"].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    ok = ~np.isnan(expected)
    diff = np.abs(got[ok] - expected[ok])
    rel = np.divide(diff, np.abs(expected[ok]), out=np.zeros_like(diff), where=diff > 0)
    assert rel.max() < 1e-8, f"{name}: max relative error {rel.max():.3g}"


def test_every_mode_is_covered() -> None:
    specs = [fixtures.load_case(n)["spec"] for n in fixtures.case_names()]
    modes = {
        (s["eb"], s["par_prior"] if s["eb"] else None, s["mean_only"], s["ref_batch"] is not None)
        for s in specs
    }
    assert (True, True, False, False) in modes  # parametric
    assert (True, False, False, False) in modes  # non-parametric
    assert (True, True, True, False) in modes  # mean-only
    assert (True, False, True, False) in modes  # mean-only non-parametric
    assert (True, True, False, True) in modes  # reference batch
    assert (True, False, False, True) in modes  # reference batch non-parametric
    assert (False, None, False, False) in modes  # no EB
    assert any(s["has_nan"] for s in specs) and any(s["covariates"] for s in specs)
