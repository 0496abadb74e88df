"""Accuracy of the NEMA/EARL analysis and of measure_fwhm on digital phantoms with known truth.

For each scanner FWHM, voxel size and noise level, a digital NEMA IEC phantom
(:func:`imharmony.datasets.make_nema_phantom`, exact partial-volume voxel values) is analysed by
:func:`imharmony.calibration.nema_recovery` from scratch (sphere finding included). Reported:
the fitted FWHM against the truth, and the largest error of RCmax / RCmean / RCpeak against the
noise-free values at the true centres, as the mean over seeds. Then the EARL1 filter chosen for
a 4 mm scanner, and measure_fwhm on point/line/edge sources with noise.

    python benchmarks/bench_phantom.py [--quick] [--seeds N]

Results: ``benchmarks/results/phantom.md``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy.special import ndtr

import imharmony as ih
from imharmony.calibration import earl_filter, nema_recovery
from imharmony.calibration._ball import voxel_ball
from imharmony.datasets import make_nema_phantom
from imharmony.imaging.resolution import fwhm_to_sigma

CASES = [  # (FWHM mm, voxel mm)
    (4.0, 2.0), (4.0, 4.0), (5.0, 3.0), (6.0, 2.0), (6.0, 4.0), (7.0, (3.0, 3.0, 4.0)),
    (8.0, 2.0), (8.0, 4.0),
]
QUICK = [(4.0, 4.0), (8.0, 4.0)]
NOISE = (0.0, 0.05, 0.10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only-fwhm", action="store_true", help="only the measure_fwhm table")
    ap.add_argument("--only-sphere", action="store_true",
                    help="only the per-axis sphere FWHM table on NEMA phantoms")
    args = ap.parse_args()
    if args.only_fwhm:
        measure_fwhm_table(2 if args.quick else 5)
        return
    if args.only_sphere:
        sphere_axes_table(QUICK if args.quick else CASES, 1 if args.quick else args.seeds)
        return
    cases = QUICK if args.quick else CASES
    seeds = 1 if args.quick else args.seeds
    print(f"python {platform.python_version()}, {platform.machine()}")
    print("| FWHM (mm) | voxel (mm) | noise (CV) | fitted FWHM (mm) | FWHM error | "
          "max abs RCmax error | RCmean | RCpeak | background CV | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fwhm, voxel in cases:
        for noise in NOISE:
            rows = []
            for seed in range(seeds if noise > 0 else 1):
                ph = make_nema_phantom(fwhm, voxel, noise=noise, random_state=seed)
                t = time.perf_counter()
                res = nema_recovery(ph.image, background=1.0, spheres=10.0)
                dt = time.perf_counter() - t
                err = (res.table[["rc_max", "rc_mean", "rc_peak"]]
                       - ph.truth[["rc_max", "rc_mean", "rc_peak"]]).abs().max()
                rows.append([res.fwhm_mm, *err.to_numpy(), res.background_cv, dt])
            m = np.mean(rows, axis=0)
            vox = voxel if np.isscalar(voxel) else "x".join(f"{v:g}" for v in voxel)
            print(f"| {fwhm:g} | {vox} | {noise:g} | {m[0]:.3f} | {100 * (m[0] / fwhm - 1):+.2f}% "
                  f"| {m[1]:.4f} | {m[2]:.4f} | {m[3]:.4f} | {m[4]:.3f} | {m[5]:.1f} |")
    print()
    for noise in (0.0, 0.05):
        ph = make_nema_phantom(4.0, 4.0 if args.quick else 2.0, noise=noise, random_state=0)
        result = earl_filter(ph.image, background=1.0, spheres=10.0, standard="EARL1")
        print(f"EARL1, 4 mm scanner, voxel {ph.image.spacing[0]:g} mm, noise {noise:g}: filter "
              f"{result.filter_fwhm_mm:.2f} mm FWHM; compliant before {result.compliant_before}, "
              f"after {result.compliant_after}")
        print(result.after[["diameter_mm", "rc_max", "rc_mean", "compliant"]]
              .round(3).to_string(index=False))
    print()
    measure_fwhm_table(2 if args.quick else 5)
    print()
    sphere_axes_table(cases, seeds)


def sphere_axes_table(cases: list, seeds: int) -> None:
    """Per-axis FWHM from spheres of seeded NEMA phantoms: measure_fwhm(kind="sphere") on the
    37 mm sphere cropped out, and nema_recovery's fwhm_axes_mm (37/28/22 mm spheres, mean)."""
    print("| FWHM (mm) | voxel (mm) | noise (x background) | noise (x contrast) | "
          "measure_fwhm 37 mm: max abs error | mean abs error | nema fwhm_axes: max abs error "
          "| mean abs error | s per phantom |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fwhm, voxel in cases:
        for noise in (0.0, 0.01, 0.02, 0.09, 0.18):
            crop_err, nema_err, secs = [], [], []
            for seed in range(seeds if noise > 0 else 1):
                ph = make_nema_phantom(fwhm, voxel, noise=noise, random_state=seed)
                spacing = np.asarray(ph.image.spacing)
                half = 18.5 + 2.0 * fwhm_to_sigma(fwhm) + 2.0 * spacing
                lo = np.floor((ph.centres[5] - half) / spacing).astype(int)
                hi = np.ceil((ph.centres[5] + half) / spacing).astype(int) + 1
                crop = ih.Image(ph.image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]],
                                tuple(spacing))
                t = time.perf_counter()
                crop_err.append(np.abs(ih.measure_fwhm(crop, "sphere", diameter_mm=37.0)
                                       / fwhm - 1))
                res = nema_recovery(ph.image, background=1.0, spheres=10.0)
                secs.append(time.perf_counter() - t)
                nema_err.append(np.abs(np.asarray(res.fwhm_axes_mm) / fwhm - 1))
            c, n = np.asarray(crop_err), np.asarray(nema_err)
            vox = voxel if np.isscalar(voxel) else "x".join(f"{v:g}" for v in voxel)
            print(f"| {fwhm:g} | {vox} | {noise:g} | {noise / 9:.3g} | {100 * c.max():.2f}% | "
                  f"{100 * c.mean():.2f}% | {100 * n.max():.2f}% | {100 * n.mean():.2f}% | "
                  f"{np.mean(secs):.1f} |", flush=True)


def _vox(kind: str, n: int, d: float, c: float, s: float) -> np.ndarray:
    """Exact voxel means of a unit Gaussian (point) or of its CDF (edge) along one axis."""
    x = np.arange(n) * d
    if kind == "edge":
        def psi(u: np.ndarray) -> np.ndarray:
            return u * ndtr(u) + np.exp(-u * u / 2) / np.sqrt(2 * np.pi)
        return s / d * (psi((x + d / 2 - c) / s) - psi((x - d / 2 - c) / s))
    return (ndtr((x + d / 2 - c) / s) - ndtr((x - d / 2 - c) / s)) / d


def measure_fwhm_table(seeds: int) -> None:
    """measure_fwhm on exact digital sources with white noise (relative to the peak contrast)."""
    spacing, shape, centre = (2.0, 2.0, 3.0), (40, 40, 30), (39.3, 41.1, 44.7)
    truth = np.array([5.0, 6.0, 8.0])
    s = fwhm_to_sigma(truth)
    print("| kind | noise (SD / peak contrast) | truth (mm) | mean measured (mm) | "
          "max abs error over seeds |")
    print("|---|---|---|---|---|")
    for kind in ("point", "line", "edge", "sphere"):
        for noise in (0.0, 0.005, 0.02):
            if kind == "sphere":
                axes = [np.arange(n) * d for n, d in zip(shape, spacing, strict=True)]
                grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
                clean = voxel_ball(grid - np.array(centre), spacing, 10.0,
                                   float(fwhm_to_sigma(6.0))).reshape(shape)
                expect = np.full(3, 6.0)
            else:
                p = [_vox("edge" if kind == "edge" else "point", shape[a], spacing[a], centre[a],
                          s[a]) for a in range(3)]
                if kind == "line":
                    p[2] = np.ones(shape[2])
                if kind == "edge":
                    p = [np.ones(shape[0]), p[1], np.ones(shape[2])]
                clean = np.einsum("i,j,k->ijk", *p)
                expect = truth.copy()
                if kind == "line":
                    expect[2] = np.nan
                if kind == "edge":
                    expect[[0, 2]] = np.nan
            clean = clean / clean.max()
            got = []
            for seed in range(seeds if noise > 0 else 1):
                rng = np.random.default_rng(seed)
                img = ih.Image(1.0 + clean + rng.normal(0, noise, shape), spacing)
                got.append(ih.measure_fwhm(img, kind))
            got = np.asarray(got)
            err = np.nanmax(np.abs(got / expect - 1))
            fmt = lambda v: "/".join("-" if np.isnan(x) else f"{x:.3f}" for x in v)  # noqa: E731
            print(f"| {kind} | {noise:g} | {fmt(expect)} | {fmt(got.mean(axis=0))} | "
                  f"{100 * err:.2f}% |")


if __name__ == "__main__":
    main()
