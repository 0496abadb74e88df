"""Multivariate views of the site effect: PCA silhouette, guided PCA, site prediction.

Per-feature tests miss a site signature spread thinly over many features, or carried by their
covariance. These three measures look at all features together:

- silhouette of the site labels in principal-component space (before and after in one coordinate
  system: standardization and PCA are fitted on the data before and applied to both);
- guided PCA (Reese et al. 2013): how much of the variance of the direction that best separates
  the sites compares with the variance of the first principal component, with a permutation
  p-value;
- cross-validated balanced accuracy of a classifier predicting the site, optionally with a
  harmonizer fitted inside each training fold (no leakage); chance is 1 / number of sites.

References
----------
Reese SE, Archer KJ, Therneau TM, et al. (2013). A new statistic for identifying batch effects in
high-throughput genomic data that uses guided principal component analysis. Bioinformatics
29:2877.
Marzi C, Giannelli M, Barucci A, et al. (2024). Efficacy of MRI data harmonization in the age of
machine learning: a multicenter study across 36 datasets. Sci Data 11:115.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._vocabulary import N_PERMUTATIONS, N_SPLITS
from ..errors import DesignError
from ._data import (
    as_covariate_design,
    as_labels,
    as_matrix,
    as_pair,
    encode_labels,
    group_indicator,
)

__all__ = [
    "GuidedPCA",
    "PCAProjection",
    "SitePrediction",
    "guided_pca",
    "pca_projection",
    "pca_silhouette",
    "site_prediction",
]

logger = logging.getLogger(__name__)


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    sd = X.std(axis=0)
    return mean, np.where(sd > 0, sd, 1.0)


def pca_silhouette(
    before: Any,
    batch: Any,
    after: Any = None,
    *,
    n_components: int = 10,
) -> tuple[float, float | None]:
    """Silhouette of the sites in PCA space, before and (optionally) after harmonization.

    Parameters
    ----------
    before : array-like or pandas.DataFrame, shape (n_samples, n_features)
    batch : array-like, shape (n_samples,)
    after : array-like or pandas.DataFrame, shape (n_samples, n_features), optional
    n_components : int
        Principal components kept (capped at min(n_samples - 1, n_features)).

    Returns
    -------
    (float, float or None)
        Mean silhouette (Euclidean) of the site labels before and after; 1 means sites form
        separate tight clusters, about 0 means they are mixed.

    Notes
    -----
    The features are standardized with the mean and standard deviation of ``before`` and
    projected on the principal axes of ``before``; ``after`` goes through the same transform,
    so both numbers are distances in one coordinate system.
    """
    from sklearn.metrics import silhouette_score

    if after is not None:
        Xb, Xa, _ = as_pair(before, after)
    else:
        Xb, _ = as_matrix(before, name="before")
    labels = as_labels(batch, Xb.shape[0], name="batch")
    _, codes = encode_labels(labels)
    if np.unique(codes).size < 2:
        raise DesignError("batch: only one site; the silhouette needs at least two.")
    fit = _PCAFit.on(Xb, n_components)
    sil_b = float(silhouette_score(fit.project(Xb), codes))
    if after is None:
        return sil_b, None
    sil_a = float(silhouette_score(fit.project(Xa), codes))
    return sil_b, sil_a


@dataclass(frozen=True)
class _PCAFit:
    """Standardization and principal axes fitted on one matrix, applicable to another."""

    mean: np.ndarray
    sd: np.ndarray
    axes: np.ndarray  # (n_features, q)
    explained_variance_ratio: np.ndarray  # (q,)

    @classmethod
    def on(cls, X: np.ndarray, n_components: int) -> _PCAFit:
        mean, sd = _standardizer(X)
        S = (X - mean) / sd  # column means are 0 by construction
        q = max(1, min(n_components, X.shape[0] - 1, X.shape[1]))
        _, s, vt = np.linalg.svd(S - S.mean(axis=0), full_matrices=False)
        total = float(np.sum(s**2))
        evr = s[:q] ** 2 / total if total > 0 else np.zeros(q)
        return cls(mean=mean, sd=sd, axes=vt[:q].T, explained_variance_ratio=evr)

    def project(self, X: np.ndarray) -> np.ndarray:
        S = (X - self.mean) / self.sd
        return S @ self.axes


@dataclass(frozen=True)
class PCAProjection:
    """Result of :func:`pca_projection`: scores before and after on the axes of the data before.

    Attributes
    ----------
    before, after : numpy.ndarray, shape (n_samples, n_components)
        Principal-component scores (``after`` is None when no data after were given).
    explained_variance_ratio : numpy.ndarray, shape (n_components,)
        Fraction of the total variance of the standardized data before held by each component.
    """

    before: np.ndarray
    after: np.ndarray | None
    explained_variance_ratio: np.ndarray


def pca_projection(before: Any, after: Any = None, *, n_components: int = 2) -> PCAProjection:
    """Principal-component scores of the data before and after, in one coordinate system.

    Parameters
    ----------
    before : array-like or pandas.DataFrame, shape (n_samples, n_features)
    after : array-like or pandas.DataFrame, shape (n_samples, n_features), optional
    n_components : int
        Components kept (capped at min(n_samples - 1, n_features), at least 1).

    Returns
    -------
    PCAProjection

    Notes
    -----
    Each feature is standardized with the mean and standard deviation of ``before`` (a constant
    feature is only centred) and projected on the principal axes of ``before``; ``after`` goes
    through the same transform (the coordinate system of :func:`pca_silhouette`), so a site
    cluster that disappears after harmonization has moved, not been re-projected. The sign of
    each axis is that of the singular value decomposition (arbitrary).
    """
    if after is not None:
        Xb, Xa, _ = as_pair(before, after)
    else:
        Xb, _ = as_matrix(before, name="before")
        Xa = None
    fit = _PCAFit.on(Xb, n_components)
    return PCAProjection(
        before=fit.project(Xb),
        after=None if Xa is None else fit.project(Xa),
        explained_variance_ratio=fit.explained_variance_ratio,
    )


@dataclass(frozen=True)
class GuidedPCA:
    """Result of :func:`guided_pca`.

    Attributes
    ----------
    delta : float
        Var(X v_g1) / Var(X v_u1), in (0, 1]: near 1 when the largest variation is by site.
    p_value : float
        (1 + #{δ_perm >= δ}) / (1 + n_permutations), δ_perm with shuffled site labels.
    n_permutations : int
    """

    delta: float
    p_value: float
    n_permutations: int


def _first_direction_variance(Y: np.ndarray, X: np.ndarray) -> float:
    """Variance of X along the first right singular vector of YᵀX (X centred)."""
    M = Y.T @ X
    _, _, vt = np.linalg.svd(M, full_matrices=False)
    return float(np.var(X @ vt[0]))


def guided_pca(
    X: Any,
    batch: Any,
    *,
    n_permutations: int = N_PERMUTATIONS,
    scale: bool = False,
    random_state: int | np.random.Generator | None = None,
) -> GuidedPCA:
    """Guided PCA test for a site effect (Reese et al. 2013).

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
    batch : array-like, shape (n_samples,)
    n_permutations : int
        Site shuffles for the p-value (0 for none; ``p_value`` is then NaN).
    scale : bool
        Also divide each feature by its standard deviation (the default, like the reference
        implementation, only centres).
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    GuidedPCA

    Notes
    -----
    With X column-centred and Y the n x k 0/1 site indicator matrix, v_g1 is the first right
    singular vector of YᵀX (guided by site) and v_u1 that of X (unguided). δ = Var(X v_g1) /
    Var(X v_u1); v_u1 maximizes the variance, so δ <= 1. The p-value uses the (1 + b) / (1 + B)
    form, which never returns 0 for a finite number of permutations.
    """
    Xa, _ = as_matrix(X, name="X")
    labels = as_labels(batch, Xa.shape[0], name="batch")
    levels, codes = encode_labels(labels)
    if levels.size < 2:
        raise DesignError("batch: only one site; guided PCA needs at least two.")
    Xc = Xa - Xa.mean(axis=0)
    if scale:
        sd = Xc.std(axis=0)
        Xc = Xc / np.where(sd > 0, sd, 1.0)
    # X = U S Vᵀ: YᵀX = (YᵀUS) Vᵀ has the right singular vectors V b of YᵀUS, and
    # X V b = US b, so everything is computed in the r = min(n, p) dimensional score space.
    u, s, _ = np.linalg.svd(Xc, full_matrices=False)
    var_u = float(s[0] ** 2 / Xc.shape[0])
    if var_u == 0:
        return GuidedPCA(delta=float("nan"), p_value=float("nan"), n_permutations=0)
    scores = u * s
    Y = group_indicator(codes, levels.size)
    delta = _first_direction_variance(Y, scores) / var_u
    if n_permutations <= 0:
        return GuidedPCA(delta=delta, p_value=float("nan"), n_permutations=0)
    rng = np.random.default_rng(random_state)
    hits = 0
    for _ in range(n_permutations):
        perm = Y[rng.permutation(Y.shape[0])]
        if _first_direction_variance(perm, scores) / var_u >= delta - 1e-12:
            hits += 1
    return GuidedPCA(delta=delta, p_value=(1 + hits) / (1 + n_permutations),
                     n_permutations=n_permutations)


@dataclass(frozen=True)
class SitePrediction:
    """Result of :func:`site_prediction`.

    Attributes
    ----------
    balanced_accuracy : float
        Mean over folds.
    fold_scores : tuple of float
    chance : float
        1 / number of sites.
    """

    balanced_accuracy: float
    fold_scores: tuple[float, ...]
    chance: float


def _default_classifier() -> Any:
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Closed form with efficient leave-one-out choice of the penalty: deterministic, no
    # iteration to converge, and fast when features outnumber samples (works on X Xᵀ).
    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-2, 5, 8)))


def _new_harmonizer(harmonizer: Any) -> Any:
    if isinstance(harmonizer, type):
        return harmonizer()
    if hasattr(harmonizer, "fit") and hasattr(harmonizer, "get_params"):
        from sklearn.base import clone

        return clone(harmonizer)
    if callable(harmonizer):
        return harmonizer()
    raise DesignError(
        "harmonizer: pass an unfitted estimator (e.g. imharmony.ComBat()) or a function that "
        "returns a new one."
    )


def _adjust(X_tr: np.ndarray, X_te: np.ndarray, codes_tr: np.ndarray, Z_tr: np.ndarray,
            Z_te: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove covariate effects estimated on the training fold (within sites) from both."""
    mean = Z_tr.mean(axis=0)
    D = np.column_stack([group_indicator(codes_tr, k), Z_tr - mean])
    beta, *_ = np.linalg.lstsq(D, X_tr, rcond=None)
    b = beta[k:]
    return X_tr - (Z_tr - mean) @ b, X_te - (Z_te - mean) @ b


def site_prediction(
    X: Any,
    batch: Any,
    *,
    harmonizer: Any | Callable[[], Any] | None = None,
    covariates: Any = None,
    adjust_for: Any = None,
    classifier: Any = None,
    n_splits: int = N_SPLITS,
    random_state: int | None = None,
) -> SitePrediction:
    """Cross-validated balanced accuracy of predicting the site from the features.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
    batch : array-like, shape (n_samples,)
    harmonizer : estimator or callable, optional
        An unfitted harmonizer instance (cloned per fold), a class, or a factory returning a
        new one. In each fold
        it is fitted on the training samples only, ``fit(X_train, batch=..., covariates=...)``,
        and applied with ``transform(X, batch=..., covariates=...)`` to the training and the test
        samples (``covariates`` is passed only when given). Without it ``X`` is used as is.
    covariates : pandas.DataFrame, optional
        Passed to the harmonizer (not to the classifier).
    adjust_for : pandas.DataFrame or array-like, shape (n_samples, n_covariates), optional
        Biological variables whose effects are removed before the classifier sees the data, so
        that a real difference between the sites' populations (e.g. a different prevalence of
        disease) does not make the site predictable. In each fold the effects are estimated on
        the training samples in the model ``x ~ C(site) + covariates`` and removed from the
        training and test samples (no leakage).
    classifier : scikit-learn classifier, optional
        Cloned per fold. Default: standardization then ridge classification with the penalty
        chosen by efficient leave-one-out in the training fold (``RidgeClassifierCV``), which is
        deterministic and fast with more features than samples.
    n_splits : int
        Stratified folds (by site, shuffled with ``random_state``). Every site needs at least
        ``n_splits`` samples, so that each training fold holds every site.
    random_state : int or None

    Returns
    -------
    SitePrediction
        Compare ``balanced_accuracy`` with ``chance`` = 1 / number of sites: near chance means
        no site signature a linear classifier can find. On data harmonized on all samples at
        once (no ``harmonizer``), an accuracy well *below* chance is expected: each training
        fold's site means are pulled away from the held-out samples (the negative bias of
        cross-validating centred data); it is not a site signature.
    """
    import pandas as pd
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    Xa, _ = as_matrix(X, name="X")
    n = Xa.shape[0]
    labels = as_labels(batch, n, name="batch")
    levels, codes = encode_labels(labels)
    if levels.size < 2:
        raise DesignError("batch: only one site; nothing to predict.")
    counts = np.bincount(codes)
    if counts.min() < n_splits:
        small = [str(levels[i]) for i in np.flatnonzero(counts < n_splits)]
        raise DesignError(
            f"site prediction with {n_splits} folds needs at least {n_splits} samples per site; "
            f"site(s) {small} have fewer. Lower n_splits or drop those sites."
        )
    cov_df = None
    if covariates is not None:
        cov_df = covariates if isinstance(covariates, pd.DataFrame) else \
            as_covariate_design(covariates, n)
        cov_df = cov_df.reset_index(drop=True)
    Z = None
    if adjust_for is not None:
        Z = as_covariate_design(adjust_for, n).to_numpy(dtype=float)
    clf0 = classifier if classifier is not None else _default_classifier()
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    scores = []
    for train, test in folds.split(Xa, codes):
        X_tr, X_te = Xa[train], Xa[test]
        if harmonizer is not None:
            h = _new_harmonizer(harmonizer)
            kw_tr: dict[str, Any] = {"batch": labels[train]}
            kw_te: dict[str, Any] = {"batch": labels[test]}
            if cov_df is not None:
                kw_tr["covariates"] = cov_df.iloc[train].reset_index(drop=True)
                kw_te["covariates"] = cov_df.iloc[test].reset_index(drop=True)
            h.fit(X_tr, **kw_tr)
            X_tr = np.asarray(h.transform(X_tr, **kw_tr), dtype=float)
            X_te = np.asarray(h.transform(X_te, **kw_te), dtype=float)
        if Z is not None and Z.shape[1]:
            X_tr, X_te = _adjust(X_tr, X_te, codes[train], Z[train], Z[test], levels.size)
        clf = clone(clf0)
        clf.fit(X_tr, codes[train])
        scores.append(float(balanced_accuracy_score(codes[test], clf.predict(X_te))))
    return SitePrediction(balanced_accuracy=float(np.mean(scores)), fold_scores=tuple(scores),
                          chance=1.0 / levels.size)
