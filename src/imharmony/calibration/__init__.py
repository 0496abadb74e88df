"""Calibration from physical truth: phantoms (NEMA/EARL PET, insert phantoms, measured
resolution), travelling subjects and acquisition mappings.

Names are imported lazily, on first use.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        # NEMA IEC body phantom and EARL (PET)
        "NemaError": ".nema",
        "NemaRecovery": ".nema",
        "nema_recovery": ".nema",
        "EARLError": ".earl",
        "EARLFilter": ".earl",
        "apply_earl_filter": ".earl",
        "earl_bands": ".earl",
        "earl_compliance": ".earl",
        "earl_filter": ".earl",
        # measured resolution
        "measure_fwhm": ".resolution",
        # insert phantoms, travelling subjects, acquisition mappings
        "PhantomCalibration": ".inserts",
        "TravellingSubjects": ".travelling",
        "AcquisitionMapping": ".mapping",
        "make_travelling_study": ".cohorts",
    },
)
