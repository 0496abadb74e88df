"""Reading and writing image files: NIfTI, NRRD, MetaImage (MHA/MHD) and DICOM series.

Files are read through SimpleITK (with nibabel as a fallback for NIfTI files ITK refuses, e.g.
sheared affines); the voxels of every NIfTI file, scalar or vector, are read by nibabel, since
SimpleITK's NIfTI reader turns NaN and infinity into 0 and reads a truncated file as complete.
3-D NIfTI is written by nibabel (straight from the array, about twice as fast), everything else
by SimpleITK. A folder, or a single DICOM file, goes to
:func:`imharmony.io.dicom.read_dicom_series`.

Axis convention (the same for every format)::

    Image.array[i, j, k]   i: first image axis ("x", fastest-varying on disk)
                           j: second axis ("y"), k: third axis ("z", slices)

``Image.spacing[i]`` is the voxel size (mm) along array axis ``i``; ``Image.origin`` is the
physical position of voxel ``(0, 0, 0)``; column ``i`` of ``Image.direction`` is the physical
direction of axis ``i``. Physical coordinates are LPS (DICOM's patient frame, ITK's convention):
``point = origin + direction @ (spacing * index)``. SimpleITK's ``GetArrayFromImage`` returns axes
in the reverse order (z, y, x); this module transposes so that array axes and spacing agree. A
multi-component (vector) image gets its components as a trailing array axis not covered by
``spacing``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._limits import check_allocation
from ..errors import DataError, ImageFormatError
from ..image import Image
from ._atomic import atomic_path, temporary_path
from .dicom import _brief, read_dicom_series

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFormatError",
    "image_kind",
    "nifti_grid",
    "read_image",
    "read_nifti_grid",
    "write_image",
]

logger = logging.getLogger(__name__)

#: File suffixes understood by :func:`read_image` and :func:`write_image`, with format names.
IMAGE_SUFFIXES: dict[str, str] = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}

# LPS <-> RAS: NIfTI affines are RAS, ITK (and Image) are LPS.
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def image_kind(path: str | os.PathLike[str]) -> str | None:
    """What :func:`read_image` would read ``path`` as: ``"image"`` (a file with a known image
    suffix), ``"DICOM file"``, ``"folder"`` (read as a DICOM series), or None (none of these).

    Examples
    --------
    >>> image_kind("scan.nii.gz"), image_kind("table.csv")
    ('image', None)
    """
    path = Path(path)
    if path.is_dir():
        return "folder"
    if _suffix(path) is not None:
        return "image"
    return "DICOM file" if path.is_file() and _is_dicom_file(path) else None


def read_image(path: str | os.PathLike[str], **dicom_options: Any) -> Image:
    """Read an image file or a DICOM series folder.

    Parameters
    ----------
    path : path-like
        A ``.nii``, ``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` file; a folder holding a
        DICOM series; or one DICOM file.
    **dicom_options
        Passed to :func:`imharmony.io.dicom.read_dicom_series` (``units``, ``series_uid``, ...)
        when ``path`` is DICOM.

    Returns
    -------
    Image
        ``array[i, j, k]`` with ``spacing[i]`` the spacing of axis ``i`` (see the module notes).
        ``meta`` holds ``"source"`` and ``"format"`` (and the DICOM keywords for DICOM).

    Raises
    ------
    ImageFormatError
        If the file does not exist, its suffix is not known, or it cannot be decoded.
    imharmony.io.dicom.DicomError
        For DICOM problems (see :func:`~imharmony.io.dicom.read_dicom_series`).
    """
    path = Path(path)
    if image_kind(path) in ("folder", "DICOM file"):
        img = read_dicom_series(path, **dicom_options)
        img.meta.setdefault("format", "dicom")
        return img
    if dicom_options:
        raise DataError(
            f"{path}: options {sorted(dicom_options)} apply to DICOM input only; this is not a "
            "DICOM folder or file."
        )
    if not path.is_file():
        raise ImageFormatError(f"{path}: no such file or folder; check the path.")
    suffix = _suffix(path)
    if suffix is None:
        raise ImageFormatError(
            f"{path}: unknown image format; supported are {', '.join(IMAGE_SUFFIXES)} and DICOM "
            "series folders."
        )
    import SimpleITK as sitk

    fmt = IMAGE_SUFFIXES[suffix]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if fmt == "nifti":
            return _read_nifti_nibabel(path, exc)
        raise ImageFormatError(f"{path}: cannot be read as {fmt} ({_brief(exc)}).") from exc
    size = tuple(int(v) for v in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    itemsize = sitk.Image([1] * len(size), reader.GetPixelID()).GetSizeOfPixelComponent()
    _check_size(path, (*size, components), itemsize)
    meta = {"source": str(path), "format": fmt}
    if fmt == "nifti":
        # voxels through nibabel: SimpleITK's NIfTI reader turns NaN/Inf into 0 (scalar and
        # vector images alike) and reads a truncated file as complete (missing voxels 0);
        # nibabel keeps them and refuses that
        return _with_geometry(_nifti_voxels(path, size, components), reader, len(size), meta)
    try:
        itk = reader.Execute()
    except RuntimeError as exc:
        raise ImageFormatError(
            f"{path}: cannot be read as {fmt} ({_brief(exc)}); the file may be truncated."
        ) from exc
    return _from_sitk(itk, meta=meta)


def _check_size(path: Path, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a header whose voxel count cannot be real (or would not fit in memory)."""
    check_allocation(
        shape,
        itemsize,
        f"{path}: the header's image",
        "the header is damaged, or the image is too large to process on this machine.",
    )


def _check_complete(path: Path, nii: Any) -> None:
    """An uncompressed NIfTI file must hold every voxel its header declares (checked from the
    file size, before any allocation)."""
    if _suffix(path) != ".nii":
        return
    header = nii.header
    need = int(header.get_data_offset()) + math.prod(nii.shape) * header.get_data_dtype().itemsize
    have = path.stat().st_size
    if have < need:
        raise ImageFormatError(
            f"{path}: truncated NIfTI file ({have} bytes; its header declares {need}); the "
            "missing voxels would be read as 0. Copy or convert the image again."
        )


def _nifti_voxels(path: Path, size: tuple[int, ...], components: int = 1) -> np.ndarray:
    """The voxel array of a NIfTI file, read by nibabel (scaled as the header says).

    ``size`` is the header's spatial (and time) size as ITK reports it; a vector image (NIfTI's
    fifth dimension, or an RGB data type) of ``components`` values per voxel gets them as a
    trailing axis, as :func:`_from_sitk` lays them out."""
    import nibabel as nib

    try:
        nii = nib.load(str(path), mmap=False)
        _check_complete(path, nii)
        arr = np.asarray(nii.dataobj)
    except ImageFormatError:
        raise
    except Exception as exc:  # nibabel raises OSError, EOFError, zlib/gzip errors, ValueError
        raise ImageFormatError(
            f"{path}: cannot be read as NIfTI ({_brief(exc)}); the file is truncated or corrupted."
        ) from exc
    if arr.dtype.names:  # RGB(A) data types: one field per component
        arr = np.stack([arr[name] for name in arr.dtype.names], axis=-1)
    shape = size if components == 1 else (*size, components)
    middle = arr.shape[len(size) : arr.ndim - (components > 1)]
    if (
        arr.shape[: len(size)] != size
        or any(d != 1 for d in middle)
        or (components > 1 and arr.shape[-1] != components)
    ):
        raise ImageFormatError(
            f"{path}: NIfTI voxel array of shape {arr.shape} does not match its header's size "
            f"{shape}; the header is inconsistent."
        )
    return arr.reshape(shape)


def _from_sitk(itk: Any, meta: dict[str, Any]) -> Image:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(itk)
    dim = itk.GetDimension()
    spatial = tuple(range(dim))[::-1]
    if itk.GetNumberOfComponentsPerPixel() > 1:
        arr = arr.transpose((*spatial, dim))
    else:
        arr = arr.transpose(spatial)
    return _with_geometry(arr, itk, dim, meta)


def _with_geometry(arr: np.ndarray, source: Any, dim: int, meta: dict[str, Any]) -> Image:
    """An Image of ``arr`` with the spacing, origin and direction of an ITK image or reader."""
    return Image(
        arr,
        spacing=source.GetSpacing(),
        origin=source.GetOrigin(),
        direction=np.asarray(source.GetDirection(), dtype=float).reshape(dim, dim),
        meta=meta,
    )


def _read_nifti_nibabel(path: Path, itk_error: Exception) -> Image:
    """NIfTI through nibabel, for files ITK refuses (e.g. an affine with shear)."""
    import nibabel as nib

    try:
        nii = nib.load(str(path), mmap=False)
        _check_size(path, nii.shape, nii.get_data_dtype().itemsize)
        arr = np.asarray(nii.dataobj)
        affine = np.asarray(nii.affine, dtype=float)
    except DataError:
        raise
    except Exception as exc:
        raise ImageFormatError(
            f"{path}: cannot be read as NIfTI (SimpleITK: {_brief(itk_error)}; "
            f"nibabel: {_brief(exc)})."
        ) from exc
    if arr.ndim < 3:
        raise ImageFormatError(f"{path}: NIfTI with {arr.ndim} axes read by nibabel; expected 3+.")
    logger.info("%s: read with nibabel (SimpleITK refused it: %s)", path, _brief(itk_error))
    meta = {"source": str(path), "format": "nifti"}
    return Image(arr, **_nifti_geometry(affine, path), meta=meta)


def _nifti_geometry(affine: np.ndarray, path: Path) -> dict[str, Any]:
    """Image geometry (LPS spacing, origin, direction) of a NIfTI (RAS) affine."""
    linear = _LPS_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ImageFormatError(f"{path}: the NIfTI affine is singular; the header is damaged.")
    return {"spacing": spacing, "origin": _LPS_RAS @ affine[:3, 3], "direction": linear / spacing}


def read_nifti_grid(path: str | os.PathLike[str]) -> Image:
    """The voxel grid of a NIfTI file from its header alone (no voxel is read).

    Returns an :class:`~imharmony.image.Image` whose array is a read-only zero view of the file's
    shape (no memory), for :meth:`Image.same_grid <imharmony.image.Image.same_grid>` checks of
    many files before any of them is read.
    """
    import nibabel as nib

    path = Path(path)
    try:
        nii = nib.load(str(path))
        affine = np.asarray(nii.affine, dtype=float)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise ImageFormatError(f"{path}: cannot be read as NIfTI ({_brief(exc)}).") from exc
    return nifti_grid(tuple(nii.shape), affine, path)


def nifti_grid(shape: tuple[int, ...], affine: np.ndarray, source: str | os.PathLike[str]) -> Image:
    """The voxel grid of a NIfTI of ``shape`` and (RAS) ``affine``, as :func:`read_nifti_grid`
    returns it (``source`` names it in messages)."""
    view = np.broadcast_to(np.zeros((), dtype=np.uint8), tuple(shape))
    return Image(view, **_nifti_geometry(affine, Path(source)), meta={"source": str(source)})


def to_sitk(img: Image, dtype: Any) -> Any:
    """``img`` as a SimpleITK image with its geometry (``dtype``: None keeps the array's)."""
    import SimpleITK as sitk

    arr = _disk_array(img, dtype)
    dim = img.ndim
    if dim < 2 or dim > 5:
        raise DataError(f"cannot write a {dim}-D image; SimpleITK writes 2-D to 5-D images.")
    extra = arr.ndim - dim
    if extra > 1:
        raise DataError(
            f"image array has {arr.ndim} axes but {dim} spacings; at most one trailing "
            "component axis can be written."
        )
    spatial = tuple(range(dim))[::-1]
    arr_zyx = arr.transpose((*spatial, dim)) if extra else arr.transpose(spatial)
    try:
        itk = sitk.GetImageFromArray(np.ascontiguousarray(arr_zyx), isVector=bool(extra))
        itk.SetSpacing([float(s) for s in img.spacing])
        itk.SetOrigin([float(o) for o in img.origin])
        itk.SetDirection([float(v) for v in np.asarray(img.direction, dtype=float).ravel()])
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"the image cannot be converted for writing ({_brief(exc)}).") from exc
    return itk


def write_image(
    img: Image, path: str | os.PathLike[str], *, dtype: Any = None, compress: bool = False
) -> Path:
    """Write an image atomically; the format is chosen by the suffix.

    Parameters
    ----------
    img : Image
        The image; ``array[i, j, k]`` with ``spacing[i]`` for axis ``i``.
    path : path-like
        Target: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.mhd`` (which also writes the
        ``.raw``/``.zraw`` data file beside it).
    dtype : numpy dtype, optional
        Voxel type on disk; default the array's own (bool is written as uint8, float16 as float32).
    compress : bool
        Compress NRRD and MetaImage data (``.nii.gz`` is always compressed, ``.nii`` never).

    Returns
    -------
    Path
        The path written. Nothing appears at ``path`` unless the whole file was written.

    Raises
    ------
    ImageFormatError
        If the suffix is not one of the supported ones.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None or suffix == ".nhdr":
        raise ImageFormatError(
            f"{path}: cannot choose a format from the suffix; use one of .nii, .nii.gz, .nrrd, "
            ".mha, .mhd."
        )
    if IMAGE_SUFFIXES[suffix] == "nifti" and img.ndim == 3 and img.array.ndim in (3, 4):
        # 4-D: a trailing time/volume axis, written as NIfTI's fourth dimension (dcm2niix's)
        return _write_nifti_nibabel(img, path, dtype)
    import SimpleITK as sitk

    itk = to_sitk(img, dtype)
    use_compression = compress or suffix == ".nii.gz"
    if suffix == ".mhd":
        return _write_mhd(itk, path, use_compression)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(itk, str(tmp), use_compression)
        except RuntimeError as exc:
            raise ImageFormatError(f"{path}: cannot be written ({_brief(exc)}).") from exc
    logger.debug("wrote %s", path)
    return path


def _disk_array(img: Image, dtype: Any) -> np.ndarray:
    arr = np.asarray(img.array)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _write_nifti_nibabel(img: Image, path: Path, dtype: Any) -> Path:
    """3-D scalar NIfTI through nibabel: written straight from the array, no intermediate copy.

    The affine is ``[diag(-1, -1, 1) @ direction @ diag(spacing) | diag(-1, -1, 1) @ origin]``
    (LPS to NIfTI's RAS), stored as both qform and sform with code 1 (scanner).
    """
    import nibabel as nib

    arr = _disk_array(img, dtype)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_RAS @ np.asarray(img.direction, dtype=float) @ np.diag(img.spacing)
    affine[:3, 3] = _LPS_RAS @ np.asarray(img.origin, dtype=float)
    try:
        nii = nib.Nifti1Image(arr, affine, dtype=arr.dtype)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
        nii.header.set_xyzt_units("mm")
    except Exception as exc:  # nibabel raises several types for unsupported data
        raise DataError(f"{path}: the image cannot be stored as NIfTI ({_brief(exc)}).") from exc
    with atomic_path(path) as tmp:
        try:
            if _suffix(path) == ".nii" and arr.dtype.isnative and arr.T.flags.c_contiguous:
                _write_nii_raw(nii, arr, tmp)
            else:
                nib.save(nii, str(tmp))
        except OSError as exc:
            raise ImageFormatError(f"{path}: cannot be written ({_brief(exc)}).") from exc
    logger.debug("wrote %s", path)
    return path


def _write_nii_raw(nii: Any, arr: np.ndarray, tmp: Path) -> None:
    """Uncompressed single-file NIfTI: nibabel's header, then the voxel buffer in one write.

    ``arr`` is Fortran-ordered (NIfTI's order: the first index varies fastest), so its memory is
    the data block as it stands; nibabel would write it in many small chunks.
    """
    header = nii.header
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0  # as nibabel writes unscaled data
    with open(tmp, "wb") as f:
        header.write_to(f)
        offset = int(header["vox_offset"])
        if f.tell() < offset:
            f.write(b"\0" * (offset - f.tell()))
        f.write(memoryview(arr.T).cast("B"))


def _write_mhd(itk: Any, path: Path, compress: bool) -> Path:
    """MetaImage header + data file: write both in a temporary folder, move data, then header."""
    import SimpleITK as sitk

    with temporary_path(path, folder=True) as tmpdir:
        try:
            sitk.WriteImage(itk, str(tmpdir / path.name), compress)
        except RuntimeError as exc:
            raise ImageFormatError(f"{path}: cannot be written ({_brief(exc)}).") from exc
        header = tmpdir / path.name
        for data in sorted(tmpdir.iterdir()):
            if data != header:
                os.replace(data, path.parent / data.name)
        os.replace(header, path)
        tmpdir.rmdir()
    return path
