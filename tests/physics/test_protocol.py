"""Protocol tables and audits (imharmony.physics.protocol).

Collections are written with pydicom by the test suite's DICOM factory (tests/_support/dicom.py,
well-formed series and hostile files); expected values are the ones written.
"""

from __future__ import annotations

import builtins
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import BasicTextSRStorage, JPEGBaseline8Bit

import imharmony.protocols.scan as protocol
from _support import dicom
from imharmony.errors import DataError
from imharmony.io import read_table, write_table
from imharmony.physics.protocol import (
    DEVIATION_COLUMNS,
    ERROR_COLUMNS,
    ERROR_REASONS,
    PROTOCOL_COLUMNS,
    ProtocolReferenceError,
    audit_protocols,
    kernel_group,
    load_reference,
    scan_errors,
    scan_protocols,
    summarize_audit,
)

EXAMPLE_REFERENCE = Path(__file__).parents[2] / "examples" / "reference_protocol.yaml"


def zeros(n: int = 3, size: int = 4, dtype=np.int16) -> np.ndarray:
    return np.zeros((n, size, size), dtype)


def ct(folder: Path, n: int = 3, **kwargs) -> list[Path]:
    tags = {"InstitutionName": "Hospital A", "StationName": "CT01", "Manufacturer": "GE MEDICAL",
            "ManufacturerModelName": "Revolution", "SoftwareVersions": "v1.2",
            **kwargs.pop("tags", {})}
    return dicom.write_series(folder, zeros(n), modality="CT", tags=tags, **kwargs)


def mr(folder: Path, n: int = 3, **kwargs) -> list[Path]:
    tags = {"InstitutionName": "Hospital B", "StationName": "MR01", **kwargs.pop("tags", {})}
    return dicom.write_series(
        folder, zeros(n, dtype=np.uint16), modality="MR", tags=tags, **kwargs
    )


def only_row(table: pd.DataFrame) -> pd.Series:
    assert len(table) == 1, table
    return table.iloc[0]


# ----------------------------------------------------------------------------------------------
# Scanning well-formed collections
# ----------------------------------------------------------------------------------------------


def test_ct_series_row(tmp_path) -> None:
    paths = ct(tmp_path / "ct", n=4, pixel_spacing=(0.8, 0.7), slice_spacing=2.5,
               tags={"KVP": 100, "ConvolutionKernel": "BONEPLUS", "XRayTubeCurrent": 250,
                     "Exposure": 125})
    table = scan_protocols(tmp_path)
    assert list(table.columns) == list(PROTOCOL_COLUMNS)
    row = only_row(table)
    assert row["modality"] == "CT"
    assert row["manufacturer"] == "GE MEDICAL" and row["model"] == "Revolution"
    assert row["software_versions"] == "v1.2"
    assert row["site"] == "Hospital A / CT01"
    assert row["n_instances"] == 4 and row["n_files"] == 4 and row["n_frames"] == 4
    assert (row["rows"], row["columns"]) == (4, 4)
    assert row["pixel_spacing_row_mm"] == 0.8 and row["pixel_spacing_col_mm"] == 0.7
    assert row["slice_thickness_mm"] == 2.5
    assert row["slice_spacing_mm"] == pytest.approx(2.5)
    assert row["kvp"] == 100
    assert row["exposure_mas"] == 125 and row["tube_current_ma"] == 250
    assert row["kernel"] == "BONEPLUS"
    assert row["kernel_group"] == "BONE" and row["kernel_group_source"] == "lookup"
    assert pd.isna(row["weighting"]) and pd.isna(row["repetition_time_ms"])
    assert row["folder"] == str(tmp_path / "ct")
    assert row["first_file"] == str(paths[0])
    assert pd.isna(row["varying"])
    assert scan_errors(table).empty
    assert table.attrs["n_files"] == 4


def test_kernel_group_tag_wins_over_the_lookup(tmp_path) -> None:
    ct(tmp_path, tags={"ConvolutionKernel": "B30f", "ConvolutionKernelGroup": "LUNG"})
    row = only_row(scan_protocols(tmp_path))
    assert row["kernel_group"] == "LUNG" and row["kernel_group_source"] == "dicom"


def test_mr_series_row(tmp_path) -> None:
    mr(tmp_path, tags={"RepetitionTime": 4000.0, "EchoTime": 100.0, "FlipAngle": 150.0,
                       "MagneticFieldStrength": 30000, "SequenceVariant": ["SK", "SP"],
                       "PixelBandwidth": 200.0, "ContrastBolusAgent": "GADOVIST"})
    row = only_row(scan_protocols(tmp_path))
    assert row["modality"] == "MR"
    assert (row["repetition_time_ms"], row["echo_time_ms"], row["flip_angle_deg"]) == (
        4000.0, 100.0, 150.0)
    assert row["field_strength_t"] == 3.0  # 30000 gauss
    assert row["sequence_variant"] == "SK\\SP"
    assert row["pixel_bandwidth_hz"] == 200.0
    assert row["weighting"] == "T2w"
    assert bool(row["contrast_enhanced"])
    assert row["contrast_agent"] == "GADOVIST"
    assert row["site"] == "Hospital B / MR01"
    assert "TR 4000" in row["weighting_reason"]


def test_enhanced_mr_is_one_instance_with_frames(tmp_path) -> None:
    dicom.write_enhanced(
        tmp_path / "e.dcm", zeros(5, dtype=np.uint16), modality="MR", slice_spacing=1.2,
        tags={"RepetitionTime": None, "EchoTime": None, "ScanningSequence": None,
              "SequenceVariant": None, "EchoPulseSequence": "GRADIENT"},
        shared_groups={
            "MRTimingAndRelatedParametersSequence": {"RepetitionTime": 2300.0, "FlipAngle": 8.0},
            "MREchoSequence": {"EffectiveEchoTime": 2.3},
            "MRModifierSequence": {"InversionRecovery": "YES", "InversionTimes": [900.0]},
        },
    )
    row = only_row(scan_protocols(tmp_path))
    assert row["n_instances"] == 1 and row["n_frames"] == 5
    assert row["slice_spacing_mm"] == pytest.approx(1.2)
    assert row["inversion_time_ms"] == 900.0
    assert row["scanning_sequence"] == "GR\\IR"
    assert row["weighting"] == "T1w"  # inversion-prepared gradient echo


def test_enhanced_ct_reads_functional_groups(tmp_path) -> None:
    dicom.write_enhanced(
        tmp_path / "ect.dcm", zeros(4), modality="CT", slice_spacing=0.625,
        tags={"KVP": None, "ConvolutionKernel": None, "XRayTubeCurrent": None},
        shared_groups={
            "CTReconstructionSequence": {"ConvolutionKernel": "FC13",
                                         "ReconstructionAlgorithm": "FILTER_BACK_PROJ"},
            "CTXRayDetailsSequence": {"KVP": 80.0},
            "CTExposureSequence": {"ExposureInmAs": 42.5, "XRayTubeCurrentInmA": 120.0},
        },
    )
    row = only_row(scan_protocols(tmp_path))
    assert row["kernel"] == "FC13" and row["kernel_group"] == "SOFT_TISSUE"
    assert row["kvp"] == 80.0
    assert row["exposure_mas"] == 42.5 and row["tube_current_ma"] == 120.0
    assert row["slice_spacing_mm"] == pytest.approx(0.625)
    assert row["pixel_spacing_row_mm"] == 0.8


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5"],
    ids=["implicit", "explicit", "big-endian", "rle"],
)
def test_transfer_syntaxes(tmp_path, syntax) -> None:
    ct(tmp_path, transfer_syntax=syntax)
    table = scan_protocols(tmp_path)
    assert only_row(table)["n_instances"] == 3
    assert scan_errors(table).empty


def test_series_grouping_across_and_within_folders(tmp_path) -> None:
    uid = "1.2.826.0.1.3680043.10.999.42"
    ct(tmp_path / "study" / "part1", n=2, series_uid=uid)
    ct(tmp_path / "study" / "part2", n=2, series_uid=uid, positions=[[0, 0, 5], [0, 0, 7.5]])
    ct(tmp_path / "other", n=2, tags={"SeriesNumber": 2})
    mr(tmp_path / "other", n=2, filenames="MR_{index:04d}.dcm",
       series_uid="1.2.826.0.1.3680043.10.999.43")
    table = scan_protocols(tmp_path)
    assert len(table) == 3
    spread = table.set_index("series_uid").loc[uid]
    assert spread["n_instances"] == 4
    assert spread["folder"] == str(tmp_path / "study")
    assert (table["folder"] == str(tmp_path / "other")).sum() == 2


def test_slice_spacing_from_positions_not_from_tags(tmp_path) -> None:
    # A real GE file: 5 mm slices 20 mm apart, Spacing Between Slices saying 5.
    ct(tmp_path, n=4, slice_spacing=20.0, tags={"SliceThickness": 5.0, "SpacingBetweenSlices": 5})
    row = only_row(scan_protocols(tmp_path))
    assert row["slice_thickness_mm"] == 5.0
    assert row["spacing_between_slices_mm"] == 5.0
    assert row["slice_spacing_mm"] == pytest.approx(20.0)


def test_irregular_slices_and_varying_values_are_flagged(tmp_path) -> None:
    positions = [[0, 0, 0], [0, 0, 2.5], [0, 0, 5.0], [0, 0, 10.0]]
    ct(tmp_path, n=4, positions=positions,
       per_instance=[{"Exposure": e, "KVP": kv} for e, kv in ((100, 120), (300, 120),
                                                             (200, 120), (400, 140))])
    row = only_row(scan_protocols(tmp_path))
    assert row["slice_spacing_mm"] == pytest.approx(2.5)  # median of 2.5, 2.5, 5
    assert set(row["varying"].split(";")) == {"kvp", "slice_spacing"}
    assert row["exposure_mas"] == pytest.approx(250.0)  # median of 100, 300, 200, 400
    assert row["kvp"] == 120  # the first instance's value


def test_oblique_slices_spacing_along_the_normal(tmp_path) -> None:
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    orientation = (1, 0, 0, 0, c, s)
    ct(tmp_path, n=3, orientation=orientation, slice_spacing=3.0)
    assert only_row(scan_protocols(tmp_path))["slice_spacing_mm"] == pytest.approx(3.0, abs=1e-3)


def test_duplicate_files_count_once_as_instances(tmp_path) -> None:
    paths = ct(tmp_path / "a", n=2)
    (tmp_path / "copy.dcm").write_bytes(paths[0].read_bytes())
    row = only_row(scan_protocols(tmp_path))
    assert row["n_instances"] == 2 and row["n_files"] == 3


def test_paths_come_from_the_file_system_not_from_tags(tmp_path) -> None:
    ct(tmp_path / "ok", tags={"SeriesDescription": "../../../etc/passwd",
                              "InstitutionName": "/tmp/evil"})
    row = only_row(scan_protocols(tmp_path))
    assert row["folder"] == str(tmp_path / "ok")
    assert Path(row["first_file"]).parent == tmp_path / "ok"
    assert row["series_description"] == "../../../etc/passwd"  # kept as data, used for nothing


def test_hidden_files_and_single_file_paths(tmp_path) -> None:
    paths = ct(tmp_path / "a", n=2)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    table = scan_protocols([paths[0]])
    assert only_row(table)["n_instances"] == 1
    table = scan_protocols(tmp_path)
    assert scan_errors(table).empty  # the hidden file is not looked at


def test_missing_path_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        scan_protocols(tmp_path / "nope")


def test_empty_collection(tmp_path) -> None:
    table = scan_protocols(tmp_path)
    assert table.empty and list(table.columns) == list(PROTOCOL_COLUMNS)
    assert list(scan_errors(table).columns) == list(ERROR_COLUMNS)


def test_progress_callable_and_rich(tmp_path) -> None:
    ct(tmp_path, n=3)
    calls: list[tuple[int, int]] = []
    scan_protocols(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]

    from rich.progress import Progress

    with Progress(disable=True) as bar:
        scan_protocols(tmp_path, progress=bar)
        (task,) = bar.tasks
        assert task.total == 3 and task.completed == 3


def test_pixel_data_is_never_read(tmp_path, monkeypatch) -> None:
    # 512 × 512 × 16 bit = 512 KiB of pixels; count the bytes the scan reads.
    (path,) = dicom.write_series(tmp_path, np.zeros((1, 512, 512), np.uint16), modality="MR",
                                 filenames="big.dcm", tags={"RepetitionTime": 500, "EchoTime": 10})
    size = path.stat().st_size
    read = {"bytes": 0}
    real_open = builtins.open

    class Counting:
        def __init__(self, fp):
            self._fp = fp

        def read(self, *args):
            data = self._fp.read(*args)
            read["bytes"] += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self._fp, name)

    monkeypatch.setattr(protocol, "open", lambda *a, **k: Counting(real_open(*a, **k)),
                        raising=False)
    table = scan_protocols(tmp_path)
    assert only_row(table)["rows"] == 512
    assert size > 512 * 512 * 2
    assert read["bytes"] < 4096, read


def test_compressed_pixel_data_is_not_decoded(tmp_path) -> None:
    # JPEG Baseline with bytes that are not a JPEG: headers-only scanning never notices.
    from pydicom.encaps import encapsulate

    dicom.write_instance(
        tmp_path / "jpeg.dcm", np.zeros((1, 4, 4), np.uint8), modality="MR", defaults=False,
        transfer_syntax=JPEGBaseline8Bit,
        tags={"RepetitionTime": 500, "EchoTime": 10,
              "PixelData": encapsulate([b"\xff\xd8 not a jpeg \xff\xd9"])},
    )
    table = scan_protocols(tmp_path)
    assert only_row(table)["weighting"] == "T1w"


# ----------------------------------------------------------------------------------------------
# Hostile files: recorded with a reason, the rest completes
# ----------------------------------------------------------------------------------------------


def _non_image(path: Path) -> Path:
    no_pixels = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                 "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData")
    return dicom.write_instance(path, modality="SR", sop_class_uid=BasicTextSRStorage,
                                tags=dict.fromkeys(no_pixels))


def _no_series_uid(path: Path) -> Path:
    return dicom.write_instance(path, modality="MR", defaults=False,
                                tags={"RepetitionTime": 500, "EchoTime": 10,
                                      "SeriesInstanceUID": None})


def _bad_uid(path: Path) -> Path:
    with warnings.catch_warnings():  # pydicom warns when the bad UID is set; that is the point
        warnings.simplefilter("ignore")
        return dicom.write_instance(path, modality="MR", defaults=False, series_uid="1.2.abc")


def _cut_in_meta(path: Path) -> Path:
    full = dicom.write_instance(path.with_suffix(".tmp"), modality="MR", defaults=False)
    path.write_bytes(full.read_bytes()[:200])
    full.unlink()
    return path


def _raw_random(path: Path) -> Path:
    # Starts like a preamble-less DICOM element (group 0008), then random bytes: forced read.
    path.write_bytes(b"\x08\x00\x05\x00" + np.random.default_rng(1).bytes(2000))
    return path


HOSTILE = {
    "truncated_header": (dicom.write_truncated_header, {"truncated"}),
    "truncated_pixels": (dicom.write_truncated_pixels, {"truncated"}),
    "cut_in_file_meta": (_cut_in_meta, {"truncated"}),
    "random_bytes": (dicom.write_random_bytes, {"not_dicom"}),
    "random_after_group_0008": (_raw_random, {"not_dicom", "missing_required_tag", "unreadable"}),
    "text_file": (lambda p: (p.write_text("patient list\n"), p)[1], {"not_dicom"}),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], {"empty"}),
    "missing_pixel_data": (dicom.write_missing_pixels, {"missing_pixel_data"}),
    "huge_announced_size": (dicom.write_huge, {"too_large"}),
    "deep_undefined_length": (dicom.write_deeply_nested, {"too_deeply_nested"}),
    "deep_defined_length": (lambda p: dicom.write_nested_defined(p, 40),
                            {"too_deeply_nested"}),
    "not_an_image": (_non_image, {"not_an_image"}),
    "no_series_uid": (_no_series_uid, {"missing_required_tag"}),
    "invalid_uid": (_bad_uid, {"invalid_value"}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_recorded_and_the_scan_completes(tmp_path, case) -> None:
    writer, reasons = HOSTILE[case]
    ct(tmp_path / "good", n=2)
    (tmp_path / "bad").mkdir()
    bad = writer(tmp_path / "bad" / "file.dcm")
    ct(tmp_path / "zz_after", n=2, tags={"SeriesNumber": 9})  # scanned after the bad file
    table = scan_protocols(tmp_path)
    assert len(table) == 2
    assert list(table["n_instances"]) == [2, 2]
    errors = scan_errors(table)
    assert len(errors) == 1, errors
    assert errors["path"].iloc[0] == str(bad)
    assert errors["reason"].iloc[0] in reasons, errors["detail"].iloc[0]
    assert errors["reason"].iloc[0] in ERROR_REASONS
    assert errors["detail"].iloc[0]


def test_an_unforeseen_failure_rejects_one_file_not_the_scan(tmp_path, monkeypatch) -> None:
    paths = ct(tmp_path, n=3)
    real = protocol._extract

    def flaky(ds, path, series_uid):
        if path == paths[1]:
            raise ValueError("a value nobody expected")
        return real(ds, path, series_uid)

    monkeypatch.setattr(protocol, "_extract", flaky)
    table = scan_protocols(tmp_path)
    assert only_row(table)["n_instances"] == 2
    assert scan_errors(table).to_dict("records") == [
        {"path": str(paths[1]), "reason": "unreadable",
         "detail": "ValueError: a value nobody expected"}]


def test_nesting_within_the_limit_is_accepted(tmp_path) -> None:
    dicom.write_nested_defined(tmp_path / "ok.dcm", 10)
    table = scan_protocols(tmp_path)
    assert len(table) == 1 and scan_errors(table).empty
    table = scan_protocols(tmp_path, max_depth=5)
    assert scan_errors(table)["reason"].tolist() == ["too_deeply_nested"]


def test_max_pixels_is_checked_before_pixels(tmp_path) -> None:
    ct(tmp_path, n=1)  # 4 × 4 = 16 pixels
    assert scan_errors(scan_protocols(tmp_path, max_pixels=16)).empty
    errors = scan_errors(scan_protocols(tmp_path, max_pixels=15))
    assert errors["reason"].tolist() == ["too_large"]
    assert "16 pixels" in errors["detail"].iloc[0]


def test_errors_are_easy_to_write_out(tmp_path) -> None:
    dicom.write_random_bytes(tmp_path / "a.bin")
    ct(tmp_path / "ct", n=1)
    table = scan_protocols(tmp_path)
    out = write_table(scan_errors(table), tmp_path / "out" / "errors.csv")
    back = read_table(out)
    assert back.to_dict("records") == table.attrs["errors"]
    # attrs survive ordinary pandas operations (they are plain lists of dicts).
    assert pd.concat([table, table]).attrs["errors"] == table.attrs["errors"]


# ----------------------------------------------------------------------------------------------
# Kernel groups
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "manufacturer", "group"),
    [
        ("STANDARD", "GE MEDICAL SYSTEMS", "SOFT_TISSUE"), ("SOFT", None, "SOFT_TISSUE"),
        ("LUNG", None, "LUNG"), ("BONEPLUS", None, "BONE"), ("DETAIL", None, "SHARP"),
        ("EDGE", None, "SHARP"), ("B30f", "SIEMENS", "SOFT_TISSUE"), ("Br40d\\3", None,
                                                                    "SOFT_TISSUE"),
        ("B70f", "SIEMENS", "SHARP"), ("Bl57d", None, "LUNG"), ("H31s", None, "BRAIN"),
        ("Hr38", None, "BRAIN"), ("H70h", None, "BONE"), ("FC13", "TOSHIBA", "SOFT_TISSUE"),
        ("FC30", None, "BONE"), ("FC52", None, "LUNG"), ("FC81", None, "unknown"),
        ("B", "Philips", "SOFT_TISSUE"), ("YC", "Philips", "SHARP"), ("L", "Philips", "LUNG"),
        ("E", "Philips", "BONE"), ("B", "SIEMENS", "unknown"), ("XYZ", None, "unknown"),
        ("", None, "unknown"), (None, None, "unknown"), (float("nan"), None, "unknown"),
    ],
)
def test_kernel_group_lookup(kernel, manufacturer, group) -> None:
    assert kernel_group(kernel, manufacturer) == group


# ----------------------------------------------------------------------------------------------
# Audits
# ----------------------------------------------------------------------------------------------


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series_uid": ["1.1", "1.2", "1.3", "1.4"],
            "site": ["A", "A", "B", "B"],
            "folder": ["/a/1", "/a/2", "/b/3", "/b/4"],
            "modality": ["CT", "CT", "MR", "MR"],
            "weighting": [None, None, "T1w", "T2w"],
            "kvp": [120.0, 100.0, np.nan, np.nan],
            "kernel_group": ["SOFT_TISSUE", "bone", None, None],
            "slice_thickness_mm": [1.0, 2.0, 1.0, np.nan],
            "exposure_mas": [200.0, 260.0, np.nan, np.nan],
            "pixel_spacing_row_mm": [0.70, 0.95, 0.9, 0.9],
            "field_strength_t": [np.nan, np.nan, 1.5, 3.0],
            "repetition_time_ms": [np.nan, np.nan, 500.0, 4000.0],
        }
    )


REFERENCE = {
    "version": 1,
    "modalities": {
        "CT": {
            "rules": {
                "kvp": 120,
                "kernel_group": "soft_tissue",
                "slice_thickness_mm": [0.5, 1.5],
                "pixel_spacing_row_mm": {"value": 0.75, "tol": 0.1},
                "exposure_mas": {"value": 200, "tol_percent": 25, "severity": "warning"},
            }
        },
        "MR": {
            "rules": {"field_strength_t": {"one_of": [3.0]}},
            "weightings": {"T1w": {"repetition_time_ms": [400, 800]},
                           "T2w": {"repetition_time_ms": [5000, None]}},
        },
    },
}


def test_audit_exact_range_tolerance_percent_one_of() -> None:
    deviations = audit_protocols(_table(), REFERENCE)
    assert list(deviations.columns) == list(DEVIATION_COLUMNS)
    found = {(d.series_uid, d.column): (d.rule, d.expected, d.found, d.severity)
             for d in deviations.itertuples()}
    assert found == {
        # series 1.1 conforms: 120 kV, soft tissue (case-insensitive), 1 mm, 0.70 ∈ 0.75 ± 0.1,
        # 200 mAs.
        ("1.2", "kvp"): ("exact", "120", "100", "error"),
        ("1.2", "kernel_group"): ("exact", "soft_tissue", "bone", "error"),
        ("1.2", "slice_thickness_mm"): ("range", "[0.5, 1.5]", "2", "error"),
        ("1.2", "pixel_spacing_row_mm"): ("tolerance", "0.75 ± 0.1", "0.95", "error"),
        # 260 vs 200 ± 25 % (± 50): outside, with the rule's own severity.
        ("1.2", "exposure_mas"): ("percent", "200 ± 25%", "260", "warning"),
        ("1.3", "field_strength_t"): ("one_of", "one of 3", "1.5", "error"),
        # T2w: TR 4000 below the open range [5000, inf].
        ("1.4", "repetition_time_ms"): ("range", "[5000, inf]", "4000", "error"),
    }
    # T1w's TR 500 is inside [400, 800]; the T1w rule never applies to the T2w series.
    site = deviations.set_index("series_uid")["site"].to_dict()
    assert site == {"1.2": "A", "1.3": "B", "1.4": "B"}


def test_audit_missing_value_is_a_warning() -> None:
    table = _table()
    table.loc[0, "kvp"] = np.nan
    deviations = audit_protocols(table, {"modalities": {"CT": {"rules": {"kvp": 120}}}})
    first = deviations[deviations["series_uid"] == "1.1"].iloc[0]
    assert (first["found"], first["severity"]) == ("missing", "warning")


def test_audit_tolerance_boundaries_are_inclusive() -> None:
    table = pd.DataFrame({"series_uid": ["a", "b"], "site": ["s", "s"], "modality": ["CT", "CT"],
                          "kvp": [130.0, 130.0001]})
    absolute = audit_protocols(table, {"modalities": {"CT": {"rules": {
        "kvp": {"value": 120, "tol": 10}}}}})
    assert absolute["series_uid"].tolist() == ["b"]
    relative = audit_protocols(table, {"modalities": {"CT": {"rules": {
        "kvp": {"value": 100, "tol_percent": 30}}}}})
    assert relative["series_uid"].tolist() == ["b"]


def test_audit_modality_not_in_reference_is_not_audited() -> None:
    deviations = audit_protocols(_table(), {"modalities": {"PT": {"rules": {"kvp": 1}}}})
    assert deviations.empty and list(deviations.columns) == list(DEVIATION_COLUMNS)


def test_audit_non_numeric_value_against_a_range() -> None:
    table = pd.DataFrame({"series_uid": ["a"], "site": ["s"], "modality": ["CT"],
                          "kvp": ["high"]})
    deviations = audit_protocols(table, {"modalities": {"CT": {"rules": {"kvp": [80, 140]}}}})
    assert deviations[["found", "severity"]].values.tolist() == [["high", "error"]]


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ({"modalities": {"CT": {"rules": {"no_such_column": 1}}}}, "does not have"),
        ({"rules": {}}, "'modalities'"),
        ({"modalities": {"CT": {"rule": {}}}}, "unknown keys"),
        ({"modalities": {"CT": {"rules": {"kvp": [140, 80]}}}}, "min > max"),
        ({"modalities": {"CT": {"rules": {"kvp": ["a", "b"]}}}}, "one_of"),
        ({"modalities": {"CT": {"rules": {"kvp": {"value": 1, "tol": -1}}}}}, "negative"),
        ({"modalities": {"CT": {"rules": {"kvp": {"value": 1, "tolerance": 2}}}}}, "cannot read"),
        ({"modalities": {"CT": {"rules": {"kvp": {"value": "x", "tol": 2}}}}}, "a number"),
        ({"modalities": {"CT": {"rules": {"kvp": {"one_of": 3}}}}}, "non-empty list"),
        ({"modalities": {"CT": {"rules": {"kvp": {"value": 1, "severity": "fatal"}}}}},
         "severity"),
        ({"version": 2, "modalities": {"CT": {}}}, "version"),
        ({"modalities": {"CT": {"rules": {"kvp": None}}}}, "no expected value"),
    ],
)
def test_bad_reference_names_the_problem(reference, match) -> None:
    with pytest.raises(ProtocolReferenceError, match=match):
        audit_protocols(_table(), reference)


def test_bad_reference_files(tmp_path) -> None:
    with pytest.raises(ProtocolReferenceError, match="no such reference"):
        load_reference(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modalities: [unclosed\n")
    with pytest.raises(ProtocolReferenceError, match="not valid YAML"):
        load_reference(bad)


def test_summarize_audit_counts_per_site() -> None:
    table = _table()
    deviations = audit_protocols(table, REFERENCE)
    summary = summarize_audit(deviations, table)
    assert summary.to_dict("records") == [
        {"site": "A", "n_series": 2, "n_series_with_deviations": 1, "n_deviations": 5,
         "n_errors": 4, "n_warnings": 1,
         "columns": "kvp; kernel_group; slice_thickness_mm; pixel_spacing_row_mm; exposure_mas"},
        {"site": "B", "n_series": 2, "n_series_with_deviations": 2, "n_deviations": 2,
         "n_errors": 2, "n_warnings": 0, "columns": "field_strength_t; repetition_time_ms"},
    ]
    without_table = summarize_audit(deviations)
    assert "n_series" not in without_table.columns
    assert without_table["n_deviations"].tolist() == [5, 2]


def test_summarize_audit_lists_clean_sites_with_zeros() -> None:
    table = _table()
    summary = summarize_audit(audit_protocols(table, {"modalities": {"CT": {"rules": {}}}}), table)
    assert summary.set_index("site")["n_deviations"].to_dict() == {"A": 0, "B": 0}


def test_example_reference_on_a_scanned_collection(tmp_path) -> None:
    ct(tmp_path / "ct_ok", n=2, pixel_spacing=(0.7, 0.7), slice_spacing=1.0,
       tags={"ConvolutionKernel": "STANDARD", "KVP": 120, "Exposure": 200})
    ct(tmp_path / "ct_off", n=2, pixel_spacing=(0.7, 0.7), slice_spacing=5.0,
       tags={"ConvolutionKernel": "BONE", "KVP": 140, "Exposure": 200, "StationName": "CT02"})
    mr(tmp_path / "mr_t1", n=2, tags={"MagneticFieldStrength": 3.0, "RepetitionTime": 600.0,
                                      "EchoTime": 12.0})
    table = scan_protocols(tmp_path)
    deviations = audit_protocols(table, EXAMPLE_REFERENCE)
    off = deviations[deviations["folder"] == str(tmp_path / "ct_off")]
    assert set(off["column"]) == {"kvp", "kernel_group", "slice_thickness_mm"}
    assert deviations[deviations["folder"] == str(tmp_path / "ct_ok")].empty
    assert deviations[deviations["folder"] == str(tmp_path / "mr_t1")].empty
    # The same audit on the CSV the scan was written to.
    write_table(table, tmp_path / "protocols.csv")
    again = audit_protocols(read_table(tmp_path / "protocols.csv"), EXAMPLE_REFERENCE)
    pd.testing.assert_frame_equal(
        again.drop(columns="series_uid").astype(str),
        deviations.drop(columns="series_uid").astype(str),
    )


@settings(max_examples=80, deadline=None)
@given(
    x=st.floats(-1e4, 1e4, allow_nan=False),
    low=st.floats(-1e4, 1e4, allow_nan=False),
    width=st.floats(0, 1e4, allow_nan=False),
)
def test_range_rule_property(x, low, width) -> None:
    high = low + width
    table = pd.DataFrame({"series_uid": ["s"], "site": ["a"], "modality": ["CT"], "kvp": [x]})
    deviations = audit_protocols(table, {"modalities": {"CT": {"rules": {"kvp": [low, high]}}}})
    eps = 1e-9 * max(1.0, abs(x))
    if low - eps <= x <= high + eps:
        assert deviations.empty
    else:
        assert len(deviations) == 1


@settings(max_examples=80, deadline=None)
@given(x=st.floats(-1e3, 1e3), value=st.floats(-1e3, 1e3), tol=st.floats(0, 100))
def test_tolerance_rule_property(x, value, tol) -> None:
    table = pd.DataFrame({"series_uid": ["s"], "site": ["a"], "modality": ["CT"], "kvp": [x]})
    deviations = audit_protocols(
        table, {"modalities": {"CT": {"rules": {"kvp": {"value": value, "tol": tol}}}}}
    )
    distance = abs(x - value)
    if distance > tol * (1 + 1e-9) + 1e-9:
        assert len(deviations) == 1
    elif distance < tol * (1 - 1e-9):
        assert deviations.empty
