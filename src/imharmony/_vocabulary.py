"""The choices and defaults that the Python API and the command line share, stated once.

The API modules use these tuples to validate their parameters (and these numbers as their
defaults); the command line (:mod:`imharmony._cli`) reads them for ``choices=`` and ``default=``.
They live here, in a module that imports nothing, because the modules that own the methods load
pandas, SciPy or scikit-learn, and ``imharmony --help`` must not. The README's "Vocabulary"
section lists the names; ``tests/cli/test_vocabulary.py`` checks that every API keyword has its
flag and that the command line's defaults are the API's.
"""

from __future__ import annotations

__all__ = [
    "ALPHA",
    "BIOLOGY_TYPES",
    "DEMO_RANDOM_STATE",
    "EARL_STANDARDS",
    "FISHER_ERASED_BELOW",
    "FISHER_INFLATED_ABOVE",
    "LONGITUDINAL_RANDOM",
    "LONGITUDINAL_SIGMA",
    "MAX_FEATURES",
    "NEGLIGIBLE_EFFECT",
    "N_PERMUTATIONS",
    "N_SPLITS",
    "SE_INFLATED_BELOW",
    "SHRINKAGE_KEPT",
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
# The defaults of :class:`imharmony.diagnostics.Thresholds`, which are also the defaults of the
# keywords of the same meaning in the single measures (site_tests, fisher_preservation, ...).
#: False-discovery rate of every per-feature test (``alpha``).
ALPHA = 0.05
#: Effect size below which a significant site difference is negligible (``negligible_effect``).
NEGLIGIBLE_EFFECT = 0.01
#: Fisher ratio after/before below which the biology is "erased" (``fisher_erased_below``).
FISHER_ERASED_BELOW = 0.8
#: ... and above which it is "inflated" (``fisher_inflated_above``; 1 / 0.8).
FISHER_INFLATED_ABOVE = 1.25
#: Band of the mixed-model shrinkage ratio called "kept" (``shrinkage_kept``).
SHRINKAGE_KEPT: tuple[float, float] = (0.9, 1.1)
#: Median SE after / SE raw below which the biology is "inflated" (``se_inflated_below``).
SE_INFLATED_BELOW = 0.5

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
