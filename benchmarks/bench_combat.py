"""ComBat speed, memory and agreement: imharmony against neuroCombat 0.2.12 (issue 2).

Every case is measured for both libraries in the same run, on the same seeded data (per-site
additive and multiplicative effects, one continuous covariate "age" whose effect is preserved):

1. parametric fit+transform, 1,000 samples x 10,000 features, 10 sites;
2. parametric fit+transform, 10,000 samples x 1,000 features, 10 sites;
3. non-parametric fit+transform, 60 samples x 3,000 features, 4 sites.

Targets (issue 2): imharmony >= 10x faster than neuroCombat for the parametric cases, >= 50x for the
non-parametric case, and imharmony's peak extra memory <= 3x the input matrix (``X.nbytes``).

What is measured
----------------
time
    Best of k ``time.perf_counter`` wall times of the whole public call: ``ComBat(...)
    .fit_transform(X, batch=..., covariates=DataFrame)`` for imharmony (samples x features) and
    ``neuroCombat(dat, covars, "batch", continuous_cols=["age"], ...)`` for neuroCombat, given its
    native C-contiguous features x samples copy of the same data (made outside the timer).
    k = 3 for imharmony; for neuroCombat 1 repetition for the non-parametric case and up to 3 for
    the others while one run stays short. BLAS/OpenMP are limited to one thread for both
    (``OMP_NUM_THREADS=1`` etc. set before numpy is imported, plus ``threadpoolctl``).
agreement
    Maximum element-wise relative difference ``max |a - b| / |b|`` between the two outputs (the
    generated features are strictly positive, far from zero), and the maximum absolute difference
    in units of each feature's standard deviation, ``max |a - b| / sd_g(b)``. It is also reported
    for ``eb=False`` in both libraries and for imharmony given the covariate rounded to float32
    (neuroCombat casts continuous covariates to float32), which isolates that cast.
memory
    Peak extra memory of one fit+transform (the output included) in a fresh subprocess per
    library and case: the peak of ``tracemalloc`` (NumPy reports its buffers to it) started after
    the data exist and a warm-up call has imported everything; also the growth of the
    resident set's high-water mark (``VmHWM``, reset just before the call, minus ``VmRSS`` before
    it) as a cross-check that includes what tracemalloc cannot see. Printed as a multiple of the
    input's ``X.nbytes``.

Usage::

    python benchmarks/bench_combat.py            # full run, writes benchmarks/results/combat.md
    python benchmarks/bench_combat.py --quick    # smoke run on small sizes (< 20 s), no file
    python benchmarks/bench_combat.py --profile  # also cProfile imharmony on every case

Exit status: 0, or 1 when the two libraries' outputs disagree by more than 1e-3 (relative).
"""

import os

# Single-threaded BLAS/OpenMP for both libraries; must happen before numpy is imported. The
# memory subprocesses inherit these variables.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import datetime as _dt  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "combat.md"
SEED = 20240602
AGREEMENT_LIMIT = 1e-3
#: neuroCombat is repeated (best of up to 3) only while one run takes less than this (seconds).
NC_REPEAT_BELOW = 15.0


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    key: str
    label: str
    n_samples: int
    n_features: int
    n_sites: int
    nonparametric: bool
    speed_target: float
    nc_max_reps: int

    @property
    def input_bytes(self) -> int:
        return 8 * self.n_samples * self.n_features


FULL_CASES = (
    Case("param_wide", "parametric 1,000 x 10,000, 10 sites", 1_000, 10_000, 10, False, 10.0, 3),
    Case("param_tall", "parametric 10,000 x 1,000, 10 sites", 10_000, 1_000, 10, False, 10.0, 3),
    Case("nonparam", "non-parametric 60 x 3,000, 4 sites", 60, 3_000, 4, True, 50.0, 1),
)
QUICK_CASES = (
    Case("param_wide", "parametric 100 x 1,000, 10 sites", 100, 1_000, 10, False, 10.0, 3),
    Case("param_tall", "parametric 1,000 x 100, 10 sites", 1_000, 100, 10, False, 10.0, 3),
    Case("nonparam", "non-parametric 40 x 200, 4 sites", 40, 200, 4, True, 50.0, 1),
)
MEMORY_TARGET = 3.0
#: Everything from this line on in the results file is kept when the file is regenerated.
ANALYSIS_MARKER = "<!-- analysis: hand-written, kept when the tables above are regenerated -->"


# ------------------------------------------------------------------------------------------------
# data


def make_data(case: Case, seed: int = SEED) -> tuple[np.ndarray, pd.DataFrame]:
    """Seeded features with site effects and an age effect.

    x_ig = mu_g + slope_g (age_i - 50) + add_jg + scale_jg * sd_g * eps_ig, with mu_g ~ U(10, 100),
    sd_g = 0.08 mu_g, add_jg ~ N(0, (0.5 sd_g)^2), scale_jg ~ U(0.6, 1.6), sites balanced in
    random order. Filled in row blocks so that generating X needs no temporary of its size.

    Returns
    -------
    X : ndarray, shape (n_samples, n_features)
    covars : DataFrame with columns "batch" (int site) and "age" (float64)
    """
    n, g, j = case.n_samples, case.n_features, case.n_sites
    rng = np.random.default_rng(seed)
    site = rng.permutation(np.arange(n) % j)
    age = rng.uniform(20.0, 80.0, n)
    mu = rng.uniform(10.0, 100.0, g)
    sd = 0.08 * mu
    slope = rng.normal(0.0, 0.02, g) * sd
    add = rng.normal(0.0, 0.5, (j, g)) * sd
    scale = rng.uniform(0.6, 1.6, (j, g)) * sd
    X = np.empty((n, g))
    step = 256
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        blk = X[rows]
        blk[...] = rng.standard_normal((blk.shape[0], g))
        blk *= scale[site[rows]]
        blk += add[site[rows]]
        blk += mu
        blk += (age[rows] - 50.0)[:, None] * slope
    return X, pd.DataFrame({"batch": site, "age": age})


# ------------------------------------------------------------------------------------------------
# the two libraries


def run_imharmony(
    X: np.ndarray, covars: pd.DataFrame, *, nonparametric: bool, eb: bool = True
) -> np.ndarray:
    """imharmony's public estimator, samples x features in and out."""
    from imharmony.features import ComBat

    model = ComBat(nonparametric=nonparametric, eb=eb)
    return model.fit_transform(X, batch=covars["batch"].to_numpy(), covariates=covars[["age"]])


def run_neurocombat(
    Xt: np.ndarray, covars: pd.DataFrame, *, nonparametric: bool, eb: bool = True
) -> np.ndarray:
    """neuroCombat 0.2.12 on features x samples (its orientation); returns features x samples.

    Its progress messages go to stdout through ``print``; they are swallowed.
    """
    from neuroCombat import neuroCombat

    with contextlib.redirect_stdout(io.StringIO()):
        res = neuroCombat(
            Xt,
            covars,
            "batch",
            continuous_cols=["age"],
            eb=eb,
            parametric=not nonparametric,
        )
    return res["data"]


def _runner(lib: str, case: Case) -> tuple[Callable[[], np.ndarray], int]:
    """A zero-argument call running ``lib`` on ``case``'s data, and the input's nbytes."""
    X, covars = make_data(case)
    nbytes = X.nbytes
    nonp = case.nonparametric
    if lib == "imharmony":
        return functools.partial(run_imharmony, X, covars, nonparametric=nonp), nbytes
    # neuroCombat's own orientation and layout; X itself is released before measuring.
    Xt = np.ascontiguousarray(X.T)
    del X
    return functools.partial(run_neurocombat, Xt, covars, nonparametric=nonp), nbytes


def _warm_up(lib: str, nonparametric: bool) -> None:
    """Import and exercise every code path once on tiny data (lazy imports, caches)."""
    tiny = Case("tiny", "tiny", 24, 12, 3, nonparametric, 1.0, 1)
    fn, _ = _runner(lib, tiny)
    fn()


# ------------------------------------------------------------------------------------------------
# memory (fresh subprocess)


def _proc_status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in KiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux >= 4.0); False if impossible.

    ``ru_maxrss`` cannot be used after a fork+exec: Linux carries the parent's high-water mark
    into the child, which would hide the child's own peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


def memory_worker(lib: str, keys: list[str], quick: bool) -> dict[str, dict[str, float]]:
    """Measure peak extra memory of ``lib`` for each case in this process (see module doc)."""
    cases = {c.key: c for c in (QUICK_CASES if quick else FULL_CASES)}
    out: dict[str, dict[str, float]] = {}
    with threadpool_limits(limits=1):
        for key in keys:
            case = cases[key]
            _warm_up(lib, case.nonparametric)
            fn, nbytes = _runner(lib, case)
            gc.collect()
            can_rss = _reset_peak_rss()
            rss0 = _proc_status_kib("VmRSS") if can_rss else None
            tracemalloc.start()
            result = fn()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            hwm = _proc_status_kib("VmHWM") if can_rss else None
            del result
            out[key] = {
                "input_bytes": float(nbytes),
                "peak_bytes": float(peak),
                "rss_growth_bytes": (
                    1024.0 * (hwm - rss0) if hwm is not None and rss0 is not None else float("nan")
                ),
            }
    return out


def measure_memory(lib: str, cases: tuple[Case, ...], quick: bool) -> dict[str, dict[str, float]]:
    """Run :func:`memory_worker` in fresh interpreters: one per case (full), one per lib (quick).

    Quick mode shares one interpreter between the cases to stay fast; tracemalloc's peak and the
    reset high-water mark are per call, so the numbers remain per case.
    """
    groups = [[c.key for c in cases]] if quick else [[c.key] for c in cases]
    result: dict[str, dict[str, float]] = {}
    for keys in groups:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", lib, *keys]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory worker {lib} {keys} failed:\n{proc.stderr}")
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


# ------------------------------------------------------------------------------------------------
# timing and agreement


def best_time(fn: Callable[[], np.ndarray], reps: int, repeat_below: float) -> tuple[float, int]:
    """Best wall time over up to ``reps`` calls; stops repeating once a call exceeds the limit."""
    best = float("inf")
    done = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        done += 1
        if dt > repeat_below:
            break
    return best, done


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Element-wise relative and SD-scaled maximum differences of a to the reference b."""
    diff = np.abs(a - b)
    return {
        "rel": float(np.max(diff / np.abs(b))),
        "per_sd": float(np.max(diff / b.std(axis=0))),
    }


def time_case(case: Case, quick: bool) -> dict[str, Any]:
    """Time both libraries on one case and compare their outputs (this process)."""
    X, covars = make_data(case)
    Xt = np.ascontiguousarray(X.T)
    nonp = case.nonparametric
    for lib in ("imharmony", "neuroCombat"):
        _warm_up(lib, nonp)

    t_ih, k_ih = best_time(lambda: run_imharmony(X, covars, nonparametric=nonp), 3, float("inf"))
    # imharmony's default outside this benchmark: its own loops on every core the BLAS pool may
    # use (only the non-parametric prior is threaded); neuroCombat has no parallel path.
    cores = os.cpu_count() or 1
    with threadpool_limits(limits=cores):
        t_ih_all, _ = best_time(
            lambda: run_imharmony(X, covars, nonparametric=nonp), 3, float("inf")
        )
    t_nc, k_nc = best_time(
        lambda: run_neurocombat(Xt, covars, nonparametric=nonp), case.nc_max_reps, NC_REPEAT_BELOW
    )

    # Minor page faults of one call: a high count means fresh pages are zero-filled for
    # temporaries again and again (the allocator returned them to the OS), a cost that the
    # arithmetic alone does not explain.
    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out_ih = run_imharmony(X, covars, nonparametric=nonp)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    out_nc = run_neurocombat(Xt, covars, nonparametric=nonp).T
    agree = agreement(out_ih, out_nc)
    # neuroCombat casts continuous covariates to float32: give imharmony the same rounded values.
    cov32 = covars.assign(age=covars["age"].astype(np.float32).astype(np.float64))
    agree_f32 = agreement(run_imharmony(X, cov32, nonparametric=nonp), out_nc)
    # Without empirical Bayes both reduce to the per-feature location/scale estimates.
    out_nc_noeb = run_neurocombat(Xt, covars, nonparametric=nonp, eb=False).T
    agree_noeb = agreement(run_imharmony(X, covars, nonparametric=nonp, eb=False), out_nc_noeb)
    agree_noeb_f32 = agreement(run_imharmony(X, cov32, nonparametric=nonp, eb=False), out_nc_noeb)
    return {
        "t_ih": t_ih,
        "k_ih": k_ih,
        "t_ih_all": t_ih_all,
        "cores": cores,
        "t_nc": t_nc,
        "k_nc": k_nc,
        "agree": agree,
        "agree_f32": agree_f32,
        "agree_noeb": agree_noeb,
        "agree_noeb_f32": agree_noeb_f32,
        "faults_ih": faults,
    }


def profile_case(case: Case, top: int = 12) -> str:
    """cProfile of imharmony's fit+transform on one case (cumulative time, top entries)."""
    X, covars = make_data(case)
    _warm_up("imharmony", case.nonparametric)
    prof = cProfile.Profile()
    prof.enable()
    run_imharmony(X, covars, nonparametric=case.nonparametric)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# reporting


def machine_info() -> dict[str, str]:
    """Cores, CPU model, Python, NumPy and the BLAS/OpenMP libraries with their thread counts."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    import imharmony

    with threadpool_limits(limits=1):
        pools = threadpool_info()
    blas = "; ".join(
        f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('prefix')}, "
        f"{p.get('architecture') or p.get('user_api')}) threads={p.get('num_threads')}"
        for p in pools
    )
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(HERE.parent),
                "status",
                "--porcelain",
                "--",
                "src/imharmony/features",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        source = head + (" (src/imharmony/features has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        source = "unknown (not a git checkout)"
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} cores, {cpu}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "threads": "OMP/OPENBLAS/MKL_NUM_THREADS=1 set before importing numpy, and "
        "threadpoolctl.threadpool_limits(1)",
        "imharmony": f"{imharmony.__version__}, source {source}",
        "neuroCombat": version("neuroCombat"),
    }


def _fmt_s(t: float, k: int) -> str:
    return f"{t:.3f} s (best of {k})" if k > 1 else f"{t:.3f} s (1 run)"


def build_rows(
    cases: tuple[Case, ...],
    timing: dict[str, dict[str, Any]],
    mem_ih: dict[str, dict[str, float]],
    mem_nc: dict[str, dict[str, float]],
    quick: bool = False,
) -> list[dict[str, str]]:
    """The summary table, one dict (column -> text) per case.

    Targets are judged at the full sizes only: at --quick sizes fixed costs dominate.
    """
    rows = []
    for case in cases:
        t = timing[case.key]
        ratio = t["t_nc"] / t["t_ih"]
        m_ih = mem_ih[case.key]["peak_bytes"] / case.input_bytes
        m_nc = mem_nc[case.key]["peak_bytes"] / case.input_bytes
        speed_ok = "met" if ratio >= case.speed_target else "MISSED"
        mem_ok = "met" if m_ih <= MEMORY_TARGET else "MISSED"
        if quick:
            speed_ok = mem_ok = "n/a at quick sizes"
        rows.append(
            {
                "case": case.label,
                "imharmony": _fmt_s(t["t_ih"], t["k_ih"]),
                "neuroCombat": _fmt_s(t["t_nc"], t["k_nc"]),
                "speed-up": f"{ratio:.1f}x (>= {case.speed_target:g}x {speed_ok})",
                "max rel. diff": f"{t['agree']['rel']:.1e}",
                "imharmony mem": f"{m_ih:.2f}x (<= {MEMORY_TARGET:g}x {mem_ok})",
                "neuroCombat mem": f"{m_nc:.2f}x",
            }
        )
    return rows


def detail_rows(
    cases: tuple[Case, ...],
    timing: dict[str, dict[str, Any]],
    mem_ih: dict[str, dict[str, float]],
    mem_nc: dict[str, dict[str, float]],
) -> list[dict[str, str]]:
    """Agreement variants and raw memory numbers per case."""
    mib = float(1 << 20)
    rows = []
    for case in cases:
        t = timing[case.key]

        def rss(m: dict[str, float], case: Case = case) -> str:
            g = m["rss_growth_bytes"]
            return "n/a" if np.isnan(g) else f"{g / mib:.1f} MiB ({g / case.input_bytes:.2f}x)"

        rows.append(
            {
                "case": case.label,
                "input": f"{case.input_bytes / mib:.1f} MiB",
                "EB rel / per-SD": f"{t['agree']['rel']:.1e} / {t['agree']['per_sd']:.1e}",
                "EB, age as float32": f"{t['agree_f32']['rel']:.1e} / "
                f"{t['agree_f32']['per_sd']:.1e}",
                "eb=False": f"{t['agree_noeb']['rel']:.1e} / {t['agree_noeb']['per_sd']:.1e}",
                "eb=False, age as float32": f"{t['agree_noeb_f32']['rel']:.1e} / "
                f"{t['agree_noeb_f32']['per_sd']:.1e}",
                "imharmony page faults": f"{t['faults_ih']:,}",
                "imharmony peak (tracemalloc, RSS)": f"{mem_ih[case.key]['peak_bytes'] / mib:.1f}"
                f" MiB, {rss(mem_ih[case.key])}",
                "neuroCombat peak (tracemalloc, RSS)": f"{mem_nc[case.key]['peak_bytes'] / mib:.1f}"
                f" MiB, {rss(mem_nc[case.key])}",
            }
        )
    return rows


def all_cores_text(cases: tuple[Case, ...], timing: dict[str, dict[str, Any]]) -> str:
    """imharmony on all cores (its default) against single-threaded neuroCombat."""
    lines = ["imharmony with its default threads (all cores), same data:"]
    for case in cases:
        t = timing[case.key]
        lines.append(
            f"  {case.label}: {t['t_ih_all']:.3f} s on {t['cores']} core(s), "
            f"{t['t_nc'] / t['t_ih_all']:.1f}x neuroCombat"
        )
    return "\n".join(lines)


def text_table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(width[c]) for c in cols)
    sep = "  ".join("-" * width[c] for c in cols)
    body = ["  ".join(r[c].ljust(width[c]) for c in cols) for r in rows]
    return "\n".join([line, sep, *body])


def md_table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown(
    info: dict[str, str],
    rows: list[dict[str, str]],
    details: list[dict[str, str]],
    profiles: dict[str, str],
    quick: bool,
    all_cores: str = "",
) -> str:
    parts = [
        "# ComBat: imharmony vs neuroCombat" + (" (quick smoke run)" if quick else ""),
        "",
        "Generated by `python benchmarks/bench_combat.py"
        + (" --quick" if quick else "")
        + "`; both libraries measured in the same run on the same seeded data "
        f"(seed {SEED}; per-site additive and multiplicative effects, one continuous covariate "
        "preserved). See the script's docstring for the method.",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        "## Summary",
        "",
        "Time: best wall time of fit+transform. Speed-up: neuroCombat time / imharmony time. "
        "Max rel. diff: max |imharmony - neuroCombat| / |neuroCombat| over all outputs (EB on, "
        "as timed). Memory: peak extra memory of fit+transform (output included) / input "
        "X.nbytes, tracemalloc in a fresh process.",
        "",
        md_table(rows),
        "",
        "The table is single-threaded for both libraries. "
        + all_cores.replace("\n  ", "\n- ").replace(":\n", ":\n\n", 1),
        "",
        "## Agreement and memory details",
        "",
        "Agreement cells: max element-wise relative difference / max absolute difference in "
        "units of the feature's SD. 'age as float32': imharmony given the covariate rounded to "
        "float32, as neuroCombat's design matrix holds it. RSS: growth of the resident set during "
        "the call (VmHWM reset just before it, minus VmRSS), n/a without /proc/self/clear_refs. "
        "Page faults: minor page faults during one imharmony fit+transform in the timing process "
        "(the output alone needs X.nbytes / 4 KiB of them, fewer with huge pages).",
        "",
        md_table(details),
        "",
    ]
    if profiles:
        parts += ["## cProfile of imharmony (tottime)", ""]
        for label, text in profiles.items():
            parts += [f"### {label}", "", "```", text.strip(), "```", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, smoke run (< 20 s)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default: {DEFAULT_OUTPUT.relative_to(HERE.parent)} for a "
        "full run, none for --quick)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile imharmony on each case")
    parser.add_argument(
        "--memory-worker", nargs="+", metavar=("LIB", "CASE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.memory_worker:
        lib, *keys = args.memory_worker
        print(json.dumps(memory_worker(lib, keys, args.quick)))
        return 0

    cases = QUICK_CASES if args.quick else FULL_CASES
    info = machine_info()
    print("ComBat benchmark: imharmony vs neuroCombat" + (" (quick)" if args.quick else ""))
    for k, v in info.items():
        print(f"  {k}: {v}")
    print()

    timing: dict[str, dict[str, Any]] = {}
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # a numerical warning from either library would be reported by the run, not hidden
        warnings.simplefilter("always")
        for case in cases:
            print(f"timing {case.label} ...", flush=True)
            timing[case.key] = time_case(case, args.quick)
    print("measuring peak memory in fresh processes ...", flush=True)
    mem_ih = measure_memory("imharmony", cases, args.quick)
    mem_nc = measure_memory("neuroCombat", cases, args.quick)
    profiles: dict[str, str] = {}
    if args.profile:
        with threadpool_limits(limits=1):
            for case in cases:
                profiles[case.label] = profile_case(case)

    rows = build_rows(cases, timing, mem_ih, mem_nc, args.quick)
    details = detail_rows(cases, timing, mem_ih, mem_nc)
    print()
    print(text_table(rows))
    print()
    print(all_cores_text(cases, timing))
    print()
    print(text_table(details))
    for label, text in profiles.items():
        print(f"\ncProfile of imharmony, {label}:\n{text}")

    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(
            info, rows, details, profiles, args.quick, all_cores_text(cases, timing)
        )
        # A hand-written analysis below the marker survives re-runs.
        if output.is_file():
            previous = output.read_text()
            if ANALYSIS_MARKER in previous:
                text += "\n" + previous[previous.index(ANALYSIS_MARKER) :]
        output.write_text(text)
        print(f"\nwrote {output}")

    worst = max(t["agree"]["rel"] for t in timing.values())
    if worst > AGREEMENT_LIMIT:
        print(f"\nFAIL: outputs differ by {worst:.2e} > {AGREEMENT_LIMIT:g} (relative)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
