"""ComBat: the numerical core (one implementation; every adapter calls it).

The model (Johnson, Li & Rabinovic 2007), for sample ``i`` of batch (site) ``j`` and feature ``g``::

    x_ig = alpha_g + C_i beta_g + gamma_jg + sqrt(delta_jg) * eps_ig,   eps_ig ~ N(0, sigma_g^2)

Location (gamma) and scale (delta) site effects are estimated per feature, then shrunk by empirical
Bayes toward priors pooled over all features of the same batch. Everything here works on plain
float64 arrays in samples x features orientation; validation, labels, names and persistence live in
:mod:`imharmony.features.estimators`.

Parity with R ``sva::ComBat`` (the reference implementation) is a design goal to a relative error
of 1e-8; the places where that requires reproducing a detail of R's estimator are marked "R:".

Memory and speed: fitting reads the data twice in row blocks that fit in cache (the design's
cross-products and per-batch extremes, then per-batch residual moments); the empirical Bayes step
works on per-batch sufficient statistics only (no pass over the data per iteration); applying reads
once and writes once. Nothing of the size of the data is allocated except the output.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import linalg

from .._threads import cpu_threads
from ..errors import ConvergenceWarning, DataError, DesignError

__all__ = ["CombatFit", "apply_combat", "fit_combat"]

logger = logging.getLogger(__name__)

Method = Literal["parametric", "nonparametric", "none"]

#: Bytes of one row block (kept well inside the L2/L3 cache of ordinary CPUs).
_BLOCK_BYTES = 1 << 21


@dataclass
class CombatFit:
    """Everything ComBat learns from training data (arrays are batches x features or features).

    Attributes
    ----------
    batch_sizes : ndarray of int, shape (n_batches,)
        Training samples per batch.
    grand_mean : ndarray, shape (n_features,)
        alpha_g: the batch coefficients averaged with weights n_j / n (with a reference batch, that
        batch's coefficient).
    var_pooled : ndarray, shape (n_features,)
        sigma_g^2, the pooled residual variance.
    beta : ndarray, shape (n_covariates, n_features)
        Covariate effects to preserve (columns of the encoded covariate matrix).
    gamma_hat, delta_hat : ndarray, shape (n_batches, n_features)
        Per-batch location and scale estimates on standardized data.
    gamma_star, delta_star : ndarray, shape (n_batches, n_features)
        Their empirical Bayes (or plain, when ``method="none"``) adjusted values used to correct.
    gamma_bar, tau2, a_prior, b_prior : ndarray, shape (n_batches,)
        Hyper-parameters of the priors (NaN where not used).
    adjusted : ndarray of bool, shape (n_features,)
        False for features left unchanged (zero variance or too few values inside a batch).
    n_iter : ndarray of int, shape (n_batches,)
        Iterations of the parametric EB fixed point per batch (0 when not iterated).
    converged : ndarray of bool, shape (n_batches,)
    """

    batch_sizes: np.ndarray
    grand_mean: np.ndarray
    var_pooled: np.ndarray
    beta: np.ndarray
    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    gamma_bar: np.ndarray
    tau2: np.ndarray
    a_prior: np.ndarray
    b_prior: np.ndarray
    adjusted: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def n_batches(self) -> int:
        return int(self.batch_sizes.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.grand_mean.shape[0])


# --------------------------------------------------------------------------------------------
# helpers


def _row_blocks(rows: np.ndarray, n_cols: int) -> Iterator[np.ndarray]:
    """Split row indices into blocks of about ``_BLOCK_BYTES`` of float64 data."""
    step = max(1, _BLOCK_BYTES // (8 * max(n_cols, 1)))
    for start in range(0, rows.shape[0], step):
        yield rows[start : start + step]


def _panels(X: np.ndarray, batch_rows: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray, slice]]:
    """Cache-sized panels ``(batch, rows, columns)`` covering X, following its memory layout.

    Row-major data are cut into blocks of rows of one batch spanning all columns; column-major
    data (what ``DataFrame.to_numpy`` returns) into slabs of columns spanning one batch's rows, so
    every panel is read from contiguous memory.
    """
    n, G = X.shape
    if X.flags.f_contiguous and not X.flags.c_contiguous:
        width = max(1, _BLOCK_BYTES // (8 * max(n, 1)))
        for c0 in range(0, G, width):
            cols = slice(c0, min(G, c0 + width))
            for j, rows in enumerate(batch_rows):
                if rows.size:
                    yield j, rows, cols
    else:
        for j, rows in enumerate(batch_rows):
            for blk in _row_blocks(rows, G):
                yield j, blk, slice(None)


def _contiguous(rows: np.ndarray) -> bool:
    return bool(rows.shape[0]) and rows[-1] - rows[0] + 1 == rows.shape[0]


def _take(X: np.ndarray, rows: np.ndarray, cols: slice, buf: np.ndarray) -> np.ndarray:
    """A panel of X: a view when its rows are contiguous, else gathered into ``buf``.

    ``buf`` is one flat scratch array reused for every panel, so the loop does not allocate (and
    page-fault) a new block each time.
    """
    if _contiguous(rows):
        return X[rows[0] : rows[-1] + 1, cols]
    src = X if cols == slice(None) else X[:, cols]
    out = _view(buf, (rows.shape[0], src.shape[1]))
    return np.take(src, rows, axis=0, out=out)


def _covariate_term(c: np.ndarray, beta: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``c @ beta`` into ``out`` for a few covariates: broadcast multiply-adds, which are several
    times faster than a BLAS product whose inner dimension is 1 or 2."""
    q = c.shape[1]
    if q > 4:
        return np.matmul(c, beta, out=out)
    np.multiply(c[:, :1], beta[0], out=out)
    for k in range(1, q):
        out += c[:, k : k + 1] * beta[k]
    return out


def _view(buf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A C-ordered array of ``shape`` on the front of the flat scratch ``buf``."""
    return buf[: shape[0] * shape[1]].reshape(shape)


def _scratch(X: np.ndarray, batch_rows: list[np.ndarray]) -> np.ndarray:
    """A flat scratch array as large as the largest panel of X (see :func:`_panels`)."""
    n, G = X.shape
    largest_batch = max((rows.shape[0] for rows in batch_rows), default=0)
    if X.flags.f_contiguous and not X.flags.c_contiguous:
        width = max(1, _BLOCK_BYTES // (8 * max(n, 1)))
        size = largest_batch * min(width, G)
    else:
        step = max(1, _BLOCK_BYTES // (8 * max(G, 1)))
        size = min(step, largest_batch) * G
    return np.empty(size)


def _design_gram(codes: np.ndarray, n_batches: int, C: np.ndarray) -> np.ndarray:
    """D^T D for D = [batch indicators | C] without forming D."""
    q = C.shape[1]
    p = n_batches + q
    gram = np.zeros((p, p))
    counts = np.bincount(codes, minlength=n_batches).astype(float)
    gram[np.arange(n_batches), np.arange(n_batches)] = counts
    if q:
        csum = np.zeros((n_batches, q))
        np.add.at(csum, codes, C)
        gram[:n_batches, n_batches:] = csum
        gram[n_batches:, :n_batches] = csum.T
        gram[n_batches:, n_batches:] = C.T @ C
    return gram


def missing_columns(X: np.ndarray, colsum: np.ndarray | None = None) -> np.ndarray:
    """Indices of the columns of X holding NaN (one pass, or none when column sums are given)."""
    if colsum is None:
        colsum = X.sum(axis=0)
    suspect = np.flatnonzero(np.isnan(colsum))
    if suspect.size:
        suspect = suspect[np.isnan(X[:, suspect]).any(axis=0)]
    return suspect


def check_design(codes: np.ndarray, n_batches: int, C: np.ndarray) -> None:
    """Raise :class:`DesignError` naming the covariate columns that make the design singular.

    The design is ``[batch indicators | C]``; its columns are added one at a time and the first
    covariate that does not raise the rank (a covariate constant within every batch, a linear
    combination of sites and other covariates) is reported by position (the estimator layer
    translates positions into column names).
    """
    n = codes.shape[0]
    q = C.shape[1]
    p = n_batches + q
    if n <= p:
        raise DesignError(
            f"{n} samples cannot estimate {n_batches} batch effects and {q} covariate effects "
            f"({p} parameters): give more samples or fewer covariates."
        )
    D = np.zeros((n, p))
    D[np.arange(n), codes] = 1.0
    D[:, n_batches:] = C
    # Scale columns so the rank decision does not depend on covariate units.
    norms = np.linalg.norm(D, axis=0)
    norms[norms == 0] = 1.0
    Dn = D / norms
    bad: list[int] = []
    rank = 0
    kept: list[int] = list(range(n_batches))
    rank = np.linalg.matrix_rank(Dn[:, kept])
    for k in range(q):
        trial = [*kept, n_batches + k]
        r = np.linalg.matrix_rank(Dn[:, trial])
        if r > rank:
            kept, rank = trial, r
        else:
            bad.append(k)
    if bad:
        raise _RankDeficient(bad)


class _RankDeficient(DesignError):
    """Internal: carries the positions of covariate columns that do not add rank."""

    def __init__(self, columns: list[int]) -> None:
        super().__init__(f"covariate columns {columns} are confounded with batch")
        self.columns = columns


# --------------------------------------------------------------------------------------------
# fit


def _moments_complete(
    X: np.ndarray,
    batch_rows: list[np.ndarray],
    C: np.ndarray,
    solve: Callable[[np.ndarray], np.ndarray],
) -> dict[str, np.ndarray]:
    """Design fit and per-batch residual moments from one pass over cache-sized panels.

    The pass accumulates, per batch, the sums, sums of squares and covariate cross-products of
    the data shifted by one sample (``y = x - K``; the shifted-data algorithm keeps the sums of
    squares free of cancellation); :func:`moments_from_sums` finishes. Columns holding missing
    values come out as NaN here; the caller recomputes them.
    """
    G = X.shape[1]
    J = len(batch_rows)
    q = C.shape[1]
    K = np.array(X[batch_rows[0][0]] if batch_rows[0].size else X[0], dtype=np.float64)
    sy = np.zeros((J, G))
    syy = np.zeros((J, G))
    scy = np.zeros((J, q, G))
    buf, buf2 = _scratch(X, batch_rows), _scratch(X, batch_rows)
    for j, rows, cols in _panels(X, batch_rows):
        xb = _take(X, rows, cols, buf)
        y = np.subtract(xb, K[cols], out=_view(buf2, xb.shape))
        sy[j, cols] += y.sum(axis=0)
        syy[j, cols] += np.einsum("ij,ij->j", y, y)
        if q:
            scy[j, :, cols] += C[rows].T @ y
    mom, lossy, candidates = moments_from_sums(sy, syy, scy, K, batch_rows, C, solve)
    for g in np.flatnonzero(lossy):  # exact residuals for the ill-conditioned few
        rss_exact(X[:, g], batch_rows, C, mom["Bb"][:, g], mom["beta"][:, g], mom["rss"][:, g])
    # A feature constant inside a batch has a raw within-batch sum of squares of zero up to
    # rounding; the few candidates are then checked exactly (max == min), as R does.
    constant = mom["constant"]
    for j, g in zip(*np.nonzero(candidates), strict=True):
        col = X[batch_rows[j], g]
        constant[j, g] = bool(col.max() == col.min())
    return mom


def moments_from_sums(
    sy: np.ndarray,
    syy: np.ndarray,
    scy: np.ndarray,
    K: np.ndarray,
    batch_rows: list[np.ndarray],
    C: np.ndarray,
    solve: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Design fit and per-batch residual moments of features from shifted sums.

    Parameters
    ----------
    sy, syy : ndarray, shape (n_batches, G)
        Per batch, the sums and sums of squares of ``y = x - K`` over the batch's samples.
    scy : ndarray, shape (n_batches, q, G)
        Per batch, the sums of ``C_i y_i``.
    K : ndarray, shape (G,)
        The shift (one sample's values: the shifted-data algorithm).
    batch_rows, C, solve
        The samples of each batch, the covariates and the solver of the design's normal equations.

    Returns
    -------
    mom : dict
        As :func:`chunk_moments` (``constant`` all False: see ``candidates``; ``unusable`` absent).
    lossy : ndarray of bool, shape (G,)
        Features where the algebraic residual sum of squares loses more than about eight digits
        (covariates explaining nearly all of the variance): recompute ``rss`` with
        :func:`rss_exact`.
    candidates : ndarray of bool, shape (n_batches, G)
        Batches and features whose within-batch sum of squares is zero up to rounding: constant
        when the batch's values have ``max == min`` (checked exactly by the caller, as R does).
    """
    J, G = sy.shape
    q = C.shape[1]
    counts = np.array([rows.shape[0] for rows in batch_rows], dtype=float)
    rhs = np.vstack([sy, scy.sum(axis=0)]) if q else sy
    B = solve(rhs)
    Bs, beta = B[:J], B[J:]  # batch coefficients of the shifted data, covariate effects
    # residual sums and sums of squares per batch, from the moments
    rsum = sy - counts[:, None] * Bs
    rss = syy - 2.0 * Bs * sy + counts[:, None] * Bs**2
    if q:
        sc = np.stack([C[rows].sum(axis=0) for rows in batch_rows])  # (J, q)
        scc = np.stack([C[rows].T @ C[rows] for rows in batch_rows])  # (J, q, q)
        cb = sc @ beta  # (J, G): sum_i C_i beta per batch
        rsum -= cb
        rss += 2.0 * Bs * cb - 2.0 * np.einsum("jqg,qg->jg", scy, beta)
        rss += np.einsum("jqr,qg,rg->jg", scc, beta, beta)
    with np.errstate(invalid="ignore", divide="ignore"):
        ss_raw = syy - sy**2 / counts[:, None]
        lossy = ~(rss.sum(axis=0) > 1e-8 * syy.sum(axis=0))
    lossy &= np.isfinite(syy).all(axis=0)
    candidates = (ss_raw <= 64 * np.finfo(float).eps * syy) & (counts[:, None] > 1)
    mom = {
        "Bb": Bs + K,
        "beta": beta,
        "rsum": rsum,
        "rss": rss,
        "n": np.repeat(counts[:, None], G, axis=1),
        "constant": np.zeros((J, G), dtype=bool),
    }
    return mom, lossy, candidates


def rss_exact(x: np.ndarray, batch_rows: list[np.ndarray], C: np.ndarray, Bb: np.ndarray,
              beta: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per-batch residual sums of squares of one feature ``x`` from explicit residuals."""
    for j, rows in enumerate(batch_rows):
        r = x[rows] - Bb[j]
        if C.shape[1]:
            r -= C[rows] @ beta
        out[j] = r @ r
    return out


def _moments_missing(
    Xm: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray,
    penalty: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-feature least squares on the observed values, for columns with missing values.

    ``penalty`` (one ``q x q`` matrix per column, over the covariate columns) is added to each
    column's normal equations (penalized spline terms).
    """
    n, G = Xm.shape
    q = C.shape[1]
    p = n_batches + q
    obs = ~np.isnan(Xm)
    X0 = np.where(obs, Xm, 0.0)
    D = np.zeros((n, p))
    D[np.arange(n), codes] = 1.0
    D[:, n_batches:] = C
    # (D^T W_g D) for every feature g at once: (p*p, n) @ (n, G)
    outer = (D[:, :, None] * D[:, None, :]).reshape(n, p * p)
    grams = (outer.T @ obs).T.reshape(G, p, p)
    if penalty is not None:
        grams[:, n_batches:, n_batches:] += penalty
    rhs = (D.T @ X0).T[:, :, None]
    try:
        B = np.linalg.solve(grams, rhs)[:, :, 0].T  # (p, G)
    except np.linalg.LinAlgError:
        B = np.full((p, G), np.nan)
        for g in range(G):
            try:
                B[:, g] = np.linalg.solve(grams[g], rhs[g, :, 0])
            except np.linalg.LinAlgError:
                pass  # reported as not estimable below
    Bb, beta = B[:n_batches], B[n_batches:]
    resid = Xm - Bb[codes]
    if q:
        resid -= C @ beta
    onehot = np.zeros((n_batches, n))
    onehot[codes, np.arange(n)] = 1.0
    r0 = np.where(obs, resid, 0.0)
    cnt = onehot @ obs
    with np.errstate(invalid="ignore"):
        vmin = np.stack([np.fmin.reduce(Xm[codes == j], axis=0) for j in range(n_batches)])
        vmax = np.stack([np.fmax.reduce(Xm[codes == j], axis=0) for j in range(n_batches)])
    counts = np.bincount(codes, minlength=n_batches)
    return {
        "Bb": Bb,
        "beta": beta,
        "rsum": onehot @ r0,
        "rss": onehot @ (r0 * r0),
        "n": cnt,
        "constant": (vmin == vmax) & (counts > 1)[:, None],
        "singular": ~np.isfinite(B).all(axis=0),
    }


def _parametric_eb(
    gamma_hat: np.ndarray,
    delta_hat: np.ndarray,
    ss_centered: np.ndarray,
    n: np.ndarray,
    gamma_bar: np.ndarray,
    tau2: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    active: np.ndarray,
    tol: float,
    max_iter: int,
    *,
    steps: np.ndarray | None = None,
    trace: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed point of the posterior mean of gamma and the posterior variance of delta, per batch.

    Works on sufficient statistics only: sum_i (s_i - g)^2 = SS_centered + n (mean - g)^2.
    R: the stopping rule is R's ``max(abs(new - old) / old) <= tol`` over both parameters, per
    batch, including its signed denominator, so the iteration stops where R's does.
    With ``steps`` (per batch) the iteration runs exactly that many times instead; ``trace``
    (batches x horizon) then receives each iteration's largest relative change.
    """
    J = gamma_hat.shape[0]
    g_old = gamma_hat.copy()
    d_old = delta_hat.copy()
    n_iter = np.zeros(J, dtype=int)
    converged = np.ones(J, dtype=bool)
    # the batches are independent: each runs its own fixed point on rows of the arrays, with the
    # per-feature constants of its update computed once and the iteration done in place
    buf = [np.empty(gamma_hat.shape[1]) for _ in range(4)]
    for j in np.flatnonzero(active):
        limit = max_iter if steps is None else int(steps[j])
        if limit <= 0:
            continue
        nj, gh, ss = n[j], gamma_hat[j], ss_centered[j]
        tn = tau2[j] * nj  # tau2 n
        tng = tn * gh  # tau2 n gamma_hat
        half = nj / 2.0 + a[j] - 1.0
        gj, dj = g_old[j], d_old[j]
        g_new, d_new, rel, work = buf
        while True:
            # gamma* = (tau2 n gamma_hat + delta gamma_bar) / (tau2 n + delta)
            np.multiply(dj, gamma_bar[j], out=g_new)
            g_new += tng
            np.add(tn, dj, out=work)
            g_new /= work
            # delta* = (sum_i (s_i - gamma*)^2 / 2 + b) / (n / 2 + a - 1)
            np.subtract(gh, g_new, out=work)
            np.square(work, out=work)
            work *= nj
            work += ss
            np.multiply(0.5, work, out=d_new)
            d_new += b[j]
            d_new /= half
            change = max(_largest_relative_change(g_new, gj, rel),
                         _largest_relative_change(d_new, dj, rel))
            gj[:] = g_new
            dj[:] = d_new
            if trace is not None:
                trace[j, n_iter[j]] = change
            n_iter[j] += 1
            if n_iter[j] >= limit:
                converged[j] = steps is not None or change <= tol
                break
            if steps is None and change <= tol:
                break
    return g_old, d_old, n_iter, converged


def _largest_relative_change(new: np.ndarray, old: np.ndarray, out: np.ndarray) -> float:
    """R's ``max(abs(new - old) / old)`` over the features (signed denominator; NaN ignored, 0
    when every value is NaN)."""
    np.subtract(new, old, out=out)
    np.abs(out, out=out)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, old, out=out)
    value = float(np.fmax.reduce(out)) if out.size else 0.0
    return 0.0 if np.isnan(value) else value


def _nonparametric_eb(
    gamma_hat: np.ndarray,
    delta_hat: np.ndarray,
    ss_centered: np.ndarray,
    n: np.ndarray,
    max_bytes: int = _BLOCK_BYTES,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-parametric EB for one batch: likelihood-weighted averages over the other features.

    For feature g, gamma*_g and delta*_g average (gamma_hat_k, delta_hat_k), k != g, with weights
    L_gk = prod_i N(s_ig; gamma_hat_k, delta_hat_k). The log-likelihood needs only the count, mean
    and centred sum of squares of feature g::

        log L_gk = -(n_g / 2) log delta_k - (SS_g + n_g (mean_g - gamma_k)^2) / (2 delta_k) + c_g

    which is a (features x 5) @ (5 x features) product. Each row is shifted by the analytic
    maximum of a Gaussian likelihood over (gamma, delta), -(n_g / 2)(log(SS_g / n_g) + 1), folded
    into the product, so the weights never overflow and need no pass for a row maximum; the rare
    rows whose weights all fall below the normal range are recomputed shifted by their own
    maximum. The computation therefore cannot underflow. R's direct product underflows for large
    batches (NaN) and, before that, enters the subnormal range where it loses digits.
    """
    G = gamma_hat.shape[0]
    g_star = np.empty(G)
    d_star = np.empty(G)
    inv2d = 0.5 / delta_hat
    V = np.stack(
        [np.log(delta_hat), inv2d, gamma_hat / delta_hat, gamma_hat**2 * inv2d, np.ones(G)]
    )  # (5, G)
    W = np.column_stack([gamma_hat, delta_hat, np.ones(G)])  # three weighted sums in one product
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -0.5 * n * (np.log(ss_centered / n) + 1.0)
    bound = np.where(np.isfinite(bound), bound, 0.0)
    U = np.column_stack([-0.5 * n, -(ss_centered + n * gamma_hat**2), n * gamma_hat, -n, -bound])
    rows_per_block = max(1, min(_BLOCK_BYTES, max_bytes // max(threads, 1)) // (8 * G))

    def rows(first: int, last: int) -> None:
        buf = np.empty(min(rows_per_block, last - first) * G)
        for start in range(first, last, rows_per_block):
            stop = min(last, start + rows_per_block)
            w = _view(buf, (stop - start, G))
            np.matmul(U[start:stop], V, out=w)
            np.exp(w, out=w)
            w[np.arange(stop - start), np.arange(start, stop)] = 0.0  # k != g
            sums = w @ W
            weak = np.flatnonzero(~(sums[:, 2] > 1e-250))
            for r in weak:  # all weights tiny (or the bound was not finite): shift by the row max
                row = U[start + r] @ V
                row[start + r] = -np.inf
                row = np.exp(row - row.max())
                sums[r] = row @ W
            g_star[start:stop] = sums[:, 0] / sums[:, 2]
            d_star[start:stop] = sums[:, 1] / sums[:, 2]

    chunks = max(1, min(threads, G // 256))
    if chunks == 1:
        rows(0, G)
    else:  # numpy releases the GIL in exp and matmul: rows of the prior split across threads
        edges = np.linspace(0, G, chunks + 1).astype(int)
        with ThreadPoolExecutor(max_workers=chunks) as pool:
            list(pool.map(rows, edges[:-1], edges[1:]))
    return g_star, d_star


def fit_combat(
    X: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray | None = None,
    *,
    method: Method = "parametric",
    mean_only: bool = False,
    ref: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    nan_columns: np.ndarray | None = None,
    penalty: tuple[np.ndarray, np.ndarray] | None = None,
) -> CombatFit:
    """Estimate ComBat's site effects and their empirical Bayes adjustments.

    Parameters
    ----------
    X : ndarray of float64, shape (n_samples, n_features)
        Training data; NaN marks a missing value (ignored in estimation). Not modified.
    codes : ndarray of int, shape (n_samples,)
        Batch index of every sample, in ``range(n_batches)``; every batch must occur.
    n_batches : int
    C : ndarray of float64, shape (n_samples, n_covariates), optional
        Encoded covariates whose effects are preserved (no intercept column).
    method : {"parametric", "nonparametric", "none"}
        Empirical Bayes flavour; "none" corrects with the per-feature estimates themselves.
    mean_only : bool
        Adjust location only (delta* = 1).
    ref : int, optional
        Index of the reference batch: estimates are relative to it and it is left unchanged.
    tol, max_iter : float, int
        Stopping rule of the parametric fixed point; hitting ``max_iter`` emits a
        :class:`~imharmony.errors.ConvergenceWarning`.
    nan_columns : ndarray of int, optional
        Columns known to hold missing values (saves a pass over X when the caller has checked).
    penalty : (ndarray of shape (m, q, q), ndarray of int of shape (n_features,)), optional
        Quadratic penalties on the covariate effects (smooth spline terms, see
        :mod:`imharmony.features.gam`): the distinct matrices and the one of every feature.
        Feature g's coefficients then minimize ||x_g - D b||^2 + beta^T P_g beta; the site
        coefficients are never penalized, so everything after the fit is unchanged ComBat.

    Returns
    -------
    CombatFit

    Notes
    -----
    Standardized data are s_ig = (x_ig - alpha_g - C_i beta_g) / sigma_g; gamma_hat_jg is the
    mean of s over batch j and delta_hat_jg its variance (n - 1). The priors per batch are
    gamma ~ N(gamma_bar_j, tau2_j) and delta ~ InvGamma(a_j, b_j) with moments taken across
    features; the adjusted value is
    x* = (s - gamma*_j) / sqrt(delta*_j) * sigma_g + alpha_g + C_i beta_g.
    R: the pooled variance divides by n when the data have no missing value and switches to the
    n - 1 variance when any is missing, as ``sva::ComBat`` does.

    References
    ----------
    W. E. Johnson, C. Li, A. Rabinovic, "Adjusting batch effects in microarray expression data
    using empirical Bayes methods", Biostatistics 8(1):118-127, 2007.
    """
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(codes, minlength=n_batches)
    mom = chunk_moments(X, codes, n_batches, C, nan_columns=nan_columns, penalty=penalty)
    has_nan = chunk_has_missing(mom, counts, mean_only=mean_only)
    st = standardize(mom, counts, ref=ref, mean_only=mean_only, has_nan=has_nan)
    if method == "nonparametric":
        budget = max(X.nbytes // 2, 8 * X.shape[1])  # working memory: at most half the data's
    else:
        budget = 0
    return fit_from_standardized(
        st,
        counts,
        method=method,
        mean_only=mean_only,
        ref=ref,
        tol=tol,
        max_iter=max_iter,
        max_bytes=budget,
    )


# --------------------------------------------------------------------------------------------
# the pieces of fit_combat, shared with the chunked (Dask) adapter in imharmony.scale: every
# step that touches the data or one feature at a time works on any block of features; only the
# priors (means and variances over features) and the stopping rule of the parametric EB couple
# features, and both are computed from per-block partial results.

#: Why a feature is left unadjusted, by the code :func:`standardize` stores in ``reason``.
REASONS: dict[int, str] = {
    1: "the design is singular on its observed values (e.g. no value in a whole site); left "
    "unchanged in every site",
    2: "fewer than 2 observed values in a batch",
    3: "constant inside a batch (zero variance)",
    4: "zero pooled variance",
}


def design_solver(
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray,
    penalty: tuple[np.ndarray, np.ndarray] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """The solver of the design's normal equations (batch indicators and covariates) for the
    right-hand sides of many features at once (``penalty`` as for :func:`chunk_moments`)."""
    gram = _design_gram(codes, n_batches, C)
    if penalty is not None:
        from .gam import penalized_solver

        return penalized_solver(gram, n_batches, penalty)
    chol = linalg.cho_factor(gram)

    def solve(rhs: np.ndarray) -> np.ndarray:
        return linalg.cho_solve(chol, rhs, check_finite=False)

    return solve


def chunk_moments(
    X: np.ndarray,
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray | None = None,
    *,
    nan_columns: np.ndarray | None = None,
    penalty: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-feature least-squares fit and per-batch residual moments of a block of features.

    Parameters
    ----------
    X : ndarray of float64, shape (n_samples, n_block_features)
        All samples of some features (features are independent here, so any column block works).
    codes, n_batches, C
        As for :func:`fit_combat`.
    nan_columns : ndarray of int, optional
        Columns of ``X`` known to hold NaN (found with one pass when not given).
    penalty : (ndarray of shape (m, q, q), ndarray of int of shape (n_block_features,)), optional
        Quadratic penalties on the covariate effects, as for :func:`fit_combat`.

    Returns
    -------
    dict
        ``Bb`` (batches x features) batch coefficients, ``beta`` (covariates x features),
        ``rsum``, ``rss``, ``n`` (batches x features) residual sums, sums of squares and counts,
        ``constant`` (batches x features, bool) and ``unusable`` (features, bool: design
        singular on the observed values).
    """
    n, G = X.shape
    C = np.zeros((n, 0)) if C is None else np.asarray(C, dtype=np.float64)
    if nan_columns is None:
        nan_columns = missing_columns(X)
    nan_cols = np.asarray(nan_columns, dtype=np.intp)
    batch_rows = [np.flatnonzero(codes == j) for j in range(n_batches)]
    mom = _moments_complete(X, batch_rows, C, design_solver(codes, n_batches, C, penalty))
    mom["unusable"] = np.zeros(G, dtype=bool)
    if nan_cols.size:
        pen_cols = None if penalty is None else penalty[0][penalty[1][nan_cols]]
        mm = _moments_missing(X[:, nan_cols], codes, n_batches, C, pen_cols)
        mom["unusable"][nan_cols[mm.pop("singular")]] = True
        for key, value in mm.items():
            mom[key][:, nan_cols] = value
    return mom


def _usable(mom: dict[str, np.ndarray], mean_only: bool) -> np.ndarray:
    """Reason code per feature before the pooled variance is known (0 = usable)."""
    nobs = mom["n"]
    few = (nobs < 2).any(axis=0) if not mean_only else (nobs < 1).any(axis=0)
    constant = mom["constant"].any(axis=0)
    reason = np.zeros(nobs.shape[1], dtype=np.int8)
    reason[constant] = 3
    reason[few] = 2
    reason[mom["unusable"]] = 1
    return reason


def chunk_has_missing(mom: dict[str, np.ndarray], counts: np.ndarray, *, mean_only: bool) -> bool:
    """Whether a usable feature of the block has a missing value (R then changes the pooled
    variance's divisor for every feature, so the flag is reduced with ``any`` over blocks)."""
    missing = (mom["n"] != counts[:, None]).any(axis=0)
    return bool((missing & (_usable(mom, mean_only) == 0)).any())


def standardize(
    mom: dict[str, np.ndarray],
    counts: np.ndarray,
    *,
    ref: int | None,
    mean_only: bool,
    has_nan: bool,
) -> dict[str, np.ndarray]:
    """Grand mean, pooled variance and per-batch location/scale estimates of a block of features.

    Parameters
    ----------
    mom : dict
        Output of :func:`chunk_moments` for the block.
    counts : ndarray of int, shape (n_batches,)
        Samples per batch (all features).
    ref : int, optional
    mean_only : bool
    has_nan : bool
        Whether any usable feature of the whole data set has a missing value
        (:func:`chunk_has_missing` reduced with ``any``).

    Returns
    -------
    dict
        ``grand``, ``var_pooled`` (features), ``beta``, ``gamma_hat``, ``delta_hat``, ``ss_std``
        (centred sum of squares of the standardized data), ``nobs`` (batches x features), and
        ``reason`` (features, int8: 0 adjusted, else a key of :data:`REASONS`).
    """
    Bb, rsum, rss, nobs = mom["Bb"], mom["rsum"], mom["rss"], mom["n"]
    n = int(counts.sum())
    reason = _usable(mom, mean_only)
    # grand mean and pooled variance
    if ref is None:
        grand = (counts / n) @ Bb
    else:
        grand = Bb[ref].copy()
    rmean = np.divide(rsum, nobs, out=np.zeros_like(rsum), where=nobs > 0)
    ss_within = rss - nobs * rmean**2  # centred residual sum of squares per batch
    if ref is None:
        if has_nan:
            tot_n = nobs.sum(axis=0)
            tot_mean = rsum.sum(axis=0) / np.maximum(tot_n, 1)
            var_pooled = (rss.sum(axis=0) - tot_n * tot_mean**2) / (tot_n - 1)
        else:
            var_pooled = rss.sum(axis=0) / n
    else:
        if has_nan:
            var_pooled = ss_within[ref] / (nobs[ref] - 1)
        else:
            var_pooled = rss[ref] / counts[ref]
    # features whose pooled variance is zero cannot be standardized
    with np.errstate(invalid="ignore"):
        zero_var = ~(var_pooled > 0)
    reason[zero_var & (reason == 0)] = 4
    adjusted = reason == 0
    sd = np.sqrt(np.where(adjusted, var_pooled, 1.0))
    gamma_hat = (rmean + Bb - grand) / sd
    with np.errstate(divide="ignore", invalid="ignore"):
        delta_hat = ss_within / (nobs - 1) / sd**2
    return {
        "grand": grand,
        "var_pooled": var_pooled,
        "beta": mom["beta"],
        "gamma_hat": gamma_hat,
        "delta_hat": delta_hat,
        "ss_std": ss_within / sd**2,
        "nobs": nobs,
        "reason": reason,
    }


def prior_sums(
    st: dict[str, np.ndarray], mean_only: bool, centre: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Per-batch partial sums over the adjusted features of a block, for the priors.

    Without ``centre``: rows (count, sum gamma_hat, sum delta_hat); with ``centre`` = (mean of
    gamma_hat, mean of delta_hat) over all blocks: the sums of squared deviations from it (the
    two-pass variance, as numpy's ``var`` computes it). Shape (3, n_batches) or (2, n_batches).
    """
    keep = st["reason"] == 0
    gh = st["gamma_hat"][:, keep]
    dh = np.ones_like(gh) if mean_only else st["delta_hat"][:, keep]
    if centre is None:
        return np.stack([np.full(gh.shape[0], float(gh.shape[1])), gh.sum(axis=1), dh.sum(axis=1)])
    dg = gh - centre[0][:, None]
    dd = dh - centre[1][:, None]
    return np.stack([(dg * dg).sum(axis=1), (dd * dd).sum(axis=1)])


def priors_from_sums(
    first: np.ndarray, second: np.ndarray, mean_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gamma_bar, tau2, a, b) per batch from :func:`prior_sums` added over blocks."""
    count = first[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_bar = first[1] / count
        tau2 = second[0] / (count - 1) if count[0] > 1 else np.full(count.shape, np.nan)
        if mean_only or count[0] < 2:
            nan = np.full(count.shape, np.nan)
            return gamma_bar, tau2, nan, nan.copy()
        m = first[2] / count
        s2 = second[1] / (count - 1)
        a = (2.0 * s2 + m**2) / s2
        b = (m * s2 + m**3) / s2
    return gamma_bar, tau2, a, b


def posterior(
    st: dict[str, np.ndarray],
    priors: tuple[np.ndarray, ...],
    *,
    method: Method,
    mean_only: bool,
    ref: int | None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    steps: np.ndarray | None = None,
    trace: np.ndarray | None = None,
    max_bytes: int = _BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """gamma* and delta* (batches x features) of a block, given the priors over all features.

    ``steps`` (per batch) runs the parametric fixed point for exactly that many iterations
    instead of stopping by ``tol``: a block of features then reproduces the estimates of the
    whole data set once the global stopping iteration is known; ``trace`` (batches x horizon)
    receives the largest relative change of each iteration, whose maximum over blocks gives that
    iteration. The non-parametric prior averages over all features, so ``st`` must then hold
    every feature.

    Returns gamma_star, delta_star, n_iter, converged.
    """
    gamma_hat = st["gamma_hat"]
    J, G = gamma_hat.shape
    keep = np.flatnonzero(st["reason"] == 0)
    gamma_star = np.zeros((J, G))
    delta_star = np.ones((J, G))
    n_iter = np.zeros(J, dtype=int)
    converged = np.ones(J, dtype=bool)
    gamma_bar, tau2, a_prior, b_prior = priors
    if keep.size:
        gh = gamma_hat[:, keep]
        dh = np.ones_like(gh) if mean_only else st["delta_hat"][:, keep]
        ss = st["ss_std"][:, keep]
        nk = st["nobs"][:, keep]
        active = np.ones(J, dtype=bool)
        if ref is not None:
            active[ref] = False
        if method == "none":
            gs, ds = gh.copy(), dh.copy()
        elif method == "parametric":
            if mean_only:
                # R: posterior mean with n = 1 and unit variance.
                t = tau2[:, None]
                gs = (t * gh + gamma_bar[:, None]) / (t + 1.0)
                ds = np.ones_like(gh)
            else:
                gs, ds, n_iter, converged = _parametric_eb(
                    gh, dh, ss, nk, gamma_bar, tau2, a_prior, b_prior, active, tol, max_iter,
                    steps=steps, trace=trace,
                )
        elif method == "nonparametric":
            gs = np.zeros_like(gh)
            ds = np.ones_like(gh)
            threads = cpu_threads()
            batches = np.flatnonzero(active)
            # enough batches: one batch per thread; otherwise the rows of each batch are split
            per_batch = 1 if threads > 1 and batches.size >= threads else threads

            def prior(j: int) -> tuple[np.ndarray, np.ndarray]:
                return _nonparametric_eb(
                    gh[j], dh[j], ss[j], nk[j], max_bytes=max_bytes // threads, threads=per_batch
                )

            if per_batch == 1 and threads > 1:
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    results = list(pool.map(prior, batches))
            else:
                results = [prior(j) for j in batches]
            for j, (g_j, d_j) in zip(batches, results, strict=True):
                gs[j], ds[j] = g_j, d_j
            if mean_only:
                ds = np.ones_like(gh)
        else:  # pragma: no cover - validated by the estimator
            raise ValueError(f"unknown method {method!r}")
        gamma_star[:, keep] = gs
        delta_star[:, keep] = ds
    if ref is not None:
        gamma_star[ref] = 0.0
        delta_star[ref] = 1.0
    return gamma_star, delta_star, n_iter, converged


def check_adjustable(n_keep: int, method: Method, mean_only: bool) -> None:
    """Refuse empirical Bayes with fewer than 2 adjustable features (no prior to estimate)."""
    if n_keep >= 2 or n_keep == 0 or method == "none":
        return
    if method == "parametric" and not mean_only:
        raise DesignError(
            "empirical Bayes needs at least 2 adjustable features to estimate its "
            "priors; use method='none' (no EB) for a single feature."
        )
    if method == "nonparametric":
        raise DesignError("non-parametric empirical Bayes needs at least 2 adjustable features.")


def warn_not_converged(converged: np.ndarray, tol: float, max_iter: int) -> None:
    """One :class:`ConvergenceWarning` per batch whose parametric EB hit ``max_iter``."""
    for j in np.flatnonzero(~converged):
        warnings.warn(
            f"ComBat's empirical Bayes did not converge for batch #{j} within "
            f"max_iter={max_iter} iterations (tol={tol}); the estimates of the last "
            "iteration are used. Raise max_iter or check that batch's data.",
            ConvergenceWarning,
            stacklevel=5,
        )


def reasons_of(reason: np.ndarray, offset: int = 0) -> dict[int, str]:
    """Feature index -> why it was left unadjusted, from the codes of :func:`standardize`."""
    return {int(g) + offset: REASONS[int(reason[g])] for g in np.flatnonzero(reason)}


def fit_from_standardized(
    st: dict[str, np.ndarray],
    counts: np.ndarray,
    *,
    method: Method,
    mean_only: bool,
    ref: int | None,
    tol: float,
    max_iter: int,
    max_bytes: int = _BLOCK_BYTES,
) -> CombatFit:
    """The empirical Bayes step on the standardized estimates of all features, in memory."""
    first = prior_sums(st, mean_only)
    centre = (first[1] / np.maximum(first[0], 1), first[2] / np.maximum(first[0], 1))
    priors = priors_from_sums(first, prior_sums(st, mean_only, centre), mean_only)
    n_keep = int((st["reason"] == 0).sum())
    check_adjustable(n_keep, method, mean_only)
    if not n_keep:
        priors = tuple(np.full(counts.shape[0], np.nan) for _ in range(4))
    gamma_star, delta_star, n_iter, converged = posterior(
        st, priors, method=method, mean_only=mean_only, ref=ref, tol=tol, max_iter=max_iter,
        max_bytes=max_bytes,
    )
    warn_not_converged(converged, tol, max_iter)
    gamma_bar, tau2, a_prior, b_prior = priors
    return CombatFit(
        batch_sizes=counts,
        grand_mean=st["grand"],
        var_pooled=st["var_pooled"],
        beta=st["beta"],
        gamma_hat=st["gamma_hat"],
        delta_hat=np.ones_like(st["delta_hat"]) if mean_only else st["delta_hat"],
        gamma_star=gamma_star,
        delta_star=delta_star,
        gamma_bar=gamma_bar,
        tau2=tau2,
        a_prior=a_prior,
        b_prior=b_prior,
        adjusted=st["reason"] == 0,
        n_iter=n_iter,
        converged=converged,
        reasons=reasons_of(st["reason"]),
    )


# --------------------------------------------------------------------------------------------
# apply


def correction_coefficients(fit: CombatFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-batch, per-feature coefficients of the correction ``x* = a_j x + c_j + C b_j``.

    Parameters
    ----------
    fit : CombatFit
        Only ``grand_mean``, ``var_pooled``, ``beta``, ``gamma_star``, ``delta_star`` and
        ``adjusted`` are read.

    Returns
    -------
    scale : ndarray, shape (n_batches, n_features)
        a_j = 1 / sqrt(delta*_j) (1 where the feature is not adjusted).
    const : ndarray, shape (n_batches, n_features)
        c_j = alpha (1 - a_j) - sigma gamma*_j a_j (0 where not adjusted).
    beta : ndarray, shape (n_batches, n_covariates, n_features)
        b_j = beta (1 - a_j): the covariate term a_j (C beta) + (1 - a_j) C beta reduces to
        C (beta (1 - a_j)); 0 where not adjusted (a feature left unadjusted may have a NaN beta,
        e.g. no value in a whole site, which must not reach the output as 0 * NaN).
    """
    sd = np.sqrt(np.where(fit.adjusted, fit.var_pooled, 1.0))
    scale = 1.0 / np.sqrt(fit.delta_star)
    scale[:, ~fit.adjusted] = 1.0
    const = fit.grand_mean * (1.0 - scale) - sd * fit.gamma_star * scale
    const[:, ~fit.adjusted] = 0.0
    beta = np.stack([np.where(fit.adjusted, fit.beta * (1.0 - s), 0.0) for s in scale])
    return scale, const, beta.reshape(len(scale), fit.beta.shape[0], fit.n_features)


def correct_rows(
    x: np.ndarray,
    scale: np.ndarray,
    const: np.ndarray,
    c: np.ndarray,
    beta: np.ndarray,
    *,
    out: np.ndarray,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """``out = scale x + const + c beta`` for rows of one batch (:func:`correction_coefficients`).

    x, out : (rows, features); scale, const : (features,); c : (rows, q); beta : (q, features);
    scratch : (rows, features) when q > 0. Every element is computed the same way whatever rows
    and features the block holds, so blocks of rows or of features give the same numbers.
    """
    np.multiply(x, scale, out=out)
    out += const
    if c.shape[1]:
        work = np.empty(x.shape) if scratch is None else scratch
        out += _covariate_term(c, beta, out=work)
    return out


def apply_combat(
    X: np.ndarray,
    codes: np.ndarray,
    fit: CombatFit,
    C: np.ndarray | None = None,
    *,
    ref: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Correct samples with learned ComBat estimates (one read of X, one write of the output).

    Parameters
    ----------
    X : ndarray of float64, shape (n_samples, n_features)
        Samples to correct (training or new samples of the training batches). Not modified.
    codes : ndarray of int, shape (n_samples,)
    fit : CombatFit
    C : ndarray, shape (n_samples, n_covariates), optional
        Encoded covariates, same encoding as at fit.
    ref : int, optional
        Reference batch: its samples are returned exactly as given.
    out : ndarray, optional
        Where to write the result (may not be X).

    Returns
    -------
    ndarray of float64, shape (n_samples, n_features)
        x* = a_j (x - m) + m - k_j with m = alpha + C beta, a_j = 1 / sqrt(delta*_j) and
        k_j = sigma gamma*_j / sqrt(delta*_j): the same value as standardizing, removing
        gamma*, dividing by sqrt(delta*) and restoring scale and mean. Missing values stay
        missing; features not adjusted at fit pass through unchanged.

    Notes
    -----
    Rows are processed batch by batch in cache-sized blocks, so the per-batch coefficients
    broadcast as row vectors: with no covariates each element costs one multiply and one add.
    """
    X = np.asarray(X, dtype=np.float64)
    n, G = X.shape
    if G != fit.n_features:
        raise DataError(f"the model was fitted on {fit.n_features} features; X has {G}.")
    q = fit.beta.shape[0]
    C = np.zeros((n, 0)) if C is None else np.asarray(C, dtype=np.float64)
    if out is None:
        column_major = X.flags.f_contiguous and not X.flags.c_contiguous
        out = np.empty((n, G), order="F" if column_major else "C")
    scale, const, beta_j = correction_coefficients(fit)
    batch_rows = [np.flatnonzero(codes == j) for j in range(fit.n_batches)]
    if ref is not None and batch_rows[ref].size:
        out[batch_rows[ref]] = X[batch_rows[ref]]
        batch_rows[ref] = batch_rows[ref][:0]
    gathered = any(not _contiguous(rows) for rows in batch_rows if rows.size)
    buf = _scratch(X, batch_rows) if gathered else np.empty(0)
    buf2 = _scratch(X, batch_rows) if gathered else np.empty(0)
    buf3 = _scratch(X, batch_rows) if q else np.empty(0)
    for j, rows, cols in _panels(X, batch_rows):
        xb = _take(X, rows, cols, buf)
        direct = _contiguous(rows)
        ob = out[rows[0] : rows[-1] + 1, cols] if direct else _view(buf2, xb.shape)
        correct_rows(xb, scale[j, cols], const[j, cols], C[rows], beta_j[j][:, cols], out=ob,
                     scratch=_view(buf3, xb.shape) if q else None)
        if not direct:
            out[rows, cols] = ob
    return out
