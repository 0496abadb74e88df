"""ComBat-GAM speed and agreement: imharmony against neuroHarmonize 2.5.2 (issue 13, part 1).

One case, 500 samples x 2,000 features, 4 sites, one smooth covariate (age, non-linear effects)
and one linear covariate (sex), both libraries in the same run on the same seeded data.
Target: imharmony >= 20x faster than neuroHarmonize.

What is measured
----------------
time
    Wall time (``time.perf_counter``) and CPU time of the process (``time.process_time``; the
    fairer measure on a shared machine, where wall time depends on the other jobs) of the whole
    public call that fits and harmonizes:
    ``ComBat(smooth=["age"]).fit_transform(X, batch=..., covariates=...)`` for imharmony (its
    default penalty selection, seeded 5-fold cross-validation over 49 candidates; best of 3), and
    ``harmonizationLearn(X, covars, smooth_terms=["age"], seed=0)`` for neuroHarmonize (its
    5-fold cross-validation over 11 candidates per feature; one run: it takes minutes).
    neuroHarmonize needs its own environment: it runs in a subprocess with the Python given by
    ``--nh-python`` (default ``/work/venvs/i13-gam/bin/python``), which reads the same data from
    a temporary ``.npy`` file and times only the call. BLAS is limited to one thread in both.
agreement
    With neuroHarmonize's own per-feature penalties (recorded in the subprocess) given to
    imharmony: the maximum relative difference of the outputs (same estimator, so it should be
    rounding). With imharmony's own selection: the difference in units of each feature's SD, and
    how far (in decades) the chosen penalties are from neuroHarmonize's.

Usage::

    python benchmarks/bench_combat_gam.py            # full run, writes results/combat_gam.md
    python benchmarks/bench_combat_gam.py --quick    # 120 x 60 smoke run, no file

Exit status: 0, or 1 when the outputs given the same penalties disagree by more than 1e-6.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 20261207

_NH_SCRIPT = r"""
import functools, json, sys, time
import numpy as np, pandas as pd
from statsmodels.gam.generalized_additive_model import GLMGam
from neuroHarmonize import harmonizationLearn
chosen = []
_select = GLMGam.select_penweight_kfold
@functools.wraps(_select)
def rec(self, *a, **k):
    r = _select(self, *a, **k)
    chosen.append(float(np.atleast_1d(r[0])[0]))
    return r
GLMGam.select_penweight_kfold = rec  # records what it selects (one call per feature)
data = np.load(sys.argv[1])
covars = pd.read_csv(sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
_, out = harmonizationLearn(data, covars, smooth_terms=["age"], seed=0)
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
np.save(sys.argv[3], out)
with open(sys.argv[4], "w") as fh:
    json.dump({"seconds": elapsed, "cpu": cpu, "alphas": chosen}, fh)
"""


def make_data(n: int, G: int, seed: int = SEED) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = np.full(4, n // 4)
    sizes[: n - sizes.sum()] += 1
    codes = np.repeat(np.arange(4), sizes)
    age = np.round(rng.uniform(20, 85, n), 2)
    sex = rng.integers(0, 2, n)
    t = (age - 20) / 65
    X = 5 + np.sin(np.pi * t[:, None] * rng.uniform(0.5, 2, G)) + 0.3 * sex[:, None]
    X += rng.normal(0, 0.5, (4, G))[codes] + rng.uniform(0.6, 1.6, (4, G))[codes] * rng.normal(
        0, 0.4, (n, G)
    )
    covars = pd.DataFrame({"SITE": [f"site{c}" for c in codes], "age": age, "sex": sex})
    return X * 10.0 ** rng.uniform(0, 2, G), covars


def run_imharmony(X: np.ndarray, covars: pd.DataFrame, penalty: object = "cv") -> np.ndarray:
    import imharmony as ih

    model = ih.ComBat(smooth=["age"], smooth_penalty=penalty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(
            model.fit_transform(X, batch=covars["SITE"], covariates=covars[["age", "sex"]])
        ), model.smooth_penalty_


def run_neuroharmonize(
    python: str, X: np.ndarray, covars: pd.DataFrame
) -> tuple[float, float, np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        d, c, o, j = (Path(tmp, f) for f in ("X.npy", "covars.csv", "out.npy", "info.json"))
        np.save(d, X)
        covars.to_csv(c, index=False, float_format="%.17g")
        args = [python, "-c", _NH_SCRIPT, str(d), str(c), str(o), str(j)]
        subprocess.run(args, capture_output=True, text=True, check=True)
        info = json.loads(j.read_text())
        return info["seconds"], info["cpu"], np.load(o), np.asarray(info["alphas"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="120 x 60 smoke run, no file")
    parser.add_argument("--nh-python", default="/work/venvs/i13-gam/bin/python")
    args = parser.parse_args(argv)
    n, G = (120, 60) if args.quick else (500, 2000)
    X, covars = make_data(n, G)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        times, cpus = [], []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            ours, our_alphas = run_imharmony(X, covars)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        t_ih, c_ih = min(times), min(cpus)
        t_nh, c_nh, nh_out, nh_alphas = run_neuroharmonize(args.nh_python, X, covars)
        same, _ = run_imharmony(X, covars, penalty=nh_alphas)
    sd = nh_out.std(axis=0, ddof=1)
    rel_same = float(np.max(np.abs(same - nh_out) / np.abs(nh_out)))
    sd_same = float(np.max(np.abs(same - nh_out).max(axis=0) / sd))
    sd_own = np.abs(ours - nh_out).max(axis=0) / sd
    decades = np.abs(np.log10(our_alphas[:, 0] / nh_alphas))
    speedup, cpu_speedup = t_nh / t_ih, c_nh / c_ih
    lines = [
        f"imharmony ComBat(smooth=['age']) fit_transform: {t_ih:.3f} s wall, {c_ih:.3f} s CPU "
        "(best of 3)",
        f"neuroHarmonize harmonizationLearn(smooth_terms=['age']): {t_nh:.1f} s wall, "
        f"{c_nh:.1f} s CPU (1 run)",
        f"speed-up: {cpu_speedup:.0f}x in CPU time, {speedup:.0f}x in wall time "
        f"({'>= 20x met' if min(speedup, cpu_speedup) >= 20 else '>= 20x MISSED'})",
        f"same penalties: max rel. diff {rel_same:.1e}, max diff {sd_same:.1e} feature SD",
        "own selection vs neuroHarmonize's: penalty |log10 ratio| median "
        f"{np.median(decades):.2f}, 90th pct {np.percentile(decades, 90):.2f}, max "
        f"{decades.max():.2f} decades; output diff median {np.median(sd_own):.3f}, 90th pct "
        f"{np.percentile(sd_own, 90):.3f}, max {sd_own.max():.3f} feature SD",
    ]
    print("\n".join(lines))
    ok = rel_same < 1e-6
    if not ok:
        print("FAIL: outputs disagree given the same penalties")
    if not args.quick:
        import imharmony

        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        md = [
            "# ComBat-GAM: imharmony vs neuroHarmonize",
            "",
            f"Generated by `python benchmarks/bench_combat_gam.py` on {stamp}; both libraries "
            f"in the same run on the same seeded data ({n} samples x {G} features, 4 sites, "
            "smooth age, linear sex). See the script's docstring for the method.",
            "",
            f"- **machine**: {os.cpu_count()} cores, shared with other jobs during the run "
            "(wall times depend on their load; CPU times of the process are the fairer "
            "comparison); BLAS limited to 1 thread for both",
            f"- **python** {platform.python_version()}, numpy {np.__version__}, "
            f"imharmony {imharmony.__version__}; neuroHarmonize 2.5.2 with statsmodels 0.15.0 "
            f"in `{args.nh_python}`",
            "",
            *[f"- {line}" for line in lines],
            "",
        ]
        (HERE / "results" / "combat_gam.md").write_text("\n".join(md))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
