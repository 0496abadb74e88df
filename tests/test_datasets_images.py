"""The built-in multi-site image cohort: its truth is what it says it is."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from imharmony.datasets import (
    IMAGE_LABELS,
    TISSUE_INTENSITY,
    _resample_labels,
    make_multisite_images,
)
from imharmony.errors import HarmonizationError
from imharmony.image import Image

SMALL = {"fine_shape": 32}


def _quiet_sites(k: int, **over: object) -> dict[str, object]:
    """k identical noise-free, blur-free sites on the fine grid, unless overridden."""
    kw: dict[str, object] = {
        "site_gain": [1.0] * k,
        "site_offset": [0.0] * k,
        "site_fwhm": [0.0] * k,
        "site_spacing": [1.0] * k,
        "site_noise": [0.0] * k,
        "scan_gain_sd": 0.0,
    }
    kw.update(over)
    return kw


def test_truth_table_and_geometry_are_as_stated() -> None:
    d = make_multisite_images(n_per_site=(3, 4, 2, 3), prevalence=(0.0, 0.5, 0.5, 1.0),
                              random_state=0, **SMALL)
    t = d.truth
    assert list(t.index) == ["siteA", "siteB", "siteC", "siteD"] == d.sites
    assert t["gain"].tolist() == [1.0, 1.3, 0.8, 1.15]
    assert t["offset"].tolist() == [0.0, 20.0, -10.0, 35.0]
    assert t[["spacing_0", "spacing_1", "spacing_2"]].loc["siteD"].tolist() == [1.0, 1.0, 3.0]
    assert t[["fwhm_0", "fwhm_1", "fwhm_2"]].loc["siteB"].tolist() == [2.5, 2.5, 3.0]
    assert t.loc["siteB", "source_fwhm"] == "2.5;2.5;3"
    assert t["n_subjects"].tolist() == [3, 4, 2, 3]
    assert len(d.images) == len(d.labels) == len(d.regions) == len(d.table) == 12
    for img, lab, reg, site in zip(d.images, d.labels, d.regions, d.table["site"], strict=True):
        spacing = tuple(t.loc[site, ["spacing_0", "spacing_1", "spacing_2"]])
        assert img.spacing == lab.spacing == reg.spacing == spacing
        assert img.array.shape == lab.array.shape == reg.array.shape
        # the IBSI grid of a 32 mm field of view: ceil(32 / s) voxels per axis
        assert img.array.shape == tuple(int(np.ceil(32 / s - 1e-9)) for s in spacing)
        assert img.array.dtype == np.float32 and lab.array.dtype == np.uint8
        assert reg.array.dtype == bool
        assert set(np.unique(lab.array)) <= set(IMAGE_LABELS) | {0}
        assert img.meta["site"] == site
    assert list(d.table.columns) == ["subject", "site", "age", "sex", "disease"]
    assert d.table["subject"].is_unique


def test_prevalence_per_site_is_exact_and_differs_by_site() -> None:
    d = make_multisite_images(n_per_site=(10, 10, 5), prevalence=(0.2, 0.5, 0.8),
                              random_state=1, **_quiet_sites(3), **SMALL)
    by_site = d.table.groupby("site")["disease"].agg(["sum", "count"])
    assert by_site["sum"].tolist() == [2, 5, 4]  # round(p n)
    assert by_site["count"].tolist() == [10, 10, 5]
    assert d.truth["n_diseased"].tolist() == [2, 5, 4]
    assert d.truth["prevalence"].tolist() == [0.2, 0.5, 0.8]


def test_reproducible_and_the_same_subjects_can_be_rescanned_by_other_sites() -> None:
    kw = {"n_per_site": (2, 2), "prevalence": (0.5, 0.5), "return_clean": True, **SMALL}
    a = make_multisite_images(random_state=7, **kw)
    b = make_multisite_images(random_state=7, **kw)
    c = make_multisite_images(random_state=8, **kw)
    assert a.table.equals(b.table)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x.array, y.array)
    assert not np.array_equal(a.images[0].array, c.images[0].array)
    # other acquisitions, same random_state: the same subjects (table and site-free images)
    other = make_multisite_images(random_state=7, **kw, **_quiet_sites(2, site_gain=[2.0, 3.0]))
    assert a.table.equals(other.table)
    assert a.clean is not None and other.clean is not None
    for x, y in zip(a.clean, other.clean, strict=True):
        np.testing.assert_array_equal(x.array, y.array)


def test_gain_and_offset_exactly_without_blur_or_noise_on_the_fine_grid() -> None:
    d = make_multisite_images(
        n_per_site=(2, 2), prevalence=(0.5, 0.5), return_clean=True, random_state=3,
        **_quiet_sites(2, site_gain=[1.0, 1.7], site_offset=[0.0, -12.5]), **SMALL,
    )
    assert d.clean is not None
    for img, clean, site in zip(d.images, d.clean, d.table["site"], strict=True):
        g, o = d.truth.loc[site, ["gain", "offset"]]
        np.testing.assert_allclose(img.array, g * clean.array + o, rtol=1e-6, atol=1e-4)


def test_each_scan_has_its_own_gain_around_the_site_gain() -> None:
    d = make_multisite_images(
        n_per_site=(40, 40), prevalence=(0.5, 0.5), return_clean=True, random_state=9,
        fine_shape=16,
        **_quiet_sites(2, site_gain=[1.0, 2.0], site_offset=[5.0, 0.0], scan_gain_sd=0.1),
    )
    assert d.clean is not None
    g = d.scan_gain
    assert list(g.index) == d.table["subject"].tolist()
    # 80 draws of N(1, 0.1^2): the sample SD is within 0.1 +- 4 standard errors (0.008)
    assert 0.068 < g.std() < 0.132 and abs(g.mean() - 1.0) < 0.045
    for img, clean, site, gi in zip(d.images, d.clean, d.table["site"], g, strict=True):
        gain, offset = d.truth.loc[site, ["gain", "offset"]]
        np.testing.assert_allclose(img.array, gain * gi * clean.array + offset, rtol=1e-5,
                                   atol=1e-3)


def test_coarser_grid_samples_the_fine_image_at_the_ibsi_aligned_centres() -> None:
    # 32 voxels of 1 mm -> 16 of 2 mm: new centre k sits at old position 2k + 0.5 on every axis,
    # so (no blur) trilinear interpolation is the mean of the 2 x 2 x 2 old voxels around it
    d = make_multisite_images(
        n_per_site=(2, 2), prevalence=(0.0, 0.0), return_clean=True, random_state=4,
        **_quiet_sites(2, site_spacing=[2.0, 2.0], site_gain=[0.5, 2.0], site_offset=[3.0, 0.0]),
        **SMALL,
    )
    assert d.clean is not None
    for img, clean, site in zip(d.images, d.clean, d.table["site"], strict=True):
        g, o = d.truth.loc[site, ["gain", "offset"]]
        c = clean.array.astype(np.float64)
        block_mean = c.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
        np.testing.assert_allclose(img.array, g * block_mean + o, rtol=1e-5, atol=1e-3)


def test_psf_and_noise_are_as_stated() -> None:
    """Regressing the image on the site-free image blurred by the stated PSF (scipy's Gaussian,
    an independent implementation) recovers gain, offset and noise; without noise the fit is
    near exact, and a 30% narrower PSF fits clearly worse."""
    fwhm = (3.0, 3.0, 4.0)
    d = make_multisite_images(
        n_per_site=(2, 2), prevalence=(0.5, 0.5), return_clean=True, random_state=5,
        **_quiet_sites(2, site_gain=[1.25, 0.9], site_offset=[10.0, -5.0],
                       site_fwhm=[fwhm, fwhm], site_noise=[3.0, 0.0]),
        **SMALL,
    )
    assert d.clean is not None
    sigma = np.asarray(fwhm) / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    def fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
        slope, intercept = np.polyfit(x, y, 1)
        return float(slope), float(intercept), float((y - (slope * x + intercept)).std())

    for img, clean, site in zip(d.images, d.clean, d.table["site"], strict=True):
        g, o, noise = d.truth.loc[site, ["gain", "offset", "noise_sd"]]
        c = clean.array.astype(np.float64)
        y = img.array.ravel().astype(np.float64)
        x = ndimage.gaussian_filter(c, sigma, mode="reflect", truncate=6.0).ravel()
        slope, intercept, resid_sd = fit(x, y)
        assert slope == pytest.approx(g, rel=0.01)
        assert intercept == pytest.approx(o, abs=0.5)
        if noise > 0:
            assert resid_sd == pytest.approx(noise, rel=0.05)
        else:
            narrow = ndimage.gaussian_filter(c, 0.7 * sigma, mode="reflect", truncate=6.0)
            assert resid_sd < 0.01 * g * TISSUE_INTENSITY["wm"]
            assert fit(narrow.ravel(), y)[2] > 5 * resid_sd


def test_tissues_and_the_disease_effect_in_the_site_free_images() -> None:
    effect = -8.0
    d = make_multisite_images(
        n_per_site=(6, 6), prevalence=(0.5, 0.5), disease_effect=effect, return_clean=True,
        random_state=6, **_quiet_sites(2), **SMALL,
    )
    assert d.clean is not None
    gaps = []
    for clean, lab, reg in zip(d.clean, d.labels, d.regions, strict=True):
        b, lab_a = clean.array, lab.array
        means = {name: b[lab_a == value].mean() for value, name in IMAGE_LABELS.items()}
        # tissue levels near their nominal values (subject variation of a few units)
        for name in ("csf", "gm", "wm"):
            assert means[name] == pytest.approx(TISSUE_INTENSITY[name], abs=8.0)
        assert means["csf"] < means["gm"] < means["wm"]
        assert b[lab_a == 0].max() == 0.0
        # the region-of-interest grey matter lies inside the region
        assert reg.array[lab_a == 4].all()
        gaps.append(means["gm_roi"] - means["gm"])
    gaps_a = np.asarray(gaps)
    diseased = d.table["disease"].to_numpy() == 1
    # healthy: the region's grey matter is ordinary grey matter; diseased: shifted by the effect
    assert np.abs(gaps_a[~diseased]).max() < 1.5
    assert gaps_a[diseased].mean() - gaps_a[~diseased].mean() == pytest.approx(effect, abs=1.0)


def test_progress_is_reported_per_subject() -> None:
    calls: list[tuple[int, int]] = []
    make_multisite_images(n_per_site=(2, 3), prevalence=(0.5, 0.5), random_state=0,
                          progress=lambda i, n: calls.append((i, n)), **_quiet_sites(2),
                          **SMALL)
    assert calls == [(i, 5) for i in range(1, 6)]


def test_majority_label_resampling_keeps_the_mask_of_the_union() -> None:
    lab = np.zeros((12, 12, 12), dtype=np.uint8)
    lab[2:10, 2:10, 2:10] = 2
    lab[4:8, 4:8, 4:8] = 3
    img = Image(lab, spacing=(1.0, 1.0, 1.0))
    out = _resample_labels(img, 2.0)
    assert out.array.shape == (6, 6, 6) and out.spacing == (2.0, 2.0, 2.0)
    # 2 mm voxels average 2 x 2 x 2 blocks: the inner cube fills blocks 2-3, the outer 1-4
    expected = np.zeros((6, 6, 6), dtype=np.uint8)
    expected[1:5, 1:5, 1:5] = 2
    expected[2:4, 2:4, 2:4] = 3
    np.testing.assert_array_equal(out.array, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_per_site": (5,), "prevalence": (0.5,)}, "at least two sites"),
        ({"n_per_site": (5, 5), "prevalence": (0.5, 1.5)}, "prevalence"),
        ({"n_per_site": (5,) * 5, "prevalence": (0.5,) * 5}, "site_gain"),
        ({"n_per_site": (5, 5), "prevalence": (0.5, 0.5), "site_spacing": [0.5, 1.0]},
         "fine_spacing"),
        ({"n_per_site": (5, 5), "prevalence": (0.5, 0.5), "site_fwhm": [(1, 2), (1, 2)]},
         "site_fwhm"),
        ({"n_per_site": (5, 5), "prevalence": (0.5, 0.5), "site_gain": [1.0, -1.0]}, "> 0"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(HarmonizationError, match=match):
        make_multisite_images(random_state=0, **SMALL, **kwargs)  # type: ignore[arg-type]
