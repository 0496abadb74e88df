"""Tag and value helpers shared by every reader of DICOM headers in imharmony.

One look-up of a keyword's value (:func:`dicom_value`, and :func:`plain_value` for the same
value as plain Python, decoded straight from its bytes when it is a string or a binary number),
one fast parse of numeric values from their raw bytes (:func:`numbers`), one strict conversion to
floats (:func:`float_list`), one lenient coercion family for reports (:func:`as_text`,
:func:`as_float`, :func:`as_int`), one functional-group access for enhanced objects
(:func:`group_item`, :func:`functional_item`), private elements found through their creator
(:func:`private_value`), date and time parsing through pydicom's DA / TM / DT
(:func:`parse_date`, :func:`parse_time`, :func:`parse_datetime`), one label for messages
(:func:`tag_label`) and one conversion to plain Python (:func:`plain`).
"""

from __future__ import annotations

import codecs
import functools
import math
import struct
import warnings
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from typing import Any

from pydicom.datadict import dictionary_description, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.valuerep import DA, DT, IS, TM, DSfloat

from ..errors import DataError

__all__ = [
    "as_float",
    "as_int",
    "as_text",
    "brief",
    "dicom_value",
    "element_value",
    "float_list",
    "functional_item",
    "group_item",
    "numbers",
    "parse_date",
    "parse_datetime",
    "parse_time",
    "plain",
    "plain_value",
    "private_value",
    "raw_elements",
    "tag_label",
    "tag_of",
]


def tag_label(keyword: str) -> str:
    """Name and number of a DICOM attribute, as used in error messages.

    Parameters
    ----------
    keyword : str
        A DICOM keyword such as ``"RescaleSlope"``.

    Returns
    -------
    str
        E.g. ``"Rescale Slope (0028,1053)"``; the keyword itself if the dictionary does not know it.

    Examples
    --------
    >>> tag_label("RescaleIntercept")
    'Rescale Intercept (0028,1052)'
    """

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@functools.cache
def tag_of(keyword: str) -> Any:
    """The pydicom ``BaseTag`` of a keyword (cached); ``KeyError`` for an unknown keyword."""

    number = tag_for_keyword(keyword)
    if number is None:
        raise KeyError(f"{keyword!r} is not a DICOM keyword")
    return Tag(number)


def dicom_value(ds: Any, keyword: str) -> Any:
    """The value of ``keyword`` in a pydicom Dataset, or None; faster than ``ds.get(keyword)``.

    ``Dataset.get`` goes through attribute lookup and an exception for every absent keyword,
    which dominated the cost of a header scan; this looks the tag up once and tests membership.
    """
    tag = tag_of(keyword)
    if tag not in ds:
        return None
    return ds[tag].value


#: struct codes of the binary numeric VRs.
_BINARY = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY_INTS = {vr: code for vr, code in _BINARY.items() if vr in ("US", "SS", "UL", "SL")}
#: String VRs whose values are split at backslashes; those of _CHARSET_VRS depend on the
#: Specific Character Set (0008,0005), the others are always in the default repertoire.
_MULTI_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "SH", "LO",
                             "UC", "PN"})
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT", "UR"})
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "PN", "ST", "LT", "UT"})
_UNDECODED = object()


@functools.cache
def _is_latin1(encodings: Any) -> bool:
    """Whether pydicom decodes text of this character set exactly as ISO 8859-1 (the default)."""
    if not isinstance(encodings, str):
        if len(encodings) != 1:
            return False
        (encodings,) = encodings
    try:
        return codecs.lookup(encodings).name == "iso8859-1"
    except LookupError:
        return False


def _decode_raw(ds: Any, elem: Any, vr: str) -> Any:
    """A raw element's bytes as plain Python, or ``_UNDECODED`` when pydicom must decode them."""
    raw = elem.value
    if not raw:
        return None
    code = _BINARY.get(vr)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) % size:
            return _UNDECODED
        endian = "<" if elem.is_little_endian else ">"
        values = struct.unpack(f"{endian}{len(raw) // size}{code}", raw)
        return values[0] if len(values) == 1 else list(values)
    if vr in _CHARSET_VRS:
        charset = ds.original_character_set
        if not _is_latin1(charset if isinstance(charset, str) else tuple(charset)):
            return _UNDECODED
    if vr in _SINGLE_TEXT_VRS:
        return raw.decode("latin-1").rstrip(" \x00") or None
    if vr in _MULTI_TEXT_VRS:
        parts = [part.strip(" \x00") for part in raw.decode("latin-1").split("\\")]
        if vr == "PN":  # empty trailing component groups are dropped: "Doe^John=" is "Doe^John"
            parts = [part.rstrip("=").rstrip(" ") for part in parts]
        if len(parts) == 1:
            return parts[0] or None
        return parts
    return _UNDECODED


def plain_value(ds: Any, keyword: str) -> Any:
    """The value of ``keyword`` as plain Python; None when absent or empty.

    Strings come back as ``str`` (padding stripped), several values as a ``list`` of them
    (decimal and integer strings as their text: ``float()`` / ``int()`` them), binary numbers as
    ``int`` / ``float`` (or a list); sequences and bytes as pydicom gives them. String and binary
    values are decoded straight from the bytes read, in the default character repertoire (text
    of another Specific Character Set goes through pydicom): it is several times faster than
    pydicom's validated conversion, which dominated the cost of a header scan, and gives the
    same text. A value pydicom cannot convert is returned as its raw bytes, so the caller's own
    check can name the tag and the file.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.PixelSpacing, ds.Modality, ds.Rows = ["0.7", "0.8"], "CT", 512
    >>> plain_value(ds, "PixelSpacing"), plain_value(ds, "Modality"), plain_value(ds, "Rows")
    ([0.7, 0.8], 'CT', 512)
    """

    tag = tag_of(keyword)
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        vr = elem.VR or _dictionary_vr(tag)
        if vr is not None:
            value = _decode_raw(ds, elem, vr)
            if value is not _UNDECODED:
                return value
    try:
        value = ds[tag].value
    except (ValueError, TypeError, OverflowError, LookupError, BytesLengthException):
        raw = ds.get_item(tag).value
        return None if not raw or (isinstance(raw, bytes) and not raw.strip(b" \x00")) else raw
    if value is None or value == "" or isinstance(value, bytes):
        return None if not value else value

    if isinstance(value, Sequence):
        return value
    return plain(value)


@functools.cache
def _dictionary_vr(tag: int) -> str | None:
    """The dictionary VR of a public tag; None for private or ambiguous ones ("US or SS")."""

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if len(vr) == 2 else None


def numbers(ds: Any, keyword: str) -> Any:
    """The value of a numeric attribute, parsed from its raw bytes when pydicom has not yet.

    pydicom's conversion of values (validated ``DSfloat`` objects, tag look-ups) dominates header
    reading; splitting decimal strings and unpacking binary integers here is several times faster
    and just as strict (:func:`float_list` reports what does not parse). Anything else
    (ambiguous VRs such as "US or SS", odd lengths) goes through pydicom.
    """

    tag = tag_of(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(elem, RawDataElement) and isinstance(raw, bytes):
        vr = elem.VR or _dictionary_vr(tag)
        if vr in ("DS", "IS"):
            text = raw.decode("ascii", "replace").strip(" \x00")
            return text.split("\\") if text else None
        if vr in _BINARY_INTS and raw:
            value = _decode_raw(ds, elem, vr)
            if value is not _UNDECODED:
                return value
    return ds[tag].value


def float_list(
    value: Any, n: int, keyword: str, name: str, error: type[DataError] = DataError
) -> list[float] | None:
    """``n`` finite floats from a header value, None when absent; ``error`` names what is wrong.

    Values whose magnitude exceeds the float32 range are refused too: geometry and rescale values
    are written as float32 by NIfTI and by most tools, where 1e308 would become infinity.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        value = text.split("\\")
    try:
        values = [float(v) for v in (value if isinstance(value, Iterable) else [value])]
    except (TypeError, ValueError) as exc:
        raise error(f"{name}: {tag_label(keyword)} is {value!r}, not numbers.") from exc
    if len(values) != n or not all(math.isfinite(v) and abs(v) < _FLOAT32_MAX for v in values):
        raise error(
            f"{name}: {tag_label(keyword)} is {values}; expected {n} finite number(s) within "
            "the float32 range. The file is damaged."
        )
    return values


_FLOAT32_MAX = 3.4028234663852886e38


def group_item(per_frame: Any, shared: Any, sequence: str) -> Any:
    """The functional group macro item for a frame: per-frame overrides shared."""
    for holder in (per_frame, shared):
        if holder is not None:
            seq = dicom_value(holder, sequence)
            if seq:
                return seq[0]
    return None


def functional_item(ds: Any, keyword: str) -> Any:
    """First item of a functional-group macro, from the first frame or the shared groups."""
    for groups_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = dicom_value(ds, groups_kw)
        if not groups:
            continue
        seq = dicom_value(groups[0], keyword)
        if seq:
            return seq[0]
    return None


def private_value(ds: Any, group: int, creator: str, offset: int) -> Any:
    """The value of private element (group, xx``offset``) of ``creator``; None when absent or empty.

    The block is found through its Private Creator element (compared without case and padding),
    never assumed at 0x10.
    """
    wanted = creator.strip().upper()
    block = None
    for element in range(0x10, 0x100):
        holder = ds.get_item((group << 16) | element)
        if holder is None:
            continue
        name = holder.value
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(name, str) and name.strip(" \x00").upper() == wanted:
            block = element
            break
    if block is None:
        return None
    return element_value(ds, (group << 16) | (block << 8) | offset)


def element_value(ds: Any, tag: int) -> Any:
    """The value of the element at ``tag`` (a number, for private elements), as pydicom gives it;
    None when absent or empty."""
    if tag not in ds:
        return None
    value = ds[tag].value
    if value is None or (isinstance(value, str | bytes) and as_text(value) is None):
        return None
    return value


def as_text(value: Any) -> str | None:
    r"""A header value as one stripped string, several values joined by a backslash; None when
    absent or empty (bytes are read as ISO 8859-1).

    Only lists, tuples and pydicom's ``MultiValue`` are several values: other iterables, such as
    a ``PersonName`` (which iterates over its characters), are one value, read as ``str()``.

    >>> from pydicom.valuerep import PersonName
    >>> as_text(PersonName("Doe^John ")), as_text(["ORIGINAL", "PRIMARY "]), as_text(b" 1.5 ")
    ('Doe^John', 'ORIGINAL\\PRIMARY', '1.5')
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        text = value.strip(_BLANKS)
    elif isinstance(value, list | tuple | MultiValue):
        text = "\\".join(str(v).strip(_BLANKS) for v in value)
    else:
        text = str(value).strip(_BLANKS)
    return text or None


#: What :func:`as_text` strips: padding and ASCII white space (not a no-break space, which is
#: text in ISO 8859-1).
_BLANKS = " \x00\t\r\n\f\v"


def as_float(value: Any, default: float | None = None) -> float | None:
    """The first number of a header value as a finite float; ``default`` when absent, empty, not
    a number or not finite. For reports that carry on; :func:`float_list` is the strict one."""
    if isinstance(value, list | tuple) or isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    text = as_text(value) if isinstance(value, str | bytes) else value
    if isinstance(text, str) and "\\" in text:
        text = text.split("\\")[0]
    if text is None:
        return default
    try:
        out = float(text)
    except (TypeError, ValueError, OverflowError):
        return default
    return out if math.isfinite(out) else default


def as_int(value: Any, default: int | None = None) -> int | None:
    """The first value of an integer header value as ``int``; ``default`` when absent or not one."""
    number = as_float(value)
    if number is None or number != int(number):
        return default
    return int(number)


def _parse_as(cls: type, text: str, what: str) -> Any:
    """Parse ``text`` with pydicom's DA / TM / DT; its warnings (a leap second) are errors here."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return cls(text)
        except (ValueError, UserWarning):
            raise ValueError(f"{text!r} is not a DICOM {what}") from None


def parse_date(value: Any) -> date:
    """A DICOM DA (also the ACR-NEMA ``YYYY.MM.DD`` and ``YYYY-MM-DD`` forms) as a date;
    ``ValueError`` quoting the value when it is none.

    >>> parse_date("2024.02.29")
    datetime.date(2024, 2, 29)
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    text = (as_text(value) or "").replace(".", "").replace("-", "")
    parsed = _parse_as(DA, text, "date (YYYYMMDD)") if len(text) == 8 else None
    if parsed is None:
        raise ValueError(f"{as_text(value) or ''!r} is not a DICOM date (YYYYMMDD)")
    return date(parsed.year, parsed.month, parsed.day)


def parse_time(value: Any) -> time:
    """A DICOM TM (also the legacy ``HH:MM:SS`` form) as a time without time zone; ``ValueError``
    quoting the value when it is none (a leap second included).

    >>> parse_time("10:32:05.25")
    datetime.time(10, 32, 5, 250000)
    """
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    parsed = _parse_as(TM, (as_text(value) or "").replace(":", ""), "time (HHMMSS.FFFFFF)")
    return time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond)


def parse_datetime(value: Any) -> datetime:
    """A DICOM DT as a local datetime: a UTC offset is dropped, like every other DICOM date and
    time of a series, which are local. ``ValueError`` quoting the value when it is none.

    >>> parse_datetime("20240229103205+0100")
    datetime.datetime(2024, 2, 29, 10, 32, 5)
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    parsed = _parse_as(DT, as_text(value) or "", "date-time (YYYYMMDDHHMMSS.FFFFFF)")
    return datetime(
        parsed.year, parsed.month, parsed.day,
        parsed.hour, parsed.minute, parsed.second, parsed.microsecond,
    )


def raw_elements(ds: Any) -> Iterator[Any]:
    """The top-level elements of a data set in tag order, as read (deferred values not loaded).

    ``Dataset.elements()`` loads deferred values (a hostile length would allocate it in full);
    ``Dataset.values()`` gives the elements as stored, raw or converted, without reading any.
    """
    yield from sorted(ds.values(), key=_element_tag)


def _element_tag(elem: Any) -> int:
    return elem.tag  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """A header value as plain Python (str, int, float, list); None for bytes."""

    if isinstance(value, MultiValue | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat | float):
        return float(value)
    if isinstance(value, int | bool):
        return value
    if isinstance(value, bytes):
        return None
    return str(value)


def brief(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message on one line (the CLI prints errors as one line)."""
    text = str(exc)
    if "ERROR:" in text:  # ITK: "Exception thrown in ...cxx:123:\nITK ERROR: what happened"
        text = text.rsplit("ERROR:", 1)[1]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
