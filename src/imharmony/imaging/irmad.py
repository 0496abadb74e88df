"""IR-MAD: iteratively reweighted multivariate alteration detection, and normalization with it.

IR-MAD (Nielsen 2007) finds the pixels of two co-registered multi-band acquisitions of one scene
that did not change, with no training data: a canonical correlation analysis (CCA) of the two
images gives MAD variates ``M_i = U_i − V_i`` whose squared, standardized sum is χ²-distributed
on unchanged pixels; the CCA is repeated with each pixel weighted by its probability of no change
until the canonical correlations settle. The no-change pixels are then the pseudo-invariant pixels
of relative radiometric normalization (Canty & Nielsen 2008): one orthogonal regression per band.

The defaults reproduce the author's public implementation (M. J. Canty's ``iMad.py`` and
``radcal.py``): the iteration stops when no canonical correlation changes by more than ``1e-3``
or after 50 iterations, weighted covariances are divided by ``Σw − 1``, the MAD variates are
"first image part minus second image part" with the **reference** as the first image, ordered as
his output (decreasing canonical correlation), with his sign conventions.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg, special
from threadpoolctl import threadpool_limits

from .._raster import apply_band_affine, as_raster, check_same_bands, nodata_pixels, valid_pixels
from ..errors import ConvergenceWarning, DataError
from ..image import Image
from .histogram import _history

__all__ = ["IRMADResult", "irmad", "irmad_normalize"]

logger = logging.getLogger(__name__)

#: The author's stopping rule: stop when no canonical correlation changes by more than this.
DEFAULT_TOL = 1e-3
#: The author's iteration cap.
DEFAULT_MAX_ITER = 50


@dataclass(frozen=True)
class IRMADResult:
    """Outcome of :func:`irmad`.

    ``S`` below is the spatial shape of the images (``img.shape[:-1]``) and ``B`` the number of
    bands. Invalid pixels (outside the mask, no-data, non-finite in either image) are NaN.

    Attributes
    ----------
    mad : ndarray, shape ``S + (B,)``
        The MAD variates ``M_i = U_i − V_i``: ``U_i`` the canonical variate of the **reference**,
        ``V_i`` that of the image (the author's convention: first scene minus second scene, the
        reference being the first), band ``i`` paired with ``canonical_correlations[i]``.
    chi2 : ndarray, shape ``S``
        ``Z = Σ_i (M_i / σ_i)²`` with ``σ_i = mad_sd[i]``; χ² with ``B`` degrees of freedom on
        unchanged pixels. Map or threshold it for change detection.
    no_change_probability : ndarray, shape ``S``
        ``P(χ²_B > Z)``: near 1 on unchanged land, near 0 on change.
    canonical_correlations : ndarray, shape (B,)
        ``ρ_i`` at the last iteration, in decreasing order (the author's order).
    mad_sd : ndarray, shape (B,)
        Standard deviations of the MAD variates, ``√(2(1 − ρ_i))``.
    rho_history : ndarray, shape (n_iter, B)
        The canonical correlations after each iteration (row ``k`` = iteration ``k + 1``).
    n_iter : int
        Iterations run.
    converged : bool
        Whether the last iteration changed no canonical correlation by more than ``tol``.
    last_change : float
        ``max_i |ρ_i − ρ_i^{previous}|`` at the last iteration.
    tol : float
        The tolerance the run used.
    """

    mad: np.ndarray
    chi2: np.ndarray
    no_change_probability: np.ndarray
    canonical_correlations: np.ndarray
    mad_sd: np.ndarray
    rho_history: np.ndarray
    n_iter: int
    converged: bool
    last_change: float
    tol: float

    def no_change(self, threshold: float = 0.95) -> np.ndarray:
        """Boolean map of the pixels whose no-change probability exceeds ``threshold``.

        This is the invariant (pseudo-invariant) set :func:`irmad_normalize` fits its gains on
        (the author's ``radcal`` rule, ``P > threshold``); invalid pixels are ``False``.
        """
        _check_threshold(threshold)
        with np.errstate(invalid="ignore"):
            return self.no_change_probability > float(threshold)

    def to_image(self, like: Image, *, probability: bool = False) -> Image:
        """The MAD variates and χ² as one raster, for :func:`~imharmony.io.rasters.write_raster`.

        Parameters
        ----------
        like : Image
            One of the two input images: the output takes its grid and georeference.
        probability : bool, default False
            Append the no-change probability as a last band.

        Returns
        -------
        Image
            float32, shape ``S + (B + 1,)`` (``B + 2`` with ``probability``): ``MAD1 … MADB,
            χ²`` — the layout of the author's ``MAD(...)`` output file.
        """
        if like.array.shape[:-1] != self.chi2.shape:
            raise DataError(
                f"like has spatial shape {like.array.shape[:-1]} but the IR-MAD result has "
                f"{self.chi2.shape}; pass one of the two images IR-MAD was run on."
            )
        layers = [self.mad, self.chi2[..., np.newaxis]]
        names = [f"MAD{i + 1}" for i in range(self.mad.shape[-1])] + ["chi2"]
        if probability:
            layers.append(self.no_change_probability[..., np.newaxis])
            names.append("no_change_probability")
        out = np.concatenate(layers, axis=-1).astype(np.float32)
        meta = {key: like.meta[key] for key in ("crs", "transform", "path") if key in like.meta}
        meta["band_descriptions"] = names
        meta["nodata"] = None
        return Image(
            out, spacing=like.spacing, origin=like.origin, direction=like.direction, meta=meta
        )


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise DataError(f"threshold must be a probability in (0, 1), got {threshold}.")


def _weighted_moments(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and covariance of the rows of ``z``, the covariance divided by ``Σw − 1``.

    ``Σw − 1`` is the author's normalization (his provisional-means accumulator).
    """
    sw = float(w.sum())
    if not sw > 1.0:
        raise DataError(
            f"IR-MAD: the no-change weights sum to {sw:.3g}; almost every pixel looks changed. "
            "Check that the images are co-registered views of the same scene."
        )
    mean = w @ z / sw
    cov = (z * w[:, None]).T @ z
    cov -= sw * np.outer(mean, mean)
    cov /= sw - 1.0
    return mean, cov


def _cca(cov: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations and vectors of the first ``p`` vs the last ``p`` variables.

    Returns ``rho`` (decreasing), ``A`` and ``B`` (p × p, columns the canonical vectors with
    unit-variance variates), with the author's signs: the correlations of each ``U_i`` with the
    first image's bands sum to a positive number, and ``corr(U_i, V_i) > 0``.
    """
    s11, s22, s12 = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    try:
        s22_inv_s21 = linalg.solve(s22, s12.T, assume_a="pos")
        mu2, a = linalg.eigh(s12 @ s22_inv_s21, s11)
    except (linalg.LinAlgError, ValueError) as exc:
        raise DataError(
            f"IR-MAD: the band covariance is singular ({exc}); a band is constant or two bands "
            "are identical inside the mask."
        ) from exc
    order = np.argsort(mu2)[::-1]
    mu2, a = mu2[order], a[:, order]
    rho = np.sqrt(np.clip(mu2, 0.0, 1.0))
    b = s22_inv_s21 @ a
    b /= np.sqrt(np.einsum("ij,ij->j", b, s22 @ b))
    # signs: Σ_j corr(X_j, U_i) > 0, then cov(U_i, V_i) > 0
    corr_sum = (s11 @ a / np.sqrt(np.diag(s11))[:, None]).sum(axis=0)
    a *= np.where(corr_sum < 0, -1.0, 1.0)
    b *= np.where(np.einsum("ij,ij->j", a, s12 @ b) < 0, -1.0, 1.0)
    return rho, a, b


def _chi2(z: np.ndarray, t: np.ndarray, shift: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``Σ_i ((z @ t − shift)_i / sd_i)²`` for every row of ``z``, without an n × B temporary
    beyond the MAD variates themselves."""
    mad = z @ t
    mad -= shift
    mad /= sd
    mad *= mad
    return mad.sum(axis=1)


def _no_change_probability(chi2: np.ndarray, dof: int) -> np.ndarray:
    """``P(χ²_dof > chi2)`` by its closed forms, with ``h = chi2 / 2``.

    Even ``dof``: ``e^{−h} Σ_{k<dof/2} h^k / k!``; odd ``dof``: ``erfc(√h) + e^{−h}
    Σ_{j=1}^{(dof−1)/2} h^{j−1/2} / Γ(j + 1/2)``. A few vectorized passes, several times faster
    than the general incomplete gamma function on millions of pixels.
    """
    h = chi2 / 2.0
    if dof % 2:
        total = special.erfc(np.sqrt(h))
        if dof == 1:
            return total
        term = np.sqrt(h) * (2.0 / math.sqrt(math.pi))  # h^{1/2} / Γ(3/2)
        series = term.copy()
        for j in range(1, (dof - 1) // 2):
            term *= h
            term /= j + 0.5
            series += term
        series *= np.exp(-h)
        total += series
        return total
    term = np.ones_like(h)
    total = np.ones_like(h)
    for k in range(1, dof // 2):
        term *= h
        term /= k
        total += term
    total *= np.exp(-h)
    return total


def irmad(
    img: Image,
    reference: Image,
    *,
    mask: Any = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    sample_size: int | None = None,
    random_state: int | np.random.Generator | None = None,
    zero_nodata: bool = True,
) -> IRMADResult:
    """Iteratively reweighted multivariate alteration detection (Nielsen 2007).

    Parameters
    ----------
    img, reference : Image, shape (..., B)
        Two co-registered acquisitions of the same scene (same shape; band axis last). The
        reference is the author's "first scene".
    mask : array_like of bool, shape ``img.shape[:-1]``, optional
        Pixels to use (default: all pixels valid in both images).
    max_iter : int, default 50
        Maximum number of iterations (the author's cap). When it is reached before the
        correlations settle, a :class:`~imharmony.errors.ConvergenceWarning` names the last
        change.
    tol : float, default 1e-3
        Stop when no canonical correlation changes by more than ``tol`` (the author's rule and
        value). A smaller value (e.g. ``1e-5``) iterates further.
    sample_size : int, optional
        Estimate the canonical transformation on this many randomly chosen valid pixels (default:
        all); the MAD variates and probabilities are then computed for every valid pixel.
    random_state : int or numpy Generator, optional
        Seed of the subsample (only used with ``sample_size``).
    zero_nodata : bool, default True
        Treat a pixel whose bands are all 0 in either image as no-data (the author's rule: 0 is
        the fill value of scenes outside the sensor's swath). Besides, pixels that are
        non-finite, or equal to ``meta["nodata"]`` in a band, are always no-data.

    Returns
    -------
    IRMADResult
        MAD variates, χ², no-change probability, canonical correlations per iteration.

    Notes
    -----
    With ``X`` the reference and ``Y`` the image, the weighted CCA gives canonical vectors ``a_i``,
    ``b_i`` with unit-variance variates ``U_i = aᵢᵀ(X − x̄)``, ``V_i = bᵢᵀ(Y − ȳ)`` and correlations
    ``ρ_i``. The MAD variates ``M_i = U_i − V_i`` are uncorrelated with variance ``2(1 − ρ_i)``, so
    on unchanged pixels ``Z = Σ_i M_i² / (2(1 − ρ_i))`` is χ² with ``B`` degrees of freedom and
    ``P(χ²_B > Z)`` is the probability of no change. Each iteration weights every pixel by that
    probability (the first with unit weights); weighted covariances are divided by ``Σw − 1``.

    References
    ----------
    A. A. Nielsen, "The regularized iteratively reweighted MAD method for change detection in
    multi- and hyperspectral data", IEEE Trans. Image Process. 16 (2007) 463–478.
    M. J. Canty, *Image Analysis, Classification and Change Detection in Remote Sensing*, 4th ed.,
    CRC Press (2019), ch. 9 (the ``iMad.py`` script).
    """
    image = as_raster(img, "img")
    ref_img = as_raster(reference, "reference")
    check_same_bands(image, ref_img)
    if image.array.shape != ref_img.array.shape:
        raise DataError(
            f"IR-MAD needs co-registered images of the same shape; got {image.array.shape} and "
            f"{ref_img.array.shape}. Resample one onto the other's grid first."
        )
    if int(max_iter) < 1:
        raise DataError(f"max_iter must be at least 1, got {max_iter}.")
    if not float(tol) > 0.0:
        raise DataError(f"tol must be positive, got {tol}.")
    valid = valid_pixels(image, mask, "img") & valid_pixels(ref_img, None, "reference")
    if zero_nodata:
        valid &= np.any(image.array != 0, axis=-1) & np.any(ref_img.array != 0, axis=-1)
    if not valid.any():
        raise DataError("IR-MAD: no pixel is valid in both images.")
    # the products here are skinny (n × 2B by 2B × B): threaded BLAS only adds contention
    with threadpool_limits(limits=1, user_api="blas"):
        return _irmad(image, ref_img, valid, int(max_iter), float(tol), sample_size, random_state)


def _irmad(
    image: Image,
    ref_img: Image,
    valid: np.ndarray,
    max_iter: int,
    tol: float,
    sample_size: int | None,
    random_state: int | np.random.Generator | None,
) -> IRMADResult:
    p = image.array.shape[-1]
    # z = [reference | image]: the reference is the author's first scene
    z_all = np.empty((int(np.count_nonzero(valid)), 2 * p))
    z_all[:, :p] = ref_img.array[valid]
    z_all[:, p:] = image.array[valid]
    if z_all.shape[0] <= 2 * p + 1:
        raise DataError(
            f"IR-MAD: only {z_all.shape[0]} valid pixels for {p} bands; need many more."
        )
    z_all -= z_all.mean(axis=0)  # centred once: the weighted moments then lose no precision
    if sample_size is not None and int(sample_size) < z_all.shape[0]:
        rng = np.random.default_rng(random_state)
        z = z_all[rng.choice(z_all.shape[0], size=int(sample_size), replace=False)]
    else:
        z = z_all
    w = np.ones(z.shape[0])
    old_rho = np.zeros(p)
    history: list[np.ndarray] = []
    delta = np.inf
    while True:
        mean, cov = _weighted_moments(z, w)
        rho, a, b = _cca(cov, p)
        delta = float(np.max(np.abs(rho - old_rho)))
        old_rho = rho
        history.append(rho)
        t = np.vstack([a, -b])  # (z − mean) @ t = U − V
        shift = mean @ t
        sd = np.sqrt(np.maximum(2.0 * (1.0 - rho), 1e-12))
        logger.debug("IR-MAD iteration %d: rho=%s (change %.2e)", len(history), rho, delta)
        if delta <= tol or len(history) >= max_iter:
            break
        w = _no_change_probability(_chi2(z, t, shift, sd), p)
    n_iter = len(history)
    converged = delta <= tol
    if not converged:
        warnings.warn(
            f"IR-MAD stopped at max_iter={max_iter} iterations with a canonical correlation "
            f"still changing by {delta:.3g} in the last one (tol={tol:g}); the result is that "
            "of the last iteration. Raise max_iter or loosen tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    mad_valid = z_all @ t
    mad_valid -= shift
    chi2_valid = ((mad_valid / sd) ** 2).sum(axis=1)
    mad = np.full((*valid.shape, p), np.nan)
    chi2 = np.full(valid.shape, np.nan)
    prob = np.full(valid.shape, np.nan)
    mad[valid] = mad_valid
    chi2[valid] = chi2_valid
    prob[valid] = _no_change_probability(chi2_valid, p)
    return IRMADResult(
        mad=mad,
        chi2=chi2,
        no_change_probability=prob,
        canonical_correlations=rho,
        mad_sd=sd,
        rho_history=np.array(history),
        n_iter=n_iter,
        converged=converged,
        last_change=delta,
        tol=tol,
    )


def _orthogonal_regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Total least squares line ``y = offset + gain · x`` (errors of equal variance in x and y)."""
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    sxx, syy, sxy = dx @ dx, dy @ dy, dx @ dy
    if sxy == 0:
        raise DataError(
            "orthogonal regression: a band is uncorrelated between the images on the no-change "
            "pixels; check that the images show the same scene and are co-registered."
        )
    gain = (syy - sxx + np.hypot(syy - sxx, 2.0 * sxy)) / (2.0 * sxy)
    return float(gain), float(my - gain * mx)


def irmad_normalize(
    img: Image,
    reference: Image,
    *,
    mask: Any = None,
    max_iter: int = DEFAULT_MAX_ITER,
    threshold: float = 0.95,
    tol: float = DEFAULT_TOL,
    sample_size: int | None = None,
    random_state: int | np.random.Generator | None = None,
    zero_nodata: bool = True,
    return_irmad: bool = False,
) -> Image | tuple[Image, IRMADResult]:
    """Relative radiometric normalization on pseudo-invariant pixels found by IR-MAD.

    Parameters
    ----------
    img : Image, shape (..., B)
        Acquisition to normalize (the author's "target").
    reference : Image, shape (..., B)
        Co-registered reference acquisition of the same scene (same shape).
    mask : array_like of bool, shape ``img.shape[:-1]``, optional
        Pixels allowed as invariant candidates (default: all valid pixels).
    max_iter : int, default 50
        Maximum IR-MAD iterations (see :func:`irmad`).
    threshold : float, default 0.95
        Pixels whose no-change probability exceeds this are the pseudo-invariant pixels.
    tol : float, default 1e-3
        IR-MAD stopping rule on the canonical correlations (see :func:`irmad`).
    sample_size : int, optional
        Subsample for estimating IR-MAD (see :func:`irmad`); the regression uses every
        no-change pixel.
    random_state : int or numpy Generator, optional
        Seed of that subsample.
    zero_nodata : bool, default True
        Pixels whose bands are all 0 in either image are no-data for IR-MAD (see :func:`irmad`).
    return_irmad : bool, default False
        Also return the :class:`IRMADResult` (MAD variates, χ², probabilities); its
        ``no_change(threshold)`` is exactly the invariant set the gains were fitted on.

    Returns
    -------
    Image, or (Image, IRMADResult) with ``return_irmad``
        ``offset_b + gain_b · img_b`` for every band (no-data and non-finite pixels unchanged),
        floating point. The history entry holds ``gains``, ``offsets``, ``n_no_change``,
        ``threshold``, ``canonical_correlations``, ``n_iter`` and ``converged``.

    Raises
    ------
    DataError
        If fewer than 10 pixels pass the no-change threshold (lower ``threshold`` or check the
        co-registration).

    Notes
    -----
    For each band, the orthogonal (total least squares) regression of the reference band on the
    image band over the pseudo-invariant pixels gives ``gain_b`` and ``offset_b``: orthogonal
    rather than ordinary regression because both images are noisy. The author's ``radcal.py``
    fits on a random two thirds of the invariant pixels and keeps the rest to test the fit; this
    function fits on all of them, so the result does not depend on a random split. A linear map
    per band keeps the relations between bands (up to the sensors' own gains) and the real
    change, unlike per-band histogram matching.

    References
    ----------
    M. J. Canty, A. A. Nielsen, "Automatic radiometric normalization of multitemporal satellite
    imagery with the iteratively re-weighted MAD transformation", Remote Sensing of Environment
    112 (2008) 1025–1036.
    """
    _check_threshold(threshold)
    image = as_raster(img, "img")
    ref_img = as_raster(reference, "reference")
    result = irmad(
        image,
        ref_img,
        mask=mask,
        max_iter=max_iter,
        tol=tol,
        sample_size=sample_size,
        random_state=random_state,
        zero_nodata=zero_nodata,
    )
    no_change = result.no_change(threshold)
    n_nc = int(np.count_nonzero(no_change))
    if n_nc < 10:
        raise DataError(
            f"IR-MAD found only {n_nc} pixels with no-change probability above {threshold}; "
            "lower threshold, or check that the images are co-registered views of the same scene."
        )
    x = image.array[no_change].astype(np.float64)
    y = ref_img.array[no_change].astype(np.float64)
    fits = [_orthogonal_regression(x[:, b], y[:, b]) for b in range(x.shape[1])]
    gains = np.array([g for g, _ in fits])
    offsets = np.array([o for _, o in fits])
    out = apply_band_affine(image, gains, offsets, nodata_pixels(image))
    logger.info(
        "irmad_normalize: %d pseudo-invariant pixels; gains %s; offsets %s",
        n_nc,
        np.array2string(gains, precision=4),
        np.array2string(offsets, precision=4),
    )
    entry = {
        "step": "irmad_normalize",
        "gains": gains.tolist(),
        "offsets": offsets.tolist(),
        "n_no_change": n_nc,
        "threshold": float(threshold),
        "canonical_correlations": result.canonical_correlations.tolist(),
        "n_iter": result.n_iter,
        "converged": result.converged,
        "tol": float(tol),
    }
    normalized = image.with_array(out, history=_history(image, entry))
    return (normalized, result) if return_irmad else normalized
