"""Voxel-wise ComBat out of core: memory and time of ``imharmony voxelwise fit`` (issue 14).

Data: a generated stack of N subjects (default 240) on a 160 x 192 x 160 grid of 1.2 mm voxels
with an ellipsoid mask of ~1.9 M voxels (the masked data are N x 1.9 M float32 = 1.8 GB), 4
sites with additive and multiplicative effects that vary smoothly over the brain, and an age
effect to preserve. Images are uncompressed NIfTI (``.nii``, float32), written once into the
work folder and reused by later runs with the same size.

Measured, one run each:

floor
    Wall time of reading every image once with nibabel (``get_fdata(dtype=float32)`` and the
    mask applied), in a fresh process after the images were written (the page cache holds
    what the machine's memory allows, as for the measured run).
voxelwise
    ``imharmony voxelwise fit`` in a fresh process (local cluster: one worker with a thread per
    core, inside that process): wall time, and the peak over time of the summed resident set
    (RSS) of the process and all its children, sampled every 0.2 s with psutil.
in memory
    ``ComBat().fit_transform`` on the in-memory float64 matrix, and neuroCombat 0.2.12 on its
    features x samples copy, in fresh processes, on the first V voxels of the same stack with V
    the largest size whose input fits the in-memory budget (``--memory-budget``, default
    1 GiB for the float64 input, imharmony; a fifth of those voxels for neuroCombat, which
    holds about 5x its input: the machine is shared); time and peak RSS, and
    time per voxel as a ratio to the voxel-wise run.

Targets (issue 14): summed RSS <= 1 GiB while the masked data are 1.8 GB; wall time <= 3x the
floor.

Usage::

    python benchmarks/bench_voxelwise.py                 # full size, writes results/voxelwise.md
    python benchmarks/bench_voxelwise.py --subjects 24 --quick   # small smoke run, no file
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRID = (160, 192, 160)
SPACING = 1.2
SITES = 4


def _mask(grid: tuple[int, int, int]) -> np.ndarray:
    c = [(s - 1) / 2 for s in grid]
    r = [s * 0.47 for s in grid]
    zz, yy, xx = np.ogrid[: grid[0], : grid[1], : grid[2]]
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1


def generate(folder: Path, n: int, grid: tuple[int, int, int], seed: int = 14) -> Path:
    """Write the stack (reused when complete); return the manifest."""
    import nibabel as nib
    import pandas as pd

    manifest = folder / "manifest.csv"
    if manifest.is_file() and len(pd.read_csv(manifest)) == n:
        return manifest
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    mask = _mask(grid)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "mask.nii")
    z = np.linspace(-1, 1, grid[0])[:, None, None]
    y = np.linspace(-1, 1, grid[1])[None, :, None]
    x = np.linspace(-1, 1, grid[2])[None, None, :]
    anatomy = (0.5 + 0.2 * np.cos(3 * x) * np.sin(2 * y) + 0.1 * z).astype(np.float32)
    rows = []
    for i in range(n):
        site = i % SITES
        age = float(rng.uniform(20, 85))
        add = np.float32(0.05 * site) * (1 + x * (site - 1.5) / 2).astype(np.float32)
        mult = np.float32(1 + 0.08 * (site - 1.5))
        noise = rng.standard_normal(grid, dtype=np.float32) * np.float32(0.03)
        img = (anatomy - np.float32(0.002 * (age - 50)) + noise) * mult + add
        img[~mask] = 0
        name = f"sub-{i:04d}.nii"
        nib.save(nib.Nifti1Image(img.astype(np.float32), affine), folder / name)
        rows.append({"image": name, "site": f"site{site}", "age": round(age, 2)})
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


# ---------------------------------------------------------------------------------------------
# measuring


def _tree_rss(proc) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except Exception:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except Exception:
            pass
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; wall time and the peak of the summed RSS of its process tree."""
    import psutil

    t0 = time.perf_counter()
    popen = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    proc = psutil.Process(popen.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = popen.communicate()
    done.set()
    thread.join()
    wall = time.perf_counter() - t0
    if popen.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({popen.returncode}):\n{err[-3000:]}")
    return {"seconds": wall, "peak_rss": peak, "stdout": out, "stderr": err}


_READ_ONCE = """
import sys, time, numpy as np, nibabel as nib, pandas as pd
from pathlib import Path
folder = Path(sys.argv[1]); t = pd.read_csv(folder / "manifest.csv")
mask = np.asanyarray(nib.load(folder / "mask.nii").dataobj) != 0
t0 = time.perf_counter(); total = 0.0
for name in t["image"]:
    total += float(nib.load(folder / name).get_fdata(dtype=np.float32)[mask][0])
print(time.perf_counter() - t0)
"""

_IN_MEMORY = """
import sys, time, json, warnings, numpy as np, nibabel as nib, pandas as pd
from pathlib import Path
folder, V, which = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t = pd.read_csv(folder / "manifest.csv")
mask = np.asanyarray(nib.load(folder / "mask.nii").dataobj) != 0
X = np.stack([nib.load(folder / n).get_fdata(dtype=np.float32)[mask][:V] for n in t["image"]])
X = X.astype(np.float64)
import imharmony as ih
from imharmony.diagnostics import confounding  # noqa: F401  (imported before the timer)
from neuroCombat import neuroCombat
if which != "imharmony":
    dat = np.ascontiguousarray(X.T)
    del X
t0 = time.perf_counter()
if which == "imharmony":
    out = ih.ComBat().fit_transform(X, batch=t["site"], covariates=t[["age"]])
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = neuroCombat(dat, t[["site", "age"]], "site", continuous_cols=["age"])["data"]
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=240)
    ap.add_argument("--grid", type=int, nargs=3, default=list(GRID))
    ap.add_argument("--work", type=Path, default=Path("/tmp/imharmony-bench-voxelwise"))
    ap.add_argument("--memory-budget", type=float, default=1.0,
                    help="GiB of float64 input for the in-memory runs")
    ap.add_argument("--quick", action="store_true", help="no results file")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--note", default="", help="a line added to the results")
    ap.add_argument("--shared", default="shared with other jobs during the run (times are "
                    "upper bounds)", help="what else ran on the machine, for the results")
    args = ap.parse_args()
    args.load_before = os.getloadavg()
    grid = tuple(args.grid)
    folder = args.work / f"stack-{args.subjects}-{'x'.join(map(str, grid))}"
    t0 = time.perf_counter()
    manifest = generate(folder, args.subjects, grid)
    gen = time.perf_counter() - t0
    n_vox = int(_mask(grid).sum())
    data_bytes = args.subjects * n_vox * 4
    print(f"stack: {args.subjects} x {n_vox:,} masked voxels ({data_bytes / 1e9:.2f} GB float32),"
          f" generated/reused in {gen:.0f} s", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))
    py = sys.executable
    floor = float(subprocess.run([py, "-c", _READ_ONCE, str(folder)], capture_output=True,
                                 text=True, check=True, env=env).stdout)
    print(f"floor (nibabel, read every image once): {floor:.1f} s", flush=True)
    out_dir, model = args.work / "out", args.work / "model"
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)
    cmd = [py, "-m", "imharmony.cli", "voxelwise", "fit", str(manifest), "--mask",
           str(folder / "mask.nii"), "--batch", "site", "--covariate", "age", "--model",
           str(model), "--output-dir", str(out_dir), "--json"]
    run = measure(cmd, env)
    info = json.loads(run["stdout"])
    # the command logs how long each step of its own process took ("step <name>: <seconds> s")
    run["steps"] = re.findall(r"step ([A-Za-z][A-Za-z ,-]+): ([0-9.]+) s", run["stderr"])
    print(f"voxelwise fit: {run['seconds']:.1f} s ({run['seconds'] / floor:.2f}x floor), peak "
          f"summed RSS {run['peak_rss'] / 2**30:.3f} GiB", flush=True)
    # check a few voxels of one output against the in-memory ComBat on those voxels
    check = _check(folder, out_dir, env)
    print(f"check against in-memory ComBat on 2,000 voxels: max rel. diff {check:.1e}",
          flush=True)
    peers: dict[str, dict] = {}
    V_mem = min(n_vox, int(args.memory_budget * 2**30 / (8 * args.subjects)))
    if not args.skip_peers:
        for which in ("imharmony", "neuroCombat"):
            V = V_mem if which == "imharmony" else max(1000, V_mem // 5)
            try:
                r = measure([py, "-c", _IN_MEMORY, str(folder), str(V), which], env)
                r["seconds_call"] = json.loads(r["stdout"].strip().splitlines()[-1])["seconds"]
                r["voxels"] = V
            except RuntimeError as exc:
                r = {"error": str(exc)[-300:], "voxels": V}
            peers[which] = r
            print(which, {k: v for k, v in r.items() if k != "stdout"}, flush=True)
    if not args.quick:
        _write(args, grid, n_vox, data_bytes, gen, floor, run, info, check, peers)
    shutil.rmtree(out_dir, ignore_errors=True)
    ok = run["peak_rss"] <= 2**30 and run["seconds"] <= 3 * floor
    return 0 if ok or args.quick else 1


_CHECK = """
import sys, numpy as np, nibabel as nib, pandas as pd, imharmony as ih
from pathlib import Path
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
t = pd.read_csv(folder / "manifest.csv")
mask = np.asanyarray(nib.load(folder / "mask.nii").dataobj) != 0
idx = np.linspace(0, mask.sum() - 1, 2000).astype(int)
X = np.stack([nib.load(folder / n).get_fdata(dtype=np.float32)[mask][idx] for n in t["image"]])
Y = np.stack([nib.load(out / n).get_fdata(dtype=np.float32)[mask][idx] for n in t["image"]])
ref = ih.ComBat().fit_transform(X.astype(np.float64), batch=t["site"], covariates=t[["age"]])
print(float(np.max(np.abs(Y - ref) / np.abs(ref))))
"""


def _check(folder: Path, out_dir: Path, env: dict[str, str]) -> float:
    """Relative difference on 2,000 voxels; EB priors pool over all voxels, so the reference
    uses its own priors and this is a sanity check (not parity; tests/scale hold parity)."""
    res = subprocess.run([sys.executable, "-c", _CHECK, str(folder), str(out_dir)],
                         capture_output=True, text=True, check=True, env=env)
    return float(res.stdout)


def _write(args, grid, n_vox, data_bytes, gen, floor, run, info, check, peers) -> None:
    import dask
    import zarr

    lines = [
        "# Voxel-wise ComBat out of core (issue 14)",
        "",
        "Generated by `python benchmarks/bench_voxelwise.py` (one run each; see its docstring).",
        "",
        f"- **date**: {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- **machine**: {os.cpu_count()} cores, {args.shared} (load average before the run: "
        f"{', '.join(f'{x:.1f}' for x in args.load_before)}; at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})",
        f"- **python** {platform.python_version()}, dask {dask.__version__}, zarr "
        f"{zarr.__version__}",
        f"- **stack**: {args.subjects} subjects x {n_vox:,} masked voxels "
        f"({data_bytes / 1e9:.2f} GB float32) on a {'x'.join(map(str, grid))} grid, "
        f"{SITES} sites, age effect; uncompressed NIfTI",
    ]
    if args.note:
        lines.append(f"- **note**: {args.note}")
    ratio = run["seconds"] / floor
    lines += [
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| peak summed RSS, `voxelwise fit` (all processes) | {run['peak_rss'] / 2**30:.3f} GiB "
        f"| <= 1 GiB: {'met' if run['peak_rss'] <= 2**30 else 'MISSED'} |",
        f"| wall time, `voxelwise fit` (read, fit, write every image) | {run['seconds']:.1f} s | |",
        f"| floor: read every image once with nibabel | {floor:.1f} s | |",
        f"| time / floor | {ratio:.2f}x | <= 3x: {'met' if ratio <= 3 else 'MISSED'} |",
        f"| EB iterations per site | {info['n_iter']} | |",
        f"| sanity check vs in-memory ComBat on 2,000 voxels (own priors) | {check:.1e} | |",
    ]
    if run.get("steps"):
        lines += ["", "Steps of `voxelwise fit` as it logs them (wall time of each; the rest of "
                  "the wall time is starting Python, checking the manifest and the images' "
                  "headers and starting the local cluster):", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {float(sec):.1f} |" for name, sec in run["steps"]]
    if peers:
        lines += ["", "In-memory runs on the first V voxels of the same stack (fresh process each; "
                  "time of the call; RSS includes the loaded input):", "",
                  "| library | voxels | time | time per voxel vs voxelwise fit | peak RSS |",
                  "|---|---|---|---|---|"]
        per_vox = run["seconds"] / n_vox
        for which, r in peers.items():
            if "error" in r:
                lines.append(f"| {which} | {r['voxels']:,} | failed: {r['error']} | | |")
                continue
            rel = (r["seconds_call"] / r["voxels"]) / per_vox
            lines.append(f"| {which} | {r['voxels']:,} | {r['seconds_call']:.1f} s | {rel:.2f}x "
                         f"| {r['peak_rss'] / 2**30:.2f} GiB |")
    out = ROOT / "benchmarks" / "results" / "voxelwise.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
