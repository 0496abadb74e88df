"""ComBat on Dask arrays: the numerical core of :mod:`imharmony.features.combat`, block by block.

The data (samples x features) are cut into blocks of features holding every sample. Each step of
the core that looks at one feature at a time runs on a block: the per-feature least squares and
residual moments (:func:`~imharmony.features.combat.chunk_moments`), the standardization and the
per-batch location/scale estimates (:func:`~imharmony.features.combat.standardize`), the
posterior (:func:`~imharmony.features.combat.posterior`) and the correction
(:func:`~imharmony.features.combat.apply_combat`). What couples features is reduced over blocks:

* whether any usable feature has a missing value (R's divisor of the pooled variance): ``any``;
* the empirical Bayes priors (mean and variance over features of gamma_hat and delta_hat, per
  batch): partial sums per block, added, then the sums of squared deviations from that mean (the
  same two-pass variance numpy computes in memory);
* the stopping iteration of the parametric EB (the largest relative change over all features):
  every block records the largest change of each iteration up to a horizon, the maxima over
  blocks give the iteration at which the in-memory fixed point stops, and every block then runs
  exactly that many iterations.

The estimates therefore equal the in-memory ones up to the order of floating-point sums
(relative differences around 1e-15). The data are read once for the moments (kept, per block, as
``5 n_batches + n_covariates + 1`` rows: a few percent of the data) and once to correct them.

Which members of the ComBat family this allows
----------------------------------------------
* ComBat, parametric / mean-only / without EB, with a reference batch and covariates: blocks, as
  above (any size).
* Non-parametric EB: its prior for a feature averages over all other features (features x
  features work), so the per-feature statistics (not the data) are gathered in memory; the data
  still stay on disk. Practical for feature tables, not for millions of voxels.
* GAM covariates (spline bases) with a given penalty: the design is still linear and shared by
  all features, so the same block maths applies; a penalty chosen per feature by cross-validation
  also works per block. CovBat: the principal components of the residuals need a features x
  features covariance (a distributed SVD, ``dask.array.linalg.svd_compressed``), not per-block
  maths. Longitudinal ComBat: its mixed models are fitted per feature, so blocks apply. Only
  ComBat itself is wired to Dask here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DataError
from ..features.combat import (
    CombatFit,
    Method,
    apply_combat,
    check_adjustable,
    chunk_has_missing,
    chunk_moments,
    fit_from_standardized,
    missing_columns,
    posterior,
    prior_sums,
    priors_from_sums,
    reasons_of,
    standardize,
    warn_not_converged,
)

__all__ = [
    "apply_dask",
    "estimate_rows",
    "first_pass",
    "fit_dask",
    "fit_moments",
    "is_dask_array",
    "moment_rows",
    "pack_moments",
    "unpack_estimates",
]

logger = logging.getLogger(__name__)

#: First horizon of the parametric EB trace (grown x4 while a batch has not stopped).
_HORIZON = 8


def is_dask_array(X: Any) -> bool:
    """Whether X is a ``dask.array.Array`` (without importing Dask when it is not loaded)."""
    import sys

    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


# --------------------------------------------------------------------------------------------
# packing the per-block dictionaries into arrays (one Dask block = one ndarray)


def _moment_rows(J: int, q: int) -> list[tuple[str, int]]:
    return [("Bb", J), ("beta", q), ("rsum", J), ("rss", J), ("n", J), ("constant", J),
            ("unusable", 1)]


def _estimate_rows(J: int, q: int) -> list[tuple[str, int]]:
    return [("grand_mean", 1), ("var_pooled", 1), ("beta", q), ("gamma_hat", J),
            ("delta_hat", J), ("gamma_star", J), ("delta_star", J), ("reason", 1)]


def _n_rows(rows: list[tuple[str, int]]) -> int:
    return sum(k for _, k in rows)


def _pack(parts: dict[str, np.ndarray], rows: list[tuple[str, int]], G: int) -> np.ndarray:
    out = np.empty((_n_rows(rows), G))
    r = 0
    for name, k in rows:
        out[r : r + k] = np.asarray(parts[name], dtype=np.float64).reshape(k, G)
        r += k
    return out


def _unpack(block: np.ndarray, rows: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    parts: dict[str, np.ndarray] = {}
    r = 0
    for name, k in rows:
        parts[name] = block[r : r + k]
        r += k
    return parts


def _moments(block: np.ndarray, J: int, q: int) -> dict[str, np.ndarray]:
    mom = _unpack(block, _moment_rows(J, q))
    mom["constant"] = mom["constant"].astype(bool)
    mom["unusable"] = mom["unusable"][0].astype(bool)
    return mom


def moment_rows(n_batches: int, n_covariates: int) -> int:
    """How many rows a block of :func:`pack_moments` has."""
    return _n_rows(_moment_rows(int(n_batches), int(n_covariates)))


def estimate_rows(n_batches: int, n_covariates: int) -> dict[str, slice]:
    """Where each named estimate lies among the rows of :func:`fit_dask`'s ``estimates``."""
    rows, r = {}, 0
    for name, k in _estimate_rows(n_batches, n_covariates):
        rows[name] = slice(r, r + k)
        r += k
    return rows


def unpack_estimates(block: np.ndarray, n_batches: int, n_covariates: int) -> dict[str, Any]:
    """The named estimates of a block of :func:`fit_dask`'s ``estimates`` (features as columns)."""
    est = _unpack(np.asarray(block), _estimate_rows(n_batches, n_covariates))
    est["grand_mean"] = est["grand_mean"][0]
    est["var_pooled"] = est["var_pooled"][0]
    est["reason"] = est["reason"][0].astype(np.int8)
    est["adjusted"] = est["reason"] == 0
    return est


# --------------------------------------------------------------------------------------------
# block functions (run on the workers)


def _moments_block(x: np.ndarray, codes: np.ndarray, J: int, C: np.ndarray,
                   block_info: dict[Any, Any] | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    colsum = x.sum(axis=0)  # one pass finds the columns that may hold inf or NaN
    suspect = np.flatnonzero(~np.isfinite(colsum))
    bad = suspect[np.isinf(x[:, suspect]).any(axis=0)] if suspect.size else suspect
    if bad.size:
        first = 0 if block_info is None else block_info[0]["array-location"][1][0]
        cols = (bad[:5] + first).tolist()
        raise DataError(
            f"X: feature column(s) {cols} contain infinite values; replace them (NaN is accepted "
            "as missing and is ignored in estimation)."
        )
    mom = chunk_moments(x, codes, J, C, nan_columns=missing_columns(x, colsum))
    return _pack(mom, _moment_rows(J, C.shape[1]), x.shape[1])


def _standardized(block: np.ndarray, J: int, q: int, counts: np.ndarray, *, ref: int | None,
                  mean_only: bool, has_nan: bool) -> dict[str, np.ndarray]:
    return standardize(_moments(block, J, q), counts, ref=ref, mean_only=mean_only,
                       has_nan=has_nan)


def _has_nan_block(block: np.ndarray, J: int, q: int, counts: np.ndarray,
                   mean_only: bool) -> bool:
    return chunk_has_missing(_moments(block, J, q), counts, mean_only=mean_only)


def _prior_block(block: np.ndarray, J: int, q: int, counts: np.ndarray, std: dict[str, Any],
                 centre: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    return prior_sums(_standardized(block, J, q, counts, **std), std["mean_only"], centre)


def _first_block(block: np.ndarray, J: int, q: int, counts: np.ndarray,
                 std: dict[str, Any]) -> tuple[bool, np.ndarray]:
    """Whether the block has a usable feature with a missing value, and its first prior sums as
    if no block had one (the usual case: the pass is then not repeated)."""
    has_nan = _has_nan_block(block, J, q, counts, std["mean_only"])
    return has_nan, _prior_block(block, J, q, counts, std, None)


def _trace_block(block: np.ndarray, J: int, q: int, counts: np.ndarray, std: dict[str, Any],
                 priors: tuple[np.ndarray, ...], horizon: int, tol: float) -> np.ndarray:
    st = _standardized(block, J, q, counts, **std)
    trace = np.full((J, horizon), -np.inf)
    posterior(st, priors, method="parametric", mean_only=False, ref=std["ref"], tol=tol,
              steps=np.full(J, horizon), trace=trace)
    return trace


def _estimates_block(block: np.ndarray, J: int, q: int, counts: np.ndarray,
                     std: dict[str, Any], priors: tuple[np.ndarray, ...], method: Method,
                     steps: np.ndarray | None, tol: float) -> np.ndarray:
    st = _standardized(block, J, q, counts, **std)
    gs, ds, _, _ = posterior(st, priors, method=method, mean_only=std["mean_only"],
                             ref=std["ref"], tol=tol, steps=steps)
    parts = dict(st, grand_mean=st["grand"], gamma_star=gs, delta_star=ds)
    if std["mean_only"]:
        parts["delta_hat"] = np.ones_like(st["delta_hat"])
    return _pack(parts, _estimate_rows(J, q), block.shape[1])


def _apply_block(x: np.ndarray, est: np.ndarray, codes: np.ndarray, C: np.ndarray,
                 counts: np.ndarray, ref: int | None, dtype: Any) -> np.ndarray:
    J, q = counts.shape[0], C.shape[1]
    e = unpack_estimates(est, J, q)
    fit = CombatFit(
        batch_sizes=counts, grand_mean=e["grand_mean"], var_pooled=e["var_pooled"],
        beta=e["beta"], gamma_hat=e["gamma_hat"], delta_hat=e["delta_hat"],
        gamma_star=e["gamma_star"], delta_star=e["delta_star"], gamma_bar=np.full(J, np.nan),
        tau2=np.full(J, np.nan), a_prior=np.full(J, np.nan), b_prior=np.full(J, np.nan),
        adjusted=e["adjusted"], n_iter=np.zeros(J, dtype=int), converged=np.ones(J, dtype=bool),
    )
    out = apply_combat(np.asarray(x, dtype=np.float64), codes, fit, C, ref=ref)
    return out if dtype == np.float64 else out.astype(dtype)


# --------------------------------------------------------------------------------------------
# the two entry points


def fit_dask(
    X: Any,
    codes: np.ndarray,
    n_batches: int,
    C: np.ndarray | None = None,
    *,
    method: Method = "parametric",
    mean_only: bool = False,
    ref: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    stash: Callable[[Any, str], Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit ComBat on a Dask array, block by block over features.

    Parameters
    ----------
    X : dask.array.Array, shape (n_samples, n_features)
        Chunked over features (chunks over samples are merged: every block needs all samples).
    codes, n_batches, C, method, mean_only, ref, tol, max_iter
        As for :func:`imharmony.features.combat.fit_combat`.
    stash : callable, optional
        ``stash(array, name) -> array`` keeps an intermediate Dask array that is read several
        times (the per-feature moments), e.g. by writing it to a Zarr store and returning the
        array read back from it. By default it is persisted in (distributed) memory.

    Returns
    -------
    estimates : dask.array.Array, shape (4 n_batches + n_covariates + 3, n_features)
        Lazy per-feature estimates, one block per block of X; :func:`unpack_estimates` names the
        rows of a block and :func:`apply_dask` consumes them.
    info : dict
        ``batch_sizes``, ``gamma_bar``, ``tau2``, ``a_prior``, ``b_prior`` (per batch),
        ``n_iter``, ``converged`` (per batch), ``n_adjusted`` (int).
    """
    n = X.shape[0]
    J = int(n_batches)
    C = np.zeros((n, 0)) if C is None else np.asarray(C, dtype=np.float64)
    q = C.shape[1]
    X = X.rechunk({0: -1})
    mom = X.map_blocks(_moments_block, codes, J, C, dtype=np.float64,
                       chunks=((_n_rows(_moment_rows(J, q)),), X.chunks[1]), meta=np.empty((0, 0)))
    mom = stash(mom, "moments") if stash is not None else mom.persist()
    return fit_moments(mom, codes, J, q, method=method, mean_only=mean_only, ref=ref, tol=tol,
                       max_iter=max_iter)


def pack_moments(mom: dict[str, np.ndarray], n_batches: int, n_covariates: int) -> np.ndarray:
    """The per-feature moments of :func:`~imharmony.features.combat.chunk_moments` as one block
    of the array :func:`fit_moments` takes (features as columns)."""
    return _pack(mom, _moment_rows(n_batches, n_covariates), mom["Bb"].shape[1])


def first_pass(block: np.ndarray, batch_sizes: np.ndarray, n_covariates: int, *,
               mean_only: bool = False, ref: int | None = None) -> tuple[bool, np.ndarray]:
    """The first pass of :func:`fit_moments` over one block of :func:`pack_moments`: whether the
    block has a usable feature with a missing value, and its first prior sums.

    A caller that makes the blocks of the moments itself can compute this where it holds each
    block and give the results, in block order, to ``fit_moments(..., first_passes=...)``: one pass
    over the stored moments fewer.
    """
    counts = np.asarray(batch_sizes)
    std = {"ref": ref, "mean_only": mean_only, "has_nan": False}
    return _first_block(block, counts.shape[0], int(n_covariates), counts, std)


def fit_moments(
    mom: Any,
    codes: np.ndarray,
    n_batches: int,
    n_covariates: int,
    *,
    method: Method = "parametric",
    mean_only: bool = False,
    ref: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    first_passes: list[tuple[bool, np.ndarray]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The second half of :func:`fit_dask`: ComBat from per-feature moments.

    ``mom`` is a Dask array of blocks of :func:`pack_moments` (read several times: keep it
    stored or persisted); ``first_passes``, optional, the :func:`first_pass` of each of its
    blocks in order (with the same ``mean_only`` and ``ref``), spares the first pass over them.
    The other parameters and the result are those of :func:`fit_dask`.
    """
    import dask
    import dask.array as da

    J, q = int(n_batches), int(n_covariates)
    counts = np.bincount(codes, minlength=J)
    blocks = list(mom.to_delayed().ravel())
    call = dask.delayed(pure=True)

    std = {"ref": ref, "mean_only": mean_only, "has_nan": False}
    if method == "nonparametric":
        has_nan = any(dask.compute(*[call(_has_nan_block)(b, J, q, counts, mean_only)
                                     for b in blocks]))
        first = None
    else:  # one pass for the missing-value flag and the first prior sums
        passes = first_passes if first_passes is not None else dask.compute(
            *[call(_first_block)(b, J, q, counts, std) for b in blocks])
        if len(passes) != len(blocks):
            raise ValueError(f"first_passes: {len(passes)} results for {len(blocks)} blocks")
        has_nan = any(flag for flag, _ in passes)
        first = None if has_nan else np.sum([sums for _, sums in passes], axis=0)
    std["has_nan"] = has_nan
    if method == "nonparametric":
        # its prior couples every pair of features: gather the per-feature statistics (small next
        # to the data) and finish in memory with the in-memory code
        st = standardize(_moments(mom.compute(), J, q), counts, **std)
        fit = fit_from_standardized(st, counts, method=method, mean_only=mean_only, ref=ref,
                                    tol=tol, max_iter=max_iter)
        est = _pack({"grand_mean": fit.grand_mean, "var_pooled": fit.var_pooled,
                     "beta": fit.beta, "gamma_hat": fit.gamma_hat, "delta_hat": fit.delta_hat,
                     "gamma_star": fit.gamma_star, "delta_star": fit.delta_star,
                     "reason": st["reason"]}, _estimate_rows(J, q), mom.shape[1])
        info = {"batch_sizes": counts, "gamma_bar": fit.gamma_bar, "tau2": fit.tau2,
                "a_prior": fit.a_prior, "b_prior": fit.b_prior, "n_iter": fit.n_iter,
                "converged": fit.converged, "n_adjusted": int(fit.adjusted.sum())}
        return da.from_array(est, chunks=((est.shape[0],), mom.chunks[1])), info

    if first is None:  # the pooled variance changes with a missing value: sums again
        first = np.sum(dask.compute(*[call(_prior_block)(b, J, q, counts, std, None)
                                      for b in blocks]), axis=0)
    n_keep = int(first[0][0])
    check_adjustable(n_keep, method, mean_only)
    if n_keep:
        centre = (first[1] / n_keep, first[2] / n_keep)
        second = np.sum(dask.compute(*[call(_prior_block)(b, J, q, counts, std, centre)
                                       for b in blocks]), axis=0)
        priors = priors_from_sums(first, second, mean_only)
    else:
        priors = tuple(np.full(J, np.nan) for _ in range(4))

    n_iter = np.zeros(J, dtype=int)
    converged = np.ones(J, dtype=bool)
    steps = None
    if method == "parametric" and not mean_only and n_keep:
        active = np.ones(J, dtype=bool)
        if ref is not None:
            active[ref] = False
        horizon = min(max_iter, _HORIZON)
        while True:
            traces = dask.compute(*[call(_trace_block)(b, J, q, counts, std, priors, horizon,
                                                       tol) for b in blocks])
            change = np.max(np.stack(traces), axis=0)  # (J, horizon): max over all features
            stops = change <= tol
            found = stops.any(axis=1)
            if found[active].all() or horizon >= max_iter:
                break
            horizon = min(max_iter, 4 * horizon)
        steps = np.where(found, stops.argmax(axis=1) + 1, max_iter)
        steps[~active] = 0
        converged = found | ~active
        n_iter = steps.copy()
        warn_not_converged(converged, tol, max_iter)
        logger.info("parametric EB stops after %s iterations per batch", steps.tolist())
    est = mom.map_blocks(_estimates_block, J, q, counts, std, priors, method, steps, tol,
                         dtype=np.float64, chunks=((_n_rows(_estimate_rows(J, q)),), mom.chunks[1]),
                         meta=np.empty((0, 0)))
    gamma_bar, tau2, a_prior, b_prior = priors
    info = {"batch_sizes": counts, "gamma_bar": gamma_bar, "tau2": tau2, "a_prior": a_prior,
            "b_prior": b_prior, "n_iter": n_iter, "converged": converged, "n_adjusted": n_keep}
    return est, info


def fit_to_memory(estimates: Any, info: dict[str, Any], n_covariates: int) -> CombatFit:
    """Compute the estimates of :func:`fit_dask` into an in-memory :class:`CombatFit`."""
    J = int(info["batch_sizes"].shape[0])
    e = unpack_estimates(estimates.compute(), J, n_covariates)
    return CombatFit(
        batch_sizes=info["batch_sizes"], grand_mean=e["grand_mean"], var_pooled=e["var_pooled"],
        beta=np.ascontiguousarray(e["beta"]), gamma_hat=e["gamma_hat"],
        delta_hat=e["delta_hat"], gamma_star=e["gamma_star"], delta_star=e["delta_star"],
        gamma_bar=info["gamma_bar"], tau2=info["tau2"], a_prior=info["a_prior"],
        b_prior=info["b_prior"], adjusted=e["adjusted"], n_iter=info["n_iter"],
        converged=info["converged"], reasons=reasons_of(e["reason"]),
    )


def pack_fit(fit: CombatFit) -> np.ndarray:
    """An in-memory :class:`CombatFit` as the estimate rows :func:`apply_dask` reads."""
    J, q, G = fit.n_batches, fit.beta.shape[0], fit.n_features
    reason = np.where(fit.adjusted, 0, 1)
    return _pack({"grand_mean": fit.grand_mean, "var_pooled": fit.var_pooled, "beta": fit.beta,
                  "gamma_hat": fit.gamma_hat, "delta_hat": fit.delta_hat,
                  "gamma_star": fit.gamma_star, "delta_star": fit.delta_star, "reason": reason},
                 _estimate_rows(J, q), G)


def apply_dask(
    X: Any,
    codes: np.ndarray,
    estimates: Any,
    batch_sizes: np.ndarray,
    C: np.ndarray | None = None,
    *,
    ref: int | None = None,
    dtype: Any = np.float64,
) -> Any:
    """Correct a Dask array block by block; returns a lazy Dask array of X's shape and chunks.

    Parameters
    ----------
    X : dask.array.Array, shape (n_samples, n_features)
    codes : ndarray of int, shape (n_samples,)
    estimates : dask.array.Array or ndarray, shape (4 n_batches + n_covariates + 3, n_features)
        From :func:`fit_dask` (or :func:`pack_fit` of an in-memory fit).
    batch_sizes : ndarray of int, shape (n_batches,)
    C : ndarray, shape (n_samples, n_covariates), optional
    ref : int, optional
    dtype : dtype
        Of the result (the correction is computed in float64).
    """
    import dask.array as da

    n = X.shape[0]
    C = np.zeros((n, 0)) if C is None else np.asarray(C, dtype=np.float64)
    X = X.rechunk({0: -1})
    if not is_dask_array(estimates):
        estimates = da.from_array(np.asarray(estimates), chunks=(-1, X.chunks[1]))
    else:
        estimates = estimates.rechunk((-1, X.chunks[1]))
    return da.map_blocks(_apply_block, X, estimates, codes, C, np.asarray(batch_sizes), ref,
                         np.dtype(dtype), dtype=dtype, chunks=X.chunks,
                         meta=np.empty((0, 0), dtype=dtype))
