"""Moved to :mod:`imharmony.workflows.batch` (a workflow over a collection, not an image step).

The names stay importable from here.
"""

from ..workflows.batch import (
    MR_METADATA_COLUMNS,
    NORMALIZERS,
    SUMMARY_NAME,
    ManifestError,
    harmonize_images,
    parse_fwhm,
    read_manifest,
)

__all__ = [
    "MR_METADATA_COLUMNS",
    "NORMALIZERS",
    "SUMMARY_NAME",
    "ManifestError",
    "harmonize_images",
    "parse_fwhm",
    "read_manifest",
]
