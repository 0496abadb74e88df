"""CT: stored pixel values to Hounsfield units (HU).

The modality transformation of a CT image is linear::

    HU = Rescale Slope (0028,1053) × stored + Rescale Intercept (0028,1052)

computed in float64 after the stored value has been given its sign (Pixel Representation
(0028,0103), Bits Stored (0028,0101)). In an enhanced CT object the slope and intercept live in the
Pixel Value Transformation Sequence (0028,9145) of the functional groups, one pair per frame;
:func:`imharmony.io.dicom.read_dicom_series` extracts them and hands them here.

Pixels whose *stored* value equals Pixel Padding Value (0028,0120), or lies between it and Pixel
Padding Range Limit (0028,0121), lie outside the reconstructed field of view: they have no HU and
become NaN (see :func:`padding_mask`). Some scanners write −2000 or −3024 HU outside the field of
view without any padding tag; those values are left as they are.

This module holds the CT rules only; reading files is :mod:`imharmony.io.dicom`'s job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._dicom.tags import tag_label  # re-exported: imharmony.physics.ct.tag_label
from ..errors import DataError

__all__ = [
    "CT_SOP_CLASS_UIDS",
    "HounsfieldError",
    "check_ct_instance",
    "check_ct_rescale",
    "hounsfield",
    "padding_mask",
    "padding_range",
    "tag_label",
]

logger = logging.getLogger(__name__)

#: SOP Class UIDs whose pixel data are CT numbers: CT Image Storage, Enhanced CT Image Storage and
#: Legacy Converted Enhanced CT Image Storage.
CT_SOP_CLASS_UIDS: Mapping[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}


class HounsfieldError(DataError):
    """A CT image cannot be converted to Hounsfield units as it stands."""


def _sop_class(ds: Any) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None and hasattr(ds, "file_meta"):
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid) if uid is not None else ""


def check_ct_instance(ds: Any, name: str = "dataset") -> None:
    """Refuse a DICOM instance whose pixel values are not CT numbers.

    Parameters
    ----------
    ds : pydicom.Dataset
        The instance's header (pixel data not needed).
    name : str
        What to call the instance in messages (usually its file name).

    Raises
    ------
    HounsfieldError
        If the SOP Class is not a CT image class (a Secondary Capture of a CT is a picture, not
        HU), Modality (0008,0060) is not ``CT``, or a Modality LUT Sequence (0028,3000) replaces
        the linear rescale.
    """
    sop = _sop_class(ds)
    if sop not in CT_SOP_CLASS_UIDS:
        from pydicom.uid import UID

        kind = UID(sop).name if sop else "missing"
        raise HounsfieldError(
            f"{name}: {tag_label('SOPClassUID')} is {sop or 'missing'} ({kind}), not a CT image "
            "class; its pixels are not CT numbers, so they cannot be converted to HU. Use the "
            "original CT series, or read it with units='raw'."
        )
    modality = str(ds.get("Modality", "") or "")
    if modality != "CT":
        raise HounsfieldError(
            f"{name}: {tag_label('Modality')} is {modality or 'missing'!r}, expected 'CT' for "
            "conversion to HU; read it with units='raw' if the stored values are wanted."
        )
    if "ModalityLUTSequence" in ds:
        raise HounsfieldError(
            f"{name}: {tag_label('ModalityLUTSequence')} is present; a non-linear modality LUT "
            "is not supported for HU conversion. Read it with units='raw' and apply the LUT "
            "yourself."
        )


def check_ct_rescale(
    slope: float | None,
    intercept: float | None,
    rescale_type: str | None,
    name: str = "dataset",
) -> tuple[float, float]:
    """Validate one frame's rescale parameters for conversion to HU.

    Parameters
    ----------
    slope, intercept : float or None
        Rescale Slope (0028,1053) and Rescale Intercept (0028,1052); None when absent.
    rescale_type : str or None
        Rescale Type (0028,1054); None when absent (which in a CT image means HU).
    name : str
        What to call the instance (and frame) in messages.

    Returns
    -------
    (float, float)
        The slope and intercept.

    Raises
    ------
    HounsfieldError
        If the slope or the intercept is missing or not finite, the slope is zero, or the Rescale
        Type is present and not ``HU``.
    """
    for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if value is None:
            raise HounsfieldError(
                f"{name}: {tag_label(keyword)} missing; without it the stored values cannot be "
                "converted to HU (read with units='raw' for the stored values)."
            )
        if not math.isfinite(value):
            raise HounsfieldError(f"{name}: {tag_label(keyword)} is {value}, not a finite number.")
    assert slope is not None and intercept is not None
    if slope == 0:
        raise HounsfieldError(f"{name}: {tag_label('RescaleSlope')} is 0; the file is damaged.")
    if rescale_type is not None and rescale_type.strip() and rescale_type.strip() != "HU":
        raise HounsfieldError(
            f"{name}: {tag_label('RescaleType')} is {rescale_type.strip()!r}, not 'HU'; the "
            "rescaled values are not Hounsfield units. Read with units='raw' instead."
        )
    return float(slope), float(intercept)


def padding_range(ds: Any, name: str = "dataset") -> tuple[int, int] | None:
    """Stored-value range marking padding (outside the field of view), from the header.

    Parameters
    ----------
    ds : pydicom.Dataset
        The instance's header.
    name : str
        What to call the instance in messages.

    Returns
    -------
    (int, int) or None
        ``(low, high)`` inclusive: Pixel Padding Value (0028,0120) alone gives ``(v, v)``; with
        Pixel Padding Range Limit (0028,0121) the range between the two. None when there is no
        Pixel Padding Value.
    """
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    try:
        v = int(value)
        lim = v if limit is None or limit == "" else int(limit)
    except (TypeError, ValueError) as exc:
        raise HounsfieldError(
            f"{name}: {tag_label('PixelPaddingValue')} / {tag_label('PixelPaddingRangeLimit')} "
            f"is not an integer ({value!r}, {limit!r})."
        ) from exc
    return (min(v, lim), max(v, lim))


def padding_mask(stored: np.ndarray, padding: tuple[int, int] | None) -> np.ndarray | None:
    """Where stored values are padding (outside the reconstructed field of view).

    Parameters
    ----------
    stored : numpy.ndarray of int
        Stored pixel values after sign handling, any shape.
    padding : (int, int) or None
        Inclusive stored-value range from :func:`padding_range`.

    Returns
    -------
    numpy.ndarray of bool or None
        Same shape as ``stored``, True on padding; None when ``padding`` is None.

    Notes
    -----
    The comparison is made on stored values, before rescaling (DICOM PS3.3 C.7.5.1.1.2).
    """
    if padding is None:
        return None
    low, high = padding
    if low == high:
        return np.equal(stored, low)
    return (stored >= low) & (stored <= high)


def hounsfield(
    stored: np.ndarray,
    slope: float | np.ndarray,
    intercept: float | np.ndarray,
    *,
    padding: tuple[int, int] | None = None,
) -> np.ndarray:
    """Convert stored CT values to Hounsfield units.

    Parameters
    ----------
    stored : numpy.ndarray of int, shape (n_frames, rows, columns) or (rows, columns)
        Stored values after sign handling.
    slope, intercept : float or numpy.ndarray, shape (n_frames,)
        Rescale Slope and Rescale Intercept, one value or one per frame (axis 0).
    padding : (int, int), optional
        Inclusive stored-value range of padding (see :func:`padding_range`); those pixels become
        NaN.

    Returns
    -------
    numpy.ndarray of float64
        HU, same shape as ``stored``; NaN outside the field of view.

    Notes
    -----
    ``HU = slope × stored + intercept``, evaluated in float64.

    Examples
    --------
    >>> hounsfield(np.array([[0, 1024, 2048]], dtype=np.int16), 1.0, -1024.0)
    array([[-1024.,     0.,  1024.]])
    """
    stored = np.asarray(stored)
    slope_a = np.asarray(slope, dtype=np.float64)
    intercept_a = np.asarray(intercept, dtype=np.float64)
    if slope_a.ndim == 1:
        shape = (-1,) + (1,) * (stored.ndim - 1)
        slope_a = slope_a.reshape(shape)
        intercept_a = intercept_a.reshape(shape)
    hu = np.multiply(stored, slope_a, dtype=np.float64)
    hu += intercept_a
    mask = padding_mask(stored, padding)
    if mask is not None:
        hu[mask] = np.nan
    return hu
