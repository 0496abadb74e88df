"""DICOM series reading: ordering, geometry, hostile and damaged input, units, enhanced objects.

Expected geometry is computed here from the DICOM definition (PS3.3 C.7.6.2.1.1): the centre of
pixel (column c, row r) of a slice is ``IPP + c * Δc * X + r * Δr * Y`` with ``X = IOP[0:3]``,
``Y = IOP[3:6]``, ``Δr, Δc = PixelSpacing``, independently of the reader's code.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import tracemalloc

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from _support import dicom
from imharmony import Image
from imharmony.errors import HarmonizationError
from imharmony.io import read_image
from imharmony.io.dicom import (
    DicomError,
    DicomSeriesError,
    DicomSizeError,
    _holds_stored_values,
    list_dicom_series,
    read_dicom_series,
    stored_values,
)
from imharmony.physics.ct import HounsfieldError

RNG = np.random.default_rng(20240101)


def _stored(n=4, rows=5, cols=6, low=0, high=3000, dtype=np.int16):
    return RNG.integers(low, high, size=(n, rows, cols)).astype(dtype)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """A rotation matrix from three angles (radians)."""
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), \
        math.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def _physical(img: Image, idx) -> np.ndarray:
    return np.asarray(img.origin) + img.direction @ (np.asarray(img.spacing) * np.asarray(idx))


# --------------------------------------------------------------------------------------------
# Ordering and geometry
# --------------------------------------------------------------------------------------------


def test_oblique_geometry_matches_the_dicom_pixel_formula(tmp_path):
    rot = _rotation(0.3, -0.5, 0.8)
    row_cos, col_cos = rot[:, 0], rot[:, 1]
    orientation = [*row_cos, *col_cos]
    stored = _stored(n=5, rows=4, cols=3)
    pixel_spacing = (0.9, 0.6)  # between rows, between columns
    paths = dicom.write_series(
        tmp_path, stored, orientation=orientation, pixel_spacing=pixel_spacing,
        origin=(12.5, -40.0, 7.25), slice_spacing=3.5,
    )
    img = read_dicom_series(tmp_path)
    assert img.shape == (3, 4, 5)  # columns, rows, slices
    assert img.spacing == pytest.approx((0.6, 0.9, 3.5), abs=1e-6)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for r, c in [(0, 0), (3, 2), (1, 2)]:
            expected = ipp + c * dc * iop[:3] + r * dr * iop[3:]
            np.testing.assert_allclose(_physical(img, (c, r, k)), expected, atol=1e-4)
            hu = float(ds.pixel_array[r, c]) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert img.array[c, r, k] == hu
    np.testing.assert_allclose(img.direction.T @ img.direction, np.eye(3), atol=1e-9)
    assert np.linalg.det(img.direction) == pytest.approx(1.0)


def test_unsorted_files_are_ordered_by_position_not_by_name(tmp_path):
    stored = _stored(n=6)
    # Slices numbered against the normal and written under shuffled file names.
    positions = dicom.slice_positions(6, origin=(0, 0, 100), slice_spacing=-2.0)
    dicom.write_series(
        tmp_path, stored, positions=positions, slice_spacing=2.0, file_index=[4, 0, 5, 2, 1, 3]
    )
    img = read_dicom_series(tmp_path)
    # Increasing position along the normal (0, 0, 1): the last written slice comes first.
    expected = (stored[::-1].astype(float) - 1024).transpose(2, 1, 0)
    np.testing.assert_array_equal(img.array, expected)
    assert img.origin == pytest.approx((0, 0, 90.0))
    assert img.spacing[2] == pytest.approx(2.0)
    assert img.meta["files"] == [f"IM_{i:04d}.dcm" for i in [3, 1, 2, 5, 0, 4]]


def test_slice_spacing_comes_from_positions_and_a_disagreeing_thickness_is_logged(
    tmp_path, caplog
):
    dicom.write_series(tmp_path, _stored(n=3), slice_spacing=20.0, tags={"SliceThickness": "5"})
    with caplog.at_level(logging.WARNING, logger="imharmony.io.dicom"):
        img = read_dicom_series(tmp_path)
    assert img.spacing[2] == pytest.approx(20.0)
    assert "Slice Thickness (0018,0050)" in caplog.text
    assert "20" in caplog.text


def test_single_slice_takes_spacing_between_slices_then_thickness(tmp_path):
    dicom.write_series(tmp_path / "a", _stored(n=1), tags={"SliceThickness": "1.5"})
    assert read_dicom_series(tmp_path / "a").spacing[2] == pytest.approx(1.5)
    dicom.write_series(
        tmp_path / "b", _stored(n=1), tags={"SliceThickness": "1.5", "SpacingBetweenSlices": "3"}
    )
    assert read_dicom_series(tmp_path / "b").spacing[2] == pytest.approx(3.0)


def test_a_single_file_and_subfolders_are_read(tmp_path):
    stored = _stored(n=3)
    paths = dicom.write_series(tmp_path / "deep" / "er", stored)
    one = read_dicom_series(paths[1])
    np.testing.assert_array_equal(one.array[:, :, 0], stored[1].T.astype(float) - 1024)
    assert read_dicom_series(tmp_path).shape == (6, 5, 3)
    assert read_image(tmp_path).shape == (6, 5, 3)
    assert read_image(paths[0]).shape == (6, 5, 1)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    angles=st.tuples(*[st.floats(-math.pi, math.pi) for _ in range(3)]),
    spacing=st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0), st.floats(0.5, 6.0)),
    perm=st.permutations(list(range(4))),
)
def test_geometry_is_recovered_for_any_orientation_and_file_order(tmp_path, angles, spacing, perm):
    rot = _rotation(*angles)
    folder = tmp_path / f"s{abs(hash((angles, spacing, tuple(perm))))}"
    stored = _stored(n=4, rows=2, cols=3)
    origin = (-50.0, 20.0, 3.0)
    dicom.write_series(
        folder, stored, orientation=[*rot[:, 0], *rot[:, 1]],
        pixel_spacing=(spacing[1], spacing[0]), slice_spacing=spacing[2], origin=origin,
        file_index=perm,
    )
    img = read_dicom_series(folder)
    np.testing.assert_allclose(img.direction, rot, atol=1e-6)
    np.testing.assert_allclose(img.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(img.origin, origin, atol=1e-5)
    np.testing.assert_array_equal(img.array, (stored.astype(float) - 1024).transpose(2, 1, 0))


# --------------------------------------------------------------------------------------------
# Series that are not one regular volume
# --------------------------------------------------------------------------------------------


def test_gap_names_the_files_on_both_sides(tmp_path):
    paths = dicom.write_series(tmp_path, _stored(n=6))
    paths[3].unlink()
    with pytest.raises(DicomSeriesError, match=r"IM_0002.dcm and IM_0004.dcm") as exc:
        read_dicom_series(tmp_path)
    assert "5.0000 mm apart" in str(exc.value)


@pytest.mark.parametrize("missing", [1, 7, 10])
def test_a_missing_slice_anywhere_is_a_gap(tmp_path, missing):
    paths = dicom.write_series(tmp_path, _stored(n=12, rows=2, cols=2), slice_spacing=0.625)
    paths[missing].unlink()
    with pytest.raises(DicomSeriesError, match=rf"IM_{missing - 1:04d}.dcm and "
                       rf"IM_{missing + 1:04d}.dcm are 1.2500 mm apart"):
        read_dicom_series(tmp_path)


def test_rounded_positions_are_tolerated_but_a_drifting_spacing_is_not(tmp_path):
    stored = _stored(n=8, rows=2, cols=2)
    jitter = np.array([0, 0.04, -0.03, 0.05, 0, -0.05, 0.02, 0])  # mm, spacing 1 mm
    positions = dicom.slice_positions(8, slice_spacing=1.0)
    positions[:, 2] += jitter
    dicom.write_series(tmp_path / "ok", stored, positions=positions, slice_spacing=1.0)
    assert read_dicom_series(tmp_path / "ok").spacing[2] == pytest.approx(1.0)
    drift = dicom.slice_positions(8, slice_spacing=1.0)
    drift[:, 2] = 30 + np.cumsum([0, 1, 1, 1, 1.3, 1.3, 1.3, 1.3])
    dicom.write_series(tmp_path / "bad", stored, positions=drift, slice_spacing=1.0)
    with pytest.raises(DicomSeriesError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path / "bad", variable_spacing="refuse")


def test_duplicate_positions_name_both_files(tmp_path):
    positions = dicom.slice_positions(4)
    positions[2] = positions[1]
    dicom.write_series(tmp_path, _stored(n=4), positions=positions)
    with pytest.raises(DicomSeriesError, match=r"unequal numbers of frames .* IM_0001.dcm, "
                       r"IM_0002.dcm lie at 32.5000 mm"):
        read_dicom_series(tmp_path)


def test_mixed_orientation_is_refused(tmp_path):
    dicom.write_series(
        tmp_path, _stored(n=4),
        per_instance=[{}, {}, {"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, {}],
    )
    with pytest.raises(DicomSeriesError, match=r"mixed Image Orientation \(Patient\) "
                       r"\(0020,0037\).*IM_0002.dcm"):
        read_dicom_series(tmp_path)


def test_mixed_rows_and_columns_are_refused(tmp_path):
    dicom.write_series(tmp_path, _stored(n=3, rows=5, cols=6))
    dicom.write_series(
        tmp_path, _stored(n=1, rows=6, cols=6), filenames="X_{index}.dcm",
        series_uid=pydicom.dcmread(tmp_path / "IM_0000.dcm").SeriesInstanceUID,
        positions=dicom.slice_positions(4)[3:], file_index=[3],
    )
    with pytest.raises(DicomSeriesError, match=r"mixed image sizes.*X_3.dcm is 6 x 6"):
        read_dicom_series(tmp_path)


def test_mixed_pixel_spacing_is_refused(tmp_path):
    dicom.write_series(
        tmp_path, _stored(n=3), per_instance=[{}, {"PixelSpacing": [0.5, 0.5]}, {}]
    )
    with pytest.raises(DicomSeriesError, match=r"Pixel Spacing \(0028,0030\).*IM_0001.dcm"):
        read_dicom_series(tmp_path)


def test_gantry_tilt_is_de_sheared_onto_a_grown_rectilinear_grid(tmp_path):
    stored = _stored(n=4, rows=5, cols=6)
    positions = dicom.slice_positions(4)  # 2.5 mm apart along z
    positions[:, 1] -= np.arange(4) * 0.8  # one row (0.8 mm) per slice towards -y: a tilt
    dicom.write_series(tmp_path, stored, positions=positions)
    img = read_dicom_series(tmp_path)
    assert img.shape == (6, 5 + 3, 4)  # three rows more to hold the shifted slices
    assert img.spacing == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_allclose(img.origin, positions[0] - [0, 3 * 0.8, 0])
    hu = stored.astype(float) - 1024
    for k in range(4):  # every stored pixel sits at its own world position, nothing else moved
        j0 = 3 - k
        np.testing.assert_allclose(img.array[:, j0:j0 + 5, k], hu[k].T, atol=1e-9)
        rest = np.delete(img.array[:, :, k], np.s_[j0:j0 + 5], axis=1)
        np.testing.assert_allclose(rest, hu.min(), atol=1e-9)  # grown border: lowest value


def test_a_shear_that_is_not_a_tilt_is_refused(tmp_path):
    positions = dicom.slice_positions(4)
    positions[:, 1] += [0.0, 1.0, 0.0, 1.0]  # in-plane drift not proportional to position
    dicom.write_series(tmp_path, _stored(n=4), positions=positions)
    with pytest.raises(DicomSeriesError, match=r"sheared series: .* does not grow linearly"):
        read_dicom_series(tmp_path)


def test_several_series_are_listed_and_one_can_be_chosen(tmp_path):
    a = _stored(n=3)
    b = _stored(n=2)
    dicom.write_series(tmp_path, a, series_uid="1.2.3.4", filenames="A_{index}.dcm",
                     tags={"SeriesDescription": "soft"})
    dicom.write_series(tmp_path, b, series_uid="1.2.3.5", filenames="B_{index}.dcm",
                     modality="MR")
    with pytest.raises(DicomSeriesError) as exc:
        read_dicom_series(tmp_path)
    msg = str(exc.value)
    assert "2 image series" in msg
    assert "1.2.3.4 (CT, 3 file(s), 'soft'" in msg
    assert "1.2.3.5 (MR, 2 file(s)" in msg
    img = read_dicom_series(tmp_path, series_uid="1.2.3.5")
    np.testing.assert_array_equal(img.array, b.astype(float).transpose(2, 1, 0))
    assert img.meta["units"] == "raw"
    with pytest.raises(DicomSeriesError, match=r"no image series .* 9.9.9"):
        read_dicom_series(tmp_path, series_uid="9.9.9")
    listed = {s["SeriesInstanceUID"]: s for s in list_dicom_series(tmp_path)}
    assert listed["1.2.3.4"]["n_files"] == 3
    assert listed["1.2.3.5"]["Modality"] == "MR"


def test_missing_position_names_file_and_tag(tmp_path):
    dicom.write_series(tmp_path, _stored(n=3),
                       per_instance=[{}, {"ImagePositionPatient": None}, {}])
    with pytest.raises(DicomError, match=r"IM_0001.dcm: Image Position \(Patient\) "
                       r"\(0020,0032\) missing"):
        read_dicom_series(tmp_path)


# --------------------------------------------------------------------------------------------
# Hostile and damaged files
# --------------------------------------------------------------------------------------------


def test_a_huge_announced_size_fails_fast_without_allocating(tmp_path):
    dicom.write_series(
        tmp_path, _stored(n=1, rows=2, cols=2),
        tags={"Rows": 60000, "Columns": 60000, "NumberOfFrames": 1000},
    )
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DicomSizeError, match=r"IM_0000.dcm: the header announces 60000 Rows "
                           r"x 60000 Columns x 1000 frames"):
            read_dicom_series(tmp_path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5.0
    assert peak < 20 * 2**20  # bytes: nothing close to the 7.2 TB announced


def test_a_huge_announced_size_in_a_compressed_file_fails_before_decoding(tmp_path, monkeypatch):
    dicom.write_series(tmp_path, _stored(n=1, rows=4, cols=4), transfer_syntax=RLELossless)
    path = tmp_path / "IM_0000.dcm"
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 1000
    ds.save_as(path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixel data were decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    with pytest.raises(DicomSizeError, match=r"IM_0000.dcm"):
        read_dicom_series(tmp_path)


def test_a_hostile_element_length_in_the_header_allocates_nothing(tmp_path):
    paths = dicom.write_series(
        tmp_path, _stored(n=2, rows=2, cols=2), tags={(0x0009, 0x1010): ("OB", b"\0" * 16)}
    )
    data = bytearray(paths[1].read_bytes())
    at = data.find(struct.pack("<HH", 0x0009, 0x1010) + b"OB")
    data[at + 8 : at + 12] = struct.pack("<L", 0xFFFFFFF0)  # announces a 4 GiB value
    paths[1].write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(DicomError, match=r"IM_0001.dcm: the file is truncated \(element "
                           r"\(0009,1010\) announces 4294967280 bytes past the end of the file\)"):
            read_dicom_series(tmp_path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_the_series_total_is_checked_against_max_pixels(tmp_path):
    dicom.write_series(tmp_path, _stored(n=4, rows=5, cols=6))  # 120 voxels
    with pytest.raises(DicomSizeError, match="120 voxels in 4 files, above max_pixels=100"):
        read_dicom_series(tmp_path, max_pixels=100)
    assert read_dicom_series(tmp_path, max_pixels=120).array.size == 120


def test_file_truncated_in_the_pixel_data_is_named(tmp_path):
    paths = dicom.write_series(tmp_path, _stored(n=3))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-20])
    with pytest.raises(DicomError, match=r"IM_0001.dcm: file truncated: it ends after 40 of the "
                       r"60 bytes of Pixel Data"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("keep", [200, 700])
def test_file_truncated_in_the_header_is_named(tmp_path, keep):
    paths = dicom.write_series(tmp_path, _stored(n=3))
    paths[2].write_bytes(paths[2].read_bytes()[:keep])
    with pytest.raises(DicomError, match=r"IM_0002.dcm"):
        read_dicom_series(tmp_path)


def test_random_bytes_are_not_dicom(tmp_path, caplog):
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(1).bytes(4096))
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(DicomError, match=r"no DICOM image files found .*noise.dcm: not a DICOM"),
    ):
        read_dicom_series(tmp_path)
    assert "noise.dcm: skipped, not a DICOM file" in caplog.text


def test_random_bytes_behind_a_dicom_prefix_are_a_damaged_file(tmp_path):
    data = b"\0" * 128 + b"DICM" + np.random.default_rng(2).bytes(2048)
    (tmp_path / "junk.dcm").write_bytes(data)
    with pytest.raises(DicomError, match=r"junk.dcm: the file is truncated"):
        read_dicom_series(tmp_path)


def test_a_non_dicom_file_in_the_folder_is_skipped_with_a_warning(tmp_path, caplog):
    stored = _stored(n=3)
    dicom.write_series(tmp_path, stored)
    (tmp_path / "README.txt").write_text("scanned on Monday\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1\2")
    with caplog.at_level(logging.WARNING, logger="imharmony.io.dicom"):
        img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, (stored.astype(float) - 1024).transpose(2, 1, 0))
    assert "README.txt: skipped, not a DICOM file" in caplog.text
    assert ".DS_Store" not in caplog.text  # hidden files are ignored silently


def test_a_dicom_object_without_pixels_is_skipped(tmp_path, caplog):
    stored = _stored(n=2)
    dicom.write_series(tmp_path, stored)
    no_pixels = ("PixelData", "Rows", "Columns", "ImagePositionPatient", "BitsAllocated")
    dicom.write_instance(tmp_path / "report.dcm", stored[:1], series_uid="1.2.3.99",
                         sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11",
                         tags=dict.fromkeys(no_pixels))
    with caplog.at_level(logging.INFO, logger="imharmony.io.dicom"):
        img = read_dicom_series(tmp_path)
    assert img.shape == (6, 5, 2)
    assert "report.dcm: skipped, a DICOM object without pixel data" in caplog.text


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DicomError, match="no such file or folder"):
        read_dicom_series(tmp_path / "nope")


def test_bad_arguments_are_harmonization_errors(tmp_path):
    dicom.write_series(tmp_path, _stored(n=2))
    with pytest.raises(HarmonizationError, match="units='kelvin' is not known"):
        read_dicom_series(tmp_path, "kelvin")
    with pytest.raises(HarmonizationError, match="dtype"):
        read_dicom_series(tmp_path, dtype="int8")
    with pytest.raises(HarmonizationError, match="only apply to SUV"):
        read_dicom_series(tmp_path, "hu", weight=70)
    with pytest.raises(HarmonizationError, match="needs a PET series"):
        read_dicom_series(tmp_path, "suvbw")


def test_headers_are_read_before_pixels_and_files_are_closed(tmp_path):
    # ResourceWarning is an error in this suite: an unclosed file would fail the test.
    dicom.write_series(tmp_path, _stored(n=3))
    read_dicom_series(tmp_path, workers=1)
    read_dicom_series(tmp_path, workers=3)


# --------------------------------------------------------------------------------------------
# Pixel encodings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, DeflatedExplicitVRLittleEndian],
)
def test_transfer_syntaxes_give_the_same_values(tmp_path, ts):
    stored = _stored(n=3, low=-2048, high=2048)
    dicom.write_series(tmp_path, stored, transfer_syntax=ts, bits_stored=12)
    img = read_dicom_series(tmp_path, "raw")
    np.testing.assert_array_equal(img.array, stored.astype(float).transpose(2, 1, 0))


@pytest.mark.parametrize("signed", [False, True])
def test_unused_high_bits_are_ignored_and_the_sign_extended(tmp_path, signed):
    values = (
        RNG.integers(-2048, 2048, size=(2, 3, 4)) if signed else RNG.integers(0, 4096, (2, 3, 4))
    )
    garbage = RNG.integers(0, 16, size=values.shape) << 12  # e.g. overlay bits
    cells = ((values & 0x0FFF) | garbage).astype(np.uint16)
    stored = cells.view(np.int16) if signed else cells
    dicom.write_series(tmp_path, stored, bits_stored=12, modality="MR")
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, values.astype(float).transpose(2, 1, 0))


@settings(max_examples=200, deadline=None)
@given(
    bits_stored=st.integers(2, 16),
    signed=st.booleans(),
    data=st.data(),
)
def test_stored_values_recovers_any_value_whatever_the_high_bits(bits_stored, signed, data):
    if signed:
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**bits_stored - 1
    values = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=20)))
    garbage = np.array(
        data.draw(st.lists(st.integers(0, 2 ** (16 - bits_stored) - 1), min_size=len(values),
                           max_size=len(values)))
    )
    cells = ((values & (2**bits_stored - 1)) | (garbage << bits_stored)).astype(np.uint16)
    got = stored_values(cells, bits_stored, int(signed))
    np.testing.assert_array_equal(got, values)
    assert got.dtype == (np.int16 if signed else np.uint16)


@settings(max_examples=300, deadline=None)
@given(
    bits_stored=st.integers(1, 16),
    signed=st.booleans(),
    cells=st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=30),
)
def test_the_range_check_skips_stored_values_only_when_it_changes_nothing(bits_stored, signed,
                                                                         cells):
    # The reader skips the bit masking when a slice's range shows the high bits are clean; for
    # any 16-bit cells, the check must say "clean" exactly when stored_values is the identity.
    raw = np.array(cells, dtype=np.uint16).view(np.int16 if signed else np.uint16)
    clean = _holds_stored_values(int(raw.min()), int(raw.max()), bits_stored, int(signed),
                                 raw.itemsize)
    unchanged = bool(np.array_equal(stored_values(raw, bits_stored, int(signed)), raw))
    assert clean == unchanged


def test_32_bit_and_8_bit_pixels(tmp_path):
    s32 = RNG.integers(-100_000, 100_000, size=(2, 3, 4)).astype(np.int32)
    dicom.write_series(tmp_path / "a", s32, modality="MR")
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "a").array, s32.T.astype(float))
    s8 = RNG.integers(0, 256, size=(2, 3, 4)).astype(np.uint8)
    dicom.write_series(tmp_path / "b", s8, modality="MR")
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "b").array, s8.T.astype(float))


# --------------------------------------------------------------------------------------------
# Enhanced multi-frame
# --------------------------------------------------------------------------------------------


def test_enhanced_ct_with_shuffled_frames_and_per_frame_rescale(tmp_path):
    stored = _stored(n=5, rows=4, cols=3)
    rescale = [(1.0 + 0.5 * k, -1024.0 + 3 * k) for k in range(5)]
    rot = _rotation(0.2, 0.4, -0.1)
    dicom.write_enhanced(
        tmp_path / "enh.dcm", stored, frame_rescale=rescale, frame_order=[3, 0, 4, 1, 2],
        orientation=[*rot[:, 0], *rot[:, 1]], slice_spacing=1.25, origin=(1.0, 2.0, 3.0),
    )
    img = read_dicom_series(tmp_path)
    expected = np.stack([stored[k] * s + b for k, (s, b) in enumerate(rescale)])
    np.testing.assert_array_equal(img.array, expected.transpose(2, 1, 0))
    np.testing.assert_allclose(img.direction, rot, atol=1e-6)
    assert img.spacing == pytest.approx((0.7, 0.8, 1.25))
    assert img.origin == pytest.approx((1.0, 2.0, 3.0))
    assert img.meta["files"][0] == "enh.dcm frame 2"  # slice 0 was stored as frame 2


def test_enhanced_per_frame_rescale_overrides_shared(tmp_path):
    stored = _stored(n=3)
    dicom.write_enhanced(
        tmp_path / "e.dcm", stored, rescale=(1.0, -1024.0),
        frame_rescale=[(2.0, 0.0), (2.0, 0.0), (2.0, 0.0)],
    )
    np.testing.assert_array_equal(
        read_dicom_series(tmp_path).array, (2.0 * stored).transpose(2, 1, 0)
    )


def test_enhanced_dtype_auto_uses_each_frames_own_range(tmp_path):
    # The range that picks the integer type is taken per frame while reading. Shuffled frames,
    # per-frame intercepts: the result needs int32 exactly when frame 1 (+10000) exceeds 32767.
    rescale = [(1.0, 0.0), (1.0, 10000.0), (1.0, -5.0), (1.0, 0.0)]
    stored = _stored(n=4, rows=3, cols=2, low=0, high=20000, dtype=np.uint16)
    stored[2, 0, 1] = 0  # -5 after rescale: a signed type
    for folder, peak, want in (("fits", 22767, np.int16), ("wide", 22768, np.int32)):
        stored[1, 0, 0] = peak
        dicom.write_enhanced(tmp_path / folder / "e.dcm", stored, frame_rescale=rescale,
                           frame_order=[1, 3, 0, 2])
        img = read_dicom_series(tmp_path / folder, dtype="auto")
        expected = np.stack([stored[k].astype(np.int64) + int(b) for k, (_, b) in
                             enumerate(rescale)])
        assert img.array.dtype == want, folder
        np.testing.assert_array_equal(img.array, expected.transpose(2, 1, 0))


def test_multiframe_without_functional_groups_is_refused(tmp_path):
    dicom.write_series(
        tmp_path, _stored(n=1, rows=4, cols=2), tags={"Rows": 2, "NumberOfFrames": 2},
    )
    with pytest.raises(DicomError, match=r"IM_0000.dcm: 2 frames but no Per-[Ff]rame"):
        read_dicom_series(tmp_path)


# --------------------------------------------------------------------------------------------
# Units and metadata
# --------------------------------------------------------------------------------------------


def test_raw_units_are_the_stored_values(tmp_path):
    stored = _stored(n=3, low=-500, high=500)
    dicom.write_series(tmp_path, stored, tags={"RescaleSlope": 2.5, "RescaleIntercept": 7})
    img = read_dicom_series(tmp_path, "raw")
    assert img.array.dtype == np.float64
    np.testing.assert_array_equal(img.array, stored.astype(float).transpose(2, 1, 0))
    assert img.meta["units"] == "raw"


def test_dtype_auto_gives_exact_integers_and_float32_is_honoured(tmp_path):
    stored = _stored(n=3, low=0, high=4096, dtype=np.uint16)
    dicom.write_series(tmp_path, stored)
    auto = read_dicom_series(tmp_path, dtype="auto")
    assert auto.array.dtype == np.int16
    np.testing.assert_array_equal(auto.array, stored.astype(np.int64).T - 1024)
    f32 = read_dicom_series(tmp_path, dtype="float32")
    assert f32.array.dtype == np.float32
    np.testing.assert_array_equal(f32.array, stored.astype(np.float32).T - 1024)


def test_dtype_auto_with_per_slice_intercepts_and_wide_values(tmp_path):
    stored = _stored(n=3, low=0, high=65536, dtype=np.uint16)
    stored[2, 0, 0], stored[0, 0, 0] = 0, 65535  # values from -10 to 65535: int32
    intercepts = [{"RescaleIntercept": -5 * k} for k in range(3)]
    dicom.write_series(tmp_path, stored, per_instance=intercepts)
    auto = read_dicom_series(tmp_path, dtype="auto")
    expected = stored.astype(np.int64) - 5 * np.arange(3)[:, None, None]
    assert auto.array.dtype == np.int32
    np.testing.assert_array_equal(auto.array, expected.T)
    dicom.write_series(tmp_path / "s", stored, tags={"RescaleSlope": 0.5, "RescaleIntercept": 0})
    half = read_dicom_series(tmp_path / "s", dtype="auto")
    assert half.array.dtype == np.float64
    np.testing.assert_array_equal(half.array, 0.5 * stored.astype(float).T)


def test_meta_holds_keywords_units_and_source(tmp_path):
    dicom.write_series(tmp_path, _stored(n=2), tags={"SeriesDescription": "abdomen"})
    img = read_dicom_series(tmp_path)
    m = img.meta
    assert m["Modality"] == "CT"
    assert m["Manufacturer"] == "IMHARMONY TEST"
    assert m["SeriesDescription"] == "abdomen"
    assert m["KVP"] == 120.0
    first = pydicom.dcmread(tmp_path / "IM_0000.dcm")
    assert m["SeriesInstanceUID"] == str(first.SeriesInstanceUID)
    assert m["units"] == "hu"
    assert m["source"] == str(tmp_path)
    assert m["slice_spacing"] == pytest.approx(2.5)
    assert "PatientName" not in m and "PatientID" not in m


def test_hu_asked_of_an_mr_series_is_refused(tmp_path):
    dicom.write_series(tmp_path, _stored(n=2), modality="MR")
    with pytest.raises(HounsfieldError, match="not a CT image class"):
        read_dicom_series(tmp_path, "hu")


# --------------------------------------------------------------------------------------------
# PET (through imharmony.physics.pet.suv_factors)
# --------------------------------------------------------------------------------------------


def test_pet_series_in_suv_with_per_slice_slopes(tmp_path):
    stored = _stored(n=4, low=0, high=30000)
    slopes = [0.5, 1.25, 2.0, 0.75]
    dicom.write_series(
        tmp_path, stored, modality="PT", file_index=[2, 0, 3, 1],
        per_instance=[{"RescaleSlope": s} for s in slopes],
    )
    # Hand computation: 75 kg; 370 MBq of F-18 injected 3600 s before the series start.
    dose_at_start = 370e6 * math.exp(-math.log(2) * 3600 / 6586.2)
    factor = 75_000.0 / dose_at_start
    expected = np.stack([stored[k] * slopes[k] * factor for k in range(4)]).transpose(2, 1, 0)
    for units in (None, "suv", "suvbw"):
        img = read_dicom_series(tmp_path, units)
        np.testing.assert_allclose(img.array, expected, rtol=1e-12)
        assert img.meta["units"] == (units or "suv")
    lbm = read_dicom_series(tmp_path, "suvlbm")
    # James, male: 1.10 W - 128 (W/H)^2 with W = 75 kg, H = 185 cm.
    lbm_kg = 1.10 * 75 - 128 * (75 / 185) ** 2
    np.testing.assert_allclose(lbm.array, expected * lbm_kg / 75, rtol=1e-9)
    with pytest.raises(HounsfieldError):
        read_dicom_series(tmp_path, "hu")


def test_pet_options_reach_suv_factors(tmp_path):
    stored = _stored(n=2, low=0, high=1000)
    dicom.write_series(tmp_path, stored, modality="PT")
    base = read_dicom_series(tmp_path, "suvbw")
    heavier = read_dicom_series(tmp_path, "suvbw", weight=150.0)
    np.testing.assert_allclose(heavier.array, 2 * base.array, rtol=1e-12)


def test_ibsi_suv_reference_objects(shared_data):
    """IBSI DROs: SUV min / median / max over non-zero voxels are 0.20 / 1.00 / 4.00."""
    root = shared_data / "ibsi_suv_dro"
    if not root.is_dir():
        pytest.skip(f"IBSI SUV DROs not found under {root}")
    for name in ("DRO_0_0", "DRO_3_0"):
        img = read_dicom_series(root / name / "PT")
        assert img.meta["units"] == "suv"
        values = img.array[img.array != 0]
        assert values.min() == pytest.approx(0.20, abs=5e-3), name
        assert np.median(values) == pytest.approx(1.00, abs=5e-3), name
        assert values.max() == pytest.approx(4.00, abs=5e-3), name


def test_workers_must_be_positive(tmp_path):
    dicom.write_series(tmp_path, _stored(n=2))
    with pytest.raises(HarmonizationError, match="workers"):
        read_dicom_series(tmp_path, workers=0)


def test_reader_does_not_modify_inputs(tmp_path):
    paths = dicom.write_series(tmp_path, _stored(n=3))
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths}
    read_dicom_series(tmp_path)
    assert {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in paths} == before
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)
