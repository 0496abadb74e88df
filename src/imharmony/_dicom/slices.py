"""Slices at unequal distances along the normal: the equidistant grid and the resampling onto it.

NIfTI, NRRD and MHA hold one slice spacing. A series whose slices are not equally spaced (e.g. a
CT head series reconstructed 4 mm apart through the skull base and 7 mm above) is resampled
onto equidistant slices by linear interpolation along the slice normal, between the two acquired
slices around each new one, as dcm2niix does for its ``_Eq`` output.

The grid: it runs from the first to the last acquired slice (both kept exactly), with a spacing
no larger than the smallest gap, and at most twice as many slices as acquired (dcm2niix's limit;
finer would only interpolate more). With distances ``d_0 = 0 < d_1 < … < d_{n-1} = L`` and the
smallest gap ``g``, the grid has ``m = min(⌈L / g⌉ + 1, 2n)`` slices ``L·k / (m − 1)``. When the
limit applies this is dcm2niix's grid exactly; otherwise dcm2niix steps by ``g`` from the first
slice and stops short of the last one when ``L`` is not a multiple of ``g``, so the common slices
agree and it has fewer.

A regular grid with missing slices can look like a deliberately variable spacing. A stack whose
slices all lie on multiples of the smallest gap, most of them one smallest gap apart, is what a
missing file looks like: :func:`missing_slices` reports it, so that a missing file is not
silently filled by interpolation.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["equalize", "equidistant_grid", "missing_slices"]

# Largest distance of a slice from a multiple of the smallest gap (fraction of that gap) for the
# stack to count as a regular grid with missing slices (the same tolerance as a regular grid).
_ON_GRID = 0.1


def equidistant_grid(distances: np.ndarray) -> np.ndarray:
    """The equidistant positions (mm from the first slice) replacing ``distances``.

    Parameters
    ----------
    distances : numpy.ndarray, shape (n,)
        Position of each acquired slice along the normal, mm from the first, strictly increasing,
        ``n >= 2``.

    Returns
    -------
    numpy.ndarray, shape (m,)
        ``m = min(ceil(L / g) + 1, 2 n)`` positions from 0 to ``L = distances[-1]``, ``g`` the
        smallest gap.
    """
    d = np.asarray(distances, dtype=np.float64)
    span = float(d[-1] - d[0])
    gap = float(np.diff(d).min())
    m = min(math.ceil(span / gap - 1e-6) + 1, 2 * len(d))
    return d[0] + span * np.arange(m) / (m - 1)


def missing_slices(distances: np.ndarray) -> int:
    """How many slices are missing from ``distances`` if it is a regular stack with holes, else 0.

    A regular stack with holes: every slice lies on a multiple of the smallest gap (within a
    tenth of it) and more than half of the gaps are that smallest gap.
    """
    d = np.asarray(distances, dtype=np.float64)
    gaps = np.diff(d)
    gap = float(gaps.min())
    steps = (d - d[0]) / gap
    regular = np.count_nonzero(gaps <= gap * (1 + _ON_GRID))
    if np.abs(steps - np.round(steps)).max() > _ON_GRID or 2 * regular <= len(gaps):
        return 0
    return round(float(steps[-1])) + 1 - len(d)


def equalize(values: np.ndarray, distances: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Resample slices at ``distances`` onto ``grid`` by linear interpolation along the normal.

    Parameters
    ----------
    values : numpy.ndarray of float, shape (v, n, rows, columns)
        ``v`` volumes of ``n`` slices in order of ``distances``.
    distances, grid : numpy.ndarray, shape (n,) and (m,)
        Acquired and new positions (mm along the normal), increasing, ``grid`` within
        ``[distances[0], distances[-1]]``.

    Returns
    -------
    numpy.ndarray, shape (v, m, rows, columns), the dtype of ``values``
        A new slice that falls on an acquired one (within 1e-6 of the gap) is a copy of it, so
        NaN in the neighbouring slice does not spread there; others are
        ``(1 − w) · lower + w · upper``.
    """
    d = np.asarray(distances, dtype=np.float64)
    hi = np.clip(np.searchsorted(d, grid, side="left"), 1, len(d) - 1)
    lo = hi - 1
    w = np.clip((grid - d[lo]) / (d[hi] - d[lo]), 0.0, 1.0)
    out = np.empty((values.shape[0], len(grid), *values.shape[2:]), dtype=values.dtype)
    for k in range(len(grid)):
        if w[k] < 1e-6:
            out[:, k] = values[:, lo[k]]
        elif w[k] > 1 - 1e-6:
            out[:, k] = values[:, hi[k]]
        else:
            np.multiply(values[:, lo[k]], 1.0 - w[k], out=out[:, k])
            out[:, k] += w[k] * values[:, hi[k]]
    return out
