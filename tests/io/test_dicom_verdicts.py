"""``scan`` and ``convert`` give every file the same verdict, on real and hostile files alike, and
the scan's quick value decoding reads exactly what pydicom reads.

The corpus: pydicom's own test and character-set files (big endian, no preamble, no file meta,
deflated, truncated, DICOMDIR, structured reports, RT objects, compressed, nine character sets),
synthetic classic, enhanced and mosaic series, and a seeded set of damaged copies of all of them
(bytes flipped, cut, inserted or deleted, numbers and separators written over the header).

Rules decided once, in ``imharmony._dicom``, for cases where the readers could disagree:

* a file without preamble is DICOM when it starts with a group 0002 or 0008 element, little
  endian, or group 0008 explicit VR big endian (``header._looks_like_raw_dicom``);
* an element whose explicit VR is none DICOM defines makes the file ``unreadable`` for both
  commands: pydicom frames it with a guessed length and cannot decode it
  (``header._check_structure``); a Specific Character Set that cannot even be looked up is
  ``dcmread``'s verdict on the quick path too (``framing.frame_header``);
* quick text values: a person name drops its empty trailing component groups, as pydicom's
  ``PersonName`` does; ``as_text`` strips padding and ASCII white space only, whatever the type.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from _support import dicom as fac
from imharmony._dicom.header import FileRejected, read_header
from imharmony._dicom.tags import as_text, plain_value
from imharmony._dicom.walk import walk_files
from imharmony.io.dicom import _quiet_pydicom, _read_headers, read_dicom_series
from imharmony.protocols import scan_errors, scan_protocols

PYDICOM_DATA = Path(pydicom.data.__file__).parent
MAX_PIXELS = 2**24
N_DAMAGED = 160
BUDGET_S = 15.0


def _sources() -> list[Path]:
    return sorted((PYDICOM_DATA / "test_files").glob("*.dcm")) + sorted(
        (PYDICOM_DATA / "charset_files").glob("*.dcm")
    )


def _damage(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded kind of damage, mostly inside the first 2 KiB where the header is."""
    buf = bytearray(data)
    head = min(len(buf), 2048)
    at = int(rng.integers(0, head))
    kind = int(rng.integers(5))
    if kind == 0:
        for i in rng.integers(0, head, size=int(rng.integers(1, 8))):
            buf[int(i)] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del buf[int(rng.integers(1, len(buf))):]
    elif kind == 2:
        buf[at:at] = rng.bytes(int(rng.integers(1, 6)))
    elif kind == 3:
        del buf[at:at + int(rng.integers(1, 6))]
    else:
        text = rng.choice(list(b"0123456789.-+e\\ \0"), size=int(rng.integers(1, 10)))
        buf[at:at + len(text)] = bytes(text.tolist())
    return bytes(buf)


def _without_preamble(path: Path) -> bytes:
    """The file's data set alone (no preamble, no file meta), in its own encoding."""
    ds = pydicom.dcmread(path)
    implicit, little = ds.original_encoding
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False, implicit_vr=implicit, little_endian=little)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    stored = np.random.default_rng(3).integers(0, 3000, size=(3, 6, 5)).astype(np.int16)
    fac.write_series(root / "ct", stored)
    fac.write_series(root / "mr", stored.astype(np.uint16), modality="MR")
    fac.write_series(root / "implicit", stored, transfer_syntax=ImplicitVRLittleEndian)
    fac.write_enhanced(root / "enhanced" / "mr.dcm", stored, modality="MR")
    fac.write_mosaic(root / "mosaic" / "mosaic.dcm", stored.astype(np.uint16))
    ours = sorted(p for p in root.rglob("*") if p.is_file())
    (root / "real").mkdir()
    for src in _sources():
        (root / "real" / f"{src.parent.name}_{src.name}").write_bytes(src.read_bytes())
    # pydicom's big-endian file without preamble and file meta is an RT Ion Plan: an image of
    # that form is made from its big-endian MR image, as old software wrote it.
    (root / "real" / "no_meta_MR_small_bigendian.dcm").write_bytes(_without_preamble(
        PYDICOM_DATA / "test_files" / "MR_small_bigendian.dcm"))
    (root / "damaged").mkdir()
    rng = np.random.default_rng(20261207)
    pool = [p for p in [*ours, *sorted((root / "real").iterdir())] if p.stat().st_size < 300_000]
    for k in range(N_DAMAGED):
        src = pool[int(rng.integers(len(pool)))]
        (root / "damaged" / f"{k:03d}_{src.name}").write_bytes(_damage(src.read_bytes(), rng))
    return root


def _verdicts_of_convert(root: Path) -> dict[str, str]:
    files = walk_files(root)
    with _quiet_pydicom():
        results = _read_headers(files, MAX_PIXELS)
    return {
        name: (r.reason if isinstance(r, FileRejected) else "accepted")
        for (_, name), r in zip(files, results, strict=True)
    }


def _verdicts_of_scan(root: Path) -> dict[str, str]:
    table = scan_protocols(root, max_pixels=MAX_PIXELS)
    errors = scan_errors(table)
    refused = {
        str(Path(p).relative_to(root)): r
        for p, r in zip(errors["path"], errors["reason"], strict=True)
    }
    return {name: refused.get(name, "accepted") for _, name in walk_files(root)}


def test_scan_and_convert_give_every_file_the_same_verdict(corpus: Path) -> None:
    start = time.perf_counter()
    by_convert = _verdicts_of_convert(corpus)
    by_scan = _verdicts_of_scan(corpus)
    assert time.perf_counter() - start < BUDGET_S
    different = {n: (by_scan[n], v) for n, v in by_convert.items() if by_scan[n] != v}
    assert not different, different
    # The corpus exercises the policy: files of every kind accepted, and refused for many reasons.
    verdicts = list(by_convert.values())
    assert verdicts.count("accepted") > 100, verdicts
    assert {"not_dicom", "truncated", "not_an_image", "missing_required_tag",
            "invalid_value", "unreadable"} <= set(verdicts), sorted(set(verdicts))
    real = {n: v for n, v in by_convert.items() if n.startswith("real/")}
    assert real["real/test_files_CT_small.dcm"] == "accepted"
    # Without preamble nor file meta, little and big endian: read, and judged on what they hold.
    assert real["real/no_meta_MR_small_bigendian.dcm"] == "accepted"
    assert real["real/test_files_ExplVR_BigEndNoMeta.dcm"] == "not_an_image"  # an RT Ion Plan
    assert real["real/test_files_ExplVR_LitEndNoMeta.dcm"] == "not_an_image"
    assert real["real/test_files_MR_truncated.dcm"] == "truncated"
    assert real["real/test_files_rtplan.dcm"] == "not_an_image"


def test_a_big_endian_image_without_preamble_converts_to_pydicoms_pixels(tmp_path) -> None:
    source = PYDICOM_DATA / "test_files" / "MR_small_bigendian.dcm"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.dcm").write_bytes(_without_preamble(source))
    with _quiet_pydicom():
        img = read_dicom_series(tmp_path / "in", units="raw")
        expected = pydicom.dcmread(source).pixel_array
    assert img.array.shape == (*expected.shape[::-1], 1)
    np.testing.assert_array_equal(img.array[..., 0], expected.T)


def test_the_header_reader_raises_nothing_but_its_refusal(corpus: Path) -> None:
    # A convert of a folder stops at any other exception; a scan would only record it.
    for path, name in walk_files(corpus / "damaged"):
        try:
            read_header(path, name, max_pixels=MAX_PIXELS)
        except FileRejected:
            pass


def _normalized(value: object) -> object:
    """A pydicom or plain value as comparable text: components stripped of padding."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        parts = [v if isinstance(v, int | float) else str(v).strip(" \0")
                 for v in value]  # type: ignore[union-attr]
        return parts if len(parts) > 1 else (parts[0] if parts else None)
    if isinstance(value, float | int):
        return value
    return as_text(value)


_QUICK_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "SH", "LO", "UC", "PN",
              "ST", "LT", "UT", "UR", "US", "SS", "UL", "SL", "FL", "FD"}


def _same(quick: object, slow: object) -> bool:
    if isinstance(slow, int | float) and isinstance(quick, str | int | float):
        return math.isclose(float(quick), slow, rel_tol=1e-12) or (
            math.isnan(slow) and math.isnan(float(quick))
        )
    if isinstance(slow, list) and isinstance(quick, list) and len(slow) == len(quick):
        return all(_same(q, s) for q, s in zip(quick, slow, strict=True))
    return quick == slow


def _compare_dataset(quick: Dataset, slow: Dataset, where: str) -> int:
    """Compare every quick-decoded top-level value with pydicom's; the number compared."""
    n = 0
    for elem in slow:
        keyword = elem.keyword
        if not keyword or elem.VR not in _QUICK_VRS or elem.tag.group == 2:
            continue
        with pydicom.config.disable_value_validation():
            expected = _normalized(elem.value)
        if isinstance(expected, str) and elem.VR in ("DS", "IS"):
            expected = float(expected) if expected.strip() else None
        elif isinstance(expected, list) and elem.VR in ("DS", "IS"):
            expected = [float(v) if str(v).strip() else math.nan for v in expected]
        got = _normalized(plain_value(quick, keyword))
        if expected in ("", []):
            expected = None
        assert _same(got, expected), (where, keyword, elem.VR, got, expected)
        n += 1
    return n


def test_quick_values_are_what_pydicom_reads_in_every_character_set(corpus: Path) -> None:
    compared = 0
    for path in sorted((corpus / "real").iterdir()):
        try:
            quick = read_header(path, path.name, max_pixels=2**40).ds
        except FileRejected:
            continue
        with _quiet_pydicom():
            slow = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            compared += _compare_dataset(quick, slow, path.name)
    assert compared > 1000


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    lo=st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                      blacklist_characters="\\\x7f"), max_size=12),
                min_size=1, max_size=3),
    ds=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=4),
    us=st.lists(st.integers(0, 65535), min_size=1, max_size=3),
    charset=st.sampled_from([None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 144"]),
    explicit=st.booleans(),
)
def test_quick_values_round_trip(lo, ds, us, charset, explicit, tmp_path_factory) -> None:
    if charset == "ISO_IR 144":  # Cyrillic: only what the character set can encode
        lo = [s.encode("iso8859_5", "ignore").decode("iso8859_5") for s in lo]
    data = Dataset()
    data.file_meta = FileMetaDataset()
    data.file_meta.TransferSyntaxUID = (ExplicitVRLittleEndian if explicit
                                       else ImplicitVRLittleEndian)
    if charset:
        data.SpecificCharacterSet = charset
    data.InstitutionName = lo if len(lo) > 1 else lo[0]  # LO, multi-valued here
    data.PixelSpacing = [f"{v:.10g}"[:16] for v in ds]
    data.AcquisitionMatrix = us
    data.Modality = "MR"
    path = tmp_path_factory.mktemp("rt") / "x.dcm"
    with pydicom.config.disable_value_validation():
        data.save_as(path, enforce_file_format=False, implicit_vr=not explicit,
                     little_endian=True)
    with _quiet_pydicom():
        slow = pydicom.dcmread(path, force=True)
        quick = pydicom.dcmread(path, force=True)
        # LO, DS, US and CS (Modality) compared, and Specific Character Set (CS) when written
        assert _compare_dataset(quick, slow, "x.dcm") == 4 + (charset is not None)
