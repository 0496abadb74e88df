"""imharmony.calibration: harmonization from physical truth (phantoms, travelling subjects)."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "PhantomCalibration": ".inserts",
        "TravellingSubjects": ".travelling",
        "AcquisitionMapping": ".mapping",
        "make_travelling_study": ".cohorts",
    },
)
