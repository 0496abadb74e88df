"""Multi-band rasters: reading and writing, per-band normalization, IR-MAD, band-ratio checks.

A multi-band raster is an :class:`~imharmony.image.Image` whose **last array axis is the band
axis** (a 2-D raster has shape ``(H, W, B)``); every other axis is spatial. Masks are on the
spatial grid (shape ``(H, W)``).

Three ways to make one acquisition radiometrically comparable with a reference:

* :func:`match_bands` — per-band exact histogram matching. Simple, but it forces each band's
  histogram onto the reference's, including the part of the histogram that comes from real change
  and clouds, and it does so band by band, which distorts band ratios and normalized differences.
* :func:`linear_bands` — per-band gain/offset from means and standard deviations.
* :func:`irmad_normalize` — relative radiometric normalization: pseudo-invariant pixels found
  automatically with IR-MAD, then per-band orthogonal regression on them (Canty & Nielsen 2008).
  Linear and fitted on unchanged land only, it keeps band ratios and real change.

:func:`band_distortion` reports what a method did to band ratios and normalized differences.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, special
from threadpoolctl import threadpool_limits

from ..errors import ConvergenceWarning, DataError, HarmonizationError
from ..image import Image
from ..io._atomic import atomic_path
from .histogram import (
    ReferenceDistribution,
    _as_mask,
    _float_dtype,
    _history,
    _match_array,
    _reference,
)

__all__ = [
    "IRMADResult",
    "OptionalDependencyError",
    "band_distortion",
    "irmad",
    "irmad_normalize",
    "linear_bands",
    "match_bands",
    "read_raster",
    "write_raster",
]

logger = logging.getLogger(__name__)


class OptionalDependencyError(HarmonizationError):
    """An optional package needed for this input or output is not installed."""


_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
# TIFF tags that make a file a GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation,
# GeoKeyDirectory.
_GEO_TAGS = {33550, 33922, 34264, 34735}
# Normalized-difference indices: name -> (band a, band b); index = (a - b) / (a + b).
_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "nbr": ("nir", "swir2"),
    "ndbi": ("swir1", "nir"),
}


def _optional(module: str, purpose: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{purpose} needs the optional package '{module}', which is not installed; install "
            f"it with 'pip install {extra}'."
        ) from exc


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _as_raster(img: Any, what: str) -> Image:
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


def _valid(image: Image, mask: Any, what: str) -> np.ndarray:
    """Spatial mask of usable pixels: inside ``mask``, finite and not no-data in every band."""
    arr = image.array
    spatial = arr.shape[:-1]
    valid = np.ones(spatial, dtype=np.bool_)
    if mask is not None:
        if isinstance(mask, Image):
            mask = mask.array
        valid &= _as_mask(mask, spatial, f"{what} mask")
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


def _spatial_nodata(image: Image) -> np.ndarray:
    """Pixels that are no-data or non-finite in any band (left untouched by the normalizers)."""
    arr = image.array
    bad = np.zeros(arr.shape[:-1], dtype=np.bool_)
    if arr.dtype.kind == "f":
        bad |= ~np.isfinite(arr).all(axis=-1)
    nodata = image.meta.get("nodata")
    if nodata is not None and np.isfinite(nodata):
        bad |= (arr == np.asarray(nodata, dtype=arr.dtype)).any(axis=-1)
    return bad


def _check_bands(img: Image, reference: Image) -> int:
    b = img.array.shape[-1]
    if reference.array.shape[-1] != b:
        raise DataError(
            f"the image has {b} bands but the reference has {reference.array.shape[-1]}; give "
            "rasters with the same bands in the same order (band axis last)."
        )
    return b


def _apply_affine(
    image: Image, gains: np.ndarray, offsets: np.ndarray, skip: np.ndarray
) -> np.ndarray:
    arr = image.array
    out_dtype = _float_dtype(arr.dtype)
    out = arr.astype(out_dtype, copy=True)
    keep = ~skip
    for band in range(arr.shape[-1]):
        view = out[..., band]
        view[keep] = view[keep] * out_dtype.type(gains[band]) + out_dtype.type(offsets[band])
    return out


# --------------------------------------------------------------------------------------------
# Per-band histogram matching and gain/offset
# --------------------------------------------------------------------------------------------


def match_bands(
    img: Image,
    reference: Image | Sequence[ReferenceDistribution],
    mask: Any = None,
    reference_mask: Any = None,
) -> Image:
    """Exact per-band histogram matching of a multi-band raster to a reference.

    Parameters
    ----------
    img : Image, shape (..., B)
        Raster to normalize (band axis last).
    reference : Image of shape (..., B), or sequence of B ReferenceDistribution
        Target: a raster with the same bands (any size), or one stored distribution per band.
    mask : array_like of bool, shape ``img.shape[:-1]``, optional
        Pixels to match (default all); pixels outside it, no-data pixels (``meta["nodata"]``) and
        pixels non-finite in any band are left unchanged.
    reference_mask : array_like of bool, shape ``reference.shape[:-1]``, optional
        Reference pixels that define the target distributions (default all valid pixels).

    Returns
    -------
    Image
        Floating point, with ``{"step": "match_bands", ...}`` appended to the history.

    Notes
    -----
    Each band goes through the same exact quantile map as
    :func:`~imharmony.imaging.histogram.match_histogram`. Matching bands separately does not keep
    the relations between bands: where the scene's land cover changed, or clouds cover part of
    it, the histograms differ for reasons that are not radiometric, and matching them distorts
    band ratios and normalized differences (NDVI) and erases part of the real change. Use
    :func:`band_distortion` to measure that, and :func:`irmad_normalize` when it matters.
    """
    image = _as_raster(img, "img")
    valid = _valid(image, mask, "img")
    arr = image.array
    n_bands = arr.shape[-1]
    if isinstance(reference, Image | np.ndarray):
        ref_img = _as_raster(reference, "reference")
        _check_bands(image, ref_img)
        ref_valid = _valid(ref_img, reference_mask, "reference")
        refs = [ref_img.array[..., b][ref_valid] for b in range(n_bands)]
    else:
        refs = list(reference)
        if len(refs) != n_bands or not all(isinstance(r, ReferenceDistribution) for r in refs):
            raise DataError(
                f"reference must be a raster or a sequence of {n_bands} ReferenceDistribution "
                "(one per band)."
            )
        if reference_mask is not None:
            raise DataError("reference_mask was given with reference distributions; drop it.")
    out_dtype = None
    bands: list[np.ndarray] = []
    for b in range(n_bands):
        ref, ref_dtype, _ = _reference(refs[b], None)
        dtype = _float_dtype(arr.dtype, ref_dtype)
        out_dtype = dtype if out_dtype is None else np.result_type(out_dtype, dtype)
        src = np.ascontiguousarray(arr[..., b])
        bands.append(_match_array(src, ref, valid, dtype, f"match_bands (band {b})"))
    out = np.stack([band.astype(out_dtype, copy=False) for band in bands], axis=-1)
    entry = {
        "step": "match_bands",
        "bands": n_bands,
        "matched_pixels": int(np.count_nonzero(valid)),
    }
    return image.with_array(out, history=_history(image, entry))


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return values.mean(axis=0), values.std(axis=0)


def linear_bands(
    img: Image, reference: Image, mask: Any = None, reference_mask: Any = None
) -> Image:
    """Per-band gain/offset normalization: match each band's mean and standard deviation.

    ``out_b = μ_ref,b + (σ_ref,b / σ_b) · (x_b − μ_b)``, with the moments computed on the valid
    pixels inside the masks; the map is applied to every valid pixel (no-data and non-finite
    pixels are left unchanged).

    Parameters
    ----------
    img : Image, shape (..., B)
    reference : Image, shape (..., B)
    mask, reference_mask : array_like of bool, optional
        Pixels that define the moments (spatial shape of each raster).

    Returns
    -------
    Image
        Floating point; the history entry holds the per-band ``gains`` and ``offsets``.
    """
    image = _as_raster(img, "img")
    ref_img = _as_raster(reference, "reference")
    n_bands = _check_bands(image, ref_img)
    valid = _valid(image, mask, "img")
    ref_valid = _valid(ref_img, reference_mask, "reference")
    mu, sd = _moments(image.array[valid].astype(np.float64))
    mu_r, sd_r = _moments(ref_img.array[ref_valid].astype(np.float64))
    if np.any(sd == 0):
        band = int(np.flatnonzero(sd == 0)[0])
        raise DataError(f"img: band {band} is constant inside the mask; cannot scale it.")
    gains = sd_r / sd
    offsets = mu_r - gains * mu
    out = _apply_affine(image, gains, offsets, _spatial_nodata(image))
    entry = {
        "step": "linear_bands",
        "bands": n_bands,
        "gains": gains.tolist(),
        "offsets": offsets.tolist(),
    }
    return image.with_array(out, history=_history(image, entry))


# --------------------------------------------------------------------------------------------
# IR-MAD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IRMADResult:
    """Outcome of :func:`irmad`.

    Attributes
    ----------
    no_change_probability : ndarray, shape ``img.shape[:-1]``
        ``P(χ²_B > Z)`` for each pixel: near 1 on unchanged land, near 0 on change; NaN where a
        pixel is invalid (outside the mask, no-data, non-finite).
    chi2 : ndarray, shape ``img.shape[:-1]``
        ``Z = Σ_i (M_i / σ_i)²``, the sum of squared standardized MAD variates.
    canonical_correlations : ndarray, shape (B,)
        Canonical correlations ``ρ_i`` at convergence, increasing.
    n_iter : int
        Iterations run.
    converged : bool
        Whether the largest change of a canonical correlation fell below ``tol``.
    """

    no_change_probability: np.ndarray
    chi2: np.ndarray
    canonical_correlations: np.ndarray
    n_iter: int
    converged: bool


def _cca(z: np.ndarray, w: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted canonical correlation analysis of ``z = [x y]`` (n × 2p): (rho, T, mean).

    ``T`` (2p × p) stacks ``A`` over ``−B`` so that ``(z − mean) @ T`` are the MAD variates
    ``U_i − V_i``; the canonical variates ``U = (x − mean_x) A`` and ``V = (y − mean_y) B`` have
    unit weighted variance and ``corr(U_i, V_i) = ρ_i ≥ 0``, ordered by increasing ρ.
    """
    sw = w.sum()
    mean = w @ z / sw
    cov = (z * w[:, None]).T @ z / sw - np.outer(mean, mean)
    sxx, syy, sxy = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    try:
        syy_inv_syx = linalg.solve(syy, sxy.T, assume_a="pos")
        lam, a = linalg.eigh(sxy @ syy_inv_syx, sxx)
    except (linalg.LinAlgError, ValueError) as exc:
        raise DataError(
            f"IR-MAD: the band covariance is singular ({exc}); a band is constant or two bands "
            "are identical inside the mask."
        ) from exc
    rho = np.sqrt(np.clip(lam, 0.0, 1.0))
    b = syy_inv_syx @ a
    b /= np.sqrt(np.einsum("ij,ij->j", b, syy @ b))
    return rho, np.vstack([a, -b]), mean


def _chi2(z: np.ndarray, rho: np.ndarray, t: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``Σ_i M_i² / (2(1 − ρ_i))`` for every row of ``z``."""
    mad = z @ t
    mad -= mean @ t
    mad *= mad
    return mad @ (1.0 / np.maximum(2.0 * (1.0 - rho), 1e-12))


def _no_change_probability(chi2: np.ndarray, dof: int) -> np.ndarray:
    """``P(χ²_dof > chi2)``; for even ``dof`` the closed form ``e^{−h} Σ_{k<dof/2} h^k / k!``."""
    if dof % 2:
        return special.gammaincc(dof / 2.0, chi2 / 2.0)
    h = chi2 / 2.0
    term = np.ones_like(h)
    total = np.ones_like(h)
    for k in range(1, dof // 2):
        term *= h
        term /= k
        total += term
    total *= np.exp(-h)
    return total


def irmad(
    img: Image,
    reference: Image,
    *,
    mask: Any = None,
    max_iter: int = 50,
    tol: float = 1e-5,
    sample_size: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> IRMADResult:
    """Iteratively reweighted multivariate alteration detection (Nielsen 2007).

    Parameters
    ----------
    img, reference : Image, shape (..., B)
        Two co-registered acquisitions of the same scene (same shape; band axis last).
    mask : array_like of bool, shape ``img.shape[:-1]``, optional
        Pixels to use (default: all pixels valid in both images).
    max_iter : int, default 50
        Maximum number of reweighting iterations.
    tol : float, default 1e-5
        Stop when no canonical correlation changes by more than ``tol``.
    sample_size : int, optional
        Estimate the canonical transformation on this many randomly chosen valid pixels (default:
        all); the probabilities are then computed for every valid pixel.
    random_state : int or numpy Generator, optional
        Seed of the subsample (only used with ``sample_size``).

    Returns
    -------
    IRMADResult

    Notes
    -----
    Canonical correlation analysis of the two images gives canonical variates ``U_i`` and ``V_i``
    with correlations ``ρ_i``; the MAD variates ``M_i = U_i − V_i`` are uncorrelated with
    variance ``2(1 − ρ_i)``. Without change, ``Z = Σ_i M_i² / (2(1 − ρ_i))`` follows a χ²
    distribution with ``B`` degrees of freedom, so ``P(χ²_B > Z)`` is the probability of no change.
    IR-MAD repeats the CCA with those probabilities as weights, so that changed pixels stop
    influencing the transformation, until the correlations settle.

    References
    ----------
    A. A. Nielsen, "The regularized iteratively reweighted MAD method for change detection in
    multi- and hyperspectral data", IEEE Trans. Image Process. 16 (2007) 463–478.
    """
    image = _as_raster(img, "img")
    ref_img = _as_raster(reference, "reference")
    _check_bands(image, ref_img)
    if image.array.shape != ref_img.array.shape:
        raise DataError(
            f"IR-MAD needs co-registered images of the same shape; got {image.array.shape} and "
            f"{ref_img.array.shape}. Resample one onto the other's grid first."
        )
    if int(max_iter) < 1:
        raise DataError(f"max_iter must be at least 1, got {max_iter}.")
    valid = _valid(image, mask, "img") & _valid(ref_img, None, "reference")
    if not valid.any():
        raise DataError("IR-MAD: no pixel is valid in both images.")
    # the products here are skinny (n × 2B by 2B × B): threaded BLAS only adds contention
    with threadpool_limits(limits=1, user_api="blas"):
        return _irmad(image, ref_img, valid, int(max_iter), tol, sample_size, random_state)


def _irmad(
    image: Image,
    ref_img: Image,
    valid: np.ndarray,
    max_iter: int,
    tol: float,
    sample_size: int | None,
    random_state: int | np.random.Generator | None,
) -> IRMADResult:
    n_bands = image.array.shape[-1]
    z_all = np.empty((int(np.count_nonzero(valid)), 2 * n_bands))
    z_all[:, :n_bands] = image.array[valid]
    z_all[:, n_bands:] = ref_img.array[valid]
    if z_all.shape[0] <= 2 * n_bands + 1:
        raise DataError(
            f"IR-MAD: only {z_all.shape[0]} valid pixels for {n_bands} bands; need many more."
        )
    z_all -= z_all.mean(axis=0)  # centred once: the weighted moments then lose no precision
    if sample_size is not None and int(sample_size) < z_all.shape[0]:
        rng = np.random.default_rng(random_state)
        z = z_all[rng.choice(z_all.shape[0], size=int(sample_size), replace=False)]
    else:
        z = z_all
    w = np.ones(z.shape[0])
    rho_old = np.full(n_bands, -1.0)
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        rho, t, mean = _cca(z, w, n_bands)
        w = _no_change_probability(_chi2(z, rho, t, mean), n_bands)
        delta = np.max(np.abs(rho - rho_old))
        rho_old = rho
        logger.debug("IR-MAD iteration %d: rho=%s (change %.2e)", n_iter, rho, delta)
        if delta < tol:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"IR-MAD stopped after max_iter={max_iter} iterations with a canonical correlation "
            f"still changing by {delta:.2e} (tol={tol:g}); raise max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    chi2_all = _chi2(z_all, rho, t, mean)
    chi2 = np.full(valid.shape, np.nan)
    prob = np.full(valid.shape, np.nan)
    chi2[valid] = chi2_all
    prob[valid] = _no_change_probability(chi2_all, n_bands)
    return IRMADResult(prob, chi2, rho, n_iter, converged)


def _orthogonal_regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Total least squares line ``y = offset + gain · x`` (errors of equal variance in x and y)."""
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    sxx, syy, sxy = dx @ dx, dy @ dy, dx @ dy
    if sxy == 0:
        raise DataError(
            "orthogonal regression: a band is uncorrelated between the images on the no-change "
            "pixels; check that the images show the same scene and are co-registered."
        )
    gain = (syy - sxx + np.hypot(syy - sxx, 2.0 * sxy)) / (2.0 * sxy)
    return float(gain), float(my - gain * mx)


def irmad_normalize(
    img: Image,
    reference: Image,
    *,
    mask: Any = None,
    max_iter: int = 50,
    threshold: float = 0.95,
    tol: float = 1e-5,
    sample_size: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> Image:
    """Relative radiometric normalization on pseudo-invariant pixels found by IR-MAD.

    Parameters
    ----------
    img : Image, shape (..., B)
        Acquisition to normalize.
    reference : Image, shape (..., B)
        Co-registered reference acquisition of the same scene (same shape).
    mask : array_like of bool, shape ``img.shape[:-1]``, optional
        Pixels allowed as invariant candidates (default: all valid pixels).
    max_iter : int, default 50
        Maximum IR-MAD iterations.
    threshold : float, default 0.95
        Pixels whose no-change probability exceeds this are the pseudo-invariant pixels.
    tol : float, default 1e-5
        IR-MAD convergence tolerance on the canonical correlations.
    sample_size : int, optional
        Subsample for estimating IR-MAD (see :func:`irmad`); the regression uses every
        no-change pixel.
    random_state : int or numpy Generator, optional
        Seed of that subsample.

    Returns
    -------
    Image
        ``offset_b + gain_b · img_b`` for every band (no-data and non-finite pixels unchanged),
        floating point. The history entry holds ``gains``, ``offsets``, ``n_no_change``,
        ``canonical_correlations`` and ``n_iter``.

    Raises
    ------
    DataError
        If fewer than 10 pixels pass the no-change threshold (lower ``threshold`` or check the
        co-registration).

    Notes
    -----
    For each band, the orthogonal (total least squares) regression of the reference band on the
    image band over the pseudo-invariant pixels gives ``gain_b`` and ``offset_b``. Orthogonal
    rather than ordinary regression because both images are noisy; a linear map per band keeps the
    relations between bands (up to the sensors' own gains) and the real change, unlike per-band
    histogram matching.

    References
    ----------
    M. J. Canty, A. A. Nielsen, "Automatic radiometric normalization of multitemporal satellite
    imagery with the iteratively re-weighted MAD transformation", Remote Sensing of Environment
    112 (2008) 1025–1036.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise DataError(f"threshold must be a probability in (0, 1), got {threshold}.")
    image = _as_raster(img, "img")
    ref_img = _as_raster(reference, "reference")
    result = irmad(
        image,
        ref_img,
        mask=mask,
        max_iter=max_iter,
        tol=tol,
        sample_size=sample_size,
        random_state=random_state,
    )
    with np.errstate(invalid="ignore"):
        no_change = result.no_change_probability > float(threshold)
    n_nc = int(np.count_nonzero(no_change))
    if n_nc < 10:
        raise DataError(
            f"IR-MAD found only {n_nc} pixels with no-change probability above {threshold}; "
            "lower threshold, or check that the images are co-registered views of the same scene."
        )
    x = image.array[no_change].astype(np.float64)
    y = ref_img.array[no_change].astype(np.float64)
    n_bands = x.shape[1]
    fits = [_orthogonal_regression(x[:, b], y[:, b]) for b in range(n_bands)]
    gains = np.array([g for g, _ in fits])
    offsets = np.array([o for _, o in fits])
    out = _apply_affine(image, gains, offsets, _spatial_nodata(image))
    logger.info(
        "irmad_normalize: %d pseudo-invariant pixels; gains %s; offsets %s",
        n_nc,
        np.array2string(gains, precision=4),
        np.array2string(offsets, precision=4),
    )
    entry = {
        "step": "irmad_normalize",
        "gains": gains.tolist(),
        "offsets": offsets.tolist(),
        "n_no_change": n_nc,
        "threshold": float(threshold),
        "canonical_correlations": result.canonical_correlations.tolist(),
        "n_iter": result.n_iter,
    }
    return image.with_array(out, history=_history(image, entry))


# --------------------------------------------------------------------------------------------
# What a method did to band relations
# --------------------------------------------------------------------------------------------


def band_distortion(
    before: Image,
    after: Image,
    *,
    bands: Mapping[str, int] | None = None,
    unchanged_mask: Any = None,
    changed_mask: Any = None,
    true_change: Mapping[str, float] | float | None = None,
    indices: Sequence[str] = ("ndvi",),
) -> pd.DataFrame:
    """Report how band ratios and normalized differences differ between two rasters.

    Use it to see what a radiometric normalization did to the relations between bands: pass the
    reference acquisition as ``before`` and the normalized later acquisition as ``after`` (co-
    registered). On land that did not change, a faithful normalization leaves ratios and indices
    as in the reference; in a region that did change, it keeps the real change.

    Parameters
    ----------
    before, after : Image, shape (..., B)
        Rasters on the same grid with the same bands.
    bands : mapping of str to int, default ``{"red": 2, "nir": 3}``
        Band names to band positions (0-based, along the last axis). The names used by the
        requested indices must be present (``ndvi``: nir, red; ``ndwi``: green, nir; ``nbr``:
        nir, swir2; ``ndbi``: swir1, nir).
    unchanged_mask : array_like of bool, spatial shape, optional
        Pixels known not to have changed (default: every valid pixel outside ``changed_mask``).
    changed_mask : array_like of bool, spatial shape, optional
        Region of real change. Enables the change columns.
    true_change : float or mapping of index name to float, optional
        The real mean change of each index in ``changed_mask`` (known in a synthetic experiment
        or from field data). Enables ``surviving_fraction``.
    indices : sequence of str, default ("ndvi",)
        Normalized differences to report. Each also adds a row for its band ratio (e.g.
        ``nir/red``).

    Returns
    -------
    pandas.DataFrame
        One row per quantity (``"ndvi"``, ``"nir/red"``, …), with columns

        - ``kind``: ``"normalized_difference"`` or ``"ratio"``
        - ``unchanged_mean_change``: mean of (after − before) on unchanged pixels (bias)
        - ``unchanged_mean_abs_change``: mean of |after − before| on unchanged pixels
        - ``unchanged_median_rel_change``: median of |after / before − 1| on unchanged pixels
        - ``changed_mean_change``: mean of (after − before) in ``changed_mask`` (NaN without it)
        - ``true_change``: the given real change (NaN if not given; ratios: NaN)
        - ``surviving_fraction``: ``changed_mean_change / true_change`` — 1 when the method kept
          the real change, below 1 when it erased part of it

    Notes
    -----
    Pixels where a denominator is zero or a value is not finite are left out of the statistics.
    ``before`` and ``after`` are compared pixel by pixel, so they must be co-registered.
    """
    b_img = _as_raster(before, "before")
    a_img = _as_raster(after, "after")
    if b_img.array.shape != a_img.array.shape:
        raise DataError(
            f"band_distortion compares co-registered rasters pixel by pixel; got shapes "
            f"{b_img.array.shape} and {a_img.array.shape}."
        )
    names = dict(bands) if bands is not None else {"red": 2, "nir": 3}
    n_bands = b_img.array.shape[-1]
    for name, pos in names.items():
        if not (isinstance(pos, int | np.integer) and 0 <= int(pos) < n_bands):
            raise DataError(
                f"bands[{name!r}] = {pos!r} is not a band position of these {n_bands}-band "
                "rasters (0-based, band axis last)."
            )
    spatial = b_img.array.shape[:-1]
    changed = None if changed_mask is None else _as_mask(changed_mask, spatial, "changed_mask")
    if unchanged_mask is not None:
        unchanged = _as_mask(unchanged_mask, spatial, "unchanged_mask")
    else:
        unchanged = np.ones(spatial, dtype=np.bool_) if changed is None else ~changed
    unchanged = unchanged & ~_spatial_nodata(b_img) & ~_spatial_nodata(a_img)
    if not unchanged.any():
        raise DataError("band_distortion: no valid unchanged pixels to compare.")

    def band(img: Image, name: str) -> np.ndarray:
        return img.array[..., int(names[name])].astype(np.float64)

    rows: list[dict[str, Any]] = []
    for index in indices:
        key = str(index).lower()
        if key not in _INDICES:
            raise DataError(f"unknown index {index!r}; band_distortion knows {sorted(_INDICES)}.")
        first, second = _INDICES[key]
        missing = [n for n in (first, second) if n not in names]
        if missing:
            raise DataError(
                f"index {key!r} needs bands {missing} in the bands mapping, e.g. "
                f"bands={{'{first}': ..., '{second}': ...}}."
            )
        quantities = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            for label, img in (("before", b_img), ("after", a_img)):
                p, q = band(img, first), band(img, second)
                quantities[(key, label)] = (p - q) / (p + q)
                quantities[(f"{first}/{second}", label)] = p / q
        if isinstance(true_change, Mapping):
            truth = true_change.get(key, np.nan)
        elif true_change is None:
            truth = np.nan
        else:
            truth = true_change
        for qname, kind, qtruth in (
            (key, "normalized_difference", float(truth)),
            (f"{first}/{second}", "ratio", np.nan),
        ):
            vb, va = quantities[(qname, "before")], quantities[(qname, "after")]
            ok = np.isfinite(vb) & np.isfinite(va)
            diff = va - vb
            u = unchanged & ok
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(va[u] / vb[u] - 1.0)
            rel = rel[np.isfinite(rel)]
            row: dict[str, Any] = {
                "quantity": qname,
                "kind": kind,
                "unchanged_mean_change": float(diff[u].mean()) if u.any() else np.nan,
                "unchanged_mean_abs_change": float(np.abs(diff[u]).mean()) if u.any() else np.nan,
                "unchanged_median_rel_change": float(np.median(rel)) if rel.size else np.nan,
                "changed_mean_change": np.nan,
                "true_change": qtruth,
                "surviving_fraction": np.nan,
            }
            if changed is not None:
                c = changed & ok
                if c.any():
                    row["changed_mean_change"] = float(diff[c].mean())
                    if np.isfinite(qtruth) and qtruth != 0:
                        row["surviving_fraction"] = row["changed_mean_change"] / qtruth
            rows.append(row)
    return pd.DataFrame(rows).set_index("quantity")
