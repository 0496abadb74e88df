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
            "--n-permutations", "19", "--max-features", "3", *extra]


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
    # log records also go to stderr (before the error): the error is the last line, alone
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines), lines
    err = lines[-1]
    assert err.startswith("imharmony diagnose: error: "), lines
    assert not any(line.startswith("imharmony diagnose: error: ") for line in lines[:-1])
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
    assert not out.exists()  # (missing values are diagnosed: test_fit_then_diagnose_with_nan)


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
        cli.main(_args(tables, tmp_path / "r.html", "--n-permutations", "-1"))
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["diagnose", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--batch", "--biology", "--covariate", "--id", "--output", "--random-state",
                   "--max-features", "--n-permutations", "--n-splits", "--biology-type"):
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


# --- issue 9: the workflow researchers have (single-class sites, pyradiomics tables, NaN) -------


def _stub_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from imharmony.report import figures

    stub = figures.InlineFigure(uri="data:image/svg+xml;base64,", alt="stub", width_px=1)
    for name in ("site_distributions_figure", "pca_figure", "fisher_figure", "mixed_figure"):
        monkeypatch.setattr(figures, name, lambda *a, **k: stub)  # drawn in the tests above


def test_fit_then_diagnose_with_nan_single_class_sites_and_pyradiomics_columns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    _stub_figures(monkeypatch)
    data = make_multisite_features(
        n_per_site=(11, 14, 9, 10, 13), prevalence=(1, 1, 0, 0.5, 0.5), n_features=60,
        n_disease_features=5, disease_effect=2.0, site_shift_sd=2.0, site_scale_range=(0.5, 2.0),
        random_state=3)
    table = data.table.assign(disease=data.table["disease"].map({0: "normal", 1: "cancer"}))
    # pyradiomics' bookkeeping: a version string and a voxel count that must not be harmonized
    table.insert(5, "diagnostics_Versions_PyRadiomics", "v3.1.0")
    table.insert(6, "diagnostics_Mask-original_VoxelNum", np.arange(len(table)) * 10 + 500)
    table.loc[[2, 30], "f010"] = np.nan  # a feature the extractor failed on twice
    path = tmp_path / "radiomics.csv"
    table.to_csv(path, index=False)
    verdicts = {}
    for name, extra in (("without", []), ("with", ["--covariate", "disease"])):
        model, out, js = (tmp_path / f"{name}.json", tmp_path / f"{name}.csv",
                          tmp_path / f"{name}_fit.json")
        assert cli.main(["-q", "combat", "fit", str(path), "--batch", "site", *extra,
                         "--id", "age", "--model", str(model), "--output", str(out),
                         "--json", str(js)]) == 0
        fit = json.loads(js.read_text())
        assert fit["sites"] == {"siteA": 11, "siteB": 14, "siteC": 9, "siteD": 10, "siteE": 13}
        assert fit["features"] == 60 and fit["missing_values"] == 2
        assert fit["excluded_columns"] == ["diagnostics_Versions_PyRadiomics",
                                           "diagnostics_Mask-original_VoxelNum"]
        harmonized = pd.read_csv(out)
        assert harmonized["diagnostics_Mask-original_VoxelNum"].equals(
            table["diagnostics_Mask-original_VoxelNum"])  # passed through untouched
        assert harmonized["f010"].isna().sum() == 2  # ComBat keeps the gaps
        report, dj = tmp_path / f"{name}.html", tmp_path / f"{name}_diag.json"
        assert cli.main(["diagnose", str(path), str(out), "--batch", "site", "--biology",
                         "disease", "--id", "age", "--output", str(report), "--json", str(dj),
                         "--n-permutations", "0", "--max-features", "6"]) == 0
        printed = capsys.readouterr().out
        assert "confounding of site and biology: strong" in printed
        assert "missing values: 2 cell(s) in 1 feature(s)" in printed
        doc = json.loads(dj.read_text())
        verdicts[name] = doc["verdicts"]
        assert doc["columns"]["excluded"] == fit["excluded_columns"]
        assert doc["features"] == 60 and doc["missing"]["cells"] == 2
        assert doc["confounding"]["single_class_sites"] == ["siteA", "siteB", "siteC"]
        assert doc["thresholds"]["fisher_erased_below"] == 0.8
        assert doc["biology"]["mixed-model coefficient"]["n_features"] >= 1
    assert verdicts == {"without": {"site effect": "removed", "biology": "erased"},
                        "with": {"site effect": "removed", "biology": "kept"}}


def test_a_covariate_imbalance_in_a_tiny_site_is_named_not_called_confounding(
        tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _stub_figures(monkeypatch)
    before, after = tables["before_df"].copy(), tables["after_df"].copy()
    tiny = before.index[:3]
    for df in (before, after):
        df.loc[tiny, "site"] = "siteT"
        df.loc[tiny, "sex"] = "F"
    paths = [tmp_path / "b.csv", tmp_path / "a.csv"]
    before.to_csv(paths[0], index=False)
    after.to_csv(paths[1], index=False)
    t = dict(tables, before=paths[0], after=paths[1])
    assert cli.main(_args(t, tmp_path / "r.html", "--covariate", "sex")) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "confounding of site and biology: moderate" in printed
    assert "imbalance of covariate 'sex' inside site(s): site siteT: 3 sample(s), all F" in printed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("site,disease,f1,f2\na,0,1.5,2\nb,1,#NAME?,3\na,1,2.5,4\nb,0,3.5,5\na,0,4,6\n",
         "column 'f1' is numeric except for the value '#NAME?' at data row 2"),
        ("site|disease|f1\na|0|1\n", "1 column found ('site|disease|f1') — is the file "
                                     "'|'-separated?"),
    ],
)
def test_table_problems_exit_2_naming_the_cell_or_the_separator(
        tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    assert cli.main(["diagnose", str(path), str(path), "--batch", "site", "--biology",
                     "disease", "--output", str(tmp_path / "r.html")]) == 2
    assert message in _error(capsys)


def test_semicolon_tables_with_decimal_commas_and_did_you_mean(
        tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _stub_figures(monkeypatch)
    paths = []
    for key in ("before_df", "after_df"):
        p = tmp_path / f"{key}.csv"
        tables[key].to_csv(p, index=False, sep=";", decimal=",")  # a spreadsheet in de_DE
        paths.append(p)
    t = dict(tables, before=paths[0], after=paths[1])
    args = _args(t, tmp_path / "r.html")
    assert cli.main(["-q", *args]) == 0
    assert "72 samples, 6 features, 3 sites" in capsys.readouterr().out
    args[args.index("disease")] = "diseas"
    assert cli.main(args) == 2
    assert "'diseas' (did you mean 'disease'?) not found" in _error(capsys)
