"""MR parameters, weighting rules, harmonizability (imharmony.physics.mr).

Expected weightings follow the rules of thumb in shared/notes/physics.md (spin echo: TR ≤ 800 and
TE ≤ 30 → T1w; TR ≥ 1500 and TE ≥ 80 → T2w; TR ≥ 1500 and TE ≤ 40 → PDw; inversion recovery:
TI ≥ 1200 with long TE → FLAIR, TI ≤ 300 → STIR, IR gradient echo → T1w), and the DICOM
defined terms of Acquisition Contrast (0008,9209).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from _support import dicom
from _support.acquisitions import ir, se
from imharmony.errors import HarmonizationError
from imharmony.physics.mr import (
    WEIGHTINGS,
    Weighting,
    mr_parameters,
    mr_weighting,
)

MR_SMALL = pydicom.data.get_testdata_file("MR_small.dcm")


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def test_mr_small_parameters_and_t2w() -> None:
    ds = pydicom.dcmread(MR_SMALL, stop_before_pixels=True)
    params = mr_parameters(ds)
    assert params.repetition_time_ms == 4000.0
    assert params.echo_time_ms == 240.0
    assert params.flip_angle_deg == 90.0
    assert params.scanning_sequence == ("SE",)
    assert params.mr_acquisition_type == "3D"
    # No Magnetic Field Strength; 63.924339 MHz / 42.577 MHz/T = 1.501 T for 1H.
    assert params.field_strength_t == pytest.approx(1.5)
    weighting = mr_weighting(ds)
    assert weighting.weighting == "T2w"
    # Image Type DERIVED\SECONDARY\OTHER: derived, but not a reformat, so the weighting stays.
    assert weighting.derived and not weighting.reformatted and not weighting.excluded
    assert not weighting.contrast_enhanced
    assert "TR 4000" in weighting.reason and "TE 240" in weighting.reason


@pytest.mark.parametrize(
    ("value", "tesla"),
    [(1.5, 1.5), ("3", 3.0), (15000, 1.5), ("30000", 3.0), (70000, 7.0), (0.35, 0.35)],
)
def test_field_strength_gauss_above_100(value, tesla) -> None:
    assert mr_parameters({"MagneticFieldStrength": value}).field_strength_t == pytest.approx(tesla)


def test_field_strength_from_frequency_only_for_protons() -> None:
    # 127.7 MHz / 42.5775 = 2.999 T; a 31P frequency says nothing about the field of 1H.
    assert mr_parameters({"ImagingFrequency": 127.7}).field_strength_t == pytest.approx(3.0)
    phosphorus = {"ImagingFrequency": 51.7, "ImagedNucleus": "31P"}
    assert mr_parameters(phosphorus).field_strength_t is None


def test_parameters_from_dataset_dict_and_row_agree() -> None:
    values = {"RepetitionTime": 2500.0, "EchoTime": 90.0, "InversionTime": 0.0, "FlipAngle": 150.0,
              "ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"], "ImageType":
              ["ORIGINAL", "PRIMARY", "M", "ND"], "ContrastBolusAgent": "", "Modality": "MR",
              "MagneticFieldStrength": 3.0, "PixelBandwidth": 220.0, "MRAcquisitionType": "2D"}
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    row = pd.Series({"repetition_time_ms": 2500.0, "echo_time_ms": 90.0, "inversion_time_ms": 0.0,
                     "flip_angle_deg": 150.0, "scanning_sequence": "SE",
                     "sequence_variant": "SK\\SP", "image_type": "ORIGINAL\\PRIMARY\\M\\ND",
                     "contrast_agent": np.nan, "modality": "MR", "field_strength_t": 3.0,
                     "pixel_bandwidth_hz": 220.0, "mr_acquisition_type": "2D"})
    from_ds, from_dict, from_row = mr_parameters(ds), mr_parameters(values), mr_parameters(row)
    assert from_ds == from_dict
    assert from_row.repetition_time_ms == from_ds.repetition_time_ms
    assert from_row.sequence_variant == ("SK", "SP") == from_ds.sequence_variant
    assert from_row.image_type == from_ds.image_type
    assert mr_weighting(ds) == mr_weighting(values) == mr_weighting(row)
    assert mr_weighting(row).weighting == "T2w"


def test_unsupported_meta_type_is_a_harmonization_error() -> None:
    with pytest.raises(HarmonizationError, match="pydicom Dataset"):
        mr_weighting(42)


# ----------------------------------------------------------------------------------------------
# Weighting rules
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (se(500, 15), "T1w"),
        (se(800, 30), "T1w"),  # both thresholds inclusive
        (se(4000, 100), "T2w"),
        (se(1500, 80), "T2w"),
        (se(3000, 20), "PDw"),
        (se(1500, 40), "PDw"),
        (se(1000, 20), "unknown"),  # TR between 800 and 1500
        (se(3000, 60), "unknown"),  # TE between 40 and 80
        (se(900, 100), "unknown"),
        ({"ScanningSequence": "GR", "RepetitionTime": 7.0, "EchoTime": 3.0}, "T1w"),  # spoiled GRE
        ({"ScanningSequence": "GR", "RepetitionTime": 600.0, "EchoTime": 20.0}, "T1w"),
        ({"ScanningSequence": "GR", "RepetitionTime": 800.0, "EchoTime": 35.0}, "unknown"),  # T2*
        (ir(9000, 120, 2500), "FLAIR"),
        (ir(9000, 60, 1200), "FLAIR"),  # boundary values are inclusive
        (ir(5000, 50, 2500), "unknown"),  # long TI but TE too short for FLAIR
        (ir(4000, 40, 150), "STIR"),
        (ir(4000, 40, 300), "STIR"),
        (ir(2000, 10, 900), "T1w"),  # T1-FLAIR: intermediate TI, short TE
        (ir(2000, 50, 900), "unknown"),
        (ir(2300, 2.3, 900, scanning="GR\\IR"), "T1w"),  # MPRAGE
        (ir(2300, 2.3, 1300, scanning="GR\\IR"), "T1w"),  # IR gradient echo whatever the TI
        ({"ScanningSequence": "SE\\IR", "RepetitionTime": 9000, "EchoTime": 120}, "unknown"),
        ({"RepetitionTime": 9000, "EchoTime": 120, "InversionTime": 2500}, "FLAIR"),  # TI > 0
        ({"ScanningSequence": "EP", "RepetitionTime": 2000, "EchoTime": 30}, "BOLD"),
        ({"ScanningSequence": "EP\\GR", "RepetitionTime": 720, "EchoTime": 33}, "BOLD"),
        # spin-echo EPI is not BOLD; the spin-echo rules apply
        ({"ScanningSequence": "EP\\SE", "RepetitionTime": 2000, "EchoTime": 30}, "PDw"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "FMRI", "NONE"], "RepetitionTime": 3000,
          "EchoTime": 30}, "BOLD"),
        ({"ScanningSequence": "EP", "RepetitionTime": 6000, "EchoTime": 90,
          "DiffusionBValue": 1000}, "DWI"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE", "ND"],
          "RepetitionTime": 6000,
          "EchoTime": 90}, "DWI"),
        ({"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "TRACEW"], "RepetitionTime": 6000,
          "EchoTime": 90}, "DWI"),
        ({"SequenceName": "*ep_b1000t", "RepetitionTime": 6000, "EchoTime": 90}, "DWI"),
        ({"RepetitionTime": 500}, "unknown"),  # no TE
        ({}, "unknown"),
    ],
)
def test_weighting_rules(meta, expected) -> None:
    w = mr_weighting(meta)
    assert w.weighting == expected, w.reason
    assert w.weighting in WEIGHTINGS
    assert w.reason


def test_every_weighting_is_reachable() -> None:
    cases = [se(500, 15), se(4000, 100), se(3000, 20), ir(9000, 120, 2500), ir(4000, 40, 150),
             {"ScanningSequence": "EP", "RepetitionTime": 6000, "EchoTime": 90,
              "DiffusionBValue": 1000},
             {"ScanningSequence": "EP", "RepetitionTime": 2000, "EchoTime": 30}, se(1000, 50)]
    assert {mr_weighting(m).weighting for m in cases} == set(WEIGHTINGS)


@pytest.mark.parametrize(
    ("meta", "flag"),
    [
        (se(500, 15, ImageType=["ORIGINAL", "PRIMARY", "P", "ND"]), "phase"),
        (se(500, 15, ImageType=["ORIGINAL", "PRIMARY", "PHASE"]), "phase"),
        (se(500, 15, ComplexImageComponent="PHASE"), "phase"),
        (se(500, 15, ComplexImageComponent="REAL"), "phase"),
        (se(6000, 90, ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC", "ND"]),
         "quantitative_map"),
        (se(6000, 90, ImageType=["DERIVED", "PRIMARY", "FA"]), "quantitative_map"),
        (se(5000, 3, ImageType=["DERIVED", "PRIMARY", "T1 MAP", "ND"]), "quantitative_map"),
        (se(5000, 3, ImageType=["DERIVED", "PRIMARY", "T2_MAP"]), "quantitative_map"),
        (se(8, 4, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), "localizer"),
        (se(8, 4, SeriesDescription="3-plane loc"), "localizer"),
        (se(8, 4, SeriesDescription="AAHead_Scout_64ch"), "localizer"),
        (se(500, 15, ImageType=["DERIVED", "SECONDARY", "MPR"]), "reformatted"),
        (se(30, 3, ImageType=["DERIVED", "PRIMARY", "MIP", "ND"]), "reformatted"),
    ],
)
def test_exclusions_come_first(meta, flag) -> None:
    w = mr_weighting(meta)
    assert w.weighting == "unknown"
    assert getattr(w, flag) is True
    assert w.excluded
    assert w.reason.startswith("excluded as")


def test_series_description_does_not_flag_words_containing_loc() -> None:
    assert not mr_weighting(se(500, 15, SeriesDescription="T1 block design")).localizer
    assert not mr_weighting(se(500, 15, SeriesDescription="T1 velocity")).localizer


def test_non_mr_modality_is_unknown() -> None:
    w = mr_weighting({"Modality": "CT", "RepetitionTime": 500, "EchoTime": 10})
    assert w.weighting == "unknown"
    assert "CT" in w.reason


@pytest.mark.parametrize(
    ("agent", "enhanced"),
    [("", False), ("NONE", False), ("none", False), ("No", False), ("N/A", False),
     ("GADOVIST", True), ("Gd-DTPA 10 ml", True)],
)
def test_contrast_agent(agent, enhanced) -> None:
    assert mr_weighting(se(500, 15, ContrastBolusAgent=agent)).contrast_enhanced is enhanced


# ----------------------------------------------------------------------------------------------
# Acquisition Contrast and enhanced headers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "expected"),
    [("T1", "T1w"), ("T2", "T2w"), ("PROTON_DENSITY", "PDw"), ("FLUID_ATTENUATED", "FLAIR"),
     ("STIR", "STIR"), ("DIFFUSION", "DWI"), ("T2_STAR", "unknown"), ("FLOW_ENCODED", "unknown"),
     ("MIXED", "unknown"), ("UNKNOWN", "unknown")],
)
def test_acquisition_contrast_states_the_weighting(term, expected) -> None:
    # The parameters say T2w; Acquisition Contrast (0008,9209) wins when it names a weighting.
    ds = Dataset()
    ds.Modality = "MR"
    ds.RepetitionTime = 4000
    ds.EchoTime = 100
    ds.AcquisitionContrast = term
    w = mr_weighting(ds)
    assert w.weighting == expected
    assert term in w.reason


def test_acquisition_contrast_t2_star_with_epi_is_bold() -> None:
    meta = {"AcquisitionContrast": "T2_STAR", "ScanningSequence": "EP", "RepetitionTime": 2000,
            "EchoTime": 30}
    assert mr_weighting(meta).weighting == "BOLD"


def test_unrecognised_acquisition_contrast_falls_back_to_parameters() -> None:
    assert mr_weighting(se(500, 15, AcquisitionContrast="SOMETHING")).weighting == "T1w"


def _enhanced(tmp_path: Path, name: str, *, shared: dict, tags: dict | None = None) -> Dataset:
    path = dicom.write_enhanced(
        tmp_path / name, np.zeros((2, 4, 4), np.uint16), modality="MR",
        tags={"RepetitionTime": None, "EchoTime": None, "FlipAngle": None,
              "ScanningSequence": None, "SequenceVariant": None, "MagneticFieldStrength": 3.0,
              **(tags or {})},
        shared_groups=shared,
    )
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_enhanced_header_parameters_from_functional_groups(tmp_path) -> None:
    ds = _enhanced(
        tmp_path, "flair.dcm",
        shared={
            "MRTimingAndRelatedParametersSequence": {"RepetitionTime": 9000.0, "FlipAngle": 150.0},
            "MREchoSequence": {"EffectiveEchoTime": 125.0},
            "MRModifierSequence": {"InversionRecovery": "YES", "InversionTimes": [2500.0]},
            "MRImagingModifierSequence": {"PixelBandwidth": 260.0},
        },
        tags={"EchoPulseSequence": "SPIN", "ImageType": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]},
    )
    assert "RepetitionTime" not in ds and "EchoTime" not in ds
    params = mr_parameters(ds)
    assert params.enhanced
    assert (params.repetition_time_ms, params.echo_time_ms, params.inversion_time_ms) == (
        9000.0, 125.0, 2500.0)
    assert params.flip_angle_deg == 150.0
    assert params.pixel_bandwidth_hz == 260.0
    assert params.scanning_sequence == ("SE", "IR")
    # No Acquisition Contrast: the physics rules decide (TI ≥ 1200, TE ≥ 60).
    assert mr_weighting(ds).weighting == "FLAIR"


def test_enhanced_acquisition_contrast_in_frame_type_sequence(tmp_path) -> None:
    ds = _enhanced(
        tmp_path, "t1.dcm",
        shared={
            "MRTimingAndRelatedParametersSequence": {"RepetitionTime": 4000.0, "FlipAngle": 90.0},
            "MREchoSequence": {"EffectiveEchoTime": 100.0},
            "MRImageFrameTypeSequence": {"FrameType": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                         "AcquisitionContrast": "T1",
                                         "ComplexImageComponent": "MAGNITUDE"},
        },
        tags={"EchoPulseSequence": "GRADIENT"},
    )
    w = mr_weighting(ds)
    assert w.weighting == "T1w"
    assert "Acquisition Contrast" in w.reason


def test_enhanced_phase_and_contrast_usage(tmp_path) -> None:
    ds = _enhanced(
        tmp_path, "phase.dcm",
        shared={
            "MRTimingAndRelatedParametersSequence": {"RepetitionTime": 500.0},
            "MREchoSequence": {"EffectiveEchoTime": 10.0},
            "MRImageFrameTypeSequence": {"FrameType": ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                         "ComplexImageComponent": "PHASE"},
            "ContrastBolusUsageSequence": {"ContrastBolusAgentNumber": 1,
                                           "ContrastBolusAgentAdministered": "YES"},
        },
    )
    w = mr_weighting(ds)
    assert w.phase and w.contrast_enhanced and w.weighting == "unknown"


def test_enhanced_derived_pixel_contrast_map(tmp_path) -> None:
    ds = _enhanced(
        tmp_path, "adc.dcm",
        shared={"MRTimingAndRelatedParametersSequence": {"RepetitionTime": 5000.0},
                "MREchoSequence": {"EffectiveEchoTime": 80.0}},
        tags={"ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "T1"]},
    )
    assert mr_weighting(ds).quantitative_map


# ----------------------------------------------------------------------------------------------
# Property tests
# ----------------------------------------------------------------------------------------------

times = st.floats(min_value=1.0, max_value=12000.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(tr=st.floats(1, 800), te=st.floats(0.5, 30))
def test_short_tr_short_te_is_always_t1w(tr, te) -> None:
    assert mr_weighting(se(tr, te)).weighting == "T1w"


@settings(max_examples=60, deadline=None)
@given(tr=st.floats(1500, 12000), te=st.floats(80, 400))
def test_long_tr_long_te_is_always_t2w(tr, te) -> None:
    assert mr_weighting(se(tr, te)).weighting == "T2w"


@settings(max_examples=60, deadline=None)
@given(tr=st.floats(1500, 12000), te=st.floats(0.5, 40))
def test_long_tr_short_te_is_always_pdw(tr, te) -> None:
    assert mr_weighting(se(tr, te)).weighting == "PDw"


@settings(max_examples=60, deadline=None)
@given(tr=times, te=st.floats(0.5, 300), ti=st.one_of(st.none(), st.floats(0, 3000)),
       tesla=st.sampled_from([0.5, 1.0, 1.5, 3.0, 7.0]))
def test_dataset_and_dict_give_the_same_weighting(tr, te, ti, tesla) -> None:
    ds = Dataset()
    ds.Modality = "MR"
    ds.ScanningSequence = ["SE", "IR"] if ti else ["SE"]
    ds.RepetitionTime = f"{tr:.6g}"
    ds.EchoTime = f"{te:.6g}"
    ds.MagneticFieldStrength = f"{tesla * 10000:g}"  # in gauss
    meta = {"Modality": "MR", "ScanningSequence": "SE\\IR" if ti else "SE",
            "RepetitionTime": float(f"{tr:.6g}"), "EchoTime": float(f"{te:.6g}"),
            "MagneticFieldStrength": tesla}
    if ti is not None:
        ds.InversionTime = f"{ti:.6g}"
        meta["InversionTime"] = float(f"{ti:.6g}")
    assert mr_weighting(ds) == mr_weighting(meta)
    assert mr_parameters(ds).field_strength_t == pytest.approx(tesla)


def test_weighting_is_frozen() -> None:
    w = mr_weighting(se(500, 15))
    assert isinstance(w, Weighting)
    with pytest.raises(AttributeError):
        w.weighting = "T2w"  # type: ignore[misc]
