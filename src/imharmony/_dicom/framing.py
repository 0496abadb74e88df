"""A quick way through a DICOM header for the plain, common file; pydicom for everything else.

``pydicom.dcmread(..., stop_before_pixels=True)`` spends most of its time in general machinery
(a generator per dataset, file-object reads and seeks per element, the transfer-syntax and
encoding heuristics). For the file that most series consist of — preamble and ``DICM``, little
endian, every top-level element of defined length — the element framing is a few lines over one
``bytes`` buffer. :func:`frame_header` does only that framing and hands pydicom the same
``RawDataElement`` tuples that ``dcmread`` would build, so every value is still decoded by
pydicom, lazily, exactly as after ``dcmread``. Anything else (big endian, deflate, undefined
lengths, a VR pydicom would have to guess, command-set elements, a header longer than the buffer,
a value longer than the deferral size) returns ``None`` and the caller uses ``dcmread``.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

__all__ = ["frame_header"]

_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHL")
_LONG = struct.Struct("<L")
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_UNDEFINED = 0xFFFFFFFF


def _elements(
    buf: bytes, pos: int, implicit: bool, stop_group2: bool, defer: int, vrs: Any, long_vrs: Any
) -> tuple[list[tuple[int, str | None, int, int]], int, int | None] | None:
    """Frame elements from ``pos``: ([(tag, vr, length, value offset)], end, stop tag) or None.

    Stops before the first element outside group 2 (``stop_group2``) or before a pixel data
    element, or at the end of ``buf``; ``None`` for anything the quick path does not cover.
    """
    out: list[tuple[int, str | None, int, int]] = []
    n = len(buf)
    explicit_unpack, implicit_unpack, long_unpack = (
        _EXPLICIT.unpack_from, _IMPLICIT.unpack_from, _LONG.unpack_from
    )
    while pos < n:
        if pos + 8 > n:
            return None
        if implicit:
            group, elem, length = implicit_unpack(buf, pos)
        else:
            group, elem, raw_vr, length = explicit_unpack(buf, pos)
        tag = (group << 16) | elem
        if (stop_group2 and group != 2) or tag in _PIXEL_TAGS:
            return out, pos, tag
        if implicit:
            vr: str | None = None
            value = pos + 8
        else:
            if raw_vr not in vrs:
                return None
            vr = raw_vr.decode("ascii")
            if vr in long_vrs:
                if pos + 12 > n:
                    return None
                (length,) = long_unpack(buf, pos + 8)
                value = pos + 12
            else:
                value = pos + 8
        if group in (0, 0xFFFE) or length == _UNDEFINED or length > defer or value + length > n:
            return None
        out.append((tag, vr, length, value))
        pos = value + length
    return out, pos, None


def frame_header(
    fileobj: BinaryIO, buf: bytes, file_size: int, defer: int
) -> tuple[Any, int | None] | None:
    """The header of a DICOM file as pydicom's ``dcmread(stop_before_pixels=True)`` gives it.

    Parameters
    ----------
    fileobj : file object
        The open file (``rb``); it names the dataset, as ``dcmread`` does, and is not read.
    buf : bytes
        The start of the file (at least the preamble, ``DICM`` and the whole header).
    file_size : int
        Size of the file: tells whether ``buf`` ended at the end of the file.
    defer : int
        Values longer than this are left to ``dcmread`` (its ``defer_size``).

    Returns
    -------
    (FileDataset, int or None) or None
        The dataset and the offset of the pixel data element (``None`` when the file has none),
        or ``None`` when the file is not one the quick path covers.
    """
    from pydicom.dataelem import RawDataElement, empty_value_for_VR
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filereader import ENCODED_VR
    from pydicom.tag import BaseTag
    from pydicom.uid import UID, PrivateTransferSyntaxes
    from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

    if len(buf) < 132 or buf[128:132] != b"DICM":
        return None
    framed = _elements(buf, 132, False, True, defer, ENCODED_VR, EXPLICIT_VR_LENGTH_32)
    if framed is None or not framed[0]:
        return None
    meta_elements, start, _ = framed
    syntax = None
    for tag, _vr, length, value in meta_elements:
        if tag == 0x00020010:
            syntax = UID(buf[value:value + length].rstrip(b"\0 ").decode("ascii", "replace"))
    if (
        syntax is None
        or not syntax.is_transfer_syntax
        or syntax.is_deflated
        or not syntax.is_little_endian
        or syntax in PrivateTransferSyntaxes
        or start >= file_size
    ):
        return None
    implicit = syntax.is_implicit_VR
    vr_bytes = buf[start + 4:start + 6]
    if implicit and len(vr_bytes) == 2 and all(0x40 < b < 0x5B for b in vr_bytes):
        return None  # looks like explicit VR under an implicit transfer syntax: pydicom guesses
    framed = _elements(buf, start, implicit, False, defer, ENCODED_VR, EXPLICIT_VR_LENGTH_32)
    if framed is None:
        return None
    elements, end, stop = framed
    if stop is None and end < file_size:
        return None  # the buffer ended inside the header

    def raw(items: list[tuple[int, str | None, int, int]], implicit_vr: bool) -> dict[Any, Any]:
        elements = {}
        for tag, vr, length, value in items:
            key = BaseTag(tag)
            data = buf[value:value + length] if length else empty_value_for_VR(vr, raw=True)
            elements[key] = RawDataElement(key, vr, length, data, value, implicit_vr, True)
        return elements

    file_meta = FileMetaDataset(raw(meta_elements, False))
    file_meta.set_original_encoding(False, True, "iso8859")
    ds = FileDataset(fileobj, raw(elements, implicit), buf[:128], file_meta, implicit, True)
    try:
        charset = ds._character_set
    except Exception:  # a damaged Specific Character Set: dcmread's verdict, through dcmread
        return None
    ds.set_original_encoding(implicit, True, charset)
    return ds, (end if stop is not None else None)
