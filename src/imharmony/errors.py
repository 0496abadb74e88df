"""Errors raised for user mistakes and bad input.

Every error names what was wrong (the file, the DICOM tag or the column) and how to fix it. The
command line prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# Errors defined beside the code that raises them, importable from here too.
_ELSEWHERE: dict[str, str] = {
    "DicomError": "imharmony.io.dicom",
    "DicomSeriesError": "imharmony.io.dicom",
    "DicomSizeError": "imharmony.io.dicom",
    "EARLError": "imharmony.calibration.earl",
    "HounsfieldError": "imharmony.physics.ct",
    "ManifestError": "imharmony.workflows.batch",
    "MRScalingError": "imharmony.physics.mr",
    "NemaError": "imharmony.calibration.nema",
    "NotHarmonizableError": "imharmony.physics.compatibility",
    "ProtocolReferenceError": "imharmony.protocols.reference",
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
    "OptionalDependencyError",
    "OutputError",
    "UnseenBatchError",
    "optional_import",
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


class OutputError(HarmonizationError, OSError):
    """An output cannot be written where asked: an input, a folder, read-only or full.

    Also an :class:`OSError`, so code that handles failed writes as OS errors still does.
    """


class OptionalDependencyError(HarmonizationError):
    """An optional package needed for this input, output or method is not installed."""


class NotFittedError(HarmonizationError, AttributeError):
    """A harmonizer was used before ``fit``."""


class HarmonizationWarning(UserWarning):
    """Something was done that the user should know about (e.g. a feature left unadjusted)."""


class ConvergenceWarning(HarmonizationWarning):
    """An iterative estimate stopped at its iteration cap before reaching its tolerance."""


def optional_import(module: str, purpose: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say what needs it and what to install.

    Parameters
    ----------
    module : str
        The module to import (e.g. ``"rasterio"``).
    purpose : str
        What needs it, for the message (e.g. ``"reading GeoTIFF files"``).
    extra : str
        What to install: a pip requirement or an imharmony extra (``"imharmony[raster]"``).

    Raises
    ------
    OptionalDependencyError
        If the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{purpose} needs the optional package '{module}', which is not installed; install "
            f"it with 'pip install {extra}'."
        ) from exc


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
