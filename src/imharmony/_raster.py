"""Pixel sets shared by the image-level methods and the diagnostics (one rule each).

- :func:`as_mask`: a mask as a boolean array on an image's grid (THE mask check);
- multi-band rasters (band axis last): :func:`as_raster`, :func:`valid_pixels`,
  :func:`nodata_pixels`, :func:`check_same_bands`, :func:`apply_band_affine`;
- :func:`float_dtype`: the floating dtype of an output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataError
from .image import Image

__all__ = [
    "apply_band_affine",
    "as_mask",
    "as_raster",
    "check_same_bands",
    "float_dtype",
    "nodata_pixels",
    "valid_pixels",
]


def as_mask(mask: Any, shape: tuple[int, ...], what: str, image: Image | None = None) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape``; ``what`` names it in error messages.

    THE mask check: a mask given as an :class:`~imharmony.image.Image` must be on ``image``'s grid
    (:meth:`Image.same_grid <imharmony.image.Image.same_grid>`: shape, spacing, origin and
    direction); an array must have the image's shape.
    """
    if isinstance(mask, Image):
        if image is not None and len(mask.spacing) == len(image.spacing):
            difference = image.grid_difference(mask)
            if difference:
                raise DataError(
                    f"{what} is not on the image's grid ({difference}); resample the mask onto "
                    "the image grid first (imharmony.imaging.resample_mask)."
                )
        mask = mask.array
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise DataError(
            f"{what} has shape {arr.shape} but the image has shape {tuple(shape)}; give a mask on "
            "the same grid."
        )
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{what} must be boolean (or 0/1 numbers); got dtype {arr.dtype}.")
    return arr != 0


def float_dtype(*dtypes: Any) -> np.dtype:
    """The floating dtype of an output: at least float32, float64 when any input needs it."""
    return np.result_type(np.float32, *dtypes)


def as_raster(img: Any, what: str) -> Image:
    image = img if isinstance(img, Image) else Image(np.asarray(img))
    if image.array.ndim < 2:
        raise DataError(
            f"{what} must have a band axis last, e.g. shape (H, W, B); got shape "
            f"{image.array.shape}."
        )
    if not (
        np.issubdtype(image.array.dtype, np.floating)
        or np.issubdtype(image.array.dtype, np.integer)
    ):
        raise DataError(f"{what} must be numeric; got dtype {image.array.dtype}.")
    return image


def valid_pixels(image: Image, mask: Any, what: str) -> np.ndarray:
    """Spatial mask of usable pixels: inside ``mask``, finite and not no-data in every band."""
    arr = image.array
    spatial = arr.shape[:-1]
    valid = np.ones(spatial, dtype=np.bool_)
    if mask is not None:
        if isinstance(mask, Image):
            mask = mask.array
        valid &= as_mask(mask, spatial, f"{what} mask")
    if arr.dtype.kind == "f":
        valid &= np.isfinite(arr).all(axis=-1)
    nodata = image.meta.get("nodata")
    if nodata is not None and np.isfinite(nodata):
        valid &= ~(arr == np.asarray(nodata, dtype=arr.dtype)).any(axis=-1)
    if not valid.any():
        raise DataError(
            f"{what}: no usable pixels (inside the mask, finite and not no-data in every band)."
        )
    return valid


def nodata_pixels(image: Image) -> np.ndarray:
    """Pixels that are no-data or non-finite in any band (left untouched by the normalizers)."""
    arr = image.array
    bad = np.zeros(arr.shape[:-1], dtype=np.bool_)
    if arr.dtype.kind == "f":
        bad |= ~np.isfinite(arr).all(axis=-1)
    nodata = image.meta.get("nodata")
    if nodata is not None and np.isfinite(nodata):
        bad |= (arr == np.asarray(nodata, dtype=arr.dtype)).any(axis=-1)
    return bad


def check_same_bands(img: Image, reference: Image) -> int:
    b = img.array.shape[-1]
    if reference.array.shape[-1] != b:
        raise DataError(
            f"the image has {b} bands but the reference has {reference.array.shape[-1]}; give "
            "rasters with the same bands in the same order (band axis last)."
        )
    return b


def apply_band_affine(
    image: Image, gains: np.ndarray, offsets: np.ndarray, skip: np.ndarray
) -> np.ndarray:
    arr = image.array
    out_dtype = float_dtype(arr.dtype)
    out = arr.astype(out_dtype, copy=True)
    keep = ~skip
    for band in range(arr.shape[-1]):
        view = out[..., band]
        view[keep] = view[keep] * out_dtype.type(gains[band]) + out_dtype.type(offsets[band])
    return out
