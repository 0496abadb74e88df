"""The built-in synthetic cohort: its truth is what it says it is."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imharmony.datasets import make_longitudinal_features, make_multisite_features
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


# ----------------------------------------------------------------------------------------------
# The designs the test cohorts (tests/_support/cohorts.py) draw from the generator
# ----------------------------------------------------------------------------------------------


def _flat(**kw):
    """Two or three sites, features on the biological scale, no site scale."""
    base = dict(n_per_site=(30, 40), prevalence=(0.0, 0.0), n_features=4, n_disease_features=0,
                feature_units=False, site_scale_range=(1.0, 1.0), random_state=1)
    return make_multisite_features(**{**base, **kw})


def test_names_ages_and_units_as_asked() -> None:
    d = _flat(site_names=("GE", "Siemens"), age_range=(60.0, 70.0))
    assert d.table["site"].unique().tolist() == ["GE", "Siemens"]
    assert d.table["age"].between(60.0, 70.0).all()
    # no feature units: the clean features are the biology + unit noise around 0
    assert abs(d.clean.to_numpy().mean()) < 0.5
    with pytest.raises(HarmonizationError, match="site_names"):
        _flat(site_names=("a", "a"))
    with pytest.raises(HarmonizationError, match="age_effect"):
        _flat(age_effect=[1.0, 2.0])
    with pytest.raises(HarmonizationError, match="site_factor_sd"):
        _flat(site_factor_sd=[[1.0]])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift_sd=st.floats(0.0, 10.0))
def test_site_effects_are_exactly_the_stated_ones_without_scale(seed: int, shift_sd: float) -> None:
    d = _flat(batch_factors={"kernel": (("soft", "sharp"), 2.0)}, site_shift_sd=shift_sd,
              random_state=seed)
    t = d.table
    expected = (
        d.clean.to_numpy()
        + d.site_shift.loc[t["site"]].to_numpy()
        + d.batch_shift["kernel"].loc[t["kernel"]].to_numpy()
    )
    np.testing.assert_allclose(t[d.feature_columns].to_numpy(), expected, rtol=0, atol=1e-12)
    assert set(t["kernel"]) == {"soft", "sharp"}  # 70 subjects: both levels drawn


def test_age_curve_sex_effect_and_scale_on_noise_only() -> None:
    # without noise-free access, compare two draws that differ only in the biology asked for
    amp = np.array([1.0, 2.0, 3.0, 4.0])
    plain = _flat(age_effect=0.0, site_scale_range=(0.5, 2.0), scale_biology=False)
    curved = _flat(age_effect=amp, age_curve=np.sin, sex_effect=0.7,
                   site_scale_range=(0.5, 2.0), scale_biology=False)
    t = curved.table
    biology = np.sin(t["age"].to_numpy())[:, None] * amp + 0.7 * (t["sex"] == "M").to_numpy()[
        :, None
    ]
    cols = curved.feature_columns
    np.testing.assert_allclose(
        t[cols].to_numpy() - plain.table[cols].to_numpy(), biology, rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        curved.clean.to_numpy() - plain.clean.to_numpy(), biology, rtol=0, atol=1e-12
    )


def test_site_factors_change_the_covariance_of_their_site_only() -> None:
    sd = [[0.0, 0.0], [3.0, 2.0]]
    d = _flat(n_per_site=(400, 400), prevalence=(0.0, 0.0), site_factor_sd=sd)
    t = d.table
    residual = t[d.feature_columns].to_numpy() - d.clean.to_numpy()
    first = (t["site"] == "siteA").to_numpy()
    # site A: only its shift; site B: shift + factors with variances 9 and 4 on two loadings
    np.testing.assert_allclose(residual[first], np.tile(d.site_shift.iloc[0], (400, 1)),
                               atol=1e-12)
    cov_b = np.cov(residual[~first], rowvar=False)
    assert np.linalg.matrix_rank(cov_b, tol=1e-9 * np.abs(cov_b).max()) == 2
    assert np.trace(cov_b) > 4.0


def test_longitudinal_design() -> None:
    d = make_longitudinal_features(n_subjects=30, visits=(2, 4), n_features=3,
                                   scanner_scale=(1.0, 1.0, 1.0), random_state=5)
    t = d.table
    per_subject = t.groupby("subject")
    assert per_subject.size().between(2, 4).all() and t["subject"].nunique() == 30
    assert (per_subject["scanner"].nunique() == 1).all()
    assert (per_subject["diagnosis"].nunique() == 1).all()
    np.testing.assert_array_equal(per_subject["visit"].apply(list).map(len),
                                  per_subject["visit"].max() + 1)
    assert (t["time"] - t["visit"]).abs().max() <= 0.2
    # age grows with time within a subject, by exactly the time elapsed
    age0 = per_subject["age"].transform("first") - per_subject["time"].transform("first")
    np.testing.assert_allclose(t["age"] - t["time"], age0, atol=1e-12)
    # scale 1 everywhere: observed - clean is the scanner's shift, the same for every feature
    diff = t[d.feature_columns].to_numpy() - d.clean.to_numpy()
    shift = d.scanner_shift.loc[t["scanner"]].to_numpy()[:, None]
    np.testing.assert_allclose(diff, np.repeat(shift, 3, axis=1), atol=1e-12)
    with pytest.raises(HarmonizationError, match="one value per scanner"):
        make_longitudinal_features(scanner_shift=(0.0, 1.0))
