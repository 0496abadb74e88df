"""``imharmony combat fit --smooth / repeated --batch / --method`` and apply with the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony._cli.combat import METHODS
from imharmony.cli import build_parser, main


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 160
    df = pd.DataFrame(
        {
            "scanner": rng.choice(["ge", "siemens"], n),
            "kernel": rng.choice(["soft", "sharp", "std"], n),
            "age": rng.uniform(20, 80, n).round(1),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    for g in range(6):
        df[f"f{g}"] = (
            np.sin(df["age"] / 10 + g)
            + (df["scanner"] == "ge") * 1.5
            + (df["kernel"] == "sharp") * 0.7
            + rng.normal(0, 0.3, n)
        )
    path = tmp_path / "features.csv"
    df.to_csv(path, index=False)
    return path


def run(*args: str) -> int:
    return main(["-q", *args])


def test_smooth_and_several_batches_fit_and_apply_as_the_api(table: Path, tmp_path: Path) -> None:
    model, out, out2 = tmp_path / "m.json", tmp_path / "h.csv", tmp_path / "h2.csv"
    code = run(
        "combat", "fit", str(table), "--batch", "scanner", "--batch", "kernel",
        "--smooth", "age", "--covariate", "sex", "--smooth-penalty", "gcv",
        "--model", str(model), "--output", str(out),
    )  # fmt: skip
    assert code == 0
    assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out2)) == 0
    raw = pd.read_csv(table)
    feats = [f"f{g}" for g in range(6)]
    expected = ih.ComBat(smooth=["age"], smooth_penalty="gcv").fit_transform(
        raw[feats], batch=raw[["scanner", "kernel"]], covariates=raw[["sex", "age"]]
    )
    for path in (out, out2):
        got = pd.read_csv(path)
        assert list(got.columns) == list(raw.columns)
        np.testing.assert_allclose(got[feats].to_numpy(), expected.to_numpy(), rtol=1e-9)
    meta = json.loads(model.read_text())["content"]["metadata"]
    assert meta["method"] == "combat" and meta["batch_columns"] == ["scanner", "kernel"]


def test_method_registry_lists_only_methods_that_exist(table: Path, tmp_path: Path) -> None:
    parser = build_parser()
    fit = parser._subparsers._group_actions[0].choices["combat"]  # type: ignore[union-attr]
    fit = fit._subparsers._group_actions[0].choices["fit"]
    method = next(a for a in fit._actions if a.dest == "method")
    assert list(method.choices) == list(METHODS)
    for name in METHODS:
        assert hasattr(METHODS[name].load_class(), "load")
    model = tmp_path / "m.json"
    assert (
        run("combat", "fit", str(table), "--batch", "scanner", "--model", str(model)) == 0
    )
    doc = json.loads(model.read_text())
    doc["kind"] = "imharmony.nope"  # a method this imharmony does not have
    model.write_text(json.dumps(doc))
    out = tmp_path / "x.csv"
    assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out)) == 2
    assert not out.exists()
    assert run("combat", "fit", str(table), "--batch", "scanner", "--smooth-penalty",
               "sometimes", "--smooth", "age", "--model", str(model)) == 2  # fmt: skip


def test_covbat_and_longitudinal_methods_fit_and_apply_as_the_api(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    subjects = np.repeat(np.arange(30), 3)
    time = np.tile([0.0, 1.0, 2.0], 30)
    site = rng.choice(["a", "b", "c"], subjects.size)
    df = pd.DataFrame(
        {"subject": [f"s{i}" for i in subjects], "site": site, "time": time,
         "age": (50 + rng.normal(0, 8, 30))[subjects] + time}
    )  # fmt: skip
    for g in range(5):
        df[f"f{g}"] = (
            rng.normal(0, 1, 30)[subjects] + 0.1 * df["age"] + (site == "b") * 1.2
            + rng.normal(0, 0.3, subjects.size)
        )  # fmt: skip
    table = tmp_path / "long.csv"
    df.to_csv(table, index=False)
    feats = [f"f{g}" for g in range(5)]
    cases = [
        (["--method", "covbat", "--covariate", "age", "--id", "time"],
         ih.CovBat().fit_transform(df[feats], batch=df["site"], covariates=df[["age"]])),
        (["--method", "longitudinal", "--subject", "subject", "--formula", "age + time",
          "--covariate", "age", "--covariate", "time"],
         ih.LongitudinalComBat(formula="age + time").fit_transform(
             df[feats], batch=df["site"], covariates=df[["age", "time"]],
             subject=df["subject"])),
    ]  # fmt: skip
    for options, expected in cases:
        model, out = tmp_path / "m.json", tmp_path / "applied.csv"
        base = ["combat", "fit", str(table), "--batch", "site", "--model", str(model)]
        assert run(*base, *options) == 0
        assert run("combat", "apply", str(table), "--model", str(model), "--output", str(out)) == 0
        got = pd.read_csv(out)[feats].to_numpy()
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-9, atol=1e-12)
    assert run("combat", "fit", str(table), "--batch", "site", "--method", "longitudinal",
               "--model", str(tmp_path / "x.json")) == 2  # fmt: skip  (no --subject)


def test_diagnose_report_names_the_method_and_its_parameters(table: Path, tmp_path: Path) -> None:
    model, out = tmp_path / "m.json", tmp_path / "h.csv"
    assert run("combat", "fit", str(table), "--batch", "scanner", "--smooth", "age",
               "--covariate", "sex", "--smooth-penalty", "gcv", "--model", str(model),
               "--output", str(out)) == 0  # fmt: skip
    report, summary = tmp_path / "r.html", tmp_path / "r.json"
    assert run("diagnose", str(table), str(out), "--batch", "scanner", "--biology", "sex",
               "--id", "kernel", "--covariate", "age", "--model", str(model), "--n-permutations",
               "0", "--output", str(report), "--json", str(summary)) == 0  # fmt: skip
    method = json.loads(summary.read_text())["method"]
    assert method.startswith("ComBat(") and "smooth=['age']" in method
    assert "smooth_penalty='gcv'" in method
    html = report.read_text()
    assert "harmonization method" in html and "smooth_penalty=&#39;gcv&#39;" in html
    # the model is an input: it cannot be overwritten by the report
    assert run("diagnose", str(table), str(out), "--batch", "scanner", "--biology", "sex",
               "--id", "kernel", "--model", str(model), "--output", str(model)) == 2  # fmt: skip
