"""Agreement with the author's own IR-MAD (M. J. Canty's ``iMad.py`` and ``radcal.py``).

The fixture (tests/reference/irmad/fixtures/author_synthetic.npz) holds a generated 3-band
120 x 120 pair and what the author's scripts computed on it, unchanged, with their defaults
(tests/reference/irmad/README.md says how it was made). The tests run without the author's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imharmony import Image
from imharmony.imaging.irmad import _orthogonal_regression, irmad, irmad_normalize

pytestmark = pytest.mark.reference

FIXTURE = Path(__file__).parent / "irmad" / "fixtures" / "author_synthetic.npz"


@pytest.fixture(scope="module")
def author() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {key: f[key] for key in f.files}


@pytest.fixture(scope="module")
def ours(author: dict[str, np.ndarray]):
    # the reference is the author's first scene; imharmony's irmad takes (image, reference)
    return irmad(Image(author["target"]), Image(author["reference"]))


def test_canonical_correlations_match(author, ours) -> None:
    assert ours.converged
    np.testing.assert_allclose(ours.canonical_correlations, author["rho"], atol=5e-6)


def test_mad_variates_match_with_the_authors_signs_and_order(author, ours) -> None:
    valid = np.isfinite(ours.chi2)
    assert (~valid).sum() == 120 * 4  # the target's fill strip (all bands 0)
    # float32 file, and the author's float32 eigen-solver
    np.testing.assert_allclose(ours.mad[valid], author["mad"][valid], atol=1e-4)
    np.testing.assert_allclose(ours.chi2[valid], author["chi2"][valid], rtol=2e-4, atol=1e-3)


def test_no_change_set_is_the_authors(author, ours) -> None:
    mine = np.flatnonzero(ours.no_change(0.95).ravel())
    theirs = author["no_change"]
    fill = np.flatnonzero((author["target"] == 0).all(axis=-1).ravel())
    # identical on the valid pixels; the author's radcal also scores the fill pixels
    np.testing.assert_array_equal(mine, np.setdiff1d(theirs, fill))
    assert len(mine) >= 50


def test_gains_match(author, ours) -> None:
    x = author["target"].reshape(-1, 3).astype(float)
    y = author["reference"].reshape(-1, 3).astype(float)
    train = author["train"]
    same_pixels = np.array([_orthogonal_regression(x[train, b], y[train, b]) for b in range(3)])
    # radcal prints 6 decimals
    np.testing.assert_allclose(same_pixels[:, 0], author["gains"], atol=6e-7)
    np.testing.assert_allclose(same_pixels[:, 1], author["offsets"], atol=6e-6)
    # imharmony fits on every invariant pixel (radcal on a random 2/3 of them)
    out = irmad_normalize(Image(author["target"]), Image(author["reference"]))
    np.testing.assert_allclose(out.meta["history"][-1]["gains"], author["gains"], rtol=0.01)
