"""A small generated NIfTI stack for the voxel-wise tests: sites with additive and multiplicative
effects on a shared anatomy, an age effect, a mask, and a manifest with relative paths."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SHAPE = (6, 7, 5)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def make_stack(root: Path, n: int = 18, sites: str = "abc", seed: int = 0,
               subdir: str = "images") -> dict:
    """Write ``n`` images, ``mask.nii.gz`` and ``manifest.csv`` under ``root``."""
    rng = np.random.default_rng(seed)
    (root / subdir).mkdir(parents=True, exist_ok=True)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:5, 1:6, 1:4] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "mask.nii.gz")
    anatomy = np.random.default_rng(99).normal(100.0, 10.0, SHAPE)
    rows = []
    for i in range(n):
        site = sites[i % len(sites)]
        age = float(rng.uniform(20, 80))
        k = sites.index(site)
        img = (anatomy + rng.normal(0, 3, SHAPE) + 0.2 * age + 6.0 * k) * (1.0 + 0.2 * k)
        name = f"{subdir}/s{seed}_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFFINE), root / name)
        rows.append({"image": name, "site": site, "age": age})
    table = pd.DataFrame(rows)
    table.to_csv(root / "manifest.csv", index=False)
    return {"manifest": root / "manifest.csv", "mask": root / "mask.nii.gz", "table": table,
            "root": root}


def stacked(root: Path, table: pd.DataFrame, mask_path: Path) -> np.ndarray:
    """The masked voxels of the manifest's images, images x voxels (float64 of float32 data)."""
    mask = np.asanyarray(nib.load(mask_path).dataobj) != 0
    return np.stack([
        nib.load(root / p).get_fdata(dtype=np.float32)[mask].astype(np.float64)
        for p in table["image"]
    ])
