"""SUV and Bq/ml factors, and the parameters they come from."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset

from ..._dicom.tags import tag_label as _tag
from ._body import body_surface_area, ideal_body_weight, lean_body_mass
from ._header import (
    _LBM_FORMULAS,
    _REFUSED_UNITS,
    SUVError,
    _check_pet,
    _corrected_image,
    _label,
    _series_units,
    _series_value,
    _upper_reader,
    _wanted_units,
    _where,
)
from ._ingredients import _Decay, _decay, _height, _sex, _stored_scale, _weight
from ._times import _as_list
from ._vendor import _PHILIPS_CREATOR, _philips_factors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SUVParameters:
    """Everything an SUV conversion used, as read (and sanity-corrected) from the headers.

    Attributes
    ----------
    units : str
        DICOM Units (0054,1001) of the stored values: BQML, CNTS, GML or CM2ML.
    normalization : {"bw", "lbm", "bsa", "ibw"}
        What the output is normalized by.
    source_normalization : {"bw", "lbm", "bsa", "ibw"} or None
        What stored SUV values (GML, CM2ML, Philips SUV Scale Factor) are normalized by; None for
        activity data.
    scale : {"activity", "philips_activity_factor", "philips_suv_factor", "stored_suv"}
        How stored values become SUV: as Bq/ml; via Philips Activity Concentration Scale Factor
        (7053,xx09) to Bq/ml; via Philips SUV Scale Factor (7053,xx00); or already SUV.
    lbm_formula : str
        Lean-body-mass formula of the output (when ``normalization == "lbm"``).
    source_lbm_formula : str or None
        Lean-body-mass formula of stored SUVlbm values.
    decay_correction : str or None
        Decay Correction (0054,1102): START, ADMIN or NONE (None when not used).
    corrected_image : tuple of str
        Corrected Image (0028,0051) values.
    weight_kg, height_m : float or None
        Patient's Weight (0010,1030) in kg and Patient's Size (0010,1020) in m.
    sex : str or None
        Patient's Sex (0010,0040) as given.
    dose_bq : float or None
        Radionuclide Total Dose (0018,1074) in Bq.
    half_life_s : float or None
        Radionuclide Half Life (0018,1075) in s.
    injection_datetime : datetime.datetime or None
        Injection time (see :func:`injection_datetime`).
    reference_datetimes : tuple of datetime.datetime or None, length n_instances
        Reference time of each instance (START) — see :func:`reference_time`.
    reference_source : str or None
        The rule that chose ``reference_datetimes``.
    acquisition_datetimes : tuple of datetime.datetime or None, length n_instances
        Acquisition Date/Time per instance (used with Decay Correction NONE).
    frame_durations_s : tuple of float or None, length n_instances
        Actual Frame Duration per instance in s (used with Decay Correction NONE).
    decay_factors : tuple of float or None, length n_instances
        ``D_ref / D_inj`` per instance: ``exp(-lambda (t_ref - t_inj))`` for START, 1 for ADMIN,
        ``exp(-lambda (t_acq - t_inj)) (1 - exp(-lambda T)) / (lambda T)`` for NONE.
    scale_factors : tuple of float or None, length n_instances
        The Philips private factor per instance when ``scale`` uses one.
    manufacturer : str or None
        Manufacturer (0008,0070).
    instances : tuple of str, length n_instances
        How each instance is named in messages (file name or Instance Number).
    adjustments : tuple of str
        Unit corrections applied (weight in grams, dose in MBq, height in cm) and overrides.
    """

    units: str
    normalization: str
    source_normalization: str | None
    scale: str
    lbm_formula: str
    source_lbm_formula: str | None
    decay_correction: str | None
    corrected_image: tuple[str, ...]
    weight_kg: float | None
    height_m: float | None
    sex: str | None
    dose_bq: float | None
    half_life_s: float | None
    injection_datetime: datetime | None
    reference_datetimes: tuple[datetime, ...] | None
    reference_source: str | None
    acquisition_datetimes: tuple[datetime, ...] | None
    frame_durations_s: tuple[float, ...] | None
    decay_factors: tuple[float, ...] | None
    scale_factors: tuple[float, ...] | None
    manufacturer: str | None
    instances: tuple[str, ...]
    adjustments: tuple[str, ...] = field(default=())

    def normalizer(self, kind: str, lbm_formula: str | None = None) -> float:
        """Body-size normalizer: weight, LBM or IBW in g, or BSA in cm^2.

        Parameters
        ----------
        kind : {"bw", "lbm", "bsa", "ibw"}
        lbm_formula : str, optional
            For ``"lbm"``; defaults to :attr:`lbm_formula`.

        Returns
        -------
        float
        """
        if kind in ("bw", "lbm", "bsa") and self.weight_kg is None:
            raise SUVError(f"{_tag('PatientWeight')} is needed for SUV{kind}; it is not known.")
        if kind in ("lbm", "bsa", "ibw") and self.height_m is None:
            raise SUVError(f"{_tag('PatientSize')} is needed for SUV{kind}; it is not known.")
        if kind == "bw":
            return 1000.0 * self.weight_kg  # type: ignore[operator]
        if kind == "lbm":
            return 1000.0 * lean_body_mass(
                self.weight_kg,
                self.height_m,
                self.sex,
                lbm_formula or self.lbm_formula,  # type: ignore[arg-type]
            )
        if kind == "bsa":
            return 1e4 * body_surface_area(self.weight_kg, self.height_m)  # type: ignore[arg-type]
        if kind == "ibw":
            return 1000.0 * ideal_body_weight(self.height_m, self.sex)  # type: ignore[arg-type]
        raise SUVError(f"Unknown normalization {kind!r}; use bw, lbm, bsa or ibw.")

    def factors(self) -> np.ndarray:
        """SUV factor per instance: ``SUV_i = (slope_i * stored_i + intercept_i) * f_i``.

        Returns
        -------
        numpy.ndarray, shape (n_instances,), float64
        """
        n = len(self.instances)
        if self.scale in ("stored_suv", "philips_suv_factor"):
            source = self.source_normalization or "bw"
            same = source == self.normalization and (
                source != "lbm" or self.source_lbm_formula == self.lbm_formula
            )
            ratio = 1.0
            if not same:
                ratio = self.normalizer(self.normalization) / self.normalizer(
                    source, self.source_lbm_formula
                )
            base = np.ones(n) if self.scale_factors is None else np.asarray(self.scale_factors)
            return base * ratio
        if self.dose_bq is None or self.decay_factors is None:
            raise SUVError(f"{_tag('RadionuclideTotalDose')} and the decay correction are needed.")
        per_instance = self.normalizer(self.normalization) / (
            self.dose_bq * np.asarray(self.decay_factors, dtype=np.float64)
        )
        if self.scale == "philips_activity_factor":
            per_instance = per_instance * np.asarray(self.scale_factors, dtype=np.float64)
        return per_instance


def _needs(normalization: str) -> tuple[bool, bool]:
    """(needs weight, needs height) for a normalization."""
    return normalization in ("bw", "lbm", "bsa"), normalization in ("lbm", "bsa", "ibw")


def pet_parameters(
    datasets: Sequence[Dataset] | Dataset,
    units: str = "suv",
    *,
    lbm_formula: str = "james128",
    weight: float | None = None,
    height: float | None = None,
    sex: str | None = None,
    dose: float | None = None,
    half_life: float | None = None,
) -> SUVParameters:
    """Read and check what an SUV conversion of a PET series needs.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset, length n_instances
        The PET instances of one series (headers suffice; pixel data is not read).
    units : {"suv", "suvbw", "suvlbm", "suvbsa", "suvibw"}
        ``"suv"``: the normalization the data imply (body weight for BQML and CNTS, the stored
        SUV Type (0054,1006) for GML, body surface area for CM2ML) — stored SUVs are returned as
        stored, needing no patient data. Another type than the stored one is converted through
        body size (ratio of the two normalizers, from weight, height and sex); when a measure it
        needs is missing, :class:`SUVError` names the tag and the override to pass.
    lbm_formula : {"james128", "james120", "janmahasatian"}
        Lean body mass formula for ``"suvlbm"`` (``"janmahasatian"`` gives SUL).
    weight, height, sex, dose, half_life : optional
        Values (kg, m, "M"/"F"/"O", Bq, s) to use instead of the headers; taken as given (no unit
        guessing). Use them when a header is missing or known to be wrong.

    Returns
    -------
    SUVParameters

    Raises
    ------
    SUVError
        When an ingredient is missing (the message names the tag and the instance), invalid,
        inconsistent between instances, or the Units cannot be converted to SUV.

    Warns
    -----
    HarmonizationWarning
        When a unit is corrected: weight > 1000 taken as grams, dose < 1e5 taken as MBq, height > 3
        taken as centimetres.
    """
    datasets = _as_list(datasets)
    labels = tuple(_label(ds, i) for i, ds in enumerate(datasets))
    wanted = _wanted_units(units)
    if lbm_formula not in _LBM_FORMULAS:
        raise SUVError(
            f"Unknown lbm_formula {lbm_formula!r}; use one of {', '.join(_LBM_FORMULAS)}."
        )
    _check_pet(datasets, labels, "SUV")
    adjustments: list[str] = []
    stored = _stored_scale(datasets, labels)
    normalization = wanted or stored.source_normalization or "bw"

    # Body size: for the output normalization, and for the stored one when they differ.
    kinds = {normalization}
    if stored.source_normalization is not None:
        same = stored.source_normalization == normalization and (
            normalization != "lbm" or stored.source_lbm_formula == lbm_formula
        )
        kinds = set() if same else {normalization, stored.source_normalization}
    weight_kg = _weight(datasets, labels, weight, any(_needs(k)[0] for k in kinds), adjustments)
    height_m = _height(datasets, labels, height, any(_needs(k)[1] for k in kinds), adjustments)
    sex_value = _sex(datasets, labels, sex, bool(kinds & {"lbm", "ibw"}), adjustments)
    corrected = _series_value(datasets, labels, _corrected_image, _tag("CorrectedImage"))
    manufacturer = _series_value(
        datasets, labels, _upper_reader("Manufacturer"), _tag("Manufacturer")
    )
    decay = _Decay()
    if stored.scale in ("activity", "philips_activity_factor"):
        decay = _decay(datasets, labels, corrected, dose, half_life, adjustments)
    return SUVParameters(
        units=stored.units,
        normalization=normalization,
        source_normalization=stored.source_normalization,
        scale=stored.scale,
        lbm_formula=lbm_formula,
        source_lbm_formula=stored.source_lbm_formula,
        decay_correction=decay.mode,
        corrected_image=corrected or (),
        weight_kg=weight_kg,
        height_m=height_m,
        sex=sex_value,
        dose_bq=decay.dose_bq,
        half_life_s=decay.half_life_s,
        injection_datetime=decay.injection,
        reference_datetimes=None if decay.reference is None else decay.reference.times,
        reference_source=None if decay.reference is None else decay.reference.source,
        acquisition_datetimes=decay.acquired,
        frame_durations_s=decay.durations,
        decay_factors=decay.factors,
        scale_factors=stored.factors,
        manufacturer=manufacturer,
        instances=labels,
        adjustments=tuple(adjustments),
    )


def suv_factors(
    datasets: Sequence[Dataset] | Dataset,
    units: str = "suv",
    *,
    lbm_formula: str = "james128",
    weight: float | None = None,
    height: float | None = None,
    sex: str | None = None,
    dose: float | None = None,
    half_life: float | None = None,
) -> np.ndarray:
    """SUV factor of each PET instance: ``SUV_i = (slope_i * stored_i + intercept_i) * f_i``.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset, length n_instances
        The PET instances of one series, in the order the factors are wanted.
    units : {"suv", "suvbw", "suvlbm", "suvbsa", "suvibw"}
        ``"suv"``: the normalization the data imply (body weight for Units BQML and CNTS, the
        stored SUV Type for GML, body surface area for CM2ML). SUVbw, SUVlbm and SUVibw are in
        g/ml, SUVbsa in cm^2/ml.
    lbm_formula : {"james128", "james120", "janmahasatian"}
        Lean body mass formula for ``"suvlbm"`` (James with 128 is DICOM LBMJAMES128;
        Janmahasatian gives SUL).
    weight, height, sex, dose, half_life : optional
        Override the headers (kg, m, sex code, Bq, s); see :func:`pet_parameters`.

    Returns
    -------
    numpy.ndarray, shape (n_instances,), float64
        Multiply the rescaled value of instance ``i`` by ``f_i``.

    Raises
    ------
    SUVError
        See :func:`pet_parameters`.

    Notes
    -----
    ``f_i = N / (D_inj * d_i)`` for activity data, with ``N`` the weight or lean body mass in g or
    the body surface area in cm^2, and ``d_i`` the decay factor of the Decay Correction mode (see
    :class:`SUVParameters`). Philips CNTS data use the private SUV Scale Factor (7053,xx00) or
    Activity Concentration Scale Factor (7053,xx09); stored SUVs (GML, CM2ML) are re-normalized
    only when another normalization is asked for.

    Examples
    --------
    Check value: 75 kg, 1.85 m, male, 100 Bq injected and scanned at once gives SUVbw factor 750.
    """
    params = pet_parameters(
        datasets,
        units,
        lbm_formula=lbm_formula,
        weight=weight,
        height=height,
        sex=sex,
        dose=dose,
        half_life=half_life,
    )
    factors = params.factors()
    logger.debug("SUV factors (%s): %s", params.normalization, factors)
    return factors


def activity_factors(datasets: Sequence[Dataset] | Dataset) -> np.ndarray:
    """Bq/ml factor of each PET instance: ``A_i = (slope_i * stored_i + intercept_i) * f_i``.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset, length n_instances
        The PET instances of one series (headers suffice).

    Returns
    -------
    numpy.ndarray, shape (n_instances,), float64
        1 for Units BQML (the rescaled values are Bq/ml); for Units CNTS the Philips Activity
        Concentration Scale Factor (7053,xx09) of each instance.

    Raises
    ------
    SUVError
        Units missing or not activity (GML and CM2ML are SUVs, whose conversion back to Bq/ml is
        not made; PROPCNTS, 1CM, ... are not calibrated), CNTS without the Philips factor, or a
        Modality other than PT. The message names the tag, the instance and the fix.

    Notes
    -----
    No dose, time or body size is read: activity concentration is what the scanner stored, at
    the time its Decay Correction (0054,1102) names. Phantom recovery coefficients are measured
    in these units.
    """
    datasets = _as_list(datasets)
    labels = tuple(_label(ds, i) for i, ds in enumerate(datasets))
    _check_pet(datasets, labels, "Bq/ml")
    units = _series_units(datasets, labels)
    if units == "BQML":
        return np.ones(len(datasets))
    if units == "CNTS":
        factors = _philips_factors(datasets, labels, 0x09)
        missing = [lab for lab, f in zip(labels, factors, strict=True) if f is None]
        if missing:
            raise SUVError(
                f"{_tag('Units')} is CNTS but the Philips Activity Concentration Scale Factor "
                f"(7053,xx09) under private creator '{_PHILIPS_CREATOR}' is not set (positive) in "
                f"{_where(missing)}; counts cannot be calibrated to Bq/ml. Export the series in "
                "BQML from the scanner."
            )
        return np.asarray(factors, dtype=np.float64)
    reason = _REFUSED_UNITS.get(units) or (
        "already SUV; imharmony does not convert SUVs back to Bq/ml" if units in ("GML", "CM2ML")
        else "not an activity unit imharmony knows"
    )
    raise SUVError(
        f"{_tag('Units')} is {units} in {labels[0]}: {reason}; it cannot be read in Bq/ml "
        "(supported: BQML, CNTS with the Philips activity factor). Read it with units='raw' or "
        "a SUV unit, or use data reconstructed in BQML."
    )
