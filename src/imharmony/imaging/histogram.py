"""Histogram matching: the exact quantile map and the stored reference distributions.

:func:`match_histogram` maps every voxel of the source mask through the exact quantile map
``T(x) = F_Y⁻¹(F_X(x))`` so that the output reproduces the reference distribution (to the minimum
Kolmogorov–Smirnov distance the data allow). The reference is an image (with its own mask) or a
stored :class:`ReferenceDistribution`. The same numerical core matches the bands of a multi-band
raster (:mod:`imharmony.imaging.multiband`).

The Nyúl & Udupa standardizer, which learns a standard scale of a few landmarks instead of
matching one distribution exactly, is in :mod:`imharmony.imaging.nyul`;
``imharmony.imaging.histogram.HistogramStandardizer`` still resolves to it.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._persist import ArraySpec, check, is_int, load_model, save_model
from .._raster import as_mask as _as_mask
from .._raster import float_dtype as _float_dtype
from .._threads import cpu_threads
from ..errors import DataError, ModelFileError
from ..image import Image

if TYPE_CHECKING:  # resolved lazily by __getattr__ below (nyul imports this module)
    from .nyul import HistogramStandardizer

__all__ = [
    "HistogramStandardizer",
    "ReferenceDistribution",
    "match_histogram",
]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``HistogramStandardizer`` lives in :mod:`imharmony.imaging.nyul`; resolve it on first use."""
    if name == "HistogramStandardizer":
        from .nyul import HistogramStandardizer

        return HistogramStandardizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SIGN32 = np.uint32(0x80000000)
_NEG_ZERO_KEY = np.uint32(0x7FFFFFFF)  # order-preserving key of -0.0 (that of +0.0 is _SIGN32)
# Integer images whose value range is at most this many times the voxel count are matched with a
# counting (bincount) pass instead of a sort.
_BINCOUNT_RANGE_FACTOR = 4


# --------------------------------------------------------------------------------------------
# Shared helpers: masks, history
# --------------------------------------------------------------------------------------------


def _history(img: Image, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The image's history with ``entry`` appended (a new list; the input is not modified)."""
    old = img.meta.get("history", [])
    return [*list(old), entry]


# --------------------------------------------------------------------------------------------
# Quantile functions of the reference
# --------------------------------------------------------------------------------------------


def _sorted_quantile(ys: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation in the sorted sample ``ys`` at fractional 0-based positions ``pos``.

    ``pos`` (float64) is clipped to ``[0, m - 1]`` in place; returns float64.
    """
    m = ys.size
    if m == 1:
        return np.full(pos.shape, ys[0], dtype=np.float64)
    np.clip(pos, 0.0, m - 1, out=pos)
    i = pos.astype(np.intp)
    np.minimum(i, m - 2, out=i)
    pos -= i  # fraction in [0, 1]
    lo = ys[i].astype(np.float64)
    hi = ys[i + 1] - lo
    hi *= pos
    lo += hi
    return lo


class ReferenceDistribution:
    """A stored reference intensity distribution: its quantile function on a fine grid.

    Lets images be matched to a distribution (e.g. the pooled foreground of a reference cohort)
    without keeping the reference image. Save and load as versioned JSON.

    Parameters
    ----------
    probabilities : array_like, shape (k,)
        Strictly increasing probabilities in ``[0, 1]``, starting at 0 and ending at 1.
    values : array_like, shape (k,)
        Non-decreasing quantiles at those probabilities (``values[0]`` is the minimum and
        ``values[-1]`` the maximum of the reference).
    meta : dict, optional
        Free-form description (source, units, number of voxels), kept in the JSON file.

    Notes
    -----
    The quantile function between grid points is linear. With the default grid of 4097 points the
    extra Kolmogorov–Smirnov distance this introduces is far below ``1e-3`` for smooth reference
    densities.
    """

    FORMAT = "imharmony.ReferenceDistribution"
    VERSION = 2  # 2: the common model envelope (imharmony._persist)

    def __init__(self, probabilities: Any, values: Any, meta: dict[str, Any] | None = None) -> None:
        p = np.asarray(probabilities, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if p.ndim != 1 or v.shape != p.shape or p.size < 2:
            raise DataError(
                "ReferenceDistribution needs 1-D probabilities and values of the same length "
                f"(at least 2); got shapes {p.shape} and {v.shape}."
            )
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v))):
            raise DataError("ReferenceDistribution probabilities and values must be finite.")
        if p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0):
            raise DataError(
                "ReferenceDistribution probabilities must increase strictly from 0 to 1."
            )
        if np.any(np.diff(v) < 0):
            raise DataError("ReferenceDistribution values (quantiles) must be non-decreasing.")
        self.probabilities = p
        self.values = v
        self.meta = dict(meta or {})
        grid = np.linspace(0.0, 1.0, p.size)
        self._uniform_grid = bool(np.allclose(p, grid, rtol=0.0, atol=1e-12))

    @classmethod
    def from_image(
        cls, img: Image | np.ndarray, mask: Any = None, *, n_quantiles: int = 4097
    ) -> ReferenceDistribution:
        """Summarize the voxel values of ``img`` inside ``mask`` on ``n_quantiles`` points.

        Parameters
        ----------
        img : Image or ndarray
            The reference image.
        mask : Image or array_like of bool, optional
            Voxels to use (default: all).
        n_quantiles : int, default 4097
            Number of grid points (probabilities ``linspace(0, 1, n_quantiles)``).
        """
        image = img if isinstance(img, Image) else Image(np.asarray(img))
        arr = image.array
        if mask is not None:
            values = arr[_as_mask(mask, arr.shape, "reference mask", image)]
        else:
            values = arr.ravel()
        dist = cls.from_values(values, n_quantiles=n_quantiles)
        dist.meta.update({"source": "image", "shape": list(arr.shape)})
        return dist

    @classmethod
    def from_values(cls, values: Any, *, n_quantiles: int = 4097) -> ReferenceDistribution:
        """Summarize a sample of values (any shape; flattened) on ``n_quantiles`` points."""
        if int(n_quantiles) < 2:
            raise DataError(f"n_quantiles must be at least 2, got {n_quantiles}.")
        ys = np.sort(np.asarray(values).ravel())
        if ys.size == 0:
            raise DataError(
                "ReferenceDistribution: the reference sample (inside its mask) is empty."
            )
        if not (np.isfinite(ys[0]) and np.isfinite(ys[-1])):
            raise DataError(
                "ReferenceDistribution: the reference sample has NaN or infinite values; exclude "
                "them with a mask (e.g. mask=np.isfinite(array))."
            )
        p = np.linspace(0.0, 1.0, int(n_quantiles))
        v = _sorted_quantile(ys, p * ys.size - 0.5)
        v[0], v[-1] = float(ys[0]), float(ys[-1])
        return cls(p, v, {"n_values": int(ys.size)})

    def quantile(self, q: Any) -> np.ndarray:
        """The quantile function ``F⁻¹(q)`` (linear between grid points)."""
        q = np.asarray(q, dtype=np.float64)
        k = self.probabilities.size
        if self._uniform_grid:  # grid i / (k − 1): the position is arithmetic, no search
            return _sorted_quantile(self.values, np.atleast_1d(q * (k - 1))).reshape(q.shape)
        return np.interp(q, self.probabilities, self.values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (format, version, probabilities, values, meta)."""
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "probabilities": self.probabilities.tolist(),
            "values": self.values.tolist(),
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the distribution in the model-file envelope (:mod:`imharmony._persist`)."""
        return save_model(
            path,
            kind=self.FORMAT,
            version=self.VERSION,
            content={"n_quantiles": int(self.probabilities.size), "meta": self.meta},
            arrays={"probabilities": self.probabilities, "values": self.values},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceDistribution:
        """Read a distribution written by :meth:`save`.

        Raises
        ------
        ModelFileError
            If the file is missing, corrupted, edited, of another kind or version, or its
            quantiles are not a distribution.
        """

        def validate(content: dict[str, Any]) -> dict[str, ArraySpec]:
            k = check(path, "n_quantiles", content.get("n_quantiles"),
                      is_int(content.get("n_quantiles"), 2), "an int >= 2")
            check(path, "meta", content.get("meta"), isinstance(content.get("meta"), dict),
                  "an object")
            return {"probabilities": ArraySpec((k,)), "values": ArraySpec((k,))}

        loaded = load_model(path, kind=cls.FORMAT, version=cls.VERSION, validate=validate)
        try:
            return cls(loaded.arrays["probabilities"], loaded.arrays["values"],
                       loaded.content["meta"])
        except DataError as exc:
            raise ModelFileError(f"{path}: inconsistent reference distribution ({exc}).") from exc

    def __repr__(self) -> str:
        return (
            f"ReferenceDistribution(n_quantiles={self.probabilities.size}, "
            f"min={self.values[0]:.6g}, median={self.quantile(0.5):.6g}, max={self.values[-1]:.6g})"
        )


# --------------------------------------------------------------------------------------------
# The exact quantile map (one numerical core, used by match_histogram and match_bands)
# --------------------------------------------------------------------------------------------


_CHUNK = 1 << 16
# References with at least this many voxels are sorted in a background thread.
_THREAD_MIN = 1 << 20


class _SampleReference:
    """Quantile function of a sorted reference sample ``ys`` (mid-point plotting positions).

    The k-th order statistic (0-based) sits at probability ``(k + 1/2) / m``; quantiles between
    order statistics are linear and beyond the extremes constant. A source voxel of mid-rank ``r``
    among ``n`` has probability ``(r + 1/2) / n``, i.e. the fractional position
    ``(r + 1/2) · m / n − 1/2`` in ``ys`` (exactly ``r`` when ``n == m``).
    """

    def __init__(self, ys: np.ndarray | Future[np.ndarray]) -> None:
        self._ys = ys

    @property
    def ys(self) -> np.ndarray:
        """The sorted sample (waits for the background sort, re-raising its error)."""
        if isinstance(self._ys, Future):
            self._ys = self._ys.result()
        return self._ys

    def at_ranks(self, ranks: np.ndarray, n: int) -> np.ndarray:
        scale = self.ys.size / n
        pos = ranks + 0.5
        pos *= scale
        pos -= 0.5
        return _sorted_quantile(self.ys, pos)

    def uniform(self, n: int, out: np.ndarray) -> None:
        """Fill ``out`` (length n) with the quantiles at ranks 0 … n − 1 (no ties)."""
        if self.ys.size == n:  # the quantile at rank k is the k-th order statistic
            out[:] = self.ys
            return
        scale = self.ys.size / n
        base = np.arange(min(n, _CHUNK), dtype=np.float64)
        for start in range(0, n, _CHUNK):
            k = min(_CHUNK, n - start)
            pos = base[:k] + (start + 0.5)
            pos *= scale
            pos -= 0.5
            out[start : start + k] = _sorted_quantile(self.ys, pos)


class _DistributionReference:
    """Quantile function of a :class:`ReferenceDistribution` (probabilities ``(r + 1/2) / n``)."""

    def __init__(self, dist: ReferenceDistribution) -> None:
        self.dist = dist

    def at_ranks(self, ranks: np.ndarray, n: int) -> np.ndarray:
        return self.dist.quantile((ranks + 0.5) / n)

    def uniform(self, n: int, out: np.ndarray) -> None:
        base = np.arange(min(n, _CHUNK), dtype=np.float64)
        for start in range(0, n, _CHUNK):
            k = min(_CHUNK, n - start)
            out[start : start + k] = self.dist.quantile((base[:k] + (start + 0.5)) / n)


def _sort_keys(x32: np.ndarray, index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Sort a float32 sample with a uint32 payload; return (sorted payload, sorted keys).

    The high word of each 64-bit key holds the float's bits remapped so that unsigned order is
    numeric order (IEEE-754 sign-magnitude trick); the low word holds ``index`` (default
    ``arange(n)``). One sort of the keys gives both the sorted values and where each came from,
    several times faster than ``argsort``.
    """
    n = x32.size
    key = np.empty(n, dtype=np.uint64)
    words = key.view(np.uint32).reshape(n, 2)
    if sys.byteorder == "little":
        lo_word, hi_word = words[:, 0], words[:, 1]
    else:  # pragma: no cover - big-endian machines
        lo_word, hi_word = words[:, 1], words[:, 0]
    flip = (x32.view(np.int32) >> 31).view(np.uint32)  # all ones for negative values
    flip |= _SIGN32
    flip ^= x32.view(np.uint32)
    flip[flip == _NEG_ZERO_KEY] = _SIGN32  # -0.0 equals +0.0: give it the same key
    hi_word[:] = flip
    del flip
    lo_word[:] = np.arange(n, dtype=np.uint32) if index is None else index
    key.sort()
    return lo_word, hi_word


def _bits_to_float(bits: np.ndarray) -> np.ndarray:
    """Inverse of the order-preserving remap in :func:`_sort_keys`."""
    bits = np.asarray(bits, dtype=np.uint32)
    neg = (bits & _SIGN32) == 0
    return np.where(neg, ~bits, bits & ~_SIGN32).view(np.float32)


def _tied_mid_ranks(
    sorted_keys: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Tied elements of sorted keys: (positions, mid-rank of each group, group sizes) or None.

    A group of ``c`` equal keys at sorted positions ``s … s + c − 1`` gets the mid-rank
    ``s + (c − 1)/2``; untied elements keep their position as rank, so only tied ones are listed.
    The work beyond one comparison pass is proportional to the number of tied elements.
    """
    n = sorted_keys.size
    tie_next = np.empty(n, dtype=np.bool_)  # tie_next[k]: key k equals key k + 1
    np.equal(sorted_keys[1:], sorted_keys[:-1], out=tie_next[:-1])
    tie_next[-1] = False
    if not tie_next.any():
        return None
    # tied elements: k with tie_next[k] or tie_next[k - 1]; a group starts where not tie_next[k - 1]
    tie_prev = np.empty(n, dtype=np.bool_)
    tie_prev[0] = False
    tie_prev[1:] = tie_next[:-1]
    tied = np.flatnonzero(tie_next | tie_prev)
    starts_group = ~tie_prev[tied]
    group_start = tied[starts_group]
    sizes = np.diff(np.append(np.flatnonzero(starts_group), tied.size))
    return tied, group_start + (sizes - 1) * 0.5, sizes


def _integral_small_range(x: np.ndarray) -> bool:
    """Whether float values are all integers of a range the counting pass handles.

    A strided sample of 1024 values is checked first, so continuous data cost almost nothing.
    """
    n = x.size
    sample = x[:: max(1, n // 1024)]
    if not np.all(np.isfinite(sample)) or not np.array_equal(sample, np.floor(sample)):
        return False
    lo, hi = x.min(), x.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= _BINCOUNT_RANGE_FACTOR * n + 65536:
        return False
    if abs(lo) > 2**52 or abs(hi) > 2**52:
        return False
    return bool(np.array_equal(x, np.floor(x)))


def _quantile_map(
    x: np.ndarray,
    reference: _SampleReference | _DistributionReference,
    out: np.ndarray,
    positions: np.ndarray | None,
    what: str,
) -> None:
    """Exact quantile mapping of the 1-D sample ``x`` onto ``reference``, with mid-ranks.

    Writes ``out[positions] = T(x)`` (``out`` 1-D; ``positions`` the flat index of each value of
    ``x``, or None when ``x`` fills ``out`` in order). Equal inputs give equal outputs and the map
    is non-decreasing. O(n log n) (one sort of packed 64-bit keys) or O(n + range) for integers of
    small range.
    """
    n = x.size
    if n == 0:
        raise DataError(f"{what}: the mask selects no voxels; give a mask with foreground.")
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype.kind == "f" and _integral_small_range(x):
        x = x.astype(np.int64)  # integer values stored as floats: count instead of sorting
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if hi - lo < _BINCOUNT_RANGE_FACTOR * n + 65536:  # counting pass, O(n + range)
            shifted = x.astype(np.intp)
            if lo != 0:
                shifted -= lo
            counts = np.bincount(shifted, minlength=hi - lo + 1)
            ends = np.cumsum(counts)
            lut = reference.at_ranks((ends - counts) + (counts - 1) * 0.5, n).astype(out.dtype)
            if positions is None:
                np.take(lut, shifted, out=out)
            else:
                out[positions] = lut[shifted]
            return
        if -(2**24) <= lo and hi <= 2**24:
            x = x.astype(np.float32)  # exact for these integers
    if x.dtype.kind == "f" and x.dtype.itemsize <= 4:
        x32: np.ndarray | None = x.astype(np.float32, copy=False)
    elif x.dtype.kind == "f":
        x32 = x.astype(np.float32)
        if not np.array_equal(x32, x, equal_nan=True):
            x32 = None
    else:
        x32 = None
    if x32 is not None and out.size < 2**32:
        target, skeys = _sort_keys(x32, positions)
        del x32
        ends = _bits_to_float(skeys[[0, -1]])
    else:  # values float32 cannot hold exactly: argsort of the original values
        order = np.argsort(x, kind="quicksort")
        skeys = x[order]
        target = order if positions is None else positions[order]
        del order
        ends = skeys[[0, -1]]
    if not (np.isfinite(ends[0]) and np.isfinite(ends[-1])):
        raise DataError(
            f"{what}: NaN or infinite values inside the mask; exclude them with the mask "
            "(e.g. mask=np.isfinite(img.array) & foreground)."
        )
    mapped = np.empty(n, dtype=out.dtype)
    reference.uniform(n, mapped)  # quantiles at ranks 0 … n − 1
    ties = _tied_mid_ranks(skeys)
    del skeys
    if ties is not None:  # tied voxels: quantile at their shared mid-rank instead
        tied, mid, sizes = ties
        mapped[tied] = np.repeat(reference.at_ranks(mid, n).astype(out.dtype), sizes)
        del tied, mid, sizes
    out[target] = mapped


def _reference(
    reference: Image | ReferenceDistribution | np.ndarray, reference_mask: Any
) -> tuple[_SampleReference | _DistributionReference, np.dtype, dict[str, Any]]:
    """The reference's quantile function, its dtype and a description for the history."""
    if isinstance(reference, ReferenceDistribution):
        if reference_mask is not None:
            raise DataError(
                "reference_mask was given with a ReferenceDistribution; the distribution already "
                "describes the reference foreground — drop reference_mask."
            )
        return (
            _DistributionReference(reference),
            np.dtype(np.float32),
            {"reference": "distribution"},
        )
    image = reference if isinstance(reference, Image) else Image(np.asarray(reference))
    arr = image.array
    if reference_mask is not None:
        vals = arr[_as_mask(reference_mask, arr.shape, "reference_mask", image)]
    else:
        vals = arr.ravel()
    if vals.size == 0:
        raise DataError("reference_mask selects no voxels; give a mask with foreground.")
    info = {"reference": "image", "reference_voxels": int(vals.size)}
    if vals.size >= _THREAD_MIN and cpu_threads() > 1:
        # sort the reference on another core while the source is being ranked (np.sort
        # releases the GIL); the quantile function waits for it when first used
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imharmony-ref")
        future = pool.submit(_sorted_reference, vals)
        pool.shutdown(wait=False)  # the worker thread ends when the sort is done
        return _SampleReference(future), vals.dtype, info
    return _SampleReference(_sorted_reference(vals)), vals.dtype, info


def _sorted_reference(vals: np.ndarray) -> np.ndarray:
    ys = np.sort(vals)
    if ys.dtype.kind == "f" and not (np.isfinite(ys[0]) and np.isfinite(ys[-1])):
        raise DataError(
            "the reference has NaN or infinite values inside its mask; exclude them with "
            "reference_mask (e.g. np.isfinite(reference.array))."
        )
    return ys


def _match_array(
    arr: np.ndarray,
    reference: _SampleReference | _DistributionReference,
    mask: np.ndarray | None,
    out_dtype: np.dtype,
    what: str,
) -> np.ndarray:
    """Quantile-map the voxels of ``arr`` inside the boolean ``mask`` (all if None); new array.

    Voxels outside the mask keep their value (cast to ``out_dtype``).
    """
    if mask is None:
        out = np.empty(arr.shape, dtype=out_dtype)
        _quantile_map(arr.reshape(-1), reference, out.reshape(-1), None, what)
        return out
    out = arr.astype(out_dtype, order="C", copy=True)
    idx = np.flatnonzero(mask)
    if idx.size and arr.size < 2**32:
        idx = idx.astype(np.uint32)
    _quantile_map(arr.reshape(-1)[idx], reference, out.reshape(-1), idx, what)
    return out


def match_histogram(
    img: Image,
    reference: Image | ReferenceDistribution,
    mask: Any = None,
    reference_mask: Any = None,
) -> Image:
    """Match the intensity distribution of ``img`` (inside ``mask``) to ``reference`` exactly.

    Parameters
    ----------
    img : Image
        Source image, any shape.
    reference : Image or ReferenceDistribution
        Target distribution: an image (its voxels inside ``reference_mask``; any shape, any grid)
        or a stored :class:`ReferenceDistribution`.
    mask : Image or array_like of bool, optional
        Source voxels to match, on the grid of ``img`` (default: all voxels). Voxels outside the
        mask are returned unchanged (only cast to the output dtype).
    reference_mask : Image or array_like of bool, optional
        Reference voxels that define the target distribution (default: all voxels of
        ``reference``). Not allowed with a :class:`ReferenceDistribution`.

    Returns
    -------
    Image
        New image on the grid of ``img``, floating point (float32 unless the source or the
        reference image is float64 or an integer type wider than 16 bits), with
        ``{"step": "match_histogram", ...}`` appended to ``meta["history"]``.

    Raises
    ------
    DataError
        If a mask is empty or not on the image's grid, or the masked values are not finite.

    Notes
    -----
    Each source voxel value ``x`` is mapped to ``T(x) = F_Y⁻¹(F_X(x))``. ``F_X`` is evaluated with
    mid-ranks: the ``c`` tied voxels occupying ranks ``a … a + c − 1`` (0-based) all get
    ``F_X = (a + (c − 1)/2 + 1/2) / n``, so equal inputs map to equal outputs, the map is
    monotone, and each tie group lands in the middle of its share of the reference distribution,
    which is what minimizes the Kolmogorov–Smirnov distance on discrete data. ``F_Y⁻¹`` is the
    sample quantile function of the reference with mid-point plotting positions
    ``(k + 1/2) / m`` and linear interpolation; with continuous data and ``n = m`` the output is
    exactly a permutation of the reference sample.

    The ranks come from one sort of packed 64-bit keys (order-preserving float32 bits and the voxel
    index), O(n log n) with a small constant; integer images of small range, and integer values
    stored as floats, use a counting pass instead, O(n). Values that float32 cannot hold exactly
    (float64 detail, integers beyond 2²⁴) fall back to ``argsort``. A reference of a million voxels
    or more is sorted on a second thread meanwhile. Masks matter: matching an image to a reference
    that merely has more background distorts every tissue value, so give foreground masks for both.

    References
    ----------
    Gonzalez & Woods, *Digital Image Processing*, histogram specification.
    """
    image = img if isinstance(img, Image) else Image(np.asarray(img))
    arr = image.array
    ref, ref_dtype, ref_info = _reference(reference, reference_mask)
    out_dtype = _float_dtype(arr.dtype, ref_dtype)
    m = None if mask is None else _as_mask(mask, arr.shape, "mask", image)
    out = _match_array(arr, ref, m, out_dtype, "match_histogram")
    n_matched = arr.size if m is None else int(np.count_nonzero(m))
    logger.debug("match_histogram: %d voxels matched (%s)", n_matched, ref_info["reference"])
    entry = {"step": "match_histogram", "masked": mask is not None, **ref_info}
    return image.with_array(out, history=_history(image, entry))

