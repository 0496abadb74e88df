"""Missing values in the diagnostics: each feature is analysed on its complete cases.

ComBat keeps a missing value missing, so the tables a user diagnoses can hold NaN. A sample that
lacks one feature still counts for the others: the per-feature tests run, for each feature, on
the samples where it is present before *and* after. Features are grouped by their pattern of
missing samples, so that the work stays vectorized over the features that share a pattern (all
the complete features form one group).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["missing_patterns"]


def missing_patterns(missing: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, columns)`` for each distinct pattern of missing values.

    Parameters
    ----------
    missing : numpy.ndarray of bool, shape (n_samples, n_features)
        True where a value is missing (before or after).

    Yields
    ------
    rows : numpy.ndarray of bool, shape (n_samples,)
        The samples present in every feature of the group (its complete cases).
    columns : numpy.ndarray of int
        The features sharing that pattern, in increasing order.
    """
    if not missing.any():
        yield np.ones(missing.shape[0], dtype=bool), np.arange(missing.shape[1])
        return
    keys, inverse = np.unique(missing.T, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    for i in range(keys.shape[0]):
        yield ~keys[i], np.flatnonzero(inverse == i)
