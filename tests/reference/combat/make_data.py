"""Generate the input data sets of the ``sva::ComBat`` reference fixtures.

Every case is simulated from the ComBat location/scale model with a fixed seed
(``numpy.random.default_rng(seed)``)::

    x[i, g] = mu[g] + (covariate effects)[i, g] + gamma[j(i), g]
              + sqrt(delta[j(i), g]) * sigma[g] * eps[i, g],      eps ~ N(0, 1)

where ``j(i)`` is the site of sample ``i``. Feature means and spreads cover several orders of
magnitude (means 1e3..1e5, around -1e3, 1..100, 1e-3..1e-1 and around 0), every site has its own
additive (``gamma``) and multiplicative (``delta``) effect, and sites have unequal sizes. Covariates
(age, sex, grade) differ in distribution between sites but are never confounded with them (the
design is checked to be of full rank, per feature when values are missing).

Writes, for every case, ``fixtures/<case>/data.csv`` (samples x features, ``f000``, ``f001``, ...;
missing values as ``NA``) and ``fixtures/<case>/samples.csv`` (``batch`` plus covariate columns),
every number with 17 significant digits, and ``fixtures/cases.json`` describing all cases. The R
side (``make_fixtures.R``) then writes ``expected.csv``.

Run from anywhere: ``python make_data.py``. The output is byte-for-byte reproducible for a given
numpy version (recorded in ``fixtures/VERSIONS.txt``).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

#: Kind of every covariate the simulator knows.
COVARIATE_KINDS: dict[str, str] = {
    "age": "continuous",
    "sex": "categorical",
    "grade": "categorical",
}
#: Levels of the categorical covariates (sorted, so R's factor level order is the same).
LEVELS: dict[str, tuple[str, ...]] = {"sex": ("F", "M"), "grade": ("A", "B", "C")}
#: Site labels; sorted order is the R factor level order.
SITE_LABELS: tuple[str, ...] = ("siteA", "siteB", "siteC", "siteD", "siteE")


@dataclass(frozen=True)
class Case:
    """Specification of one fixture case."""

    name: str
    seed: int
    batch_sizes: tuple[int, ...]
    n_features: int
    covariates: tuple[str, ...]
    description: str
    par_prior: bool = True
    mean_only: bool = False
    ref_batch: str | None = None
    eb: bool = True
    na_fraction: float = 0.0
    zero_variance: int = 0


CASES: tuple[Case, ...] = (
    Case("param_nocov", 101, (5, 10, 15), 40, (),
         "parametric EB, no covariates, 3 sites of 5/10/15"),
    Case("param_cov", 102, (8, 12, 15, 25), 120, ("age", "sex", "grade"),
         "parametric EB with age (continuous), sex (F/M) and grade (A/B/C), 4 sites"),
    Case("param_wide", 103, (10, 14), 1000, ("age",),
         "wide: 24 samples x 1000 features, 2 sites, parametric EB with age"),
    Case("param_tall", 104, (30, 50, 70, 110, 140), 15, ("age", "sex"),
         "tall: 400 samples x 15 features, 5 sites, parametric EB with age and sex"),
    Case("nonparam_nocov", 105, (7, 12, 18), 60, (),
         "non-parametric EB, no covariates, 3 sites", par_prior=False),
    Case("nonparam_cov", 106, (10, 16, 24), 80, ("age", "sex", "grade"),
         "non-parametric EB with age, sex and grade, 3 sites", par_prior=False),
    Case("meanonly_param_cov", 107, (9, 14, 22), 60, ("age", "sex", "grade"),
         "mean-only parametric EB with age, sex and grade", mean_only=True),
    Case("meanonly_nonparam", 108, (6, 11, 15), 50, ("sex",),
         "mean-only non-parametric EB with sex", par_prior=False, mean_only=True),
    Case("refbatch_param_cov", 109, (12, 18, 20), 60, ("age", "sex", "grade"),
         "reference batch siteB, parametric EB with age, sex and grade", ref_batch="siteB"),
    Case("refbatch_nonparam", 110, (9, 13, 20), 50, (),
         "reference batch siteA, non-parametric EB, no covariates",
         par_prior=False, ref_batch="siteA"),
    Case("na_param_cov", 111, (10, 14, 16, 20), 80, ("age", "grade"),
         "about 3% missing values, parametric EB with age and grade", na_fraction=0.03),
    Case("na_nonparam", 112, (8, 14, 20), 60, ("sex",),
         "about 3% missing values, non-parametric EB with sex",
         par_prior=False, na_fraction=0.03),
    Case("na_refbatch_param", 113, (10, 15, 20), 50, ("age",),
         "about 3% missing values, reference batch siteC, parametric EB with age",
         ref_batch="siteC", na_fraction=0.03),
    Case("zerovar_param", 114, (7, 10, 13), 30, (),
         "2 features constant inside siteB (R leaves them unadjusted), parametric EB",
         zero_variance=2),
    Case("noeb_cov", 115, (9, 15, 21), 40, ("age", "sex", "grade"),
         "no empirical Bayes (gamma*=gamma-hat, delta*=delta-hat) with age, sex and grade",
         eb=False),
    Case("noeb_meanonly", 116, (8, 12, 20), 30, ("sex",),
         "no empirical Bayes, mean-only (gamma*=gamma-hat, delta*=1) with sex",
         eb=False, mean_only=True),
)


def _feature_profile(
    rng: np.random.Generator, n_features: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Draw feature means and standard deviations covering many orders of magnitude.

    Returns
    -------
    mu, sigma : ndarray, shape (n_features,)
    """
    kinds = rng.permutation(np.arange(n_features) % 5)
    mu = np.empty(n_features)
    sigma = np.empty(n_features)
    for g, kind in enumerate(kinds):
        if kind == 0:  # large positive (volumes in mm^3, energies)
            mu[g] = 10.0 ** rng.uniform(3.0, 5.0)
            sigma[g] = rng.uniform(0.05, 0.3) * mu[g]
        elif kind == 1:  # order one to a hundred (SUV, texture indices)
            mu[g] = 10.0 ** rng.uniform(0.0, 2.0)
            sigma[g] = rng.uniform(0.1, 0.5) * mu[g]
        elif kind == 2:  # small positive (probabilities, ratios)
            mu[g] = 10.0 ** rng.uniform(-3.0, -1.0)
            sigma[g] = rng.uniform(0.1, 0.5) * mu[g]
        elif kind == 3:  # centred (skewness-like)
            mu[g] = rng.normal(0.0, 0.5)
            sigma[g] = 10.0 ** rng.uniform(-1.0, 0.5)
        else:  # large negative (HU of lung, air)
            mu[g] = -(10.0 ** rng.uniform(2.5, 3.5))
            sigma[g] = rng.uniform(0.05, 0.2) * -mu[g]
    return mu, sigma


def _draw_covariates(
    rng: np.random.Generator, site: npt.NDArray[np.int64], n_sites: int, names: Sequence[str]
) -> dict[str, npt.NDArray[np.generic]]:
    """Draw covariates whose distribution differs between sites (but is not confounded)."""
    n = site.size
    out: dict[str, npt.NDArray[np.generic]] = {}
    if "age" in names:
        shift = rng.uniform(-8.0, 8.0, n_sites)
        out["age"] = np.clip(rng.normal(50.0 + shift[site], 15.0), 20.0, 80.0)
    if "sex" in names:
        p_female = rng.uniform(0.3, 0.7, n_sites)
        out["sex"] = np.where(rng.random(n) < p_female[site], "F", "M")
    if "grade" in names:
        probs = rng.dirichlet([4.0, 4.0, 4.0], n_sites)
        u = rng.random(n)
        idx = (u[:, None] > np.cumsum(probs[site], axis=1)[:, :2]).sum(axis=1)
        out["grade"] = np.asarray(LEVELS["grade"])[idx]
    return out


def _design(
    site: npt.NDArray[np.int64], n_sites: int, cov: dict[str, npt.NDArray[np.generic]]
) -> npt.NDArray[np.float64]:
    """Site indicators followed by the covariates' treatment-coded columns (no intercept)."""
    cols = [(site == j).astype(float) for j in range(n_sites)]
    for name, values in cov.items():
        if COVARIATE_KINDS[name] == "continuous":
            cols.append(np.asarray(values, dtype=float))
        else:
            cols.extend((values == level).astype(float) for level in LEVELS[name][1:])
    return np.column_stack(cols)


def _full_rank(x: npt.NDArray[np.float64]) -> bool:
    return bool(np.linalg.matrix_rank(x) == x.shape[1])


def simulate(case: Case) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.generic]]]:
    """Simulate one case.

    Returns
    -------
    data : ndarray, shape (n_samples, n_features)
        Feature values, NaN where missing; samples in shuffled (interleaved) site order.
    samples : dict
        ``batch`` (site labels) and one array per covariate, aligned with ``data``'s rows.
    """
    rng = np.random.default_rng(case.seed)
    n_sites = len(case.batch_sizes)
    p = case.n_features
    site = rng.permutation(np.repeat(np.arange(n_sites), case.batch_sizes))
    n = site.size

    for _ in range(100):
        cov = _draw_covariates(rng, site, n_sites, case.covariates)
        design = _design(site, n_sites, cov)
        if _full_rank(design) and all(
            np.unique(cov[c]).size == len(LEVELS[c])
            for c in case.covariates
            if COVARIATE_KINDS[c] == "categorical"
        ):
            break
    else:  # pragma: no cover - the seeds above never get here
        raise RuntimeError(f"{case.name}: could not draw a full-rank design")

    mu, sigma = _feature_profile(rng, p)
    x = np.tile(mu, (n, 1))
    if "age" in cov:
        x += np.outer(np.asarray(cov["age"], dtype=float) - 50.0, rng.normal(0.0, 0.02, p) * sigma)
    for name in ("sex", "grade"):
        if name in cov:
            for level in LEVELS[name][1:]:
                effect = rng.normal(0.0, 0.6, p) * sigma
                x += np.outer(cov[name] == level, effect)

    site_location = rng.uniform(-1.0, 1.0, n_sites)
    gamma = sigma * (site_location[:, None] + rng.normal(0.0, 0.4, (n_sites, p)))
    site_scale = rng.uniform(0.5, 2.0, n_sites)
    delta = site_scale[:, None] * rng.lognormal(0.0, 0.25, (n_sites, p))
    eps = rng.standard_normal((n, p))
    x += gamma[site] + np.sqrt(delta[site]) * sigma * eps

    if case.zero_variance:
        # A feature that is undefined at one site (stored as 0) and one that saturates there.
        j = 1
        cols = rng.choice(p, case.zero_variance, replace=False)
        for k, g in enumerate(sorted(cols)):
            x[site == j, g] = 0.0 if k == 0 else float(f"{mu[g]:.6g}")

    if case.na_fraction:
        missing = rng.random((n, p)) < case.na_fraction
        for g in range(p):
            # at least 2 observed values per site, and an estimable design on the observed rows
            for j in range(n_sites):
                rows = np.flatnonzero((site == j) & missing[:, g])
                while (site == j).sum() - rows.size < 2:
                    missing[rows[0], g] = False
                    rows = rows[1:]
            while not _full_rank(design[~missing[:, g]]):
                missing[rng.choice(np.flatnonzero(missing[:, g])), g] = False
        x[missing] = np.nan

    samples: dict[str, npt.NDArray[np.generic]] = {
        "batch": np.asarray(SITE_LABELS[:n_sites])[site]
    }
    samples.update(cov)
    return x, samples


def _fmt(v: float) -> str:
    return "NA" if np.isnan(v) else f"{v:.17g}"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(row) + "\n")
    tmp.replace(path)


def feature_names(n_features: int) -> list[str]:
    """Column names ``f000``, ``f001``, ..."""
    return [f"f{g:03d}" for g in range(n_features)]


def write_case(case: Case, directory: Path) -> dict[str, object]:
    """Simulate ``case``, write its CSV files into ``directory`` and return its cases.json entry."""
    x, samples = simulate(case)
    directory.mkdir(parents=True, exist_ok=True)
    names = feature_names(case.n_features)
    _write_csv(directory / "data.csv", names, [[_fmt(v) for v in row] for row in x])
    cov_rows = []
    for i in range(x.shape[0]):
        row = [str(samples["batch"][i])]
        for c in case.covariates:
            v = samples[c][i]
            row.append(_fmt(float(v)) if COVARIATE_KINDS[c] == "continuous" else str(v))
        cov_rows.append(row)
    _write_csv(directory / "samples.csv", ["batch", *case.covariates], cov_rows)

    # The text must give back exactly the doubles that were simulated.
    text = (directory / "data.csv").read_text(encoding="utf-8").splitlines()[1:]
    back = np.array([[np.nan if t == "NA" else float(t) for t in line.split(",")] for line in text])
    if not np.array_equal(back, x, equal_nan=True):  # pragma: no cover - guards the writer
        raise RuntimeError(f"{case.name}: data.csv does not round-trip")

    labels = SITE_LABELS[: len(case.batch_sizes)]
    if case.ref_batch is not None and case.ref_batch not in labels:
        raise ValueError(f"{case.name}: ref_batch {case.ref_batch!r} is not a site label")
    unadjusted = []
    if case.zero_variance:
        for g, name in enumerate(names):
            for label in labels:
                vals = x[samples["batch"] == label, g]
                if np.ptp(vals) == 0.0:
                    unadjusted.append(name)
                    break
    logger.info(
        "%s: %d x %d, sites %s, %d missing",
        case.name, x.shape[0], x.shape[1], case.batch_sizes, int(np.isnan(x).sum()),
    )
    return {
        "name": case.name,
        "description": case.description,
        "covariates": [{"name": c, "kind": COVARIATE_KINDS[c]} for c in case.covariates],
        "par_prior": case.par_prior,
        "mean_only": case.mean_only,
        "ref_batch": case.ref_batch,
        "eb": case.eb,
        "n_samples": int(x.shape[0]),
        "n_features": int(x.shape[1]),
        "batch_sizes": dict(zip(labels, (int(s) for s in case.batch_sizes), strict=True)),
        "has_nan": bool(np.isnan(x).any()),
        "n_missing": int(np.isnan(x).sum()),
        "unadjusted_features": unadjusted,
        "seed": case.seed,
    }


def main() -> None:
    """Write every case and ``fixtures/cases.json``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    FIXTURES.mkdir(exist_ok=True)
    names = {c.name for c in CASES}
    for stale in FIXTURES.iterdir():
        if stale.is_dir() and stale.name not in names:
            shutil.rmtree(stale)
    entries = [write_case(case, FIXTURES / case.name) for case in CASES]
    (FIXTURES / "cases.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    (FIXTURES / "VERSIONS.txt").write_text(
        f"python: {platform.python_version()}\nnumpy: {np.__version__}\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
