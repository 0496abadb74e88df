"""Feature-level harmonization: ComBat (numerical core and scikit-learn estimator)."""

from .combat import CombatFit, apply_combat, fit_combat
from .estimators import ComBat

__all__ = ["ComBat", "CombatFit", "apply_combat", "fit_combat"]
