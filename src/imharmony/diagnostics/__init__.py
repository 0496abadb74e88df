"""Diagnostics: was the site effect removed, and was the biology kept?

Pure functions on samples x features data (numpy arrays or DataFrames), one label per sample for
the site, and optionally the biology and covariates. :func:`diagnose` runs them all and returns a
:class:`Diagnosis` with two verdicts; the individual measures are available on their own:

- :mod:`~imharmony.diagnostics.site`: per-feature site tests (Kruskal-Wallis, ANOVA, ANCOVA,
  Brown-Forsythe, Anderson-Darling), Benjamini-Hochberg, effect sizes;
- :mod:`~imharmony.diagnostics.multivariate`: PCA silhouette, guided PCA, site prediction;
- :mod:`~imharmony.diagnostics.biology`: Fisher ratios and mixed-model coefficients before/after;
- :mod:`~imharmony.diagnostics.confounding`: site x biology confounding, before any fit;
- :mod:`~imharmony.diagnostics.agreement`: CCC, ICC(2,1), Bland-Altman, Koo & Li bands.
"""

from .agreement import (
    BlandAltman,
    agreement,
    bland_altman,
    concordance_correlation,
    icc_2_1,
    koo_li_band,
)
from .biology import fisher_preservation, fisher_ratio, mixed_effects
from .confounding import ConfoundingReport, ConfoundingThresholds, check_confounding, cramers_v
from .diagnose import Diagnosis, Thresholds, diagnose
from .multivariate import (
    GuidedPCA,
    SitePrediction,
    guided_pca,
    pca_silhouette,
    site_prediction,
)
from .site import (
    SiteTests,
    anova_oneway,
    benjamini_hochberg,
    brown_forsythe,
    kruskal_wallis,
    site_tests,
)

__all__ = [
    "BlandAltman",
    "ConfoundingReport",
    "ConfoundingThresholds",
    "Diagnosis",
    "GuidedPCA",
    "SitePrediction",
    "SiteTests",
    "Thresholds",
    "agreement",
    "anova_oneway",
    "benjamini_hochberg",
    "bland_altman",
    "brown_forsythe",
    "check_confounding",
    "concordance_correlation",
    "cramers_v",
    "diagnose",
    "fisher_preservation",
    "fisher_ratio",
    "guided_pca",
    "icc_2_1",
    "koo_li_band",
    "kruskal_wallis",
    "mixed_effects",
    "pca_silhouette",
    "site_prediction",
    "site_tests",
]
