"""ComBat as a scikit-learn transformer, with labels, covariate encoding and persistence.

The numerical work is done by :mod:`imharmony.features.combat`; this module validates input, turns
batch labels and covariate tables into arrays, keeps the names, and saves/loads the learned state
as versioned JSON plus an ``.npz`` of arrays (never pickle).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone

from .._persist import ArraySpec, check, is_int, is_label, is_str_list
from .._validation import (
    CovariateEncoder,
    as_covariate_frame,
    check_feature_columns,
    encode_labels,
    factorize_labels,
    feature_names_out,
    format_items,
    is_numeric_column,
    label_key,
    label_text,
    labels_of,
    sorted_levels,
)
from .._vocabulary import SMOOTH_CRITERIA
from ..base import HarmonizerMixin, Rule
from ..errors import (
    DataError,
    DesignError,
    HarmonizationError,
    HarmonizationWarning,
    UnseenBatchError,
)
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
FORMAT_VERSION = 2  # 2: the common model envelope (imharmony._persist)

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


def fit_array_specs(n_batches: int, n_features: int, n_covariates: int) -> dict[str, ArraySpec]:
    """Shape and dtype kinds of every array of a :class:`CombatFit` (:data:`_ARRAYS`), as a model
    file must hold them: J batches, G features, q encoded covariate columns."""
    J, G, q = n_batches, n_features, n_covariates
    shapes = {
        "batch_sizes": ((J,), "iu"), "grand_mean": ((G,), "f"), "var_pooled": ((G,), "f"),
        "beta": ((q, G), "f"), "gamma_hat": ((J, G), "f"), "delta_hat": ((J, G), "f"),
        "gamma_star": ((J, G), "f"), "delta_star": ((J, G), "f"), "gamma_bar": ((J,), "f"),
        "tau2": ((J,), "f"), "a_prior": ((J,), "f"), "b_prior": ((J,), "f"),
        "adjusted": ((G,), "b"), "n_iter": ((J,), "iu"), "converged": ((J,), "b"),
    }
    return {k: ArraySpec(*shapes[k]) for k in _ARRAYS}


# ------------------------------------------------------------------------------------------------
# input handling


def as_feature_matrix(
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
        bad = [str(c) for c, dt in X.dtypes.items() if not is_numeric_column(dt)]
        if bad:
            raise DataError(
                f"{what}: feature column(s) {format_items(bad)} are not numeric; drop them or pass "
                "them as ids (the CLI passes non-numeric columns through unchanged)."
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
                f"{what}: feature column(s) {format_items(labels)} contain infinite values; "
                "replace them (NaN is accepted as missing and is ignored in estimation)."
            )
    return arr, names, missing_columns(arr, colsum)


def _require_complete(nan_cols: np.ndarray, names: list[str] | None, method: str) -> None:
    """Refuse missing values for a method that cannot skip them, naming the columns."""
    if len(nan_cols):
        labels = [names[i] if names else f"#{i}" for i in nan_cols]
        raise DataError(
            f"feature column(s) {format_items(labels)} hold missing values, which {method} cannot "
            "skip: impute them or drop those features or samples (ComBat itself ignores missing "
            "values)."
        )


def _is_dask(X: Any) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def _check_acquisitions(acquisitions: Any, data: np.ndarray, mapping: Any) -> np.ndarray:
    """Refuse to harmonize acquisitions that measure different things, unless ``mapping`` is a
    fitted :class:`~imharmony.AcquisitionMapping` between exactly those two acquisitions: then
    the data come back with the source acquisition's rows mapped onto the target."""
    n = data.shape[0]
    if acquisitions is None:
        if mapping is not None:
            raise DataError("mapping=... needs acquisitions=... (one row per sample) to apply.")
        return data
    if not isinstance(acquisitions, pd.DataFrame) or len(acquisitions) != n:
        raise DataError(
            "acquisitions must be a DataFrame with one row per sample (DICOM keywords such as "
            f"RepetitionTime, EchoTime); got {type(acquisitions).__name__} of length "
            f"{len(acquisitions) if hasattr(acquisitions, '__len__') else '?'} for {n} samples."
        )
    from ..physics.compatibility import require_harmonizable

    if mapping is not None:
        from ..calibration.mapping import AcquisitionMapping

        if not isinstance(mapping, AcquisitionMapping) or not hasattr(mapping, "source_"):
            raise DataError(
                f"mapping must be a fitted imharmony.AcquisitionMapping learned between these "
                f"acquisitions; got {type(mapping).__name__}."
            )
        data = mapping.apply_to_rows(data, acquisitions)
    distinct = acquisitions.astype(str).drop_duplicates().index
    require_harmonizable(acquisitions.loc[distinct].reset_index(drop=True), mapping=mapping)
    return data


class _SmoothEncoder(CovariateEncoder):
    """The covariate encoding of :mod:`imharmony._validation` plus smooth terms: a column named
    in ``smooth`` enters the design as its penalized B-spline basis (knots learned at fit)."""

    @classmethod
    def learn_smooth(
        cls,
        covariates: Any,
        n: int,
        smooth: Sequence[str] = (),
        df: int = 10,
        degree: int = 3,
        bounds: Any = None,
    ) -> tuple[_SmoothEncoder, pd.DataFrame | None]:
        frame = as_covariate_frame(covariates, n)
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
                f"smooth covariate(s) {format_items(missing)} are not covariate columns (columns: "
                f"{format_items(list(frame.columns))}); add them to the covariates."
            )
        smooth_specs = {}
        for name in smooth:
            col = frame[name]
            if col.isna().any():
                raise DataError(
                    f"covariate column {name!r} has {int(col.isna().sum())} missing value(s); "
                    "impute them or drop those samples."
                )
            smooth_specs[name] = _learn_smooth(name, col, df, degree, bounds, len(smooth))
        base, _ = CovariateEncoder.learn(frame.drop(columns=list(smooth)), n)
        linear = {s["name"]: s for s in base.spec}
        spec = [smooth_specs.get(c) or linear[c] for c in frame.columns
                if c in smooth_specs or c in linear]
        return cls(spec), frame

    @property
    def columns(self) -> list[str]:
        names: list[str] = []
        for s in self.spec:
            if s["kind"] == "smooth":
                names.extend(f"{s['name']}[s{k}]" for k in range(1, _term(s).n_basis + 1))
            else:
                names.extend(CovariateEncoder([s]).columns)
        return names

    def smooth_terms(self) -> list[tuple[str, Any, np.ndarray]]:
        """(name, SmoothTerm, positions of its basis among the encoded columns) per smooth term."""
        out, pos = [], 0
        for s in self.spec:
            width = len(_SmoothEncoder([s]).columns)
            if s["kind"] == "smooth":
                out.append((s["name"], _term(s), np.arange(pos, pos + width)))
            pos += width
        return out

    def encode(self, covariates: Any, n: int, *, raw_smooth: bool = False) -> np.ndarray:
        """The design's covariate columns (``raw_smooth``: smooth terms as one linear column,
        for the rank checks)."""
        frame = as_covariate_frame(covariates, n)
        if frame is None or not any(s["kind"] == "smooth" for s in self.spec):
            return super().encode(covariates, n)
        blocks: list[np.ndarray] = []
        for s in self.spec:
            if s["kind"] != "smooth" or raw_smooth:
                linear = {**s, "kind": "continuous"} if s["kind"] == "smooth" else s
                blocks.append(CovariateEncoder([linear]).encode(frame, n))
                continue
            name = s["name"]
            x = CovariateEncoder([{"name": name, "kind": "continuous"}]).encode(frame, n)[:, 0]
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

    if not is_numeric_column(col.dtype):
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


def _is_str_columns(v: Any) -> bool:
    return v is None or (
        isinstance(v, list | tuple) and all(isinstance(c, str) for c in v)
    )


def _is_penalty(v: Any) -> bool:
    if isinstance(v, str):
        return v in SMOOTH_CRITERIA
    if isinstance(v, bool | np.bool_):
        return False
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return arr.ndim <= 2 and bool(np.all(np.isfinite(arr)) and np.all(arr >= 0))


def _is_pair(v: Any) -> bool:
    return (
        isinstance(v, list | tuple) and len(v) == 2
        and all(isinstance(x, int | float | np.number) and not isinstance(x, bool)
                and np.isfinite(x) for x in v)
        and float(v[0]) < float(v[1])
    )


def _is_bounds(v: Any) -> bool:
    if v is None or _is_pair(v):
        return True
    return isinstance(v, dict) and all(isinstance(k, str) and _is_pair(b) for k, b in v.items())


def _is_random_state(v: Any) -> bool:
    if v is None or isinstance(v, np.random.Generator):
        return True
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0


def _fit_dask(X: Any, codes: np.ndarray, n_batches: int, C: np.ndarray, *,
              nan_columns: Any = None, **options: Any) -> CombatFit:
    """fit_combat's contract on a Dask array (imharmony.scale.combat), estimates in memory."""
    from ..scale.combat import fit_dask, fit_to_memory

    estimates, info = fit_dask(X, codes, n_batches, C, **options)
    return fit_to_memory(estimates, info, C.shape[1])


# ------------------------------------------------------------------------------------------------
# the estimator


class ComBat(HarmonizerMixin, TransformerMixin, BaseEstimator):
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

    # -- parameters (one rule for every harmonizer: HarmonizerMixin._validate_params) ---------
    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "nonparametric": Rule.boolean(),
        "mean_only": Rule.boolean(),
        "reference_batch": Rule.label_or_none(),
        "eb": Rule.boolean(),
        "tol": Rule.real(0),
        "max_iter": Rule.integer(1),
        "smooth": Rule(_is_str_columns, "None or a list of covariate column names "
                       "(smooth=['age'] for one column)"),
        "smooth_penalty": Rule(_is_penalty, "'cv', 'gcv', a number >= 0 or an array of one "
                               "finite value >= 0 per feature (and smooth term)"),
        "smooth_df": Rule.integer(3),
        "smooth_degree": Rule.integer(2),  # the penalty is the curvature
        "smooth_bounds": Rule(_is_bounds, "None, a (low, high) pair with low < high or a dict "
                              "{column: (low, high)}"),
        "random_state": Rule(_is_random_state, "None, an int >= 0 or a numpy Generator"),
    }
    _fitted_attribute: ClassVar[str] = "fit_"
    _model_kind: ClassVar[str] = FORMAT
    _model_version: ClassVar[int] = FORMAT_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._model_kind = cls._model_format  # a subclass's model files are of its own kind

    def _validate_params(self) -> None:
        super()._validate_params()
        if hasattr(self, "smooth_degree") and self.smooth_df < self.smooth_degree + 1:
            raise HarmonizationError(
                f"smooth_df must be >= smooth_degree + 1; got smooth_df={self.smooth_df}, "
                f"smooth_degree={self.smooth_degree}."
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
            :func:`imharmony.physics.compatibility.require_harmonizable` before fitting:
            different weightings, pre vs post contrast, magnitude vs phase or quantitative maps
            are refused (:class:`~imharmony.physics.compatibility.NotHarmonizableError`) — ComBat
            cannot turn a T1w feature into a T2w one.
        mapping : AcquisitionMapping, optional
            A fitted :class:`~imharmony.AcquisitionMapping` between exactly the two acquisitions
            in ``acquisitions``, learned from subjects scanned with both: the source
            acquisition's samples are mapped onto the target before ComBat, and the hard stops
            are reported but not refused. Any other object, or a mapping between other
            acquisitions, is refused. ``transform`` expects data already on the target
            acquisition (apply ``mapping.transform`` to source-acquisition samples first).

        Returns
        -------
        self

        Raises
        ------
        ConfoundingError
            When site and the biology (or a covariate) are completely confounded.
        """
        self._validate_params()
        data, names, nan_cols = as_feature_matrix(X)
        data = _check_acquisitions(acquisitions, data, mapping)
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
                f"columns ({format_items([str(c) for c in batch.columns])}); harmonize with one "
                "batch variable at a time to use a reference site."
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

    def _set_design(self, levels: list[Any], encoder: _SmoothEncoder, ref: int | None) -> None:
        self.batches_ = np.array(levels, dtype=object)
        self.covariate_spec_ = encoder.spec
        self.covariate_columns_ = encoder.columns
        self.reference_index_ = ref

    def learn_design(
        self, n: int, batch: Any, covariates: Any = None, biology: Any = None
    ) -> tuple[list[Any], np.ndarray, np.ndarray, int | None, _SmoothEncoder]:
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
        labels = labels_of(batch, n)
        levels = sorted_levels(factorize_labels(labels)[1])
        if len(levels) < 2:
            raise DesignError(
                f"batch has a single site ({levels[0]!r}); ComBat needs at least two sites."
            )
        codes = encode_labels(labels, levels)[0]
        counts = np.bincount(codes, minlength=len(levels))
        singles = [levels[i] for i in np.flatnonzero(counts < 2)]
        if singles and not self.mean_only:
            raise DesignError(
                f"site(s) {format_items(singles)} have a single sample, whose scale effect cannot "
                "be estimated: pass mean_only=True (--mean-only) to correct location only, or "
                "merge or drop those sites."
            )
        ref = None
        if self.reference_batch is not None:
            # one label rule (imharmony._validation): "1" names the site 1
            by_text = {label_text(k): i for i, k in enumerate(levels)}
            if label_text(self.reference_batch) not in by_text:
                raise DesignError(
                    f"reference_batch={self.reference_batch!r} is not one of the sites "
                    f"{format_items(levels)}."
                )
            ref = by_text[label_text(self.reference_batch)]
        encoder, _ = _SmoothEncoder.learn_smooth(
            covariates,
            n,
            list(getattr(self, "smooth", None) or []),
            getattr(self, "smooth_df", 10),
            getattr(self, "smooth_degree", 3),
            getattr(self, "smooth_bounds", None),
        )
        C = encoder.encode(covariates, n)
        try:
            check_design(codes, len(levels), encoder.encode(covariates, n, raw_smooth=True))
        except _RankDeficient as exc:
            raw = _SmoothEncoder([{**s, "kind": "continuous"} if s["kind"] == "smooth" else s
                                     for s in encoder.spec])
            cols = [raw.columns[k] for k in exc.columns]
            raise DesignError(
                f"covariate column(s) {format_items(cols)} are confounded with site: the design "
                "(site indicators + covariates) is rank deficient, so their effect cannot be told "
                "apart from the site effect. Drop or merge those covariates, or collect data "
                "where they vary within sites."
            ) from None
        if biology is not None or C.shape[1]:
            self._check_confounding(labels, covariates, biology)
        return levels, codes, C, ref, encoder

    def set_design(self, levels: list[Any], covariate_spec: list[dict[str, Any]],
                   reference_index: int | None) -> None:
        """Set the learned sites and covariate encoding (an out-of-core fit keeps its per-feature
        estimates on disk, so :meth:`encode_samples` is then all this object is used for)."""
        self._set_design(levels, _SmoothEncoder(covariate_spec), reference_index)

    def encode_samples(self, n: int, batch: Any, covariates: Any = None) -> tuple[np.ndarray, Any]:
        """Batch codes and covariate columns of ``n`` new samples, as :meth:`transform` encodes
        them (an unseen site raises :class:`~imharmony.errors.UnseenBatchError`)."""
        return self._codes(batch, n), _SmoothEncoder(self.covariate_spec_).encode(covariates, n)

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

        frame = as_covariate_frame(covariates, labels.shape[0])
        report = check_confounding(labels, frame, biology=biology)
        report.raise_if_complete()
        for finding in report.findings:
            # the biology is what must survive: its strong confounding with site, or its absence
            # from the covariates, is worth a warning; covariates are preserved by design.
            if finding.role == "biology" and (
                finding.topic == "biology_not_covariate" or finding.level == "strong"
            ):
                warnings.warn(finding.message, HarmonizationWarning, stacklevel=3)
            else:
                logger.info("%s", finding.message)

    def _check_fitted(self) -> None:
        if not hasattr(self, "stages_"):  # a sequential model is fitted through its stages
            super()._check_fitted()

    def _codes(self, batch: Any, n: int) -> np.ndarray:
        labels = labels_of(batch, n)
        codes, unseen_keys = encode_labels(labels, self.batches_.tolist())
        if unseen_keys:
            unseen = sorted(str(k) for k in unseen_keys)
            raise UnseenBatchError(
                f"site(s) {format_items(unseen)} were not seen when the model was fitted (known: "
                f"{format_items(self.batches_.tolist())}); ComBat can only correct the sites it "
                "learned. Refit including samples of those sites."
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
        data, names, _ = as_feature_matrix(X)
        check_feature_columns(self, data, names)
        n = data.shape[0]
        if hasattr(self, "stages_"):
            frame = batch if isinstance(batch, pd.DataFrame) else None
            missing = [c for c in self.batch_columns_ if frame is None or c not in frame.columns]
            if missing:
                raise DataError(
                    f"the model corrects the batch variables {format_items(self.batch_columns_)} "
                    "in turn; give batch as a DataFrame with those columns (missing: "
                    f"{format_items(missing)})."
                )
            current = data
            for col, stage in zip(self.batch_columns_, self.stages_, strict=True):
                codes = stage._codes(frame[col], n)
                C = _SmoothEncoder(stage.covariate_spec_).encode(covariates, n)
                current = stage._apply(current, current, codes, C)
            return _like(X, current)
        codes = self._codes(_one_batch_column(batch), n)
        C = _SmoothEncoder(self.covariate_spec_).encode(covariates, n)
        return self._apply(X, data, codes, C)

    def _apply(self, X: Any, data: np.ndarray, codes: np.ndarray, C: np.ndarray) -> Any:
        if _is_dask(data):  # a lazy Dask array, corrected block by block
            from ..scale.combat import apply_dask, pack_fit

            return apply_dask(data, codes, pack_fit(self.fit_), self.fit_.batch_sizes, C,
                              ref=self.reference_index_)
        return _like(X, apply_combat(data, codes, self.fit_, C, ref=self.reference_index_))

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
        data, names, nan_cols = as_feature_matrix(X)
        data = _check_acquisitions(acquisitions, data, mapping)
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
        return feature_names_out(self, input_features)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # -- persistence (the envelope is imharmony._persist, through HarmonizerMixin) --------------
    def _params_for_file(self) -> dict[str, Any]:
        params = self.get_params(deep=False)  # a subclass may not have all of ComBat's
        if "reference_batch" in params:
            params["reference_batch"] = label_key(params["reference_batch"])
        if not isinstance(params.get("smooth_penalty", "cv"), str | int | float):
            params["smooth_penalty"] = np.asarray(params["smooth_penalty"], float).tolist()
        if params.get("smooth") is not None:
            params["smooth"] = list(params["smooth"])
        if isinstance(params.get("smooth_bounds"), tuple):
            params["smooth_bounds"] = list(params["smooth_bounds"])
        if isinstance(params.get("random_state"), np.integer):
            params["random_state"] = int(params["random_state"])
        elif not isinstance(params.get("random_state"), int | None):
            params["random_state"] = None  # a Generator: the penalties are saved anyway
        return params

    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not hasattr(self, "stages_"):
            return self._single_content()
        arrays: dict[str, np.ndarray] = {}
        stages = []
        for i, stage in enumerate(self.stages_):
            fields, stage_arrays = stage._single_content()
            stages.append(fields)
            arrays.update({f"stage{i}__{k}": v for k, v in stage_arrays.items()})
        content = {
            "n_features": int(self.n_features_in_),
            "feature_names": (
                [str(x) for x in self.feature_names_in_]
                if hasattr(self, "feature_names_in_")
                else None
            ),
            "batch_columns": list(self.batch_columns_),
            "stages": stages,
        }
        return content, arrays

    def _single_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fields and arrays of a one-batch-variable model (or of one stage)."""
        content = {
            "batches": [label_key(b) for b in self.batches_.tolist()],
            "reference_index": self.reference_index_,
            "n_features": int(self.n_features_in_),
            "feature_names": (
                [str(x) for x in self.feature_names_in_]
                if hasattr(self, "feature_names_in_")
                else None
            ),
            "covariates": self.covariate_spec_,
            "unadjusted": {str(k): v for k, v in self.unadjusted_features_.items()},
            "reasons": {str(k): v for k, v in self.fit_.reasons.items()},
        }
        extra_arrays, extra_fields = self._extra_state()  # a subclass's own state
        arrays = {k: np.asarray(getattr(self.fit_, k)) for k in _ARRAYS}
        if hasattr(self, "smooth_penalty_"):
            arrays["smooth_penalty"] = np.asarray(self.smooth_penalty_, dtype=np.float64)
        return {**content, **extra_fields}, {**arrays, **extra_arrays}

    @classmethod
    def _model_arrays(cls, path: Path, content: dict[str, Any]) -> dict[str, ArraySpec]:
        if "stages" not in content:
            return cls._single_arrays(path, content, content["params"], "")
        c = content
        columns = check(path, "batch_columns", c.get("batch_columns"),
                        is_str_list(c.get("batch_columns")) and len(c["batch_columns"]) >= 2,
                        "a list of at least 2 batch column names")
        stages = check(path, "stages", c.get("stages"),
                       isinstance(c.get("stages"), list) and len(c["stages"]) == len(columns)
                       and all(isinstance(s, dict) for s in c["stages"]),
                       f"a list of {len(columns)} stage objects (one per batch column)")
        G = check(path, "n_features", c.get("n_features"), is_int(c.get("n_features"), 1),
                  "an int >= 1")
        names = c.get("feature_names")
        check(path, "feature_names", names,
              names is None or (is_str_list(names) and len(names) == G),
              f"null or a list of {G} str")
        specs: dict[str, ArraySpec] = {}
        for i, stage in enumerate(stages):
            check(path, f"stages[{i}].n_features", stage.get("n_features"),
                  stage.get("n_features") == G, f"{G}, the model's n_features")
            own = cls._single_arrays(path, stage, c["params"], f"stages[{i}].")
            specs.update({f"stage{i}__{k}": v for k, v in own.items()})
        return specs

    @classmethod
    def _single_arrays(
        cls, path: Path, c: dict[str, Any], params: dict[str, Any], where: str
    ) -> dict[str, ArraySpec]:
        """Type-check the fields of a one-batch-variable model (``where`` prefixes their names
        for a stage) and return the arrays they imply."""
        batches = check(
            path, f"{where}batches", c.get("batches"),
            isinstance(c.get("batches"), list) and len(c["batches"]) >= 2
            and all(is_label(b) for b in c["batches"])
            and len({(type(b), b) for b in c["batches"]}) == len(c["batches"]),
            "a list of at least 2 distinct site labels",
        )
        J = len(batches)
        G = check(path, f"{where}n_features", c.get("n_features"),
                  is_int(c.get("n_features"), 1), "an int >= 1")
        ref = c.get("reference_index")
        check(path, f"{where}reference_index", ref, ref is None or is_int(ref, 0, J - 1),
              f"null or an int in [0, {J - 1}]")
        rb = params.get("reference_batch")
        check(path, f"{where}reference_index", ref,
              (ref is None) == (rb is None) and (ref is None or str(batches[ref]) == str(rb)),
              f"the position of params.reference_batch ({rb!r}) among the sites")
        names = c.get("feature_names")
        check(path, f"{where}feature_names", names,
              names is None or (is_str_list(names) and len(names) == G),
              f"null or a list of {G} str")
        spec = c.get("covariates")
        check(path, f"{where}covariates", spec,
              isinstance(spec, list) and all(_valid_covariate(s) for s in spec),
              "a list of {name, kind: continuous}, {name, kind: categorical, levels: [>= 2 "
              "distinct labels]} or {name, kind: smooth, degree: int >= 1, knots: [ascending "
              "numbers]}")
        for key, idx_ok in (("unadjusted", False), ("reasons", True)):
            v = c.get(key)
            check(path, f"{where}{key}", v,
                  isinstance(v, dict) and all(isinstance(t, str) for t in v.values())
                  and (not idx_ok or all(k.isdigit() and int(k) < G for k in v)),
                  "an object of str" + (" keyed by feature index" if idx_ok else ""))
        specs = fit_array_specs(J, G, len(_SmoothEncoder(spec).columns))
        n_smooth = sum(s["kind"] == "smooth" for s in spec)
        if n_smooth:
            specs["smooth_penalty"] = ArraySpec((G, n_smooth), "f")
        specs.update(cls._extra_array_specs(path, c, params, J, G))
        return specs

    def _restore(
        self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None:
        if "stages" not in content:
            self._restore_single(path, content, arrays)
            return
        stages = []
        for i, stage_content in enumerate(content["stages"]):
            prefix = f"stage{i}__"
            stage = clone(self)
            stage._restore_single(
                path, stage_content,
                {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)},
            )
            stages.append(stage)
        self.stages_ = stages
        self.batch_columns_ = [str(c) for c in content["batch_columns"]]
        self.n_features_in_ = int(content["n_features"])
        if content["feature_names"] is not None:
            self.feature_names_in_ = np.array(content["feature_names"], dtype=object)

    def _restore_single(
        self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> None:
        names = content["feature_names"]
        self.batches_ = np.array(content["batches"], dtype=object)
        self.n_features_in_ = int(content["n_features"])
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        self.covariate_spec_ = content["covariates"]
        self.covariate_columns_ = _SmoothEncoder(content["covariates"]).columns
        self.reference_index_ = content["reference_index"]
        self.fit_ = CombatFit(
            **{k: arrays[k] for k in _ARRAYS},
            reasons={int(k): v for k, v in content["reasons"].items()},
        )
        if "smooth_penalty" in arrays:
            self.smooth_penalty_ = arrays["smooth_penalty"]
        self.unadjusted_features_ = dict(content["unadjusted"])
        self._restore_extra_state(
            {k: v for k, v in arrays.items() if k not in _ARRAYS and k != "smooth_penalty"},
            content, path,
        )

    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON entries a subclass saves beside ComBat's (none here)."""
        return {}, {}

    @classmethod
    def _extra_array_specs(
        cls, path: Path, content: dict[str, Any], params: dict[str, Any], J: int, G: int
    ) -> dict[str, ArraySpec]:
        """The arrays of :meth:`_extra_state` a model file must hold, as its fields imply them
        (J sites, G features); a subclass type-checks its own fields here (:func:`check`)."""
        return {}

    def _restore_extra_state(
        self, arrays: dict[str, np.ndarray], doc: dict[str, Any], path: Path
    ) -> None:
        """Restore what :meth:`_extra_state` saved (raise ModelFileError when inconsistent)."""


def _valid_covariate(s: Any) -> bool:
    if not isinstance(s, dict) or not isinstance(s.get("name"), str):
        return False
    if s.get("kind") == "continuous":
        return set(s) == {"name", "kind"}
    if s.get("kind") == "smooth":
        knots, degree = s.get("knots"), s.get("degree")
        return (
            set(s) == {"name", "kind", "degree", "knots"}
            and is_int(degree, 1)
            and isinstance(knots, list)
            and len(knots) >= 2 * (degree + 1)
            and all(isinstance(k, int | float) and not isinstance(k, bool) for k in knots)
            and bool(np.all(np.isfinite(knots)) and np.all(np.diff(knots) >= 0))
            and knots[0] < knots[-1]
        )
    levels = s.get("levels")
    return (
        s.get("kind") == "categorical"
        and set(s) == {"name", "kind", "levels"}
        and isinstance(levels, list)
        and len(levels) >= 2
        and all(is_label(v) for v in levels)
        and len({(type(v), v) for v in levels}) == len(levels)
    )

