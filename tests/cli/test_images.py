"""Tests of ``imharmony images`` (the command wraps imharmony.workflows.batch.harmonize_images)."""

from __future__ import annotations

import argparse
import importlib
import json
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


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from imharmony import cli

    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_reference_grid_and_nyul_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _dataset(tmp_path)
    pd.read_csv(manifest).assign(mask=["a1.nii.gz", "b1.nii.gz"]).to_csv(manifest, index=False)
    # a reference grid of its own: rotated about z, shifted, 1.5 mm voxels
    t = np.radians(30.0)
    direction = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    ref = Image(np.zeros((9, 10, 8), np.int16), spacing=(1.5, 1.5, 1.5), origin=(2.0, -3.0, 1.0),
                direction=direction)
    write_image(ref, tmp_path / "ref.nii.gz")
    ref = read_image(tmp_path / "ref.nii.gz")
    out = tmp_path / "out"
    code, err = _main(["-q", "images", str(manifest), "--output-dir", str(out), "--reference",
                       str(tmp_path / "ref.nii.gz"), "--normalize", "nyul", "--nyul-model",
                       str(tmp_path / "nyul.json")], capsys)
    assert code == 0, err
    for name in ("a1", "b1"):
        assert read_image(out / f"{name}.nii.gz").same_grid(ref)
        assert read_image(out / f"{name}_mask.nii.gz").same_grid(ref)
        steps = [h["step"] for h in json.loads((out / f"{name}.json").read_text())["history"]]
        assert steps == ["match_resolution", "resample_to_grid", "nyul"]
    assert (tmp_path / "nyul.json").is_file()
    code, err = _main(["-q", "images", str(manifest), "--output-dir", str(tmp_path / "first"),
                       "--grid", "first", "--target-fwhm", "none"], capsys)
    assert code == 0, err
    first = read_image(tmp_path / "a1.nii.gz")
    assert read_image(tmp_path / "first" / "b1.nii.gz").same_grid(first)


def test_choices_come_from_the_module_constants() -> None:
    from imharmony.workflows.batch import FORMER_NORMALIZERS, GRIDS, NORMALIZERS

    actions = {a.dest: a for a in _parser()._subparsers._group_actions[0].choices[  # type: ignore[union-attr]
        "images"]._actions}
    assert tuple(actions["normalize"].choices) == (*NORMALIZERS, *FORMER_NORMALIZERS)
    assert "nyul" in NORMALIZERS
    assert tuple(actions["grid"].choices) == GRIDS


def test_user_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _dataset(tmp_path)
    pd.read_csv(manifest).rename(columns={"source_fwhm": "fwhm"}).to_csv(
        tmp_path / "typo.csv", index=False)
    write_image(Image(np.zeros((4, 4, 4))), tmp_path / "ref.nii.gz")
    out = tmp_path / "out"
    cases = [
        (["images", str(tmp_path / "typo.csv"), "--output-dir", str(out), "--spacing", "2"],
         "unknown column(s) 'fwhm' (did you mean 'source_fwhm'?)"),
        (["images", str(manifest), "--output-dir", str(out), "--target-fwhm", "none"],
         "nothing to do"),
        (["images", str(tmp_path), "--output-dir", str(out), "--spacing", "2"],
         f"{tmp_path} is a folder, not a manifest CSV; write a manifest with one row per image"),
        (["images", str(tmp_path / "a1.nii.gz"), "--output-dir", str(out), "--spacing", "2"],
         "a1.nii.gz is an image, not a manifest CSV; write a manifest"),
        (["images", str(manifest), "--output-dir", str(out), "--spacing", "2", "--reference",
          str(tmp_path / "ref.nii.gz")], "either spacing or a reference grid"),
        (["images", str(manifest), "--output-dir", str(out), "--grid", "first", "--reference",
          str(tmp_path / "ref.nii.gz")], "not both"),
        (["images", str(manifest), "--output-dir", str(out), "--normalize", "zscore",
          "--nyul-model", str(tmp_path / "m.json")], "with normalize='nyul' only"),
    ]
    for argv, message in cases:
        code, err = _main(argv, capsys)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and message in err, (argv, err)
        assert err.startswith("imharmony images: error: ")
    assert not out.exists() and not (tmp_path / "m.json").exists()
