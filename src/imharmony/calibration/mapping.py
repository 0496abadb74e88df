"""Acquisition mappings: features of one acquisition expressed on another's scale.

Some acquisitions measure different things (a T1-weighted and a T2-weighted protocol; two
quantitative sequences with different physics) and no statistic can align them from unpaired
cohorts. Subjects scanned with both acquisitions (travelling subjects, or a bridging sub-study)
give paired measurements from which a per-feature mapping ``target ≈ f(source)`` is learned —
linear (least squares) or monotone (isotonic regression) — with its cross-validated error.
A fitted mapping is what :meth:`imharmony.ComBat.fit` accepts to harmonize across exactly those
two acquisitions.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from .._persist import ArraySpec, check, is_int, is_str_list
from .._validation import check_feature_columns, format_items
from ..base import HarmonizerMixin, Rule
from ..errors import DataError, ModelFileError
from ..features.estimators import as_feature_matrix

__all__ = ["AcquisitionMapping", "acquisition_key"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.acquisition_mapping"
FORMAT_VERSION = 2  # 2: the project's model envelope (imharmony._persist)
_METHODS = ("linear", "monotone")


def _value_key(value: Any) -> str:
    """One spelling per acquisition value: numbers as floats (2300 == "2300.0"), text stripped."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value).strip()


def acquisition_key(acquisition: Any, keys: list[str] | None = None) -> dict[str, str]:
    """Normalized description of an acquisition: DICOM keyword (or protocol column) -> value.

    Parameters
    ----------
    acquisition : mapping or pandas.Series
        E.g. ``{"RepetitionTime": 2300, "EchoTime": 2.98, "ScanningSequence": "GR"}``.
    keys : list of str, optional
        Keep these keys only (missing ones raise).
    """
    if isinstance(acquisition, pd.Series):
        acquisition = acquisition.to_dict()
    if not isinstance(acquisition, Mapping) or not acquisition:
        raise DataError(
            "an acquisition is described by a non-empty mapping of DICOM keywords to values "
            f"(e.g. {{'RepetitionTime': 2300, 'EchoTime': 2.98}}); got {acquisition!r}."
        )
    if keys is None:
        keys = sorted(str(k) for k in acquisition)
    missing = [k for k in keys if k not in acquisition]
    if missing:
        raise DataError(f"the acquisition does not give {format_items(missing)}.")
    return {k: _value_key(acquisition[k]) for k in keys}


def _is_seed(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


class AcquisitionMapping(HarmonizerMixin, TransformerMixin, BaseEstimator):
    """Per-feature mapping from a source acquisition onto a target acquisition.

    Parameters
    ----------
    method : {"linear", "monotone"}, default="linear"
        ``"linear"``: target = intercept + slope · source (least squares per feature).
        ``"monotone"``: isotonic regression per feature (increasing or decreasing, chosen from
        the data), clipped to the learned range.
    cv : int, default=5
        Folds of the cross-validated error (subjects split into ``cv`` folds, at most one per
        subject).
    random_state : int, optional
        Shuffling of the folds: None, an int or a ``numpy.random.RandomState`` (a model file
        keeps an int seed; a RandomState is saved as None, since it only served the
        cross-validation at fit).

    Attributes
    ----------
    source_, target_ : dict of str
        The two acquisitions (normalized keyword -> value).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X was a DataFrame.
    intercept_, slope_ : ndarray, shape (n_features_in_,)
        ``method="linear"`` only.
    knots_x_, knots_y_ : list of ndarray
        ``method="monotone"`` only: the isotonic fit's breakpoints per feature.
    cv_rmse_ : ndarray, shape (n_features_in_,)
        Cross-validated root-mean-square error of the mapped source against the target.
    cv_rmse_identity_ : ndarray, shape (n_features_in_,)
        The same error without mapping (source taken as target), for comparison.
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "method": Rule.one_of(*_METHODS),
        "cv": Rule.integer(2),
        "random_state": Rule(
            lambda v: _is_seed(v) or isinstance(v, np.random.RandomState),
            "None, an int or a numpy RandomState (the folds are scikit-learn's KFold)",
        ),
    }
    _fitted_attribute: ClassVar[str] = "source_"
    _model_kind: ClassVar[str] = FORMAT
    _model_version: ClassVar[int] = FORMAT_VERSION

    def __init__(self, method: str = "linear", cv: int = 5, random_state: Any = None) -> None:
        self.method = method
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: Any, y: Any, *, source: Any, target: Any) -> AcquisitionMapping:
        """Learn ``y ≈ f(X)`` per feature from subjects scanned with both acquisitions.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_subjects, n_features)
            Features measured with the source acquisition.
        y : array-like or DataFrame, shape (n_subjects, n_features)
            The same subjects and features with the target acquisition (same order).
        source, target : mapping or Series
            The acquisitions (DICOM keywords or protocol-table columns -> values), as given to
            :meth:`imharmony.ComBat.fit` in ``acquisitions``.
        """
        self._validate_params()
        src, names, _ = as_feature_matrix(X, "X (source acquisition)")
        tgt, _, _ = as_feature_matrix(y, "y (target acquisition)")
        if src.shape != tgt.shape:
            raise DataError(
                f"X has shape {src.shape} but y has {tgt.shape}: give the same subjects and "
                "features measured with both acquisitions, row for row."
            )
        if not (np.isfinite(src).all() and np.isfinite(tgt).all()):
            raise DataError("missing values in the paired measurements; drop those subjects.")
        n = src.shape[0]
        if n < 3:
            raise DataError(f"{n} paired subjects: a mapping needs at least 3.")
        s_key = acquisition_key(source)
        keys = sorted(s_key)
        t_key = acquisition_key(target, keys)
        if s_key == t_key:
            raise DataError("source and target describe the same acquisition; nothing to map.")
        self.source_, self.target_ = s_key, t_key
        self.n_features_in_ = src.shape[1]
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._learn(src, tgt)
        self.cv_rmse_, self.cv_rmse_identity_ = self._cross_validate(src, tgt)
        logger.info("acquisition mapping (%s) on %d subjects: median CV RMSE %.4g (unmapped %.4g)",
                    self.method, n, np.median(self.cv_rmse_), np.median(self.cv_rmse_identity_))
        return self

    def _learn(self, src: np.ndarray, tgt: np.ndarray) -> None:
        if self.method == "linear":
            xm, ym = src.mean(axis=0), tgt.mean(axis=0)
            sxx = ((src - xm) ** 2).sum(axis=0)
            if (sxx == 0).any():
                raise DataError(
                    f"feature(s) #{format_items(np.flatnonzero(sxx == 0).tolist())} are constant "
                    "in the source acquisition; a linear mapping cannot be learned."
                )
            self.slope_ = ((src - xm) * (tgt - ym)).sum(axis=0) / sxx
            self.intercept_ = ym - self.slope_ * xm
            return
        from sklearn.isotonic import IsotonicRegression

        self.knots_x_, self.knots_y_ = [], []
        for g in range(src.shape[1]):  # isotonic regression has no multi-output form
            iso = IsotonicRegression(increasing="auto", out_of_bounds="clip")
            iso.fit(src[:, g], tgt[:, g])
            self.knots_x_.append(np.asarray(iso.X_thresholds_, dtype=float))
            self.knots_y_.append(np.asarray(iso.y_thresholds_, dtype=float))

    def _map(self, data: np.ndarray) -> np.ndarray:
        if self.method == "linear":
            return self.intercept_ + self.slope_ * data
        out = np.empty_like(data)
        for g, (kx, ky) in enumerate(zip(self.knots_x_, self.knots_y_, strict=True)):
            out[:, g] = np.interp(data[:, g], kx, ky) if kx.size > 1 else ky[0]
        return out

    def _cross_validate(self, src: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.base import clone
        from sklearn.model_selection import KFold

        folds = KFold(min(int(self.cv), src.shape[0]), shuffle=True,
                      random_state=self.random_state)
        pred = np.empty_like(tgt)
        for train, test in folds.split(src):
            inner = clone(self)
            inner.n_features_in_ = src.shape[1]
            inner._learn(src[train], tgt[train])
            pred[test] = inner._map(src[test])
        rmse = np.sqrt(((pred - tgt) ** 2).mean(axis=0))
        return rmse, np.sqrt(((src - tgt) ** 2).mean(axis=0))

    def transform(self, X: Any) -> Any:
        """Express features measured with the source acquisition on the target's scale."""
        self._check_fitted()
        data, names, _ = as_feature_matrix(X)
        check_feature_columns(self, data, names)
        out = self._map(data)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=X.columns, copy=False)
        return out

    def apply_to_rows(self, data: np.ndarray, acquisitions: pd.DataFrame) -> np.ndarray:
        """Map the rows of ``data`` acquired with ``source_``; refuse any other acquisition.

        Parameters
        ----------
        data : ndarray, shape (n_samples, n_features)
        acquisitions : DataFrame, one row per sample
            Must describe exactly the two acquisitions of this mapping (on their keys).

        Returns
        -------
        ndarray
            A copy of ``data`` with the source rows on the target scale.
        """
        keys = sorted(self.source_)
        missing = [k for k in keys if k not in acquisitions.columns]
        if missing:
            raise DataError(
                f"acquisitions lack column(s) {format_items(missing)} that tell this mapping's "
                "acquisitions apart."
            )
        rows = [tuple(acquisition_key(r, keys).values())
                for r in acquisitions[keys].to_dict("records")]
        src, tgt = tuple(self.source_.values()), tuple(self.target_.values())
        found = set(rows)
        if found != {src, tgt}:
            other = [dict(zip(keys, r, strict=True)) for r in found - {src, tgt}]
            raise DataError(
                "the mapping was learned between exactly two acquisitions "
                f"({self.source_} -> {self.target_}); the data hold "
                + (f"also {other}" if other else "only one of them")
                + ". Learn a mapping for these acquisitions or harmonize them separately."
            )
        is_src = np.array([r == src for r in rows])
        check_feature_columns(self, data, None)
        out = data.copy()
        out[is_src] = self._map(data[is_src])
        logger.info("mapped %d sample(s) from the source onto the target acquisition",
                    int(is_src.sum()))
        return out

    # -- persistence (HarmonizerMixin.save / .load: the project's model envelope) -----------
    def _params_for_file(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        if not _is_seed(params["random_state"]):
            params["random_state"] = None  # a RandomState served the fit's folds only
        elif params["random_state"] is not None:
            params["random_state"] = int(params["random_state"])
        params["cv"] = int(params["cv"])
        return params

    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {"cv_rmse": self.cv_rmse_,
                                         "cv_rmse_identity": self.cv_rmse_identity_}
        knots = None
        if self.method == "linear":
            arrays |= {"intercept": self.intercept_, "slope": self.slope_}
        else:
            arrays |= {f"knots_x_{g}": k for g, k in enumerate(self.knots_x_)}
            arrays |= {f"knots_y_{g}": k for g, k in enumerate(self.knots_y_)}
            knots = [int(k.size) for k in self.knots_x_]
        content = {
            "source": self.source_, "target": self.target_,
            "n_features": int(self.n_features_in_),
            "feature_names": ([str(x) for x in self.feature_names_in_]
                              if hasattr(self, "feature_names_in_") else None),
            "knot_counts": knots,
        }
        return content, {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}

    @classmethod
    def _model_arrays(cls, path: Path, content: dict[str, Any]) -> dict[str, ArraySpec]:
        source, target = content.get("source"), content.get("target")
        for key, acq in (("source", source), ("target", target)):
            check(path, key, acq, isinstance(acq, dict) and bool(acq)
                  and is_str_list(list(acq)) and is_str_list(list(acq.values())),
                  "a non-empty object of acquisition keywords to values (str)")
        check(path, "target", target, sorted(target) == sorted(source) and target != source,
              "the source's keywords with other values")
        G = check(path, "n_features", content.get("n_features"),
                  is_int(content.get("n_features"), 1), "an int >= 1")
        names = content.get("feature_names")
        check(path, "feature_names", names, names is None or (is_str_list(names)
              and len(names) == G), f"null or a list of {G} feature names")
        specs = dict.fromkeys(("cv_rmse", "cv_rmse_identity"), ArraySpec((G,)))
        knots = content.get("knot_counts")
        if content["params"]["method"] == "linear":
            check(path, "knot_counts", knots, knots is None, "null for a linear mapping")
            return specs | dict.fromkeys(("intercept", "slope"), ArraySpec((G,)))
        check(path, "knot_counts", knots, isinstance(knots, list) and len(knots) == G
              and all(is_int(k, 1) for k in knots), f"a list of {G} ints >= 1")
        for g, k in enumerate(knots):
            specs[f"knots_x_{g}"] = specs[f"knots_y_{g}"] = ArraySpec((k,))
        return specs

    def _restore(self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        G = int(content["n_features"])
        if self.method == "linear":
            coefs = [arrays["intercept"], arrays["slope"]]
        else:
            coefs = [arrays[f"knots_{a}_{g}"] for a in "xy" for g in range(G)]
        if not all(np.all(np.isfinite(c)) for c in coefs) or (
            self.method == "monotone"
            and any(np.any(np.diff(arrays[f"knots_x_{g}"]) < 0) for g in range(G))
        ):
            raise ModelFileError(
                f"{path}: inconsistent acquisition mapping (non-finite coefficients or knots out "
                "of order); re-fit the mapping."
            )
        self.source_, self.target_ = dict(content["source"]), dict(content["target"])
        self.n_features_in_ = G
        if content["feature_names"] is not None:
            self.feature_names_in_ = np.array(content["feature_names"], dtype=object)
        self.cv_rmse_, self.cv_rmse_identity_ = arrays["cv_rmse"], arrays["cv_rmse_identity"]
        if self.method == "linear":
            self.intercept_, self.slope_ = arrays["intercept"], arrays["slope"]
        else:
            self.knots_x_ = [arrays[f"knots_x_{g}"] for g in range(G)]
            self.knots_y_ = [arrays[f"knots_y_{g}"] for g in range(G)]
