"""CT to Hounsfield units: the formula, padding, refusals, enhanced per-frame rescale.

Reference values are computed in the tests from the raw tags with the standard formula
``HU = Rescale Slope x stored + Rescale Intercept`` (DICOM PS3.3 C.11.1.1.2), or by hand.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence as DicomSequence

from _support import dicom
from imharmony.imaging.resample import resample
from imharmony.io.dicom import read_dicom_series
from imharmony.physics.ct import (
    HounsfieldError,
    check_ct_instance,
    check_ct_rescale,
    hounsfield,
    padding_mask,
    padding_range,
    tag_label,
)

RNG = np.random.default_rng(7)


def _stored(n=3, rows=4, cols=5, low=0, high=3000):
    return RNG.integers(low, high, size=(n, rows, cols)).astype(np.int16)


# --------------------------------------------------------------------------------------------
# pydicom's CT_small.dcm against the formula applied to its raw tags
# --------------------------------------------------------------------------------------------


def test_ct_small_converts_to_the_standard_formula():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    # Independent decoding: the raw little-endian cells, signed per Pixel Representation.
    assert ds.BitsAllocated == 16 and ds.BitsStored == 16
    dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    raw = np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns)
    expected = raw.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)

    img = read_dicom_series(path)
    assert img.meta["units"] == "hu"
    assert img.shape == (ds.Columns, ds.Rows, 1)
    assert img.array.dtype == np.float64
    np.testing.assert_array_equal(img.array[:, :, 0].T, expected)
    # The file declares Pixel Padding Value -2000, which no pixel holds: no voxel is padding (NaN),
    # and no stale-able mask array is kept in meta.
    assert int(ds.PixelPaddingValue) == -2000
    assert not np.isnan(img.array).any()
    assert "fov_mask" not in img.meta
    assert img.spacing[:2] == pytest.approx((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])))
    assert img.origin == pytest.approx([float(v) for v in ds.ImagePositionPatient])


# --------------------------------------------------------------------------------------------
# The pure functions
# --------------------------------------------------------------------------------------------


def test_hounsfield_by_hand():
    stored = np.array([[0, 1024, 2048]], dtype=np.int16)
    np.testing.assert_array_equal(hounsfield(stored, 1.0, -1024.0), [[-1024.0, 0.0, 1024.0]])
    np.testing.assert_array_equal(hounsfield(stored, 0.5, -1000.0), [[-1000.0, -488.0, 24.0]])
    frames = np.array([[[10]], [[10]]], dtype=np.uint16)
    np.testing.assert_array_equal(
        hounsfield(frames, np.array([1.0, 2.0]), np.array([0.0, -5.0])), [[[10.0]], [[15.0]]]
    )


def test_hounsfield_padding_becomes_nan():
    stored = np.array([-2000, -1999, 0, 100, -3024], dtype=np.int16)
    hu = hounsfield(stored, 1.0, -1024.0, padding=(-2000, -2000))
    assert np.isnan(hu[0])
    np.testing.assert_array_equal(hu[1:], [-3023.0, -1024.0, -924.0, -4048.0])
    hu = hounsfield(stored, 1.0, -1024.0, padding=(-3024, -1999))
    np.testing.assert_array_equal(np.isnan(hu), [True, True, False, False, True])


@settings(max_examples=60, deadline=None)
@given(
    stored=hnp.arrays(np.int16, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)),
    slope=st.floats(0.01, 100.0),
    intercept=st.floats(-5000.0, 5000.0),
    pad=st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)),
)
def test_hounsfield_is_the_formula_elementwise_with_nan_exactly_on_padding(
    stored, slope, intercept, pad
):
    low, high = min(pad), max(pad)
    hu = hounsfield(stored, slope, intercept, padding=(low, high))
    flat_stored, flat_hu = stored.ravel(), hu.ravel()
    for s, h in zip(flat_stored.tolist(), flat_hu.tolist(), strict=True):
        if low <= s <= high:
            assert np.isnan(h)
        else:
            assert h == slope * float(s) + intercept


def test_padding_range_from_value_and_limit():
    ds = pydicom.Dataset()
    assert padding_range(ds) is None
    ds.PixelPaddingValue = 63536
    assert padding_range(ds) == (63536, 63536)
    ds.PixelPaddingRangeLimit = 60000  # the limit may be below the value: range is inclusive
    assert padding_range(ds) == (60000, 63536)
    mask = padding_mask(np.array([59999, 60000, 62000, 63536, 63537]), (60000, 63536))
    np.testing.assert_array_equal(mask, [False, True, True, True, False])
    assert padding_mask(np.zeros(3), None) is None


def test_rescale_checks_name_the_tag():
    assert check_ct_rescale(1.0, -1024.0, None, "a.dcm") == (1.0, -1024.0)
    assert check_ct_rescale(1.0, -1024.0, "HU", "a.dcm") == (1.0, -1024.0)
    with pytest.raises(HounsfieldError, match=r"^a.dcm: Rescale Slope \(0028,1053\) missing"):
        check_ct_rescale(None, -1024.0, None, "a.dcm")
    with pytest.raises(HounsfieldError, match=r"^a.dcm: Rescale Intercept \(0028,1052\) missing"):
        check_ct_rescale(1.0, None, None, "a.dcm")
    with pytest.raises(HounsfieldError, match=r"Rescale Type \(0028,1054\) is 'US', not 'HU'"):
        check_ct_rescale(1.0, 0.0, "US", "a.dcm")
    with pytest.raises(HounsfieldError, match="is 0"):
        check_ct_rescale(0.0, 0.0, None, "a.dcm")


def test_instance_checks():
    ds = pydicom.Dataset()
    ds.SOPClassUID = dicom.CT_IMAGE
    ds.Modality = "CT"
    check_ct_instance(ds, "ok.dcm")
    ds.ModalityLUTSequence = DicomSequence([pydicom.Dataset()])
    with pytest.raises(HounsfieldError, match=r"ok.dcm: Modality LUT Sequence \(0028,3000\)"):
        check_ct_instance(ds, "ok.dcm")
    del ds.ModalityLUTSequence
    ds.Modality = "OT"
    with pytest.raises(HounsfieldError, match=r"Modality \(0008,0060\) is 'OT'"):
        check_ct_instance(ds, "ok.dcm")
    ds.SOPClassUID = dicom.SECONDARY_CAPTURE
    with pytest.raises(HounsfieldError, match="Secondary Capture Image Storage"):
        check_ct_instance(ds, "sc.dcm")


def test_tag_label():
    assert tag_label("RescaleSlope") == "Rescale Slope (0028,1053)"
    assert tag_label("NotAKeyword") == "NotAKeyword"


# --------------------------------------------------------------------------------------------
# Through the series reader
# --------------------------------------------------------------------------------------------


def test_per_slice_rescale_in_a_classic_series(tmp_path):
    stored = _stored()
    rescale = [(1.0, -1024.0), (0.5, -1000.0), (2.0, -2048.0)]
    dicom.write_series(
        tmp_path, stored,
        per_instance=[{"RescaleSlope": s, "RescaleIntercept": b} for s, b in rescale],
    )
    expected = np.stack([stored[k] * s + b for k, (s, b) in enumerate(rescale)])
    np.testing.assert_array_equal(read_dicom_series(tmp_path).array, expected.transpose(2, 1, 0))


def test_padding_is_nan_and_the_field_of_view_follows_resampling(tmp_path):
    stored = _stored(low=0, high=2000).astype(np.uint16)
    stored[:, 0, :] = 3000  # padding rows at the top of every slice
    stored[1, 2, 3] = 2995  # inside the padding range on one slice
    dicom.write_series(
        tmp_path, stored, tags={"PixelPaddingValue": 3000, "PixelPaddingRangeLimit": 2990},
    )
    img = read_dicom_series(tmp_path)
    pad = (stored >= 2990) & (stored <= 3000)
    hu = np.where(pad, np.nan, stored.astype(float) - 1024).transpose(2, 1, 0)
    np.testing.assert_array_equal(img.array, hu)
    np.testing.assert_array_equal(~np.isnan(img.array), ~pad.transpose(2, 1, 0))
    assert "fov_mask" not in img.meta  # an array in meta would go stale after resample
    # Resampled, the field of view is still exactly where the values are (nearest neighbour).
    finer = resample(img, (img.spacing[0] / 2, None, None), interpolation="nearest")
    np.testing.assert_array_equal(
        np.isnan(finer.array), np.repeat(pad.transpose(2, 1, 0), 2, axis=0)
    )
    # dtype="auto" cannot give integers when there is padding.
    assert read_dicom_series(tmp_path, dtype="auto").array.dtype == np.float64


def test_rescale_type_other_than_hu_is_refused(tmp_path):
    dicom.write_series(tmp_path, _stored(), tags={"RescaleType": "US"})
    with pytest.raises(HounsfieldError, match=r"IM_0000.dcm: Rescale Type \(0028,1054\) is 'US'"):
        read_dicom_series(tmp_path)
    np.testing.assert_array_equal(  # raw still works
        read_dicom_series(tmp_path, "raw").array, _raw(tmp_path)
    )


def _raw(folder):
    return np.stack(
        [pydicom.dcmread(p).pixel_array for p in sorted(folder.glob("*.dcm"))]
    ).astype(float).transpose(2, 1, 0)


def test_missing_slope_names_the_file(tmp_path):
    dicom.write_series(
        tmp_path, _stored(n=5), per_instance=[{}, {}, {}, {"RescaleSlope": None}, {}],
        filenames="CT_{index:04d}.dcm",
    )
    with pytest.raises(HounsfieldError, match=r"^CT_0003.dcm: Rescale Slope \(0028,1053\) missing"):
        read_dicom_series(tmp_path)


def test_secondary_capture_is_not_hu(tmp_path):
    dicom.write_series(tmp_path, _stored(), sop_class_uid=dicom.SECONDARY_CAPTURE)
    with pytest.raises(HounsfieldError, match=r"IM_0000.dcm: SOP Class UID .*Secondary Capture"):
        read_dicom_series(tmp_path)


def test_modality_lut_sequence_is_refused(tmp_path):
    lut = pydicom.Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.ModalityLUTType = "HU"
    lut.LUTData = np.arange(4, dtype='<u2').tobytes()
    dicom.write_series(tmp_path, _stored(), tags={"ModalityLUTSequence": DicomSequence([lut])})
    with pytest.raises(HounsfieldError, match=r"Modality LUT Sequence \(0028,3000\)"):
        read_dicom_series(tmp_path)


def test_enhanced_ct_per_frame_rescale_and_rescale_type(tmp_path):
    stored = _stored(n=4)
    rescale = [(1.0, -1024.0), (1.0, -1000.0), (2.0, -1024.0), (0.25, 0.0)]
    dicom.write_enhanced(
        tmp_path / "a" / "e.dcm", stored, frame_rescale=rescale, rescale_type="HU",
        frame_order=[2, 3, 1, 0],
    )
    img = read_dicom_series(tmp_path / "a")
    expected = np.stack([stored[k] * s + b for k, (s, b) in enumerate(rescale)])
    np.testing.assert_array_equal(img.array, expected.transpose(2, 1, 0))

    dicom.write_enhanced(tmp_path / "b" / "e.dcm", stored, frame_rescale=rescale, rescale_type="US")
    with pytest.raises(HounsfieldError, match=r"e.dcm frame 1: Rescale Type"):
        read_dicom_series(tmp_path / "b")

    dicom.write_enhanced(tmp_path / "c" / "e.dcm", stored)  # no Pixel Value Transformation
    with pytest.raises(HounsfieldError, match=r"e.dcm frame 1: Rescale Slope \(0028,1053\)"):
        read_dicom_series(tmp_path / "c")


def test_values_outside_the_field_of_view_without_padding_tag_are_logged(tmp_path, caplog):
    stored = _stored()
    stored[0, 0, 0] = -2000  # -3024 HU after the intercept
    dicom.write_series(tmp_path, stored)
    img = read_dicom_series(tmp_path)
    assert img.array[0, 0, 0] == -3024.0  # left as is
    assert "-3024 HU but no Pixel Padding Value (0028,0120)" in caplog.text
