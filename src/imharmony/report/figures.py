"""The report's figures, drawn with matplotlib and returned as inline SVG data URIs.

Every function takes parts of a :class:`~imharmony.diagnostics.Diagnosis` and returns a
:class:`InlineFigure` (a ``data:image/svg+xml;base64,...`` URI plus a text alternative), so the
HTML report needs no file beside it and no network. Figures are built on
:class:`matplotlib.figure.Figure` directly (no pyplot, no global state, no GUI backend); the
text is drawn as paths (no font is needed to display them) and dense point clouds are rasterized
inside the SVG so that a large cohort does not make the report heavy.

Colour is never the only carrier of meaning: sites and verdicts also differ by marker shape, and
"before" / "after" by hollow / filled boxes.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..diagnostics.verdict import DiagnosisData, Thresholds

__all__ = [
    "InlineFigure",
    "fisher_figure",
    "mixed_figure",
    "pca_figure",
    "site_distributions_figure",
]

logger = logging.getLogger(__name__)

# Okabe & Ito (2008) colour-blind safe palette, then tab20 for many sites.
_OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
              "#000000")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
VERDICT_STYLE: dict[str, tuple[str, str]] = {
    # verdict -> (colour, marker)
    "kept": ("#1b7837", "o"),
    "erased": ("#b2182b", "v"),
    "inflated": ("#b35806", "^"),
    "no signal": ("#8c8c8c", "x"),
    "not converged": ("#5e5e5e", "d"),
}
_RASTERIZE_ABOVE = 500  # points per axes beyond which scatter points are rasterized
_WIDTH = 9.8  # inches (940 CSS px): the report's text column


@dataclass(frozen=True)
class InlineFigure:
    """A figure ready to embed: ``<img src="{uri}" alt="{alt}">``.

    Attributes
    ----------
    uri : str
        ``data:image/svg+xml;base64,...``.
    alt : str
        Text alternative describing what the figure shows.
    width_px : int
        Natural width in CSS pixels (the image scales down on narrow screens).
    """

    uri: str
    alt: str
    width_px: int


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _embed(fig: Figure, alt: str) -> InlineFigure:
    """Render ``fig`` as SVG (text as paths, reproducible ids) into a data URI."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "imharmony-report"}):
        fig.savefig(buf, format="svg", dpi=150, metadata={"Date": None})
    width_px = round(fig.get_figwidth() * 96)
    uri = "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return InlineFigure(uri=uri, alt=alt, width_px=width_px)


def text(value: Any) -> str:
    """A label safe from matplotlib's mathtext (a ``$`` would start a formula)."""
    return str(value).replace("$", r"\$")


def _palette(n: int) -> list[Any]:
    """Okabe-Ito up to 8 colours, tab10 up to 10, then tab20 (markers tell the rest apart)."""
    if n <= len(_OKABE_ITO):
        return list(_OKABE_ITO[:n])
    from matplotlib import colormaps

    name, size = ("tab10", 10) if n <= 10 else ("tab20", 20)
    cmap = colormaps[name]
    return [cmap(i % size) for i in range(n)]


def _levels(labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted label levels (as text) and each sample's code (the order of the diagnostics)."""
    from .._validation import levels_and_codes

    levels, codes = levels_and_codes(labels)
    return [str(v) for v in levels], codes


def site_distributions_figure(data: DiagnosisData, features: Sequence[str],
                              scores: pd.DataFrame) -> InlineFigure:
    """Box plots per site of the most site-affected features, before (hollow) and after (filled).

    Parameters
    ----------
    data : DiagnosisData
    features : sequence of str
        Features to draw, in order (one panel each).
    scores : pandas.DataFrame
        Index: feature; columns ``before`` and ``after`` (a site effect size, shown in titles).
    """
    sites, codes = _levels(np.asarray(data.batch))
    k = len(sites)
    colours = _palette(k)
    ncols = 2 if len(features) > 1 else 1
    nrows = int(np.ceil(len(features) / ncols))
    panel_w = _WIDTH / ncols
    fig = _new_figure(_WIDTH, min(3.6, max(2.6, 0.45 * k + 1.4)) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    rng = np.random.default_rng(0)  # jitter only: the same picture on every run
    for ax in axes.ravel()[len(features):]:
        ax.set_visible(False)
    for ax, feat in zip(axes.ravel(), features, strict=False):
        for stage, offset, filled in (("before", -0.2, False), ("after", 0.2, True)):
            frame = data.before if stage == "before" else data.after
            values = frame[feat].to_numpy(dtype=float)
            present = ~np.isnan(values)  # missing values are left out, per feature
            groups = [values[(codes == i) & present] for i in range(k)]
            pos = np.arange(k) + offset
            bp = ax.boxplot(groups, positions=pos, widths=0.34, patch_artist=True,
                            showfliers=False, medianprops={"color": "black", "linewidth": 1.2},
                            whiskerprops={"color": "#444444"}, capprops={"color": "#444444"})
            for i, box in enumerate(bp["boxes"]):
                box.set_edgecolor(colours[i] if not filled else "#333333")
                box.set_facecolor(colours[i] if filled else "white")
                box.set_alpha(0.75 if filled else 1.0)
                box.set_linewidth(1.6 if not filled else 0.8)
            n_points = values.size
            if n_points <= 600:
                jitter = rng.uniform(-0.08, 0.08, n_points)
                ax.scatter(codes + offset + jitter, values, s=4, c="#222222", alpha=0.35,
                           linewidths=0, rasterized=True, zorder=3)
        ax.set_xticks(np.arange(k), [text(s) for s in sites],
                      rotation=30 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_xlim(-0.6, k - 0.4)
        ax.set_xlabel(text(data.batch_name), fontsize=8)
        ax.set_ylabel(f"{text(feat)} (feature units)", fontsize=8)
        b, a = scores.loc[feat, "before"], scores.loc[feat, "after"]
        ax.set_title(f"{text(feat)}\nε² by site {b:.2f} before → {a:.2f} after",
                     fontsize=9 if panel_w < 5 else 10)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="white", edgecolor="#555555", linewidth=1.6,
                     label="before (hollow, left)"),
               Patch(facecolor="#888888", edgecolor="#333333", alpha=0.75,
                     label="after (filled, right)")]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, fontsize=9, frameon=False)
    alt = (f"Box plots per site of {len(features)} feature(s) most affected by site "
           f"({', '.join(map(str, features))}), before and after harmonization.")
    return _embed(fig, alt)


def _scatter_groups(ax: Axes, xy: np.ndarray, codes: np.ndarray, names: list[str],
                    colours: list[Any], *, rasterized: bool, size: float) -> None:
    for i, name in enumerate(names):
        m = codes == i
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colours[i],
                   marker=_MARKERS[i % len(_MARKERS)], alpha=0.75, linewidths=0.3,
                   edgecolors="white", label=text(name), rasterized=rasterized)


def pca_figure(data: DiagnosisData) -> InlineFigure:
    """PCA scores before and after (axes of the data before), coloured by site and by biology."""
    pca = data.pca
    before = pca.before
    after = pca.after if pca.after is not None else pca.before
    if before.shape[1] == 1:  # a single feature: one component, drawn against zero
        before = np.column_stack([before, np.zeros(len(before))])
        after = np.column_stack([after, np.zeros(len(after))])
    evr = [*pca.explained_variance_ratio, 0.0]
    n = before.shape[0]
    rasterized = n > _RASTERIZE_ABOVE
    size = 14 if n <= 300 else 8 if n <= 2000 else 3
    has_bio = data.biology is not None
    rows = slice(None) if data.pca_rows is None else data.pca_rows  # samples without NaN
    ncols = 2 if has_bio else 1
    fig = _new_figure(_WIDTH if has_bio else _WIDTH * 0.62, 7.4)
    axes = fig.subplots(2, ncols, squeeze=False, sharex=True, sharey=True)
    sites, site_codes = _levels(np.asarray(data.batch)[rows])
    site_colours = _palette(len(sites))
    bio_levels: list[str] = []
    bio_codes = np.zeros(n, dtype=int)
    if has_bio and data.biology_type == "categorical":
        bio_levels, bio_codes = _levels(np.asarray(data.biology)[rows])
    bio_colours = ["#5e3c99", "#e66101", "#1b9e77", "#d95f02", "#7570b3", "#e7298a",
                   "#66a61e", "#a6761d"]
    if len(bio_levels) > len(bio_colours):
        bio_colours = _palette(len(bio_levels))
    mappable = None
    for row, (stage, xy) in enumerate((("before", before), ("after", after))):
        ax = axes[row, 0]
        _scatter_groups(ax, xy, site_codes, sites, site_colours, rasterized=rasterized,
                        size=size)
        ax.set_title(f"{stage}: by {text(data.batch_name)}", fontsize=10)
        if has_bio:
            ax = axes[row, 1]
            if data.biology_type == "categorical":
                _scatter_groups(ax, xy, bio_codes, bio_levels, bio_colours,
                                rasterized=rasterized, size=size)
            else:
                values = np.asarray(data.biology, dtype=float)[rows]
                mappable = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis", s=size,
                                      alpha=0.85, linewidths=0, rasterized=rasterized)
            ax.set_title(f"{stage}: by {text(data.biology_name)}", fontsize=10)
    for ax in axes.ravel():
        ax.axhline(0, color="#cccccc", linewidth=0.6, zorder=0)
        ax.axvline(0, color="#cccccc", linewidth=0.6, zorder=0)
        ax.tick_params(labelsize=8)
    for ax in axes[1, :]:
        ax.set_xlabel(f"PC1 ({evr[0]:.0%} of the variance before)", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"PC2 ({evr[1]:.0%})", fontsize=9)
    axes[0, 0].legend(title=text(data.batch_name), fontsize=8, title_fontsize=8, loc="best",
                      ncols=1 if len(sites) <= 8 else 2, markerscale=1.2, framealpha=0.8)
    if has_bio:
        if data.biology_type == "categorical":
            axes[0, 1].legend(title=text(data.biology_name), fontsize=8, title_fontsize=8,
                              loc="best", markerscale=1.2, framealpha=0.8)
        elif mappable is not None:
            fig.colorbar(mappable, ax=axes[:, 1], label=text(data.biology_name), shrink=0.8)
    alt = ("Scatter plots of the first two principal components before (top) and after "
           "(bottom) harmonization, on the axes of the data before, coloured by site"
           + (" and by biology." if has_bio else "."))
    return _embed(fig, alt)


def fisher_figure(fisher: pd.DataFrame, thresholds: Thresholds) -> InlineFigure:
    """Fisher ratio after against before, log axes, identity line and the erased/inflated bands."""
    fb = fisher["fisher_before"].to_numpy(dtype=float)
    fa = fisher["fisher_after"].to_numpy(dtype=float)
    positive = np.concatenate([fb[fb > 0], fa[fa > 0]])
    positive = positive[np.isfinite(positive)]
    floor = float(positive.min()) / 2 if positive.size else 1e-3
    top = float(positive.max()) * 2 if positive.size else 1.0
    top = max(top, floor * 10)
    x = np.clip(np.nan_to_num(fb, nan=floor), floor, None)
    y = np.clip(np.nan_to_num(fa, nan=floor), floor, None)
    fig = _new_figure(_WIDTH * 0.62, 7.0)
    ax = fig.subplots()
    grid = np.geomspace(floor, top, 50)
    lo, hi = thresholds.fisher_erased_below, thresholds.fisher_inflated_above
    ax.fill_between(grid, lo * grid, hi * grid, color="#1b7837", alpha=0.10, linewidth=0,
                    label=f"kept band ({lo:g} to {hi:g} × before)")
    ax.plot(grid, grid, color="black", linewidth=1, label="after = before")
    ax.plot(grid, lo * grid, color="#b2182b", linewidth=0.9, linestyle="--",
            label=f"after = {lo:g} × before (erased below)")
    ax.plot(grid, hi * grid, color="#b35806", linewidth=0.9, linestyle=":",
            label=f"after = {hi:g} × before (inflated above)")
    verdicts = fisher["verdict"].to_numpy()
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        m = verdicts == verdict
        if not m.any():
            continue
        ax.scatter(x[m], y[m], color=colour, marker=marker, s=22 if verdict != "no signal" else 14,
                   linewidths=0.8 if marker == "x" else 0.3,
                   edgecolors=None if marker == "x" else "white",
                   label=f"{verdict} ({int(m.sum())})", zorder=3,
                   rasterized=m.sum() > _RASTERIZE_ABOVE)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, top)
    ax.set_ylim(floor, top)
    ax.set_aspect("equal")
    ax.set_xlabel("Fisher ratio of the biology, before", fontsize=9)
    ax.set_ylabel("Fisher ratio of the biology, after", fontsize=9)
    ax.tick_params(labelsize=8)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center",
               ncols=2, frameon=False)
    alt = (f"Scatter plot of the per-feature Fisher ratio of the biology after against before "
           f"harmonization with the identity line and the {lo:g} and {hi:g} bands; "
           + ", ".join(f"{v}: {int((verdicts == v).sum())}" for v in VERDICT_STYLE
                       if (verdicts == v).any()) + ".")
    return _embed(fig, alt)


def mixed_figure(mixed: pd.DataFrame, thresholds: Thresholds, *,
                 max_rows: int = 30) -> InlineFigure | None:
    """Biology coefficient after relative to raw (shrinkage), with 95 % intervals, and SE ratios.

    Each feature's coefficients are divided by its raw (mixed-model) coefficient, so every
    feature shares one axis: raw = 1 with interval ± 1.96 SE_raw / |β_raw|; after = the
    shrinkage ratio r with interval ± 1.96 SE_after / |β_raw|. Only features with a biology
    signal are drawn (the first ``max_rows``, in the table's order): for the others the raw
    coefficient is indistinguishable from 0 and the ratio says nothing. None when there is none.
    """
    table = mixed[mixed["verdict"] != "no signal"].iloc[:max_rows]
    m = len(table)
    if m == 0:
        return None
    beta_raw = table["beta_raw"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.abs(beta_raw)
        ci_raw = 1.96 * table["se_raw"].to_numpy(dtype=float) / scale
        ci_after = 1.96 * table["se_after"].to_numpy(dtype=float) / scale
    r = table["shrinkage"].to_numpy(dtype=float)
    se_ratio = table["se_ratio"].to_numpy(dtype=float)
    verdicts = table["verdict"].to_numpy()
    fig = _new_figure(_WIDTH, max(2.4, 0.28 * m + 1.3))
    ax, ax2 = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1.2])
    ypos = np.arange(m)[::-1].astype(float)
    lo, hi = thresholds.shrinkage_kept
    ax.axvspan(lo, hi, color="#1b7837", alpha=0.12, linewidth=0,
               label=f"kept band r = {lo:g} to {hi:g}")
    ax.axvline(1.0, color="#555555", linewidth=0.8)
    ax.axvline(0.0, color="#aaaaaa", linewidth=0.6)
    ax.errorbar(np.ones(m), ypos + 0.17, xerr=np.nan_to_num(ci_raw), fmt="s",
                mfc="white", mec="#444444", ecolor="#444444", ms=4.5, capsize=2, lw=1,
                label="raw: mixed model, random site intercept (= 1)")
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        sel = verdicts == verdict
        if not sel.any():
            continue
        ax.errorbar(r[sel], ypos[sel] - 0.17, xerr=np.nan_to_num(ci_after[sel]),
                    fmt=marker if marker != "x" else "X", color=colour, ms=5, capsize=2, lw=1,
                    label=f"after: OLS, {verdict} ({int(sel.sum())})")
    # x range from the features with a biology signal: the interval of a coefficient that is
    # not distinguishable from 0 is huge once divided by it, and would squash the others.
    signal = np.isin(verdicts, ["kept", "erased", "inflated"])  # not "not converged"
    sel = signal if signal.any() else np.ones(m, dtype=bool)
    ends = np.concatenate([r[sel] - ci_after[sel], r[sel] + ci_after[sel], 1 - ci_raw[sel],
                           1 + ci_raw[sel], [0.0, 1.2, lo, hi]])
    ends = ends[np.isfinite(ends)]
    pad = 0.05 * (ends.max() - ends.min())
    ax.set_xlim(ends.min() - pad, ends.max() + pad)
    ax.set_yticks(ypos, [text(f) for f in table.index])
    ax.set_ylim(-0.7, m - 0.3)
    ax.set_xlabel("biology coefficient / raw coefficient (95 % interval)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax2.axvline(1.0, color="#555555", linewidth=0.8)
    ax2.axvline(thresholds.se_inflated_below, color="#b35806", linestyle=":", linewidth=1,
                label=f"inflated below {thresholds.se_inflated_below:g}")
    for verdict, (colour, marker) in VERDICT_STYLE.items():
        sel = verdicts == verdict
        if sel.any():
            ax2.scatter(se_ratio[sel], ypos[sel], color=colour, marker=marker, s=22,
                        linewidths=0.8 if marker == "x" else 0.3)
    top = np.nanmax(np.r_[se_ratio[np.isfinite(se_ratio)], 1.2])
    ax2.set_xlim(0, top * 1.1)
    ax2.set_xlabel("SE after / SE raw", fontsize=9)
    ax2.tick_params(labelsize=8)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, fontsize=7.5, loc="outside upper center", ncols=3,
               frameon=False)
    for a in (ax, ax2):
        a.grid(axis="x", color="#e5e5e5", linewidth=0.6)
        a.set_axisbelow(True)
    alt = (f"Forest plot of the biology coefficient after harmonization relative to the raw "
           f"mixed-model coefficient for {m} of the {len(mixed)} modelled feature(s) (those "
           f"with a biology signal), with the kept band {lo:g} to {hi:g}, and the ratio of "
           "standard errors.")
    return _embed(fig, alt)
