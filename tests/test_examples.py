"""The example scripts under examples/ run as documented (on small generated inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_irmad_pair_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scene = 120 + 40 * rng.normal(size=(64, 64, 3)).cumsum(axis=0).cumsum(axis=1) / 64
    ref = np.clip(scene + rng.normal(size=scene.shape), 1, 255).astype(np.uint8)
    later = 0.9 * scene + 12 + rng.normal(size=scene.shape)
    later[4:16, 4:16] += 50
    iio.imwrite(tmp_path / "a.png", ref)
    iio.imwrite(tmp_path / "b.png", np.clip(later, 1, 255).astype(np.uint8))
    res = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "irmad_pair.py"),
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "converged: True" in res.stdout and "green/red" in res.stdout
    mad = tifffile.imread(tmp_path / "out" / "mad.tif")
    assert mad.shape == (64, 64, 5)
    no_change = iio.imread(tmp_path / "out" / "no_change.png")
    assert set(np.unique(no_change)) <= {0, 255} and not no_change[4:16, 4:16].any()
