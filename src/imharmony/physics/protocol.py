"""Protocol tables (one row per DICOM series) and audits against a reference protocol.

:func:`scan_protocols` walks files and folders, reads DICOM headers only (never pixel data), and
makes one row per series with the acquisition parameters that decide whether images from different
sites can be compared. Files that cannot be used are recorded with a reason and the scan goes on.
:func:`audit_protocols` compares such a table with a reference protocol (YAML file or dict) and
lists every deviation; :func:`summarize_audit` counts them per site.

Errors of a scan
----------------
Rejected files are kept in ``table.attrs["errors"]``, a list of plain dicts with keys ``path``,
``reason`` and ``detail``; :func:`scan_errors` turns it into a DataFrame, ready for
:func:`imharmony.io.write_table`. ``reason`` is one of :data:`ERROR_REASONS`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, HarmonizationError
from .mr import dicom_value, mr_parameters, mr_weighting

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PIXELS",
    "DEVIATION_COLUMNS",
    "ERROR_COLUMNS",
    "ERROR_REASONS",
    "PROTOCOL_COLUMNS",
    "ProtocolReferenceError",
    "audit_protocols",
    "kernel_group",
    "load_reference",
    "scan_errors",
    "scan_protocols",
    "summarize_audit",
]

logger = logging.getLogger(__name__)

#: Largest image (rows × columns × frames × samples) a header may announce before it is rejected.
DEFAULT_MAX_PIXELS = 2**30
#: Deepest sequence nesting accepted (real enhanced headers and SR trees stay well below).
DEFAULT_MAX_DEPTH = 32

#: Columns of a scan's error table.
ERROR_COLUMNS: tuple[str, ...] = ("path", "reason", "detail")
#: Why a file was rejected.
ERROR_REASONS: dict[str, str] = {
    "empty": "the file has no bytes",
    "not_dicom": "not a DICOM file",
    "truncated": "the file ends before its header or pixel data does",
    "missing_pixel_data": "an image header without Pixel Data (7FE0,0010)",
    "too_large": "the header announces more pixels than max_pixels",
    "too_deeply_nested": "sequences nested deeper than max_depth",
    "missing_required_tag": "a tag needed to group the file into a series is absent",
    "invalid_value": "a tag holds a value that cannot be right",
    "not_an_image": "a DICOM object that is not an image (report, structure set, DICOMDIR...)",
    "unreadable": "the file could not be opened or parsed",
}

#: Columns of the protocol table, in order.
PROTOCOL_COLUMNS: tuple[str, ...] = (
    "series_uid", "study_uid", "series_number", "series_description", "modality",
    "manufacturer", "model", "software_versions", "institution", "station", "site",
    "n_instances", "n_files", "n_frames", "rows", "columns",
    "slice_thickness_mm", "pixel_spacing_row_mm", "pixel_spacing_col_mm", "slice_spacing_mm",
    "spacing_between_slices_mm",
    "kernel", "kernel_group", "kernel_group_source", "kvp", "exposure_mas", "tube_current_ma",
    "field_strength_t", "imaging_frequency_mhz", "repetition_time_ms", "echo_time_ms",
    "inversion_time_ms", "flip_angle_deg", "scanning_sequence", "sequence_variant",
    "scan_options", "sequence_name", "mr_acquisition_type", "pixel_bandwidth_hz",
    "contrast_agent", "image_type", "acquisition_contrast", "complex_component", "b_value",
    "weighting", "contrast_enhanced", "quantitative_map", "phase", "derived", "localizer",
    "weighting_reason", "varying", "folder", "first_file",
)

#: Columns of the deviation table made by :func:`audit_protocols`.
DEVIATION_COLUMNS: tuple[str, ...] = (
    "series_uid", "site", "modality", "weighting", "folder", "column", "rule", "expected",
    "found", "severity",
)

# Columns whose values should agree across the instances of a series; listed in ``varying``.
_CONSISTENT = (
    "manufacturer", "model", "station", "rows", "columns", "slice_thickness_mm",
    "pixel_spacing_row_mm", "pixel_spacing_col_mm", "kernel", "kvp", "repetition_time_ms",
    "echo_time_ms", "inversion_time_ms", "flip_angle_deg", "image_type", "weighting",
    "contrast_agent",
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PIXEL_TAGS = {0x7FE00010, 0x7FE00009, 0x7FE00008}


class ProtocolReferenceError(HarmonizationError):
    """A reference protocol (YAML file or dict) that cannot be understood."""


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------------------------
# Kernel groups
# ----------------------------------------------------------------------------------------------

# Words in a kernel name, checked in this order (first match wins).
_KERNEL_WORDS: tuple[tuple[str, str], ...] = (
    ("LUNG", "LUNG"),
    ("BONE", "BONE"),
    ("BRAIN", "BRAIN"),
    ("HEAD", "BRAIN"),
    ("SOFT", "SOFT_TISSUE"),
    ("STANDARD", "SOFT_TISSUE"),
    ("STND", "SOFT_TISSUE"),
    ("SMOOTH", "SOFT_TISSUE"),
    ("BODY", "SOFT_TISSUE"),
    ("ABDOMEN", "SOFT_TISSUE"),
    ("MEDIASTINUM", "SOFT_TISSUE"),
    ("DETAIL", "SHARP"),
    ("EDGE", "SHARP"),
    ("SHARP", "SHARP"),
    ("CHEST", "SHARP"),
)
_SIEMENS_KERNEL = re.compile(r"^([A-Z][A-Z]?)(\d{2})[A-Z]?$")
_CANON_KERNEL = re.compile(r"^FC(\d{2})$")
_PHILIPS_KERNEL = {
    "A": "SOFT_TISSUE", "B": "SOFT_TISSUE", "UA": "SOFT_TISSUE", "UB": "BRAIN", "UC": "SHARP",
    "YA": "SOFT_TISSUE", "YB": "SOFT_TISSUE", "C": "SHARP", "D": "SHARP", "YC": "SHARP",
    "YD": "SHARP", "E": "BONE", "EB": "BONE", "EC": "BONE", "L": "LUNG", "LA": "LUNG",
}


def kernel_group(kernel: Any, manufacturer: Any = None) -> str:
    """Group a CT reconstruction kernel name into SOFT_TISSUE, SHARP, BONE, LUNG or BRAIN.

    Used only when the header has no Convolution Kernel Group (0018,9316). The lookup is
    deliberately coarse, a first sorting of a collection, not a replacement for the vendor's
    documentation:

    * words anywhere in the name: LUNG → LUNG; BONE → BONE; BRAIN or HEAD → BRAIN; SOFT,
      STANDARD, STND, SMOOTH, BODY, ABDOMEN, MEDIASTINUM → SOFT_TISSUE; DETAIL, EDGE, SHARP,
      CHEST → SHARP (GE's STANDARD, SOFT, DETAIL, CHEST, LUNG, BONE, BONEPLUS, EDGE);
    * Siemens letter + two digits (B30f, Br40d, Hr38, Bl57): prefix Bl → LUNG; number < 50 →
      SOFT_TISSUE (BRAIN for head kernels H, Hr, Hc); ≥ 50 → SHARP (≥ 70 for head/ultra-high
      U, Ur → BONE);
    * Canon/Toshiba FCnn: 01–29 → SOFT_TISSUE, 30–39 → BONE, 50–59 → LUNG;
    * Philips letters: A, B, YA, YB, UA → SOFT_TISSUE; UB → BRAIN; C, D, YC, YD, UC → SHARP;
      E, EB, EC → BONE; L, LA → LUNG;
    * anything else → "unknown".

    Parameters
    ----------
    kernel : str
        Convolution Kernel (0018,1210); only its first value is used.
    manufacturer : str, optional
        Manufacturer (0008,0070); restricts the single-letter Philips lookup to Philips.

    Returns
    -------
    str
    """
    if kernel is None or (isinstance(kernel, float) and math.isnan(kernel)):
        return "unknown"
    name = str(kernel).split("\\")[0].strip().upper()
    if not name:
        return "unknown"
    for word, group in _KERNEL_WORDS:
        if word in name:
            return group
    match = _CANON_KERNEL.match(name)
    if match:
        number = int(match.group(1))
        if 1 <= number <= 29:
            return "SOFT_TISSUE"
        if 30 <= number <= 39:
            return "BONE"
        if 50 <= number <= 59:
            return "LUNG"
        return "unknown"
    match = _SIEMENS_KERNEL.match(name)
    if match:
        prefix, number = match.group(1), int(match.group(2))
        if prefix == "BL":
            return "LUNG"
        head = prefix in {"H", "HR", "HC"}
        if number < 50:
            return "BRAIN" if head else "SOFT_TISSUE"
        if number >= 70 and prefix in {"H", "HR", "U", "UR"}:
            return "BONE"
        return "SHARP"
    vendor = "" if manufacturer is None else str(manufacturer).upper()
    if name in _PHILIPS_KERNEL and (not vendor or "PHILIPS" in vendor):
        return _PHILIPS_KERNEL[name]
    return "unknown"


# ----------------------------------------------------------------------------------------------
# Reading one file
# ----------------------------------------------------------------------------------------------


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less DICOM file starts with a group 0002 or 0008 element (little endian)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    return group in (0x0002, 0x0008) and element < 0x0100


def _check_depth(ds: Any, max_depth: int) -> None:
    """Walk every sequence iteratively; reject nesting deeper than ``max_depth``.

    Only sequence elements are converted (pydicom keeps the others raw until they are used),
    which keeps the walk cheap on headers with hundreds of elements.
    """
    from pydicom.datadict import dictionary_VR

    stack: list[tuple[Any, int]] = [(ds, 0)]
    while stack:
        dataset, depth = stack.pop()
        for raw in list(dataset.elements()):
            vr = raw.VR
            if vr is None:  # implicit VR: what the dictionary says
                try:
                    vr = dictionary_VR(raw.tag)
                except KeyError:
                    continue
            if vr != "SQ":
                continue
            if depth + 1 > max_depth:
                raise _Rejected(
                    "too_deeply_nested",
                    f"sequence {raw.tag} is nested more than {max_depth} levels deep",
                )
            elem = dataset[raw.tag]
            if elem.VR == "SQ" and elem.value:
                stack.extend((item, depth + 1) for item in elem.value)


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError):
        return default


def _header_truncated(ds: Any, size: int) -> str | None:
    """Evidence that the file ends inside its header (pydicom reads such files silently)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "FileMetaInformationGroupLength" in meta:
        group_length = _int(meta.FileMetaInformationGroupLength, 0) or 0
        if 132 + 12 + group_length > size:
            return f"the file meta information announces {group_length} bytes; the file is shorter"
    last_end = None
    for elem in ds.elements():
        tell = getattr(elem, "value_tell", None)
        length = getattr(elem, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF:
            continue
        end = tell + length
        if end > size:
            return f"element {elem.tag} announces {length} bytes past the end of the file"
        last_end = end if last_end is None else max(last_end, end)
    if last_end is not None and 0 < size - last_end < 8:
        return f"{size - last_end} stray bytes after the last complete element"
    return None


def _pixel_element(fp: Any, ds: Any, start: int) -> tuple[int, int] | None:
    """(position after the element header, value length) of the Pixel Data at ``start``."""
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = False, True
    fp.seek(start)
    head = fp.read(12)
    if len(head) < 8:
        return None
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group << 16 | elem) not in _PIXEL_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack(endian + "L", head[4:8])
        return start + 8, length
    if len(head) < 12:
        return None
    (length,) = struct.unpack(endian + "L", head[8:12])
    return start + 12, length


def _first_item(ds: Any, keyword: str) -> Any:
    for groups_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = dicom_value(ds, groups_kw)
        if groups:
            seq = dicom_value(groups[0], keyword)
            if seq:
                return seq[0]
    return None


def _value(ds: Any, keyword: str, *macros: str) -> Any:
    """A value from the top level, else from the first functional-group macro holding it."""
    value = dicom_value(ds, keyword)
    if value not in (None, ""):
        return value
    for macro in macros:
        item = _first_item(ds, macro)
        if item is not None:
            value = dicom_value(item, keyword)
            if value not in (None, ""):
                return value
    return None


def _float(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v).strip() for v in value)
    else:
        text = str(value).strip()
    return text or None


def _positions(ds: Any) -> list[tuple[float, float, float]]:
    out = []
    frames = dicom_value(ds, "PerFrameFunctionalGroupsSequence")
    if frames:
        for item in frames:
            seq = dicom_value(item, "PlanePositionSequence")
            pos = dicom_value(seq[0], "ImagePositionPatient") if seq else None
            if pos is not None and len(pos) == 3:
                out.append(tuple(float(v) for v in pos))
    if not out:
        pos = _value(ds, "ImagePositionPatient", "PlanePositionSequence")
        if pos is not None and len(pos) == 3:
            out.append(tuple(float(v) for v in pos))
    return out  # type: ignore[return-value]


def _extract(ds: Any, path: Path) -> dict[str, Any]:
    """The per-instance values the protocol table is made of."""
    modality = _text(dicom_value(ds, "Modality"))
    spacing = _value(ds, "PixelSpacing", "PixelMeasuresSequence")
    orientation = _value(ds, "ImageOrientationPatient", "PlaneOrientationSequence")
    kernel = _text(_value(ds, "ConvolutionKernel", "CTReconstructionSequence"))
    manufacturer = _text(dicom_value(ds, "Manufacturer"))
    group = _text(_value(ds, "ConvolutionKernelGroup", "CTReconstructionSequence"))
    if group:
        group_source = "dicom"
        group = group.upper()
    elif kernel:
        group = kernel_group(kernel, manufacturer)
        group_source = "lookup"
    else:
        group, group_source = None, None
    exposure = _float(_value(ds, "ExposureInmAs", "CTExposureSequence"))
    if math.isnan(exposure):
        exposure = _float(dicom_value(ds, "Exposure"))
    current = _float(_value(ds, "XRayTubeCurrentInmA", "CTExposureSequence"))
    if math.isnan(current):
        current = _float(dicom_value(ds, "XRayTubeCurrent"))
    institution = _text(dicom_value(ds, "InstitutionName"))
    station = _text(dicom_value(ds, "StationName"))
    record: dict[str, Any] = {
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": _text(dicom_value(ds, "StudyInstanceUID")),
        "sop_instance_uid": _text(dicom_value(ds, "SOPInstanceUID")),
        "instance_number": _int(dicom_value(ds, "InstanceNumber")),
        "series_number": _int(dicom_value(ds, "SeriesNumber")),
        "series_description": _text(dicom_value(ds, "SeriesDescription")),
        "modality": modality,
        "manufacturer": manufacturer,
        "model": _text(dicom_value(ds, "ManufacturerModelName")),
        "software_versions": _text(dicom_value(ds, "SoftwareVersions")),
        "institution": institution,
        "station": station,
        "site": " / ".join(v for v in (institution, station) if v) or "unknown",
        "n_frames": _int(dicom_value(ds, "NumberOfFrames"), 1) or 1,
        "rows": _int(dicom_value(ds, "Rows")),
        "columns": _int(dicom_value(ds, "Columns")),
        "slice_thickness_mm": _float(_value(ds, "SliceThickness", "PixelMeasuresSequence")),
        "pixel_spacing_row_mm": _float(spacing[0]) if spacing and len(spacing) == 2 else math.nan,
        "pixel_spacing_col_mm": _float(spacing[1]) if spacing and len(spacing) == 2 else math.nan,
        "spacing_between_slices_mm": _float(
            _value(ds, "SpacingBetweenSlices", "PixelMeasuresSequence")
        ),
        "kernel": kernel,
        "kernel_group": group,
        "kernel_group_source": group_source,
        "kvp": _float(_value(ds, "KVP", "CTXRayDetailsSequence")),
        "exposure_mas": exposure,
        "tube_current_ma": current,
        "orientation": tuple(round(float(v), 4) for v in orientation)
        if orientation is not None and len(orientation) == 6
        else None,
        "positions": _positions(ds),
        "path": str(path),
    }
    if modality == "MR":
        params = mr_parameters(ds)
        weighting = mr_weighting(params)
        record.update(
            {
                "field_strength_t": params.field_strength_t,
                "imaging_frequency_mhz": params.imaging_frequency_mhz,
                "repetition_time_ms": params.repetition_time_ms,
                "echo_time_ms": params.echo_time_ms,
                "inversion_time_ms": params.inversion_time_ms,
                "flip_angle_deg": params.flip_angle_deg,
                "scanning_sequence": "\\".join(params.scanning_sequence) or None,
                "sequence_variant": "\\".join(params.sequence_variant) or None,
                "scan_options": "\\".join(params.scan_options) or None,
                "sequence_name": params.sequence_name,
                "mr_acquisition_type": params.mr_acquisition_type,
                "pixel_bandwidth_hz": params.pixel_bandwidth_hz,
                "contrast_agent": params.contrast_agent,
                "image_type": "\\".join(params.image_type) or None,
                "acquisition_contrast": params.acquisition_contrast,
                "complex_component": params.complex_component,
                "b_value": params.b_value,
                "weighting": weighting.weighting,
                "contrast_enhanced": weighting.contrast_enhanced,
                "quantitative_map": weighting.quantitative_map,
                "phase": weighting.phase,
                "derived": weighting.derived,
                "localizer": weighting.localizer,
                "weighting_reason": weighting.reason,
            }
        )
    else:
        record["image_type"] = _text(dicom_value(ds, "ImageType"))
        record["contrast_agent"] = _text(dicom_value(ds, "ContrastBolusAgent"))
    return record


def _read_file(path: Path, *, max_pixels: int, max_depth: int) -> dict[str, Any]:
    """Read one file's header; raise _Rejected with the reason when it cannot be used.

    Warnings pydicom emits about odd values are logged (debug), never raised: a scan must not
    stop, nor turn noisy, because one file holds a strange value.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _read_checked(path, max_pixels=max_pixels, max_depth=max_depth)
        finally:
            for warning in caught:
                logger.debug("%s: %s", path, warning.message)


def _read_checked(path: Path, *, max_pixels: int, max_depth: int) -> dict[str, Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _Rejected("unreadable", f"cannot stat the file ({exc.strerror})") from None
    if size == 0:
        raise _Rejected("empty", "the file is empty (0 bytes)")
    try:
        fp = open(path, "rb")  # closed in the finally below
    except OSError as exc:
        raise _Rejected("unreadable", f"cannot open the file ({exc.strerror})") from None
    try:
        head = fp.read(132)
        has_prefix = len(head) == 132 and head[128:132] == b"DICM"
        if not has_prefix and not _looks_like_raw_dicom(head):
            raise _Rejected(
                "not_dicom",
                "no 'DICM' prefix at byte 128 and no DICOM element at the start of the file",
            )
        fp.seek(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_prefix)
                pixel_start = fp.tell()
                cut = _header_truncated(ds, size)  # before _check_depth converts raw elements
                _check_depth(ds, max_depth)
            except _Rejected:
                raise
            except RecursionError:
                raise _Rejected(
                    "too_deeply_nested", "sequences nested too deeply for the parser"
                ) from None
            except InvalidDicomError as exc:
                raise _Rejected("not_dicom", str(exc)) from None
            except EOFError as exc:
                raise _Rejected("truncated", f"the file ends early ({exc})") from None
            except Exception as exc:  # any parser failure is a property of the file
                raise _Rejected("unreadable", f"{type(exc).__name__}: {exc}") from None
        messages = [str(w.message) for w in caught]
        for message in messages:
            logger.debug("%s: pydicom: %s", path, message)
        eof = next((m for m in messages if "end of file" in m.lower() or "eof" in m.lower()), None)

        missing = [
            name
            for name, keyword in (
                ("(0020,000E) Series Instance UID", "SeriesInstanceUID"),
                ("(0008,0016) SOP Class UID", "SOPClassUID"),
                ("(0008,0060) Modality", "Modality"),
            )
            if not _text(dicom_value(ds, keyword))
        ]
        truncated = eof or cut
        if missing:
            if truncated:
                raise _Rejected("truncated", truncated)
            if not has_prefix and len(missing) == 3:
                raise _Rejected("not_dicom", "no DICOM header could be read")
            raise _Rejected(
                "missing_required_tag",
                f"missing {', '.join(missing)}; the file cannot be placed in a series",
            )
        uid = str(ds.SeriesInstanceUID).strip()
        if not _UID.match(uid) or len(uid) > 64:
            raise _Rejected("invalid_value", f"(0020,000E) Series Instance UID {uid[:70]!r}")

        rows, cols = _int(dicom_value(ds, "Rows")), _int(dicom_value(ds, "Columns"))
        is_image = rows is not None and cols is not None
        ts = getattr(getattr(ds, "file_meta", None), "get", lambda _k: None)("TransferSyntaxUID")
        deflated = ts == DeflatedExplicitVRLittleEndian
        pixel = None if deflated else _pixel_element(fp, ds, pixel_start)
        if not is_image:
            if pixel is not None:
                raise _Rejected("missing_required_tag", "Pixel Data without (0028,0010) Rows")
            sop = dicom_value(ds, "SOPClassUID")
            name = getattr(sop, "name", str(sop))
            raise _Rejected("not_an_image", f"SOP class {name} has no Rows/Columns")
        frames = _int(dicom_value(ds, "NumberOfFrames"), 1)
        samples = _int(dicom_value(ds, "SamplesPerPixel"), 1)
        bits = _int(dicom_value(ds, "BitsAllocated"), 16)
        if frames is None or samples is None or bits is None or min(rows, cols) <= 0:
            raise _Rejected("invalid_value", "Rows, Columns, Number of Frames or Samples per Pixel")
        if frames <= 0 or samples <= 0 or bits <= 0:
            raise _Rejected(
                "invalid_value",
                f"Number of Frames {frames}, Samples per Pixel {samples}, Bits Allocated {bits}",
            )
        n_pixels = rows * cols * frames * samples
        if n_pixels > max_pixels:
            raise _Rejected(
                "too_large",
                f"the header announces {rows} × {cols} × {frames} frames × {samples} samples = "
                f"{n_pixels:,} pixels, above max_pixels={max_pixels:,}",
            )
        if not deflated:
            if pixel is None:
                if truncated:
                    raise _Rejected("truncated", truncated)
                raise _Rejected(
                    "missing_pixel_data",
                    "no Pixel Data (7FE0,0010) after the header: the file is header-only or was "
                    "cut at an element boundary",
                )
            value_start, length = pixel
            if length != 0xFFFFFFFF:
                remaining = size - value_start
                if length > remaining:
                    raise _Rejected(
                        "truncated",
                        f"Pixel Data announces {length:,} bytes but only {remaining:,} remain",
                    )
                expected = (n_pixels * bits + 7) // 8
                if length < expected:
                    raise _Rejected(
                        "truncated",
                        f"Pixel Data holds {length:,} bytes; the header announces {expected:,}",
                    )
        return _extract(ds, path)
    finally:
        fp.close()


# ----------------------------------------------------------------------------------------------
# Walking and grouping
# ----------------------------------------------------------------------------------------------


def _iter_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for raw in paths:
        path = Path(raw)
        if path.is_file():
            add(path)
        elif path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if not name.startswith("."):
                        add(Path(root) / name)
        else:
            raise DataError(f"{path}: no such file or folder; check the path given to scan.")
    return files


def _progress_hook(progress: Any, total: int) -> Callable[[int], None]:
    if progress is None:
        return lambda done: None
    if hasattr(progress, "add_task") and hasattr(progress, "advance"):
        task = progress.add_task("Scanning DICOM headers", total=total)
        return lambda done: progress.advance(task)
    if callable(progress):
        return lambda done: progress(done, total)
    raise HarmonizationError(
        f"progress must be None, a callable progress(done, total) or a rich Progress; got "
        f"{type(progress).__name__}."
    )


def _slice_spacing(records: Sequence[Mapping[str, Any]]) -> tuple[float, list[str]]:
    """Median spacing of the slice positions along the slice normal, and what varies."""
    notes: list[str] = []
    orientations = {r["orientation"] for r in records if r["orientation"] is not None}
    if len(orientations) != 1:
        if len(orientations) > 1:
            notes.append("orientation")
        return math.nan, notes
    (orientation,) = orientations
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    points = [p for r in records for p in r["positions"]]
    if len(points) < 2 or not np.any(normal):
        return math.nan, notes
    along = np.unique(np.round(np.asarray(points) @ normal, 4))
    if along.size < 2:
        return math.nan, notes
    steps = np.diff(along)
    median = float(np.median(steps))
    if float(steps.max() - steps.min()) > 0.01 * median + 1e-3:
        notes.append("slice_spacing")
    return median, notes


def _is_missing_value(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _series_row(uid: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    records = sorted(
        records,
        key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0, r["path"]),
    )
    first = records[0]
    row = {column: first.get(column) for column in PROTOCOL_COLUMNS}
    row["series_uid"] = uid
    varying = []
    for column in _CONSISTENT:
        distinct = {r.get(column) for r in records if not _is_missing_value(r.get(column))}
        if len(distinct) > 1:
            varying.append(column)
    for column in ("exposure_mas", "tube_current_ma"):  # tube current modulation: median
        values = [r[column] for r in records if not _is_missing_value(r[column])]
        row[column] = float(np.median(values)) if values else math.nan
    spacing, notes = _slice_spacing(records)
    varying.extend(notes)
    instance_uids = {r["sop_instance_uid"] or r["path"] for r in records}
    row.update(
        {
            "n_instances": len(instance_uids),
            "n_files": len(records),
            "n_frames": sum(int(r["n_frames"]) for r in records),
            "slice_spacing_mm": spacing,
            "varying": ";".join(varying) or None,
            "folder": os.path.commonpath([str(Path(r["path"]).parent) for r in records]),
            "first_file": first["path"],
        }
    )
    return row


def scan_protocols(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    progress: Any = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> pd.DataFrame:
    """Make the protocol table of a collection: one row per DICOM series.

    Walks the given files and folders (recursively, without following symbolic links to folders,
    skipping names that start with a dot) and reads each file's header with
    ``pydicom.dcmread(..., stop_before_pixels=True)``; pixel data are never read. Files are
    grouped by Series Instance UID. No path is ever built from a tag value.

    Parameters
    ----------
    paths : path or iterable of paths
        Files and folders.
    progress : callable or rich.progress.Progress, optional
        Called as ``progress(done, total)`` after each file; or a rich ``Progress`` to which a
        task is added and advanced.
    max_pixels : int, default 2**30
        Files whose header announces more pixels (rows × columns × frames × samples) are rejected
        as ``too_large`` before anything else is done with them.
    max_depth : int, default 32
        Deepest sequence nesting accepted.

    Returns
    -------
    pandas.DataFrame
        One row per series with the columns :data:`PROTOCOL_COLUMNS` (sorted by folder, series
        number and UID). Values are those of the series' first instance (lowest Instance
        Number), except ``exposure_mas`` and ``tube_current_ma`` (median over instances, since
        tube current modulation changes them per slice), ``slice_spacing_mm`` (median step of
        Image Position (Patient) along the slice normal; Slice Thickness and Spacing Between
        Slices can disagree with it) and the counts. ``varying`` lists the columns whose value is
        not the same in every instance (and ``orientation`` / ``slice_spacing`` for mixed
        orientations or irregular gaps). MR columns (TR, TE, ``weighting`` ...) are filled for MR
        series only; ``site`` is "institution / station".

        ``table.attrs["errors"]`` lists the rejected files (see :func:`scan_errors`);
        ``table.attrs["n_files"]`` is the number of files looked at.

    Raises
    ------
    DataError
        If a given path does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = _iter_files(paths)
    advance = _progress_hook(progress, len(files))
    by_series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: list[dict[str, str]] = []
    for done, path in enumerate(files, start=1):
        try:
            record = _read_file(path, max_pixels=max_pixels, max_depth=max_depth)
        except _Rejected as rejected:
            errors.append({"path": str(path), "reason": rejected.reason, "detail": rejected.detail})
            logger.debug("%s rejected: %s (%s)", path, rejected.reason, rejected.detail)
        except Exception as exc:  # a value no check foresaw: record it, never stop the scan
            detail = f"{type(exc).__name__}: {exc}"
            errors.append({"path": str(path), "reason": "unreadable", "detail": detail})
            logger.debug("%s rejected: unreadable (%s)", path, detail, exc_info=True)
        else:
            by_series[record["series_uid"]].append(record)
        advance(done)

    rows = [_series_row(uid, records) for uid, records in by_series.items()]
    table = pd.DataFrame(rows, columns=list(PROTOCOL_COLUMNS))
    if not table.empty:
        table = table.sort_values(
            ["folder", "series_number", "series_uid"], na_position="last", kind="stable"
        ).reset_index(drop=True)
    table.attrs["errors"] = errors
    table.attrs["n_files"] = len(files)
    logger.info(
        "scanned %d files: %d series, %d files rejected", len(files), len(table), len(errors)
    )
    return table


def scan_errors(table: pd.DataFrame) -> pd.DataFrame:
    """The files a scan rejected, as a DataFrame with columns :data:`ERROR_COLUMNS`.

    Parameters
    ----------
    table : pandas.DataFrame
        A table returned by :func:`scan_protocols` (the errors live in ``table.attrs``).
    """
    return pd.DataFrame(list(table.attrs.get("errors", [])), columns=list(ERROR_COLUMNS))


# ----------------------------------------------------------------------------------------------
# Reference protocols and audits
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    column: str
    kind: str  # "exact", "one_of", "range", "tolerance", "percent"
    value: Any = None
    low: float | None = None
    high: float | None = None
    tol: float | None = None
    allowed: tuple[Any, ...] = ()
    severity: str = "error"

    def expected(self) -> str:
        if self.kind == "exact":
            return _show(self.value)
        if self.kind == "one_of":
            return "one of " + ", ".join(_show(v) for v in self.allowed)
        if self.kind == "range":
            low = "-inf" if self.low is None else _show(self.low)
            high = "inf" if self.high is None else _show(self.high)
            return f"[{low}, {high}]"
        if self.kind == "tolerance":
            return f"{_show(self.value)} ± {_show(self.tol)}"
        return f"{_show(self.value)} ± {_show(self.tol)}%"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolReferenceError(f"{where}: expected a number, got {value!r}.")
    if not math.isfinite(float(value)):
        raise ProtocolReferenceError(f"{where}: {value!r} is not a finite number.")
    return float(value)


def _parse_rule(column: str, spec: Any, where: str) -> _Rule:
    severity = "error"
    if isinstance(spec, Mapping):
        spec = dict(spec)
        severity = str(spec.pop("severity", "error")).lower()
        if severity not in {"error", "warning"}:
            raise ProtocolReferenceError(
                f"{where}: severity must be 'error' or 'warning', got {severity!r}."
            )
        keys = set(spec)
        if keys == {"value"}:
            spec = spec["value"]
        elif keys == {"value", "tol"}:
            tol = _number(spec["tol"], f"{where}.tol")
            if tol < 0:
                raise ProtocolReferenceError(f"{where}.tol: must not be negative.")
            return _Rule(column, "tolerance", value=_number(spec["value"], f"{where}.value"),
                         tol=tol, severity=severity)
        elif keys == {"value", "tol_percent"}:
            tol = _number(spec["tol_percent"], f"{where}.tol_percent")
            if tol < 0:
                raise ProtocolReferenceError(f"{where}.tol_percent: must not be negative.")
            return _Rule(column, "percent", value=_number(spec["value"], f"{where}.value"),
                         tol=tol, severity=severity)
        elif keys == {"range"}:
            spec = spec["range"]
            if not isinstance(spec, list):
                raise ProtocolReferenceError(f"{where}.range: expected [min, max].")
        elif keys == {"one_of"}:
            allowed = spec["one_of"]
            if not isinstance(allowed, list) or not allowed:
                raise ProtocolReferenceError(f"{where}.one_of: expected a non-empty list.")
            return _Rule(column, "one_of", allowed=tuple(allowed), severity=severity)
        else:
            raise ProtocolReferenceError(
                f"{where}: cannot read the keys {sorted(keys)}; use a value, [min, max], "
                "{value, tol}, {value, tol_percent}, {range: [min, max]} or {one_of: [...]}, "
                "each optionally with severity: warning."
            )
    if isinstance(spec, list):
        if len(spec) != 2 or not all(v is None or isinstance(v, (int, float)) for v in spec):
            raise ProtocolReferenceError(
                f"{where}: a list must be a range [min, max] of two numbers (null for an open "
                "end); for a list of allowed values write {one_of: [...]}."
            )
        low = None if spec[0] is None else _number(spec[0], f"{where}[0]")
        high = None if spec[1] is None else _number(spec[1], f"{where}[1]")
        if low is not None and high is not None and low > high:
            raise ProtocolReferenceError(f"{where}: range [{low:g}, {high:g}] has min > max.")
        return _Rule(column, "range", low=low, high=high, severity=severity)
    if spec is None or isinstance(spec, (dict, set, tuple)):
        raise ProtocolReferenceError(f"{where}: no expected value given.")
    return _Rule(column, "exact", value=spec, severity=severity)


def _parse_rules(spec: Any, where: str) -> list[_Rule]:
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ProtocolReferenceError(f"{where}: expected a mapping of column: rule.")
    return [_parse_rule(str(col), rule, f"{where}.{col}") for col, rule in spec.items()]


def load_reference(reference: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a reference protocol (YAML file or dict).

    The format (see ``examples/reference_protocol.yaml``)::

        version: 1
        modalities:
          CT:
            rules:                       # every CT series
              kvp: 120                   # exact value (text compares case-insensitively)
              slice_thickness_mm: [0.9, 1.5]           # range [min, max]; null = open end
              pixel_spacing_row_mm: {value: 0.7, tol: 0.1}        # value ± tol
              exposure_mas: {value: 200, tol_percent: 25, severity: warning}   # ± percent
              kernel_group: {one_of: [SOFT_TISSUE, BRAIN]}
          MR:
            rules: {field_strength_t: {value: 3.0, tol: 0.05}}
            weightings:                  # only series of that weighting
              T1w: {repetition_time_ms: [400, 800]}

    Returns
    -------
    dict
        ``{"modalities": {MODALITY: {"rules": [...], "weightings": {W: [...]}}}}`` with parsed
        rules (internal objects).

    Raises
    ------
    ProtocolReferenceError
        If the file is missing or not YAML, or the structure or a rule cannot be read; the
        message names the key path (e.g. ``modalities.CT.rules.kvp``).
    """
    source = "reference"
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        source = str(path)
        if not path.is_file():
            raise ProtocolReferenceError(
                f"{path}: no such reference protocol; see examples/reference_protocol.yaml."
            )
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ProtocolReferenceError(f"{path}: not valid YAML ({exc}).") from None
    else:
        data = reference
    if not isinstance(data, Mapping) or "modalities" not in data:
        raise ProtocolReferenceError(
            f"{source}: expected a mapping with a 'modalities' key (see "
            "examples/reference_protocol.yaml)."
        )
    extra = set(data) - {"version", "modalities", "description"}
    if extra:
        raise ProtocolReferenceError(f"{source}: unknown top-level keys {sorted(extra)}.")
    if data.get("version", 1) != 1:
        raise ProtocolReferenceError(
            f"{source}: version {data.get('version')!r} is not supported (only 1)."
        )
    modalities = data["modalities"]
    if not isinstance(modalities, Mapping) or not modalities:
        raise ProtocolReferenceError(f"{source}: 'modalities' must map modality names to rules.")
    parsed: dict[str, Any] = {}
    for modality, spec in modalities.items():
        where = f"{source}: modalities.{modality}"
        if not isinstance(spec, Mapping):
            raise ProtocolReferenceError(f"{where}: expected 'rules' and/or 'weightings'.")
        extra = set(spec) - {"rules", "weightings"}
        if extra:
            raise ProtocolReferenceError(
                f"{where}: unknown keys {sorted(extra)}; expected 'rules' and/or 'weightings'."
            )
        weightings = spec.get("weightings") or {}
        if not isinstance(weightings, Mapping):
            raise ProtocolReferenceError(f"{where}.weightings: expected weighting: rules.")
        parsed[str(modality).upper()] = {
            "rules": _parse_rules(spec.get("rules"), f"{where}.rules"),
            "weightings": {
                str(w): _parse_rules(rules, f"{where}.weightings.{w}")
                for w, rules in weightings.items()
            },
        }
    return {"modalities": parsed}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _equal(found: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        text = str(found).strip().lower()
        return text in ({"true", "1", "1.0", "yes"} if expected else {"false", "0", "0.0", "no"})
    if isinstance(expected, (int, float)):
        number = _as_number(found)
        return number is not None and math.isclose(number, float(expected), rel_tol=1e-9,
                                                   abs_tol=1e-12)
    return str(found).strip().casefold() == str(expected).strip().casefold()


def _check(rule: _Rule, found: Any) -> bool:
    """True when ``found`` satisfies the rule."""
    if rule.kind == "exact":
        return _equal(found, rule.value)
    if rule.kind == "one_of":
        return any(_equal(found, v) for v in rule.allowed)
    number = _as_number(found)
    if number is None:
        return False
    if rule.kind == "range":
        eps = 1e-9 * max(1.0, abs(number))
        return (rule.low is None or number >= rule.low - eps) and (
            rule.high is None or number <= rule.high + eps
        )
    assert rule.tol is not None
    bound = rule.tol if rule.kind == "tolerance" else abs(rule.value) * rule.tol / 100.0
    return abs(number - rule.value) <= bound * (1 + 1e-12) + 1e-12


def audit_protocols(
    table: pd.DataFrame, reference: str | os.PathLike[str] | Mapping[str, Any]
) -> pd.DataFrame:
    """Compare a protocol table with a reference protocol; one row per deviation.

    Parameters
    ----------
    table : pandas.DataFrame
        A protocol table (:func:`scan_protocols`, or the CSV it was written to, read back).
    reference : path or mapping
        A reference protocol, see :func:`load_reference` and ``examples/reference_protocol.yaml``.
        Rules under ``modalities.<M>.rules`` apply to every series of modality M; rules under
        ``modalities.<M>.weightings.<W>`` to its series of weighting W as well. Series of a
        modality the reference does not name are not audited.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DEVIATION_COLUMNS`: the series (``series_uid``, ``site``, ``modality``,
        ``weighting``, ``folder``), the ``column`` checked, the ``rule`` kind (exact, one_of,
        range, tolerance, percent), ``expected`` and ``found`` as text, and ``severity`` (the
        rule's, "error" by default; "warning" when the value is missing and so cannot be
        checked, with ``found`` = "missing").

    Raises
    ------
    ProtocolReferenceError
        If the reference cannot be read or names a column the table does not have.
    DataError
        If the table lacks the ``modality`` column.
    """
    parsed = load_reference(reference)
    if "modality" not in table.columns:
        raise DataError("protocol table: no 'modality' column; make it with imharmony scan.")
    wanted = {
        rule.column
        for spec in parsed["modalities"].values()
        for rules in (spec["rules"], *spec["weightings"].values())
        for rule in rules
    }
    unknown = sorted(wanted - set(table.columns))
    if unknown:
        raise ProtocolReferenceError(
            f"the reference checks columns the protocol table does not have: {unknown}; "
            f"available columns: {', '.join(map(str, table.columns))}."
        )

    def cell(row: pd.Series, column: str) -> Any:
        return row[column] if column in row.index and not _missing(row[column]) else None

    records: list[dict[str, Any]] = []
    for _, row in table.iterrows():
        modality = cell(row, "modality")
        spec = parsed["modalities"].get(str(modality).upper()) if modality is not None else None
        if spec is None:
            continue
        weighting = cell(row, "weighting")
        rules = list(spec["rules"])
        if weighting is not None:
            for name, extra in spec["weightings"].items():
                if name.casefold() == str(weighting).casefold():
                    rules.extend(extra)
        for rule in rules:
            found = cell(row, rule.column)
            if found is None:
                severity, shown = "warning", "missing"
            elif _check(rule, found):
                continue
            else:
                severity, shown = rule.severity, _show(found)
            records.append(
                {
                    "series_uid": cell(row, "series_uid"),
                    "site": cell(row, "site") or "unknown",
                    "modality": modality,
                    "weighting": weighting,
                    "folder": cell(row, "folder"),
                    "column": rule.column,
                    "rule": rule.kind,
                    "expected": rule.expected(),
                    "found": shown,
                    "severity": severity,
                }
            )
    deviations = pd.DataFrame(records, columns=list(DEVIATION_COLUMNS))
    logger.info("audit: %d deviations in %d series", len(deviations),
                deviations["series_uid"].nunique())
    return deviations


def summarize_audit(deviations: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Count deviations per site.

    Parameters
    ----------
    deviations : pandas.DataFrame
        The output of :func:`audit_protocols`.
    table : pandas.DataFrame, optional
        The audited protocol table; when given, ``n_series`` counts every series of each site
        and sites without deviations appear with zeros.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site``, ``n_series`` (when ``table`` is given),
        ``n_series_with_deviations``, ``n_deviations``, ``n_errors``, ``n_warnings`` and
        ``columns`` (the deviating columns, most frequent first, "; "-separated); sorted by
        errors, then warnings, descending.
    """
    out_columns = ["site", "n_series_with_deviations", "n_deviations", "n_errors", "n_warnings",
                   "columns"]
    rows: dict[str, dict[str, Any]] = {}
    if table is not None:
        sites = table["site"] if "site" in table.columns else pd.Series(["unknown"] * len(table))
        for site, count in sites.fillna("unknown").astype(str).value_counts().items():
            rows[str(site)] = {"site": str(site), "n_series": int(count)}
        out_columns.insert(1, "n_series")
    for site, group in deviations.groupby(deviations["site"].fillna("unknown").astype(str)):
        counts = group["column"].value_counts()
        entry = rows.setdefault(str(site), {"site": str(site)})
        if table is not None:
            entry.setdefault("n_series", 0)
        entry.update(
            {
                "n_series_with_deviations": int(group["series_uid"].nunique()),
                "n_deviations": len(group),
                "n_errors": int((group["severity"] == "error").sum()),
                "n_warnings": int((group["severity"] == "warning").sum()),
                "columns": "; ".join(counts.index.astype(str)),
            }
        )
    for entry in rows.values():
        for key in ("n_series_with_deviations", "n_deviations", "n_errors", "n_warnings"):
            entry.setdefault(key, 0)
        entry.setdefault("columns", "")
    summary = pd.DataFrame(list(rows.values()), columns=out_columns)
    if summary.empty:
        return summary
    return summary.sort_values(
        ["n_errors", "n_warnings", "site"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
