"""``imharmony phantom calibrate|apply`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony.cli import main

HU = {"air": -1000.0, "water": 0.0, "acrylic": 120.0, "bone": 700.0}
GAIN = {"A": 1.0, "B": 1.05}
OFFSET = {"A": 3.0, "B": -20.0}


def run(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rows = [{"scanner": s, "insert": k, "ref": v, "roi_mean": OFFSET[s] + GAIN[s] * v}
            for s in GAIN for k, v in HU.items()]
    inserts = tmp_path / "inserts.csv"
    pd.DataFrame(rows).to_csv(inserts, index=False)
    path, summary = tmp_path / "cal.json", tmp_path / "cal_summary.json"
    assert run("phantom", "calibrate", str(inserts), "--site", "scanner", "--reference", "ref",
               "--measured", "roi_mean", "--insert", "insert", "--model", str(path),
               "--json", str(summary)) == 0
    doc = json.loads(summary.read_text())
    assert [r["site"] for r in doc["sites"]] == ["A", "B"]
    assert doc["sites"][1]["gain"] == pytest.approx(1.05)
    assert doc["sites"][1]["offset"] == pytest.approx(-20.0)
    assert doc["sites"][0]["n_inserts"] == 4
    return path


def test_apply_to_a_table_keeps_other_columns(model: Path, tmp_path: Path) -> None:
    table = pd.DataFrame({"id": ["p1", "p2", "p3"], "scanner": ["A", "B", "B"],
                          "mean_hu": [3.0 + 40, -20 + 1.05 * 40, -20 + 1.05 * 500]})
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    table.to_csv(src, index=False)
    assert run("phantom", "apply", str(src), "--model", str(model), "--output", str(out)) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["id", "scanner", "mean_hu"]
    np.testing.assert_allclose(got["mean_hu"], [40, 40, 500], atol=1e-9)
    pd.testing.assert_frame_equal(pd.read_csv(src), table)  # input untouched


def test_apply_to_an_image_and_errors(model: Path, tmp_path: Path, capsys) -> None:
    truth = np.linspace(-900, 600, 60, dtype=np.float32).reshape(3, 4, 5)
    img = ih.Image(OFFSET["B"] + GAIN["B"] * truth, spacing=(0.8, 0.8, 2.0))
    src, out = tmp_path / "ct.nii.gz", tmp_path / "cal.nii.gz"
    ih.write_image(img, src)
    assert run("phantom", "apply", str(src), "--model", str(model), "--output", str(out),
               "--site", "B") == 0
    back = ih.read_image(out)
    np.testing.assert_allclose(back.array, truth, atol=1e-3)
    capsys.readouterr()
    assert run("phantom", "apply", str(src), "--model", str(model), "--output",
               str(tmp_path / "no.nii.gz")) == 2
    assert "--site" in capsys.readouterr().err
    assert run("phantom", "apply", str(src), "--model", str(model), "--output",
               str(tmp_path / "no.nii.gz"), "--site", "Z") == 2
    err = capsys.readouterr().err
    assert "'Z'" in err and "Traceback" not in err
    assert not (tmp_path / "no.nii.gz").exists()
