"""imharmony: harmonize quantitative images and features across sites without erasing biology.

The public API is listed in ``__all__``; each name is imported on first use, so ``import
imharmony`` is cheap. Everything else lives in the subpackages (``imharmony.physics``,
``imharmony.imaging``, ``imharmony.features``, ``imharmony.diagnostics``, ``imharmony.io``).
"""

from ._lazy import attach
from ._version import __version__ as __version__
from .errors import HarmonizationError as HarmonizationError
from .image import Image as Image

__getattr__, __dir__, _lazy_all = attach(
    __name__,
    {
        # images and files
        "read_image": ".io.images",
        "write_image": ".io.images",
        "read_dicom_series": ".io.dicom",
        "read_table": ".io.tables",
        "write_table": ".io.tables",
        # physics and prospective alignment
        "scan_protocols": ".protocols.scan",
        "audit_protocols": ".protocols.reference",
        "mr_weighting": ".physics.mr",
        "harmonizable": ".physics.compatibility",
        "suv_factors": ".physics.pet",
        # image level
        "resample": ".imaging.resample",
        "match_resolution": ".imaging.resolution",
        "zscore": ".imaging.intensity",
        "robust_zscore": ".imaging.intensity",
        "whitestripe": ".imaging.intensity",
        "match_histogram": ".imaging.histogram",
        "HistogramStandardizer": ".imaging.nyul",
        "band_distortion": ".diagnostics.bands",
        "irmad_normalize": ".imaging.irmad",
        "harmonize_images": ".workflows.batch",
        # feature level
        "ComBat": ".features.estimators",
        "CovBat": ".features.covbat",
        "LongitudinalComBat": ".features.longitudinal",
        "region_features": ".features.extract",
        # calibration from physical truth
        "PhantomCalibration": ".calibration.inserts",
        "TravellingSubjects": ".calibration.travelling",
        "AcquisitionMapping": ".calibration.mapping",
        # diagnostics
        "diagnose": ".diagnostics.verdict",
        "Diagnosis": ".diagnostics.verdict",
        "check_confounding": ".diagnostics.confounding",
        # calibration from physical truth
        "measure_fwhm": ".calibration.resolution",
    },
)

__all__ = sorted(["HarmonizationError", "Image", "__version__", *_lazy_all])
