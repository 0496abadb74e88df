"""The one DICOM factory of the test suite: synthetic series written with pydicom.

One call builds a series of any modality (CT, PT, MR, or another with ``sop_class_uid=``) from
its stored pixel values, geometry, extra attributes and transfer syntax:

* :func:`build_series` returns the instances as pydicom datasets (for header-level functions);
* :func:`write_series` builds them and writes one file per slice into a folder;
* :func:`save_series` writes datasets a test has edited in memory; :func:`write_instance`
  writes a one-instance series as one named file;
* :func:`write_enhanced` and :func:`write_mosaic` write the multi-frame and Siemens mosaic forms;
* ``write_truncated_header`` ... ``write_nested_defined`` write the hostile files (cut short,
  random bytes, missing or absurdly large pixel data, deeply nested sequences).

Everything a test needs to control is a parameter; everything else gets a plausible default (see
:func:`modality_defaults`). UIDs are derived deterministically from ``uid_seed`` (the output
folder for :func:`write_series`), so writing the same series twice gives the same UIDs (pass
``series_uid=`` to force one); without a seed they are random.

Extra attributes (``tags=`` for every instance, ``per_instance=`` for one instance each) are given
as a mapping whose keys are

* a DICOM keyword (``"RescaleSlope"``) with its value; ``None`` removes the attribute; a mapping
  as the value of a sequence keyword sets (or with ``None`` removes) attributes of the sequence's
  first item, creating the item when the sequence is absent:
  ``{"RadiopharmaceuticalInformationSequence": {"RadionuclideTotalDose": 150e6}}``;
* a tag number (``0x00091010`` or ``(0x0009, 0x1010)``) with ``(VR, value)``;
* a private attribute ``(group, creator, offset)`` such as ``(0x0009, "GEMS_PETD_01", 0x0D)`` with
  ``(VR, value)``: the Private Creator element is created too, in the first free block (pass
  ``creator=None`` to write the private element at block 0x10 *without* its creator, as some
  real files do).

Attributes are applied after the pixel data are set, so ``tags`` may also replace or remove the
pixel description (``Rows``, ``BitsAllocated``, ``PixelData``...) to make a malformed instance.

Test modules import it as ``from _support import dicom`` (pyproject's pytest ``pythonpath``
holds ``tests``).

Examples
--------
>>> series = build_series(modality="PT", tags={"Units": "CNTS"},
...                       per_instance={"RescaleSlope": [0.5, 1.0, 2.0]})
>>> [(ds.Modality, ds.Units, float(ds.RescaleSlope)) for ds in series]
[('PT', 'CNTS', 0.5), ('PT', 'CNTS', 1.0), ('PT', 'CNTS', 2.0)]
>>> series[0].RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
'370000000'
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     paths = write_series(folder, np.zeros((4, 8, 8), np.int16))
...     [p.name for p in paths]
['IM_0000.dcm', 'IM_0001.dcm', 'IM_0002.dcm', 'IM_0003.dcm']
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

__all__ = [
    "CT_IMAGE",
    "ENHANCED_CT",
    "ENHANCED_MR",
    "ENHANCED_PET",
    "GE_SCAN_DATETIME",
    "MR_IMAGE",
    "PET_IMAGE",
    "PHILIPS_ACTIVITY_FACTOR",
    "PHILIPS_SUV_FACTOR",
    "SECONDARY_CAPTURE",
    "apply_tags",
    "build_series",
    "csa_header_bytes",
    "modality_defaults",
    "no_creator",
    "save_series",
    "slice_positions",
    "write_deeply_nested",
    "write_enhanced",
    "write_huge",
    "write_instance",
    "write_missing_pixels",
    "write_mosaic",
    "write_nested_defined",
    "write_random_bytes",
    "write_series",
    "write_truncated_header",
    "write_truncated_pixels",
]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET = "1.2.840.10008.5.1.4.1.1.130"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Vendor private attributes, as ``tags`` keys: Philips SUV Scale Factor (7053,xx00) and Activity
# Concentration Scale Factor (7053,xx09); GE scan datetime (0009,xx0D).
PHILIPS_SUV_FACTOR = (0x7053, "Philips PET Private Group", 0x00)
PHILIPS_ACTIVITY_FACTOR = (0x7053, "Philips PET Private Group", 0x09)
GE_SCAN_DATETIME = (0x0009, "GEMS_PETD_01", 0x0D)

_CLASSIC_SOP = {"CT": CT_IMAGE, "PT": PET_IMAGE, "MR": MR_IMAGE}
_ENHANCED_SOP = {"CT": ENHANCED_CT, "PT": ENHANCED_PET, "MR": ENHANCED_MR}

TagKey = str | int | tuple[int, int] | tuple[int, str | None, int]
Tags = Mapping[TagKey, Any]
PerInstance = Sequence[Tags] | Mapping[TagKey, Sequence[Any]] | Callable[[int], Tags]


def modality_defaults(modality: str) -> dict[str, Any]:
    """Plausible modality-specific attributes (override any of them with ``tags=``).

    CT: slope 1, intercept −1024, 120 kVp, STANDARD kernel. PT: an F-18 body-weight case a human
    can check by hand: Units BQML, Decay Correction START, 370 MBq of FDG (half-life 6586.2 s)
    injected at 10:00, series and acquisitions at 11:00 on 2025-01-01 (3600 s later), frames of
    300 s with Frame Reference Time 150 s, 75 kg, 1.85 m, male. MR: spin echo TR 500 ms /
    TE 15 ms at 1.5 T. A new copy each call: a test may edit it.
    """
    if modality == "CT":
        return {
            "RescaleSlope": 1.0,
            "RescaleIntercept": -1024.0,
            "KVP": 120.0,
            "ConvolutionKernel": "STANDARD",
            "XRayTubeCurrent": 200,
        }
    if modality == "PT":
        return {
            "RescaleSlope": "1",
            "RescaleIntercept": "0",
            "Units": "BQML",
            "DecayCorrection": "START",
            "CorrectedImage": ["NORM", "ATTN", "SCAT", "DECY"],
            "SeriesDate": "20250101",
            "SeriesTime": "110000.000000",
            "AcquisitionDate": "20250101",
            "AcquisitionTime": "110000.000000",
            "ActualFrameDuration": "300000",
            "FrameReferenceTime": "150000",
            "PatientWeight": "75",
            "PatientSize": "1.85",
            "PatientSex": "M",
            "RadiopharmaceuticalInformationSequence": DicomSequence([
                _item(
                    Radiopharmaceutical="FDG",
                    RadionuclideTotalDose="370000000",
                    RadionuclideHalfLife="6586.2",
                    RadiopharmaceuticalStartTime="100000.000000",
                    RadiopharmaceuticalStartDateTime="20250101100000.000000",
                )
            ]),
        }
    if modality == "MR":
        return {
            "ScanningSequence": "SE",
            "SequenceVariant": "NONE",
            "MRAcquisitionType": "2D",
            "RepetitionTime": 500.0,
            "EchoTime": 15.0,
            "FlipAngle": 90.0,
            "MagneticFieldStrength": 1.5,
            "ImagingFrequency": 63.87,
        }
    return {}


def slice_positions(
    n: int,
    *,
    origin: Sequence[float] = (-100.0, -120.0, 30.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    slice_spacing: float = 2.5,
) -> np.ndarray:
    """Image Position (Patient) of ``n`` slices stepping ``slice_spacing`` mm along the normal.

    Returns
    -------
    numpy.ndarray, shape (n, 3)
    """
    ori = np.asarray(orientation, dtype=float)
    normal = np.cross(ori[:3], ori[3:])
    return np.asarray(origin, dtype=float) + np.outer(np.arange(n) * slice_spacing, normal)


def apply_tags(ds: Dataset, tags: Tags | None) -> Dataset:
    """Set (or with value None remove) attributes on ``ds``; see the module notes for keys."""
    for key, value in (tags or {}).items():
        if isinstance(key, str):
            if value is None:
                if key in ds:
                    delattr(ds, key)
            elif isinstance(value, Mapping):
                if not getattr(ds, key, None):
                    setattr(ds, key, DicomSequence([Dataset()]))
                apply_tags(getattr(ds, key)[0], value)
            else:
                setattr(ds, key, value)
        elif isinstance(key, tuple) and len(key) == 3:
            group, creator, offset = key
            vr, val = value
            if creator is None:
                ds.add_new((group << 16) | (0x10 << 8) | offset, vr, val)
            else:
                ds.private_block(group, creator, create=True).add_new(offset, vr, val)
        else:
            tag = (key[0] << 16) | key[1] if isinstance(key, tuple) else int(key)
            if value is None:
                if tag in ds:
                    del ds[tag]
            else:
                vr, val = value
                ds.add_new(tag, vr, val)
    return ds


def no_creator(key: tuple[int, str | None, int]) -> tuple[int, None, int]:
    """The private ``tags`` key ``key`` written at block 0x10 without its Private Creator."""
    return (key[0], None, key[2])


def _item(**attributes: Any) -> Dataset:
    """A sequence item with the given attributes."""
    return apply_tags(Dataset(), attributes)


def _series_uids(
    seed: object | None, key: tuple[object, ...], series_uid: str | None, study_uid: str | None
) -> tuple[str, str, str]:
    """Series, study and frame-of-reference UIDs: the ones given, else derived from ``seed``."""
    series_uid = series_uid or _uid(seed, *key, "series")
    frame_uid = _uid(seed, series_uid, "frame-of-reference")
    return series_uid, study_uid or _uid(seed, "study"), frame_uid


def _positions(
    n: int,
    positions: np.ndarray | None,
    origin: Sequence[float],
    orientation: Sequence[float],
    slice_spacing: float,
) -> np.ndarray:
    """``positions`` when given, else :func:`slice_positions`."""
    if positions is not None:
        return np.asarray(positions, dtype=float)
    return slice_positions(n, origin=origin, orientation=orientation, slice_spacing=slice_spacing)


def _fmt_ds(values: Sequence[float]) -> list[str]:
    """Decimal strings that fit the 16-character DS limit."""
    out = []
    for v in values:
        s = f"{float(v):.10g}"
        if len(s) > 16:
            s = f"{float(v):.8g}"
        out.append(s)
    return out


def _uid(seed: object | None, *parts: object) -> UID:
    """A UID derived from ``seed`` and ``parts``; random when ``seed`` is None."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def _pixel_header(ds: Dataset, stored: np.ndarray, bits_stored: int | None) -> None:
    arr = np.asarray(stored)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"stored values must be integers, got {arr.dtype}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0


def _pixel_bytes(stored: np.ndarray, little: bool) -> bytes:
    arr = np.ascontiguousarray(stored)
    arr = arr.astype(arr.dtype.newbyteorder("<" if little else ">"))
    data = arr.tobytes()
    return data + b"\0" if len(data) % 2 else data


def _encode(ds: Dataset, transfer_syntax: str) -> None:
    """Set the transfer syntax of ``ds`` (compressing native pixel data for RLE Lossless)."""
    ts = UID(transfer_syntax)
    if ts == RLELossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = ts


def _save(ds: Dataset, path: Path) -> None:
    ts = UID(ds.file_meta.TransferSyntaxUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(
        path,
        enforce_file_format=True,
        implicit_vr=ts == ImplicitVRLittleEndian,
        little_endian=ts != ExplicitVRBigEndian,
    )


def _base_dataset(
    seed: object | None,
    modality: str,
    sop_class_uid: str,
    index: int,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = _uid(seed, series_uid, "instance", index)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Manufacturer = "IMHARMONY TEST"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST001"
    ds.StudyDate = "20250101"
    ds.StudyTime = "100000"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    return ds


def _instance_tags(per_instance: PerInstance | None, k: int) -> Tags | None:
    """The extra attributes of instance ``k`` (see :func:`build_series`)."""
    if per_instance is None:
        return None
    if callable(per_instance):
        return per_instance(k)
    if isinstance(per_instance, Mapping):
        return {key: values[k] for key, values in per_instance.items()}
    return per_instance[k]


def build_series(
    stored: np.ndarray | None = None,
    *,
    modality: str = "CT",
    sop_class_uid: str | None = None,
    pixel_spacing: Sequence[float] = (0.8, 0.7),
    origin: Sequence[float] = (-100.0, -120.0, 30.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    slice_spacing: float = 2.5,
    positions: np.ndarray | None = None,
    bits_stored: int | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    tags: Tags | None = None,
    per_instance: PerInstance | None = None,
    file_index: Sequence[int] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    defaults: bool = True,
    uid_seed: object | None = None,
) -> list[Dataset]:
    """Build a classic single-frame series in memory: one dataset per slice.

    Parameters
    ----------
    stored : numpy.ndarray of int, shape (n_slices, rows, columns), optional
        Stored values of each slice, row-major as in DICOM. Its dtype sets Bits Allocated and
        Pixel Representation (int16 → 16 bits signed). Default: three 2 × 2 slices of 1000
        (int16), for tests of the header alone.
    modality : str
        ``"CT"``, ``"PT"``, ``"MR"`` or anything else (then give ``sop_class_uid``).
    sop_class_uid : str, optional
        Default: the classic image storage class of the modality.
    pixel_spacing : (float, float)
        Pixel Spacing: (between rows, between columns) in mm.
    origin, orientation, slice_spacing
        Geometry: slice ``k`` is at ``origin + k * slice_spacing * normal`` unless ``positions``
        (shape (n_slices, 3)) is given.
    bits_stored : int, optional
        Bits Stored (default: all allocated bits).
    series_uid, study_uid : str, optional
        Default: derived from ``uid_seed``.
    tags : mapping, optional
        Extra attributes for every instance (after the modality defaults); see the module notes.
    per_instance : sequence of mappings, mapping of sequences or callable, optional
        Extra attributes for instance ``k`` (applied last): ``per_instance[k]``, or
        ``{key: values[k]}`` for a mapping of ``key -> n_slices values``, or
        ``per_instance(k)``.
    file_index : sequence of int, optional
        File number of slice ``k`` (default ``k``); Instance Number is the file number + 1.
    transfer_syntax : str
        Explicit/implicit VR little endian, explicit big endian, RLE Lossless (the pixel data
        are compressed), or any other UID (then give the encoded ``PixelData`` in ``tags``).
    defaults : bool
        Add the modality defaults (rescale, PET dose and times, MR timing...).
    uid_seed : object, optional
        Seed of the UIDs (the output folder for :func:`write_series`); random UIDs when None.

    Returns
    -------
    list of pydicom.dataset.Dataset
        The instances, in slice order, each with its file meta information.
    """
    stored = np.full((3, 2, 2), 1000, np.int16) if stored is None else np.asarray(stored)
    if stored.ndim != 3:
        raise ValueError("stored must have shape (n_slices, rows, columns)")
    n = stored.shape[0]
    sop = sop_class_uid or _CLASSIC_SOP.get(modality, SECONDARY_CAPTURE)
    series_uid, study_uid, frame_uid = _series_uids(uid_seed, (), series_uid, study_uid)
    pos = _positions(n, positions, origin, orientation, slice_spacing)
    little = UID(transfer_syntax) != ExplicitVRBigEndian
    out = []
    for k in range(n):
        index = k if file_index is None else int(file_index[k])
        ds = _base_dataset(uid_seed, modality, sop, index, series_uid, study_uid, frame_uid)
        ds.ImagePositionPatient = _fmt_ds(pos[k])
        ds.ImageOrientationPatient = _fmt_ds(orientation)
        ds.PixelSpacing = _fmt_ds(pixel_spacing)
        ds.SliceThickness = _fmt_ds([slice_spacing])[0]
        ds.SliceLocation = _fmt_ds([pos[k][2]])[0]
        _pixel_header(ds, stored[k], bits_stored)
        ds.PixelData = _pixel_bytes(stored[k], little)
        if defaults:
            apply_tags(ds, modality_defaults(modality))
        apply_tags(ds, tags)
        apply_tags(ds, _instance_tags(per_instance, k))
        _encode(ds, transfer_syntax)
        out.append(ds)
    return out


def save_series(
    folder: str | os.PathLike[str],
    datasets: Sequence[Dataset],
    *,
    filenames: str = "IM_{index:04d}.dcm",
) -> list[Path]:
    """Write datasets (from :func:`build_series`, edited or not) into ``folder``, one file each.

    ``filenames`` is formatted with ``index`` (the file number, default the position from 0)
    and ``number`` (the Instance Number): ``"PT_{number:04d}.dcm"`` names them PT_0001.dcm...
    Returns the files, in the order of ``datasets``.
    """
    folder = Path(folder)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / filenames.format(index=k, number=int(ds.get("InstanceNumber", k + 1)))
        _save(ds, path)
        paths.append(path)
    return paths


def write_series(
    folder: str | os.PathLike[str],
    stored: np.ndarray | None = None,
    *,
    filenames: str = "IM_{index:04d}.dcm",
    file_index: Sequence[int] | None = None,
    **series: Any,
) -> list[Path]:
    """Build a series (:func:`build_series`) and write it into ``folder``, one file per slice.

    Parameters
    ----------
    folder : path-like
        Output folder (created); also the seed of the UIDs.
    stored : numpy.ndarray of int, shape (n_slices, rows, columns), optional
        As for :func:`build_series`.
    filenames : str
        File name pattern, formatted with ``index`` (file number) and ``number`` (Instance
        Number); a name without a field writes a one-slice series to that file.
    file_index : sequence of int, optional
        File number of slice ``k`` (default ``k``): a permutation writes slices in shuffled files.
    **series
        Every other parameter of :func:`build_series` (modality, geometry, tags, per_instance,
        transfer_syntax...).

    Returns
    -------
    list of Path
        The files, in slice order.
    """
    folder = Path(folder)
    datasets = build_series(stored, file_index=file_index, uid_seed=folder, **series)
    indices = range(len(datasets)) if file_index is None else [int(i) for i in file_index]
    paths = []
    for index, ds in zip(indices, datasets, strict=True):
        path = folder / filenames.format(index=index, number=int(ds.InstanceNumber))
        _save(ds, path)
        paths.append(path)
    return paths


def write_enhanced(
    path: str | os.PathLike[str],
    stored: np.ndarray,
    *,
    modality: str = "CT",
    sop_class_uid: str | None = None,
    pixel_spacing: Sequence[float] = (0.8, 0.7),
    origin: Sequence[float] = (-100.0, -120.0, 30.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    slice_spacing: float = 2.5,
    positions: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    frame_rescale: Sequence[tuple[float, float]] | None = None,
    rescale_type: str | None = None,
    frame_order: Sequence[int] | None = None,
    bits_stored: int | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    tags: Tags | None = None,
    shared_groups: Mapping[str, Tags] | None = None,
    per_frame_groups: Sequence[Mapping[str, Tags]] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    defaults: bool = True,
) -> Path:
    """Write an enhanced multi-frame instance (one file) with functional groups.

    Plane Orientation and Pixel Measures go in the Shared Functional Groups; Plane Position in
    the Per-frame Functional Groups. Pixel Value Transformation goes in the shared groups when
    ``rescale`` is given, per frame when ``frame_rescale`` is given (one (slope, intercept) per
    slice), nowhere when neither is.

    Parameters
    ----------
    path : path-like
        Output file.
    stored : numpy.ndarray of int, shape (n_slices, rows, columns)
        Stored values of each slice, in slice order.
    frame_order : sequence of int, optional
        Slice stored as frame ``f`` (default ``f``): a permutation stores frames shuffled.
    rescale_type : str, optional
        Rescale Type inside the Pixel Value Transformation items.
    shared_groups, per_frame_groups : optional
        Extra functional-group macros: ``{"SequenceKeyword": {attribute: value}}`` (shared), or
        one such mapping per frame (in file frame order).
    Other parameters are as for :func:`build_series`; the modality defaults set no top-level
    rescale attributes here.
    """
    path = Path(path)
    stored = np.asarray(stored)
    n = stored.shape[0]
    order = list(range(n)) if frame_order is None else [int(i) for i in frame_order]
    sop = sop_class_uid or _ENHANCED_SOP.get(modality, SECONDARY_CAPTURE)
    folder = path.parent
    series_uid, study_uid, frame_uid = _series_uids(folder, (path.name,), series_uid, study_uid)
    pos = _positions(n, positions, origin, orientation, slice_spacing)
    ds = _base_dataset(folder, modality, sop, 0, series_uid, study_uid, frame_uid)
    ds.NumberOfFrames = n
    _pixel_header(ds, stored[0], bits_stored)
    if defaults:
        dflt = modality_defaults(modality)
        dflt.pop("RescaleSlope", None)
        dflt.pop("RescaleIntercept", None)
        apply_tags(ds, dflt)
    apply_tags(ds, tags)

    def pvt(slope: float, intercept: float) -> Dataset:
        item = Dataset()
        item.RescaleSlope = _fmt_ds([slope])[0]
        item.RescaleIntercept = _fmt_ds([intercept])[0]
        if rescale_type is not None:
            item.RescaleType = rescale_type
        return item

    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = _fmt_ds(orientation)
    shared.PlaneOrientationSequence = DicomSequence([po])
    pm = Dataset()
    pm.PixelSpacing = _fmt_ds(pixel_spacing)
    pm.SliceThickness = _fmt_ds([slice_spacing])[0]
    shared.PixelMeasuresSequence = DicomSequence([pm])
    if rescale is not None:
        shared.PixelValueTransformationSequence = DicomSequence([pvt(*rescale)])
    for seq, attrs in (shared_groups or {}).items():
        setattr(shared, seq, DicomSequence([apply_tags(Dataset(), attrs)]))
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for f, k in enumerate(order):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = _fmt_ds(pos[k])
        item.PlanePositionSequence = DicomSequence([pp])
        if frame_rescale is not None:
            item.PixelValueTransformationSequence = DicomSequence([pvt(*frame_rescale[k])])
        if per_frame_groups is not None:
            for seq, attrs in per_frame_groups[f].items():
                setattr(item, seq, DicomSequence([apply_tags(Dataset(), attrs)]))
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    little = UID(transfer_syntax) != ExplicitVRBigEndian
    ds.PixelData = _pixel_bytes(stored[order], little)
    _encode(ds, transfer_syntax)
    _save(ds, path)
    return path


def csa_header_bytes(elements: Mapping[str, tuple[str, Sequence[str]]]) -> bytes:
    """A Siemens CSA header in the "SV10" format: ``{name: (VR, [text items])}``.

    Layout (as nibabel's ``nicom`` documentation describes it): ``SV10``, four bytes, the number
    of elements and the check value 77; per element a 64-byte name, VM, a 4-byte VR, SyngoDT, the
    number of items and 77; per item four int32 (the second is the value length) and the value,
    NUL-terminated and padded to four bytes.
    """
    out = bytearray(b"SV10\x04\x03\x02\x01")
    out += struct.pack("<2I", len(elements), 77)
    for name, (vr, items) in elements.items():
        out += name.encode("latin-1").ljust(64, b"\0")
        out += struct.pack("<i4s3i", len(items), vr.encode("ascii").ljust(4, b"\0"), 4,
                           len(items), 77)
        for text in items:
            value = text.encode("latin-1") + b"\0"
            out += struct.pack("<4i", len(value), len(value), 77, len(value))
            out += value + b"\0" * ((4 - len(value) % 4) % 4)
    return bytes(out)


def write_mosaic(
    path: str | os.PathLike[str],
    slices: np.ndarray,
    *,
    pixel_spacing: Sequence[float] = (3.0, 3.0),
    origin: Sequence[float] = (-96.0, -110.0, -40.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    slice_spacing: float = 3.5,
    slice_normal: Sequence[float] | None = None,
    count_in: str = "csa",
    series_uid: str | None = None,
    tags: Tags | None = None,
) -> Path:
    """Write one Siemens MR mosaic holding ``slices`` (shape (n, rows, columns)), tiled.

    The geometry is Siemens': slice ``k`` lies at ``first + k * slice_spacing * normal``, with
    ``first = origin`` and ``normal = slice_normal`` (default: the cross product of the direction
    cosines), and Image Position (Patient) is written for the top-left corner of the whole tiled
    image. ``count_in``: where NumberOfImagesInMosaic goes: ``"csa"`` (the CSA image header,
    with SliceNormalVector), ``"private"`` ((0019,xx0A) of SIEMENS MR HEADER) or ``"none"``.
    """
    path = Path(path)
    slices = np.asarray(slices)
    n, rows, cols = slices.shape
    per_side = int(np.ceil(np.sqrt(n)))
    mosaic = np.zeros((per_side * rows, per_side * cols), dtype=slices.dtype)
    for k in range(n):
        r, c = divmod(k, per_side)
        mosaic[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = slices[k]
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_cos, col_cos) if slice_normal is None else np.asarray(slice_normal)
    shift_r, shift_c = (mosaic.shape[0] - rows) / 2, (mosaic.shape[1] - cols) / 2
    corner = (
        np.asarray(origin, float)
        - col_cos * pixel_spacing[0] * shift_r
        - row_cos * pixel_spacing[1] * shift_c
    )
    folder = path.parent
    series_uid, study_uid, frame_uid = _series_uids(folder, (path.name,), series_uid, None)
    ds = _base_dataset(folder, "MR", MR_IMAGE, 0, series_uid, study_uid, frame_uid)
    ds.Manufacturer = "SIEMENS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.ImagePositionPatient = _fmt_ds(corner)
    ds.ImageOrientationPatient = _fmt_ds(orientation)
    ds.PixelSpacing = _fmt_ds(pixel_spacing)
    ds.SliceThickness = _fmt_ds([slice_spacing])[0]
    ds.SpacingBetweenSlices = _fmt_ds([slice_spacing])[0]
    _pixel_header(ds, mosaic, None)
    apply_tags(ds, modality_defaults("MR"))
    if count_in == "csa":
        csa = csa_header_bytes({
            "NumberOfImagesInMosaic": ("US", [str(n)]),
            "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal]),
            "AcquisitionMatrixText": ("SH", [f"{rows}*{cols}"]),
        })
        apply_tags(ds, {(0x0029, "SIEMENS CSA HEADER", 0x10): ("OB", csa)})
    elif count_in == "private":
        apply_tags(ds, {(0x0019, "SIEMENS MR HEADER", 0x0A): ("US", n)})
    apply_tags(ds, tags)
    ds.PixelData = _pixel_bytes(mosaic, True)
    _encode(ds, ExplicitVRLittleEndian)
    _save(ds, path)
    return path


# --- hostile files: one MR instance each, written at ``path`` ---------------------------------

_MR_T1 = {"RepetitionTime": 500, "EchoTime": 10}


def write_instance(
    path: str | os.PathLike[str], stored: np.ndarray | None = None, **series: Any
) -> Path:
    """Write a one-instance series as the file ``path`` (:func:`write_series` into its folder).

    ``stored`` (shape (1, rows, columns)) defaults to 4 × 4 zeros (uint16); ``series`` takes
    every parameter of :func:`build_series`.
    """
    path = Path(path)
    stored = np.zeros((1, 4, 4), np.uint16) if stored is None else stored
    (out,) = write_series(path.parent, stored, filenames=path.name, **series)
    return out


def _mr(path: Path, stored: np.ndarray | None = None, **tags: Any) -> Path:
    """A one-instance MR file with only the attributes the hostile cases need (no defaults)."""
    return write_instance(path, stored, modality="MR", defaults=False, tags={**_MR_T1, **tags})


def write_truncated_header(path: Path) -> Path:
    """A valid file cut inside its header (in the middle of the Series Description value)."""
    full = _mr(path.with_suffix(".full"), SeriesDescription="x" * 40)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: data.index(b"x" * 40) + 10])
    return path


def write_truncated_pixels(path: Path) -> Path:
    """A valid 16 × 16 file cut inside its pixel data."""
    full = _mr(path.with_suffix(".full"), np.zeros((1, 16, 16), np.uint16))
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[:-100])
    return path


def write_random_bytes(path: Path, n: int = 4096, seed: int = 0) -> Path:
    """``n`` random bytes (not DICOM at all)."""
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def write_missing_pixels(path: Path) -> Path:
    """An image instance whose Pixel Data element is absent."""
    return _mr(path, PixelData=None)


def write_huge(path: Path) -> Path:
    """A header announcing 60000 × 60000 × 1000 frames, with 8 bytes of pixel data."""
    return _mr(path, Rows=60000, Columns=60000, NumberOfFrames=1000, PixelData=b"\0" * 8)


def write_deeply_nested(path: Path, depth: int = 3000) -> Path:
    """A valid header followed by ``depth`` nested undefined-length sequences."""
    header = _mr(path.with_suffix(".hdr"), PixelData=None)
    data = header.read_bytes()
    header.unlink()

    def tag(group: int, element: int) -> bytes:
        return struct.pack("<HH", group, element)

    undefined = struct.pack("<I", 0xFFFFFFFF)
    opening = tag(0x0040, 0xA730) + b"SQ\0\0" + undefined + tag(0xFFFE, 0xE000) + undefined
    closing = tag(0xFFFE, 0xE00D) + b"\0" * 4 + tag(0xFFFE, 0xE0DD) + b"\0" * 4
    path.write_bytes(data + opening * depth + closing * depth)
    return path


def write_nested_defined(path: Path, depth: int) -> Path:
    """``depth`` nested sequences of defined length (pydicom parses those lazily)."""
    inner = _item(CodeValue="X")
    for _ in range(depth):
        inner = _item(ContentSequence=DicomSequence([inner]))
    return _mr(path, ContentSequence=inner.ContentSequence)
