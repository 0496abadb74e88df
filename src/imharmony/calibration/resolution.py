"""Measured resolution: per-axis FWHM of a scanner from a point, line, edge or sphere phantom.

The measured FWHM feeds :func:`imharmony.match_resolution`, so a site goes from its phantom scan
to matched resolution without guessing its PSF::

    fwhm = ih.measure_fwhm(phantom_scan, kind="point")
    matched = ih.match_resolution(patient_scan, fwhm, target_fwhm=8.0)

Every kind is reduced to 1-D profiles along the array axes whose exact model is known in closed
form, so the Gaussian PSF's σ of each axis is fitted on its own:

* point: the projection of the blurred point onto an axis (sum over the other axes) is the 1-D
  Gaussian of that axis — the other axes' Gaussians integrate to one;
* line (along one array axis): the same, for the two axes across the line;
* sphere: the projection of a uniform ball of radius R is the chord area π(R² − t²), and its
  convolution with a 1-D Gaussian has the closed form used below;
* edge (a plane perpendicular to an axis): the mean profile across the edge is the Gaussian's
  cumulative distribution (the edge-spread function, whose derivative is the line-spread
  function).

Voxel values are taken as means of the blurred object over the voxel (detector integration), so
each model is averaged over the voxel along the profile (Gauss-Legendre); summing voxel means over
whole other axes integrates them exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage, optimize
from scipy.special import ndtr

from ..errors import DataError, HarmonizationError
from ..image import Image
from ..imaging.resolution import FWHM_PER_SIGMA, fwhm_to_sigma, gaussian_blur
from ._ball import gauss_legendre

__all__ = ["KINDS", "measure_fwhm", "sphere_axis_fwhm"]

logger = logging.getLogger(__name__)

#: The phantom kinds :func:`measure_fwhm` understands.
KINDS: tuple[str, ...] = ("point", "line", "edge", "sphere")

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(z: np.ndarray) -> np.ndarray:
    return _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _gauss(x: np.ndarray, c: float, s: float, _r: float) -> np.ndarray:
    return _phi((x - c) / s) / s


def _ball_projection(x: np.ndarray, c: float, s: float, r: float) -> np.ndarray:
    """∫ (R² − t²)₊ · G_σ(x − c − t) dt (the factor π is absorbed in the amplitude)."""
    u = x - c
    z1, z2 = (u - r) / s, (u + r) / s
    cdf = ndtr(z2) - ndtr(z1)
    pdf = _phi(z2) - _phi(z1)
    zpdf = z2 * _phi(z2) - z1 * _phi(z1)
    return (r * r - u * u - s * s) * cdf - 2.0 * u * s * pdf + s * s * zpdf


def _esf(x: np.ndarray, c: float, s: float, _r: float) -> np.ndarray:
    return ndtr((x - c) / s)


_SHAPES: dict[str, Callable[[np.ndarray, float, float, float], np.ndarray]] = {
    "point": _gauss,
    "line": _gauss,
    "sphere": _ball_projection,
    "edge": _esf,
}


def _voxel_mean(
    shape: Callable[[np.ndarray, float, float, float], np.ndarray],
    x: np.ndarray,
    dx: float,
    c: float,
    s: float,
    r: float,
) -> np.ndarray:
    n = int(np.clip(math.ceil(dx / s) + 4, 4, 24))
    nodes, weights = gauss_legendre(n)
    pts = x[:, None] + 0.5 * dx * nodes[None, :]
    return shape(pts, c, s, r) @ (0.5 * weights)


def _fit_profile(
    kind: str, x: np.ndarray, p: np.ndarray, dx: float, radius: float | None
) -> tuple[float, float, float]:
    """Fit ``b + A·⟨shape⟩`` to one profile; returns (FWHM, centre, radius) in mm, or NaNs."""
    nan = (float("nan"),) * 3
    shape = _SHAPES[kind]
    base0 = float(np.median(np.concatenate([p[:2], p[-2:]])))
    if kind == "edge":
        grad = np.abs(np.diff(p))
        amp0 = float(p[-2:].mean() - p[:2].mean())
        base0 = float(p[:2].mean())
        c0 = float(x[int(np.argmax(grad))] + 0.5 * dx)
        s0 = max(0.3 * dx, float(np.ptp(p)) * dx / (2.5 * max(float(grad.max()), 1e-300)))
    else:
        w = np.clip(p - base0, 0.0, None)
        if w.sum() <= 0:
            return nan
        c0 = float(np.sum(w * x) / w.sum())
        above = x[p - base0 >= 0.5 * (p.max() - base0)]
        width = float(above.max() - above.min() + dx) if above.size else dx
        s0 = max(0.3 * dx, width / FWHM_PER_SIGMA if kind != "sphere" else 0.2 * width)
        amp0 = float(w.sum() * dx)
    r_free = kind == "sphere" and radius is None
    r0 = radius if radius is not None else (
        0.5 * float(np.ptp(x[p - base0 >= 0.5 * (p.max() - base0)]) + dx) if kind == "sphere"
        else 0.0
    )
    if kind == "sphere":
        amp0 = float((p.max() - base0) / max(r0 * r0, 1e-9))

    def model(q: np.ndarray) -> np.ndarray:
        c, s, a, b = q[0], math.exp(q[1]), q[2], q[3]
        r = math.exp(q[4]) if r_free else r0
        return b + a * _voxel_mean(shape, x, dx, c, s, r)

    q0 = [c0, math.log(s0), amp0, base0]
    if r_free:
        q0.append(math.log(max(r0, dx)))
    try:
        res = optimize.least_squares(lambda q: model(q) - p, np.asarray(q0), xtol=1e-10,
                                     ftol=1e-12, max_nfev=400)
    except (ValueError, FloatingPointError):  # pragma: no cover - degenerate profile
        return nan
    if not res.success:
        return nan
    r = math.exp(res.x[4]) if r_free else r0
    return float(math.exp(res.x[1]) * FWHM_PER_SIGMA), float(res.x[0]), float(r)


def sphere_axis_fwhm(
    arr: np.ndarray,
    spacing: np.ndarray,
    centre: np.ndarray,
    radius: float,
    reach: float,
    baseline: float,
) -> np.ndarray:
    """Per-axis FWHM (mm) of one blurred uniform sphere from its axis projections.

    Parameters
    ----------
    arr : ndarray, shape (n0, n1, n2)
    spacing : ndarray, shape (3,)
    centre : ndarray, shape (3,)
        Sphere centre (mm from the centre of voxel (0, 0, 0)).
    radius : float
        Sphere radius (mm).
    reach : float
        Radius (mm) of the ball around the centre that is summed: beyond it the blurred sphere
        must be negligible (``R + 4σ``) and no other object may enter it.
    baseline : float
        Background value subtracted before summing.

    Notes
    -----
    Inside the ball, ``arr − baseline`` summed over two axes (times their voxel area) is the
    chord area ``π(R² − t²)`` blurred by the third axis' Gaussian alone, averaged over its voxel;
    each axis is fitted with that closed form and the known radius.
    """
    lo = np.clip(np.floor((centre - reach) / spacing).astype(int), 0, arr.shape)
    hi = np.clip(np.ceil((centre + reach) / spacing).astype(int) + 1, 0, arr.shape)
    sub = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    axes = [(np.arange(a, b) * d) for a, b, d in zip(lo, hi, spacing, strict=True)]
    dist2 = sum(
        ((ax - c) ** 2).reshape([-1 if k == i else 1 for k in range(3)])
        for i, (ax, c) in enumerate(zip(axes, centre, strict=True))
    )
    excess = np.where(dist2 <= reach * reach, sub - baseline, 0.0)
    out = np.full(3, np.nan)
    for ax in range(3):
        others = tuple(a for a in range(3) if a != ax)
        profile = excess.sum(axis=others) * float(np.prod(spacing[list(others)]))
        out[ax] = _fit_profile("sphere", axes[ax], profile, float(spacing[ax]), radius)[0]
    return out


def _window(
    arr: np.ndarray, spacing: np.ndarray, window_mm: float | None
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Box around the hottest object (4× its half-maximum extent plus 3 voxels, per axis) and
    its core (the half-maximum extent, widened by half of it on each side), both clipped."""
    smooth = gaussian_blur(arr, np.minimum(fwhm_to_sigma(1.0) / spacing, 1.0))
    bg = float(np.median(smooth))
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    labels, _ = ndimage.label(smooth >= 0.5 * (smooth[peak] + bg))
    region = ndimage.find_objects((labels == labels[peak]).astype(int))[0]
    box, core = [], []
    for ax, sl in enumerate(region):
        centre = 0.5 * (sl.start + sl.stop - 1)
        extent = sl.stop - sl.start
        half = window_mm / spacing[ax] if window_mm is not None else 2.0 * extent + 3.0
        for out, h in ((box, half), (core, extent)):
            lo = int(max(0, math.floor(centre - h)))
            hi = int(min(arr.shape[ax], math.ceil(centre + h) + 1))
            out.append(slice(lo, hi))
    return tuple(box), tuple(core)


def measure_fwhm(
    img: Image,
    kind: str = "point",
    *,
    diameter_mm: float | None = None,
    line_axis: int | None = None,
    window_mm: float | None = None,
) -> np.ndarray:
    """Per-axis FWHM (mm) of a scanner's PSF measured on a phantom scan.

    Parameters
    ----------
    img : Image
        3-D (or 2-D) scan of the phantom, hot object on a uniform background.
    kind : {"point", "line", "edge", "sphere"}
        Point source; line source along one array axis; a plane edge perpendicular to one or more
        axes (a large uniform object's face); a uniform hot sphere.
    diameter_mm : float, optional
        The sphere's known inner diameter (``kind="sphere"``); fitted when omitted.
    line_axis : int, optional
        The array axis the line source runs along (``kind="line"``); default the axis along
        which the hot region is longest.
    window_mm : float, optional
        Half-width (mm) of the box around the object that is analysed; default four times the
        object's half-maximum extent plus three voxels.

    Returns
    -------
    ndarray, shape (ndim,)
        FWHM (mm) per array axis; NaN where the phantom gives no information (along a line
        source, parallel to an edge). Pass it to :func:`imharmony.match_resolution` as
        ``source_fwhm``.

    Raises
    ------
    DataError
        Unknown kind, non-finite values, or no measurable axis.

    Notes
    -----
    Per axis, a profile is fitted by least squares with ``b + A·⟨g⟩_voxel``: ``g`` is the
    Gaussian (point, line), the Gaussian-blurred chord area of a ball (sphere) or the Gaussian
    CDF (edge), averaged over the voxel; free centre, σ, amplitude, baseline (and radius for a
    sphere of unknown size). FWHM = 2·sqrt(2·ln 2)·σ. A sphere is then fitted a second time
    on the background-subtracted sums over a ball of radius ``R + 4σ`` only
    (:func:`sphere_axis_fwhm`), which keeps most of the box's noise out. Point and line
    profiles are sums over the core of the hot region on the other axes (the profile is
    separable, so this changes its amplitude, not its shape, and sums less noise); an edge
    profile is the mean over the other axes.
    """
    if kind not in KINDS:
        raise DataError(f"kind={kind!r}: choose one of {', '.join(KINDS)}.")
    if not isinstance(img, Image):
        raise DataError(f"measure_fwhm expects an imharmony.Image; got {type(img).__name__}.")
    arr = np.asarray(img.array, dtype=np.float64)
    nd = img.ndim
    if arr.ndim != nd or nd not in (2, 3):
        raise DataError(f"measure_fwhm needs a 2-D or 3-D image; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise DataError("the phantom image holds NaN or infinite values; replace or crop them.")
    spacing = np.asarray(img.spacing, dtype=float)
    fwhm = np.full(nd, np.nan)
    if kind == "edge":
        ranges, profiles = [], []
        for ax in range(nd):
            p = arr.mean(axis=tuple(a for a in range(nd) if a != ax))
            profiles.append(p)
            ranges.append(float(np.ptp(p)))
        top = max(ranges)
        if top <= 0:
            raise DataError("the image is constant: no edge to measure.")
        for ax, p in enumerate(profiles):
            k = max(2, p.size // 10)
            contrast = abs(float(p[-k:].mean() - p[:k].mean()))
            if ranges[ax] >= 0.5 * top and contrast >= 0.8 * ranges[ax]:
                x = np.arange(p.size) * spacing[ax]
                fwhm[ax] = _fit_profile("edge", x, p, float(spacing[ax]), None)[0]
    else:
        box, core = _window(arr, spacing, window_mm)
        sub = arr[box]
        axes = list(range(nd))
        # A point's (and a line's) profile is separable: summing the other axes over their core
        # only rescales it, and keeps out the noise of the box's outer voxels.
        core_in_box = tuple(
            slice(c.start - b.start, c.stop - b.start) for c, b in zip(core, box, strict=True)
        )
        if kind == "line":
            if line_axis is None:
                extents = [s.stop - s.start for s in box]
                line_axis = int(np.argmax(np.asarray(extents) * spacing))
                # the line runs through the whole field: use its full length
            if not 0 <= line_axis < nd:
                raise DataError(f"line_axis={line_axis} is not an axis of a {nd}-D image.")
            full = list(box)
            full[line_axis] = slice(0, arr.shape[line_axis])
            sub = arr[tuple(full)].mean(axis=line_axis, keepdims=True)
            axes = [a for a in axes if a != line_axis]
        radius = None if diameter_mm is None else 0.5 * float(diameter_mm)
        centre, radii = np.full(nd, np.nan), np.full(nd, np.nan)
        for ax in axes:
            view = sub
            if kind in ("point", "line"):
                view = sub[tuple(
                    slice(None) if a == ax or sub.shape[a] == 1 else core_in_box[a]
                    for a in range(nd)
                )]
            p = view.sum(axis=tuple(a for a in range(nd) if a != ax))
            x = (np.arange(p.size) + box[ax].start) * spacing[ax]
            fwhm[ax], centre[ax], radii[ax] = _fit_profile(kind, x, p, float(spacing[ax]), radius)
        if kind == "sphere" and nd == 3 and np.all(np.isfinite(fwhm)):
            # second pass: only the blurred sphere's own neighbourhood, minus the background
            r = float(np.median(radii)) if radius is None else radius
            reach = r + 4.0 * fwhm_to_sigma(float(fwhm.max())) + float(spacing.max())
            grids = np.meshgrid(*[(np.arange(b.start, b.stop) * d) for b, d in
                                  zip(box, spacing, strict=True)], indexing="ij")
            far = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) > reach**2
            if far.sum() >= 10:
                fwhm = sphere_axis_fwhm(arr, spacing, centre, r, reach, float(np.median(sub[far])))
    if np.all(np.isnan(fwhm)):
        raise HarmonizationError(
            f"measure_fwhm(kind={kind!r}): no axis could be measured; check that the image holds "
            "that kind of phantom on a uniform background."
        )
    logger.info("measured FWHM (%s): %s mm", kind, np.round(fwhm, 3).tolist())
    return fwhm
