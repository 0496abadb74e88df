"""Was the biology kept? Fisher discriminant ratios and mixed-effects coefficients, before/after.

Two complementary views, per feature:

- the Fisher discriminant ratio of the biology, on the data before and after harmonization, and
  its ratio after/before (≈ 1 kept, < 0.8 erased, well above 1 inflated or a genuine gain);
- the coefficient of the biology in a linear mixed model with a random intercept per site on the
  raw data, ``x ~ biology + covariates + (1 | site)``, against the same coefficient from ordinary
  least squares on the harmonized data, ``x ~ biology + covariates``: the shrinkage ratio
  r = β_after / β_raw (0.9-1.1 kept, below erased, above, or a much smaller standard error,
  inflated), and the site intra-class correlation σ²_site / (σ²_site + σ²_ε) before and after.

References
----------
Nygaard V, Rødland EA, Hovig E (2016). Methods that remove batch effects while retaining group
differences may lead to exaggerated confidence in downstream analyses. Biostatistics 17:29.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .._deprecate import renamed_keywords
from .._vocabulary import (
    ALPHA,
    FISHER_ERASED_BELOW,
    FISHER_INFLATED_ABOVE,
    MAX_FEATURES,
    SE_INFLATED_BELOW,
    SHRINKAGE_KEPT,
)
from ..errors import DataError, DesignError
from ._data import (
    as_covariate_design,
    as_labels,
    as_matrix,
    as_pair,
    biology_kind,
    encode_labels,
    group_indicator,
)
from ._missing import missing_patterns
from .site import benjamini_hochberg, kruskal_wallis

__all__ = [
    "fisher_preservation",
    "fisher_ratio",
    "mixed_effects",
    "within_site_fisher",
]

logger = logging.getLogger(__name__)


@renamed_keywords(kind="biology_type")
def fisher_ratio(X: Any, biology: Any, *, biology_type: str = "auto") -> np.ndarray:
    """Fisher discriminant ratio of the biology for every feature.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
    biology : array-like, shape (n_samples,)
        Class label (categorical) or value (continuous) of each sample.
    biology_type : {"auto", "categorical", "continuous"}
        How to read ``biology``; ``"auto"`` treats non-numeric values and integers with at most
        10 distinct values as categorical.

    Returns
    -------
    numpy.ndarray, shape (n_features,)
        Two classes: (μ₁ - μ₂)² / (σ₁² + σ₂²). More classes: Σ_c n_c (μ_c - μ)² / Σ_c n_c σ_c²
        (between- over within-class sum of squares). Continuous biology: R² / (1 - R²) of the
        straight-line fit of the feature on the biology, the same explained-over-residual ratio.
        Variances are population variances (divided by n_c). Features constant within every
        class give inf (NaN if constant overall).
    """
    Xa, _ = as_matrix(X, name="X")
    b = as_labels(biology, Xa.shape[0], name="biology")
    if biology_kind(b, biology_type) == "continuous":
        bf = b.astype(float)
        bc = bf - bf.mean()
        Xc = Xa - Xa.mean(axis=0)
        sxx = (Xc**2).sum(axis=0)
        sbb = (bc**2).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = (bc @ Xc) ** 2 / (sxx * sbb)
            return np.where(sxx > 0, r2 / (1.0 - r2), np.nan)
    levels, codes = encode_labels(b)
    k = levels.size
    if k < 2:
        raise DesignError(f"biology: only one class ({levels[0]!r}); nothing to separate.")
    G = group_indicator(codes, k)
    counts = G.sum(axis=0)
    means = (G.T @ Xa) / counts[:, None]
    var = (G.T @ (Xa - means[codes]) ** 2) / counts[:, None]  # centred: no cancellation
    with np.errstate(divide="ignore", invalid="ignore"):
        if k == 2:
            num = (means[0] - means[1]) ** 2
            den = var[0] + var[1]
        else:
            grand = Xa.mean(axis=0)
            num = counts @ (means - grand) ** 2
            den = counts @ var
        out = num / den
    return np.where((num == 0) & (den == 0), np.nan, out)


def _varying_sites(b: np.ndarray, site_codes: np.ndarray, kind: str) -> np.ndarray:
    """Codes of the sites inside which the biology varies (more than one class or value)."""
    keys = b.astype(str) if kind == "categorical" else b.astype(float)
    frame = pd.DataFrame({"site": site_codes, "b": keys})
    held = frame.groupby("site")["b"].nunique()
    return held.index[held.to_numpy() > 1].to_numpy()


@renamed_keywords(kind="biology_type")
def within_site_fisher(
    X: Any, biology: Any, batch: Any, *, biology_type: str = "auto"
) -> tuple[np.ndarray, list[str]]:
    """Fisher ratio of the biology inside the sites where it varies, averaged over those sites.

    A site holding one class says nothing about the biology apart from the site; the sites that
    mix classes do. Inside each of them the Fisher ratio (:func:`fisher_ratio`, over the classes
    that site holds) is free of the site effect; the average is weighted by the site's size.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
    biology, batch : array-like, shape (n_samples,)
    biology_type : {"auto", "categorical", "continuous"}

    Returns
    -------
    ratio : numpy.ndarray, shape (n_features,)
        NaN everywhere when no site mixes classes (complete confounding).
    sites : list of str
        The sites used.
    """
    Xa, _ = as_matrix(X, name="X")
    n = Xa.shape[0]
    b = as_labels(biology, n, name="biology")
    levels, codes = encode_labels(as_labels(batch, n, name="batch"))
    k = biology_kind(b, biology_type)
    used = _varying_sites(b, codes, k)
    out = np.zeros(Xa.shape[1])
    weight = 0
    for g in used:  # loop over sites, vectorized over features
        rows = codes == g
        with np.errstate(divide="ignore", invalid="ignore"):
            out = out + rows.sum() * fisher_ratio(Xa[rows], b[rows], biology_type=k)
        weight += int(rows.sum())
    if not weight:
        return np.full(Xa.shape[1], np.nan), []
    return out / weight, [str(levels[g]) for g in used]


def _biology_signal_p(Xa: np.ndarray, b: np.ndarray, kind: str,
                      site_codes: np.ndarray | None = None) -> np.ndarray:
    """p-value of an association of each feature with the biology (ANOVA or regression F).

    With ``site_codes``, the partial F test of the biology in ``x ~ site + biology``: the
    association inside sites, which a site effect aligned with the biology cannot fake.
    """
    n = Xa.shape[0]
    if site_codes is not None:
        if kind == "continuous":
            B = b.astype(float)[:, None]
        else:
            _, bcodes = encode_labels(b)
            B = group_indicator(bcodes, int(bcodes.max()) + 1)[:, 1:]
        S = group_indicator(site_codes, int(site_codes.max()) + 1)[:, 1:]
        full = np.column_stack([np.ones(n), S, B])
        reduced = np.column_stack([np.ones(n), S])
        rss_f = ((Xa - full @ np.linalg.lstsq(full, Xa, rcond=None)[0]) ** 2).sum(axis=0)
        rss_r = ((Xa - reduced @ np.linalg.lstsq(reduced, Xa, rcond=None)[0]) ** 2).sum(axis=0)
        df1 = np.linalg.matrix_rank(full) - np.linalg.matrix_rank(reduced)
        df2 = n - np.linalg.matrix_rank(full)
        if df1 < 1 or df2 < 1:
            return np.full(Xa.shape[1], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            F = (np.maximum(rss_r - rss_f, 0.0) / df1) / (rss_f / df2)
        return stats.f.sf(F, df1, df2)
    if kind == "continuous":
        bf = b.astype(float)
        bc = bf - bf.mean()
        Xc = Xa - Xa.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = (bc @ Xc) ** 2 / ((Xc**2).sum(axis=0) * (bc**2).sum())
            F = r2 / (1 - r2) * (n - 2)
        return stats.f.sf(F, 1, n - 2)
    levels, codes = encode_labels(b)
    k = levels.size
    G = group_indicator(codes, k)
    counts = G.sum(axis=0)
    means = (G.T @ Xa) / counts[:, None]
    grand = Xa.mean(axis=0)
    ssb = counts @ (means - grand) ** 2
    ssw = ((Xa - means[codes]) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        F = (ssb / (k - 1)) / (ssw / (n - k))
    return stats.f.sf(F, k - 1, n - k)


def _fisher_columns(Xb: np.ndarray, Xa: np.ndarray, b: np.ndarray, k: str,
                    site_labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """Pooled (and within-site) Fisher ratios and the signal p-value, on complete data."""
    nan = np.full(Xb.shape[1], np.nan)
    out: dict[str, np.ndarray] = {}
    if np.unique(b.astype(str)).size < 2 or Xb.shape[0] < 3:
        return out  # too few complete cases: the columns stay NaN
    out["fisher_before"] = fisher_ratio(Xb, b, biology_type=k)
    out["fisher_after"] = fisher_ratio(Xa, b, biology_type=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["fisher_ratio"] = out["fisher_after"] / out["fisher_before"]
    site_codes = None
    if site_labels is not None:
        site_codes = encode_labels(site_labels)[1]
        if _varying_sites(b, site_codes, k).size:
            wb, _ = within_site_fisher(Xb, b, site_labels, biology_type=k)
            wa, _ = within_site_fisher(Xa, b, site_labels, biology_type=k)
            with np.errstate(divide="ignore", invalid="ignore"):
                out.update(within_before=wb, within_after=wa, within_ratio=wa / wb)
        else:
            site_codes = None
            out.update(within_before=nan, within_after=nan, within_ratio=nan)
    out["signal_p"] = _biology_signal_p(Xb, b, k, site_codes)
    return out


@renamed_keywords(kind="biology_type")
def fisher_preservation(
    before: Any,
    after: Any,
    biology: Any,
    *,
    biology_type: str = "auto",
    erased_below: float = FISHER_ERASED_BELOW,
    inflated_above: float = FISHER_INFLATED_ABOVE,
    alpha: float = ALPHA,
    feature_names: list[str] | None = None,
    batch: Any = None,
) -> pd.DataFrame:
    """Fisher ratio of the biology before and after harmonization, their ratio and a verdict.

    Parameters
    ----------
    before, after : array-like or pandas.DataFrame, shape (n_samples, n_features)
        The same samples and features before and after harmonization.
    biology : array-like, shape (n_samples,)
    biology_type : {"auto", "categorical", "continuous"}
        See :func:`fisher_ratio`.
    erased_below, inflated_above : float
        Bands of the ratio after/before: below ``erased_below`` "erased", above
        ``inflated_above`` "inflated", otherwise "kept".
    alpha : float
        A feature whose association with the biology before harmonization is not significant
        (Benjamini-Hochberg q >= alpha, ANOVA or regression F test) gets the verdict
        "no signal": a ratio of two near-zero numbers says nothing.
    feature_names : list of str, optional
    batch : array-like, shape (n_samples,), optional
        Site of each sample. When given and some site mixes classes, the signal test is the
        partial F test of the biology given the site (``x ~ site + biology``: a site effect
        aligned with the biology is not taken for a signal), and the within-site Fisher ratio
        (:func:`within_site_fisher`) is added before and after.

    Returns
    -------
    pandas.DataFrame
        Index: feature. Columns ``fisher_before``, ``fisher_after``, ``fisher_ratio`` (pooled
        over all samples), with ``batch`` ``within_before``, ``within_after``,
        ``within_ratio``, then ``signal_q`` and ``verdict`` (from the pooled ratio).

    Notes
    -----
    A ratio well above 1 is ambiguous: removing site variance that inflated the within-class
    spread is a genuine gain, but the same appears when the label was a ComBat covariate in an
    unbalanced design (Nygaard et al. 2016). Read it together with :func:`mixed_effects`.
    """
    Xb, Xa, names = as_pair(before, after, feature_names=feature_names, allow_missing=True)
    n, p = Xb.shape
    b = as_labels(biology, n, name="biology")
    k = biology_kind(b, biology_type)
    site_labels = None if batch is None else as_labels(batch, n, name="batch")
    within = site_labels is not None and \
        _varying_sites(b, encode_labels(site_labels)[1], k).size > 0
    keys = ["fisher_before", "fisher_after", "fisher_ratio"]
    if within:
        keys += ["within_before", "within_after", "within_ratio"]
    columns: dict[str, Any] = {key: np.full(p, np.nan) for key in [*keys, "signal_p"]}
    for rows, cols in missing_patterns(np.isnan(Xb) | np.isnan(Xa)):
        part = _fisher_columns(Xb[np.ix_(rows, cols)], Xa[np.ix_(rows, cols)], b[rows], k,
                               None if not within else site_labels[rows])
        for key, values in part.items():
            columns[key][cols] = values
    ratio = columns["fisher_ratio"]
    q = benjamini_hochberg(columns.pop("signal_p"))
    verdict = np.where(
        ~(q < alpha),
        "no signal",
        np.where(ratio < erased_below, "erased",
                 np.where(ratio > inflated_above, "inflated", "kept")),
    )
    columns.update(signal_q=q, verdict=verdict)
    return pd.DataFrame(
        columns,
        index=pd.Index(names, name="feature"),
    )


def _design(b: np.ndarray, kind: str, Z: pd.DataFrame) -> tuple[np.ndarray, list[str], int]:
    """Fixed-effects design [1, biology terms, centred covariates]; names of biology terms."""
    n = b.size
    if kind == "continuous":
        bf = b.astype(float)
        bio = (bf - bf.mean())[:, None]
        terms = ["biology"]
    else:
        levels, codes = encode_labels(b)
        if levels.size < 2:
            raise DesignError(f"biology: only one class ({levels[0]!r}); nothing to estimate.")
        bio = group_indicator(codes, levels.size)[:, 1:]
        terms = [f"biology[{lv}]" for lv in levels[1:]]
    Zc = Z.to_numpy(dtype=float)
    Zc = Zc - Zc.mean(axis=0) if Zc.shape[1] else Zc
    D = np.column_stack([np.ones(n), bio, Zc])
    if np.linalg.matrix_rank(D) < D.shape[1]:
        raise DesignError(
            "biology and covariates are collinear (the design [1, biology, covariates] is rank "
            f"deficient; covariates {list(Z.columns)}); drop the redundant covariate."
        )
    return D, terms, len(terms)


def _fit_mixed(y: np.ndarray, D: np.ndarray, groups: np.ndarray, m: int) -> dict[str, Any]:
    """Fit ``y ~ D + (1 | group)`` by REML, catching warnings; biology terms are D[:, 1:1+m]."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    out: dict[str, Any] = {"beta": np.full(m, np.nan), "cov": np.full((m, m), np.nan),
                           "icc": np.nan, "converged": False, "note": ""}
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            res = MixedLM(y, D, groups=groups).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            out["note"] = f"fit failed: {exc}"
            return out
        beta = np.asarray(res.fe_params)[1:1 + m]
        cov = np.asarray(res.cov_params())[1:1 + m, 1:1 + m]
        sig_site = float(np.asarray(res.cov_re).ravel()[0])
        sig_e = float(res.scale)
    msgs = sorted({str(w.message).split("\n")[0] for w in caught})
    ok = bool(res.converged) and np.all(np.isfinite(beta)) and np.all(np.isfinite(np.diag(cov))) \
        and np.all(np.diag(cov) > 0)
    out.update(beta=beta, cov=cov, converged=ok, note="; ".join(msgs))
    total = sig_site + sig_e
    out["icc"] = max(sig_site, 0.0) / total if np.isfinite(total) and total > 0 else np.nan
    return out


def _wald_p(beta: np.ndarray, cov: np.ndarray) -> float:
    """Joint Wald chi-square p-value that all ``beta`` are zero."""
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(cov))):
        return float("nan")
    try:
        stat = float(beta @ np.linalg.solve(cov, beta))
    except np.linalg.LinAlgError:
        return float("nan")
    return float(stats.chi2.sf(stat, beta.size))


def _mixed_rows(Xb: np.ndarray, Xa: np.ndarray, D: np.ndarray, terms: list[str], m: int,
                site_codes: np.ndarray) -> list[dict[str, Any]]:
    """Mixed model on ``Xb`` and OLS on ``Xa``, per column, with design ``D`` (complete data)."""
    n = Xb.shape[0]
    scale = Xb.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Yb = Xb / scale
    Ya = Xa / scale

    # OLS on the harmonized data, every modelled feature at once.
    dof = n - D.shape[1]
    if dof < 1:
        raise DesignError(
            f"{n} samples for {D.shape[1]} fixed effects; add samples or drop covariates."
        )
    XtX_inv = np.linalg.inv(D.T @ D)
    coef = XtX_inv @ D.T @ Ya
    sigma2 = ((Ya - D @ coef) ** 2).sum(axis=0) / dof
    ols_beta = coef[1:1 + m].T  # (features, m)
    ols_cov = XtX_inv[1:1 + m, 1:1 + m]

    rows = []
    for i in range(Xb.shape[1]):
        raw = _fit_mixed(Yb[:, i], D, site_codes, m)
        aft = _fit_mixed(Ya[:, i], D, site_codes, m)
        cov_a = sigma2[i] * ols_cov
        # a failed mixed fit can leave a non-finite or indefinite covariance: no SE then
        var_r = np.diag(raw["cov"]) if np.all(np.isfinite(raw["cov"])) else np.full(m, np.nan)
        se_r = np.sqrt(np.where(var_r >= 0, var_r, np.nan))
        se_a = np.sqrt(np.diag(cov_a))
        br, ba = raw["beta"], ols_beta[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = float(ba @ br / (br @ br))
            se_ratio = float(np.mean(se_a / se_r))
            t = np.abs(br / se_r)
        show = int(np.nanargmax(t)) if np.any(np.isfinite(t)) else 0
        notes = []
        if raw["note"]:
            notes.append(f"raw: {raw['note']}")
        if aft["note"]:
            notes.append(f"after: {aft['note']}")
        rows.append({
            "term": terms[show],
            "beta_raw": br[show] * scale[i],
            "se_raw": se_r[show] * scale[i],
            "beta_after": ba[show] * scale[i],
            "se_after": se_a[show] * scale[i],
            "p_raw": _wald_p(br, raw["cov"]),
            "p_after": _wald_p(ba, cov_a),
            "shrinkage": shrink,
            "se_ratio": se_ratio,
            "icc_before": raw["icc"],
            "icc_after": aft["icc"],
            "converged_raw": raw["converged"],
            "converged_after": aft["converged"],
            "note": " | ".join(notes),
        })
    return rows


@renamed_keywords(kind="biology_type")
def mixed_effects(
    before: Any,
    after: Any,
    biology: Any,
    batch: Any,
    *,
    covariates: Any = None,
    biology_type: str = "auto",
    max_features: int | None = MAX_FEATURES,
    rank_by: Any = None,
    kept: tuple[float, float] = SHRINKAGE_KEPT,
    se_inflated_below: float = SE_INFLATED_BELOW,
    alpha: float = ALPHA,
    feature_names: list[str] | None = None,
) -> pd.DataFrame:
    """Coefficient of the biology: mixed model on raw data against OLS on harmonized data.

    Parameters
    ----------
    before, after : array-like or pandas.DataFrame, shape (n_samples, n_features)
        Raw and harmonized data (same samples, same features).
    biology : array-like, shape (n_samples,)
        Categorical (treatment-coded against its first sorted level) or continuous.
    batch : array-like, shape (n_samples,)
        Site of each sample: the grouping of the random intercept.
    covariates : pandas.DataFrame, optional
        Further fixed effects (categorical columns one-hot encoded).
    biology_type : {"auto", "categorical", "continuous"}
    max_features : int or None
        The mixed model is fitted per feature (a few tens of ms each). Only the
        ``max_features`` most site-affected features are modelled: ranked by ``rank_by`` when
        given (larger = more affected), otherwise by the Kruskal-Wallis ε² of the site on the raw
        data. None models every feature.
    rank_by : array-like of shape (n_features,), optional
    kept : (float, float)
        Band of the shrinkage ratio r called "kept"; below it "erased", above it "inflated".
    se_inflated_below : float
        A standard error after below this fraction of the raw one is "inflated" (exaggerated
        confidence, Nygaard et al. 2016) even when r is in the kept band.
    alpha : float
        Features whose raw biology coefficient is not significant (Benjamini-Hochberg q over the
        modelled features, joint Wald test) get the verdict "no signal".
    feature_names : list of str, optional

    Returns
    -------
    pandas.DataFrame
        One row per modelled feature, most site-affected first. Columns: ``term`` (the biology
        term shown), ``beta_raw``, ``se_raw``, ``beta_after``, ``se_after`` (for that term, in
        the feature's units), ``p_raw``, ``q_raw``, ``p_after`` (joint tests of all biology
        terms), ``shrinkage`` r, ``se_ratio``, ``icc_before``, ``icc_after``,
        ``converged_raw``, ``converged_after``, ``note`` (warnings raised by the fits) and
        ``verdict`` ("kept", "erased", "inflated", "no signal" or "not converged").

    Notes
    -----
    With one biology term r = β_after / β_raw. With several (a label with more than two
    classes), r = β_afterᵀβ_raw / β_rawᵀβ_raw, the least-squares factor relating the two
    coefficient vectors, and the SE ratio is the mean over terms; ``term`` then shows the term
    with the largest raw |β / SE|. The site ICC is σ²_site / (σ²_site + σ²_ε) from REML fits of
    the random-intercept model on the raw and on the harmonized data; an ICC after of 0 with a
    "boundary" note is the expected outcome of a good harmonization, not a failure. Each feature
    is divided by its raw standard deviation before fitting (for the optimizer); coefficients
    are reported back in the original units. Warnings raised by statsmodels are caught per fit
    and recorded in ``note``; a fit whose optimizer did not converge, or whose standard errors are
    not finite, is marked in ``converged_raw`` / ``converged_after``.
    """
    Xb, Xa, names = as_pair(before, after, feature_names=feature_names, allow_missing=True)
    n, p = Xb.shape
    b = as_labels(biology, n, name="biology")
    site = as_labels(batch, n, name="batch")
    site_levels, site_codes = encode_labels(site)
    if site_levels.size < 2:
        raise DesignError("batch: only one site; the random site intercept needs at least two.")
    Z = as_covariate_design(covariates, n)
    k = biology_kind(b, biology_type)
    _design(b, k, Z)  # the full design must be estimable

    if rank_by is None:
        score = kruskal_wallis(np.nan_to_num(Xb), site_codes)["epsilon2"]
    else:
        score = np.asarray(rank_by, dtype=float).ravel()
        if score.size != p:
            raise DataError(f"rank_by: {score.size} values for {p} features; pass one per feature.")
    order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
    if max_features is not None and max_features < p:
        order = order[:max_features]
        logger.info("mixed models on the %d most site-affected of %d features", order.size, p)

    rows: dict[int, dict[str, Any]] = {}
    missing = np.isnan(Xb[:, order]) | np.isnan(Xa[:, order])
    for keep, cols in missing_patterns(missing):
        feats = order[cols]
        try:
            D, terms, m = _design(b[keep], k, Z[keep].reset_index(drop=True))
            fitted = _mixed_rows(Xb[np.ix_(keep, feats)], Xa[np.ix_(keep, feats)], D, terms, m,
                                 encode_labels(site_codes[keep])[1])
        except DesignError as exc:  # too few complete cases, or they lack a class
            if keep.all():
                raise
            fitted = [{"converged_raw": False, "converged_after": False,
                       "note": f"complete cases ({int(keep.sum())} samples): {exc}"}] * feats.size
        for j, row in zip(feats, fitted, strict=True):
            rows[j] = {"feature": names[j], **row}
    columns = ["feature", "term", "beta_raw", "se_raw", "beta_after", "se_after", "p_raw",
               "p_after", "shrinkage", "se_ratio", "icc_before", "icc_after", "converged_raw",
               "converged_after", "note"]
    table = pd.DataFrame([rows[j] for j in order], columns=columns).set_index("feature")
    table[["converged_raw", "converged_after"]] = table[
        ["converged_raw", "converged_after"]].astype(bool)
    table.insert(table.columns.get_loc("p_after"), "q_raw", benjamini_hochberg(table["p_raw"]))
    lo, hi = kept
    r, se_ratio = table["shrinkage"].to_numpy(), table["se_ratio"].to_numpy()
    verdict = np.where(
        ~table["converged_raw"].to_numpy(dtype=bool),
        "not converged",
        np.where(
            ~(table["q_raw"].to_numpy() < alpha),
            "no signal",
            np.where(r < lo, "erased",
                     np.where((r > hi) | (se_ratio < se_inflated_below), "inflated", "kept")),
        ),
    )
    table["verdict"] = verdict
    n_bad = int((~table["converged_raw"]).sum() + (~table["converged_after"]).sum())
    if n_bad:
        logger.info("%d mixed-model fit(s) did not converge; see the 'note' column", n_bad)
    return table
