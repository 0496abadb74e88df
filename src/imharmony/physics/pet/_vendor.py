"""Vendor private parts: Philips scale factors and private elements found through their creator."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from ..._dicom.tags import as_text, element_value, plain_value, private_value
from ..._dicom.tags import tag_label as _tag
from ._header import SUVError, _float, _where

logger = logging.getLogger(__name__)


_GE_CREATOR = "GEMS_PETD_01"


_PHILIPS_CREATOR = "Philips PET Private Group"


def _private_with_fallback(ds: Dataset, group: int, creator: str, offset: int, vendor: str) -> Any:
    """A private element found through its creator; else, when no creator claims block 0x10 at all
    and Manufacturer names ``vendor``, the element at ``(group, 0x10xx)``.

    Some real and reference files omit the Private Creator element.
    """
    value = private_value(ds, group, creator, offset)
    if value is not None:
        return value
    if ((group << 16) | 0x0010) in ds:  # block 0x10 belongs to some other creator
        return None
    if vendor not in (as_text(plain_value(ds, "Manufacturer")) or "").upper():
        return None
    return element_value(ds, (group << 16) | 0x1000 | offset)


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
