"""Reading and writing images and feature tables."""

from ._atomic import atomic_path
from .dicom import (
    DicomError,
    DicomSeriesError,
    DicomSizeError,
    list_dicom_series,
    read_dicom_series,
)
from .images import ImageFormatError, read_image, write_image
from .tables import read_table, write_table

__all__ = [
    "DicomError",
    "DicomSeriesError",
    "DicomSizeError",
    "ImageFormatError",
    "atomic_path",
    "list_dicom_series",
    "read_dicom_series",
    "read_image",
    "read_table",
    "write_image",
    "write_table",
]
