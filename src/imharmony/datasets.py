"""Built-in synthetic data with known truth, for the demo, tests and tutorials.

Everything is generated (nothing is downloaded) from a ``random_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import HarmonizationError

__all__ = ["MultisiteFeatures", "make_multisite_features"]


@dataclass
class MultisiteFeatures:
    """A multi-site feature table and the truth it was generated from.

    Attributes
    ----------
    table : DataFrame, shape (n_samples, 5 + n_features)
        Columns ``subject``, ``site``, ``age``, ``sex``, ``disease`` (0/1) and the features
        ``f000``, ``f001``, ...: one row per subject, as a radiomics table would be.
    clean : DataFrame, shape (n_samples, n_features)
        The same features without any site effect (what a perfect harmonization returns, up to the
        choice of common scale).
    site_shift, site_scale : DataFrame, shape (n_sites, n_features)
        Additive (gamma) and multiplicative (sqrt delta) site effects applied to each feature.
    disease_effect : Series, shape (n_features,)
        True effect of the disease on each feature (0 for features it does not touch).
    feature_columns : list of str
    """

    table: pd.DataFrame
    clean: pd.DataFrame
    site_shift: pd.DataFrame
    site_scale: pd.DataFrame
    disease_effect: pd.Series
    feature_columns: list[str]


def make_multisite_features(
    *,
    n_per_site: Sequence[int] = (40, 60, 80, 100),
    prevalence: Sequence[float] = (0.1, 0.3, 0.7, 0.9),
    n_features: int = 60,
    n_disease_features: int = 12,
    disease_effect: float = 0.8,
    age_effect: float = 0.02,
    site_shift_sd: float = 1.0,
    site_scale_range: tuple[float, float] = (0.6, 1.8),
    random_state: int | np.random.Generator | None = None,
) -> MultisiteFeatures:
    """Generate a multi-site feature table with known site effects and a known disease effect.

    Sites differ in disease prevalence, so site and disease are partly confounded: a harmonization
    that does not protect the disease removes part of it along with the site effect.

    Parameters
    ----------
    n_per_site : sequence of int
        Subjects per site (the number of sites is its length).
    prevalence : sequence of float
        Fraction of diseased subjects per site (same length as ``n_per_site``).
    n_features, n_disease_features : int
        Features in total, and how many of the first ones the disease changes.
    disease_effect : float
        Disease effect in units of the feature's within-site standard deviation.
    age_effect : float
        Effect of one year of age, in standard deviations (every feature).
    site_shift_sd : float
        Standard deviation of the additive site effects (in feature standard deviations).
    site_scale_range : (float, float)
        Range of the multiplicative site effects.
    random_state : int, Generator or None

    Returns
    -------
    MultisiteFeatures

    Notes
    -----
    For subject i at site j, feature g (in units where the biological spread is 1)::

        clean_ig = mu_g + age_effect (age_i - 50) + disease_effect_g d_i + e_ig,  e ~ N(0, 1)
        x_ig     = mu_g + site_shift_jg + site_scale_jg (clean_ig - mu_g)

    and each feature is then given its own unit (scale s_g), as real features have.
    """
    sizes = np.asarray(n_per_site, dtype=int)
    prev = np.asarray(prevalence, dtype=float)
    if sizes.ndim != 1 or sizes.size < 2 or (sizes < 2).any():
        raise HarmonizationError("n_per_site needs at least two sites of at least 2 subjects.")
    if prev.shape != sizes.shape or ((prev < 0) | (prev > 1)).any():
        raise HarmonizationError("prevalence needs one value in [0, 1] per site.")
    if not 0 <= n_disease_features <= n_features:
        raise HarmonizationError("n_disease_features must be between 0 and n_features.")
    rng = np.random.default_rng(random_state)
    n_sites = sizes.size
    sites = [f"site{chr(ord('A') + j)}" for j in range(n_sites)]
    site = np.repeat(sites, sizes)
    n = site.size
    disease = np.concatenate(
        [(rng.permutation(s) < round(p * s)).astype(int) for s, p in zip(sizes, prev, strict=True)]
    )
    age = np.round(rng.uniform(25, 85, n), 1)
    sex = rng.choice(["F", "M"], n)
    cols = [f"f{g:03d}" for g in range(n_features)]
    mu = rng.uniform(1.0, 100.0, n_features)
    unit = 10.0 ** rng.uniform(-1, 2, n_features)
    effect = np.zeros(n_features)
    effect[:n_disease_features] = disease_effect * rng.choice([-1.0, 1.0], n_disease_features)
    noise = rng.normal(size=(n, n_features))
    centred = age_effect * (age - 50.0)[:, None] + effect * disease[:, None] + noise
    shift = rng.normal(0.0, site_shift_sd, (n_sites, n_features))
    scale = rng.uniform(*site_scale_range, (n_sites, n_features))
    codes = np.repeat(np.arange(n_sites), sizes)
    observed = shift[codes] + scale[codes] * centred
    clean = pd.DataFrame((mu + centred) * unit, columns=cols)
    table = pd.DataFrame(
        {
            "subject": [f"sub-{i:04d}" for i in range(n)],
            "site": site,
            "age": age,
            "sex": sex,
            "disease": disease,
        }
    )
    table = pd.concat([table, pd.DataFrame((mu + observed) * unit, columns=cols)], axis=1)
    return MultisiteFeatures(
        table=table,
        clean=clean,
        site_shift=pd.DataFrame(shift * unit, index=sites, columns=cols),
        site_scale=pd.DataFrame(scale, index=sites, columns=cols),
        disease_effect=pd.Series(effect * unit, index=cols),
        feature_columns=cols,
    )
