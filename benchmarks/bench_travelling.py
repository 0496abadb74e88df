"""Travelling subjects against ComBat on the same cohorts, against the generated truth (issue 12).

For each seed, :func:`imharmony.calibration.make_travelling_study` generates ``--sites`` sites
whose own cohorts come from different populations (sampling bias, SD ``--shift``), each site
adding an offset (SD 1) and, for the multiplicative scenarios, a gain (±``--gain``), plus noise
(SD 0.1). Travelling subjects (complete, incomplete or hub-and-spoke visits) fit
``TravellingSubjects`` (additive or linear), which is applied to the cohorts; ComBat is fitted on
the cohorts themselves. Reported, median over seeds:

- RMSE of the harmonized cohort against the truth (the values without measurement bias or noise);
- population differences kept: slope of the harmonized site-mean deviations on the true ones
  (1 = kept, 0 = removed);
- leave-one-traveller-out ICC(2,1) across sites before -> after (travelling subjects only);
- fit time of the travelling-subject model.

Usage::

    python benchmarks/bench_travelling.py --output benchmarks/results/travelling.md
    python benchmarks/bench_travelling.py --quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import imharmony as ih
from imharmony.calibration.cohorts import make_travelling_study

SCENARIOS = [  # (design, scale of the truth's bias, scale of the model)
    ("complete", "additive", "additive"),
    ("incomplete", "additive", "additive"),
    ("hub", "additive", "additive"),
    ("complete", "linear", "additive"),
    ("complete", "linear", "linear"),
    ("incomplete", "linear", "linear"),
    ("hub", "linear", "linear"),
]


def run_one(design: str, truth: str, scale: str, seed: int, args: argparse.Namespace) -> dict:
    study = make_travelling_study(
        n_sites=args.sites, n_travellers=args.travellers, n_features=args.features,
        n_cohort_per_site=args.cohort, design=design,
        gain_spread=args.gain if truth == "linear" else 0.0, population_shift_sd=args.shift,
        noise_sd=0.1, random_state=seed,
    )
    feats = [c for c in study.cohort.columns if c.startswith("f")]
    tr, cohort = study.travellers, study.cohort
    site = cohort["site"].to_numpy()
    t0 = time.perf_counter()
    ts = ih.TravellingSubjects(scale=scale).fit(tr[feats], site=tr["site"], subject=tr["subject"])
    seconds = time.perf_counter() - t0
    truth_v = study.cohort_truth.to_numpy()
    true_means = study.cohort_truth.groupby(site).mean()
    true_dev = (true_means - true_means.mean()).to_numpy().ravel()
    out = {"seconds": seconds}
    for name, h in (("ts", ts.transform(cohort[feats], site=site)),
                    ("combat", ih.ComBat().fit_transform(cohort[feats], batch=site))):
        means = h.groupby(site).mean()
        dev = (means - means.mean()).to_numpy().ravel()
        out[f"{name}_rmse"] = float(np.sqrt(np.mean((h.to_numpy() - truth_v) ** 2)))
        out[f"{name}_kept"] = float(dev @ true_dev / (true_dev @ true_dev))
    out["raw_rmse"] = float(np.sqrt(np.mean((cohort[feats].to_numpy() - truth_v) ** 2)))
    agr = ts.agreement_
    out["icc_before"] = float(agr["icc_before"].median()) if agr is not None else float("nan")
    out["icc_after"] = float(agr["icc_after"].median()) if agr is not None else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--travellers", type=int, default=10)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--cohort", type=int, default=50)
    ap.add_argument("--gain", type=float, default=0.15)
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="3 seeds, smoke run")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.seeds = 3
    lines = [
        "# Travelling subjects vs ComBat against the truth",
        "",
        f"{args.sites} sites, {args.travellers} travellers, {args.features} features, "
        f"{args.cohort} cohort subjects per site; site offsets SD 1, gains 1 ± {args.gain} "
        f"(multiplicative scenarios), population shift SD {args.shift}, noise SD 0.1 "
        f"(subjects' values SD 2). Median over {args.seeds} seeds. Python "
        f"{platform.python_version()}, imharmony {ih.__version__}, {platform.machine()}; the "
        "machine was shared with other jobs (times are indicative).",
        "",
        "| design | true bias | model | raw RMSE | travelling RMSE | ComBat RMSE | "
        "kept (travelling) | kept (ComBat) | LOTO ICC before -> after | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for design, truth, scale in SCENARIOS:
        runs = [run_one(design, truth, scale, seed, args) for seed in range(args.seeds)]

        def med(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        lines.append(
            f"| {design} | {truth} | {scale} | {med('raw_rmse'):.3f} | {med('ts_rmse'):.3f} | "
            f"{med('combat_rmse'):.3f} | {med('ts_kept'):.2f} | {med('combat_kept'):.2f} | "
            f"{med('icc_before'):.3f} -> {med('icc_after'):.3f} | {med('seconds'):.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
