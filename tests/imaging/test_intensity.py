"""Tests of intensity normalization: z-score, robust z-score, WhiteStripe."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm

from imharmony.errors import DataError
from imharmony.image import Image
from imharmony.imaging.intensity import IQR_TO_SD, robust_zscore, whitestripe, zscore


def test_zscore_hand_computed_and_outside_choices() -> None:
    arr = np.array([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = np.array([[True, True, True], [True, False, False]])
    # mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    sd = math.sqrt(1.25)
    keep = zscore(Image(arr), mask)
    np.testing.assert_allclose(
        keep.array, (arr - 2.5) / sd, rtol=1e-12
    )
    zero = zscore(Image(arr), mask, outside="zero")
    np.testing.assert_allclose(zero.array[mask], (arr[mask] - 2.5) / sd, rtol=1e-12)
    assert np.all(zero.array[~mask] == 0)
    nan = zscore(Image(arr), Image(mask.astype(np.uint8)), outside="nan")
    assert np.all(np.isnan(nan.array[~mask]))
    np.testing.assert_allclose(nan.array[mask], (arr[mask] - 2.5) / sd, rtol=1e-12)
    step = keep.meta["history"][-1]
    assert step == {"step": "zscore", "mean": 2.5, "sd": pytest.approx(sd), "outside": "keep"}


def test_zscore_float32_precision_large_offset() -> None:
    # CT-like values: large offset, small spread; float32 storage, float64 statistics
    rng = np.random.default_rng(0)
    arr = (1000.0 + rng.normal(0.0, 2.0, size=(64, 64, 32))).astype(np.float32)
    mask = rng.random(arr.shape) < 0.4
    out = zscore(Image(arr), mask)
    ref = arr[mask].astype(np.float64)
    step = out.meta["history"][-1]
    assert step["mean"] == pytest.approx(ref.mean(), rel=1e-12)
    assert step["sd"] == pytest.approx(ref.std(), rel=1e-6)
    assert out.array.dtype == np.float32
    assert float(out.array[mask].mean(dtype=np.float64)) == pytest.approx(0.0, abs=1e-4)


def test_zscore_integer_input_and_untouched() -> None:
    arr = np.array([[0, 10], [20, 30]], dtype=np.int16)
    before = arr.copy()
    out = zscore(Image(arr))
    np.testing.assert_array_equal(arr, before)
    sd = math.sqrt(125.0)
    np.testing.assert_allclose(out.array, (before - 15.0) / sd, rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    data=arrays(np.float64, st.integers(5, 60), elements=st.floats(-1e3, 1e3)),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-1e3, 1e3),
)
def test_zscore_properties(data: np.ndarray, scale: float, shift: float) -> None:
    # spread >= 1 keeps the rounding of data·scale + shift far below the tolerance
    assume(np.ptp(data) >= 1.0)
    out = zscore(Image(data)).array
    assert out.mean() == pytest.approx(0.0, abs=1e-9)
    assert out.std() == pytest.approx(1.0, rel=1e-9)
    # invariant to a positive affine change of units
    moved = zscore(Image(data * scale + shift)).array
    np.testing.assert_allclose(moved, out, atol=1e-6)


def test_robust_zscore_hand_computed() -> None:
    # the scale constant is the IQR of the standard normal
    assert norm.ppf(0.75) - norm.ppf(0.25) == pytest.approx(IQR_TO_SD, rel=1e-12)
    arr = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1000.0])
    mask = np.arange(9) < 8
    # quartiles of 1..8 (linear rule): 2.75, 4.5, 6.25 -> IQR 3.5
    out = robust_zscore(Image(arr), mask, outside="zero")
    scale = 3.5 / IQR_TO_SD
    np.testing.assert_allclose(out.array[:8], (arr[:8] - 4.5) / scale, rtol=1e-12)
    assert out.array[8] == 0
    step = out.meta["history"][-1]
    assert step["median"] == 4.5 and step["iqr"] == pytest.approx(3.5)


def test_robust_zscore_resists_outliers() -> None:
    rng = np.random.default_rng(1)
    clean = rng.normal(50.0, 5.0, size=200_000)
    dirty = clean.copy()
    dirty[:4000] = 5000.0  # 2% of voxels are wild
    rz = robust_zscore(Image(dirty)).meta["history"][-1]
    assert rz["median"] == pytest.approx(50.0, abs=0.3)
    assert rz["scale"] == pytest.approx(5.0, rel=0.05)
    z = zscore(Image(dirty)).meta["history"][-1]
    assert z["sd"] > 100  # the plain z-score is ruined by them


def test_errors() -> None:
    img = Image(np.arange(12.0).reshape(3, 4))
    with pytest.raises(DataError, match="empty"):
        zscore(img, np.zeros((3, 4), bool))
    with pytest.raises(DataError, match="shape"):
        zscore(img, np.ones((4, 3), bool))
    with pytest.raises(DataError, match="outside"):
        zscore(img, outside="drop")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="constant"):
        zscore(Image(np.ones((3, 3))))
    with pytest.raises(DataError, match="interquartile"):
        robust_zscore(Image(np.array([1.0, 1.0, 1.0, 1.0, 2.0])))
    bad = np.arange(12.0).reshape(3, 4)
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        zscore(Image(bad))
    # NaN outside the mask is fine
    ok = zscore(Image(bad), ~np.isnan(bad))
    assert np.isfinite(ok.array[1:]).all()
    with pytest.raises(DataError, match="contrast"):
        whitestripe(img, contrast="FLAIR")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="width"):
        whitestripe(img, width=0.7)


# --- WhiteStripe on a synthetic three-tissue brain --------------------------------------------

_FRACTIONS = {"csf": 0.15, "gm": 0.40, "wm": 0.45}


def _three_tissue(
    means: dict[str, float], sds: dict[str, float], n: int = 64**3, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled tissues with exact fractions, a zero background border, and the WM label."""
    rng = np.random.default_rng(seed)
    counts = {k: round(f * n) for k, f in _FRACTIONS.items()}
    counts["wm"] = n - counts["csf"] - counts["gm"]
    values, labels = [], []
    for i, k in enumerate(("csf", "gm", "wm")):
        values.append(rng.normal(means[k], sds[k], counts[k]))
        labels.append(np.full(counts[k], i))
    order = rng.permutation(n)
    vals = np.concatenate(values)[order]
    labs = np.concatenate(labels)[order]
    side = round(n ** (1 / 3))
    arr = np.zeros((side + 8,) * 3, np.float32)
    brain = np.zeros(arr.shape, bool)
    brain[4:-4, 4:-4, 4:-4] = True
    arr[brain] = vals
    wm = np.zeros(arr.shape, bool)
    wm[brain] = labs == 2
    return arr, brain, wm


def _expected_wm_sd_in_stripe_units(width: float = 0.05) -> float:
    """Standard deviation of all WM in units of the stripe's standard deviation.

    With tissues well separated, the stripe is WM between its own quantiles 0.5 ± width / p_wm,
    i.e. a normal truncated to ±z; its variance is 1 − 2zφ(z) / (2Φ(z) − 1) WM variances.
    """
    z = norm.ppf(0.5 + width / _FRACTIONS["wm"])
    trunc_var = 1.0 - 2.0 * z * norm.pdf(z) / (2.0 * norm.cdf(z) - 1.0)
    return 1.0 / math.sqrt(trunc_var)


def test_whitestripe_t1_three_tissues() -> None:
    means = {"csf": 300.0, "gm": 650.0, "wm": 1000.0}
    sds = {"csf": 60.0, "gm": 60.0, "wm": 50.0}
    arr, brain, wm = _three_tissue(means, sds)
    out = whitestripe(Image(arr), brain, contrast="T1w")
    step = out.meta["history"][-1]
    assert step["mode"] == pytest.approx(1000.0, abs=0.15 * 50.0)
    norm_wm = out.array[wm].astype(np.float64)
    # the WM mean maps to 0 (within the mode's sampling error) ...
    assert norm_wm.mean() * step["sd"] == pytest.approx(0.0, abs=0.15 * 50.0)
    # ... the stripe (normal-appearing WM as the method defines it) to sd 1, and all of WM
    # to the hand-computed truncated-normal ratio
    lo, hi = step["stripe"]
    in_stripe = brain & (arr >= lo) & (arr <= hi)
    assert out.array[in_stripe].mean() == pytest.approx(0.0, abs=1e-5)
    assert out.array[in_stripe].std() == pytest.approx(1.0, rel=1e-5)
    assert norm_wm.std() == pytest.approx(_expected_wm_sd_in_stripe_units(), rel=0.05)
    # the stripe holds 2·width of the foreground
    assert in_stripe.sum() / brain.sum() == pytest.approx(0.10, abs=0.002)
    # Silverman's bandwidth on the foreground
    fg = arr[brain].astype(np.float64)
    q1, q3 = np.quantile(fg, [0.25, 0.75])
    h = 0.9 * min(fg.std(), (q3 - q1) / 1.34) * fg.size ** -0.2
    assert step["bandwidth"] == pytest.approx(h, rel=1e-6)


def test_whitestripe_t2_largest_mode() -> None:
    # T2w: CSF brightest, WM darkest but the most frequent tissue
    means = {"csf": 1800.0, "gm": 900.0, "wm": 600.0}
    sds = {"csf": 120.0, "gm": 60.0, "wm": 45.0}
    arr, brain, wm = _three_tissue(means, sds, seed=11)
    out = whitestripe(Image(arr), brain, contrast="T2w")
    step = out.meta["history"][-1]
    assert step["mode"] == pytest.approx(600.0, abs=0.15 * 45.0)
    assert float(out.array[wm].mean()) * step["sd"] == pytest.approx(0.0, abs=0.15 * 45.0)
    # as T1w it would pick the last mode: CSF
    wrong = whitestripe(Image(arr), brain, contrast="T1w").meta["history"][-1]
    assert wrong["mode"] == pytest.approx(1800.0, abs=0.15 * 120.0)


def test_whitestripe_is_unit_free() -> None:
    means = {"csf": 0.3, "gm": 0.65, "wm": 1.0}
    sds = {"csf": 0.06, "gm": 0.06, "wm": 0.05}
    arr, brain, _ = _three_tissue(means, sds, n=40**3, seed=3)
    a = whitestripe(Image(arr), brain).array
    b = whitestripe(Image(arr * np.float32(1000.0)), brain).array
    np.testing.assert_allclose(b, a, atol=2e-4)
    # default foreground: the non-zero voxels (the background here is exactly 0)
    c = whitestripe(Image(arr), outside="zero")
    np.testing.assert_allclose(c.array[brain], a[brain], atol=1e-6)
    assert np.all(c.array[~brain] == 0)
