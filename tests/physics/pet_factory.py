"""Build small synthetic PET series with pydicom for the SUV tests.

Every header value can be overridden; ``None`` removes the element. The default series is an
F-18 body-weight case a human can check by hand: 75 kg, 1.85 m, male, 370 MBq injected at 10:00,
series and acquisitions at 11:00 (one hour, 3600 s, after injection), Units BQML, Decay Correction
START.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.128"

HEADER: dict[str, Any] = {
    "Modality": "PT",
    "Manufacturer": "SYNTHETIC",
    "PatientWeight": "75",
    "PatientSize": "1.85",
    "PatientSex": "M",
    "SeriesDate": "20250101",
    "SeriesTime": "110000.000000",
    "AcquisitionDate": "20250101",
    "AcquisitionTime": "110000.000000",
    "Units": "BQML",
    "DecayCorrection": "START",
    "CorrectedImage": ["NORM", "ATTN", "SCAT", "DECY"],
    "ActualFrameDuration": "300000",
    "FrameReferenceTime": "150000",
    "RescaleSlope": "1",
    "RescaleIntercept": "0",
}

RADIO: dict[str, Any] = {
    "Radiopharmaceutical": "FDG",
    "RadionuclideTotalDose": "370000000",
    "RadionuclideHalfLife": "6586.2",
    "RadiopharmaceuticalStartTime": "100000.000000",
    "RadiopharmaceuticalStartDateTime": "20250101100000.000000",
}


def pet_series(
    n: int = 3,
    *,
    stored: np.ndarray | None = None,
    per_instance: Mapping[str, Sequence[Any]] | None = None,
    radio: Mapping[str, Any] | None = None,
    no_radio: bool = False,
    **header: Any,
) -> list[Dataset]:
    """A PET series of ``n`` single-frame instances.

    Parameters
    ----------
    n : int
        Number of instances (slices).
    stored : ndarray, shape (n, rows, cols), optional
        Stored int16 values; defaults to 2x2 slices of 1000.
    per_instance : mapping keyword -> sequence of length n, optional
        Values differing per instance (e.g. ``AcquisitionTime``, ``RescaleSlope``); None removes.
    radio : mapping, optional
        Overrides of the Radiopharmaceutical Information Sequence item; None removes an element.
    no_radio : bool
        Leave out the Radiopharmaceutical Information Sequence entirely.
    **header
        Overrides of :data:`HEADER`; None removes the element.
    """
    if stored is None:
        stored = np.full((n, 2, 2), 1000, dtype=np.int16)
    stored = np.asarray(stored, dtype=np.int16)
    series_uid = generate_uid()
    values = {**HEADER, **header}
    radio_values = {**RADIO, **(radio or {})}
    out = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = PET_SOP_CLASS
        ds.SOPClassUID = PET_SOP_CLASS
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = i + 1
        row = dict(values)
        for key, seq in (per_instance or {}).items():
            row[key] = seq[i]
        for key, value in row.items():
            if value is not None:
                setattr(ds, key, value)
        if not no_radio:
            item = Dataset()
            for key, value in radio_values.items():
                if value is not None:
                    setattr(item, key, value)
            ds.RadiopharmaceuticalInformationSequence = [item]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(stored[i]).tobytes()
        out.append(ds)
    return out


def add_private(
    ds: Dataset,
    group: int,
    creator: str | None,
    offset: int,
    vr: str,
    value: Any,
    block: int = 0x10,
) -> None:
    """Put a private element at ``(group, block<<8 | offset)``; ``creator=None`` omits the Private
    Creator element (as some real files do)."""
    if creator is not None:
        ds.add_new((group, block), "LO", creator)
    ds.add_new((group, (block << 8) | offset), vr, value)


def add_philips(
    ds: Dataset,
    *,
    suv: str | None = None,
    activity: str | None = None,
    creator: bool = True,
    block: int = 0x10,
) -> None:
    """Philips SUV Scale Factor (7053,xx00) and/or Activity Concentration Scale Factor
    (7053,xx09)."""
    name = "Philips PET Private Group" if creator else None
    if suv is not None:
        add_private(ds, 0x7053, name, 0x00, "DS", suv, block)
    if activity is not None:
        add_private(ds, 0x7053, name, 0x09, "DS", activity, block)


def add_ge_scan_datetime(
    ds: Dataset, value: str, *, creator: bool = True, block: int = 0x10
) -> None:
    """GE private scan datetime (0009,xx0D) under GEMS_PETD_01."""
    add_private(ds, 0x0009, "GEMS_PETD_01" if creator else None, 0x0D, "DT", value, block)


def write_series(datasets: Sequence[Dataset], folder: Path) -> list[Dataset]:
    """Save as PT_0001.dcm, ... and read back (so each dataset has its ``filename``)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ds in enumerate(datasets, start=1):
        path = folder / f"PT_{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(pydicom.dcmread(path))
    return out
