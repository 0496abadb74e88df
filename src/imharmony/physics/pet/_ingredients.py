"""Ingredients of the SUV factors: stored scale, decay, body measures, dose, checks."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pydicom.dataset import Dataset

from ..._dicom.tags import parse_datetime, parse_time, plain_value
from ..._dicom.tags import tag_label as _tag
from ._body import _check_positive, _frame_average_factor, _sex_code
from ._header import (
    _DOSE_MBQ_BELOW,
    _HEIGHT_CM_ABOVE,
    _LN2,
    _RADIO_SEQ,
    _REFUSED_UNITS,
    _SUV_TYPES,
    _WEIGHT_GRAMS_ABOVE,
    SUVError,
    _close,
    _float,
    _get_radio,
    _number_reader,
    _parsed,
    _series_units,
    _series_value,
    _upper_reader,
    _warn,
)
from ._times import ReferenceTime, _acquisitions, _half_life, injection_datetime, reference_time
from ._vendor import _philips_scale

logger = logging.getLogger(__name__)


class _Stored(NamedTuple):
    units: str
    scale: str
    source_normalization: str | None = None
    source_lbm_formula: str | None = None
    factors: tuple[float, ...] | None = None


def _stored_scale(datasets: Sequence[Dataset], labels: Sequence[str]) -> _Stored:
    """What the stored values are (Units) and how they become SUV."""
    units = _series_units(datasets, labels)
    if units in _REFUSED_UNITS:
        raise SUVError(
            f"{_tag('Units')} is {units} in {labels[0]}: {_REFUSED_UNITS[units]}; it cannot be "
            "converted to SUV. Read it with units='raw', or use data reconstructed in BQML."
        )
    if units == "BQML":
        return _Stored(units, "activity")
    if units == "CNTS":
        scale, factors = _philips_scale(datasets, labels)
        source = "bw" if scale == "philips_suv_factor" else None
        return _Stored(units, scale, source, None, factors)
    if units not in ("GML", "CM2ML"):
        raise SUVError(
            f"{_tag('Units')} is {units!r} in {labels[0]}, which imharmony cannot convert to SUV; "
            "supported: BQML, CNTS (Philips), GML, CM2ML."
        )
    suv_type = _series_value(datasets, labels, _upper_reader("SUVType"), _tag("SUVType")) or ""
    if suv_type not in _SUV_TYPES:
        raise SUVError(
            f"{_tag('SUVType')} is {suv_type!r} in {labels[0]}, which imharmony does not know; "
            f"expected one of {', '.join(t for t in _SUV_TYPES if t)}."
        )
    source, source_lbm = _SUV_TYPES[suv_type]
    if units == "CM2ML" and suv_type not in ("", "BSA"):
        raise SUVError(
            f"{_tag('Units')} CM2ML (SUVbsa) but {_tag('SUVType')} {suv_type} in {labels[0]}; the "
            "header contradicts itself — correct one of them."
        )
    if units == "GML" and source == "bsa":
        raise SUVError(
            f"{_tag('Units')} GML but {_tag('SUVType')} BSA in {labels[0]}; SUVbsa is in CM2ML — "
            "the header contradicts itself, correct one of them."
        )
    return _Stored(units, "stored_suv", "bsa" if units == "CM2ML" else source, source_lbm)


class _Decay(NamedTuple):
    mode: str | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    injection: datetime | None = None
    reference: ReferenceTime | None = None
    acquired: tuple[datetime, ...] | None = None
    durations: tuple[float, ...] | None = None
    factors: tuple[float, ...] | None = None


def _decay(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    corrected: tuple[str, ...] | None,
    dose: float | None,
    half_life: float | None,
    adjustments: list[str],
) -> _Decay:
    """Dose, times and the per-instance decay factor ``D_ref / D_inj`` of activity data."""
    mode = _series_value(
        datasets,
        labels,
        _upper_reader("DecayCorrection"),
        _tag("DecayCorrection"),
        required="it says to which time the activity is decay-corrected (START, ADMIN, NONE).",
    )
    if mode not in ("START", "ADMIN", "NONE"):
        raise SUVError(
            f"{_tag('DecayCorrection')} is {mode!r} in {labels[0]}; expected START, ADMIN or NONE."
        )
    _check_corrections(corrected, mode, labels[0])
    dose_bq = _dose(datasets, labels, dose, adjustments)
    if mode == "ADMIN":  # already corrected to the injection: D_ref = D_inj
        return _Decay(mode, dose_bq, factors=(1.0,) * len(datasets))

    if half_life is not None:
        half_life_s = _check_positive(half_life, "half_life (s)")
        adjustments.append(f"half-life {half_life_s} s given instead of the header")
    else:
        half_life_s = _half_life(datasets, labels)
    lam = _LN2 / half_life_s
    injection = _series_injection(datasets, labels)
    if mode == "START":
        reference = reference_time(datasets, half_life_s)
        if injection is None:
            injection = injection_datetime(datasets[0], min(reference.times))
        elapsed = [(t - injection).total_seconds() for t in reference.times]
        _check_elapsed(elapsed, injection, labels, f"reference time ({reference.source})")
        factors = tuple(math.exp(-lam * e) for e in elapsed)
        return _Decay(mode, dose_bq, half_life_s, injection, reference, factors=factors)

    # NONE: each instance from its own frame start and duration.
    acquired = tuple(_acquisitions(datasets, labels))
    durations = _durations(datasets, labels)
    if injection is None:
        injection = injection_datetime(datasets[0], min(acquired))
    elapsed = [(t - injection).total_seconds() for t in acquired]
    _check_elapsed(elapsed, injection, labels, _tag("AcquisitionTime"))
    factors = tuple(
        math.exp(-lam * e) / _frame_average_factor(d, lam)
        for e, d in zip(elapsed, durations, strict=True)
    )
    return _Decay(mode, dose_bq, half_life_s, injection, None, acquired, durations, factors)


def _sex(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    override: str | None,
    needed: bool,
    adjustments: list[str],
) -> str | None:
    if override is not None:
        adjustments.append(f"sex {override!r} given instead of {_tag('PatientSex')}")
        value: str | None = str(override)
    else:
        value = _series_value(datasets, labels, _upper_reader("PatientSex"), _tag("PatientSex"))
    if needed and _sex_code(value) is None:
        logger.warning(
            "%s is %r in %s: using the mean of the male and female formulas",
            _tag("PatientSex"),
            value,
            labels[0],
        )
    return value


def _body_measure(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    override: float | None,
    needed: bool,
    adjustments: list[str],
    *,
    keyword: str,
    name: str,
    unit: str,
    fix: str,
    small_unit: str,
    above: float,
    factor: float,
    unit_words: str | None = None,
) -> float | None:
    """Weight or height of the series: override, else the tag; a value above ``above`` is taken
    in the smaller unit (grams, centimetres) and divided by ``factor``. With ``unit_words``, a
    value still above ``above`` after that is refused as neither unit."""
    if override is not None:
        value = _check_positive(override, f"{name} ({unit})")
        adjustments.append(f"{name} {value} {unit} given instead of {_tag(keyword)}")
        return value
    value = _series_value(
        datasets,
        labels,
        _number_reader(keyword),
        _tag(keyword),
        required=fix if needed else None,
        same=_close,
    )
    if value is None:
        return None
    if value <= 0:
        if needed:
            raise SUVError(f"{_tag(keyword)} is {value:g} in {labels[0]}; {fix}")
        return None
    if value > above:
        _warn(
            f"{_tag(keyword)} is {value:g} in {labels[0]}: more than {above:g} {unit}, "
            f"taken as {small_unit} ({value / factor:g} {unit}).",
            adjustments,
        )
        value /= factor
        if unit_words and value > above and needed:
            raise SUVError(
                f"{_tag(keyword)} is {value * factor:g} in {labels[0]}, neither {unit_words} "
                f"nor {small_unit}; correct it or pass {name}=<{unit}>."
            )
    return value


def _weight(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    override: float | None,
    needed: bool,
    adjustments: list[str],
) -> float | None:
    return _body_measure(
        datasets, labels, override, needed, adjustments,
        keyword="PatientWeight", name="weight", unit="kg", small_unit="grams",
        above=_WEIGHT_GRAMS_ABOVE, factor=1000.0,
        fix="SUV needs the patient's weight in kg — fill it in or pass weight=<kg>.",
    )


def _height(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    override: float | None,
    needed: bool,
    adjustments: list[str],
) -> float | None:
    return _body_measure(
        datasets, labels, override, needed, adjustments,
        keyword="PatientSize", name="height", unit="m", small_unit="centimetres",
        above=_HEIGHT_CM_ABOVE, factor=100.0, unit_words="metres",
        fix="this SUV normalization needs the patient's height in m — fill it in or pass "
        "height=<m>.",
    )


def _dose(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    override: float | None,
    adjustments: list[str],
) -> float:
    if override is not None:
        value = _check_positive(override, "dose (Bq)")
        adjustments.append(f"dose {value} Bq given instead of {_tag('RadionuclideTotalDose')}")
        return value
    fix = "SUV needs the injected activity in Bq — fill it in or pass dose=<Bq>."
    value = _series_value(
        datasets,
        labels,
        _number_reader("RadionuclideTotalDose", in_radio=True),
        f"{_tag('RadionuclideTotalDose')} in {_RADIO_SEQ}",
        required=fix,
        same=_close,
    )
    if value <= 0:
        raise SUVError(f"{_tag('RadionuclideTotalDose')} is {value:g} in {labels[0]}; {fix}")
    if value < _DOSE_MBQ_BELOW:
        _warn(
            f"{_tag('RadionuclideTotalDose')} is {value:g} in {labels[0]}: below "
            f"{_DOSE_MBQ_BELOW:g} Bq, taken as MBq ({value * 1e6:g} Bq).",
            adjustments,
        )
        value *= 1e6
    return value


def _durations(datasets: Sequence[Dataset], labels: Sequence[str]) -> tuple[float, ...]:
    result = []
    for ds, lab in zip(datasets, labels, strict=True):
        value = plain_value(ds, "ActualFrameDuration")
        if value is None:
            raise SUVError(
                f"{_tag('ActualFrameDuration')} missing in {lab}; with Decay Correction NONE the "
                "frame duration (ms) is needed to correct the decay during the frame."
            )
        ms = _float(value, _tag("ActualFrameDuration"), lab)
        if ms <= 0:
            raise SUVError(f"{_tag('ActualFrameDuration')} is {ms:g} in {lab}; it must be > 0 ms.")
        result.append(ms / 1000.0)
    return tuple(result)


def _injection_reader(ds: Dataset, label: str) -> Any:
    dt_value = _get_radio(ds, "RadiopharmaceuticalStartDateTime")
    if dt_value is not None:
        return _parsed(parse_datetime, dt_value, _tag("RadiopharmaceuticalStartDateTime"), label)
    t_value = _get_radio(ds, "RadiopharmaceuticalStartTime")
    if t_value is not None:
        return _parsed(parse_time, t_value, _tag("RadiopharmaceuticalStartTime"), label)
    return None


def _series_injection(datasets: Sequence[Dataset], labels: Sequence[str]) -> datetime | None:
    """Injection DateTime when given; None when only a time is (the date needs the scan time)."""
    value = _series_value(
        datasets,
        labels,
        _injection_reader,
        f"{_tag('RadiopharmaceuticalStartDateTime')} / {_tag('RadiopharmaceuticalStartTime')} "
        f"in {_RADIO_SEQ}",
        required="the decay correction needs the injection time — fill it in.",
    )
    return value if isinstance(value, datetime) else None


def _check_elapsed(
    elapsed: Sequence[float], injection: datetime, labels: Sequence[str], what: str
) -> None:
    for e, lab in zip(elapsed, labels, strict=True):
        if e < 0:
            raise SUVError(
                f"Injection ({injection}) is {-e:g} s after the {what} in {lab}; check "
                f"{_tag('RadiopharmaceuticalStartDateTime')} / Start Time and the scan date and "
                "time."
            )


def _check_corrections(corrected: tuple[str, ...] | None, mode: str, label: str) -> None:
    if corrected is None:
        logger.warning(
            "%s missing in %s: trusting %s %s",
            _tag("CorrectedImage"),
            label,
            _tag("DecayCorrection"),
            mode,
        )
        return
    if "ATTN" not in corrected:
        raise SUVError(
            f"{_tag('CorrectedImage')} in {label} is {list(corrected)}, without ATTN: the image is "
            "not attenuation-corrected, so its values are not activity concentrations and SUV "
            "would be meaningless. Use the attenuation-corrected series."
        )
    decayed = "DECY" in corrected or "DECAY" in corrected
    if mode in ("START", "ADMIN") and not decayed:
        raise SUVError(
            f"{_tag('DecayCorrection')} is {mode} but {_tag('CorrectedImage')} in {label} "
            f"({list(corrected)}) has no DECY; the header contradicts itself — correct one of them."
        )
    if mode == "NONE" and decayed:
        raise SUVError(
            f"{_tag('DecayCorrection')} is NONE but {_tag('CorrectedImage')} in {label} lists "
            "DECY; the header contradicts itself — correct one of them."
        )
