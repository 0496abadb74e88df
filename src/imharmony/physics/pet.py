"""PET stored values to standardized uptake values (SUV), exactly.

A PET series stores activity concentration (Bq/ml, counts, or an SUV already) per instance. This
module reads everything the conversion needs from the DICOM headers, checks it, and returns one
multiplicative factor per instance::

    SUV_i = (RescaleSlope_i * stored_i + RescaleIntercept_i) * f_i

The rescale is left to the caller (a colleague's series reader applies it per slice, since the
slope differs between slices in about half of real series); :func:`suv_factors` returns ``f_i``.
:func:`pet_parameters` returns the :class:`SUVParameters` the factors come from, so a user can see
exactly what went in (weight, dose, half-life, injection and reference times, which rule chose the
reference time, which unit conversions were applied).

Notes
-----
Body-weight SUV of activity data decay-corrected to the series start (``Decay Correction`` START)::

    SUVbw = A_c * W / D_ref,   D_ref = D_inj * exp(-ln 2 * (t_ref - t_inj) / T_half)

with ``A_c`` in Bq/ml, ``W`` in g and doses in Bq. The other normalizations replace ``W`` by the
lean body mass (g), the ideal body weight (g) or the body surface area (cm^2). ``t_ref`` is chosen
in the order of the QIBA vendor-neutral pseudo-code (see :func:`reference_time`). With ``Decay
Correction`` ADMIN the image is already corrected to the injection time, ``D_ref = D_inj``; with
NONE each instance is corrected from its own frame: ``A_c * lambda*T / (1 - exp(-lambda*T)) *
exp(lambda * (t_acq - t_inj)) / D_inj``.

References
----------
.. [1] QIBA FDG-PET/CT Profile, Appendix G: vendor-neutral pseudo-codes for SUV calculation.
.. [2] M. Vácha et al., IBSI: "Computation of standardised uptake values" (oncoray/suv_computation).
.. [3] DICOM PS3.3, C.8.9.1 PET Series and C.8.9.4 PET Image modules.
.. [4] P. James, "Research on obesity", HMSO, 1976 (lean body mass).
.. [5] S. Janmahasatian et al., Clin. Pharmacokinet. 44:1051-1065, 2005 (lean body mass, SUL).
.. [6] D. Du Bois, E. F. Du Bois, Arch. Intern. Med. 17:863-871, 1916 (body surface area).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset

from ..errors import DataError, HarmonizationWarning

__all__ = [
    "ReferenceTime",
    "SUVError",
    "SUVParameters",
    "activity_factors",
    "body_surface_area",
    "decay_factor",
    "ideal_body_weight",
    "injection_datetime",
    "lean_body_mass",
    "pet_parameters",
    "reference_time",
    "suv_factors",
]

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

_GE_CREATOR = "GEMS_PETD_01"
_PHILIPS_CREATOR = "Philips PET Private Group"


class SUVError(DataError):
    """A PET series cannot be converted to SUV as asked (missing, wrong or inconsistent header)."""


class ReferenceTime(NamedTuple):
    """Time to which the activity of each instance is decay-corrected (``Decay Correction`` START).

    Attributes
    ----------
    times : tuple of datetime.datetime, length n_instances
        One reference time per instance, in the order the datasets were given.
    source : str
        Which rule chose them: ``"series"`` (Series Date/Time), ``"ge_private"`` (GE private scan
        datetime), ``"frame_reference"`` (back-computed from Frame Reference Time and Actual Frame
        Duration) or ``"acquisition"`` (the earliest Acquisition Date/Time).
    """

    times: tuple[datetime, ...]
    source: str


# --------------------------------------------------------------------------------------------
# Body size and decay: small pure functions
# --------------------------------------------------------------------------------------------


def _check_positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise SUVError(f"{name} must be a positive finite number; got {value!r}.")
    return value


def _sex_code(sex: str | None) -> str | None:
    """'M', 'F', or None for other / unknown (then formulas use the mean of both sexes)."""
    if sex is None:
        return None
    s = str(sex).strip().upper()
    if s in ("M", "MALE"):
        return "M"
    if s in ("F", "FEMALE"):
        return "F"
    return None


def _by_sex(sex: str | None, male: Callable[[], float], female: Callable[[], float]) -> float:
    code = _sex_code(sex)
    if code == "M":
        return male()
    if code == "F":
        return female()
    return 0.5 * (male() + female())


def decay_factor(elapsed_s: Any, half_life_s: float) -> Any:
    """Fraction of activity left after ``elapsed_s`` seconds: ``exp(-ln 2 * t / T_half)``.

    Parameters
    ----------
    elapsed_s : float or array_like
        Elapsed time in seconds (negative values give factors above 1).
    half_life_s : float
        Radionuclide half-life in seconds (F-18: 6586.2 s).

    Returns
    -------
    float or numpy.ndarray
        Same shape as ``elapsed_s``; 1 at ``elapsed_s == 0``.

    Examples
    --------
    >>> decay_factor(6586.2, 6586.2)
    0.5
    """
    half_life_s = _check_positive(half_life_s, "Half-life (s)")
    result = np.exp2(-np.asarray(elapsed_s, dtype=np.float64) / half_life_s)
    return float(result) if result.ndim == 0 else result


def lean_body_mass(
    weight_kg: float, height_m: float, sex: str | None = None, formula: str = "james128"
) -> float:
    """Lean body mass in kg.

    Parameters
    ----------
    weight_kg : float
        Body weight in kg.
    height_m : float
        Height in metres.
    sex : {"M", "F", "O", None}
        Patient's Sex (0010,0040). Other or unknown: the mean of the male and female formulas.
    formula : {"james128", "james120", "janmahasatian"}
        ``"james128"`` (DICOM ``LBMJAMES128``): male ``1.10 W - 128 (W/H)^2``, female
        ``1.07 W - 148 (W/H)^2`` with H in cm. ``"james120"``: the male coefficient 120 some
        vendors use (female unchanged). ``"janmahasatian"`` (the basis of SUL): male
        ``9270 W / (6680 + 216 BMI)``, female ``9270 W / (8780 + 244 BMI)``, BMI = W / h^2.

    Returns
    -------
    float
        Lean body mass in kg.

    Raises
    ------
    SUVError
        For non-positive inputs, an unknown formula, or a James formula that gives a non-positive
        mass (it does for high BMI; use ``"janmahasatian"`` there).

    Examples
    --------
    >>> round(lean_body_mass(75.0, 1.85, "M", "janmahasatian"), 7)
    60.9153359
    """
    w = _check_positive(weight_kg, "Weight (kg)")
    h = _check_positive(height_m, "Height (m)")
    if formula in ("james128", "james120"):
        k = 128.0 if formula == "james128" else 120.0
        h_cm = 100.0 * h
        lbm = _by_sex(
            sex,
            lambda: 1.10 * w - k * (w / h_cm) ** 2,
            lambda: 1.07 * w - 148.0 * (w / h_cm) ** 2,
        )
        if lbm <= 0:
            raise SUVError(
                f"James lean body mass is {lbm:.3g} kg for weight {w} kg and height {h} m "
                "(the James formula breaks down at high BMI); use lbm_formula='janmahasatian'."
            )
        return lbm
    if formula == "janmahasatian":
        bmi = w / h**2
        return _by_sex(
            sex,
            lambda: 9270.0 * w / (6680.0 + 216.0 * bmi),
            lambda: 9270.0 * w / (8780.0 + 244.0 * bmi),
        )
    raise SUVError(
        f"Unknown lean body mass formula {formula!r}; use one of {', '.join(_LBM_FORMULAS)}."
    )


def body_surface_area(weight_kg: float, height_m: float) -> float:
    """Body surface area in m^2 (Du Bois): ``0.007184 * W^0.425 * H^0.725`` (W kg, H cm).

    Parameters
    ----------
    weight_kg : float
        Body weight in kg.
    height_m : float
        Height in metres.

    Returns
    -------
    float
        Body surface area in m^2 (SUVbsa uses it in cm^2, i.e. times 1e4).

    Examples
    --------
    >>> round(body_surface_area(75.0, 1.85), 6)
    1.981376
    """
    w = _check_positive(weight_kg, "Weight (kg)")
    h = _check_positive(height_m, "Height (m)")
    return 0.007184 * w**0.425 * (100.0 * h) ** 0.725


def ideal_body_weight(height_m: float, sex: str | None = None) -> float:
    """Ideal body weight in kg (Devine form): male ``48.0 + 1.06 (H - 152)``, female
    ``45.5 + 0.91 (H - 152)``, H in cm; other or unknown sex: the mean of both.

    Parameters
    ----------
    height_m : float
        Height in metres.
    sex : {"M", "F", "O", None}
        Patient's Sex (0010,0040).

    Returns
    -------
    float
        Ideal body weight in kg.

    Raises
    ------
    SUVError
        If the height is not positive or gives a non-positive ideal weight (very short patients).
    """
    h_cm = 100.0 * _check_positive(height_m, "Height (m)")
    ibw = _by_sex(sex, lambda: 48.0 + 1.06 * (h_cm - 152.0), lambda: 45.5 + 0.91 * (h_cm - 152.0))
    if ibw <= 0:
        raise SUVError(
            f"Ideal body weight is {ibw:.3g} kg for height {height_m} m; check the height."
        )
    return ibw


def _frame_average_factor(duration_s: float, lam: float) -> float:
    """``lambda T / (1 - exp(-lambda T))``: frame-averaged activity -> activity at frame start."""
    x = lam * duration_s
    return x / -math.expm1(-x) if x > 0 else 1.0


def _decay_average_time(duration_s: float, lam: float) -> float:
    """Time after frame start (s) at which the activity equals its average over the frame."""
    return math.log(_frame_average_factor(duration_s, lam)) / lam


# --------------------------------------------------------------------------------------------
# Header access
# --------------------------------------------------------------------------------------------


def _tag(keyword: str) -> str:
    """'Patient's Weight (0010,1030)' for 'PatientWeight'."""
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - only our own keywords reach here
        return keyword
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


_RADIO_SEQ = _tag("RadiopharmaceuticalInformationSequence")


def _label(ds: Dataset, index: int) -> str:
    """How an instance is named in messages: its file name, else its Instance Number."""
    filename = getattr(ds, "filename", None)
    if filename:
        return Path(str(filename)).name
    number = ds.get("InstanceNumber")
    if number not in (None, ""):
        return f"instance {number}"
    return f"dataset #{index} (no file name, no Instance Number)"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | bytes) and not value.strip())


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace").strip("\x00 ")
    return str(value).strip()


def _get(ds: Dataset, keyword: str) -> Any:
    """Value of a top-level element, None when absent or empty.

    A value pydicom cannot convert to its VR is returned as its raw bytes, so the caller's own
    check names the tag and the file instead of failing inside pydicom.
    """
    try:
        value = ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        raw = ds.get_item(keyword)
        value = None if raw is None else raw.value
    return None if _empty(value) else value


def _radio_item(ds: Dataset) -> Dataset | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        return None
    if len(seq) > 1:
        logger.debug(
            "Radiopharmaceutical Information Sequence has %d items; using the first", len(seq)
        )
    return seq[0]


def _get_radio(ds: Dataset, keyword: str) -> Any:
    item = _radio_item(ds)
    return None if item is None else _get(item, keyword)


def _private(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    """A private element found through its creator; fall back to block 0x10 if no creator is set.

    Some real and reference files omit the Private Creator element. The fallback reads
    ``(group, 0x10xx)`` only when no creator claims block 0x10 at all, and the caller only asks for
    it when Manufacturer names the vendor.
    """
    wanted = creator.strip().upper()
    for block in range(0x10, 0x100):
        element = ds.get((group, block))
        if element is None:
            continue
        if _text(element.value).upper() == wanted:
            found = ds.get((group, (block << 8) | offset))
            return None if found is None or _empty(found.value) else found.value
    return None


def _private_with_fallback(ds: Dataset, group: int, creator: str, offset: int, vendor: str) -> Any:
    value = _private(ds, group, creator, offset)
    if value is not None:
        return value
    if (group, 0x0010) in ds:  # block 0x10 belongs to some other creator
        return None
    manufacturer = _text(ds.get("Manufacturer") or "").upper()
    if vendor not in manufacturer:
        return None
    found = ds.get((group, 0x1000 | offset))
    return None if found is None or _empty(found.value) else found.value


_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?(?:[+-]\d{4})?$")


def _parse_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    s = _text(value).replace(".", "").replace("-", "")
    m = _DA.match(s)
    if not m:
        raise ValueError(f"{_text(value)!r} is not a DICOM date (YYYYMMDD)")
    return date(int(m[1]), int(m[2]), int(m[3]))


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    s = _text(value).replace(":", "")
    m = _TM.match(s)
    if not m:
        raise ValueError(f"{_text(value)!r} is not a DICOM time (HHMMSS.FFFFFF)")
    micro = int((m[4] or "").ljust(6, "0"))
    return time(int(m[1]), int(m[2] or 0), int(m[3] or 0), micro)


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)  # local time, like every other DICOM date and time
    s = _text(value)
    m = _DT.match(s)
    if not m:
        raise ValueError(f"{s!r} is not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF)")
    micro = int((m[7] or "").ljust(6, "0"))
    return datetime(
        int(m[1]),
        int(m[2] or 1),
        int(m[3] or 1),
        int(m[4] or 0),
        int(m[5] or 0),
        int(m[6] or 0),
        micro,
    )


def _parsed(parser: Callable[[Any], Any], value: Any, what: str, label: str) -> Any:
    try:
        return parser(value)
    except ValueError as exc:
        raise SUVError(f"{what} in {label} cannot be read: {exc}; correct the header.") from None


def _combine(ds: Dataset, date_kw: str, time_kw: str, label: str) -> datetime | None:
    d, t = _get(ds, date_kw), _get(ds, time_kw)
    if d is None or t is None:
        return None
    return datetime.combine(
        _parsed(_parse_date, d, _tag(date_kw), label), _parsed(_parse_time, t, _tag(time_kw), label)
    )


def _series_datetime(ds: Dataset, label: str) -> datetime | None:
    return _combine(ds, "SeriesDate", "SeriesTime", label)


def _acquisition_datetime(ds: Dataset, label: str) -> datetime | None:
    """Acquisition Time with its own Acquisition Date; else Acquisition DateTime; else the time
    with the Series (or Study) Date."""
    dt = _combine(ds, "AcquisitionDate", "AcquisitionTime", label)
    if dt is not None:
        return dt
    adt = _get(ds, "AcquisitionDateTime")
    if adt is not None:
        return _parsed(_parse_datetime, adt, _tag("AcquisitionDateTime"), label)
    t = _get(ds, "AcquisitionTime")
    if t is None:
        return None
    for kw in ("SeriesDate", "StudyDate"):
        d = _get(ds, kw)
        if d is not None:
            logger.debug(
                "%s: Acquisition Date missing; pairing Acquisition Time with %s", label, kw
            )
            return datetime.combine(
                _parsed(_parse_date, d, _tag(kw), label),
                _parsed(_parse_time, t, _tag("AcquisitionTime"), label),
            )
    return None


def _float(value: Any, what: str, label: str) -> float:
    try:
        if isinstance(value, bytes):
            value = _text(value)
        result = float(value)
    except (TypeError, ValueError):
        raise SUVError(
            f"{what} in {label} is {_text(value)!r}, not a number; correct the header."
        ) from None
    if not math.isfinite(result):
        raise SUVError(f"{what} in {label} is {result}; correct the header.")
    return result


# --------------------------------------------------------------------------------------------
# One value per series
# --------------------------------------------------------------------------------------------


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
        value = _get_radio(ds, keyword) if in_radio else _get(ds, keyword)
        return None if value is None else _float(value, _tag(keyword), label)

    return read


def _upper_reader(keyword: str) -> Callable[[Dataset, str], Any]:
    def read(ds: Dataset, label: str) -> str | None:
        value = _get(ds, keyword)
        return None if value is None else _text(value).upper()

    return read


def _corrected_image(ds: Dataset, label: str) -> tuple[str, ...] | None:
    value = ds.get("CorrectedImage")
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return tuple(sorted(_text(v).upper() for v in items if not _empty(v)))


def _wanted_units(units: str) -> str | None:
    key = str(units).strip().lower()
    if key not in _UNIT_NORMALIZATION:
        raise SUVError(f"Unknown SUV units {units!r}; use one of {', '.join(_UNIT_NORMALIZATION)}.")
    return _UNIT_NORMALIZATION[key]


# --------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------


def _as_list(datasets: Sequence[Dataset] | Dataset) -> list[Dataset]:
    if isinstance(datasets, Dataset):
        return [datasets]
    result = list(datasets)
    if not result:
        raise SUVError("No PET instances given; SUV needs at least one dataset.")
    return result


def _acquisitions(datasets: Sequence[Dataset], labels: Sequence[str]) -> list[datetime]:
    times = [_acquisition_datetime(ds, lab) for ds, lab in zip(datasets, labels, strict=True)]
    missing = [lab for lab, t in zip(labels, times, strict=True) if t is None]
    if missing:
        raise SUVError(
            f"{_tag('AcquisitionTime')} (with {_tag('AcquisitionDate')}) missing in "
            f"{_where(missing)}; the decay correction needs when each instance was acquired."
        )
    return times  # type: ignore[return-value]


def _half_life(datasets: Sequence[Dataset], labels: Sequence[str]) -> float:
    value = _series_value(
        datasets,
        labels,
        _number_reader("RadionuclideHalfLife", in_radio=True),
        f"{_tag('RadionuclideHalfLife')} in {_RADIO_SEQ}",
        required="the decay correction needs the half-life in seconds (F-18: 6586.2) — fill it "
        "in or pass half_life=<seconds>.",
        same=_close,
    )
    if value <= 0:
        raise SUVError(
            f"{_tag('RadionuclideHalfLife')} is {value} in {labels[0]}; it must be positive "
            "(seconds)."
        )
    return float(value)


def reference_time(
    datasets: Sequence[Dataset] | Dataset, half_life_s: float | None = None
) -> ReferenceTime:
    """Time the activity of each instance is decay-corrected to (``Decay Correction`` START).

    The order of the QIBA vendor-neutral pseudo-code:

    1. Series Date/Time, if it is not later than the earliest Acquisition Date/Time;
    2. else the GE private scan datetime (0009,xx0D) under creator ``GEMS_PETD_01`` (read at
       (0009,100D) when the creator element is absent and Manufacturer names GE);
    3. else per instance ``t_acq + T_ave - FrameReferenceTime / 1000`` with
       ``T_ave = ln(lambda T / (1 - exp(-lambda T))) / lambda``, ``T`` the Actual Frame Duration
       in seconds, when Frame Reference Time and Actual Frame Duration are positive in every
       instance;
    4. else the earliest Acquisition Date/Time.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset, length n_instances
        The PET instances of one series (a single dataset is accepted).
    half_life_s : float, optional
        Half-life in seconds for rule 3; read from Radionuclide Half Life (0018,1075) if omitted.

    Returns
    -------
    ReferenceTime
        ``times`` (one per instance, in the given order) and ``source`` (which rule applied).

    Raises
    ------
    SUVError
        When acquisition times are missing or the series times disagree between instances.
    """
    datasets = _as_list(datasets)
    labels = [_label(ds, i) for i, ds in enumerate(datasets)]
    acquired = _acquisitions(datasets, labels)
    earliest = min(acquired)
    n = len(datasets)

    series = _series_value(
        datasets, labels, _series_datetime, f"{_tag('SeriesDate')}/{_tag('SeriesTime')}"
    )
    if series is not None and series <= earliest:
        logger.debug("reference time: Series Date/Time %s", series)
        return ReferenceTime((series,) * n, "series")

    def read_ge(ds: Dataset, label: str) -> datetime | None:
        value = _private_with_fallback(ds, 0x0009, _GE_CREATOR, 0x0D, "GE")
        if value is None:
            return None
        return _parsed(_parse_datetime, value, "GE private scan datetime (0009,xx0D)", label)

    ge = _series_value(datasets, labels, read_ge, "GE private scan datetime (0009,xx0D)")
    if ge is not None:
        logger.debug("reference time: GE private scan datetime %s", ge)
        return ReferenceTime((ge,) * n, "ge_private")

    frame_ref = [_get(ds, "FrameReferenceTime") for ds in datasets]
    duration = [_get(ds, "ActualFrameDuration") for ds in datasets]
    if all(v is not None for v in frame_ref + duration):
        fr = [
            _float(v, _tag("FrameReferenceTime"), lab)
            for v, lab in zip(frame_ref, labels, strict=True)
        ]
        du = [
            _float(v, _tag("ActualFrameDuration"), lab)
            for v, lab in zip(duration, labels, strict=True)
        ]
        if all(v > 0 for v in fr + du):
            if half_life_s is None:
                half_life_s = _half_life(datasets, labels)
            lam = _LN2 / _check_positive(half_life_s, "Half-life (s)")
            times = tuple(
                t + timedelta(seconds=_decay_average_time(d / 1000.0, lam) - f / 1000.0)
                for t, f, d in zip(acquired, fr, du, strict=True)
            )
            logger.debug("reference time: back-computed from Frame Reference Time %s", times[0])
            return ReferenceTime(times, "frame_reference")

    logger.debug("reference time: earliest Acquisition Date/Time %s", earliest)
    return ReferenceTime((earliest,) * n, "acquisition")


def injection_datetime(dataset: Dataset, scan_datetime: datetime | None = None) -> datetime:
    """When the radiopharmaceutical was injected.

    Radiopharmaceutical Start DateTime (0018,1078) when present; else Radiopharmaceutical Start
    Time (0018,1072) on the Series Date (else Acquisition Date, else Study Date), moved one day
    earlier if that puts the injection after the scan (the scan crossed midnight).

    Parameters
    ----------
    dataset : pydicom.Dataset
        One PET instance.
    scan_datetime : datetime.datetime, optional
        The scan (reference) time used for the midnight check; defaults to the Series Date/Time,
        else the instance's Acquisition Date/Time.

    Returns
    -------
    datetime.datetime
        Naive local date and time (a time-zone suffix in the DateTime is dropped, as every other
        DICOM time of the file is local).

    Raises
    ------
    SUVError
        If neither tag is present, or no date to pair a bare start time with.
    """
    label = _label(dataset, 0)
    where = f"in {_RADIO_SEQ} of {label}"
    dt_value = _get_radio(dataset, "RadiopharmaceuticalStartDateTime")
    if dt_value is not None:
        return _parsed(_parse_datetime, dt_value, _tag("RadiopharmaceuticalStartDateTime"), label)
    t_value = _get_radio(dataset, "RadiopharmaceuticalStartTime")
    if t_value is None:
        raise SUVError(
            f"{_tag('RadiopharmaceuticalStartDateTime')} and "
            f"{_tag('RadiopharmaceuticalStartTime')} both missing {where}; the decay correction "
            "needs the injection time — fill it in."
        )
    start = _parsed(_parse_time, t_value, _tag("RadiopharmaceuticalStartTime"), label)
    day = None
    for kw in ("SeriesDate", "AcquisitionDate", "StudyDate"):
        value = _get(dataset, kw)
        if value is not None:
            day = _parsed(_parse_date, value, _tag(kw), label)
            break
    if day is None:
        raise SUVError(
            f"{_tag('RadiopharmaceuticalStartTime')} {where} has no date to go with it: "
            f"{_tag('SeriesDate')}, {_tag('AcquisitionDate')} and {_tag('StudyDate')} are all "
            "missing; fill in Radiopharmaceutical Start DateTime (0018,1078)."
        )
    injected = datetime.combine(day, start)
    if scan_datetime is None:
        scan_datetime = _series_datetime(dataset, label) or _acquisition_datetime(dataset, label)
    if scan_datetime is not None and injected > scan_datetime:
        injected -= timedelta(days=1)
        logger.info(
            "%s: injection time after the scan on the same date; the scan crossed "
            "midnight, injection taken as %s",
            label,
            injected,
        )
    return injected


# --------------------------------------------------------------------------------------------
# Parameters and factors
# --------------------------------------------------------------------------------------------


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


def _warn(message: str, adjustments: list[str]) -> None:
    adjustments.append(message)
    warnings.warn(message, HarmonizationWarning, stacklevel=4)


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


def _check_pet(datasets: Sequence[Dataset], labels: Sequence[str], what: str) -> None:
    for ds, lab in zip(datasets, labels, strict=True):
        modality = _get(ds, "Modality")
        if modality is not None and _text(modality).upper() != "PT":
            raise SUVError(
                f"{_tag('Modality')} is {_text(modality)!r} in {lab}, not PT; {what} applies to "
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


# --------------------------------------------------------------------------------------------
# Ingredients
# --------------------------------------------------------------------------------------------


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
        value = _get(ds, "ActualFrameDuration")
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
        return _parsed(_parse_datetime, dt_value, _tag("RadiopharmaceuticalStartDateTime"), label)
    t_value = _get_radio(ds, "RadiopharmaceuticalStartTime")
    if t_value is not None:
        return _parsed(_parse_time, t_value, _tag("RadiopharmaceuticalStartTime"), label)
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


def _philips_scale(
    datasets: Sequence[Dataset], labels: Sequence[str]
) -> tuple[str, tuple[float, ...]]:
    """CNTS: Philips SUV Scale Factor (7053,xx00) if every instance has one, else the Activity
    Concentration Scale Factor (7053,xx09)."""

    suv = _philips_factors(datasets, labels, 0x00)
    if all(v is not None for v in suv):
        return "philips_suv_factor", tuple(suv)  # type: ignore[arg-type]
    activity = _philips_factors(datasets, labels, 0x09)
    if all(v is not None for v in activity):
        return "philips_activity_factor", tuple(activity)  # type: ignore[arg-type]
    missing = [
        lab for lab, a, s in zip(labels, activity, suv, strict=True) if a is None and s is None
    ]
    raise SUVError(
        f"{_tag('Units')} is CNTS but neither the Philips SUV Scale Factor (7053,xx00) nor the "
        f"Activity Concentration Scale Factor (7053,xx09) under private creator "
        f"'{_PHILIPS_CREATOR}' is set (positive) in {_where(missing or list(labels))}; counts "
        "cannot be calibrated to activity. Export the series in BQML from the scanner."
    )


def _philips_factors(
    datasets: Sequence[Dataset], labels: Sequence[str], offset: int
) -> list[float | None]:
    """Philips private factor (7053,xx<offset>) per instance; None where absent or not > 0."""
    out: list[float | None] = []
    for ds, lab in zip(datasets, labels, strict=True):
        raw = _private_with_fallback(ds, 0x7053, _PHILIPS_CREATOR, offset, "PHILIPS")
        value = None if raw is None else _float(raw, f"Philips private (7053,xx{offset:02X})", lab)
        out.append(value if value is not None and value > 0 else None)
    return out
