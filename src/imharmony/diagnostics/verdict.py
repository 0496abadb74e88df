"""One call that answers both questions: was the site effect removed, and was the biology kept?

:func:`diagnose` runs the confounding check, the per-feature site tests, the multivariate views
and the biology checks on the data before and after harmonization, and turns them into two
verdicts with the thresholds named (:class:`Thresholds`) so that a reader can see, and change,
what "removed" and "kept" mean.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._vocabulary import (
    ALPHA,
    FISHER_ERASED_BELOW,
    FISHER_INFLATED_ABOVE,
    MAX_FEATURES,
    N_PERMUTATIONS,
    N_SPLITS,
    NEGLIGIBLE_EFFECT,
    SE_INFLATED_BELOW,
    SHRINKAGE_KEPT,
)
from ..errors import DataError, DesignError
from ._data import as_covariate_design, as_labels, as_pair, biology_kind, encode_labels
from .agreement import phantom_agreement
from .biology import fisher_preservation, mixed_effects
from .confounding import ConfoundingReport, check_confounding
from .covariance import covariance_distance
from .multivariate import PCAProjection, guided_pca, pca_projection, pca_silhouette, site_prediction
from .site import SiteTests, residualize, site_tests

__all__ = ["Diagnosis", "DiagnosisData", "Thresholds", "diagnose"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind the verdicts of :func:`diagnose`; every one can be changed.

    Attributes
    ----------
    alpha : float
        False-discovery rate (Benjamini-Hochberg) of every per-feature test.
    negligible_effect : float
        Site effect sizes (ε² of Kruskal-Wallis, η² of Brown-Forsythe) below this are
        negligible even when significant (η² < 0.01 is the usual convention).
    site_removed_max_fraction : float
        Site effect "removed" when at most this fraction of features still shows a
        non-negligible significant site effect after harmonization.
    site_reduced_ratio : float
        Otherwise "reduced" when that fraction is at most this multiple of the fraction before;
        "not removed" beyond.
    site_prediction_margin : float
        A "removed" verdict is lowered to "reduced" when the cross-validated balanced accuracy
        of predicting the site after harmonization exceeds chance (1 / n_sites) by more than
        this: a multivariate site signature remains.
    fisher_erased_below, fisher_inflated_above : float
        Bands of the Fisher ratio after/before (heuristic 0.8; the upper band is symmetric,
        1 / 0.8).
    shrinkage_kept : (float, float)
        Band of the mixed-model shrinkage ratio r = β_after / β_raw called "kept".
    se_inflated_below : float
        Biology "inflated" when the median SE after / SE raw falls below this (exaggerated
        confidence, Nygaard et al. 2016).
    """

    alpha: float = ALPHA
    negligible_effect: float = NEGLIGIBLE_EFFECT
    site_removed_max_fraction: float = 0.05
    site_reduced_ratio: float = 0.5
    site_prediction_margin: float = 0.1
    fisher_erased_below: float = FISHER_ERASED_BELOW
    fisher_inflated_above: float = FISHER_INFLATED_ABOVE
    shrinkage_kept: tuple[float, float] = SHRINKAGE_KEPT
    se_inflated_below: float = SE_INFLATED_BELOW


@dataclass(frozen=True)
class DiagnosisData:
    """The inputs of :func:`diagnose` that the report draws (distributions, PCA scatter).

    Attributes
    ----------
    before, after : pandas.DataFrame, shape (n_samples, n_features)
        The features before and after harmonization (columns: feature names).
    batch : numpy.ndarray, shape (n_samples,)
        Site label of each sample.
    biology : numpy.ndarray, shape (n_samples,), or None
    biology_type : {"categorical", "continuous"} or None
        How ``biology`` was read (``diagnose(biology_type="auto")`` resolved).
    covariates : pandas.DataFrame or None
    batch_name, biology_name : str
        Names of the site and biology variables (a Series' name, else "site" / "biology").
    pca : PCAProjection
        Scores on the first two principal axes of the standardized data before, the data after
        projected on the same axes (:func:`~imharmony.diagnostics.pca_projection`; the features
        as given, not the residuals after the biology, so that the biology shows), over the
        block without missing values.
    pca_rows : numpy.ndarray of bool, shape (n_samples,), or None
        The samples of ``pca`` (None: all).
    """

    before: pd.DataFrame
    after: pd.DataFrame
    batch: np.ndarray
    biology: np.ndarray | None
    biology_type: str | None
    covariates: pd.DataFrame | None
    pca: PCAProjection
    batch_name: str = "site"
    biology_name: str = "biology"
    pca_rows: np.ndarray | None = None


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` measured, and the two verdicts.

    Attributes
    ----------
    verdicts : dict
        ``{"site effect": "removed" | "reduced" | "not removed",
        "biology": "kept" | "erased" | "inflated" | "not assessed"}``.
    reasons : dict
        For each verdict, the sentences that justify it (numbers and thresholds).
    site_before, site_after : SiteTests
        Per-feature site tests (tables and summaries) before and after.
    multivariate : pandas.DataFrame
        Rows ``silhouette``, ``gpca_delta``, ``gpca_p``, ``covariance_distance`` (weighted mean
        of :func:`~imharmony.diagnostics.covariance.covariance_distance`, when every site has
        two samples), ``site_prediction`` (balanced accuracy)
        and, when a harmonizer was given, ``site_prediction_in_folds``; columns ``before``,
        ``after``, ``chance``.
    fisher : pandas.DataFrame or None
        :func:`~imharmony.diagnostics.fisher_preservation` table (None without biology).
    mixed : pandas.DataFrame or None
        :func:`~imharmony.diagnostics.mixed_effects` table (None without biology, or with
        ``max_features=0``).
    confounding : ConfoundingReport
    thresholds : Thresholds
    biology_evidence : pandas.DataFrame or None
        One row per measure of the biology (``pooled Fisher ratio``, ``within-site Fisher
        ratio`` over the sites that mix classes, ``mixed-model coefficient``); columns
        ``n_features``, ``before``, ``after``, ``ratio``, ``low``, ``high`` (the band called
        kept) and ``reading`` ("kept", "erased" or "inflated").
    missing : dict
        Missing values (NaN before or after): ``cells``, ``features`` (with any),
        ``min_complete_cases`` (the fewest samples a feature was tested on), and the complete
        block the multivariate measures used (``multivariate_samples``,
        ``multivariate_features``).
    n_samples, n_features, n_sites : int
    data : DiagnosisData or None
        The inputs, kept for the report's figures (None when built by hand).
    parameters : dict
        The arguments of :func:`diagnose` other than the data (for the report's provenance).
    phantom : pandas.DataFrame or None
        :func:`~imharmony.diagnostics.phantom_agreement` of phantom inserts with their known
        values, before and after (None when no phantom was given).
    """

    verdicts: dict[str, str]
    reasons: dict[str, list[str]]
    site_before: SiteTests
    site_after: SiteTests
    multivariate: pd.DataFrame
    fisher: pd.DataFrame | None
    mixed: pd.DataFrame | None
    confounding: ConfoundingReport
    thresholds: Thresholds = field(default_factory=Thresholds)
    biology_evidence: pd.DataFrame | None = None
    missing: dict[str, int] = field(default_factory=dict)
    n_samples: int = 0
    n_features: int = 0
    n_sites: int = 0
    data: DiagnosisData | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    phantom: pd.DataFrame | None = None

    @property
    def site_table(self) -> pd.DataFrame:
        """Per-feature site tests before and after side by side (MultiIndex columns)."""
        return pd.concat({"before": self.site_before.table, "after": self.site_after.table},
                         axis=1)

    def summary(self) -> str:
        """Plain-text summary: the two verdicts, their reasons, and the thresholds used."""
        lines = [
            f"imharmony diagnosis: {self.n_samples} samples, {self.n_features} features, "
            f"{self.n_sites} sites",
            "",
        ]
        for question in ("site effect", "biology"):
            lines.append(f"{question}: {self.verdicts[question].upper()}")
            lines.extend(f"  - {r}" for r in self.reasons[question])
        lines.append("confounding of site and biology: "
                     f"{self.confounding.biology_level or 'not assessed'}")
        lines.extend(f"  - {m}" for m in self.confounding.messages)
        lines.append("")
        lines.append("multivariate (before -> after):")
        for name, row in self.multivariate.iterrows():
            chance = "" if pd.isna(row["chance"]) else f" (chance {row['chance']:.2f})"
            lines.append(f"  {name}: {_fmt(row['before'])} -> {_fmt(row['after'])}{chance}")
        lines.append("")
        lines.append("thresholds: " + ", ".join(
            f"{k}={v}" for k, v in asdict(self.thresholds).items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable results: verdicts, reasons, thresholds and the key numbers.

        Plain Python types (NaN where a number could not be computed); what ``imharmony
        diagnose --json`` writes.
        """
        def numbers(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if isinstance(v, (int, float, np.number))}

        conf = self.confounding
        evidence = self.biology_evidence
        return {
            "verdicts": dict(self.verdicts),
            "reasons": {k: list(v) for k, v in self.reasons.items()},
            "samples": self.n_samples,
            "features": self.n_features,
            "sites": self.n_sites,
            "site_sizes": {str(k): int(v) for k, v in conf.site_sizes.items()},
            "site_tests": {"before": numbers(self.site_before.summary),
                           "after": numbers(self.site_after.summary),
                           "residualized_on": list(self.site_after.summary["residualized_on"])},
            "multivariate": {str(k): {c: float(v) for c, v in row.items()}
                             for k, row in self.multivariate.iterrows()},
            "biology": {} if evidence is None else {
                str(k): {c: (v if isinstance(v, str) else int(v) if c == "n_features" else
                             float(v)) for c, v in row.items()}
                for k, row in evidence.iterrows()},
            "mixed_models_not_converged": [] if self.mixed is None else [
                str(f) for f in self.mixed.index[self.mixed["verdict"] == "not converged"]],
            "confounding": {
                "level": conf.level,
                "biology_level": conf.biology_level,
                "single_class_sites": [] if conf.variables.empty else
                list(conf.variables.iloc[0]["single_class_sites"])
                if conf.variables.iloc[0]["role"] == "biology" else [],
                "mixed_sites": list(conf.mixed_sites),
                "findings": [{"level": f.level, "topic": f.topic, "role": f.role,
                              "variable": f.variable, "message": f.message}
                             for f in conf.findings],
            },
            "missing": dict(self.missing),
            "thresholds": asdict(self.thresholds),
            "parameters": dict(self.parameters),
        }

    def to_html(self, path: str | os.PathLike[str], *, title: str | None = None,
                provenance: dict[str, Any] | None = None) -> Path:
        """Write the HTML report and return its path.

        Delegates to :func:`imharmony.report.html.render_report` (imported on first use);
        ``title`` and ``provenance`` are passed on when given.
        """
        from ..report.html import render_report

        kwargs: dict[str, Any] = {}
        if title is not None:
            kwargs["title"] = title
        if provenance is not None:
            kwargs["provenance"] = provenance
        return render_report(self, path, **kwargs)


def _name_of(values: Any, default: str) -> str:
    """The name of a labelled input (a Series' name, a one-column frame's column)."""
    if isinstance(values, pd.DataFrame) and values.shape[1] == 1:
        return str(values.columns[0])
    name = getattr(values, "name", None) if isinstance(values, pd.Series) else None
    return default if name is None else str(name)


def _describe(obj: Any) -> str:
    """Short description of a harmonizer for provenance: its repr, or its qualified name."""
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "get_params")):
        return getattr(obj, "__qualname__", type(obj).__name__)
    return repr(obj)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _complete_block(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the largest simple block without missing values.

    Either the samples complete in every feature, or the features complete in every sample,
    whichever keeps more values (the multivariate measures need one complete matrix).
    """
    n, p = missing.shape
    full_rows = ~missing.any(axis=1)
    full_cols = ~missing.any(axis=0)
    all_rows, all_cols = np.ones(n, bool), np.ones(p, bool)
    if full_rows.all():
        return all_rows, all_cols
    if full_rows.sum() * p >= n * full_cols.sum():
        return full_rows, all_cols
    return all_rows, full_cols


def _multivariate(mv: pd.DataFrame, Xb: np.ndarray, Xa: np.ndarray, site: np.ndarray,
                  resid_arg: pd.DataFrame | None, *, n_permutations: int, n_splits: int,
                  random_state: int | None, harmonizer: Any, harmonizer_covariates: Any,
                  conf_cov: pd.DataFrame, reasons: list[str]) -> None:
    """Fill ``mv`` with the silhouette, guided PCA and site prediction (complete data)."""
    if Xb.shape[1] < 2 or encode_labels(site)[0].size < 2:
        raise DesignError(f"{Xb.shape[0]} samples x {Xb.shape[1]} features without missing "
                          "values, in fewer than 2 sites or with fewer than 2 features")
    codes = encode_labels(site)[1]
    Rb, Ra = Xb, Xa
    if resid_arg is not None:
        Zd = as_covariate_design(resid_arg, len(site)).to_numpy(dtype=float)
        Rb, _ = residualize(Xb, codes, Zd)
        Ra, _ = residualize(Xa, codes, Zd)
    sil_b, sil_a = pca_silhouette(Rb, site, Ra)
    mv.loc["silhouette"] = [sil_b, sil_a, np.nan]
    g_b = guided_pca(Rb, site, n_permutations=n_permutations, random_state=random_state)
    g_a = guided_pca(Ra, site, n_permutations=n_permutations, random_state=random_state)
    mv.loc["gpca_delta"] = [g_b.delta, g_a.delta, np.nan]
    mv.loc["gpca_p"] = [g_b.p_value, g_a.p_value, np.nan]
    if np.bincount(codes).min() >= 2:  # per-site covariance (what CovBat harmonizes)
        mv.loc["covariance_distance"] = [covariance_distance(Rb, site).mean,
                                         covariance_distance(Ra, site).mean, np.nan]
    try:
        spk = {"adjust_for": resid_arg, "n_splits": n_splits, "random_state": random_state}
        sp_b = site_prediction(Xb, site, **spk)
        sp_a = site_prediction(Xa, site, **spk)
        mv.loc["site_prediction"] = [sp_b.balanced_accuracy, sp_a.balanced_accuracy, sp_b.chance]
        if harmonizer is not None:
            hcov = harmonizer_covariates
            if hcov is None and conf_cov.shape[1]:
                hcov = conf_cov
            sp_h = site_prediction(Xb, site, harmonizer=harmonizer, covariates=hcov, **spk)
            mv.loc["site_prediction_in_folds"] = [sp_b.balanced_accuracy, sp_h.balanced_accuracy,
                                                  sp_h.chance]
    except DesignError as exc:
        reasons.append(f"site prediction skipped: {exc}")


def _signal_rank(signal_q: np.ndarray, site_effect: np.ndarray) -> np.ndarray:
    """Order of the mixed models: strongest biology signal first, then most site-affected."""
    with np.errstate(divide="ignore"):
        strength = -np.log10(np.nan_to_num(signal_q, nan=1.0))
    tie = np.nan_to_num(site_effect, nan=0.0)
    return strength + 1e-6 * tie / (1.0 + np.abs(tie).max())


def _site_verdict(before: SiteTests, after: SiteTests, mv: pd.DataFrame,
                  th: Thresholds) -> tuple[str, list[str]]:
    fb = before.summary["frac_site_effect"]
    fa = after.summary["frac_site_effect"]
    what = (f"(q < {th.alpha} and ε² or η² >= {th.negligible_effect}; "
            + ("tested on residuals after " + ", ".join(after.summary["residualized_on"])
               if after.summary["residualized_on"] else "no covariates") + ")")
    reasons = [f"features with a site effect: {fb:.1%} before, {fa:.1%} after {what}."]
    if fa <= th.site_removed_max_fraction:
        verdict = "removed"
        reasons.append(f"{fa:.1%} after is at most {th.site_removed_max_fraction:.0%}, the "
                       "largest fraction still called removed.")
        if fb <= th.site_removed_max_fraction:
            reasons.append("no site effect was detectable before harmonization either.")
    elif fa <= th.site_reduced_ratio * fb:
        verdict = "reduced"
        reasons.append(f"{fa:.1%} after is at most {th.site_reduced_ratio:g} x {fb:.1%} before "
                       "(reduced), above the "
                       f"{th.site_removed_max_fraction:.0%} called removed.")
    else:
        verdict = "not removed"
        reasons.append(f"{fa:.1%} after is more than {th.site_reduced_ratio:g} x {fb:.1%} "
                       "before: not even halved." if th.site_reduced_ratio == 0.5 else
                       f"{fa:.1%} after is more than {th.site_reduced_ratio:g} x {fb:.1%} "
                       "before, the most still called reduced.")
    row = "site_prediction_in_folds" if "site_prediction_in_folds" in mv.index else \
        "site_prediction"
    if row in mv.index and np.isfinite(mv.loc[row, "after"]):
        ba, chance = mv.loc[row, "after"], mv.loc[row, "chance"]
        how = ", harmonizer fitted inside the folds" if "in_folds" in row else ""
        reasons.append(f"site predicted with balanced accuracy {ba:.2f} after (chance "
                       f"{chance:.2f}{how}).")
        if verdict == "removed" and ba > chance + th.site_prediction_margin:
            verdict = "reduced"
            reasons.append(f"a multivariate site signature remains: {ba:.2f} is more than "
                           f"chance + {th.site_prediction_margin:g}, so the site can still be "
                           "recognised from the features together.")
    return verdict, reasons


_NYGAARD = ("with the biology as a covariate of the harmonizer in an unbalanced design (sites "
            "holding one class), the group differences after harmonization are overstated and "
            "their confidence exaggerated (Nygaard, Rødland & Hovig, Biostatistics 2016): read "
            "'inflated' as a warning, and test the biology on the raw data with site in the "
            "model (the mixed model below) rather than on the harmonized data.")


def _reading(ratio: float, low: float, high: float) -> str:
    if not np.isfinite(ratio):
        return "n/a"
    return "erased" if ratio < low else "inflated" if ratio > high else "kept"


def _biology_evidence(fisher: pd.DataFrame | None, mixed: pd.DataFrame | None,
                      th: Thresholds) -> pd.DataFrame:
    """One row per measure of the biology: medians before/after, their ratio, the band, reading.

    Medians are over the features with a biology signal before harmonization.
    """
    cols = ["n_features", "before", "after", "ratio", "low", "high", "reading"]
    ev = pd.DataFrame(columns=cols, dtype=object)
    if fisher is not None:
        fis = fisher[fisher["verdict"] != "no signal"]
        lo, hi = th.fisher_erased_below, th.fisher_inflated_above
        for name, b, a, r in (("pooled Fisher ratio", "fisher_before", "fisher_after",
                               "fisher_ratio"),
                              ("within-site Fisher ratio", "within_before", "within_after",
                               "within_ratio")):
            if b not in fis or not len(fis):
                continue
            ratio = float(fis[r].median())
            ev.loc[name] = [len(fis), float(fis[b].median()), float(fis[a].median()), ratio,
                            lo, hi, _reading(ratio, lo, hi)]
    if mixed is not None:
        mx = mixed[mixed["verdict"].isin(["kept", "erased", "inflated"])]
        if len(mx):
            lo, hi = th.shrinkage_kept
            r = float(mx["shrinkage"].median())
            se = float(mx["se_ratio"].median())
            reading = _reading(r, lo, hi)
            if reading == "kept" and se < th.se_inflated_below:
                reading = "inflated"
            ev.loc["mixed-model coefficient"] = [
                len(mx), float(mx["beta_raw"].abs().median()),
                float(mx["beta_after"].abs().median()), r, lo, hi, reading]
    return ev


def _biology_verdict(fisher: pd.DataFrame | None, mixed: pd.DataFrame | None,
                     confounding: ConfoundingReport, th: Thresholds,
                     evidence: pd.DataFrame) -> tuple[str, list[str]]:
    if fisher is None:
        return "not assessed", ["no biology was given."]
    if confounding.biology_level == "complete":
        return "not assessed", [
            "site and biology are completely confounded (no site holds more than one class, or "
            "the biology is constant within every site): no data can tell whether the biology "
            "survived harmonization."]
    reasons: list[str] = []
    single = confounding.variables.iloc[0]["single_class_sites"] \
        if not confounding.variables.empty else ()
    if single:
        reasons.append(
            f"site(s) {', '.join(single)} hold a single class; the biology is told apart from "
            f"site by the {len(confounding.mixed_sites)} site(s) that mix classes "
            f"({', '.join(confounding.mixed_sites)}).")
    for name, row in evidence.iterrows():
        what = ("median |coefficient| of the biology, mixed model with a random site intercept "
                "on the data before, least squares after; ratio = shrinkage"
                if name == "mixed-model coefficient" else "median over features")
        reasons.append(
            f"{name}: {row['before']:.3g} before, {row['after']:.3g} after, ratio "
            f"{row['ratio']:.2f} ({what}, {int(row['n_features'])} feature(s) with a biology "
            f"signal); below {row['low']} is erased, above {row['high']} inflated: "
            f"{row['reading']}.")
    if mixed is not None:
        n_nc = int((mixed["verdict"] == "not converged").sum())
        if n_nc:
            shown = ", ".join(map(str, mixed.index[mixed["verdict"] == "not converged"][:5]))
            reasons.append(f"{n_nc} mixed-model fit(s) on the data before did not converge "
                           f"(features {shown}{' ...' if n_nc > 5 else ''}); they are left out.")
    if evidence.empty:
        reasons.append("no feature carried a detectable biology effect before harmonization.")
        return "not assessed", reasons
    # The mixed model separates site from biology; the pooled Fisher ratio mixes them (its
    # "before" carries the site effect), so it decides only when the mixed model is absent.
    primary = "mixed-model coefficient" if "mixed-model coefficient" in evidence.index else \
        "pooled Fisher ratio" if "pooled Fisher ratio" in evidence.index else evidence.index[0]
    verdict = str(evidence.loc[primary, "reading"])
    others = {n: r for n, r in evidence["reading"].items() if n != primary and r != verdict}
    if others:
        reasons.append(
            f"the verdict follows the {primary}"
            + (", which separates site from biology" if primary.startswith("mixed") else "")
            + "; " + "; ".join(f"the {n} alone reads {r!r}" for n, r in others.items()) + ".")
    if verdict == "inflated" or "inflated" in others.values():
        reasons.append(_NYGAARD)
    if verdict == "erased":
        reasons.append("the fix: give the biology to the harmonizer as a covariate (ComBat's "
                       "covariates, or imharmony combat fit --covariate), so that its "
                       "differences between sites are kept, and diagnose again.")
    return verdict, reasons


def diagnose(
    before: Any,
    after: Any,
    *,
    batch: Any,
    biology: Any = None,
    covariates: Any = None,
    thresholds: Thresholds | None = None,
    random_state: int | None = None,
    biology_type: str = "auto",
    max_features: int | None = MAX_FEATURES,
    n_permutations: int = N_PERMUTATIONS,
    harmonizer: Any = None,
    harmonizer_covariates: Any = None,
    n_splits: int = N_SPLITS,
    anderson: bool = False,
    phantom: Any = None,
) -> Diagnosis:
    """Diagnose a harmonization: was the site effect removed, and was the biology kept?

    Parameters
    ----------
    before, after : array-like or pandas.DataFrame, shape (n_samples, n_features)
        The same samples and features before and after harmonization (numeric columns only).
        Missing values (NaN, e.g. kept by ComBat) are allowed: every per-feature measure uses
        that feature's complete cases; the multivariate measures use the largest block without
        missing values (see ``Diagnosis.missing``).
    batch : array-like, shape (n_samples,)
        Site of each sample.
    biology : array-like, shape (n_samples,), optional
        The biology to preserve (a class label or a continuous value per sample). Without it,
        the biology verdict is "not assessed".
    covariates : pandas.DataFrame, optional
        Other biological covariates (age, sex, ...): removed before the site tests and included
        as fixed effects in the mixed models.
    thresholds : Thresholds, optional
    random_state : int, optional
        Seeds the guided-PCA permutations and the cross-validation folds.
    biology_type : {"auto", "categorical", "continuous"}
        How to read ``biology`` (see :func:`imharmony.diagnostics.fisher_ratio`).
    max_features : int or None
        Cap on the per-feature mixed models (the features with the strongest biology signal
        inside sites are modelled, then the most site-affected); 0 skips them, None models all.
    n_permutations : int
        Site shuffles of the guided-PCA p-value.
    harmonizer : estimator or callable, optional
        When given, site prediction is also run on ``before`` with this harmonizer fitted
        inside each training fold (the honest estimate), and the site verdict uses it.
    harmonizer_covariates : pandas.DataFrame, optional
        Covariates given to ``harmonizer`` in the folds. Default: ``covariates`` with the
        biology added as a column ``biology`` (the way to keep it); pass ``covariates`` alone
        to diagnose a pipeline that harmonized without the biology.
    n_splits : int
        Folds of the site prediction (skipped, with a reason, when a site is smaller).
    anderson : bool
        Add the k-sample Anderson-Darling test to the site tests (slow for many features).
    phantom : tuple (reference, before, after), optional
        Phantom inserts of known value measured at the sites, raw and harmonized the same way:
        their agreement with the known values (CCC, ICC(2,1), Bland-Altman) before and after
        shows whether real physical differences survived (``Diagnosis.phantom``, and a section
        of the report).

    Returns
    -------
    Diagnosis

    Notes
    -----
    The biology (and the covariates) are removed before the site tests and the multivariate
    views (silhouette, guided PCA, and site prediction, where the removal is estimated inside
    each training fold), so a real difference
    between the sites' populations is not counted as site effect, and a harmonization that
    shifts sites differently for the same biology (per-site centring in an unbalanced design)
    is. The biology verdict follows the mixed-model shrinkage ratio when it is computed, the
    Fisher ratio otherwise.
    """
    th = thresholds if thresholds is not None else Thresholds()
    Xb, Xa, names = as_pair(before, after, allow_missing=True)
    n = Xb.shape[0]
    site = as_labels(batch, n, name="batch")
    levels, _ = encode_labels(site)
    if levels.size < 2:
        raise DesignError("batch: only one site; there is no site effect to diagnose.")
    cov_df = None
    if covariates is not None:
        cov_df = covariates if isinstance(covariates, pd.DataFrame) else \
            as_covariate_design(covariates, n)
        cov_df = cov_df.reset_index(drop=True)
        if len(cov_df) != n:
            raise DataError(
                f"covariates: {len(cov_df)} row(s) for {n} sample(s); pass one row per sample, "
                "in the order of the feature rows."
            )
    bio = as_labels(biology, n, name="biology") if biology is not None else None
    kind = biology_kind(bio, biology_type) if bio is not None else None

    # Confounding: the biology is given to the harmonizer's design check as a covariate.
    conf_cov = cov_df.copy() if cov_df is not None else pd.DataFrame(index=range(n))
    named = getattr(biology, "name", None)  # a Series keeps its own name in the messages
    bio_col = str(named) if isinstance(named, str) and named else "biology"
    while bio_col in conf_cov.columns:
        bio_col = f"_{bio_col}"
    if bio is not None:
        conf_cov.insert(0, bio_col,
                        bio.astype(str) if kind == "categorical" else bio.astype(float))
    confounding = check_confounding(site, conf_cov if conf_cov.shape[1] else None,
                                    biology=bio_col if bio is not None else None,
                                    biology_type=kind or "auto")
    complete = bio is not None and confounding.biology_level == "complete"

    # Site tests on residuals after the biology and covariates, always: a strong confounding
    # (single-class sites beside mixed ones) still lets the sites that mix classes estimate the
    # biology's effect. Only when it is complete (no site mixes classes) is the biology a function
    # of site, and it cannot be removed without removing the site effect with it.
    resid_cov = conf_cov
    if complete:
        resid_cov = conf_cov.drop(columns=bio_col)
    resid_arg = resid_cov if resid_cov.shape[1] else None
    if resid_arg is not None:
        try:
            Zd = as_covariate_design(resid_arg, n).to_numpy(dtype=float)
            full = np.column_stack([np.ones(n), Zd])
            if np.linalg.matrix_rank(full) < full.shape[1]:
                raise DesignError("rank deficient")
        except DesignError:
            logger.info("covariates are collinear; site tests use no covariates")
            resid_arg = None
    kw = {"covariates": resid_arg, "alpha": th.alpha, "negligible_effect": th.negligible_effect,
          "anderson": anderson, "feature_names": names}
    st_b = site_tests(Xb, site, **kw)
    st_a = site_tests(Xa, site, **kw)

    # Multivariate views, on the same residuals as the site tests, over the complete block.
    site_reasons: list[str] = []
    missing = np.isnan(Xb) | np.isnan(Xa)
    rows, cols = _complete_block(missing)
    mv = pd.DataFrame(columns=["before", "after", "chance"], dtype=float)
    if missing.any():
        n_miss = int(missing.any(axis=0).sum())
        site_reasons.append(
            f"{n_miss} feature(s) have missing values ({int(missing.sum())} cell(s) before or "
            f"after); each is tested on its complete cases (at least "
            f"{int((~missing).sum(axis=0).min())} of {n} samples). The multivariate measures use "
            f"the {int(rows.sum())} samples x {int(cols.sum())} features without any.")
    try:
        _multivariate(mv, Xb[np.ix_(rows, cols)], Xa[np.ix_(rows, cols)], site[rows],
                      None if resid_arg is None else resid_arg[rows].reset_index(drop=True),
                      n_permutations=n_permutations, n_splits=n_splits,
                      random_state=random_state, harmonizer=harmonizer,
                      harmonizer_covariates=None if harmonizer_covariates is None else
                      pd.DataFrame(harmonizer_covariates).reset_index(drop=True)[rows],
                      conf_cov=conf_cov[rows].reset_index(drop=True), reasons=site_reasons)
    except DesignError as exc:
        site_reasons.append(f"multivariate measures skipped: {exc}")

    # Biology.
    fisher = mixed = None
    if bio is not None:
        fisher = fisher_preservation(Xb, Xa, bio, biology_type=kind,
                                     erased_below=th.fisher_erased_below,
                                     inflated_above=th.fisher_inflated_above, alpha=th.alpha,
                                     feature_names=names, batch=site)
        if (max_features is None or max_features > 0) and not complete:
            try:
                mixed = mixed_effects(
                    Xb, Xa, bio, site, covariates=cov_df, biology_type=kind,
                    max_features=max_features,
                    rank_by=_signal_rank(fisher["signal_q"].to_numpy(),
                                         st_b.table["epsilon2"].to_numpy()),
                    kept=th.shrinkage_kept,
                    se_inflated_below=th.se_inflated_below, alpha=th.alpha,
                    feature_names=names)
            except DesignError as exc:
                logger.info("mixed models skipped: %s", exc)

    frame = lambda a: pd.DataFrame(a, columns=names)  # noqa: E731
    data = DiagnosisData(
        before=frame(Xb), after=frame(Xa), batch=site, biology=bio, biology_type=kind,
        covariates=cov_df, pca=pca_projection(Xb[np.ix_(rows, cols)], Xa[np.ix_(rows, cols)],
                                              n_components=2),
        batch_name=_name_of(batch, "site"), biology_name=_name_of(biology, "biology"),
        pca_rows=None if rows.all() else rows)
    parameters = {
        "covariates": [] if cov_df is None else [str(c) for c in cov_df.columns],
        "random_state": random_state,
        "biology_type": biology_type,
        "max_features": max_features,
        "n_permutations": n_permutations,
        "harmonizer": None if harmonizer is None else _describe(harmonizer),
        "harmonizer_covariates": None if harmonizer_covariates is None else
        [str(c) for c in getattr(harmonizer_covariates, "columns", [])],
        "n_splits": n_splits,
        "anderson": anderson,
    }

    site_verdict, reasons_s = _site_verdict(st_b, st_a, mv, th)
    evidence = _biology_evidence(fisher, mixed, th)
    bio_verdict, reasons_b = _biology_verdict(fisher, mixed, confounding, th, evidence)
    diagnosis = Diagnosis(
        verdicts={"site effect": site_verdict, "biology": bio_verdict},
        reasons={"site effect": reasons_s + site_reasons, "biology": reasons_b},
        site_before=st_b,
        site_after=st_a,
        multivariate=mv,
        fisher=fisher,
        mixed=mixed,
        confounding=confounding,
        thresholds=th,
        biology_evidence=evidence,
        missing={"cells": int(missing.sum()), "features": int(missing.any(axis=0).sum()),
                 "min_complete_cases": int((~missing).sum(axis=0).min()),
                 "multivariate_samples": int(rows.sum()),
                 "multivariate_features": int(cols.sum())},
        n_samples=n,
        n_features=len(names),
        n_sites=int(levels.size),
        data=data,
        parameters=parameters,
        phantom=None if phantom is None else phantom_agreement(*phantom),
    )
    logger.info("diagnosis: site effect %s, biology %s", site_verdict, bio_verdict)
    return diagnosis
