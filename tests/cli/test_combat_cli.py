"""``imharmony combat fit|apply`` and ``imharmony demo`` through the real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony.cli import main
from imharmony.datasets import make_multisite_features


@pytest.fixture
def table(tmp_path: Path) -> Path:
    data = make_multisite_features(
        n_per_site=(20, 25, 30),
        prevalence=(0.2, 0.5, 0.8),
        n_features=15,
        n_disease_features=4,
        random_state=1,
    )
    df = data.table.copy()
    df.insert(1, "scan_no", np.arange(len(df)) + 1000)  # numeric id column
    path = tmp_path / "features.csv"
    df.to_csv(path, index=False)
    return path


def run(*args: str) -> int:
    return main(["-q", *args])


def test_fit_apply_round_trip_keeps_columns_and_order(table: Path, tmp_path: Path) -> None:
    model, out, out2 = tmp_path / "m.json", tmp_path / "h.csv", tmp_path / "h2.csv"
    assert (
        run(
            "combat",
            "fit",
            str(table),
            "--batch",
            "site",
            "--covariate",
            "age",
            "--covariate",
            "disease",
            "--categorical",
            "disease",
            "--id",
            "scan_no",
            "--model",
            str(model),
            "--output",
            str(out),
        )
        == 0
    )
    assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out2)) == 0
    raw, h, h2 = pd.read_csv(table), pd.read_csv(out), pd.read_csv(out2)
    assert list(h.columns) == list(raw.columns)
    pd.testing.assert_frame_equal(h, h2)
    for col in ("subject", "scan_no", "site", "age", "sex", "disease"):
        pd.testing.assert_series_equal(h[col], raw[col])
    feats = [c for c in raw.columns if c.startswith("f")]
    expected = ih.ComBat().fit_transform(
        raw[feats], batch=raw["site"], covariates=raw[["age", "disease"]].astype({"disease": str})
    )
    np.testing.assert_allclose(h[feats].to_numpy(), expected.to_numpy(), rtol=1e-15)
    assert not np.allclose(h[feats].to_numpy(), raw[feats].to_numpy())


def test_parquet_in_and_out(table: Path, tmp_path: Path) -> None:
    pq = tmp_path / "features.parquet"
    pd.read_csv(table).to_parquet(pq)
    model, out = tmp_path / "m.json", tmp_path / "h.parquet"
    assert (
        run(
            "combat",
            "fit",
            str(pq),
            "--batch",
            "site",
            "--id",
            "scan_no",
            "--nonparametric",
            "--model",
            str(model),
        )
        == 0
    )
    assert run("combat", "apply", str(pq), "--model", str(model), "--output", str(out)) == 0
    assert pd.read_parquet(out).shape == pd.read_csv(table).shape


def test_reference_batch_and_mean_only_options(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.csv"
    assert (
        run(
            "combat",
            "fit",
            str(table),
            "--batch",
            "site",
            "--id",
            "scan_no",
            "--mean-only",
            "--reference-batch",
            "siteB",
            "--model",
            str(tmp_path / "m.json"),
            "--output",
            str(out),
        )
        == 0
    )
    raw, h = pd.read_csv(table), pd.read_csv(out)
    ref = raw["site"] == "siteB"
    # numeric columns not named as roles (age, disease) are features here: values kept, as floats
    pd.testing.assert_frame_equal(h[ref], raw[ref], check_dtype=False)
    assert not h[~ref].equals(raw[~ref])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "nosuch"], "'nosuch' not found"),
        (["--batch", "site", "--covariate", "site"], "confounded"),
        (["--batch", "site", "--reference-batch", "siteZ"], "reference_batch='siteZ'"),
        (["--batch", "site", "--categorical", "age"], "--categorical ['age']"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    table: Path, tmp_path: Path, args, message, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.json"
    assert run("combat", "fit", str(table), *args, "--id", "scan_no", "--model", str(model)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not model.exists() and not list(tmp_path.glob("*.part*"))


def test_apply_errors(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.json"
    assert (
        run(
            "combat", "fit", str(table), "--batch", "site", "--id", "scan_no", "--model", str(model)
        )
        == 0
    )
    df = pd.read_csv(table)
    unseen = tmp_path / "unseen.csv"
    df.assign(site="siteQ").to_csv(unseen, index=False)
    out = tmp_path / "o.csv"
    assert run("combat", "apply", str(unseen), "--model", str(model), "--output", str(out)) == 2
    assert "'siteQ'" in capsys.readouterr().err
    dropped = tmp_path / "dropped.csv"
    df.drop(columns=["f003"]).to_csv(dropped, index=False)
    assert run("combat", "apply", str(dropped), "--model", str(model), "--output", str(out)) == 2
    assert "f003" in capsys.readouterr().err
    assert (
        run(
            "combat",
            "apply",
            str(tmp_path / "none.csv"),
            "--model",
            str(model),
            "--output",
            str(out),
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert not out.exists()


def test_help_and_version_from_the_installed_script() -> None:
    exe = Path(sys.executable).with_name("imharmony")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "combat"):
        assert command in res.stdout
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"imharmony {ih.__version__}"
    res = subprocess.run(
        [str(exe), "combat", "fit", "missing.csv", "--batch", "s", "--model", "m.json"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_demo_writes_outputs_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --quick: the whole path on a tiny cohort (the verdicts are tested in tests/test_demo.py)
    assert run("demo", "--output", str(tmp_path / "demo"), "--quick", "--random-state", "3") == 0
    text = capsys.readouterr().out
    assert "disease NOT given" in text
    assert "Reports:" in text and "report_combat_without_disease.html" in text
    for name in (
        "features_raw.csv",
        "features_images_harmonized.csv",
        "features_harmonized.csv",
        "features_harmonized_no_disease.csv",
        "combat_model.json",
        "report_combat_with_disease.html",
        "report_combat_without_disease.html",
        "images/manifest.csv",
    ):
        assert (tmp_path / "demo" / name).is_file(), name
    assert len(list((tmp_path / "demo" / "images" / "raw").glob("sub-*_brainmask.nii.gz"))) == 24
    assert len(list((tmp_path / "demo").glob("combat_model.*.npz"))) == 1
    model = ih.ComBat.load(tmp_path / "demo" / "combat_model.json")
    assert model.metadata_["batch_column"] == "site"


def test_exclude_globs_and_json_summaries_of_fit_and_apply(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    model, out, js = tmp_path / "m.json", tmp_path / "h.csv", tmp_path / "fit.json"
    common = ["--batch", "site", "--covariate", "age", "--model", str(model)]
    assert run("combat", "fit", str(table), *common, "--exclude", "scan_*", "--exclude",
               "f01?", "--exclude", "disease", "--output", str(out), "--json", str(js)) == 0
    fit = json.loads(js.read_text())
    assert fit["excluded_columns"] == ["scan_no", "disease", "f010", "f011", "f012", "f013",
                                       "f014"]
    assert fit["features"] == 10 and fit["sites"] == {"siteA": 20, "siteB": 25, "siteC": 30}
    assert fit["warnings"] == [] and fit["samples"] == 75
    raw, h = pd.read_csv(table), pd.read_csv(out)
    pd.testing.assert_series_equal(h["f012"], raw["f012"])  # excluded: carried along unchanged
    assert not np.allclose(h["f001"], raw["f001"])
    # apply: the model's excludes hold; its json says what was harmonized
    aj, out2 = tmp_path / "apply.json", tmp_path / "h2.csv"
    assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out2),
               "--json", str(aj)) == 0
    applied = json.loads(aj.read_text())
    assert applied["command"] == "combat apply"
    assert applied["feature_columns"] == fit["feature_columns"]
    pd.testing.assert_frame_equal(pd.read_csv(out2), h)
    # excluding a column the model harmonizes is an error
    assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out2),
               "--exclude", "f001") == 2
    assert "--exclude matches ['f001']" in capsys.readouterr().err
