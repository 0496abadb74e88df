"""``imharmony travelling fit|apply`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import imharmony as ih
from imharmony.calibration.cohorts import make_travelling_study
from imharmony.cli import main


def run(*args: str) -> int:
    return main(["-q", *args])


def test_fit_apply_round_trip_matches_the_api(tmp_path: Path) -> None:
    study = make_travelling_study(n_sites=3, n_travellers=8, n_features=4, gain_spread=0.15,
                                  random_state=11)
    ts, cohort = tmp_path / "ts.csv", tmp_path / "cohort.csv"
    study.travellers.assign(visit_no=np.arange(len(study.travellers))).to_csv(ts, index=False)
    cohort_df = study.cohort.assign(note="x")
    cohort_df = cohort_df[["note", "f002", "site", "f000", "subject", "f001", "f003"]]
    cohort_df.to_csv(cohort, index=False)
    model, out, summary = tmp_path / "m.json", tmp_path / "h.csv", tmp_path / "s.json"
    assert run("travelling", "fit", str(ts), "--site", "site", "--subject", "subject",
               "--id", "visit_no", "--scale", "linear", "--model", str(model),
               "--json", str(summary)) == 0
    assert run("travelling", "apply", str(cohort), "--model", str(model),
               "--output", str(out)) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == list(cohort_df.columns)  # other columns pass through, in order
    assert (got["note"] == "x").all() and list(got["subject"]) == list(cohort_df["subject"])
    feats = ["f000", "f001", "f002", "f003"]
    api = ih.TravellingSubjects(scale="linear").fit(
        study.travellers[feats], site=study.travellers["site"],
        subject=study.travellers["subject"])
    want = api.transform(study.cohort[feats], site=study.cohort["site"])
    np.testing.assert_allclose(got[feats].to_numpy(), want.to_numpy(), rtol=1e-9)
    doc = json.loads(summary.read_text())
    assert doc["sites"] == ["site0", "site1", "site2"] and doc["n_travellers"] == 8
    assert set(doc["agreement"]) == set(feats)
    assert all(v["icc_after"] > v["icc_before"] for v in doc["agreement"].values())


def test_unseen_site_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=2, random_state=12)
    ts, other = tmp_path / "ts.csv", tmp_path / "other.csv"
    study.travellers.to_csv(ts, index=False)
    study.cohort.assign(site="mars").to_csv(other, index=False)
    model, out = tmp_path / "m.json", tmp_path / "h.csv"
    assert run("travelling", "fit", str(ts), "--site", "site", "--subject", "subject",
               "--model", str(model)) == 0
    capsys.readouterr()
    assert run("travelling", "apply", str(other), "--model", str(model),
               "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert "'mars'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert run("travelling", "fit", str(ts), "--site", "nope", "--subject", "subject",
               "--model", str(tmp_path / "x.json")) == 2
    assert "'nope'" in capsys.readouterr().err
