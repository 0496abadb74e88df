"""Slices at unequal distances along the normal: resampled onto equidistant slices (dcm2niix's
``_Eq``), a missing file refused, ``variable_spacing`` / ``--variable-spacing`` to choose."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import dicom as fac
from imharmony import cli
from imharmony._dicom.slices import equalize, equidistant_grid, missing_slices
from imharmony.errors import HarmonizationError
from imharmony.io.dicom import DicomSeriesError, DicomSizeError, read_dicom_series

RNG = np.random.default_rng(347)
IOP = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # oblique coronal


def _uneven(folder, distances, *, padding=None, padded_voxel=None, n_rows=3, n_cols=4):
    row, col = np.asarray(IOP[:3]), np.asarray(IOP[3:])
    normal = np.cross(row, col)
    origin = np.array([10.0, -40.0, 25.0])
    stored = RNG.integers(0, 3000, size=(len(distances), n_rows, n_cols)).astype(np.int16)
    tags = {} if padding is None else {"PixelPaddingValue": padding}
    if padding is not None:
        stored[:, 0, 0] = padding
        if padded_voxel is not None:
            stored[padded_voxel] = padding
    # Files written in shuffled order: the slice order comes from the positions.
    index = RNG.permutation(len(distances))
    fac.write_series(folder, stored, positions=origin + np.outer(distances, normal),
                     orientation=IOP, pixel_spacing=(1.5, 1.25), file_index=index, tags=tags)
    return stored, origin, normal


def _interp(stored, distances, grid):
    """Independent reference: numpy.interp along the slices, voxel by voxel."""
    flat = stored.reshape(len(distances), -1).astype(float)
    out = np.stack([np.interp(grid, distances, flat[:, v]) for v in range(flat.shape[1])], axis=1)
    return out.reshape(len(grid), *stored.shape[1:])


def test_unequal_spacing_is_resampled_onto_equidistant_slices(tmp_path, caplog):
    distances = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 12.0])
    stored, origin, normal = _uneven(tmp_path, distances)
    with caplog.at_level(logging.WARNING, logger="imharmony.io.dicom"):
        img = read_dicom_series(tmp_path, units="raw")
    # Smallest gap 2 mm over 12 mm: 7 slices 2 mm apart, first and last on acquired slices.
    grid = np.arange(7) * 2.0
    assert img.shape == (4, 3, 7)
    assert img.spacing == pytest.approx((1.25, 1.5, 2.0), abs=1e-5)
    np.testing.assert_allclose(img.origin, origin, atol=1e-5)
    np.testing.assert_allclose(np.asarray(img.direction)[:, 2], normal, atol=1e-6)
    np.testing.assert_allclose(img.array, _interp(stored, distances, grid).transpose(2, 1, 0),
                               atol=1e-3)
    (entry,) = img.meta["history"]
    assert entry["step"] == "equalize_slices" and entry["n_slices"] == 7
    np.testing.assert_allclose(entry["acquired_mm"], distances, atol=1e-5)
    assert img.meta["slice_spacing"] == pytest.approx(2.0, abs=1e-5)
    assert any("equalized to 7 slices 2 mm apart" in r.getMessage() for r in caplog.records)


def test_the_grid_is_limited_to_twice_the_acquired_slices(tmp_path):
    distances = np.array([0.0, 1.0, 6.0, 11.0, 16.0, 21.0])  # smallest gap 1 mm over 21 mm
    stored, _, _ = _uneven(tmp_path, distances)
    img = read_dicom_series(tmp_path, units="raw", dtype="float32")
    grid = 21.0 * np.arange(12) / 11
    assert img.shape == (4, 3, 12) and img.array.dtype == np.float32
    assert img.spacing[2] == pytest.approx(21 / 11, abs=1e-5)
    np.testing.assert_allclose(img.array, _interp(stored, distances, grid).transpose(2, 1, 0),
                               rtol=1e-5, atol=1e-2)


def test_padding_stays_nan_and_does_not_spread_onto_acquired_slices(tmp_path):
    distances = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 12.0])
    # Padding in every slice at (0, 0), and at (1, 1) of the slice at 5 mm only.
    _uneven(tmp_path, distances, padding=-2000, padded_voxel=(2, 1, 1))
    img = read_dicom_series(tmp_path)
    assert np.isnan(img.array[0, 0, :]).all()  # padded in every slice
    # 5 mm is not on the grid (0, 2, ... 12): only the slices interpolated from it (4 and 6 mm)
    # may be NaN at that voxel; the others are finite.
    assert np.isfinite(img.array[1, 1, [0, 1, 4, 5, 6]]).all()
    assert np.isnan(img.array[1, 1, [2, 3]]).all()


def test_a_missing_file_is_refused_unless_resampling_is_asked(tmp_path, caplog):
    paths = fac.write_series(tmp_path, RNG.integers(0, 99, size=(6, 3, 4)).astype(np.int16))
    paths[3].unlink()
    with pytest.raises(DicomSeriesError, match=r"regular 2.5000 mm grid with 1 slice\(s\) "
                       r"missing: check that no file is missing"):
        read_dicom_series(tmp_path)
    img = read_dicom_series(tmp_path, variable_spacing="resample")
    assert img.shape == (4, 3, 6)
    with pytest.raises(DicomSeriesError, match=r"Refused \(variable_spacing='refuse'\)"):
        read_dicom_series(tmp_path, variable_spacing="refuse")
    with pytest.raises(HarmonizationError, match="variable_spacing='sometimes'"):
        read_dicom_series(tmp_path, variable_spacing="sometimes")


def test_the_size_guard_counts_the_resampled_slices(tmp_path):
    distances = np.array([0.0, 1.0, 6.0, 11.0, 16.0, 21.0])
    _uneven(tmp_path, distances)
    # 6 slices of 12 voxels pass; the 12 resampled ones do not.
    with pytest.raises(DicomSizeError, match="resampled onto equidistant slices would have 144"):
        read_dicom_series(tmp_path, max_pixels=100)


def test_cli_variable_spacing(tmp_path, capsys):
    distances = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 12.0])
    _uneven(tmp_path / "dcm", distances)
    out = tmp_path / "out.nii.gz"
    argv = ["convert", str(tmp_path / "dcm"), "-o", str(out)]
    assert cli.main([*argv, "--variable-spacing", "refuse"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "non-uniform slice spacing" in err[0] and not out.exists()
    assert cli.main(argv) == 0
    import nibabel as nib

    assert nib.load(out).shape == (4, 3, 7)


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(0.3, 9.0), min_size=2, max_size=9),
    seed=st.integers(0, 2**16),
)
def test_equalize_is_linear_interpolation_on_a_grid_within_the_smallest_gap(gaps, seed):
    distances = np.concatenate([[0.0], np.cumsum(gaps)])
    grid = equidistant_grid(distances)
    n = len(distances)
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(distances[-1], rel=1e-12)
    assert 2 <= len(grid) <= 2 * n
    step = np.diff(grid)
    np.testing.assert_allclose(step, step[0], rtol=1e-9)
    if len(grid) < 2 * n:  # not limited: no coarser than the smallest gap
        assert step[0] <= min(gaps) * (1 + 1e-9)
    values = np.random.default_rng(seed).normal(size=(2, n, 3, 2))
    out = equalize(values, distances, grid)
    assert out.shape == (2, len(grid), 3, 2)
    expected = np.stack([_interp(v, distances, grid) for v in values])
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_missing_slices_tells_holes_from_a_deliberate_spacing():
    assert missing_slices(np.array([0.0, 2.5, 5.0, 10.0, 12.5])) == 1
    assert missing_slices(np.array([0.0, 2.5, 10.0, 12.5, 15.0])) == 2
    assert missing_slices(np.array([0.0, 4.0, 8.0, 9.1, 16.1])) == 0  # off the grid
    assert missing_slices(np.array([0.0, 1.0, 6.0, 11.0, 16.0])) == 0  # mostly 5 mm apart


def test_each_volume_of_a_4d_series_is_equalized(tmp_path):
    distances = np.array([0.0, 2.0, 5.0, 6.0])
    row, col = np.asarray(IOP[:3]), np.asarray(IOP[3:])
    positions = np.array([10.0, -40.0, 25.0]) + np.outer(distances, np.cross(row, col))
    vols = RNG.integers(0, 999, size=(2, 4, 3, 4)).astype(np.int16)
    fac.write_series(
        tmp_path, vols.reshape(8, 3, 4), modality="MR", orientation=IOP,
        positions=np.tile(positions, (2, 1)),
        per_instance=[{"InstanceNumber": k + 1, "AcquisitionNumber": k // 4 + 1}
                      for k in range(8)],
    )
    img = read_dicom_series(tmp_path)
    grid = np.arange(7) * 1.0  # smallest gap 1 mm over 6 mm
    assert img.shape == (4, 3, 7, 2) and img.meta["n_volumes"] == 2
    for t in range(2):
        np.testing.assert_allclose(img.array[..., t],
                                   _interp(vols[t], distances, grid).transpose(2, 1, 0),
                                   atol=1e-3)
