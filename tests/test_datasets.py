"""The built-in synthetic cohort: its truth is what it says it is."""

from __future__ import annotations

import numpy as np
import pytest

from imharmony.datasets import make_multisite_features
from imharmony.errors import HarmonizationError


def test_shapes_prevalence_and_reproducibility() -> None:
    a = make_multisite_features(
        n_per_site=(50, 100),
        prevalence=(0.2, 0.6),
        n_features=7,
        n_disease_features=3,
        random_state=3,
    )
    b = make_multisite_features(
        n_per_site=(50, 100),
        prevalence=(0.2, 0.6),
        n_features=7,
        n_disease_features=3,
        random_state=3,
    )
    assert a.table.equals(b.table)
    assert a.table.shape == (150, 5 + 7)
    assert a.table.groupby("site")["disease"].mean().tolist() == [0.2, 0.6]
    assert (a.disease_effect != 0).sum() == 3


def test_observed_equals_clean_with_the_stated_site_effects() -> None:
    d = make_multisite_features(
        n_per_site=(30, 40, 50),
        prevalence=(0.1, 0.5, 0.9),
        n_features=5,
        n_disease_features=2,
        random_state=0,
    )
    cols = d.feature_columns
    for site in d.site_shift.index:
        rows = (d.table["site"] == site).to_numpy()
        clean = d.clean.loc[rows, cols].to_numpy()
        observed = d.table.loc[rows, cols].to_numpy()
        # x = mu*u + shift + scale * (clean - mu*u): clean - observed relation is affine per feature
        for g, c in enumerate(cols):
            slope, intercept = np.polyfit(clean[:, g], observed[:, g], 1)
            assert slope == pytest.approx(d.site_scale.loc[site, c], rel=1e-9)
            mu_u = (intercept - d.site_shift.loc[site, c]) / (1 - slope)
            assert np.isfinite(mu_u)


def test_bad_arguments() -> None:
    with pytest.raises(HarmonizationError, match="two sites"):
        make_multisite_features(n_per_site=(10,), prevalence=(0.5,))
    with pytest.raises(HarmonizationError, match="prevalence"):
        make_multisite_features(n_per_site=(10, 10), prevalence=(0.5, 1.5))
