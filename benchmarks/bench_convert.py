"""Benchmark: DICOM series -> NIfTI, ``imharmony convert`` against ``dcm2niix``.

Writes a synthetic 512 x 512 x 300 CT series (an elliptical body with lungs, spine and noise, in
HU + 1024 stored as int16, one file per slice) with pydicom into a temporary folder, then times on
the same files, interleaved, after one untimed warm-up each (so all read from the page cache):

* ``dcm2niix -z n`` (uncompressed .nii, the tool's default),
* ``imharmony convert DIR --output OUT.nii`` as a subprocess (includes interpreter start-up and
  imports),
* the API in-process: ``read_dicom_series(DIR, dtype="auto")`` + ``write_image(img, OUT.nii)``.

It checks that the volumes agree (both brought to the closest canonical orientation by nibabel:
same affine, same values) and prints the ratios; the target is at most 2x dcm2niix.

Usage::

    python benchmarks/bench_convert.py [--slices 300] [--repeats 5] [--gzip] [--keep DIR]

``apt-get install -y dcm2niix`` provides dcm2niix (Debian); without it only our timings print.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]

CLI_SNIPPET = (
    "import sys\n"
    "from imharmony import cli\n"
    "if 'convert' not in cli._COMMAND_MODULES:\n"
    "    cli._COMMAND_MODULES = (*cli._COMMAND_MODULES, 'convert')\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def _factory():
    spec = importlib.util.spec_from_file_location("_bench_dicom",
                                                  REPO / "tests" / "_support" / "dicom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def phantom_slice(k: int, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice of stored values (HU + 1024), int16."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2, size / 2
    z = k / max(n - 1, 1)
    body = ((x - cx) / (0.42 * size)) ** 2 + ((y - cy) / (0.32 * size)) ** 2 <= 1
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[body] = 40.0
    for sx in (-1, 1):  # lungs shrink towards the ends of the volume
        r = 0.13 * size * (1 - 0.5 * abs(z - 0.5))
        lung = ((x - cx - sx * 0.18 * size) / r) ** 2 + ((y - cy + 0.03 * size) / (1.3 * r)) ** 2
        hu[lung <= 1] = -850.0
    spine = (x - cx) ** 2 + (y - cy - 0.2 * size) ** 2 <= (0.05 * size) ** 2
    hu[spine] = 700.0
    hu[body] += rng.normal(0, 15, size=int(body.sum())).astype(np.float32)
    return np.clip(np.round(hu + 1024), 0, 4095).astype(np.int16)


def write_phantom(folder: Path, n: int, size: int) -> None:
    fac = _factory()
    rng = np.random.default_rng(0)
    stored = np.stack([phantom_slice(k, n, size, rng) for k in range(n)])
    fac.write_series(
        folder, stored, pixel_spacing=(0.75, 0.75), slice_spacing=1.0,
        origin=(-192.0, -192.0, -150.0), bits_stored=12,
        tags={"SeriesDescription": "bench phantom", "RescaleIntercept": -1024.0},
    )


def _timed(cmd: list[str]) -> tuple[float, float | None]:
    """Wall time (s) and peak RSS (MiB, via GNU time when available) of a command."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    rss = None
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        full = [gnu_time, "-f", "%M", "-o", rss_file.name, *cmd] if gnu_time else cmd
        t0 = time.perf_counter()
        subprocess.run(full, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t0
        if gnu_time:
            text = Path(rss_file.name).read_text().strip().splitlines()
            rss = int(text[-1]) / 1024 if text else None
    return elapsed, rss


def run_dcm2niix(dcm: Path, out_dir: Path, gzip: bool) -> tuple[float, float | None, Path]:
    for p in out_dir.glob("d2n*"):
        p.unlink()
    cmd = ["dcm2niix", "-z", "y" if gzip else "n", "-b", "n", "-o", str(out_dir), "-f", "d2n",
           str(dcm)]
    elapsed, rss = _timed(cmd)
    return elapsed, rss, out_dir / ("d2n.nii.gz" if gzip else "d2n.nii")


def run_cli(dcm: Path, out: Path) -> tuple[float, float | None]:
    out.unlink(missing_ok=True)  # as for dcm2niix: removing the old output is not timed
    return _timed([sys.executable, "-c", CLI_SNIPPET, "-q", "convert", str(dcm), "--output",
                   str(out)])


# What the CLI loads before it converts anything: interpreter, numpy, pydicom, nibabel, imharmony.
FLOOR_SNIPPET = (
    "import numpy, pydicom, nibabel\n"
    "from imharmony import cli\n"
    "from imharmony.io import dicom, images\n"
)


def run_floor() -> float:
    """Wall time of a process that only starts Python, imports what convert uses, and exits."""
    elapsed, _ = _timed([sys.executable, "-c", FLOOR_SNIPPET])
    return elapsed


def run_api(dcm: Path, out: Path, workers: int | None) -> float:
    from imharmony.io import read_dicom_series, write_image

    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    img = read_dicom_series(dcm, dtype="auto", workers=workers)
    write_image(img, out)
    return time.perf_counter() - t0


def compare(ours: Path, theirs: Path) -> str:
    a = nib.as_closest_canonical(nib.load(ours))
    b = nib.as_closest_canonical(nib.load(theirs))
    if a.shape != b.shape:
        raise SystemExit(f"shapes differ: ours {a.shape}, dcm2niix {b.shape}")
    if not np.allclose(a.affine, b.affine, atol=1e-3):
        raise SystemExit(f"affines differ:\nours\n{a.affine}\ndcm2niix\n{b.affine}")
    va, vb = a.get_fdata(dtype=np.float32), b.get_fdata(dtype=np.float32)
    if not np.array_equal(va, vb):
        raise SystemExit(f"values differ: max |diff| {np.abs(va - vb).max()}")
    return f"identical: shape {a.shape}, affine within 1e-3 mm, all {va.size} values equal"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="reader threads (API run)")
    ap.add_argument("--gzip", action="store_true", help="compare .nii.gz (dcm2niix -z y)")
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the series in DIR")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        dcm = args.keep or work / "dcm"
        if not (dcm.is_dir() and any(dcm.iterdir())):
            t0 = time.perf_counter()
            write_phantom(dcm, args.slices, args.size)
            print(f"wrote {args.slices} slices of {args.size}x{args.size} in "
                  f"{time.perf_counter() - t0:.1f} s to {dcm}")
        suffix = ".nii.gz" if args.gzip else ".nii"
        ours_cli, ours_api = work / f"cli{suffix}", work / f"api{suffix}"
        have_d2n = shutil.which("dcm2niix") is not None
        if not have_d2n:
            print("dcm2niix not found (apt-get install -y dcm2niix): timing imharmony only")
        # Warm-up (page cache, imports), untimed.
        if have_d2n:
            _, _, theirs = run_dcm2niix(dcm, work, args.gzip)
        run_cli(dcm, ours_cli)
        run_api(dcm, ours_api, args.workers)
        run_floor()
        t_d2n, t_cli, t_api, t_floor, rss_d2n, rss_cli = [], [], [], [], [], []
        for _ in range(args.repeats):
            t_floor.append(run_floor())
            if have_d2n:
                t, rss, theirs = run_dcm2niix(dcm, work, args.gzip)
                t_d2n.append(t)
                rss_d2n.append(rss)
            t, rss = run_cli(dcm, ours_cli)
            t_cli.append(t)
            rss_cli.append(rss)
            t_api.append(run_api(dcm, ours_api, args.workers))

        def fmt(ts: list[float]) -> str:
            return f"median {statistics.median(ts):.3f} s (min {min(ts):.3f})"

        print(f"\n{args.size}x{args.size}x{args.slices} int16 CT -> {suffix}, "
              f"{args.repeats} interleaved repeats, {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}")
        if have_d2n:
            peak = max(r or 0 for r in rss_d2n)
            print(f"dcm2niix            {fmt(t_d2n)}, peak RSS {peak:.0f} MiB")
        print(f"imharmony convert   {fmt(t_cli)}, peak RSS {max(r or 0 for r in rss_cli):.0f} MiB")
        print(f"read+write (API)    {fmt(t_api)}")
        if have_d2n:
            m = statistics.median(t_d2n)
            print(f"ratio CLI / dcm2niix: {statistics.median(t_cli) / m:.2f} "
                  f"(best {min(t_cli) / min(t_d2n):.2f})")
            print(f"ratio API / dcm2niix: {statistics.median(t_api) / m:.2f} "
                  f"(best {min(t_api) / min(t_d2n):.2f})")
            print("ours (CLI) vs dcm2niix:", compare(ours_cli, theirs))
            print("ours (API) vs dcm2niix:", compare(ours_api, theirs))
        floor = statistics.median(t_floor)
        print(f"start-up floor      {fmt(t_floor)}: Python start, imports of numpy, pydicom, "
              "nibabel and imharmony, exit; no conversion")
        if have_d2n:
            print(f"CLI minus floor / dcm2niix: {(statistics.median(t_cli) - floor) / m:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
