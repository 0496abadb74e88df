"""PCA coordinates drawn by the report (imharmony.diagnostics.multivariate.pca_projection).

Checked against scikit-learn's PCA on the standardized data (an independent implementation),
and for the property the figure relies on: "after" is projected on the axes of "before".
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imharmony.diagnostics.multivariate import pca_projection, pca_silhouette


def _matrix(n: int, p: int, seed: int, log_scale: float, mix: float) -> np.ndarray:
    """Correlated columns of very different scales and offsets."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    Z[:, 1:] += mix * Z[:, :1]  # correlation with the first column
    return Z * 10.0 ** (log_scale * rng.uniform(-1, 1, p)) + rng.normal(0, 100, p)


matrices = st.builds(_matrix, st.integers(5, 40), st.integers(3, 8),
                     st.integers(0, 2**32 - 1), st.floats(0, 3), st.floats(0, 2))


def _well_posed(X: np.ndarray) -> bool:
    """Distinct, well-separated leading singular values (otherwise the axes are not unique)."""
    S = (X - X.mean(0)) / np.where(X.std(0) > 1e-6 * (1 + np.abs(X).max()), X.std(0), np.inf)
    s = np.linalg.svd(S, compute_uv=False)
    return s.size >= 3 and s[0] > 0 and (s[0] - s[1]) > 1e-3 * s[0] and \
        (s[1] - s[2]) > 1e-3 * s[0] and bool(np.all(X.std(0) > 1e-3))


@settings(max_examples=40, deadline=None)
@given(matrices)
def test_scores_match_sklearn_pca_of_standardized_data(X: np.ndarray) -> None:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    assume(_well_posed(X))
    proj = pca_projection(X, n_components=2)
    ref = PCA(n_components=2, svd_solver="full").fit(StandardScaler().fit_transform(X))
    scores = ref.transform(StandardScaler().fit_transform(X))
    signs = np.sign(np.sum(proj.before * scores, axis=0))  # the sign of an axis is arbitrary
    np.testing.assert_allclose(proj.before * signs, scores, atol=1e-7 * (1 + np.abs(scores).max()))
    np.testing.assert_allclose(proj.explained_variance_ratio, ref.explained_variance_ratio_,
                               rtol=1e-7)
    assert proj.after is None


@settings(max_examples=40, deadline=None)
@given(matrices, st.floats(-50, 50), st.floats(0.5, 3.0))
def test_after_is_projected_on_the_axes_of_before(X: np.ndarray, shift: float,
                                                  gain: float) -> None:
    assume(_well_posed(X))
    same = pca_projection(X, X.copy())
    np.testing.assert_array_equal(same.before, same.after)
    # a shift of every feature by its own standard deviation times `shift` moves every score
    # by the same vector: the axes do not follow the data after
    sd = X.std(0)
    moved = pca_projection(X, X + shift * sd)
    delta = moved.after - moved.before
    np.testing.assert_allclose(delta, np.broadcast_to(delta[0], delta.shape),
                               atol=1e-8 * (1 + abs(shift)) * X.shape[1])
    # scaling the centred data by `gain` scales the scores by `gain`
    scaled = pca_projection(X, X.mean(0) + gain * (X - X.mean(0)))
    np.testing.assert_allclose(scaled.after, gain * scaled.before,
                               atol=1e-8 * gain * (1 + np.abs(scaled.before).max()))


def test_hand_computed_two_features() -> None:
    # x2 = x1 exactly: standardized data lie on the diagonal; PC1 = (z1 + z2) / sqrt(2)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    X = np.column_stack([x, x])
    proj = pca_projection(X)
    z = (x - 2.5) / np.sqrt(1.25)
    np.testing.assert_allclose(np.abs(proj.before[:, 0]), np.abs(np.sqrt(2) * z), atol=1e-12)
    np.testing.assert_allclose(proj.before[:, 1], 0, atol=1e-12)
    np.testing.assert_allclose(proj.explained_variance_ratio, [1.0, 0.0], atol=1e-12)


def test_silhouette_unchanged_by_the_shared_pca_core() -> None:
    # two separated sites on a line and their mixture: values computed by hand
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    site = ["a", "a", "b", "b"]
    sil_b, sil_a = pca_silhouette(X, site, X[[0, 2, 1, 3]])
    assert sil_b == pytest.approx(1.0)  # identical points within a site, separated between
    # after: each site holds one point of each cluster; a(i) = d, b(i) = d / 2... by hand:
    # every sample's own-site partner is at distance d, the other site holds one point at 0
    # and one at d: b = d / 2, so s = (b - a) / max(a, b) = -0.5
    assert sil_a == pytest.approx(-0.5)
