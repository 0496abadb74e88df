"""Tests of the batch harmonization of a manifest of images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imharmony.errors import DataError
from imharmony.image import Image
from imharmony.imaging.batch import (
    ManifestError,
    harmonize_images,
    parse_fwhm,
    read_manifest,
)
from imharmony.imaging.resolution import fwhm_to_sigma
from imharmony.io.images import read_image, write_image


def _variance_mm2(arr: np.ndarray, axis: int, spacing: float) -> float:
    others = tuple(a for a in range(arr.ndim) if a != axis)
    prof = arr.sum(axis=others, dtype=np.float64)
    x = np.arange(prof.size) * spacing
    mean = (prof * x).sum() / prof.sum()
    return float((prof * (x - mean) ** 2).sum() / prof.sum())


def _make_dataset(root: Path) -> Path:
    """Three images from two sites, with masks, and a manifest using relative paths."""
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rows = []
    specs = [
        ("a/s1.nii.gz", "A", (1.0, 1.0, 2.0), "2;2;4", 100.0, 10.0),
        ("a/s2.nii.gz", "A", (1.0, 1.0, 2.0), "2;2;4", 120.0, 15.0),
        ("b/s3.nii.gz", "B", (0.8, 0.8, 3.0), "3;3;5", 900.0, 80.0),
    ]
    for rel, site, spacing, fwhm, mean, sd in specs:
        shape = tuple(round(24 / s) for s in spacing)
        arr = rng.normal(mean, sd, size=shape).astype(np.float32)
        mask = np.zeros(shape, np.uint8)
        mask[2:-2, 2:-2, 1:-1] = 1
        arr[mask == 0] = 0.0
        write_image(Image(arr, spacing=spacing, origin=(10.0, -5.0, 3.0)), root / rel)
        mrel = rel.replace(".nii.gz", "_mask.nii.gz")
        write_image(Image(mask, spacing=spacing, origin=(10.0, -5.0, 3.0)), root / mrel)
        rows.append({"path": rel, "mask": mrel, "site": site, "source_fwhm": fwhm})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_parse_fwhm() -> None:
    assert parse_fwhm("2.5") == 2.5
    assert parse_fwhm(3) == 3.0
    assert parse_fwhm("1;2;3.5") == (1.0, 2.0, 3.5)
    assert parse_fwhm(float("nan")) is None
    assert parse_fwhm("  ") is None
    with pytest.raises(DataError, match="x;y;z"):
        parse_fwhm("1,2,3")
    with pytest.raises(DataError, match=">= 0"):
        parse_fwhm("-1")


def test_full_batch_then_rerun_skips(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    out = tmp_path / "out"
    seen: list[dict] = []
    summary = harmonize_images(manifest, out, spacing=1.5, normalize="zscore", progress=seen.append)
    assert list(summary["status"]) == ["done"] * 3
    assert len(seen) == 3 and all(s["total"] == 3 for s in seen)
    # default target: the coarsest source per axis (site B: 3;3;5)
    assert set(summary["target_fwhm"]) == {"3;3;5"}
    written = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(written["name"]) == ["s1", "s2", "s3"]
    for name in ("s1", "s2", "s3"):
        img = read_image(out / f"{name}.nii.gz")
        mask = read_image(out / f"{name}_mask.nii.gz").array != 0
        assert img.spacing == pytest.approx((1.5, 1.5, 1.5))
        # IBSI grid: centre kept; 24 mm of extent -> ceil(24 / 1.5) = 16 voxels per axis
        assert img.shape == (16, 16, 16)
        vals = img.array[mask].astype(np.float64)
        assert vals.mean() == pytest.approx(0.0, abs=1e-5)
        assert vals.std() == pytest.approx(1.0, rel=1e-5)
        side = json.loads((out / f"{name}.json").read_text())
        steps = [h["step"] for h in side["history"]]
        assert steps == ["match_resolution", "resample", "zscore"]
        assert side["history"][0]["target_fwhm"] == [3.0, 3.0, 5.0]
        # after matching, the resampling adds no anti-aliasing blur of its own
        assert side["history"][1]["anti_alias_sigma_mm"] == [0.0, 0.0, 0.0]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    again = harmonize_images(manifest, out, spacing=1.5, normalize="zscore")
    assert list(again["status"]) == ["skipped"] * 3
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == before
    # other parameters: recomputed
    changed = harmonize_images(manifest, out, spacing=2.0, normalize="zscore")
    assert list(changed["status"]) == ["done"] * 3
    assert read_image(out / "s1.nii.gz").spacing == pytest.approx((2.0, 2.0, 2.0))


def test_point_source_reaches_the_target_resolution(tmp_path: Path) -> None:
    # a point imaged at 2;2;4 mm FWHM is matched to 3;3;5: the added blur has
    # FWHM sqrt(3² − 2²) = sqrt(5) and sqrt(5² − 4²) = 3 mm
    spacing = (1.0, 1.0, 2.0)
    arr = np.zeros((31, 31, 21), np.float32)
    arr[15, 15, 10] = 1000.0
    write_image(Image(arr, spacing=spacing), tmp_path / "p.nii.gz")
    pd.DataFrame([{"path": "p.nii.gz", "site": "A", "source_fwhm": "2;2;4"}]).to_csv(
        tmp_path / "m.csv", index=False)
    summary = harmonize_images(tmp_path / "m.csv", tmp_path / "out", target_fwhm=(3.0, 3.0, 5.0))
    assert summary["status"].iloc[0] == "done"
    out = read_image(tmp_path / "out" / "p.nii.gz").array
    for ax, kernel_fwhm in enumerate((math.sqrt(5.0), math.sqrt(5.0), 3.0)):
        assert _variance_mm2(out, ax, spacing[ax]) == pytest.approx(
            fwhm_to_sigma(kernel_fwhm) ** 2, rel=1e-4)


def test_failed_rows_are_reported_and_others_complete(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    df = pd.read_csv(manifest)
    extra = pd.DataFrame([
        {"path": "missing.nii.gz", "mask": "", "site": "C", "source_fwhm": "2"},
        {"path": "a/s1.nii.gz", "mask": "", "site": "A", "source_fwhm": "two", "id": "bad_fwhm"},
        {"path": "b/s3.nii.gz", "mask": "a/s1_mask.nii.gz", "site": "B", "source_fwhm": "3;3;5",
         "id": "wrong_mask"},
    ])
    pd.concat([df, extra]).to_csv(manifest, index=False)
    summary = harmonize_images(manifest, tmp_path / "out", normalize="robust_zscore")
    status = dict(zip(summary["name"], summary["status"], strict=True))
    assert status == {"s1": "done", "s2": "done", "s3": "done", "missing": "failed",
                      "bad_fwhm": "failed", "wrong_mask": "failed"}
    reasons = dict(zip(summary["name"], summary["reason"], strict=True))
    assert "missing.nii.gz" in reasons["missing"] and "no such file" in reasons["missing"]
    assert "source_fwhm" in reasons["bad_fwhm"]
    assert "mask" in reasons["wrong_mask"] and "grid" in reasons["wrong_mask"]
    assert set(summary.loc[summary["status"] == "failed", "error_kind"]) == {"input"}
    assert not (tmp_path / "out" / "missing.nii.gz").exists()


def test_sharper_explicit_target_fails_those_rows(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    summary = harmonize_images(manifest, tmp_path / "out", target_fwhm=(2.5, 2.5, 4.5))
    assert list(summary["status"]) == ["done", "done", "failed"]
    assert "sharper" in summary["reason"].iloc[2] and "axis 0" in summary["reason"].iloc[2]


def test_parallel_workers(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    serial = harmonize_images(manifest, tmp_path / "serial", normalize="zscore", spacing=2.0)
    parallel = harmonize_images(manifest, tmp_path / "par", normalize="zscore", spacing=2.0,
                                workers=2)
    assert list(parallel["status"]) == ["done"] * 3
    for name in serial["name"]:
        a = read_image(tmp_path / "serial" / f"{name}.nii.gz").array
        b = read_image(tmp_path / "par" / f"{name}.nii.gz").array
        np.testing.assert_array_equal(a, b)


def test_manifest_errors(tmp_path: Path) -> None:
    pd.DataFrame({"path": ["x.nii.gz"]}).to_csv(tmp_path / "nosite.csv", index=False)
    with pytest.raises(ManifestError, match="'site'"):
        harmonize_images(tmp_path / "nosite.csv", tmp_path / "out")
    pd.DataFrame({"path": ["a/x.nii.gz", "b/x.nii"], "site": ["A", "B"]}).to_csv(
        tmp_path / "dup.csv", index=False)
    with pytest.raises(ManifestError, match="'id' column"):
        read_manifest(tmp_path / "dup.csv")
    df = read_manifest(pd.DataFrame({"path": ["a/x.nii.gz", "b/x.nii"], "site": ["A", "B"],
                                     "id": ["one", "two"]}), base_dir=tmp_path)
    assert list(df["_name"]) == ["one", "two"]
    assert df["_path"].iloc[0] == str(tmp_path / "a" / "x.nii.gz")
    pd.DataFrame({"path": ["x.nii.gz"], "site": ["A"]}).to_csv(tmp_path / "nofwhm.csv",
                                                              index=False)
    with pytest.raises(ManifestError, match="source_fwhm"):
        harmonize_images(tmp_path / "nofwhm.csv", tmp_path / "out", target_fwhm=4.0)
    with pytest.raises(DataError, match="normalize"):
        harmonize_images(tmp_path / "nofwhm.csv", tmp_path / "out", normalize="minmax")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="workers"):
        harmonize_images(tmp_path / "nofwhm.csv", tmp_path / "out", workers=0)


def test_mr_metadata_is_checked_before_processing(tmp_path: Path) -> None:
    from imharmony.physics.mr import NotHarmonizableError

    manifest = _make_dataset(tmp_path / "in")
    df = pd.read_csv(manifest)
    df["RepetitionTime"] = [500.0, 520.0, 4000.0]
    df["EchoTime"] = [10.0, 11.0, 100.0]
    df.to_csv(manifest, index=False)
    with pytest.raises(NotHarmonizableError, match="weighting"):
        harmonize_images(manifest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # all T1w: accepted
    df["RepetitionTime"] = [500.0, 520.0, 600.0]
    df["EchoTime"] = [10.0, 11.0, 12.0]
    df.to_csv(manifest, index=False)
    summary = harmonize_images(manifest, tmp_path / "out")
    assert list(summary["status"]) == ["done"] * 3


def test_output_dir_equal_to_the_images_folder_is_refused(tmp_path: Path) -> None:
    from imharmony.errors import OutputError

    manifest = _make_dataset(tmp_path / "in")
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    # s1/s2 are in in/a: writing there would overwrite in/a/s1.nii.gz and its mask
    with pytest.raises(OutputError, match=r"s1\.nii\.gz: is also an input"):
        harmonize_images(manifest, tmp_path / "in" / "a", spacing=1.5, normalize="zscore")
    after = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    assert after == before


def test_resume_redoes_rows_whose_input_or_output_changed(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    out = tmp_path / "out"
    harmonize_images(manifest, out, spacing=1.5, normalize="zscore")
    # the input of s1 is replaced (same parameters), the output of s2 is damaged
    img = read_image(tmp_path / "in" / "a" / "s1.nii.gz")
    write_image(img.with_array(img.array * 2), tmp_path / "in" / "a" / "s1.nii.gz")
    (out / "s2.nii.gz").write_bytes(b"not an image")
    again = harmonize_images(manifest, out, spacing=1.5, normalize="zscore")
    assert list(again["status"]) == ["done", "done", "skipped"]
    assert read_image(out / "s2.nii.gz").shape == (16, 16, 16)
