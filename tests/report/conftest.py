"""A small diagnosis, computed once, and its report rendered once, for the report tests.

The cohort comes from :func:`imharmony.datasets.make_multisite_features` (known site effects,
a disease effect, sites with different prevalence); "after" is the generator's clean data, the
oracle harmonization (the site effects are additive here, so the oracle keeps the biology).
Few samples, features and permutations keep it fast (~1 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from imharmony.datasets import make_multisite_features
from imharmony.diagnostics import Diagnosis, diagnose


@dataclass
class Rendered:
    diagnosis: Diagnosis
    table: pd.DataFrame  # BEFORE, with the role columns
    features: list[str]
    before_csv: Path
    after_csv: Path
    html_path: Path
    html: str


def small_cohort(random_state: int = 3):
    # additive site effects only, so that the clean data keep the raw biology coefficient
    return make_multisite_features(n_per_site=(24, 30, 36), prevalence=(0.25, 0.5, 0.75),
                                   n_features=8, n_disease_features=5, disease_effect=1.2,
                                   site_shift_sd=1.5, site_scale_range=(1.0, 1.0),
                                   random_state=random_state)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    data = small_cohort()
    feats = data.feature_columns
    table = data.table
    root = tmp_path_factory.mktemp("report")
    before_csv, after_csv = root / "before.csv", root / "after.csv"
    table.to_csv(before_csv, index=False)
    after = table.copy()
    after[feats] = data.clean[feats].to_numpy()
    after.to_csv(after_csv, index=False)
    d = diagnose(table[feats], data.clean[feats], batch=table["site"], biology=table["disease"],
                 covariates=table[["age"]], random_state=0, n_permutations=19, max_features=4)
    out = d.to_html(root / "out" / "report.html", title="Small cohort <test>",
                    provenance={"inputs": {"before": before_csv, "after": after_csv},
                                "command": "pytest fixture"})
    return Rendered(diagnosis=d, table=table, features=feats, before_csv=before_csv,
                    after_csv=after_csv, html_path=out, html=out.read_text(encoding="utf-8"))
