"""``imharmony phantom nema``: RC table, summary JSON, filtered phantom, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from _support import dicom
from imharmony.cli import main
from imharmony.datasets import make_nema_phantom


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nema") / "phantom.nii.gz"
    ih.write_image(make_nema_phantom(6.0, 4.0, ratio=10.0).image, path)
    return path


def test_nema_with_earl1_writes_table_summary_and_filtered(phantom_file: Path,
                                                           tmp_path: Path) -> None:
    rc, js, filt = tmp_path / "rc.csv", tmp_path / "s.json", tmp_path / "f.nii.gz"
    code = main(["-q", "phantom", "nema", str(phantom_file), "--background", "1", "--spheres",
                 "10", "--standard", "earl1", "--output", str(rc), "--json", str(js),
                 "--filtered", str(filt)])
    assert code == 0
    table = pd.read_csv(rc)
    assert table["diameter_mm"].tolist() == [10, 13, 17, 22, 28, 37]
    assert {"rc_max", "rc_mean", "rc_peak", "compliant_before", "compliant_after"} <= set(table)
    summary = json.loads(js.read_text())
    assert summary["fwhm_mm"] == pytest.approx(6.0, rel=1e-3)
    assert summary["standard"] == "EARL1"
    assert summary["compliant_before"] is False and summary["compliant_after"] is True
    assert 3.0 < summary["filter_fwhm_mm"] < 7.0
    assert table["compliant_after"].all()
    filtered = ih.read_image(filt)
    again = ih.calibration.nema_recovery(filtered, background=1, spheres=10)
    bands = ih.calibration.earl_bands("EARL1")
    assert ih.calibration.earl_compliance(again.table, bands)["compliant"].all()
    # a sub-voxel discrete filter (sigma about 0.6 voxel here) is not a continuous Gaussian PSF:
    # the fitted FWHM of the filtered phantom is below sqrt(6² + f²), but well above the 6 mm
    assert 7.0 < again.fwhm_mm < np.hypot(6.0, summary["filter_fwhm_mm"])


def test_nema_without_standard_and_bad_input(phantom_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = tmp_path / "rc.csv"
    assert main(["-q", "phantom", "nema", str(phantom_file), "--background", "1",
                 "--spheres", "10", "--output", str(rc)]) == 0
    assert list(pd.read_csv(rc).columns) == ["diameter_mm", "rc_max", "rc_mean", "rc_peak"]
    out = tmp_path / "bad.csv"
    code = main(["-q", "phantom", "nema", str(phantom_file), "--background", "10",
                 "--spheres", "1", "--output", str(out)])
    assert code == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "must exceed the background" in err and "Traceback" not in err
    code = main(["-q", "phantom", "nema", str(phantom_file), "--background", "1", "--spheres",
                 "10", "--standard", "earl2", "--output", str(out)])
    assert code == 2 and not out.exists()
    assert "Kaalep" in capsys.readouterr().err


def test_nema_reads_a_dicom_series(tmp_path: Path) -> None:
    ph = make_nema_phantom(6.0, 4.0)
    # Stored as twice the Bq/mL with Rescale Slope 0.5, Units BQML: only a reader that applies
    # the rescale (the default for a DICOM folder, --units bqml) gets the concentrations back.
    stored = np.round(ph.image.array * 2000).astype(np.int16)
    folder = tmp_path / "pet"
    dicom.write_series(folder, np.ascontiguousarray(stored.transpose(2, 1, 0)), modality="PT",
                     pixel_spacing=(4.0, 4.0), slice_spacing=4.0,
                     tags={"Units": "BQML", "RescaleSlope": 0.5, "RescaleIntercept": 0})
    js = tmp_path / "s.json"
    code = main(["-q", "phantom", "nema", str(folder), "--background", "1000",
                 "--spheres", "10000", "--output", str(tmp_path / "rc.csv"), "--json", str(js)])
    assert code == 0
    summary = json.loads(js.read_text())
    assert summary["fwhm_mm"] == pytest.approx(6.0, rel=0.01)
    table = pd.read_csv(tmp_path / "rc.csv")
    np.testing.assert_allclose(table["rc_max"], ph.truth["rc_max"], atol=2e-3)
