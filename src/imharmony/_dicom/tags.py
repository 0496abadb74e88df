"""Tag and value helpers shared by every reader of DICOM headers in imharmony.

One look-up of a keyword's value (:func:`dicom_value`), one fast parse of numeric values from
their raw bytes (:func:`numbers`), one strict conversion to floats (:func:`float_list`), one
functional-group access for enhanced objects (:func:`group_item`, :func:`functional_item`), one
label for messages (:func:`tag_label`) and one conversion to plain Python (:func:`plain`).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import DataError

__all__ = [
    "brief",
    "dicom_value",
    "float_list",
    "functional_item",
    "group_item",
    "numbers",
    "plain",
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
    from pydicom.datadict import dictionary_description, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@functools.cache
def tag_of(keyword: str) -> Any:
    """The pydicom ``BaseTag`` of a keyword (cached); ``KeyError`` for an unknown keyword."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

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


_BINARY_INTS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}


def numbers(ds: Any, keyword: str) -> Any:
    """The value of a numeric attribute, parsed from its raw bytes when pydicom has not yet.

    pydicom's conversion of values (validated ``DSfloat`` objects, tag look-ups) dominates header
    reading; splitting decimal strings and unpacking binary integers here is several times faster
    and just as strict (:func:`float_list` reports what does not parse). Anything else
    (ambiguous VRs such as "US or SS", odd lengths) goes through pydicom.
    """
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement

    tag = tag_of(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(elem, RawDataElement) and isinstance(raw, bytes):
        vr = elem.VR or dictionary_VR(tag)
        if vr in ("DS", "IS"):
            text = raw.decode("ascii", "replace").strip(" \x00")
            return text.split("\\") if text else None
        code = _BINARY_INTS.get(vr)
        if code is not None and raw and len(raw) % struct.calcsize(code) == 0:
            endian = "<" if elem.is_little_endian else ">"
            values = struct.unpack(f"{endian}{len(raw) // struct.calcsize(code)}{code}", raw)
            return values[0] if len(values) == 1 else list(values)
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
    """The value of private element (group, xx``offset``) of ``creator``, None when absent.

    The block is found through its Private Creator element, never assumed at 0x10.
    """
    try:
        block = ds.private_block(group, creator)
    except KeyError:
        return None
    tag = block.get_tag(offset)
    if tag not in ds:
        return None
    return ds[tag].value


def raw_elements(ds: Any) -> Iterator[Any]:
    """The top-level elements of a data set in tag order, as read (deferred values not loaded).

    ``Dataset.elements()`` loads deferred values (a hostile length would allocate it in full).
    """
    for tag in sorted(ds.keys()):
        yield ds.get_item(tag, keep_deferred=True)


def plain(value: Any) -> Any:
    """A header value as plain Python (str, int, float, list); None for bytes."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat

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
