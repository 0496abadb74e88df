"""Times: injection and reference times (the QIBA order)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from pydicom.dataset import Dataset

from ..._dicom.tags import parse_date, parse_datetime, parse_time, plain_value
from ..._dicom.tags import tag_label as _tag
from ._body import _check_positive, _decay_average_time
from ._header import (
    _LN2,
    _RADIO_SEQ,
    SUVError,
    _acquisition_datetime,
    _close,
    _float,
    _get_radio,
    _label,
    _number_reader,
    _parsed,
    _series_datetime,
    _series_value,
    _where,
)
from ._vendor import _GE_CREATOR, _private_with_fallback

logger = logging.getLogger(__name__)


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
        return _parsed(parse_datetime, value, "GE private scan datetime (0009,xx0D)", label)

    ge = _series_value(datasets, labels, read_ge, "GE private scan datetime (0009,xx0D)")
    if ge is not None:
        logger.debug("reference time: GE private scan datetime %s", ge)
        return ReferenceTime((ge,) * n, "ge_private")

    frame_ref = [plain_value(ds, "FrameReferenceTime") for ds in datasets]
    duration = [plain_value(ds, "ActualFrameDuration") for ds in datasets]
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
        return _parsed(parse_datetime, dt_value, _tag("RadiopharmaceuticalStartDateTime"), label)
    t_value = _get_radio(dataset, "RadiopharmaceuticalStartTime")
    if t_value is None:
        raise SUVError(
            f"{_tag('RadiopharmaceuticalStartDateTime')} and "
            f"{_tag('RadiopharmaceuticalStartTime')} both missing {where}; the decay correction "
            "needs the injection time — fill it in."
        )
    start = _parsed(parse_time, t_value, _tag("RadiopharmaceuticalStartTime"), label)
    day = None
    for kw in ("SeriesDate", "AcquisitionDate", "StudyDate"):
        value = plain_value(dataset, kw)
        if value is not None:
            day = _parsed(parse_date, value, _tag(kw), label)
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
