"""EARL bands, the Gaussian post-filter that meets them, and its application to patient images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imharmony import Image
from imharmony.calibration import (
    EARLError,
    apply_earl_filter,
    earl_bands,
    earl_compliance,
    earl_filter,
    nema_recovery,
)
from imharmony.calibration.earl import _distance
from imharmony.calibration.nema import recovery_at
from imharmony.datasets import make_nema_phantom
from imharmony.imaging.resolution import fwhm_to_sigma, gaussian_blur


@pytest.fixture(scope="module")
def sharp() -> object:
    """A 4 mm FWHM scanner, 4 mm voxels, mild noise."""
    return make_nema_phantom(4.0, 4.0, noise=0.02, random_state=11)


def test_earl1_bands_are_the_published_ones_with_their_source() -> None:
    bands = earl_bands("earl1")
    assert bands["diameter_mm"].tolist() == [10, 13, 17, 22, 28, 37]
    assert bands.loc[0, ["rc_mean_low", "rc_mean_high", "rc_max_low", "rc_max_high"]].tolist() == [
        0.27, 0.43, 0.34, 0.57,
    ]
    assert bands.loc[5, ["rc_mean_low", "rc_mean_high", "rc_max_low", "rc_max_high"]].tolist() == [
        0.76, 0.89, 0.95, 1.16,
    ]
    assert "Boellaard" in bands.attrs["source"]


def test_earl2_is_refused_until_its_table_is_checked_and_custom_bands_work() -> None:
    with pytest.raises(EARLError, match=r"Kaalep.*not typed from memory.*bands="):
        earl_bands("EARL2")
    assert len(earl_bands("earl1").attrs["checked_against"]) == 2
    with pytest.raises(EARLError, match="unknown EARL standard"):
        earl_bands("EARL3")
    bad = earl_bands().drop(columns="rc_max_high")
    with pytest.raises(EARLError, match="rc_max_high"):
        earl_compliance(pd.DataFrame({"rc_max": np.ones(6), "rc_mean": np.ones(6)}), bad)


def test_sharp_scanner_gets_a_filter_that_makes_it_compliant(sharp) -> None:
    result = earl_filter(sharp.image, background=1, spheres=10, standard="EARL1")
    assert not result.compliant_before
    assert result.compliant_after
    assert 5.0 < result.filter_fwhm_mm < 9.0
    assert result.recovery.fwhm_mm == pytest.approx(4.0, rel=0.03)
    # an independent check: filter the phantom ourselves, analyse it from scratch
    sigma = fwhm_to_sigma(result.filter_fwhm_mm) / np.asarray(sharp.image.spacing)
    own = Image(gaussian_blur(sharp.image.array.astype(np.float64), sigma), sharp.image.spacing)
    again = nema_recovery(own, background=1, spheres=10)
    assert earl_compliance(again.table, earl_bands())["compliant"].all()
    # closest to the band centres among the compliant neighbours on the 0.05 mm grid
    centres = result.recovery.table[["centre_0", "centre_1", "centre_2"]].to_numpy()
    spacing = np.asarray(sharp.image.spacing)
    bands = earl_bands()

    def score(f: float) -> tuple[bool, float]:
        arr = gaussian_blur(sharp.image.array.astype(np.float64), fwhm_to_sigma(f) / spacing)
        rc = recovery_at(arr, spacing, centres, result.recovery.background_mean, 10.0)
        return bool(earl_compliance(rc, bands)["compliant"].all()), _distance(rc, bands)

    chosen = score(result.filter_fwhm_mm)[1]
    for f in (result.filter_fwhm_mm - 0.05, result.filter_fwhm_mm + 0.05):
        ok, d = score(f)
        assert not ok or d >= chosen - 1e-9


def test_compliant_scanner_needs_no_filter_and_custom_bands_are_used() -> None:
    ph = make_nema_phantom(8.0, 4.0)
    result = earl_filter(ph.image, background=1, spheres=10)
    assert result.compliant_before and result.compliant_after
    assert result.filter_fwhm_mm == 0.0
    np.testing.assert_array_equal(result.filtered.array, ph.image.array)
    # bands given as a table (e.g. a standard not shipped): here EARL1's, with the 10 mm RCmax
    # band moved above what this scanner recovers, so it no longer complies
    custom = pd.DataFrame(earl_bands().to_dict(orient="list"))
    custom.loc[0, ["rc_max_low", "rc_max_high"]] = [0.60, 0.80]
    with pytest.raises(EARLError, match=r"custom cannot be reached by smoothing.*10 mm"):
        earl_filter(ph.image, background=1, spheres=10, bands=custom)


def test_blurry_scanner_cannot_be_reached_by_smoothing() -> None:
    ph = make_nema_phantom(11.0, 4.0)
    with pytest.raises(EARLError, match="cannot be reached by smoothing"):
        earl_filter(ph.image, background=1, spheres=10)


def test_the_filter_is_applied_to_patient_images_with_its_history() -> None:
    rng = np.random.default_rng(0)
    patient = Image(rng.random((20, 18, 16)).astype(np.float32), (2.0, 2.0, 3.0),
                    meta={"history": [{"step": "convert"}]})
    before = patient.array.copy()
    out = apply_earl_filter(patient, 6.5, standard="EARL1")
    expected = gaussian_blur(patient.array, fwhm_to_sigma(6.5) / np.array([2.0, 2.0, 3.0]))
    np.testing.assert_allclose(out.array, expected, rtol=1e-6)
    np.testing.assert_array_equal(patient.array, before)
    assert [h["step"] for h in out.meta["history"]] == ["convert", "earl_filter"]
    assert out.meta["history"][-1]["fwhm_mm"] == 6.5
    assert out.meta["history"][-1]["standard"] == "EARL1"
    assert out.array.mean() == pytest.approx(patient.array.mean(), rel=1e-5)
