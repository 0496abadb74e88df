"""Siemens mosaics: several slices tiled into one image, and the geometry of each tile.

A Siemens MR mosaic (Image Type (0008,0008) holding ``MOSAIC``) stores ``n`` slices of
``r × c`` pixels as one image of ``R × C`` pixels, tiled row by row on a square grid of
``m = ⌈√n⌉`` tiles per side (``R = m·r``, ``C = m·c``; the last tiles may be empty). The number
of slices is NumberOfImagesInMosaic, in the image CSA header (private element (0029,xx10) of
creator ``SIEMENS CSA HEADER``) or in (0019,xx0A) of creator ``SIEMENS MR HEADER``.

Image Position (Patient) of a mosaic is that of the top-left corner of the whole tiled image as
if it were one slice; the first slice's position is that point moved by half the difference of
the mosaic and the tile sizes along the rows and the columns. Slice ``k`` lies ``k`` slice
spacings further along the slice normal, which the CSA header gives as SliceNormalVector (it may
point opposite to the cross product of the direction cosines); without it the cross product is
used. This is the geometry of nibabel's ``MosaicWrapper`` and of dcm2niix.

The CSA header is read here (format "SV10", as documented by nibabel's ``nicom`` notes): a
table of named elements, each with a few text items.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tags import dicom_value, private_value, tag_label

__all__ = ["Mosaic", "csa_header", "mosaic_layout", "tile_positions", "untile"]

_CSA_CREATOR = "SIEMENS CSA HEADER"
_MR_CREATOR = "SIEMENS MR HEADER"
_MAX_CSA_TAGS = 1024
_MAX_CSA_ITEMS = 4096


@dataclass(frozen=True)
class Mosaic:
    """Layout of one mosaic image."""

    n_slices: int
    per_side: int
    tile_rows: int
    tile_columns: int
    mosaic_rows: int
    mosaic_columns: int
    normal: tuple[float, float, float] | None  # SliceNormalVector from the CSA header


def csa_header(ds: Any, kind: str = "image") -> dict[str, list[str]] | None:
    """The Siemens CSA header (``"image"``: (0029,xx10), ``"series"``: (0029,xx20)) as text items.

    Returns None when the element is absent or not in the "SV10" format; raises ``ValueError``
    when it is in that format but damaged.
    """
    data = private_value(ds, 0x0029, _CSA_CREATOR, 0x10 if kind == "image" else 0x20)
    if not isinstance(data, bytes) or not data.startswith(b"SV10"):
        return None
    n_tags, check = struct.unpack_from("<2I", data, 8)
    if n_tags < 1 or n_tags > _MAX_CSA_TAGS or check != 77:
        raise ValueError(f"CSA header announces {n_tags} elements (check value {check})")
    pos = 16
    out: dict[str, list[str]] = {}
    for _ in range(n_tags):
        if pos + 84 > len(data):
            raise ValueError("CSA header ends inside an element")
        name = data[pos:pos + 64].split(b"\0", 1)[0].decode("latin-1")
        (n_items,) = struct.unpack_from("<i", data, pos + 76)
        pos += 84
        if not 0 <= n_items <= _MAX_CSA_ITEMS:
            raise ValueError(f"CSA element {name!r} announces {n_items} items")
        items = []
        for _ in range(n_items):
            if pos + 16 > len(data):
                raise ValueError("CSA header ends inside an item")
            length = struct.unpack_from("<4i", data, pos)[1]
            pos += 16
            if length < 0 or pos + length > len(data):
                raise ValueError(f"CSA item of element {name!r} runs past the header")
            text = data[pos:pos + length].split(b"\0", 1)[0].decode("latin-1").strip()
            if text:
                items.append(text)
            pos += length + (4 - length % 4) % 4
        out[name] = items
    return out


def _image_type_has_mosaic(ds: Any) -> bool:
    value = dicom_value(ds, "ImageType")
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    tokens = value.split("\\") if isinstance(value, str) else list(value)
    return any(str(t).strip().upper() == "MOSAIC" for t in tokens)


def mosaic_layout(ds: Any, rows: int, columns: int, name: str, error: type[Exception]) -> (
    Mosaic | None
):
    """The mosaic layout of an image, None when it is not a mosaic.

    Raises ``error`` when Image Type says MOSAIC but the number of slices is unknown or does not
    tile the image: the slices cannot then be unpacked, and reading the tiled image as one slice
    would be wrong.
    """
    if not _image_type_has_mosaic(ds):
        return None
    try:
        csa = csa_header(ds, "image")
    except (ValueError, struct.error) as exc:
        raise error(
            f"{name}: {tag_label('ImageType')} says MOSAIC but the Siemens CSA image header "
            f"(0029,xx10) is damaged ({exc}); the slices cannot be unpacked."
        ) from None
    count: Any = None
    if csa and csa.get("NumberOfImagesInMosaic"):
        count = csa["NumberOfImagesInMosaic"][0]
    if count is None:
        count = private_value(ds, 0x0019, _MR_CREATOR, 0x0A)
    try:
        n = int(float(count)) if count is not None else 0
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise error(
            f"{name}: {tag_label('ImageType')} says MOSAIC but NumberOfImagesInMosaic (CSA "
            "header, or (0019,xx0A) of SIEMENS MR HEADER) is missing or not a positive integer; "
            "the slices cannot be unpacked."
        )
    per_side = math.ceil(math.sqrt(n))
    if rows % per_side or columns % per_side:
        raise error(
            f"{name}: a mosaic of {n} slices ({per_side} x {per_side} tiles) does not tile "
            f"{rows} Rows x {columns} Columns; the header is inconsistent."
        )
    normal = None
    if csa and len(csa.get("SliceNormalVector", [])) == 3:
        try:
            vec = np.array([float(v) for v in csa["SliceNormalVector"]])
        except ValueError:
            vec = np.zeros(3)
        if np.all(np.isfinite(vec)) and abs(np.linalg.norm(vec) - 1) < 1e-3:
            normal = (float(vec[0]), float(vec[1]), float(vec[2]))
    return Mosaic(n, per_side, rows // per_side, columns // per_side, rows, columns, normal)


def untile(image: np.ndarray, layout: Mosaic) -> np.ndarray:
    """Slices of a mosaic image, shape (n_slices, tile_rows, tile_columns) (a copy)."""
    m, r, c = layout.per_side, layout.tile_rows, layout.tile_columns
    tiles = image.reshape(m, r, m, c).swapaxes(1, 2).reshape(m * m, r, c)
    return np.ascontiguousarray(tiles[: layout.n_slices])


def tile_positions(
    position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: np.ndarray,
    slice_spacing: float,
    layout: Mosaic,
) -> np.ndarray:
    """Image Position (Patient) of each slice of a mosaic, shape (n_slices, 3).

    Parameters
    ----------
    position : array of 3
        The mosaic's Image Position (Patient).
    orientation : array of 6
        Image Orientation (Patient): row cosine, column cosine.
    pixel_spacing : array of 2
        Pixel Spacing: between rows, between columns (mm).
    slice_spacing : float
        Distance between slices (mm).
    layout : Mosaic
    """
    row_cos, col_cos = orientation[:3], orientation[3:]
    shift_rows = (layout.mosaic_rows - layout.tile_rows) / 2.0
    shift_cols = (layout.mosaic_columns - layout.tile_columns) / 2.0
    first = (
        position
        + col_cos * pixel_spacing[0] * shift_rows
        + row_cos * pixel_spacing[1] * shift_cols
    )
    normal = np.asarray(layout.normal) if layout.normal is not None else np.cross(row_cos, col_cos)
    k = np.arange(layout.n_slices, dtype=np.float64)[:, None]
    return first[None, :] + k * slice_spacing * normal[None, :]
