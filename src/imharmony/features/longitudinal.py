"""Longitudinal ComBat: ComBat in a linear mixed model with subject random effects.

When the same subjects are scanned at several visits, the site effect has to be told apart from
the subjects' own levels and trajectories. Longitudinal ComBat (Beer et al. 2020) fits, per
feature, a linear mixed model with the biological fixed effects, batch, and a random intercept
(and optionally a random slope in time) per subject; standardizes the data around the subject's
conditional fit; shrinks the per-batch location and scale of the standardized data with the
empirical Bayes priors of ComBat; and transforms back. The mixed models of all features are
fitted together (:mod:`imharmony.features._reml`); the empirical Bayes priors are ComBat's
(:mod:`imharmony.features.combat`); the learned state is a :class:`CombatFit` plus the mixed
model, saved through ComBat's model file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._persist import ArraySpec, check
from .._validation import (
    check_feature_columns,
    encode_labels,
    factorize_labels,
    format_items,
    label_key,
    labels_of,
    sorted_levels,
)
from .._vocabulary import LONGITUDINAL_RANDOM, LONGITUDINAL_SIGMA
from ..errors import DataError, DesignError, HarmonizationError
from ._reml import MixedDesign, fit_reml, relative_factor, shrinkage
from .combat import CombatFit, prior_sums, priors_from_sums
from .estimators import ComBat, _require_complete, as_feature_matrix

__all__ = ["LongitudinalComBat"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.longitudinal_combat"


class LongitudinalComBat(ComBat):
    """Harmonize repeated measures (several visits per subject) with longitudinal ComBat.

    Parameters
    ----------
    formula : str, default="age + diagnosis*time"
        Right-hand side of the fixed effects, in R/patsy notation, on columns of ``covariates``
        (plain column names; categorical columns use treatment coding with sorted levels). Do
        not include the batch or the random effects: batch is added as a fixed effect.
    random : {"intercept", "slope"}, default="intercept"
        Random intercept per subject, or random intercept and slope in ``time`` (lme4
        ``(1 | subject)`` or ``(1 + time | subject)``).
    time : str, default="time"
        Column of ``covariates`` holding the time of each visit (used by the random slope).
    sigma : {"reml", "msr"}, default="reml"
        The scale that standardizes each feature: the REML residual standard deviation, or the
        root mean square of the conditional residuals (longCombat's ``method = "MSR"``).
    n_iter : int, default=30
        Empirical Bayes iterations, all of them (the original has no convergence test).

    Attributes
    ----------
    fit_ : CombatFit
        Per-batch ``gamma_hat``, ``delta_hat``, ``gamma_star``, ``delta_star`` and priors;
        ``var_pooled`` holds sigma^2 of every feature.
    coef_ : ndarray, shape (n_fixed, n_features)
        Fixed effects of the mixed models (formula columns, then batch contrasts).
    fixed_columns_ : list of str
        Their names.
    theta_ : ndarray, shape (n_features, 1 or 3)
        Relative covariance factor of the random effects (lme4's theta).
    batch_effects_ : ndarray, shape (n_batches, n_features)
        Batch effects re-centred so that sum_j n_j gamma_j = 0.
    subjects_ : ndarray, shape (n_subjects,)
        Subjects seen at fit; ``random_effects_`` (n_features, n_subjects, 1 or 2) holds their
        predicted random effects.
    batches_, n_features_in_, feature_names_in_
        As in :class:`~imharmony.ComBat`.

    Notes
    -----
    Per feature, y_i = x_i beta + b_batch(i) + z_i u_subject(i) + e_i fitted by REML. With the
    re-centred batch effects g_j and the conditional mean m_i = x_i beta + z_i u_s - g_1 (the
    fit without its batch term), the standardized data are s_i = (y_i - m_i) / sigma; gamma and
    delta per batch are shrunk as in ComBat, iterating ``n_iter`` times where each step updates
    gamma* from the previous delta* and delta* from the previous gamma* (as longCombat does);
    the output is m_i + sigma (s_i - gamma*_j) / sqrt(delta*_j). This equals R longCombat
    (jcbeer/longCombat with lme4) to about 1e-6 of a feature's SD (tests/reference/longcombat);
    the remaining difference is the precision of lme4's optimizer.

    New samples: visits of subjects seen at fit use the random effects predicted at fit; visits
    of new subjects use random effects predicted from their own visits with the fitted model
    (BLUP: variance parameters, fixed and batch effects as learned). Learning on training
    visits and applying to them give the same output. Missing values are not supported.

    References
    ----------
    J. C. Beer, N. J. Tustison, P. A. Cook, et al., "Longitudinal ComBat: A method for
    harmonizing longitudinal multi-scanner imaging data", NeuroImage 220:117129, 2020.

    Examples
    --------
    >>> import numpy as np, pandas as pd, imharmony as ih
    >>> rng = np.random.default_rng(0)
    >>> subject = np.repeat(np.arange(20), 3); time = np.tile([0.0, 1.0, 2.0], 20)
    >>> site = np.where(subject < 10, "a", "b")
    >>> X = rng.normal(size=(60, 4)) + rng.normal(size=(20, 4))[subject] + (site == "b")[:, None]
    >>> model = ih.LongitudinalComBat(formula="time")
    >>> Xh = model.fit_transform(X, batch=site, covariates=pd.DataFrame({"time": time}),
    ...                          subject=subject)
    >>> Xh.shape
    (60, 4)
    """

    _model_format: ClassVar[str] = FORMAT

    def __init__(
        self,
        formula: str = "age + diagnosis*time",
        random: str = "intercept",
        time: str = "time",
        sigma: str = "reml",
        n_iter: int = 30,
    ) -> None:
        self.formula = formula
        self.random = random
        self.time = time
        self.sigma = sigma
        self.n_iter = n_iter

    def _validate_params(self) -> None:
        def bad(name: str, allowed: str) -> HarmonizationError:
            return HarmonizationError(
                f"The {name!r} parameter of LongitudinalComBat must be {allowed}; got "
                f"{getattr(self, name)!r}."
            )

        if not isinstance(self.formula, str) or not self.formula.strip():
            raise bad("formula", "a formula string such as 'age + diagnosis*time'")
        if self.random not in LONGITUDINAL_RANDOM:
            raise bad("random", " or ".join(map(repr, LONGITUDINAL_RANDOM)))
        if not isinstance(self.time, str):
            raise bad("time", "a column name")
        if self.sigma not in LONGITUDINAL_SIGMA:
            raise bad("sigma", " or ".join(map(repr, LONGITUDINAL_SIGMA)))
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, (int, np.integer)):
            raise bad("n_iter", "an int >= 1")
        if self.n_iter < 1:
            raise bad("n_iter", "an int >= 1")

    # -- fit / transform -----------------------------------------------------------------------
    def fit(  # type: ignore[override]
        self, X: Any, y: Any = None, *, batch: Any, covariates: Any, subject: Any
    ) -> LongitudinalComBat:
        """Fit the per-feature mixed models and the empirical Bayes batch adjustments.

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_visits, n_features)
            One row per visit; complete numeric data.
        y : ignored
        batch : array-like, shape (n_visits,)
            Batch (scanner/site) of every visit; a subject may change batch between visits.
        covariates : DataFrame, shape (n_visits, n_columns)
            The columns named in ``formula`` (and ``time`` for a random slope).
        subject : array-like, shape (n_visits,)
            Subject of every visit.

        Returns
        -------
        self
        """
        self._validate_params()
        data, names, nan_cols = as_feature_matrix(X)
        self._fit_long(data, names, nan_cols, batch, covariates, subject)
        return self

    def fit_transform(  # type: ignore[override]
        self, X: Any, y: Any = None, *, batch: Any, covariates: Any, subject: Any
    ) -> Any:
        """Fit, then harmonize the same visits (identical to ``fit(...).transform(...)``)."""
        self.fit(X, batch=batch, covariates=covariates, subject=subject)
        return self.transform(X, batch=batch, covariates=covariates, subject=subject)

    def _fit_long(
        self,
        data: np.ndarray,
        names: list[str] | None,
        nan_cols: np.ndarray,
        batch: Any,
        covariates: Any,
        subject: Any,
    ) -> None:
        n, G = data.shape
        _require_complete(nan_cols, names, "longitudinal ComBat")
        constant = np.flatnonzero(np.ptp(data, axis=0) == 0)
        if constant.size:
            labels = [names[g] if names else f"#{g}" for g in constant[:5]]
            raise DataError(
                f"feature column(s) {format_items(labels)} are constant; a mixed model cannot be "
                "fitted to them: drop them before harmonizing."
            )
        labels = labels_of(batch, n)
        levels = sorted_levels(factorize_labels(labels)[1])
        if len(levels) < 2:
            raise DesignError(f"batch has a single level ({levels[0]!r}); nothing to harmonize.")
        codes = encode_labels(labels, levels)[0]
        counts = np.bincount(codes, minlength=len(levels))
        singles = [levels[j] for j in np.flatnonzero(counts < 2)]
        if singles:
            raise DesignError(
                f"batch(es) {format_items(singles)} have a single visit; their variance cannot be "
                "estimated: drop those visits or merge the batches."
            )
        sub_labels = labels_of(subject, n)
        subjects = sorted_levels(factorize_labels(sub_labels)[1])
        sub_codes = encode_labels(sub_labels, subjects)[0]
        frame = self._covariate_frame(covariates, n)
        spec = _formula_spec(self.formula, frame)
        Xf, columns = _fixed_design(self.formula, spec, frame)
        D = np.hstack([Xf, _batch_contrasts(codes, len(levels))])
        if np.linalg.matrix_rank(D) < D.shape[1]:
            raise DesignError(
                f"the fixed effects ({self.formula} + batch) are rank deficient: a term is "
                "constant, duplicated or confounded with batch. Simplify the formula."
            )
        Z = self._random_columns(frame, n)
        design = MixedDesign(D, sub_codes, Z)
        mixed = fit_reml(design, data)
        p_f = Xf.shape[1]
        be = mixed.beta[p_f:]  # batch contrasts against the first batch, (J - 1, G)
        gamma1 = -(counts[1:] @ be) / n
        batch_effects = np.vstack([gamma1, be + gamma1])
        blup = mixed.blup
        mean = Xf @ mixed.beta[:p_f] - gamma1 + np.einsum("nq,gnq->ng", Z, blup[:, sub_codes])
        if self.sigma == "reml":
            sigma = mixed.sigma
        else:  # root mean square of the centred conditional residuals
            resid = data - mean - batch_effects[codes]
            sigma = resid.std(axis=0)
        s = (data - mean) / sigma
        J = len(levels)
        gamma_hat = np.stack([s[codes == j].mean(axis=0) for j in range(J)])
        delta_hat = np.stack([s[codes == j].var(axis=0, ddof=1) for j in range(J)])
        # ComBat's priors (R's estimators, variances with n - 1), from its one implementation
        stats = {"gamma_hat": gamma_hat, "delta_hat": delta_hat,
                 "reason": np.zeros(gamma_hat.shape[1], dtype=np.int8)}
        first = prior_sums(stats, False)
        second = prior_sums(stats, False, centre=(first[1] / first[0], first[2] / first[0]))
        gamma_bar, tau2, a_prior, b_prior = priors_from_sums(first, second, False)
        ss = delta_hat * (counts[:, None] - 1)
        gamma_star, delta_star = _eb_fixed_iterations(
            gamma_hat,
            delta_hat,
            ss,
            counts.astype(float),
            gamma_bar,
            tau2,
            a_prior,
            b_prior,
            int(self.n_iter),
        )
        self.fit_ = CombatFit(
            batch_sizes=counts,
            grand_mean=np.zeros(G),
            var_pooled=sigma**2,
            beta=np.zeros((0, G)),
            gamma_hat=gamma_hat,
            delta_hat=delta_hat,
            gamma_star=gamma_star,
            delta_star=delta_star,
            gamma_bar=gamma_bar,
            tau2=tau2,
            a_prior=a_prior,
            b_prior=b_prior,
            adjusted=np.ones(G, dtype=bool),
            n_iter=np.full(J, int(self.n_iter)),
            converged=np.ones(J, dtype=bool),
        )
        self.batches_ = np.array(levels, dtype=object)
        self.n_features_in_ = G
        if names is not None:
            self.feature_names_in_ = np.array(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.covariate_spec_ = []
        self.covariate_columns_ = []
        self.reference_index_ = None
        self.unadjusted_features_ = {}
        self.formula_spec_ = spec
        self.fixed_columns_ = [*columns, *(f"batch[{lvl}]" for lvl in levels[1:])]
        self.coef_ = mixed.beta
        self.theta_ = mixed.theta
        self.batch_effects_ = batch_effects
        self.subjects_ = np.array(subjects, dtype=object)
        self.random_effects_ = blup
        # singular fits: a random-effect variance (theta_11, or theta_22 of the slope) at zero
        singular = int((np.abs(mixed.theta[:, [0, -1]]) < 1e-6).any(axis=1).sum())
        logger.info(
            "LongitudinalComBat (%s, sigma=%s) fitted on %d visits of %d subjects x %d "
            "features, %d batches; %d singular fit(s)",
            self.random,
            self.sigma,
            n,
            len(subjects),
            G,
            J,
            singular,
        )

    def _covariate_frame(self, covariates: Any, n: int) -> pd.DataFrame:
        if not isinstance(covariates, pd.DataFrame):
            raise DataError(
                "covariates must be a DataFrame holding the columns of the formula "
                f"{self.formula!r}"
                + (f" and the time column {self.time!r}" if self.random == "slope" else "")
                + "."
            )
        if len(covariates) != n:
            raise DataError(
                f"covariates have {len(covariates)} rows but X has {n} visits; give one row "
                "per visit."
            )
        frame = covariates.reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        return frame

    def _random_columns(self, frame: pd.DataFrame, n: int) -> np.ndarray:
        if self.random == "intercept":
            return np.ones((n, 1))
        if self.time not in frame.columns:
            raise DataError(
                f"covariates have no time column {self.time!r}, which the random slope needs; "
                "add it or set time= to its name."
            )
        t = frame[self.time]
        if not pd.api.types.is_numeric_dtype(t) or t.isna().any():
            raise DataError(f"time column {self.time!r} must be numeric and complete.")
        return np.column_stack([np.ones(n), t.to_numpy(dtype=float)])

    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise_not_fitted()

    def transform(  # type: ignore[override]
        self, X: Any, *, batch: Any, covariates: Any, subject: Any
    ) -> Any:
        """Harmonize visits of the fitted batches (of known or new subjects).

        Parameters
        ----------
        X : array-like or DataFrame, shape (n_visits, n_features)
        batch : array-like, shape (n_visits,)
            Each one of ``batches_``.
        covariates : DataFrame
            The formula's columns (and ``time`` for a random slope).
        subject : array-like, shape (n_visits,)
            Subjects seen at fit use their fitted random effects; new subjects get random
            effects predicted from these visits.

        Returns
        -------
        ndarray or DataFrame, shape (n_visits, n_features)
        """
        self._check_fitted()
        data, names, nan_cols = as_feature_matrix(X)
        check_feature_columns(self, data, names)
        _require_complete(nan_cols, names, "longitudinal ComBat")
        n = data.shape[0]
        codes = self._codes(batch, n)
        frame = self._covariate_frame(covariates, n)
        Xf, _ = _fixed_design(self.formula, self.formula_spec_, frame)
        Z = self._random_columns(frame, n)
        p_f = Xf.shape[1]
        fixed = Xf @ self.coef_[:p_f]  # without the batch term
        known, new_codes, n_new = self._subject_codes(subject, n)
        u = np.empty((data.shape[1], n, Z.shape[1]))
        u[:, known >= 0] = self.random_effects_[:, known[known >= 0]]
        if n_new:
            rows = known < 0
            contrast = np.vstack([np.zeros(data.shape[1]), self.coef_[p_f:]])
            resid = data[rows] - fixed[rows] - contrast[codes[rows]]
            u[:, rows] = _predict_random(self.theta_, Z[rows], new_codes[rows], n_new, resid)[
                :, new_codes[rows]
            ]
        mean = fixed - self.batch_effects_[0] + np.einsum("nq,gnq->ng", Z, u)
        sigma = np.sqrt(self.fit_.var_pooled)
        scale = 1.0 / np.sqrt(self.fit_.delta_star[codes])
        out = mean + ((data - mean) - sigma * self.fit_.gamma_star[codes]) * scale
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=X.columns, copy=False)
        return out

    def _subject_codes(self, subject: Any, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Index of each visit's subject in ``subjects_`` (-1 if new), codes of new subjects."""
        labels = labels_of(subject, n)
        known, _ = encode_labels(labels, self.subjects_.tolist())
        new_codes = np.full(n, -1)
        n_new = 0
        if (known < 0).any():
            codes, _ = factorize_labels(labels[known < 0])
            new_codes[known < 0] = codes
            n_new = int(codes.max()) + 1
        return known, new_codes, n_new

    # -- persistence (through ComBat.save / ComBat.load) -------------------------------------
    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "long_coef": self.coef_,
            "long_theta": self.theta_,
            "long_batch_effects": self.batch_effects_,
            "long_random_effects": self.random_effects_,
        }
        doc = {
            "longitudinal": {
                "formula_spec": self.formula_spec_,
                "fixed_columns": self.fixed_columns_,
                "subjects": [label_key(s) for s in self.subjects_.tolist()],
            }
        }
        return arrays, doc

    @classmethod
    def _extra_array_specs(
        cls, path: Path, content: dict[str, Any], params: dict[str, Any], J: int, G: int
    ) -> dict[str, ArraySpec]:
        extra = content.get("longitudinal")
        fixed = extra.get("fixed_columns") if isinstance(extra, dict) else None
        subjects = extra.get("subjects") if isinstance(extra, dict) else None
        check(path, "longitudinal", extra,
              isinstance(fixed, list) and isinstance(subjects, list) and "formula_spec" in extra,
              "an object with formula_spec, fixed_columns (a list) and subjects (a list)")
        q = 2 if params.get("random") == "slope" else 1
        p, S = len(fixed), len(subjects)
        return {
            "long_coef": ArraySpec((p, G)),
            "long_theta": ArraySpec((G, 1 if q == 1 else 3)),
            "long_batch_effects": ArraySpec((J, G)),
            "long_random_effects": ArraySpec((G, S, q)),
        }

    def _restore_extra_state(
        self, arrays: dict[str, np.ndarray], doc: dict[str, Any], path: Path
    ) -> None:
        extra = doc["longitudinal"]
        self.formula_spec_ = extra["formula_spec"]
        self.fixed_columns_ = list(extra["fixed_columns"])
        self.subjects_ = np.array(extra["subjects"], dtype=object)
        self.coef_ = arrays["long_coef"]
        self.theta_ = arrays["long_theta"]
        self.batch_effects_ = arrays["long_batch_effects"]
        self.random_effects_ = arrays["long_random_effects"]


def raise_not_fitted() -> None:
    from ..errors import NotFittedError

    raise NotFittedError(
        "This LongitudinalComBat instance is not fitted yet; call fit(X, batch=..., "
        "covariates=..., subject=...) first or load a saved model."
    )


def _batch_contrasts(codes: np.ndarray, J: int) -> np.ndarray:
    """Treatment contrasts of batch against its first level (R's default)."""
    B = np.zeros((codes.shape[0], J - 1))
    rows = np.flatnonzero(codes > 0)
    B[rows, codes[rows] - 1] = 1.0
    return B


def _formula_spec(formula: str, frame: pd.DataFrame) -> dict[str, Any]:
    """The variables of ``formula``: kind and (for categorical ones) sorted levels."""
    import patsy

    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as exc:
        raise DesignError(f"formula {formula!r} cannot be parsed: {exc}") from None
    if desc.lhs_termlist:
        raise DesignError(
            f"formula {formula!r} has a left-hand side; give only the fixed effects (the right "
            "side), e.g. 'age + diagnosis*time'."
        )
    variables: list[str] = []
    for term in desc.rhs_termlist:
        for factor in term.factors:
            name = factor.name()
            if name not in variables:
                variables.append(name)
    spec: dict[str, Any] = {}
    for name in variables:
        if name not in frame.columns:
            raise DataError(
                f"formula term {name!r} is not a column of covariates (columns: "
                f"{format_items(list(frame.columns))}); use plain column names in the formula and "
                "add the column."
            )
        col = frame[name]
        if col.isna().any():
            raise DataError(f"covariate column {name!r} has missing values.")
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            spec[name] = {"kind": "continuous"}
        else:
            spec[name] = {
                "kind": "categorical",
                "levels": [str(v) for v in sorted_levels(factorize_labels(col.astype(str))[1])],
            }
    return spec


def _fixed_design(
    formula: str, spec: dict[str, Any], frame: pd.DataFrame
) -> tuple[np.ndarray, list[str]]:
    """Fixed-effects design of ``formula`` (intercept included) with the levels of ``spec``."""
    import patsy

    data: dict[str, Any] = {}
    for name, s in spec.items():
        if name not in frame.columns:
            raise DataError(f"covariate column {name!r} is missing; the model's formula needs it.")
        col = frame[name]
        if s["kind"] == "continuous":
            if not pd.api.types.is_numeric_dtype(col) or col.isna().any():
                raise DataError(f"covariate column {name!r} must be numeric and complete.")
            data[name] = col.to_numpy(dtype=float)
        else:
            values = col.astype(str)
            unseen = sorted(set(values) - set(s["levels"]))
            if unseen:
                raise DataError(
                    f"covariate column {name!r} has level(s) {format_items(unseen)} not seen at "
                    f"fit (known: {format_items(s['levels'])})."
                )
            data[name] = pd.Categorical(values, categories=s["levels"])
    design = patsy.dmatrix(formula, data, NA_action="raise", return_type="dataframe")
    return design.to_numpy(dtype=float), [str(c) for c in design.columns]


def _eb_fixed_iterations(
    gamma_hat: np.ndarray,
    delta_hat: np.ndarray,
    ss: np.ndarray,
    n: np.ndarray,
    gamma_bar: np.ndarray,
    tau2: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    n_iter: int,
) -> tuple[np.ndarray, np.ndarray]:
    """longCombat's empirical Bayes: a start, then exactly ``n_iter`` simultaneous updates.

    The start is gamma0 from delta_hat, delta0 from gamma0; every iteration then computes
    gamma* from the previous delta* and delta* from the previous gamma* (no convergence test).
    sum_i (s_i - g)^2 over a batch is ss + n (gamma_hat - g)^2.
    """
    nn = n[:, None]
    tb, gb = tau2[:, None], gamma_bar[:, None]
    aa, bb = a[:, None], b[:, None]

    def post_mean(d: np.ndarray) -> np.ndarray:
        return (nn * tb * gamma_hat + d * gb) / (nn * tb + d)

    def post_var(g: np.ndarray) -> np.ndarray:
        return (bb + 0.5 * (ss + nn * (gamma_hat - g) ** 2)) / (nn / 2.0 + aa - 1.0)

    g = post_mean(delta_hat)
    d = post_var(g)
    for _ in range(n_iter):
        g, d = post_mean(d), post_var(g)
    return g, d


def _predict_random(
    theta: np.ndarray, Z: np.ndarray, codes: np.ndarray, S: int, resid: np.ndarray
) -> np.ndarray:
    """BLUPs (G, S, q) of new subjects from their residuals after the fixed effects."""
    q = Z.shape[1]
    design = MixedDesign(np.ones((Z.shape[0], 1)), codes, Z)
    W, _ = shrinkage(design, relative_factor(theta, q))
    T = design.subject_sums(resid)
    return np.einsum("gsab,gsb->gsa", W, T)
