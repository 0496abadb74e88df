"""Region features: first-order statistics of an image inside each region of a label map.

:func:`region_features` computes, for every labelled region at once (one sort and a few
``numpy.bincount`` passes over the voxels, no loop over voxels or regions), the first-order
statistics that radiomics studies harmonize most often: mean, median, standard deviation,
interquartile range, 10th and 90th percentiles, skewness, excess kurtosis, energy, the entropy of
a fixed-bin-number histogram, and the volume in mm³.

Full radiomics (shape, texture matrices: GLCM, GLRLM, GLSZM, ...) is available through
pyradiomics, an optional dependency (``pip install pyradiomics-bhklab``):
:func:`radiomics_features` runs its extractor on an :class:`~imharmony.image.Image` and a label
map and returns the same one-row-per-region table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._deprecate import renamed_keywords
from ..errors import DataError
from ..image import Image

__all__ = ["FIRST_ORDER_FEATURES", "features_wide", "radiomics_features", "region_features"]

logger = logging.getLogger(__name__)

#: Columns of :func:`region_features`, in order.
FIRST_ORDER_FEATURES: tuple[str, ...] = (
    "mean", "median", "sd", "iqr", "p10", "p90", "skewness", "kurtosis", "energy", "entropy",
    "volume_mm3",
)

Regions = Mapping[int, str] | Sequence[int] | None


def _as_arrays(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Image values, integer labels and the voxel spacing; checks that the grids agree."""
    img_arr = image.array if isinstance(image, Image) else np.asarray(image)
    lab_arr = labels.array if isinstance(labels, Image) else np.asarray(labels)
    if img_arr.shape != lab_arr.shape:
        raise DataError(
            f"labels have shape {lab_arr.shape} but the image has shape {img_arr.shape}; the "
            "label map must be on the image's grid (resample it with interpolation='nearest')."
        )
    if isinstance(image, Image):
        spacing = image.spacing
        difference = image.grid_difference(labels) if isinstance(labels, Image) else ""
        if difference:
            raise DataError(
                f"the label map is not on the image's grid ({difference}); resample it onto the "
                "image's grid with interpolation='nearest'."
            )
    elif isinstance(labels, Image):
        spacing = labels.spacing
    else:
        spacing = (1.0,) * img_arr.ndim
    dt = img_arr.dtype
    if not np.issubdtype(dt, np.number) or np.issubdtype(dt, np.complexfloating):
        raise DataError(f"image values must be real numbers; got dtype {img_arr.dtype}.")
    if lab_arr.dtype == bool:
        lab_arr = lab_arr.astype(np.uint8)
    if not np.issubdtype(lab_arr.dtype, np.integer):
        if not np.all(np.isfinite(lab_arr)) or np.any(lab_arr != np.round(lab_arr)):
            raise DataError(
                "labels must be integers (0 = background); got non-integer values. Resample "
                "label maps with interpolation='nearest'."
            )
        lab_arr = lab_arr.astype(np.int64)
    return img_arr, lab_arr, spacing


def _selected_regions(lab: np.ndarray, regions: Regions) -> tuple[np.ndarray, list[Any]]:
    """Label values to measure and the names of the output rows."""
    if regions is None:
        present = np.unique(lab)
        values = present[present != 0].astype(np.int64)
        return values, [int(v) for v in values]
    if isinstance(regions, Mapping):
        values = np.asarray([int(k) for k in regions], dtype=np.int64)
        names = [regions[k] for k in regions]
    else:
        values = np.asarray([int(k) for k in regions], dtype=np.int64)
        names = [int(v) for v in values]
    if values.size == 0:
        raise DataError("regions is empty; give at least one label value, or None for all.")
    if np.unique(values).size != values.size:
        raise DataError(f"regions lists a label more than once: {values.tolist()}.")
    return values, names


def _grouped_quantiles(
    sorted_vals: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """numpy's default (linear) quantile of every group of a grouped, sorted array."""
    pos = (counts - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    frac = pos - lo
    a = sorted_vals[starts + lo]
    b = sorted_vals[starts + hi]
    return a + (b - a) * frac


@renamed_keywords(image="img")
def region_features(
    img: Image | np.ndarray,
    labels: Image | np.ndarray,
    *,
    regions: Regions = None,
    bins: int = 32,
) -> pd.DataFrame:
    """First-order statistics of an image inside every region of a label map.

    Parameters
    ----------
    img : Image or ndarray, shape (n0, n1[, n2])
        Intensities; the values inside the measured regions must be finite.
    labels : Image or ndarray of int, same shape
        Label map (0 = background). A boolean mask is read as label 1.
    regions : mapping of int to str, sequence of int, or None
        Regions to measure: ``{label: name}`` (rows named ``name``), a sequence of label values
        (rows named by the value), or None for every non-zero label present (sorted). A listed
        label absent from the map gives a row of NaN with volume 0.
    bins : int
        Number of equal-width histogram bins between the region's minimum and maximum for the
        entropy (a fixed bin number, so the entropy does not change under a linear intensity
        map ``a·x + b`` with ``a > 0``).

    Returns
    -------
    pandas.DataFrame, shape (n_regions, 11)
        Index ``region``; columns :data:`FIRST_ORDER_FEATURES`:

        - ``mean``, ``median``, ``sd`` (population standard deviation, ``ddof=0``);
        - ``iqr`` (75th − 25th percentile), ``p10``, ``p90`` (numpy's linear quantiles);
        - ``skewness`` m₃/m₂^{3/2} and ``kurtosis`` m₄/m₂² − 3 (excess; the biased moment
          estimators of :func:`scipy.stats.skew` and :func:`scipy.stats.kurtosis`; NaN for a
          constant region);
        - ``energy`` Σx² (IBSI; grows with the region's size);
        - ``entropy`` −Σ p_k log₂ p_k of the ``bins``-bin histogram (0 for a constant region);
        - ``volume_mm3``: number of voxels times the voxel volume (spacing of ``img``, or
          ``labels`` when only it is an Image; 1 mm per axis for plain arrays).

    Raises
    ------
    DataError
        If the grids differ, the labels are not integers, ``bins`` < 1, or a measured region
        holds a non-finite value.

    Notes
    -----
    The voxels of all regions are sorted once by (region, value); quantiles are read at their
    positions in each region's sorted run, and sums of powers of the centred values come from
    ``numpy.bincount`` with weights, all in float64. The cost is one sort of the labelled voxels
    whatever the number of regions.

    References
    ----------
    A. Zwanenburg et al., "The Image Biomarker Standardization Initiative", Radiology
    295(2):328–338, 2020 (intensity-based statistical features).
    """
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise DataError(f"bins must be a positive integer; got {bins!r}.")
    img_arr, lab_arr, spacing = _as_arrays(img, labels)
    values, names = _selected_regions(lab_arr, regions)
    n_reg = values.size

    # map every voxel's label to a region index (or -1 when it is not measured)
    flat_lab = lab_arr.ravel()
    order_vals = np.argsort(values)
    sorted_values = values[order_vals]
    pos = np.searchsorted(sorted_values, flat_lab)
    pos_c = np.minimum(pos, n_reg - 1)
    hit = sorted_values[pos_c] == flat_lab
    sel = np.flatnonzero(hit)
    idx = order_vals[pos_c[sel]]
    x = img_arr.ravel()[sel].astype(np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.unique(idx[~np.isfinite(x)])
        raise DataError(
            f"the image holds NaN or infinite values inside region(s) "
            f"{[names[i] for i in bad]}; replace them or exclude those voxels from the labels."
        )

    counts = np.bincount(idx, minlength=n_reg)
    out = pd.DataFrame(np.nan, index=pd.Index(names, name="region"),
                       columns=list(FIRST_ORDER_FEATURES))
    voxel_mm3 = float(np.prod(spacing[: lab_arr.ndim]))
    out["volume_mm3"] = counts * voxel_mm3
    if x.size == 0:
        return out
    present = counts > 0
    safe = np.maximum(counts, 1)

    s1 = np.bincount(idx, weights=x, minlength=n_reg)
    mean = s1 / safe
    c = x - mean[idx]
    c2 = c * c
    m2 = np.bincount(idx, weights=c2, minlength=n_reg) / safe
    m3 = np.bincount(idx, weights=c2 * c, minlength=n_reg) / safe
    m4 = np.bincount(idx, weights=c2 * c2, minlength=n_reg) / safe
    energy = np.bincount(idx, weights=x * x, minlength=n_reg)
    # float64 round-off leaves a tiny m2 on constant regions: relative 1e-24 counts as zero
    flat = m2 <= 1e-24 * np.maximum(energy / safe, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / (m2 * m2) - 3.0)

    # one sort by (region, value); each region's values are then a contiguous sorted run
    order = np.lexsort((x, idx))
    xs = x[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    st, ct = starts[present], counts[present]
    quant = {q: _grouped_quantiles(xs, st, ct, q) for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
    vmin = xs[st]
    vmax = xs[st + ct - 1]

    # entropy of a fixed-bin-number histogram between each region's minimum and maximum
    lo = np.zeros(n_reg)
    lo[present] = vmin
    span = np.zeros(n_reg)
    span[present] = vmax - vmin
    width = np.where(span > 0, span / bins, 1.0)
    b = np.floor((x - lo[idx]) / width[idx]).astype(np.int64)
    np.clip(b, 0, bins - 1, out=b)
    hist = np.bincount(idx * bins + b, minlength=n_reg * bins).reshape(n_reg, bins)
    p = hist / safe[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)

    out.loc[present, "mean"] = mean[present]
    out.loc[present, "median"] = quant[0.5]
    out.loc[present, "sd"] = np.sqrt(m2[present])
    out.loc[present, "iqr"] = quant[0.75] - quant[0.25]
    out.loc[present, "p10"] = quant[0.1]
    out.loc[present, "p90"] = quant[0.9]
    out.loc[present, "skewness"] = skew[present]
    out.loc[present, "kurtosis"] = kurt[present]
    out.loc[present, "energy"] = energy[present]
    out.loc[present, "entropy"] = ent[present]
    missing = [names[i] for i in np.flatnonzero(~present)]
    if missing:
        logger.info("region_features: region(s) %s absent from the label map", missing)
    return out


def features_wide(table: pd.DataFrame, *, sep: str = "_") -> pd.Series:
    """Flatten a one-row-per-region feature table into one row: ``<region><sep><feature>``.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`region_features` or :func:`radiomics_features`.
    sep : str
        Separator between the region and the feature name.

    Returns
    -------
    pandas.Series
        One value per (region, feature), regions in the table's order, features in its column
        order, ready to be one subject's row of a samples x features table.
    """
    stacked = table.stack(future_stack=True)
    stacked.index = [f"{r}{sep}{f}" for r, f in stacked.index]
    return stacked


@renamed_keywords(image="img")
def radiomics_features(
    img: Image,
    labels: Image,
    *,
    regions: Regions = None,
    settings: Mapping[str, Any] | None = None,
    feature_classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Full radiomics features per region through pyradiomics (an optional dependency).

    Parameters
    ----------
    img : Image
        3-D image.
    labels : Image
        Label map on the image's grid (0 = background).
    regions : mapping of int to str, sequence of int, or None
        As for :func:`region_features`.
    settings : mapping, optional
        pyradiomics extractor settings (e.g. ``{"binWidth": 25}``); default pyradiomics' own.
    feature_classes : sequence of str, optional
        Feature classes to enable (``"firstorder"``, ``"shape"``, ``"glcm"``, ``"glrlm"``,
        ``"glszm"``, ``"gldm"``, ``"ngtdm"``); default all of pyradiomics' defaults.

    Returns
    -------
    pandas.DataFrame
        Index ``region``; one column per feature, named as pyradiomics names them
        (``original_glcm_Contrast`` ...); pyradiomics' diagnostic entries are left out.

    Raises
    ------
    OptionalDependencyError
        If pyradiomics is not installed (``pip install pyradiomics-bhklab``).
    DataError
        If the grids differ or a listed region is absent.
    """
    from ..imaging.multiband import OptionalDependencyError

    try:
        from radiomics import featureextractor
    except ImportError as exc:
        raise OptionalDependencyError(
            "radiomics_features needs the optional package 'pyradiomics', which is not "
            "installed; install it with 'pip install pyradiomics-bhklab', or use "
            "region_features for first-order statistics."
        ) from exc
    from ..io.images import to_sitk

    img_arr, lab_arr, _ = _as_arrays(img, labels)
    if not isinstance(img, Image) or not isinstance(labels, Image):
        raise DataError("radiomics_features needs imharmony.Image inputs (for their geometry).")
    values, names = _selected_regions(lab_arr, regions)
    extractor = featureextractor.RadiomicsFeatureExtractor(**dict(settings or {}))
    if feature_classes is not None:
        extractor.disableAllFeatures()
        for name in feature_classes:
            extractor.enableFeatureClassByName(name)
    itk_img = to_sitk(img.with_array(img_arr.astype(np.float32, copy=False)), None)
    itk_lab = to_sitk(labels.with_array(lab_arr.astype(np.int32, copy=False)), None)
    rows = []
    present = set(np.unique(lab_arr).tolist())
    for value, name in zip(values.tolist(), names, strict=True):
        if value not in present:
            raise DataError(f"region {name!r} (label {value}) is absent from the label map.")
        result = extractor.execute(itk_img, itk_lab, label=int(value))
        rows.append({k: float(v) for k, v in result.items()
                     if not str(k).startswith("diagnostics_")})
    return pd.DataFrame(rows, index=pd.Index(names, name="region"))
