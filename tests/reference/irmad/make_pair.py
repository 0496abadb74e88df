"""Write the generated bitemporal 3-band pair that the author's IR-MAD is run on.

    python make_pair.py OUT_DIR        -> OUT_DIR/reference.png, OUT_DIR/target.png

Deterministic (numpy's PCG64 with a fixed seed). 8-bit digital numbers like a real scene: four
land-cover classes with texture; the target has per-band sensor gains and offsets, noise, a
field that changed (vegetation cleared to soil) and a strip of fill pixels (all bands 0) along one
edge, which the author treats as no-data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

SPECTRA = np.array(  # green, red, NIR digital numbers
    [[40.0, 30.0, 20.0], [90.0, 110.0, 120.0], [60.0, 40.0, 170.0], [120.0, 125.0, 130.0]]
)
GAINS = np.array([0.9, 1.1, 1.05])
OFFSETS = np.array([10.0, -5.0, 3.0])


def make_pair(size: int = 120, seed: int = 15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 5)
    cover = np.digitize((field - field.mean()) / field.std(), [-0.8, 0.0, 0.7])
    texture = 1 + 0.3 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.2)
    t1 = SPECTRA[cover] * texture[..., None]
    t2 = t1.copy()
    changed = np.zeros((size, size), dtype=bool)
    changed[10:50, 60:110] = True
    changed &= cover == 2
    t2[changed] = SPECTRA[1] * texture[changed][:, None]
    ref = t1 + 3.0 * rng.normal(size=t1.shape)
    tgt = GAINS * t2 + OFFSETS + 3.0 * rng.normal(size=t2.shape)
    ref = np.clip(np.rint(ref), 1, 255).astype(np.uint8)
    tgt = np.clip(np.rint(tgt), 1, 255).astype(np.uint8)
    tgt[:, -4:] = 0  # fill pixels outside the swath
    return ref, tgt


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ref, tgt = make_pair()
    iio.imwrite(out / "reference.png", ref)
    iio.imwrite(out / "target.png", tgt)


if __name__ == "__main__":
    main()
