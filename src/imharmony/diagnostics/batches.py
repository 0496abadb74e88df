"""Diagnostics per batch variable, for data harmonized over several (scanner, kernel, ...)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import DataError
from .verdict import Diagnosis, diagnose

__all__ = ["diagnose_batches"]


def diagnose_batches(
    before: Any, after: Any, *, batch: pd.DataFrame, **kwargs: Any
) -> dict[str, Diagnosis]:
    """Run :func:`~imharmony.diagnostics.diagnose` once per batch variable.

    Parameters
    ----------
    before, after : array-like or DataFrame, shape (n_samples, n_features)
        The same samples before and after harmonization.
    batch : DataFrame, shape (n_samples, n_batch_variables)
        One column per batch variable (as given to ``ComBat().fit(X, batch=DataFrame)``).
    **kwargs
        Passed to :func:`~imharmony.diagnostics.diagnose` for every variable (``biology``,
        ``covariates``, ``random_state``, ...).

    Returns
    -------
    dict
        Batch variable name -> its :class:`~imharmony.diagnostics.Diagnosis`, in column order.
        Each diagnosis treats that variable as the site; a site effect left in any of them
        means the sequential correction did not remove it.
    """
    if not isinstance(batch, pd.DataFrame) or batch.shape[1] == 0:
        raise DataError(
            "diagnose_batches: batch must be a DataFrame with one column per batch variable; "
            "for a single variable use diagnose(before, after, batch=...)."
        )
    frame = batch.reset_index(drop=True)
    return {str(col): diagnose(before, after, batch=frame[col], **kwargs) for col in frame.columns}
