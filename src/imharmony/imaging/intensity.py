"""Intensity normalization: z-score, robust z-score and WhiteStripe.

Each method estimates a location ``m`` and a scale ``d`` from the voxels inside a mask and applies
the same linear map ``(x − m) / d`` to the image. What happens to the voxels outside the mask is
the caller's choice (``outside``):

- ``"keep"``: the same linear map is applied to every voxel, so the output is one affine function
  of the input everywhere (nothing is discarded);
- ``"zero"``: voxels outside the mask are set to 0 (the location of the normalized scale);
- ``"nan"``: voxels outside the mask are set to NaN (they are excluded from later statistics).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np

from .._raster import as_mask
from ..errors import DataError
from ..image import Image

__all__ = ["IQR_TO_SD", "robust_zscore", "whitestripe", "zscore"]

logger = logging.getLogger(__name__)

Outside = Literal["keep", "zero", "nan"]

#: Interquartile range of the standard normal distribution: 2·Φ⁻¹(0.75) ≈ 1.3489795.
IQR_TO_SD: float = 1.3489795003921634

_OUTSIDE = ("keep", "zero", "nan")


def _float_array(img: Image) -> np.ndarray:
    arr = img.array
    if arr.dtype in (np.float32, np.float64):
        return arr
    return arr.astype(np.float32)


def _mask(img: Image, mask: Image | np.ndarray | None, who: str) -> np.ndarray | None:
    if mask is None:
        return None
    return as_mask(mask, img.array.shape, f"{who}: mask", img)


def _values(arr: np.ndarray, mask: np.ndarray | None, who: str) -> np.ndarray:
    """The voxel values the statistics come from (one compressed copy when masked)."""
    vals = arr.ravel() if mask is None else arr[mask]
    if vals.size == 0:
        raise DataError(
            f"{who}: the mask is empty; give a mask that covers the tissue of interest."
        )
    return vals


def _check_outside(outside: str) -> None:
    if outside not in _OUTSIDE:
        raise DataError(f"outside must be one of {list(_OUTSIDE)}; got {outside!r}.")


def _apply(
    img: Image,
    arr: np.ndarray,
    mask: np.ndarray | None,
    loc: float,
    scale: float,
    outside: str,
    entry: dict[str, Any],
) -> Image:
    """Write ``(x − loc) / scale`` in one fused pass, then handle the outside of the mask."""
    dt = arr.dtype
    a = dt.type(1.0 / scale)
    b = dt.type(-loc / scale)
    if mask is None or outside == "keep":
        out = np.multiply(arr, a)
        out += b
    else:
        fill = 0.0 if outside == "zero" else np.nan
        out = np.full(arr.shape, fill, dtype=dt)
        np.multiply(arr, a, out=out, where=mask)
        np.add(out, b, out=out, where=mask)
    entry = {**entry, "outside": outside}
    history = [*img.meta.get("history", []), entry]
    return img.with_array(out, history=history)


def zscore(
    img: Image,
    mask: Image | np.ndarray | None = None,
    *,
    outside: Outside = "keep",
) -> Image:
    """Standardize intensities to zero mean and unit standard deviation inside a mask.

    Parameters
    ----------
    img : Image
        Image of any shape; values inside the mask must be finite.
    mask : Image or ndarray of bool, optional
        Voxels the statistics come from, same shape as the image. Default: every voxel.
    outside : {"keep", "zero", "nan"}
        What to do with voxels outside the mask (see the module documentation): ``"keep"``
        applies the same linear map to them, ``"zero"`` sets them to 0, ``"nan"`` to NaN.

    Returns
    -------
    Image
        ``(x − μ) / σ`` with μ and σ (population standard deviation, ``ddof=0``) of the masked
        voxels; float32 unless the input is float64. ``meta["history"]`` gains a ``"zscore"``
        entry with μ and σ.

    Raises
    ------
    DataError
        If the mask is empty or not on the image's grid, the masked values are not finite, or
        they are constant (σ = 0).

    Notes
    -----
    The masked values are gathered once; the mean is accumulated in float64, the variance from
    the centred values (two-pass, no cancellation), and the output is written in one fused pass.
    """
    _check_outside(outside)
    arr = _float_array(img)
    m = _mask(img, mask, "zscore")
    vals = _values(arr, m, "zscore")
    mean = float(vals.mean(dtype=np.float64))
    if not math.isfinite(mean):
        raise DataError(
            "zscore: the image holds NaN or infinite values inside the mask; exclude them from "
            "the mask or replace them first."
        )
    mean_t = vals.dtype.type(mean)
    # the gathered copy can be centred in place; the unmasked ravel() is a view of the input
    centred = np.subtract(vals, mean_t, out=vals) if m is not None else vals - mean_t
    np.square(centred, out=centred)
    sd = math.sqrt(float(centred.sum(dtype=np.float64)) / centred.size)
    if not sd > 0:
        raise DataError("zscore: the masked voxels are constant (standard deviation 0).")
    return _apply(img, arr, m, mean, sd, outside, {"step": "zscore", "mean": mean, "sd": sd})


def robust_zscore(
    img: Image,
    mask: Image | np.ndarray | None = None,
    *,
    outside: Outside = "keep",
) -> Image:
    """Standardize intensities with the median and the interquartile range inside a mask.

    Parameters
    ----------
    img : Image
        Image of any shape; values inside the mask must be finite.
    mask : Image or ndarray of bool, optional
        Voxels the statistics come from. Default: every voxel.
    outside : {"keep", "zero", "nan"}
        What to do with voxels outside the mask, as for :func:`zscore`.

    Returns
    -------
    Image
        ``(x − median) / (IQR / 1.3489795)``; ``meta["history"]`` gains a ``"robust_zscore"``
        entry with the median, the IQR and the scale.

    Raises
    ------
    DataError
        If the mask is empty or misplaced, values are not finite, or the IQR is 0.

    Notes
    -----
    The scale ``IQR / (2·Φ⁻¹(0.75)) = IQR / 1.3489795`` equals the standard deviation for normal
    data, so the result is comparable with :func:`zscore` on clean data, while a minority of
    outliers (lesions, vessels, a few misregistered voxels) barely moves it. Quartiles use
    numpy's default (linear) quantile definition.
    """
    _check_outside(outside)
    arr = _float_array(img)
    m = _mask(img, mask, "robust_zscore")
    vals = _values(arr, m, "robust_zscore")
    q1, med, q3 = (float(v) for v in np.quantile(vals, [0.25, 0.5, 0.75]))
    if not all(math.isfinite(v) for v in (q1, med, q3)):
        raise DataError(
            "robust_zscore: the image holds NaN or infinite values inside the mask; exclude "
            "them from the mask or replace them first."
        )
    iqr = q3 - q1
    if not iqr > 0:
        raise DataError(
            "robust_zscore: the interquartile range inside the mask is 0 (more than half of the "
            "voxels share one value); use zscore or a tighter mask."
        )
    scale = iqr / IQR_TO_SD
    entry = {"step": "robust_zscore", "median": med, "iqr": iqr, "scale": scale}
    return _apply(img, arr, m, med, scale, outside, entry)


def _kde_modes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Kernel density of ``values`` on a grid, its significant modes, and the bandwidth.

    Silverman's rule of thumb ``h = 0.9·min(sd, IQR/1.34)·n^(−1/5)`` gives a bandwidth in the
    data's own units; the density is evaluated on a grid of bins at most ``h/4`` wide (linear
    binning, then a Gaussian convolution with standard deviation ``h``), so the estimate scales
    with the data and does not depend on their units.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    n = values.size
    q1, q3 = np.quantile(values, [0.25, 0.75])
    sd = float(values.std(dtype=np.float64))
    spread = min(sd, float(q3 - q1) / 1.34) if q3 > q1 else sd
    if not spread > 0:
        raise DataError("whitestripe: the foreground voxels are constant; nothing to normalize.")
    h = 0.9 * spread * n ** (-0.2)
    lo, hi = (float(v) for v in np.quantile(values, [0.0, 0.999]))
    lo -= 3 * h
    hi += 3 * h
    nbins = int(min(max(512, math.ceil(4 * (hi - lo) / h)), 200_000))
    width = (hi - lo) / nbins
    centres = lo + width * (np.arange(nbins) + 0.5)
    # linear binning: each value shares its weight between the two nearest bin centres; the
    # brightest 0.1% (beyond the grid) count in n but are not binned, so they add no spike
    pos = (values.astype(np.float64) - centres[0]) / width
    pos = pos[(pos >= 0.0) & (pos <= nbins - 1.0)]
    left = np.floor(pos).astype(np.intp)
    frac = pos - left
    density = np.bincount(left, weights=1.0 - frac, minlength=nbins)
    density += np.bincount(np.minimum(left + 1, nbins - 1), weights=frac, minlength=nbins)
    density = gaussian_filter1d(density, h / width, mode="constant", truncate=5.0)
    density /= n * width
    peaks, _ = find_peaks(density, prominence=0.05 * density.max())
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(density))])
    return centres, density, peaks, h


def whitestripe(
    img: Image,
    mask: Image | np.ndarray | None = None,
    *,
    contrast: Literal["T1w", "T2w"] = "T1w",
    width: float = 0.05,
    outside: Outside = "keep",
) -> Image:
    """WhiteStripe normalization of a brain MR image (Shinohara et al. 2014).

    Parameters
    ----------
    img : Image
        Skull-stripped (or masked) brain MR image.
    mask : Image or ndarray of bool, optional
        Brain mask. Default: the finite, non-zero voxels (the convention of skull-stripped
        images, whose background is 0).
    contrast : {"T1w", "T2w"}
        Weighting: white matter is the last (highest-intensity) mode of the intensity density in
        T1w images and the largest mode in T2w images.
    width : float
        Half-width τ of the stripe in quantiles of the foreground (default 0.05, as published).
    outside : {"keep", "zero", "nan"}
        What to do with voxels outside the mask, as for :func:`zscore`.

    Returns
    -------
    Image
        ``(x − μ_ws) / σ_ws`` with the mean and standard deviation of the white stripe;
        ``meta["history"]`` gains a ``"whitestripe"`` entry with the mode, the stripe limits,
        μ_ws, σ_ws and the bandwidth.

    Raises
    ------
    DataError
        If ``contrast`` or ``width`` is invalid, the mask is empty or misplaced, or the
        foreground is constant.

    Notes
    -----
    1. The density of the foreground intensities is estimated with a Gaussian kernel whose
       bandwidth follows Silverman's rule on the foreground (``0.9·min(sd, IQR/1.34)·n^(−1/5)``),
       so it adapts to the data and scales with their units (a fixed wide bandwidth lands near
       the median). Modes are local maxima with a prominence of at least 5% of the highest peak.
    2. The white-matter mode μ is the last mode (T1w) or the largest mode (T2w).
    3. The white stripe is the set of foreground voxels whose intensity quantile lies within
       ``F(μ) ± τ``, ``F`` being the empirical distribution of the foreground.
    4. Every voxel is mapped by ``(x − μ_ws) / σ_ws``, the mean and standard deviation
       (``ddof=0``) of the stripe, so the normal-appearing white matter has mean 0 and standard
       deviation 1.

    References
    ----------
    R. T. Shinohara et al., "Statistical normalization techniques for magnetic resonance imaging",
    NeuroImage: Clinical 6:9–19, 2014.
    """
    _check_outside(outside)
    if contrast not in ("T1w", "T2w"):
        raise DataError(f"whitestripe: contrast must be 'T1w' or 'T2w'; got {contrast!r}.")
    if not (0 < width < 0.5):
        raise DataError(f"whitestripe: width must be in (0, 0.5); got {width!r}.")
    arr = _float_array(img)
    m = _mask(img, mask, "whitestripe")
    if m is None:
        m = np.isfinite(arr) & (arr != 0)
        logger.info("whitestripe: no mask given; using the %d non-zero voxels", int(m.sum()))
    vals = _values(arr, m, "whitestripe")
    if not np.all(np.isfinite(vals)):
        raise DataError(
            "whitestripe: the image holds NaN or infinite values inside the mask; exclude them "
            "from the mask or replace them first."
        )
    centres, density, peaks, h = _kde_modes(vals)
    if contrast == "T1w":
        mode_idx = int(peaks[-1])
    else:
        mode_idx = int(peaks[np.argmax(density[peaks])])
    mode = float(centres[mode_idx])
    sorted_vals = np.sort(vals)
    q_mode = np.searchsorted(sorted_vals, mode, side="right") / sorted_vals.size
    q_lo, q_hi = max(q_mode - width, 0.0), min(q_mode + width, 1.0)
    lo, hi = (float(v) for v in np.quantile(sorted_vals, [q_lo, q_hi]))
    stripe = sorted_vals[
        np.searchsorted(sorted_vals, lo, side="left"): np.searchsorted(sorted_vals, hi, "right")
    ]
    mu = float(stripe.mean(dtype=np.float64))
    sd = float(stripe.std(dtype=np.float64))
    if not sd > 0:
        raise DataError(
            "whitestripe: the white stripe is constant (standard deviation 0); the image may be "
            "quantized too coarsely for WhiteStripe — try a larger width or robust_zscore."
        )
    logger.debug("whitestripe: mode %g, stripe [%g, %g], mu %g, sd %g", mode, lo, hi, mu, sd)
    entry = {
        "step": "whitestripe", "contrast": contrast, "width": width, "mode": mode,
        "stripe": [lo, hi], "mean": mu, "sd": sd, "bandwidth": h, "n_stripe": int(stripe.size),
    }
    return _apply(img, arr, m, mu, sd, outside, entry)
