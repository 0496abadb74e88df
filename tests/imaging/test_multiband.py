"""Multi-band rasters: I/O, per-band normalization, IR-MAD and band-ratio distortion.

The synthetic scene: four bands (blue, green, red, NIR) of four land-cover classes with texture.
The later acquisition has known per-band sensor gains and offsets, a region where vegetation
was cleared to bare soil (a real NDVI drop) and a cloud.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage, stats

from imharmony import Image
from imharmony.errors import ConvergenceWarning, DataError
from imharmony.imaging.histogram import ReferenceDistribution, match_histogram
from imharmony.imaging.irmad import _no_change_probability
from imharmony.imaging.multiband import (
    OptionalDependencyError,
    band_distortion,
    irmad,
    irmad_normalize,
    linear_bands,
    match_bands,
    read_raster,
    write_raster,
)

SPECTRA = np.array(
    [  # blue, green, red, nir
        [0.06, 0.05, 0.03, 0.02],  # water
        [0.10, 0.14, 0.20, 0.28],  # bare soil
        [0.04, 0.08, 0.04, 0.45],  # vegetation
        [0.15, 0.17, 0.19, 0.22],  # urban
    ]
)
GAINS = np.array([1.10, 0.95, 1.20, 0.85])
OFFSETS = np.array([0.02, -0.01, 0.03, 0.05])


@dataclass
class Scene:
    reference: Image  # first date
    later: Image  # second date, through another sensor response
    truth1: np.ndarray  # surface reflectance, first date
    truth2: np.ndarray  # surface reflectance, second date
    changed: np.ndarray
    cloud: np.ndarray  # where the cloud's opacity is above zero
    opacity: np.ndarray


def ndvi(arr: np.ndarray) -> np.ndarray:
    return (arr[..., 3] - arr[..., 2]) / (arr[..., 3] + arr[..., 2])


def make_scene(seed: int = 0, size: int = 160, noise: float = 2e-4) -> Scene:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6)
    cover = np.digitize((field - field.mean()) / field.std(), [-0.8, 0.0, 0.7])
    texture = 1 + 0.75 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
    t1 = SPECTRA[cover] * texture[..., None] * (1 + 0.05 * rng.normal(size=(size, size, 1)))
    t2 = t1.copy()
    changed = np.zeros((size, size), dtype=bool)
    changed[15:75, 90:155] = True
    changed &= cover == 2
    t2[changed] = SPECTRA[1] * texture[changed][:, None]  # vegetation cleared to soil
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - 120) ** 2 / 300 + (xx - 40) ** 2 / 700
    cloud = r2 < 1
    opacity = 0.9 * np.clip(1 - r2, 0, 1)[..., None]
    t2 = t2 * (1 - opacity) + 0.6 * opacity
    ref = (t1 + noise * rng.normal(size=t1.shape)).astype(np.float32)
    later = (GAINS * t2 + OFFSETS + noise * rng.normal(size=t2.shape)).astype(np.float32)
    return Scene(
        Image(ref, spacing=(30.0, 30.0)),
        Image(later, spacing=(30.0, 30.0)),
        t1,
        t2,
        changed,
        cloud,
        opacity[..., 0],
    )


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene()


@pytest.fixture(scope="module")
def normalized(scene: Scene) -> Image:
    return irmad_normalize(scene.later, scene.reference)


# ---------------------------------------------------------------- IR-MAD


def test_irmad_recovers_gains_to_three_decimals(scene: Scene, normalized: Image) -> None:
    step = normalized.meta["history"][-1]
    assert step["step"] == "irmad_normalize"
    # later = g·t + o  ->  reference ≈ (later − o) / g: gain 1/g, offset −o/g
    np.testing.assert_allclose(step["gains"], 1 / GAINS, atol=1e-3)
    np.testing.assert_allclose(step["offsets"], -OFFSETS / GAINS, atol=2e-4)
    assert step["n_no_change"] >= 50
    unchanged = ~scene.changed & ~scene.cloud
    err = np.abs(normalized.array - scene.truth1)[unchanged]
    assert np.percentile(err, 99) < 5e-3  # noise level (two images at 2e-4) plus fit error


def test_irmad_no_change_pixels_avoid_change_and_clouds(scene: Scene) -> None:
    result = irmad(scene.later, scene.reference)
    assert result.converged and 1 < result.n_iter < 50
    assert np.all(np.diff(result.canonical_correlations) <= 0)  # the author's order
    assert result.rho_history.shape == (result.n_iter, 4)
    np.testing.assert_array_equal(result.rho_history[-1], result.canonical_correlations)
    p = result.no_change_probability
    assert p[scene.changed].max() < 1e-6
    assert p[scene.opacity > 0.02].max() < 1e-3  # the cloud's faint rim is nearly clear
    assert np.median(p[~scene.changed & ~scene.cloud]) > 100 * np.median(p[scene.changed])


def test_irmad_subsample_is_reproducible(scene: Scene, normalized: Image) -> None:
    a = irmad_normalize(scene.later, scene.reference, sample_size=8000, random_state=3)
    b = irmad_normalize(scene.later, scene.reference, sample_size=8000, random_state=3)
    assert a.meta["history"][-1]["gains"] == b.meta["history"][-1]["gains"]
    np.testing.assert_allclose(a.meta["history"][-1]["gains"], 1 / GAINS, atol=2e-3)


def test_irmad_keeps_nodata_and_respects_mask(scene: Scene) -> None:
    later = scene.later.array.copy()
    later[:5, :5] = -9999.0
    img = Image(later, meta={"nodata": -9999.0})
    out = irmad_normalize(img, scene.reference, mask=~scene.cloud)
    assert np.all(out.array[:5, :5] == -9999.0)
    np.testing.assert_allclose(out.meta["history"][-1]["gains"], 1 / GAINS, atol=1e-3)


def test_irmad_errors_and_convergence_warning(scene: Scene) -> None:
    with pytest.raises(DataError, match="same shape"):
        irmad(scene.later, Image(scene.reference.array[:-1]))
    with pytest.raises(DataError, match="4 bands but the reference has 3"):
        irmad(scene.later, Image(scene.reference.array[..., :3]))
    with pytest.raises(DataError, match="only 4 valid pixels"):
        irmad(Image(scene.later.array[:2, :2]), Image(scene.reference.array[:2, :2]))
    with pytest.raises(DataError, match="threshold must be a probability"):
        irmad_normalize(scene.later, scene.reference, threshold=1.5)
    with pytest.raises(DataError, match="tol must be positive"):
        irmad(scene.later, scene.reference, tol=0)
    with pytest.warns(ConvergenceWarning, match=r"max_iter=2 .* changing by [0-9.e-]+ in the last"):
        result = irmad(scene.later, scene.reference, max_iter=2)
    assert not result.converged and result.n_iter == 2 and result.last_change > 1e-3


def test_no_change_probability_is_the_chi_square_tail() -> None:
    chi2 = np.linspace(0.0, 80.0, 2001)
    far = np.linspace(80.0, 1400.0, 500)  # tails down to 1e-300
    for dof in range(1, 10):
        np.testing.assert_allclose(
            _no_change_probability(chi2, dof), stats.chi2.sf(chi2, dof), rtol=1e-12, atol=1e-300
        )
        np.testing.assert_allclose(
            _no_change_probability(far, dof), stats.chi2.sf(far, dof), rtol=1e-9, atol=1e-300
        )


# ---------------------------------------------------------------- NDVI and band ratios


def test_histogram_matching_distorts_ndvi_where_irmad_does_not(
    scene: Scene, normalized: Image
) -> None:
    true_drop = float((ndvi(scene.truth2) - ndvi(scene.truth1))[scene.changed].mean())
    assert true_drop < -0.5
    unchanged = ~scene.changed & ~scene.cloud
    kwargs = {
        "bands": {"red": 2, "nir": 3},
        "unchanged_mask": unchanged,
        "changed_mask": scene.changed,
        "true_change": {"ndvi": true_drop},
    }
    hm = band_distortion(scene.reference, match_bands(scene.later, scene.reference), **kwargs)
    mad = band_distortion(scene.reference, normalized, **kwargs)
    # per-band matching erases part of the real NDVI drop and bends NIR/red on unchanged land
    assert hm.loc["ndvi", "surviving_fraction"] < 0.95
    assert hm.loc["nir/red", "unchanged_median_rel_change"] > 0.03
    assert hm.loc["ndvi", "unchanged_mean_abs_change"] > 0.02
    # IR-MAD keeps both
    assert mad.loc["ndvi", "surviving_fraction"] == pytest.approx(1.0, abs=0.01)
    assert mad.loc["nir/red", "unchanged_median_rel_change"] < 0.005
    assert mad.loc["ndvi", "unchanged_mean_abs_change"] < 0.005
    assert abs(mad.loc["ndvi", "unchanged_mean_change"]) < 1e-3


def test_band_distortion_by_hand() -> None:
    # two pixels, bands (red, nir); pixel 0 unchanged, pixel 1 changed
    before = Image(np.array([[[0.1, 0.3], [0.1, 0.5]]]))  # ndvi 0.5, 2/3; ratio 3, 5
    after = Image(np.array([[[0.1, 0.4], [0.2, 0.2]]]))  # ndvi 0.6, 0; ratio 4, 1
    changed = np.array([[False, True]])
    df = band_distortion(
        before, after, bands={"red": 0, "nir": 1}, changed_mask=changed, true_change=-1.0
    )
    assert list(df.index) == ["ndvi", "nir/red"]
    assert df.loc["ndvi", "kind"] == "normalized_difference"
    assert df.loc["ndvi", "unchanged_mean_change"] == pytest.approx(0.1)
    assert df.loc["ndvi", "unchanged_mean_abs_change"] == pytest.approx(0.1)
    assert df.loc["ndvi", "unchanged_median_rel_change"] == pytest.approx(0.2)
    assert df.loc["ndvi", "changed_mean_change"] == pytest.approx(-2 / 3)
    assert df.loc["ndvi", "surviving_fraction"] == pytest.approx(2 / 3)
    assert df.loc["nir/red", "unchanged_median_rel_change"] == pytest.approx(1 / 3)
    assert df.loc["nir/red", "changed_mean_change"] == pytest.approx(-4.0)
    assert np.isnan(df.loc["nir/red", "surviving_fraction"])
    plain = band_distortion(before, after, bands={"red": 0, "nir": 1})
    assert np.isnan(plain.loc["ndvi", "changed_mean_change"])
    assert plain.loc["ndvi", "unchanged_mean_change"] == pytest.approx((0.1 - 2 / 3) / 2)


def test_band_distortion_errors() -> None:
    img = Image(np.ones((2, 2, 4)))
    with pytest.raises(DataError, match="unknown index"):
        band_distortion(img, img, indices=("evi",))
    with pytest.raises(DataError, match="needs bands"):
        band_distortion(img, img, indices=("ndwi",))
    with pytest.raises(DataError, match="not a band position"):
        band_distortion(img, img, bands={"red": 2, "nir": 7})
    with pytest.raises(DataError, match="co-registered"):
        band_distortion(img, Image(np.ones((3, 2, 4))))


# ---------------------------------------------------------------- per-band methods


def test_match_bands_is_match_histogram_per_band(scene: Scene) -> None:
    mask = ~scene.cloud
    ref_mask = np.ones(scene.cloud.shape, dtype=bool)
    ref_mask[:10] = False
    out = match_bands(scene.later, scene.reference, mask=mask, reference_mask=ref_mask)
    assert out.array.shape == scene.later.array.shape and out.array.dtype == np.float32
    for b in range(4):
        expected = match_histogram(
            Image(scene.later.array[..., b]),
            Image(scene.reference.array[..., b]),
            mask=mask,
            reference_mask=ref_mask,
        ).array
        np.testing.assert_array_equal(out.array[..., b], expected)
    np.testing.assert_array_equal(out.array[scene.cloud], scene.later.array[scene.cloud])
    assert out.meta["history"][-1]["step"] == "match_bands"
    assert out.spacing == (30.0, 30.0)


def test_match_bands_to_stored_distributions_and_nodata() -> None:
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(30, 30, 2))
    arr[0, 0, :] = np.nan
    arr[1, 1, :] = -1.0e6
    img = Image(arr, meta={"nodata": -1.0e6})
    ref = rng.gamma(2.0, size=(40, 40, 2))
    dists = [ReferenceDistribution.from_values(ref[..., b]) for b in range(2)]
    out = match_bands(img, dists).array
    assert np.isnan(out[0, 0]).all() and np.all(out[1, 1] == -1.0e6)
    valid = np.ones((30, 30), dtype=bool)
    valid[0, 0] = valid[1, 1] = False
    for b in range(2):
        np.testing.assert_array_equal(
            out[..., b][valid], match_histogram(Image(arr[..., b][valid]), dists[b]).array
        )
    with pytest.raises(DataError, match="sequence of 2 ReferenceDistribution"):
        match_bands(img, dists[:1])
    with pytest.raises(DataError, match="2 bands but the reference has 3"):
        match_bands(img, Image(np.ones((4, 4, 3))))


def test_linear_bands_matches_moments_by_hand() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20, 20, 3))
    img = Image(ref * np.array([2.0, 0.5, 3.0]) + np.array([1.0, -4.0, 0.0]))
    out = linear_bands(img, Image(ref))
    np.testing.assert_allclose(out.array, ref, atol=1e-12)
    step = out.meta["history"][-1]
    np.testing.assert_allclose(step["gains"], [0.5, 2.0, 1 / 3])
    np.testing.assert_allclose(step["offsets"], [-0.5, 8.0, 0.0], atol=1e-12)
    mask = np.zeros((20, 20), dtype=bool)
    mask[:10] = True
    masked = linear_bands(Image(rng.normal(size=(20, 20, 3))), Image(ref), mask=mask).array
    np.testing.assert_allclose(masked[mask].mean(axis=0), ref.mean(axis=(0, 1)), atol=1e-12)
    np.testing.assert_allclose(masked[mask].std(axis=0), ref.std(axis=(0, 1)), atol=1e-12)
    with pytest.raises(DataError, match="band 1 is constant"):
        linear_bands(Image(np.dstack([ref[..., 0], np.ones((20, 20))])), Image(ref[..., :2]))


def test_raster_inputs_are_validated() -> None:
    with pytest.raises(DataError, match="band axis last"):
        match_bands(Image(np.arange(5.0)), Image(np.arange(5.0)))
    with pytest.raises(DataError, match="no usable pixels"):
        linear_bands(Image(np.full((3, 3, 2), np.nan)), Image(np.ones((3, 3, 2))))


# ---------------------------------------------------------------- reading and writing


def test_png_round_trips(tmp_path) -> None:
    pytest.importorskip("imageio")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    write_raster(Image(rgb), tmp_path / "rgb.png")
    back = read_raster(tmp_path / "rgb.png")
    np.testing.assert_array_equal(back.array, rgb)
    assert back.meta["format"] == "png" and back.spacing == (1.0, 1.0)
    gray = rng.integers(0, 65536, size=(7, 5), dtype=np.uint16)
    write_raster(Image(gray), tmp_path / "gray.png")
    assert read_raster(tmp_path / "gray.png").array.shape == (7, 5, 1)
    np.testing.assert_array_equal(read_raster(tmp_path / "gray.png").array[..., 0], gray)


def test_png_refuses_what_it_cannot_hold_and_writes_nothing(tmp_path) -> None:
    with pytest.raises(DataError, match=r"Write it as \.tif"):
        write_raster(Image(np.zeros((4, 4, 5), dtype=np.uint8)), tmp_path / "x.png")
    with pytest.raises(DataError, match=r"Write it as \.tif"):
        write_raster(Image(np.zeros((4, 4, 3), dtype=np.float32)), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="unknown raster suffix"):
        write_raster(Image(np.zeros((4, 4, 3))), tmp_path / "x.jp2")
    with pytest.raises(DataError, match="no such file"):
        read_raster(tmp_path / "missing.tif")


def test_tiff_round_trips_any_bands_and_dtype(tmp_path) -> None:
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(4)
    cube = rng.normal(size=(10, 8, 5)).astype(np.float32)
    write_raster(Image(cube), tmp_path / "cube.tif")
    back = read_raster(tmp_path / "cube.tif")
    np.testing.assert_array_equal(back.array, cube)
    assert back.meta["format"] == "tiff"
    # band-sequential (planar) files come back bands-last too
    planar = rng.integers(0, 4000, size=(3, 6, 7), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "planar.tif", planar, photometric="minisblack", planarconfig="separate"
    )
    np.testing.assert_array_equal(
        read_raster(tmp_path / "planar.tif").array, np.moveaxis(planar, 0, -1)
    )
    single = rng.normal(size=(4, 4))
    write_raster(Image(single), tmp_path / "single.tiff")
    np.testing.assert_array_equal(read_raster(tmp_path / "single.tiff").array[..., 0], single)


def test_geotiff_keeps_its_georeference(tmp_path) -> None:
    pytest.importorskip("rasterio")
    from rasterio.crs import CRS

    rng = np.random.default_rng(5)
    arr = rng.normal(size=(6, 9, 4)).astype(np.float32)
    transform = [30.0, 0.0, 500000.0, 0.0, -30.0, 4200000.0]
    img = Image(
        arr, meta={"crs": CRS.from_epsg(32633).to_wkt(), "transform": transform, "nodata": -9999.0}
    )
    write_raster(img, tmp_path / "scene.tif")
    back = read_raster(tmp_path / "scene.tif")
    np.testing.assert_array_equal(back.array, arr)
    assert back.meta["format"] == "geotiff"
    assert CRS.from_wkt(back.meta["crs"]).to_epsg() == 32633
    assert back.meta["transform"] == transform and back.meta["nodata"] == -9999.0
    assert back.spacing == (30.0, 30.0)
    assert back.origin == (4200000.0 - 15.0, 500000.0 + 15.0)  # centre of the first pixel
    # the normalizers keep the georeference in meta, so the output is a GeoTIFF again
    out = linear_bands(back, back)
    write_raster(out, tmp_path / "out.tif")
    assert read_raster(tmp_path / "out.tif").meta["transform"] == transform


def test_geotiff_without_rasterio_says_what_to_install(tmp_path, monkeypatch) -> None:
    pytest.importorskip("rasterio")
    pytest.importorskip("tifffile")
    from rasterio.crs import CRS

    img = Image(
        np.zeros((3, 3, 2), dtype=np.float32),
        meta={"crs": CRS.from_epsg(4326).to_wkt(), "transform": [10, 0, 100, 0, -10, 200]},
    )
    write_raster(img, tmp_path / "geo.tif")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now fails
    with pytest.raises(OptionalDependencyError, match="pip install rasterio"):
        read_raster(tmp_path / "geo.tif")
    with pytest.raises(OptionalDependencyError, match="pip install rasterio"):
        write_raster(img, tmp_path / "again.tif")
    pixels = read_raster(tmp_path / "geo.tif", engine="tifffile")  # pixels only
    assert pixels.array.shape == (3, 3, 2) and "crs" not in pixels.meta
