"""What a radiometric normalization did to the relations between bands.

:func:`band_distortion` compares band ratios and normalized differences (NDVI, NDWI, NBR, NDBI)
of two co-registered rasters on unchanged land and in a region of real change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._raster import as_mask, as_raster, nodata_pixels
from ..errors import DataError
from ..image import Image

__all__ = ["band_distortion"]

# Normalized-difference indices: name -> (band a, band b); index = (a - b) / (a + b).
_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "nbr": ("nir", "swir2"),
    "ndbi": ("swir1", "nir"),
    "grvi": ("green", "red"),  # green-red vegetation index, for RGB-only sensors
}


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
        nir, swir2; ``ndbi``: swir1, nir; ``grvi``: green, red — the green-red vegetation index
        of RGB cameras, Tucker 1979).
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
    b_img = as_raster(before, "before")
    a_img = as_raster(after, "after")
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
    changed = None if changed_mask is None else as_mask(changed_mask, spatial, "changed_mask")
    if unchanged_mask is not None:
        unchanged = as_mask(unchanged_mask, spatial, "unchanged_mask")
    else:
        unchanged = np.ones(spatial, dtype=np.bool_) if changed is None else ~changed
    unchanged = unchanged & ~nodata_pixels(b_img) & ~nodata_pixels(a_img)
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
            diff = np.where(ok, va, 0.0) - np.where(ok, vb, 0.0)  # inf − inf never computed
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
