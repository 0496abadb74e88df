"""CovBat: ComBat followed by harmonization of the residuals' principal component scores.

Sites distort not only the mean and variance of each feature but also the covariance between
features, which is what a multivariate classifier uses. CovBat (Chen et al. 2022) removes the
location/scale site effects with ComBat, then applies a location/scale correction (ComBat without
empirical Bayes and without covariates) to the leading principal component scores of the ComBat
residuals, and projects back. The ComBat step is imharmony's one ComBat core
(:mod:`imharmony.features.combat`); this module adds the PCA step and keeps what it learns
(centre, scale, loadings and the score corrections) so that new samples of the fitted sites are
corrected the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import linalg

from .._persist import ArraySpec, check, is_int
from ..errors import DataError, HarmonizationError
from .combat import CombatFit, apply_combat, fit_combat, missing_columns
from .estimators import _ARRAYS, ComBat, _require_complete, fit_array_specs

__all__ = ["CovBat"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.covbat"


class CovBat(ComBat):
    """Harmonize the covariance of features across sites (CovBat), after ComBat.

    Parameters
    ----------
    percent_var : float, default=0.95
        Harmonize as many leading principal components of the ComBat residuals as needed for
        their cumulative share of the variance to exceed this value (R ``percent.var``).
    n_components : int, optional
        Harmonize exactly this many components instead (overrides ``percent_var``; R ``n.pc``).
    standardize_scores : bool, default=True
        Scale every residual feature to unit variance before the PCA (R ``std.var``).
    nonparametric, mean_only, reference_batch, eb, tol, max_iter
        Options of the ComBat step, as in :class:`~imharmony.ComBat`. With a reference batch,
        the score step keeps that batch's scores too, so its samples are returned unchanged.

    Attributes
    ----------
    fit_ : CombatFit
        The ComBat step (with covariates and empirical Bayes).
    score_fit_ : CombatFit
        The location/scale correction of the leading scores (no EB, no covariates).
    center_ : ndarray, shape (n_features,)
        Mean of the ComBat residuals at fit.
    scale_ : ndarray, shape (n_features,)
        Their standard deviation (n - 1) when ``standardize_scores``, else ones.
    components_ : ndarray, shape (n_components_, n_features)
        Loadings of the harmonized components (rows are unit vectors).
    explained_variance_ratio_ : ndarray, shape (n_components_,)
        Share of the residual variance of each harmonized component.
    n_components_ : int
    batches_, n_features_in_, feature_names_in_, covariate_columns_, unadjusted_features_
        As in :class:`~imharmony.ComBat`.

    Notes
    -----
    With e_i the ComBat residual of sample i (ComBat output minus the grand mean and covariate
    fit), z_i = (e_i - center) / scale, scores s_i = V^T z_i on the first K loadings V. The scores
    are corrected by ComBat without EB, s*_ik = (s_ik - gamma_jk) / sqrt(delta_jk) * sigma_k +
    mu_k, and the output is ``(z_i + V (s*_i - s_i)) * scale + center + alpha + C_i beta``.
    On the training samples this equals R ``CovBat::covbat`` (v0.1.0, defaults ``eb = TRUE``,
    ``score.eb = FALSE``) to about 1e-12 relative (tests/reference/covbat). The originals do not
    apply a fitted model to new samples; here the centre, scale, loadings and score corrections
    learned at fit are applied unchanged, so learning on training samples and applying to them
    give the same output. Missing values are not supported (a PCA needs complete data).

    References
    ----------
    A. A. Chen, J. C. Beer, N. J. Tustison, P. A. Cook, R. T. Shinohara, H. Shou, "Mitigating site
    effects in covariance for machine learning in neuroimaging data", Human Brain Mapping
    43(4):1179-1195, 2022.

    Examples
    --------
    >>> import numpy as np, imharmony as ih
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 6)); site = np.repeat(["a", "b"], 30); X[site == "b"] *= 2
    >>> Xh = ih.CovBat(n_components=2).fit_transform(X, batch=site)
    >>> Xh.shape
    (60, 6)
    """

    _model_format: ClassVar[str] = FORMAT
    # 3: the whole score fit is saved (priors, hat estimates, iterations), so that a loaded model
    # equals the fitted one; version 2 files (ComBat's envelope, partial score fit) are re-fitted
    _model_version: ClassVar[int] = 3
    # ComBat's smooth (GAM) terms are not CovBat parameters: the PCA step needs a linear model.
    smooth: ClassVar[None] = None
    smooth_penalty: ClassVar[str] = "cv"
    smooth_df: ClassVar[int] = 10
    smooth_degree: ClassVar[int] = 3
    smooth_bounds: ClassVar[None] = None
    random_state: ClassVar[None] = None

    def __init__(
        self,
        percent_var: float = 0.95,
        n_components: int | None = None,
        standardize_scores: bool = True,
        nonparametric: bool = False,
        mean_only: bool = False,
        reference_batch: Any = None,
        eb: bool = True,
        tol: float = 1e-4,
        max_iter: int = 1000,
    ) -> None:
        # only CovBat's own parameters (the scikit-learn contract); ComBat's GAM parameters stay
        # at their class-level defaults below
        self.nonparametric = nonparametric
        self.mean_only = mean_only
        self.reference_batch = reference_batch
        self.eb = eb
        self.tol = tol
        self.max_iter = max_iter
        self.percent_var = percent_var
        self.n_components = n_components
        self.standardize_scores = standardize_scores

    def _validate_params(self) -> None:
        super()._validate_params()
        if isinstance(self.percent_var, bool) or not isinstance(self.percent_var, (int, float)):
            raise HarmonizationError(
                f"The 'percent_var' parameter of CovBat must be a float; got {self.percent_var!r}."
            )
        if not 0.0 < self.percent_var < 1.0:
            raise HarmonizationError(
                "The 'percent_var' parameter of CovBat must be strictly between 0 and 1; got "
                f"{self.percent_var}. To harmonize every component, set n_components."
            )
        k = self.n_components
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise HarmonizationError(
                f"The 'n_components' parameter of CovBat must be a positive int or None; got {k!r}."
            )
        if not isinstance(self.standardize_scores, (bool, np.bool_)):
            raise HarmonizationError(
                "The 'standardize_scores' parameter of CovBat must be a bool; got "
                f"{self.standardize_scores!r}."
            )

    # -- fit / transform -----------------------------------------------------------------------
    def _fit(
        self,
        data: np.ndarray,
        names: list[str] | None,
        nan_cols: np.ndarray,
        batch: Any,
        covariates: Any,
        biology: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        _require_complete(nan_cols, names, "CovBat's PCA")
        codes, C = super()._fit(data, names, nan_cols, batch, covariates, biology)
        resid = self._residuals(data, codes, C)
        n, G = resid.shape
        center = resid.mean(axis=0)
        resid -= center
        if self.standardize_scores:
            scale = resid.std(axis=0, ddof=1)
            scale[scale == 0] = 1.0  # a constant residual has no covariance to harmonize
            resid /= scale
        else:
            scale = np.ones(G)
        # PCA of the centred (and scaled) residuals; R: prcomp, whose variances divide by n - 1
        _, sv, vt = linalg.svd(resid, full_matrices=False, check_finite=False)
        ratio = sv**2 / np.sum(sv**2)
        if self.n_components is not None:
            k = int(self.n_components)
            if k > sv.shape[0]:
                raise DataError(
                    f"n_components={k} exceeds the {sv.shape[0]} principal components of "
                    f"{n} samples x {G} features; choose at most {sv.shape[0]}."
                )
        else:
            # R: which(cumsum(ratio) > percent.var)[1]
            k = int(np.argmax(np.cumsum(ratio) > self.percent_var)) + 1
        components = vt[:k]
        scores = resid @ components.T
        self.score_fit_ = fit_combat(
            scores, codes, self.batches_.shape[0], None, method="none", ref=self.reference_index_
        )
        self.center_ = center
        self.scale_ = scale
        self.components_ = components
        self.explained_variance_ratio_ = ratio[:k]
        self.n_components_ = k
        logger.info(
            "CovBat: %d principal component(s) harmonized (%.3f of the residual variance)",
            k,
            float(ratio[:k].sum()),
        )
        return codes, C

    def _residuals(self, data: np.ndarray, codes: np.ndarray, C: np.ndarray) -> np.ndarray:
        """ComBat output minus the grand mean and covariate fit (a new array)."""
        out = apply_combat(data, codes, self.fit_, C, ref=self.reference_index_)
        out -= self.fit_.grand_mean
        if C.shape[1]:
            out -= C @ self.fit_.beta
        return out

    def _apply(self, X: Any, data: np.ndarray, codes: np.ndarray, C: np.ndarray) -> Any:
        names = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else None
        _require_complete(missing_columns(data), names, "CovBat's PCA")
        z = self._residuals(data, codes, C)
        z -= self.center_
        z /= self.scale_
        scores = z @ self.components_.T
        shift = apply_combat(scores, codes, self.score_fit_, ref=self.reference_index_) - scores
        z += shift @ self.components_
        z *= self.scale_
        z += self.center_
        z += self.fit_.grand_mean
        if C.shape[1]:
            z += C @ self.fit_.beta
        if self.reference_index_ is not None:  # returned exactly as given
            rows = codes == self.reference_index_
            z[rows] = data[rows]
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(z, index=X.index, columns=X.columns, copy=False)
        return z

    # -- persistence (through ComBat.save / ComBat.load) -------------------------------------
    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "covbat_center": self.center_,
            "covbat_scale": self.scale_,
            "covbat_components": self.components_,
            "covbat_explained_variance_ratio": self.explained_variance_ratio_,
        }
        for k in _ARRAYS:  # the whole score fit, so that a loaded model equals the fitted one
            arrays[f"covbat_score_{k}"] = np.asarray(getattr(self.score_fit_, k))
        reasons = {str(k): v for k, v in self.score_fit_.reasons.items()}
        return arrays, {"covbat": {"n_components": int(self.n_components_),
                                   "score_reasons": reasons}}

    @classmethod
    def _extra_array_specs(
        cls, path: Path, content: dict[str, Any], params: dict[str, Any], J: int, G: int
    ) -> dict[str, ArraySpec]:
        doc = content.get("covbat")
        k = doc.get("n_components") if isinstance(doc, dict) else None
        reasons = doc.get("score_reasons") if isinstance(doc, dict) else None
        check(path, "covbat", doc,
              is_int(k, 1, G) and isinstance(reasons, dict)
              and all(i.isdigit() and int(i) < k and isinstance(v, str)
                      for i, v in reasons.items()),
              f"an object with n_components (an int in [1, {G}]) and score_reasons (an object "
              "of str keyed by component index)")
        specs = {
            "covbat_center": ArraySpec((G,)),
            "covbat_scale": ArraySpec((G,)),
            "covbat_components": ArraySpec((k, G)),
            "covbat_explained_variance_ratio": ArraySpec((k,)),
        }
        # the score fit: a ComBat fit of k features (the components' scores), no covariates
        specs.update({f"covbat_score_{n}": spec for n, spec in fit_array_specs(J, k, 0).items()})
        return specs

    def _restore_extra_state(
        self, arrays: dict[str, np.ndarray], doc: dict[str, Any], path: Path
    ) -> None:
        k = int(doc["covbat"]["n_components"])
        reasons = {int(i): v for i, v in doc["covbat"]["score_reasons"].items()}
        self.center_ = arrays["covbat_center"]
        self.scale_ = arrays["covbat_scale"]
        self.components_ = arrays["covbat_components"]
        self.explained_variance_ratio_ = arrays["covbat_explained_variance_ratio"]
        self.n_components_ = k
        self.score_fit_ = CombatFit(
            **{n: arrays[f"covbat_score_{n}"] for n in _ARRAYS}, reasons=reasons
        )
