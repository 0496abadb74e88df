"""DWI ``.bval`` / ``.bvec`` of ``imharmony convert`` against dcm2niix's, on generated series.

The public QA collections in the local mirror lack their DWI objects, so the series are
generated (``tests/reference/dcm2niix/cases.py``): seven volumes (b = 0, 1000, 2000 s/mm², six
directions off the axes, in the patient frame) written as standard tags (0018,9087)/(0018,9089),
Siemens' private (0019,xx0C)/(0019,xx0E), Siemens' CSA image header, and one Enhanced MR object
with the MR Diffusion functional group; at axial, coronal, sagittal and oblique orientations,
with the rows and/or the columns flipped, slices written ascending and descending (72 series);
and, with ``--philips-dwi``, the one real DWI series whose objects the mirror holds: the Philips
classic export of neurolabusc/dcm_qa_philips_dwi (17 volumes, scrambled Instance Numbers),
checked against dcm2niix and against the collection's own ``Ref/`` ``.bval``/``.bvec``.

Each is converted by ``imharmony convert`` and by ``dcm2niix -f %j_%s -z n -b n``, and compared:

* **order**: dcm2niix's volumes, mapped onto imharmony's grid in world space, must equal
  imharmony's volumes in the same order (values exactly);
* **b-values**: the two ``.bval`` equal, and equal to the b-values written;
* **directions**: each ``.bvec`` (FSL convention: along the voxel axes, the first one negated
  when the voxel-to-world matrix has a positive determinant) is turned back into the patient
  frame with its own file's affine; both must give the directions written (within 1e-4, the
  files' decimals), so the sign convention is checked, not only the agreement;
* **files**: when the two grids share their axes (the same permutation and flips), the
  ``.bvec`` files themselves must be equal.

Usage::

    python benchmarks/bench_dwi_gradients.py [--output benchmarks/results/dwi_gradients.md]
        [--dcm2niix PATH]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import io
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dcm_qa import ref_volumes, world_match  # noqa: E402


def _cases():
    spec = importlib.util.spec_from_file_location(
        "dcm2niix_cases", REPO / "tests" / "reference" / "dcm2niix" / "cases.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fsl_to_world(bvec: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """FSL ``.bvec`` rows (3, n) of an image with ``affine`` (RAS) to directions in LPS (n, 3)."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    voxel = np.asarray(bvec, dtype=float).T.copy()
    if np.linalg.det(affine[:3, :3]) > 0:
        voxel[:, 0] = -voxel[:, 0]
    ras = voxel @ rot.T
    return ras * np.array([-1.0, -1.0, 1.0])


def world_to_fsl(world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Directions in LPS (n, 3) to FSL ``.bvec`` rows (3, n) of an image with ``affine``."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    voxel = (np.asarray(world, dtype=float) * np.array([-1.0, -1.0, 1.0])) @ rot
    if np.linalg.det(affine[:3, :3]) > 0:
        voxel[:, 0] = -voxel[:, 0]
    return voxel.T


def convert_ours(folder: Path, out: Path, *options: str) -> tuple[int, str]:
    """``imharmony convert FOLDER -o OUT --dtype float64 OPTIONS`` in this process: the exit
    status and what it wrote to stderr."""
    from imharmony import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["convert", str(folder), "-o", str(out), "--dtype", "float64", *options])
    return code, err.getvalue()


def compare_case(work: Path, case: dict, cases, dcm2niix: str) -> dict:
    name = case["name"]
    root = work / name
    cases.write_dwi(root / "in", name, case["vendor"], case["orientation"], case["descending"])
    (root / "dcm2niix").mkdir()
    subprocess.run([dcm2niix, "-f", "%j_%s", "-z", "n", "-b", "n", "-o", str(root / "dcm2niix"),
                    str(root / "in")], capture_output=True, text=True, check=True)
    code, err = convert_ours(root / "in", root / "ours.nii")
    row = {**case, "outcome": "", "detail": ""}
    if code != 0:
        row.update(outcome="imharmony failed", detail=err.strip().splitlines()[-1][:200])
        return row
    refs = sorted((root / "dcm2niix").glob("*.nii"))
    if len(refs) != 1 or not refs[0].with_suffix(".bvec").exists():
        row.update(outcome="no reference", detail=f"dcm2niix wrote {[p.name for p in refs]}")
        return row
    ours, ref = nib.load(root / "ours.nii"), nib.load(refs[0])
    ok, why, m = world_match(ours, ref)
    if not ok:
        row.update(outcome="differs", detail=f"grids: {why}")
        return row
    data = np.asarray(ours.dataobj, dtype=np.float64)
    mine = [data[..., t] for t in range(data.shape[3])]
    theirs = ref_volumes(ref, m, data.shape[:3])
    order = [next((i for i, x in enumerate(mine) if np.array_equal(x, v)), None) for v in theirs]
    b_true = np.asarray(cases.B_VALUES)
    g_true = cases.gradients()
    b_ours = np.loadtxt(root / "ours.bval", ndmin=1)
    b_ref = np.loadtxt(refs[0].with_suffix(".bval"), ndmin=1)
    v_ours = np.loadtxt(root / "ours.bvec", ndmin=2)
    v_ref = np.loadtxt(refs[0].with_suffix(".bvec"), ndmin=2)
    w_ours, w_ref = fsl_to_world(v_ours, ours.affine), fsl_to_world(v_ref, ref.affine)
    err_ours = float(np.abs(w_ours - g_true).max())
    err_ref = float(np.abs(w_ref - g_true).max())
    problems = []
    if order != list(range(len(mine))):
        problems.append(f"volume order {order}")
    if not (np.array_equal(b_ours, b_true) and np.array_equal(b_ref, b_true)):
        problems.append(f"b-values ours {b_ours.tolist()} dcm2niix {b_ref.tolist()}")
    if err_ours > 1e-4:
        problems.append(f"our directions off by {err_ours:.3g}")
    if err_ref > 1e-4:
        problems.append(f"dcm2niix's directions off by {err_ref:.3g}")
    # Our file rewritten on dcm2niix's axes must be dcm2niix's file.
    file_diff = float(np.abs(world_to_fsl(w_ours, ref.affine) - v_ref).max())
    if file_diff > 1e-4:
        problems.append(f".bvec files differ by {file_diff:.3g} once on the same axes")
    rot = m[:3, :3]
    axes = " ".join(
        f"{'-' if rot[r].sum() < 0 else '+'}{'ijk'[int(np.argmax(np.abs(rot[r])))]}"
        for r in range(3)
    )
    row.update(
        outcome="differs" if problems else "identical",
        detail="; ".join(problems) if problems else (
            f"dcm2niix's axes on ours: {axes}; directions within {max(err_ours, err_ref):.1e} "
            f"of the truth; .bvec equal on the same axes within {file_diff:.1e}"
        ),
        err_ours=err_ours, err_ref=err_ref,
    )
    return row


def compare_philips(work: Path, root: Path, dcm2niix: str) -> dict:
    """The real Philips classic DWI of neurolabusc/dcm_qa_philips_dwi (``root`` holds the
    gunzipped ``cl/`` files and ``Ref/``): volumes, b-values and directions (b >= 1) against
    dcm2niix's conversion and the collection's reference ``.bval``/``.bvec``."""
    out = work / "philips"
    (out / "dcm2niix").mkdir(parents=True)
    subprocess.run([dcm2niix, "-f", "%j_%s", "-z", "n", "-b", "n", "-o", str(out / "dcm2niix"),
                    str(root / "cl")], capture_output=True, text=True, check=True)
    code, err = convert_ours(root / "cl", out / "ours.nii", "--units", "philips_fp")
    row = {"name": "dcm_qa_philips_dwi (real, classic, 17 volumes)", "vendor": "philips (real)"}
    if code:
        return {**row, "outcome": "imharmony failed", "detail": err.strip()[-200:]}
    (ref_nii,) = sorted((out / "dcm2niix").glob("*.nii"))
    ours, ref = nib.load(out / "ours.nii"), nib.load(ref_nii)
    ok, why, m = world_match(ours, ref)
    if not ok:
        return {**row, "outcome": "differs", "detail": f"grids: {why}"}
    data = np.asarray(ours.dataobj, dtype=np.float64)
    vols = ref_volumes(ref, m, data.shape[:3])
    same_order = all(np.allclose(data[..., t], v, rtol=1e-5) for t, v in enumerate(vols))
    b = np.loadtxt(out / "ours.bval")
    b_ref = np.loadtxt(ref_nii.with_suffix(".bval"))
    (collection,) = sorted((root / "Ref").glob("*_cl.bval"))
    b_coll = np.loadtxt(collection)
    w_ours = fsl_to_world(np.loadtxt(out / "ours.bvec"), ours.affine)
    w_ref = fsl_to_world(np.loadtxt(ref_nii.with_suffix(".bvec")), ref.affine)
    w_coll = fsl_to_world(np.loadtxt(collection.with_suffix(".bvec")), ref.affine)
    weighted = b >= 1
    diff = float(np.abs(w_ours - w_ref)[weighted].max())
    diff_coll = float(np.abs(w_ours - w_coll)[weighted].max())
    good = same_order and np.array_equal(b, b_ref) and np.array_equal(b, b_coll) and max(
        diff, diff_coll) < 1e-4
    return {**row, "outcome": "identical" if good else "differs",
            "detail": f"volumes in the same order: {same_order}; b-values equal to dcm2niix's "
                      f"and the collection's Ref: {np.array_equal(b, b_ref)}, "
                      f"{np.array_equal(b, b_coll)}; directions of the {int(weighted.sum())} "
                      f"weighted volumes within {max(diff, diff_coll):.1e} of both in the patient "
                      "frame (b < 1: no direction to compare)",
            "err_ours": max(diff, diff_coll), "err_ref": 0.0}


def setup(argv: list[str] | None, doc: str) -> tuple[argparse.Namespace, str | None, str]:
    """Parse ``--output`` and ``--dcm2niix``; the executable (None when absent) and its version."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--output", type=Path, default=None, help="write the report here")
    parser.add_argument("--dcm2niix", default="dcm2niix", help="dcm2niix executable")
    parser.add_argument("--philips-dwi", type=Path, default=None, help=(
        "folder holding dcm_qa_philips_dwi's gunzipped In/cl files as cl/ and its Ref/"))
    args = parser.parse_args(argv)
    exe = shutil.which(args.dcm2niix)
    if exe is None:
        sys.stderr.write("dcm2niix not found (apt-get install -y dcm2niix)\n")
        return args, None, ""
    logging.basicConfig(level=logging.ERROR)
    version = subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.strip()
    return args, exe, version.splitlines()[0] if version else "?"


def main(argv: list[str] | None = None) -> int:
    args, exe, version = setup(argv, __doc__)
    if exe is None:
        return 2
    cases = _cases()
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imharmony-dwi-") as tmp:
        for case in cases.dwi_cases():
            row = compare_case(Path(tmp), case, cases, exe)
            rows.append(row)
            sys.stdout.write(f"{row['outcome']:>10}  {row['name']}: {row['detail']}\n")
        if getattr(args, "philips_dwi", None) is not None:
            rows.append(compare_philips(Path(tmp), args.philips_dwi, exe))
    elapsed = time.perf_counter() - t0
    counts = collections.Counter(r["outcome"] for r in rows)
    by_vendor = collections.defaultdict(collections.Counter)
    for r in rows:
        by_vendor[r["vendor"]][r["outcome"]] += 1
    outcomes = ["identical", "differs", "imharmony failed", "no reference"]
    lines = [
        "# DWI gradient files: imharmony convert vs dcm2niix (issue 10)",
        "",
        f"dcm2niix {version}; Python "
        f"{platform.python_version()}; {len(rows)} series in {elapsed:.0f} s on a "
        "shared 2-core machine. Generated by `benchmarks/bench_dwi_gradients.py` (see its "
        "docstring for the cases and the checks).",
        "",
        "| tags | " + " | ".join(outcomes) + " |",
        "| --- | " + " | ".join("---:" for _ in outcomes) + " |",
    ]
    for vendor in (*cases.VENDORS, "philips (real)"):
        lines.append(f"| {vendor} | "
                     + " | ".join(str(by_vendor[vendor][o]) for o in outcomes) + " |")
    lines.append("| **all** | " + " | ".join(f"**{counts[o]}**" for o in outcomes) + " |")
    worst = max((max(r.get("err_ours", 0), r.get("err_ref", 0)) for r in rows), default=0.0)
    lines += ["", f"Largest distance of a direction (either tool, back in the patient frame) "
              f"from the one written: {worst:.2g}.", "",
              "## Every series", "", "| series | outcome | detail |", "| --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['outcome']} | {r['detail']} |" for r in rows]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.output:
        args.output.write_text(report)
    return 0 if counts["identical"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
