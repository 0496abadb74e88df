"""Classic multi-frame images (one file, Number of Frames > 1, no functional groups): converted
when the header places the frames (Grid Frame Offset Vector, NM Slice Vector, Spacing Between
Slices), refused with the reason otherwise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from imharmony import cli
from imharmony.io.dicom import DicomError, read_dicom_series

_spec = importlib.util.spec_from_file_location(
    "dcm2niix_cases", Path(__file__).resolve().parent.parent / "reference" / "dcm2niix" / "cases.py"
)
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)
RNG = np.random.default_rng(9)
RT_DOSE, NM_IMAGE = cases.RT_DOSE, cases.NM_IMAGE
IOP = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # oblique coronal
NORMAL = np.cross(IOP[:3], IOP[3:])
ORIGIN = np.array([5.0, -20.0, 40.0])


def _classic(folder, frames, tags, *, modality="CT", sop=None, orientation=IOP):
    """One classic multi-frame file holding ``frames`` (n, rows, columns)."""
    cases.write_classic(folder, frames, tags, modality=modality, sop_class_uid=sop,
                        origin=ORIGIN, orientation=orientation)


def _frames(n=4, rows=3, cols=5):
    return RNG.integers(0, 4000, size=(n, rows, cols)).astype(np.uint16)


def test_rt_dose_frames_at_grid_frame_offsets_along_the_normal(tmp_path):
    frames = _frames()
    offsets = [0.0, -2.5, -5.0, -7.5]  # stored from the top down
    _classic(tmp_path, frames, {"FrameIncrementPointer": 0x3004000C,
                                "GridFrameOffsetVector": offsets},
             modality="RTDOSE", sop=RT_DOSE)
    img = read_dicom_series(tmp_path)
    assert img.meta["units"] == "raw"
    assert img.spacing == pytest.approx((1.25, 1.5, 2.5))
    np.testing.assert_allclose(img.origin, ORIGIN - 7.5 * NORMAL, atol=1e-6)
    np.testing.assert_allclose(np.asarray(img.direction)[:, 2], NORMAL, atol=1e-6)
    np.testing.assert_array_equal(img.array, frames[::-1].transpose(2, 1, 0))
    assert img.meta["files"][0] == "IM_0000.dcm frame 4"


def test_absolute_grid_frame_offsets_are_z_for_axial_planes_only(tmp_path):
    frames = _frames(n=3)
    tags = {"FrameIncrementPointer": 0x3004000C, "GridFrameOffsetVector": [-12.0, -9.0, -6.0]}
    _classic(tmp_path / "axial", frames, tags, modality="RTDOSE", sop=RT_DOSE,
             orientation=(1, 0, 0, 0, 1, 0))
    img = read_dicom_series(tmp_path / "axial")
    np.testing.assert_allclose(img.origin, [ORIGIN[0], ORIGIN[1], -12.0])
    assert img.spacing[2] == pytest.approx(3.0)
    _classic(tmp_path / "oblique", frames, tags, modality="RTDOSE", sop=RT_DOSE)
    with pytest.raises(DicomError, match=r"Grid Frame Offset Vector \(3004,000C\) starts at -12, "
                       r"not 0 .* the planes are not axial"):
        read_dicom_series(tmp_path / "oblique")


def test_nm_tomography_slices_from_the_slice_vector_and_detector_information(tmp_path):
    frames = _frames(n=5)
    slice_vector = [2, 1, 3, 5, 4]  # frames stored out of order
    _classic(tmp_path, frames, {
        "ImagePositionPatient": None, "ImageOrientationPatient": None,
        "DetectorInformationSequence": cases.detector_information(ORIGIN, IOP),
        "FrameIncrementPointer": [0x00540010, 0x00540080],
        "EnergyWindowVector": [1] * 5, "NumberOfEnergyWindows": 1,
        "SliceVector": slice_vector, "NumberOfSlices": 5, "SpacingBetweenSlices": "4.0",
    }, modality="NM", sop=NM_IMAGE)
    img = read_dicom_series(tmp_path)
    assert img.spacing[2] == pytest.approx(4.0)
    np.testing.assert_allclose(img.origin, ORIGIN, atol=1e-6)
    order = np.argsort(slice_vector)
    np.testing.assert_array_equal(img.array, frames[order].transpose(2, 1, 0))


def test_frames_of_several_energy_windows_are_refused(tmp_path):
    _classic(tmp_path, _frames(n=4), {
        "FrameIncrementPointer": [0x00540010, 0x00540080],
        "EnergyWindowVector": [1, 1, 2, 2], "SliceVector": [1, 2, 1, 2],
        "SpacingBetweenSlices": "4.0",
    }, modality="NM", sop=NM_IMAGE)
    with pytest.raises(DicomError, match=r"differ by Energy Window Vector \(0054,0010\) as well "
                       r"as by position \(\[1.0, 2.0\]\)"):
        read_dicom_series(tmp_path)


def test_no_pointer_but_a_spacing_between_slices(tmp_path):
    frames = _frames(n=3)
    _classic(tmp_path, frames, {"SpacingBetweenSlices": "3.5"}, modality="MR")
    img = read_dicom_series(tmp_path)
    assert img.spacing[2] == pytest.approx(3.5)
    np.testing.assert_allclose(img.origin, ORIGIN, atol=1e-6)
    np.testing.assert_array_equal(img.array, frames.transpose(2, 1, 0))


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"FrameIncrementPointer": 0x00181063, "FrameTime": "33.3"},
         r"differ by Frame Time \(0018,1063\), not by position \(e.g. a cine"),
        ({}, r"IM_0000.dcm: 4 frames but no Per-[Ff]rame Functional Groups Sequence \(5200,9230\), "
             r"no non-zero Spacing Between Slices"),
        ({"FrameIncrementPointer": 0x3004000C},
         r"names Grid Frame Offset Vector \(3004,000C\), which is missing"),
        ({"FrameIncrementPointer": 0x3004000C, "GridFrameOffsetVector": [0.0, 1.0]},
         r"Grid Frame Offset Vector \(3004,000C\) has 2 values for 4 frames"),
        ({"ImagePositionPatient": None},
         r"multi-frame image without Image Position \(Patient\) \(0020,0032\)"),
    ],
)
def test_frames_that_cannot_be_placed_are_refused(tmp_path, capsys, tags, message):
    _classic(tmp_path / "in", _frames(), tags)
    with pytest.raises(DicomError, match=message):
        read_dicom_series(tmp_path / "in")
    out = tmp_path / "out.nii"
    assert cli.main(["convert", str(tmp_path / "in"), "-o", str(out)]) == 2
    assert not out.exists()


def test_pydicoms_rt_dose_file():
    import pydicom

    path = get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom_series(path)
    # 15 frames 5 mm apart (Grid Frame Offset Vector 0, 5, ... 70), axial.
    assert img.shape == (10, 10, 15)
    assert img.spacing == pytest.approx((10.0, 10.0, 5.0))
    np.testing.assert_allclose(img.origin, [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_array_equal(img.array, ds.pixel_array.transpose(2, 1, 0))
