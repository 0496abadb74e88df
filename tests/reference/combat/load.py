"""Load the ``sva::ComBat`` reference fixtures (see ``README.md`` next to this file).

Import it from a test as a module file (the suite runs with ``--import-mode=importlib``)::

    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "combat" / "load.py"
    spec = importlib.util.spec_from_file_location("combat_fixtures", path)
    combat_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(combat_fixtures)

    for name in combat_fixtures.case_names():
        case = combat_fixtures.load_case(name)
        case["data"], case["samples"], case["expected"], case["spec"]

Numbers are stored with 17 significant digits, so the frames hold exactly the doubles given to and
returned by R.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _specs() -> list[dict[str, Any]]:
    with (FIXTURES / "cases.json").open(encoding="utf-8") as fh:
        specs: list[dict[str, Any]] = json.load(fh)
    return specs


def case_names() -> list[str]:
    """Names of all fixture cases, in the order of ``fixtures/cases.json``.

    Returns
    -------
    list of str
    """
    return [spec["name"] for spec in _specs()]


def load_case(name: str) -> dict[str, Any]:
    """Load one fixture case.

    Parameters
    ----------
    name : str
        A name from :func:`case_names`.

    Returns
    -------
    dict
        ``data`` : DataFrame, shape (n_samples, n_features)
            The input, columns ``f000``, ``f001``, ...; missing values are NaN.
        ``samples`` : DataFrame, shape (n_samples, 1 + n_covariates)
            Column ``batch`` (str labels) and one column per covariate: float for continuous
            ones, str for categorical ones (R used them as factors with sorted levels).
        ``expected`` : DataFrame, shape (n_samples, n_features)
            ``sva::ComBat``'s output (or the no-EB reference when ``spec["eb"]`` is false), same
            rows and columns as ``data``, NaN where ``data`` is NaN.
        ``spec`` : dict
            The case's entry of ``fixtures/cases.json``.

    Raises
    ------
    KeyError
        If ``name`` is not a fixture case.
    ValueError
        If the files disagree with the case's description (shape, columns, missing values).
    """
    specs = {spec["name"]: spec for spec in _specs()}
    if name not in specs:
        raise KeyError(f"unknown ComBat fixture case {name!r}; known cases: {sorted(specs)}")
    spec = specs[name]
    folder = FIXTURES / name
    data = pd.read_csv(folder / "data.csv", dtype=float, keep_default_na=True)
    expected = pd.read_csv(folder / "expected.csv", dtype=float, keep_default_na=True)
    dtypes: dict[str, type] = {"batch": str}
    for cov in spec["covariates"]:
        dtypes[cov["name"]] = float if cov["kind"] == "continuous" else str
    # Labels are never missing; keep them verbatim (a label such as "NA" must stay a string).
    samples = pd.read_csv(folder / "samples.csv", dtype=dtypes, keep_default_na=False)

    shape = (spec["n_samples"], spec["n_features"])
    problems = []
    if data.shape != shape or expected.shape != shape:
        problems.append(f"data {data.shape} / expected {expected.shape}, spec says {shape}")
    if list(expected.columns) != list(data.columns):
        problems.append("expected.csv and data.csv columns differ")
    if list(samples.columns) != list(dtypes):
        problems.append(f"samples.csv columns {list(samples.columns)}, expected {list(dtypes)}")
    if len(samples) != spec["n_samples"]:
        problems.append(f"samples.csv has {len(samples)} rows, spec says {spec['n_samples']}")
    if not data.isna().equals(expected.isna()):
        problems.append("missing values of data.csv and expected.csv differ")
    if problems:
        raise ValueError(f"ComBat fixture {folder}: " + "; ".join(problems))
    return {"data": data, "samples": samples, "expected": expected, "spec": spec}
