"""A vendor's private non-image object in a series (Philips' Private MR Series Data Storage:
Rows and Columns but no Pixel Data, same Series Instance UID) is skipped, while a standard image
without Pixel Data still stops the reading."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from _support import dicom as fac
from imharmony.io.dicom import DicomError, read_dicom_series


def _without_pixels(src, dest, sop_class_uid):
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.9.1"
    ds.save_as(dest, enforce_file_format=True)


def test_a_private_object_of_the_series_is_skipped(tmp_path):
    stored = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    paths = fac.write_series(tmp_path, stored, modality="MR")
    _without_pixels(paths[0], tmp_path / "XX_0001", "1.3.46.670589.11.0.0.12.2")
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, stored.transpose(2, 1, 0))


def test_a_standard_image_without_pixel_data_still_stops_the_series(tmp_path):
    paths = fac.write_series(tmp_path, np.zeros((3, 4, 5), np.int16), modality="MR")
    _without_pixels(paths[0], tmp_path / "XX_0001", fac.MR_IMAGE)
    with pytest.raises(DicomError, match=r"XX_0001: an image header without Pixel Data"):
        read_dicom_series(tmp_path)
