"""ComBat as a scikit-learn transformer, with labels, covariate encoding and persistence.

The numerical work is done by :mod:`imharmony.features.combat`; this module validates input, turns
batch labels and covariate tables into arrays, keeps the names, and saves/loads the learned state
as versioned JSON plus an ``.npz`` of arrays (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone

from .._version import __version__
from ..errors import (
    DataError,
    DesignError,
    HarmonizationError,
    HarmonizationWarning,
    ModelFileError,
    NotFittedError,
    UnseenBatchError,
)
from ..io._atomic import atomic_path
from .combat import (
    CombatFit,
    _RankDeficient,
    apply_combat,
    check_design,
    fit_combat,
    missing_columns,
)

__all__ = ["ComBat"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.combat"
FORMAT_VERSION = 1

_ARRAYS = (
    "batch_sizes",
    "grand_mean",
    "var_pooled",
    "beta",
    "gamma_hat",
    "delta_hat",
    "gamma_star",
    "delta_star",
    "gamma_bar",
    "tau2",
    "a_prior",
    "b_prior",
    "adjusted",
    "n_iter",
    "converged",
)


# ------------------------------------------------------------------------------------------------
# input handling


def _as_feature_matrix(
    X: Any, what: str = "X"
) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """Validate a samples x features input in one pass.

    Returns float64 data (no copy when X already is), the column names if any, and the indices of
    the columns holding missing values.
    """
    if _is_dask(X):  # out of core: checked block by block (imharmony.scale.combat)
        if X.ndim != 2 or 0 in X.shape:
            raise DataError(f"{what} must be a non-empty 2-D Dask array; got shape {X.shape}.")
        return X, None, np.zeros(0, dtype=np.intp)
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        bad = [str(c) for c, dt in X.dtypes.items() if not _is_numeric_dtype(dt)]
        if bad:
            raise DataError(
                f"{what}: feature column(s) {_fmt(bad)} are not numeric; drop them or pass them "
                "as ids (the CLI passes non-numeric columns through unchanged)."
            )
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        names = None
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what} must be numeric (samples x features): {exc}") from exc
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D (samples x features); got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{what} is empty (shape {arr.shape}).")
    colsum = arr.sum(axis=0)
    suspect = np.flatnonzero(~np.isfinite(colsum))
    if suspect.size:
        inf_cols = suspect[np.isinf(arr[:, suspect]).any(axis=0)]
        if inf_cols.size:
            labels = [names[i] if names else f"#{i}" for i in inf_cols]
            raise DataError(
                f"{what}: feature column(s) {_fmt(labels)} contain infinite values; replace them "
                "(NaN is accepted as missing and is ignored in estimation)."
            )
    return arr, names, missing_columns(arr, colsum)


def _require_complete(nan_cols: np.ndarray, names: list[str] | None, method: str) -> None:
    """Refuse missing values for a method that cannot skip them, naming the columns."""
    if len(nan_cols):
        labels = [names[i] if names else f"#{i}" for i in nan_cols]
        raise DataError(
            f"feature column(s) {_fmt(labels)} hold missing values, which {method} cannot skip: "
            "impute them or drop those features or samples (ComBat itself ignores missing values)."
        )


def _check_shapes(
    path: Path, arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]
) -> None:
    """Raise ModelFileError when an array of a model file does not have its expected shape."""
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise ModelFileError(
                f"{path}: array {k!r} has shape {arrays[k].shape}, expected {shape}; the "
                "model file is inconsistent."
            )


def _is_dask(X: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def _is_numeric_dtype(dt: Any) -> bool:
    return bool(pd.api.types.is_numeric_dtype(dt)) and not pd.api.types.is_bool_dtype(dt)


def _fmt(items: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:limit])
    more = len(items) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _as_labels(batch: Any, n: int) -> np.ndarray:
    if batch is None:
        raise DataError("batch is required: give one site/batch label per sample.")
    arr = np.asarray(batch.to_numpy() if isinstance(batch, pd.Series) else batch)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"batch must have one label per sample ({n}); got shape {arr.shape}.")
    missing = pd.isna(arr)
    if missing.any():
        raise DataError(
            f"batch has {int(missing.sum())} missing label(s) (first at row "
            f"{int(np.flatnonzero(missing)[0])}); every sample needs a site/batch."
        )
    return arr


def _label_key(value: Any) -> Any:
    """A JSON-friendly, hashable version of a label (numpy scalars to Python)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _factorize(values: Any) -> tuple[np.ndarray, list[Any]]:
    """Hash-based factorization: (codes into uniques, uniques as JSON-friendly keys)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    return codes.astype(np.intp), [_label_key(u) for u in uniques]


def _sorted_levels(keys: list[Any]) -> list[Any]:
    return sorted(set(keys), key=lambda v: (str(type(v)), v))


def _encode(values: Any, levels: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes of ``values`` in ``levels`` (-1 where absent) and the absent keys."""
    codes, uniques = _factorize(values)
    lookup = {lvl: i for i, lvl in enumerate(levels)}
    mapped = np.array([lookup.get(u, -1) for u in uniques], dtype=np.intp)
    unseen = [u for u, m in zip(uniques, mapped, strict=True) if m < 0]
    return (mapped[codes] if codes.size else codes), unseen


def _check_acquisitions(acquisitions: Any, n: int, mapping: Any) -> None:
    """Refuse to harmonize acquisitions that measure different things (unless mapped)."""
    if acquisitions is None:
        return
    if not isinstance(acquisitions, pd.DataFrame) or len(acquisitions) != n:
        raise DataError(
            "acquisitions must be a DataFrame with one row per sample (DICOM keywords such as "
            f"RepetitionTime, EchoTime); got {type(acquisitions).__name__} of length "
            f"{len(acquisitions) if hasattr(acquisitions, '__len__') else '?'} for {n} samples."
        )
    from ..physics.mr import require_harmonizable

    distinct = acquisitions.astype(str).drop_duplicates().index
    require_harmonizable(acquisitions.loc[distinct].reset_index(drop=True), mapping=mapping)


class _CovariateEncoder:
    """Turns a covariate table into the design columns: continuous as is, categorical one-hot
    with the first level dropped (R's treatment contrasts; levels sorted, or the categorical
    dtype's own order), smooth terms as their penalized B-spline basis (knots learned at fit)."""

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.spec = spec

    @classmethod
    def learn(
        cls,
        covariates: Any,
        n: int,
        smooth: Sequence[str] = (),
        df: int = 10,
        degree: int = 3,
        bounds: Any = None,
    ) -> tuple[_CovariateEncoder, pd.DataFrame | None]:
        frame = _as_covariate_frame(covariates, n)
        if frame is None:
            if smooth:
                raise DataError(
                    f"smooth={list(smooth)!r} names covariate columns, but no covariates were "
                    "given; pass them with covariates=DataFrame."
                )
            return cls([]), None
        missing = [c for c in smooth if c not in frame.columns]
        if missing:
            raise DataError(
                f"smooth covariate(s) {_fmt(missing)} are not covariate columns (columns: "
                f"{_fmt(list(frame.columns))}); add them to the covariates."
            )
        spec: list[dict[str, Any]] = []
        for name in frame.columns:
            col = frame[name]
            if col.isna().any():
                raise DataError(
                    f"covariate column {name!r} has {int(col.isna().sum())} missing value(s); "
                    "impute them or drop those samples."
                )
            if name in smooth:
                spec.append(_learn_smooth(name, col, df, degree, bounds, len(smooth)))
            elif _is_numeric_dtype(col.dtype):
                spec.append({"name": str(name), "kind": "continuous"})
            else:
                if isinstance(col.dtype, pd.CategoricalDtype):
                    levels = [_label_key(v) for v in col.cat.categories if (col == v).any()]
                else:
                    levels = _sorted_levels(_factorize(col.to_numpy())[1])
                if len(levels) < 2:
                    raise DesignError(
                        f"covariate column {name!r} has a single level ({levels[0]!r}); it carries "
                        "no information to preserve: drop it."
                    )
                spec.append({"name": str(name), "kind": "categorical", "levels": levels})
        return cls(spec), frame

    @property
    def columns(self) -> list[str]:
        names: list[str] = []
        for s in self.spec:
            if s["kind"] == "continuous":
                names.append(s["name"])
            elif s["kind"] == "smooth":
                names.extend(f"{s['name']}[s{k}]" for k in range(1, _term(s).n_basis + 1))
            else:
                names.extend(f"{s['name']}[{lvl}]" for lvl in s["levels"][1:])
        return names

    def smooth_terms(self) -> list[tuple[str, Any, np.ndarray]]:
        """(name, SmoothTerm, positions of its basis among the encoded columns) per smooth term."""
        out, pos = [], 0
        for s in self.spec:
            width = (
                1
                if s["kind"] == "continuous"
                else _term(s).n_basis
                if s["kind"] == "smooth"
                else len(s["levels"]) - 1
            )
            if s["kind"] == "smooth":
                out.append((s["name"], _term(s), np.arange(pos, pos + width)))
            pos += width
        return out

    def encode(self, covariates: Any, n: int, *, raw_smooth: bool = False) -> np.ndarray:
        """The design's covariate columns (``raw_smooth``: smooth terms as one linear column,
        for the rank checks)."""
        if not self.spec:
            if covariates is not None and _as_covariate_frame(covariates, n) is not None:
                raise DataError(
                    "covariates were given but the model was fitted without covariates."
                )
            return np.zeros((n, 0))
        frame = _as_covariate_frame(covariates, n)
        if frame is None:
            raise DataError(
                "the model was fitted with covariates "
                f"{_fmt([s['name'] for s in self.spec])}; give them for these samples too."
            )
        blocks: list[np.ndarray] = []
        for s in self.spec:
            name = s["name"]
            if name not in frame.columns:
                raise DataError(f"covariate column {name!r} is missing; the model needs it.")
            col = frame[name]
            if col.isna().any():
                raise DataError(f"covariate column {name!r} has missing values.")
            if s["kind"] in ("continuous", "smooth"):
                if not _is_numeric_dtype(col.dtype):
                    raise DataError(
                        f"covariate column {name!r} was continuous at fit but is not numeric now."
                    )
                x = col.to_numpy(dtype=np.float64)
                if s["kind"] == "continuous" or raw_smooth:
                    blocks.append(x[:, None])
                    continue
                term = _term(s)
                lo, hi = term.bounds
                outside = (x < lo) | (x > hi)
                if outside.any():
                    warnings.warn(
                        f"smooth covariate {name!r}: {int(outside.sum())} value(s) outside the "
                        f"fitted range [{lo:g}, {hi:g}] (from {x.min():g} to {x.max():g}); its "
                        "effect is extrapolated linearly there. Fit with smooth_bounds covering "
                        "them to model them.",
                        HarmonizationWarning,
                        stacklevel=4,
                    )
                blocks.append(term.basis(x))
            else:
                levels = s["levels"]
                idx, unseen_keys = _encode(col.to_numpy(), levels)
                if unseen_keys:
                    unseen = sorted(str(k) for k in unseen_keys)
                    raise DataError(
                        f"covariate column {name!r} has level(s) {_fmt(unseen)} not seen at fit "
                        f"(known: {_fmt(levels)})."
                    )
                block = np.zeros((n, len(levels) - 1))
                rows = np.flatnonzero(idx > 0)
                block[rows, idx[rows] - 1] = 1.0
                blocks.append(block)
        return np.hstack(blocks)


#: Fitted attributes of a one-batch-variable model (a sequential model keeps them per stage).
_SINGLE_STATE = (
    "batches_",
    "covariate_spec_",
    "covariate_columns_",
    "reference_index_",
    "fit_",
    "unadjusted_features_",
    "smooth_penalty_",
)


def _one_batch_column(batch: Any) -> Any:
    """A one-column batch DataFrame as its Series; several columns stay a DataFrame."""
    if isinstance(batch, pd.DataFrame):
        if batch.shape[1] == 0:
            raise DataError("batch is a DataFrame without columns; give one label per sample.")
        if batch.shape[1] == 1:
            return batch.iloc[:, 0]
        return batch.reset_index(drop=True)
    return batch


def _like(X: Any, out: np.ndarray) -> Any:
    """``out`` as a DataFrame with X's index and columns when X is one."""
    if isinstance(X, pd.DataFrame):
        return pd.DataFrame(out, index=X.index, columns=X.columns, copy=False)
    return out


def _term(spec: dict[str, Any]) -> Any:
    from .gam import SmoothTerm

    return SmoothTerm(np.asarray(spec["knots"], dtype=np.float64), int(spec["degree"]))


def _learn_smooth(
    name: str, col: pd.Series, df: int, degree: int, bounds: Any, n_smooth: int
) -> dict[str, Any]:
    """The spec of a smooth term: its knots (quantiles of the training values, or the bounds)."""
    from .gam import bspline_knots

    if not _is_numeric_dtype(col.dtype):
        raise DataError(f"smooth covariate {name!r} must be numeric; got dtype {col.dtype}.")
    x = col.to_numpy(dtype=np.float64)
    distinct = np.unique(x).shape[0]
    if distinct < degree + 1:
        raise DesignError(
            f"smooth covariate {name!r} has {distinct} distinct value(s); a spline of degree "
            f"{degree} needs at least {degree + 1}: give it as a linear covariate instead."
        )
    if isinstance(bounds, dict):
        b = bounds.get(name)
    elif bounds is not None:
        if n_smooth > 1:
            raise DesignError(
                "smooth_bounds as one (low, high) pair is ambiguous with several smooth "
                "covariates; give a dict {column: (low, high)}."
            )
        b = bounds
    else:
        b = None
    if b is not None:
        b = (float(b[0]), float(b[1]))
        if b[0] > x.min() or b[1] < x.max():
            raise DesignError(
                f"smooth_bounds {b} for {name!r} must contain its training values "
                f"({x.min():g} to {x.max():g})."
            )
    knots = bspline_knots(x, df=int(df), degree=int(degree), bounds=b)
    return {"name": name, "kind": "smooth", "degree": int(degree), "knots": knots.tolist()}


def _as_covariate_frame(covariates: Any, n: int) -> pd.DataFrame | None:
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


def _fit_dask(X: Any, codes: np.ndarray, n_batches: int, C: np.ndarray, *,
              nan_columns: Any = None, **options: Any) -> CombatFit:
    """fit_combat's contract on a Dask array (imharmony.scale.combat), estimates in memory."""
    from ..scale.combat import fit_dask, fit_to_memory

    estimates, info = fit_dask(X, codes, n_batches, C, **options)
    return fit_to_memory(estimates, info, C.shape[1])


# ------------------------------------------------------------------------------------------------
# the estimator


class ComBat(TransformerMixin, BaseEstimator):
    """Remove site (batch) effects from features with ComBat, keeping chosen covariates.

    Parameters
    ----------
    nonparametric : bool, default=False
        Use non-parametric empirical Bayes priors (likelihood-weighted averages over features)
        instead of the normal / inverse-gamma priors.
    mean_only : bool, default=False
        Correct location only (no scale adjustment). Required when a site has a single sample.
    reference_batch : label, optional
        A site left unchanged; the others are mapped onto it.
    eb : bool, default=True
        Shrink the per-feature estimates with empirical Bayes. ``False`` corrects with the
        per-feature location/scale estimates themselves.
    tol : float, default=1e-4
        Relative change at which the parametric EB iteration stops (R's criterion).
    max_iter : int, default=1000
        Iteration cap of the parametric EB (R has none); reaching it warns.
    smooth : list of str, optional
        Covariate columns whose effect is a penalized cubic B-spline instead of a straight line
        (ComBat-GAM, Pomponio et al. 2020; neuroHarmonize's basis: ``smooth_df`` B-splines of
        ``smooth_degree``, first one dropped, inner knots at quantiles, curvature penalty). The
        other covariates stay linear (categorical ones allowed). Several terms allowed.
    smooth_penalty : {"cv", "gcv"}, float or array-like, default="cv"
        The alpha of each smooth term in ``||x_g - D b||^2 + sum_t 2 alpha_t b_t' S_t b_t``
        (statsmodels' GLMGam scaling, so neuroHarmonize's choices can be given as they are).
        ``"cv"``: chosen per feature by 5-fold cross-validation, folds stratified by site and
        drawn from ``random_state`` (the same folds for every candidate and feature); ``"gcv"``:
        per feature by generalized cross-validation (no randomness); a number: the same for
        every feature and term; an array of shape (n_features,) or (n_features, n_terms): given.
        See :func:`imharmony.features.gam.select_penalties` for the candidates.
    smooth_df : int, default=10
        B-splines per smooth term before the first is dropped.
    smooth_degree : int, default=3
    smooth_bounds : (float, float) or dict, optional
        Boundary knots of the smooth term (a dict ``{column: (low, high)}`` with several terms);
        the training range when not given. New samples beyond them are extrapolated linearly,
        with a warning.
    random_state : int or numpy Generator, optional
        Seed of the cross-validation folds of ``smooth_penalty="cv"``; None means seed 0, so
        fits are reproducible by default.

    Attributes
    ----------
    batches_ : ndarray, shape (n_batches,)
        Site labels seen at fit, sorted.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when X was a DataFrame.
    covariate_columns_ : list of str
        Encoded covariate columns (continuous names; ``name[level]`` for categorical levels).
    fit_ : CombatFit
        The learned estimates (grand mean, pooled variance, covariate effects, gamma*, delta*...).
    unadjusted_features_ : dict
        Feature name (or index) -> why it was left unchanged.
    smooth_penalty_ : ndarray, shape (n_features_in_, n_smooth_terms)
        The alpha used for every feature and smooth term (only with ``smooth``).
    stages_ : list of ComBat
        Only when fitted on several batch variables: one fitted model per variable, applied in
        the order of ``batch_columns_`` (the single-variable attributes above are theirs).
    batch_columns_ : list of str
        The batch variables, in the order they are corrected.

    See Also
    --------
    imharmony.features.combat.fit_combat : the numerical core.

    Notes
    -----
    Model (Johnson et al. 2007): x_ig = alpha_g + C_i beta_g + gamma_jg + sqrt(delta_jg) eps_ig.
    Results agree with R ``sva::ComBat`` to a relative error below 1e-8 (tests/reference).
    ``batch`` and ``covariates`` are metadata: inside a :class:`~sklearn.pipeline.Pipeline` enable
    metadata routing and request them with ``set_fit_request(batch=True, covariates=True)`` and
    ``set_transform_request(batch=True, covariates=True)``, so that cross-validation fits the
    harmonization on the training folds only.

    Examples
    --------
    >>> import numpy as np, imharmony as ih
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 5)); site = np.repeat(["a", "b"], 20); X[site == "b"] += 3
    >>> Xh = ih.ComBat().fit_transform(X, batch=site)
    >>> bool(abs(Xh[site == "a"].mean() - Xh[site == "b"].mean()) < 0.5)
    True
    """

    #: ``format`` of the model file; subclasses that save more state set their own.
    _model_format: ClassVar[str] = FORMAT

    def __init__(
        self,
        nonparametric: bool = False,
        mean_only: bool = False,
        reference_batch: Any = None,
        eb: bool = True,
        tol: float = 1e-4,
        max_iter: int = 1000,
        smooth: Sequence[str] | None = None,
        smooth_penalty: Any = "cv",
        smooth_df: int = 10,
        smooth_degree: int = 3,
        smooth_bounds: Any = None,
        random_state: Any = None,
    ) -> None:
        self.nonparametric = nonparametric
        self.mean_only = mean_only
        self.reference_batch = reference_batch
        self.eb = eb
        self.tol = tol
        self.max_iter = max_iter
        self.smooth = smooth
        self.smooth_penalty = smooth_penalty
        self.smooth_df = smooth_df
        self.smooth_degree = smooth_degree
        self.smooth_bounds = smooth_bounds
        self.random_state = random_state

    # -- parameters --------------------------------------------------------------------------
    _parameter_constraints: ClassVar[dict[str, tuple[type, ...]]] = {
        "nonparametric": (bool, np.bool_),
        "mean_only": (bool, np.bool_),
        "eb": (bool, np.bool_),
        "tol": (float, int),
        "max_iter": (int, np.integer),
    }

    def _validate_params(self) -> None:
        for name, types in self._parameter_constraints.items():
            value = getattr(self, name)
            if not isinstance(value, types) or (
                isinstance(value, bool) and bool not in types and np.bool_ not in types
            ):
                raise HarmonizationError(
                    f"The {name!r} parameter of ComBat must be of type "
                    f"{' or '.join(t.__name__ for t in types)}; got {value!r}."
                )
        if not self.tol > 0:
            raise HarmonizationError(f"The 'tol' parameter of ComBat must be > 0; got {self.tol}.")
        if self.max_iter < 1:
            raise HarmonizationError(
                f"The 'max_iter' parameter of ComBat must be >= 1; got {self.max_iter}."
            )
        if hasattr(self, "smooth_penalty"):  # subclasses without smooth terms skip these
            self._validate_smooth_params()

    def _validate_smooth_params(self) -> None:
        for name in ("smooth_df", "smooth_degree"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise HarmonizationError(
                    f"The {name!r} parameter of ComBat must be of type int; got {value!r}."
                )
        if self.smooth is not None and (
            isinstance(self.smooth, str) or not all(isinstance(c, str) for c in self.smooth)
        ):
            raise HarmonizationError(
                f"The 'smooth' parameter of ComBat must be a list of covariate column names; "
                f"got {self.smooth!r} (write smooth=['age'] for one column)."
            )
        pen = self.smooth_penalty
        if isinstance(pen, str):
            if pen not in ("cv", "gcv"):
                raise HarmonizationError(
                    f"The 'smooth_penalty' parameter of ComBat must be 'cv', 'gcv', a number or "
                    f"an array of one value per feature; got {pen!r}."
                )
        elif not np.all(np.isfinite(np.asarray(pen, dtype=float))) or np.any(
            np.asarray(pen, dtype=float) < 0
        ):
            raise HarmonizationError(
                "The 'smooth_penalty' parameter of ComBat must be >= 0 and finite everywhere."
            )
        if self.smooth_degree < 2 or self.smooth_df < self.smooth_degree + 1:
            raise HarmonizationError(
                f"smooth_degree must be >= 2 (the penalty is the curvature) and smooth_df >= "
                f"smooth_degree + 1; got "
                f"smooth_df={self.smooth_df}, smooth_degree={self.smooth_degree}."
            )

    @property
    def _method(self) -> str:
        if not self.eb:
            return "none"
        return "nonparametric" if self.nonparametric else "parametric"

    # -- fit / transform -----------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        batch: Any,
        covariates: Any = None,
        biology: Any = None,
        acquisitions: Any = None,
        mapping: Any = None,
    ) -> ComBat:
        """Learn site effects from training samples.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_samples, n_features)
            Numeric features; NaN marks missing values (ignored, and kept NaN on output).
        y : ignored
        batch : array-like, shape (n_samples,), or DataFrame
            Site/batch label of every sample. A DataFrame of several batch variables (scanner,
            kernel, contrast...) is corrected sequentially, one ComBat per column in the order
            of the columns, each fitted on the output of the previous one (as nested ComBat,
            Horng et al. 2022, does for a given order); the fitted stages are ``stages_``.
        covariates : DataFrame or array-like, shape (n_samples, n_covariates), optional
            Biological covariates whose effects are preserved. Numeric columns are continuous;
            other columns (strings, categories, booleans) are categorical.
        biology : str or array-like, shape (n_samples,), optional
            The biology that must survive (e.g. the diagnosis): a column name of ``covariates``
            or one value per sample. It is only checked, never used in the estimation: site x
            biology confounding is measured before fitting
            (:func:`imharmony.diagnostics.check_confounding`); complete confounding is refused
            (:class:`~imharmony.errors.ConfoundingError`), strong confounding of the biology
            warns, and so does a biology that is not among the covariates (ComBat would remove
            it with the site). Covariates are checked too (complete confounding refused, the rest
            logged).
        acquisitions : DataFrame, optional
            One row per sample describing its MR acquisition (DICOM keywords such as
            ``RepetitionTime``, ``EchoTime``, ``ScanningSequence``, or protocol-table columns).
            The distinct acquisitions are checked with
            :func:`imharmony.physics.mr.require_harmonizable` before fitting: different
            weightings, pre vs post contrast, magnitude vs phase or quantitative maps are refused
            (:class:`~imharmony.physics.mr.NotHarmonizableError`) — ComBat cannot turn a T1w
            feature into a T2w one.
        mapping : object, optional
            A mapping between those acquisitions learned from travelling subjects; with it the
            hard stops are reported but not refused.

        Returns
        -------
        self

        Raises
        ------
        ConfoundingError
            When site and the biology (or a covariate) are completely confounded.
        """
        self._validate_params()
        data, names, nan_cols = _as_feature_matrix(X)
        _check_acquisitions(acquisitions, data.shape[0], mapping)
        batch = _one_batch_column(batch)
        if isinstance(batch, pd.DataFrame):
            self._fit_sequential(data, names, nan_cols, batch, covariates, biology)
        else:
            self._fit(data, names, nan_cols, batch, covariates, biology)
        return self

    def _fit_sequential(
        self,
        data: np.ndarray,
        names: list[str] | None,
        nan_cols: np.ndarray,
        batch: pd.DataFrame,
        covariates: Any,
        biology: Any,
    ) -> np.ndarray:
        """One ComBat per batch variable, in the order of the columns, each on the output of the
        previous one (nested ComBat, Horng et al. 2022); returns the harmonized training data."""
        if self.reference_batch is not None:
            raise DesignError(
                "reference_batch names a site of one batch variable, but batch has several "
                f"columns ({_fmt([str(c) for c in batch.columns])}); harmonize with one batch "
                "variable at a time to use a reference site."
            )
        if len(batch) != data.shape[0]:
            raise DataError(
                f"batch has {len(batch)} rows but X has {data.shape[0]} samples; give one row "
                "per sample."
            )
        stages, current = [], data
        for col in batch.columns:
            stage = clone(self)
            codes, C = stage._fit(current, names, nan_cols, batch[col], covariates, biology)
            current = stage._apply(current, current, codes, C)
            stages.append(stage)
        for attr in _SINGLE_STATE:
            if hasattr(self, attr):
                delattr(self, attr)
        self.stages_ = stages
        self.batch_columns_ = [str(c) for c in batch.columns]
        self.n_features_in_ = data.shape[1]
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        logger.info(
            "ComBat fitted sequentially over %d batch variables: %s",
            len(stages),
            ", ".join(self.batch_columns_),
        )
        return current

    def _fit(
        self,
        data: np.ndarray,
        names: list[str] | None,
        nan_cols: np.ndarray,
        batch: Any,
        covariates: Any,
        biology: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit on validated data; returns the batch codes and encoded covariates used."""
        for attr in ("stages_", "batch_columns_"):
            if hasattr(self, attr):
                delattr(self, attr)
        levels, codes, C, ref, encoder = self.learn_design(data.shape[0], batch, covariates,
                                                           biology)
        terms = encoder.smooth_terms()
        extra: dict[str, Any] = {}
        if terms:
            if _is_dask(data):
                raise DataError(
                    "smooth covariates are fitted in memory only: give X as a numpy array or "
                    "DataFrame (or fit without smooth=)."
                )
            from .gam import penalty_matrices, place_penalties

            alphas = self._smooth_alphas(data, codes, len(levels), C, terms, nan_cols)
            placed = place_penalties([(t, cols) for _, t, cols in terms], C.shape[1])
            extra["penalty"] = penalty_matrices(alphas, placed)
        fit_core = _fit_dask if _is_dask(data) else fit_combat
        fit = fit_core(
            data,
            codes,
            len(levels),
            C,
            method=self._method,  # type: ignore[arg-type]
            mean_only=self.mean_only,
            ref=ref,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            nan_columns=nan_cols,
            **extra,
        )
        if terms:
            self.smooth_penalty_ = alphas
        elif hasattr(self, "smooth_penalty_"):
            del self.smooth_penalty_
        self._set_design(levels, encoder, ref)
        self.n_features_in_ = data.shape[1]
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.fit_ = fit
        self.unadjusted_features_ = {
            (names[g] if names else g): why for g, why in sorted(fit.reasons.items())
        }
        if self.unadjusted_features_:
            warnings.warn(
                f"{len(self.unadjusted_features_)} feature(s) left unadjusted: "
                + "; ".join(f"{k!r}: {v}" for k, v in list(self.unadjusted_features_.items())[:5])
                + (" ..." if len(self.unadjusted_features_) > 5 else ""),
                HarmonizationWarning,
                stacklevel=2,
            )
        logger.info(
            "ComBat (%s%s) fitted on %d samples x %d features, %d sites, %d covariate column(s)",
            self._method,
            ", mean only" if self.mean_only else "",
            data.shape[0],
            data.shape[1],
            len(levels),
            C.shape[1],
        )
        return codes, C

    def _set_design(self, levels: list[Any], encoder: _CovariateEncoder, ref: int | None) -> None:
        self.batches_ = np.array(levels, dtype=object)
        self.covariate_spec_ = encoder.spec
        self.covariate_columns_ = encoder.columns
        self.reference_index_ = ref

    def learn_design(
        self, n: int, batch: Any, covariates: Any = None, biology: Any = None
    ) -> tuple[list[Any], np.ndarray, np.ndarray, int | None, _CovariateEncoder]:
        """Validate and encode the sites and covariates of ``n`` training samples.

        The checks :meth:`fit` makes before touching the data (at least two sites, single-sample
        sites, reference batch, rank of the design, confounding). Out-of-core adapters
        (:mod:`imharmony.scale`) call it, then the numerical core, then :meth:`set_design`.

        Returns
        -------
        levels : list
            The sites, sorted.
        codes : ndarray of int, shape (n,)
        C : ndarray of float64, shape (n, n_covariate_columns)
        ref : int or None
            Index of the reference batch.
        encoder : object
            The covariate encoding (its ``spec`` is what :meth:`save` stores).
        """
        labels = _as_labels(batch, n)
        levels = _sorted_levels(_factorize(labels)[1])
        if len(levels) < 2:
            raise DesignError(
                f"batch has a single site ({levels[0]!r}); ComBat needs at least two sites."
            )
        lookup = {lvl: i for i, lvl in enumerate(levels)}
        codes = _encode(labels, levels)[0]
        counts = np.bincount(codes, minlength=len(levels))
        singles = [levels[i] for i in np.flatnonzero(counts < 2)]
        if singles and not self.mean_only:
            raise DesignError(
                f"site(s) {_fmt(singles)} have a single sample, whose scale effect cannot be "
                "estimated: pass mean_only=True (--mean-only) to correct location only, or merge "
                "or drop those sites."
            )
        ref = None
        if self.reference_batch is not None:
            rkey = _label_key(self.reference_batch)
            if rkey not in lookup:
                # allow "1" to name the label 1 (CLI strings)
                alt = {str(k): k for k in levels}
                if str(rkey) in alt:
                    rkey = alt[str(rkey)]
                else:
                    raise DesignError(
                        f"reference_batch={self.reference_batch!r} is not one of the sites "
                        f"{_fmt(levels)}."
                    )
            ref = lookup[rkey]
        smooth = list(getattr(self, "smooth", None) or [])
        encoder, _ = _CovariateEncoder.learn(
            covariates,
            n,
            smooth,
            getattr(self, "smooth_df", 10),
            getattr(self, "smooth_degree", 3),
            getattr(self, "smooth_bounds", None),
        )
        C = encoder.encode(covariates, n)
        try:
            check_design(codes, len(levels), encoder.encode(covariates, n, raw_smooth=True))
        except _RankDeficient as exc:
            raw = _CovariateEncoder([{**s, "kind": "continuous"} if s["kind"] == "smooth" else s
                                     for s in encoder.spec])
            cols = [raw.columns[k] for k in exc.columns]
            raise DesignError(
                f"covariate column(s) {_fmt(cols)} are confounded with site: the design (site "
                "indicators + covariates) is rank deficient, so their effect cannot be told apart "
                "from the site effect. Drop or merge those covariates, or collect data where they "
                "vary within sites."
            ) from None
        if biology is not None or C.shape[1]:
            self._check_confounding(labels, covariates, biology)
        return levels, codes, C, ref, encoder

    def set_design(self, levels: list[Any], covariate_spec: list[dict[str, Any]],
                   reference_index: int | None) -> None:
        """Set the learned sites and covariate encoding (an out-of-core fit keeps its per-feature
        estimates on disk, so :meth:`encode_samples` is then all this object is used for)."""
        self._set_design(levels, _CovariateEncoder(covariate_spec), reference_index)

    def encode_samples(self, n: int, batch: Any, covariates: Any = None) -> tuple[np.ndarray, Any]:
        """Batch codes and covariate columns of ``n`` new samples, as :meth:`transform` encodes
        them (an unseen site raises :class:`~imharmony.errors.UnseenBatchError`)."""
        return self._codes(batch, n), _CovariateEncoder(self.covariate_spec_).encode(covariates, n)

    def _smooth_alphas(
        self,
        data: np.ndarray,
        codes: np.ndarray,
        n_batches: int,
        C: np.ndarray,
        terms: list[tuple[str, Any, np.ndarray]],
        nan_cols: np.ndarray,
    ) -> np.ndarray:
        """The alpha of every feature and smooth term: given, or selected (cv / gcv)."""
        G, k = data.shape[1], len(terms)
        pen = self.smooth_penalty
        if isinstance(pen, str):
            if nan_cols.size:
                raise DataError(
                    f"smooth_penalty={pen!r} selects penalties on complete features, but "
                    f"{nan_cols.size} feature(s) have missing values; give smooth_penalty as a "
                    "number (or one per feature), or impute them."
                )
            from .gam import place_penalties, select_penalties

            placed = place_penalties([(t, cols) for _, t, cols in terms], C.shape[1])
            return select_penalties(
                data,
                codes,
                n_batches,
                C,
                placed,
                [cols for _, _, cols in terms],
                criterion=pen,
                random_state=self.random_state,
            )
        arr = np.asarray(pen, dtype=np.float64)
        if arr.ndim == 0:
            return np.full((G, k), float(arr))
        if arr.ndim == 1 and arr.shape[0] == G:
            arr = arr[:, None]
        if arr.shape == (G, 1) and k > 1:
            arr = np.repeat(arr, k, axis=1)
        if arr.shape != (G, k):
            raise DataError(
                f"smooth_penalty has shape {np.shape(pen)}; give one value per feature ({G},) "
                f"or one per feature and smooth term ({G}, {k})."
            )
        return arr.copy()

    @staticmethod
    def _check_confounding(labels: np.ndarray, covariates: Any, biology: Any) -> None:
        from ..diagnostics.confounding import check_confounding

        frame = _as_covariate_frame(covariates, labels.shape[0])
        report = check_confounding(labels, frame, biology=biology)
        report.raise_if_complete()
        for message in report.messages:
            # the biology is what must survive: its strong confounding with site, or its absence
            # from the covariates, is worth a warning; covariates are preserved by design.
            if message.startswith(("strong confounding of site with the biology", "the biology")):
                warnings.warn(message, HarmonizationWarning, stacklevel=3)
            else:
                logger.info("%s", message)

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_") and not hasattr(self, "stages_"):
            raise NotFittedError(
                "This ComBat instance is not fitted yet; call fit(X, batch=...) first or load a "
                "saved model with ComBat.load(path)."
            )

    def _codes(self, batch: Any, n: int) -> np.ndarray:
        labels = _as_labels(batch, n)
        codes, unseen_keys = _encode(labels, self.batches_.tolist())
        if unseen_keys:
            unseen = sorted(str(k) for k in unseen_keys)
            raise UnseenBatchError(
                f"site(s) {_fmt(unseen)} were not seen when the model was fitted (known: "
                f"{_fmt(self.batches_.tolist())}); ComBat can only correct the sites it learned. "
                "Refit including samples of those sites."
            )
        return codes

    def transform(self, X: Any, *, batch: Any, covariates: Any = None) -> Any:
        """Correct samples of the fitted sites.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_samples, n_features)
        batch : array-like, shape (n_samples,), or DataFrame
            Site of every sample; each must be one of ``batches_``. For a model fitted on
            several batch variables, a DataFrame with those columns.
        covariates : DataFrame or array-like, optional
            Required when the model was fitted with covariates (same columns).

        Returns
        -------
        ndarray or DataFrame, shape (n_samples, n_features)
            A DataFrame (same index and columns) when X is one, else an array.
        """
        self._check_fitted()
        data, names, _ = _as_feature_matrix(X)
        self._check_columns(data, names)
        n = data.shape[0]
        if hasattr(self, "stages_"):
            frame = batch if isinstance(batch, pd.DataFrame) else None
            missing = [c for c in self.batch_columns_ if frame is None or c not in frame.columns]
            if missing:
                raise DataError(
                    f"the model corrects the batch variables {_fmt(self.batch_columns_)} in turn; "
                    f"give batch as a DataFrame with those columns (missing: {_fmt(missing)})."
                )
            current = data
            for col, stage in zip(self.batch_columns_, self.stages_, strict=True):
                codes = stage._codes(frame[col], n)
                C = _CovariateEncoder(stage.covariate_spec_).encode(covariates, n)
                current = stage._apply(current, current, codes, C)
            return _like(X, current)
        codes = self._codes(_one_batch_column(batch), n)
        C = _CovariateEncoder(self.covariate_spec_).encode(covariates, n)
        return self._apply(X, data, codes, C)

    def _apply(self, X: Any, data: np.ndarray, codes: np.ndarray, C: np.ndarray) -> Any:
        if _is_dask(data):  # a lazy Dask array, corrected block by block
            from ..scale.combat import apply_dask, pack_fit

            return apply_dask(data, codes, pack_fit(self.fit_), self.fit_.batch_sizes, C,
                              ref=self.reference_index_)
        return _like(X, apply_combat(data, codes, self.fit_, C, ref=self.reference_index_))

    def _check_columns(self, data: np.ndarray, names: list[str] | None) -> None:
        G = data.shape[1]
        if G != self.n_features_in_:
            raise DataError(
                f"X has {G} features but the model was fitted on {self.n_features_in_}."
            )
        if hasattr(self, "feature_names_in_") and names is not None:
            fitted = [str(x) for x in self.feature_names_in_]
            if names != fitted:
                missing = [c for c in fitted if c not in names]
                extra = [c for c in names if c not in fitted]
                detail = (
                    f"missing {_fmt(missing)}; unexpected {_fmt(extra)}"
                    if missing or extra
                    else "same names in a different order"
                )
                raise DataError(f"feature columns differ from those at fit: {detail}.")

    def fit_transform(  # type: ignore[override]
        self,
        X: Any,
        y: Any = None,
        *,
        batch: Any,
        covariates: Any = None,
        biology: Any = None,
        acquisitions: Any = None,
        mapping: Any = None,
    ) -> Any:
        """Fit, then correct the same samples (identical to ``fit(...).transform(...)``).

        The input is validated and its labels encoded once for both steps.
        """
        self._validate_params()
        data, names, nan_cols = _as_feature_matrix(X)
        _check_acquisitions(acquisitions, data.shape[0], mapping)
        batch = _one_batch_column(batch)
        if isinstance(batch, pd.DataFrame):
            return _like(
                X, self._fit_sequential(data, names, nan_cols, batch, covariates, biology)
            )
        codes, C = self._fit(data, names, nan_cols, batch, covariates, biology)
        return self._apply(X, data, codes, C)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output feature names (the input names: ComBat keeps every feature)."""
        self._check_fitted()
        if hasattr(self, "feature_names_in_"):
            return np.asarray(self.feature_names_in_, dtype=object)
        if input_features is not None:
            return np.asarray(input_features, dtype=object)
        return np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None) -> Path:
        """Save the fitted model: ``path`` (JSON) and its arrays beside it (same stem, ``.npz``).

        ``metadata`` is any JSON-serializable mapping stored with the model (the command line keeps
        the table's column roles there); it comes back as ``metadata_`` after :meth:`load`.
        Both files are written atomically. The JSON records the format version, the
        hyper-parameters, the sites, covariate encoding, feature names and a SHA-256 of the
        ``.npz`` so a mismatched or corrupted pair is detected at load.
        """
        self._check_fitted()
        path = Path(path)
        if path.suffix.lower() != ".json":
            raise HarmonizationError(f"{path}: a ComBat model is saved as .json (plus .npz).")
        npz_path = path.with_suffix(".npz")
        if hasattr(self, "stages_"):
            arrays: dict[str, np.ndarray] = {}
            stage_docs = []
            for i, stage in enumerate(self.stages_):
                stage_doc, stage_arrays = stage._state()
                stage_docs.append(stage_doc)
                arrays.update({f"stage{i}__{k}": v for k, v in stage_arrays.items()})
            body = {
                "params": self._json_params(),
                "n_features": int(self.n_features_in_),
                "feature_names": self._feature_names_or_none(),
                "batch_columns": list(self.batch_columns_),
                "stages": stage_docs,
            }
        else:
            body, arrays = self._state()
        with atomic_path(npz_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
        doc = {
            "format": self._model_format,
            "format_version": FORMAT_VERSION,
            "imharmony_version": __version__,
            **body,
            "arrays": {"file": npz_path.name, "sha256": digest},
            "metadata": dict(metadata or getattr(self, "metadata_", {}) or {}),
        }
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
        return path

    def _feature_names_or_none(self) -> list[str] | None:
        if hasattr(self, "feature_names_in_"):
            return [str(x) for x in self.feature_names_in_]
        return None

    def _json_params(self) -> dict[str, Any]:
        params = self.get_params()  # a subclass may not have all of ComBat's
        if "reference_batch" in params:
            params["reference_batch"] = _label_key(params["reference_batch"])
        if not isinstance(params.get("smooth_penalty", "cv"), str | int | float):
            params["smooth_penalty"] = np.asarray(params["smooth_penalty"], float).tolist()
        if params.get("smooth") is not None:
            params["smooth"] = list(params["smooth"])
        if not isinstance(params.get("random_state"), int | None):
            params["random_state"] = None  # a Generator: the penalties are saved anyway
        return params

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The JSON part and the arrays of a one-batch-variable model."""
        extra_arrays, extra_doc = self._extra_state()
        arrays = {k: np.asarray(getattr(self.fit_, k)) for k in _ARRAYS}
        arrays.update(extra_arrays)
        if hasattr(self, "smooth_penalty_"):
            arrays["smooth_penalty"] = np.asarray(self.smooth_penalty_)
        doc = {
            "params": self._json_params(),
            "batches": [_label_key(b) for b in self.batches_.tolist()],
            "reference_index": self.reference_index_,
            "n_features": int(self.n_features_in_),
            "feature_names": self._feature_names_or_none(),
            "covariates": self.covariate_spec_,
            "unadjusted": {str(k): v for k, v in self.unadjusted_features_.items()},
            "reasons": {str(k): v for k, v in self.fit_.reasons.items()},
            **extra_doc,
        }
        return doc, arrays

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ComBat:
        """Load a model written by :meth:`save` (safe: JSON and a pickle-free ``.npz``)."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file.")
        try:
            doc = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path}: not a ComBat model (invalid JSON: {exc}).") from exc
        if not isinstance(doc, dict) or doc.get("format") != cls._model_format:
            raise ModelFileError(f"{path}: not an imharmony ComBat model file.")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: model format version {version!r} is not supported by imharmony "
                f"{__version__} (it reads version {FORMAT_VERSION}); refit the model or use the "
                "imharmony version that wrote it."
            )
        try:
            npz_path = path.with_name(doc["arrays"]["file"])
            if Path(doc["arrays"]["file"]).name != doc["arrays"]["file"]:
                raise ModelFileError(f"{path}: invalid array file name in the model.")
            if not npz_path.is_file():
                raise ModelFileError(
                    f"{path}: its arrays file {npz_path.name} is missing; keep the .json and .npz "
                    "together."
                )
            blob = npz_path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != doc["arrays"]["sha256"]:
                raise ModelFileError(
                    f"{npz_path}: checksum does not match {path.name}; the files are corrupted or "
                    "from different models."
                )
            with np.load(npz_path, allow_pickle=False) as z:
                stored = {k: z[k] for k in z.files}
            if "stages" in doc:
                model = cls(**doc["params"])
                model._validate_params()
                stages = []
                for i, stage_doc in enumerate(doc["stages"]):
                    prefix = f"stage{i}__"
                    own = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
                    stages.append(cls._from_state(stage_doc, own, path))
                model.stages_ = stages
                model.batch_columns_ = [str(c) for c in doc["batch_columns"]]
                if len(stages) != len(model.batch_columns_) or len(stages) < 2:
                    raise ModelFileError(f"{path}: inconsistent batch variables and stages.")
                model.n_features_in_ = int(doc["n_features"])
                if doc["feature_names"] is not None:
                    model.feature_names_in_ = np.array(doc["feature_names"], dtype=object)
            else:
                model = cls._from_state(doc, stored, path)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ModelFileError(
                f"{path}: corrupted ComBat model ({type(exc).__name__}: {exc})."
            ) from exc
        model.metadata_ = dict(doc.get("metadata") or {})
        return model

    @classmethod
    def _from_state(cls, doc: dict[str, Any], stored: dict[str, np.ndarray], path: Path) -> ComBat:
        """A one-batch-variable model from its JSON part and arrays (checked for consistency)."""
        arrays = {k: stored[k] for k in _ARRAYS}
        smooth_penalty = stored.get("smooth_penalty")
        extra = {k: v for k, v in stored.items() if k not in _ARRAYS and k != "smooth_penalty"}
        model = cls(**doc["params"])
        model._validate_params()
        batches = doc["batches"]
        J, G = len(batches), int(doc["n_features"])
        fit = CombatFit(**arrays, reasons={int(k): v for k, v in doc["reasons"].items()})
        q = len(_CovariateEncoder(doc["covariates"]).columns)
        expected = {
            "batch_sizes": (J,),
            "grand_mean": (G,),
            "var_pooled": (G,),
            "beta": (q, G),
            "gamma_hat": (J, G),
            "delta_hat": (J, G),
            "gamma_star": (J, G),
            "delta_star": (J, G),
            "gamma_bar": (J,),
            "tau2": (J,),
            "a_prior": (J,),
            "b_prior": (J,),
            "adjusted": (G,),
            "n_iter": (J,),
            "converged": (J,),
        }
        _check_shapes(path, arrays, expected)
        names = doc["feature_names"]
        if names is not None and len(names) != G:
            raise ModelFileError(f"{path}: {len(names)} feature names for {G} features.")
        model.batches_ = np.array(batches, dtype=object)
        model.n_features_in_ = G
        if names is not None:
            model.feature_names_in_ = np.array(names, dtype=object)
        model.covariate_spec_ = doc["covariates"]
        model.covariate_columns_ = _CovariateEncoder(doc["covariates"]).columns
        if smooth_penalty is not None:
            model.smooth_penalty_ = smooth_penalty
        model.reference_index_ = doc["reference_index"]
        model.fit_ = fit
        model.unadjusted_features_ = dict(doc["unadjusted"])
        model._restore_extra_state(extra, doc, path)
        return model

    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON entries a subclass saves beside ComBat's (none here)."""
        return {}, {}

    def _restore_extra_state(
        self, arrays: dict[str, np.ndarray], doc: dict[str, Any], path: Path
    ) -> None:
        """Restore what :meth:`_extra_state` saved (raise ModelFileError when inconsistent)."""
