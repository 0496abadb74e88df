"""Built-in synthetic data with known truth, for the demo, tests and tutorials.

Everything is generated (nothing is downloaded) from a ``random_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import HarmonizationError
from .image import Image

__all__ = [
    "IMAGE_LABELS",
    "TISSUE_INTENSITY",
    "LongitudinalFeatures",
    "MultisiteFeatures",
    "MultisiteImages",
    "NemaPhantom",
    "make_longitudinal_features",
    "make_multisite_features",
    "make_multisite_images",
    "make_nema_phantom",
]


@dataclass
class MultisiteFeatures:
    """A multi-site feature table and the truth it was generated from.

    Attributes
    ----------
    table : DataFrame, shape (n_samples, 5 + n_batch_factors + n_features)
        Columns ``subject``, ``site``, ``age``, ``sex``, ``disease`` (0/1), one column per
        further batch variable (``batch_factors``) and the features ``f000``, ``f001``, ...: one
        row per subject, as a radiomics table would be.
    clean : DataFrame, shape (n_samples, n_features)
        The same features without any site or batch effect (what a perfect harmonization
        returns, up to the choice of common scale).
    site_shift, site_scale : DataFrame, shape (n_sites, n_features)
        Additive (gamma) and multiplicative (sqrt delta) site effects applied to each feature.
    disease_effect : Series, shape (n_features,)
        True effect of the disease on each feature (0 for features it does not touch).
    feature_columns : list of str
    batch_shift : dict of str to DataFrame, shape (n_levels, n_features)
        Additive effect of each level of each further batch variable (empty without
        ``batch_factors``).
    """

    table: pd.DataFrame
    clean: pd.DataFrame
    site_shift: pd.DataFrame
    site_scale: pd.DataFrame
    disease_effect: pd.Series
    feature_columns: list[str]
    batch_shift: dict[str, pd.DataFrame] = field(default_factory=dict)


def make_multisite_features(
    *,
    n_per_site: Sequence[int] = (40, 60, 80, 100),
    prevalence: Sequence[float] = (0.1, 0.3, 0.7, 0.9),
    n_features: int = 60,
    n_disease_features: int = 12,
    disease_effect: float = 0.8,
    age_effect: float | Sequence[float] = 0.02,
    site_shift_sd: float = 1.0,
    site_scale_range: tuple[float, float] = (0.6, 1.8),
    random_state: int | np.random.Generator | None = None,
    site_names: Sequence[str] | None = None,
    age_range: tuple[float, float] = (25.0, 85.0),
    age_curve: Callable[[np.ndarray], np.ndarray] | None = None,
    sex_effect: float = 0.0,
    site_factor_sd: Sequence[Sequence[float]] | None = None,
    batch_factors: Mapping[str, tuple[Sequence[str], float]] | None = None,
    feature_units: bool = True,
    scale_biology: bool = True,
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
        Disease effect in units of the feature's within-site standard deviation (its sign is
        drawn per feature).
    age_effect : float or sequence of float
        Effect of one unit of ``age_curve(age)`` (one year of age by default), in standard
        deviations: one value for every feature, or one per feature.
    site_shift_sd : float
        Standard deviation of the additive site effects (in feature standard deviations).
    site_scale_range : (float, float)
        Range of the multiplicative site effects.
    random_state : int, Generator or None
    site_names : sequence of str, optional
        Site labels (default ``siteA``, ``siteB``, ...).
    age_range : (float, float)
        Ages are drawn uniformly in this range (years, rounded to 0.1).
    age_curve : callable, optional
        The shape of the age effect, ``age_curve(age) -> array`` of the same shape (default
        ``age - 50``, linear); a non-linear curve is what ComBat-GAM models.
    sex_effect : float
        Effect of male sex, in standard deviations (every feature).
    site_factor_sd : array-like, shape (n_sites, n_factors), optional
        Site-specific standard deviations of shared latent factors (loadings drawn N(0, 1) per
        factor and feature): a site effect on the covariance of the features, the one CovBat
        models. Counted as a site effect (not in ``clean``).
    batch_factors : mapping of str to (levels, float), optional
        Further batch variables crossed with the site, ``{column: (levels, shift_sd)}``: each
        subject gets a level drawn at random and that level's additive effect, drawn
        N(0, shift_sd) per feature (as scanner and reconstruction kernel are).
    feature_units : bool
        Give each feature its own location and unit, as real features have (default); False
        keeps every feature centred on 0 in units of its biological spread.
    scale_biology : bool
        The multiplicative site effect scales the biology (age, sex and disease effects) as well
        as the noise, as a scanner's contrast would (default); False scales the noise only, the
        model of ComBat itself (Johnson et al. 2007).

    Returns
    -------
    MultisiteFeatures

    Notes
    -----
    For subject i at site j, feature g (in units where the biological spread is 1)::

        clean_ig = mu_g + age_effect_g c(age_i) + sex_effect m_i + disease_effect_g d_i + e_ig
        x_ig     = mu_g + site_shift_jg + site_scale_jg (clean_ig - mu_g + sum_k z_ik s_jk L_kg)
                   + sum_b batch_shift_b[level_b(i)]g

    with ``c = age_curve``, ``m_i`` 1 for males, ``e, z, L ~ N(0, 1)`` and ``s = site_factor_sd``
    (with ``scale_biology=False`` the site scale multiplies ``e_ig + sum_k z_ik s_jk L_kg``
    only); each feature is then given its own unit (scale u_g), as real features have.
    """
    sizes = np.asarray(n_per_site, dtype=int)
    prev = np.asarray(prevalence, dtype=float)
    if sizes.ndim != 1 or sizes.size < 2 or (sizes < 2).any():
        raise HarmonizationError("n_per_site needs at least two sites of at least 2 subjects.")
    if prev.shape != sizes.shape or ((prev < 0) | (prev > 1)).any():
        raise HarmonizationError("prevalence needs one value in [0, 1] per site.")
    if not 0 <= n_disease_features <= n_features:
        raise HarmonizationError("n_disease_features must be between 0 and n_features.")
    n_sites = sizes.size
    if site_names is None:
        sites = [f"site{chr(ord('A') + j)}" for j in range(n_sites)]
    else:
        sites = [str(name) for name in site_names]
        if len(sites) != n_sites or len(set(sites)) != n_sites:
            raise HarmonizationError("site_names needs one distinct name per site.")
    slopes = np.asarray(age_effect, dtype=float)
    if slopes.ndim > 1 or slopes.size not in (1, n_features):
        raise HarmonizationError("age_effect needs one value, or one per feature.")
    factor_sd = None if site_factor_sd is None else np.asarray(site_factor_sd, dtype=float)
    if factor_sd is not None and (factor_sd.ndim != 2 or factor_sd.shape[0] != n_sites):
        raise HarmonizationError("site_factor_sd needs one row of factor sds per site.")
    rng = np.random.default_rng(random_state)
    site = np.repeat(sites, sizes)
    n = site.size
    disease = np.concatenate(
        [(rng.permutation(s) < round(p * s)).astype(int) for s, p in zip(sizes, prev, strict=True)]
    )
    age = np.round(rng.uniform(*age_range, n), 1)
    sex = rng.choice(["F", "M"], n)
    cols = [f"f{g:03d}" for g in range(n_features)]
    mu = rng.uniform(1.0, 100.0, n_features)
    unit = 10.0 ** rng.uniform(-1, 2, n_features)
    if not feature_units:
        mu, unit = np.zeros(n_features), np.ones(n_features)
    effect = np.zeros(n_features)
    effect[:n_disease_features] = disease_effect * rng.choice([-1.0, 1.0], n_disease_features)
    noise = rng.normal(size=(n, n_features))
    curve = age - 50.0 if age_curve is None else np.asarray(age_curve(age), dtype=float)
    biology = slopes * curve[:, None] + effect * disease[:, None]
    if sex_effect:
        biology = biology + sex_effect * (sex == "M")[:, None]
    centred = biology + noise
    shift = rng.normal(0.0, site_shift_sd, (n_sites, n_features))
    scale = rng.uniform(*site_scale_range, (n_sites, n_features))
    codes = np.repeat(np.arange(n_sites), sizes)
    scaled = centred if scale_biology else noise
    if factor_sd is not None:
        loadings = rng.normal(size=(factor_sd.shape[1], n_features))
        scores = rng.normal(size=(n, factor_sd.shape[1])) * factor_sd[codes]
        scaled = scaled + scores @ loadings
    observed = shift[codes] + scale[codes] * scaled
    if not scale_biology:
        observed = observed + biology
    table = pd.DataFrame(
        {
            "subject": [f"sub-{i:04d}" for i in range(n)],
            "site": site,
            "age": age,
            "sex": sex,
            "disease": disease,
        }
    )
    batch_shift: dict[str, pd.DataFrame] = {}
    for column, (levels, shift_sd) in (batch_factors or {}).items():
        levels = [str(level) for level in levels]
        level = rng.integers(0, len(levels), n)
        effects = rng.normal(0.0, shift_sd, (len(levels), n_features))
        observed = observed + effects[level]
        table[column] = np.asarray(levels, dtype=object)[level]
        batch_shift[column] = pd.DataFrame(effects * unit, index=levels, columns=cols)
    clean = pd.DataFrame((mu + centred) * unit, columns=cols)
    table = pd.concat([table, pd.DataFrame((mu + observed) * unit, columns=cols)], axis=1)
    return MultisiteFeatures(
        table=table,
        clean=clean,
        site_shift=pd.DataFrame(shift * unit, index=sites, columns=cols),
        site_scale=pd.DataFrame(scale, index=sites, columns=cols),
        disease_effect=pd.Series(effect * unit, index=cols),
        feature_columns=cols,
        batch_shift=batch_shift,
    )


@dataclass
class LongitudinalFeatures:
    """A longitudinal multi-scanner feature table and the truth it was generated from.

    Attributes
    ----------
    table : DataFrame, shape (n_visits, 6 + n_features)
        Columns ``subject``, ``visit`` (0, 1, ...), ``time`` (years from the first visit),
        ``scanner``, ``age``, ``diagnosis`` and the features ``f000``, ``f001``, ...: one row per
        visit.
    clean : DataFrame, shape (n_visits, n_features)
        The same features without the scanner effects.
    scanner_shift, scanner_scale : Series, shape (n_scanners,)
        Additive and multiplicative effect of each scanner (the same for every feature).
    feature_columns : list of str
    """

    table: pd.DataFrame
    clean: pd.DataFrame
    scanner_shift: pd.Series
    scanner_scale: pd.Series
    feature_columns: list[str]


def make_longitudinal_features(
    *,
    n_subjects: int = 40,
    visits: tuple[int, int] = (2, 5),
    n_features: int = 6,
    scanner_shift: Sequence[float] = (0.0, 2.0, -1.5),
    scanner_scale: Sequence[float] = (1.0, 1.8, 0.6),
    scanner_names: Sequence[str] = ("A", "B", "C"),
    diagnoses: Sequence[str] = ("AD", "CN"),
    diagnosis_slope: float = -0.5,
    intercept_sd: float = 1.5,
    slope_sd: float = 0.3,
    age_range: tuple[float, float] = (60.0, 80.0),
    age_effect: float = 0.05,
    location: float = 20.0,
    random_state: int | np.random.Generator | None = None,
) -> LongitudinalFeatures:
    """Generate repeated visits of subjects, each scanned on one scanner, with known effects.

    Each subject has a random intercept and a random slope over time (what longitudinal ComBat
    models with ``random="intercept"`` or ``"slope"``) and a diagnosis whose first level changes
    the slope.

    Parameters
    ----------
    n_subjects : int
        Number of subjects (at least 2).
    visits : (int, int)
        Fewest and most visits of a subject (drawn uniformly, inclusive), one year apart give or
        take 0.2 year.
    n_features : int
    scanner_shift, scanner_scale : sequence of float
        Additive effect and noise scale of each scanner (one value per scanner, every feature);
        each subject is scanned on one scanner drawn at random.
    scanner_names : sequence of str
        Scanner labels (same length as ``scanner_shift``).
    diagnoses : sequence of str
        Diagnosis labels, drawn at random per subject; the first has ``diagnosis_slope``.
    diagnosis_slope : float
        Change per year of the first diagnosis against the others.
    intercept_sd, slope_sd : float
        Standard deviations of the subjects' random intercepts and slopes.
    age_range : (float, float)
        Age at the first visit, drawn uniformly.
    age_effect : float
        Effect of one year of age.
    location : float
        Mean of every feature at age 0.
    random_state : int, Generator or None

    Returns
    -------
    LongitudinalFeatures

    Notes
    -----
    For visit v of subject i at time t_iv (scanner j, diagnosis D_i), feature g::

        x_ivg = location + age_effect age_iv + diagnosis_slope [D_i = diagnoses[0]] t_iv
                + b0_ig + b1_ig t_iv + shift_j + scale_j e_ivg

    with ``b0 ~ N(0, intercept_sd)``, ``b1 ~ N(0, slope_sd)``, ``e ~ N(0, 1)`` and
    ``age_iv = age_i + t_iv``; ``clean`` is the same with ``shift = 0`` and ``scale = 1``.
    """
    shifts = np.asarray(scanner_shift, dtype=float)
    scales = np.asarray(scanner_scale, dtype=float)
    names = [str(name) for name in scanner_names]
    if shifts.ndim != 1 or shifts.shape != scales.shape or len(names) != shifts.size:
        raise HarmonizationError(
            "scanner_shift, scanner_scale and scanner_names need one value per scanner."
        )
    if n_subjects < 2 or not 1 <= visits[0] <= visits[1]:
        raise HarmonizationError("n_subjects needs at least 2, visits a range (fewest, most) >= 1.")
    rng = np.random.default_rng(random_state)
    n_visits = rng.integers(visits[0], visits[1] + 1, n_subjects)
    sid = np.repeat(np.arange(n_subjects), n_visits)
    visit = np.arange(sid.size) - np.repeat(np.cumsum(n_visits) - n_visits, n_visits)
    time = visit + rng.uniform(-0.2, 0.2, sid.size)
    scanner = rng.integers(0, shifts.size, n_subjects)[sid]
    diagnosis = np.asarray(diagnoses, dtype=object)[rng.integers(0, len(diagnoses), n_subjects)]
    age = rng.uniform(*age_range, n_subjects)[sid] + time
    b0 = rng.normal(0, intercept_sd, (n_subjects, n_features))[sid]
    b1 = rng.normal(0, slope_sd, (n_subjects, n_features))[sid]
    noise = rng.normal(size=(sid.size, n_features))
    first = (diagnosis[sid] == diagnoses[0])[:, None]
    biology = location + age_effect * age[:, None] + diagnosis_slope * first * time[:, None]
    biology = biology + b0 + b1 * time[:, None]
    cols = [f"f{g:03d}" for g in range(n_features)]
    table = pd.DataFrame(
        {
            "subject": [f"sub-{i:03d}" for i in sid],
            "visit": visit,
            "time": time,
            "scanner": np.asarray(names, dtype=object)[scanner],
            "age": age,
            "diagnosis": diagnosis[sid],
        }
    )
    observed = biology + shifts[scanner][:, None] + scales[scanner][:, None] * noise
    table = pd.concat([table, pd.DataFrame(observed, columns=cols)], axis=1)
    return LongitudinalFeatures(
        table=table,
        clean=pd.DataFrame(biology + noise, columns=cols),
        scanner_shift=pd.Series(shifts, index=names),
        scanner_scale=pd.Series(scales, index=names),
        feature_columns=cols,
    )


# ---------------------------------------------------------------------------------------------
# A multi-site cohort of 3-D images
# ---------------------------------------------------------------------------------------------

#: Label values of :func:`make_multisite_images`' label maps (0 is the background).
IMAGE_LABELS: dict[int, str] = {1: "csf", 2: "gm", 3: "wm", 4: "gm_roi"}

#: Site-free tissue intensities (arbitrary T1-weighted-like units: white matter brightest).
TISSUE_INTENSITY: dict[str, float] = {"csf": 25.0, "gm": 65.0, "wm": 100.0}

# Default acquisition of the four built-in sites: gain, offset, point-spread function (FWHM per
# array axis, mm), voxel grid (mm; axis 2 is the slice axis) and noise standard deviation (in the
# site's own units). Site D has thick slices.
_DEFAULT_SITES: dict[str, tuple[Any, ...]] = {
    "gain": (1.0, 1.3, 0.8, 1.15),
    "offset": (0.0, 20.0, -10.0, 35.0),
    "fwhm": ((2.0, 2.0, 2.0), (2.5, 2.5, 3.0), (3.0, 3.0, 3.5), (2.2, 2.2, 5.0)),
    "spacing": ((1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (1.5, 1.5, 1.5), (1.0, 1.0, 3.0)),
    "noise": (2.0, 3.0, 2.5, 4.0),
}


@dataclass
class MultisiteImages:
    """A multi-site cohort of 3-D brain-like images and the truth it was generated from.

    Attributes
    ----------
    images : list of Image
        One image per subject (row of ``table``), on its site's voxel grid (``spacing`` of the
        site) and in the site's intensity units, float32.
    labels : list of Image
        Tissue label map of each subject on the same grid (uint8): 0 background, 1 CSF, 2 grey
        matter, 3 white matter, 4 grey matter inside the region of interest (see
        :data:`IMAGE_LABELS`).
    regions : list of Image
        The region of interest of each subject on the same grid (bool): the anatomical region
        (an ellipsoid placed relative to each subject's brain) in which the disease changes the
        grey matter's intensity.
    table : pandas.DataFrame, shape (n_subjects, 5)
        Columns ``subject``, ``site``, ``age``, ``sex`` ("F"/"M") and ``disease`` (0/1).
    truth : pandas.DataFrame, shape (n_sites, 13)
        Index: site. Columns ``gain`` (γ), ``offset`` (δ), ``fwhm_0``, ``fwhm_1``, ``fwhm_2``
        (Gaussian PSF, mm per array axis), ``spacing_0``, ``spacing_1``, ``spacing_2`` (voxel
        grid, mm), ``noise_sd`` (Gaussian noise in the site's units), ``n_subjects``,
        ``n_diseased``, ``prevalence`` and ``source_fwhm`` (the FWHM as ``"x;y;z"`` text, the
        form an image manifest takes).
    disease_effect : float
        Change of the grey matter's site-free intensity inside the region in diseased subjects
        (the white matter is at 100).
    scan_gain : pandas.Series
        Index: subject. Each scan's relative gain ``g_i`` around its site's gain (see
        ``scan_gain_sd``); the scan's gain is ``γ_j · g_i``.
    label_names : dict
        Label value -> name (:data:`IMAGE_LABELS`).
    fine_spacing : float
        Spacing (mm) of the isotropic grid the anatomy was drawn on.
    clean : list of Image or None
        With ``return_clean=True``: each subject's site-free image B on the fine grid, before the
        site's PSF, grid, gain, offset and noise.
    """

    images: list[Image]
    labels: list[Image]
    regions: list[Image]
    table: pd.DataFrame
    truth: pd.DataFrame
    disease_effect: float
    scan_gain: pd.Series
    label_names: dict[int, str] = field(default_factory=lambda: dict(IMAGE_LABELS))
    fine_spacing: float = 1.0
    clean: list[Image] | None = None

    @property
    def sites(self) -> list[str]:
        """Site labels, in the order of ``truth``."""
        return [str(s) for s in self.truth.index]


def _site_parameter(value: Any, name: str, n_sites: int, per_axis: bool) -> np.ndarray:
    """One value (or one 3-vector) per site; the defaults describe the four built-in sites."""
    if value is None:
        if n_sites > len(_DEFAULT_SITES[name]):
            raise HarmonizationError(
                f"site_{name}: the built-in defaults describe {len(_DEFAULT_SITES[name])} sites "
                f"but n_per_site has {n_sites}; pass site_{name} with one value per site."
            )
        value = _DEFAULT_SITES[name][:n_sites]
    arr = np.asarray(value, dtype=float)
    if per_axis:
        if arr.ndim == 1 and arr.size == n_sites:
            arr = np.repeat(arr[:, None], 3, axis=1)
        if arr.shape != (n_sites, 3):
            raise HarmonizationError(
                f"site_{name}: expected one value or one (x, y, z) triple per site ({n_sites} "
                f"sites); got shape {arr.shape}."
            )
    elif arr.shape != (n_sites,):
        raise HarmonizationError(
            f"site_{name}: expected one value per site ({n_sites} sites); got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise HarmonizationError(f"site_{name}: values must be finite; got {value!r}.")
    return arr


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float
) -> np.ndarray:
    """Gaussian random field: white noise blurred with ``sigma_vox``, scaled to unit SD."""
    from .imaging.resolution import gaussian_blur

    field_ = gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma_vox)
    sd = float(field_.std())
    return field_ / sd if sd > 0 else field_


def _draw_subject(
    rng: np.random.Generator,
    n: int,
    h: float,
    age: float,
    male: bool,
    diseased: bool,
    disease_effect: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Site-free anatomy on the fine grid: image B (float32), labels (uint8), region (bool)."""
    fov = n * h
    ax = (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(h)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    # brain: an ellipsoid with a subject's size (men ~4% larger), position and shape
    size = (1.0 + 0.04 * rng.standard_normal() + (0.04 if male else 0.0)) * fov
    semi = size * np.array([0.37, 0.31, 0.28]) * rng.uniform(0.96, 1.04, 3)
    centre = rng.normal(0.0, 0.8, 3)
    r = np.sqrt(((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
                + ((z - centre[2]) / semi[2]) ** 2)
    shape3 = (n, n, n)
    # random deformation of the outer surface and folding of the grey/white boundary
    outer = r + 0.035 * _smooth_field(rng, shape3, 6.0 / h)
    inner = outer + 0.06 * _smooth_field(rng, shape3, 2.5 / h)
    brain = outer <= 1.0
    # cortical CSF thickens and the ventricles widen with age (atrophy)
    atrophy = 0.0012 * (age - 50.0)
    csf = brain & (outer > 0.93 - atrophy)
    wm = brain & ~csf & (inner < 0.70 - 0.5 * atrophy)
    vent_scale = 1.0 + 0.012 * (age - 50.0)
    vent = np.zeros(shape3, dtype=bool)
    for side in (-1.0, 1.0):
        vc = centre + np.array([0.0, side * 0.22 * semi[1], 0.05 * semi[2]])
        va = semi * np.array([0.35, 0.09, 0.16]) * vent_scale
        vent |= (((x - vc[0]) / va[0]) ** 2 + ((y - vc[1]) / va[1]) ** 2
                 + ((z - vc[2]) / va[2]) ** 2) <= 1.0
    csf |= vent & brain
    wm &= ~vent
    gm = brain & ~csf & ~wm
    # region of interest: an ellipsoid in the anterior left part of each subject's brain
    rc = centre + semi * np.array([0.45, 0.40, 0.15])
    ra = semi * np.array([0.42, 0.40, 0.45])
    region = (((x - rc[0]) / ra[0]) ** 2 + ((y - rc[1]) / ra[1]) ** 2
              + ((z - rc[2]) / ra[2]) ** 2) <= 1.0
    labels = np.zeros(shape3, dtype=np.uint8)
    labels[csf] = 1
    labels[gm] = 2
    labels[wm] = 3
    labels[gm & region] = 4
    # intensities: subject-level tissue levels (grey matter darkens slightly with age), a smooth
    # multiplicative texture, and the disease in the region's grey matter
    levels = np.array([
        0.0,
        TISSUE_INTENSITY["csf"] + 2.0 * rng.standard_normal(),
        TISSUE_INTENSITY["gm"] + 1.5 * rng.standard_normal() - 0.05 * (age - 50.0),
        TISSUE_INTENSITY["wm"] + 1.5 * rng.standard_normal(),
        0.0,
    ], dtype=np.float32)
    levels[4] = levels[2] + (disease_effect if diseased else 0.0)
    texture = 1.0 + 0.03 * _smooth_field(rng, shape3, 1.5 / h)
    image = levels[labels] * texture
    image[~brain] = 0.0
    return image.astype(np.float32, copy=False), labels, region & brain


def make_multisite_images(
    *,
    n_per_site: Sequence[int] = (24, 24, 24, 24),
    prevalence: Sequence[float] = (0.1, 0.3, 0.7, 0.9),
    disease_effect: float = -5.0,
    site_gain: Sequence[float] | None = None,
    site_offset: Sequence[float] | None = None,
    site_fwhm: Sequence[float] | Sequence[Sequence[float]] | None = None,
    site_spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
    site_noise: Sequence[float] | None = None,
    scan_gain_sd: float = 0.04,
    fine_shape: int = 64,
    fine_spacing: float = 1.0,
    age_range: tuple[float, float] = (30.0, 80.0),
    return_clean: bool = False,
    random_state: int | np.random.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MultisiteImages:
    """Generate a multi-site cohort of 3-D brain-like images with known site effects and disease.

    Each subject's anatomy is drawn on a fine isotropic grid: an ellipsoidal "brain" whose size,
    position and shape vary per subject, with three tissue classes (cerebrospinal fluid in a
    cortical rim and two ventricles, grey matter, white matter) separated by randomly deformed
    surfaces, a smooth texture, and age-related atrophy. A disease changes the grey matter's
    intensity inside a region of interest. Each site then images its subjects with its own gain,
    offset, Gaussian point-spread function, voxel grid and noise. Disease prevalence differs by
    site, so site and disease are partly confounded.

    Parameters
    ----------
    n_per_site : sequence of int
        Subjects per site (the number of sites is its length).
    prevalence : sequence of float
        Fraction of diseased subjects per site (``round(p·n)`` subjects exactly).
    disease_effect : float
        Change of the site-free grey-matter intensity inside the region (white matter = 100,
        grey matter = 65 on average).
    site_gain, site_offset, site_noise : sequence of float, optional
        Per site: gain γ, offset δ, and standard deviation of the Gaussian noise (in the site's
        units). Defaults describe four sites (``_DEFAULT_SITES``).
    site_fwhm, site_spacing : sequence, optional
        Per site: FWHM (mm) of the Gaussian PSF and voxel spacing (mm), one number (isotropic)
        or an ``(x, y, z)`` triple per site. A FWHM of 0 means no blur.
    scan_gain_sd : float
        Relative standard deviation of the gain between scans of one site (receiver gain, coil
        loading): scan i of site j has gain ``γ_j · g_i`` with ``g_i ~ N(1, scan_gain_sd²)``.
        A per-image intensity normalization removes it; raw features carry it.
    fine_shape : int
        Voxels per axis of the isotropic grid the anatomy is drawn on (at least 16).
    fine_spacing : float
        Spacing (mm) of that grid; site spacings below it are refused.
    age_range : (float, float)
        Ages are uniform in this range.
    return_clean : bool
        Also return each subject's site-free fine-grid image (``clean``).
    random_state : int, Generator or None
    progress : callable, optional
        Called as ``progress(done, total)`` after each subject.

    Returns
    -------
    MultisiteImages

    Raises
    ------
    HarmonizationError
        For inconsistent sizes, prevalences or site parameters.

    Notes
    -----
    Subject i at site j (Gaussian PSF, linear interpolation onto the site's grid, IBSI-aligned
    grid centres, see :func:`imharmony.imaging.resample`)::

        I_i = γ_j g_i · sample_j(PSF_j ∗ B_i) + δ_j + ε,   ε ~ N(0, noise_j²) per voxel

    where B_i is the subject's site-free image. The label maps and regions are the truth,
    brought to the site's grid by majority (each voxel takes the tissue that fills most of it)
    and by linear interpolation thresholded at 0.5. Each subject's anatomy comes from its own
    random stream (spawned from ``random_state``), so the same ``random_state``, sizes and
    prevalences give the same subjects whatever the site parameters: the cohort can be
    "re-scanned" with other sites.
    """
    from .imaging.resample import resample, resample_mask
    from .imaging.resolution import fwhm_to_sigma, gaussian_blur

    sizes = np.asarray(n_per_site, dtype=int)
    prev = np.asarray(prevalence, dtype=float)
    if sizes.ndim != 1 or sizes.size < 2 or (sizes < 2).any():
        raise HarmonizationError("n_per_site needs at least two sites of at least 2 subjects.")
    if prev.shape != sizes.shape or ((prev < 0) | (prev > 1)).any():
        raise HarmonizationError("prevalence needs one value in [0, 1] per site.")
    if fine_shape < 16 or not (np.isfinite(fine_spacing) and fine_spacing > 0):
        raise HarmonizationError(
            "fine_shape must be at least 16 voxels and fine_spacing a positive number of mm."
        )
    k = sizes.size
    gain = _site_parameter(site_gain, "gain", k, per_axis=False)
    offset = _site_parameter(site_offset, "offset", k, per_axis=False)
    noise = _site_parameter(site_noise, "noise", k, per_axis=False)
    fwhm = _site_parameter(site_fwhm, "fwhm", k, per_axis=True)
    spacing = _site_parameter(site_spacing, "spacing", k, per_axis=True)
    if not (np.isfinite(scan_gain_sd) and 0 <= scan_gain_sd < 0.25):
        raise HarmonizationError(f"scan_gain_sd must be in [0, 0.25); got {scan_gain_sd!r}.")
    if (gain <= 0).any() or (noise < 0).any() or (fwhm < 0).any():
        raise HarmonizationError(
            "site_gain must be > 0, site_noise and site_fwhm >= 0 for every site."
        )
    if (spacing < fine_spacing * (1 - 1e-9)).any():
        raise HarmonizationError(
            f"site_spacing must be at least fine_spacing ({fine_spacing} mm) on every axis; "
            "lower fine_spacing to simulate finer sites."
        )
    rng = np.random.default_rng(random_state)
    sites = [f"site{chr(ord('A') + j)}" for j in range(k)]
    site_of = np.repeat(np.arange(k), sizes)
    n_sub = int(sizes.sum())
    disease = np.concatenate(
        [(rng.permutation(s) < round(p * s)).astype(int) for s, p in zip(sizes, prev, strict=True)]
    )
    age = np.round(rng.uniform(*age_range, n_sub), 1)
    sex = rng.choice(["F", "M"], n_sub)
    # one independent stream per subject for its anatomy and one for its noise: a subject's
    # anatomy then depends only on random_state and its place in the cohort, not on the sites'
    # acquisition, so the same cohort can be "re-scanned" with other site parameters
    anatomy_rngs = rng.spawn(n_sub)
    noise_rngs = rng.spawn(n_sub)
    h = float(fine_spacing)
    images: list[Image] = []
    labels: list[Image] = []
    regions: list[Image] = []
    clean: list[Image] = []
    scan_gain = np.ones(n_sub)
    for i in range(n_sub):
        j = int(site_of[i])
        b, lab, reg = _draw_subject(
            anatomy_rngs[i], int(fine_shape), h, float(age[i]), sex[i] == "M", bool(disease[i]),
            float(disease_effect),
        )
        if return_clean:
            clean.append(Image(b, (h, h, h)))
        blurred = gaussian_blur(b, fwhm_to_sigma(fwhm[j]) / h)
        fine = Image(blurred, (h, h, h))
        on_grid = resample(fine, tuple(spacing[j]), anti_alias=False).array
        scan_gain[i] = 1.0 + scan_gain_sd * noise_rngs[i].standard_normal()
        eps = noise_rngs[i].standard_normal(on_grid.shape, dtype=np.float32)
        eps *= np.float32(noise[j])
        acquired = np.float32(gain[j] * scan_gain[i]) * on_grid + np.float32(offset[j]) + eps
        lab_img = _resample_labels(Image(lab, (h, h, h)), tuple(spacing[j]))
        reg_img = resample_mask(Image(reg, (h, h, h)), tuple(spacing[j]))
        geometry = (lab_img.spacing, lab_img.origin)
        meta = {"site": sites[j], "subject": f"sub-{i:04d}"}
        images.append(Image(acquired.astype(np.float32, copy=False), *geometry, meta=meta))
        labels.append(Image(lab_img.array, *geometry, meta=meta))
        regions.append(Image(reg_img.array, *geometry, meta=meta))
        if progress is not None:
            progress(i + 1, n_sub)
    table = pd.DataFrame(
        {
            "subject": [f"sub-{i:04d}" for i in range(n_sub)],
            "site": [sites[j] for j in site_of],
            "age": age,
            "sex": sex,
            "disease": disease,
        }
    )
    n_dis = np.bincount(site_of, weights=disease, minlength=k).astype(int)
    truth = pd.DataFrame(
        {
            "gain": gain,
            "offset": offset,
            **{f"fwhm_{a}": fwhm[:, a] for a in range(3)},
            **{f"spacing_{a}": spacing[:, a] for a in range(3)},
            "noise_sd": noise,
            "n_subjects": sizes,
            "n_diseased": n_dis,
            "prevalence": n_dis / sizes,
            "source_fwhm": [";".join(f"{v:g}" for v in row) for row in fwhm],
        },
        index=pd.Index(sites, name="site"),
    )
    return MultisiteImages(
        images=images,
        labels=labels,
        regions=regions,
        table=table,
        truth=truth,
        disease_effect=float(disease_effect),
        scan_gain=pd.Series(scan_gain, index=table["subject"], name="scan_gain"),
        fine_spacing=h,
        clean=clean if return_clean else None,
    )


def _resample_labels(labels: Image, spacing: Sequence[float] | float) -> Image:
    """Resample a label map by majority: the new voxel takes the label that fills most of it.

    Each non-zero label's indicator is resampled linearly (without anti-aliasing, as
    :func:`~imharmony.imaging.resample_mask` does); a new voxel is background when the labels'
    weights sum to less than 0.5 (so the union of the labels is exactly what ``resample_mask``
    makes of it), and otherwise takes the label of largest weight. Nearest-neighbour resampling
    instead picks one old voxel per new voxel, which jitters thin structures by up to a voxel of
    each grid and so makes region statistics depend on the grid.
    """
    from .imaging.resample import resample

    arr = labels.array
    values = [v for v in np.unique(arr) if v != 0]
    template = resample(labels.with_array(np.zeros(arr.shape, np.float32)), spacing,
                        anti_alias=False)
    out = np.zeros(template.array.shape, dtype=arr.dtype)
    best = np.zeros(template.array.shape, dtype=np.float32)
    total = np.zeros(template.array.shape, dtype=np.float32)
    for v in values:
        w = resample(labels.with_array((arr == v).astype(np.float32)), spacing,
                     anti_alias=False).array
        total += w
        take = w > best
        best[take] = w[take]
        out[take] = v
    # background where the labels cover less than half of the new voxel: the 0.5 rule of
    # resample_mask, so labels > 0 is the resampled mask of the union
    out[total < 0.5] = 0
    return Image(out, template.spacing, template.origin, template.direction, dict(labels.meta))


@dataclass
class NemaPhantom:
    """A digital NEMA IEC body phantom scan and the truth it was generated from.

    Attributes
    ----------
    image : Image
        The scan (float32, background concentration 1): exact partial-volume voxel values plus
        the noise asked for.
    background, spheres : float
        True concentrations (``1`` and ``ratio``).
    fwhm : float
        PSF FWHM (mm).
    centres : ndarray, shape (6, 3)
        Sphere centres (mm from the centre of voxel (0, 0, 0), per array axis), smallest first.
    truth : pandas.DataFrame, shape (6, 4)
        ``diameter_mm`` and the noise-free ``rc_max``, ``rc_mean``, ``rc_peak`` measured at the
        true centres (what an exact analysis of the noise-free image returns).
    clean : Image
        The noise-free scan.
    """

    image: Image
    background: float
    spheres: float
    fwhm: float
    centres: np.ndarray
    truth: pd.DataFrame
    clean: Image


def make_nema_phantom(
    fwhm: float,
    voxel: float | Sequence[float],
    ratio: float = 10.0,
    noise: float = 0.0,
    random_state: int | np.random.Generator | None = None,
    *,
    rotation: Any = None,
) -> NemaPhantom:
    """Digital NEMA IEC body phantom with exact partial-volume voxel values.

    Parameters
    ----------
    fwhm : float
        FWHM (mm) of the scanner's isotropic Gaussian PSF (``> 0``).
    voxel : float or sequence of 3 float
        Voxel size (mm), one value or one per array axis.
    ratio : float
        Sphere-to-background concentration ratio (background concentration 1).
    noise : float
        Standard deviation of white Gaussian noise, relative to the background concentration
        (``0.1`` gives a background CV of about 10 %).
    random_state : int, Generator or None
        Seed of the noise.
    rotation : array_like, shape (3, 3), optional
        Orientation of the phantom in the field of view: the sphere ring lies in the plane
        spanned by the first two columns (default: the plane of array axes 0 and 1).

    Returns
    -------
    NemaPhantom

    Notes
    -----
    The six spheres (10-37 mm) sit on a 57.2 mm circle in increasing order, the 37 mm sphere at
    0°; the background fills the field of view. A voxel's value is ``B + (S − B)·⟨f⟩`` summed over
    the spheres, where ``f`` is the closed form of a uniform ball convolved with the Gaussian PSF
    and ``⟨·⟩`` its mean over the voxel by tensor Gauss-Legendre quadrature
    (:func:`imharmony.calibration._ball.voxel_ball`). The field of view covers every sphere plus
    ``12 mm + 2·FWHM``.
    """
    from .calibration._ball import voxel_ball
    from .calibration.nema import NEMA_DIAMETERS_MM, NEMA_RING_RADIUS_MM, recovery_at
    from .imaging.resolution import fwhm_to_sigma

    if not (np.isfinite(fwhm) and fwhm > 0):
        raise HarmonizationError(f"fwhm must be a positive number of mm; got {fwhm!r}.")
    spacing = np.broadcast_to(np.asarray(voxel, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise HarmonizationError(
            f"voxel must be positive (mm), one value or three; got {voxel!r}."
        )
    if not (np.isfinite(ratio) and ratio > 1):
        raise HarmonizationError(
            f"ratio must exceed 1 (spheres hotter than background); got {ratio!r}."
        )
    if not (np.isfinite(noise) and noise >= 0):
        raise HarmonizationError(f"noise must be >= 0; got {noise!r}.")
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    if rot.shape != (3, 3) or not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
        raise HarmonizationError("rotation must be a 3x3 orthonormal matrix.")
    radii = np.asarray(NEMA_DIAMETERS_MM) / 2.0
    angles = np.deg2rad(60.0 * (5 - np.arange(6)))
    ring = NEMA_RING_RADIUS_MM * np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
    rel = ring @ rot.T
    margin = 12.0 + 2.0 * fwhm
    half = np.max(np.abs(rel) + radii[:, None], axis=0) + margin
    shape = tuple(int(n) for n in np.ceil(2 * half / spacing).astype(int) + 1)
    centre = (np.asarray(shape) - 1) / 2.0 * spacing
    centres = rel + centre
    sigma = float(fwhm_to_sigma(fwhm))
    clean = np.zeros(shape, dtype=np.float64)
    reach = 6.0 * sigma + spacing.max()
    for c, r in zip(centres, radii, strict=True):
        lo = np.clip(np.floor((c - r - reach) / spacing).astype(int), 0, shape)
        hi = np.clip(np.ceil((c + r + reach) / spacing).astype(int) + 1, 0, shape)
        axes = [np.arange(a, b) * s for a, b, s in zip(lo, hi, spacing, strict=True)]
        grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        # beyond R + 6σ + the voxel's half-diagonal the blurred ball is below 1e-9
        near = np.sum((grid - c) ** 2, axis=1) <= (r + reach) ** 2
        vals = np.zeros(grid.shape[0])
        vals[near] = voxel_ball(grid[near] - c, spacing, float(r), sigma)
        clean[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += vals.reshape(hi - lo)
    clean = 1.0 + (ratio - 1.0) * clean
    rng = np.random.default_rng(random_state)
    noisy = clean + noise * rng.standard_normal(shape) if noise > 0 else clean.copy()
    truth = recovery_at(clean, spacing, centres, 1.0, float(ratio))[
        ["diameter_mm", "rc_max", "rc_mean", "rc_peak"]
    ]
    meta = {"units": "relative concentration", "phantom": "NEMA IEC body (digital)",
            "fwhm_mm": float(fwhm)}
    return NemaPhantom(
        image=Image(noisy.astype(np.float32), tuple(spacing), meta=meta),
        background=1.0,
        spheres=float(ratio),
        fwhm=float(fwhm),
        centres=centres,
        truth=truth,
        clean=Image(clean.astype(np.float32), tuple(spacing), meta=dict(meta)),
    )
