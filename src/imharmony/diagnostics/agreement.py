"""Agreement with a ground truth or between repeated measurements: CCC, ICC(2,1), Bland-Altman.

Used where the truth is known (phantoms, travelling subjects scanned at several sites): after
harmonization, the same object should give the same number everywhere.

References
----------
Lin LI (1989). A concordance correlation coefficient to evaluate reproducibility. Biometrics
45:255.
Shrout PE, Fleiss JL (1979). Intraclass correlations: uses in assessing rater reliability.
Psychol Bull 86:420.
McGraw KO, Wong SP (1996). Forming inferences about some intraclass correlation coefficients.
Psychol Methods 1:30.
Bland JM, Altman DG (1986). Statistical methods for assessing agreement between two methods of
clinical measurement. Lancet 327:307.
Koo TK, Li MY (2016). A guideline of selecting and reporting intraclass correlation coefficients
for reliability research. J Chiropr Med 15:155.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._data import as_pair

__all__ = [
    "BlandAltman",
    "agreement",
    "bland_altman",
    "concordance_correlation",
    "icc_2_1",
    "koo_li_band",
    "phantom_agreement",
]


def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise DataError(f"x has shape {xa.shape} but y has {ya.shape}; pass paired measurements.")
    vector = xa.ndim == 1
    if vector:
        xa, ya = xa[:, None], ya[:, None]
    if xa.ndim != 2 or xa.shape[0] < 2:
        raise DataError("pass at least two paired measurements, as (n,) or (n, n_features).")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise DataError("missing or infinite values in the paired measurements; drop those pairs.")
    return xa, ya, vector


def concordance_correlation(x: Any, y: Any) -> float | np.ndarray:
    """Lin's concordance correlation coefficient.

    Parameters
    ----------
    x, y : array-like, shape (n,) or (n, n_features)
        Paired measurements (e.g. harmonized value and ground truth).

    Returns
    -------
    float or numpy.ndarray of shape (n_features,)
        ρ_c = 2 s_xy / (s_x² + s_y² + (x̄ - ȳ)²), moments divided by n (Lin 1989). 1 only for
        identical values; it penalizes both poor correlation and any shift or change of scale.
        Two equal constants give 1; a constant against a different constant gives 0.
    """
    xa, ya, vector = _paired(x, y)
    mx, my = xa.mean(axis=0), ya.mean(axis=0)
    sxy = ((xa - mx) * (ya - my)).mean(axis=0)
    den = xa.var(axis=0) + ya.var(axis=0) + (mx - my) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ccc = 2 * sxy / den
    ccc = np.where(den == 0, 1.0, ccc)  # den = 0 only when x and y are the same constant
    return float(ccc[0]) if vector else ccc


def icc_2_1(ratings: Any) -> float | np.ndarray:
    """ICC(2,1): two-way random effects, absolute agreement, single measurement.

    Parameters
    ----------
    ratings : array-like, shape (n_targets, k_raters) or (n_targets, k_raters, n_features)
        Each row a target (subject, phantom insert), each column a rater (site, scanner, or
        "measured" and "truth").

    Returns
    -------
    float or numpy.ndarray of shape (n_features,)

    Notes
    -----
    From the two-way ANOVA mean squares (Shrout & Fleiss 1979, case 2; McGraw & Wong 1996,
    ICC(A,1)):

        ICC(2,1) = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n)

    with BMS = k Σ_i (x̄_i· - x̄)² / (n - 1) between targets, JMS = n Σ_j (x̄_·j - x̄)² / (k - 1)
    between raters, EMS the residual mean square with (n - 1)(k - 1) degrees of freedom.
    """
    r = np.asarray(ratings, dtype=float)
    single = r.ndim == 2
    if single:
        r = r[:, :, None]
    if r.ndim != 3 or r.shape[0] < 2 or r.shape[1] < 2:
        raise DataError(
            "ratings: expected (n_targets, k_raters[, n_features]) with at least 2 targets and "
            f"2 raters, got shape {np.asarray(ratings).shape}."
        )
    if not np.isfinite(r).all():
        raise DataError("ratings: missing or infinite values; ICC(2,1) needs a complete table.")
    n, k = r.shape[:2]
    grand = r.mean(axis=(0, 1))
    target = r.mean(axis=1)
    rater = r.mean(axis=0)
    ss_t = k * ((target - grand) ** 2).sum(axis=0)
    ss_r = n * ((rater - grand) ** 2).sum(axis=0)
    ss_tot = ((r - grand) ** 2).sum(axis=(0, 1))
    ss_e = np.maximum(ss_tot - ss_t - ss_r, 0.0)
    bms = ss_t / (n - 1)
    jms = ss_r / (k - 1)
    ems = ss_e / ((n - 1) * (k - 1))
    den = bms + (k - 1) * ems + k * (jms - ems) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        icc = (bms - ems) / den
    icc = np.where(den == 0, np.nan, icc)
    return float(icc[0]) if single else icc


def koo_li_band(icc: float) -> str:
    """Koo & Li (2016) reliability band of an ICC value.

    Returns ``"poor"`` (< 0.5), ``"moderate"`` (0.5 to < 0.75), ``"good"`` (0.75 to 0.9),
    ``"excellent"`` (> 0.9), or ``"undefined"`` for NaN.
    """
    if not np.isfinite(icc):
        return "undefined"
    if icc < 0.5:
        return "poor"
    if icc < 0.75:
        return "moderate"
    if icc <= 0.9:
        return "good"
    return "excellent"


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman summary of the differences ``x - y``.

    Attributes
    ----------
    bias : float or numpy.ndarray
        Mean difference.
    sd : float or numpy.ndarray
        Standard deviation of the differences (n - 1 denominator).
    lower, upper : float or numpy.ndarray
        Limits of agreement, bias ∓ z · sd.
    """

    bias: Any
    sd: Any
    lower: Any
    upper: Any


def bland_altman(x: Any, y: Any, *, z: float = 1.96) -> BlandAltman:
    """Bias and limits of agreement of ``x`` against ``y`` (Bland & Altman 1986).

    Parameters
    ----------
    x, y : array-like, shape (n,) or (n, n_features)
        Paired measurements; differences are ``x - y`` (put the reference second).
    z : float
        Normal quantile of the limits (1.96 for 95 %).
    """
    xa, ya, vector = _paired(x, y)
    d = xa - ya
    bias = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    lo, hi = bias - z * sd, bias + z * sd
    if vector:
        return BlandAltman(float(bias[0]), float(sd[0]), float(lo[0]), float(hi[0]))
    return BlandAltman(bias, sd, lo, hi)


def agreement(
    estimate: Any, truth: Any, *, feature_names: list[str] | None = None, z: float = 1.96
) -> pd.DataFrame:
    """Per-feature agreement of an estimate with the truth.

    Parameters
    ----------
    estimate, truth : array-like or pandas.DataFrame, shape (n_samples, n_features)
    feature_names : list of str, optional
    z : float
        Normal quantile of the Bland-Altman limits.

    Returns
    -------
    pandas.DataFrame
        Index: feature. Columns ``ccc``, ``icc_2_1`` (estimate and truth as two raters),
        ``icc_band`` (Koo & Li), ``bias``, ``loa_lower``, ``loa_upper`` (of estimate - truth).
    """
    E, T, names = as_pair(estimate, truth, names=("estimate", "truth"),
                          feature_names=feature_names)
    ccc = concordance_correlation(E, T)
    icc = icc_2_1(np.stack([E, T], axis=1))
    ba = bland_altman(E, T, z=z)
    return pd.DataFrame(
        {"ccc": ccc, "icc_2_1": icc, "icc_band": [koo_li_band(v) for v in icc],
         "bias": ba.bias, "loa_lower": ba.lower, "loa_upper": ba.upper},
        index=pd.Index(names, name="feature"),
    )


def phantom_agreement(reference: Any, before: Any, after: Any) -> pd.DataFrame:
    """Do the inserts' known physical differences survive a harmonization?

    Agreement of the insert measurements with their reference values, before and after: Lin's
    CCC, ICC(2,1) (measurement and reference as two raters) with its Koo & Li band, and the
    Bland-Altman bias and limits of (measurement - reference), from
    :func:`agreement`.

    Parameters
    ----------
    reference : array-like, shape (n_inserts,) or (n_inserts, n_features)
        Known values of the inserts (one row per insert measurement).
    before, after : array-like, same shape
        The measurements, raw and harmonized.

    Returns
    -------
    DataFrame
        Index ``("before" | "after", feature)``; columns ``ccc``, ``icc_2_1``, ``icc_band``,
        ``bias``, ``loa_lower``, ``loa_upper``.
    """
    def frame(v: Any) -> pd.DataFrame:
        if isinstance(v, pd.DataFrame):
            return v.reset_index(drop=True)
        arr = np.asarray(v, dtype=float)
        return pd.DataFrame(arr.reshape(arr.shape[0], -1))

    ref, b, a = frame(reference), frame(before), frame(after)
    if ref.shape != b.shape and ref.shape[1] == 1:
        ref = pd.DataFrame(np.repeat(ref.to_numpy(), b.shape[1], axis=1), columns=b.columns)
    ref.columns = b.columns
    names = [str(c) for c in b.columns]
    return pd.concat(
        {"before": agreement(b, ref, feature_names=names),
         "after": agreement(a, ref, feature_names=names)},
        names=["stage", "feature"],
    )
