"""The test suite's synthetic cohorts, all drawn by the public generators of imharmony.datasets.

Each builder names the design a group of tests needs and returns it in the shape those tests use
(arrays or frames); the data themselves come from :func:`imharmony.datasets.make_multisite_features`
or :func:`imharmony.datasets.make_longitudinal_features`, so the tests exercise the same
generators as the demo and the tutorials. Builders take a ``seed`` (the generator's
``random_state``) so a test, or a hypothesis strategy, can ask for another draw.

Test modules import them as ``from _support.cohorts import ...`` (pyproject's pytest
``pythonpath`` holds ``tests``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from imharmony.datasets import (
    MultisiteFeatures,
    make_longitudinal_features,
    make_multisite_features,
)

__all__ = [
    "combat_cohort",
    "combat_sites",
    "covariance_cohort",
    "crossed_batches_cohort",
    "longitudinal_cohort",
    "shifted_sites",
    "smooth_age_cohort",
]


def _features(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The feature columns of ``table``, named ``f0``, ``f1``, ... as the tests name them."""
    return table[list(columns)].set_axis([f"f{g}" for g in range(len(columns))], axis=1)


def _array(values: pd.DataFrame | pd.Series) -> np.ndarray:
    """A writable array of ``values`` (a test may edit it in place)."""
    return values.to_numpy(copy=True)


def _sites(
    n_per_site: Sequence[int], names: Sequence[str], seed: int, **effects: object
) -> MultisiteFeatures:
    """Sites without disease, features in units of their biological spread (location 0)."""
    return make_multisite_features(
        n_per_site=n_per_site,
        prevalence=[0.0] * len(n_per_site),
        n_disease_features=0,
        site_names=names,
        feature_units=False,
        random_state=seed,
        **effects,  # type: ignore[arg-type]
    )


def combat_cohort(
    seed: int = 0, n_sites: int = 4, per_site: int = 30, n_features: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Sites ``site0``, ``site1``, ... with disease prevalence rising from 0.2 to 0.8, a disease
    effect of 0.8 SD on the first 5 features, additive (SD 2) and multiplicative (0.5-2) site
    effects; ages 30-80 without effect.

    Returns
    -------
    X : ndarray, shape (n_sites * per_site, n_features)
    y : ndarray of int, disease 0/1
    site : ndarray of str
    covariates : DataFrame with ``age`` and ``disease`` (as text)
    """
    data = make_multisite_features(
        n_per_site=[per_site] * n_sites,
        prevalence=np.linspace(0.2, 0.8, n_sites),
        n_features=n_features,
        n_disease_features=5,
        disease_effect=0.8,
        age_effect=0.0,
        age_range=(30.0, 80.0),
        site_shift_sd=2.0,
        site_scale_range=(0.5, 2.0),
        site_names=[f"site{i}" for i in range(n_sites)],
        feature_units=False,
        random_state=seed,
    )
    t = data.table
    y = t["disease"].to_numpy()
    covariates = pd.DataFrame({"age": t["age"], "disease": t["disease"].astype(str)})
    return _array(t[data.feature_columns]), y, t["site"].to_numpy(), covariates


def combat_sites(
    n_per_site: Sequence[int] = (12, 20, 30),
    n_features: int = 25,
    seed: int = 0,
    covariate: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites ``s0``, ``s1``, ... with additive (SD 2) and multiplicative (1-1.6) site effects and
    no biology except, with ``covariate``, an age effect of 0.05 SD per year (ages 20-80); each
    feature in its own unit, far from 0 (relative tolerances mean something). The design of
    ComBat's closed-form and property tests.

    Returns
    -------
    X : ndarray, shape (sum(n_per_site), n_features)
    batch : ndarray of str
    age : ndarray
    """
    data = make_multisite_features(
        n_per_site=n_per_site, prevalence=[0.0] * len(n_per_site), n_features=n_features,
        n_disease_features=0, age_effect=0.05 if covariate else 0.0, age_range=(20.0, 80.0),
        site_shift_sd=2.0, site_scale_range=(1.0, 1.6),
        site_names=[f"s{i}" for i in range(len(n_per_site))], random_state=seed,
    )
    t = data.table
    return _array(t[data.feature_columns]), t["site"].to_numpy(), _array(t["age"])


def covariance_cohort(
    seed: int = 0, per_site: int = 80, n_features: int = 12
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Three sites ``A``, ``B``, ``C`` with additive effects (SD 3) and each its own variances of
    three shared latent factors (the site effect on covariance that CovBat models); an age
    effect of 0.05 SD per year, ages 20-80.

    Returns
    -------
    X : DataFrame, shape (3 * per_site, n_features)
    site : Series named ``site``
    covariates : DataFrame with ``age``
    """
    data = _sites(
        [per_site] * 3, ("A", "B", "C"), seed, n_features=n_features,
        age_effect=0.05, age_range=(20.0, 80.0), site_shift_sd=3.0, site_scale_range=(1.0, 1.0),
        site_factor_sd=1.5 * np.array([[0.3, 1.0, 3.0], [3.0, 0.3, 1.0], [1.0, 3.0, 0.3]]),
    )
    t = data.table
    return _features(t, data.feature_columns), t["site"], t[["age"]]


def smooth_age_cohort(
    n: int = 160, G: int = 6, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Four sites ``a``-``d`` of ``n // 4`` subjects, a non-linear age effect (sin(age / 12), of
    amplitude 3.3 to 10 noise SDs across the ``G`` features) and a male effect of 1.7 SD, ages
    20-80; additive (SD 3.3) and multiplicative (0.5-2, on the noise: ComBat's model) site
    effects. The design ComBat-GAM's smooth terms are for.

    Returns
    -------
    X : DataFrame, shape (n, G)
    site : ndarray of str
    covariates : DataFrame with ``age`` and ``sex``
    """
    data = _sites(
        [n // 4] * 4, ("a", "b", "c", "d"), seed, n_features=G,
        age_effect=np.linspace(1.0, 3.0, G) / 0.3, age_curve=lambda age: np.sin(age / 12.0),
        age_range=(20.0, 80.0), sex_effect=0.5 / 0.3, site_shift_sd=1.0 / 0.3,
        site_scale_range=(0.5, 2.0), scale_biology=False,
    )
    t = data.table
    return _features(t, data.feature_columns), t["site"].to_numpy(), t[["age", "sex"]]


def crossed_batches_cohort(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """240 subjects on three scanners (``GE``, ``Siemens``, ``Philips``; additive SD 2,
    multiplicative 0.7-1.5) crossed with two reconstruction kernels (``soft``, ``sharp``,
    drawn at random; additive SD 1.5), 12 features, an age effect of 0.03 SD per year.

    Returns
    -------
    X : DataFrame, shape (240, 12)
    batch : DataFrame with ``scanner`` and ``kernel``
    covariates : DataFrame with ``age``
    """
    data = _sites(
        [80, 80, 80], ("GE", "Siemens", "Philips"), seed, n_features=12,
        age_effect=0.03, age_range=(20.0, 80.0), site_shift_sd=2.0, site_scale_range=(0.7, 1.5),
        batch_factors={"kernel": (("soft", "sharp"), 1.5)},
    )
    t = data.table
    batch = pd.DataFrame({"scanner": t["site"], "kernel": t["kernel"]})
    return _features(t, data.feature_columns), batch, t[["age"]]


def shifted_sites(
    seed: int = 0, n_per: int = 30, p: int = 6, shift: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three sites ``a``, ``b``, ``c`` of ``n_per`` subjects that differ only by an additive
    shift of SD ``shift`` per feature (unit noise, no biology).

    Returns
    -------
    X : ndarray, shape (3 * n_per, p)
    site : ndarray of str
    codes : ndarray of int, the site as 0, 1, 2
    """
    data = _sites(
        [n_per] * 3, ("a", "b", "c"), seed, n_features=p,
        age_effect=0.0, site_shift_sd=shift, site_scale_range=(1.0, 1.0),
    )
    site = data.table["site"].to_numpy()
    codes = np.repeat(np.arange(3), n_per)
    return _array(data.table[data.feature_columns]), site, codes


def longitudinal_cohort(
    seed: int = 0, n_subjects: int = 40, n_features: int = 6
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """Subjects with 2-5 visits, random intercepts and slopes, three scanners ``A``, ``B``,
    ``C`` (shifts 0, +2, -1.5; scales 1, 1.8, 0.6), a diagnosis ``AD`` / ``CN`` with its own
    slope (the defaults of :func:`imharmony.datasets.make_longitudinal_features`).

    Returns
    -------
    X : DataFrame, shape (n_visits, n_features)
    scanner : Series
    covariates : DataFrame with ``age``, ``diagnosis`` and ``time``
    subject : Series (``sub-000``, ``sub-001``, ...)
    """
    data = make_longitudinal_features(
        n_subjects=n_subjects, n_features=n_features, random_state=seed
    )
    t = data.table
    return (
        _features(t, data.feature_columns),
        t["scanner"],
        t[["age", "diagnosis", "time"]],
        t["subject"],
    )
