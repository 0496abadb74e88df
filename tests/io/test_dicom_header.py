"""The quick header framing gives what ``pydicom.dcmread(stop_before_pixels=True)`` gives.

The reference is pydicom itself: on every file of pydicom's own test corpus, on the series the
test factories write, and on random datasets written by pydicom (hypothesis), the quick path
either declines (``None``: the reader then uses ``dcmread``) or returns a dataset equal to
``dcmread``'s, element by element, with the same file meta, preamble, encoding and the same
position of the pixel data element.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from _support import dicom
from imharmony._dicom.framing import frame_header

DEFER = 1 << 20
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _compare(path: Path, chunk: int | None) -> bool:
    """True when the quick path took the file (and agreed with pydicom); False when it declined."""
    data = path.read_bytes()
    buf = data if chunk is None else data[:chunk]
    with open(path, "rb") as f:
        quick = frame_header(f, buf, len(data), DEFER)
    if quick is None:
        return False
    ds, pixel_at = quick
    with open(path, "rb") as f:
        ref = pydicom.dcmread(f, stop_before_pixels=True, defer_size=DEFER)
        stopped_at = f.tell()
    with warnings.catch_warnings():  # pydicom's corpus holds values it warns about, both ways
        warnings.simplefilter("ignore")
        assert ds == ref, path.name
    assert ds.file_meta == ref.file_meta, path.name
    assert ds.preamble == ref.preamble
    assert ds.original_encoding == ref.original_encoding
    assert ds.original_character_set == ref.original_character_set
    assert ds.filename == ref.filename
    assert sorted(ds.keys()) == sorted(ref.keys())
    if pixel_at is None:
        assert stopped_at == len(data), path.name
    else:
        assert pixel_at == stopped_at, path.name
    return True


def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in ("", ".dcm"))


def test_pydicom_corpus_agrees_or_is_declined():
    files = _corpus()
    assert len(files) > 50, "pydicom's test files are missing from the installation"
    taken = {p.name for p in files if _compare(p, 1 << 14)}
    # The plain files go the quick way (the check is not vacuous) ...
    assert {"CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm"} <= taken
    # ... and what pydicom has to guess or inflate does not.
    declined = {"MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm", "ExplVR_BigEnd.dcm",
                "meta_missing_tsyntax.dcm", "rtplan_truncated.dcm"}
    assert not taken & declined, taken & declined


def test_whole_file_buffers_agree_too():
    # With the whole file as buffer, headers longer than 16 KiB go the quick way as well.
    taken = [p.name for p in _corpus() if _compare(p, None)]
    assert len(taken) >= 20


def test_factory_series_agree(tmp_path):
    stored = np.arange(2 * 4 * 3, dtype=np.int16).reshape(2, 4, 3)
    dicom.write_series(tmp_path / "ct", stored)
    dicom.write_series(tmp_path / "ct_implicit", stored, transfer_syntax=ImplicitVRLittleEndian)
    dicom.write_enhanced(tmp_path / "enh.dcm", stored)
    files = [*sorted((tmp_path / "ct").iterdir()), *sorted((tmp_path / "ct_implicit").iterdir()),
             tmp_path / "enh.dcm"]
    assert all(_compare(p, 1 << 14) for p in files[:4])
    for p in files:
        _compare(p, 1 << 14)


def test_a_header_longer_than_the_buffer_is_declined(tmp_path):
    dicom.write_series(tmp_path, np.zeros((1, 2, 2), dtype=np.int16),
                     tags={"TextValue": "x" * 20000})
    path = next(tmp_path.iterdir())
    assert not _compare(path, 1 << 14)
    assert _compare(path, None)


def test_a_value_longer_than_the_deferral_size_is_declined(tmp_path):
    dicom.write_series(tmp_path, np.zeros((1, 2, 2), dtype=np.int16),
                     tags={"TextValue": "y" * 5000})
    path = next(tmp_path.iterdir())
    data = path.read_bytes()
    with open(path, "rb") as f:
        assert frame_header(f, data, len(data), 1000) is None
        assert frame_header(f, data, len(data), DEFER) is not None


# --- random datasets written by pydicom --------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from("ABCDEFGHIJ 0123456789^"), min_size=0, max_size=12)
_ELEMENTS = {
    "PatientName": _TEXT.map(lambda s: s.strip()),
    "StudyDescription": _TEXT,
    "InstitutionName": _TEXT,
    "SliceThickness": st.floats(0.1, 10, allow_nan=False).map(lambda v: f"{v:.4g}"),
    "SeriesNumber": st.integers(0, 99999),
    "Rows": st.integers(1, 512),
    "Columns": st.integers(1, 512),
    "SmallestImagePixelValue": st.integers(0, 1000),
    "ImagePositionPatient": st.lists(st.floats(-500, 500).map(lambda v: f"{v:.5g}"),
                                     min_size=3, max_size=3),
    "ImageType": st.lists(st.sampled_from(["ORIGINAL", "PRIMARY", "AXIAL", "DERIVED"]),
                          min_size=0, max_size=4),
}


@st.composite
def _datasets(draw: st.DrawFn) -> tuple[Dataset, bool, bool]:
    ds = Dataset()
    for keyword in draw(st.lists(st.sampled_from(sorted(_ELEMENTS)), unique=True)):
        setattr(ds, keyword, draw(_ELEMENTS[keyword]))
    if draw(st.booleans()):
        item = Dataset()
        item.CodeValue = draw(_TEXT)
        item.CodeMeaning = draw(_TEXT)
        ds.ProcedureCodeSequence = Sequence([item] * draw(st.integers(0, 3)))
    if draw(st.booleans()):
        ds.add_new(0x00091010, "LO", "IMHARMONY")
        text = draw(_TEXT)
        if draw(st.booleans()):
            ds.add_new(0x00091011, "LO", text)
        else:
            ds.add_new(0x00091011, "UN", text.encode().ljust(len(text) + len(text) % 2))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(draw(st.integers()))])
    ds.Modality = "CT"
    pixels = draw(st.booleans())
    if pixels:
        ds.Rows, ds.Columns = 2, 2
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = np.arange(4, dtype=np.uint16).tobytes()
    return ds, draw(st.booleans()), pixels


@settings(max_examples=60, deadline=None)
@given(_datasets())
def test_random_datasets_agree_with_pydicom(tmp_path_factory, case):
    ds, implicit, _ = case
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    path = tmp_path_factory.mktemp("rand") / "r.dcm"
    path.write_bytes(out.getvalue())
    assert _compare(path, None)


def test_non_dicom_buffers_are_declined():
    with io.BytesIO() as f:
        for buf in (b"", b"\0" * 200, b"\0" * 128 + b"DICM", b"\0" * 128 + b"DICM" + b"\x02\0"):
            assert frame_header(f, buf, len(buf), DEFER) is None


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm"])
def test_truncated_copies_are_declined_or_agree(tmp_path, name):
    data = (CORPUS / name).read_bytes()
    with open(CORPUS / name, "rb") as f:
        full = frame_header(f, data, len(data), DEFER)
    assert full is not None and full[1] is not None
    pixel_at = full[1]
    for cut in (140, 300, 700, pixel_at - 1, pixel_at + 12, pixel_at + 100):
        path = tmp_path / f"{cut}.dcm"
        path.write_bytes(data[:cut])
        if cut < pixel_at:  # the header itself is cut: pydicom must read and report it
            with open(path, "rb") as f:
                assert frame_header(f, data[:cut], cut, DEFER) is None, cut
        else:  # only pixels are missing: the header agrees; the reader checks the length
            assert _compare(path, None), cut
