"""``imharmony scan`` and ``imharmony audit`` through the real entry point."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import imharmony.cli as cli
from _support import dicom
from imharmony._cli import audit as audit_cli
from imharmony._cli import scan as scan_cli

TESTS = Path(__file__).parents[1]
EXAMPLE_REFERENCE = TESTS.parent / "examples" / "reference_protocol.yaml"


@pytest.fixture(autouse=True)
def registered(monkeypatch) -> None:
    """Make sure both commands are wired into the entry point (as cli.py will list them)."""
    extra = tuple(name for name in ("scan", "audit") if name not in cli._COMMAND_MODULES)
    monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, *extra))


def run(*args: str) -> int:
    return cli.main(["-q", *args])


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "dicom"
    dicom.write_series(
        root / "ct", np.zeros((3, 4, 4), np.int16), modality="CT", slice_spacing=5.0,
        tags={"KVP": 140, "ConvolutionKernel": "B30f", "InstitutionName": "Hospital A",
              "StationName": "CT01"},
    )
    dicom.write_series(
        root / "mr", np.zeros((2, 4, 4), np.uint16), modality="MR",
        tags={"RepetitionTime": 600.0, "EchoTime": 12.0, "MagneticFieldStrength": 1.5,
              "InstitutionName": "Hospital B"},
    )
    dicom.write_truncated_pixels(root / "mr" / "broken.dcm")
    return root


def test_scan_writes_table_and_errors_beside_it(collection, tmp_path) -> None:
    out = tmp_path / "out" / "protocols.csv"
    assert run("scan", str(collection), "--output", str(out)) == 0
    table = pd.read_csv(out)
    assert sorted(table["modality"]) == ["CT", "MR"]
    assert table.set_index("modality").loc["MR", "weighting"] == "T1w"
    assert table.set_index("modality").loc["CT", "slice_spacing_mm"] == pytest.approx(5.0)
    errors = pd.read_csv(tmp_path / "out" / "protocols.errors.csv")
    assert errors["reason"].tolist() == ["truncated"]
    assert errors["path"].tolist() == [str(collection / "mr" / "broken.dcm")]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "protocols.csv", "protocols.errors.csv"]  # nothing half-written left behind


def test_scan_explicit_errors_path_and_several_inputs(collection, tmp_path) -> None:
    out, errs = tmp_path / "p.tsv", tmp_path / "rejected.csv"
    assert run("scan", str(collection / "ct"), str(collection / "mr"), "-o", str(out),
               "--errors", str(errs)) == 0
    assert len(pd.read_csv(out, sep="\t")) == 2
    assert len(pd.read_csv(errs)) == 1


def test_scan_max_pixels_option(collection, tmp_path) -> None:
    out = tmp_path / "p.csv"
    assert run("scan", str(collection / "ct"), "-o", str(out), "--max-pixels", "16") == 0
    assert run("scan", str(collection / "ct"), "-o", str(out), "--max-pixels", "15") == 2
    assert set(pd.read_csv(tmp_path / "p.errors.csv")["reason"]) == {"too_large"}


def test_scan_missing_path_exits_2_with_one_line(tmp_path, capsys) -> None:
    code = run("scan", str(tmp_path / "nowhere"), "--output", str(tmp_path / "p.csv"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("imharmony scan: error:") and "no such file or folder" in err
    assert "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_scan_without_any_series_exits_2_but_keeps_the_errors(tmp_path, capsys) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    dicom.write_random_bytes(junk / "a.bin")
    (junk / "notes.txt").write_text("not dicom")
    out = tmp_path / "p.csv"
    assert run("scan", str(junk), "--output", str(out)) == 2
    assert "no DICOM image series found" in capsys.readouterr().err
    assert not out.exists()
    assert set(pd.read_csv(tmp_path / "p.errors.csv")["reason"]) == {"not_dicom"}


def test_scan_errors_path_equal_to_output_is_refused(collection, tmp_path) -> None:
    out = tmp_path / "p.csv"
    assert run("scan", str(collection), "-o", str(out), "--errors", str(out)) == 2


def test_scan_uses_a_rich_progress_bar(collection, tmp_path, monkeypatch) -> None:
    from rich.progress import Progress

    import imharmony.physics.protocol as protocol

    seen = {}
    real = protocol.scan_protocols

    def spy(paths, *, progress=None, max_pixels):
        seen["progress"] = progress
        return real(paths, progress=progress, max_pixels=max_pixels)

    monkeypatch.setattr(protocol, "scan_protocols", spy)  # the command imports it when run
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    scan_cli.register(sub)
    args = parser.parse_args(["scan", str(collection), "--output", str(tmp_path / "p.csv")])
    assert args.func(args) == 0
    assert isinstance(seen["progress"], Progress)
    (task,) = seen["progress"].tasks
    assert task.completed == task.total == 6


def test_default_side_paths() -> None:
    assert scan_cli.default_errors_path(Path("a/protocols.csv")) == Path("a/protocols.errors.csv")
    assert scan_cli.default_errors_path(Path("a/p")) == Path("a/p.errors.csv")
    assert audit_cli.default_summary_path(Path("d.parquet")) == Path("d.summary.parquet")


# ----------------------------------------------------------------------------------------------
# audit
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def protocols(collection, tmp_path) -> Path:
    out = tmp_path / "protocols.csv"
    assert run("scan", str(collection), "--output", str(out)) == 0
    return out


def test_audit_writes_deviations_and_summary(protocols, tmp_path) -> None:
    out = tmp_path / "audit" / "deviations.csv"
    # errors found: the outputs are written and the status says so (3)
    assert run("audit", str(protocols), "--reference", str(EXAMPLE_REFERENCE),
               "--output", str(out)) == audit_cli.EXIT_DEVIATIONS == 3
    deviations = pd.read_csv(out)
    # CT: 140 kV (reference 120), 5 mm slices (reference [0.5, 1.5]), pixel spacing 0.8 / 0.7
    # within 0.7 ± 0.1, B30f → SOFT_TISSUE allowed, no Exposure → missing (warning).
    ct = deviations[deviations["modality"] == "CT"].set_index("column")
    assert set(ct.index) == {"kvp", "slice_thickness_mm", "exposure_mas"}
    assert ct.loc["kvp", "found"] == 140 or ct.loc["kvp", "found"] == "140"
    assert ct.loc["exposure_mas", "severity"] == "warning"
    # MR: 1.5 T against 3.0 ± 0.1; T1w TR 600 and TE 12 inside their ranges.
    mr = deviations[deviations["modality"] == "MR"]
    assert mr["column"].tolist() == ["field_strength_t"]
    summary = pd.read_csv(tmp_path / "audit" / "deviations.summary.csv")
    assert summary.set_index("site")["n_errors"].to_dict() == {"Hospital A / CT01": 2,
                                                               "Hospital B": 1}


def test_audit_prints_a_summary_without_output(protocols, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps long site names in a narrow terminal
    assert cli.main(["audit", str(protocols), "--reference", str(EXAMPLE_REFERENCE),
                     "--no-fail"]) == 0
    printed = capsys.readouterr().out
    assert "Deviations per site" in printed and "Hospital A / CT01" in printed


def test_audit_exit_status_fails_on_errors_unless_relaxed(protocols, tmp_path) -> None:
    assert run("audit", str(protocols), "-r", str(EXAMPLE_REFERENCE)) == 3
    assert run("audit", str(protocols), "-r", str(EXAMPLE_REFERENCE), "--strict") == 3
    assert run("audit", str(protocols), "-r", str(EXAMPLE_REFERENCE), "--no-fail") == 0
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("modalities:\n  CT:\n    rules:\n      kvp: [100, 150]\n")
    assert run("audit", str(protocols), "-r", str(lenient)) == 0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("modalities:\n  CT:\n    rules:\n      kv: 120\n", "does not have"),
        ("modalities: [\n", "not valid YAML"),
        ("modalities:\n  CT:\n    rules:\n      kvp: [150, 100]\n", "min > max"),
    ],
)
def test_audit_bad_reference_exits_2(protocols, tmp_path, capsys, reference, message) -> None:
    ref = tmp_path / "ref.yaml"
    ref.write_text(reference)
    assert run("audit", str(protocols), "--reference", str(ref)) == 2
    err = capsys.readouterr().err
    assert err.startswith("imharmony audit: error:") and message in err


def test_audit_missing_inputs_exit_2(protocols, tmp_path, capsys) -> None:
    assert run("audit", str(tmp_path / "none.csv"), "-r", str(EXAMPLE_REFERENCE)) == 2
    assert run("audit", str(protocols), "-r", str(tmp_path / "none.yaml")) == 2
    err = capsys.readouterr().err
    assert "none.csv" in err and "none.yaml" in err
