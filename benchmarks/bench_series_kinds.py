"""Classic multi-frame objects and unequally spaced slices: ``imharmony convert`` and dcm2niix
checked against where the frames truly lie.

The public QA collections hold no classic multi-frame object, so the series are generated
(``tests/reference/dcm2niix/cases.py``: an MR object placed by Spacing Between Slices, an NM
tomography placed by Slice Vector with Image Position and Orientation in Detector Information,
RT Dose placed by Grid Frame Offset Vector ascending and descending), plus pydicom's RT Dose test
file ``rtdose.dcm``. Both tools convert each; then every voxel of each output is placed in the
patient frame by its own affine and must fall on an acquired pixel (within 1e-3 mm of the
pixel's centre, in its frame's plane), holding that pixel's value: ``max off (mm)`` is the
largest distance of a voxel from where its value was acquired (0 when the geometry is right).

Unequally spaced slices (``cases.UNEVEN``, oblique CT): imharmony's values are compared with an
independent linear interpolation along the normal (numpy.interp) at its slice positions, and with
dcm2niix's ``_Eq`` image slice for slice (dcm2niix rounds to integers; its ``_Eq`` sform
multiplies the z row of the matrix by the change of spacing, which for an oblique series puts
its slices off their true positions: reported as its ``max off``).

Usage::

    python benchmarks/bench_series_kinds.py [--output benchmarks/results/series_kinds.md]
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dwi_gradients import _cases, convert_ours, setup

LPS = np.diag([-1.0, -1.0, 1.0])


def dcm2niix(exe: str, folder: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True)
    subprocess.run([exe, "-f", "%j_%s", "-z", "n", "-b", "n", "-o", str(out), str(folder)],
                   capture_output=True, text=True, check=True)
    return sorted(out.glob("*.nii"))


def voxel_world(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every voxel's centre in LPS (n, 3) and its value (n,), in C order of the data."""
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    idx = np.indices(data.shape[:3]).reshape(3, -1)
    world = (LPS @ (img.affine[:3, :3] @ idx + img.affine[:3, 3:4])).T
    return world, data.reshape(-1)


def truth_check(path: Path, positions: np.ndarray, iop, spacing, frames) -> tuple[float, int]:
    """Largest distance (mm) of a voxel from the acquired pixel it holds, and how many voxels
    hold another value than that pixel."""
    world, values = voxel_world(path)
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    along = (world[:, None, :] - positions[None]) @ normal  # (voxels, frames)
    f = np.argmin(np.abs(along), axis=1)
    rel = world - positions[f]
    c, r = rel @ row / spacing[1], rel @ col / spacing[0]
    ci, ri = np.round(c).astype(int), np.round(r).astype(int)
    off = np.maximum.reduce([np.abs(along[np.arange(len(f)), f]),
                             np.abs(c - ci) * spacing[1], np.abs(r - ri) * spacing[0]])
    inside = (ci >= 0) & (ci < frames.shape[2]) & (ri >= 0) & (ri < frames.shape[1])
    wrong = ~inside | (frames[f, np.clip(ri, 0, frames.shape[1] - 1),
                              np.clip(ci, 0, frames.shape[2] - 1)] != values)
    return float(off.max()), int(np.count_nonzero(wrong))


def describe(off: float, wrong: int, path: Path) -> str:
    z = nib.load(path).header.get_zooms()[2]
    verdict = "right" if off < 1e-3 and wrong == 0 else "wrong"
    return f"{verdict}: max off {off:.3g} mm, {wrong} voxels off their pixel; z {z:.4g} mm"


def classic_rows(work: Path, cases, exe: str) -> list[dict]:
    rows = []
    rng = np.random.default_rng(20)
    iop = cases.ORIENTATIONS["oblique"]
    for name, spec in cases.classic_cases().items():
        frames = rng.integers(0, 4000, size=(5, 3, 5)).astype(np.uint16)
        folder = work / name / "in"
        kwargs = {k: v for k, v in spec.items() if k != "positions"}
        cases.write_classic(folder, frames, **kwargs)
        rows.append(compare_classic(work / name, folder, name, spec["positions"], iop,
                                    (1.5, 1.25), frames, exe))
    import pydicom
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("rtdose.dcm"))
    ds = pydicom.dcmread(path)
    folder = work / "pydicom-rtdose" / "in"
    folder.mkdir(parents=True)
    shutil.copyfile(path, folder / path.name)
    iop = [float(v) for v in ds.ImageOrientationPatient]
    normal = np.cross(iop[:3], iop[3:])
    positions = np.asarray(ds.ImagePositionPatient, float) + np.outer(
        np.asarray(ds.GridFrameOffsetVector, float), normal)
    rows.append(compare_classic(work / "pydicom-rtdose", folder, "pydicom rtdose.dcm", positions,
                                iop, [float(v) for v in ds.PixelSpacing], ds.pixel_array, exe))
    return rows


def compare_classic(root, folder, name, positions, iop, spacing, frames, exe) -> dict:
    code, err = convert_ours(folder, root / "ours.nii")
    ours = (describe(*truth_check(root / "ours.nii", positions, iop, spacing, frames),
                     root / "ours.nii") if code == 0 else f"exit {code}: {err.strip()[-150:]}")
    refs = dcm2niix(exe, folder, root / "dcm2niix")
    theirs = (describe(*truth_check(refs[0], positions, iop, spacing, frames), refs[0])
              if len(refs) == 1 else f"{len(refs)} files")
    return {"case": name, "imharmony": ours, "dcm2niix": theirs}


def uneven_rows(work: Path, cases, exe: str) -> list[dict]:
    from imharmony.io.dicom import read_dicom_series

    rows = []
    for name, distances in cases.UNEVEN.items():
        folder = work / f"uneven-{name}" / "in"
        stored = cases.write_uneven(folder, name).astype(np.float64) - 1024.0  # HU
        img = read_dicom_series(folder)
        grid = np.arange(img.shape[2]) * img.spacing[2]
        flat = stored.reshape(len(distances), -1)
        expected = np.stack([np.interp(grid, distances, flat[:, v])
                             for v in range(flat.shape[1])], axis=1)
        expected = expected.reshape(len(grid), *stored.shape[1:]).transpose(2, 1, 0)
        ours_err = float(np.abs(img.array - expected).max())
        refs = [p for p in dcm2niix(exe, folder, work / f"uneven-{name}" / "dcm2niix")
                if p.name.endswith("_Eq_1.nii")]
        ref = nib.load(refs[0])
        theirs = np.asarray(ref.dataobj, dtype=np.float64)[:, ::-1, :]
        k = theirs.shape[2]
        diff = np.abs(img.array[..., :k] - theirs)
        same = bool(np.array_equal(np.floor(img.array[..., :k] + 0.5), theirs))
        # Where dcm2niix's affine puts its slices vs where they belong (the grid along the normal).
        iop = np.asarray(cases.ORIENTATIONS["oblique"])
        normal = np.cross(iop[:3], iop[3:])
        first = np.asarray(img.origin)
        centres = (LPS @ (ref.affine[:3, :3] @ np.array([[0, ref.shape[1] - 1, s]
                                                           for s in range(k)]).T
                          + ref.affine[:3, 3:4])).T
        true = first + np.outer(grid[:k], normal)
        off = float(np.linalg.norm(centres - true, axis=1).max())
        rows.append({
            "case": f"unequal spacing '{name}' {list(distances)} mm",
            "imharmony": f"{img.shape[2]} slices {img.spacing[2]:.4g} mm; values within "
                         f"{ours_err:.1e} of numpy.interp",
            "dcm2niix": f"{k} slices {ref.header.get_zooms()[2]:.4g} mm; ours rounded = its "
                        f"values: {same}"
                        f" (max diff {diff.max():.3g}); its slices off their positions by up to "
                        f"{off:.3g} mm (sform)",
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    args, exe, version = setup(argv, __doc__)
    if exe is None:
        return 2
    cases = _cases()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imharmony-kinds-") as tmp:
        rows = classic_rows(Path(tmp), cases, exe) + uneven_rows(Path(tmp), cases, exe)
    elapsed = time.perf_counter() - t0
    lines = [
        "# Classic multi-frame and unequally spaced slices: imharmony convert and dcm2niix "
        "(issue 10)",
        "",
        f"dcm2niix {version}; Python "
        f"{platform.python_version()}; {len(rows)} series in {elapsed:.0f} s on a shared 2-core "
        "machine. Generated by `benchmarks/bench_series_kinds.py` (see its docstring).",
        "",
        "| series | imharmony | dcm2niix |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r['case']} | {r['imharmony']} | {r['dcm2niix']} |" for r in rows]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
