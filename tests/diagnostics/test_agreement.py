"""Agreement statistics: Lin's CCC, ICC(2,1) against Shrout & Fleiss (1979), Bland-Altman."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imharmony.diagnostics import (
    agreement,
    bland_altman,
    concordance_correlation,
    icc_2_1,
    koo_li_band,
)
from imharmony.errors import DataError

# Shrout PE, Fleiss JL (1979), Psychol Bull 86:420, Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def test_icc21_shrout_fleiss_table():
    # Published (Table 4): ICC(2,1) = .29 (from BMS 11.24, JMS 32.49, EMS 1.02).
    assert round(icc_2_1(SHROUT_FLEISS), 2) == 0.29
    # and, to the precision of the published mean squares, from BMS, JMS and EMS directly
    bms, jms, ems, n, k = 11.24, 32.49, 1.02, 6, 4
    expected = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(expected, rel=1e-3)


def test_icc21_vectorized_over_features():
    stacked = np.stack([SHROUT_FLEISS, SHROUT_FLEISS * 3 + 1, SHROUT_FLEISS[::-1]], axis=2)
    out = icc_2_1(stacked)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(icc_2_1(SHROUT_FLEISS))
    assert out[1] == pytest.approx(out[0])  # invariant to a common affine change of units
    assert out[2] == pytest.approx(out[0])  # and to the order of the targets


def test_icc21_perfect_agreement_and_errors():
    x = np.arange(10.0)
    assert icc_2_1(np.column_stack([x, x])) == pytest.approx(1.0)
    # a constant offset between raters is disagreement in absolute terms
    assert icc_2_1(np.column_stack([x, x + 5])) < 0.8
    with pytest.raises(DataError):
        icc_2_1(np.ones((1, 3)))
    with pytest.raises(DataError):
        icc_2_1(np.array([[1.0, np.nan], [2, 3]]))


def test_ccc_hand_computed():
    # means 2, 3; population variances 2/3; covariance 2/3 -> 2(2/3) / (2/3 + 2/3 + 1) = 4/7
    assert concordance_correlation([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # perfect correlation but a change of scale: x vs 2x for x = 1,2,3:
    # s_xy = 4/3, s_x^2 = 2/3, s_y^2 = 8/3, (2 - 4)^2 = 4 -> (8/3) / (22/3) = 4/11
    assert concordance_correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(4 / 11)
    out = concordance_correlation(np.array([[1, 1], [2, 2], [3, 3.0]]),
                                  np.array([[2, 1], [3, 2], [4, 3.0]]))
    np.testing.assert_allclose(out, [4 / 7, 1.0])


@settings(max_examples=60, deadline=None)
@given(arrays(float, st.integers(3, 30), elements=st.floats(-1e3, 1e3)), st.data())
def test_ccc_is_one_iff_identical(x, data):
    assume(np.ptp(x) > 1e-6)
    assert concordance_correlation(x, x) == pytest.approx(1.0)
    y = data.draw(arrays(float, x.shape, elements=st.floats(-1e3, 1e3)))
    assume(np.max(np.abs(x - y)) > 1e-3 * max(1.0, np.ptp(x)))
    c = concordance_correlation(x, y)
    assert c < 1.0
    r = np.corrcoef(x, y)[0, 1] if np.std(y) > 1e-100 else 0.0  # (a subnormal spread: 0)
    assert c <= abs(r) + 1e-9  # CCC = r * bias correction factor (<= 1)


def test_bland_altman_hand_computed():
    # d = 1,0,1,2: bias 1, sd sqrt(2/3)
    ba = bland_altman([1, 2, 3, 4], [0, 2, 2, 2])
    sd = np.sqrt(2 / 3)
    assert ba.bias == pytest.approx(1.0)
    assert ba.sd == pytest.approx(sd)
    assert ba.lower == pytest.approx(1 - 1.96 * sd)
    assert ba.upper == pytest.approx(1 + 1.96 * sd)
    with pytest.raises(DataError):
        bland_altman([1, 2], [1, 2, 3])


def test_koo_li_bands():
    assert [koo_li_band(v) for v in (0.3, 0.5, 0.74, 0.75, 0.9, 0.91, np.nan)] == [
        "poor", "moderate", "moderate", "good", "good", "excellent", "undefined"]


def test_agreement_table():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 2))
    est = np.column_stack([truth[:, 0], truth[:, 1] + 0.5])
    tab = agreement(est, truth, feature_names=["exact", "shifted"])
    assert tab.loc["exact", "ccc"] == pytest.approx(1.0)
    assert tab.loc["exact", "icc_band"] == "excellent"
    assert tab.loc["shifted", "bias"] == pytest.approx(0.5)
    assert tab.loc["shifted", "loa_lower"] == pytest.approx(0.5)
    assert tab.loc["shifted", "ccc"] < 1
