"""``imharmony convert`` against dcm2niix on every series of dcm2niix's public QA collections.

For each collection folder given (the ``In/`` trees of neurolabusc/dcm_qa, dcm_qa_nih,
dcm_qa_enh and dcm_qa_ct, extracted from their git repositories; never committed here), every
image series found by :func:`imharmony.io.dicom.list_dicom_series` in every leaf folder is
converted by ``imharmony convert --series-uid UID`` (CT in HU; MR with ``--units philips_fp``
for Philips, as dcm2niix's default ``-p y``, else ``--units rescaled``; others raw), and the
folder by ``dcm2niix -f %j_%s -z n -b n`` (one or more NIfTI per series, named by its UID).

The two are compared in world space: the voxel-to-world matrices must map every voxel of the
dcm2niix image onto a voxel of imharmony's (a permutation and flips of the axes, integer
translation, within 1e-3 voxel), and the values there must agree (relative 1e-5, float32). A
4-D output is compared volume by volume; dcm2niix may split a series into several files
(echoes, phase/magnitude): each of its volumes must equal one of imharmony's.

Outcome per series: ``identical``; ``de-sheared, close`` (a gantry-tilted series both tools
de-shear by interpolation: same grid, at least 99 % of voxels within dcm2niix's integer
rounding); ``de-sheared, differs from dcm2niix`` (the same, when the grids differ: then every
acquired pixel centre is checked to fall on an integer column and slice of imharmony's grid);
``equalized, close`` (unequally spaced slices both tools resample onto equidistant ones:
same shape, at least 99 % of the voxels within dcm2niix's rounding, compared by index because
dcm2niix's ``_Eq`` sform is not the slices' geometry for an oblique or tilted series; every
acquired pixel centre on an integer column of imharmony's grid, and its first and last
acquired slices on the grid's first and last slices); ``refused`` (exit 2 with a one-line
reason);
``silently wrong`` (exit 0 and a different geometry or value); ``crash`` (exit 1 or a
traceback); ``no reference`` (dcm2niix wrote nothing for the series, or only outputs that
cannot be compared). Results: ``benchmarks/results/dcm_qa.md``.

Usage::

    python benchmarks/bench_dcm_qa.py QA_ROOT [--output benchmarks/results/dcm_qa.md]

where QA_ROOT holds ``dcm_qa/In``, ``dcm_qa_nih/In``, ... (see ``--help``).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

COLLECTIONS = ("dcm_qa", "dcm_qa_nih", "dcm_qa_enh", "dcm_qa_ct")
IMHARMONY = [sys.executable, "-c", "import sys, imharmony.cli; sys.exit(imharmony.cli.main())"]


def leaf_folders(root: Path) -> list[Path]:
    """Folders that directly hold files (each is converted as dcm2niix would see it)."""
    out = []
    for folder, _dirs, files in os.walk(root):
        if any(not f.startswith(".") for f in files):
            out.append(Path(folder))
    return sorted(out)


def series_in(folder: Path) -> list[dict]:
    """The image series of the files directly in ``folder`` (headers only)."""
    from imharmony.io.dicom import list_dicom_series

    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / "v"
        view.mkdir()
        for f in folder.iterdir():
            if f.is_file():
                (view / f.name).symlink_to(f.resolve())
        try:
            return list_dicom_series(view)
        except Exception as exc:
            logging.info("%s: %s", folder, exc)
            return []


def flat_copy(folder: Path, dest: Path) -> Path:
    """Symlinks to the files directly in ``folder`` (so sub-folders are not read twice)."""
    dest.mkdir(parents=True)
    for f in folder.iterdir():
        if f.is_file():
            (dest / f.name).symlink_to(f.resolve())
    return dest


DCM2NIIX = "dcm2niix"  # the executable (--dcm2niix)


def run_dcm2niix(folder: Path, out: Path) -> None:
    out.mkdir(parents=True)
    subprocess.run(
        [DCM2NIIX, "-f", "%j_%s", "-z", "n", "-b", "n", "-o", str(out), str(folder)],
        capture_output=True, text=True, timeout=600,
    )


def world_match(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> tuple[bool, str, np.ndarray]:
    """Map dcm2niix's voxels onto ours: (ok, why, index map matrix)."""
    m = np.linalg.inv(ours.affine) @ ref.affine
    if not np.allclose(m, np.round(m), atol=1e-3):
        return False, f"voxel grids differ (max {np.abs(m - np.round(m)).max():.3g} voxel)", m
    m = np.round(m)
    if sorted(ours.shape[:3]) != sorted(ref.shape[:3]):
        return False, f"shape {ours.shape[:3]} vs {ref.shape[:3]}", m
    return True, "", m


def ref_volumes(ref: nib.Nifti1Image, m: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """dcm2niix's volumes resampled (by index) onto our grid."""
    data = np.asarray(ref.dataobj, dtype=np.float64)
    slope, inter = ref.header.get_slope_inter()
    if slope is not None:
        data = data * slope + (inter or 0.0)
    if data.ndim == 3:
        data = data[..., None]
    data = data.reshape(*data.shape[:3], -1)
    idx = np.indices(data.shape[:3]).reshape(3, -1)
    mine = (m[:3, :3] @ idx + m[:3, 3:4]).astype(int)
    if (mine < 0).any() or any((mine[i] >= shape[i]).any() for i in range(3)):
        raise ValueError("dcm2niix voxels fall outside our grid")
    vols = []
    for t in range(data.shape[3]):
        v = np.empty(shape[:3])
        v[tuple(mine)] = data[..., t].reshape(-1)
        vols.append(v)
    return vols


def equal(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(1.0, float(np.nanmax(np.abs(b))) if b.size else 1.0)
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-5 * scale, equal_nan=True))


def close_after_deshear(ours_path: Path, refs: list[Path]) -> str | None:
    """For a de-sheared (gantry tilt) series: how close it is to dcm2niix's ``_Tilt`` output.

    Both interpolate each slice linearly onto the same grown grid; dcm2niix rounds to the
    stored integer type and treats the one partly covered pixel at the edge of each slice
    differently. Returns a description when the grids are identical and at least 99 % of the
    voxels agree within 0.51 (its rounding), else None.
    """
    ours = nib.load(ours_path)
    data = np.asarray(ours.dataobj, dtype=np.float64)
    for ref_path in refs:
        if "_Tilt" not in ref_path.name:
            continue
        ref = nib.load(ref_path)
        ok, _, m = world_match(ours, ref)
        if not ok:
            continue
        v = ref_volumes(ref, m, data.shape)[0]
        diff = np.abs(data - v)
        within = float((diff <= 0.51).mean())
        if within >= 0.99:
            return (f"{ref_path.name}: same grid; {100 * within:.2f} % of voxels within 0.51 "
                    f"(dcm2niix rounds to integers), max difference {diff.max():.3g} at the "
                    "edge of the slices")
    return None


def close_after_equalize(ours_path: Path, refs: list[Path], tilted: bool) -> str | None:
    """For a series resampled onto equidistant slices: how close it is to dcm2niix's ``_Eq``.

    dcm2niix's ``_Eq`` sform multiplies the z row of its matrix by the change of slice spacing
    instead of the slice axis, which for an oblique or tilted series is not the slices' true
    geometry; so the voxels are compared by index: the in-plane axes from the x and y rows of
    the two matrices' first columns (dcm2niix flips the rows), the slices in the same order
    from the first. dcm2niix rounds each interpolation to integers (twice when it also
    de-shears); returns a description when at least 99 % of the voxels inside the field of view
    agree within that rounding (0.51, or 1.01 after a de-shear), else None.
    """
    ours = nib.load(ours_path)
    data = np.asarray(ours.dataobj, dtype=np.float64)
    inside = np.isfinite(data)
    tol = 1.01 if tilted else 0.51
    for ref_path in refs:
        if "_Eq" not in ref_path.name:
            continue
        ref = nib.load(ref_path)
        if ref.shape[:3] != data.shape[:3]:
            continue
        flips = [np.sign(ours.affine[:2, a] @ ref.affine[:2, a]) for a in (0, 1)]
        if 0 in flips:
            continue
        theirs = np.asarray(ref.dataobj, dtype=np.float64)[:: int(flips[0]), :: int(flips[1])]
        diff = np.abs(data - theirs)[inside]
        within = float((diff <= tol).mean())
        if within >= 0.99:
            return (f"{ref_path.name}: same shape {data.shape}; {100 * within:.2f} % of voxels "
                    f"in the field of view within {tol} (dcm2niix rounds to integers"
                    + (" after each of its two interpolations" if tilted else "")
                    + f"), max difference {diff.max():.3g}")
    return None


def acquired_voxels(ours_path: Path, folder: Path, uid: str) -> np.ndarray:
    """Voxel coordinates on our grid of three pixel centres (two corners and one inside) of
    every acquired file of series ``uid``, shape (3 x files, 3)."""
    import pydicom

    ours = nib.load(ours_path)
    to_voxel = np.linalg.inv(ours.affine) @ np.diag([-1.0, -1.0, 1.0, 1.0])
    out = []
    for f in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # not DICOM
            continue
        if str(ds.get("SeriesInstanceUID", "")) != uid:
            continue
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for j, i in ((0, 0), (ds.Rows - 1, ds.Columns - 1), (ds.Rows // 2, ds.Columns // 3)):
            world = ipp + i * dc * iop[:3] + j * dr * iop[3:]
            out.append((to_voxel @ np.append(world, 1.0))[:3])
    return np.asarray(out)


def acquired_on_columns(ours_path: Path, folder: Path, uid: str) -> tuple[float, float, float]:
    """For an equalized series: the largest distance (voxels) of an acquired pixel centre from
    an integer column of our grid, and the slice coordinates of the first and last acquired
    slices (0 and the last slice of the grid when the grid spans them)."""
    v = acquired_voxels(ours_path, folder, uid)
    return float(np.abs(v[:, 0] - np.round(v[:, 0])).max()), float(v[:, 2].min()), float(
        v[:, 2].max())


def on_acquired_grid(ours_path: Path, folder: Path, uid: str) -> float:
    """Largest distance (voxels) of an acquired pixel centre from our grid's columns and slices.

    A de-sheared series only moves slices within their plane, so every pixel centre of every
    file must fall on an integer column and slice of the output (rows are interpolated).
    """
    v = acquired_voxels(ours_path, folder, uid)[:, [0, 2]]
    return float(np.abs(v - np.round(v)).max())


def compare(ours_path: Path, refs: list[Path]) -> tuple[str, str]:
    ours = nib.load(ours_path)
    data = np.asarray(ours.dataobj, dtype=np.float64)
    slope, inter = ours.header.get_slope_inter()
    if slope is not None:
        data = data * slope + (inter or 0.0)
    mine = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    used = [False] * len(mine)
    n_ref = 0
    reasons = []
    for ref_path in refs:
        ref = nib.load(ref_path)
        ok, why, m = world_match(ours, ref)
        if not ok:
            reasons.append(f"{ref_path.name}: {why}")
            continue
        for v in ref_volumes(ref, m, mine[0].shape):
            n_ref += 1
            hit = next((i for i, x in enumerate(mine) if not used[i] and equal(x, v)), None)
            if hit is None:
                diff = min(float(np.nanmax(np.abs(x - v))) for x in mine)
                reasons.append(
                    f"{ref_path.name}: a volume matches none of ours (max diff {diff:.4g})"
                )
                break
            used[hit] = True
    if n_ref and not reasons and all(used):
        return "identical", f"{len(mine)} volume(s)"
    if n_ref and not reasons and not all(used):
        return "identical", f"dcm2niix wrote {n_ref} of our {len(mine)} volumes (others split off)"
    return "silently wrong", "; ".join(reasons)[:300]


def units_for(series: dict, manufacturer: str) -> str:
    """CT: HU; MR: Philips floating point (dcm2niix's default -p y) or rescaled; else raw."""
    modality = series.get("Modality")
    if modality == "CT":
        return "hu"
    if modality == "MR":
        return "philips_fp" if "PHILIPS" in manufacturer.upper() else "rescaled"
    return "raw"


def manufacturer(folder: Path, uid: str) -> str:
    import pydicom

    for f in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception:
            continue
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            return str(ds.get("Manufacturer", "") or "")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder holding dcm_qa*/In")
    parser.add_argument("--output", type=Path, default=None, help="write the report here")
    parser.add_argument("--collections", nargs="*", default=list(COLLECTIONS))
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs here")
    parser.add_argument("--dcm2niix", default="dcm2niix", help="dcm2niix executable")
    args = parser.parse_args(argv)
    global DCM2NIIX
    DCM2NIIX = shutil.which(args.dcm2niix) or args.dcm2niix
    if shutil.which(DCM2NIIX) is None:
        print("dcm2niix not found (apt-get install -y dcm2niix)", file=sys.stderr)
        return 2
    version = subprocess.run([DCM2NIIX, "-v"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="imharmony-dcmqa-")) if args.keep is None else args.keep
    rows = []
    t0 = time.perf_counter()
    for coll in args.collections:
        root = args.root / coll / "In"
        for k, folder in enumerate(leaf_folders(root)):
            series = series_in(folder)
            if not series:
                continue
            tag = f"{coll}_{k}"
            flat = flat_copy(folder, work / tag / "in")
            run_dcm2niix(flat, work / tag / "dcm2niix")
            for s in series:
                uid = s["SeriesInstanceUID"]
                out = work / tag / "ours" / f"{uid}.nii"
                units = units_for(s, manufacturer(flat, uid))
                cmd = [*IMHARMONY, "convert", str(flat), "--series-uid", uid, "-o", str(out),
                       "--dtype", "float64", "--units", units]
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                if res.returncode == 2 and "Philips Scale Slope" in res.stderr:
                    cmd[-1] = units = "rescaled"
                    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                refs = sorted((work / tag / "dcm2niix").glob(f"{uid}_*.nii"))
                row = {"collection": coll, "folder": str(folder.relative_to(root)),
                       "series": f"{s.get('SeriesNumber')} {s.get('SeriesDescription') or ''}"
                       .strip(), "modality": s.get("Modality"), "n_files": s["n_files"],
                       "units": units}
                err = res.stderr.strip().splitlines()
                if res.returncode == 2:
                    row.update(outcome="refused", detail=err[-1][:300] if err else "")
                elif res.returncode != 0 or "Traceback" in res.stderr:
                    row.update(outcome="crash", detail=(err[-1] if err else "")[:300])
                elif not refs:
                    row.update(outcome="no reference", detail="dcm2niix wrote no file")
                else:
                    try:
                        outcome, detail = compare(out, refs)
                        tilt = "gantry tilt" in res.stdout + res.stderr
                        equalized = "equalized to" in res.stdout + res.stderr
                        close = (
                            close_after_deshear(out, refs)
                            if outcome != "identical" and tilt and not equalized else None
                        )
                        if outcome != "identical" and equalized:
                            close = close_after_equalize(out, refs, tilt)
                            off, k0, k1 = acquired_on_columns(out, flat, uid)
                            last = nib.load(out).shape[2] - 1
                            if close is not None and off < 1e-3 and abs(k0) < 1e-3 and abs(
                                    k1 - last) < 1e-3:
                                outcome, detail = "equalized, close", (
                                    f"{close}; every acquired pixel centre on our columns "
                                    f"(within {off:.1e} voxel), first and last acquired slices "
                                    f"at slices {k0:.4f} and {k1:.4f} of {last}")
                                close = None
                            else:
                                close = None
                        if close is not None:
                            outcome, detail = "de-sheared, close", close
                        elif outcome != "identical" and tilt:
                            off = on_acquired_grid(out, flat, uid)
                            if off < 1e-3:
                                outcome = "de-sheared, differs from dcm2niix"
                                detail = (
                                    f"every acquired pixel centre on our columns and slices "
                                    f"(within {off:.1e} voxel); dcm2niix's grid is not: "
                                    + detail
                                )
                    except Exception as exc:  # the comparison itself failed: count it against us
                        outcome, detail = "silently wrong", f"comparison failed: {exc}"
                    row.update(outcome=outcome, detail=detail)
                rows.append(row)
                print(f"{row['outcome']:>15}  {coll}/{row['folder']} [{row['series']}] "
                      f"{row['detail'][:120]}", flush=True)
    elapsed = time.perf_counter() - t0
    counts = collections.Counter(r["outcome"] for r in rows)
    by_coll = collections.defaultdict(collections.Counter)
    for r in rows:
        by_coll[r["collection"]][r["outcome"]] += 1
    outcomes = ["identical", "de-sheared, close", "de-sheared, differs from dcm2niix",
                "equalized, close", "refused", "silently wrong", "crash", "no reference"]
    lines = [
        "# imharmony convert vs dcm2niix on dcm2niix's QA collections (issue 10)",
        "",
        f"dcm2niix {version}; Python {platform.python_version()}; {len(rows)} series in "
        f"{elapsed:.0f} s on a shared 2-core machine. Generated by "
        "`benchmarks/bench_dcm_qa.py` (see its docstring for the method).",
        "",
        "| collection | " + " | ".join(outcomes) + " |",
        "| --- | " + " | ".join("---:" for _ in outcomes) + " |",
    ]
    for coll in args.collections:
        lines.append(f"| {coll} | " + " | ".join(str(by_coll[coll][o]) for o in outcomes) + " |")
    lines.append("| **all** | " + " | ".join(f"**{counts[o]}**" for o in outcomes) + " |")
    lines += ["", "## Every series", "", "| collection | folder | series | outcome | detail |",
              "| --- | --- | --- | --- | --- |"]
    for r in rows:
        detail = re.sub(r"\s+", " ", r["detail"]).replace("|", "/")
        lines.append(f"| {r['collection']} | {r['folder']} | {r['series']} | {r['outcome']} | "
                     f"{detail} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)
        (args.output.with_suffix(".json")).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
