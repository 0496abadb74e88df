"""Tests of resolution matching: exact kernel variance, measured FWHM, errors, composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from imharmony.errors import DataError, HarmonizationError
from imharmony.image import Image
from imharmony.imaging.resolution import (
    FWHM_PER_SIGMA,
    ResolutionError,
    discrete_gaussian_kernel,
    fwhm_to_sigma,
    gaussian_blur,
    match_resolution,
)


def _axis_variance(arr: np.ndarray, axis: int) -> float:
    """Second central moment (in samples²) of a non-negative array's profile along ``axis``."""
    others = tuple(a for a in range(arr.ndim) if a != axis)
    profile = arr.sum(axis=others, dtype=np.float64)
    x = np.arange(profile.size, dtype=np.float64)
    mass = profile.sum()
    mean = (profile * x).sum() / mass
    return float((profile * (x - mean) ** 2).sum() / mass)


def _delta(shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    arr = np.zeros(shape, dtype=dtype)
    arr[tuple(n // 2 for n in shape)] = 1.0
    return arr


def test_fwhm_sigma_constant() -> None:
    # FWHM of a Gaussian: 2·sqrt(2 ln 2)·sigma, from the half-maximum condition exp(-x²/2σ²) = 1/2
    x_half = math.sqrt(2 * math.log(2))
    assert FWHM_PER_SIGMA == pytest.approx(2 * x_half, rel=1e-15)
    assert fwhm_to_sigma(6.0) == pytest.approx(0.4246609 * 6.0, rel=1e-6)


@pytest.mark.parametrize("sigma", [0.15, 0.4, 0.8, 1.0, 2.3, 7.5])
def test_discrete_kernel_has_exact_variance(sigma: float) -> None:
    k = discrete_gaussian_kernel(sigma)
    n = np.arange(k.size) - k.size // 2
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert (k * n * n).sum() == pytest.approx(sigma**2, rel=1e-10)
    assert np.all(k >= 0)
    assert np.allclose(k, k[::-1])


@pytest.mark.parametrize("sigma", [0.2, 0.43, 0.8, 1.7, 3.0])
def test_realized_blur_variance_is_sigma_squared(sigma: float) -> None:
    # impulse response of the blur along each axis, including sub-voxel sigma
    out = gaussian_blur(_delta((81, 33, 65)), (sigma, 0.0, sigma / 2))
    assert out.sum() == pytest.approx(1.0, abs=1e-9)
    assert _axis_variance(out, 0) == pytest.approx(sigma**2, rel=1e-6, abs=1e-9)
    assert _axis_variance(out, 1) == pytest.approx(0.0, abs=1e-12)
    assert _axis_variance(out, 2) == pytest.approx((sigma / 2) ** 2, rel=1e-6, abs=1e-9)


def test_realized_variance_float32_sub_voxel() -> None:
    out = gaussian_blur(_delta((41, 41, 41), np.float32), 0.35)
    assert out.dtype == np.float32
    for ax in range(3):
        assert _axis_variance(out, ax) == pytest.approx(0.35**2, rel=1e-3)


def test_sampled_gaussian_would_fail_the_same_check() -> None:
    # why the exact-variance kernel matters: 2 mm FWHM on 2.5 mm slices (sigma 0.34 voxel)
    sigma = fwhm_to_sigma(2.0) / 2.5
    sampled = ndi.gaussian_filter1d(_delta((41,)), sigma)
    ours = gaussian_blur(_delta((41,)), sigma)
    assert _axis_variance(sampled, 0) < 0.6 * sigma**2
    assert _axis_variance(ours, 0) == pytest.approx(sigma**2, rel=1e-9)


def test_constant_image_stays_constant() -> None:
    img = Image(np.full((20, 18, 9), 42.5, np.float32), spacing=(0.8, 0.8, 2.5))
    out = match_resolution(img, 1.0, 8.0)
    np.testing.assert_allclose(out.array, 42.5, rtol=1e-5)


@pytest.mark.parametrize(
    ("source", "target"),
    [((0.0, 0.0, 0.0), (4.0, 5.0, 6.0)), ((2.0, 2.0, 3.0), (8.0, 8.0, 8.0))],
)
def test_point_source_fwhm_after_matching_on_anisotropic_grid(
    source: tuple[float, ...], target: tuple[float, ...]
) -> None:
    spacing = (0.8, 0.8, 2.5)
    point = Image(_delta((81, 81, 41)), spacing=spacing)
    # a point source imaged at the source resolution, then matched to the target
    imaged = match_resolution(point, 0.0, source)
    matched = match_resolution(imaged, source, target)
    for ax in range(3):
        fwhm_mm = FWHM_PER_SIGMA * math.sqrt(_axis_variance(matched.array, ax)) * spacing[ax]
        assert fwhm_mm == pytest.approx(target[ax], rel=0.03)


def test_point_source_half_maximum_width() -> None:
    # a second, independent measure: the width at half maximum of the central profile
    spacing = (0.5, 0.8, 2.5)
    matched = match_resolution(Image(_delta((121, 81, 41)), spacing=spacing), 0.0, 10.0)
    profile = matched.array[:, 40, 20]
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    lo, hi = above[0], above[-1]
    # linear interpolation of the two crossings
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    assert (right - left) * spacing[0] == pytest.approx(10.0, rel=0.03)


def test_sharper_target_is_an_error_naming_the_axis() -> None:
    img = Image(np.zeros((8, 8, 4), np.float32), spacing=(1.0, 1.0, 3.0))
    with pytest.raises(ResolutionError, match="axis 2") as info:
        match_resolution(img, (4.0, 4.0, 6.0), (5.0, 5.0, 5.0))
    assert isinstance(info.value, HarmonizationError)
    assert "cannot be" in str(info.value)


def test_equal_target_leaves_image_untouched() -> None:
    rng = np.random.default_rng(3)
    arr = rng.normal(size=(12, 10, 6)).astype(np.float32)
    img = Image(arr, spacing=(1.0, 1.0, 2.0))
    out = match_resolution(img, (3.0, 3.0, 5.0), (3.0, 3.0, 5.0))
    np.testing.assert_array_equal(out.array, arr)
    assert out.array is not arr
    # equal on the last axis only: a pattern varying only along that axis survives unchanged
    ramp = np.broadcast_to(np.sin(np.arange(6.0)), (12, 10, 6)).astype(np.float32)
    out = match_resolution(Image(ramp, spacing=(1.0, 1.0, 2.0)), 3.0, (6.0, 6.0, 3.0))
    np.testing.assert_allclose(out.array, ramp, atol=1e-5)


def test_time_axis_uses_its_own_spacing() -> None:
    # 4-D: blur only the time axis (FWHM 6 s on 1.5 s frames) -> sigma = 0.4247·6/1.5 frames
    img = Image(_delta((21, 21, 21, 61)), spacing=(2.0, 2.0, 2.0, 1.5))
    out = match_resolution(img, (2.0, 2.0, 2.0, 0.0), (2.0, 2.0, 2.0, 6.0))
    sigma_frames = fwhm_to_sigma(6.0) / 1.5
    assert _axis_variance(out.array, 3) == pytest.approx(sigma_frames**2, rel=1e-6)
    for ax in range(3):
        assert _axis_variance(out.array, ax) == pytest.approx(0.0, abs=1e-12)
    # a scalar FWHM applies to the spatial axes only
    out = match_resolution(img, 0.0, 4.0)
    assert _axis_variance(out.array, 3) == pytest.approx(0.0, abs=1e-12)
    assert _axis_variance(out.array, 0) == pytest.approx((fwhm_to_sigma(4.0) / 2.0) ** 2, rel=1e-6)


def test_input_not_modified_and_history_recorded() -> None:
    arr = _delta((15, 15, 7), np.float32)
    before = arr.copy()
    img = Image(arr, spacing=(1.0, 1.0, 3.0), meta={"history": [{"step": "read"}]})
    out = match_resolution(img, 2.0, 5.0)
    np.testing.assert_array_equal(arr, before)
    assert img.meta["history"] == [{"step": "read"}]
    step = out.meta["history"][-1]
    assert step["step"] == "match_resolution"
    assert step["kernel_fwhm"] == pytest.approx([math.sqrt(21.0)] * 3)
    assert step["sigma_voxels"][2] == pytest.approx(fwhm_to_sigma(math.sqrt(21.0)) / 3.0)
    assert out.spacing == img.spacing and out.origin == img.origin


def test_bad_inputs() -> None:
    img = Image(np.zeros((6, 6, 6), np.float32))
    with pytest.raises(ResolutionError, match="source_fwhm"):
        match_resolution(img, (1.0, 2.0), 3.0)
    with pytest.raises(ResolutionError, match="target_fwhm"):
        match_resolution(img, 1.0, -3.0)
    bad = np.zeros((6, 6, 6), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        match_resolution(Image(bad), 1.0, 3.0)


@settings(max_examples=40, deadline=None)
@given(
    a=st.floats(0.0, 8.0),
    b=st.floats(0.0, 8.0),
    spacing=st.tuples(st.floats(0.5, 3.0), st.floats(0.5, 3.0)),
)
def test_two_blurs_compose_in_variance(
    a: float, b: float, spacing: tuple[float, float]
) -> None:
    # blur with FWHM a, then with FWHM b, equals one blur with FWHM sqrt(a² + b²)
    point = Image(_delta((161, 161)), spacing=spacing)
    c = math.hypot(a, b)
    twice = match_resolution(match_resolution(point, 0.0, a), a, c)
    once = match_resolution(point, 0.0, c)
    for ax in range(2):
        expected = (fwhm_to_sigma(c) / spacing[ax]) ** 2
        assert _axis_variance(twice.array, ax) == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert _axis_variance(once.array, ax) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(twice.array, once.array, atol=1e-12)
