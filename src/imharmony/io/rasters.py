"""Reading and writing 2-D multi-band rasters: PNG, TIFF and GeoTIFF.

A raster is an :class:`~imharmony.image.Image` whose **last array axis is the band axis** (shape
``(H, W, B)``); GeoTIFFs keep their coordinate reference system and affine transform in ``meta``.
The readers are optional packages (imageio, tifffile, rasterio): a missing one raises
:class:`OptionalDependencyError` naming what to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, OptionalDependencyError
from ..errors import optional_import as _optional
from ..image import Image
from ._atomic import atomic_path

__all__ = ["OptionalDependencyError", "read_raster", "write_raster"]


_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
# TIFF tags that make a file a GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation,
# GeoKeyDirectory.
_GEO_TAGS = {33550, 33922, 34264, 34735}



def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _is_geotiff(path: Path) -> bool:
    tifffile = _optional("tifffile", f"reading {path}", "tifffile")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        return any(code in tags for code in _GEO_TAGS)


def _bands_last(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Put a tifffile series (axes such as 'YX', 'YXS', 'SYX', 'CYX') into (H, W, B)."""
    if arr.ndim == 2:
        return arr[..., np.newaxis]
    if arr.ndim == 3:
        if axes[-1] in "SC":
            return arr
        if axes[0] in "SCQIZ":
            return np.moveaxis(arr, 0, -1)
    raise DataError(
        f"{path}: TIFF with axes {axes!r} and shape {arr.shape} is not a single 2-D raster with "
        "bands; save one raster (H, W, bands) per file."
    )


def read_raster(path: str | os.PathLike[str], *, engine: str | None = None) -> Image:
    """Read a 2-D raster (PNG, TIFF or GeoTIFF) as an ``(H, W, B)`` :class:`Image`.

    Parameters
    ----------
    path : path-like
        ``.png``/``.jpg``/``.bmp``/``.gif``/``.webp`` (read with imageio) or ``.tif``/``.tiff``.
    engine : {None, "imageio", "tifffile", "rasterio"}, optional
        Reader to use. By default: imageio for plain images, rasterio for GeoTIFFs (so the
        georeference is kept) and tifffile for other TIFFs.

    Returns
    -------
    Image
        Array of shape ``(H, W, B)`` (``B == 1`` for a single band) in the file's dtype.
        ``spacing`` is the pixel size (row, column) in the units of the coordinate reference
        system for GeoTIFFs and 1 otherwise. ``meta`` holds ``"path"``, ``"format"``, and for
        GeoTIFFs ``"crs"`` (WKT), ``"transform"`` (the six affine coefficients a, b, c, d, e, f)
        and ``"nodata"``.

    Raises
    ------
    DataError
        If the file is missing or not a readable 2-D raster.
    OptionalDependencyError
        If the reader the file needs is not installed (e.g. rasterio for a GeoTIFF; pass
        ``engine="tifffile"`` to read only its pixels).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path of the raster.")
    suffix = _suffix(path)
    if engine is None:
        if suffix in _TIFF_SUFFIXES:
            engine = "rasterio" if _is_geotiff(path) else "tifffile"
        elif suffix in _PLAIN_SUFFIXES:
            engine = "imageio"
        else:
            raise DataError(
                f"{path}: unknown raster suffix {suffix!r}; use .tif/.tiff (any bands and dtype) "
                "or .png."
            )
    if engine == "rasterio":
        return _read_rasterio(path)
    if engine == "tifffile":
        tifffile = _optional("tifffile", f"reading {path}", "tifffile")
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                arr = series.asarray()
                axes = series.axes
        except (ValueError, OSError, tifffile.TiffFileError) as exc:
            raise DataError(f"{path}: cannot be read as a TIFF raster ({exc}).") from exc
        arr = _bands_last(np.asarray(arr), axes, path)
        return Image(arr, spacing=(1.0, 1.0), meta={"path": str(path), "format": "tiff"})
    if engine == "imageio":
        iio = _optional("imageio.v3", f"reading {path}", "imageio")
        try:
            arr = np.asarray(iio.imread(path))
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot be read as an image ({exc}).") from exc
        if arr.ndim == 2:
            arr = arr[..., np.newaxis]
        if arr.ndim != 3:
            raise DataError(f"{path}: expected a 2-D image, got an array of shape {arr.shape}.")
        return Image(arr, spacing=(1.0, 1.0), meta={"path": str(path), "format": suffix[1:]})
    raise DataError(
        f"read_raster: engine must be None, 'imageio', 'tifffile' or 'rasterio'; got {engine!r}."
    )


def _read_rasterio(path: Path) -> Image:
    rasterio = _optional(
        "rasterio",
        f"reading the GeoTIFF {path} with its georeference (or pass engine='tifffile' for the "
        "pixels only)",
        "rasterio",
    )
    try:
        with rasterio.open(path) as ds:
            arr = np.moveaxis(ds.read(), 0, -1)
            t = ds.transform
            meta = {
                "path": str(path),
                "format": "geotiff",
                "crs": ds.crs.to_wkt() if ds.crs is not None else None,
                "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                "nodata": ds.nodata,
                "band_descriptions": list(ds.descriptions),
            }
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"{path}: cannot be read as a GeoTIFF ({exc}).") from exc
    # array axis 0 = rows (y), axis 1 = columns (x); origin = centre of the first pixel
    x0, y0 = t.c + 0.5 * (t.a + t.b), t.f + 0.5 * (t.d + t.e)
    spacing = (abs(t.e) or 1.0, abs(t.a) or 1.0)
    direction = np.diag([np.sign(t.e) or 1.0, np.sign(t.a) or 1.0])
    return Image(arr, spacing=spacing, origin=(y0, x0), direction=direction, meta=meta)


def write_raster(img: Image, path: str | os.PathLike[str], *, engine: str | None = None) -> Path:
    """Write an ``(H, W, B)`` (or ``(H, W)``) image as PNG, TIFF or GeoTIFF, atomically.

    Parameters
    ----------
    img : Image
        The raster. Its ``meta["crs"]``/``meta["transform"]`` (as set by :func:`read_raster` on a
        GeoTIFF) make a ``.tif`` output a GeoTIFF, written with rasterio.
    path : path-like
        Output file; ``.png`` (uint8 or uint16, 1–4 bands) or ``.tif``/``.tiff`` (any dtype and
        number of bands).
    engine : {None, "imageio", "tifffile", "rasterio"}, optional
        Writer to use (default chosen from the suffix and the georeference).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    DataError
        If the array cannot be stored in the chosen format (the message says which to use).
    OptionalDependencyError
        If the writer is not installed.
    """
    path = Path(path)
    arr = np.asarray(img.array)
    if arr.ndim == 2:
        arr = arr[..., np.newaxis]
    if arr.ndim != 3:
        raise DataError(
            f"{path}: write_raster writes 2-D rasters of shape (H, W, B); got shape {arr.shape}."
        )
    suffix = _suffix(path)
    georef = img.meta.get("transform") is not None or img.meta.get("crs") is not None
    if engine is None:
        if suffix in _TIFF_SUFFIXES:
            engine = "rasterio" if georef else "tifffile"
        elif suffix in _PLAIN_SUFFIXES:
            engine = "imageio"
        else:
            raise DataError(f"{path}: unknown raster suffix {suffix!r}; use .tif/.tiff or .png.")
    if engine == "imageio":
        if arr.dtype not in (np.uint8, np.uint16) or arr.shape[-1] not in (1, 2, 3, 4):
            raise DataError(
                f"{path}: {suffix} stores 1–4 bands of uint8 or uint16; this raster has "
                f"{arr.shape[-1]} band(s) of {arr.dtype}. Write it as .tif instead."
            )
        iio = _optional("imageio.v3", f"writing {path}", "imageio")
        data = arr[..., 0] if arr.shape[-1] == 1 else arr
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, data, extension=suffix)
        return path
    if engine == "tifffile":
        tifffile = _optional("tifffile", f"writing {path}", "tifffile")
        data = arr[..., 0] if arr.shape[-1] == 1 else arr
        kwargs: dict[str, Any] = {"photometric": "minisblack"}
        if data.ndim == 3:
            kwargs["planarconfig"] = "contig"
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, **kwargs)
        return path
    if engine == "rasterio":
        return _write_rasterio(img, arr, path)
    raise DataError(
        f"write_raster: engine must be None, 'imageio', 'tifffile' or 'rasterio'; got {engine!r}."
    )


def _write_rasterio(img: Image, arr: np.ndarray, path: Path) -> Path:
    rasterio = _optional(
        "rasterio",
        f"writing the georeferenced raster {path} (or drop meta['crs'] and meta['transform'] to "
        "write a plain TIFF)",
        "rasterio",
    )
    from rasterio.transform import Affine

    t = img.meta.get("transform")
    transform = Affine(*t[:6]) if t is not None else Affine.identity()
    profile = {
        "driver": "GTiff",
        "height": arr.shape[0],
        "width": arr.shape[1],
        "count": arr.shape[2],
        "dtype": arr.dtype.name,
        "crs": img.meta.get("crs"),
        "transform": transform,
        "nodata": img.meta.get("nodata"),
    }
    try:
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
            ds.write(np.moveaxis(arr, -1, 0))
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"{path}: cannot be written as a GeoTIFF ({exc}).") from exc
    return path
