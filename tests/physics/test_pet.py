"""PET -> SUV: reference objects, every header case, and properties.

Expected values are computed here from the physics (closed forms written out in each test, the
check values of the physics notes, or hand arithmetic), never taken from imharmony's output.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.dicom import (
    GE_SCAN_DATETIME,
    PHILIPS_ACTIVITY_FACTOR,
    PHILIPS_SUV_FACTOR,
    apply_tags,
    build_series,
    no_creator,
    save_series,
)
from imharmony.errors import DataError, HarmonizationError, HarmonizationWarning
from imharmony.physics.pet import (
    SUVError,
    SUVParameters,
    activity_factors,
    body_surface_area,
    decay_factor,
    ideal_body_weight,
    injection_datetime,
    lean_body_mass,
    pet_parameters,
    reference_time,
    suv_factors,
)


def pet_series(n=3, *, stored=None, radio=None, per_instance=None, **header):
    """The factory's PET series: ``n`` instances (2 x 2 slices of 1000 unless ``stored``) with
    the ``header`` attributes and the ``radio`` attributes of the Radiopharmaceutical
    Information Sequence item set (None removes)."""
    if radio is not None:
        header["RadiopharmaceuticalInformationSequence"] = radio
    stored = np.full((n, 2, 2), 1000, np.int16) if stored is None else stored
    return build_series(stored, modality="PT", tags=header, per_instance=per_instance)


NO_RADIO = {"RadiopharmaceuticalInformationSequence": None}  # header without the sequence


def write_series(series, folder):
    """Write ``series`` as PT_0001.dcm... and read it back (each dataset then has its filename)."""
    paths = save_series(folder, series, filenames="PT_{number:04d}.dcm")
    return [pydicom.dcmread(p) for p in paths]


F18 = 6586.2  # s
GA68 = 4062.6  # s
W_G = 75_000.0  # the factory's 75 kg, in g
DOSE = 370e6  # the factory's 370 MBq, in Bq


def bw_factor(elapsed_s: float, half_life: float = F18, dose: float = DOSE, w_g: float = W_G):
    """SUVbw factor for activity decay-corrected to a time elapsed_s after injection."""
    return w_g / (dose * 2.0 ** (-elapsed_s / half_life))


# The factory's default series: injection 10:00, series and acquisition 11:00 -> 3600 s.
DEFAULT = bw_factor(3600.0)


# ----------------------------------------------------------------------------------------------
# IBSI digital reference objects
# ----------------------------------------------------------------------------------------------


def _dro_stats(folder: Path) -> tuple[float, float, float]:
    datasets = [pydicom.dcmread(p) for p in sorted((folder / "PT").glob("*.dcm"))]
    assert len(datasets) == 20
    factors = suv_factors(datasets)
    values = np.concatenate(
        [
            (float(ds.RescaleSlope) * ds.pixel_array + float(ds.RescaleIntercept)).ravel() * f
            for ds, f in zip(datasets, factors, strict=True)
        ]
    )
    values = values[values != 0]
    return float(values.min()), float(np.median(values)), float(values.max())


def test_ibsi_dro_0_0_bqml_start(shared_data):
    stats = _dro_stats(shared_data / "ibsi_suv_dro" / "DRO_0_0")
    # Measured: 0.20000025 / 1.00000125 / 4.00000500 (relative error 1.25e-6, the DRO's rounding).
    np.testing.assert_allclose(stats, (0.20, 1.00, 4.00), rtol=1e-5, atol=0)


def test_ibsi_dro_3_0_dose_in_mbq(shared_data):
    with pytest.warns(HarmonizationWarning, match=r"\(0018,1074\).*MBq"):
        stats = _dro_stats(shared_data / "ibsi_suv_dro" / "DRO_3_0")
    np.testing.assert_allclose(stats, (0.20, 1.00, 4.00), rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------------------------
# Check values of the physics notes (75 kg, 1.85 m, male, 100 Bq, no decay)
# ----------------------------------------------------------------------------------------------


def _no_decay_series(**header):
    # injected at the series time: elapsed 0 s
    return pet_series(radio={"RadiopharmaceuticalStartDateTime": "20250101110000"}, **header)


@pytest.mark.parametrize(
    ("units", "formula", "expected"),
    [
        ("suvbw", "james128", 750.0),
        ("suv", "james128", 750.0),
        ("suvbsa", "james128", 198.1375843),
        ("suvlbm", "janmahasatian", 609.1533589),
        # James: 1.10*75 - 128*(75/185)^2 = 82.5 - 21.0372534696 = 61.4627465304 kg
        ("suvlbm", "james128", 614.627465304),
        # James, 120 for males: 82.5 - 120*(75/185)^2 = 82.5 - 19.7224251278 = 62.7775748722 kg
        ("suvlbm", "james120", 627.775748722),
        # Devine form: 48.0 + 1.06*(185 - 152) = 82.98 kg
        ("suvibw", "james128", 829.8),
    ],
)
def test_check_values(units, formula, expected):
    factors = suv_factors(_no_decay_series(), units, lbm_formula=formula, dose=100.0)
    np.testing.assert_allclose(factors, expected, rtol=1e-9)


def test_building_blocks_check_values():
    assert body_surface_area(75.0, 1.85) * 1e4 / 100 == pytest.approx(198.1375843, rel=1e-9)
    assert lean_body_mass(75.0, 1.85, "M", "janmahasatian") == pytest.approx(60.91533589, rel=1e-9)
    assert lean_body_mass(75.0, 1.85, "M") == pytest.approx(61.4627465304, rel=1e-10)
    # female James: 1.07*75 - 148*(75/185)^2 = 80.25 - 24.3243243243 = 55.9256756757
    assert lean_body_mass(75.0, 1.85, "F") == pytest.approx(55.9256756757, rel=1e-10)
    assert lean_body_mass(75.0, 1.85, "O") == pytest.approx(
        (61.4627465304 + 55.9256756757) / 2, rel=1e-10
    )
    assert lean_body_mass(75.0, 1.85, None) == lean_body_mass(75.0, 1.85, "O")
    assert ideal_body_weight(1.85, "M") == pytest.approx(82.98)
    assert ideal_body_weight(1.85, "F") == pytest.approx(75.53)  # 45.5 + 0.91*33
    assert ideal_body_weight(1.85) == pytest.approx((82.98 + 75.53) / 2)
    assert decay_factor(F18, F18) == 0.5
    assert decay_factor(0.0, F18) == 1.0
    np.testing.assert_allclose(decay_factor([0.0, F18, 2 * F18], F18), [1.0, 0.5, 0.25])


def test_james_breaks_down_at_high_bmi():
    # 250 kg, 1.50 m: 1.10*250 - 128*(250/150)^2 = 275 - 355.6 < 0
    with pytest.raises(SUVError, match="janmahasatian"):
        lean_body_mass(250.0, 1.5, "M")
    assert 0 < lean_body_mass(250.0, 1.5, "M", "janmahasatian") < 250.0


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------


def test_bqml_start_default():
    np.testing.assert_allclose(suv_factors(pet_series()), DEFAULT, rtol=1e-12)
    # by hand: 2^(-3600/6586.2) = 0.68463292, 370e6 * 0.68463292 = 253314180 Bq,
    # 75000 / 253314180 = 2.960750e-4
    np.testing.assert_allclose(suv_factors(pet_series()), 2.960750e-4, rtol=1e-6)


def test_per_slice_slopes_and_intercepts():
    # Known activity (Bq/ml) per slice; each slice stores it with its own slope and intercept.
    activity = np.array(
        [
            [[1000.0, 2000.0], [3000.0, 4000.0]],
            [[500.0, 0.0], [8000.0, 250.0]],
            [[7.0, 9.0], [3.0, 1.0]],
        ]
    )
    slopes = [0.5, 0.25, 0.001]
    intercepts = [10.0, 0.0, -2.0]
    stored = np.stack([(a - b) / m for a, m, b in zip(activity, slopes, intercepts, strict=True)])
    assert np.allclose(stored, np.round(stored))
    series = pet_series(
        stored=np.round(stored).astype(np.int16),
        per_instance={"RescaleSlope": [str(s) for s in slopes], "RescaleIntercept": intercepts},
    )
    factors = suv_factors(series)
    suv = np.stack(
        [
            (float(ds.RescaleSlope) * ds.pixel_array + float(ds.RescaleIntercept)) * f
            for ds, f in zip(series, factors, strict=True)
        ]
    )
    np.testing.assert_allclose(suv, activity * DEFAULT, rtol=1e-12)


def test_cnts_philips_suv_scale_factor():
    series = pet_series(Units="CNTS", Manufacturer="Philips Medical Systems")
    for ds, f in zip(series, ["0.0002", "0.00021", "0.00022"], strict=True):
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", f)})
    np.testing.assert_allclose(suv_factors(series), [2e-4, 2.1e-4, 2.2e-4], rtol=1e-12)
    # SUVlbm (SUL) from a body-weight factor: times LBM / W = 60.91533589 / 75
    np.testing.assert_allclose(
        suv_factors(series, "suvlbm", lbm_formula="janmahasatian"),
        np.array([2e-4, 2.1e-4, 2.2e-4]) * 60.91533589 / 75,
        rtol=1e-9,
    )


def test_cnts_philips_activity_concentration_factor():
    series = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds, f in zip(series, ["1.5", "1.5", "2.0"], strict=True):
        apply_tags(ds, {PHILIPS_ACTIVITY_FACTOR: ("DS", f)})
    # counts * factor = Bq/ml, then as BQML
    np.testing.assert_allclose(suv_factors(series), np.array([1.5, 1.5, 2.0]) * DEFAULT, rtol=1e-12)


def test_cnts_suv_factor_preferred_over_activity_factor():
    series = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds in series:
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", "0.0003"),
                        PHILIPS_ACTIVITY_FACTOR: ("DS", "2.0")})
    np.testing.assert_allclose(suv_factors(series), 3e-4, rtol=1e-12)
    assert pet_parameters(series).scale == "philips_suv_factor"


def test_philips_creator_in_another_block():
    series = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds in series:
        ds.add_new((0x7053, 0x0010), "LO", "Some Other Creator")
        ds.add_new((0x7053, 0x1000), "DS", "99")  # belongs to the other creator: not ours
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", "0.0004")})  # the next free block, 0x11
        assert ds[0x7053, 0x0011].value == "Philips PET Private Group"
    np.testing.assert_allclose(suv_factors(series), 4e-4, rtol=1e-12)


def test_philips_without_creator_falls_back_on_manufacturer():
    series = pet_series(Units="CNTS", Manufacturer="Philips Medical Systems")
    for ds in series:
        apply_tags(ds, {no_creator(PHILIPS_SUV_FACTOR): ("DS", "0.0005")})
    np.testing.assert_allclose(suv_factors(series), 5e-4, rtol=1e-12)

    other = pet_series(Units="CNTS", Manufacturer="SIEMENS")
    for ds in other:
        apply_tags(ds, {no_creator(PHILIPS_SUV_FACTOR): ("DS", "0.0005")})
    with pytest.raises(SUVError, match=r"7053,xx00.*7053,xx09"):
        suv_factors(other)


def test_private_values_read_as_unknown_vr_bytes():
    # Without a creator (and in implicit VR files) private values arrive as UN bytes.
    series = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds in series:
        apply_tags(ds, {no_creator(PHILIPS_SUV_FACTOR): ("UN", b"0.0005")})
    np.testing.assert_allclose(suv_factors(series), 5e-4, rtol=1e-12)
    ge = pet_series(SeriesTime="120000", Manufacturer="GE MEDICAL SYSTEMS")
    for ds in ge:
        apply_tags(ds, {no_creator(GE_SCAN_DATETIME): ("UN", b"20250101105000.00 ")})
    np.testing.assert_allclose(suv_factors(ge), bw_factor(3000.0), rtol=1e-12)


def test_bqml_ignores_philips_private_factors():
    series = pet_series(Manufacturer="Philips")
    for ds in series:
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", "0.5"),
                        PHILIPS_ACTIVITY_FACTOR: ("DS", "3.0")})
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_cnts_without_any_factor_refused(tmp_path):
    series = write_series(pet_series(Units="CNTS", Manufacturer="Philips"), tmp_path)
    with pytest.raises(SUVError, match=r"CNTS.*PT_0001\.dcm"):
        suv_factors(series)


def test_activity_factors_bqml_needs_no_dose_time_or_body_size():
    series = pet_series(PatientWeight=None, DecayCorrection=None, **NO_RADIO)
    np.testing.assert_array_equal(activity_factors(series), [1.0, 1.0, 1.0])


def test_activity_factors_cnts_use_the_philips_activity_factor_only():
    series = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds, f in zip(series, ["1.5", "1.5", "2.0"], strict=True):
        # the SUV factor must not be used for Bq/ml
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", "0.0003"), PHILIPS_ACTIVITY_FACTOR: ("DS", f)})
    np.testing.assert_allclose(activity_factors(series), [1.5, 1.5, 2.0], rtol=1e-15)
    suv_only = pet_series(Units="CNTS", Manufacturer="Philips")
    for ds in suv_only:
        apply_tags(ds, {PHILIPS_SUV_FACTOR: ("DS", "0.0003")})
    with pytest.raises(SUVError, match=r"CNTS.*Activity Concentration Scale Factor \(7053,xx09\)"):
        activity_factors(suv_only)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"Units": "GML"}, "already SUV"),
        ({"Units": "CM2ML", "SUVType": "BSA"}, "already SUV"),
        ({"Units": "PROPCNTS"}, "proportional to counts"),
        ({"Units": "XYZ"}, "not an activity unit"),
        ({"Units": None}, r"Units \(0054,1001\)"),
        ({"Modality": "CT"}, "Bq/ml applies to PET images only"),
    ],
)
def test_activity_factors_refused_with_the_reason(header, reason):
    with pytest.raises(SUVError, match=reason):
        activity_factors(pet_series(**header))


@pytest.mark.parametrize("suv_type", [None, "", "BW"])
def test_gml_body_weight(suv_type):
    series = pet_series(Units="GML", SUVType=suv_type)
    np.testing.assert_allclose(suv_factors(series), 1.0)
    np.testing.assert_allclose(suv_factors(series, "suvbw"), 1.0)
    # Stored SUVbw re-normalized to SUL: LBM / W
    np.testing.assert_allclose(
        suv_factors(series, "suvlbm", lbm_formula="janmahasatian"), 60.91533589 / 75, rtol=1e-9
    )


def test_gml_needs_no_patient_data_when_kept():
    series = pet_series(
        Units="GML", PatientWeight=None, PatientSize=None, DecayCorrection=None, **NO_RADIO
    )
    np.testing.assert_allclose(suv_factors(series), 1.0)


def test_gml_lbm_type():
    series = pet_series(Units="GML", SUVType="LBM")
    np.testing.assert_allclose(suv_factors(series), 1.0)
    np.testing.assert_allclose(suv_factors(series, "suvlbm"), 1.0)  # same formula (James 128)
    np.testing.assert_allclose(suv_factors(series, "suvbw"), 75 / 61.4627465304, rtol=1e-10)
    np.testing.assert_allclose(
        suv_factors(series, "suvlbm", lbm_formula="janmahasatian"),
        60.91533589 / 61.4627465304,
        rtol=1e-9,
    )
    janma = pet_series(Units="GML", SUVType="LBMJANMA")
    np.testing.assert_allclose(suv_factors(janma, "suvlbm", lbm_formula="janmahasatian"), 1.0)
    np.testing.assert_allclose(suv_factors(janma, "suvbw"), 75 / 60.91533589, rtol=1e-9)


def test_cm2ml_is_suvbsa():
    series = pet_series(Units="CM2ML")
    np.testing.assert_allclose(suv_factors(series), 1.0)
    np.testing.assert_allclose(suv_factors(series, "suvbsa"), 1.0)
    # SUVbw = SUVbsa * W[g] / BSA[cm2]; BSA = 198.1375843 * 100 cm2 (check value)
    np.testing.assert_allclose(suv_factors(series, "suvbw"), 75000 / 19813.75843, rtol=1e-9)


@pytest.mark.parametrize("units", ["PROPCNTS", "PROPCPS", "1CM", "NOTAUNIT"])
def test_unconvertible_units_refused(units):
    with pytest.raises(SUVError, match=rf"\(0054,1001\).*{units}"):
        suv_factors(pet_series(Units=units))


def test_contradictory_suv_type_refused():
    with pytest.raises(SUVError, match="CM2ML"):
        suv_factors(pet_series(Units="GML", SUVType="BSA"))
    with pytest.raises(SUVError, match="contradicts"):
        suv_factors(pet_series(Units="CM2ML", SUVType="BW"))


# ----------------------------------------------------------------------------------------------
# Decay correction
# ----------------------------------------------------------------------------------------------


def _frame_mean_decay(t0: float, duration: float, half_life: float) -> float:
    """Mean of 2^(-t/T_half) over [t0, t0 + duration], by fine numerical quadrature."""
    t = np.linspace(t0, t0 + duration, 200_001)
    y = 2.0 ** (-t / half_life)
    return float(np.sum((y[1:] + y[:-1]) / 2) * (t[1] - t[0]) / duration)


def test_decay_correction_start_physical():
    # Constant total activity A0 (Bq/ml at injection) imaged and decay-corrected to the series
    # start (3600 s): stored A0 * 2^(-3600/T). SUV must give back A0 * W / D.
    a0 = 5000.0
    stored_bqml = a0 * 2.0 ** (-3600.0 / F18)
    factor = suv_factors(pet_series())[0]
    assert stored_bqml * factor == pytest.approx(a0 * W_G / DOSE, rel=1e-12)


def test_decay_correction_admin():
    # Already corrected to the injection: D_ref = D_inj, times are irrelevant.
    series = pet_series(DecayCorrection="ADMIN", SeriesTime="150000", AcquisitionTime="150000")
    np.testing.assert_allclose(suv_factors(series), W_G / DOSE, rtol=1e-12)


def test_decay_correction_none_physical():
    # Uncorrected frames: each stores the mean activity over its own frame.
    starts = [3600.0, 3900.0, 4500.0]  # s after the 10:00 injection
    durations = [300.0, 120.0, 600.0]
    series = pet_series(
        DecayCorrection="NONE",
        CorrectedImage=["NORM", "ATTN", "SCAT"],
        per_instance={
            "AcquisitionTime": ["110000", "110500", "111500"],
            "ActualFrameDuration": [str(int(d * 1000)) for d in durations],
        },
    )
    factors = suv_factors(series)
    a0 = 5000.0
    for f, t0, d in zip(factors, starts, durations, strict=True):
        stored = a0 * _frame_mean_decay(t0, d, F18)
        assert stored * f == pytest.approx(a0 * W_G / DOSE, rel=1e-9)
    # closed form: W/D * lam*T/(1 - e^(-lam*T)) * e^(lam*(t - t_inj))
    lam = math.log(2) / F18
    expected = [
        W_G / DOSE * lam * d / (1 - math.exp(-lam * d)) * math.exp(lam * t0)
        for t0, d in zip(starts, durations, strict=True)
    ]
    np.testing.assert_allclose(factors, expected, rtol=1e-12)


def test_decay_none_pairs_each_time_with_its_own_date():
    # Frames on both sides of midnight; injection 22:55 on Jan 1.
    series = pet_series(
        DecayCorrection="NONE",
        CorrectedImage=["ATTN"],
        SeriesDate="20250101",
        SeriesTime="235500",
        radio={"RadiopharmaceuticalStartDateTime": "20250101225500"},
        per_instance={
            "AcquisitionDate": ["20250101", "20250102"],
            "AcquisitionTime": ["235500", "000500"],
        },
        n=2,
    )
    lam = math.log(2) / F18
    t_frame = 300.0
    frame = lam * t_frame / (1 - math.exp(-lam * t_frame))
    expected = [W_G / DOSE * frame * math.exp(lam * t) for t in (3600.0, 4200.0)]
    np.testing.assert_allclose(suv_factors(series), expected, rtol=1e-12)


def test_decay_correction_contradicting_corrected_image():
    with pytest.raises(SUVError, match="DECY"):
        suv_factors(pet_series(CorrectedImage=["ATTN", "SCAT"]))
    with pytest.raises(SUVError, match="DECY"):
        suv_factors(pet_series(DecayCorrection="NONE"))
    with pytest.raises(SUVError, match="ATTN"):
        suv_factors(pet_series(CorrectedImage=["DECY", "SCAT"]))
    with pytest.raises(SUVError, match=r"\(0054,1102\).*expected START, ADMIN or NONE"):
        suv_factors(pet_series(DecayCorrection="LATER"))


def test_decay_in_corrected_image_spelled_decay():
    series = pet_series(CorrectedImage=["ATTN", "DECAY"])
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Reference time (QIBA order) and injection time
# ----------------------------------------------------------------------------------------------


def test_rule1_series_time_wins_over_frame_reference():
    # Series time not after acquisition: used, even though the frame times would say otherwise.
    series = pet_series(per_instance={"FrameReferenceTime": ["999999", "5", "77777"]})
    assert reference_time(series).source == "series"
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_rule2_ge_private_scan_datetime():
    # Series re-saved at 12:00 (after the 11:00 acquisition): GE private scan time 10:50 is used.
    series = pet_series(SeriesTime="120000", Manufacturer="GE MEDICAL SYSTEMS")
    for ds in series:
        apply_tags(ds, {GE_SCAN_DATETIME: ("DT", "20250101105000.00")})
    ref = reference_time(series)
    assert ref.source == "ge_private"
    assert ref.times == (datetime(2025, 1, 1, 10, 50),) * 3
    np.testing.assert_allclose(suv_factors(series), bw_factor(3000.0), rtol=1e-12)


def test_rule2_ge_without_creator_needs_ge_manufacturer():
    series = pet_series(SeriesTime="120000", Manufacturer="GE MEDICAL SYSTEMS")
    for ds in series:
        apply_tags(ds, {no_creator(GE_SCAN_DATETIME): ("DT", "20250101105000")})
    assert reference_time(series).source == "ge_private"
    np.testing.assert_allclose(suv_factors(series), bw_factor(3000.0), rtol=1e-12)

    other = pet_series(SeriesTime="120000", Manufacturer="SIEMENS", FrameReferenceTime=None)
    for ds in other:
        apply_tags(ds, {no_creator(GE_SCAN_DATETIME): ("DT", "20250101105000")})
    assert reference_time(other).source == "acquisition"


def test_rule3_back_computed_from_frame_reference_time():
    # True series start 10:59:00 (59 min after injection); the series header says 12:00.
    # Frames start 60 s and 360 s after it, last 300 s; the Frame Reference Time (ms) is the time
    # from the series start to the decay-weighted mid-frame,
    # T_ave = T/2 - lam*T^2/24 + O(lam^3 T^4) (series expansion of ln(x / (1 - e^-x)) / lam).
    lam = math.log(2) / F18
    t_frame = 300.0
    t_ave = t_frame / 2 - lam * t_frame**2 / 24
    frame_refs = [f"{(offset + t_ave) * 1000:.6f}" for offset in (60.0, 360.0)]
    series = pet_series(
        n=2,
        SeriesTime="120000",
        per_instance={"AcquisitionTime": ["110000", "110500"], "FrameReferenceTime": frame_refs},
    )
    ref = reference_time(series)
    assert ref.source == "frame_reference"
    for t in ref.times:
        assert abs((t - datetime(2025, 1, 1, 10, 59)).total_seconds()) < 1e-5
    np.testing.assert_allclose(suv_factors(series), bw_factor(3540.0), rtol=1e-9)


def test_rule4_earliest_acquisition():
    series = pet_series(
        SeriesTime="120000",
        FrameReferenceTime=None,
        per_instance={"AcquisitionTime": ["110500", "110000", "111000"]},
    )
    ref = reference_time(series)
    assert ref.source == "acquisition"
    assert ref.times == (datetime(2025, 1, 1, 11, 0),) * 3
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_midnight_crossing_with_start_time_only():
    series = pet_series(
        SeriesDate="20250102",
        SeriesTime="003000",
        AcquisitionDate="20250102",
        AcquisitionTime="003000",
        radio={"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": "233000"},
    )
    assert pet_parameters(series).injection_datetime == datetime(2025, 1, 1, 23, 30)
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_start_time_only_same_day():
    series = pet_series(radio={"RadiopharmaceuticalStartDateTime": None})
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_injection_datetime_prefers_datetime_and_drops_zone():
    ds = pet_series(
        n=1,
        radio={
            "RadiopharmaceuticalStartDateTime": "20250101094500.5+0100",
            "RadiopharmaceuticalStartTime": "100000",
        },
    )[0]
    assert injection_datetime(ds) == datetime(2025, 1, 1, 9, 45, 0, 500000)


@pytest.mark.parametrize(
    ("start_datetime", "start_time", "series_date", "expected"),
    [
        ("20250101094500.123456-0500", None, "20250101", datetime(2025, 1, 1, 9, 45, 0, 123456)),
        ("2025010109", None, "20250101", datetime(2025, 1, 1, 9)),  # DT to the hour
        (None, "094500.25", "20250101", datetime(2025, 1, 1, 9, 45, 0, 250000)),
        (None, "09:45:00.25", "2025.01.01", datetime(2025, 1, 1, 9, 45, 0, 250000)),  # legacy
        (None, " 0945 ", "20250101", datetime(2025, 1, 1, 9, 45)),  # padded, no seconds
        (None, "000000", "20250102", datetime(2025, 1, 2, 0, 0)),  # midnight, same day
    ],
)
def test_dicom_date_time_forms(start_datetime, start_time, series_date, expected):
    with pydicom.config.disable_value_validation():  # pydicom warns on writing legacy forms
        ds = pet_series(
            n=1, SeriesDate=series_date, SeriesTime="120000",
            radio={"RadiopharmaceuticalStartDateTime": start_datetime,
                   "RadiopharmaceuticalStartTime": start_time},
        )[0]
    assert injection_datetime(ds) == expected


@pytest.mark.parametrize("bad", ["235960", "2460", "094500.1234567", "9:45"])
def test_invalid_dicom_times_are_refused_with_the_tag(bad):
    with pydicom.config.disable_value_validation():
        ds = pet_series(n=1, radio={"RadiopharmaceuticalStartDateTime": None,
                                    "RadiopharmaceuticalStartTime": bad})[0]
    with pytest.raises(SUVError, match=r"Radiopharmaceutical Start Time \(0018,1072\)"):
        injection_datetime(ds)


def test_injection_datetime_midnight_default_scan_time():
    ds = pet_series(
        n=1,
        SeriesDate="20250102",
        SeriesTime="001500",
        radio={"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": "2345"},
    )[0]
    assert injection_datetime(ds) == datetime(2025, 1, 1, 23, 45)


def test_legacy_time_format_with_colons():
    # ACR-NEMA style times still found in old archives (pydicom would warn on writing them)
    with pydicom.config.disable_value_validation():
        series = pet_series(SeriesTime="11:00:00", AcquisitionTime="11:00:00.000")
    np.testing.assert_allclose(suv_factors(series), DEFAULT, rtol=1e-12)


def test_acquisition_datetime_fallbacks():
    # Acquisition DateTime only (as in enhanced objects) ...
    only_dt = pet_series(
        AcquisitionDate=None, AcquisitionTime=None, AcquisitionDateTime="20250101110000"
    )
    np.testing.assert_allclose(suv_factors(only_dt), DEFAULT, rtol=1e-12)
    # ... or an Acquisition Time without its date, paired with the Series Date.
    no_date = pet_series(AcquisitionDate=None, SeriesTime="120000", FrameReferenceTime=None)
    assert reference_time(no_date).times[0] == datetime(2025, 1, 1, 11, 0)


def test_ga68_half_life_from_header():
    series = pet_series(radio={"RadionuclideHalfLife": str(GA68), "RadionuclideTotalDose": "150e6"})
    expected = W_G / (150e6 * 2.0 ** (-3600.0 / GA68))
    np.testing.assert_allclose(suv_factors(series), expected, rtol=1e-12)
    # by hand: 3600/4062.6 = 0.886132, 2^-0.886132 = e^-0.614214 = 0.541066,
    # 75000 / (150e6 * 0.541066) = 9.2410e-4
    np.testing.assert_allclose(suv_factors(series), 9.2410e-4, rtol=1e-4)


def test_injection_after_scan_is_an_error():
    series = pet_series(radio={"RadiopharmaceuticalStartDateTime": "20250101120000"})
    with pytest.raises(SUVError, match="after"):
        suv_factors(series)


# ----------------------------------------------------------------------------------------------
# Sanity rules
# ----------------------------------------------------------------------------------------------


def test_dose_in_mbq():
    series = pet_series(radio={"RadionuclideTotalDose": "370"})
    with pytest.warns(HarmonizationWarning, match="MBq"):
        factors = suv_factors(series)
    np.testing.assert_allclose(factors, DEFAULT, rtol=1e-12)


def test_weight_in_grams():
    series = pet_series(PatientWeight="75000")
    with pytest.warns(HarmonizationWarning, match="grams"):
        params = pet_parameters(series)
    assert params.weight_kg == 75.0
    np.testing.assert_allclose(params.factors(), DEFAULT, rtol=1e-12)


def test_height_in_cm():
    series = _no_decay_series(PatientSize="185")
    with pytest.warns(HarmonizationWarning, match="centimetres"):
        factors = suv_factors(series, "suvbsa", dose=100.0)
    np.testing.assert_allclose(factors, 198.1375843, rtol=1e-9)


def test_overrides_replace_headers_without_unit_guessing():
    series = pet_series(PatientWeight=None, radio={"RadionuclideTotalDose": None})
    factors = suv_factors(series, weight=75.0, dose=DOSE)
    np.testing.assert_allclose(factors, DEFAULT, rtol=1e-12)
    params = pet_parameters(series, weight=75.0, dose=DOSE)
    assert any("weight" in a for a in params.adjustments)


def test_sex_other_uses_mean_of_formulas():
    series = _no_decay_series(PatientSex="O")
    expected = (61.4627465304 + 55.9256756757) / 2 * 1000 / 100
    np.testing.assert_allclose(suv_factors(series, "suvlbm", dose=100.0), expected, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Missing and inconsistent ingredients
# ----------------------------------------------------------------------------------------------


def _radio_missing(keyword):
    return {"radio": {keyword: None}}


@pytest.mark.parametrize(
    ("units", "kwargs", "tag"),
    [
        ("suv", {"PatientWeight": None}, r"Patient's Weight \(0010,1030\) missing in PT_0001\.dcm"),
        ("suv", {"PatientWeight": "0"}, r"Patient's Weight \(0010,1030\) is 0 in PT_0001\.dcm"),
        ("suv", _radio_missing("RadionuclideTotalDose"), r"\(0018,1074\).* missing in PT_0001"),
        ("suv", _radio_missing("RadionuclideHalfLife"), r"\(0018,1075\).* missing in PT_0001"),
        ("suv", NO_RADIO, r"\(0018,1074\) in Radiopharmaceutical Information Sequence"),
        ("suv", {"Units": None}, r"Units \(0054,1001\) missing in PT_0001"),
        ("suv", {"DecayCorrection": None}, r"\(0054,1102\) missing in PT_0001"),
        ("suv", {"AcquisitionTime": None}, r"\(0008,0032\).* missing in PT_0001"),
        ("suvbsa", {"PatientSize": None}, r"Patient's Size \(0010,1020\) missing in PT_0001"),
        ("suvlbm", {"PatientSize": None}, r"\(0010,1020\) missing in PT_0001"),
        ("suvibw", {"PatientSize": None}, r"\(0010,1020\) missing in PT_0001"),
    ],
)
def test_missing_ingredient_named_with_tag_and_file(tmp_path, units, kwargs, tag):
    series = write_series(pet_series(**kwargs), tmp_path)
    with pytest.raises(SUVError, match=tag) as info:
        suv_factors(series, units)
    assert "and 2 more instances" in str(info.value) or "PT_0001" in str(info.value)


def test_missing_injection_time(tmp_path):
    series = write_series(
        pet_series(
            radio={"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": None}
        ),
        tmp_path,
    )
    with pytest.raises(SUVError, match=r"\(0018,1078\).*\(0018,1072\).*missing in PT_0001\.dcm"):
        suv_factors(series)


def test_missing_frame_duration_with_decay_none(tmp_path):
    series = write_series(
        pet_series(DecayCorrection="NONE", CorrectedImage="ATTN", ActualFrameDuration=None),
        tmp_path,
    )
    with pytest.raises(SUVError, match=r"Actual Frame Duration \(0018,1242\) missing in PT_0001"):
        suv_factors(series)


def test_instance_named_by_number_without_file():
    with pytest.raises(SUVError, match=r"\(0010,1030\) missing in instance 1 \(and 2 more"):
        suv_factors(pet_series(PatientWeight=None))


def test_missing_in_one_instance_only(tmp_path):
    series = write_series(pet_series(per_instance={"PatientWeight": ["75", "75", None]}), tmp_path)
    with pytest.raises(SUVError, match=r"\(0010,1030\) missing in PT_0003\.dcm"):
        suv_factors(series)


@pytest.mark.parametrize(
    "per_instance",
    [
        {"PatientWeight": ["75", "75", "80"]},
        {"Units": ["BQML", "BQML", "CNTS"]},
        {"DecayCorrection": ["START", "START", "ADMIN"]},
        {"SeriesTime": ["110000", "110000", "105900"]},
        {"PatientSize": ["1.85", "1.80", "1.85"]},
    ],
)
def test_inconsistent_instances(tmp_path, per_instance):
    series = write_series(pet_series(per_instance=per_instance), tmp_path)
    with pytest.raises(SUVError, match=r"differs between instances.*PT_0001.*PT_000[23]"):
        suv_factors(series, "suvbsa" if "PatientSize" in per_instance else "suv")


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("RadionuclideTotalDose", "380000000"),
        ("RadionuclideHalfLife", "6586.0"),
        ("RadiopharmaceuticalStartDateTime", "20250101100100"),
    ],
)
def test_inconsistent_radiopharmaceutical(keyword, value):
    series = pet_series()
    setattr(series[2].RadiopharmaceuticalInformationSequence[0], keyword, value)
    with pytest.raises(SUVError, match=r"differs between instances.*instance 1.*instance 3"):
        suv_factors(series)


def test_bad_arguments_and_modality():
    series = pet_series()
    with pytest.raises(SUVError, match="suvbw"):
        suv_factors(series, "hu")
    with pytest.raises(SUVError, match="janmahasatian"):
        suv_factors(series, "suvlbm", lbm_formula="boer")
    with pytest.raises(SUVError, match="PT"):
        suv_factors(pet_series(Modality="CT"))
    with pytest.raises(SUVError, match="No PET instances"):
        suv_factors([])
    heavy = pet_series(PatientWeight=None)
    for ds in heavy:
        ds.add_new(0x00101030, "LO", "heavy")  # a wrong VR carrying a non-number
    with pydicom.config.disable_value_validation():
        late = pet_series(SeriesTime="25h")
    with pytest.raises(SUVError, match=r"\(0010,1030\).*not a number"):
        suv_factors(heavy)
    with pytest.raises(SUVError, match=r"\(0008,0031\).*cannot be read"):
        suv_factors(late)


def test_errors_are_harmonization_errors():
    assert issubclass(SUVError, DataError)
    assert issubclass(SUVError, HarmonizationError)


def test_parameters_record_what_went_in():
    params = pet_parameters(pet_series(), "suvlbm", lbm_formula="janmahasatian")
    assert isinstance(params, SUVParameters)
    assert (params.weight_kg, params.height_m, params.sex) == (75.0, 1.85, "M")
    assert params.dose_bq == DOSE
    assert params.half_life_s == F18
    assert params.injection_datetime == datetime(2025, 1, 1, 10, 0)
    assert params.reference_datetimes == (datetime(2025, 1, 1, 11, 0),) * 3
    assert params.reference_source == "series"
    assert params.units == "BQML"
    assert params.decay_correction == "START"
    assert params.normalization == "lbm"
    assert params.instances == ("instance 1", "instance 2", "instance 3")
    np.testing.assert_allclose(params.decay_factors, 2.0 ** (-3600 / F18), rtol=1e-12)


def test_single_dataset_accepted():
    np.testing.assert_allclose(suv_factors(pet_series(n=1)[0]), [DEFAULT], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

_weights = st.floats(min_value=1.0, max_value=999.0).map(lambda w: float(f"{w:.6g}"))
_doses = st.floats(min_value=1e6, max_value=1e10).map(lambda d: float(f"{d:.6g}"))


@settings(max_examples=40, deadline=None)
@given(weight=_weights)
def test_factor_linear_in_weight(weight):
    factor = suv_factors(pet_series(n=1, PatientWeight=f"{weight:.6g}"))[0]
    assert factor == pytest.approx(DEFAULT * weight / 75.0, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(dose=_doses)
def test_factor_inverse_in_dose(dose):
    series = pet_series(n=1, radio={"RadionuclideTotalDose": f"{dose:.6g}"})
    assert suv_factors(series)[0] == pytest.approx(DEFAULT * DOSE / dose, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(minutes=st.integers(min_value=0, max_value=600))
def test_each_half_life_of_waiting_doubles_the_factor(minutes):
    # Injection earlier by exactly one F-18 half-life (6586.2 s) doubles the factor.
    base = datetime(2025, 1, 1, 0, 0) + np.timedelta64(minutes, "m").astype(object)
    earlier = base - np.timedelta64(6586200, "ms").astype(object)
    fmt = "%Y%m%d%H%M%S.%f"
    f_base = suv_factors(
        pet_series(
            n=1,
            SeriesTime="235900",
            AcquisitionTime="235900",
            radio={"RadiopharmaceuticalStartDateTime": base.strftime(fmt)},
        )
    )[0]
    f_earlier = suv_factors(
        pet_series(
            n=1,
            SeriesTime="235900",
            AcquisitionTime="235900",
            radio={"RadiopharmaceuticalStartDateTime": earlier.strftime(fmt)},
        )
    )[0]
    assert f_earlier == pytest.approx(2.0 * f_base, rel=1e-12)


@given(
    half_life=st.floats(min_value=60.0, max_value=1e6),
    a=st.floats(min_value=0.0, max_value=1e4),
    b=st.floats(min_value=0.0, max_value=1e4),
)
def test_decay_factor_properties(half_life, a, b):
    assert decay_factor(0.0, half_life) == 1.0
    assert decay_factor(a + b, half_life) == pytest.approx(
        decay_factor(a, half_life) * decay_factor(b, half_life), rel=1e-12
    )
    assert 0.0 < decay_factor(a, half_life) <= 1.0


@settings(max_examples=40, deadline=None)
@given(weight=st.floats(min_value=30.0, max_value=150.0), height=st.floats(1.4, 2.1))
def test_stored_suv_renormalization_matches_direct_computation(weight, height):
    # SUVlbm / SUVbw of the same activity image = LBM / W, whichever way it is computed.
    w, h = f"{weight:.5g}", f"{height:.4g}"
    activity = pet_series(n=1, PatientWeight=w, PatientSize=h, PatientSex="F")
    stored = pet_series(n=1, PatientWeight=w, PatientSize=h, PatientSex="F", Units="GML")
    for units, formula in [("suvlbm", "janmahasatian"), ("suvbsa", "james128"), ("suvibw", "")]:
        formula = formula or "james128"
        ratio = suv_factors(activity, units, lbm_formula=formula) / suv_factors(activity, "suvbw")
        renorm = suv_factors(stored, units, lbm_formula=formula)
        np.testing.assert_allclose(renorm, ratio, rtol=1e-12)


@given(bmi=st.floats(min_value=15.0, max_value=60.0), height=st.floats(1.4, 2.1))
def test_body_size_properties(bmi, height):
    weight = bmi * height**2
    for sex in ("M", "F"):
        assert 0 < lean_body_mass(weight, height, sex, "janmahasatian") < weight
    male = lean_body_mass(weight, height, "M", "janmahasatian")
    female = lean_body_mass(weight, height, "F", "janmahasatian")
    assert female < male
    assert lean_body_mass(weight, height, "O", "janmahasatian") == pytest.approx(
        (male + female) / 2
    )
    # Du Bois is a power law: doubling weight multiplies BSA by 2^0.425
    assert body_surface_area(2 * weight, height) == pytest.approx(
        2**0.425 * body_surface_area(weight, height), rel=1e-12
    )


# ----------------------------------------------------------------------------------------------
# Remaining guards
# ----------------------------------------------------------------------------------------------


def test_body_size_input_guards():
    with pytest.raises(SUVError, match="Weight"):
        lean_body_mass(-70.0, 1.8)
    with pytest.raises(SUVError, match="Height"):
        body_surface_area(70.0, 0.0)
    with pytest.raises(SUVError, match="Half-life"):
        decay_factor(10.0, 0.0)
    # 0.60 m, male: 48.0 + 1.06 * (60 - 152) = -49.52 kg
    with pytest.raises(SUVError, match="check the height"):
        ideal_body_weight(0.60, "M")
    with pytest.raises(SUVError, match="Unknown lean body mass formula"):
        lean_body_mass(70.0, 1.8, "M", "boer")


def test_implausible_values_refused():
    with pytest.raises(SUVError, match=r"\(0018,1074\) is 0"):
        suv_factors(pet_series(radio={"RadionuclideTotalDose": "0"}))
    with (
        pytest.warns(HarmonizationWarning, match="centimetres"),
        pytest.raises(SUVError, match="neither metres nor centimetres"),
    ):
        suv_factors(pet_series(PatientSize="1850"), "suvbsa")
    with pytest.raises(SUVError, match=r"\(0054,1006\) is 'XYZ'"):
        suv_factors(pet_series(Units="GML", SUVType="XYZ"))
    with pytest.raises(SUVError, match=r"\(0018,1075\) is -1"):
        suv_factors(pet_series(radio={"RadionuclideHalfLife": "-1"}))


def test_missing_corrected_image_trusts_decay_correction(caplog):
    with caplog.at_level("WARNING", logger="imharmony.physics.pet"):
        factors = suv_factors(pet_series(CorrectedImage=None))
    np.testing.assert_allclose(factors, DEFAULT, rtol=1e-12)
    assert "Corrected Image (0028,0051) missing" in caplog.text


def test_missing_sex_uses_mean_and_says_so(caplog):
    with caplog.at_level("WARNING", logger="imharmony.physics.pet"):
        factors = suv_factors(_no_decay_series(PatientSex=None), "suvibw", dose=100.0)
    np.testing.assert_allclose(factors, (82.98 + 75.53) / 2 * 10, rtol=1e-12)
    assert "Patient's Sex (0010,0040)" in caplog.text
