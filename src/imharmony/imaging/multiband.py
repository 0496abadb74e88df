"""Multi-band rasters: per-band normalization to a reference acquisition.

A multi-band raster is an :class:`~imharmony.image.Image` whose **last array axis is the band
axis** (a 2-D raster has shape ``(H, W, B)``); every other axis is spatial. Masks are on the
spatial grid (shape ``(H, W)``).

Three ways to make one acquisition radiometrically comparable with a reference:

* :func:`match_bands` — per-band exact histogram matching. Simple, but it forces each band's
  histogram onto the reference's, including the part of the histogram that comes from real change
  and clouds, and it does so band by band, which distorts band ratios and normalized differences.
* :func:`linear_bands` — per-band gain/offset from means and standard deviations.
* :func:`~imharmony.imaging.irmad.irmad_normalize` — relative radiometric normalization:
  pseudo-invariant pixels found automatically with IR-MAD, then per-band orthogonal regression on
  them (Canty & Nielsen 2008). Linear and fitted on unchanged land only, it keeps band ratios and
  real change.

:func:`~imharmony.diagnostics.bands.band_distortion` reports what a method did to band ratios and
normalized differences; :func:`~imharmony.io.rasters.read_raster` and
:func:`~imharmony.io.rasters.write_raster` read and write the rasters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._raster import (
    apply_band_affine,
    as_raster,
    check_same_bands,
    float_dtype,
    nodata_pixels,
    valid_pixels,
)
from ..diagnostics.bands import band_distortion
from ..errors import DataError
from ..image import Image
from ..io.rasters import OptionalDependencyError, read_raster, write_raster
from .histogram import ReferenceDistribution, _history, _match_array, _reference
from .irmad import IRMADResult, irmad, irmad_normalize

# irmad, read_raster/write_raster and band_distortion live in their own modules
# (imaging/irmad.py, io/rasters.py, diagnostics/bands.py); they stay importable from here.
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
    image = as_raster(img, "img")
    valid = valid_pixels(image, mask, "img")
    arr = image.array
    n_bands = arr.shape[-1]
    if isinstance(reference, Image | np.ndarray):
        ref_img = as_raster(reference, "reference")
        check_same_bands(image, ref_img)
        ref_valid = valid_pixels(ref_img, reference_mask, "reference")
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
        dtype = float_dtype(arr.dtype, ref_dtype)
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
    image = as_raster(img, "img")
    ref_img = as_raster(reference, "reference")
    n_bands = check_same_bands(image, ref_img)
    valid = valid_pixels(image, mask, "img")
    ref_valid = valid_pixels(ref_img, reference_mask, "reference")
    mu, sd = _moments(image.array[valid].astype(np.float64))
    mu_r, sd_r = _moments(ref_img.array[ref_valid].astype(np.float64))
    if np.any(sd == 0):
        band = int(np.flatnonzero(sd == 0)[0])
        raise DataError(f"img: band {band} is constant inside the mask; cannot scale it.")
    gains = sd_r / sd
    offsets = mu_r - gains * mu
    out = apply_band_affine(image, gains, offsets, nodata_pixels(image))
    entry = {
        "step": "linear_bands",
        "bands": n_bands,
        "gains": gains.tolist(),
        "offsets": offsets.tolist(),
    }
    return image.with_array(out, history=_history(image, entry))
