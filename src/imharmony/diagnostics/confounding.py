"""Is the site confounded with the biology or the covariates? Checked before anything is fitted.

When a site holds only patients, or the oldest subjects, a harmonizer cannot tell its scanner
from its population: removing the "site effect" removes the biology with it, and keeping the
biology as a covariate in an unbalanced design exaggerates it (Nygaard et al. 2016).
:func:`check_confounding` measures this from the labels alone (no feature is read), cheaply and
deterministically, so a harmonizer can call it at the start of ``fit``.

Levels and thresholds (all in :class:`ConfoundingThresholds`)
------------------------------------------------------------
For each variable (the biology and every covariate column):

- categorical: site x level table, χ² test and Cramér's V. "complete" when no site holds more
  than one level (the variable does not vary inside any site: nothing in the data can tell the
  site from it); "strong" when V >= 0.5, or some sites hold a single level while others mix
  them (``single_class_site_level``; the mixed sites still let the site and the biology be told
  apart, and the diagnostics use them); "moderate" when V >= 0.3 (Cohen's medium and large
  effects). The single-level sites are listed (``single_class_sites``), and so are the sites
  that mix levels (``mixed_sites``).
- continuous: η² of the variable on site and the largest standardized mean difference (SMD)
  between two sites, (m_i - m_j) / sqrt((s_i² + s_j²) / 2). "complete" when η² >= 1 - 1e-9
  (the variable is constant within each site); "strong" when |SMD| >= 1; "moderate" when
  |SMD| >= 0.5.

For the design the harmonizer fits, [1, site indicators, covariates] (categorical covariates
one-hot encoded, covariate columns centred so that a covariate far from zero, such as age, is not
counted as collinear with the intercept): "complete" when it is rank deficient (a covariate is a
function of site, or constant); "strong" / "moderate" when its condition number, with columns
scaled to unit length (Belsley, Kuh & Welsch 1980), is >= 100 / >= 30.

The level reported is the most severe of all. Sample sizes are reported in the messages and do
not change the level: a site with fewer than 2 samples cannot be harmonized, fewer than 20 gives
unstable estimates, and a largest/smallest site ratio above 20 lets the large site dominate.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import contingency

from .._validation import is_numeric_column
from ..errors import ConfoundingError, HarmonizationWarning
from ._data import as_covariate_design, as_labels, biology_kind, encode_labels, group_indicator

__all__ = [
    "ConfoundingReport",
    "ConfoundingThresholds",
    "Finding",
    "check_confounding",
    "cramers_v",
]

logger = logging.getLogger(__name__)

Level = Literal["none", "moderate", "strong", "complete"]
_ORDER: dict[str, int] = {"none": 0, "moderate": 1, "strong": 2, "complete": 3}
_EXACT = 1.0 - 1e-9


@dataclass(frozen=True)
class ConfoundingThresholds:
    """Thresholds of :func:`check_confounding` (see the module notes for their sources)."""

    cramers_v_moderate: float = 0.3
    cramers_v_strong: float = 0.5
    smd_moderate: float = 0.5
    smd_strong: float = 1.0
    condition_moderate: float = 30.0
    condition_strong: float = 100.0
    single_class_site_level: Level = "strong"
    min_site_size: int = 2
    small_site_size: int = 20
    max_site_ratio: float = 20.0


@dataclass(frozen=True)
class Finding:
    """One finding of :func:`check_confounding`, as data (callers decide on these, not on text).

    Attributes
    ----------
    level : {"none", "moderate", "strong", "complete"}
    topic : {"variable", "biology_not_covariate", "design", "sample_size"}
        What the finding is about.
    role : {"biology", "covariate"} or None
        For ``topic="variable"``: the role of the variable.
    variable : str or None
        The column concerned, when there is one.
    message : str
        The sentence shown to the user.
    """

    level: Level
    topic: str
    message: str
    role: str | None = None
    variable: str | None = None


@dataclass(frozen=True)
class ConfoundingReport:
    """Result of :func:`check_confounding`.

    Attributes
    ----------
    level : {"none", "moderate", "strong", "complete"}
        The most severe level over the biology, the covariates and the design.
    messages : tuple of str
        One sentence per finding, most severe first, naming the column and what to do.
    variables : pandas.DataFrame
        One row per variable examined (index: name; the biology first, as ``biology`` when it
        had no name). Columns ``role`` ("biology"/"covariate"), ``kind``, ``chi2``,
        ``p_value``, ``cramers_v``, ``eta2``, ``max_smd``, ``single_class_sites`` and ``level``.
    table : pandas.DataFrame or None
        Site x class counts of the biology when it is categorical.
    site_sizes : pandas.Series
        Samples per site.
    design_rank, design_columns : int
        Rank and number of columns of [1, site indicators, covariates].
    condition_number : float
        Of that design with unit-length columns (inf when rank deficient).
    biology_in_covariates : bool or None
        Whether the biology is among the covariates (None when no biology was named).
    thresholds : ConfoundingThresholds
    """

    level: Level
    messages: tuple[str, ...]
    variables: pd.DataFrame
    table: pd.DataFrame | None
    site_sizes: pd.Series
    design_rank: int
    design_columns: int
    condition_number: float
    biology_in_covariates: bool | None
    thresholds: ConfoundingThresholds = field(default_factory=ConfoundingThresholds)
    findings: tuple[Finding, ...] = ()

    @property
    def biology_level(self) -> Level | None:
        """Confounding level of site with the biology alone (None when no biology was named).

        This is what a headline about "site and biology" should say: an imbalance of a
        covariate (e.g. a small site holding one sex) is a finding about that covariate.
        """
        if self.variables.empty or "role" not in self.variables:
            return None
        sel = self.variables[self.variables["role"] == "biology"]
        return sel["level"].iloc[0] if len(sel) else None

    @property
    def mixed_sites(self) -> tuple[str, ...]:
        """Sites holding more than one class of a categorical biology (empty otherwise)."""
        if self.table is None:
            return ()
        t = self.table.to_numpy()
        return tuple(str(s) for s in self.table.index[(t > 0).sum(axis=1) > 1])

    def raise_if_complete(self) -> None:
        """Raise :class:`~imharmony.errors.ConfoundingError` when the level is "complete"."""
        if self.level == "complete":
            detail = " ".join(f.message for f in self.findings
                              if f.level == "complete" and f.topic in ("variable", "design"))
            raise ConfoundingError(detail or "site and biology are completely confounded.")

    def warn(self, stacklevel: int = 2) -> None:
        """Issue a :class:`~imharmony.errors.HarmonizationWarning` per moderate-or-worse message."""
        for f in self.findings:
            if _ORDER[f.level] >= _ORDER["moderate"]:
                warnings.warn(f.message, HarmonizationWarning, stacklevel=stacklevel + 1)


def cramers_v(table: Any) -> float:
    """Cramér's V of a contingency table: sqrt(χ² / (n (min(r, c) - 1))), without continuity
    correction (``scipy.stats.contingency.association``). NaN for a table with one row or column.
    """
    t = np.asarray(table)
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(t == np.round(t)):
            raise ValueError("cramers_v: the table must hold counts (integers).")
        t = np.round(t).astype(np.int64)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.ndim != 2 or min(t.shape) < 2:
        return float("nan")
    return float(contingency.association(t, method="cramer"))


def _max(levels: list[str]) -> Level:
    return max(levels, key=lambda lv: _ORDER[lv], default="none")  # type: ignore[return-value]


def _categorical(values: np.ndarray, site: np.ndarray, th: ConfoundingThresholds,
                 role: str) -> tuple[dict[str, Any], pd.DataFrame]:
    table = pd.crosstab(pd.Series(site, name="site"), pd.Series(values.astype(str), name="class"))
    row: dict[str, Any] = {"kind": "categorical", "chi2": np.nan, "p_value": np.nan,
                           "cramers_v": np.nan, "eta2": np.nan, "max_smd": np.nan,
                           "single_class_sites": (), "single_class_detail": (),
                           "level": "none"}
    if table.shape[1] < 2:
        return row, table
    chi2, p, _, _ = stats.chi2_contingency(table.to_numpy(), correction=False)
    v = cramers_v(table.to_numpy())
    held = (table.to_numpy() > 0).sum(axis=1)
    single = tuple(str(s) for s in table.index[held == 1])
    level: Level = "none"
    if not (held > 1).any():
        level = "complete"
    elif single:
        level = th.single_class_site_level if role == "biology" else "strong"
    elif v >= th.cramers_v_strong:
        level = "strong"
    elif v >= th.cramers_v_moderate:
        level = "moderate"
    if single and _ORDER[level] < _ORDER["moderate"]:
        level = "moderate"
    row.update(chi2=float(chi2), p_value=float(p), cramers_v=v, single_class_sites=single,
               level=level)
    if single:
        row["single_class_detail"] = tuple(
            f"site {s}: {int(table.loc[s].sum())} sample(s), all "
            f"{table.columns[table.loc[s].to_numpy() > 0][0]}" for s in single)
    return row, table


def _continuous(values: np.ndarray, codes: np.ndarray, k: int,
                th: ConfoundingThresholds) -> dict[str, Any]:
    x = values.astype(float)
    G = group_indicator(codes, k)
    counts = G.sum(axis=0)
    means = (G.T @ x) / counts
    ssb = counts @ (means - x.mean()) ** 2
    sst = ((x - x.mean()) ** 2).sum()
    eta2 = float(ssb / sst) if sst > 0 else float("nan")
    sds = np.array([x[codes == g].std(ddof=1) if counts[g] > 1 else 0.0 for g in range(k)])
    smd = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            pooled = np.sqrt((sds[i] ** 2 + sds[j] ** 2) / 2)
            diff = abs(means[i] - means[j])
            d = diff / pooled if pooled > 0 else (np.inf if diff > 0 else 0.0)
            smd = max(smd, float(d))
    level: Level = "none"
    if np.isfinite(eta2) and eta2 >= _EXACT:
        level = "complete"
    elif smd >= th.smd_strong:
        level = "strong"
    elif smd >= th.smd_moderate:
        level = "moderate"
    return {"kind": "continuous", "chi2": np.nan, "p_value": np.nan, "cramers_v": np.nan,
            "eta2": eta2, "max_smd": smd, "single_class_sites": (), "single_class_detail": (),
            "level": level}


def _describe(name: str, role: str, row: dict[str, Any]) -> str:
    level = row["level"]
    what = "the biology" if role == "biology" else "covariate"
    fix = ("harmonization cannot separate scanner from population: collect balanced data, use "
           "travelling subjects or phantoms, or analyse sites separately"
           if level == "complete" else
           "keep it as a covariate of the harmonizer and read the biology diagnostics with care")
    if row["kind"] == "categorical":
        if role == "covariate" and row["single_class_detail"] and level != "complete":
            # an imbalance inside a few sites is reported as that, not as a global confounding
            return (f"{level} imbalance of covariate {name!r} inside site(s): "
                    + "; ".join(row["single_class_detail"])
                    + f" (Cramér's V = {row['cramers_v']:.2f}): keep it as a covariate; the "
                    "harmonizer cannot estimate its effect from those sites alone.")
        stat = f"Cramér's V = {row['cramers_v']:.2f}"
        if row["single_class_sites"]:
            stat += ("; " + "; ".join(row["single_class_detail"])
                     + " (the sites mixing classes let the biology be told apart from site)"
                     if level != "complete" else
                     f"; site(s) {list(row['single_class_sites'])} hold a single class")
    else:
        stat = f"η² on site = {row['eta2']:.2f}, largest SMD between sites = {row['max_smd']:.2f}"
    return f"{level} confounding of site with {what} {name!r} ({stat}): {fix}."


def check_confounding(
    batch: Any,
    covariates: Any = None,
    *,
    biology: Any = None,
    biology_type: str = "auto",
    thresholds: ConfoundingThresholds | None = None,
) -> ConfoundingReport:
    """Measure how far site is confounded with the biology and the covariates.

    Parameters
    ----------
    batch : array-like, shape (n_samples,)
        Site of each sample.
    covariates : pandas.DataFrame, optional
        The covariates the harmonizer will be given (categorical columns are one-hot encoded in
        the design).
    biology : str or array-like of shape (n_samples,), optional
        The biology to preserve: the name of a column of ``covariates``, or one value per
        sample (categorical or continuous, see :func:`imharmony.diagnostics.fisher_ratio`). An
        array counts as given as a covariate when a covariate column holds the same values (or
        has its ``name``).
    biology_type : {"auto", "categorical", "continuous"}
        How to read the biology; ``"auto"`` treats non-numeric values and integers with at most
        10 distinct values as categorical.
    thresholds : ConfoundingThresholds, optional

    Returns
    -------
    ConfoundingReport
        ``.level`` and ``.messages``; ``.raise_if_complete()`` and ``.warn()`` for callers.

    Notes
    -----
    Deterministic and cheap: a crosstab per categorical variable, a one-way decomposition per
    continuous one, and one SVD of the design. See the module notes for the thresholds.
    """
    th = thresholds if thresholds is not None else ConfoundingThresholds()
    if isinstance(covariates, pd.Series):
        covariates = covariates.to_frame()
    if covariates is not None and not isinstance(covariates, pd.DataFrame):
        arr = np.asarray(covariates)
        arr = arr[:, None] if arr.ndim == 1 else arr
        covariates = pd.DataFrame(arr, columns=[f"covariate_{j}" for j in range(arr.shape[1])])
    site = as_labels(batch, len(batch), name="batch")
    n = site.size
    levels, codes = encode_labels(site)
    site_str = np.asarray(levels.astype(str))[codes]
    cov = covariates.reset_index(drop=True) if covariates is not None else None
    if cov is not None and len(cov) != n:
        from ..errors import DataError

        raise DataError(f"covariates: {len(cov)} row(s) for {n} sample(s); pass one per sample.")

    findings: list[Finding] = []
    rows: dict[str, dict[str, Any]] = {}
    bio_table = None
    bio_in_cov: bool | None = None
    bio_name = None
    bio_values = None
    if biology is not None:
        if isinstance(biology, str):
            bio_name = biology
            bio_in_cov = cov is not None and biology in cov.columns
            if bio_in_cov:
                bio_values = as_labels(cov[biology], n, name=f"covariates[{biology!r}]")
        else:
            bio_values = as_labels(biology, n, name="biology")
            bio_name = str(biology.name) if isinstance(biology, pd.Series) and \
                biology.name is not None else "biology"
            bio_in_cov = False
            if cov is not None:
                if bio_name in cov.columns:
                    bio_in_cov = True
                else:
                    bs = pd.Series(bio_values).astype(str).to_numpy()
                    for c in cov.columns:
                        if np.array_equal(cov[c].astype(str).to_numpy(), bs):
                            bio_in_cov, bio_name = True, str(c)
                            break
        if not bio_in_cov:
            findings.append(Finding("strong", "biology_not_covariate", (
                f"the biology {bio_name!r} is not among the covariates: a harmonizer would treat "
                "its differences between sites as site effect and remove them; pass it as a "
                "covariate."), role="biology", variable=bio_name))
    if bio_values is not None:
        kind = biology_kind(bio_values, biology_type)
        if kind == "categorical":
            row, bio_table = _categorical(bio_values, site_str, th, "biology")
        else:
            row = _continuous(bio_values, codes, levels.size, th)
        rows[bio_name or "biology"] = {"role": "biology", **row}
    if cov is not None:
        for c in cov.columns:
            if str(c) in rows:
                continue
            s = cov[c]
            vals = as_labels(s, n, name=f"covariates[{c!r}]")
            if is_numeric_column(s.dtype):
                row = _continuous(vals, codes, levels.size, th)
            else:
                row, _ = _categorical(vals, site_str, th, "covariate")
            rows[str(c)] = {"role": "covariate", **row}
    for name, row in rows.items():
        if row["level"] != "none":
            findings.append(Finding(row["level"], "variable", _describe(name, row["role"], row),
                                    role=row["role"], variable=name))

    # The design the harmonizer fits.
    Zdf = as_covariate_design(cov, n) if cov is not None else pd.DataFrame(index=range(n))
    Zc = Zdf.to_numpy(dtype=float)
    Zc = Zc - Zc.mean(axis=0) if Zc.shape[1] else Zc
    D = np.column_stack([np.ones(n), group_indicator(codes, levels.size)[:, 1:], Zc])
    rank = int(np.linalg.matrix_rank(D))
    norms = np.linalg.norm(D, axis=0)
    if rank < D.shape[1] or np.any(norms == 0):
        cond = float("inf")
    else:
        sv = np.linalg.svd(D / norms, compute_uv=False)
        cond = float(sv[0] / sv[-1])
    design_level: Level = "none"
    if rank < D.shape[1]:
        design_level = "complete"
        findings.append(Finding("complete", "design", (
            f"complete: the design [intercept, site, covariates {list(Zdf.columns)}] has rank "
            f"{rank} < {D.shape[1]} columns: a covariate is constant or a function of site; "
            "drop it or merge sites.")))
    elif cond >= th.condition_strong:
        design_level = "strong"
        findings.append(Finding("strong", "design", f"strong: the design is ill-conditioned "
                                f"(condition number {cond:.0f}); check nearly collinear "
                                "covariates."))
    elif cond >= th.condition_moderate:
        design_level = "moderate"
        findings.append(Finding("moderate", "design", f"moderate: the design condition number "
                                f"is {cond:.0f}; check nearly collinear covariates."))

    sizes = pd.Series(np.bincount(codes, minlength=levels.size), index=levels.astype(str),
                      name="n_samples")
    tiny = list(sizes.index[sizes < th.min_site_size])
    small = list(sizes.index[(sizes >= th.min_site_size) & (sizes < th.small_site_size)])
    if tiny:
        findings.append(Finding("complete", "sample_size", (
            f"sample size: site(s) {tiny} have fewer than {th.min_site_size} samples and cannot "
            "be harmonized; drop or merge them.")))
    if small:
        findings.append(Finding("moderate", "sample_size", (
            f"sample size: site(s) {small} have fewer than {th.small_site_size} samples; their "
            "site estimates are unstable.")))
    if sizes.min() > 0 and sizes.max() / sizes.min() > th.max_site_ratio:
        findings.append(Finding("moderate", "sample_size", (
            f"sample size: the largest site is {sizes.max() / sizes.min():.0f} times the "
            "smallest; the large site dominates pooled estimates.")))

    var_levels = [r["level"] for r in rows.values()]
    level = _max([*var_levels, design_level])
    variables = pd.DataFrame.from_dict(rows, orient="index")
    if not variables.empty:
        variables.index.name = "variable"
    findings.sort(key=lambda f: -_ORDER[f.level])
    report = ConfoundingReport(
        level=level,
        messages=tuple(f.message for f in findings),
        variables=variables,
        table=bio_table,
        site_sizes=sizes,
        design_rank=rank,
        design_columns=int(D.shape[1]),
        condition_number=cond,
        biology_in_covariates=bio_in_cov,
        thresholds=th,
        findings=tuple(findings),
    )
    logger.debug("confounding level %s: %s", level, report.messages)
    return report
