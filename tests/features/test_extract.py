"""Region features: first-order statistics per label, against hand computation and numpy/scipy."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from imharmony.errors import DataError, HarmonizationError
from imharmony.features.extract import (
    FIRST_ORDER_FEATURES,
    features_wide,
    radiomics_features,
    region_features,
)
from imharmony.image import Image


def _reference(values: np.ndarray, bins: int = 32) -> dict[str, float]:
    """The statistics computed one region at a time with numpy and scipy."""
    v = np.asarray(values, dtype=float)
    q10, q25, q50, q75, q90 = np.percentile(v, [10, 25, 50, 75, 90])
    hist, _ = np.histogram(v, bins=bins)
    p = hist[hist > 0] / v.size
    return {
        "mean": v.mean(),
        "median": q50,
        "sd": v.std(),
        "iqr": q75 - q25,
        "p10": q10,
        "p90": q90,
        "skewness": stats.skew(v),
        "kurtosis": stats.kurtosis(v),
        "energy": float((v**2).sum()),
        "entropy": float(-(p * np.log2(p)).sum()),
    }


def test_hand_computed_statistics_on_a_tiny_label_map() -> None:
    # region 1: 1, 2, 3, 4 ; region 2: 10, 10, 10, 50 ; the rest is background (label 0)
    image = Image(np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 50.0], [7.0, 8.0, 9.0, 0.0]]),
                  spacing=(2.0, 0.5))
    labels = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]])
    t = region_features(image, labels, bins=4)
    assert list(t.columns) == list(FIRST_ORDER_FEATURES)
    # the image keyword is img, as for every image function; image= still works, and warns
    pd.testing.assert_frame_equal(region_features(img=image, labels=labels, bins=4), t)
    with pytest.warns(DeprecationWarning, match="'image' is deprecated; use 'img'"):
        pd.testing.assert_frame_equal(region_features(image=image, labels=labels, bins=4), t)
    assert list(t.index) == [1, 2]
    r1 = t.loc[1]
    assert r1["mean"] == 2.5
    assert r1["median"] == 2.5
    assert r1["sd"] == pytest.approx(np.sqrt(1.25))  # deviations ±0.5, ±1.5
    # numpy's linear quantiles: position (n - 1) q = 3 q
    assert r1["iqr"] == pytest.approx(3.25 - 1.75)
    assert r1["p10"] == pytest.approx(1.3)
    assert r1["p90"] == pytest.approx(3.7)
    assert r1["skewness"] == pytest.approx(0.0, abs=1e-12)
    # m4 / m2^2 - 3 = ((0.5^4 + 1.5^4) / 2) / 1.25^2 - 3 = 2.5625 / 1.5625 - 3
    assert r1["kurtosis"] == pytest.approx(2.5625 / 1.5625 - 3.0)
    assert r1["energy"] == 30.0
    # four values in four equal bins of [1, 4]: one per bin -> log2(4) = 2 bits
    assert r1["entropy"] == pytest.approx(2.0)
    assert r1["volume_mm3"] == 4 * 2.0 * 0.5
    r2 = t.loc[2]
    assert r2["mean"] == 20.0
    assert r2["median"] == 10.0
    # three in the first bin of [10, 50], one in the last: -(3/4 log2 3/4 + 1/4 log2 1/4)
    assert r2["entropy"] == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert r2["skewness"] == pytest.approx(stats.skew([10, 10, 10, 50]))


def test_every_statistic_matches_numpy_and_scipy_per_region() -> None:
    rng = np.random.default_rng(0)
    image = Image(rng.gamma(2.0, 3.0, size=(20, 21, 22)), spacing=(1.0, 1.5, 2.0))
    labels = Image(rng.integers(0, 5, size=(20, 21, 22)).astype(np.uint8), spacing=(1.0, 1.5, 2.0))
    t = region_features(image, labels, bins=16)
    assert list(t.index) == [1, 2, 3, 4]
    for lab in (1, 2, 3, 4):
        values = image.array[labels.array == lab]
        ref = _reference(values, bins=16)
        for name, value in ref.items():
            assert t.loc[lab, name] == pytest.approx(value, rel=1e-10, abs=1e-10), name
        assert t.loc[lab, "volume_mm3"] == pytest.approx(values.size * 3.0)


def test_regions_mapping_names_rows_and_an_absent_region_is_nan_with_zero_volume() -> None:
    image = np.arange(12, dtype=float).reshape(3, 4)
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    t = region_features(image, labels, regions={2: "right", 1: "left", 9: "missing"})
    assert list(t.index) == ["right", "left", "missing"]
    assert t.loc["right", "mean"] == np.mean([2, 3, 6, 7])
    assert t.loc["left", "mean"] == np.mean([0, 1, 4, 5])
    assert t.loc["missing"].drop("volume_mm3").isna().all()
    assert t.loc["missing", "volume_mm3"] == 0.0
    only = region_features(image, labels, regions=[2])
    assert list(only.index) == [2]


def test_constant_region_has_zero_spread_nan_shape_and_zero_entropy() -> None:
    image = np.full((4, 4), 7.25)
    labels = np.ones((4, 4), dtype=int)
    row = region_features(image, labels).loc[1]
    assert row["sd"] == 0.0 and row["iqr"] == 0.0
    assert np.isnan(row["skewness"]) and np.isnan(row["kurtosis"])
    assert row["entropy"] == 0.0
    assert row["energy"] == pytest.approx(16 * 7.25**2)


def test_boolean_mask_is_label_one_and_float_labels_that_are_integers_are_accepted() -> None:
    image = np.array([[1.0, 2.0], [3.0, 4.0]])
    a = region_features(image, np.array([[True, True], [False, True]]))
    b = region_features(image, np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert list(a.index) == [1]
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[1, "mean"] == pytest.approx(7.0 / 3.0)


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(np.float64, (6, 7), elements=st.floats(-1e3, 1e3, allow_nan=False,
                                                              allow_infinity=False)),
    labels=hnp.arrays(np.int64, (6, 7), elements=st.integers(0, 3)),
    a=st.floats(0.1, 10.0),
    b=st.floats(-100.0, 100.0),
)
def test_linear_intensity_map_transforms_the_statistics_as_theory_says(
    values: np.ndarray, labels: np.ndarray, a: float, b: float
) -> None:
    """Under x -> a x + b (a > 0): location and quantiles map, spread scales by a, shape,
    entropy and volume are unchanged."""
    if not (labels > 0).any():
        labels[0, 0] = 1
    t0 = region_features(values, labels)
    t1 = region_features(a * values + b, labels)
    for name in ("mean", "median", "p10", "p90"):
        np.testing.assert_allclose(t1[name], a * t0[name] + b, rtol=1e-9, atol=1e-6)
    for name in ("sd", "iqr"):
        np.testing.assert_allclose(t1[name], a * t0[name], rtol=1e-9, atol=1e-6)
    # shape statistics are only stable where the spread is far above round-off
    wide = (t0["sd"] > 1e-3 * (np.abs(t0["mean"]) + 1.0)).to_numpy()
    for name in ("skewness", "kurtosis"):
        np.testing.assert_allclose(t1[name][wide], t0[name][wide], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(t1["volume_mm3"], t0["volume_mm3"])


def test_features_wide_flattens_region_by_feature() -> None:
    table = pd.DataFrame({"mean": [1.0, 2.0], "sd": [3.0, 4.0]},
                         index=pd.Index(["gm", "wm"], name="region"))
    row = features_wide(table)
    assert list(row.index) == ["gm_mean", "gm_sd", "wm_mean", "wm_sd"]
    assert row.tolist() == [1.0, 3.0, 2.0, 4.0]


def test_errors_name_the_problem() -> None:
    img = Image(np.zeros((3, 3)), spacing=(1.0, 1.0))
    with pytest.raises(DataError, match="shape"):
        region_features(img, np.zeros((3, 4), dtype=int))
    with pytest.raises(DataError, match="spacing"):
        region_features(img, Image(np.ones((3, 3), dtype=int), spacing=(2.0, 1.0)))
    with pytest.raises(DataError, match="integers"):
        region_features(img, np.full((3, 3), 0.5))
    with pytest.raises(DataError, match="bins"):
        region_features(img, np.ones((3, 3), dtype=int), bins=0)
    bad = np.zeros((3, 3))
    bad[1, 1] = np.nan
    with pytest.raises(DataError, match=r"NaN.*\['core'\]"):
        region_features(bad, np.ones((3, 3), dtype=int), regions={1: "core"})
    with pytest.raises(DataError, match="more than once"):
        region_features(img, np.ones((3, 3), dtype=int), regions=[1, 1])
    with pytest.raises(DataError, match="real numbers"):
        region_features(np.full((3, 3), "a"), np.ones((3, 3), dtype=int))


def test_radiomics_features_without_pyradiomics_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_radiomics(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "radiomics" or name.startswith("radiomics."):
            raise ImportError("No module named 'radiomics'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_radiomics)
    img = Image(np.zeros((4, 4, 4)))
    with pytest.raises(HarmonizationError, match="pip install pyradiomics-bhklab"):
        radiomics_features(img, Image(np.ones((4, 4, 4), dtype=np.uint8)))


def test_radiomics_first_order_agrees_with_region_features() -> None:
    """Runs only where the optional pyradiomics is installed (an extra, not a requirement)."""
    pytest.importorskip("radiomics")
    rng = np.random.default_rng(1)
    img = Image(rng.normal(100.0, 10.0, size=(16, 16, 16)), spacing=(1.0, 1.0, 2.0))
    lab = np.zeros((16, 16, 16), dtype=np.uint8)
    lab[3:12, 3:12, 3:12] = 1
    labels = Image(lab, spacing=(1.0, 1.0, 2.0))
    rad = radiomics_features(img, labels, feature_classes=["firstorder"])
    ours = region_features(img, labels)
    assert rad.loc[1, "original_firstorder_Mean"] == pytest.approx(ours.loc[1, "mean"], rel=1e-5)
    assert rad.loc[1, "original_firstorder_Median"] == pytest.approx(ours.loc[1, "median"],
                                                                      rel=1e-5)
