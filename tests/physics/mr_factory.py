"""Hostile and minimal DICOM files for the MR and protocol tests, written with pydicom.

Well-formed series come from the shared ``tests/dicom_factory.py``; this module adds what it does
not make: files cut short, random bytes, missing or absurdly large pixel data, deeply nested
sequences. Imported by name by the test modules (tests/conftest.py puts its folder on ``sys.path``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

_SOP = {"MR": MRImageStorage, "CT": CTImageStorage}
UID_ROOT = "1.2.826.0.1.3680043.10.999."


def uid() -> str:
    return generate_uid(prefix=UID_ROOT)


def make_dataset(
    modality: str = "MR", *, rows: int = 4, columns: int = 4, pixels: bool = True, **keywords: Any
) -> Dataset:
    """A minimal single-frame image; any DICOM keyword can be set through ``keywords``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = keywords.pop("SOPClassUID", _SOP.get(modality, MRImageStorage))
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY", "M", "ND"] if modality == "MR" else ["ORIGINAL", "PRIMARY", "AXIAL"]
    )
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in keywords.items():
        setattr(ds, key, value)
    if pixels:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        ds.PixelData = np.zeros((frames, ds.Rows, ds.Columns), np.uint16).tobytes()
    return ds


def write(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def item(**keywords: Any) -> Dataset:
    """A sequence item with the given attributes."""
    out = Dataset()
    for key, value in keywords.items():
        setattr(out, key, value)
    return out


# --- hostile files -----------------------------------------------------------------------------


def write_truncated_header(path: Path) -> Path:
    """A valid file cut inside its header (mid-element)."""
    full = path.with_suffix(".full")
    write(full, make_dataset("MR", RepetitionTime=500, EchoTime=10, SeriesDescription="x" * 40))
    data = full.read_bytes()
    full.unlink()
    cut = data.index(b"x" * 40) + 10  # in the middle of the Series Description value
    path.write_bytes(data[:cut])
    return path


def write_truncated_pixels(path: Path) -> Path:
    """A valid file cut inside its pixel data."""
    full = path.with_suffix(".full")
    write(full, make_dataset("MR", rows=16, columns=16, RepetitionTime=500, EchoTime=10))
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[:-100])
    return path


def write_random_bytes(path: Path, n: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def write_missing_pixels(path: Path) -> Path:
    return write(path, make_dataset("MR", pixels=False, RepetitionTime=500, EchoTime=10))


def write_huge(path: Path) -> Path:
    """A header announcing 60000 × 60000 × 1000 frames, with a few bytes of pixel data."""
    ds = make_dataset("MR", pixels=False, RepetitionTime=500, EchoTime=10)
    ds.Rows = 60000
    ds.Columns = 60000
    ds.NumberOfFrames = 1000
    ds.PixelData = b"\0" * 8
    return write(path, ds)


def write_deeply_nested(path: Path, depth: int = 3000) -> Path:
    """A valid header followed by ``depth`` nested undefined-length sequences."""
    header = path.with_suffix(".hdr")
    write(header, make_dataset("MR", pixels=False, RepetitionTime=500, EchoTime=10))
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
    ds = make_dataset("MR", RepetitionTime=500, EchoTime=10)
    inner = item(CodeValue="X")
    for _ in range(depth):
        inner = item(ContentSequence=Sequence([inner]))
    ds.ContentSequence = inner.ContentSequence
    return write(path, ds)
