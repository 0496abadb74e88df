"""Coarse groups of CT reconstruction kernel names (used when the header names no group)."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["kernel_group"]

# Words in a kernel name, checked in this order (first match wins).
_KERNEL_WORDS: tuple[tuple[str, str], ...] = (
    ("LUNG", "LUNG"),
    ("BONE", "BONE"),
    ("BRAIN", "BRAIN"),
    ("HEAD", "BRAIN"),
    ("SOFT", "SOFT_TISSUE"),
    ("STANDARD", "SOFT_TISSUE"),
    ("STND", "SOFT_TISSUE"),
    ("SMOOTH", "SOFT_TISSUE"),
    ("BODY", "SOFT_TISSUE"),
    ("ABDOMEN", "SOFT_TISSUE"),
    ("MEDIASTINUM", "SOFT_TISSUE"),
    ("DETAIL", "SHARP"),
    ("EDGE", "SHARP"),
    ("SHARP", "SHARP"),
    ("CHEST", "SHARP"),
)
_SIEMENS_KERNEL = re.compile(r"^([A-Z][A-Z]?)(\d{2})[A-Z]?$")
_CANON_KERNEL = re.compile(r"^FC(\d{2})$")
_PHILIPS_KERNEL = {
    "A": "SOFT_TISSUE", "B": "SOFT_TISSUE", "UA": "SOFT_TISSUE", "UB": "BRAIN", "UC": "SHARP",
    "YA": "SOFT_TISSUE", "YB": "SOFT_TISSUE", "C": "SHARP", "D": "SHARP", "YC": "SHARP",
    "YD": "SHARP", "E": "BONE", "EB": "BONE", "EC": "BONE", "L": "LUNG", "LA": "LUNG",
}


def kernel_group(kernel: Any, manufacturer: Any = None) -> str:
    """Group a CT reconstruction kernel name into SOFT_TISSUE, SHARP, BONE, LUNG or BRAIN.

    Used only when the header has no Convolution Kernel Group (0018,9316). The lookup is
    deliberately coarse, a first sorting of a collection, not a replacement for the vendor's
    documentation:

    * words anywhere in the name: LUNG → LUNG; BONE → BONE; BRAIN or HEAD → BRAIN; SOFT,
      STANDARD, STND, SMOOTH, BODY, ABDOMEN, MEDIASTINUM → SOFT_TISSUE; DETAIL, EDGE, SHARP,
      CHEST → SHARP (GE's STANDARD, SOFT, DETAIL, CHEST, LUNG, BONE, BONEPLUS, EDGE);
    * Siemens letter + two digits (B30f, Br40d, Hr38, Bl57): prefix Bl → LUNG; number < 50 →
      SOFT_TISSUE (BRAIN for head kernels H, Hr, Hc); ≥ 50 → SHARP (≥ 70 for head/ultra-high
      U, Ur → BONE);
    * Canon/Toshiba FCnn: 01–29 → SOFT_TISSUE, 30–39 → BONE, 50–59 → LUNG;
    * Philips letters: A, B, YA, YB, UA → SOFT_TISSUE; UB → BRAIN; C, D, YC, YD, UC → SHARP;
      E, EB, EC → BONE; L, LA → LUNG;
    * anything else → "unknown".

    Parameters
    ----------
    kernel : str
        Convolution Kernel (0018,1210); only its first value is used.
    manufacturer : str, optional
        Manufacturer (0008,0070); restricts the single-letter Philips lookup to Philips.

    Returns
    -------
    str
    """
    if kernel is None or (isinstance(kernel, float) and math.isnan(kernel)):
        return "unknown"
    name = str(kernel).split("\\")[0].strip().upper()
    if not name:
        return "unknown"
    for word, group in _KERNEL_WORDS:
        if word in name:
            return group
    match = _CANON_KERNEL.match(name)
    if match:
        number = int(match.group(1))
        if 1 <= number <= 29:
            return "SOFT_TISSUE"
        if 30 <= number <= 39:
            return "BONE"
        if 50 <= number <= 59:
            return "LUNG"
        return "unknown"
    match = _SIEMENS_KERNEL.match(name)
    if match:
        prefix, number = match.group(1), int(match.group(2))
        if prefix == "BL":
            return "LUNG"
        head = prefix in {"H", "HR", "HC"}
        if number < 50:
            return "BRAIN" if head else "SOFT_TISSUE"
        if number >= 70 and prefix in {"H", "HR", "U", "UR"}:
            return "BONE"
        return "SHARP"
    vendor = "" if manufacturer is None else str(manufacturer).upper()
    if name in _PHILIPS_KERNEL and (not vendor or "PHILIPS" in vendor):
        return _PHILIPS_KERNEL[name]
    return "unknown"
