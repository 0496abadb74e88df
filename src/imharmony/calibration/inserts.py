"""Insert-phantom calibration: each site's gain and offset from inserts of known value.

A phantom with inserts of known physical value (CT: air, water, acrylic, bone-equivalent HU; MR:
T1/T2/ADC vials of a system phantom; PET: activity concentrations) is scanned at every site. Per
site ``j`` the measured value of insert ``k`` is modelled as

    measured_jk = offset_j + gain_j · reference_k + e_jk,    Var(e_jk) = σ_j² / w_jk

fitted by weighted least squares; the calibration maps a measurement back onto the reference
scale, ``(x - offset_j) / gain_j``. That is the ``γ_j, δ_j`` of the project's image model
(DESIGN.md), measured on physical truth instead of estimated from the population.

References
----------
Mackin D, et al. (2017). Harmonizing the pixel size in retrospective computed tomography radiomics
studies. PLOS ONE 12:e0178524 (phantom-based CT calibration in radiomics).
Keenan KE, et al. (2018). Quantitative magnetic resonance imaging phantoms: a review and the need
for a system phantom. Magn Reson Med 79:48.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .._persist import ArraySpec, check, is_number, is_table
from .._validation import encode_labels, format_items, label_key, labels_of
from ..base import HarmonizerMixin, Rule
from ..errors import (
    DataError,
    DesignError,
    HarmonizationWarning,
    UnseenBatchError,
)
from ..features.estimators import as_feature_matrix
from ..image import Image
from .travelling import check_offset_gain, label_codes, sites_field

__all__ = ["PhantomCalibration"]

logger = logging.getLogger(__name__)

FORMAT = "imharmony.phantom_calibration"
FORMAT_VERSION = 2  # 2: the project's model envelope (imharmony._persist)
_ARRAYS = ("offset", "gain", "offset_se", "gain_se", "range")
_RESIDUAL_COLUMNS = {
    "site": lambda v: isinstance(v, str), "insert": lambda v: isinstance(v, str),
    **dict.fromkeys(("reference", "measured", "fitted", "residual", "reference_error"),
                    is_number),
}
_LINEARITY_COLUMNS = {
    "site": lambda v: isinstance(v, str),
    "n_inserts": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
    **dict.fromkeys(("r2", "rmse", "max_abs_residual"), lambda v: is_number(v, none_ok=True)),
}
_MIN_REPLICATES = 5  # below, variances estimated from replicates make weights (and SEs) unreliable


def _column(table: pd.DataFrame | None, value: Any, n: int | None, what: str) -> np.ndarray:
    """A column of ``table`` named by ``value``, or ``value`` itself as one entry per row."""
    if table is not None and isinstance(value, str | int) and value in table.columns:
        return table[value].to_numpy()
    if isinstance(value, str):
        cols = list(table.columns)[:12] if table is not None else []
        raise DataError(f"{what} column {value!r} not found; columns are {cols}.")
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value)
    if n is not None and (arr.ndim != 1 or arr.shape[0] != n):
        raise DataError(f"{what} must have one value per row ({n}); got shape {arr.shape}.")
    return arr


def _numeric(values: np.ndarray, what: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} values must be numbers: {exc}") from exc
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError(
            f"{what} has {int(bad.sum())} missing or infinite value(s) (first at row "
            f"{int(np.flatnonzero(bad)[0])}); drop those inserts."
        )
    return out


class PhantomCalibration(HarmonizerMixin, BaseEstimator):
    """Per-site gain and offset learned from phantom inserts of known value.

    Parameters
    ----------
    weighted : bool, default=True
        Weighted least squares: each measurement weighted by ``1 / sd²`` when ``sd`` is given
        at fit, else by the inverse variance of that insert's replicate measurements at that site
        when every insert was measured at least 5 times at every site (with fewer, variances
        estimated from the replicates are too noisy: the standard errors come out ~1.8x too
        small with 3 replicates); otherwise equal weights.

    Attributes
    ----------
    sites_ : ndarray, shape (n_sites,)
    offset_, gain_, offset_se_, gain_se_ : ndarray, shape (n_sites,)
        Calibration of each site: ``measured = offset_ + gain_ · reference``, with standard errors
        (NaN when a site has no residual degree of freedom, i.e. exactly two measurements).
    range_ : ndarray, shape (n_sites, 2)
        Smallest and largest measured insert value per site: applying the calibration outside it
        is an extrapolation and warns.
    residuals_ : DataFrame
        One row per measurement: ``site``, ``insert``, ``reference``, ``measured``, ``fitted``,
        ``residual`` (measured - fitted), ``reference_error`` (calibrated - reference): the
        linearity check.
    linearity_ : DataFrame
        Per site: ``n_inserts``, ``r2``, ``rmse`` and ``max_abs_residual`` (in measured units).

    Notes
    -----
    measured_jk = offset_j + gain_j reference_k + e_jk, weighted least squares per site;
    Var(offset, gain) = σ̂² (XᵀWX)⁻¹ with σ̂² = Σ w r² / (n - 2). The calibration returns
    (x - offset_j) / gain_j.

    Examples
    --------
    >>> import pandas as pd, imharmony as ih
    >>> t = pd.DataFrame({"site": ["a"] * 3 + ["b"] * 3, "ref": [-1000, 0, 1000] * 2,
    ...                   "hu": [-990, 10, 1010, -1100, 0, 1100]})
    >>> cal = ih.PhantomCalibration().fit(t, site="site", reference="ref", measured="hu")
    >>> [round(float(g), 3) for g in cal.gain_]
    [1.0, 1.1]
    """

    _parameter_constraints: ClassVar[dict[str, Rule]] = {"weighted": Rule.boolean()}
    _fitted_attribute: ClassVar[str] = "gain_"
    _model_kind: ClassVar[str] = FORMAT
    _model_version: ClassVar[int] = FORMAT_VERSION

    def __init__(self, weighted: bool = True) -> None:
        self.weighted = weighted

    def fit(
        self,
        table: pd.DataFrame | None = None,
        y: Any = None,
        *,
        site: Any,
        reference: Any,
        measured: Any,
        insert: Any = None,
        sd: Any = None,
    ) -> PhantomCalibration:
        """Learn each site's gain and offset from its inserts.

        Parameters
        ----------
        table : DataFrame, optional
            One row per insert measurement; the other arguments then name its columns.
        y : ignored
        site, reference, measured : str or array-like, shape (n_measurements,)
            Site, the insert's known value, and the value measured in the insert's ROI.
        insert : str or array-like, optional
            Insert name (default: inserts are told apart by their reference value).
        sd : str or array-like, optional
            Standard deviation of each measurement (e.g. the ROI's standard error), for weights.

        Raises
        ------
        DesignError
            A site with fewer than 2 distinct inserts, or whose measured values do not increase
            with the reference (gain <= 0).
        """
        self._validate_params()
        ref = _numeric(_column(table, reference, None, "reference"), "reference")
        n = ref.shape[0]
        meas = _numeric(_column(table, measured, n, "measured"), "measured")
        codes, sites = label_codes(_column(table, site, n, "site"), n, "site")
        ins = ref if insert is None else _column(table, insert, n, "insert")
        ins_codes, ins_levels = label_codes(ins, n, "insert")
        J = len(sites)
        pairs = np.unique(np.stack([codes, ins_codes], axis=1), axis=0)
        distinct = np.bincount(pairs[:, 0], minlength=J)
        few = [sites[j] for j in np.flatnonzero(distinct < 2)]
        if few:
            raise DesignError(
                f"site(s) {format_items(few)} have fewer than 2 distinct inserts; a gain and an "
                "offset need at least two inserts of different reference value (e.g. air and "
                "water)."
            )
        w = self._weights(table, sd, codes, ins_codes, meas, n)

        def wsum(v: np.ndarray) -> np.ndarray:
            return np.bincount(codes, weights=w * v, minlength=J)

        Sw, Sx, Sy = wsum(np.ones(n)), wsum(ref), wsum(meas)
        Sxx, Sxy = wsum(ref * ref), wsum(ref * meas)
        D = Sw * Sxx - Sx**2
        flat = [sites[j] for j in np.flatnonzero(D <= 1e-12 * Sw * Sxx)]
        if flat:
            raise DesignError(
                f"site(s) {format_items(flat)}: the inserts' reference values are equal."
            )
        gain = (Sw * Sxy - Sx * Sy) / D
        offset = (Sy - gain * Sx) / Sw
        bad = [sites[j] for j in np.flatnonzero(gain <= 0)]
        if bad:
            raise DesignError(
                f"site(s) {format_items(bad)}: measured values do not increase with the reference "
                "values (gain <= 0); check the reference and measured columns and the insert "
                "names."
            )
        fitted = offset[codes] + gain[codes] * ref
        resid = meas - fitted
        dof = np.bincount(codes, minlength=J) - 2
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma2 = np.where(dof > 0, wsum(resid**2) / np.maximum(dof, 1), np.nan)
        if (dof < 1).any():
            logger.info("site(s) %s have exactly two measurements: no standard errors",
                        format_items([sites[j] for j in np.flatnonzero(dof < 1)]))
        self.sites_ = np.array(sites, dtype=object)
        self.offset_, self.gain_ = offset, gain
        self.offset_se_ = np.sqrt(sigma2 * Sxx / D)
        self.gain_se_ = np.sqrt(sigma2 * Sw / D)
        lo = np.full(J, np.inf)
        hi = np.full(J, -np.inf)
        np.minimum.at(lo, codes, meas)
        np.maximum.at(hi, codes, meas)
        self.range_ = np.stack([lo, hi], axis=1)
        self.residuals_ = pd.DataFrame({
            "site": self.sites_[codes], "insert": np.array(ins_levels, dtype=object)[ins_codes],
            "reference": ref, "measured": meas, "fitted": fitted, "residual": resid,
            "reference_error": resid / gain[codes],
        })
        self.linearity_ = self._linearity(codes, ref, meas, resid, distinct)
        logger.info("phantom calibration: %d sites, %d measurements", J, n)
        return self

    def _weights(self, table: Any, sd: Any, codes: np.ndarray, ins: np.ndarray,
                 meas: np.ndarray, n: int) -> np.ndarray:
        if not self.weighted:
            return np.ones(n)
        if sd is not None:
            s = _numeric(_column(table, sd, n, "sd"), "sd")
            if (s <= 0).any():
                raise DataError("sd must be > 0 for every measurement (it gives the weights).")
            return 1.0 / s**2
        key = codes * (ins.max() + 1) + ins
        _, cell, count = np.unique(key, return_inverse=True, return_counts=True)
        if count.min() < _MIN_REPLICATES:
            if count.max() > 1:
                logger.info("fewer than %d replicates of some insert: equal weights (replicate "
                            "variances that small make the standard errors optimistic)",
                            _MIN_REPLICATES)
            return np.ones(n)
        mean = np.bincount(cell, weights=meas) / count
        var = np.bincount(cell, weights=(meas - mean[cell]) ** 2) / (count - 1)
        if (var <= 0).any():
            return np.ones(n)
        return 1.0 / var[cell]

    def _linearity(self, codes: np.ndarray, ref: np.ndarray, meas: np.ndarray,
                   resid: np.ndarray, distinct: np.ndarray) -> pd.DataFrame:
        J = len(self.sites_)
        cnt = np.bincount(codes, minlength=J)
        mean = np.bincount(codes, weights=meas, minlength=J) / cnt
        ss_tot = np.bincount(codes, weights=(meas - mean[codes]) ** 2, minlength=J)
        ss_res = np.bincount(codes, weights=resid**2, minlength=J)
        worst = np.zeros(J)
        np.maximum.at(worst, codes, np.abs(resid))
        return pd.DataFrame(
            {"n_inserts": distinct, "r2": 1 - ss_res / ss_tot, "rmse": np.sqrt(ss_res / cnt),
             "max_abs_residual": worst},
            index=pd.Index(self.sites_, name="site"),
        )

    def _codes(self, site: Any, n: int) -> np.ndarray:
        arr = labels_of(np.full(n, site, dtype=object) if np.ndim(site) == 0 else site, n,
                         "site")
        codes, unseen = encode_labels(arr, self.sites_.tolist())
        if unseen:
            raise UnseenBatchError(
                f"site(s) {format_items(sorted(str(u) for u in unseen))} have no phantom "
                f"calibration (calibrated sites: {format_items(self.sites_.tolist())}); scan the "
                "phantom there first."
            )
        return codes

    def transform(self, X: Any, *, site: Any) -> Any:
        """Map measurements onto the reference scale: ``(x - offset_[site]) / gain_[site]``.

        Parameters
        ----------
        X : Image, ndarray or DataFrame
            An image (``site`` a single label; ``meta["history"]`` gains a
            ``"phantom_calibration"`` entry), or a samples x features table / array whose every
            column is in the measured units (``site`` a label per row, or one label).
        site : label or array-like, shape (n_samples,)

        Returns
        -------
        Image, ndarray or DataFrame
            Same kind as X. Values outside the site's inserts' range warn (extrapolation).
        """
        self._check_fitted()
        if isinstance(X, Image):
            if np.ndim(site) != 0:
                raise DataError("an image belongs to one site: pass site as a single label.")
            j = int(self._codes(site, 1)[0])
            arr = np.asarray(X.array)
            dt = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
            self._warn_outside(arr, np.array([j]), "the image")
            out = (arr - dt.type(self.offset_[j])) * dt.type(1.0 / self.gain_[j])
            entry = {"step": "phantom_calibration", "site": label_key(self.sites_[j]),
                     "gain": float(self.gain_[j]), "offset": float(self.offset_[j])}
            return X.with_array(out.astype(dt, copy=False),
                                history=[*X.meta.get("history", []), entry])
        data, _, _ = as_feature_matrix(X)
        codes = self._codes(site, data.shape[0])
        self._warn_outside(data, codes, "the table")
        out = (data - self.offset_[codes][:, None]) / self.gain_[codes][:, None]
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(out, index=X.index, columns=X.columns, copy=False)
        return out

    def _warn_outside(self, data: np.ndarray, codes: np.ndarray, what: str) -> None:
        if codes.size == 1:
            lo, hi = self.range_[codes[0]]
            finite = np.isfinite(data)
            outside = int(np.count_nonzero(finite & ((data < lo) | (data > hi))))
            total = int(np.count_nonzero(finite))
        else:
            lo, hi = self.range_[codes, 0][:, None], self.range_[codes, 1][:, None]
            outside = int(np.count_nonzero((data < lo) | (data > hi)))
            total = int(np.count_nonzero(np.isfinite(data)))
        if outside:
            warnings.warn(
                f"{outside} of {total} values of {what} lie outside the range of the phantom "
                "inserts measured at their site: the calibration is extrapolated there. Add "
                "inserts that cover the range of interest.",
                HarmonizationWarning,
                stacklevel=3,
            )

    # -- persistence (HarmonizerMixin.save / .load: the project's model envelope) -----------
    def _model_content(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        def cells(frame: pd.DataFrame) -> dict[str, list[Any]]:
            return {c: [None if isinstance(v, float) and not np.isfinite(v) else v
                        for v in frame[c].tolist()] for c in frame.columns}

        content = {
            "sites": [label_key(s) for s in self.sites_.tolist()],
            "residuals": cells(self.residuals_.astype({"site": str, "insert": str})),
            "linearity": cells(self.linearity_.reset_index().astype({"site": str})),
        }
        return content, {k: np.asarray(getattr(self, f"{k}_"), dtype=np.float64) for k in _ARRAYS}

    @classmethod
    def _model_arrays(cls, path: Path, content: dict[str, Any]) -> dict[str, ArraySpec]:
        J = sites_field(path, content, 1)
        check(path, "residuals", content.get("residuals"),
              is_table(content.get("residuals"), _RESIDUAL_COLUMNS), "a table of the fit's "
              "measurements (site, insert, reference, measured, fitted, residual, "
              "reference_error)")
        check(path, "linearity", content.get("linearity"),
              is_table(content.get("linearity"), _LINEARITY_COLUMNS, J),
              "one row per site (site, n_inserts, r2, rmse, max_abs_residual)")
        return {k: ArraySpec((J, 2) if k == "range" else (J,)) for k in _ARRAYS}

    def _restore(self, path: Path, content: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        check_offset_gain(path, "phantom calibration", arrays["offset"], arrays["gain"],
                          ok=bool(np.all(arrays["gain"] > 0)
                                  and np.all(arrays["range"][:, 0] <= arrays["range"][:, 1])))
        for k in _ARRAYS:
            setattr(self, f"{k}_", arrays[k])
        self.sites_ = np.array(content["sites"], dtype=object)
        self.residuals_ = pd.DataFrame(content["residuals"])
        linearity = pd.DataFrame(content["linearity"]).set_index("site")
        self.linearity_ = linearity.astype({c: float for c in ("r2", "rmse", "max_abs_residual")})
