"""Nyúl & Udupa piecewise-linear histogram standardization (:class:`HistogramStandardizer`).

A training step learns a standard scale of a few percentile landmarks from a set of images (one
in memory at a time); the transform maps each new image piecewise-linearly so that its landmarks
land on that scale (Nyúl & Udupa 1999, 2000). It is smooth and robust, not exact: for an exact
match of one reference distribution use :func:`imharmony.imaging.histogram.match_histogram`.
The learned landmarks are saved through the common model envelope (:mod:`imharmony._persist`).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from .._persist import ArraySpec, check, is_int
from .._raster import as_mask as _as_mask
from .._raster import float_dtype as _float_dtype
from ..base import HarmonizerMixin, Rule
from ..errors import DataError, HarmonizationWarning, ModelFileError
from ..image import Image
from .histogram import _history

__all__ = ["HistogramStandardizer"]

logger = logging.getLogger(__name__)

_NAMED_LANDMARKS: dict[str, tuple[float, ...]] = {
    "deciles": (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0),
    "quartiles": (1.0, 25.0, 50.0, 75.0, 99.0),
}
_FOREGROUND = ("all", "mean")


def _landmark_percentiles(value: Any) -> np.ndarray | None:
    """The percentiles a ``landmarks`` parameter stands for, or None when it is not valid."""
    if isinstance(value, str):
        named = _NAMED_LANDMARKS.get(value)
        return None if named is None else np.asarray(named, dtype=np.float64)
    try:
        pct = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    valid = (
        pct.ndim == 1
        and pct.size >= 2
        and bool(np.all(np.isfinite(pct)))
        and pct[0] >= 0
        and pct[-1] <= 100
        and bool(np.all(np.diff(pct) > 0))
    )
    return pct if valid else None


def _standard_range(value: Any) -> tuple[float, float] | None:
    """``(s1, s2)`` of an ``output_range`` parameter, or None when it is not valid."""
    try:
        s1, s2 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (s1, s2) if math.isfinite(s1) and math.isfinite(s2) and s1 < s2 else None


def _load_image(obj: Any, what: str) -> Image:
    """An Image from an Image, an array or a path (read with :func:`imharmony.io.read_image`)."""
    if isinstance(obj, Image):
        return obj
    if isinstance(obj, str | os.PathLike):
        from ..io import read_image

        return read_image(obj)
    if isinstance(obj, np.ndarray):
        return Image(obj)
    raise DataError(
        f"{what}: expected an imharmony Image, a numpy array or a path, got {type(obj).__name__}."
    )


def _piecewise_linear(
    x: np.ndarray, xp: np.ndarray, fp: np.ndarray, out_dtype: np.dtype, chunk: int = 1 << 16
) -> np.ndarray:
    """Piecewise-linear map through (xp, fp) with linear extrapolation by the end segments.

    ``xp`` strictly increasing, length ≥ 2. Works in chunks of ``chunk`` voxels, so the only
    full-size allocation is the output.
    """
    slopes = np.diff(fp) / np.diff(xp)
    work = np.dtype(np.float64 if out_dtype == np.float64 else np.float32)
    # segment k: y = fp[k] + slope[k] (x - xp[k]) (no cancellation, unlike slope·x + intercept)
    params = tuple(a.astype(work) for a in (xp[1:-1], slopes, xp[:-1], fp[:-1]))
    out = np.empty(x.shape, dtype=out_dtype)
    _piecewise_into(x, out, params, chunk)
    return out


def _piecewise_into(
    x: np.ndarray, out: np.ndarray, params: tuple[np.ndarray, ...], chunk: int
) -> None:
    if x.ndim > 1 and not x.flags.c_contiguous:  # avoid a full-size contiguous copy
        for i in range(x.shape[0]):
            _piecewise_into(x[i], out[i], params, chunk)
        return
    inner, slope, x0, y0 = params
    flat, flat_out = x.reshape(-1), out.reshape(-1)
    seg_type = np.uint8 if inner.size < 255 else np.uint16
    seg_buf = np.empty(min(chunk, flat.size), dtype=seg_type)
    hit_buf = np.empty(seg_buf.size, dtype=np.bool_)
    for start in range(0, flat.size, chunk):
        res = flat[start : start + chunk].astype(slope.dtype, copy=True)
        # segment = number of inner landmarks ≤ x: a few vectorized comparisons, branch-free
        # and several times faster than a binary search per voxel
        seg, hit = seg_buf[: res.size], hit_buf[: res.size]
        seg[:] = 0
        for t in inner:
            np.greater_equal(res, t, out=hit)
            seg += hit
        idx = seg.astype(np.intp)  # once, rather than inside each take
        res -= np.take(x0, idx)
        res *= np.take(slope, idx)
        res += np.take(y0, idx)
        flat_out[start : start + chunk] = res


def _percentiles(values: np.ndarray, pct: np.ndarray) -> np.ndarray:
    """``np.percentile(values, pct)`` (linear method) by sorting ``values`` in place.

    A vectorized sort is several times faster than the multi-``kth`` selection that
    ``np.percentile`` uses for eleven landmarks. ``values`` must be a scratch copy.
    """
    if values.dtype.kind not in "fiu":
        values = values.astype(np.float64)
    values.sort()
    h = (values.size - 1) * (np.asarray(pct, dtype=np.float64) / 100.0)
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, values.size - 1)
    a = values[lo].astype(np.float64)
    b = values[hi].astype(np.float64)
    return a + (h - lo) * (b - a)


class HistogramStandardizer(HarmonizerMixin, BaseEstimator):
    """Piecewise-linear histogram standardization (Nyúl & Udupa 2000).

    Learns, from a set of training images, the average position of a few percentile landmarks on
    a standard scale, then maps each image piecewise-linearly so that its landmarks land there.

    Parameters
    ----------
    landmarks : {"deciles", "quartiles"} or sequence of float, default "deciles"
        Percentiles (0–100, strictly increasing, at least 2) used as landmarks. ``"deciles"`` is
        ``(1, 10, 20, …, 90, 99)``; ``"quartiles"`` is ``(1, 25, 50, 75, 99)``. The first and
        last are the percentiles ``pc1``/``pc2`` that anchor the standard scale. A sequence comes
        back from :meth:`load` as a tuple of floats.
    output_range : (float, float), default (0.0, 100.0)
        ``(s1, s2)``: where the first and last landmarks of every training image are mapped before
        averaging; the standard scale.
    foreground : {"all", "mean"}, default "all"
        Voxels that define the landmarks when no mask is given: every voxel, or those above the
        image mean (torchio's default rule). A mask always wins.

    Attributes
    ----------
    landmarks_ : ndarray, shape (k,)
        The landmark percentiles actually used.
    standard_landmarks_ : ndarray, shape (k,)
        Average landmark positions on the standard scale (``[0] == s1``, ``[-1] == s2``).
    image_landmarks_ : ndarray, shape (n_images, k)
        Each training image's landmarks on the standard scale (before averaging).
    n_images_ : int
        Number of training images.

    Notes
    -----
    For a training image with landmark intensities ``μ_1 < … < μ_k`` (percentiles of its masked
    voxels), ``μ'_i = s1 + (μ_i − μ_1) / (μ_k − μ_1) · (s2 − s1)``; the standard landmarks are the
    mean of ``μ'`` over images. ``transform`` maps ``x`` through the line segments joining
    ``(μ_i, μ̄'_i)`` of the image at hand, extended linearly beyond ``μ_1`` and ``μ_k``. Every voxel
    is mapped (the mask only decides which voxels define the landmarks). Tied landmarks (e.g. a
    large constant region) are merged and mapped to the middle of their standard positions, with a
    :class:`~imharmony.errors.HarmonizationWarning`.

    ``fit`` streams: one image is in memory at a time. ``transform`` sorts one copy of the masked
    voxels for the landmarks (``np.percentile``'s linear rule; for eleven landmarks a sort is
    faster than its multi-``kth`` selection) and maps in one chunked pass; its peak memory is the
    input, the output and that copy.

    References
    ----------
    L. G. Nyúl, J. K. Udupa, "On standardizing the MR image intensity scale", Magnetic Resonance in
    Medicine 42 (1999) 1072–1081; L. G. Nyúl, J. K. Udupa, X. Zhang, "New variants of a method of
    MRI scale standardization", IEEE TMI 19 (2000) 143–150.
    """

    FORMAT = "imharmony.HistogramStandardizer"
    VERSION = 2  # 2: the common model envelope (imharmony._persist)
    _fitted_attribute: ClassVar[str] = "standard_landmarks_"
    _model_kind: ClassVar[str] = FORMAT
    _model_version: ClassVar[int] = VERSION

    def __init__(
        self,
        landmarks: str | Sequence[float] = "deciles",
        output_range: tuple[float, float] = (0.0, 100.0),
        foreground: str = "all",
    ) -> None:
        self.landmarks = landmarks
        self.output_range = output_range
        self.foreground = foreground

    # -- parameters (checked by HarmonizerMixin._validate_params, one message for every class) -
    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "landmarks": Rule(
            lambda v: _landmark_percentiles(v) is not None,
            f"one of {sorted(_NAMED_LANDMARKS)} or at least 2 strictly increasing percentiles "
            "in [0, 100]",
        ),
        "output_range": Rule(
            lambda v: _standard_range(v) is not None, "two finite numbers (s1, s2) with s1 < s2"
        ),
        "foreground": Rule.one_of(*_FOREGROUND),
    }

    def _validated(self) -> tuple[np.ndarray, tuple[float, float]]:
        """The landmark percentiles and ``(s1, s2)`` the (validated) parameters stand for."""
        self._validate_params()
        pct = _landmark_percentiles(self.landmarks)
        scale = _standard_range(self.output_range)
        assert pct is not None and scale is not None  # valid: checked just above
        return pct, scale

    def _image_landmarks(self, image: Image, mask: Any, pct: np.ndarray, what: str) -> np.ndarray:
        """Landmark intensities (percentiles of the foreground voxels) of one image."""
        arr = image.array
        if mask is not None:
            if isinstance(mask, str | os.PathLike):
                mask = _load_image(mask, f"{what} mask")
            vals = arr[_as_mask(mask, arr.shape, f"{what} mask", image)]
        elif self.foreground == "mean":
            vals = arr[arr > arr.mean()]
        else:
            vals = arr.reshape(-1).copy()
        if vals.size == 0:
            raise DataError(f"{what}: the mask (foreground) selects no voxels.")
        marks = _percentiles(vals, pct)
        del vals
        if not np.all(np.isfinite(marks)):
            raise DataError(
                f"{what}: NaN or infinite values in the foreground; exclude them with a mask "
                "(e.g. mask=np.isfinite(img.array))."
            )
        return marks

    # -- fitting ----------------------------------------------------------------------------
    def fit(
        self, images: Iterable[Any], masks: Iterable[Any] | None = None
    ) -> HistogramStandardizer:
        """Learn the standard landmarks from training images, one image in memory at a time.

        Parameters
        ----------
        images : iterable of Image, ndarray or path
            Training images (a generator is fine; paths are read one at a time).
        masks : iterable of (Image, array_like of bool, path or None), optional
            One foreground mask per image, in the same order (``None`` entries use the
            ``foreground`` rule).

        Returns
        -------
        self
        """
        pct, (s1, s2) = self._validated()
        if isinstance(images, Image | np.ndarray | str | os.PathLike):
            images = [images]
        mask_iter = iter(masks) if masks is not None else None
        per_image: list[np.ndarray] = []
        for i, item in enumerate(images):
            what = f"training image {i}" + (f" ({item})" if isinstance(item, str | Path) else "")
            image = _load_image(item, what)
            if mask_iter is not None:
                try:
                    mask = next(mask_iter)
                except StopIteration:
                    raise DataError(
                        f"fit got fewer masks than images (no mask for {what}); give one mask "
                        "per image, or None entries."
                    ) from None
            else:
                mask = None
            marks = self._image_landmarks(image, mask, pct, what)
            span = marks[-1] - marks[0]
            if not span > 0:
                raise DataError(
                    f"{what}: its {pct[0]:g}th and {pct[-1]:g}th percentiles are equal "
                    f"({marks[0]:g}); the foreground is constant — check the mask."
                )
            per_image.append(s1 + (marks - marks[0]) / span * (s2 - s1))
            del image, item, mask  # not alive while the next image is read or prepared
        if mask_iter is not None and next(mask_iter, None) is not None:
            raise DataError("fit got more masks than images; give one mask per image.")
        if not per_image:
            raise DataError("fit got no training images.")
        table = np.vstack(per_image)
        self.landmarks_ = pct
        self.image_landmarks_ = table
        self.standard_landmarks_ = table.mean(axis=0)
        self.n_images_ = table.shape[0]
        logger.info(
            "HistogramStandardizer: standard landmarks from %d images: %s",
            self.n_images_,
            np.array2string(self.standard_landmarks_, precision=3),
        )
        return self

    def transform(
        self, img: Image | np.ndarray | str | os.PathLike[str], mask: Any = None
    ) -> Image:
        """Map an image onto the standard scale.

        Parameters
        ----------
        img : Image, ndarray or path
            Image to standardize.
        mask : Image or array_like of bool or path, optional
            Foreground that defines the image's landmarks (default: the ``foreground`` rule).
            Every voxel is mapped, inside and outside the mask.

        Returns
        -------
        Image
            Floating point (float32 unless the input is float64 or a wide integer), with
            ``{"step": "nyul", ...}`` appended to ``meta["history"]``.
        """
        self._check_fitted()
        image = _load_image(img, "image")
        pct = self.landmarks_
        marks = self._image_landmarks(image, mask, pct, "image")
        xp, fp = marks, self.standard_landmarks_.astype(np.float64)
        if np.any(np.diff(xp) <= 0):
            uniq, inverse = np.unique(xp, return_inverse=True)
            if uniq.size < 2:
                raise DataError(
                    f"image: all its landmark percentiles equal {uniq[0]:g}; the foreground is "
                    "constant — check the mask."
                )
            warnings.warn(
                f"image: tied landmark intensities {np.array2string(xp, precision=4)}; tied "
                "landmarks were merged (a large constant region?). Check the mask.",
                HarmonizationWarning,
                stacklevel=2,
            )
            fp = np.bincount(inverse, weights=fp) / np.bincount(inverse)
            xp = uniq
        out_dtype = _float_dtype(image.array.dtype)
        out = _piecewise_linear(image.array, xp, fp, out_dtype)
        entry = {
            "step": "nyul",
            "landmarks": [float(v) for v in pct],
            "image_landmarks": [float(v) for v in xp],
            "standard_landmarks": [float(v) for v in fp],
        }
        return image.with_array(out, history=_history(image, entry))

    # -- persistence (the envelope is imharmony._persist, through HarmonizerMixin) ------------
    def _params_for_file(self) -> dict[str, Any]:
        lm = self.landmarks
        return {
            "landmarks": lm if isinstance(lm, str) else [float(v) for v in lm],
            "output_range": [float(v) for v in self.output_range],
            "foreground": self.foreground,
        }

    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {
            "landmarks_": np.asarray(self.landmarks_, dtype=np.float64),
            "standard_landmarks_": np.asarray(self.standard_landmarks_, dtype=np.float64),
            "image_landmarks_": np.asarray(self.image_landmarks_, dtype=np.float64),
        }
        return {"n_images": int(self.n_images_)}, arrays

    @classmethod
    def _model_arrays(cls, path: Path, content: dict[str, Any]) -> dict[str, ArraySpec]:
        n = check(path, "n_images", content.get("n_images"), is_int(content.get("n_images"), 1),
                  "an int >= 1")
        pct, _ = cls(**content["params"])._validated()
        k = pct.size
        return {
            "landmarks_": ArraySpec((k,)),
            "standard_landmarks_": ArraySpec((k,)),
            "image_landmarks_": ArraySpec((n, k)),
        }

    def _restore(
        self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None:
        pct, _ = self._validated()
        std = arrays["standard_landmarks_"]
        if (
            not np.array_equal(arrays["landmarks_"], pct)
            or not np.all(np.isfinite(std))
            or np.any(np.diff(std) < 0)
            or not np.all(np.isfinite(arrays["image_landmarks_"]))
        ):
            raise ModelFileError(
                f"{path}: inconsistent HistogramStandardizer file (landmark arrays do not agree "
                "with the parameters, or are not finite and increasing); save the model again."
            )
        # JSON has lists only: sequences come back as the tuples of floats they were saved as
        # (so a model loaded from its file has the parameters it was saved with)
        self.output_range = tuple(self.output_range)
        if not isinstance(self.landmarks, str):
            self.landmarks = tuple(self.landmarks)
        self.landmarks_ = pct
        self.standard_landmarks_ = std
        self.image_landmarks_ = arrays["image_landmarks_"]
        self.n_images_ = int(content["n_images"])
