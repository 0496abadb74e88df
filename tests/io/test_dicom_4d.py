"""4-D series (multi-volume, multi-echo, DWI, multi-file mosaics, enhanced) become 4-D images;
``volume=`` / ``echo=`` (``--volume`` / ``--echo``) pick one; DWI writes FSL .bval/.bvec."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from _support import dicom
from imharmony import cli
from imharmony.io.dicom import DicomSeriesError, read_dicom_series

RNG = np.random.default_rng(404)


def _volumes(n_vol=3, n_slices=4, rows=3, cols=5):
    return RNG.integers(0, 2000, size=(n_vol, n_slices, rows, cols)).astype(np.int16)


def _write_4d(folder, vols, per_volume, shuffle=True, orientation=(1, 0, 0, 0, 1, 0)):
    """One file per (volume, slice); files numbered in a shuffled order."""
    n_vol, n_slices = vols.shape[:2]
    positions = dicom.slice_positions(n_slices, orientation=orientation)
    index = RNG.permutation(n_vol * n_slices) if shuffle else np.arange(n_vol * n_slices)
    dicom.write_series(
        folder, vols.reshape(-1, *vols.shape[2:]), modality="MR",
        positions=np.tile(positions, (n_vol, 1)), file_index=index,
        per_instance=[
            {**per_volume(t), "InstanceNumber": t * n_slices + s + 1}
            for t in range(n_vol) for s in range(n_slices)
        ],
        orientation=orientation,
    )


def test_a_multi_volume_series_becomes_4d_in_acquisition_order(tmp_path):
    vols = _volumes()
    _write_4d(tmp_path, vols, lambda t: {"AcquisitionNumber": t + 1})
    img = read_dicom_series(tmp_path)
    assert img.shape == (5, 3, 4, 3) and img.ndim == 3
    np.testing.assert_array_equal(img.array, vols.astype(float).transpose(3, 2, 1, 0))
    assert img.meta["n_volumes"] == 3
    one = read_dicom_series(tmp_path, volume=2)
    np.testing.assert_array_equal(one.array, vols[1].astype(float).transpose(2, 1, 0))
    assert (one.spacing, one.origin) == (img.spacing, img.origin)
    with pytest.raises(DicomSeriesError, match=r"volume 4 asked but the series has 3 volumes"):
        read_dicom_series(tmp_path, volume=4)


def test_multi_echo_volumes_and_one_echo(tmp_path):
    vols = _volumes(n_vol=2)
    _write_4d(tmp_path, vols, lambda t: {"EchoNumbers": t + 1, "EchoTime": 10.0 * (t + 1)})
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, vols.astype(float).transpose(3, 2, 1, 0))
    assert img.meta["echo_times"] == [10.0, 20.0]
    second = read_dicom_series(tmp_path, echo=2)
    np.testing.assert_array_equal(second.array, vols[1].astype(float).transpose(2, 1, 0))
    with pytest.raises(DicomSeriesError, match=r"no echo 3 in the series; echoes found: 1, 2"):
        read_dicom_series(tmp_path, echo=3)


def test_volumes_whose_slices_disagree_on_the_b_value_are_refused(tmp_path):
    vols = _volumes(n_vol=2, n_slices=2)
    # In acquisition order (Instance Number) the second slice has its b-values swapped.
    dicom.write_series(
        tmp_path, vols.reshape(-1, 3, 5), modality="MR",
        positions=np.tile(dicom.slice_positions(2), (2, 1)),
        per_instance=[{"DiffusionBValue": 0.0, "InstanceNumber": 1},
                      {"DiffusionBValue": 1000.0, "InstanceNumber": 2},
                      {"DiffusionBValue": 1000.0, "InstanceNumber": 3},
                      {"DiffusionBValue": 0.0, "InstanceNumber": 4}],
    )
    with pytest.raises(DicomSeriesError, match=r"cannot be sorted into volumes with confidence: "
                       r"volume 1 would mix slices of different b-value \(0.0, 1000.0\)"):
        read_dicom_series(tmp_path)


def test_dwi_writes_fsl_bval_and_bvec_in_the_voxel_frame(tmp_path):
    vols = _volumes(n_vol=3)
    grads = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.6, 0.8)]
    bvals = [0.0, 1000.0, 1000.0]
    c, s = np.cos(0.4), np.sin(0.4)
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # oblique coronal
    _write_4d(
        tmp_path / "in", vols,
        lambda t: {"DiffusionBValue": bvals[t], "DiffusionGradientOrientation": list(grads[t])},
        orientation=orientation,
    )
    out = tmp_path / "dwi.nii.gz"
    assert cli.main(["convert", str(tmp_path / "in"), "-o", str(out)]) == 0
    nii = nib.load(out)
    assert nii.shape == (5, 3, 4, 3)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), vols.transpose(3, 2, 1, 0))
    assert (tmp_path / "dwi.bval").read_text().split() == ["0", "1000", "1000"]
    bvec = np.loadtxt(tmp_path / "dwi.bvec")
    assert bvec.shape == (3, 3)
    # Back to world (LPS): undo FSL's x flip (det > 0 here), then rotate by the direction.
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    direction = np.column_stack([row, col, np.cross(row, col)])
    assert np.linalg.det(direction) > 0
    voxel = bvec.T * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(voxel @ direction.T, grads, atol=1e-5)
    # One volume: no gradient files, a 3-D image.
    out1 = tmp_path / "b1000.nii.gz"
    assert cli.main(["convert", str(tmp_path / "in"), "-o", str(out1), "--volume", "3"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(out1).dataobj), vols[2].T)


def test_multi_file_mosaics_are_the_volumes_of_one_series(tmp_path):
    vols = RNG.integers(0, 4000, size=(3, 5, 4, 6)).astype(np.uint16)
    for t in range(3):
        dicom.write_mosaic(
            tmp_path / f"vol{t}.dcm", vols[t], series_uid="1.2.3.9",
            tags={"InstanceNumber": t + 1, "SOPInstanceUID": f"1.2.3.9.{t}",
                  "AcquisitionNumber": t + 1},
        )
    img = read_dicom_series(tmp_path)
    assert img.shape == (6, 4, 5, 3)
    np.testing.assert_array_equal(img.array, vols.astype(float).transpose(3, 2, 1, 0))


def test_an_enhanced_4d_object(tmp_path):
    vols = _volumes(n_vol=2, n_slices=3)
    positions = np.tile(dicom.slice_positions(3), (2, 1))
    frame_order = [3, 0, 4, 1, 5, 2]  # interleaved storage
    dicom.write_enhanced(
        tmp_path / "e.dcm", vols.reshape(6, 3, 5), modality="MR", positions=positions,
        frame_order=frame_order,
        per_frame_groups=[
            {"FrameContentSequence": {"TemporalPositionIndex": k // 3 + 1}} for k in frame_order
        ],
    )
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, vols.astype(float).transpose(3, 2, 1, 0))
