"""Linear mixed models fitted by REML for many features at once (one design, many responses).

Every feature g follows the same model with its own parameters::

    y_g = X beta_g + Z b_g + e_g,    b_gs ~ N(0, sigma_g^2 L_g L_g^T),   e_g ~ N(0, sigma_g^2 I)

with one block of random effects per subject s (``q`` columns of Z: an intercept, or an intercept
and a slope in time) and L_g the lower-triangular relative covariance factor (lme4's ``theta``).
Because X, Z and the subjects are shared, every quantity of the profiled REML criterion reduces to
per-subject cross-products computed once (X_s^T X_s, X_s^T Z_s, Z_s^T Z_s) and, per feature, the
sums X^T y, y^T y and Z_s^T y_s: evaluating the criterion for all features is a few matrix
products of size features x (subjects q^2) x p^2, with no loop over features. With
M_s = I + L^T Z_s^T Z_s L and W_s = L M_s^{-1} L^T (Woodbury)::

    X^T V^-1 X = X^T X - sum_s (X_s^T Z_s) W_s (Z_s^T X_s),   V = I + Z L L^T Z^T
    X^T V^-1 y = X^T y - sum_s (X_s^T Z_s) W_s (Z_s^T y_s)
    y^T V^-1 y = y^T y - sum_s (y_s^T Z_s) W_s (Z_s^T y_s),   log|V| = sum_s log|M_s|
    -2 REML (profiled over beta, sigma) = (n - p) log(r^T V^-1 r) + log|V| + log|X^T V^-1 X|

(Bates et al. 2015, section 3, up to constants). The random-intercept criterion has one parameter
per feature and is minimized for all features together by a grid followed by golden-section
search; the intercept-and-slope criterion (three parameters) by bounded Newton iterations run
for all features together (finite-difference derivatives of the same vectorized criterion).

References
----------
D. Bates, M. Maechler, B. Bolker, S. Walker, "Fitting linear mixed-effects models using lme4",
Journal of Statistical Software 67(1), 2015.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MixedDesign", "MixedFit", "fit_reml"]

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass
class MixedDesign:
    """The shared design: fixed effects X (n x p), subject codes and random-effect columns Z."""

    X: np.ndarray
    subjects: np.ndarray
    Z: np.ndarray

    def __post_init__(self) -> None:
        n, p = self.X.shape
        q = self.Z.shape[1]
        S = int(self.subjects.max()) + 1
        onehot = np.zeros((S, n))
        onehot[self.subjects, np.arange(n)] = 1.0
        self.n_subjects = S
        self.onehot = onehot
        self.XtX = self.X.T @ self.X
        # U[s] = X_s^T Z_s (p x q), A[s] = Z_s^T Z_s (q x q)
        self.U = np.einsum("sn,np,nq->spq", onehot, self.X, self.Z)
        self.A = np.einsum("sn,na,nb->sab", onehot, self.Z, self.Z)
        self.UU = np.einsum("spa,srb->sabpr", self.U, self.U).reshape(S * q * q, p * p)
        self.Uflat = self.U.transpose(0, 2, 1).reshape(S * q, p)

    @property
    def q(self) -> int:
        return int(self.Z.shape[1])

    def subject_sums(self, Y: np.ndarray) -> np.ndarray:
        """T[g, s] = Z_s^T y_gs, shape (G, S, q)."""
        return np.einsum("sn,nq,ng->gsq", self.onehot, self.Z, Y)


@dataclass
class MixedFit:
    """REML estimates for every feature.

    Attributes
    ----------
    theta : ndarray, shape (G, k)
        Relative covariance factor (lme4's theta: k = 1 for an intercept, 3 for intercept and
        slope, the lower triangle of L column by column).
    beta : ndarray, shape (p, G)
    sigma : ndarray, shape (G,)
        REML residual standard deviation.
    blup : ndarray, shape (G, S, q)
        Conditional modes of the random effects (in the units of y).
    deviance : ndarray, shape (G,)
        The minimized profiled REML criterion (without constants).
    """

    theta: np.ndarray
    beta: np.ndarray
    sigma: np.ndarray
    blup: np.ndarray
    deviance: np.ndarray


def relative_factor(theta: np.ndarray, q: int) -> np.ndarray:
    """L (G, q, q) from theta (G, k)."""
    G = theta.shape[0]
    L = np.zeros((G, q, q))
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))  # column by column, as lme4 stores theta
    L[:, rows[order], cols[order]] = theta
    return L


def shrinkage(design: MixedDesign, L: np.ndarray, A: np.ndarray | None = None):
    """W_s = L M_s^-1 L^T and log|M_s| for every feature and subject: (G, S, q, q), (G, S)."""
    A = design.A if A is None else A
    q = design.q
    if q == 1:
        l2 = L[:, 0, 0][:, None] ** 2
        m = 1.0 + l2 * A[None, :, 0, 0]
        return (l2 / m)[:, :, None, None], np.log(m)
    LtAL = np.einsum("gba,sbc,gcd->gsad", L, A, L)
    M = LtAL + np.eye(q)
    if q == 2:
        det = M[..., 0, 0] * M[..., 1, 1] - M[..., 0, 1] * M[..., 1, 0]
        inv = np.empty_like(M)
        inv[..., 0, 0] = M[..., 1, 1] / det
        inv[..., 1, 1] = M[..., 0, 0] / det
        inv[..., 0, 1] = -M[..., 0, 1] / det
        inv[..., 1, 0] = -M[..., 1, 0] / det
        logdet = np.log(det)
    else:  # pragma: no cover - only intercept and slope models are built
        inv = np.linalg.inv(M)
        logdet = np.linalg.slogdet(M)[1]
    W = np.einsum("gab,gsbc,gdc->gsad", L, inv, L)
    return W, logdet


def _profile(
    design: MixedDesign,
    theta: np.ndarray,
    Xty: np.ndarray,
    yty: np.ndarray,
    T: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Profiled REML criterion, beta and r^T V^-1 r for every row of theta (G, k)."""
    G = theta.shape[0]
    n, p = design.X.shape
    q = design.q
    S = design.n_subjects
    W, logdet_m = shrinkage(design, relative_factor(theta, q))
    XVX = design.XtX[None] - (W.reshape(G, S * q * q) @ design.UU).reshape(G, p, p)
    Wt = np.einsum("gsab,gsb->gsa", W, T)
    XVy = Xty.T - Wt.reshape(G, S * q) @ design.Uflat
    yVy = yty - np.einsum("gsa,gsa->g", T, Wt)
    chol = np.linalg.cholesky(XVX)
    beta = np.linalg.solve(XVX, XVy[:, :, None])[:, :, 0]
    rss = yVy - np.einsum("gp,gp->g", beta, XVy)
    logdet_x = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    dev = (n - p) * np.log(rss) + logdet_m.sum(axis=1) + logdet_x
    return dev, beta, rss


def fit_reml(design: MixedDesign, Y: np.ndarray, *, grid: int = 24) -> MixedFit:
    """Fit the mixed model of ``design`` by REML to every column of Y (n x G).

    Parameters
    ----------
    design : MixedDesign
    Y : ndarray, shape (n, G)
        Responses (complete). Each column is centred and scaled internally (the REML estimate
        of theta does not depend on the units of y), which keeps the sums free of cancellation.
    grid : int
        Points per parameter of the starting grid.

    Returns
    -------
    MixedFit
    """
    n, p = design.X.shape
    q = design.q
    G = Y.shape[1]
    loc = Y.mean(axis=0)
    scale = Y.std(axis=0)
    scale[scale == 0] = 1.0
    Ys = (Y - loc) / scale
    Xty = design.X.T @ Ys
    yty = np.einsum("ng,ng->g", Ys, Ys)
    T = design.subject_sums(Ys)

    def crit(theta: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        return _profile(design, theta, Xty[:, idx], yty[idx], T[idx])[0]

    if q == 1:
        theta = _minimize_1d(crit, G, grid)
    else:
        theta = _minimize_slope(crit, G, grid)
    dev, beta, rss = _profile(design, theta, Xty, yty, T)
    W, _ = shrinkage(design, relative_factor(theta, q))
    resid_sums = T - np.einsum("spq,gp->gsq", design.U, beta)
    blup = np.einsum("gsab,gsb->gsa", W, resid_sums)
    # back to the units of y: the intercept column absorbs the centring
    beta = beta.T * scale
    beta += _intercept_shift(design.X, loc)
    return MixedFit(
        theta=theta,
        beta=beta,
        sigma=np.sqrt(rss / (n - p)) * scale,
        blup=blup * scale[:, None, None],
        deviance=dev,
    )


def _intercept_shift(X: np.ndarray, loc: np.ndarray) -> np.ndarray:
    """Coefficients that reproduce a constant ``loc`` per feature with the columns of X."""
    coef, *_ = np.linalg.lstsq(X, np.ones(X.shape[0]), rcond=None)
    return coef[:, None] * loc[None, :]


def _minimize_1d(crit, G: int, grid: int) -> np.ndarray:
    """Grid over theta >= 0, then golden-section search around the best point, all features."""
    points = np.concatenate([[0.0], np.geomspace(1e-3, 1e2, grid)])
    values = np.stack([crit(np.full((G, 1), t)) for t in points], axis=1)
    best = np.argmin(values, axis=1)
    lo = points[np.maximum(best - 1, 0)]
    hi = points[np.minimum(best + 1, points.size - 1)]
    a = hi - _GOLDEN * (hi - lo)
    b = lo + _GOLDEN * (hi - lo)
    fa, fb = crit(a[:, None]), crit(b[:, None])
    for _ in range(80):
        left = fa < fb  # the minimum lies in [lo, b]
        lo, hi = np.where(left, lo, a), np.where(left, b, hi)
        new_a = np.where(left, hi - _GOLDEN * (hi - lo), b)
        new_b = np.where(left, a, lo + _GOLDEN * (hi - lo))
        fnew = crit(np.where(left, new_a, new_b)[:, None])
        fa, fb = np.where(left, fnew, fb), np.where(left, fa, fnew)
        a, b = new_a, new_b
        if np.all(hi - lo <= 1e-10 * np.maximum(hi, 1e-6)):
            break
    theta = 0.5 * (lo + hi)
    # the boundary: keep theta = 0 where it is at least as good (lme4's singular fits)
    zero = crit(np.zeros((G, 1)))
    theta = np.where(zero <= crit(theta[:, None]), 0.0, theta)
    return theta[:, None]


def _minimize_slope(crit, G: int, grid: int) -> np.ndarray:
    """Random intercept and slope: bounded Newton iterations for all features together.

    Several local minima exist (singular fits lie on the boundary theta_11 = 0 or
    theta_22 = 0), so every feature is searched from the best point of a small grid and from
    lme4's own start (1, 0, 1); the lower criterion wins.
    """
    diag = np.array([0.0, 0.1, 0.5, 2.0])
    starts = np.array([[a, c, b] for a in diag for b in diag for c in (-0.5, 0.0, 0.5)])
    values = np.stack([crit(np.broadcast_to(s, (G, 3)).copy()) for s in starts], axis=1)
    first = starts[np.argmin(values, axis=1)]
    lme4 = np.broadcast_to(np.array([1.0, 0.0, 1.0]), (G, 3))
    x = np.vstack([first, lme4])
    rows = np.concatenate([np.arange(G), np.arange(G)])
    x, f = _bounded_newton(lambda t, i: crit(t, rows[i]), x, np.array([0.0, -np.inf, 0.0]))
    pick = f[G:] < f[:G]
    return np.where(pick[:, None], x[G:], x[:G])


def _bounded_newton(
    crit, x: np.ndarray, lower: np.ndarray, max_iter: int = 100, h: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize crit(x[i], i) for every row i of x, subject to x >= lower, all rows at once.

    Newton steps with central-difference gradients and finite-difference Hessians (whose
    eigenvalues are made positive, so saddle points are left), variables held at their bound
    when the gradient pushes outward, and a backtracking line search per row. Stops per row
    when a step changes neither the criterion (1e-13 relative) nor x (1e-10).
    """
    N, k = x.shape
    x = np.maximum(x, lower)
    f = crit(x, np.arange(N))
    todo = np.ones(N, dtype=bool)
    eye = np.eye(k)
    for _ in range(max_iter):
        idx = np.flatnonzero(todo)
        if not idx.size:
            break
        xi, fi = x[idx], f[idx]
        plus = np.stack([crit(xi + h * eye[j], idx) for j in range(k)], axis=1)
        minus = np.stack([crit(xi - h * eye[j], idx) for j in range(k)], axis=1)
        grad = (plus - minus) / (2 * h)
        hess = np.empty((idx.size, k, k))
        for j in range(k):
            hess[:, j, j] = (plus[:, j] - 2 * fi + minus[:, j]) / h**2
            for m in range(j + 1, k):
                both = crit(xi + h * (eye[j] + eye[m]), idx)
                hess[:, j, m] = hess[:, m, j] = (both - plus[:, j] - plus[:, m] + fi) / h**2
        held = (xi <= lower + 1e-12) & (grad > 0)
        grad[held] = 0.0
        hess[np.broadcast_to(held[:, :, None], hess.shape)] = 0.0
        hess[np.broadcast_to(held[:, None, :], hess.shape)] = 0.0
        hess[:, np.arange(k), np.arange(k)] += held
        lam, vec = np.linalg.eigh(hess)
        lam = np.maximum(np.abs(lam), 1e-8 * np.maximum(np.abs(lam).max(axis=1, keepdims=True), 1))
        step = -np.einsum("nab,nb,ncb,nc->na", vec, 1.0 / lam, vec, grad)
        alpha = np.ones(idx.size)
        accepted = np.zeros(idx.size, dtype=bool)
        x_new, f_new = xi.copy(), fi.copy()
        for _ls in range(40):
            trial = ~accepted
            if not trial.any():
                break
            t = np.maximum(xi[trial] + alpha[trial, None] * step[trial], lower)
            ft = crit(t, idx[trial])
            ok = ft <= fi[trial]
            sel = np.flatnonzero(trial)[ok]
            x_new[sel], f_new[sel] = t[ok], ft[ok]
            accepted[sel] = True
            alpha[trial] *= 0.5
        moved = np.abs(x_new - xi).max(axis=1)
        gain = fi - f_new
        x[idx], f[idx] = x_new, f_new
        todo[idx] = (gain > 1e-13 * (1.0 + np.abs(fi))) | (moved > 1e-10)
        todo[idx[~accepted]] = False
    return x, f
