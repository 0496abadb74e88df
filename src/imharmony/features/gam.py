"""Penalized B-spline terms for ComBat with smooth (GAM) covariates.

ComBat-GAM (Pomponio et al., NeuroImage 208:116450, 2020) replaces the linear effect of chosen
covariates (age, typically) by a penalized cubic regression spline, fitted per feature together
with the site indicators and the linear covariates. The basis is the one neuroHarmonize builds
with statsmodels: ``df`` B-splines of ``degree`` on knots repeated ``degree + 1`` times at the
bounds and ``df - degree - 1`` inner knots at quantiles of the covariate, the first basis function
dropped (the site indicators carry the constant). The penalty of a term is its curvature,
``S = integral of B''(x) B''(x)^T dx`` over the bounds, and the coefficients minimize

    ||y - D b||^2 + sum_t 2 alpha_t b_t^T S_t b_t

(statsmodels' GLMGam scaling, so penalties chosen by neuroHarmonize can be given as they are).
Everything here is vectorized over features: features that share a penalty are solved together
from the design's cross-products, and penalty selection scores every candidate for all features
from sufficient statistics of a few folds.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.interpolate import BSpline

from ..errors import DesignError

__all__ = [
    "SmoothTerm",
    "bspline_knots",
    "penalized_solver",
    "select_penalties",
]

logger = logging.getLogger(__name__)


def bspline_knots(
    x: np.ndarray, df: int = 10, degree: int = 3, bounds: tuple[float, float] | None = None
) -> np.ndarray:
    """All knots of the basis: bounds repeated ``degree + 1`` times, inner knots at quantiles.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        The covariate (training values).
    df : int
        Number of B-splines before the first is dropped (``df - degree - 1`` inner knots).
    degree : int
    bounds : (float, float), optional
        Boundary knots; the covariate's range when not given.

    Returns
    -------
    ndarray, sorted
    """
    x = np.asarray(x, dtype=np.float64)
    order = degree + 1
    n_inner = df - order
    if n_inner < 0:
        raise DesignError(
            f"smooth_df={df} is too small for smooth_degree={degree}: give >= {order}."
        )
    probs = np.linspace(0, 1, n_inner + 2)[1:-1]
    inner = np.array([np.percentile(x, 100 * p) for p in probs])
    lo, hi = (float(x.min()), float(x.max())) if bounds is None else map(float, bounds)
    if not lo < hi:
        raise DesignError(f"smooth bounds ({lo}, {hi}) must be increasing.")
    if inner.size and (inner.min() < lo or inner.max() > hi):
        raise DesignError(
            f"smooth bounds ({lo}, {hi}) must contain the training values "
            f"({float(x.min())}..{float(x.max())})."
        )
    return np.sort(np.concatenate([[lo, hi] * order, inner]))


@dataclass(frozen=True)
class SmoothTerm:
    """One penalized spline term: its knots and degree (the learned state).

    Attributes
    ----------
    knots : ndarray
        All knots (see :func:`bspline_knots`).
    degree : int
    """

    knots: np.ndarray
    degree: int = 3

    @property
    def n_basis(self) -> int:
        """Columns of the basis (the first B-spline dropped)."""
        return int(self.knots.shape[0] - self.degree - 2)

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.knots[0]), float(self.knots[-1])

    def _spline(self) -> BSpline:
        m = self.knots.shape[0] - self.degree - 1
        return BSpline(self.knots, np.eye(m)[:, 1:], self.degree, extrapolate=False)

    def basis(self, x: np.ndarray, deriv: int = 0) -> np.ndarray:
        """The basis (or its ``deriv``-th derivative) at ``x``, extended linearly past the bounds.

        Outside the bounds every basis function continues along its tangent at the bound, so the
        fitted curve is extrapolated linearly (a natural continuation of a curvature-penalized
        fit) and no value is NaN. The caller warns about such values.
        """
        x = np.asarray(x, dtype=np.float64)
        spl = self._spline()
        lo, hi = self.bounds
        inside = np.clip(x, lo, hi)
        out = (spl if deriv == 0 else spl.derivative(deriv))(inside)
        below, above = x < lo, x > hi
        if below.any() or above.any():
            if deriv == 0:
                d1 = spl.derivative(1)
                out[below] += (x[below] - lo)[:, None] * d1(lo)
                out[above] += (x[above] - hi)[:, None] * d1(hi)
            elif deriv == 1:
                out[below] = spl.derivative(1)(lo)
                out[above] = spl.derivative(1)(hi)
            else:
                out[below | above] = 0.0
        return np.ascontiguousarray(out)

    def penalty(self) -> np.ndarray:
        """S = integral over the bounds of B''(x) B''(x)^T (exact Gauss-Legendre quadrature)."""
        d2 = self._spline().derivative(2)
        edges = np.unique(self.knots)
        # B'' is a polynomial of degree (degree - 2) between knots: its square has degree
        # 2 * (degree - 2), integrated exactly by this many Gauss-Legendre points
        npts = max(1, self.degree - 1)
        nodes, weights = np.polynomial.legendre.leggauss(npts)
        half = np.diff(edges) / 2
        mid = (edges[:-1] + edges[1:]) / 2
        pts = (mid[:, None] + half[:, None] * nodes).ravel()
        w = (half[:, None] * weights).ravel()
        B = d2(pts)
        return (B * w[:, None]).T @ B


def place_penalties(terms: list[tuple[SmoothTerm, np.ndarray]], q: int) -> list[np.ndarray]:
    """Each term's penalty as a ``q x q`` matrix over the covariate columns.

    ``terms`` pairs every smooth term with the positions of its basis columns among the ``q``
    encoded covariate columns.
    """
    out = []
    for term, cols in terms:
        full = np.zeros((q, q))
        full[np.ix_(cols, cols)] = term.penalty()
        out.append(full)
    return out


def penalty_matrices(
    alphas: np.ndarray, penalties: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Group features by their penalties: ``(stack of sum_t 2 alpha_t S_t, index per feature)``.

    Parameters
    ----------
    alphas : ndarray, shape (n_features, n_terms)
    penalties : list of ndarray, shape (q, q)
        One placed penalty per term (see :func:`place_penalties`).
    """
    unique, index = np.unique(alphas, axis=0, return_inverse=True)
    stack = np.einsum("mt,tij->mij", 2.0 * unique, np.stack(penalties))
    return stack, index.reshape(-1).astype(np.intp)


def penalized_solver(
    gram: np.ndarray, n_batches: int, penalty: tuple[np.ndarray, np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """A function solving ``(D^T D + P_g) b_g = r_g`` for all features ``g`` of a right-hand side.

    Parameters
    ----------
    gram : ndarray, shape (p, p)
        D^T D of the design [batch indicators | covariate columns].
    n_batches : int
        The first ``n_batches`` columns (site indicators) are not penalized.
    penalty : (ndarray of shape (m, q, q), ndarray of int of shape (n_features,))
        Distinct penalty matrices over the covariate columns and the one of every feature.

    Notes
    -----
    Features sharing a penalty are solved together (one Cholesky factorization per distinct
    penalty); the system is equilibrated by its diagonal first, so covariates in large units do
    not cost digits.
    """
    stack, index = penalty
    J = n_batches
    factors = []
    for P in stack:
        A = gram.copy()
        A[J:, J:] += P
        s = 1.0 / np.sqrt(np.where(np.diag(A) > 0, np.diag(A), 1.0))
        try:
            factors.append((linalg.cho_factor(A * s[:, None] * s[None, :]), s))
        except linalg.LinAlgError:
            raise DesignError(
                "the penalized design is singular: a smooth covariate needs more distinct values "
                "(or a larger smooth_penalty), and no covariate may be constant within the data."
            ) from None
    groups = [np.flatnonzero(index == m) for m in range(len(stack))]

    def solve(rhs: np.ndarray) -> np.ndarray:
        out = np.empty_like(rhs)
        for (chol, s), cols in zip(factors, groups, strict=True):
            if cols.size:
                out[:, cols] = s[:, None] * linalg.cho_solve(
                    chol, s[:, None] * rhs[:, cols], check_finite=False
                )
        return out

    return solve


def _grid(n_terms: int) -> np.ndarray:
    """Decades around each term's reference penalty that selection tries."""
    points = 49 if n_terms == 1 else (13 if n_terms == 2 else 7)
    return np.linspace(-6.0, 6.0, points)


def _folds(codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of every sample: shuffled within each site, then dealt out in turn (stratified)."""
    fold = np.empty(codes.shape[0], dtype=np.intp)
    start = 0
    for j in np.unique(codes):
        rows = np.flatnonzero(codes == j)
        rows = rows[rng.permutation(rows.shape[0])]
        fold[rows] = (start + np.arange(rows.shape[0])) % k
        start += rows.shape[0]
    return fold


def _solve_many(A: np.ndarray, R: np.ndarray) -> np.ndarray:
    s = 1.0 / np.sqrt(np.where(np.diag(A) > 0, np.diag(A), 1.0))
    As = A * s[:, None] * s[None, :]
    try:
        # a candidate with a tiny penalty can be ill-conditioned; it then predicts the held-out
        # samples badly and loses the selection, which is all that matters here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return s[:, None] * linalg.solve(
                As, s[:, None] * R, assume_a="pos", check_finite=False
            )
    except (linalg.LinAlgError, ValueError):
        # a site or level absent from a training fold: the minimum-norm solution
        return s[:, None] * (np.linalg.pinv(As) @ (s[:, None] * R))


def select_penalties(
    X: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray,
    penalties: list[np.ndarray],
    term_columns: list[np.ndarray],
    *,
    criterion: str = "cv",
    n_folds: int = 5,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Choose every feature's smoothing penalties on a grid, all features at once.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Complete training data.
    codes, n_batches : site codes and count.
    C : ndarray, shape (n_samples, q)
        Encoded covariates (linear columns and spline bases).
    penalties : list of ndarray, shape (q, q)
        Each smooth term's placed penalty S_t.
    term_columns : list of ndarray
        Positions of each term's basis columns in C (sets the grid's reference penalty).
    criterion : {"cv", "gcv"}
        ``"cv"``: K-fold cross-validation with folds stratified by site and shuffled by
        ``random_state`` (the same folds for every candidate and feature), scored by the summed
        squared prediction error. ``"gcv"``: generalized cross-validation
        ``n RSS / (n - edf)^2`` on the full data (no randomness).
    n_folds : int
    random_state : int, Generator or None
        Seed of the folds; None means seed 0, so the default is reproducible.

    Returns
    -------
    ndarray, shape (n_features, n_terms)
        The chosen alpha of every feature and term (in the ``2 alpha b^T S b`` scaling).

    Notes
    -----
    Candidates: for each term ``t`` the reference ``c_t = tr(B_t^T B_t) / tr(2 S_t)`` (where the
    penalty and the basis' cross-products have equal weight) times ``10**d`` for ``d`` on a grid
    from -6 to 6 decades: 49 points (a quarter decade) with one smooth term, 13 per term with
    two, 7 per term with more (all combinations are tried). Every score comes from the design's
    cross-products with the data: no per-feature model fits.
    """
    n, G = X.shape
    J = n_batches
    D = np.zeros((n, J + C.shape[1]))
    D[np.arange(n), codes] = 1.0
    D[:, J:] = C
    Y = X - X.mean(axis=0)  # the constant lies in the sites' span: the fit is unchanged
    full = []
    for S in penalties:
        P = np.zeros((D.shape[1], D.shape[1]))
        P[J:, J:] = S
        full.append(P)
    refs = [
        np.trace(C[:, cols].T @ C[:, cols]) / np.trace(2.0 * S[np.ix_(cols, cols)])
        for S, cols in zip(penalties, term_columns, strict=True)
    ]
    decades = _grid(len(penalties))
    candidates = np.array(list(itertools.product(decades, repeat=len(penalties))))
    alphas = np.asarray(refs)[None, :] * 10.0**candidates  # (n_candidates, n_terms)
    score = np.zeros((alphas.shape[0], G))
    if criterion == "cv":
        if isinstance(random_state, np.random.Generator):
            rng = random_state
        else:
            rng = np.random.default_rng(0 if random_state is None else random_state)
        fold = _folds(codes, n_folds, rng)
        gram, rhs = D.T @ D, D.T @ Y
        for f in range(n_folds):
            te = fold == f
            Dte, Yte = D[te], Y[te]
            g_te, r_te = Dte.T @ Dte, Dte.T @ Yte
            yy_te = np.einsum("ij,ij->j", Yte, Yte)
            g_tr, r_tr = gram - g_te, rhs - r_te
            for a, alpha in enumerate(alphas):
                A = g_tr + 2.0 * np.tensordot(alpha, np.stack(full), axes=1)
                B = _solve_many(A, r_tr)
                score[a] += yy_te - 2.0 * np.einsum("pg,pg->g", B, r_te)
                score[a] += np.einsum("pg,pg->g", B, g_te @ B)
    elif criterion == "gcv":
        gram, rhs = D.T @ D, D.T @ Y
        yy = np.einsum("ij,ij->j", Y, Y)
        for a, alpha in enumerate(alphas):
            A = gram + 2.0 * np.tensordot(alpha, np.stack(full), axes=1)
            B = _solve_many(A, rhs)
            edf = np.trace(_solve_many(A, gram))
            rss = yy - 2.0 * np.einsum("pg,pg->g", B, rhs) + np.einsum("pg,pg->g", B, gram @ B)
            score[a] = n * rss / (n - edf) ** 2
    else:  # pragma: no cover - validated by the estimator
        raise ValueError(f"unknown criterion {criterion!r}")
    best = np.argmin(score, axis=0)
    logger.info(
        "smoothing penalties selected by %s for %d features (%d candidates)",
        criterion,
        G,
        alphas.shape[0],
    )
    return alphas[best]
