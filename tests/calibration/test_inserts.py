"""PhantomCalibration against generated truth and statsmodels' WLS; phantom agreement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from imharmony.diagnostics import phantom_agreement
from imharmony.errors import DesignError, HarmonizationWarning, ModelFileError, UnseenBatchError

HU = {"air": -1000.0, "water": 0.0, "acrylic": 120.0, "bone": 700.0}
GAIN = {"A": 1.0, "B": 1.06, "C": 0.93}
OFFSET = {"A": 0.0, "B": -25.0, "C": 12.0}


def ct_phantom(reps: int = 3, sd: dict[str, float] | None = None, seed: int = 0) -> pd.DataFrame:
    """Inserts measured at three CT sites with known gain/offset; noise SD per insert."""
    rng = np.random.default_rng(seed)
    sd = sd or {"air": 2.0, "water": 2.0, "acrylic": 3.0, "bone": 12.0}
    rows = [
        {"scanner": s, "insert": k, "hu_ref": v,
         "hu": OFFSET[s] + GAIN[s] * v + rng.normal(0, sd[k])}
        for s in GAIN for k, v in HU.items() for _ in range(reps)
    ]
    return pd.DataFrame(rows)


def test_matches_statsmodels_wls_with_replicate_weights() -> None:
    table = ct_phantom(reps=5, seed=1)
    cal = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref", measured="hu",
                                      insert="insert")
    for j, s in enumerate(cal.sites_):
        sub = table[table["scanner"] == s]
        var = sub.groupby("insert")["hu"].transform("var")
        res = sm.WLS(sub["hu"], sm.add_constant(sub["hu_ref"]), weights=1 / var).fit()
        assert cal.offset_[j] == pytest.approx(res.params["const"], rel=1e-10, abs=1e-9)
        assert cal.gain_[j] == pytest.approx(res.params["hu_ref"], rel=1e-10)
        assert cal.offset_se_[j] == pytest.approx(res.bse["const"], rel=1e-8)
        assert cal.gain_se_[j] == pytest.approx(res.bse["hu_ref"], rel=1e-8)
    # explicit SDs (e.g. each ROI's standard error) give the weights 1/sd²
    sd = 1.0 + np.arange(len(table)) % 4
    by_sd = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref",
                                        measured="hu", sd=sd)
    sub = table[table["scanner"] == "C"]
    res = sm.WLS(sub["hu"], sm.add_constant(sub["hu_ref"]),
                 weights=1 / sd[table["scanner"] == "C"] ** 2).fit()
    assert by_sd.gain_[2] == pytest.approx(res.params["hu_ref"], rel=1e-10)
    assert by_sd.gain_se_[2] == pytest.approx(res.bse["hu_ref"], rel=1e-8)
    unweighted = ih.PhantomCalibration(weighted=False).fit(
        table, site="scanner", reference="hu_ref", measured="hu")
    sub = table[table["scanner"] == "B"]
    ols = sm.OLS(sub["hu"], sm.add_constant(sub["hu_ref"])).fit()
    assert unweighted.gain_[1] == pytest.approx(ols.params["hu_ref"], rel=1e-10)
    assert unweighted.gain_se_[1] == pytest.approx(ols.bse["hu_ref"], rel=1e-8)


def test_estimates_lie_within_their_standard_errors_and_weights_help() -> None:
    z, err, err_ols = [], [], []
    true = np.array(list(GAIN.values()))
    for seed in range(40):
        table = ct_phantom(reps=8, seed=seed)
        cal = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref",
                                          measured="hu", insert="insert")
        ols = ih.PhantomCalibration(weighted=False).fit(table, site="scanner",
                                                        reference="hu_ref", measured="hu")
        z.append((cal.gain_ - true) / cal.gain_se_)
        err.append(cal.gain_ - true)
        err_ols.append(ols.gain_ - true)
    z = np.concatenate(z)
    assert np.abs(z).max() < 4.5
    assert 0.8 < z.std() < 1.3
    # the noisy bone insert is down-weighted: the gain is more precise than with equal weights
    assert np.sqrt(np.mean(np.square(err))) < 0.7 * np.sqrt(np.mean(np.square(err_ols)))


def test_refuses_fewer_than_two_inserts_and_decreasing_response() -> None:
    table = ct_phantom(reps=1)
    one = table[(table["scanner"] != "C") | (table["insert"] == "water")]
    with pytest.raises(DesignError, match=r"'C'.*fewer than 2 distinct inserts"):
        ih.PhantomCalibration().fit(one, site="scanner", reference="hu_ref", measured="hu")
    flipped = table.assign(hu=-table["hu"])
    with pytest.raises(DesignError, match="gain <= 0"):
        ih.PhantomCalibration().fit(flipped, site="scanner", reference="hu_ref", measured="hu")
    with pytest.raises(ih.HarmonizationError, match=r"'HU'.*not found"):
        ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref", measured="HU")


def test_linearity_residuals_point_at_the_nonlinear_insert() -> None:
    table = ct_phantom(reps=1, sd={k: 0.0 for k in HU})
    bent = (table["scanner"] == "B") & (table["insert"] == "acrylic")
    table.loc[bent, "hu"] += 40.0
    cal = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref", measured="hu",
                                      insert="insert")
    res = cal.residuals_.set_index(["site", "insert"])
    worst = res["residual"].abs().idxmax()
    assert worst == ("B", "acrylic")
    assert cal.linearity_.loc["A", "max_abs_residual"] < 1e-9
    assert cal.linearity_.loc["B", "max_abs_residual"] > 20
    assert cal.linearity_.loc["A", "r2"] == pytest.approx(1.0)
    assert (cal.linearity_["n_inserts"] == 4).all()


def test_applies_to_images_and_tables_and_warns_outside_the_inserts() -> None:
    cal = ih.PhantomCalibration().fit(ct_phantom(reps=1, sd={k: 0.0 for k in HU}),
                                      site="scanner", reference="hu_ref", measured="hu")
    truth = np.linspace(-900, 650, 24, dtype=np.float32).reshape(2, 3, 4)
    img = ih.Image(OFFSET["B"] + GAIN["B"] * truth, spacing=(1.0, 1.0, 2.0))
    out = cal.transform(img, site="B")
    assert out.array.dtype == np.float32
    assert np.allclose(out.array, truth, atol=1e-3)
    assert out.meta["history"][-1]["step"] == "phantom_calibration"
    assert out.spacing == img.spacing
    table = pd.DataFrame({"mean_hu": [GAIN["C"] * 50 + OFFSET["C"], GAIN["A"] * 10]})
    got = cal.transform(table, site=["C", "A"])
    assert np.allclose(got["mean_hu"], [50, 10])
    with pytest.warns(HarmonizationWarning, match="1 of 2 values.*outside the range"):
        cal.transform(np.array([[0.0], [3000.0]]), site="A")
    with pytest.raises(UnseenBatchError, match="'Z'"):
        cal.transform(img, site="Z")


def test_save_load_round_trip(tmp_path) -> None:
    cal = ih.PhantomCalibration().fit(ct_phantom(), site="scanner", reference="hu_ref",
                                      measured="hu", insert="insert")
    path = cal.save(tmp_path / "cal.json", metadata={"source": "inserts.csv"})
    back = ih.PhantomCalibration.load(path)
    for k in ("offset_", "gain_", "offset_se_", "gain_se_", "range_"):
        assert np.array_equal(getattr(back, k), getattr(cal, k))
    pd.testing.assert_frame_equal(back.linearity_, cal.linearity_, check_dtype=False)
    assert back.metadata_ == {"source": "inserts.csv"}
    (npz,) = tmp_path.glob("cal.*.npz")  # the project's envelope: the arrays' digest in the name
    npz.write_bytes(npz.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(ModelFileError, match="checksum"):
        ih.PhantomCalibration.load(path)


@settings(max_examples=30, deadline=None)
@given(
    gain=st.floats(0.2, 5.0),
    offset=st.floats(-500, 500),
    refs=st.lists(st.floats(-1000, 3000), min_size=2, max_size=6, unique=True),
)
def test_noise_free_calibration_is_exact(gain, offset, refs) -> None:
    ref = np.array(refs)
    if np.ptp(ref) < 1.0:
        return
    cal = ih.PhantomCalibration().fit(site=["s"] * ref.size, reference=ref,
                                      measured=offset + gain * ref)
    assert cal.gain_[0] == pytest.approx(gain, rel=1e-9)
    assert cal.offset_[0] == pytest.approx(offset, abs=1e-6 * (1 + abs(offset) + gain * 3000))
    back = cal.transform((offset + gain * ref)[:, None], site="s")[:, 0]
    assert np.allclose(back, ref, atol=1e-6 * (1 + np.abs(ref).max()))


def test_phantom_agreement_shows_kept_and_erased_insert_differences() -> None:
    table = ct_phantom(reps=1, sd={k: 1.0 for k in HU})
    cal = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref", measured="hu")
    calibrated = cal.transform(table[["hu"]], site=table["scanner"])
    kept = phantom_agreement(table["hu_ref"], table[["hu"]], calibrated)
    assert kept.loc[("after", "hu"), "ccc"] > 0.9999
    assert kept.loc[("before", "hu"), "ccc"] < kept.loc[("after", "hu"), "ccc"]
    assert abs(kept.loc[("after", "hu"), "bias"]) < 1.0
    assert kept.loc[("after", "hu"), "icc_band"] == "excellent"
    # a "harmonization" that erases what differs between inserts (every value to its site mean)
    erased = table.groupby("scanner")["hu"].transform("mean").to_frame("hu")
    lost = phantom_agreement(table["hu_ref"], table[["hu"]], erased)
    assert lost.loc[("after", "hu"), "ccc"] == pytest.approx(0.0, abs=0.05)
    assert lost.loc[("after", "hu"), "icc_band"] == "poor"


def test_phantom_agreement_is_in_the_diagnosis_and_its_report(tmp_path) -> None:
    from imharmony.datasets import make_multisite_features

    data = make_multisite_features(n_per_site=(20, 20), prevalence=(0.5, 0.5), n_features=4,
                                   n_disease_features=2,
                                   random_state=0)
    feats = [c for c in data.table.columns if c.startswith("f")]
    X, site = data.table[feats], data.table["site"]
    table = ct_phantom(reps=1, sd={k: 1.0 for k in HU})
    cal = ih.PhantomCalibration().fit(table, site="scanner", reference="hu_ref", measured="hu")
    calibrated = cal.transform(table[["hu"]], site=table["scanner"])
    d = ih.diagnose(X, ih.ComBat().fit_transform(X, batch=site), batch=site, max_features=0,
                    n_permutations=20, random_state=0,
                    phantom=(table["hu_ref"], table[["hu"]], calibrated))
    assert d.phantom.loc[("after", "hu"), "ccc"] > d.phantom.loc[("before", "hu"), "ccc"]
    # without the data the report skips the distribution and PCA figures (faster)
    html = dataclasses.replace(d, data=None).to_html(tmp_path / "r.html").read_text()
    assert 'id="phantom"' in html and "hu (after)" in html and "excellent" in html
    from imharmony.report.html import _phantom_table

    assert _phantom_table(dataclasses.replace(d, phantom=None)) is None
