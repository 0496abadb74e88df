"""Site differences in the covariance between features (what CovBat harmonizes).

ComBat aligns each feature's mean and variance across sites; a multivariate classifier also sees
the covariance between features, which sites distort too (Chen et al. 2022). This module measures
that distortion, per site, as the distance between the site's covariance matrix and the pooled
within-site covariance, both of features scaled to unit pooled within-site variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._data import as_labels, as_matrix, check_min_group_size, encode_labels

__all__ = ["CovarianceDistance", "covariance_distance"]


@dataclass(frozen=True)
class CovarianceDistance:
    """Per-site covariance distances (see :func:`covariance_distance`).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per site (index: site label), columns ``n`` and ``distance``.
    mean : float
        The distances averaged with weights n_j (one number for before/after comparisons).
    """

    table: pd.DataFrame
    mean: float


def covariance_distance(X: Any, batch: Any) -> CovarianceDistance:
    """Distance of every site's feature covariance from the pooled within-site covariance.

    Parameters
    ----------
    X : array-like or pandas.DataFrame, shape (n_samples, n_features)
        Features (finite values), ideally residuals after the biology and covariates.
    batch : array-like, shape (n_samples,)
        Site of each sample; every site needs at least 2 samples.

    Returns
    -------
    CovarianceDistance

    Notes
    -----
    Features are centred within each site and divided by their pooled within-site standard
    deviation, giving per-site covariance matrices S_j (divisor n_j - 1) and the pooled
    S = sum_j (n_j - 1) S_j / (n - J). The distance of site j is the relative Frobenius norm
    ||S_j - S||_F / ||S||_F: 0 when every site has the same covariance. All norms come from the
    n x n Gram matrix of the scaled data (||A_j^T A_k||_F^2 = ||A_j A_k^T||_F^2), so the cost
    is O(n^2 p) and no p x p matrix is formed.

    References
    ----------
    A. A. Chen et al., "Mitigating site effects in covariance for machine learning in
    neuroimaging data", Human Brain Mapping 43(4):1179-1195, 2022.
    """
    A, _ = as_matrix(X)
    n = A.shape[0]
    site = as_labels(batch, n, name="batch")
    levels, codes = encode_labels(site)
    check_min_group_size(codes, levels, minimum=2, what="a covariance distance")
    J = levels.size
    if n - J < 1:
        raise DataError("covariance distance: too few samples for the number of sites.")
    A = A.copy()
    for j in range(J):
        rows = codes == j
        A[rows] -= A[rows].mean(axis=0)
    sd = np.sqrt((A * A).sum(axis=0) / (n - J))
    A /= np.where(sd > 0, sd, 1.0)
    K = A @ A.T
    counts = np.bincount(codes, minlength=J).astype(float)
    onehot = np.zeros((J, n))
    onehot[codes, np.arange(n)] = 1.0
    # cross[j, k] = ||A_j^T A_k||_F^2 = sum over rows of j and k of K^2
    cross = onehot @ (K * K) @ onehot.T
    w = (counts - 1.0) / (n - J)  # pooled S = sum_k w_k S_k
    scaled = cross / np.outer(counts - 1.0, counts - 1.0)  # <S_j, S_k>_F
    pooled_sq = w @ scaled @ w
    dist_sq = np.diag(scaled) - 2.0 * scaled @ w + pooled_sq
    dist = np.sqrt(np.maximum(dist_sq, 0.0) / pooled_sq) if pooled_sq > 0 else np.zeros(J)
    table = pd.DataFrame({"n": counts.astype(int), "distance": dist}, index=pd.Index(levels))
    table.index.name = "site"
    return CovarianceDistance(table=table, mean=float(counts @ dist / n))
