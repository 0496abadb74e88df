"""Image-level speed: z-score, FWHM matching and resampling against their baselines (issue 4).

All timings are taken in the same run on the same 256³ float32 volume (seeded noise) with a
spherical mask holding about 25% of the voxels, and reported as ratios:

1. ``zscore(img, mask)`` (statistics in the mask, output for every voxel) against one numpy pass
   ``x * 2 + 1``; target: within 3×. ``robust_zscore`` and ``whitestripe`` are listed for
   information.
2. ``match_resolution(img, 0, 6)`` (FWHM 6 mm on a 1 mm grid, σ = 2.548 voxels) against
   ``scipy.ndimage.gaussian_filter(x, σ)`` (float32 in and out, truncate 4); target: faster. The
   DCT transforms use all CPUs by default; the single-thread time is listed too, and SimpleITK's
   ``SmoothingRecursiveGaussian`` for reference.
3. ``resample(img, 0.8)`` (linear, 1 → 0.8 mm, 320³ out) against SimpleITK's
   ``ResampleImageFilter`` with the same grid: (a) numpy in, numpy out (what a numpy user of
   SimpleITK runs: ``GetImageFromArray``, ``Execute``, ``GetArrayFromImage``), (b) the filter
   alone on an image already in SimpleITK. Target: no slower.

Each time is the best of ``--repeat`` runs (default 3) of ``time.perf_counter``. The machine
may be shared: ratios measured in one run are the meaningful numbers, absolute times are not.

Usage::

    python benchmarks/bench_imaging.py                  # prints a markdown table
    python benchmarks/bench_imaging.py --output benchmarks/results/imaging_f1.md
    python benchmarks/bench_imaging.py --size 96        # quick smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.ndimage as ndi
import SimpleITK as sitk

from imharmony.image import Image
from imharmony.imaging.intensity import robust_zscore, whitestripe, zscore
from imharmony.imaging.resample import resample, resampled_grid
from imharmony.imaging.resolution import fwhm_to_sigma, gaussian_blur, match_resolution


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="cube side (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    n, repeat = args.size, args.repeat

    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 20.0, size=(n, n, n)).astype(np.float32)
    grid = np.ogrid[:n, :n, :n]
    mask = sum((g - (n - 1) / 2) ** 2 for g in grid) < (0.39 * n) ** 2
    img = Image(x, spacing=(1.0, 1.0, 1.0))
    rows: list[tuple[str, float, str, float, str]] = []

    # 1. intensity normalization ---------------------------------------------------------------
    t_pass = best_of(lambda: x * 2 + 1, repeat)
    t_z = best_of(lambda: zscore(img, mask), repeat)
    rows.append(("zscore in mask", t_z, "numpy pass x*2+1", t_pass, "<= 3"))
    t_rz = best_of(lambda: robust_zscore(img, mask), repeat)
    rows.append(("robust_zscore in mask", t_rz, "numpy pass x*2+1", t_pass, "(info)"))
    t_ws = best_of(lambda: whitestripe(img, mask), 1)
    rows.append(("whitestripe in mask", t_ws, "numpy pass x*2+1", t_pass, "(info)"))

    # 2. FWHM matching -------------------------------------------------------------------------
    sigma = float(fwhm_to_sigma(6.0))
    t_scipy = best_of(lambda: ndi.gaussian_filter(x, sigma), repeat)
    t_match = best_of(lambda: match_resolution(img, 0.0, 6.0), repeat)
    t_match1 = best_of(lambda: gaussian_blur(x, sigma, workers=1), repeat)
    src = sitk.GetImageFromArray(x)
    t_rec = best_of(lambda: sitk.SmoothingRecursiveGaussian(src, sigma), repeat)
    rows.append(("match_resolution FWHM 6 mm", t_match, "scipy gaussian_filter", t_scipy, "< 1"))
    rows.append(("  same, 1 thread", t_match1, "scipy gaussian_filter", t_scipy, "< 1"))
    rows.append(("  SimpleITK recursive Gaussian", t_rec, "scipy gaussian_filter", t_scipy,
                 "(info)"))

    # 3. resampling ----------------------------------------------------------------------------
    new_shape, offset = resampled_grid(x.shape, (1.0,) * 3, (0.8,) * 3)

    def sitk_filter(image: sitk.Image) -> sitk.Image:
        flt = sitk.ResampleImageFilter()
        flt.SetSize([int(v) for v in new_shape[::-1]])
        flt.SetOutputSpacing([0.8] * 3)
        flt.SetOutputOrigin([float(v) for v in offset[::-1]])
        flt.SetInterpolator(sitk.sitkLinear)
        flt.SetOutputPixelType(sitk.sitkFloat32)
        return flt.Execute(image)

    def sitk_numpy() -> np.ndarray:
        return sitk.GetArrayFromImage(sitk_filter(sitk.GetImageFromArray(x)))

    out_ours = resample(img, 0.8).array
    out_ref = sitk_numpy()
    agree = float(np.abs(out_ours - out_ref).max())
    del out_ours, out_ref
    t_res = best_of(lambda: resample(img, 0.8), repeat)
    t_sitk_np = best_of(sitk_numpy, repeat)
    t_sitk = best_of(lambda: sitk_filter(src), repeat)
    rows.append(("resample linear 1 -> 0.8 mm", t_res, "SimpleITK numpy in/out", t_sitk_np,
                 "<= 1"))
    rows.append(("resample linear 1 -> 0.8 mm", t_res, "SimpleITK filter alone", t_sitk,
                 "<= 1"))

    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    lines = [
        f"# Image-level benchmark ({n}³ float32, mask {mask.mean():.0%} of voxels)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared); Python "
        f"{platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"SimpleITK {sitk.Version.VersionString()} ({threads} threads). Best of {repeat}. "
        f"One numpy pass (x*2+1): {t_pass * 1e3:.1f} ms.",
        "",
        "| operation | time (ms) | baseline | baseline (ms) | ratio | target |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, t, base, tb, target in rows:
        lines.append(
            f"| {name} | {t * 1e3:.1f} | {base} | {tb * 1e3:.1f} | {t / tb:.2f} | {target} |"
        )
    lines += [
        "",
        f"Resampling agreement with SimpleITK (same grid): max |difference| = {agree:.3g}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
