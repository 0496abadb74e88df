"""Header access for the PET conversions: the radiopharmaceutical item, series dates and times,
one value per series. Values, private elements and date / time parsing come from the one DICOM
layer (:mod:`imharmony._dicom.tags`)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from ..._dicom.tags import as_text, parse_date, parse_datetime, parse_time, plain_value
from ..._dicom.tags import tag_label as _tag
from ...errors import DataError, HarmonizationWarning

logger = logging.getLogger(__name__)


_LN2 = math.log(2.0)


#: Requested output units -> normalization ("suv" means: whatever the data imply).
_UNIT_NORMALIZATION = {
    "suv": None,
    "suvbw": "bw",
    "suvlbm": "lbm",
    "suvbsa": "bsa",
    "suvibw": "ibw",
}


_LBM_FORMULAS = ("james128", "james120", "janmahasatian")


#: DICOM Units (0054,1001) that cannot be turned into SUV, with the reason.
_REFUSED_UNITS = {
    "PROPCNTS": "proportional to counts, with no calibration to activity",
    "PROPCPS": "proportional to counts per second, with no calibration to activity",
    "1CM": "linear attenuation coefficients (a transmission image), not activity",
    "CPS": "counts per second, with no calibration to activity",
    "NPS": "net positron signal, with no calibration to activity",
    "MLMGM": "a kinetic parameter map, not activity",
    "MLGM": "a kinetic parameter map, not activity",
    "ML/MIN/G": "a kinetic parameter map, not activity",
    "MGMINML": "a metabolic rate map, not activity",
    "UMOLMINML": "a metabolic rate map, not activity",
    "PCNT": "percent, not activity",
    "MOLML": "a concentration in mol/ml, not activity",
}


#: SUV Type (0054,1006) -> (normalization, lean-body-mass formula).
_SUV_TYPES = {
    "": ("bw", None),
    "BW": ("bw", None),
    "LBM": ("lbm", "james128"),
    "LBMJAMES128": ("lbm", "james128"),
    "LBMJANMA": ("lbm", "janmahasatian"),
    "BSA": ("bsa", None),
    "IBW": ("ibw", None),
}

_DOSE_MBQ_BELOW = 1e5  # a total dose below this many Bq must be MBq (0.1 MBq is no PET dose)

_WEIGHT_GRAMS_ABOVE = 1000.0  # kg: nobody weighs a tonne; such a weight is in grams


_HEIGHT_CM_ABOVE = 3.0  # m: nobody is 3 m tall; such a height is in centimetres


class SUVError(DataError):
    """A PET series cannot be converted to SUV as asked (missing, wrong or inconsistent header)."""


_RADIO_SEQ = _tag("RadiopharmaceuticalInformationSequence")


def _label(ds: Dataset, index: int) -> str:
    """How an instance is named in messages: its file name, else its Instance Number."""
    filename = getattr(ds, "filename", None)
    if filename:
        return Path(str(filename)).name
    number = plain_value(ds, "InstanceNumber")
    if number is not None:
        return f"instance {number}"
    return f"dataset #{index} (no file name, no Instance Number)"


def _radio_item(ds: Dataset) -> Dataset | None:
    seq = plain_value(ds, "RadiopharmaceuticalInformationSequence")
    if not seq:
        return None
    if len(seq) > 1:
        logger.debug(
            "Radiopharmaceutical Information Sequence has %d items; using the first", len(seq)
        )
    return seq[0]


def _get_radio(ds: Dataset, keyword: str) -> Any:
    item = _radio_item(ds)
    return None if item is None else plain_value(item, keyword)

def _parsed(parser: Callable[[Any], Any], value: Any, what: str, label: str) -> Any:
    try:
        return parser(value)
    except ValueError as exc:
        raise SUVError(f"{what} in {label} cannot be read: {exc}; correct the header.") from None


def _combine(ds: Dataset, date_kw: str, time_kw: str, label: str) -> datetime | None:
    d, t = plain_value(ds, date_kw), plain_value(ds, time_kw)
    if d is None or t is None:
        return None
    return datetime.combine(
        _parsed(parse_date, d, _tag(date_kw), label), _parsed(parse_time, t, _tag(time_kw), label)
    )


def _series_datetime(ds: Dataset, label: str) -> datetime | None:
    return _combine(ds, "SeriesDate", "SeriesTime", label)


def _acquisition_datetime(ds: Dataset, label: str) -> datetime | None:
    """Acquisition Time with its own Acquisition Date; else Acquisition DateTime; else the time
    with the Series (or Study) Date."""
    dt = _combine(ds, "AcquisitionDate", "AcquisitionTime", label)
    if dt is not None:
        return dt
    adt = plain_value(ds, "AcquisitionDateTime")
    if adt is not None:
        return _parsed(parse_datetime, adt, _tag("AcquisitionDateTime"), label)
    t = plain_value(ds, "AcquisitionTime")
    if t is None:
        return None
    for kw in ("SeriesDate", "StudyDate"):
        d = plain_value(ds, kw)
        if d is not None:
            logger.debug(
                "%s: Acquisition Date missing; pairing Acquisition Time with %s", label, kw
            )
            return datetime.combine(
                _parsed(parse_date, d, _tag(kw), label),
                _parsed(parse_time, t, _tag("AcquisitionTime"), label),
            )
    return None


def _float(value: Any, what: str, label: str) -> float:
    try:
        result = float(as_text(value) if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        raise SUVError(
            f"{what} in {label} is {as_text(value) or ''!r}, not a number; correct the header."
        ) from None
    if not math.isfinite(result):
        raise SUVError(f"{what} in {label} is {result}; correct the header.")
    return result


def _where(labels: Sequence[str]) -> str:
    if len(labels) == 1:
        return labels[0]
    return f"{labels[0]} (and {len(labels) - 1} more instance{'s' if len(labels) > 2 else ''})"


def _series_value(
    datasets: Sequence[Dataset],
    labels: Sequence[str],
    read: Callable[[Dataset, str], Any],
    what: str,
    *,
    required: str | None = None,
    same: Callable[[Any, Any], bool] | None = None,
) -> Any:
    """The one value a series carries, read from every instance.

    Missing everywhere: None (or an error when ``required`` says why it is needed). Missing in some
    instances only, or different between instances: an error naming the instances.
    """
    values = [read(ds, lab) for ds, lab in zip(datasets, labels, strict=True)]
    missing = [lab for lab, v in zip(labels, values, strict=True) if v is None]
    if missing and required is not None:
        raise SUVError(f"{what} missing in {_where(missing)}; {required}")
    present = [(lab, v) for lab, v in zip(labels, values, strict=True) if v is not None]
    if not present:
        return None
    if missing:
        raise SUVError(
            f"{what} is {present[0][1]} in {present[0][0]} but missing in {_where(missing)}; "
            "the instances of one series must agree — check that these files are one series."
        )
    first_label, first = present[0]
    same = same or (lambda a, b: a == b)
    for lab, v in present[1:]:
        if not same(first, v):
            raise SUVError(
                f"{what} differs between instances of the series: {first} in {first_label}, "
                f"{v} in {lab}; one series must have one value — check that these files belong "
                "to the same series, or correct the header."
            )
    return first


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def _number_reader(keyword: str, *, in_radio: bool = False) -> Callable[[Dataset, str], Any]:
    def read(ds: Dataset, label: str) -> float | None:
        value = _get_radio(ds, keyword) if in_radio else plain_value(ds, keyword)
        return None if value is None else _float(value, _tag(keyword), label)

    return read


def _upper_reader(keyword: str) -> Callable[[Dataset, str], Any]:
    def read(ds: Dataset, label: str) -> str | None:
        value = plain_value(ds, keyword)
        text = as_text(value)
        return None if text is None else text.upper()

    return read


def _corrected_image(ds: Dataset, label: str) -> tuple[str, ...] | None:
    value = plain_value(ds, "CorrectedImage")
    if value is None:
        return None
    items = [as_text(v) for v in ([value] if isinstance(value, str) else value)]
    return tuple(sorted(v.upper() for v in items if v is not None))


def _wanted_units(units: str) -> str | None:
    key = str(units).strip().lower()
    if key not in _UNIT_NORMALIZATION:
        raise SUVError(f"Unknown SUV units {units!r}; use one of {', '.join(_UNIT_NORMALIZATION)}.")
    return _UNIT_NORMALIZATION[key]


def _warn(message: str, adjustments: list[str]) -> None:
    adjustments.append(message)
    warnings.warn(message, HarmonizationWarning, stacklevel=4)


def _check_pet(datasets: Sequence[Dataset], labels: Sequence[str], what: str) -> None:
    for ds, lab in zip(datasets, labels, strict=True):
        modality = as_text(plain_value(ds, "Modality"))
        if modality is not None and modality.upper() != "PT":
            raise SUVError(
                f"{_tag('Modality')} is {modality!r} in {lab}, not PT; {what} applies to "
                "PET images only."
            )


def _series_units(datasets: Sequence[Dataset], labels: Sequence[str]) -> str:
    return _series_value(
        datasets,
        labels,
        _upper_reader("Units"),
        _tag("Units"),
        required="it says what the stored values are (BQML, CNTS, GML, CM2ML).",
    )
