"""Travelling subjects: each site's measurement bias, learned from the same people at every site.

A travelling-subject data set holds several visits per participant at different sites. Per
feature, the measurement of participant ``i`` at site ``j`` is modelled as

    additive:  x_ij = t_i + a_j + e_ij
    linear:    x_ij = a_j + b_j t_i + e_ij

with ``t_i`` the participant effect, ``a_j`` (and ``b_j``) the site's measurement bias and
``e_ij`` ~ N(0, σ²) per feature. All visits are fitted at once (least squares over participants and
sites together, as in Yamashita et al. 2019), so incomplete designs — not every traveller at every
site, hub-and-spoke — work as long as the sites are connected through shared travellers. The
biases are identified relative to the mean site (Σ_j a_j = 0, mean b_j = 1) or, with
``reference_site``, relative to that site (a_ref = 0, b_ref = 1).

``transform`` removes only the measurement bias, ``(x - a_j) / b_j``, from any sample of a learned
site: what differs between the sites' populations (sampling bias, which is biology) is kept,
unlike ComBat, which removes every difference of site means.

References
----------
Yamashita A, Yahata N, Itahashi T, et al. (2019). Harmonization of resting-state functional MRI
data across multiple imaging sites via the separation of site differences into sampling bias and
measurement bias. PLOS Biology 17(4):e3000042.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from .._persist import ArraySpec, check, is_int, is_label, is_number, is_str_list, is_table
from .._validation import (
    check_feature_columns,
    encode_labels,
    factorize_labels,
    feature_names_out,
    format_items,
    label_key,
    labels_of,
    sorted_levels,
)
from .._vocabulary import TRAVELLING_SCALES
from ..base import HarmonizerMixin, Rule
from ..diagnostics.agreement import concordance_correlation, icc_2_1
from ..errors import (
    ConvergenceWarning,
    DesignError,
    ModelFileError,
    UnseenBatchError,
)
from ..features.estimators import as_feature_matrix

__all__ = ["TravellingSubjects", "check_offset_gain", "label_codes", "sites_field"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.travelling_subjects"
FORMAT_VERSION = 2  # 2: the project's model envelope (imharmony._persist)
_SCALES = TRAVELLING_SCALES
_CHUNK = 2_000_000  # Jacobian entries per block of features


def label_codes(values: Any, n: int, what: str) -> tuple[np.ndarray, list[Any]]:
    """One label per sample -> (codes into the sorted levels, levels). Missing labels refused."""
    arr = labels_of(values, n, what)
    levels = sorted_levels(factorize_labels(arr)[1])
    return encode_labels(arr, levels)[0], levels


def sites_field(path: Path, content: dict[str, Any], minimum: int) -> int:
    """Check a model file's ``sites`` field (distinct labels, at least ``minimum``); their count."""
    sites = content.get("sites")
    check(path, "sites", sites, isinstance(sites, list) and len(sites) >= minimum
          and all(is_label(s) for s in sites) and len({str(s) for s in sites}) == len(sites),
          f"a list of at least {minimum} distinct site label(s)")
    return len(sites)


def check_offset_gain(path: Path, what: str, offset: np.ndarray, gain: np.ndarray,
                      ok: bool = True) -> None:
    """Refuse a loaded model whose offsets or gains are not finite, or a gain of 0 (the
    correction divides by it); ``ok``: further conditions of the caller."""
    if not (ok and np.all(np.isfinite(offset)) and np.all(np.isfinite(gain) & (gain != 0))):
        raise ModelFileError(
            f"{path}: inconsistent {what} (a non-finite offset or gain, a zero gain, or values "
            "that contradict each other); re-fit the model."
        )


def _contrast(n_sites: int, ref: int | None) -> np.ndarray:
    """Site effects = contrast @ free parameters: sum-to-zero, or zero at the reference."""
    if ref is None:
        return np.vstack([np.eye(n_sites - 1), -np.ones((1, n_sites - 1))])
    return np.delete(np.eye(n_sites), ref, axis=1)


def check_design(
    site: np.ndarray, subject: np.ndarray, sites: list[Any], *, linear: bool
) -> None:
    """Refuse travelling-subject designs whose site biases cannot be estimated.

    ``site`` and ``subject`` are codes of the travellers' visits (participants seen at two or more
    sites). The sites must be connected through shared travellers; with a gain, every site needs
    two travellers.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    J = len(sites)
    n_subjects = int(subject.max()) + 1 if subject.size else 0
    visits = coo_matrix((np.ones(site.size), (subject, site)), shape=(n_subjects, J)).tocsr()
    visits.data[:] = 1.0
    shared = (visits.T @ visits).tocoo()
    n_comp, comp = connected_components(shared, directed=False)
    present = np.zeros(J, dtype=bool)
    present[site] = True
    lonely = [sites[j] for j in np.flatnonzero(~present)]
    if lonely:
        raise DesignError(
            f"site(s) {format_items(lonely)} have no travelling subject (a participant also "
            "scanned at another site); their bias cannot be learned. Scan travellers there or "
            "drop them."
        )
    if n_comp > 1:
        groups = "; ".join(
            "{" + ", ".join(str(sites[j]) for j in np.flatnonzero(comp == c)) + "}"
            for c in range(n_comp)
        )
        raise DesignError(
            f"the sites fall into {n_comp} groups that share no travelling subject ({groups}); "
            "their biases cannot be compared. Scan at least one participant in each group."
        )
    if linear:
        per_site = _travellers_per_site(site, subject, J)
        few = [sites[j] for j in np.flatnonzero(per_site < 2)]
        if few:
            raise DesignError(
                f"site(s) {format_items(few)} have fewer than 2 travelling subjects: a per-site "
                "gain (scale='linear') needs at least two different participants there. Use "
                "scale='additive' or scan more travellers."
            )


def _travellers_per_site(site: np.ndarray, subject: np.ndarray, J: int) -> np.ndarray:
    pairs = np.unique(np.stack([site, subject], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=J)


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(A, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        bad = np.flatnonzero(np.linalg.matrix_rank(A) < A.shape[-1])
        raise DesignError(
            f"feature(s) #{format_items(bad.tolist())} have missing values that leave the site "
            "biases unidentifiable (no shared travellers left); impute them or drop those "
            "features."
        ) from None


def fit_bias(
    data: np.ndarray,
    site: np.ndarray,
    subject: np.ndarray,
    n_sites: int,
    n_subjects: int,
    *,
    ref: int | None,
    linear: bool,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> dict[str, np.ndarray]:
    """Least-squares fit of the travelling-subject model, all features at once.

    Parameters
    ----------
    data : ndarray, shape (n_visits, n_features)
        Measurements; NaN = missing (that visit is left out for that feature).
    site, subject : ndarray of int, shape (n_visits,)
        Codes in ``range(n_sites)`` and ``range(n_subjects)``.
    ref : int or None
        Reference site code (its bias is 0 / gain 1), or None for the mean-site constraint.
    linear : bool
        Fit a per-site gain too (Gauss-Newton from the additive solution; the additive model is
        linear and solved exactly in one step).

    Returns
    -------
    dict
        ``offset``, ``gain``, ``offset_se``, ``gain_se`` (n_sites, n_features); ``subject``
        (n_subjects, n_features); ``residual_sd``, ``dof`` (n_features,); ``n_iter`` (int).
    """
    C = _contrast(n_sites, ref)
    q = n_sites - 1
    S = n_subjects
    p = S + q * (2 if linear else 1)
    W = np.isfinite(data)
    Y = np.where(W, data, 0.0)
    n_obs = W.sum(axis=0)
    dof = n_obs - p
    if (dof < 1).any():
        raise DesignError(
            f"{int(n_obs.min())} visits for {p} parameters (participant and site effects): no "
            "degrees of freedom are left to estimate the noise. Add travellers or visits."
        )
    G = data.shape[1]
    theta = np.zeros((G, p))
    counts = np.zeros((S, G))
    np.add.at(counts, subject, W.astype(float))
    sums = np.zeros((S, G))
    np.add.at(sums, subject, Y)
    theta[:, :S] = (sums / np.maximum(counts, 1)).T
    block = max(1, _CHUNK // max(1, data.shape[0] * p))

    def unpack(th: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = th[:, :S].T
        a = C @ th[:, S : S + q].T
        b = (1.0 + C @ th[:, S + q :].T) if linear else np.ones_like(a)
        return t, a, b

    def residual(th: np.ndarray) -> np.ndarray:
        t, a, b = unpack(th)
        return np.where(W, Y - a[site] - b[site] * t[subject], 0.0)

    def normal(th: np.ndarray, sl: slice) -> tuple[np.ndarray, np.ndarray]:
        t, _, b = unpack(th[sl])
        Cs = C[site]
        Jm = np.zeros((t.shape[1], site.size, p))
        Jm[:, np.arange(site.size), subject] = b[site].T
        Jm[:, :, S : S + q] = Cs[None]
        if linear:
            Jm[:, :, S + q :] = t[subject].T[:, :, None] * Cs[None]
        Jw = Jm * W[:, sl].T[:, :, None]
        return np.einsum("gni,gnj->gij", Jw, Jm), Jw

    def gauss_newton_step(th: np.ndarray) -> np.ndarray:
        r = residual(th)
        step = np.empty_like(th)
        for start in range(0, G, block):
            sl = slice(start, start + block)
            A, Jw = normal(th, sl)
            step[sl] = _solve(A, np.einsum("gni,ng->gi", Jw, r[:, sl]))
        return step

    rss = (residual(theta) ** 2).sum(axis=0)
    n_iter = 0
    converged = False
    for n_iter in range(1, (max_iter if linear else 1) + 1):  # noqa: B007
        step = gauss_newton_step(theta)
        trial = theta + step
        new = (residual(trial) ** 2).sum(axis=0)
        halvings = 0
        worse = new > rss * (1 + 1e-12) + 1e-300
        while worse.any() and halvings < 30:  # damp only the features whose fit got worse
            step[worse] *= 0.5
            trial[worse] = theta[worse] + step[worse]
            new[worse] = (residual(trial)[:, worse] ** 2).sum(axis=0)
            worse = new > rss * (1 + 1e-12) + 1e-300
            halvings += 1
        theta, rss_old, rss = trial, rss, new
        if not linear or (
            np.abs(step).max(axis=1) <= tol * (1.0 + np.abs(theta).max(axis=1))
        ).all() or np.allclose(rss, rss_old, rtol=tol, atol=0):
            converged = True
            break
    if linear and not converged:
        warnings.warn(
            f"travelling-subject gain fit stopped after {n_iter} Gauss-Newton iterations "
            f"without reaching tol={tol}; the estimates may be imprecise.",
            ConvergenceWarning,
            stacklevel=3,
        )
    sigma2 = rss / dof
    t, a, b = unpack(theta)
    a_se = np.empty_like(a)
    b_se = np.zeros_like(b)
    for start in range(0, G, block):
        sl = slice(start, start + block)
        A, _ = normal(theta, sl)
        cov = np.linalg.inv(A) * sigma2[sl, None, None]
        ca = cov[:, S : S + q, S : S + q]
        a_se[:, sl] = np.sqrt(np.einsum("jk,gkl,jl->jg", C, ca, C))
        if linear:
            cb = cov[:, S + q :, S + q :]
            b_se[:, sl] = np.sqrt(np.einsum("jk,gkl,jl->jg", C, cb, C))
    return {
        "offset": a,
        "gain": b,
        "offset_se": a_se,
        "gain_se": b_se,
        "subject": t,
        "residual_sd": np.sqrt(sigma2),
        "dof": dof.astype(float),
        "n_iter": np.asarray(n_iter),
    }


def site_pair_agreement(
    data: np.ndarray, site: np.ndarray, subject: np.ndarray, n_sites: int, n_subjects: int,
    *, min_shared: int = 3,
) -> tuple[np.ndarray, np.ndarray, int]:
    """ICC(2,1) and Lin's CCC across sites, averaged over the site pairs sharing travellers.

    A participant's repeated visits to one site are averaged first. For every pair of sites with
    at least ``min_shared`` common participants (complete for every feature), ICC(2,1) (the two
    sites as raters) and CCC are computed per feature; the result is their mean over pairs.

    Returns
    -------
    icc, ccc : ndarray, shape (n_features,)
        NaN when no pair qualifies.
    n_pairs : int
    """
    G = data.shape[1]
    sums = np.zeros((n_subjects, n_sites, G))
    np.add.at(sums, (subject, site), data)
    counts = np.zeros((n_subjects, n_sites))
    np.add.at(counts, (subject, site), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, :, None]
    ok = np.isfinite(means).all(axis=2)
    icc, ccc, n_pairs = np.zeros(G), np.zeros(G), 0
    for j in range(n_sites):
        for k in range(j + 1, n_sites):
            common = ok[:, j] & ok[:, k]
            if common.sum() < min_shared:
                continue
            pair = means[common][:, [j, k]]
            icc += icc_2_1(pair)
            ccc += concordance_correlation(pair[:, 0], pair[:, 1])
            n_pairs += 1
    if n_pairs == 0:
        return np.full(G, np.nan), np.full(G, np.nan), 0
    return icc / n_pairs, ccc / n_pairs, n_pairs


class TravellingSubjects(HarmonizerMixin, TransformerMixin, BaseEstimator):
    """Learn each site's measurement bias from travelling subjects and remove it.

    Parameters
    ----------
    scale : {"additive", "linear"}, default="additive"
        ``"additive"``: one offset per site and feature (Yamashita et al. 2019).
        ``"linear"``: an offset and a gain per site and feature.
    reference_site : label, optional
        The site whose scale the others are mapped onto (its bias is 0 and gain 1). By default
        the biases are relative to the mean site.
    validate : bool, default=True
        Run the leave-one-traveller-out check at fit (``agreement_``).
    max_iter : int, default=100
        Gauss-Newton iteration cap of ``scale="linear"``.
    tol : float, default=1e-10
        Relative step size at which the Gauss-Newton iteration stops.

    Attributes
    ----------
    sites_ : ndarray, shape (n_sites,)
        Sites seen at fit, sorted.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when X was a DataFrame.
    offset_, offset_se_ : ndarray, shape (n_sites, n_features_in_)
        Additive measurement bias a_j per feature and its standard error.
    gain_, gain_se_ : ndarray, shape (n_sites, n_features_in_)
        Gain b_j (all ones, SE 0, for ``scale="additive"``).
    residual_sd_ : ndarray, shape (n_features_in_,)
        Noise standard deviation σ of the fit (residual sum of squares / degrees of freedom).
    n_travellers_ : int
        Participants seen at two or more sites (only they enter the fit).
    n_iter_ : int
    agreement_ : DataFrame or None
        Per feature: ``icc_before``, ``icc_after``, ``ccc_before``, ``ccc_after``: agreement across
        sites of the travellers' measurements, raw and harmonized by a model fitted without that
        traveller (leave one traveller out), averaged over site pairs sharing ≥ 3 travellers.
        None when ``validate=False`` or no pair qualifies.

    Notes
    -----
    Per feature, visit of participant i at site j: x_ij = a_j + b_j t_i + e_ij (b_j = 1 for the
    additive scale), fitted by least squares over all visits; standard errors from the inverse
    of the normal matrix times σ². ``transform`` returns (x - a_j) / b_j. ``site`` and ``subject``
    are metadata (``set_fit_request(site=True, subject=True)``, ``set_transform_request(site=True)``
    inside a :class:`~sklearn.pipeline.Pipeline`).

    References
    ----------
    Yamashita A, et al. (2019). PLOS Biology 17(4):e3000042.

    Examples
    --------
    >>> import numpy as np, imharmony as ih
    >>> subject = np.repeat(np.arange(6), 3); site = np.tile(["a", "b", "c"], 6)
    >>> truth = np.linspace(1, 6, 6)[subject]
    >>> X = (truth + np.select([site == "a", site == "b"], [-1.0, 0.5], 0.5))[:, None]
    >>> X = X + np.random.default_rng(0).normal(0, 0.01, X.shape)
    >>> ts = ih.TravellingSubjects(validate=False).fit(X, site=site, subject=subject)
    >>> np.round(ts.offset_[:, 0], 1).tolist()
    [-1.0, 0.5, 0.5]
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {
        "scale": Rule.one_of(*_SCALES),
        "reference_site": Rule.label_or_none(),
        "validate": Rule.boolean(),
        "max_iter": Rule.integer(1),
        "tol": Rule.real(0.0),
    }
    _fitted_attribute: ClassVar[str] = "offset_"
    _model_kind: ClassVar[str] = FORMAT
    _model_version: ClassVar[int] = FORMAT_VERSION

    def __init__(
        self,
        scale: str = "additive",
        reference_site: Any = None,
        validate: bool = True,
        max_iter: int = 100,
        tol: float = 1e-10,
    ) -> None:
        self.scale = scale
        self.reference_site = reference_site
        self.validate = validate
        self.max_iter = max_iter
        self.tol = tol

    def _reference(self, sites: list[Any]) -> int | None:
        if self.reference_site is None:
            return None
        lookup = {str(s): i for i, s in enumerate(sites)}
        key = str(label_key(self.reference_site))
        if key not in lookup:
            raise DesignError(
                f"reference_site={self.reference_site!r} is not one of the sites "
                f"{format_items(sites)}."
            )
        return lookup[key]

    def fit(self, X: Any, y: Any = None, *, site: Any, subject: Any) -> TravellingSubjects:
        """Learn the sites' measurement biases from the travellers' visits.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_visits, n_features)
            One row per visit (participant scanned at a site); NaN = missing.
        y : ignored
        site, subject : array-like, shape (n_visits,)
            Site and participant of every visit. Participants seen at a single site are ignored.

        Returns
        -------
        self

        Raises
        ------
        DesignError
            Fewer than two sites, sites not connected through shared travellers, a site without
            travellers (or, for ``scale="linear"``, with fewer than two), or no degrees of freedom.
        """
        self._validate_params()
        data, names, _ = as_feature_matrix(X)
        n = data.shape[0]
        site_codes, sites = label_codes(site, n, "site")
        subj_codes, _ = label_codes(subject, n, "subject")
        if len(sites) < 2:
            raise DesignError(
                f"site has a single value ({sites[0]!r}); travelling subjects need two sites."
            )
        ref = self._reference(sites)
        keep = _travellers(site_codes, subj_codes)
        if (~keep).any():
            logger.info("%d visit(s) of participants seen at one site only are ignored",
                        int((~keep).sum()))
        data, site_codes, subj_codes = data[keep], site_codes[keep], subj_codes[keep]
        subj_codes = np.unique(subj_codes, return_inverse=True)[1]
        linear = self.scale == "linear"
        check_design(site_codes, subj_codes, sites, linear=linear)
        est = self._fit_arrays(data, site_codes, subj_codes, len(sites), ref)
        self.sites_ = np.array(sites, dtype=object)
        self.n_features_in_ = data.shape[1]
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.reference_index_ = ref
        self.offset_, self.gain_ = est["offset"], est["gain"]
        self.offset_se_, self.gain_se_ = est["offset_se"], est["gain_se"]
        self.residual_sd_ = est["residual_sd"]
        self.n_travellers_ = int(subj_codes.max()) + 1
        self.n_iter_ = int(est["n_iter"])
        self.agreement_ = (
            self._leave_one_out(data, site_codes, subj_codes, len(sites), ref)
            if self.validate else None
        )
        logger.info(
            "travelling subjects (%s): %d visits of %d travellers at %d sites, %d features",
            self.scale, data.shape[0], self.n_travellers_, len(sites), data.shape[1],
        )
        return self

    def _fit_arrays(self, data: np.ndarray, site: np.ndarray, subject: np.ndarray, J: int,
                    ref: int | None) -> dict[str, np.ndarray]:
        return fit_bias(
            data, site, subject, J, int(subject.max()) + 1, ref=ref,
            linear=self.scale == "linear", max_iter=int(self.max_iter), tol=float(self.tol),
        )

    def _leave_one_out(self, data: np.ndarray, site: np.ndarray, subject: np.ndarray, J: int,
                       ref: int | None) -> pd.DataFrame | None:
        S = int(subject.max()) + 1
        held = np.full_like(data, np.nan)
        skipped = 0
        for s in range(S):
            out = subject == s
            rest = ~out
            sub = np.unique(subject[rest], return_inverse=True)[1]
            keep = _travellers(site[rest], sub)
            try:
                check_design(site[rest][keep], np.unique(sub[keep], return_inverse=True)[1],
                             list(range(J)), linear=self.scale == "linear")
                est = self._fit_arrays(data[rest][keep], site[rest][keep],
                                       np.unique(sub[keep], return_inverse=True)[1], J, ref)
            except DesignError:
                skipped += 1
                continue
            held[out] = (data[out] - est["offset"][site[out]]) / est["gain"][site[out]]
        if skipped:
            logger.info("leave-one-traveller-out: %d traveller(s) could not be left out without "
                        "disconnecting the design", skipped)
        done = ~np.isnan(held).all(axis=1)  # the visits of travellers that could be left out
        icc_b, ccc_b, _ = site_pair_agreement(data[done], site[done], subject[done], J, S)
        icc_a, ccc_a, n_pairs = site_pair_agreement(held[done], site[done], subject[done], J, S)
        if n_pairs == 0:
            logger.info("leave-one-traveller-out: no pair of sites shares 3 travellers")
            return None
        index = pd.Index(self._names(), name="feature")
        return pd.DataFrame({"icc_before": icc_b, "icc_after": icc_a,
                             "ccc_before": ccc_b, "ccc_after": ccc_a}, index=index)

    def _names(self) -> list[str]:
        if hasattr(self, "feature_names_in_"):
            return [str(x) for x in self.feature_names_in_]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def transform(self, X: Any, *, site: Any) -> Any:
        """Remove the learned measurement bias from samples of the fitted sites.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_samples, n_features)
        site : array-like, shape (n_samples,)
            Each must be one of ``sites_``.

        Returns
        -------
        ndarray or DataFrame, shape (n_samples, n_features)
            ``(x - offset_[site]) / gain_[site]``; a DataFrame (same index and columns) when X
            is one.

        Raises
        ------
        UnseenBatchError
            A site that was not in the travelling-subject data.
        """
        self._check_fitted()
        data, names, _ = as_feature_matrix(X)
        check_feature_columns(self, data, names)
        codes = self._site_codes(site, data.shape[0])
        out = (data - self.offset_[codes]) / self.gain_[codes]
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=X.columns, copy=False)
        return out

    def _site_codes(self, site: Any, n: int) -> np.ndarray:
        arr = labels_of(site, n, "site")
        codes, unseen = encode_labels(arr, self.sites_.tolist())
        if unseen:
            raise UnseenBatchError(
                f"site(s) {format_items(sorted(str(u) for u in unseen))} had no travelling "
                "subjects when the model was fitted (known: "
                f"{format_items(self.sites_.tolist())}); scan travellers there and refit."
            )
        return codes

    def fit_transform(  # type: ignore[override]
        self, X: Any, y: Any = None, *, site: Any, subject: Any
    ) -> Any:
        """Fit on the travellers, then harmonize the same visits."""
        return self.fit(X, site=site, subject=subject).transform(X, site=site)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output feature names (the input names)."""
        self._check_fitted()
        return feature_names_out(self, input_features)

    # -- persistence (HarmonizerMixin.save / .load: the project's model envelope) -----------
    def _params_for_file(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params["reference_site"] = label_key(params["reference_site"])
        return params

    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        agreement = None
        if self.agreement_ is not None:
            agreement = {c: [None if not np.isfinite(v) else float(v) for v in self.agreement_[c]]
                         for c in self.agreement_.columns}
        content = {
            "sites": [label_key(s) for s in self.sites_.tolist()],
            "reference_index": (None if self.reference_index_ is None
                                else int(self.reference_index_)),
            "n_features": int(self.n_features_in_),
            "feature_names": self._names() if hasattr(self, "feature_names_in_") else None,
            "n_travellers": int(self.n_travellers_),
            "n_iter": int(self.n_iter_),
            "agreement": agreement,
        }
        return content, {k: np.asarray(getattr(self, f"{k}_"), dtype=np.float64) for k in _ARRAYS}

    @classmethod
    def _model_arrays(cls, path: Path, content: dict[str, Any]) -> dict[str, ArraySpec]:
        J = sites_field(path, content, 2)
        G = check(path, "n_features", content.get("n_features"),
                  is_int(content.get("n_features"), 1), "an int >= 1")
        ref = content.get("reference_index")
        check(path, "reference_index", ref, ref is None or is_int(ref, 0, J - 1),
              f"null or a site index in [0, {J - 1}]")
        names = content.get("feature_names")
        check(path, "feature_names", names, names is None or (is_str_list(names)
              and len(names) == G), f"null or a list of {G} feature names")
        for key in ("n_travellers", "n_iter"):
            check(path, key, content.get(key), is_int(content.get(key)), "an int >= 0")
        agreement = content.get("agreement")
        check(path, "agreement", agreement, agreement is None or is_table(
            agreement, dict.fromkeys(("icc_before", "icc_after", "ccc_before", "ccc_after"),
                                     lambda v: is_number(v, none_ok=True)), G),
              f"null or the four agreement columns over {G} features")
        return {k: ArraySpec((G,) if k == "residual_sd" else (J, G)) for k in _ARRAYS}

    def _restore(self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        check_offset_gain(path, "travelling-subject model", arrays["offset"], arrays["gain"])
        for k in _ARRAYS:
            setattr(self, f"{k}_", arrays[k])
        self.sites_ = np.array(content["sites"], dtype=object)
        self.n_features_in_ = int(content["n_features"])
        if content["feature_names"] is not None:
            self.feature_names_in_ = np.array(content["feature_names"], dtype=object)
        self.reference_index_ = content["reference_index"]
        self.n_travellers_ = int(content["n_travellers"])
        self.n_iter_ = int(content["n_iter"])
        agreement = content["agreement"]
        self.agreement_ = None if agreement is None else pd.DataFrame(
            {c: np.array([np.nan if v is None else v for v in vals], dtype=float)
             for c, vals in agreement.items()},
            index=pd.Index(self._names(), name="feature"),
        )


_ARRAYS = ("offset", "gain", "offset_se", "gain_se", "residual_sd")


def _travellers(site: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Mask of the visits of participants seen at two or more distinct sites."""
    pairs = np.unique(np.stack([subject, site], axis=1), axis=0)
    n_sites = np.bincount(pairs[:, 0], minlength=int(subject.max()) + 1)
    return n_sites[subject] >= 2
