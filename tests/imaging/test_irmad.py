"""IR-MAD's outputs: MAD variates, χ², no-change map, stopping rule, rasters (hand-checkable).

Agreement with the author's own implementation is in tests/reference/test_irmad_author.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from imharmony import Image
from imharmony.errors import ConvergenceWarning, DataError
from imharmony.imaging.irmad import DEFAULT_MAX_ITER, DEFAULT_TOL, irmad, irmad_normalize
from imharmony.io.rasters import read_raster, write_raster


def pair(seed: int, size: int = 60, bands: int = 3, change: bool = True) -> tuple[Image, Image]:
    """(target, reference): correlated textured bands, a gain/offset per band, a changed block."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=(size, size, bands)), (2, 2, 0)) * 100 + 300
    mix = np.eye(bands) + 0.3 * rng.random((bands, bands))
    ref = base @ mix + rng.normal(size=base.shape)
    tgt = 1.2 * ref + 4.0 + rng.normal(size=base.shape)
    if change:
        tgt[:12, :12] += rng.normal(0, 40, size=(12, 12, bands))
    return Image(tgt), Image(ref)


def test_defaults_are_the_authors_rule() -> None:
    assert (DEFAULT_TOL, DEFAULT_MAX_ITER) == (1e-3, 50)
    tgt, ref = pair(0)
    result = irmad(tgt, ref)
    changes = np.abs(np.diff(np.vstack([np.zeros(3), result.rho_history]), axis=0)).max(axis=1)
    # stops at the first iteration whose largest change is <= 1e-3, not before
    assert changes[-1] <= 1e-3 and np.all(changes[:-1] > 1e-3)
    assert result.converged and result.last_change == changes[-1]
    stricter = irmad(tgt, ref, tol=1e-6, max_iter=200)
    assert stricter.n_iter > result.n_iter and stricter.last_change <= 1e-6


def test_mad_chi2_and_probability_are_consistent() -> None:
    tgt, ref = pair(1)
    r = irmad(tgt, ref)
    np.testing.assert_allclose(r.mad_sd, np.sqrt(2 * (1 - r.canonical_correlations)))
    np.testing.assert_allclose(r.chi2, ((r.mad / r.mad_sd) ** 2).sum(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(
        r.no_change_probability, stats.chi2.sf(r.chi2, 3), rtol=1e-10, atol=1e-300
    )
    assert r.no_change(0.95).sum() == np.count_nonzero(r.no_change_probability > 0.95)
    # the changed block is found
    assert (
        np.median(r.no_change_probability[:12, :12])
        < 1e-3
        < np.median(r.no_change_probability[20:, 20:])
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bands=st.integers(1, 4))
def test_one_iteration_is_the_plain_cca(seed: int, bands: int) -> None:
    """With unit weights, the MAD variates are uncorrelated with variance 2(1 − ρ) (divided by
    n − 1, the author's Σw − 1), ρ decreasing, and each is reference part minus image part."""
    tgt, ref = pair(seed, size=24, bands=bands, change=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = irmad(tgt, ref, max_iter=1)
    m = r.mad.reshape(-1, bands)
    np.testing.assert_allclose(m.mean(axis=0), 0, atol=1e-9 * (1 + np.abs(m).max()))
    np.testing.assert_allclose(
        np.atleast_2d(np.cov(m.T)), np.diag(2 * (1 - r.canonical_correlations)), atol=1e-9
    )
    assert np.all(np.diff(r.canonical_correlations) <= 1e-12)
    # M = U − V with U = a'(ref − mean): regressing M on the two images' bands gives +a, −b,
    # and the author's sign rule makes Σ_j corr(ref_j, U_i) > 0
    x = ref.array.reshape(-1, bands) - ref.array.reshape(-1, bands).mean(axis=0)
    y = tgt.array.reshape(-1, bands) - tgt.array.reshape(-1, bands).mean(axis=0)
    coef, *_ = np.linalg.lstsq(np.hstack([x, y]), m, rcond=None)
    u = x @ coef[:bands]
    corr = np.corrcoef(np.hstack([x, u]).T)[:bands, bands:]
    assert np.all(corr.sum(axis=0) > 0)
    v = -(y @ coef[bands:])
    assert np.all(np.einsum("ij,ij->j", u - u.mean(0), v - v.mean(0)) > 0)


def test_all_zero_pixels_are_nodata_like_the_author() -> None:
    tgt, ref = pair(2)
    arr = tgt.array.copy()
    arr[:, -3:] = 0.0
    r = irmad(Image(arr), ref)
    assert np.isnan(r.chi2[:, -3:]).all() and np.isnan(r.mad[:, -3:]).all()
    assert not r.no_change()[:, -3:].any()
    kept = irmad(Image(arr), ref, zero_nodata=False)
    assert np.isfinite(kept.chi2).all()


def test_normalize_returns_the_result_and_its_invariant_mask() -> None:
    tgt, ref = pair(3)
    out, r = irmad_normalize(tgt, ref, return_irmad=True)
    step = out.meta["history"][-1]
    assert step["n_no_change"] == int(r.no_change(step["threshold"]).sum())
    assert step["converged"] is True and step["tol"] == 1e-3
    np.testing.assert_allclose(step["gains"], 1 / 1.2, rtol=0.02)
    with pytest.raises(DataError, match="probability in"):
        r.no_change(1.0)


def test_to_image_writes_the_authors_layout(tmp_path) -> None:
    tgt, ref = pair(4, bands=3)
    r = irmad(tgt, ref)
    img = r.to_image(tgt, probability=True)
    assert img.array.shape == (60, 60, 5) and img.array.dtype == np.float32
    assert img.meta["band_descriptions"] == [
        "MAD1",
        "MAD2",
        "MAD3",
        "chi2",
        "no_change_probability",
    ]
    path = write_raster(img, tmp_path / "mad.tif")
    back = read_raster(path)
    np.testing.assert_array_equal(back.array, img.array)
    with pytest.raises(DataError, match="spatial shape"):
        r.to_image(Image(np.zeros((5, 5, 3))))
