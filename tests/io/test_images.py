"""Image files: geometry and values round-trip, checked against nibabel and SimpleITK directly.

The references are independent of the code under test: nibabel's affine (RAS) for NIfTI, and
SimpleITK's own ``TransformIndexToPhysicalPoint`` / ``GetPixel`` on the written file for the axis
order.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from _support import dicom
from imharmony import Image
from imharmony.errors import DataError
from imharmony.io import read_image, write_image
from imharmony.io.images import ImageFormatError

RNG = np.random.default_rng(3)
LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def _rotation(a: float, b: float) -> np.ndarray:
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    return rz @ rx


def _oblique_image(dtype=np.float64, shape=(5, 4, 3)) -> Image:
    arr = RNG.normal(0, 100, size=shape).astype(dtype) if np.dtype(dtype).kind == "f" else \
        RNG.integers(-1000, 1000, size=shape).astype(dtype)
    return Image(
        arr, spacing=(0.7, 1.3, 2.5), origin=(-12.0, 30.5, 101.25),
        direction=_rotation(0.4, -0.3), meta={"units": "hu"},
    )


def test_nifti_round_trip_and_nibabel_reads_the_same_affine(tmp_path):
    img = _oblique_image()
    path = write_image(img, tmp_path / "x.nii.gz")
    assert path == tmp_path / "x.nii.gz"

    nii = nib.load(path)
    # The affine nibabel reads, built by hand: RAS = flip(origin + D diag(s) idx).
    expected = np.eye(4)
    expected[:3, :3] = LPS_RAS @ img.direction @ np.diag(img.spacing)
    expected[:3, 3] = LPS_RAS @ np.asarray(img.origin)
    np.testing.assert_allclose(nii.affine, expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), img.array)  # nibabel axes: i, j, k
    assert nii.get_data_dtype() == np.float64

    back = read_image(path)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.spacing, img.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)
    assert back.meta["format"] == "nifti"
    assert back.meta["source"] == str(path)


def test_a_nifti_written_by_nibabel_is_read_with_its_geometry(tmp_path):
    arr = RNG.integers(0, 500, size=(6, 5, 4)).astype(np.int16)
    affine = np.array(
        [[-0.9, 0.0, 0.0, 90.0], [0.0, 0.0, 3.0, -120.0], [0.0, 1.1, 0.0, 40.0], [0, 0, 0, 1]]
    )
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "n.nii")
    img = read_image(tmp_path / "n.nii")
    np.testing.assert_array_equal(img.array, arr)
    assert img.spacing == pytest.approx((0.9, 1.1, 3.0))
    linear = LPS_RAS @ affine[:3, :3]
    np.testing.assert_allclose(img.direction @ np.diag(img.spacing), linear, atol=1e-6)
    np.testing.assert_allclose(img.origin, LPS_RAS @ affine[:3, 3], atol=1e-6)


def test_a_sheared_nifti_falls_back_to_nibabel(tmp_path):
    affine = np.eye(4)
    affine[0, 1] = 0.5  # shear: ITK refuses non-orthonormal direction cosines
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "s.nii.gz")
    img = read_image(tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(img.array, arr)
    np.testing.assert_allclose(
        img.direction @ np.diag(img.spacing), LPS_RAS @ affine[:3, :3], atol=1e-6
    )


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint8, np.int64])
def test_round_trip_every_format(tmp_path, suffix, dtype):
    img = _oblique_image(dtype)
    path = write_image(img, tmp_path / f"img{suffix}")
    back = read_image(path)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.spacing, img.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, img.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, img.direction, atol=1e-6)
    # Independent check of the axis order with SimpleITK's own index -> point mapping.
    itk = sitk.ReadImage(str(path))
    for idx in [(0, 0, 0), (4, 1, 2), (2, 3, 1)]:
        expected = np.asarray(img.origin) + img.direction @ (np.asarray(img.spacing) * idx)
        np.testing.assert_allclose(itk.TransformIndexToPhysicalPoint(idx), expected, atol=1e-4)
        assert itk.GetPixel(*idx) == pytest.approx(float(img.array[idx]))
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".")]
    assert leftovers == []


def test_mhd_writes_header_and_data_file(tmp_path):
    write_image(_oblique_image(), tmp_path / "v.mhd")
    assert sorted(os.listdir(tmp_path)) == ["v.mhd", "v.raw"]
    assert "ElementDataFile = v.raw" in (tmp_path / "v.mhd").read_text()
    write_image(_oblique_image(), tmp_path / "c.mhd", compress=True)
    assert (tmp_path / "c.zraw").is_file()
    np.testing.assert_array_equal(read_image(tmp_path / "c.mhd").array.shape, (5, 4, 3))


def test_2d_and_vector_images_round_trip(tmp_path):
    flat = Image(RNG.normal(size=(7, 4)), spacing=(0.5, 2.0), origin=(1.0, 2.0))
    back = read_image(write_image(flat, tmp_path / "flat.nrrd"))
    np.testing.assert_array_equal(back.array, flat.array)
    assert back.spacing == pytest.approx((0.5, 2.0))

    vec = Image(RNG.normal(size=(4, 3, 2, 3)).astype(np.float32), spacing=(1.0, 2.0, 3.0))
    back = read_image(write_image(vec, tmp_path / "vec.mha"))
    assert back.array.shape == (4, 3, 2, 3)
    assert back.spacing == pytest.approx((1.0, 2.0, 3.0))
    np.testing.assert_array_equal(back.array, vec.array)


def test_bool_is_written_as_uint8_and_dtype_can_be_chosen(tmp_path):
    mask = Image(RNG.random((3, 4, 5)) > 0.5)
    back = read_image(write_image(mask, tmp_path / "m.nii.gz"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))
    img = _oblique_image()
    back = read_image(write_image(img, tmp_path / "f.nii", dtype=np.float32))
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, img.array.astype(np.float32))


def test_dicom_series_to_nifti_keeps_the_dicom_geometry(tmp_path):
    """DICOM -> Image -> NIfTI: nibabel's affine maps voxels to the DICOM pixel positions."""
    rot = _rotation(0.25, 0.6)
    stored = RNG.integers(0, 2000, size=(4, 3, 5)).astype(np.int16)
    paths = dicom.write_series(
        tmp_path / "dcm", stored, orientation=[*rot[:, 0], *rot[:, 1]],
        pixel_spacing=(0.8, 0.6), slice_spacing=2.0, origin=(10.0, -5.0, 40.0),
        file_index=[2, 0, 3, 1],
    )
    out = write_image(read_image(tmp_path / "dcm"), tmp_path / "ct.nii.gz")
    nii = nib.load(out)
    data = np.asarray(nii.dataobj)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for r, c in [(0, 0), (2, 4), (1, 3)]:
            lps = ipp + c * dc * iop[:3] + r * dr * iop[3:]
            ras = nii.affine @ np.array([c, r, k, 1.0])
            np.testing.assert_allclose(ras[:3], LPS_RAS @ lps, atol=1e-4)
            assert data[c, r, k] == float(ds.pixel_array[r, c]) - 1024.0


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd", "out.mha"])
def test_write_is_atomic_on_failure(tmp_path, monkeypatch, name):
    target = tmp_path / name
    target.write_bytes(b"previous")

    def sitk_boom(image, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    def nib_boom(image, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", sitk_boom)
    monkeypatch.setattr(nib, "save", nib_boom)
    with pytest.raises(ImageFormatError, match=r"disk full|No space left"):
        write_image(_oblique_image(), target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(ImageFormatError):
        write_image(_oblique_image(), tmp_path / "v.mhd")
    assert os.listdir(tmp_path) == [name]


def test_bad_paths_and_suffixes_are_clear_errors(tmp_path):
    with pytest.raises(ImageFormatError, match="no such file or folder"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageFormatError, match=r"notes.txt: unknown image format; supported"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ImageFormatError, match="cannot choose a format"):
        write_image(_oblique_image(), tmp_path / "out.png")
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ImageFormatError, match=r"broken.nii.gz: cannot be read as NIfTI") as exc:
        read_image(tmp_path / "broken.nii.gz")
    assert "\n" not in str(exc.value)  # the CLI prints errors as one line
    (tmp_path / "broken.mha").write_bytes(b"garbage")
    with pytest.raises(ImageFormatError, match=r"broken.mha: cannot be read as metaimage") as exc:
        read_image(tmp_path / "broken.mha")
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="apply to DICOM input only"):
        read_image(tmp_path / "notes.txt", units="hu")
    with pytest.raises(DataError, match="at most one trailing"):
        write_image(Image(np.zeros((2, 2, 2, 2, 2)), spacing=(1.0, 1.0, 1.0)), tmp_path / "a.nrrd")


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int8, np.uint16, np.int32, np.float32,
                                   np.float64, np.bool_])
@pytest.mark.parametrize("order", ["F", "C"])
def test_uncompressed_nifti_is_byte_identical_to_nibabel_save(tmp_path, dtype, order):
    # write_image puts nibabel's header and the voxel buffer down in one write; the file must be
    # the one nibabel.save writes for the same image.
    img = _oblique_image(dtype, shape=(7, 5, 4))
    img = Image(np.asarray(img.array, order=order), spacing=img.spacing, origin=img.origin,
                direction=img.direction)
    write_image(img, tmp_path / "ours.nii")
    arr = img.array.astype(np.uint8) if img.array.dtype == np.bool_ else img.array
    affine = np.eye(4)
    affine[:3, :3] = LPS_RAS @ np.asarray(img.direction) @ np.diag(img.spacing)
    affine[:3, 3] = LPS_RAS @ np.asarray(img.origin)
    ref = nib.Nifti1Image(arr, affine, dtype=arr.dtype)
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=1)
    ref.header.set_xyzt_units("mm")
    nib.save(ref, tmp_path / "nibabel.nii")
    assert (tmp_path / "ours.nii").read_bytes() == (tmp_path / "nibabel.nii").read_bytes()


# ---------------------------------------------------------------- hostile files


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_non_finite_voxels_survive_a_round_trip(tmp_path: Path, suffix: str) -> None:
    arr = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    arr[0, 0, 0], arr[1, 2, 3], arr[2, 3, 4] = np.nan, np.inf, -np.inf
    back = read_image(write_image(Image(arr, spacing=(1.0, 2.0, 3.0)), tmp_path / f"x{suffix}"))
    np.testing.assert_array_equal(back.array, arr)  # NaN == NaN for assert_array_equal
    assert np.isnan(back.array[0, 0, 0]) and back.array[1, 2, 3] == np.inf


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_vector_nifti_keeps_non_finite_values_and_is_refused_when_truncated(
    tmp_path: Path, suffix: str
) -> None:
    # a vector image (NIfTI's fifth dimension, as ITK writes displacement fields): SimpleITK's
    # reader turns its NaN and Inf into 0 as for a scalar image
    arr = RNG.normal(size=(6, 5, 4, 3)).astype(np.float32)  # x, y, z, component
    arr[3, 2, 1, 0], arr[0, 0, 0, 2], arr[5, 4, 3, 1] = np.nan, np.inf, -np.inf
    itk_in = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0, 3)), isVector=True)
    itk_in.SetSpacing((1.0, 2.0, 3.0))
    itk_in.SetOrigin((4.0, 5.0, 6.0))
    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(itk_in, str(path))
    assert nib.load(path).header["intent_code"] == 1007  # NIFTI_INTENT_VECTOR
    back = read_image(path)
    np.testing.assert_array_equal(back.array, arr)
    assert back.spacing == pytest.approx((1.0, 2.0, 3.0))
    assert back.origin == pytest.approx((4.0, 5.0, 6.0))
    finite = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0, 3)
    np.testing.assert_array_equal(itk, finite)  # what ITK alone would have given
    blob = path.read_bytes()
    short = tmp_path / f"short{suffix}"
    short.write_bytes(blob[: len(blob) - 16])
    with pytest.raises(ImageFormatError, match="short"):
        read_image(short)


def test_rgb_nifti_reads_its_components_as_itk_does(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(4, 5, 6, 3)).astype(np.uint8)  # ITK order: z, y, x, c
    path = tmp_path / "rgb.nii"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    back = read_image(path)
    np.testing.assert_array_equal(back.array, rgb.transpose(2, 1, 0, 3))
    assert back.array.dtype == np.uint8


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_files_are_refused(tmp_path: Path, suffix: str) -> None:
    arr = RNG.normal(size=(20, 20, 20)).astype(np.float32)
    path = write_image(Image(arr), tmp_path / f"x{suffix}")
    blob = path.read_bytes()
    for cut in (len(blob) - 16, len(blob) // 2):
        short = tmp_path / f"short{suffix}"
        short.write_bytes(blob[:cut])
        with pytest.raises(ImageFormatError, match="short"):
            read_image(short)


def test_header_voxel_count_is_guarded_before_allocating(tmp_path: Path) -> None:
    # a 352-byte NIfTI header declaring 30000^3 float64 voxels (216 TB), and one declaring 4 GB
    # with no data: both refused from the header alone
    for dims, message in [((30000, 30000, 30000), "more than this machine's memory"),
                          ((1024, 1024, 512), "truncated NIfTI file")]:
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(np.float64)
        hdr.set_data_shape(dims)
        hdr.set_qform(np.eye(4), code=1)
        path = tmp_path / "huge.nii"
        with open(path, "wb") as fh:
            hdr.write_to(fh)
            fh.write(b"\0" * 4)
        with pytest.raises(DataError, match=message):
            read_image(path)
