"""NEMA IEC body phantom: the blurred-ball model, the digital phantom and nema_recovery."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imharmony import Image
from imharmony.calibration import NemaError, nema_recovery
from imharmony.calibration._ball import blurred_ball, voxel_ball
from imharmony.datasets import make_nema_phantom
from imharmony.imaging.resolution import fwhm_to_sigma, gaussian_blur


def test_blurred_ball_matches_a_brute_force_blur_of_a_voxelized_ball() -> None:
    h, radius, sigma = 0.4, 5.0, 2.0
    n = int(2 * (radius + 6 * sigma) / h) | 1
    x = (np.arange(n) - n // 2) * h
    sub = np.array([-1.0, 0.0, 1.0]) * h / 3
    ball = np.zeros((n, n, n))
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    for a in sub:  # 27-point supersampled indicator
        for b in sub:
            for c in sub:
                ball += (xx + a) ** 2 + (yy + b) ** 2 + (zz + c) ** 2 <= radius**2
    blurred = gaussian_blur(ball / 27, sigma / h)
    profile = blurred[n // 2 :, n // 2, n // 2]
    assert np.max(np.abs(profile - blurred_ball(x[n // 2 :], radius, sigma))) < 2e-3


def test_blurred_ball_centre_value_has_its_closed_form() -> None:
    radius, sigma = 5.0, 2.0
    from scipy.special import erf

    expected = erf(radius / (sigma * np.sqrt(2))) - np.sqrt(2 / np.pi) * radius / sigma * np.exp(
        -(radius**2) / (2 * sigma**2)
    )
    values = blurred_ball(np.array([0.0, 1e-12, 1e-6]), radius, sigma)
    np.testing.assert_allclose(values, expected, rtol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    radius=st.floats(1.0, 20.0),
    sigma=st.floats(0.3, 8.0),
    r=st.floats(0.0, 40.0),
    dr=st.floats(1e-3, 5.0),
)
def test_blurred_ball_is_a_fraction_that_falls_with_distance(
    radius: float, sigma: float, r: float, dr: float
) -> None:
    f0, f1 = blurred_ball(np.array([r, r + dr]), radius, sigma)
    assert -1e-12 <= f1 <= f0 + 1e-12 <= 1.0 + 2e-12


def test_voxel_average_converges_to_a_fine_rule() -> None:
    rng = np.random.default_rng(3)
    spacing = (4.0, 4.0, 2.0)
    sigma, radius = float(fwhm_to_sigma(4.0)), 6.5
    offsets = rng.uniform(-12, 12, size=(60, 3))
    nodes, weights = np.polynomial.legendre.leggauss(16)
    pts = [0.5 * s * nodes for s in spacing]
    w = np.einsum("i,j,k->ijk", weights, weights, weights).ravel() / 8
    grid = np.stack(np.meshgrid(*pts, indexing="ij"), -1).reshape(-1, 3)
    fine = blurred_ball(np.linalg.norm(offsets[:, None] + grid[None], axis=-1), radius, sigma) @ w
    assert np.max(np.abs(voxel_ball(offsets, spacing, radius, sigma) - fine)) < 3e-6


@pytest.mark.parametrize(("fwhm", "voxel"), [(4.0, 4.0), (6.0, (3.0, 3.0, 4.0))])
def test_noise_free_phantoms_give_the_true_fwhm_and_recovery(fwhm: float, voxel) -> None:
    ph = make_nema_phantom(fwhm, voxel)
    res = nema_recovery(ph.image, background=ph.background, spheres=ph.spheres)
    assert res.fwhm_mm == pytest.approx(fwhm, rel=1e-4)
    np.testing.assert_allclose(res.fwhm_axes_mm, fwhm, rtol=1e-4)
    cols = ["rc_max", "rc_mean", "rc_peak"]
    np.testing.assert_allclose(res.table[cols].to_numpy(), ph.truth[cols].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(
        res.table[["centre_0", "centre_1", "centre_2"]].to_numpy(), ph.centres, atol=1e-3
    )
    assert res.background_cv < 1e-6
    # partial volume: recovery grows with the sphere's size and stays below the truth
    assert np.all(np.diff(res.table["rc_mean"]) > 0)
    assert res.table["rc_max"].max() <= 1.0 + 1e-6


def test_the_spheres_are_found_in_any_orientation() -> None:
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", [35, -20, 70], degrees=True).as_matrix()
    ph = make_nema_phantom(7.0, 4.0, rotation=rot)
    res = nema_recovery(ph.image, background=1, spheres=10)
    assert res.fwhm_mm == pytest.approx(7.0, rel=1e-4)
    np.testing.assert_allclose(
        res.table[["centre_0", "centre_1", "centre_2"]].to_numpy(), ph.centres, atol=1e-3
    )
    assert abs(abs(res.ring_normal @ rot[:, 2]) - 1) < 1e-3


def test_noisy_phantom_fwhm_within_five_percent_and_cv_of_the_noise() -> None:
    ph = make_nema_phantom(6.0, 4.0, noise=0.1, random_state=7)
    res = nema_recovery(ph.image, background=1, spheres=10)
    assert res.fwhm_mm == pytest.approx(6.0, rel=0.05)
    assert res.background_cv == pytest.approx(0.1, rel=0.15)
    # the A50 mean averages the noise down; the hottest voxel is biased up by it
    err = (res.table["rc_mean"] - ph.truth["rc_mean"]).abs()
    assert err.max() < 0.05
    assert (res.table["rc_max"] >= ph.truth["rc_max"] - 0.02).all()


def test_inconsistent_concentrations_and_images_without_spheres_are_refused() -> None:
    ph = make_nema_phantom(6.0, 4.0)
    with pytest.raises(NemaError, match="must exceed the background"):
        nema_recovery(ph.image, background=10, spheres=1)
    flat = Image(np.ones((40, 40, 20), np.float32), (4.0, 4.0, 4.0))
    with pytest.raises(NemaError, match="hot region"):
        nema_recovery(flat, background=1, spheres=10)
    with pytest.raises(NemaError, match="3-D"):
        nema_recovery(Image(np.ones((10, 10)), (1.0, 1.0)), background=1, spheres=10)


def test_the_fit_jacobian_matches_finite_differences() -> None:
    from imharmony.calibration._ball import voxel_ball_jacobian

    rng = np.random.default_rng(1)
    off = rng.uniform(-15, 15, (120, 3))
    off[0] = 0.0
    off[1] = [1e-4, 0.0, 0.0]
    spacing, radius, sigma, h = (4.0, 4.0, 3.0), 8.5, 2.1, 1e-6
    values, d_log_sigma, d_centre = voxel_ball_jacobian(off, spacing, radius, sigma)
    np.testing.assert_allclose(values, voxel_ball(off, spacing, radius, sigma), atol=1e-15)
    num = (voxel_ball(off, spacing, radius, sigma * np.exp(h))
           - voxel_ball(off, spacing, radius, sigma * np.exp(-h))) / (2 * h)
    np.testing.assert_allclose(d_log_sigma, num, atol=1e-8)
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        num = (voxel_ball(off - e, spacing, radius, sigma)
               - voxel_ball(off + e, spacing, radius, sigma)) / (2 * h)
        np.testing.assert_allclose(d_centre[:, a], num, atol=1e-8)


def test_per_axis_fwhm_of_an_axially_blurrier_scanner() -> None:
    # transaxial 5 mm; the axis-2 blur is raised with a further 6 mm discrete Gaussian (exact
    # variance, so the axial FWHM is sqrt(5² + 6²) = 7.81 mm up to the shape of a sampled blur)
    ph = make_nema_phantom(5.0, 3.0)
    arr = gaussian_blur(ph.image.array.astype(np.float64), [0.0, 0.0, fwhm_to_sigma(6.0) / 3.0])
    res = nema_recovery(Image(arr, ph.image.spacing), background=1, spheres=10)
    np.testing.assert_allclose(res.fwhm_axes_mm[:2], 5.0, rtol=0.01)
    assert res.fwhm_axes_mm[2] == pytest.approx(np.hypot(5.0, 6.0), rel=0.05)
    assert 5.0 < res.fwhm_mm < np.hypot(5.0, 6.0)
