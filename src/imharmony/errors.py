"""Errors raised for user mistakes and bad input.

Every error names what was wrong (the file, the DICOM tag or the column) and how to fix it. The
command line prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "ConfoundingError",
    "ConvergenceWarning",
    "DataError",
    "DesignError",
    "HarmonizationError",
    "HarmonizationWarning",
    "ModelFileError",
    "NotFittedError",
    "UnseenBatchError",
]


class HarmonizationError(ValueError):
    """Base class of every error caused by input or usage (not by a bug in imharmony)."""


class DataError(HarmonizationError):
    """The data themselves are unusable as given (non-numeric, non-finite, wrong shape)."""


class DesignError(HarmonizationError):
    """The batch/covariate design cannot be estimated (rank deficient, too few samples)."""


class ConfoundingError(DesignError):
    """Site and the biology to preserve are completely confounded."""


class UnseenBatchError(HarmonizationError):
    """A batch (site) label at transform time that the model was not fitted on."""


class ModelFileError(HarmonizationError):
    """A saved model file is missing, corrupted, of an unknown version, or inconsistent."""


class NotFittedError(HarmonizationError, AttributeError):
    """A harmonizer was used before ``fit``."""


class HarmonizationWarning(UserWarning):
    """Something was done that the user should know about (e.g. a feature left unadjusted)."""


class ConvergenceWarning(HarmonizationWarning):
    """An iterative estimate stopped at its iteration cap before reaching its tolerance."""
