"""Errors raised for user mistakes and bad input.

Every error names what was wrong (the file, the DICOM tag or the column) and how to fix it. The
command line prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

import importlib
from typing import Any

# Errors defined beside the code that raises them, importable from here too.
_ELSEWHERE: dict[str, str] = {
    "DicomError": "imharmony.io.dicom",
    "DicomSeriesError": "imharmony.io.dicom",
    "DicomSizeError": "imharmony.io.dicom",
    "HounsfieldError": "imharmony.physics.ct",
    "ManifestError": "imharmony.imaging.batch",
    "NotHarmonizableError": "imharmony.physics.mr",
    "OptionalDependencyError": "imharmony.imaging.multiband",
    "ProtocolReferenceError": "imharmony.physics.protocol",
    "ResolutionError": "imharmony.imaging.resolution",
    "SUVError": "imharmony.physics.pet",
}

__all__ = [
    "ConfoundingError",
    "ConvergenceWarning",
    "DataError",
    "DesignError",
    "HarmonizationError",
    "HarmonizationWarning",
    "ImageFormatError",
    "ModelFileError",
    "NotFittedError",
    "OutputError",
    "UnseenBatchError",
    *_ELSEWHERE,
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


class ImageFormatError(DataError):
    """An image file is missing, of an unknown format, truncated, or cannot be decoded."""


class OutputError(HarmonizationError):
    """An output cannot be written where asked: an input, a folder, read-only or full."""


class NotFittedError(HarmonizationError, AttributeError):
    """A harmonizer was used before ``fit``."""


class HarmonizationWarning(UserWarning):
    """Something was done that the user should know about (e.g. a feature left unadjusted)."""


class ConvergenceWarning(HarmonizationWarning):
    """An iterative estimate stopped at its iteration cap before reaching its tolerance."""


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
