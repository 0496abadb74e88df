"""The diagnosis as one self-contained HTML file: verdicts first, then the evidence.

:func:`render_report` turns a :class:`~imharmony.diagnostics.Diagnosis` into a single HTML page
with its figures inline (SVG data URIs), its style inline, no script and no reference to any
other file or to the network, so it can be mailed, archived and printed as it is. The page reads
from the conclusion to the evidence:

1. the verdict panel: was the site effect removed, was the biology kept, with the numbers and
   thresholds behind each verdict (colour, a symbol and a word, so it reads without colour);
2. per-site distributions of the most site-affected features, before and after;
3. the PCA scatter before and after, in one coordinate system, coloured by site and by biology;
4. the Fisher ratios of the biology, before against after, with the erased / inflated bands;
5. the mixed-model coefficients of the biology, raw against after, with the shrinkage band;
6. the confounding of site and biology (counts, Cramér's V, standardized mean differences);
7. the site tests and multivariate measures;
8. the provenance: imharmony version, date, inputs (with SHA-256 of files), parameters,
   thresholds and library versions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import DataError

if TYPE_CHECKING:
    from ..diagnostics.verdict import Diagnosis

__all__ = ["file_record", "render_report"]

logger = logging.getLogger(__name__)

N_DISTRIBUTION_FEATURES = 6
N_SITE_TABLE_ROWS = 15
N_MIXED_ROWS = 30

# verdict -> (css class, symbol); the symbol and the word carry the meaning without colour.
_VERDICT_LOOK: dict[str, tuple[str, str]] = {
    "removed": ("good", "✓"),
    "kept": ("good", "✓"),
    "reduced": ("warn", "◐"),
    "inflated": ("warn", "▲"),
    "not removed": ("bad", "✗"),
    "erased": ("bad", "▼"),
    "not assessed": ("none", "?"),
}
_VERDICT_MEANING: dict[str, str] = {
    "removed": "no meaningful site effect remains",
    "reduced": "the site effect is smaller but still there",
    "not removed": "the site effect is still there",
    "kept": "the biological effect survived at its raw size",
    "erased": "harmonization removed part of the biological effect",
    "inflated": "the biological effect is exaggerated, or its confidence overstated",
    "not assessed": "the data cannot tell",
}
_LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "matplotlib", "jinja2")


def _fmt(value: Any, digits: int = 3, *, small: bool = True) -> str:
    """Format a number for a table cell; missing values as an en dash.

    With ``small`` (default), a non-zero value below 10^-digits is written in scientific
    notation (a coefficient in small units); without it, it rounds to 0.
    """
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):d}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "–" if np.isnan(v) else ("∞" if v > 0 else "−∞")
        if abs(v) >= 1e5 or (small and v != 0 and abs(v) < 0.5 * 10 ** -digits):
            return f"{v:.{max(digits - 1, 1)}e}"
        out = f"{v:.{digits}f}"
        return out[1:] if out.startswith("-") and float(out) == 0 else out
    return str(value)


def _num(value: Any, digits: int = 2) -> str:
    """A number rounded to ``digits`` decimals (never scientific): for the verdict panel."""
    return _fmt(value, digits, small=False)


def _pct(value: Any) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * float(value):.1f} %"


def _p(value: Any) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    v = float(value)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _table(frame: pd.DataFrame, formats: Mapping[str, Any] | None = None, *,
           index_name: str | None = None, verdict_column: str | None = None) -> dict[str, Any]:
    """A DataFrame as ``{"columns": [...], "rows": [{"cells": [...], "cls": ...}]}``."""
    formats = dict(formats or {})
    columns = [index_name if index_name is not None else str(frame.index.name or "")]
    columns += [str(c) for c in frame.columns]
    rows = []
    for i, idx in enumerate(frame.index):
        cells = [str(idx)]
        for col in frame.columns:
            fn = formats.get(col, _fmt)
            cells.append(fn(frame[col].iloc[i]))  # column by column: keeps each dtype
        cls = ""
        if verdict_column is not None:
            cls = "v-" + str(frame[verdict_column].iloc[i]).replace(" ", "-")
        rows.append({"cells": cells, "cls": cls})
    return {"columns": columns, "rows": rows}


def file_record(path: str | os.PathLike[str], role: str | None = None) -> dict[str, Any]:
    """Provenance of an input file: name, absolute path, size and SHA-256.

    Parameters
    ----------
    path : str or os.PathLike
    role : str, optional
        What the file was (e.g. "before", "after").

    Raises
    ------
    DataError
        If the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: input file for the report's provenance not found; check the path.")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"role": role or "", "name": p.name, "path": str(p.resolve()),
            "size": p.stat().st_size, "sha256": digest.hexdigest()}


def _inputs(value: Any) -> list[dict[str, Any]]:
    """Provenance inputs from a mapping role -> path/record, or a sequence of paths/records."""
    if value is None:
        return []
    items: list[tuple[str | None, Any]]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str | os.PathLike):
        items = [(None, value)]
    elif isinstance(value, Sequence):
        items = [(None, v) for v in value]
    else:
        raise DataError(
            "provenance['inputs']: pass a mapping of role to file path, or a list of paths."
        )
    records = []
    for role, v in items:
        if isinstance(v, Mapping):
            rec = {"role": role or "", "name": "", "path": "", "size": None, "sha256": ""}
            rec.update({str(k): x for k, x in v.items()})
            records.append(rec)
        elif isinstance(v, str | os.PathLike) and Path(v).is_file():
            records.append(file_record(v, role))
        else:
            # described, not read from a file (e.g. a DataFrame in memory)
            records.append({"role": role or "", "name": str(v), "path": "", "size": None,
                            "sha256": ""})
    return records


def _versions() -> list[tuple[str, str]]:
    from .._version import __version__

    out = [("imharmony", __version__), ("Python", platform.python_version())]
    for lib in _LIBRARIES:
        try:
            out.append((lib, metadata.version(lib)))
        except metadata.PackageNotFoundError:
            out.append((lib, "not installed"))
    out.append(("platform", f"{platform.system()} {platform.machine()}"))
    return out


def _verdict_card(question: str, diagnosis: Diagnosis, numbers: list[tuple[str, str, str]]
                  ) -> dict[str, Any]:
    verdict = diagnosis.verdicts[question]
    cls, symbol = _VERDICT_LOOK.get(verdict, ("none", "?"))
    return {"question": question, "verdict": verdict, "cls": cls, "symbol": symbol,
            "meaning": _VERDICT_MEANING.get(verdict, ""), "numbers": numbers,
            "reasons": list(diagnosis.reasons.get(question, []))}


def _site_numbers(d: Diagnosis) -> list[tuple[str, str, str]]:
    th = d.thresholds
    fb = d.site_before.summary.get("frac_site_effect", np.nan)
    fa = d.site_after.summary.get("frac_site_effect", np.nan)
    rows = [(
        "features with a site effect",
        f"{_pct(fb)} → {_pct(fa)}",
        f"removed ≤ {th.site_removed_max_fraction:.0%}; reduced ≤ {th.site_reduced_ratio:g} × "
        f"before (q < {th.alpha:g}, ε² or η² ≥ {th.negligible_effect:g})",
    )]
    mv = d.multivariate
    row = "site_prediction_in_folds" if "site_prediction_in_folds" in mv.index else \
        "site_prediction"
    if row in mv.index:
        chance = mv.loc[row, "chance"]
        rows.append((
            "site prediction, balanced accuracy" + (" (harmonizer in folds)" if "folds" in row
                                                    else ""),
            f"{_num(mv.loc[row, 'before'], 2)} → {_num(mv.loc[row, 'after'], 2)}",
            f"chance {_num(chance, 2)}; a site signature remains above chance + "
            f"{th.site_prediction_margin:g}",
        ))
    if "silhouette" in mv.index:
        rows.append(("silhouette of sites (PCA)",
                     f"{_num(mv.loc['silhouette', 'before'], 2)} → "
                     f"{_num(mv.loc['silhouette', 'after'], 2)}",
                     "about 0: sites mixed; 1: separate clusters"))
    if "gpca_p" in mv.index and np.isfinite(mv.loc["gpca_p", "after"]):
        rows.append(("guided PCA δ (p)",
                     f"{_num(mv.loc['gpca_delta', 'before'], 2)} ({_p(mv.loc['gpca_p', 'before'])})"
                     f" → {_num(mv.loc['gpca_delta', 'after'], 2)} "
                     f"({_p(mv.loc['gpca_p', 'after'])})",
                     f"permutation p-value, significant below {th.alpha:g}"))
    return rows


_EVIDENCE_MEANING = {
    "pooled Fisher ratio": "Separation of the biology's classes over all samples (site effect "
                           "included before).",
    "within-site Fisher ratio": "Separation inside the sites that hold more than one class "
                                "(free of the site effect).",
    "mixed-model coefficient": "Size of the biology's effect; before: model with a random site "
                               "intercept, after: ordinary least squares.",
}


def _biology_numbers(d: Diagnosis) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    ev = d.biology_evidence
    if ev is not None:
        for name, row in ev.iterrows():
            rows.append((
                f"{name} (median of {int(row['n_features'])} feature(s))",
                f"{_num(row['before'], 3)} → {_num(row['after'], 3)}; ratio "
                f"{_num(row['ratio'], 2)}: {row['reading']}",
                f"ratio after / before compared with {row['low']:g}–{row['high']:g}: below is "
                f"erased, inside kept, above inflated. {_EVIDENCE_MEANING.get(str(name), '')}",
            ))
    if d.mixed is not None:
        mx = d.mixed[d.mixed["verdict"].isin(["kept", "erased", "inflated"])]
        if len(mx):
            th = d.thresholds
            rows.append(("median SE after / SE before (mixed model)",
                         _num(float(mx["se_ratio"].median()), 2),
                         f"inflated below {th.se_inflated_below:g}: the confidence after "
                         "harmonization would be overstated"))
    level = d.confounding.biology_level
    rows.append(("confounding of site and biology", level or "not assessed",
                 "none / moderate / strong / complete (see Confounding); complete: no site "
                 "holds more than one class, and nothing can be assessed"))
    return rows


def _distribution_features(d: Diagnosis) -> tuple[list[str], pd.DataFrame]:
    eb = d.site_before.table["epsilon2"]
    ea = d.site_after.table["epsilon2"].reindex(eb.index)
    order = eb.fillna(-np.inf).sort_values(ascending=False, kind="stable").index
    feats = [str(f) for f in order[:N_DISTRIBUTION_FEATURES]]
    scores = pd.DataFrame({"before": eb, "after": ea})
    scores.index = scores.index.map(str)
    return feats, scores


def _site_summary_table(d: Diagnosis) -> dict[str, Any]:
    sb, sa = d.site_before.summary, d.site_after.summary
    labels = {
        "frac_site_effect": "features with a site effect (significant and not negligible)",
        "frac_kruskal": "Kruskal-Wallis significant (location)",
        "frac_anova": "ANOVA significant (location)",
        "frac_ancova": "ANCOVA significant (location, after covariates)",
        "frac_levene": "Brown-Forsythe significant (scale)",
        "frac_anderson": "Anderson-Darling significant (shape)",
        "frac_eta2_not_negligible": "η² not negligible",
    }
    rows = []
    for key, label in labels.items():
        if key in sb or key in sa:
            rows.append({"measure": label, "before": _pct(sb.get(key, np.nan)),
                         "after": _pct(sa.get(key, np.nan))})
    for key, label in (("median_epsilon2", "median ε² (Kruskal-Wallis)"),
                       ("median_eta2", "median η² (ANOVA)")):
        if key in sb or key in sa:
            rows.append({"measure": label, "before": _num(sb.get(key, np.nan), 3),
                         "after": _num(sa.get(key, np.nan), 3)})
    frame = pd.DataFrame(rows).set_index("measure") if rows else pd.DataFrame()
    return _table(frame, {"before": str, "after": str}, index_name="measure")


def _site_feature_table(d: Diagnosis) -> dict[str, Any]:
    tb, ta = d.site_before.table, d.site_after.table
    order = tb["epsilon2"].fillna(-np.inf).sort_values(ascending=False, kind="stable").index
    top = order[:N_SITE_TABLE_ROWS]
    frame = pd.DataFrame({
        "KW ε² before": tb.loc[top, "epsilon2"],
        "KW ε² after": ta.loc[top, "epsilon2"],
        "KW q before": tb.loc[top, "kruskal_q"],
        "KW q after": ta.loc[top, "kruskal_q"],
        "BF η² before": tb.loc[top, "levene_eta2"],
        "BF η² after": ta.loc[top, "levene_eta2"],
        "BF q before": tb.loc[top, "levene_q"],
        "BF q after": ta.loc[top, "levene_q"],
        "site effect before": tb.loc[top, "site_effect"],
        "site effect after": ta.loc[top, "site_effect"],
    }, index=top)
    fmts: dict[str, Any] = {c: (_p if " q " in c else _num) for c in frame.columns}
    fmts.update({c: _fmt for c in frame.columns if c.startswith("site effect")})
    return _table(frame, fmts, index_name="feature")


def _multivariate_table(d: Diagnosis) -> dict[str, Any]:
    names = {
        "silhouette": "silhouette of sites in PCA space",
        "gpca_delta": "guided PCA δ",
        "gpca_p": "guided PCA permutation p-value",
        "covariance_distance": "site covariance distance from the pooled covariance",
        "site_prediction": "site prediction, balanced accuracy (data as given)",
        "site_prediction_in_folds": "site prediction, harmonizer fitted in the folds",
    }
    mv = d.multivariate.copy()
    mv.index = [names.get(str(i), str(i)) for i in mv.index]
    fmts = {c: (lambda v: _num(v, 3)) for c in mv.columns}
    if "guided PCA permutation p-value" in mv.index:
        mv = mv.astype(object)
        for c in ("before", "after"):
            mv.loc["guided PCA permutation p-value", c] = _p(
                d.multivariate.loc["gpca_p", c])
    return _table(mv, fmts, index_name="measure")


def _fisher_counts(d: Diagnosis) -> dict[str, Any] | None:
    if d.fisher is None:
        return None
    counts = d.fisher["verdict"].value_counts()
    order = [v for v in ("kept", "erased", "inflated", "no signal") if v in counts.index]
    rows = []
    for v in order:
        sel = d.fisher[d.fisher["verdict"] == v]["fisher_ratio"]
        rows.append({"verdict": v, "features": int(counts[v]),
                     "median ratio after/before": float(sel.median())})
    frame = pd.DataFrame(rows).set_index("verdict")
    table = _table(frame, index_name="verdict")
    for row, v in zip(table["rows"], order, strict=True):
        row["cls"] = "v-" + v.replace(" ", "-")
    return table


def _mixed_in_order(mixed: pd.DataFrame) -> pd.DataFrame:
    """Features with a biology signal first, then unconverged fits, then no signal; stable."""
    rank = mixed["verdict"].map({"not converged": 1, "no signal": 2}).fillna(0)
    return mixed.iloc[np.argsort(rank.to_numpy(), kind="stable")]


def _mixed_table(d: Diagnosis) -> dict[str, Any] | None:
    if d.mixed is None:
        return None
    mx = _mixed_in_order(d.mixed).iloc[:N_MIXED_ROWS]
    frame = pd.DataFrame({
        "term": mx["term"],
        "β raw": mx["beta_raw"], "SE raw": mx["se_raw"],
        "β after": mx["beta_after"], "SE after": mx["se_after"],
        "q raw": mx["q_raw"],
        "r": mx["shrinkage"], "SE ratio": mx["se_ratio"],
        "ICC before": mx["icc_before"], "ICC after": mx["icc_after"],
        "verdict": mx["verdict"],
    }, index=mx.index)
    if frame["term"].nunique() == 1:  # one biology term: named once, in the caption
        frame = frame.drop(columns="term")
    fmts: dict[str, Any] = {"q raw": _p, "term": str, "verdict": str}
    fmts.update({c: (lambda v: _num(v, 3)) for c in ("r", "SE ratio", "ICC before",
                                                      "ICC after")})
    return _table(frame, fmts, index_name="feature", verdict_column="verdict")


def _confounding(d: Diagnosis) -> dict[str, Any]:
    c = d.confounding
    level = c.biology_level or c.level
    out: dict[str, Any] = {"level": level, "messages": list(c.messages)}
    cls, symbol = {"none": ("good", "✓"), "moderate": ("warn", "◐"),
                   "strong": ("bad", "▲"), "complete": ("bad", "✗")}.get(level, ("none", "?"))
    out["cls"], out["symbol"] = cls, symbol
    if c.table is not None:
        t = c.table.copy()
        t["total"] = t.sum(axis=1)
        t.loc["total"] = t.sum(axis=0)
        t.columns = [str(x) for x in t.columns]
        out["counts"] = _table(t, {col: _fmt for col in t.columns},
                               index_name="site \\ biology")
    else:
        out["counts"] = None
    v = c.variables.copy()
    keep = [col for col in ("role", "kind", "cramers_v", "chi2", "p_value", "eta2", "max_smd",
                            "single_class_sites", "level") if col in v.columns]
    v = v[keep].rename(columns={"cramers_v": "Cramér's V", "chi2": "χ²", "p_value": "p",
                                "eta2": "η² on site", "max_smd": "largest |SMD|",
                                "single_class_sites": "single-class sites"})
    out["variables"] = _table(v, {"p": _p, "role": str, "kind": str, "level": str,
                                  "single-class sites": lambda x: _fmt(x) if not
                                  isinstance(x, list | tuple) else ", ".join(map(str, x)) or "–"},
                              index_name="variable")
    sizes = c.site_sizes.rename("samples").to_frame()
    sizes.index = sizes.index.map(str)
    out["sizes"] = _table(sizes, index_name="site")
    out["design"] = (f"design [1, site indicators, covariates]: rank {c.design_rank} of "
                     f"{c.design_columns} columns, condition number "
                     f"{_fmt(float(c.condition_number), 1)}")
    return out


def _phantom_table(d: Diagnosis) -> dict[str, Any] | None:
    """Phantom agreement with the known values, before and after (None without a phantom)."""
    ph = getattr(d, "phantom", None)
    if ph is None:
        return None
    frame = ph.rename(columns={"icc_2_1": "ICC(2,1)", "icc_band": "Koo & Li",
                               "ccc": "CCC", "loa_lower": "LoA low", "loa_upper": "LoA high"})
    frame.index = [f"{feat} ({stage})" for stage, feat in frame.index]
    return _table(frame, {"Koo & Li": str}, index_name="feature (stage)")


def _provenance(d: Diagnosis, provenance: Mapping[str, Any] | None, when: _dt.datetime
                ) -> dict[str, Any]:
    from .._version import __version__

    prov = dict(provenance or {})
    inputs = _inputs(prov.pop("inputs", None))
    params = {str(k): v for k, v in d.parameters.items()}
    extra = [(str(k), v if isinstance(v, str) else repr(v)) for k, v in prov.items()]
    return {
        "version": __version__,
        "date": when.isoformat(timespec="seconds"),
        "inputs": inputs,
        "shape": f"{d.n_samples} samples × {d.n_features} features, {d.n_sites} sites",
        "parameters": [(k, repr(v)) for k, v in params.items()],
        "thresholds": [(k, repr(v)) for k, v in asdict(d.thresholds).items()],
        "confounding_thresholds": [(k, repr(v))
                                   for k, v in asdict(d.confounding.thresholds).items()],
        "extra": extra,
        "versions": _versions(),
        "python": sys.version.split()[0],
    }


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("imharmony.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    diagnosis: Diagnosis,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the diagnosis as one self-contained HTML file and return its path.

    Parameters
    ----------
    diagnosis : Diagnosis
        From :func:`imharmony.diagnose`. Its ``data`` (kept by ``diagnose``) feeds the
        distribution and PCA figures; without it those sections say so.
    path : str or os.PathLike
        Where to write the report (``.html``); written atomically (a reader never sees half a
        file) and parent folders are created.
    title : str, optional
        Heading of the page (default "Harmonization diagnosis").
    provenance : mapping, optional
        ``"inputs"``: a mapping of role to file path (or a list of paths); files are listed
        with their name, size and SHA-256 (see :func:`file_record`). Any other key is shown as
        is (e.g. ``"command"``).

    Returns
    -------
    pathlib.Path

    Notes
    -----
    The page holds no script and references nothing outside itself: figures are SVG data URIs
    (:mod:`imharmony.report.figures`), the style is inline and uses the reader's system fonts.
    """
    from ..io._atomic import atomic_path
    from . import figures

    d = diagnosis
    when = _dt.datetime.now(_dt.UTC)
    th = d.thresholds
    prov = _provenance(d, provenance, when)  # first: a bad input fails before any drawing
    cards = [_verdict_card("site effect", d, _site_numbers(d)),
             _verdict_card("biology", d, _biology_numbers(d))]

    figs: dict[str, Any] = {}
    dist_features: list[str] = []
    if d.data is not None:
        dist_features, scores = _distribution_features(d)
        figs["distributions"] = figures.site_distributions_figure(d.data, dist_features, scores)
        figs["pca"] = figures.pca_figure(d.data)
    if d.fisher is not None and len(d.fisher):
        figs["fisher"] = figures.fisher_figure(d.fisher, th)
    if d.mixed is not None and len(d.mixed):
        fig = figures.mixed_figure(_mixed_in_order(d.mixed), th, max_rows=N_MIXED_ROWS)
        if fig is not None:
            figs["mixed"] = fig

    biology_desc = "none"
    if d.data is not None and d.data.biology is not None:
        biology_desc = d.data.biology_type or "given"
    names = {f["role"]: f["name"] for f in prov["inputs"] if f.get("role")}
    compares = (f"before = {names.get('before', 'the data before harmonization')}, "
                f"after = {names.get('after', 'the data after harmonization')}")
    not_converged: list[tuple[str, str]] = []
    if d.mixed is not None:
        bad = d.mixed[~d.mixed["converged_raw"].astype(bool)
                      | ~d.mixed["converged_after"].astype(bool)]
        not_converged = [(str(f), str(n) or "the optimizer did not converge")
                         for f, n in bad["note"].items()]
    context = {
        "title": title or ("Harmonization diagnosis: " + (
            f"{names['before']} vs {names['after']}" if {"before", "after"} <= names.keys()
            else "before vs after")),
        "compares": compares,
        "not_converged": not_converged,
        "subtitle": f"{d.n_samples} samples, {d.n_features} features, {d.n_sites} sites; "
                    f"biology: {biology_desc}",
        "cards": cards,
        "figs": figs,
        "dist_features": dist_features,
        "n_dist": N_DISTRIBUTION_FEATURES,
        "residualized_on": d.site_after.summary.get("residualized_on", []),
        "site_summary": _site_summary_table(d),
        "site_features": _site_feature_table(d),
        "n_site_rows": min(N_SITE_TABLE_ROWS, d.n_features),
        "multivariate": _multivariate_table(d),
        "fisher_counts": _fisher_counts(d),
        "mixed_table": _mixed_table(d),
        "mixed_total": 0 if d.mixed is None else len(d.mixed),
        "mixed_signal": 0 if d.mixed is None else int((d.mixed["verdict"] != "no signal").sum()),
        "mixed_terms": [] if d.mixed is None else sorted({str(t) for t in d.mixed["term"]}),
        "n_mixed_rows": N_MIXED_ROWS,
        "has_biology": d.fisher is not None,
        "confounding": _confounding(d),
        "th": th,
        "cth": d.confounding.thresholds,
        "provenance": prov,
        "phantom": _phantom_table(d),
    }
    html = _environment().get_template("report.html.j2").render(**context)
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    logger.info("report written to %s (%.0f kB)", target, target.stat().st_size / 1024)
    return target
