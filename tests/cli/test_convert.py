"""``imharmony convert``: the written volume, its geometry, and one-line errors with exit 2."""

from __future__ import annotations

import math
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest

from _support import dicom
from imharmony import cli

RNG = np.random.default_rng(11)
LPS_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def main(monkeypatch):
    """``imharmony.cli.main`` with the convert command registered (whether or not it is yet)."""
    if "convert" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "convert"))
    return cli.main


def _ct(folder, n=4, rows=3, cols=5, **kwargs):
    stored = RNG.integers(0, 3000, size=(n, rows, cols)).astype(np.int16)
    paths = dicom.write_series(folder, stored, **kwargs)
    return stored, paths


def test_convert_writes_hu_with_the_dicom_geometry(tmp_path, main):
    c, s = math.cos(0.3), math.sin(0.3)
    orientation = [c, s, 0.0, 0.0, 0.0, -1.0]  # oblique coronal
    _, paths = _ct(tmp_path / "dcm", orientation=orientation, file_index=[1, 3, 0, 2])
    out = tmp_path / "out" / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "dcm"), "--output", str(out)]) == 0
    nii = nib.load(out)
    assert nii.get_data_dtype() == np.int16  # auto: integer HU
    data = np.asarray(nii.dataobj)
    assert data.shape == (5, 3, 4)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for r, col in [(0, 0), (2, 4)]:
            lps = ipp + col * dc * iop[:3] + r * dr * iop[3:]
            np.testing.assert_allclose(
                (nii.affine @ [col, r, k, 1])[:3], LPS_RAS @ lps, atol=1e-4
            )
            hu = float(ds.pixel_array[r, col]) * float(ds.RescaleSlope) + float(
                ds.RescaleIntercept
            )
            assert data[col, r, k] == hu
    assert sorted(os.listdir(out.parent)) == ["ct.nii.gz"]


def test_units_and_dtype_options(tmp_path, main):
    stored, _ = _ct(tmp_path / "dcm", tags={"RescaleSlope": 0.5})
    out = tmp_path / "raw.nii"
    assert main(["convert", str(tmp_path / "dcm"), "-o", str(out), "--units", "raw"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), stored.T)
    out = tmp_path / "hu.nii"
    assert main(["convert", str(tmp_path / "dcm"), "-o", str(out)]) == 0
    nii = nib.load(out)
    assert nii.get_data_dtype() == np.float32  # slope 0.5: not integers
    np.testing.assert_array_equal(np.asarray(nii.dataobj), 0.5 * stored.T.astype(float) - 1024)
    out = tmp_path / "hu64.nrrd"
    assert main(["convert", str(tmp_path / "dcm"), "-o", str(out), "--dtype", "float64"]) == 0
    assert out.is_file()


def _error_lines(err: str) -> list[str]:
    """stderr without the log records (logs go to stderr; rich indents their wrapped lines)."""
    return [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO", "WARNING", " "))]


def test_series_uid_selects_one_of_several(tmp_path, main, capsys):
    _ct(tmp_path / "dcm", series_uid="1.2.840.1", filenames="A{index}.dcm")
    stored, _ = _ct(tmp_path / "dcm", n=2, series_uid="1.2.840.2", filenames="B{index}.dcm")
    out = tmp_path / "b.nii.gz"
    assert main(["convert", str(tmp_path / "dcm"), "-o", str(out)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1
    assert "2 image series found" in err[0] and "1.2.840.1" in err[0] and "1.2.840.2" in err[0]
    assert not out.exists()
    argv = ["convert", str(tmp_path / "dcm"), "-o", str(out), "--series-uid", "1.2.840.2"]
    assert main(argv) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), stored.T - 1024)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("gap", "non-uniform slice spacing"),
        ("empty", "no DICOM image files found"),
        ("missing", "no such file or folder"),
        ("slope", "Rescale Slope (0028,1053) missing"),
        ("huge", "max_pixels=50"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, main, capsys, damage,
                                                            message):
    folder = tmp_path / "dcm"
    argv_extra: list[str] = []
    if damage == "gap":
        _, paths = _ct(folder, n=5)
        paths[2].unlink()
    elif damage == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("nothing here")
    elif damage == "slope":
        _ct(folder, per_instance=[{}, {"RescaleSlope": None}, {}, {}])
    elif damage == "huge":
        _ct(folder)
        argv_extra = ["--max-pixels", "50"]
    out = tmp_path / "out" / "x.nii.gz"
    assert main(["convert", str(folder), "--output", str(out), *argv_extra]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert err[0].startswith("imharmony convert: error: ")
    assert message in err[0]
    assert not out.exists()
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_pet_series_converts_to_suv(tmp_path, main):
    stored = RNG.integers(0, 20000, size=(3, 2, 4)).astype(np.int16)
    dicom.write_series(tmp_path / "pet", stored, modality="PT", tags={"RescaleSlope": 2.0})
    out = tmp_path / "suv.nii.gz"
    assert main(["convert", str(tmp_path / "pet"), "-o", str(out), "--units", "suvbw"]) == 0
    factor = 75_000.0 / (370e6 * math.exp(-math.log(2) * 3600 / 6586.2))
    np.testing.assert_allclose(
        np.asarray(nib.load(out).dataobj), (2.0 * stored * factor).T, rtol=1e-6
    )


def test_pet_series_converts_to_bqml(tmp_path, main, capsys):
    stored = RNG.integers(0, 20000, size=(3, 2, 4)).astype(np.int16)
    dicom.write_series(tmp_path / "pet", stored, modality="PT",
                     tags={"RescaleSlope": 2.0, "RescaleIntercept": 3.0, "Units": "BQML"})
    out = tmp_path / "bqml.nii.gz"
    assert main(["convert", str(tmp_path / "pet"), "-o", str(out), "--units", "bqml"]) == 0
    np.testing.assert_allclose(np.asarray(nib.load(out).dataobj), (2.0 * stored + 3.0).T,
                               rtol=1e-6)
    # Stored SUVs are not turned back into Bq/mL: one line, exit 2, nothing written.
    dicom.write_series(tmp_path / "gml", stored, modality="PT", tags={"Units": "GML"})
    refused = tmp_path / "gml.nii.gz"
    assert main(["convert", str(tmp_path / "gml"), "-o", str(refused), "--units", "bqml"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "already SUV" in err[0] and not refused.exists()


def test_help_lists_the_options(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output", "--units", "--series-uid", "--dtype", "--max-pixels", "suvibw"):
        assert option in text
