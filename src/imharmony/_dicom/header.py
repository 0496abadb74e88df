"""The one DICOM header reader, and its one acceptance policy.

:func:`read_header` decides, for every reader of DICOM files in imharmony (``convert`` /
:func:`imharmony.read_dicom_series`, ``scan`` / :func:`imharmony.scan_protocols`), whether a file
is a usable DICOM image header, and why not. A file is accepted when

* it starts with the 128-byte preamble and ``DICM``, or, without them, with a group 0002 or
  0008 element, little endian or explicit VR big endian (files written by old software, which
  pydicom reads with ``force=True``);
* its header parses completely (not cut, sequences nested at most ``max_depth`` deep, no
  element longer than the file), and its Transfer Syntax UID (0002,0010) is known and agrees
  with how the data set is actually encoded (implicit / explicit VR);
* SOP Class UID, Series Instance UID (a valid UID) and Modality are present;
* it is an image: Rows, Columns and Pixel Data (7FE0,0010) present, Rows × Columns × Number of
  Frames × Samples per Pixel at most ``max_pixels`` (checked before any pixel is read);
* for uncompressed pixel data, the Pixel Data element holds exactly the bytes Rows × Columns ×
  frames × samples × Bits Allocated describe (one padding byte allowed) and the file holds them.

Anything else raises :class:`FileRejected` with one of :data:`REJECT_REASONS`. Whether the pixel
layout is one imharmony can convert (one sample per pixel, 8/16/32 bits) is *not* part of this
policy: it is a property of a series, checked only for the series being converted, so an RGB
or 1-bit file elsewhere in a folder never blocks another series.

Header values longer than 1 MiB are not read while parsing (pydicom's ``defer_size``), so a
hostile element length cannot make the parser allocate gigabytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .framing import frame_header
from .tags import as_text, brief, numbers, plain_value, raw_elements, tag_label

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PIXELS",
    "REJECT_REASONS",
    "DicomError",
    "DicomSeriesError",
    "DicomSizeError",
    "FileRejected",
    "Header",
    "decoding",
    "read_header",
]

#: Default limit on the number of pixels a header may announce (about 8.6 GB as float64).
DEFAULT_MAX_PIXELS: int = 2**30
#: Deepest sequence nesting accepted (real enhanced headers and SR trees stay well below).
DEFAULT_MAX_DEPTH: int = 32

#: Why a file was not accepted.
REJECT_REASONS: dict[str, str] = {
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

PIXEL_DATA_TAG = 0x7FE00010
OTHER_PIXEL_TAGS = {0x7FE00008: "Float Pixel Data", 0x7FE00009: "Double Float Pixel Data"}
_PIXEL_TAGS = frozenset({PIXEL_DATA_TAG, *OTHER_PIXEL_TAGS})
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Header values longer than this are not read while parsing (pydicom's ``defer_size``).
DEFER_BYTES = 1 << 20
# Bytes read at once from the start of each file; a header that does not fit is read by pydicom.
_HEADER_BYTES = 1 << 14


class DicomError(DataError):
    """A DICOM file or series cannot be read as given."""


class DicomSeriesError(DicomError):
    """The files of a series do not form one regular volume (gaps, duplicates, mixed geometry)."""


class DicomSizeError(DicomError):
    """A header announces more pixels than ``max_pixels`` allows."""


class FileRejected(DicomError):
    """A file the header policy does not accept.

    Attributes
    ----------
    name : str
        The file's display name.
    reason : str
        One of :data:`REJECT_REASONS`.
    detail : str
        What is wrong, without the file name.
    series_uid : str or None
        The file's Series Instance UID when its header could be read that far.
    """

    def __init__(self, name: str, reason: str, detail: str, series_uid: str | None = None):
        super().__init__(f"{name}: {detail}")
        self.name, self.reason, self.detail, self.series_uid = name, reason, detail, series_uid


class FileTooLarge(FileRejected, DicomSizeError):
    """A file whose header announces more pixels than ``max_pixels``."""


def _raised_in_pydicom(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside pydicom (decoding a value of the file)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and str(last.tb_frame.f_globals.get("__name__", "")).startswith(
        "pydicom"
    )


@contextlib.contextmanager
def decoding(name: str) -> Iterator[None]:
    """Turn a failure of pydicom to decode a header value into a :class:`DicomError`.

    Values are decoded lazily, long after the header was accepted; a corrupt value (an unknown
    VR, a malformed number or date, a bad character set) then fails inside pydicom. That is a
    property of the file, reported as such (exit 2); any other exception propagates.
    """
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        if not _raised_in_pydicom(exc):
            raise
        raise DicomError(
            f"{name}: a header value cannot be decoded ({type(exc).__name__}: {brief(exc)}); "
            "the file is damaged. Replace or remove it."
        ) from None


@dataclass
class Header:
    """One accepted DICOM file: its header and where its pixel data sit."""

    path: Path
    name: str
    ds: Any
    file_size: int
    series_uid: str
    little_endian: bool
    implicit_vr: bool
    pixel_tag: int  # 0x7FE00010, or the float pixel data tags
    value_offset: int | None  # byte offset of the pixel data value (None when deflated)
    value_length: int | None  # declared length; None for undefined (encapsulated)
    native: bool  # uncompressed, readable straight from the file
    n_frames: int
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    # Set by the reader of a series once it has checked the layout (stored bits, sign).
    bits_stored: int = 0
    pixel_representation: int = 0
    # Set by the reader of a series for a Siemens mosaic (rows, columns, n_frames then describe
    # one tile and the number of slices; see imharmony._dicom.mosaic).
    mosaic: Any = None


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less DICOM file starts with a group 0002 or 0008 element: little endian, or
    big endian with an explicit VR (the file meta group, when present, is always little endian,
    so a big-endian data set without it starts with group 0008)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group in (0x0002, 0x0008) and element < 0x0100:
        return True
    group, element = struct.unpack(">HH", head[:4])
    return group == 0x0008 and element < 0x0100 and head[4:6].isalpha() and head[4:6].isupper()


def _check_structure(ds: Any, max_depth: int) -> tuple[str, str] | None:
    """Walk every element and sequence iteratively; (reason, detail) of the first structural
    fault: a sequence nested more than ``max_depth`` deep, or an element whose explicit Value
    Representation is none that DICOM defines (PS3.5 6.2). pydicom reads such an element with a
    guessed 2-byte length and cannot decode its value; the elements after it may be misframed,
    so the file is damaged for every reader alike.

    Only sequence elements are converted (pydicom keeps the others raw until they are used),
    which keeps the walk cheap on headers with hundreds of elements.
    """
    from pydicom.datadict import dictionary_VR
    from pydicom.valuerep import STANDARD_VR

    stack: list[tuple[Any, int]] = [(ds, 0)]
    while stack:
        dataset, depth = stack.pop()
        for raw in list(raw_elements(dataset)):
            vr = raw.VR
            if vr is None:  # implicit VR: what the dictionary says
                try:
                    vr = dictionary_VR(raw.tag)
                except KeyError:
                    continue
            elif vr not in STANDARD_VR and len(vr) == 2:  # ambiguous VRs ("US or SS") are not
                shown = vr if vr.isprintable() else vr.encode("latin-1", "replace").hex(" ")
                return "unreadable", (
                    f"damaged DICOM file: element {raw.tag} has the Value Representation "
                    f"{shown!r}, which DICOM does not define; its value cannot be decoded and "
                    "the elements after it cannot be framed with confidence. Replace or remove "
                    "the file."
                )
            if vr != "SQ":
                continue
            if depth + 1 > max_depth:
                return "too_deeply_nested", (
                    f"sequence {raw.tag} is nested more than {max_depth} levels deep"
                )
            elem = dataset[raw.tag]
            if elem.VR == "SQ" and elem.value:
                stack.extend((item, depth + 1) for item in elem.value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or value == "":
        return None
    return int(value)


def _header_truncated(ds: Any, size: int) -> str | None:
    """Evidence that the file ends inside its header (pydicom reads such files silently)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "FileMetaInformationGroupLength" in meta:
        try:
            group_length = int(meta.FileMetaInformationGroupLength or 0)
        except (TypeError, ValueError):
            group_length = 0
        if 132 + 12 + group_length > size:
            return f"the file meta information announces {group_length} bytes; the file is shorter"
    last_end = None
    for elem in raw_elements(ds):
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


def _peek_pixel_element(
    f: Any, start: int, little: bool, implicit: bool
) -> tuple[int | None, int, int | None]:
    """Read the element header at ``start``: (tag, value offset, length or None if undefined)."""
    f.seek(start)
    head = f.read(12)
    if len(head) < 8:
        return None, start, None
    endian = "<" if little else ">"
    group, elem = struct.unpack(f"{endian}HH", head[:4])
    tag = (group << 16) | elem
    if implicit:
        (length,) = struct.unpack(f"{endian}L", head[4:8])
        value_offset = start + 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return tag, start, None
        (length,) = struct.unpack(f"{endian}L", head[8:12])
        value_offset = start + 12
    else:
        (length,) = struct.unpack(f"{endian}H", head[6:8])
        value_offset = start + 8
    return tag, value_offset, (None if length == 0xFFFFFFFF else length)


def _first_vr_is_explicit(ds: Any) -> bool | None:
    """Whether the first data set element was parsed with an explicit VR (None: no element)."""
    from pydicom.dataelem import RawDataElement

    for elem in raw_elements(ds):
        if isinstance(elem, RawDataElement):  # pydicom converts a few while reading: skip them
            return elem.VR is not None
    return None


def read_header(
    path: Path,
    name: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Header:
    """Read and check one file's header under the one acceptance policy (module docstring).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    name : str
        What to call it in messages.
    max_pixels : int
        Largest Rows × Columns × frames × samples accepted.
    max_depth : int
        Deepest sequence nesting accepted.

    Returns
    -------
    Header

    Raises
    ------
    FileRejected
        With the reason (:data:`REJECT_REASONS`) and what is wrong; :class:`FileTooLarge` (also a
        :class:`DicomSizeError`) for a size above ``max_pixels``.
    """
    try:
        with open(path, "rb") as f:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                return _read(f, path, name, max_pixels, max_depth, caught)
    except OSError as exc:
        raise FileRejected(
            name, "unreadable", f"cannot be read ({exc.strerror or exc})"
        ) from None


def _read(
    f: Any, path: Path, name: str, max_pixels: int, max_depth: int, caught: list[Any]
) -> Header:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID

    def reject(reason: str, detail: str, uid: str | None = None) -> FileRejected:
        return FileRejected(name, reason, detail, uid)

    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise reject("empty", "the file is empty (0 bytes)")
    start = f.read(_HEADER_BYTES)
    has_prefix = len(start) >= 132 and start[128:132] == b"DICM"
    if not has_prefix and not _looks_like_raw_dicom(start):
        raise reject(
            "not_dicom",
            "not a DICOM file (no 'DICM' prefix at byte 128 and no DICOM element at the start)",
        )
    quick = frame_header(f, start, size, DEFER_BYTES) if has_prefix else None
    if quick is not None:
        ds, pixel_element = quick
        pixel_start = size if pixel_element is None else pixel_element
        cut = None  # the quick path framed every element inside the file
    else:
        f.seek(0)
        try:
            ds = pydicom.dcmread(
                f, stop_before_pixels=True, defer_size=DEFER_BYTES, force=not has_prefix
            )
        except InvalidDicomError as exc:
            raise reject("not_dicom", f"not a readable DICOM file ({brief(exc)})") from None
        except EOFError as exc:
            raise reject("truncated", f"the file ends inside its header ({brief(exc)})") from None
        except RecursionError:
            raise reject(
                "too_deeply_nested", "sequences nested too deeply for the parser"
            ) from None
        except Exception as exc:  # any parser failure is a property of the file
            raise reject(
                "unreadable",
                f"damaged DICOM file, the header cannot be parsed ({type(exc).__name__}: "
                f"{brief(exc)}); replace or remove the file",
            ) from None
        pixel_start = f.tell()
        cut = _header_truncated(ds, size)
        if cut is None and pixel_start > size:
            cut = f"an element announces {pixel_start - size} bytes more than the file holds"
    try:
        fault = _check_structure(ds, max_depth)
    except RecursionError:
        fault = "too_deeply_nested", "sequences nested too deeply for the parser"
    except Exception as exc:
        raise reject(
            "unreadable",
            f"damaged DICOM file, a sequence cannot be parsed ({type(exc).__name__}: "
            f"{brief(exc)})",
        ) from None
    if fault:
        raise reject(*fault)
    eof = next(
        (
            str(w.message)
            for w in caught
            if "end of file" in str(w.message).lower() or "eof" in str(w.message).lower()
        ),
        None,
    )
    truncated = cut or eof

    def text(keyword: str, holder: Any = ds) -> str:
        try:
            return as_text(plain_value(holder, keyword)) or ""
        except Exception:
            return ""

    sop = text("SOPClassUID") or text("MediaStorageSOPClassUID", ds.file_meta)
    if sop == _DICOMDIR_SOP_CLASS:
        raise reject("not_an_image", "a DICOMDIR (media directory), not an image")
    uid = text("SeriesInstanceUID")
    missing = [
        tag_label(keyword)
        for keyword, value in (
            ("SeriesInstanceUID", uid),
            ("SOPClassUID", sop),
            ("Modality", text("Modality")),
        )
        if not value
    ]
    if missing:
        if truncated:
            raise reject("truncated", f"the file is truncated ({truncated})")
        if not has_prefix and len(missing) == 3:
            raise reject("not_dicom", "no DICOM header could be read")
        raise reject(
            "missing_required_tag",
            f"{', '.join(missing)} missing; the file cannot be placed in a series (truncated or "
            "damaged?). Replace or remove it.",
        )
    if not _UID.match(uid) or len(uid) > 64:
        raise reject("invalid_value", f"{tag_label('SeriesInstanceUID')} {uid[:70]!r} is not a UID")

    # Transfer syntax: known, and in agreement with the encoding of the data set.
    ts_given = "TransferSyntaxUID" in ds.file_meta
    ts_value = text("TransferSyntaxUID", ds.file_meta)
    implicit, little = ds.original_encoding
    if not ts_given and not has_prefix:
        ts = UID(
            "1.2.840.10008.1.2" if implicit else
            ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
        )
    elif not ts_value:
        raise reject(
            "invalid_value",
            f"{tag_label('TransferSyntaxUID')} is "
            + ("empty in" if ts_given else "missing from")
            + " the file meta information; the encoding of the file is unknown. Replace the file.",
            uid,
        )
    else:
        ts = UID(ts_value)
        if not ts.is_transfer_syntax:
            raise reject(
                "invalid_value",
                f"{tag_label('TransferSyntaxUID')} {ts} is not a known transfer syntax",
                uid,
            )
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
    explicit_found = None if quick is not None else _first_vr_is_explicit(ds)
    if explicit_found is not None and explicit_found == implicit:
        raise reject(
            "invalid_value",
            f"{tag_label('TransferSyntaxUID')} {ts} ({ts.name}) says "
            f"{'implicit' if implicit else 'explicit'} VR but the data set is encoded with "
            f"{'explicit' if implicit else 'implicit'} VR; the file is inconsistent and its "
            "pixels cannot be located with confidence. Re-export it.",
            uid,
        )

    # Pixel data.
    deflated = ts.is_deflated
    pixel_tag: int | None = None
    value_offset: int | None = None
    value_length: int | None = None
    if deflated:
        # The data set was inflated in memory: the file offset says nothing.
        pixel_tag = PIXEL_DATA_TAG if "Rows" in ds else None
    elif pixel_start < size:
        tag, value_offset, value_length = _peek_pixel_element(f, pixel_start, little, implicit)
        if tag in _PIXEL_TAGS:
            pixel_tag = tag
    try:
        rows, cols = _int(numbers(ds, "Rows")), _int(numbers(ds, "Columns"))
        frames = _int(numbers(ds, "NumberOfFrames"))
        samples = _int(numbers(ds, "SamplesPerPixel"))
        bits = _int(numbers(ds, "BitsAllocated"))
    except Exception as exc:  # corrupt values: pydicom raises many types
        raise reject(
            "invalid_value",
            f"Rows, Columns, Number of Frames, Samples per Pixel or Bits Allocated cannot be "
            f"read as an integer ({type(exc).__name__}: {brief(exc)})",
            uid,
        ) from None
    is_image = rows is not None and cols is not None
    if pixel_tag is None:
        from pydicom.uid import UID as _UIDType

        image_class = "Image Storage" in _UIDType(sop).name
        # A vendor's private class (not a DICOM UID) is no image without pixel data, even with
        # Rows and Columns (Philips' Private MR Series Data Storage, 1.3.46.670589.11.0.0.12.2).
        private_class = bool(sop) and not sop.startswith("1.2.840.10008.")
        if image_class or (is_image and not private_class):
            if truncated:
                raise reject("truncated", f"the file is truncated ({truncated})", uid)
            raise reject(
                "missing_pixel_data",
                "an image header without Pixel Data (7FE0,0010); the file is truncated or "
                "header-only. Replace or remove it.",
                uid,
            )
        raise reject("not_an_image", f"a DICOM object without pixel data ({UID(sop).name})", uid)
    if not is_image:
        raise reject("missing_required_tag", f"Pixel Data without {tag_label('Rows')}", uid)
    assert rows is not None and cols is not None
    frames = 1 if frames is None else frames
    samples = 1 if samples is None else samples
    if bits is None:
        raise reject("missing_required_tag", f"{tag_label('BitsAllocated')} missing", uid)
    if rows < 1 or cols < 1 or frames < 1 or samples < 1 or bits < 1 or bits > 64:
        raise reject(
            "invalid_value",
            f"{tag_label('Rows')} = {rows}, {tag_label('Columns')} = {cols}, "
            f"{tag_label('NumberOfFrames')} = {frames}, {tag_label('SamplesPerPixel')} = "
            f"{samples}, {tag_label('BitsAllocated')} = {bits}; an image needs at least one "
            "pixel of 1 to 64 bits",
            uid,
        )
    n_pixels = rows * cols * frames * samples
    if n_pixels > max_pixels:
        raise FileTooLarge(
            name,
            "too_large",
            f"the header announces {rows} Rows x {cols} Columns x {frames} frames x "
            f"{samples} samples = {n_pixels:.4g} pixels ({n_pixels * bits / 8 / 2**30:.3g} GiB "
            f"stored), above max_pixels={max_pixels}; nothing was decoded. If the header is "
            "genuine, raise max_pixels.",
            uid,
        )
    native = not deflated and not ts.is_compressed and value_length is not None
    if native:
        assert value_offset is not None and value_length is not None
        needed = math.ceil(n_pixels * bits / 8)
        available = size - value_offset
        if available < min(needed, value_length):
            raise reject(
                "truncated",
                f"file truncated: it ends after {max(available, 0)} of the {needed} bytes of "
                "Pixel Data (7FE0,0010). Copy the file again from its source.",
                uid,
            )
        if value_length > available:
            raise reject(
                "truncated",
                f"Pixel Data (7FE0,0010) announces {value_length} bytes but only {available} "
                "remain in the file. Copy the file again from its source.",
                uid,
            )
        if value_length < needed or value_length > needed + 1:
            raise reject(
                "truncated" if value_length < needed else "invalid_value",
                f"Pixel Data (7FE0,0010) holds {value_length} bytes but Rows x Columns x frames "
                f"x samples x Bits Allocated ({rows} x {cols} x {frames} x {samples} x {bits} "
                f"bits) need {needed}; the header and the pixels disagree, and reading them "
                "would misplace or drop pixels.",
                uid,
            )
    elif ts.is_compressed and value_length is not None and pixel_tag == PIXEL_DATA_TAG:
        raise reject(
            "invalid_value",
            f"{tag_label('TransferSyntaxUID')} {ts} ({ts.name}) is compressed but Pixel Data "
            "(7FE0,0010) has a defined length instead of encapsulated fragments",
            uid,
        )
    return Header(
        path=path,
        name=name,
        ds=ds,
        file_size=size,
        series_uid=uid,
        little_endian=little,
        implicit_vr=implicit,
        pixel_tag=pixel_tag,
        value_offset=value_offset,
        value_length=value_length,
        native=native,
        n_frames=frames,
        rows=rows,
        columns=cols,
        samples=samples,
        bits_allocated=bits,
    )
