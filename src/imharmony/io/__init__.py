"""Reading and writing images and feature tables (imported lazily, on first use)."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DicomError": ".dicom",
        "DicomSeriesError": ".dicom",
        "DicomSizeError": ".dicom",
        "ImageFormatError": ".images",
        "atomic_path": "._atomic",
        "list_dicom_series": ".dicom",
        "read_dicom_series": ".dicom",
        "OptionalDependencyError": ".rasters",
        "read_image": ".images",
        "read_raster": ".rasters",
        "read_table": ".tables",
        "write_image": ".images",
        "write_raster": ".rasters",
        "write_table": ".tables",
    },
)
