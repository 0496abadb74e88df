"""Reading a DICOM series into an :class:`imharmony.image.Image`, with physical units.

A series is the set of files sharing one Series Instance UID (0020,000E). Its slices are ordered
along the slice normal (the cross product of the two direction cosines of Image Orientation
(Patient) (0020,0037)) by the projection of Image Position (Patient) (0020,0032) on it, and the
slice spacing is measured from those positions, never taken from Slice Thickness (0018,0050).

Array layout of the returned image::

    array[i, j, k]  i: column index  (along the row direction cosine, IOP[0:3])
                    j: row index     (along the column direction cosine, IOP[3:6])
                    k: slice index   (along the normal, increasing position)

so ``spacing = (Pixel Spacing[1], Pixel Spacing[0], slice spacing)``, ``origin`` is the Image
Position (Patient) of the first slice, and the columns of ``direction`` are the row cosine, the
column cosine and the normal, all in the DICOM patient frame (LPS, millimetres), which is also the
frame of SimpleITK and of :func:`imharmony.io.images.write_image`.

Safety: headers are read first, with ``stop_before_pixels``; the size announced by Rows × Columns
× Number of Frames is checked against ``max_pixels`` and against the file's length before a single
pixel is decoded; paths are never built from tag values; a file that is not DICOM is skipped with
a logged warning, while a DICOM file that is damaged is an error naming it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._dicom.header import (
    DEFAULT_MAX_PIXELS,
    DEFER_BYTES,
    OTHER_PIXEL_TAGS,
    DicomError,
    DicomSeriesError,
    DicomSizeError,
    FileRejected,
    Header,
    decoding,
    read_header,
)
from .._dicom.mosaic import csa_header, mosaic_layout, tile_positions, untile
from .._dicom.multiframe import classic_frame_geometry
from .._dicom.slices import equalize, equidistant_grid, missing_slices
from .._dicom.tags import (
    as_float,
    brief,
    float_list,
    group_item,
    numbers,
    plain,
    private_value,
    tag_label,
)
from .._dicom.walk import walk_files
from ..errors import DataError, HarmonizationError
from ..image import Image
from ..physics import ct

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DTYPES",
    "UNITS",
    "VARIABLE_SPACING",
    "DicomError",
    "DicomSeriesError",
    "DicomSizeError",
    "list_dicom_series",
    "read_dicom_series",
    "stored_values",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``units``.
UNITS: tuple[str, ...] = (
    "hu", "raw", "suv", "suvbw", "suvlbm", "suvbsa", "suvibw", "bqml", "rescaled", "philips_fp"
)
#: Accepted values of ``dtype``.
DTYPES: tuple[str, ...] = ("float64", "float32", "auto")
#: Accepted values of ``variable_spacing``: what to do with slices not equally spaced.
VARIABLE_SPACING: tuple[str, ...] = ("auto", "resample", "refuse")
_SUV_UNITS = frozenset(("suv", "suvbw", "suvlbm", "suvbsa", "suvibw"))
_MR_UNITS = frozenset(("rescaled", "philips_fp"))

# Position tolerances (mm): duplicates closer than this are the same slice position.
_DUPLICATE_MM = 1e-3
# Largest distance of a slice from the regular grid (fraction of the spacing, and mm).
_GRID_RTOL = 0.1
_GRID_ATOL_MM = 1e-3
# Relative tolerance on agreement of Slice Thickness / Spacing Between Slices with the positions.
_SPACING_RTOL = 1e-2
# Tolerance on direction cosines.
_ORIENTATION_TOL = 1e-4

#: Keywords copied from the first instance into ``Image.meta`` when present.
META_KEYWORDS: tuple[str, ...] = (
    "Modality", "SOPClassUID", "Manufacturer", "ManufacturerModelName", "StationName",
    "InstitutionName", "SoftwareVersions", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "StudyDate", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "SeriesNumber", "SeriesDescription", "ProtocolName", "BodyPartExamined",
    "PatientPosition", "ImageType", "SliceThickness", "SpacingBetweenSlices", "KVP",
    "ConvolutionKernel", "ReconstructionDiameter", "XRayTubeCurrent", "ExposureTime", "Exposure",
    "CTDIvol", "FilterType", "RescaleType", "PixelPaddingValue", "PixelPaddingRangeLimit",
    "MagneticFieldStrength", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "MRAcquisitionType", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "PixelBandwidth", "ImagingFrequency", "Units", "CorrectedImage", "DecayCorrection",
    "AttenuationCorrectionMethod", "ReconstructionMethod", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "BitsAllocated", "BitsStored", "PixelRepresentation",
)


# ---------------------------------------------------------------------------------------------
# Pixel value helpers
# ---------------------------------------------------------------------------------------------


def stored_values(
    raw: np.ndarray, bits_stored: int, pixel_representation: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Give raw pixel cells their stored value: drop unused high bits, extend the sign.

    Parameters
    ----------
    raw : numpy.ndarray of int
        Pixel cells as read (Bits Allocated wide), any shape.
    bits_stored : int
        Bits Stored (0028,0101); the value occupies bits ``0 .. bits_stored - 1`` (High Bit
        (0028,0102) = Bits Stored − 1).
    pixel_representation : int
        Pixel Representation (0028,0103): 0 unsigned, 1 two's complement.
    out : numpy.ndarray, optional
        Where to write; may be ``raw`` itself (in place).

    Returns
    -------
    numpy.ndarray
        Signed (int) when ``pixel_representation`` is 1, else unsigned, same itemsize as ``raw``.

    Examples
    --------
    A 12-bit signed value −1 held in a 16-bit cell whose top bits carry garbage:

    >>> stored_values(np.array([0x7FFF], dtype=np.uint16), 12, 1)
    array([-1], dtype=int16)
    """
    raw = np.asarray(raw)
    width = raw.dtype.itemsize * 8
    target = np.dtype(f"{'i' if pixel_representation else 'u'}{raw.dtype.itemsize}")
    if out is None:
        out = raw.astype(target.newbyteorder("="), copy=True)
    elif out is not raw:
        out[...] = raw.view(target.newbyteorder(raw.dtype.byteorder))
    else:
        out = out.view(target.newbyteorder(raw.dtype.byteorder))
    if bits_stored >= width:
        return out
    shift = width - bits_stored
    if pixel_representation:
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)
    else:
        np.bitwise_and(out, (1 << bits_stored) - 1, out=out)
    return out


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


_brief = brief  # kept for imharmony.io.images


def _fmt_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _int_tag(ds: Dataset, keyword: str, name: str, default: int | None = None) -> int:
    value = numbers(ds, keyword)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == "":
        if default is not None:
            return default
        raise DicomError(f"{name}: {tag_label(keyword)} missing; the file is truncated or damaged.")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{name}: {tag_label(keyword)} is {value!r}, not an integer.") from exc


def _check_layout(head: Header) -> None:
    """Refuse a pixel layout that cannot carry quantitative values; set the stored-value layout.

    Checked for the files of the series being read only: an RGB or 1-bit file of another series
    in the same folder does not stop anything.
    """
    ds, name = head.ds, head.name
    if head.pixel_tag in OTHER_PIXEL_TAGS:
        raise DicomError(
            f"{name}: {OTHER_PIXEL_TAGS[head.pixel_tag]} is not supported; only integer "
            "Pixel Data (7FE0,0010) can be converted."
        )
    if head.samples != 1:
        raise DicomError(
            f"{name}: {tag_label('SamplesPerPixel')} is {head.samples}; only single-sample "
            "(grey-level) images carry quantitative values."
        )
    bits = head.bits_allocated
    if bits not in (8, 16, 32):
        raise DicomError(
            f"{name}: {tag_label('BitsAllocated')} is {bits}; only 8, 16 or 32 are supported."
        )
    bits_stored = _int_tag(ds, "BitsStored", name)
    high_bit = _int_tag(ds, "HighBit", name, default=bits_stored - 1)
    pixrep = _int_tag(ds, "PixelRepresentation", name)
    if not 1 <= bits_stored <= bits or high_bit != bits_stored - 1 or pixrep not in (0, 1):
        raise DicomError(
            f"{name}: unsupported pixel layout: {tag_label('BitsStored')} = {bits_stored}, "
            f"{tag_label('HighBit')} = {high_bit}, {tag_label('PixelRepresentation')} = {pixrep} "
            f"with {tag_label('BitsAllocated')} = {bits}."
        )
    head.bits_stored, head.pixel_representation = bits_stored, pixrep


def _read_headers(
    files: Sequence[tuple[Path, str]], max_pixels: int
) -> list[Header | FileRejected]:
    """Every file's header under the one acceptance policy, in file order, in this thread.

    Header parsing is pure Python and holds the GIL: a thread pool made it slower (300 CT headers:
    0.071 s in one thread, 0.112 s in two, with the files cached; no gain after dropping the page
    cache either), so only the pixel reads are spread over threads.
    """
    out: list[Header | FileRejected] = []
    for path, name in files:
        try:
            out.append(read_header(path, name, max_pixels=max_pixels))
        except FileRejected as rejected:
            out.append(rejected)
    return out


# ---------------------------------------------------------------------------------------------
# Frames and geometry
# ---------------------------------------------------------------------------------------------


def _float_list(value: Any, n: int, keyword: str, name: str) -> list[float] | None:
    return float_list(value, n, keyword, name, DicomError)


def _opt_float(value: Any, keyword: str, name: str) -> float | None:
    got = _float_list(value, 1, keyword, name)
    return None if got is None else got[0]


_group_item = group_item
_numbers = numbers
_plain = plain


@dataclass
class _Frames:
    """Per-frame attributes of a series, one entry per frame in (instance, frame) order."""

    inst: list[int] = field(default_factory=list)
    frame: list[int] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    position: list[list[float]] = field(default_factory=list)
    orientation: list[list[float]] = field(default_factory=list)
    pixel_spacing: list[list[float]] = field(default_factory=list)
    slope: list[float | None] = field(default_factory=list)
    intercept: list[float | None] = field(default_factory=list)
    rescale_type: list[str | None] = field(default_factory=list)
    thickness: list[float | None] = field(default_factory=list)
    between: list[float | None] = field(default_factory=list)
    # What tells the volumes of a 4-D series apart (None when absent).
    echo_number: list[int | None] = field(default_factory=list)
    echo_time: list[float | None] = field(default_factory=list)
    temporal: list[int | None] = field(default_factory=list)
    instance_number: list[int | None] = field(default_factory=list)
    b_value: list[float | None] = field(default_factory=list)
    gradient: list[tuple[float, float, float] | None] = field(default_factory=list)


def _subset(fr: _Frames, keep: Sequence[int]) -> _Frames:
    """The frames ``keep`` (indices into ``fr``), in that order."""
    out = _Frames()
    for f in fields(_Frames):
        values = getattr(fr, f.name)
        setattr(out, f.name, [values[k] for k in keep])
    return out


def _safe_number(holder: Any, keyword: str, kind: type = float) -> Any:
    """A single number from ``holder`` or None (absent, empty or unparseable: only a sort key)."""
    if holder is None:
        return None
    try:
        value = _numbers(holder, keyword)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None or value == "":
            return None
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError, KeyError, OverflowError):
        return None
    return number if math.isfinite(number) else None


_SIEMENS_MR = "SIEMENS MR HEADER"


def _diffusion(
    ds: Dataset, item: Any, shared: Any, name: str
) -> tuple[float | None, tuple[float, float, float] | None]:
    """b-value (s/mm²) and gradient direction (LPS, unit) of a frame; None when not given.

    Standard MR Diffusion attributes (top level or in the MR Diffusion functional group),
    else Siemens' (0019,xx0C) B_value and (0019,xx0E) DiffusionGradientDirection, else the CSA
    image header's B_value and DiffusionGradientDirection.
    """
    holder = group_item(item, shared, "MRDiffusionSequence") if item is not None else ds
    b = _safe_number(holder, "DiffusionBValue") if holder is not None else None
    direction: Any = None
    if holder is not None:
        direction = _numbers(holder, "DiffusionGradientOrientation")
        if direction is None:
            seq = holder.get("DiffusionGradientDirectionSequence")
            if seq:
                direction = _numbers(seq[0], "DiffusionGradientOrientation")
    if b is None and item is None:
        value = private_value(ds, 0x0019, _SIEMENS_MR, 0x0C)
        if value is not None and not isinstance(value, bytes):
            b = as_float(value)
            direction = private_value(ds, 0x0019, _SIEMENS_MR, 0x0E)
        else:
            try:
                csa = csa_header(ds, "image")
            except (ValueError, struct.error):
                csa = None
            if csa and csa.get("B_value"):
                b = as_float(csa["B_value"][0])
                direction = csa.get("DiffusionGradientDirection") or None
    grad = None
    if direction is not None and not isinstance(direction, bytes):
        try:
            vec = [float(v) for v in direction]
        except (TypeError, ValueError):
            vec = []
        if len(vec) == 3 and all(math.isfinite(v) for v in vec):
            norm = math.sqrt(sum(v * v for v in vec))
            grad = tuple(v / norm for v in vec) if norm > 1e-6 else (0.0, 0.0, 0.0)
    if b is not None and (b < 0 or b > 1e5):
        raise DicomError(f"{name}: b-value {b} s/mm² is not plausible; the file is damaged.")
    return b, grad  # type: ignore[return-value]


def _vector(ds: Dataset, keyword: str, n: int, label: str) -> list[float]:
    """A required geometry attribute of ``n`` numbers."""
    values = _float_list(_numbers(ds, keyword), n, keyword, label)
    if values is None:
        raise DicomError(f"{label}: {tag_label(keyword)} missing; cannot place the slice in space.")
    return values


def _unpack_mosaic(h: Header) -> None:
    """Make a Siemens mosaic's header describe its slices (one tile each), not the tiled image."""
    layout = mosaic_layout(h.ds, h.rows, h.columns, h.name, DicomError)
    if layout is None:
        return
    if h.n_frames != 1:
        raise DicomError(
            f"{h.name}: a Siemens mosaic with {tag_label('NumberOfFrames')} {h.n_frames}; only "
            "single-frame mosaics are known."
        )
    h.mosaic = layout
    h.rows, h.columns, h.n_frames = layout.tile_rows, layout.tile_columns, layout.n_slices


def _mosaic_positions(h: Header) -> np.ndarray:
    """Image Position (Patient) of each slice of a mosaic instance, shape (n_slices, 3)."""
    ds, name = h.ds, h.name
    spacing = next(
        (
            v
            for v in (
                _opt_float(_numbers(ds, kw), kw, name)
                for kw in ("SpacingBetweenSlices", "SliceThickness")
            )
            if v is not None and v > 0
        ),
        None,
    )
    if spacing is None:
        raise DicomError(
            f"{name}: a mosaic without a positive {tag_label('SpacingBetweenSlices')} or "
            f"{tag_label('SliceThickness')}; its slices cannot be placed in space."
        )
    return tile_positions(
        np.asarray(_vector(ds, "ImagePositionPatient", 3, name)),
        np.asarray(_vector(ds, "ImageOrientationPatient", 6, name)),
        np.asarray(_vector(ds, "PixelSpacing", 2, name)),
        spacing,
        h.mosaic,
    )


def _collect_frames(headers: Sequence[Header]) -> _Frames:
    fr = _Frames()
    for i, h in enumerate(headers):
        with decoding(h.name):
            _collect_instance(fr, i, h)
    return fr


def _collect_instance(fr: _Frames, i: int, h: Header) -> None:
    """Append the frames of instance ``i`` to ``fr``."""
    ds = h.ds
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    layout = h.mosaic
    positions = None if layout is None else _mosaic_positions(h)
    classic_iop = None
    if per_frame is None and h.n_frames > 1 and layout is None:
        # Classic multi-frame: positions from the Frame Increment Pointer or the spacing.
        positions, classic_iop = classic_frame_geometry(ds, h.n_frames, h.name, DicomError)
    if per_frame is not None and len(per_frame) != h.n_frames:
        raise DicomError(
            f"{h.name}: {tag_label('PerFrameFunctionalGroupsSequence')} has "
            f"{len(per_frame)} items but {tag_label('NumberOfFrames')} is {h.n_frames}."
        )
    instance_number = _safe_number(ds, "InstanceNumber", int)
    if per_frame is None:
        # One set of attributes for the whole file (a single frame, a mosaic's tiles or a
        # classic multi-frame object): read once, only the positions differ per frame.
        labels = [
            h.name if positions is None
            else f"{h.name} slice {f + 1}" if layout is not None else f"{h.name} frame {f + 1}"
            for f in range(h.n_frames)
        ]
        first = _plane_values(ds, ds, ds, ds, labels[0],
                              None if positions is None else positions[0].tolist(), classic_iop)
        first.update(
            echo_number=_safe_number(ds, "EchoNumbers", int),
            echo_time=_safe_number(ds, "EchoTime"),
            temporal=_safe_number(ds, "TemporalPositionIdentifier", int),
        )
        b, grad = _diffusion(ds, None, None, labels[0])
        for f in range(h.n_frames):
            values = dict(first)
            if positions is not None:
                values["position"] = positions[f].tolist()
            _append_frame(fr, i, f, labels[f], values, instance_number, b, grad)
        return
    for f in range(h.n_frames):
        label = f"{h.name} frame {f + 1}"
        item = per_frame[f]
        # Legacy converted objects may keep the classic top-level attributes.
        sources = [
            _group_item(item, shared, seq)
            for seq in ("PlanePositionSequence", "PlaneOrientationSequence",
                        "PixelMeasuresSequence", "PixelValueTransformationSequence")
        ]
        pos_src, ori_src, pm_src, pvt_src = (ds if src is None else src for src in sources)
        values = _plane_values(pos_src, ori_src, pm_src, pvt_src, label, None, None)
        values.update(
            echo_number=None,
            echo_time=_safe_number(group_item(item, shared, "MREchoSequence"), "EffectiveEchoTime"),
            temporal=_safe_number(
                group_item(item, shared, "FrameContentSequence"), "TemporalPositionIndex", int
            ),
        )
        b, grad = _diffusion(ds, item, shared, label)
        _append_frame(fr, i, f, label, values, instance_number, b, grad)


def _plane_values(
    pos_src: Any, ori_src: Any, pm_src: Any, pvt_src: Any, label: str,
    position: list[float] | None, orientation: list[float] | None,
) -> dict[str, Any]:
    """A frame's geometry and value scaling, read from the items that hold them (``position`` and
    ``orientation`` when the caller already knows them)."""
    rtype = pvt_src.get("RescaleType")
    return {
        "position": (
            _vector(pos_src, "ImagePositionPatient", 3, label) if position is None else position
        ),
        "orientation": (
            _vector(ori_src, "ImageOrientationPatient", 6, label)
            if orientation is None else orientation
        ),
        "pixel_spacing": _vector(pm_src, "PixelSpacing", 2, label),
        "slope": _opt_float(_numbers(pvt_src, "RescaleSlope"), "RescaleSlope", label),
        "intercept": _opt_float(_numbers(pvt_src, "RescaleIntercept"), "RescaleIntercept", label),
        "rescale_type": None if rtype is None else str(rtype),
        "thickness": _opt_float(_numbers(pm_src, "SliceThickness"), "SliceThickness", label),
        "between": _opt_float(
            _numbers(pm_src, "SpacingBetweenSlices"), "SpacingBetweenSlices", label
        ),
    }


def _append_frame(
    fr: _Frames, i: int, f: int, label: str, values: dict[str, Any],
    instance_number: int | None, b: float | None, grad: tuple[float, float, float] | None,
) -> None:
    """Append frame ``f`` of instance ``i`` with its ``values`` (:func:`_plane_values` plus the
    echo and temporal keys) to ``fr``."""
    fr.inst.append(i)
    fr.frame.append(f)
    fr.label.append(label)
    for key, value in values.items():
        getattr(fr, key).append(value)
    fr.instance_number.append(instance_number)
    fr.b_value.append(b)
    fr.gradient.append(grad)


@dataclass
class _Geometry:
    order: np.ndarray  # frame indices in slice order
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    # Gantry tilt: per slice (in slice order) the shift in pixels (along columns i, rows j)
    # that brings it onto the rectilinear grid, and the padding (i_low, i_high, j_low, j_high)
    # that grid needs to hold every shifted slice; None for an unsheared stack.
    shift: np.ndarray | None = None
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    # Unequal slice spacing: the acquired slices' distances from the first (mm, in slice order)
    # and the equidistant grid they are resampled onto; None for an equidistant stack.
    distances: np.ndarray | None = None
    grid: np.ndarray | None = None


def _first_differing(values: np.ndarray, tol: float) -> int | None:
    diff = np.abs(values - values[0]).reshape(len(values), -1).max(axis=1)
    bad = np.flatnonzero(diff > tol)
    return int(bad[0]) if bad.size else None


def _geometry_checks(fr: _Frames, headers: Sequence[Header]) -> None:
    """Every frame has the same matrix size, orientation and pixel spacing."""
    labels = fr.label
    # Same matrix size everywhere.
    sizes = [(headers[i].rows, headers[i].columns) for i in fr.inst]
    for k, s in enumerate(sizes):
        if s != sizes[0]:
            raise DicomSeriesError(
                f"mixed image sizes in the series: {labels[0]} is {sizes[0][0]} Rows x "
                f"{sizes[0][1]} Columns but {labels[k]} is {s[0]} x {s[1]}; the files are not one "
                "volume (separate them, e.g. a localizer, into their own folder)."
            )
    ori = np.asarray(fr.orientation)
    k = _first_differing(ori, _ORIENTATION_TOL)
    if k is not None:
        raise DicomSeriesError(
            f"mixed {tag_label('ImageOrientationPatient')} in the series: {labels[0]} has "
            f"{ori[0].round(6).tolist()} but {labels[k]} has {ori[k].round(6).tolist()}; the "
            "files are more than one stack (e.g. localizers or a multi-plane acquisition). Move "
            "each stack into its own folder."
        )
    ps = np.asarray(fr.pixel_spacing)
    k = _first_differing(ps, 1e-4 * max(1.0, float(ps[0].max())))
    if k is not None:
        raise DicomSeriesError(
            f"mixed {tag_label('PixelSpacing')} in the series: {labels[0]} has "
            f"{ps[0].tolist()} but {labels[k]} has {ps[k].tolist()}."
        )
    if np.any(ps[0] <= 0):
        raise DicomError(f"{labels[0]}: {tag_label('PixelSpacing')} {ps[0].tolist()} not positive.")


def _geometry(
    fr: _Frames, headers: Sequence[Header], variable_spacing: str = "auto"
) -> _Geometry:
    """Slice order, spacing, origin and direction of one volume (one frame per position).

    ``variable_spacing`` (see :func:`read_dicom_series`) decides what happens to slices that
    are not equally spaced.
    """
    _geometry_checks(fr, headers)
    labels = fr.label
    ori = np.asarray(fr.orientation)
    ps = np.asarray(fr.pixel_spacing)
    row_cos, col_cos = ori[0, :3], ori[0, 3:]
    if (
        abs(np.linalg.norm(row_cos) - 1) > 1e-3
        or abs(np.linalg.norm(col_cos) - 1) > 1e-3
        or abs(row_cos @ col_cos) > 1e-3
    ):
        raise DicomError(
            f"{labels[0]}: {tag_label('ImageOrientationPatient')} {ori[0].tolist()} is not two "
            "orthogonal unit vectors; the file is damaged."
        )
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos - (col_cos @ row_cos) * row_cos
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)

    pos = np.asarray(fr.position)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    d_sorted = dist[order]
    steps = np.diff(d_sorted)
    dup = np.flatnonzero(steps < _DUPLICATE_MM)
    if dup.size:
        a, b = order[dup[0]], order[dup[0] + 1]
        raise DicomSeriesError(
            f"duplicate slice position: {labels[a]} and {labels[b]} both lie at "
            f"{d_sorted[dup[0]]:.4f} mm along the slice normal ({tag_label('ImagePositionPatient')}"
            f" {pos[a].round(4).tolist()}); the folder holds repeated or multi-phase acquisitions. "
            "Keep one acquisition per folder, or choose one with series_uid."
        )
    n = len(order)
    shift = None
    distances = grid = None
    if n > 1:
        spacing_z = float((d_sorted[-1] - d_sorted[0]) / (n - 1))
        # Each slice must sit within a tenth of the spacing of the regular grid from the first to
        # the last slice: rounding in the headers passes, a missing slice (>= 25 %) does not.
        residual = d_sorted - (d_sorted[0] + spacing_z * np.arange(n))
        if np.abs(residual).max() > max(_GRID_RTOL * spacing_z, _GRID_ATOL_MM):
            distances = d_sorted - d_sorted[0]
            _check_variable_spacing(variable_spacing, distances, steps, spacing_z, labels, order)
            grid = equidistant_grid(distances)
            spacing_z = float(grid[1] - grid[0])
            logger.warning(
                "%s: slices %.4g to %.4g mm apart along the normal; equalized to %d slices "
                "%.4g mm apart by linear interpolation between neighbouring slices "
                "(recorded in the image history).",
                labels[order[0]], float(steps.min()), float(steps.max()), len(grid), spacing_z,
            )
        # Positions off the normal through the first slice: a sheared stack (gantry tilt).
        offsets = pos[order] - pos[order[0]]
        inplane = offsets - np.outer(offsets @ normal, normal)
        drift = np.linalg.norm(inplane, axis=1)
        tolerance = max(0.05 * float(ps[0].min()), 1e-3)
        if drift.max() > tolerance:
            shift = _tilt_shift(inplane, d_sorted - d_sorted[0], row_cos, col_cos, ps[0],
                                tolerance, labels, order)

    else:
        spacing_z = next(
            (v for v in (*fr.between, *fr.thickness) if v is not None and v > 0), 1.0
        )
    if grid is None:
        _check_nominal_spacing(fr, spacing_z)
    direction = np.column_stack([row_cos, col_cos, normal])
    spacing = (float(ps[0, 1]), float(ps[0, 0]), spacing_z)
    first = pos[order[0]]
    pad = (0, 0, 0, 0)
    if shift is not None:
        # Grow the grid to hold every shifted slice (dcm2niix's choice); (0, 0) moves with it.
        low = np.ceil(np.maximum(-shift.min(axis=0), 0) - 1e-6).astype(int)
        high = np.ceil(np.maximum(shift.max(axis=0), 0) - 1e-6).astype(int)
        pad = (int(low[0]), int(high[0]), int(low[1]), int(high[1]))
        first = first - low[0] * spacing[0] * row_cos - low[1] * spacing[1] * col_cos
    origin = tuple(float(v) for v in first)
    return _Geometry(
        order=order, spacing=spacing, origin=origin, direction=direction,  # type: ignore[arg-type]
        shift=shift, pad=pad, distances=distances, grid=grid,
    )


def _check_variable_spacing(
    policy: str,
    distances: np.ndarray,
    steps: np.ndarray,
    spacing_z: float,
    labels: Sequence[str],
    order: np.ndarray,
) -> None:
    """Refuse unequal slice spacing when ``policy`` says so, or (``"auto"``) when the stack is a
    regular grid with holes: a missing file must not be filled by interpolation unasked."""
    holes = missing_slices(distances)
    if policy == "resample" or (policy == "auto" and not holes):
        return
    j = int(np.argmax(np.abs(steps - spacing_z)))
    a, b = order[j], order[j + 1]
    n = len(distances)
    why = (
        f"non-uniform slice spacing (a gap or a missing slice): {labels[a]} and {labels[b]} "
        f"are {steps[j]:.4f} mm apart along the slice normal, while the series spans "
        f"{distances[-1]:.4f} mm in {n} slices ({spacing_z:.4f} mm on average)."
    )
    if policy == "refuse":
        raise DicomSeriesError(
            f"{why} Refused (variable_spacing='refuse'); pass variable_spacing='resample' "
            "(--variable-spacing resample) to resample onto equidistant slices."
        )
    raise DicomSeriesError(
        f"{why} Every slice lies on a regular {float(steps.min()):.4f} mm grid with {holes} "
        "slice(s) missing: check that no file is missing. If the spacing really varies, pass "
        "variable_spacing='resample' (--variable-spacing resample) to interpolate across it."
    )


def _tilt_shift(
    inplane: np.ndarray,
    along: np.ndarray,
    row_cos: np.ndarray,
    col_cos: np.ndarray,
    pixel_spacing: np.ndarray,
    tolerance: float,
    labels: Sequence[str],
    order: np.ndarray,
) -> np.ndarray:
    """Per-slice pixel shifts undoing a gantry tilt; refuse a shear that is not one.

    A tilted gantry shifts each slice within its plane in proportion to its distance along the
    normal: ``offset_k = along_k × v``. Slice ``k`` then moves by ``offset_k`` (in pixels along
    the columns and the rows) onto the rectilinear grid through the first slice, as dcm2niix
    does. Any other in-plane drift cannot be undone without guessing: refused.
    """
    v, *_ = np.linalg.lstsq(along[:, None], inplane, rcond=None)
    residual = np.linalg.norm(inplane - along[:, None] * v, axis=1)
    k = int(np.argmax(residual))
    if residual[k] > tolerance:
        raise DicomSeriesError(
            f"sheared series: {labels[order[k]]} is displaced {np.linalg.norm(inplane[k]):.3f} "
            f"mm within the slice plane relative to {labels[order[0]]}, and the displacement "
            f"does not grow linearly along the stack ({residual[k]:.3f} mm off), so it is not a "
            f"gantry tilt that could be undone; {tag_label('ImagePositionPatient')} does not "
            "advance along the slice normal. Resample the series first."
        )
    logger.warning(
        "%s: gantry tilt, slices shifted by %.4g mm per mm along the stack; de-sheared by "
        "linear interpolation within each slice onto a grid grown to hold them.",
        labels[order[0]], float(np.linalg.norm(v)),
    )
    shift = np.column_stack(
        [(inplane @ row_cos) / pixel_spacing[1], (inplane @ col_cos) / pixel_spacing[0]]
    )
    # Header decimals make a one-pixel shift 0.9999999 or 1.0000001: keep a micro-pixel, so
    # a slice's edge row is not lost to rounding.
    return np.round(shift, 6)


def _echo_index(fr: _Frames) -> list[int | None]:
    """1-based echo of each frame: Echo Numbers (0018,0086), else the rank of its echo time."""
    if all(e is not None for e in fr.echo_number):
        return list(fr.echo_number)
    times = sorted({t for t in fr.echo_time if t is not None})
    if len(times) <= 1:
        return [None] * len(fr.inst)
    return [None if t is None else times.index(t) + 1 for t in fr.echo_time]


def _select_echo(fr: _Frames, echo: int, source: Path) -> list[int]:
    index = _echo_index(fr)
    keep = [k for k, e in enumerate(index) if e == echo]
    if not keep:
        found = sorted({e for e in index if e is not None})
        raise DicomSeriesError(
            f"{source}: no echo {echo} in the series; "
            + (f"echoes found: {', '.join(map(str, found))}." if found else
               "it has a single echo (no Echo Numbers (0018,0086) or echo times that differ).")
        )
    return keep


def _volumes(fr: _Frames) -> list[list[int]]:
    """Frames grouped into volumes: ``volumes[t][s]`` is the frame of volume t at slice s.

    Frames are grouped by their position along the slice normal; a series whose every position
    holds T frames is T volumes, the frames of each position ordered by echo, temporal
    position, Instance Number and file order. Volumes whose slices disagree on echo time,
    b-value or gradient direction mean that order is not trustworthy: refused.
    """
    ori = np.asarray(fr.orientation[0], dtype=float)
    normal = np.cross(ori[:3], ori[3:])
    dist = np.asarray(fr.position, dtype=float) @ normal
    order = np.argsort(dist, kind="stable")
    breaks = np.flatnonzero(np.diff(dist[order]) >= _DUPLICATE_MM) + 1
    groups = [list(g) for g in np.split(order, breaks)]
    sizes = Counter(len(g) for g in groups)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(g for g in groups if len(g) != common)
        raise DicomSeriesError(
            f"the slice positions hold unequal numbers of frames ({len(groups)} positions: "
            + ", ".join(f"{n} with {size}" for size, n in sorted(sizes.items()))
            + f"); e.g. {', '.join(fr.label[k] for k in odd[:4])} lie at "
            f"{dist[odd[0]]:.4f} mm along the slice normal. A volume is incomplete, slices are "
            "duplicated, or acquisitions are mixed: check that no file is missing, or keep one "
            "acquisition per folder."
        )
    n_volumes = len(groups[0])
    if n_volumes == 1:
        return [[g[0] for g in groups]]
    echo = _echo_index(fr)

    def key(k: int) -> tuple[Any, ...]:
        return (
            echo[k] or 0, fr.temporal[k] or 0, fr.instance_number[k] or 0, fr.inst[k], fr.frame[k]
        )

    groups = [sorted(g, key=key) for g in groups]
    volumes = [[g[t] for g in groups] for t in range(n_volumes)]
    for t, vol in enumerate(volumes):
        for what, values in (
            ("echo", echo), ("b-value", fr.b_value), ("gradient direction", fr.gradient)
        ):
            seen = {values[k] for k in vol}
            if len(seen) > 1:
                raise DicomSeriesError(
                    f"the {n_volumes} frames at each slice position cannot be sorted into "
                    f"volumes with confidence: volume {t + 1} would mix slices of different "
                    f"{what} ({', '.join(map(str, sorted(seen, key=str)[:4]))}). Choose one "
                    "echo with echo=, or keep one acquisition per folder."
                )
    return volumes


def _check_nominal_spacing(fr: _Frames, spacing_z: float) -> None:
    if len(fr.label) < 2:
        return
    for keyword, values in (("SpacingBetweenSlices", fr.between), ("SliceThickness", fr.thickness)):
        nominal = next((v for v in values if v is not None), None)
        if nominal is None:
            continue
        if abs(abs(nominal) - spacing_z) > max(_SPACING_RTOL * spacing_z, 1e-3):
            logger.warning(
                "%s: %s is %g mm but the slice positions are %.4g mm apart; using the spacing "
                "of the positions.%s",
                fr.label[0],
                tag_label(keyword),
                nominal,
                spacing_z,
                " (Thicker or thinner slices than their spacing are normal for overlapping or "
                "gapped reconstructions.)" if keyword == "SliceThickness" else "",
            )


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------


def _file_dtype(h: Header) -> np.dtype[Any]:
    little = h.little_endian
    kind = "i" if h.pixel_representation == 1 else "u"
    return np.dtype(f"{'<' if little else '>'}{kind}{h.bits_allocated // 8}")


def _holds_stored_values(lo: int, hi: int, bits_stored: int, pixrep: int, itemsize: int) -> bool:
    """Whether cells whose range is [lo, hi] already are their stored values.

    True when every cell lies in the range of a ``bits_stored``-bit value (read with the sign of
    ``pixrep``): the unused high bits are then all zero, or all copies of the sign bit, so
    :func:`stored_values` would change nothing and the pass over the pixels can be skipped.
    """
    if bits_stored >= itemsize * 8:
        return True
    if pixrep:
        return -(1 << (bits_stored - 1)) <= lo and hi < (1 << (bits_stored - 1))
    return 0 <= lo and hi < (1 << bits_stored)


def _decode_with_pydicom(h: Header) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(h.path, defer_size=DEFER_BYTES)
        arr = ds.pixel_array
    except Exception as exc:
        raise DicomError(
            f"{h.name}: the pixel data cannot be decoded ({type(exc).__name__}: "
            f"{_brief(exc)}). For compressed transfer syntaxes install a pydicom decoder plugin "
            "(e.g. pylibjpeg)."
        ) from exc
    arr = np.asarray(arr)
    if h.mosaic is not None:
        return arr
    expected = h.n_frames * h.rows * h.columns
    if arr.size != expected:
        raise DicomError(
            f"{h.name}: the decoded pixel data hold {arr.size} values but Rows x Columns x "
            f"frames is {expected}; the header and the pixels disagree."
        )
    return arr.reshape(h.n_frames, h.rows, h.columns)


def _read_native(h: Header, buf: np.ndarray) -> None:
    """Fill ``buf`` with the uncompressed pixel data of ``h``, straight from the file."""
    with open(h.path, "rb") as f:
        f.seek(h.value_offset)  # type: ignore[arg-type]
        got = f.readinto(memoryview(buf).cast("B"))
    if got != buf.nbytes:
        raise DicomError(
            f"{h.name}: file truncated while reading Pixel Data (7FE0,0010) "
            f"({got} of {buf.nbytes} bytes); the file changed while being read?"
        )


def _read_pixels(
    headers: Sequence[Header], fr: _Frames, rank: np.ndarray, workers: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Stored values, shape (n_frames, rows, columns), frames in slice order, and their range.

    The range is the per-frame (min, max), taken by the thread that read the frame while it is
    still in the CPU cache.
    """
    dtypes = {h.name: _file_dtype(h) for h in headers}
    vol_dtype = np.result_type(*[dt.newbyteorder("=") for dt in dtypes.values()])
    rows, cols = headers[0].rows, headers[0].columns
    n = len(fr.inst)
    stored = np.empty((n, rows, cols), dtype=vol_dtype)
    low = np.empty(n, dtype=np.float64)
    high = np.empty(n, dtype=np.float64)
    ranks_of: list[list[int]] = [[] for _ in headers]
    frames_of: list[list[int]] = [[] for _ in headers]
    for k, i in enumerate(fr.inst):
        ranks_of[i].append(int(rank[k]))
        frames_of[i].append(fr.frame[k])

    def one(i: int) -> None:
        h = headers[i]
        bits_stored, pixrep = h.bits_stored, h.pixel_representation
        dt = dtypes[h.name]
        ranks = ranks_of[i]
        if not ranks:
            return  # no frame of this file is read (another volume or echo was chosen)
        if h.mosaic is not None:
            layout = h.mosaic
            if h.native:
                image = np.empty((layout.mosaic_rows, layout.mosaic_columns), dtype=dt)
                _read_native(h, image)
            else:
                image = _decode_with_pydicom(h).reshape(layout.mosaic_rows, layout.mosaic_columns)
            raw = untile(image, layout)
        elif h.native:
            direct = len(ranks) == 1 and h.n_frames == 1 and dt == vol_dtype
            buf = stored[ranks[0]] if direct else np.empty((h.n_frames, rows, cols), dtype=dt)
            _read_native(h, buf)
            if direct:
                lo, hi = buf.min(), buf.max()
                if not _holds_stored_values(int(lo), int(hi), bits_stored, pixrep, buf.itemsize):
                    stored_values(buf, bits_stored, pixrep, out=buf)
                    lo, hi = buf.min(), buf.max()
                low[ranks[0]], high[ranks[0]] = lo, hi
                return
            raw = buf
        else:
            raw = _decode_with_pydicom(h)
        if len(frames_of[i]) != raw.shape[0] or frames_of[i] != list(range(raw.shape[0])):
            raw = raw[frames_of[i]]
        values = stored_values(raw, bits_stored, pixrep)
        stored[ranks] = values
        flat = values.reshape(len(ranks), -1)
        low[ranks], high[ranks] = flat.min(axis=1), flat.max(axis=1)

    if workers > 1 and len(headers) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(len(headers))))
    else:
        for i in range(len(headers)):
            one(i)
    return stored, (low, high)


def _smallest_int_dtype(low: float, high: float) -> np.dtype[Any]:
    for name in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"):
        info = np.iinfo(name)
        if info.min <= low and high <= info.max:
            return np.dtype(name)
    raise DataError("integer values outside the int64 range")


def _in_chunks(n: int, workers: int, fn: Any) -> None:
    """Run ``fn(start, stop)`` over ``range(n)`` split in contiguous chunks, on threads.

    NumPy releases the GIL in the element-wise loops, so the chunks run in parallel.
    """
    n_chunks = min(n, max(1, workers) * 2)
    bounds = np.linspace(0, n, n_chunks + 1).astype(int)
    pairs = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    if workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda ab: fn(*ab), pairs))
    else:
        for a, b in pairs:
            fn(a, b)


def _to_values(
    stored: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    mask: np.ndarray | None,
    dtype: str,
    value_range: tuple[np.ndarray, np.ndarray],
    workers: int = 1,
) -> np.ndarray:
    """``stored * scale[k] + offset[k]`` for each frame ``k``, in the requested dtype.

    ``value_range`` is the per-frame (min, max) of ``stored``; NaN where ``mask`` is True.
    ``stored`` may be overwritten (and returned) when the result has its dtype.
    """
    lo, hi = (np.asarray(v, dtype=np.float64) for v in value_range)
    integral = (
        dtype == "auto"
        and mask is None
        and bool(np.all(scale == np.round(scale)))
        and bool(np.all(offset == np.round(offset)))
    )
    if integral:
        ends = np.stack([lo * scale + offset, hi * scale + offset])
        integral = bool(np.abs(ends).max() < 2**62)
    if integral:
        target = _smallest_int_dtype(float(ends.min()), float(ends.max()))
        info = np.iinfo(target)
        same = target == stored.dtype
        out = stored if same else np.empty(stored.shape, dtype=target)
        if np.all(scale == 1) and info.min <= lo.min() and hi.max() <= info.max:
            # Stored values fit ``target``; adding the offset modulo 2**bits is then exact
            # because every final value fits too.
            shift = offset.astype(np.int64).astype(target).reshape(-1, 1, 1)

            def work(a: int, b: int) -> None:
                if not same:
                    np.copyto(out[a:b], stored[a:b], casting="unsafe")
                out[a:b] += shift[a:b]

        else:
            scale_i = scale.astype(np.int64).reshape(-1, 1, 1)
            offset_i = offset.astype(np.int64).reshape(-1, 1, 1)

            def work(a: int, b: int) -> None:
                wide = stored[a:b].astype(np.int64) * scale_i[a:b]
                wide += offset_i[a:b]
                np.copyto(out[a:b], wide, casting="unsafe")

        _in_chunks(stored.shape[0], workers, work)
        return out
    out_dtype = np.dtype(np.float32 if dtype == "float32" else np.float64)
    out = np.empty(stored.shape, dtype=out_dtype)
    scale_f = scale.astype(out_dtype).reshape(-1, 1, 1)
    offset_f = offset.astype(out_dtype).reshape(-1, 1, 1)
    identity = bool(np.all(scale == 1) and np.all(offset == 0))

    def work_f(a: int, b: int) -> None:
        if identity:
            np.copyto(out[a:b], stored[a:b], casting="unsafe")
        else:
            np.multiply(stored[a:b], scale_f[a:b], out=out[a:b])
            out[a:b] += offset_f[a:b]
        if mask is not None:
            out[a:b][mask[a:b]] = np.nan

    _in_chunks(stored.shape[0], workers, work_f)
    return out


# ---------------------------------------------------------------------------------------------
# Series selection
# ---------------------------------------------------------------------------------------------


def _series_summary(uid: str, members: Sequence[Header]) -> str:
    ds = members[0].ds
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    return (
        f"{uid} ({ds.get('Modality', '?')}, {len(members)} file(s)"
        + (f", '{desc}'" if desc else "")
        + (f", series {ds.get('SeriesNumber')}" if ds.get("SeriesNumber") is not None else "")
        + ")"
    )


_SKIPPED_WITH_WARNING = frozenset({"empty", "not_dicom"})


def _group_series(
    results: Sequence[Header | FileRejected], source: Path
) -> tuple[dict[str, list[Header]], list[FileRejected]]:
    """Accepted files grouped by Series Instance UID, and the damaged files.

    Files that are not DICOM are skipped with a warning, DICOM objects that are not images
    (reports, DICOMDIR) with an info line; every other rejection is a damaged file, returned for
    :func:`_choose_series` to weigh against the series chosen.
    """
    series: dict[str, list[Header]] = {}
    damaged: list[FileRejected] = []
    skipped: list[FileRejected] = []
    for r in results:
        if isinstance(r, FileRejected):
            if r.reason in _SKIPPED_WITH_WARNING:
                logger.warning("%s: skipped, %s.", r.name, r.detail)
                skipped.append(r)
            elif r.reason == "not_an_image":
                logger.info("%s: skipped, %s.", r.name, r.detail)
                skipped.append(r)
            else:
                damaged.append(r)
            continue
        series.setdefault(r.series_uid, []).append(r)
    if not series:
        if damaged:
            raise damaged[0]
        why = (
            f" (skipped: {_fmt_list([f'{s.name}: {s.detail}' for s in skipped], 3)})"
            if skipped
            else ""
        )
        raise DicomError(f"{source}: no DICOM image files found{why}.")
    return series, damaged


def _choose_series(
    groups: Mapping[str, list[Header]],
    damaged: Sequence[FileRejected],
    series_uid: str | None,
    source: Path,
) -> tuple[str, list[Header]]:
    """The series to read, and a refusal when a damaged file may belong to it.

    A damaged file of another series (its Series Instance UID could be read) is skipped with a
    warning; one whose series is the chosen one, or unknown, stops the reading with its reason.
    """
    if series_uid is not None:
        if series_uid not in groups:
            own = [d for d in damaged if d.series_uid == series_uid]
            if own:
                raise own[0]
            raise DicomSeriesError(
                f"{source}: no image series with {tag_label('SeriesInstanceUID')} "
                f"{series_uid}; found: "
                + "; ".join(_series_summary(u, m) for u, m in groups.items())
            )
        chosen = series_uid
    elif len(groups) > 1:
        raise DicomSeriesError(
            f"{source}: {len(groups)} image series found; choose one with series_uid "
            "(--series-uid on the command line): "
            + "; ".join(_series_summary(u, m) for u, m in groups.items())
        )
    else:
        chosen = next(iter(groups))
    for d in damaged:
        if d.series_uid is None or d.series_uid == chosen:
            raise d
        logger.warning("%s: skipped, a file of another series: %s", d.name, d.detail)
    return chosen, list(groups[chosen])


def list_dicom_series(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """List the image series found in a folder (headers only, no pixels decoded).

    Parameters
    ----------
    folder : path-like
        A folder (searched recursively, hidden entries ignored) or one DICOM file.

    Returns
    -------
    list of dict
        One dict per series with ``SeriesInstanceUID``, ``Modality``, ``SeriesDescription``,
        ``SeriesNumber`` and ``n_files``, in order of first appearance.
    """
    source = Path(folder)
    files = walk_files(source, error=DicomError)
    with _quiet_pydicom(), decoding(str(source)):
        results = _read_headers(files, DEFAULT_MAX_PIXELS * 64)
        groups, _damaged = _group_series(results, source)
        return [
            {
                "SeriesInstanceUID": uid,
                "Modality": _plain(m[0].ds.get("Modality")),
                "SeriesDescription": _plain(m[0].ds.get("SeriesDescription")),
                "SeriesNumber": _plain(m[0].ds.get("SeriesNumber")),
                "n_files": len(m),
            }
            for uid, m in groups.items()
        ]


def _workers(workers: int | None) -> int:
    if workers is None:
        from .._threads import io_threads

        return io_threads()
    if workers < 1:
        raise HarmonizationError(f"workers must be at least 1, got {workers}.")
    return int(workers)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Turn pydicom's warnings about odd headers into debug log lines.

    The warning filters are process-wide, so this also covers the reader threads.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("pydicom: %s", w.message)


# ---------------------------------------------------------------------------------------------
# The public reader
# ---------------------------------------------------------------------------------------------


def read_dicom_series(
    folder: str | os.PathLike[str],
    units: str | None = None,
    *,
    series_uid: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dtype: str = "float64",
    workers: int | None = None,
    volume: int | None = None,
    echo: int | None = None,
    variable_spacing: str = "auto",
    **pet_options: Any,
) -> Image:
    """Read one DICOM series into an image in physical units.

    Parameters
    ----------
    folder : path-like
        A folder holding the series (searched recursively; hidden entries ignored; files that are
        not DICOM are skipped with a logged warning), or a single DICOM file.
    units : {None, "hu", "raw", "suv", "suvbw", "suvlbm", "suvbsa", "suvibw", "bqml", \
"rescaled", "philips_fp"}
        ``None`` chooses by Modality: CT → ``"hu"``, PT → ``"suv"``, anything else → ``"raw"``.
        ``"hu"``: Hounsfield units (see :mod:`imharmony.physics.ct`); ``"raw"``: the stored values
        (after sign handling, no rescale); ``"suv*"``: standardized uptake values computed by
        :func:`imharmony.physics.pet.suv_factors`; ``"bqml"``: PET activity concentration in
        Bq/ml (Units BQML rescaled; CNTS through Philips' Activity Concentration Scale Factor; other
        Units refused with the reason — :func:`imharmony.physics.pet.activity_factors`);
        ``"rescaled"``: Rescale Slope × stored +
        Rescale Intercept (per frame; what dcm2niix writes); ``"philips_fp"``: Philips MR
        floating-point values, the rescaled value divided by Rescale Slope × the private Scale
        Slope (2005,xx0E) (see :func:`imharmony.physics.mr.mr_value_scale`).
    series_uid : str, optional
        Series Instance UID to read when the folder holds several image series.
    max_pixels : int
        Largest number of voxels accepted (per file and for the series), checked from the headers
        before any pixel is decoded.
    dtype : {"float64", "float32", "auto"}
        Type of the values. ``"auto"`` gives the smallest integer type holding the values exactly
        when every frame's scale and offset are integers and nothing is padding (typical CT: HU in
        int16), float64 otherwise.
    workers : int, optional
        Threads for reading and converting the pixel data; default
        :func:`imharmony._threads.io_threads` (the project's one thread-count policy)
        (headers are parsed in the calling thread).
    volume : int, optional
        Read only this volume of a 4-D series (counted from 1, in acquisition order).
    echo : int, optional
        Read only the frames of this echo (Echo Numbers (0018,0086), or the rank of the echo
        time for enhanced objects), counted from 1.
    variable_spacing : {"auto", "resample", "refuse"}
        Slices that are not equally spaced along the normal (one orientation, every slice
        placed): ``"resample"`` resamples them onto equidistant slices by linear interpolation
        along the normal (see :mod:`imharmony._dicom.slices` for the grid; a warning is logged
        and ``meta["history"]`` records it); ``"refuse"`` raises; ``"auto"`` (default)
        resamples unless every slice lies on a regular grid with holes, which is what a missing
        file looks like (then it raises).
    **pet_options
        Passed to :func:`imharmony.physics.pet.suv_factors` for SUV units (e.g. body size
        overrides).

    Returns
    -------
    Image
        3-D image; ``array[i, j, k]`` is column ``i``, row ``j`` of slice ``k`` (slices in
        increasing position along the normal of Image Orientation (Patient)); ``spacing`` in mm,
        ``origin`` and ``direction`` in the DICOM patient frame (LPS). ``meta`` holds the first
        slice's useful keywords (``Modality``, ``Manufacturer``, ``SeriesInstanceUID``, ...), plus
        ``"units"``, ``"source"`` (the folder), ``"files"`` (file names in slice order),
        ``"slice_spacing"``. Voxels outside the field of view (Pixel Padding Value and Padding
        Range Limit, compared with the stored values) are NaN: the field of view is
        ``~numpy.isnan(image.array)``, which stays right after any resampling because the NaN
        travel with the values (no separate mask is kept, so none can go stale).

    Raises
    ------
    DicomError
        Damaged files, missing tags (the message names file and tag), no image found.
    DicomSeriesError
        Several series and no ``series_uid``; gaps (see ``variable_spacing``), duplicate
        positions, mixed orientation or size, sheared stacks that are not a gantry tilt.
    DicomSizeError
        A header announcing more than ``max_pixels`` voxels.
    imharmony.physics.ct.HounsfieldError
        A series that cannot be expressed in HU (not a CT image class, Rescale Type not HU,
        missing slope or intercept, Modality LUT Sequence).

    Notes
    -----
    Voxel values: ``v = scale_k × stored + offset_k`` for frame ``k``, with ``scale_k, offset_k``
    = (Rescale Slope, Rescale Intercept) for HU, (slope × f_i, intercept × f_i) for SUV with
    ``f_i`` the SUV factor of instance ``i``, and (1, 0) for raw.
    """
    if units is not None and units not in UNITS:
        raise HarmonizationError(
            f"units={units!r} is not known; choose one of {', '.join(UNITS)} (or None for the "
            "modality's default)."
        )
    if dtype not in DTYPES:
        raise HarmonizationError(f"dtype={dtype!r}: choose {', '.join(map(repr, DTYPES))}.")
    if variable_spacing not in VARIABLE_SPACING:
        raise HarmonizationError(
            f"variable_spacing={variable_spacing!r}: choose one of {', '.join(VARIABLE_SPACING)}."
        )
    if int(max_pixels) < 1:
        raise HarmonizationError(f"max_pixels must be positive, got {max_pixels}.")
    n_workers = _workers(workers)
    source = Path(folder)
    files = walk_files(source, error=DicomError)
    with _quiet_pydicom(), decoding(f"{source}"):
        results = _read_headers(files, int(max_pixels))
        groups, damaged = _group_series(results, source)
        series_uid, members = _choose_series(groups, damaged, series_uid, source)
        for h in members:
            _check_layout(h)
            _unpack_mosaic(h)
        total = sum(h.rows * h.columns * h.n_frames for h in members)
        if total > max_pixels:
            raise DicomSizeError(
                f"{source}: series {series_uid} has {total:.4g} voxels in {len(members)} files, "
                f"above max_pixels={max_pixels}; nothing was decoded. Raise max_pixels if the "
                "series is genuine."
            )
        fr = _collect_frames(members)
        uids = Counter(str(h.ds.get("SOPInstanceUID", "") or h.name) for h in members)
        twice = [u for u, c in uids.items() if c > 1]
        if twice:
            names = [h.name for h in members if str(h.ds.get("SOPInstanceUID", "")) == twice[0]]
            raise DicomSeriesError(
                f"the same instance ({tag_label('SOPInstanceUID')} {twice[0]}) is in several "
                f"files: {_fmt_list(names, 3)}; remove the copies."
            )
        if echo is not None:
            fr = _subset(fr, _select_echo(fr, int(echo), source))
        _geometry_checks(fr, members)
        volumes = _volumes(fr)
        if volume is not None:
            if not 1 <= int(volume) <= len(volumes):
                raise DicomSeriesError(
                    f"{source}: volume {volume} asked but the series has {len(volumes)} "
                    f"volume{'s' if len(volumes) > 1 else ''} (count from 1)."
                )
            volumes = [volumes[int(volume) - 1]]
        first_volume = _subset(fr, volumes[0])
        geom = _geometry(first_volume, members, variable_spacing)
        # Keep only the frames read, in (volume, slice) order.
        fr = _subset(fr, np.concatenate([np.asarray(v)[geom.order] for v in volumes]).tolist())
        n_slices = len(volumes[0])
        volumes = [list(range(t * n_slices, (t + 1) * n_slices)) for t in range(len(volumes))]
        geom = replace(geom, order=np.arange(len(fr.inst)))
        if geom.grid is not None:
            grown = len(volumes) * len(geom.grid) * members[0].rows * members[0].columns
            if grown > max_pixels:
                raise DicomSizeError(
                    f"{source}: series {series_uid} resampled onto equidistant slices would "
                    f"have {grown:.4g} voxels, above max_pixels={max_pixels}; nothing was "
                    "decoded. Raise max_pixels, or read one volume."
                )
        first = members[fr.inst[geom.order[0]]]
        modality = str(first.ds.get("Modality", "") or "")
        mods = Counter(str(h.ds.get("Modality", "") or "") for h in members)
        if len(mods) > 1:
            raise DicomSeriesError(
                f"mixed {tag_label('Modality')} within series {series_uid}: {dict(mods)}."
            )
        if units is None:
            units = {"CT": "hu", "PT": "suv"}.get(modality, "raw")
        scale, offset, padding = _rescale(units, modality, members, fr, geom, pet_options)
        rank = np.empty(len(geom.order), dtype=np.intp)
        rank[geom.order] = np.arange(len(geom.order))
        logger.debug("reading pixels of %d files", len(members))
        stored, value_range = _read_pixels(members, fr, rank, n_workers)
        scale_sorted, offset_sorted = scale[geom.order], offset[geom.order]
        mask = None
        if padding is not None:
            mask = np.zeros(stored.shape, dtype=bool)
            pad_sorted = [padding[i] for i in np.asarray(fr.inst)[geom.order]]
            for k, rng in enumerate(pad_sorted):
                if rng is not None:
                    m = ct.padding_mask(stored[k], rng)
                    assert m is not None
                    mask[k] = m
            if not mask.any():
                mask = None
        values = _to_values(
            stored, scale_sorted, offset_sorted, mask,
            dtype if (geom.shift is None and geom.grid is None) or dtype != "auto" else "float64",
            value_range, n_workers,
        )
        del stored
        if geom.shift is not None:
            values = _deshear(values, geom, n_slices)
            if mask is not None:
                mask = np.isnan(values)
        history: list[dict[str, Any]] = []
        if geom.grid is not None and geom.distances is not None:
            n_vol = values.shape[0] // n_slices
            values = equalize(
                values.reshape(n_vol, n_slices, *values.shape[1:]), geom.distances, geom.grid
            )
            values = values.reshape(n_vol * len(geom.grid), *values.shape[2:])
            n_slices = len(geom.grid)
            history.append({
                "step": "equalize_slices",
                "interpolation": "linear along the slice normal",
                "acquired_mm": [round(float(v), 6) for v in geom.distances],
                "spacing_mm": float(geom.spacing[2]),
                "n_slices": n_slices,
            })
        meta = _meta(first.ds)
        meta.update(
            units=units,
            source=str(source),
            files=[fr.label[k] for k in geom.order],
            slice_spacing=geom.spacing[2],
        )
        if history:
            meta["history"] = history
        if padding is None and units == "hu":
            ends = np.minimum(value_range[0] * scale_sorted, value_range[1] * scale_sorted)
            lowest = float((ends + offset_sorted).min())
            if lowest <= -2000:
                logger.warning(
                    "%s: values down to %g HU but no %s; voxels at or below -2000 HU are "
                    "probably outside the field of view and are left as they are.",
                    source,
                    lowest,
                    tag_label("PixelPaddingValue"),
                )
    n_volumes = values.shape[0] // n_slices
    if n_volumes > 1:
        shape = (n_volumes, n_slices, *values.shape[1:])
        values = values.reshape(shape)
        meta.update(_volume_meta(fr, volumes))
    return Image(
        values.transpose(*range(values.ndim - 1, -1, -1)),
        spacing=geom.spacing,
        origin=geom.origin,
        direction=geom.direction,
        meta=meta,
    )


def _deshear(values: np.ndarray, geom: _Geometry, n_slices: int) -> np.ndarray:
    """Move each slice by its gantry-tilt shift onto the grown rectilinear grid.

    Linear interpolation within the slice (the shift is fractional); the grid's new border,
    outside every acquired slice, takes the series' lowest value, as dcm2niix fills it (air for
    CT), or NaN when the series has padding (NaN already marks what lies outside the field of
    view; dcm2niix fills it with the padding value). NaN spreads to the pixels interpolated
    from it.
    """
    from scipy import ndimage

    assert geom.shift is not None
    i_lo, i_hi, j_lo, j_hi = geom.pad
    n, rows, cols = values.shape
    if np.isnan(values).any():
        fill = math.nan
    else:
        fill = float(values.min()) if values.size else 0.0
    out = np.full((n, rows + j_lo + j_hi, cols + i_lo + i_hi), fill, dtype=values.dtype)
    for k in range(n):
        di, dj = geom.shift[k % n_slices]
        frame = np.full(out.shape[1:], fill, dtype=values.dtype)
        frame[j_lo:j_lo + rows, i_lo:i_lo + cols] = values[k]
        out[k] = ndimage.shift(frame, (dj, di), order=1, mode="constant", cval=fill,
                               prefilter=False)
    return out


def _volume_meta(fr: _Frames, volumes: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Per-volume echo times, b-values and gradient directions (LPS) of a 4-D series."""
    firsts = [v[0] for v in volumes]
    meta: dict[str, Any] = {"n_volumes": len(volumes)}
    times = [fr.echo_time[k] for k in firsts]
    if any(t is not None for t in times):
        meta["echo_times"] = times
    bvals = [fr.b_value[k] for k in firsts]
    if all(b is not None for b in bvals):
        meta["bvals"] = bvals
        grads = [fr.gradient[k] for k in firsts]
        if all(g is not None or b == 0 for g, b in zip(grads, bvals, strict=True)):
            meta["bvecs_lps"] = [list(g) if g is not None else [0.0, 0.0, 0.0] for g in grads]
    return meta


def _meta(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for kw in META_KEYWORDS:
        if kw in ds:
            value = ds.get(kw)
            if value is None or value == "":
                continue
            plain = _plain(value)
            if plain is not None:
                meta[kw] = plain
    return meta


def _rescale(
    units: str,
    modality: str,
    members: Sequence[Header],
    fr: _Frames,
    geom: _Geometry,
    pet_options: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int] | None] | None]:
    """Per-frame scale and offset (frame order of ``fr``) and per-instance padding ranges."""
    n = len(fr.inst)
    if units == "raw":
        if pet_options:
            raise HarmonizationError(
                f"options {sorted(pet_options)} only apply to SUV units, not units='raw'."
            )
        return np.ones(n), np.zeros(n), None
    if units == "hu":
        if pet_options:
            raise HarmonizationError(
                f"options {sorted(pet_options)} only apply to SUV units, not units='hu'."
            )
        for h in members:
            ct.check_ct_instance(h.ds, h.name)
        scale, offset = np.empty(n), np.empty(n)
        for k in range(n):
            scale[k], offset[k] = ct.check_ct_rescale(
                fr.slope[k], fr.intercept[k], fr.rescale_type[k], fr.label[k]
            )
        padding = [ct.padding_range(h.ds, h.name) for h in members]
        return scale, offset, (padding if any(p is not None for p in padding) else None)
    if units in _MR_UNITS:
        if pet_options:
            raise HarmonizationError(
                f"options {sorted(pet_options)} only apply to SUV units, not units={units!r}."
            )
        from ..physics.mr import PHILIPS_SCALE_SLOPE, mr_value_scale

        scale, offset = np.empty(n), np.empty(n)
        for k in range(n):
            ss = None
            if units == "philips_fp":
                ss = _philips_scale_slope(members[fr.inst[k]], fr.frame[k], PHILIPS_SCALE_SLOPE)
            scale[k], offset[k] = mr_value_scale(
                units, fr.slope[k], fr.intercept[k], ss, fr.label[k]
            )
        return scale, offset, None
    # PET: SUV family and Bq/ml
    assert units in _SUV_UNITS or units == "bqml"
    if units == "bqml" and pet_options:
        raise HarmonizationError(
            f"options {sorted(pet_options)} only apply to SUV units, not units='bqml'."
        )
    if modality != "PT":
        raise HarmonizationError(
            f"units={units!r} needs a PET series (Modality 'PT'); this one is {modality!r}."
        )
    slope = np.empty(n)
    intercept = np.empty(n)
    for k in range(n):
        for keyword, src, dst in (
            ("RescaleSlope", fr.slope, slope),
            ("RescaleIntercept", fr.intercept, intercept),
        ):
            if src[k] is None:
                raise DicomError(
                    f"{fr.label[k]}: {tag_label(keyword)} missing; PET values cannot be "
                    "converted without it."
                )
            dst[k] = src[k]
    from ..physics.pet import activity_factors, suv_factors

    # Instances in slice order (the order of their first frame).
    inst_sorted: list[int] = []
    for k in geom.order:
        i = fr.inst[k]
        if i not in inst_sorted:
            inst_sorted.append(i)
    datasets = [members[i].ds for i in inst_sorted]
    factors = np.asarray(
        activity_factors(datasets) if units == "bqml"
        else suv_factors(datasets, units, **pet_options),
        dtype=np.float64,
    )
    if factors.shape != (len(inst_sorted),):
        raise RuntimeError(
            f"suv_factors returned shape {factors.shape} for {len(inst_sorted)} datasets"
        )
    per_inst = np.empty(len(members))
    per_inst[inst_sorted] = factors
    f = per_inst[np.asarray(fr.inst)]
    return slope * f, intercept * f, None


def _philips_scale_slope(h: Header, frame: int, where: tuple[int, str, int]) -> float | None:
    """Philips' private Scale Slope of one frame: in the frame's functional group items (enhanced
    objects) or at the top level (classic objects); None when absent."""
    group, creator, offset = where
    holders: list[Any] = []
    per_frame = h.ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        item = per_frame[frame]
        holders.append(item)
        holders.extend(
            sub for elem in item if elem.VR == "SQ" for sub in (elem.value or [])[:1]
        )
    holders.append(h.ds)
    for holder in holders:
        value = private_value(holder, group, creator, offset)
        if value is None:
            continue
        if isinstance(value, bytes):  # implicit VR: the private dictionary's FL, raw
            if len(value) != 4:
                raise DicomError(
                    f"{h.name}: Philips Scale Slope (2005,xx0E) holds {len(value)} bytes, not "
                    "one 4-byte float."
                )
            (number,) = struct.unpack("<f" if h.little_endian else ">f", value)
            return float(number)
        try:
            many = isinstance(value, Sequence) and not isinstance(value, str)
            number = float(value[0] if many else value)
        except (TypeError, ValueError, IndexError):
            raise DicomError(
                f"{h.name}: Philips Scale Slope (2005,xx0E) is {value!r}, not a number."
            ) from None
        return number
    return None
