"""Feature-level harmonization: ComBat (numerical core and scikit-learn estimator)."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ComBat": ".estimators",
        "CombatFit": ".combat",
        "CovBat": ".covbat",
        "LongitudinalComBat": ".longitudinal",
        "FIRST_ORDER_FEATURES": ".extract",
        "features_wide": ".extract",
        "radiomics_features": ".extract",
        "region_features": ".extract",
        "apply_combat": ".combat",
        "fit_combat": ".combat",
    },
)
