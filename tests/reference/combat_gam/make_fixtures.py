"""Simulate ComBat-GAM cases and run neuroHarmonize 2.5.2 on them (see README.md).

Run with a Python that has neuroHarmonize 2.5.2 and statsmodels installed (not imharmony's test
environment)::

    python make_fixtures.py

For every case it writes ``fixtures/<case>/``: ``data.csv`` (input, samples x features),
``samples.csv`` (site and covariates), ``alphas.csv`` (the penalty neuroHarmonize's 5-fold
cross-validation chose for every feature and smooth term) and ``expected.csv`` (neuroHarmonize's
harmonized output); plus ``fixtures/cases.json`` and ``fixtures/VERSIONS.txt``. Numbers are
written with 17 significant digits and checked to read back bit for bit.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"

CASES = [
    # name, site sizes, features, smooth terms, bounds, eb, seed of neuroHarmonize
    {
        "name": "age_sex",
        "sizes": [70, 90, 80],
        "n_features": 40,
        "smooth": ["age"],
        "bounds": None,
        "eb": True,
        "seed": 7,
    },
    {
        "name": "age_bounds_noeb",
        "sizes": [60, 75],
        "n_features": 30,
        "smooth": ["age"],
        "bounds": [10.0, 95.0],
        "eb": False,
        "seed": 11,
    },
    {
        "name": "age_bmi",
        "sizes": [50, 60, 55],
        "n_features": 12,
        "smooth": ["age", "bmi"],
        "bounds": None,
        "eb": True,
        "seed": 3,
    },
]

chosen: list[np.ndarray] = []


def _record_penalties() -> None:
    """Wrap statsmodels' GLMGam.select_penweight_kfold to record (not change) what it selects.

    Imported here, not at the top, so that the test suite (which imports every module for its
    doctests) does not need neuroHarmonize's environment.
    """
    from statsmodels.gam.generalized_additive_model import GLMGam

    select = GLMGam.select_penweight_kfold

    @functools.wraps(select)
    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = select(self, *args, **kwargs)
        chosen.append(np.atleast_1d(np.asarray(result[0], dtype=float)).copy())
        return result

    GLMGam.select_penweight_kfold = recording


def simulate(spec: dict, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    sizes = spec["sizes"]
    n, G = sum(sizes), spec["n_features"]
    site = np.repeat([f"site{chr(65 + j)}" for j in range(len(sizes))], sizes)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    age = np.round(rng.uniform(20, 85, n), 2)
    sex = rng.integers(0, 2, n)
    samples = pd.DataFrame({"SITE": site, "age": age, "sex": sex})
    if "bmi" in spec["smooth"]:
        samples["bmi"] = np.round(rng.normal(26, 4, n), 2)
    else:
        samples["icv"] = np.round(rng.normal(1500, 120, n), 1)
    scale = 10.0 ** rng.uniform(-1, 3, G)  # features of very different magnitudes
    t = (age - 20) / 65
    curve = np.sin(np.pi * t[:, None] * rng.uniform(0.5, 2.0, G)) * rng.normal(1, 0.3, G)
    curve += rng.normal(0, 0.5, G) * (t[:, None] - 0.5) ** 2
    X = 5.0 + curve + 0.3 * sex[:, None] * rng.normal(size=G)
    if "bmi" in samples:
        X += 0.4 * np.cos((samples["bmi"].to_numpy()[:, None] - 26) / 4 * rng.uniform(0.5, 1.5, G))
    else:
        X += 0.002 * (samples["icv"].to_numpy()[:, None] - 1500) * rng.normal(size=G)
    shift = rng.normal(0, 0.6, (len(sizes), G))
    spread = rng.uniform(0.6, 1.6, (len(sizes), G))
    X += shift[codes] + spread[codes] * rng.normal(0, 0.4, (n, G))
    X *= scale
    data = pd.DataFrame(X, columns=[f"f{g:03d}" for g in range(G)])
    return data, samples


def write(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format="%.17g")
    back = pd.read_csv(path, float_precision="round_trip")
    for c in frame.columns:
        if pd.api.types.is_float_dtype(frame[c]):
            assert np.array_equal(back[c].to_numpy(), frame[c].to_numpy()), (path, c)


def main() -> None:
    import neuroHarmonize
    import statsmodels
    from neuroHarmonize import harmonizationLearn

    _record_penalties()
    FIXTURES.mkdir(exist_ok=True)
    rng = np.random.default_rng(20261207)
    cases = []
    for spec in CASES:
        data, samples = simulate(spec, rng)
        out = FIXTURES / spec["name"]
        out.mkdir(exist_ok=True)
        write(data, out / "data.csv")
        write(samples, out / "samples.csv")
        # read back exactly what the files hold, and give neuroHarmonize that
        data = pd.read_csv(out / "data.csv", float_precision="round_trip")
        samples = pd.read_csv(out / "samples.csv", float_precision="round_trip")
        chosen.clear()
        bounds = tuple(spec["bounds"]) if spec["bounds"] else (None, None)
        _, harmonized = harmonizationLearn(
            data.to_numpy(),
            samples,
            eb=spec["eb"],
            smooth_terms=spec["smooth"],
            smooth_term_bounds=bounds,
            seed=spec["seed"],
        )
        assert len(chosen) == data.shape[1]
        alphas = pd.DataFrame(np.vstack(chosen), columns=spec["smooth"])
        write(alphas, out / "alphas.csv")
        write(pd.DataFrame(harmonized, columns=data.columns), out / "expected.csv")
        cases.append(
            {
                **spec,
                "n_samples": int(data.shape[0]),
                "linear": [c for c in samples.columns if c != "SITE" and c not in spec["smooth"]],
            }
        )
        sys.stdout.write(f"{spec['name']} done\n")
    (FIXTURES / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "statsmodels": statsmodels.__version__,
        "neuroHarmonize": getattr(neuroHarmonize, "__version__", "2.5.2"),
        "platform": platform.platform(),
    }
    (FIXTURES / "VERSIONS.txt").write_text("".join(f"{k}: {v}\n" for k, v in versions.items()))


if __name__ == "__main__":
    main()
