"""Run M. J. Canty's own IR-MAD (``iMad.py``) and normalization (``radcal.py``) on two rasters.

Reference-output generator, not part of imharmony: run it with a Python that has the author's
requirements (numpy < 2 for ``np.mat``, scipy, GDAL's Python bindings, matplotlib), e.g. Debian
12's ``/usr/bin/python3`` with ``python3-gdal python3-numpy python3-scipy python3-matplotlib``.

    python3 run_author.py AUTHOR_DIR REFERENCE TARGET OUT.npz [--seed 0]

AUTHOR_DIR holds the author's files, unchanged, from github.com/mortcanty/CRC5Docker (MIT
licence): ``iMad.py`` and ``radcal.py`` (src/scripts/), ``auxil/auxil1.py`` (src/auxil/) and
``libprov_means.so`` compiled from src/prov_means.c (``gcc -shared -O2 -fPIC``). REFERENCE and
TARGET are any rasters GDAL reads with the same size and bands (the reference is the author's
first scene). They are copied to GeoTIFF (the author's scripts write their output with the
input's driver), ``iMad.py -n`` runs with its defaults, then ``radcal.py -n`` with numpy's legacy
global seed set to ``--seed`` (radcal draws a random 2/3 of the no-change pixels to fit on).

OUT.npz holds: ``reference``, ``target`` (the input arrays, H x W x B), ``mad`` (H x W x B) and
``chi2`` (H x W) as the author's MAD file stores them (float32), ``rho`` (as printed), ``gains``,
``offsets`` (radcal: reference = offset + gain * target), ``train`` (flat indices of the pixels
radcal fitted on) and ``no_change`` (flat indices with P > 0.95), plus the author's commit in
``source``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from osgeo import gdal
from scipy import stats


def to_geotiff(src: str, dst: str) -> np.ndarray:
    ds = gdal.Open(src)
    arr = np.stack([ds.GetRasterBand(k + 1).ReadAsArray() for k in range(ds.RasterCount)], -1)
    out = gdal.GetDriverByName("GTiff").Create(
        dst, ds.RasterXSize, ds.RasterYSize, ds.RasterCount, gdal.GDT_Float32
    )
    for k in range(ds.RasterCount):
        out.GetRasterBand(k + 1).WriteArray(arr[..., k].astype(np.float32))
    out.FlushCache()
    return arr


def main() -> None:
    author, reference, target, out = sys.argv[1:5]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    author = os.path.abspath(author)
    env = dict(os.environ, PYTHONPATH=author, LD_LIBRARY_PATH=author, MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory() as tmp:
        ref = to_geotiff(reference, os.path.join(tmp, "reference.tif"))
        tgt = to_geotiff(target, os.path.join(tmp, "target.tif"))
        imad = subprocess.run(
            [
                sys.executable,
                os.path.join(author, "iMad.py"),
                "-n",
                os.path.join(tmp, "reference.tif"),
                os.path.join(tmp, "target.tif"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rho_text = re.search(r"rho: \[+([^\]]*)\]", imad, flags=re.S).group(1)
        rho = np.array([float(v) for v in rho_text.split()])
        madfn = os.path.join(tmp, "MAD(reference-target).tif")
        ds = gdal.Open(madfn)
        mad_all = np.stack(
            [ds.GetRasterBand(k + 1).ReadAsArray() for k in range(ds.RasterCount)], -1
        )
        radcal_code = (
            f"import sys, runpy, numpy; numpy.random.seed({seed}); sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        radcal = subprocess.run(
            [sys.executable, "-c", radcal_code, os.path.join(author, "radcal.py"), "-n", madfn],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = re.findall(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", radcal, re.M)
        gains = np.array([float(r[1]) for r in rows])
        offsets = np.array([float(r[2]) for r in rows])
        # the pixel split radcal drew: same rule, same legacy global seed
        bands = mad_all.shape[-1] - 1
        ncp = 1 - stats.chi2.cdf(mad_all[..., -1].ravel(), [bands])
        idx = np.where(ncp > 0.95)[0]
        np.random.seed(seed)  # noqa: NPY002 - radcal's own legacy global generator
        perm = idx[np.random.permutation(len(idx))]  # noqa: NPY002
        train = perm[: 2 * len(idx) // 3]
        source = (
            subprocess.run(
                ["git", "-C", author, "log", "-1", "--format=%H"], capture_output=True, text=True
            ).stdout.strip()
            or "see README"
        )
        np.savez_compressed(
            out,
            reference=ref,
            target=tgt,
            mad=mad_all[..., :bands],
            chi2=mad_all[..., bands],
            rho=rho,
            gains=gains,
            offsets=offsets,
            train=np.sort(train),
            no_change=idx,
            source=np.array(source),
            imad_stdout=np.array(imad),
            radcal_stdout=np.array(radcal),
        )
        if "--keep" in sys.argv:
            shutil.copy(madfn, out + ".MAD.tif")
    print(f"rho {rho}; gains {gains}; offsets {offsets}; {len(idx)} no-change pixels")  # noqa: T201


if __name__ == "__main__":
    main()
