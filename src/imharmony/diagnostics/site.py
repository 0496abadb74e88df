"""Per-feature tests for a site effect, with false-discovery control and effect sizes.

For every feature, the samples are split by site and tested for a difference of location
(Kruskal-Wallis, one-way ANOVA, ANCOVA with covariates), of scale (Brown-Forsythe, i.e. Levene
centred on the median) and optionally of shape (k-sample Anderson-Darling). All tests but
Anderson-Darling are computed for every feature at once with array operations.

Biological covariates
---------------------
Real differences between the sites' populations (age, diagnosis, ...) are not site effects. When
``covariates`` are given, they are removed first: the joint model

    x = a + Σ_s γ_s 1[site = s] + Z β + ε

is fitted per feature by least squares (Z the encoded covariates, centred), and the tests run on
the residuals ``x - Z β̂``. β̂ is estimated *within* sites (site indicators are in the model), so
the part of a covariate's association that is due to site is not removed, and the site effect
stays in the residuals. The ANCOVA F test is the exact partial F test of the site indicators in
that same model (not on residuals).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .._deprecate import renamed_keywords
from .._vocabulary import ALPHA, NEGLIGIBLE_EFFECT
from ._data import (
    as_covariate_design,
    as_labels,
    as_matrix,
    encode_labels,
    group_indicator,
)
from ._missing import missing_patterns

__all__ = [
    "SiteTests",
    "anova_oneway",
    "benjamini_hochberg",
    "brown_forsythe",
    "kruskal_wallis",
    "residualize",
    "site_tests",
]

logger = logging.getLogger(__name__)


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries are ignored and kept NaN.

    Parameters
    ----------
    p_values : array-like of shape (m,)

    Returns
    -------
    numpy.ndarray of shape (m,)
        ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the sorted finite p-values, where m
        counts the finite p-values only.

    References
    ----------
    Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate. J R Stat Soc B 57:289.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q


def anova_oneway(X: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """One-way ANOVA of every column of ``X`` on the groups ``codes``.

    Parameters
    ----------
    X : numpy.ndarray, shape (n_samples, n_features)
    codes : numpy.ndarray of int, shape (n_samples,)
        Group code 0..k-1 of each sample.

    Returns
    -------
    dict
        ``F``, ``p``, ``eta2`` (= SSB/SST), ``ssb``, ``sst``, each of shape (n_features,), and
        ``df_between``, ``df_within``. Constant features give NaN.
    """
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    k = int(codes.max()) + 1
    G = group_indicator(codes, k)
    counts = G.sum(axis=0)
    means = (G.T @ X) / counts[:, None]
    grand = X.mean(axis=0)
    ssb = counts @ (means - grand) ** 2
    sst = ((X - grand) ** 2).sum(axis=0)
    ssw = np.maximum(sst - ssb, 0.0)
    df_b, df_w = k - 1, n - k
    with np.errstate(divide="ignore", invalid="ignore"):
        F = (ssb / df_b) / (ssw / df_w)
        eta2 = ssb / sst
    degenerate = sst <= 1e-12 * np.maximum(1.0, (X**2).sum(axis=0))
    F = np.where(degenerate, np.nan, F)
    eta2 = np.where(degenerate, np.nan, eta2)
    p = stats.f.sf(F, df_b, df_w)
    return {"F": F, "p": p, "eta2": eta2, "ssb": ssb, "sst": sst,
            "df_between": np.asarray(df_b), "df_within": np.asarray(df_w)}


def kruskal_wallis(X: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Kruskal-Wallis H test of every column, with the correction for ties.

    Uses the identity H = (n - 1) SSB_r / SST_r on the mid-ranks r, which equals the classical
    statistic divided by its tie correction, so ties need no separate count.

    Returns
    -------
    dict
        ``H``, ``p`` (chi-square with k - 1 degrees of freedom) and ``epsilon2`` = H / (n - 1),
        each of shape (n_features,). Constant features give NaN.

    References
    ----------
    Kruskal WH, Wallis WA (1952). J Am Stat Assoc 47:583. Tomczak M, Tomczak E (2014). The need
    to report effect size estimates revisited. Trends Sport Sci 21:19 (epsilon squared).
    """
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    k = int(codes.max()) + 1
    ranks = stats.rankdata(X, axis=0)
    a = anova_oneway(ranks, codes)
    eps2 = a["eta2"]
    H = (n - 1) * eps2
    p = stats.chi2.sf(H, k - 1)
    return {"H": H, "p": p, "epsilon2": eps2}


def brown_forsythe(X: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Brown-Forsythe test of equal scale: one-way ANOVA on ``|x - median(site)|``.

    This is Levene's test centred on the site medians (``scipy.stats.levene(center="median")``).

    Returns
    -------
    dict
        ``W``, ``p`` and ``eta2`` (η² of the absolute deviations), each of shape (n_features,).
    """
    X = np.asarray(X, dtype=float)
    k = int(codes.max()) + 1
    med = np.empty((k, X.shape[1]))
    for g in range(k):  # loop over sites, not features
        med[g] = np.median(X[codes == g], axis=0)
    a = anova_oneway(np.abs(X - med[codes]), codes)
    return {"W": a["F"], "p": a["p"], "eta2": a["eta2"]}


def residualize(
    X: np.ndarray, codes: np.ndarray, Z: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Remove the covariate part ``Z β̂`` estimated in ``x ~ C(site) + Z``; partial F for site.

    Parameters
    ----------
    X : numpy.ndarray, shape (n_samples, n_features)
    codes : numpy.ndarray of int, shape (n_samples,)
    Z : numpy.ndarray, shape (n_samples, n_covariates)
        Encoded covariates (no intercept).

    Returns
    -------
    residuals : numpy.ndarray, shape (n_samples, n_features)
        ``X - (Z - mean(Z)) β̂``: the covariate effects removed, the site effect kept.
    ancova : dict
        ``F``, ``p`` and ``partial_eta2`` (= SS_site / (SS_site + SS_residual)) of the site
        indicators given the covariates, each of shape (n_features,), and ``df_site``,
        ``df_residual``.
    """
    n = X.shape[0]
    k = int(codes.max()) + 1
    Zc = Z - Z.mean(axis=0)
    site = group_indicator(codes, k)[:, 1:]
    full = np.column_stack([np.ones(n), site, Zc])
    reduced = np.column_stack([np.ones(n), Zc])
    beta, *_ = np.linalg.lstsq(full, X, rcond=None)
    rss_full = ((X - full @ beta) ** 2).sum(axis=0)
    beta_r, *_ = np.linalg.lstsq(reduced, X, rcond=None)
    rss_red = ((X - reduced @ beta_r) ** 2).sum(axis=0)
    rank_full = np.linalg.matrix_rank(full)
    rank_red = np.linalg.matrix_rank(reduced)
    df1, df2 = rank_full - rank_red, n - rank_full
    ss_site = np.maximum(rss_red - rss_full, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if df1 > 0 and df2 > 0:
            F = (ss_site / df1) / (rss_full / df2)
        else:
            F = np.full(X.shape[1], np.nan)
        peta2 = ss_site / (ss_site + rss_full)
    degenerate = rss_red <= 1e-12 * np.maximum(1.0, (X**2).sum(axis=0))
    F = np.where(degenerate, np.nan, F)
    peta2 = np.where(degenerate, np.nan, peta2)
    p = stats.f.sf(F, max(df1, 1), max(df2, 1)) if df1 > 0 and df2 > 0 else np.full_like(F, np.nan)
    residuals = X - Zc @ beta[1 + site.shape[1]:]
    return residuals, {"F": F, "p": p, "partial_eta2": peta2,
                       "df_site": np.asarray(df1), "df_residual": np.asarray(df2)}


def _anderson(X: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k-sample Anderson-Darling per feature (a loop: scipy has no vectorized version)."""
    k = int(codes.max()) + 1
    stat = np.full(X.shape[1], np.nan)
    pval = np.full(X.shape[1], np.nan)
    import inspect

    kwargs = {"variant": "midrank"} if "variant" in inspect.signature(
        stats.anderson_ksamp).parameters else {}
    for j in range(X.shape[1]):
        groups = [X[codes == g, j] for g in range(k)]
        if np.ptp(X[:, j]) == 0:
            continue
        with warnings.catch_warnings():
            # scipy interpolates p in [0.001, 0.25] and warns when it caps; the capped value is
            # what is reported (documented in site_tests).
            warnings.simplefilter("ignore")
            res = stats.anderson_ksamp(groups, **kwargs)
        stat[j] = res.statistic
        pval[j] = getattr(res, "pvalue", getattr(res, "significance_level", np.nan))
    return stat, pval


@dataclass(frozen=True)
class SiteTests:
    """Result of :func:`site_tests`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per feature (index: feature name). Columns: ``kruskal_H``, ``kruskal_p``,
        ``kruskal_q``, ``epsilon2``, ``anova_F``, ``anova_p``, ``anova_q``, ``eta2``,
        ``levene_W``, ``levene_p``, ``levene_q``, ``levene_eta2``; with covariates also
        ``ancova_F``, ``ancova_p``, ``ancova_q``, ``partial_eta2``; with ``anderson=True`` also
        ``anderson_stat``, ``anderson_p``, ``anderson_q``; ``n_complete`` (samples where the
        feature is present); and ``site_effect`` (bool, see :func:`site_tests`).
    summary : dict
        ``n_samples``, ``n_features``, ``n_sites``, ``alpha``, ``negligible_effect``,
        ``residualized_on`` (covariate columns), ``frac_<test>`` (fraction of features with
        q < alpha for each test), ``frac_site_effect``, ``median_eta2``, ``median_epsilon2``,
        ``frac_eta2_not_negligible``.
    """

    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _site_statistics(X: np.ndarray, codes: np.ndarray, Z: np.ndarray, *,
                     anderson: bool) -> dict[str, np.ndarray]:
    """Every per-feature statistic of :func:`site_tests` on complete data (no adjustment)."""
    nan = np.full(X.shape[1], np.nan)
    present, codes = np.unique(codes, return_inverse=True)
    codes = codes.ravel()
    keys = ["kruskal_H", "kruskal_p", "epsilon2", "anova_F", "anova_p", "eta2", "levene_W",
            "levene_p", "levene_eta2"]
    if Z.shape[1]:
        keys += ["ancova_F", "ancova_p", "partial_eta2"]
    if anderson:
        keys += ["anderson_stat", "anderson_p"]
    if present.size < 2 or X.shape[0] <= present.size:
        return {k: nan for k in keys}  # too few complete cases in this group of features
    data = X
    out: dict[str, np.ndarray] = {}
    if Z.shape[1]:
        data, anc = residualize(X, codes, Z)
        out.update(ancova_F=anc["F"], ancova_p=anc["p"], partial_eta2=anc["partial_eta2"])
    kw = kruskal_wallis(data, codes)
    an = anova_oneway(data, codes)
    bf = brown_forsythe(data, codes)
    out.update(kruskal_H=kw["H"], kruskal_p=kw["p"], epsilon2=kw["epsilon2"], anova_F=an["F"],
               anova_p=an["p"], eta2=an["eta2"], levene_W=bf["W"], levene_p=bf["p"],
               levene_eta2=bf["eta2"])
    if anderson:
        out["anderson_stat"], out["anderson_p"] = _anderson(data, codes)
    return out


@renamed_keywords(negligible="negligible_effect")
def site_tests(
    X: Any,
    batch: Any,
    *,
    covariates: Any = None,
    alpha: float = ALPHA,
    negligible_effect: float = NEGLIGIBLE_EFFECT,
    anderson: bool = False,
    feature_names: list[str] | None = None,
) -> SiteTests:
    """Test every feature for a site effect of location and scale.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
        Missing values (NaN) are allowed: each feature is tested on its complete cases.
    batch : array-like, shape (n_samples,)
        Site label of each sample.
    covariates : pandas.DataFrame or array-like, shape (n_samples, n_covariates), optional
        Biological covariates whose effects are removed before testing (see the module notes);
        categorical columns are one-hot encoded.
    alpha : float
        False-discovery rate for the Benjamini-Hochberg adjustment (across features, per test).
    negligible_effect : float
        Effect size (ε², η²) below which a significant difference is called negligible
        (``Thresholds.negligible_effect`` in :func:`imharmony.diagnose`; formerly
        ``negligible``).
    anderson : bool
        Also run the k-sample Anderson-Darling test (shape). It loops over features (slow for
        thousands) and scipy reports its p-value interpolated and capped to [0.001, 0.25].
    feature_names : list of str, optional
        Names when ``X`` is an array.

    Returns
    -------
    SiteTests
        ``site_effect`` in the table is True where the location test (Kruskal-Wallis, on residuals
        when covariates are given) has q < alpha and ε² >= negligible_effect, or the scale test
        (Brown-Forsythe) has q < alpha and η² >= negligible_effect.

    Notes
    -----
    ε² = H / (n - 1) for Kruskal-Wallis; η² = SSB / SST for the one-way ANOVA; partial
    η² = SS_site / (SS_site + SS_residual) for the ANCOVA. η² < 0.01 is conventionally negligible.
    """
    Xa, names = as_matrix(X, name="X", feature_names=feature_names, allow_missing=True)
    n = Xa.shape[0]
    labels = as_labels(batch, n, name="batch")
    levels, codes = encode_labels(labels)
    if levels.size < 2:
        from ..errors import DesignError

        raise DesignError(f"batch: only one site ({levels[0]!r}); site tests need at least two.")
    Zdf = as_covariate_design(covariates, n)
    table = pd.DataFrame(index=pd.Index(names, name="feature"))
    missing = np.isnan(Xa)
    stats_: dict[str, np.ndarray] = {}
    for rows, cols in missing_patterns(missing):
        part = _site_statistics(Xa[np.ix_(rows, cols)], codes[rows],
                                Zdf.to_numpy(dtype=float)[rows], anderson=anderson)
        for key, values in part.items():
            stats_.setdefault(key, np.full(Xa.shape[1], np.nan))[cols] = values
    table["kruskal_H"], table["kruskal_p"] = stats_["kruskal_H"], stats_["kruskal_p"]
    table["kruskal_q"], table["epsilon2"] = benjamini_hochberg(stats_["kruskal_p"]), \
        stats_["epsilon2"]
    table["anova_F"], table["anova_p"] = stats_["anova_F"], stats_["anova_p"]
    table["anova_q"], table["eta2"] = benjamini_hochberg(stats_["anova_p"]), stats_["eta2"]
    table["levene_W"], table["levene_p"] = stats_["levene_W"], stats_["levene_p"]
    table["levene_q"], table["levene_eta2"] = benjamini_hochberg(stats_["levene_p"]), \
        stats_["levene_eta2"]
    tests = ["kruskal", "anova", "levene"]
    if Zdf.shape[1]:
        table["ancova_F"], table["ancova_p"] = stats_["ancova_F"], stats_["ancova_p"]
        table["ancova_q"] = benjamini_hochberg(stats_["ancova_p"])
        table["partial_eta2"] = stats_["partial_eta2"]
        tests.append("ancova")
    if anderson:
        table["anderson_stat"], table["anderson_p"] = stats_["anderson_stat"], \
            stats_["anderson_p"]
        table["anderson_q"] = benjamini_hochberg(stats_["anderson_p"])
        tests.append("anderson")
    table["n_complete"] = (~missing).sum(axis=0)
    location = (table["kruskal_q"] < alpha) & (table["epsilon2"] >= negligible_effect)
    scale = (table["levene_q"] < alpha) & (table["levene_eta2"] >= negligible_effect)
    table["site_effect"] = (location | scale).to_numpy()
    summary: dict[str, Any] = {
        "n_samples": n,
        "n_features": len(names),
        "n_sites": int(levels.size),
        "alpha": alpha,
        "negligible_effect": negligible_effect,
        "residualized_on": list(Zdf.columns),
    }
    for t in tests:
        summary[f"frac_{t}"] = float((table[f"{t}_q"] < alpha).mean())
    summary["frac_site_effect"] = float(table["site_effect"].mean())
    summary["median_eta2"] = float(np.nanmedian(table["eta2"])) if table["eta2"].notna().any() \
        else float("nan")
    summary["median_epsilon2"] = float(np.nanmedian(table["epsilon2"])) \
        if table["epsilon2"].notna().any() else float("nan")
    summary["frac_eta2_not_negligible"] = float((table["eta2"] >= negligible_effect).mean())
    logger.debug("site tests: %s", summary)
    return SiteTests(table=table, summary=summary)
