"""Tests of ``imharmony images`` (the command wraps imharmony.imaging.batch.harmonize_images)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imharmony.errors import HarmonizationError
from imharmony.image import Image
from imharmony.io.images import read_image, write_image

images_cli = importlib.import_module("imharmony._cli.images")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imharmony")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command")
    images_cli.register(sub)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


def _dataset(root: Path, *, broken: bool = False) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for name, site, spacing, fwhm in (("a1", "A", (1.0, 1.0, 2.0), "2;2;3"),
                                      ("b1", "B", (2.0, 2.0, 2.0), "4")):
        shape = tuple(round(16 / s) for s in spacing)
        arr = rng.normal(50.0, 5.0, size=shape).astype(np.float32)
        write_image(Image(arr, spacing=spacing), root / f"{name}.nii.gz")
        rows.append({"path": f"{name}.nii.gz", "site": site, "source_fwhm": fwhm})
    if broken:
        rows.append({"path": "nope.nii.gz", "site": "C", "source_fwhm": "4"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_images_command_runs_and_reruns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _dataset(tmp_path)
    out = tmp_path / "out"
    argv = ["images", str(manifest), "--output-dir", str(out), "--spacing", "2",
            "--normalize", "zscore"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert "done" in printed and "summary.csv" in printed
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["done", "done"]
    # default target: the coarsest source per axis, 4;4;4 (a scalar 4 broadcasts over axes)
    assert set(summary["target_fwhm"]) == {"4;4;4"}
    img = read_image(out / "a1.nii.gz")
    assert img.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert float(img.array.mean()) == pytest.approx(0.0, abs=1e-5)
    assert _run(argv) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["skipped", "skipped"]


def test_explicit_options(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path)
    out = tmp_path / "out"
    # "robust" is the former name of robust_zscore: it still works, and says so
    with pytest.warns(DeprecationWarning, match="'robust' is deprecated; use 'robust_zscore'"):
        assert _run(["-q", "images", str(manifest), "--output-dir", str(out), "--spacing", "1",
                     "1", "2", "--target-fwhm", "none", "--normalize", "robust", "--workers",
                     "1"]) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert set(summary["target_fwhm"]) == {""}
    assert set(summary["normalize"]) == {"robust_zscore"}
    assert read_image(out / "b1.nii.gz").spacing == pytest.approx((1.0, 1.0, 2.0))
    assert _run(["-q", "images", str(manifest), "--output-dir", str(tmp_path / "o2"),
                 "--target-fwhm", "5", "5", "6"]) == 0
    summary = pd.read_csv(tmp_path / "o2" / "summary.csv", keep_default_na=False)
    assert set(summary["target_fwhm"]) == {"5;5;6"}


def test_failed_row_gives_status_2_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _dataset(tmp_path, broken=True)
    out = tmp_path / "out"
    assert _run(["images", str(manifest), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nope.nii.gz" in err and "failed" in err
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["done", "done", "failed"]


def test_bad_arguments() -> None:
    with pytest.raises(HarmonizationError, match="target-fwhm"):
        _run(["images", "m.csv", "--output-dir", "o", "--target-fwhm", "wide"])
    with pytest.raises(SystemExit):
        _run(["images", "m.csv", "--output-dir", "o", "--normalize", "minmax"])
    with pytest.raises(SystemExit):
        _run(["images", "m.csv"])  # --output-dir is required


def test_through_the_main_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imharmony import cli

    if "images" not in cli._COMMAND_MODULES:  # until the command is registered in cli.py
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "images"))
    manifest = _dataset(tmp_path)
    assert cli.main(["-q", "images", str(manifest), "--output-dir", str(tmp_path / "o")]) == 0
    # a user error exits 2 with a one-line message
    assert cli.main(["images", str(tmp_path / "absent.csv"), "--output-dir", str(tmp_path)]) == 2
