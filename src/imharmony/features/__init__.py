"""Feature-level harmonization: ComBat (numerical core and scikit-learn estimator)."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ComBat": ".estimators",
        "CombatFit": ".combat",
        "apply_combat": ".combat",
        "fit_combat": ".combat",
    },
)
