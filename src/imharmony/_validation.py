"""One validation of feature tables, labels and covariates, for every harmonizer and diagnostic.

Three decisions that the steps of one pipeline must take the same way are taken here, once:

Labels (sites, batches)
    A label's identity is its text after numbers are made plain: ``1``, ``1.0``, ``np.int64(1)``
    and ``"1"`` are the same site everywhere (a CSV read twice, or a site named on the command
    line, must not split a site in two); ``"1.0"`` and ``"01"`` are other sites. Levels are
    sorted numbers first (by value), then the rest by text. :func:`label_key` gives the
    JSON-friendly value kept in model files, :func:`factorize_labels` and :func:`encode_labels`
    the integer codes.

Covariates
    :class:`CovariateEncoder`: numeric columns (not booleans) are continuous and kept as they
    are; every other column, booleans included, is categorical and one-hot encoded with its
    first level dropped (R's treatment contrasts; levels sorted as above, or in a categorical
    dtype's own order). Design columns are named ``age`` and ``sex[M]``.

Feature tables (the command line)
    :func:`split_feature_table`: columns named for a role (batch, covariate, id) are not
    features; pyradiomics' ``diagnostics_*`` bookkeeping columns and columns matching an
    ``--exclude`` glob pass through untouched; every other numeric column is a feature; a text
    column that is numeric but for a few cells ("n/a", "#NAME?") is an error naming the column,
    the row and the value, not a silently unharmonized feature. :func:`require_columns` names a
    missing column's closest matches. :func:`check_feature_columns` holds new data to the
    features a fitted model learned (count, then names and order); :func:`feature_names_out` is
    what a model that keeps every feature returns from ``get_feature_names_out``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, DesignError

__all__ = [
    "PASSTHROUGH_PATTERNS",
    "CovariateEncoder",
    "FeatureColumns",
    "as_covariate_frame",
    "as_label_array",
    "check_feature_columns",
    "did_you_mean",
    "encode_labels",
    "factorize_labels",
    "feature_names_out",
    "format_items",
    "is_numeric_column",
    "label_key",
    "label_text",
    "levels_and_codes",
    "require_columns",
    "sorted_levels",
    "split_feature_table",
]

#: Column globs that are never features by default: pyradiomics' own bookkeeping (versions,
#: settings, image and mask hashes, voxel counts, image minimum/maximum).
PASSTHROUGH_PATTERNS: tuple[str, ...] = ("diagnostics_*",)

# a text column is taken for a damaged numeric one when at least this fraction of its non-empty
# cells parse as numbers
_MOSTLY_NUMERIC = 0.8


def format_items(items: Sequence[Any], limit: int = 8) -> str:
    """``'a', 'b' and 3 more``: a list shortened for a message."""
    shown = ", ".join(repr(x) for x in list(items)[:limit])
    more = len(items) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def is_numeric_column(dtype: Any) -> bool:
    """True for numeric dtypes other than boolean (a boolean column is categorical)."""
    return bool(pd.api.types.is_numeric_dtype(dtype)) and not pd.api.types.is_bool_dtype(dtype)


# ------------------------------------------------------------------------------------------------
# labels


def as_label_array(values: Any, n: int, *, name: str = "batch") -> np.ndarray:
    """One label per sample as a 1-D array: a sequence, Series, one-column frame or (n, 1) array.

    Raises
    ------
    DataError
        If ``values`` is None, its length is not ``n`` or a label is missing.
    """
    if values is None:
        raise DataError(f"{name} is required: give one label per sample.")
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise DataError(f"{name}: expected one column, got {values.shape[1]}.")
        values = values.iloc[:, 0]
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{name}: {arr.shape[0] if arr.ndim else 0} value(s) of shape {arr.shape} for {n} "
            "sample(s); give one label per sample, in the order of the rows."
        )
    missing = pd.isna(arr)
    if missing.any():
        raise DataError(
            f"{name}: {int(missing.sum())} missing label(s) (rows "
            f"{list(np.flatnonzero(missing)[:5])}); every sample needs one: fill or drop those "
            "samples."
        )
    return arr


def labels_of(values: Any, n: int, what: str = "batch") -> np.ndarray:
    """:func:`as_label_array` with the label kind as a positional argument."""
    return as_label_array(values, n, name=what)


def label_key(value: Any) -> Any:
    """A JSON-friendly, hashable version of a label: numpy scalars to Python, 1.0 to 1."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def label_text(value: Any) -> str:
    """The identity of a label: the text of :func:`label_key` (``1``, ``1.0``, ``"1"`` -> "1")."""
    return str(label_key(value))


def factorize_labels(values: Any) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of ``values`` and one key per distinct label (same text, same label).

    Returns
    -------
    codes : numpy.ndarray of intp, shape (n,)
        Index into ``keys``, in order of first appearance.
    keys : list
        :func:`label_key` of the first value seen with each text.
    """
    arr = np.asarray(values, dtype=object).ravel()
    codes, uniques = pd.factorize(arr, use_na_sentinel=False)
    keys = [label_key(u) for u in uniques]
    text_codes, _ = pd.factorize(np.array([str(k) for k in keys], dtype=object))
    first: dict[int, Any] = {}
    for key, t in zip(keys, text_codes, strict=True):
        first.setdefault(int(t), key)
    merged = [first[i] for i in range(len(first))]
    return text_codes.astype(np.intp)[codes] if codes.size else codes.astype(np.intp), merged


def sorted_levels(keys: Iterable[Any]) -> list[Any]:
    """Distinct labels in the one order used everywhere: numbers by value, then text."""
    unique: dict[str, Any] = {}
    for k in keys:
        unique.setdefault(label_text(k), label_key(k))

    def order(v: Any) -> tuple[int, Any]:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (0, v) if number else (1, str(v))

    return sorted(unique.values(), key=order)


def levels_and_codes(values: Any) -> tuple[list[Any], np.ndarray]:
    """The sorted distinct labels (:func:`sorted_levels`) and each value's code into them."""
    codes, keys = factorize_labels(values)
    levels = sorted_levels(keys)
    order = {label_text(k): i for i, k in enumerate(levels)}
    remap = np.array([order[label_text(k)] for k in keys], dtype=np.intp)
    return levels, remap[codes]


def encode_labels(values: Any, levels: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes of ``values`` in ``levels`` (-1 where absent) and the absent labels."""
    codes, keys = factorize_labels(values)
    lookup = {label_text(lvl): i for i, lvl in enumerate(levels)}
    mapped = np.array([lookup.get(label_text(k), -1) for k in keys], dtype=np.intp)
    unseen = [k for k, m in zip(keys, mapped, strict=True) if m < 0]
    return (mapped[codes] if codes.size else codes), unseen


# ------------------------------------------------------------------------------------------------
# covariates


def as_covariate_frame(covariates: Any, n: int) -> pd.DataFrame | None:
    """Covariates as a DataFrame of ``n`` rows with string column names (None when absent)."""
    if covariates is None:
        return None
    if isinstance(covariates, pd.Series):
        frame = covariates.to_frame(name=covariates.name if covariates.name is not None else "cov0")
    elif isinstance(covariates, pd.DataFrame):
        frame = covariates
    else:
        arr = np.asarray(covariates)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"covariates must be 2-D (samples x covariates); got {arr.shape}.")
        frame = pd.DataFrame(arr, columns=[f"cov{i}" for i in range(arr.shape[1])])
    if frame.shape[1] == 0:
        return None
    if frame.shape[0] != n:
        raise DataError(
            f"covariates have {frame.shape[0]} rows but X has {n} samples; give one row per sample."
        )
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame


class CovariateEncoder:
    """Turns a covariate table into design columns: continuous as is, categorical one-hot with
    the first level dropped (R's treatment contrasts; levels sorted by :func:`sorted_levels`, or
    the categorical dtype's own order). Booleans are categorical.

    Parameters
    ----------
    spec : list of dict
        One ``{"name", "kind"[, "levels"]}`` per covariate column (what :meth:`learn` returns,
        and what a model file stores).
    """

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.spec = spec

    @classmethod
    def learn(cls, covariates: Any, n: int, *,
              single_level: str = "error") -> tuple[CovariateEncoder, pd.DataFrame | None]:
        """Learn the encoding from the covariates of the training samples.

        Parameters
        ----------
        covariates : DataFrame, Series or array-like, or None
        n : int
            Number of samples.
        single_level : {"error", "drop"}
            A categorical column with one level carries nothing: refuse it (a harmonizer), or
            leave it out of the design (a diagnostic describing the data as it is).
        """
        frame = as_covariate_frame(covariates, n)
        if frame is None:
            return cls([]), None
        spec: list[dict[str, Any]] = []
        for name in frame.columns:
            col = frame[name]
            if col.isna().any():
                raise DataError(
                    f"covariate column {name!r} has {int(col.isna().sum())} missing value(s); "
                    "impute them or drop those samples."
                )
            if is_numeric_column(col.dtype):
                spec.append({"name": str(name), "kind": "continuous"})
                continue
            if isinstance(col.dtype, pd.CategoricalDtype):
                levels = [label_key(v) for v in col.cat.categories if (col == v).any()]
            else:
                levels = sorted_levels(factorize_labels(col.to_numpy())[1])
            if len(levels) < 2:
                if single_level == "drop":
                    continue
                raise DesignError(
                    f"covariate column {name!r} has a single level ({levels[0]!r}); it carries "
                    "no information to preserve: drop it."
                )
            spec.append({"name": str(name), "kind": "categorical", "levels": levels})
        return cls(spec), frame

    @property
    def columns(self) -> list[str]:
        """Names of the design columns: ``age``, ``sex[M]``."""
        names: list[str] = []
        for s in self.spec:
            if s["kind"] == "continuous":
                names.append(s["name"])
            else:
                names.extend(f"{s['name']}[{lvl}]" for lvl in s["levels"][1:])
        return names

    def encode(self, covariates: Any, n: int) -> np.ndarray:
        """The design block of shape (n, len(columns)) for these samples' covariates."""
        if not self.spec:
            if covariates is not None and as_covariate_frame(covariates, n) is not None:
                raise DataError(
                    "covariates were given but the model was fitted without covariates."
                )
            return np.zeros((n, 0))
        frame = as_covariate_frame(covariates, n)
        if frame is None:
            raise DataError(
                "the model was fitted with covariates "
                f"{format_items([s['name'] for s in self.spec])}; give them for these samples too."
            )
        blocks: list[np.ndarray] = []
        for s in self.spec:
            name = s["name"]
            if name not in frame.columns:
                raise DataError(f"covariate column {name!r} is missing; the model needs it.")
            col = frame[name]
            if col.isna().any():
                raise DataError(f"covariate column {name!r} has missing values.")
            if s["kind"] == "continuous":
                if not is_numeric_column(col.dtype):
                    raise DataError(
                        f"covariate column {name!r} was continuous at fit but is not numeric now."
                    )
                values = col.to_numpy(dtype=np.float64)
                if not np.isfinite(values).all():
                    raise DataError(
                        f"covariate column {name!r} has infinite values; replace them (or drop "
                        "those samples)."
                    )
                blocks.append(values[:, None])
            else:
                levels = s["levels"]
                idx, unseen_keys = encode_labels(col.to_numpy(), levels)
                if unseen_keys:
                    unseen = sorted(str(k) for k in unseen_keys)
                    raise DataError(
                        f"covariate column {name!r} has level(s) {format_items(unseen)} not seen "
                        f"at fit (known: {format_items(levels)})."
                    )
                block = np.zeros((n, len(levels) - 1))
                rows = np.flatnonzero(idx > 0)
                block[rows, idx[rows] - 1] = 1.0
                blocks.append(block)
        return np.hstack(blocks)

    def design(self, covariates: Any, n: int) -> pd.DataFrame:
        """:meth:`encode` as a DataFrame with the design column names."""
        return pd.DataFrame(self.encode(covariates, n), columns=self.columns)


# ------------------------------------------------------------------------------------------------
# feature tables


@dataclass(frozen=True)
class FeatureColumns:
    """Roles of a feature table's columns (see :func:`split_feature_table`).

    Attributes
    ----------
    features : list of str
        Numeric columns to harmonize or diagnose, in table order.
    passthrough : list of str
        Non-numeric columns (ids, text) carried along unchanged.
    excluded : list of str
        Numeric columns left out by :data:`PASSTHROUGH_PATTERNS` or ``exclude`` globs, carried
        along unchanged.
    """

    features: list[str]
    passthrough: list[str]
    excluded: list[str]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'a' or 'b'?)"`` naming the candidates closest to ``name``, or ``""``.

    Close means: similar spelling (:func:`difflib.get_close_matches`, ratio >= 0.6), else the
    same name in another case, else one name inside the other (``fwhm`` and ``source_fwhm``).

    Examples
    --------
    >>> did_you_mean("fwhm", ["path", "site", "source_fwhm"])
    " (did you mean 'source_fwhm'?)"
    >>> did_you_mean("Site", ["site"]), did_you_mean("zzz", ["site"])
    (" (did you mean 'site'?)", '')
    """
    have = [str(c) for c in candidates]
    close = difflib.get_close_matches(name, have, n=3, cutoff=0.6)
    if not close:  # case-insensitive match, e.g. "Site" for "site"
        close = [h for h in have if h.lower() == name.lower()]
    if not close and len(name) >= 4:  # a part of the name, e.g. "fwhm" for "source_fwhm"
        low = name.lower()
        close = [h for h in have if len(h) >= 4 and (low in h.lower() or h.lower() in low)][:3]
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def require_columns(df: pd.DataFrame, columns: Iterable[Any], source: str, what: str) -> None:
    """Raise :class:`DataError` naming each missing column and its closest matches.

    Parameters
    ----------
    df : pandas.DataFrame
    columns : iterable
        Columns that must be present.
    source : str
        The file, for the message.
    what : str
        The role of the columns (``"batch"``, ``"covariate"``, ...), for the message.
    """
    have = [str(c) for c in df.columns]
    missing = [str(c) for c in columns if c not in df.columns]
    if not missing:
        return
    hints = [f"{c!r}{did_you_mean(c, have)}" for c in missing]
    shown = have[:8]
    raise DataError(
        f"{source}: {what} column(s) {', '.join(hints)} not found; the table has {len(have)} "
        f"column(s): {shown}{' ...' if len(have) > 8 else ''}."
    )


def _damaged_numeric(col: pd.Series) -> tuple[int, Any] | None:
    """(row, value) of the first unparsable cell of a text column that is mostly numbers."""
    present = col.notna().to_numpy()
    if not present.any():
        return None
    bad = pd.to_numeric(col, errors="coerce").isna().to_numpy() & present
    if not bad.any() or 1.0 - bad.sum() / present.sum() < _MOSTLY_NUMERIC:
        return None
    row = int(np.flatnonzero(bad)[0])
    return row, col.iloc[row]


def split_feature_table(
    df: pd.DataFrame,
    roles: Iterable[Any],
    *,
    exclude: Sequence[str] = (),
    source: str = "table",
) -> FeatureColumns:
    """Decide which columns of a feature table are features.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per sample.
    roles : iterable
        Columns named for another role (batch, covariates, biology, ids).
    exclude : sequence of str
        Globs (``fnmatch``) of numeric columns to carry along unharmonized, besides
        :data:`PASSTHROUGH_PATTERNS`.
    source : str
        The file, for messages.

    Raises
    ------
    DataError
        If a text column is numeric but for some cells (named with their row, counted from 1
        as in a spreadsheet's data rows), or no feature column is left.
    """
    roles = {str(r) for r in roles}
    patterns = (*PASSTHROUGH_PATTERNS, *exclude)
    features, passthrough, excluded = [], [], []
    for c in df.columns:
        name = str(c)
        if name in roles:
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            excluded.append(name)
            continue
        col = df[c]
        if is_numeric_column(col.dtype):
            features.append(name)
            continue
        if not pd.api.types.is_bool_dtype(col.dtype):
            damaged = _damaged_numeric(col)
            if damaged is not None:
                row, value = damaged
                raise DataError(
                    f"{source}: column {name!r} is numeric except for the value {value!r} at "
                    f"data row {row + 1}; fix or empty that cell (an empty cell is read as "
                    f"missing), or pass --exclude {name!r} to carry the column along unharmonized."
                )
        passthrough.append(name)
    if not features:
        raise DataError(
            f"{source}: no numeric feature column besides the columns named for a role"
            + (f" and those excluded ({format_items(excluded)})" if excluded else "") + "."
        )
    return FeatureColumns(features=features, passthrough=passthrough, excluded=excluded)


def check_feature_columns(model: Any, data: Any, names: Sequence[str] | None) -> None:
    """Raise :class:`DataError` unless ``data`` has the features ``model`` was fitted on.

    Parameters
    ----------
    model : fitted estimator
        Its ``n_features_in_`` and, when it was fitted on named columns, ``feature_names_in_``.
    data : array-like, shape (n_samples, n_features)
        The validated feature matrix (anything with ``shape``).
    names : list of str or None
        Its column names (None for a plain array: only the count is checked).
    """
    n, expected = data.shape[1], model.n_features_in_
    if n != expected:
        raise DataError(
            f"X has {n} features but the model was fitted on {expected}; give the feature "
            "columns the model was fitted on."
        )
    if names is None or not hasattr(model, "feature_names_in_"):
        return
    fitted = [str(x) for x in model.feature_names_in_]
    if list(names) != fitted:
        missing = [c for c in fitted if c not in names]
        extra = [c for c in names if c not in fitted]
        detail = (
            f"missing {format_items(missing)}; unexpected {format_items(extra)}"
            if missing or extra
            else "same names in a different order"
        )
        raise DataError(f"feature columns differ from those at fit: {detail}.")


def feature_names_out(model: Any, input_features: Sequence[Any] | None = None) -> np.ndarray:
    """``get_feature_names_out`` of a fitted model that keeps every feature, in order.

    The names seen at fit (``feature_names_in_``), else ``input_features``, else ``x0, x1, ...``
    (scikit-learn's rule).
    """
    if hasattr(model, "feature_names_in_"):
        return np.asarray(model.feature_names_in_, dtype=object)
    if input_features is not None:
        return np.asarray(input_features, dtype=object)
    return np.array([f"x{i}" for i in range(model.n_features_in_)], dtype=object)
