"""Image-level harmonization: grid, resolution, intensity, histograms, multi-band rasters.

Names are imported lazily, on first use.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "FWHM_PER_SIGMA": ".resolution",
        "HistogramStandardizer": ".nyul",
        "IQR_TO_SD": ".intensity",
        "IRMADResult": ".irmad",
        "MR_METADATA_COLUMNS": "..workflows.batch",
        "ManifestError": "..workflows.batch",
        "NORMALIZERS": "..workflows.batch",
        "OptionalDependencyError": "..io.rasters",
        "ReferenceDistribution": ".histogram",
        "ResolutionError": ".resolution",
        "antialias_sigma": ".resample",
        "band_distortion": "..diagnostics.bands",
        "discrete_gaussian_kernel": ".resolution",
        "fwhm_to_sigma": ".resolution",
        "gaussian_blur": ".resolution",
        "harmonize_images": "..workflows.batch",
        "irmad": ".irmad",
        "irmad_normalize": ".irmad",
        "linear_bands": ".multiband",
        "match_bands": ".multiband",
        "match_histogram": ".histogram",
        "match_resolution": ".resolution",
        "parse_fwhm": "..workflows.batch",
        "read_manifest": "..workflows.batch",
        "read_raster": "..io.rasters",
        "resample": ".resample",
        "resample_mask": ".resample",
        "resample_to_grid": ".resample",
        "resampled_grid": ".resample",
        "robust_zscore": ".intensity",
        "whitestripe": ".intensity",
        "write_raster": "..io.rasters",
        "zscore": ".intensity",
    },
)
