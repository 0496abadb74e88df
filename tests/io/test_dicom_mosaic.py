"""Siemens mosaics are unpacked into their slices, with the geometry of nibabel's MosaicWrapper."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from _support import dicom
from imharmony.io.dicom import DicomError, read_dicom_series

RNG = np.random.default_rng(7)


def _affine(img) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = np.asarray(img.direction) * np.asarray(img.spacing)
    a[:3, 3] = img.origin
    return a


def _nibabel_reference(path):
    """Data and LPS affine of a mosaic as nibabel's (independent) MosaicWrapper reads it."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel.nicom warns that it is experimental
        from nibabel.nicom import dicomwrappers

        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
        assert type(wrapper).__name__ == "MosaicWrapper"
        return np.asarray(wrapper.get_data()), np.asarray(wrapper.affine)


def _same_in_world(img, data, affine):
    """Every voxel of (data, affine) holds the same value at the same place in ``img``."""
    m = np.linalg.inv(_affine(img)) @ affine
    np.testing.assert_allclose(m, np.round(m), atol=1e-4)
    idx = np.indices(data.shape).reshape(3, -1)
    mine = np.round(m[:3, :3] @ idx + m[:3, 3:4]).astype(int)
    assert sorted(data.shape) == sorted(img.shape)
    np.testing.assert_array_equal(img.array[tuple(mine)], data.reshape(-1))


@pytest.mark.parametrize(
    ("orientation", "normal_sign"),
    [
        ((1, 0, 0, 0, 1, 0), 1),
        ((1, 0, 0, 0, 1, 0), -1),  # SliceNormalVector opposite to the cross product
        ((0.98480775, 0.17364818, 0, 0, 0, -1), 1),  # oblique coronal
    ],
)
def test_a_single_file_mosaic_is_unpacked_like_nibabel(tmp_path, orientation, normal_sign):
    slices = RNG.integers(0, 4000, size=(7, 6, 8)).astype(np.uint16)  # 3 x 3 tiles, 2 empty
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = normal_sign * np.cross(row, col)
    path = dicom.write_mosaic(tmp_path / "in" / "mosaic.dcm", slices, orientation=orientation,
                            slice_normal=normal)
    img = read_dicom_series(tmp_path / "in")
    assert img.shape == (8, 6, 7)  # columns, rows, slices: not the 24 x 18 tiled sheet
    assert img.spacing == pytest.approx((3.0, 3.0, 3.5))
    data, affine = _nibabel_reference(path)
    _same_in_world(img, data.astype(float), affine)
    assert img.meta["files"][0].startswith("mosaic.dcm slice ")


def test_the_slice_count_from_the_siemens_mr_header(tmp_path):
    slices = RNG.integers(0, 4000, size=(4, 3, 5)).astype(np.uint16)
    dicom.write_mosaic(tmp_path / "a" / "m.dcm", slices, count_in="private")
    img = read_dicom_series(tmp_path / "a", "raw")
    np.testing.assert_array_equal(img.array, slices.astype(float).transpose(2, 1, 0))
    # First slice at the written origin, the others along the normal.
    np.testing.assert_allclose(img.origin, (-96.0, -110.0, -40.0), atol=1e-6)


def test_a_mosaic_whose_slice_count_is_unknown_is_refused(tmp_path):
    slices = RNG.integers(0, 4000, size=(4, 3, 5)).astype(np.uint16)
    dicom.write_mosaic(tmp_path / "m.dcm", slices, count_in="none")
    with pytest.raises(DicomError, match=r"m.dcm: Image Type \(0008,0008\) says MOSAIC but "
                       r"NumberOfImagesInMosaic .* cannot be unpacked"):
        read_dicom_series(tmp_path)
