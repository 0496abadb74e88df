"""Tests of the batch harmonization of a manifest of images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imharmony.errors import DataError, ImageFormatError
from imharmony.image import Image
from imharmony.imaging.resolution import fwhm_to_sigma
from imharmony.io.images import read_image, write_image
from imharmony.workflows.batch import (
    ManifestError,
    harmonize_images,
    parse_fwhm,
    read_manifest,
)


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
    from imharmony.physics.compatibility import NotHarmonizableError

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


# --- one common grid, Nyúl, and what is not a run ---------------------------------------------


def _rotation_z(degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    return np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0],
                     [0.0, 0.0, 1.0]])


def _centres(img: Image) -> np.ndarray:
    """Physical coordinates of every voxel centre, shape (3, *spatial shape)."""
    idx = np.indices(img.array.shape[:3], dtype=float)
    steps = idx * np.asarray(img.spacing).reshape(3, 1, 1, 1)
    return np.tensordot(img.direction, steps, axes=1) + np.reshape(img.origin, (3, 1, 1, 1))


def _ramp(points: np.ndarray) -> np.ndarray:
    return 2.0 * points[0] - 0.5 * points[1] + 0.25 * points[2] + 7.0


def _grid_dataset(root: Path) -> tuple[Path, Image]:
    """Three acquisitions of one linear ramp (physical coordinates) on three grids, with masks:
    s1 on a rotated grid; s2 the same voxels stored with axes 0 and 1 swapped; s3 on a finer,
    shifted, differently rotated grid. Returns the manifest and s1."""
    root.mkdir(parents=True)
    g1 = Image(np.zeros((14, 12, 6)), spacing=(1.0, 1.25, 2.0), origin=(-3.0, 2.0, 10.0),
               direction=_rotation_z(20.0))
    s1 = g1.with_array(_ramp(_centres(g1)).astype(np.float32))
    m1 = np.zeros(s1.shape, np.uint8)
    m1[3:11, 2:9, 1:5] = 1
    s2 = Image(s1.array.transpose(1, 0, 2).copy(), spacing=(1.25, 1.0, 2.0), origin=s1.origin,
               direction=s1.direction[:, [1, 0, 2]])
    g3 = Image(np.zeros((16, 14, 12)), spacing=(0.8, 0.9, 1.6), origin=(-4.0, 1.0, 7.0),
               direction=_rotation_z(-15.0))
    s3 = g3.with_array(_ramp(_centres(g3)).astype(np.float32))
    rows = []
    for name, img, mask in (("s1", s1, m1), ("s2", s2, m1.transpose(1, 0, 2)),
                            ("s3", s3, np.ones(s3.shape, np.uint8))):
        write_image(img, root / f"{name}.nii.gz")
        write_image(img.with_array(mask), root / f"{name}_mask.nii.gz")
        rows.append({"path": f"{name}.nii.gz", "mask": f"{name}_mask.nii.gz",
                     "site": name.upper()})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, read_image(root / "s1.nii.gz")


@pytest.mark.parametrize("how", ["reference", "first"])
def test_every_output_is_on_the_reference_grid(tmp_path: Path, how: str) -> None:
    manifest, s1 = _grid_dataset(tmp_path / "in")
    options = {"reference": tmp_path / "in" / "s1.nii.gz"} if how == "reference" else {
        "grid": "first"}
    summary = harmonize_images(manifest, tmp_path / "out", **options)  # type: ignore[arg-type]
    assert list(summary["status"]) == ["done"] * 3
    mask1 = read_image(tmp_path / "in" / "s1_mask.nii.gz").array
    expected = _ramp(_centres(s1))
    for name in ("s1", "s2", "s3"):
        out = read_image(tmp_path / "out" / f"{name}.nii.gz")
        mask = read_image(tmp_path / "out" / f"{name}_mask.nii.gz")
        assert out.same_grid(s1) and mask.same_grid(s1), name
        side = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert [h["step"] for h in side["history"]] == ["resample_to_grid"]
        if name == "s3":
            # s3 is finer than s1: anti-aliased, then interpolated. A linear ramp survives both
            # exactly where s1's voxels lie inside s3's hull, away from its edges (the blur)
            s3 = read_image(tmp_path / "in" / "s3.nii.gz")
            rel = _centres(s1) - np.reshape(s3.origin, (3, 1, 1, 1))
            idx = np.tensordot(s3.direction.T, rel, axes=1) / np.reshape(s3.spacing, (3, 1, 1, 1))
            top = np.reshape(s3.shape, (3, 1, 1, 1)) - 1.0
            inside = np.all((idx >= 3.0) & (idx <= top - 3.0), axis=0)
            assert inside.sum() >= 50
            np.testing.assert_allclose(out.array[inside], expected[inside], rtol=0, atol=2e-4)
            assert mask.array[inside].all()
            outside = np.any((idx < -0.5 - 1e-3) | (idx > top + 0.5 + 1e-3), axis=0)
            assert outside.any() and not out.array[outside].any()
            assert not mask.array[outside].any()
        else:
            # s1 onto itself, s2 (the same voxels, transposed) back onto s1: voxel for voxel
            np.testing.assert_allclose(out.array, s1.array, rtol=0, atol=1e-4)
            np.testing.assert_array_equal(mask.array, mask1)
    again = harmonize_images(manifest, tmp_path / "out", **options)  # type: ignore[arg-type]
    assert list(again["status"]) == ["skipped"] * 3


def test_grid_options_that_conflict_and_a_run_with_nothing_to_do(tmp_path: Path) -> None:
    manifest, _ = _grid_dataset(tmp_path / "in")
    ref = tmp_path / "in" / "s1.nii.gz"
    out = tmp_path / "out"
    with pytest.raises(DataError, match="either spacing or a reference grid"):
        harmonize_images(manifest, out, spacing=1.0, reference=ref)
    with pytest.raises(DataError, match="either spacing or a reference grid"):
        harmonize_images(manifest, out, spacing=1.0, grid="first")
    with pytest.raises(DataError, match="not both"):
        harmonize_images(manifest, out, reference=ref, grid="first")
    with pytest.raises(DataError, match="grid must be one of"):
        harmonize_images(manifest, out, grid="last")  # type: ignore[arg-type]
    with pytest.raises(ImageFormatError, match=r"absent\.nii\.gz"):
        harmonize_images(manifest, out, reference=tmp_path / "absent.nii.gz")
    # no source_fwhm column, no spacing, no grid, no normalization: only a copy -> refused
    with pytest.raises(DataError, match="nothing to do"):
        harmonize_images(manifest, out)
    with pytest.raises(DataError, match="nothing to do"):
        harmonize_images(_make_dataset(tmp_path / "fwhm"), out, target_fwhm=None)
    assert not out.exists()


def test_unknown_columns_and_what_is_not_a_manifest(tmp_path: Path) -> None:
    manifest = _make_dataset(tmp_path / "in")
    df = pd.read_csv(manifest).rename(columns={"source_fwhm": "fwhm"})
    df.to_csv(tmp_path / "typo.csv", index=False)
    with pytest.raises(ManifestError, match=r"'fwhm' \(did you mean 'source_fwhm'\?\)"):
        harmonize_images(tmp_path / "typo.csv", tmp_path / "out", normalize="zscore")
    df = pd.read_csv(manifest).rename(columns={"site": "Site"})
    with pytest.raises(ManifestError, match=r"no 'site' column \(did you mean 'Site'\?\)"):
        read_manifest(df)
    with pytest.raises(ManifestError, match="'scanner'; rename or remove"):
        read_manifest(pd.read_csv(manifest).assign(scanner="x"))
    # a column declared as ignored is left alone (a manifest shared with voxelwise)
    shared = read_manifest(pd.read_csv(manifest).assign(age=50), ignore_columns=["age"])
    assert list(shared["age"]) == [50] * 3
    # MR metadata columns are known
    assert "EchoTime" in read_manifest(pd.read_csv(manifest).assign(EchoTime=10.0)).columns
    with pytest.raises(ManifestError, match=r"in is a folder, not a manifest CSV; write a "
                                            r"manifest with one row per image"):
        read_manifest(tmp_path / "in")
    with pytest.raises(ManifestError, match=r"s1\.nii\.gz is an image, not a manifest CSV"):
        harmonize_images(tmp_path / "in" / "a" / "s1.nii.gz", tmp_path / "out", spacing=1.0)
    assert not (tmp_path / "out").exists()


def _nyul_dataset(root: Path) -> Path:
    """One tissue pattern acquired at three sites with different gains and offsets."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    shape = (12, 12, 8)
    tissue = rng.choice([30.0, 60.0, 100.0], size=shape) + rng.normal(0, 5, shape)
    mask = np.zeros(shape, np.uint8)
    mask[2:10, 2:10, 1:7] = 1
    rows = []
    for site, gain, offset in (("A", 1.0, 0.0), ("B", 2.5, 40.0), ("C", 0.6, -10.0)):
        arr = np.where(mask > 0, gain * tissue + offset, 0.0).astype(np.float64)
        write_image(Image(arr, spacing=(1.0, 1.0, 2.0)), root / f"{site}.nii.gz")
        write_image(Image(mask, spacing=(1.0, 1.0, 2.0)), root / f"{site}_mask.nii.gz")
        rows.append({"path": f"{site}.nii.gz", "mask": f"{site}_mask.nii.gz", "site": site})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_nyul_is_fitted_on_the_batch_saved_and_applied(tmp_path: Path) -> None:
    from imharmony.imaging import HistogramStandardizer

    manifest = _nyul_dataset(tmp_path / "in")
    out = tmp_path / "out"
    summary = harmonize_images(manifest, out, normalize="nyul")
    assert list(summary["status"]) == ["done"] * 3
    model = HistogramStandardizer.load(out / "nyul_model.json")
    images = [read_image(tmp_path / "in" / f"{s}.nii.gz") for s in "ABC"]
    masks = [read_image(tmp_path / "in" / f"{s}_mask.nii.gz") for s in "ABC"]
    reference = HistogramStandardizer().fit(images, masks)
    np.testing.assert_allclose(model.standard_landmarks_, reference.standard_landmarks_)
    inside = masks[0].array > 0
    outputs = [read_image(out / f"{s}.nii.gz").array for s in "ABC"]
    for img, mask, got in zip(images, masks, outputs, strict=True):
        np.testing.assert_allclose(got, reference.transform(img, mask).array, rtol=1e-6)
    # gain and offset are all that differ between the sites: Nyúl removes them
    for got in outputs[1:]:
        np.testing.assert_allclose(got[inside], outputs[0][inside], atol=1e-6)
    assert json.loads((out / "A.json").read_text())["history"][-1]["step"] == "nyul"
    again = harmonize_images(manifest, out, normalize="nyul")
    assert list(again["status"]) == ["skipped"] * 3


def test_nyul_model_file_is_saved_then_loaded(tmp_path: Path) -> None:
    manifest = _nyul_dataset(tmp_path / "in")
    model = tmp_path / "nyul.json"
    harmonize_images(manifest, tmp_path / "fit", normalize="nyul", nyul_model=model)
    assert model.is_file() and not (tmp_path / "fit" / "nyul_model.json").exists()
    # a model file that exists is loaded and applied, not fitted again: changing one image
    # changes only that image's output
    img = read_image(tmp_path / "in" / "C.nii.gz")
    write_image(img.with_array(img.array * 3.0), tmp_path / "in" / "C.nii.gz")
    before = model.read_bytes()
    summary = harmonize_images(manifest, tmp_path / "apply", normalize="nyul", nyul_model=model)
    assert list(summary["status"]) == ["done"] * 3 and model.read_bytes() == before
    for site in "ABC":
        np.testing.assert_allclose(read_image(tmp_path / "apply" / f"{site}.nii.gz").array,
                                   read_image(tmp_path / "fit" / f"{site}.nii.gz").array,
                                   rtol=1e-6, atol=1e-9)
    with pytest.raises(DataError, match="nyul_model is used with normalize='nyul' only"):
        harmonize_images(manifest, tmp_path / "x", normalize="zscore", nyul_model=model)
    with pytest.raises(DataError, match="maps every voxel"):
        harmonize_images(manifest, tmp_path / "x", normalize="nyul", outside="zero")
    assert not (tmp_path / "x").exists()


def test_the_nyul_fit_of_a_batch_holds_one_prepared_image_at_a_time(tmp_path: Path,
                                                                      monkeypatch) -> None:
    import weakref

    from imharmony.workflows import batch

    alive: list[weakref.ref] = []
    real = batch._geometry

    def geometry(task):
        # every earlier prepared image is released by the time the next one is prepared
        assert sum(r() is not None for r in alive) <= 1
        img, mask = real(task)
        alive.append(weakref.ref(img))
        return img, mask

    monkeypatch.setattr(batch, "_geometry", geometry)
    rng = np.random.default_rng(7)
    rows = []
    for i in range(6):
        path = write_image(Image(rng.gamma(3.0, 10.0, (6, 5, 4)).astype(np.float32)),
                           tmp_path / f"i{i}.nii.gz")
        rows.append({"path": path.name, "site": "ab"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    summary = harmonize_images(tmp_path / "m.csv", tmp_path / "out", normalize="nyul")
    assert list(summary["status"]) == ["done"] * 6
    assert len(alive) >= 6  # the fit prepared every row (and the rows ran after it)
