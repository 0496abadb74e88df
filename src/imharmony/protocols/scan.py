"""Protocol tables (one row per DICOM series) from DICOM headers.

:func:`scan_protocols` walks files and folders, reads DICOM headers only (never pixel data), and
makes one row per series with the acquisition parameters that decide whether images from different
sites can be compared. Files that cannot be used are recorded with a reason and the scan goes on.
Files are read through the one DICOM header reader (:func:`imharmony._dicom.header.read_header`),
so a scan accepts and rejects exactly the files ``convert`` does.

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
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._dicom.header import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_PIXELS,
    REJECT_REASONS,
    FileRejected,
    read_header,
)
from .._dicom.tags import as_float, as_int, as_text, dicom_value, functional_item, plain_value
from .._dicom.walk import walk_files
from ..errors import HarmonizationError
from ..physics.mr import mr_parameters, mr_weighting
from .kernels import kernel_group

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PIXELS",
    "ERROR_COLUMNS",
    "ERROR_REASONS",
    "PROTOCOL_COLUMNS",
    "scan_errors",
    "scan_protocols",
]

logger = logging.getLogger(__name__)

#: Columns of a scan's error table.
ERROR_COLUMNS: tuple[str, ...] = ("path", "reason", "detail")
#: Why a file was rejected (the reasons of the one DICOM acceptance policy).
ERROR_REASONS: dict[str, str] = REJECT_REASONS

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

# Columns whose values should agree across the instances of a series; listed in ``varying``.
_CONSISTENT = (
    "manufacturer", "model", "station", "rows", "columns", "slice_thickness_mm",
    "pixel_spacing_row_mm", "pixel_spacing_col_mm", "kernel", "kvp", "repetition_time_ms",
    "echo_time_ms", "inversion_time_ms", "flip_angle_deg", "image_type", "weighting",
    "contrast_agent",
)


def _value(ds: Any, keyword: str, *macros: str) -> Any:
    """A value from the top level, else from the first functional-group macro holding it."""
    value = plain_value(ds, keyword)
    if value is not None:
        return value
    for macro in macros:
        item = functional_item(ds, macro)
        if item is not None:
            value = plain_value(item, keyword)
            if value is not None:
                return value
    return None


def _float(value: Any) -> float:
    return as_float(value, math.nan)  # type: ignore[return-value]


def _point(value: Any, n: int) -> tuple[float, ...] | None:
    """``n`` finite numbers of a multi-valued header value, None when it is not that."""
    if not isinstance(value, list) or len(value) != n:
        return None
    out = tuple(as_float(v, math.nan) for v in value)
    return None if any(math.isnan(v) for v in out) else out  # type: ignore[arg-type]


def _positions(ds: Any) -> list[tuple[float, ...]]:
    out = []
    frames = dicom_value(ds, "PerFrameFunctionalGroupsSequence")
    if frames:
        for item in frames:
            seq = dicom_value(item, "PlanePositionSequence")
            pos = _point(plain_value(seq[0], "ImagePositionPatient"), 3) if seq else None
            if pos is not None:
                out.append(pos)
    if not out:
        pos = _point(_value(ds, "ImagePositionPatient", "PlanePositionSequence"), 3)
        if pos is not None:
            out.append(pos)
    return out


def _extract(ds: Any, path: Path, series_uid: str) -> dict[str, Any]:
    """The per-instance values the protocol table is made of."""
    modality = as_text(plain_value(ds, "Modality"))
    spacing = _value(ds, "PixelSpacing", "PixelMeasuresSequence")
    two = isinstance(spacing, list) and len(spacing) == 2
    orientation = _point(_value(ds, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
    kernel = as_text(_value(ds, "ConvolutionKernel", "CTReconstructionSequence"))
    manufacturer = as_text(plain_value(ds, "Manufacturer"))
    group = as_text(_value(ds, "ConvolutionKernelGroup", "CTReconstructionSequence"))
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
        exposure = _float(plain_value(ds, "Exposure"))
    current = _float(_value(ds, "XRayTubeCurrentInmA", "CTExposureSequence"))
    if math.isnan(current):
        current = _float(plain_value(ds, "XRayTubeCurrent"))
    institution = as_text(plain_value(ds, "InstitutionName"))
    station = as_text(plain_value(ds, "StationName"))
    record: dict[str, Any] = {
        "series_uid": series_uid,
        "study_uid": as_text(plain_value(ds, "StudyInstanceUID")),
        "sop_instance_uid": as_text(plain_value(ds, "SOPInstanceUID")),
        "instance_number": as_int(plain_value(ds, "InstanceNumber")),
        "series_number": as_int(plain_value(ds, "SeriesNumber")),
        "series_description": as_text(plain_value(ds, "SeriesDescription")),
        "modality": modality,
        "manufacturer": manufacturer,
        "model": as_text(plain_value(ds, "ManufacturerModelName")),
        "software_versions": as_text(plain_value(ds, "SoftwareVersions")),
        "institution": institution,
        "station": station,
        "site": " / ".join(v for v in (institution, station) if v) or "unknown",
        "n_frames": as_int(plain_value(ds, "NumberOfFrames"), 1) or 1,
        "rows": as_int(plain_value(ds, "Rows")),
        "columns": as_int(plain_value(ds, "Columns")),
        "slice_thickness_mm": _float(_value(ds, "SliceThickness", "PixelMeasuresSequence")),
        "pixel_spacing_row_mm": _float(spacing[0]) if two else math.nan,
        "pixel_spacing_col_mm": _float(spacing[1]) if two else math.nan,
        "spacing_between_slices_mm": _float(
            _value(ds, "SpacingBetweenSlices", "PixelMeasuresSequence")
        ),
        "kernel": kernel,
        "kernel_group": group,
        "kernel_group_source": group_source,
        "kvp": _float(_value(ds, "KVP", "CTXRayDetailsSequence")),
        "exposure_mas": exposure,
        "tube_current_ma": current,
        "orientation": None if orientation is None else tuple(round(v, 4) for v in orientation),
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
        record["image_type"] = as_text(plain_value(ds, "ImageType"))
        record["contrast_agent"] = as_text(plain_value(ds, "ContrastBolusAgent"))
    return record


def _read_file(path: Path, *, max_pixels: int, max_depth: int) -> dict[str, Any]:
    """Read one file's header under the one acceptance policy and extract its record.

    Raises :class:`~imharmony._dicom.header.FileRejected` with the reason when the file cannot
    be used. Warnings pydicom emits about odd values are logged (debug), never raised: a scan
    must not stop, nor turn noisy, because one file holds a strange value.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            head = read_header(path, str(path), max_pixels=max_pixels, max_depth=max_depth)
            return _extract(head.ds, path, head.series_uid)
        finally:
            for warning in caught:
                logger.debug("%s: %s", path, warning.message)


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
    files = [path for path, _ in walk_files(paths, what="DICOM files or folders to scan")]
    advance = _progress_hook(progress, len(files))
    by_series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: list[dict[str, str]] = []
    for done, path in enumerate(files, start=1):
        try:
            record = _read_file(path, max_pixels=max_pixels, max_depth=max_depth)
        except FileRejected as rejected:
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
