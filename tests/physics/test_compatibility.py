"""Harmonizability of two acquisitions (imharmony.physics.compatibility).

The hard stops (different weighting, pre- vs post-contrast, magnitude vs phase, quantitative maps,
modality, localizers) and the warnings (field strength, TR/TE/TI more than 20 % apart) of
shared/notes/physics.md; the acquisitions are keyword dicts, datasets or protocol-table rows.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import dicom
from _support.acquisitions import ir, se
from imharmony.errors import HarmonizationError
from imharmony.io import read_table, write_table
from imharmony.physics.compatibility import (
    NotHarmonizableError,
    Verdict,
    harmonizable,
    require_harmonizable,
)
from imharmony.physics.mr import mr_weighting
from imharmony.protocols import scan_protocols

MR_SMALL = pydicom.data.get_testdata_file("MR_small.dcm")


# ----------------------------------------------------------------------------------------------
# Harmonizability
# ----------------------------------------------------------------------------------------------


def test_same_protocol_is_harmonizable() -> None:
    verdict = harmonizable(se(500, 15, MagneticFieldStrength=1.5),
                           se(520, 14, MagneticFieldStrength=1.5))
    assert isinstance(verdict, Verdict)
    assert verdict.ok and bool(verdict)
    assert verdict.reasons == () and verdict.warnings == ()
    assert [w.weighting for w in verdict.weightings] == ["T1w", "T1w"]


def test_different_weighting_is_a_hard_stop() -> None:
    verdict = harmonizable(se(500, 15), se(4000, 100))
    assert not verdict.ok and not bool(verdict)
    assert any("different weighting: A is T1w, B is T2w" in r for r in verdict.reasons)


def test_pre_vs_post_contrast_is_a_hard_stop() -> None:
    verdict = harmonizable(se(500, 15), se(500, 15, ContrastBolusAgent="GADOVIST"))
    assert verdict.reasons == ("pre vs post contrast: B is contrast-enhanced, A is not",)


def test_magnitude_vs_phase_is_a_hard_stop() -> None:
    verdict = harmonizable(se(500, 15, ImageType=["ORIGINAL", "PRIMARY", "P", "ND"]), se(500, 15))
    assert any(r.startswith("magnitude vs phase: A is a phase image") for r in verdict.reasons)


def test_quantitative_map_is_a_hard_stop() -> None:
    adc = se(6000, 90, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])
    verdict = harmonizable(adc, adc)
    assert not verdict.ok
    assert sum("quantitative map" in r for r in verdict.reasons) == 2


def test_different_modality_is_a_hard_stop() -> None:
    verdict = harmonizable(se(500, 15, Modality="MR"), {"Modality": "CT"})
    assert verdict.reasons[0] == "different modality: A is MR, B is CT"


def test_localizer_is_a_hard_stop() -> None:
    verdict = harmonizable(se(8, 4, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), se(500, 15))
    assert any("localizer" in r for r in verdict.reasons)


def test_field_strength_and_timing_warnings() -> None:
    a = se(500, 15, MagneticFieldStrength=1.5, FlipAngle=90)
    b = se(650, 15, MagneticFieldStrength=30000, FlipAngle=70)  # 3 T given in gauss
    verdict = harmonizable(a, b)
    assert verdict.ok
    assert len(verdict.warnings) == 3
    # 1.5 vs 3 T: 100 %; TR 500 vs 650: 30 %; flip 90 vs 70: 20/70 = 29 %.
    assert "field strength differs by 100% (A: 1.5 T, B: 3 T" in verdict.warnings[0]
    assert "TR differs by 30% (A: 500 ms, B: 650 ms" in verdict.warnings[1]
    assert "flip angle differs by 29%" in verdict.warnings[2]


def test_twenty_percent_exactly_is_not_a_warning() -> None:
    assert harmonizable(se(500, 15), se(600, 15)).warnings == ()  # 100 / 500 = 20 %
    assert harmonizable(se(500, 15), se(601, 15)).warnings != ()


def test_inversion_time_on_one_side_only_warns() -> None:
    verdict = harmonizable(ir(2000, 10, 900), se(700, 10))
    assert verdict.ok
    assert any(w.startswith("TI: only A") for w in verdict.warnings)


def test_unknown_weighting_is_a_warning_not_a_stop() -> None:
    verdict = harmonizable(se(500, 15), se(1000, 20))
    assert verdict.ok
    assert any("weighting of B could not be named" in w for w in verdict.warnings)


def test_require_harmonizable_raises_with_the_hard_stops() -> None:
    metas = {"site_a": se(500, 15), "site_b": se(520, 15), "site_c": se(4000, 100),
             "site_d": se(500, 15, ContrastBolusAgent="GADOVIST")}
    with pytest.raises(NotHarmonizableError) as info:
        require_harmonizable(metas)
    error = info.value
    assert isinstance(error, HarmonizationError)
    assert len(error.reasons) == 2
    assert "site_a is T1w, site_c is T2w" in str(error)
    assert "site_d is contrast-enhanced" in str(error)
    assert "mapping" in str(error)


def test_require_harmonizable_with_a_mapping_logs_instead(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="imharmony.physics.compatibility"):
        verdict = require_harmonizable([se(500, 15), se(4000, 100)], mapping=object())
    assert not verdict.ok
    assert "overridden by the given mapping" in caplog.text


def test_require_harmonizable_ok_returns_the_verdict() -> None:
    verdict = require_harmonizable([se(500, 15), se(510, 16), se(490, 14)])
    assert verdict.ok
    assert [w.weighting for w in verdict.weightings] == ["T1w"] * 3


def test_require_harmonizable_refuses_a_single_meta() -> None:
    with pytest.raises(HarmonizationError, match="several acquisitions"):
        require_harmonizable(se(500, 15))
    with pytest.raises(HarmonizationError, match="several acquisitions"):
        require_harmonizable(pydicom.dcmread(MR_SMALL, stop_before_pixels=True))


def test_require_harmonizable_on_a_protocol_table(tmp_path) -> None:
    dicom.write_series(tmp_path / "t1", np.zeros((2, 4, 4), np.uint16), modality="MR")
    dicom.write_series(tmp_path / "t2", np.zeros((2, 4, 4), np.uint16), modality="MR",
                               tags={"RepetitionTime": 4000.0, "EchoTime": 100.0})
    table = scan_protocols(tmp_path)
    assert sorted(table["weighting"]) == ["T1w", "T2w"]
    # A table read back from CSV gives the same weightings (flags and codes survive the trip).
    write_table(table, tmp_path / "protocols.csv")
    again = read_table(tmp_path / "protocols.csv")
    assert [mr_weighting(row).weighting for _, row in again.iterrows()] == list(table["weighting"])
    with pytest.raises(NotHarmonizableError) as info:
        require_harmonizable(again)
    assert str(table["series_uid"].iloc[0]) in str(info.value)


# ----------------------------------------------------------------------------------------------
# Property tests
# ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(a=st.sampled_from([se(500, 15), se(4000, 100), se(3000, 20), ir(9000, 120, 2500),
                          se(500, 15, ImageType=["ORIGINAL", "PRIMARY", "P"]),
                          se(500, 15, ContrastBolusAgent="GADOVIST")]),
       b=st.sampled_from([se(600, 12), se(3000, 90), ir(4000, 40, 150),
                          se(6000, 90, ImageType=["DERIVED", "PRIMARY", "ADC"])]))
def test_harmonizable_is_symmetric(a, b) -> None:
    ab, ba = harmonizable(a, b), harmonizable(b, a)
    assert ab.ok == ba.ok
    assert len(ab.reasons) == len(ba.reasons)
    assert len(ab.warnings) == len(ba.warnings)


@settings(max_examples=80, deadline=None)
@given(tr=st.floats(100, 5000), factor=st.floats(1.0, 2.0))
def test_parameter_warning_exactly_above_twenty_percent(tr, factor) -> None:
    other = tr * factor
    verdict = harmonizable({"RepetitionTime": tr}, {"RepetitionTime": other})
    warned = any(w.startswith("TR ") for w in verdict.warnings)
    relative = (other - tr) / tr
    if relative > 0.2 + 1e-9:
        assert warned
    elif relative < 0.2 - 1e-9:
        assert not warned


def test_the_moved_names_stay_importable_from_physics_mr() -> None:
    from imharmony.physics import compatibility, mr

    for name in ("harmonizable", "require_harmonizable", "Verdict", "NotHarmonizableError"):
        assert getattr(mr, name) is getattr(compatibility, name)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        mr.nonexistent  # noqa: B018
