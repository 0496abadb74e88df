"""``imharmony diagnose BEFORE.csv AFTER.csv --batch COL --biology COL --output report.html``."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imharmony import cli
from imharmony.datasets import make_multisite_features


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if "diagnose" not in cli._COMMAND_MODULES:  # until the command is registered in cli.py
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "diagnose"))


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    data = make_multisite_features(n_per_site=(20, 24, 28), prevalence=(0.25, 0.5, 0.75),
                                   n_features=6, n_disease_features=3, disease_effect=1.2,
                                   site_shift_sd=1.5, site_scale_range=(1.0, 1.0),
                                   random_state=5)
    root = tmp_path_factory.mktemp("diagnose")
    before = data.table.copy()
    before.insert(1, "scan_no", np.arange(len(before)) + 1000)  # numeric id, not a feature
    after = before.copy()
    after[data.feature_columns] = data.clean[data.feature_columns].to_numpy()
    paths = {"before": root / "before.csv", "after": root / "after.csv"}
    before.to_csv(paths["before"], index=False)
    after.to_csv(paths["after"], index=False)
    return {"root": root, "before_df": before, "after_df": after,
            "features": data.feature_columns, **paths}


def _args(t: dict[str, object], out: Path, *extra: str) -> list[str]:
    return ["diagnose", str(t["before"]), str(t["after"]), "--batch", "site", "--biology",
            "disease", "--covariate", "age", "--id", "scan_no", "--output", str(out),
            "--permutations", "19", "--max-features", "3", *extra]


def test_success_prints_verdicts_and_writes_the_report(tables, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "report.html"
    assert cli.main(_args(tables, out, "--title", "Site check")) == 0
    printed = capsys.readouterr().out
    assert "REMOVED" in printed and "KEPT" in printed  # the oracle harmonization
    assert "confounding of site and biology" in printed
    assert "report:" in printed and "report.html" in printed
    html = out.read_text(encoding="utf-8")
    assert "<title>Site check</title>" in html
    # 6 features: scan_no (named --id), site, age, disease and the text columns are not features
    assert "72 samples, 6 features, 3 sites" in html
    for key in ("before", "after"):
        digest = hashlib.sha256(Path(tables[key]).read_bytes()).hexdigest()
        assert digest in html
    assert "--covariate age --id scan_no" in html  # the command line, for provenance
    assert html.count('<img src="data:image/svg+xml;base64,') == 4


def test_feature_columns_matched_by_name_when_after_reorders_them(
        tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imharmony.report import figures

    stub = figures.InlineFigure(uri="data:image/svg+xml;base64,", alt="stub", width_px=1)
    for name in ("site_distributions_figure", "pca_figure", "fisher_figure", "mixed_figure"):
        monkeypatch.setattr(figures, name, lambda *a, **k: stub)  # not what is tested here
    after = tables["after_df"]
    feats = tables["features"]
    shuffled = after[[c for c in after.columns if c not in feats] + feats[::-1]]
    path = tmp_path / "after_reordered.csv"
    shuffled.to_csv(path, index=False)
    t = dict(tables, after=path)
    out1, out2 = tmp_path / "a.html", tmp_path / "b.html"
    assert cli.main(["-q", *_args(tables, out1)]) == 0
    assert cli.main(["-q", *_args(t, out2)]) == 0

    def verdict_panel(p: Path) -> str:
        return re.search(r'<section id="verdict".*?</section>', p.read_text(), re.S).group(0)

    assert verdict_panel(out1) == verdict_panel(out2)


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert err.startswith("imharmony diagnose: error: ")
    return err


def test_bad_columns_exit_2_with_one_line(tables, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    args = _args(tables, out)
    args[args.index("site")] = "scanner"
    assert cli.main(args) == 2
    err = _error(capsys)
    assert "'scanner'" in err and "before.csv" in err
    # the same column for two roles
    args = _args(tables, out)
    args[args.index("disease")] = "site"
    assert cli.main(args) == 2
    assert "more than one role" in _error(capsys)
    # a feature missing from AFTER
    after = pd.read_csv(tables["after"]).drop(columns=[tables["features"][2]])
    path = tmp_path / "after_missing.csv"
    after.to_csv(path, index=False)
    assert cli.main(_args(dict(tables, after=path), out)) == 2
    err = _error(capsys)
    assert tables["features"][2] in err and "after_missing.csv" in err
    # a feature that is not numeric in AFTER
    after = pd.read_csv(tables["after"])
    after[tables["features"][0]] = after[tables["features"][0]].astype(str) + "x"
    after.to_csv(path, index=False)
    assert cli.main(_args(dict(tables, after=path), out)) == 2
    assert tables["features"][0] in _error(capsys)
    # missing values in a feature
    after = pd.read_csv(tables["after"])
    after.loc[3, tables["features"][1]] = np.nan
    after.to_csv(path, index=False)
    assert cli.main(_args(dict(tables, after=path), out)) == 2
    assert "missing values" in _error(capsys)
    assert not out.exists()


def test_mismatched_rows_exit_2(tables, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    after = pd.read_csv(tables["after"])
    path = tmp_path / "after_bad.csv"
    after.iloc[:-1].to_csv(path, index=False)  # one sample fewer
    assert cli.main(_args(dict(tables, after=path), out)) == 2
    err = _error(capsys)
    assert "71 row(s)" in err and "72" in err and "same order" in err
    after.iloc[::-1].to_csv(path, index=False)  # same samples, another order
    assert cli.main(_args(dict(tables, after=path), out)) == 2
    err = _error(capsys)
    assert "differs" in err and "row 1" in err and "same order" in err
    assert not out.exists()


def test_argument_errors_and_help(tables, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(_args(tables, tmp_path / "r.html", "--permutations", "-1"))
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["diagnose", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--batch", "--biology", "--covariate", "--id", "--output", "--random-state",
                   "--max-features", "--permutations"):
        assert option in text
    assert cli.main(["diagnose", str(tmp_path / "absent.csv"), str(tables["after"]), "--batch",
                     "site", "--biology", "disease", "--output", str(tmp_path / "r.html")]) == 2
    assert "absent.csv" in _error(capsys)


def test_the_command_module_imports_nothing_heavy() -> None:
    # numpy comes with the package itself; the command must not add the heavy libraries
    heavy = ("pandas", "matplotlib", "jinja2", "scipy", "sklearn", "statsmodels", "rich")
    code = (f"import sys, imharmony._cli.diagnose; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
