"""The choices and defaults that the Python API and the command line share, stated once.

The API modules use these tuples to validate their parameters (and these numbers as their
defaults); the command line (:mod:`imharmony._cli`) reads them for ``choices=`` and ``default=``.
They live here, in a module that imports nothing, because the modules that own the methods load
pandas, SciPy or scikit-learn, and ``imharmony --help`` must not. ``docs/vocabulary.md`` lists
the names; ``tests/cli/test_vocabulary.py`` checks that every API keyword has its flag and that
the command line's defaults are the API's.
"""

from __future__ import annotations

__all__ = [
    "BIOLOGY_TYPES",
    "DEMO_RANDOM_STATE",
    "EARL_STANDARDS",
    "LONGITUDINAL_RANDOM",
    "LONGITUDINAL_SIGMA",
    "MAX_FEATURES",
    "N_PERMUTATIONS",
    "N_SPLITS",
    "SMOOTH_CRITERIA",
    "TRAVELLING_SCALES",
]

# -- diagnostics ---------------------------------------------------------------------------------
#: How the biology is read: ``biology_type`` of diagnose, check_confounding, fisher_ratio, ...
BIOLOGY_TYPES: tuple[str, ...] = ("auto", "categorical", "continuous")
#: Folds of the cross-validated site prediction (``n_splits``).
N_SPLITS = 5
#: Site shuffles of the guided-PCA p-value (``n_permutations``).
N_PERMUTATIONS = 1000
#: Features given a mixed model in :func:`imharmony.diagnose` (``max_features``).
MAX_FEATURES = 100

# -- feature-level harmonizers ----------------------------------------------------------------
#: Data-driven choices of ComBat-GAM's spline penalty (``smooth_penalty``; or a number).
SMOOTH_CRITERIA: tuple[str, ...] = ("cv", "gcv")
#: Subject random effects of LongitudinalComBat (``random``); the first is the default.
LONGITUDINAL_RANDOM: tuple[str, ...] = ("intercept", "slope")
#: Feature scale of LongitudinalComBat (``sigma``); the first is the default.
LONGITUDINAL_SIGMA: tuple[str, ...] = ("reml", "msr")

# -- calibration ---------------------------------------------------------------------------------
#: EARL accreditation standards known to :func:`imharmony.calibration.earl_filter` (``standard``).
EARL_STANDARDS: tuple[str, ...] = ("EARL1", "EARL2")
#: Site models of TravellingSubjects (``scale``); the first is the default.
TRAVELLING_SCALES: tuple[str, ...] = ("additive", "linear")

# -- demo ------------------------------------------------------------------------------------------
#: Seed of the demo cohort (``run_demo(random_state=...)``).
DEMO_RANDOM_STATE = 2026
