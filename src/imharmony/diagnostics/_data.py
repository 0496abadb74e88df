"""Input validation shared by the diagnostics: feature matrices, labels and covariate designs.

Every diagnostic takes samples x features data (a numpy array or a DataFrame of numeric columns),
one batch label per sample, and optionally a biology variable and a covariate table. The helpers
here turn them into plain arrays once, with errors that name the argument, the column and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._validation import (
    CovariateEncoder,
    as_label_array,
    levels_and_codes,
)
from .._vocabulary import BIOLOGY_TYPES
from ..errors import DataError, DesignError

__all__ = [
    "as_covariate_design",
    "as_labels",
    "as_matrix",
    "as_pair",
    "biology_kind",
    "encode_labels",
    "group_indicator",
]


def as_matrix(
    X: Any, *, name: str = "X", feature_names: Sequence[str] | None = None,
    allow_missing: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Return ``X`` as a float array of shape (n_samples, n_features) and feature names.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
        Numeric data. A DataFrame must hold only numeric columns (drop id columns first).
    name : str
        Name of the argument, used in error messages.
    feature_names : sequence of str, optional
        Names to use when ``X`` is an array; defaults to ``feature_0``, ``feature_1``, ...
    allow_missing : bool
        Accept NaN (missing values, analysed per feature on complete cases by the callers).

    Raises
    ------
    DataError
        If ``X`` is not two-dimensional, holds non-numeric columns, infinite values, or NaN
        when ``allow_missing`` is False.
    """
    if isinstance(X, pd.DataFrame):
        bad = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if bad:
            raise DataError(
                f"{name}: column(s) {bad} are not numeric; pass only the feature columns "
                "(drop ids, batch and covariate columns)."
            )
        names = [str(c) for c in X.columns]
        arr = X.to_numpy(dtype=float, na_value=np.nan)
    else:
        try:
            arr = np.asarray(X, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name}: cannot be read as a numeric array ({exc}).") from exc
        if arr.ndim == 1:
            arr = arr[:, None]
        names = (
            [str(f) for f in feature_names]
            if feature_names is not None
            else [f"feature_{j}" for j in range(arr.shape[1] if arr.ndim == 2 else 0)]
        )
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D samples x features array, got {arr.ndim}-D.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: empty data of shape {arr.shape}.")
    if len(names) != arr.shape[1]:
        raise DataError(
            f"{name}: {len(names)} feature names for {arr.shape[1]} columns; pass one name each."
        )
    finite = np.isfinite(arr) | (np.isnan(arr) if allow_missing else False)
    if not finite.all():
        cols = np.flatnonzero(~finite.all(axis=0))
        shown = [names[j] for j in cols[:5]]
        what = "infinite" if allow_missing else "missing or infinite"
        raise DataError(
            f"{name}: {int((~finite).sum())} {what} value(s) in feature(s) {shown}"
            f"{' ...' if cols.size > 5 else ''}; "
            + ("replace them (NaN is read as missing)." if allow_missing else
               "impute or drop them before the diagnostics.")
        )
    return arr, names


def as_labels(values: Any, n: int, *, name: str) -> np.ndarray:
    """Return one label per sample as a 1-D numpy array; check length and gaps.

    The one rule of :func:`imharmony._validation.as_label_array`.

    Raises
    ------
    DataError
        If the length differs from ``n`` or a label is missing.
    """
    return as_label_array(values, n, name=name)


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (levels, codes): the sorted distinct labels and each sample's integer code.

    Labels follow the one rule of :mod:`imharmony._validation` (``1`` and ``"1"`` are one label;
    numbers sorted by value, then text), as ComBat's sites do.
    """
    levels, codes = levels_and_codes(labels)
    return np.array(levels, dtype=object), codes


def group_indicator(codes: np.ndarray, k: int) -> np.ndarray:
    """One-hot indicator matrix of shape (n_samples, k) from integer codes."""
    G = np.zeros((codes.size, k))
    G[np.arange(codes.size), codes] = 1.0
    return G


def biology_kind(values: np.ndarray, biology_type: str = "auto") -> str:
    """Decide whether a biology variable is ``"categorical"`` or ``"continuous"``.

    With ``biology_type="auto"``: non-numeric and boolean values are categorical; numeric values
    are categorical when they are all integers with at most 10 distinct values (e.g. a 0/1
    diagnosis or a stage 1-4), continuous otherwise (e.g. age).
    """
    if biology_type in BIOLOGY_TYPES[1:]:
        return biology_type
    if biology_type != "auto":
        raise DataError(
            f"biology_type={biology_type!r}: use one of {', '.join(map(repr, BIOLOGY_TYPES))}."
        )
    s = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return "categorical"
    arr = s.to_numpy(dtype=float)
    if np.all(arr == np.round(arr)) and np.unique(arr).size <= 10:
        return "categorical"
    return "continuous"


def as_covariate_design(covariates: Any, n: int, *, name: str = "covariates") -> pd.DataFrame:
    """Encode covariates as a numeric design (no intercept), one column per parameter.

    The one encoder of :class:`imharmony._validation.CovariateEncoder`, as ComBat's: numeric
    columns kept as they are; categorical (non-numeric, boolean or ``category``) columns one-hot
    encoded with their first level dropped, named ``sex[M]``. A categorical column with a
    single level has no column. Returns an empty frame with ``n`` rows when ``covariates`` is
    None.

    Raises
    ------
    DataError
        If the length differs from ``n`` or a value is missing.
    """
    if covariates is None:
        return pd.DataFrame(index=range(n))
    try:
        encoder, frame = CovariateEncoder.learn(covariates, n, single_level="drop")
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from None
    if frame is None or not encoder.spec:
        return pd.DataFrame(index=range(n))
    return encoder.design(frame, n)


def check_min_group_size(codes: np.ndarray, levels: np.ndarray, *, minimum: int, what: str) -> None:
    """Raise :class:`DesignError` when a group has fewer than ``minimum`` samples."""
    counts = np.bincount(codes, minlength=levels.size)
    small = [str(levels[i]) for i in np.flatnonzero(counts < minimum)]
    if small:
        raise DesignError(
            f"{what}: site(s) {small} have fewer than {minimum} samples; merge or drop them."
        )


def as_pair(
    before: Any,
    after: Any,
    *,
    names: tuple[str, str] = ("before", "after"),
    feature_names: Sequence[str] | None = None,
    allow_missing: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read two tables of the same samples and features (e.g. before/after harmonization).

    Raises
    ------
    DataError
        If the shapes differ, or DataFrame columns differ in name or order.
    """
    A, cols = as_matrix(before, name=names[0], feature_names=feature_names,
                        allow_missing=allow_missing)
    B, cols_b = as_matrix(after, name=names[1], allow_missing=allow_missing)
    if A.shape != B.shape:
        raise DataError(
            f"{names[0]} has shape {A.shape} but {names[1]} has shape {B.shape}; pass the same "
            "samples and features, in the same order."
        )
    if isinstance(after, pd.DataFrame) and isinstance(before, pd.DataFrame) and cols != cols_b:
        diff = [(x, y) for x, y in zip(cols, cols_b, strict=True) if x != y][:3]
        raise DataError(
            f"{names[0]} and {names[1]} have different feature columns (first differences "
            f"{diff}); pass the same features in the same order."
        )
    return A, B, cols
