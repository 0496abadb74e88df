"""Diagnostics: was the site effect removed, and was the biology kept?

Pure functions on samples x features data (numpy arrays or DataFrames), one label per sample for
the site, and optionally the biology and covariates. :func:`diagnose` runs them all and returns a
:class:`Diagnosis` with two verdicts; the individual measures are available on their own:

- :mod:`~imharmony.diagnostics.site`: per-feature site tests (Kruskal-Wallis, ANOVA, ANCOVA,
  Brown-Forsythe, Anderson-Darling), Benjamini-Hochberg, effect sizes;
- :mod:`~imharmony.diagnostics.multivariate`: PCA silhouette, guided PCA, site prediction;
- :mod:`~imharmony.diagnostics.biology`: Fisher ratios and mixed-model coefficients before/after;
- :mod:`~imharmony.diagnostics.confounding`: site x biology confounding, before any fit;
- :mod:`~imharmony.diagnostics.covariance`: per-site covariance distance (what CovBat adds);
- :mod:`~imharmony.diagnostics.agreement`: CCC, ICC(2,1), Bland-Altman, Koo & Li bands;
- :mod:`~imharmony.diagnostics.bands`: what a radiometric normalization did to band ratios.

Names are imported lazily, on first use.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "BlandAltman": ".agreement",
        "ConfoundingReport": ".confounding",
        "ConfoundingThresholds": ".confounding",
        "CovarianceDistance": ".covariance",
        "Diagnosis": ".verdict",
        "GuidedPCA": ".multivariate",
        "SitePrediction": ".multivariate",
        "SiteTests": ".site",
        "Thresholds": ".verdict",
        "agreement": ".agreement",
        "anova_oneway": ".site",
        "benjamini_hochberg": ".site",
        "band_distortion": ".bands",
        "bland_altman": ".agreement",
        "brown_forsythe": ".site",
        "check_confounding": ".confounding",
        "concordance_correlation": ".agreement",
        "covariance_distance": ".covariance",
        "cramers_v": ".confounding",
        "diagnose": ".verdict",
        "diagnose_batches": ".batches",
        "fisher_preservation": ".biology",
        "fisher_ratio": ".biology",
        "guided_pca": ".multivariate",
        "icc_2_1": ".agreement",
        "koo_li_band": ".agreement",
        "kruskal_wallis": ".site",
        "mixed_effects": ".biology",
        "pca_silhouette": ".multivariate",
        "phantom_agreement": ".agreement",
        "residualize": ".site",
        "site_prediction": ".multivariate",
        "site_tests": ".site",
        "within_site_fisher": ".biology",
    },
)
