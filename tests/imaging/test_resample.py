"""Tests of IBSI-aligned resampling: grid, interpolation exactness, labels, masks, aliasing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imharmony.errors import DataError
from imharmony.image import Image
from imharmony.imaging.resample import (
    antialias_sigma,
    footprint_spacing,
    resample,
    resample_mask,
    resample_to_grid,
    resampled_grid,
)


def _centres(img: Image) -> list[np.ndarray]:
    """Physical coordinates (x, y, z) of every voxel centre, one array per physical axis."""
    idx = np.indices(img.array.shape[: img.ndim], dtype=float)
    steps = idx * np.asarray(img.spacing).reshape((-1,) + (1,) * img.ndim)
    phys = np.tensordot(img.direction, steps, axes=1)
    return [phys[k] + img.origin[k] for k in range(img.ndim)]


def test_grid_hand_computed() -> None:
    # axis 0: n=10, s=1 -> 0.7: ceil(14.29)=15, offset ½(9 − 0.7·14) = −0.4 voxel
    # axis 1: n=12, s=1 -> 0.5: 24, offset ½(11 − 0.5·23) = −0.25 voxel
    # axis 2: n=8,  s=2 -> 2.5: ceil(6.4)=7, offset ½(7 − 1.25·6) = −0.25 voxel = −0.5 mm
    shape, offset = resampled_grid((10, 12, 8), (1.0, 1.0, 2.0), (0.7, 0.5, 2.5))
    assert shape == (15, 24, 7)
    np.testing.assert_allclose(offset, [-0.4, -0.25, -0.25])
    img = Image(np.zeros((10, 12, 8), np.float32), spacing=(1, 1, 2), origin=(5, 6, 7))
    out = resample(img, (0.7, 0.5, 2.5))
    assert out.shape == (15, 24, 7)
    assert out.spacing == (0.7, 0.5, 2.5)
    np.testing.assert_allclose(out.origin, [4.6, 5.75, 6.5])


def test_grid_exact_multiples_do_not_gain_a_voxel() -> None:
    shape, offset = resampled_grid((100, 30), (0.1, 0.3), (0.1, 0.1))
    assert shape == (100, 90)
    np.testing.assert_allclose(offset, [0.0, -1.0 / 3.0], atol=1e-12)


def test_grid_with_direction_cosines() -> None:
    # array axis 0 points along −y, axis 1 along +x, axis 2 along +z
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    img = Image(np.zeros((10, 12, 8), np.float32), spacing=(1, 1, 2), origin=(5, 6, 7),
                direction=direction)
    out = resample(img, (0.7, 0.5, 2.5))
    # shifts along the array axes: (−0.4, −0.25, −0.5) mm -> physical: x −0.25, y +0.4, z −0.5
    np.testing.assert_allclose(out.origin, [4.75, 6.4, 6.5])
    np.testing.assert_array_equal(out.direction, direction)
    # the physical centre of the grid is kept
    def centre(im: Image) -> np.ndarray:
        half = (np.asarray(im.shape) - 1) / 2 * np.asarray(im.spacing)
        return np.asarray(im.origin) + im.direction @ half

    np.testing.assert_allclose(centre(out), centre(img), atol=1e-12)


@pytest.mark.parametrize("interpolation", ["linear", "bspline", "nearest"])
@pytest.mark.parametrize("spacing", [0.7, 2.5, (1.3, 0.6, 3.1)])
def test_constant_image_stays_constant(interpolation: str, spacing: object) -> None:
    img = Image(np.full((17, 19, 11), -3.25, np.float32), spacing=(1.0, 1.2, 2.0))
    out = resample(img, spacing, interpolation=interpolation)  # type: ignore[arg-type]
    np.testing.assert_allclose(out.array, -3.25, rtol=1e-5)


def test_linear_ramp_reproduced_exactly() -> None:
    img = Image(np.zeros((14, 12, 9)), spacing=(1.0, 1.5, 2.0), origin=(-3.0, 2.0, 10.0))
    x, y, z = _centres(img)
    ramp = 2.0 * x - 0.5 * y + 0.25 * z + 7.0
    img = img.with_array(ramp)
    out = resample(img, (0.7, 0.9, 1.3), anti_alias=False)
    xn, yn, zn = _centres(out)
    expected = 2.0 * xn - 0.5 * yn + 0.25 * zn + 7.0
    # inside the hull of the old voxel centres (beyond it values are extended as constant)
    inside = (
        (xn >= x.min()) & (xn <= x.max()) & (yn >= y.min()) & (yn <= y.max())
        & (zn >= z.min()) & (zn <= z.max())
    )
    assert inside.mean() > 0.6
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-9)


def test_nearest_keeps_labels_and_dtype() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 3, 7], dtype=np.int16), size=(9, 10, 6))
    img = Image(labels, spacing=(1.0, 1.0, 2.0))
    out = resample(img, (0.6, 1.7, 2.0), interpolation="nearest")
    assert out.array.dtype == np.int16
    assert set(np.unique(out.array)) <= {0, 3, 7}
    # hand computation: new centre i sits at old index offset + i·s_new/s; nearest = round
    shape, offset = resampled_grid((9, 10, 6), (1.0, 1.0, 2.0), (0.6, 1.7, 2.0))
    idx = [
        np.clip(np.floor(offset[k] + np.arange(shape[k]) * r + 0.5).astype(int), 0, n - 1)
        for k, (r, n) in enumerate(zip((0.6, 1.7, 1.0), (9, 10, 6), strict=True))
    ]
    expected = labels[np.ix_(*idx)]
    np.testing.assert_array_equal(out.array, expected)


def test_nearest_on_boolean_image() -> None:
    img = Image(np.eye(6, dtype=bool)[:, :, None].repeat(3, axis=2))
    out = resample(img, 0.5, interpolation="nearest")
    assert out.array.dtype == bool
    assert out.shape == (12, 12, 6)


def test_mask_threshold_at_half() -> None:
    # inside = first 7 voxels along axis 0 (s = 1 mm); linear interpolation at old index p is
    # 1 − (p − 6) between voxels 6 and 7, so a new voxel is inside iff p <= 6.5
    arr = np.zeros((16, 4, 4), np.uint8)
    arr[:7] = 1
    mask = Image(arr, spacing=(1.0, 1.0, 1.0))
    for new in (0.3, 0.45, 0.7, 1.6):
        out = resample_mask(mask, (new, 1.0, 1.0))
        assert out.array.dtype == bool
        shape, offset = resampled_grid((16, 4, 4), (1.0,) * 3, (new, 1.0, 1.0))
        p = offset[0] + np.arange(shape[0]) * new
        expected = p <= 6.5 + 1e-9
        np.testing.assert_array_equal(out.array[:, 1, 1], expected)
        assert out.meta["history"][-1]["threshold"] == 0.5


def _pattern_energy(freq: float, anti_alias: bool) -> float:
    # a cosine along axis 0 at `freq` cycles/mm on a 1 mm grid, downsampled to 2.5 mm
    n = 200
    x = np.arange(n, dtype=float)
    arr = np.broadcast_to(np.cos(2 * math.pi * freq * x)[:, None, None], (n, 4, 4))
    out = resample(Image(arr.astype(np.float32)), (2.5, 1.0, 1.0), anti_alias=anti_alias)
    prof = out.array[5:-5, 1, 1].astype(float)  # away from the reflecting borders
    return float(np.mean((prof - prof.mean()) ** 2))


def test_anti_aliasing_reduces_aliased_energy() -> None:
    # new Nyquist = 1 / (2·2.5) = 0.2 cycles/mm; a 0.3 cycles/mm pattern aliases to 0.1
    aliased = _pattern_energy(0.3, anti_alias=False)
    filtered = _pattern_energy(0.3, anti_alias=True)
    # a unit cosine carries energy 0.5; linear interpolation itself passes only part of it
    # (its response at 0.3 cycles/voxel is sinc²(0.3) ≈ 0.74 between samples), the rest aliases
    assert aliased > 0.15
    # the discrete Gaussian with sigma = ½·sqrt(2.5² − 1²) voxels passes exp(σ²(cos ω − 1)) of
    # the amplitude at ω = 2π·0.3 rad/voxel (its Fourier transform)
    sigma = 0.5 * math.sqrt(2.5**2 - 1.0)
    gain = math.exp(sigma**2 * (math.cos(2 * math.pi * 0.3) - 1.0))
    assert filtered < 0.05 * aliased
    assert filtered == pytest.approx(aliased * gain**2, rel=0.25)
    # a pattern well below the new Nyquist keeps most of its energy
    low = _pattern_energy(0.05, anti_alias=True)
    assert low > 0.8 * 0.5
    np.testing.assert_allclose(antialias_sigma((1.0, 1.0), (2.5, 0.5)), [sigma, 0.0])


def test_masked_resampling_ignores_background() -> None:
    rng = np.random.default_rng(5)
    arr = rng.normal(1000.0, 300.0, size=(20, 20, 12)).astype(np.float32)
    mask = np.zeros(arr.shape, bool)
    mask[4:15, 5:16, 3:9] = True
    arr[mask] = 12.0
    img = Image(arr, spacing=(1.0, 1.0, 2.0))
    out = resample(img, (0.7, 1.6, 1.1), mask=mask)
    inside = resample_mask(Image(mask, spacing=(1.0, 1.0, 2.0)), (0.7, 1.6, 1.1)).array
    assert inside.sum() > 100
    np.testing.assert_allclose(out.array[inside], 12.0, rtol=1e-5)
    assert np.all(out.array[~inside] == 0)
    # without the mask the border voxels mix in the background
    plain = resample(img, (0.7, 1.6, 1.1))
    assert np.abs(plain.array[inside] - 12.0).max() > 50


def test_trailing_axis_resampled_per_volume() -> None:
    rng = np.random.default_rng(2)
    arr = rng.normal(size=(8, 9, 7, 3)).astype(np.float32)
    img = Image(arr, spacing=(1.0, 1.0, 2.0, 5.0))
    out = resample(img, (0.8, 0.8, 1.5, None))
    assert out.spacing == (0.8, 0.8, 1.5, 5.0)
    for t in range(3):
        single = resample(Image(arr[..., t], spacing=(1.0, 1.0, 2.0)), (0.8, 0.8, 1.5))
        np.testing.assert_array_equal(out.array[..., t], single.array)


def test_inputs_untouched_history_and_errors() -> None:
    arr = np.arange(5 * 6 * 4, dtype=np.int16).reshape(5, 6, 4)
    before = arr.copy()
    img = Image(arr, spacing=(1.0, 1.0, 3.0), meta={"history": [{"step": "read"}]})
    out = resample(img, 1.5)
    np.testing.assert_array_equal(arr, before)
    assert img.meta["history"] == [{"step": "read"}]
    assert out.array.dtype == np.float32
    step = out.meta["history"][-1]
    assert step["step"] == "resample" and step["spacing"] == [1.5, 1.5, 1.5]
    assert step["anti_alias_sigma_mm"] == pytest.approx([0.5 * math.sqrt(1.25), 0.559017, 0.0])
    with pytest.raises(DataError, match="spacing"):
        resample(img, (1.0, 0.0, 1.0))
    with pytest.raises(DataError, match="spacing"):
        resample(img, (1.0, 1.0))
    with pytest.raises(DataError, match="interpolation"):
        resample(img, 1.0, interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="grid"):
        resample(img, 1.0, mask=np.ones((5, 6, 3), bool))
    with pytest.raises(DataError, match="spatial"):
        resample(Image(np.zeros(5)), 1.0)


def test_fortran_ordered_input_gives_the_same_result() -> None:
    # images read from NIfTI arrive as transposed (Fortran-ordered) views
    rng = np.random.default_rng(4)
    arr = rng.normal(size=(11, 9, 7)).astype(np.float32)
    img_c = Image(arr, spacing=(1.0, 1.5, 2.0))
    img_f = Image(np.asfortranarray(arr), spacing=(1.0, 1.5, 2.0))
    for interpolation in ("linear", "nearest"):
        a = resample(img_c, (0.8, 1.1, 2.6), interpolation=interpolation)  # type: ignore[arg-type]
        b = resample(img_f, (0.8, 1.1, 2.6), interpolation=interpolation)  # type: ignore[arg-type]
        np.testing.assert_array_equal(a.array, b.array)


def test_grid_tolerates_float32_spacing() -> None:
    # 30 voxels of 0.8 mm stored as float32 (0.800000012) are still 24 mm: 16 voxels of 1.5 mm
    shape, _ = resampled_grid((30,), (float(np.float32(0.8)),), (1.5,))
    assert shape == (16,)
    shape, _ = resampled_grid((30,), (0.8,), (1.49,))
    assert shape == (17,)


# --- onto a reference grid -------------------------------------------------------------------


def _rotation_z(degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    return np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0],
                     [0.0, 0.0, 1.0]])


def _continuous_index(img: Image, points: list[np.ndarray]) -> np.ndarray:
    """Continuous array index of physical points on img's grid, shape (3, ...)."""
    rel = np.stack([p - o for p, o in zip(points, img.origin, strict=True)])
    steps = np.tensordot(np.linalg.inv(img.direction), rel, axes=1)
    return steps / np.asarray(img.spacing).reshape((-1,) + (1,) * (rel.ndim - 1))


def _ramp_case(angle: float, shift: tuple[float, float, float],
               spacing: tuple[float, float, float]) -> tuple[Image, Image, np.ndarray]:
    """A linear ramp in physical space, a rotated and shifted reference grid, and the voxels
    of the reference whose centres lie inside the hull of the image's voxel centres."""
    img = Image(np.zeros((16, 14, 7)), spacing=(1.0, 1.25, 2.0), origin=(-3.0, 2.0, 10.0),
                direction=_rotation_z(10.0))
    x, y, z = _centres(img)
    img = img.with_array(2.0 * x - 0.5 * y + 0.25 * z + 7.0)
    ref = Image(np.zeros((12, 13, 9), np.int16), spacing=spacing,
                origin=tuple(np.add(img.origin, shift)), direction=_rotation_z(angle))
    idx = _continuous_index(img, _centres(ref))
    limits = np.asarray(img.array.shape, float).reshape(3, 1, 1, 1) - 1.0
    inside = np.all((idx >= 1e-9) & (idx <= limits - 1e-9), axis=0)
    return img, ref, inside


def test_onto_a_rotated_shifted_grid_values_and_geometry() -> None:
    img, ref, inside = _ramp_case(37.0, (1.3, -0.7, 2.1), (0.9, 1.1, 1.7))
    out = resample_to_grid(img, ref, anti_alias=False)
    assert out.same_grid(ref) and ref.same_grid(out)
    assert out.shape == ref.shape and out.array.dtype == np.float64
    np.testing.assert_array_equal(out.direction, ref.direction)
    xn, yn, zn = _centres(ref)
    expected = 2.0 * xn - 0.5 * yn + 0.25 * zn + 7.0
    assert 0.2 < inside.mean() < 0.95  # part of the reference lies outside the image
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-9)
    # reference voxels farther than half a voxel outside the image are 0
    idx = _continuous_index(img, [xn, yn, zn])
    limits = np.asarray(img.array.shape, float).reshape(3, 1, 1, 1) - 0.5
    far = np.any((idx < -0.5 - 1e-6) | (idx > limits + 1e-6), axis=0)
    assert far.any()
    np.testing.assert_array_equal(out.array[far], 0.0)
    step = out.meta["history"][-1]
    assert step["step"] == "resample_to_grid" and step["shape"] == [12, 13, 9]
    assert step["origin"] == pytest.approx(list(ref.origin))


@settings(max_examples=25, deadline=None)
@given(
    angle=st.floats(-180.0, 180.0),
    shift=st.tuples(*[st.floats(-3.0, 3.0)] * 3),
    spacing=st.tuples(*[st.floats(0.6, 2.5)] * 3),
)
def test_linear_interpolation_onto_any_rigid_grid_is_exact_on_a_ramp(
    angle: float, shift: tuple[float, float, float], spacing: tuple[float, float, float]
) -> None:
    img, ref, inside = _ramp_case(angle, shift, spacing)
    out = resample_to_grid(img, ref, anti_alias=False)
    assert out.same_grid(ref)
    xn, yn, zn = _centres(ref)
    expected = 2.0 * xn - 0.5 * yn + 0.25 * zn + 7.0
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-8)


def test_a_transposed_copy_comes_back_voxel_for_voxel() -> None:
    # the same physical image stored with axes 0 and 1 swapped (direction columns swapped)
    rng = np.random.default_rng(5)
    arr = rng.normal(size=(9, 11, 5)).astype(np.float32)
    direction = _rotation_z(25.0)
    img = Image(arr, spacing=(0.8, 1.3, 2.0), origin=(4.0, -2.0, 1.0), direction=direction)
    swapped = Image(arr.transpose(1, 0, 2), spacing=(1.3, 0.8, 2.0), origin=img.origin,
                    direction=direction[:, [1, 0, 2]])
    for interpolation in ("nearest", "linear"):
        back = resample_to_grid(swapped, img, interpolation=interpolation)  # type: ignore[arg-type]
        assert back.same_grid(img)
        np.testing.assert_allclose(back.array, arr, rtol=0, atol=1e-5)


def test_onto_its_own_grid_is_the_identity_and_labels_stay_labels() -> None:
    rng = np.random.default_rng(6)
    labels = rng.choice(np.array([0, 2, 5], np.uint8), size=(7, 8, 6))
    img = Image(labels, spacing=(1.0, 1.5, 2.0), origin=(1.0, 2.0, 3.0),
                direction=_rotation_z(-60.0))
    out = resample_to_grid(img, img, interpolation="nearest")
    assert out.array.dtype == np.uint8
    np.testing.assert_array_equal(out.array, labels)
    mask = resample_to_grid(img.with_array(labels > 0), img, interpolation="nearest")
    assert mask.array.dtype == bool
    np.testing.assert_array_equal(mask.array, labels > 0)


def test_footprint_spacing_and_anti_aliasing_onto_a_coarser_rotated_grid() -> None:
    img = Image(np.zeros((6, 6, 4)), spacing=(1.0, 1.0, 2.0))
    aligned = Image(np.zeros((3, 3, 2)), spacing=(2.0, 3.0, 4.0))
    np.testing.assert_allclose(footprint_spacing(img, aligned), [2.0, 3.0, 4.0])
    quarter = Image(np.zeros((3, 3, 2)), spacing=(2.0, 3.0, 4.0), direction=_rotation_z(90.0))
    np.testing.assert_allclose(footprint_spacing(img, quarter), [3.0, 2.0, 4.0], atol=1e-12)
    eighth = Image(np.zeros((3, 3, 2)), spacing=(2.0, 3.0, 4.0), direction=_rotation_z(45.0))
    np.testing.assert_allclose(footprint_spacing(img, eighth),
                               [math.sqrt(6.5), math.sqrt(6.5), 4.0])
    out = resample_to_grid(img, quarter)
    np.testing.assert_allclose(out.meta["history"][-1]["anti_alias_sigma_mm"],
                               antialias_sigma(img.spacing, [3.0, 2.0, 4.0]))
    # aligned and with the reference's spacing: the same numbers as the spacing-only path
    rng = np.random.default_rng(7)
    noisy = img.with_array(rng.normal(size=img.shape))
    coarse = resample(noisy, (2.0, 3.0, 4.0))
    np.testing.assert_allclose(resample_to_grid(noisy, coarse).array, coarse.array, atol=1e-12)


def test_trailing_axis_and_errors_onto_a_grid() -> None:
    rng = np.random.default_rng(8)
    arr = rng.normal(size=(6, 7, 5, 2)).astype(np.float32)
    img = Image(arr, spacing=(1.0, 1.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0, 10.0))
    ref = Image(np.zeros((5, 5, 4)), spacing=(1.2, 1.2, 2.0), origin=(0.5, 0.2, 0.0),
                direction=_rotation_z(15.0))
    out = resample_to_grid(img, ref)
    assert out.shape == (5, 5, 4, 2) and out.spacing == (1.2, 1.2, 2.0, 3.0)
    assert out.origin[3] == 10.0 and out.direction[3, 3] == 1.0
    for t in range(2):
        single = resample_to_grid(Image(arr[..., t], spacing=(1.0, 1.0, 2.0)), ref)
        np.testing.assert_array_equal(out.array[..., t], single.array)
    with pytest.raises(DataError, match="spatial axes"):
        resample_to_grid(Image(np.zeros((4, 4)), spacing=(1.0, 1.0)), ref)
    with pytest.raises(DataError, match="reference must be an imharmony"):
        resample_to_grid(ref, np.zeros((5, 5, 4)))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="interpolation"):
        resample_to_grid(ref, ref, interpolation="cubic")  # type: ignore[arg-type]
