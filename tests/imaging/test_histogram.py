"""Exact histogram matching and stored reference distributions.

Expected values are computed by hand or from an independent reference: ``scipy.stats.rankdata``
(average ranks) and ``numpy.quantile(..., method="hazen")``, the quantile function with the
mid-point plotting positions ``(k + 1/2) / m`` that ``match_histogram`` documents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from imharmony import Image
from imharmony.errors import DataError, ModelFileError
from imharmony.imaging.histogram import ReferenceDistribution, match_histogram


def expected_match(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Independent reference: quantile of ref at the mid-rank probability of each source value."""
    src = np.asarray(src, dtype=np.float64).ravel()
    q = (stats.rankdata(src, method="average") - 0.5) / src.size
    return np.quantile(np.asarray(ref, dtype=np.float64).ravel(), q, method="hazen")


# ---------------------------------------------------------------- tiny hand-computed cases


def test_permutation_when_sizes_match() -> None:
    out = match_histogram(Image(np.array([3.0, 1.0, 2.0])), Image(np.array([10.0, 20.0, 30.0])))
    np.testing.assert_array_equal(out.array, [30.0, 10.0, 20.0])


def test_ties_take_the_mid_rank() -> None:
    # sorted source: 1 (rank 0), 5, 5 (ranks 1 and 2 -> mid-rank 1.5), 9 (rank 3)
    # mid-rank 1.5 sits half-way between reference order statistics 1 and 2: (10 + 20) / 2
    src = np.array([5.0, 5.0, 1.0, 9.0])
    out = match_histogram(Image(src), Image(np.array([0.0, 10.0, 20.0, 30.0])))
    np.testing.assert_array_equal(out.array, [15.0, 15.0, 0.0, 30.0])


def test_different_sample_sizes_interpolate_the_reference() -> None:
    # n = 2: probabilities 1/4 and 3/4 -> positions 4 * 1/4 - 1/2 = 0.5 and 2.5 in [0, 1, 2, 3]
    out = match_histogram(Image(np.array([7.0, -7.0])), Image(np.array([0.0, 1.0, 2.0, 3.0])))
    np.testing.assert_array_equal(out.array, [2.5, 0.5])


def test_extremes_are_clamped_to_the_reference_range() -> None:
    # n = 4, m = 2: probabilities 1/8 .. 7/8 -> positions -0.25, 0.25, 0.75, 1.25 -> clipped
    out = match_histogram(Image(np.arange(4.0)), Image(np.array([10.0, 20.0])))
    np.testing.assert_allclose(out.array, [10.0, 12.5, 17.5, 20.0])


def test_negative_zero_ties_with_zero() -> None:
    src = np.array([-0.0, 0.0, -1.0, 1.0, 0.0], dtype=np.float32)
    out = match_histogram(Image(src), Image(np.arange(5.0)))
    # -0.0 and the two +0.0 share ranks 1..3 -> mid-rank 2
    np.testing.assert_array_equal(out.array, [2.0, 2.0, 0.0, 4.0, 2.0])


# ---------------------------------------------------------------- against the independent reference


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int16, np.uint8, np.int32, np.int64, np.float16]
)
def test_every_code_path_agrees_with_rank_reference(dtype: type) -> None:
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        src = rng.integers(max(info.min, -300), min(info.max, 300), size=3000).astype(dtype)
    else:
        src = rng.normal(size=3000).astype(dtype)
    ref = rng.gamma(2.0, size=2500)
    out = match_histogram(Image(src), Image(ref)).array
    np.testing.assert_allclose(out, expected_match(src, ref), rtol=1e-12, atol=1e-12)


def test_integer_values_stored_as_floats() -> None:
    rng = np.random.default_rng(12)
    ints = rng.integers(-1000, 3000, size=20_000)
    ref = rng.normal(size=5000)
    expected = expected_match(ints, ref)
    for dtype in (np.float32, np.float64):
        src = ints.astype(dtype)
        src[:3] = -0.0  # ties with +0.0
        exp = expected_match(src, ref)
        np.testing.assert_allclose(match_histogram(Image(src), Image(ref)).array, exp, rtol=1e-6)
    out = match_histogram(Image(ints.astype(np.float32)), Image(ref)).array
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    halves = ints / 2.0  # not integral: the sorting path, same answer as the rank reference
    np.testing.assert_allclose(
        match_histogram(Image(halves), Image(ref)).array, expected_match(halves, ref), rtol=1e-12
    )


def test_wide_integers_and_float64_values_not_representable_in_float32() -> None:
    rng = np.random.default_rng(2)
    wide = rng.integers(-(2**40), 2**40, size=2000)  # range too wide to count, too wide for f32
    fine = 1.0 + rng.integers(0, 1000, size=2000) * 1e-12  # distinct in f64, equal in f32
    ref = rng.normal(size=1000)
    for src in (wide, fine):
        out = match_histogram(Image(src), Image(ref)).array
        np.testing.assert_allclose(out, expected_match(src, ref), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    src=hnp.arrays(
        np.float32,
        st.integers(1, 60),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_subnormal=False),
    ),
    ref=hnp.arrays(
        np.float64,
        st.integers(1, 60),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    ),
)
def test_property_matches_reference_and_is_monotone(src: np.ndarray, ref: np.ndarray) -> None:
    out = match_histogram(Image(src), Image(ref)).array.astype(np.float64)
    np.testing.assert_allclose(out, expected_match(src, ref), rtol=1e-9, atol=1e-6)
    order = np.argsort(src, kind="stable")
    assert np.all(np.diff(out[order]) >= 0)  # monotone
    for value in np.unique(src):  # equal inputs -> equal outputs
        assert np.unique(out[src == value]).size == 1
    assert out.min() >= ref.min() - 1e-6 and out.max() <= ref.max() + 1e-6


# ---------------------------------------------------------------- exactness (Kolmogorov–Smirnov)


def test_continuous_data_reach_ks_zero_or_one_over_n() -> None:
    rng = np.random.default_rng(3)
    src = rng.gamma(2.0, size=40_000)  # float64: no ties
    ref = rng.normal(100.0, 10.0, size=40_000)
    out = match_histogram(Image(src), Image(ref)).array
    assert stats.ks_2samp(out, ref).statistic == 0.0  # a permutation of the reference
    ref2 = rng.normal(100.0, 10.0, size=57_000)
    out2 = match_histogram(Image(src), Image(ref2)).array
    assert stats.ks_2samp(out2, ref2).statistic <= 1.5 / src.size


def test_discrete_data_reach_the_minimum_possible_ks() -> None:
    rng = np.random.default_rng(4)
    src = rng.choice(5, size=20_000, p=[0.1, 0.4, 0.2, 0.2, 0.1]).astype(np.int16)
    ref = rng.normal(size=200_000)
    out = match_histogram(Image(src), Image(ref)).array
    # a group holding a fraction c of the voxels maps to one value: the best possible maximum
    # CDF error around it is c / 2, reached when the value is the group's mid-quantile
    c_max = np.bincount(src).max() / src.size
    ks = stats.ks_2samp(out, ref).statistic
    assert c_max / 2 <= ks <= c_max / 2 + 1e-3
    # one value per group, increasing with the input
    values = [np.unique(out[src == k]) for k in range(5)]
    assert all(v.size == 1 for v in values)
    assert np.all(np.diff([v[0] for v in values]) > 0)


# ---------------------------------------------------------------- masks


def _phantom(seed: int, background: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arr = np.zeros((24, 24, 24), dtype=np.float32)
    mask = np.zeros(arr.shape, dtype=bool)
    mask[background : 24 - background, 4:20, 4:20] = True
    arr[mask] = rng.normal(300.0, 40.0, size=int(mask.sum()))
    return arr, mask


def test_mask_leaves_outside_unchanged_and_matches_inside_exactly() -> None:
    src, src_mask = _phantom(5, 2)
    ref, ref_mask = _phantom(6, 6)  # more background than the source
    ref = ref * 2.0 + 100.0 * ref_mask
    out = match_histogram(Image(src), Image(ref), mask=src_mask, reference_mask=ref_mask).array
    np.testing.assert_array_equal(out[~src_mask], src[~src_mask])
    np.testing.assert_allclose(
        out[src_mask], expected_match(src[src_mask], ref[ref_mask]), rtol=1e-6
    )
    # samples of sizes n and m cannot agree better than the coarser step, 1 / min(n, m)
    n_min = min(src_mask.sum(), ref_mask.sum())
    assert stats.ks_2samp(out[src_mask], ref[ref_mask]).statistic <= 1.0 / n_min + 1e-12


def test_unmasked_matching_is_distorted_by_background() -> None:
    src, src_mask = _phantom(5, 2)
    ref, ref_mask = _phantom(6, 6)
    masked = match_histogram(Image(src), Image(ref), mask=src_mask, reference_mask=ref_mask).array
    unmasked = match_histogram(Image(src), Image(ref)).array
    iqr = np.subtract(*np.percentile(ref[ref_mask], [75, 25]))
    # the reference has relatively more zero background: unmasked, tissue is mapped to 0
    err = np.abs(np.median(unmasked[src_mask]) - np.median(ref[ref_mask])) / iqr
    good = np.abs(np.median(masked[src_mask]) - np.median(ref[ref_mask])) / iqr
    assert err > 0.3 and good < 0.01


@pytest.mark.parametrize("kind", ["int16", "wide-int", "float32", "float64-fine", "float-ints"])
def test_masked_matching_on_every_code_path(kind: str) -> None:
    rng = np.random.default_rng(13)
    values = {
        "int16": rng.integers(-500, 500, size=(30, 40)).astype(np.int16),
        "wide-int": rng.integers(-(2**40), 2**40, size=(30, 40)),
        "float32": rng.normal(size=(30, 40)).astype(np.float32),
        "float64-fine": 1.0 + rng.integers(0, 900, size=(30, 40)) * 1e-12,
        "float-ints": rng.integers(0, 50, size=(30, 40)).astype(np.float32),
    }[kind]
    mask = rng.random(values.shape) < 0.6
    ref = rng.gamma(3.0, size=700)
    out = match_histogram(Image(values), Image(ref), mask=mask).array
    np.testing.assert_allclose(out[mask], expected_match(values[mask], ref), rtol=1e-6)
    np.testing.assert_array_equal(out[~mask], values[~mask].astype(out.dtype))


def test_mask_as_image_and_as_numbers() -> None:
    src, mask = _phantom(7, 2)
    ref, ref_mask = _phantom(8, 2)
    a = match_histogram(Image(src), Image(ref), mask=mask, reference_mask=ref_mask).array
    b = match_histogram(
        Image(src), Image(ref), mask=Image(mask.astype(np.uint8)), reference_mask=ref_mask * 1.0
    ).array
    np.testing.assert_array_equal(a, b)


def test_mask_errors_name_the_problem() -> None:
    src, mask = _phantom(9, 2)
    with pytest.raises(DataError, match="mask has shape"):
        match_histogram(Image(src), Image(src), mask=mask[:-1])
    with pytest.raises(DataError, match="selects no voxels"):
        match_histogram(Image(src), Image(src), mask=np.zeros_like(mask))
    with pytest.raises(DataError, match="reference_mask selects no voxels"):
        match_histogram(Image(src), Image(src), reference_mask=np.zeros_like(mask))
    other_grid = Image(mask, spacing=(2.0, 2.0, 2.0))
    with pytest.raises(DataError, match="not on the image's grid"):
        match_histogram(Image(src), Image(src), mask=other_grid)


def test_non_finite_values_inside_the_mask_are_refused() -> None:
    src = np.array([1.0, np.nan, 3.0, 4.0], dtype=np.float32)
    ref = Image(np.arange(4.0))
    with pytest.raises(DataError, match="NaN or infinite"):
        match_histogram(Image(src), ref)
    with pytest.raises(DataError, match="NaN or infinite"):
        match_histogram(Image(np.array([1.0, -np.inf, 2.0])), ref)
    with pytest.raises(DataError, match="reference has NaN"):
        match_histogram(Image(np.arange(3.0)), Image(np.array([1.0, np.nan])))
    out = match_histogram(Image(src), ref, mask=np.isfinite(src))
    assert np.isnan(out.array[1])
    np.testing.assert_allclose(out.array[[0, 2, 3]], expected_match([1.0, 3.0, 4.0], np.arange(4)))


# ---------------------------------------------------------------- image contract


def test_inputs_untouched_history_appended_geometry_kept() -> None:
    src = np.arange(12, dtype=np.int16).reshape(3, 4)
    ref = np.linspace(0.0, 1.0, 7, dtype=np.float32)
    history = [{"step": "earlier"}]
    img = Image(src, spacing=(0.5, 2.0), origin=(1.0, 2.0), meta={"history": history, "a": 1})
    src_copy = src.copy()
    out = match_histogram(img, Image(ref))
    np.testing.assert_array_equal(src, src_copy)
    assert img.meta["history"] == [{"step": "earlier"}]  # not mutated
    assert out.meta["history"][0] == {"step": "earlier"}
    assert out.meta["history"][-1]["step"] == "match_histogram"
    assert out.meta["a"] == 1
    assert out.spacing == (0.5, 2.0) and out.origin == (1.0, 2.0)
    assert out.array.dtype == np.float32 and out.shape == (3, 4)
    assert match_histogram(Image(src.astype(np.float64)), Image(ref)).array.dtype == np.float64


# ---------------------------------------------------------------- reference distributions


def test_reference_distribution_matches_like_the_image() -> None:
    rng = np.random.default_rng(10)
    ref = rng.lognormal(3.0, 0.4, size=50_000)
    src = rng.normal(size=30_000)
    dist = ReferenceDistribution.from_image(Image(ref))
    via_dist = match_histogram(Image(src), dist).array
    via_img = match_histogram(Image(src), Image(ref)).array
    iqr = np.subtract(*np.percentile(ref, [75, 25]))
    rank = stats.rankdata(src) / src.size
    central = (rank > 0.005) & (rank < 0.995)  # the sparse extreme tails differ most
    assert np.max(np.abs(via_dist - via_img)[central]) / iqr < 0.02
    assert stats.ks_2samp(via_dist, ref).statistic < 5e-4  # grid of 4097 points: ~1/4096
    assert ref.min() <= via_dist.min() and via_dist.max() <= ref.max()


def test_reference_distribution_quantiles_by_hand() -> None:
    dist = ReferenceDistribution.from_values([0.0, 1.0, 2.0, 3.0], n_quantiles=5)
    np.testing.assert_allclose(dist.probabilities, [0.0, 0.25, 0.5, 0.75, 1.0])
    # Hazen positions 4p - 1/2: p = 0.25 -> 0.5, 0.5 -> 1.5, 0.75 -> 2.5; ends = min and max
    np.testing.assert_allclose(dist.values, [0.0, 0.5, 1.5, 2.5, 3.0])
    np.testing.assert_allclose(dist.quantile([0.125, 0.6]), [0.25, 1.9])
    assert dist.quantile(0.5) == pytest.approx(1.5)
    uneven = ReferenceDistribution([0.0, 0.3, 1.0], [0.0, 1.0, 2.0])  # a non-uniform grid
    np.testing.assert_allclose(uneven.quantile([0.15, 0.65, 1.0]), [0.5, 1.5, 2.0])


def test_reference_distribution_with_mask_and_json_round_trip(tmp_path) -> None:
    arr, mask = _phantom(11, 3)
    dist = ReferenceDistribution.from_image(Image(arr), mask, n_quantiles=257)
    assert dist.values[0] == arr[mask].min() and dist.values[-1] == arr[mask].max()
    path = dist.save(tmp_path / "ref.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "imharmony.ReferenceDistribution" and data["kind_version"] == 2
    back = ReferenceDistribution.load(path)
    np.testing.assert_array_equal(back.values, dist.values)
    np.testing.assert_array_equal(back.probabilities, dist.probabilities)
    src, _ = _phantom(12, 3)
    np.testing.assert_array_equal(
        match_histogram(Image(src), back).array, match_histogram(Image(src), dist).array
    )
    assert "ReferenceDistribution(n_quantiles=257" in repr(back)


def test_reference_distribution_file_errors(tmp_path) -> None:
    from imharmony._persist import _digest

    dist = ReferenceDistribution.from_values(np.arange(10.0), n_quantiles=11)
    good = json.loads(dist.save(tmp_path / "good.json").read_text())
    signed = json.loads(json.dumps(good))
    signed["content"]["n_quantiles"] = 12
    signed["checksums"]["n_quantiles"] = _digest(12)
    cases = {
        "missing.json": None,
        "corrupt.json": '{"format": "imharmony.model", "vers',
        "other.json": json.dumps({**good, "kind": "something.else"}),
        "future.json": json.dumps({**good, "kind_version": 99}),
        "old.json": json.dumps({**dist.to_dict(), "version": 1}),
        "edited.json": json.dumps({**good, "content": {**good["content"], "meta": {"a": 1}}}),
        "shape.json": json.dumps(signed),
        "list.json": "[1, 2, 3]",
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ModelFileError):
            ReferenceDistribution.load(tmp_path / name)


def test_reference_distribution_validation() -> None:
    with pytest.raises(DataError, match="increase strictly"):
        ReferenceDistribution([0.0, 0.7, 0.5, 1.0], [0, 1, 2, 3])
    with pytest.raises(DataError, match="non-decreasing"):
        ReferenceDistribution([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(DataError, match="same length"):
        ReferenceDistribution([0.0, 1.0], [1.0])
    with pytest.raises(DataError, match="NaN or infinite"):
        ReferenceDistribution.from_values([1.0, np.nan])
    with pytest.raises(DataError, match="empty"):
        ReferenceDistribution.from_values([])
    with pytest.raises(DataError, match="drop reference_mask"):
        dist = ReferenceDistribution.from_values([1.0, 2.0])
        match_histogram(Image(np.arange(3.0)), dist, reference_mask=np.ones(2, bool))
