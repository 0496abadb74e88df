"""Nyúl & Udupa piecewise-linear histogram standardization (HistogramStandardizer)."""

from __future__ import annotations

import json
import tracemalloc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.base import clone

from imharmony import Image
from imharmony.errors import (
    DataError,
    HarmonizationError,
    HarmonizationWarning,
    ModelFileError,
    NotFittedError,
)
from imharmony.imaging.nyul import HistogramStandardizer, _percentiles

A = np.arange(101, dtype=np.float64)  # percentiles p of A are exactly p
B = A**2 / 100.0  # percentiles 1, 50, 99 of B: B[1] = 0.01, B[50] = 25, B[99] = 98.01


def fitted_by_hand() -> HistogramStandardizer:
    return HistogramStandardizer(landmarks=(1, 50, 99), output_range=(0, 100)).fit(
        [Image(A), Image(B)]
    )


def test_standard_landmarks_by_hand() -> None:
    model = fitted_by_hand()
    # A: (1, 50, 99) -> (0, 49/98·100, 100) = (0, 50, 100)
    # B: (0.01, 25, 98.01) -> (0, 24.99/98·100, 100) = (0, 25.5, 100); mean (0, 37.75, 100)
    np.testing.assert_allclose(model.standard_landmarks_, [0.0, 37.75, 100.0])
    np.testing.assert_allclose(model.image_landmarks_, [[0, 50, 100], [0, 25.5, 100]])
    np.testing.assert_array_equal(model.landmarks_, [1.0, 50.0, 99.0])
    assert model.n_images_ == 2


def test_transform_by_hand_with_linear_extrapolation() -> None:
    model = fitted_by_hand()
    out = model.transform(Image(A)).array
    # segments through (1, 0), (50, 37.75), (99, 100), extended beyond both ends
    expected = np.where(A <= 50, (A - 1) * 37.75 / 49, 37.75 + (A - 50) * 62.25 / 49)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert out[0] == pytest.approx(-37.75 / 49)
    assert out[100] == pytest.approx(37.75 + 50 * 62.25 / 49)
    out_b = model.transform(Image(B)).array
    assert out_b[0] == pytest.approx(-0.01 * 37.75 / 24.99)
    assert out_b[100] == pytest.approx(37.75 + 75 * 62.25 / 73.01)
    np.testing.assert_allclose(out_b[[1, 50, 99]], [0.0, 37.75, 100.0], atol=1e-12)


def test_named_landmarks_and_defaults() -> None:
    rng = np.random.default_rng(0)
    images = [Image(rng.gamma(2.0 + i, size=5000)) for i in range(3)]
    model = HistogramStandardizer().fit(images)
    np.testing.assert_array_equal(model.landmarks_, [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99])
    assert model.standard_landmarks_[0] == 0.0 and model.standard_landmarks_[-1] == 100.0
    quart = HistogramStandardizer(landmarks="quartiles").fit(images)
    np.testing.assert_array_equal(quart.landmarks_, [1, 25, 50, 75, 99])


def test_affine_copies_map_to_the_same_output() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(0.0, 0.5, size=(20, 20, 20))
    scans = [Image(g * base + o) for g, o in ((1.0, 0.0), (3.5, 100.0), (0.2, -7.0))]
    model = HistogramStandardizer().fit(scans)
    outs = [model.transform(s).array for s in scans]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-4, atol=1e-4)
    # the training landmarks land on the standard landmarks
    marks = np.percentile(outs[0], model.landmarks_)
    np.testing.assert_allclose(marks, model.standard_landmarks_, atol=1e-3)


def test_standardization_reduces_between_scanner_differences() -> None:
    rng = np.random.default_rng(2)
    tissue = rng.normal(size=(3, 30_000))
    # three "scanners" with nonlinear, monotone intensity responses of the same tissue
    scans = [np.exp(0.3 * tissue[0]), 50 + 10 * tissue[1], (tissue[2] + 5) ** 2]
    model = HistogramStandardizer().fit([Image(s) for s in scans])
    outs = [model.transform(Image(s)).array for s in scans]
    med = [np.median(o) for o in outs]
    raw_spread = np.ptp([np.median(s) / np.ptp(np.percentile(s, [1, 99])) for s in scans])
    assert np.ptp(med) / 100 < raw_spread / 5


def test_masks_define_landmarks_but_every_voxel_is_mapped() -> None:
    img = np.zeros((10, 10, 10))
    mask = np.zeros(img.shape, dtype=bool)
    mask[2:8, 2:8, 2:8] = True
    img[mask] = np.linspace(10.0, 20.0, int(mask.sum()))
    model = HistogramStandardizer(landmarks=(0, 100)).fit([Image(img)], [mask])
    out = model.transform(Image(img), mask=mask).array
    # landmarks 10 -> 0 and 20 -> 100; background 0 extrapolates to -100
    np.testing.assert_allclose(out[mask], (img[mask] - 10.0) * 10.0)
    np.testing.assert_allclose(out[~mask], -100.0)


def test_foreground_mean_rule_matches_explicit_mask() -> None:
    rng = np.random.default_rng(3)
    img = np.zeros((16, 16, 16))
    img[4:12, 4:12, 4:12] = rng.normal(200.0, 20.0, size=(8, 8, 8))
    fg = img > img.mean()
    a = HistogramStandardizer(foreground="mean").fit([Image(img)])
    b = HistogramStandardizer().fit([Image(img)], [fg])
    np.testing.assert_allclose(a.standard_landmarks_, b.standard_landmarks_)
    np.testing.assert_allclose(a.transform(Image(img)).array, b.transform(Image(img), fg).array)


def test_fit_streams_one_image_at_a_time() -> None:
    alive: list[weakref.ref] = []

    def images():
        rng = np.random.default_rng(4)
        for _ in range(4):
            arr = rng.normal(size=(8, 8, 8))
            # every earlier image has been released by the time the next one is made
            assert sum(r() is not None for r in alive) <= 1
            alive.append(weakref.ref(arr))
            yield Image(arr)

    model = HistogramStandardizer().fit(images(), masks=(None for _ in range(4)))
    assert model.n_images_ == 4


def test_fit_and_transform_from_paths(tmp_path) -> None:
    SimpleITK = pytest.importorskip("SimpleITK")
    paths, mpaths = [], []
    rng = np.random.default_rng(5)
    arrays = [rng.gamma(3.0, 10.0 * (i + 1), size=(6, 7, 8)).astype(np.float32) for i in range(2)]
    for i, arr in enumerate(arrays):
        p, mp = tmp_path / f"img{i}.nii.gz", tmp_path / f"mask{i}.nii.gz"
        SimpleITK.WriteImage(SimpleITK.GetImageFromArray(arr), str(p))
        SimpleITK.WriteImage(SimpleITK.GetImageFromArray((arr > 20).astype(np.uint8)), str(mp))
        paths.append(p)
        mpaths.append(mp)
    by_path = HistogramStandardizer().fit(paths, mpaths)
    in_memory = HistogramStandardizer().fit(
        [Image(a) for a in arrays], [a > 20 for a in arrays]
    )
    np.testing.assert_allclose(by_path.standard_landmarks_, in_memory.standard_landmarks_)
    out = by_path.transform(paths[0], mask=mpaths[0])
    assert out.array.dtype == np.float32
    assert sorted(out.array.shape) == sorted(arrays[0].shape)


def test_mask_count_must_match() -> None:
    imgs = [Image(np.arange(10.0)), Image(np.arange(10.0) * 2)]
    with pytest.raises(DataError, match="fewer masks than images"):
        HistogramStandardizer().fit(imgs, [None])
    with pytest.raises(DataError, match="more masks than images"):
        HistogramStandardizer().fit(imgs, [None, None, np.ones(10, bool)])
    with pytest.raises(DataError, match="no training images"):
        HistogramStandardizer().fit([])


def test_constant_foreground_is_refused() -> None:
    with pytest.raises(DataError, match=r"training image 0.*constant"):
        HistogramStandardizer().fit([Image(np.full(50, 3.0))])
    with pytest.raises(DataError, match="NaN or infinite"):
        HistogramStandardizer().fit([Image(np.array([1.0, np.nan, 2.0]))])
    with pytest.raises(DataError, match="selects no voxels"):
        HistogramStandardizer().fit([Image(np.arange(5.0))], [np.zeros(5, bool)])


def test_tied_landmarks_are_merged_with_a_warning() -> None:
    rng = np.random.default_rng(6)
    model = HistogramStandardizer().fit([Image(rng.normal(size=1000)) for _ in range(2)])
    img = np.concatenate([np.zeros(600), rng.normal(5.0, 1.0, size=400)])
    with pytest.warns(HarmonizationWarning, match="tied landmark"):
        out = model.transform(Image(img)).array
    order = np.argsort(img)
    assert np.all(np.diff(out[order]) >= -1e-9)
    zero = np.unique(out[img == 0])
    assert zero.size == 1
    # the zeros hold landmarks 1..50: they map to the middle of those standard positions
    expected = model.standard_landmarks_[:6].mean()
    assert zero[0] == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(
    arr=hnp.arrays(
        np.float64,
        st.sampled_from([101, 201]),
        elements=st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False),
        unique=True,
    )
)
def test_property_transform_is_monotone_and_hits_the_landmarks(arr: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    model = HistogramStandardizer().fit([Image(rng.gamma(2.0, size=500)) for _ in range(3)])
    out = model.transform(Image(arr)).array
    order = np.argsort(arr)
    assert np.all(np.diff(out[order]) >= -1e-9 * (1 + np.abs(out).max()))
    # with n - 1 a multiple of 100, percentile p is the order statistic p (n - 1) / 100, so the
    # voxel holding it must land exactly on the standard landmark
    at = np.rint(model.landmarks_ * (arr.size - 1) / 100).astype(int)
    np.testing.assert_allclose(out[order[at]], model.standard_landmarks_, rtol=1e-7, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int16]),
        st.integers(1, 300),
        elements=st.integers(-30000, 30000),
    ),
    pct=st.lists(st.floats(0, 100), min_size=1, max_size=12),
)
def test_percentiles_by_sorting_equal_numpy(arr: np.ndarray, pct: list[float]) -> None:
    expected = np.percentile(arr.astype(np.float64), pct)
    np.testing.assert_allclose(_percentiles(arr.copy(), np.array(pct)), expected, atol=1e-9)


# ---------------------------------------------------------------- estimator contract


def test_not_fitted_and_parameter_errors() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        HistogramStandardizer().transform(Image(np.arange(3.0)))
    with pytest.raises(NotFittedError):
        HistogramStandardizer().save("never.json")
    bad = [
        {"landmarks": "octiles"},
        {"landmarks": (10, 5, 90)},
        {"landmarks": (1, 101)},
        {"landmarks": (50,)},
        {"landmarks": ["a", "b"]},
        {"output_range": (10, 0)},
        {"output_range": (0, float("inf"))},
        {"output_range": "wide"},
        {"foreground": "otsu"},
    ]
    for params in bad:
        name = next(iter(params))
        message = f"The '{name}' parameter of HistogramStandardizer must be"
        with pytest.raises(HarmonizationError, match=message):
            HistogramStandardizer(**params).fit([Image(np.arange(10.0))])


def test_sklearn_params_and_clone() -> None:
    model = HistogramStandardizer(landmarks=(2, 50, 98), output_range=(1, 2))
    assert model.get_params() == {
        "landmarks": (2, 50, 98),
        "output_range": (1, 2),
        "foreground": "all",
    }
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "standard_landmarks_")


def test_output_dtype_input_untouched_history() -> None:
    model = fitted_by_hand()
    src = (A * 3).astype(np.int16)
    img = Image(src, meta={"history": [{"step": "earlier"}]})
    out = model.transform(img)
    assert out.array.dtype == np.float32
    np.testing.assert_array_equal(src, (A * 3).astype(np.int16))
    assert img.meta["history"] == [{"step": "earlier"}]
    step = out.meta["history"][-1]
    assert step["step"] == "nyul"
    np.testing.assert_allclose(step["standard_landmarks"], [0.0, 37.75, 100.0])
    assert model.transform(Image(A.astype(np.float32))).array.dtype == np.float32
    assert model.transform(Image(A)).array.dtype == np.float64


def test_transform_peak_memory_below_three_volumes() -> None:
    rng = np.random.default_rng(8)
    vol = rng.normal(100.0, 20.0, size=(128, 128, 128)).astype(np.float32)
    mask = vol > 90
    model = HistogramStandardizer().fit([Image(vol)], [mask])
    tracemalloc.start()
    try:
        out = model.transform(Image(vol), mask=mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.array.nbytes == vol.nbytes
    # chunked piecewise mapping equals the direct formula
    xp = np.array(out.meta["history"][-1]["image_landmarks"])
    fp = np.array(out.meta["history"][-1]["standard_landmarks"])
    sample = vol.ravel()[::997].astype(np.float64)
    direct = np.interp(sample, xp, fp)
    inside = (sample >= xp[0]) & (sample <= xp[-1])
    # float32 output on a 0–100 scale: a few ulps (7.6e-6) of absolute error
    np.testing.assert_allclose(out.array.ravel()[::997][inside], direct[inside], atol=3e-5)
    # new allocations (output, masked copy, chunk temporaries) + the input < 3 volumes
    assert peak + vol.nbytes < 3 * vol.nbytes


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip_is_json(tmp_path) -> None:
    model = fitted_by_hand()
    path = model.save(tmp_path / "nyul.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "imharmony.HistogramStandardizer" and data["kind_version"] == 2
    back = HistogramStandardizer.load(path)
    assert back.get_params() == {
        "landmarks": (1.0, 50.0, 99.0),
        "output_range": (0.0, 100.0),
        "foreground": "all",
    }
    np.testing.assert_array_equal(back.standard_landmarks_, model.standard_landmarks_)
    np.testing.assert_array_equal(back.image_landmarks_, model.image_landmarks_)
    assert back.n_images_ == 2
    np.testing.assert_array_equal(
        back.transform(Image(B)).array, model.transform(Image(B)).array
    )
    named = HistogramStandardizer().fit([Image(A), Image(B)])
    assert HistogramStandardizer.load(named.save(tmp_path / "n.json")).landmarks == "deciles"


def test_load_refuses_bad_files(tmp_path) -> None:
    from imharmony._persist import _digest

    good = json.loads(fitted_by_hand().save(tmp_path / "good.json").read_text())

    def signed(field: str, value: object) -> str:
        doc = json.loads(json.dumps(good))
        doc["content"][field] = value
        doc["checksums"][field] = _digest(value)
        return json.dumps(doc)

    cases = {
        "missing.json": (None, "no such model file"),
        "truncated.json": (json.dumps(good)[:40], "invalid JSON"),
        "binary.json": (b"\x80\x04\x95pickle", "invalid JSON"),
        "format.json": (json.dumps({**good, "kind": "imharmony.combat"}), "not a"),
        "version.json": (json.dumps({**good, "kind_version": 1}), "re-fit"),
        "old.json": (json.dumps({"format": "imharmony.HistogramStandardizer"}), "re-fit"),
        "edited.json": (
            json.dumps({**good, "content": {**good["content"], "n_images": 5}}),
            "'n_images' do not match their checksum",
        ),
        "count.json": (signed("n_images", 5), "'image_landmarks_' is declared as"),
        "badparam.json": (
            signed("params", {**good["content"]["params"], "foreground": "?"}),
            "field 'params'.*'foreground'",
        ),
        "fewer.json": (
            signed("params", {**good["content"]["params"], "landmarks": [1.0, 99.0]}),
            "'landmarks_' is declared as",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(ModelFileError, match=message):
            HistogramStandardizer.load(path)
