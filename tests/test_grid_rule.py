"""One rule for "same grid": every caller that takes a mask or label map gives the same verdict.

Issue 11: zscore, robust_zscore and region_features accepted a mask 50 mm off the image while
match_histogram refused it. They all go through ``Image.same_grid`` now.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import imharmony as ih
from imharmony.errors import DataError

SHAPE = (12, 10, 6)


def image() -> ih.Image:
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 10, SHAPE)
    return ih.Image(arr, spacing=(1.0, 1.0, 2.0), origin=(-5.0, 3.0, 10.0))


def mask_like(img: ih.Image, **changes: object) -> ih.Image:
    arr = np.zeros(img.shape, bool)
    arr[2:10, 2:8, 1:5] = True
    geometry = {"spacing": img.spacing, "origin": img.origin, "direction": img.direction}
    geometry.update(changes)
    return ih.Image(arr, **geometry)


def callers(img: ih.Image, mask: ih.Image) -> dict[str, object]:
    def run(fn):
        try:
            fn()
        except DataError as exc:
            return "refused: " + ("grid" if "grid" in str(exc) else str(exc))
        return "accepted"

    reference = ih.Image(img.array * 1.1 + 3, spacing=img.spacing, origin=img.origin)
    return {
        "zscore": run(lambda: ih.zscore(img, mask)),
        "robust_zscore": run(lambda: ih.robust_zscore(img, mask)),
        "whitestripe": run(lambda: ih.whitestripe(img, mask)),
        "match_histogram": run(lambda: ih.match_histogram(img, reference, mask=mask)),
        "match_histogram (reference_mask)": run(
            lambda: ih.match_histogram(img, img, reference_mask=mask)
        ),
        "region_features": run(lambda: ih.region_features(img, mask)),
        "HistogramStandardizer": run(
            lambda: ih.HistogramStandardizer().fit([img, img], [mask, mask])
        ),
    }


@pytest.mark.parametrize(
    "change",
    [
        {"origin": (45.0, 3.0, 10.0)},  # 50 mm off
        {"spacing": (1.0, 1.0, 2.5)},
        {"direction": np.diag([1.0, -1.0, -1.0])},
    ],
    ids=["origin", "spacing", "direction"],
)
def test_every_mask_caller_refuses_an_off_grid_mask(change: dict) -> None:
    img = image()
    verdicts = callers(img, mask_like(img, **change))
    assert set(verdicts.values()) == {"refused: grid"}, verdicts


def test_every_mask_caller_accepts_the_same_grid() -> None:
    img = image()
    verdicts = callers(img, mask_like(img, origin=(-5.0 + 1e-6, 3.0, 10.0)))
    assert set(verdicts.values()) == {"accepted"}, verdicts


@settings(max_examples=50, deadline=None)
@given(
    shift=st.floats(-100, 100, allow_nan=False),
    axis=st.integers(0, 2),
    scale=st.floats(0.5, 2.0),
)
def test_same_grid_compares_origin_and_spacing_with_allclose(
    shift: float, axis: int, scale: float
) -> None:
    img = image()
    origin = list(img.origin)
    origin[axis] += shift
    spacing = list(img.spacing)
    spacing[axis] *= scale
    other = ih.Image(np.zeros(SHAPE), spacing=spacing, origin=origin)
    expected = abs(shift) <= 1e-4 + 1e-5 * abs(img.origin[axis]) and np.isclose(
        spacing[axis], img.spacing[axis], rtol=1e-5, atol=1e-4
    )
    assert img.same_grid(other) == bool(expected)
    assert (
        img.same_grid(ih.Image(np.zeros((12, 10, 7)), spacing=img.spacing, origin=img.origin))
        is False
    )
