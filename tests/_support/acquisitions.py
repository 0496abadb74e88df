"""MR acquisitions as keyword dicts (DICOM keywords), for the weighting and harmonizability tests.

Examples
--------
>>> se(500, 15)["RepetitionTime"], ir(9000, 120, 2500)["ScanningSequence"]
(500, 'SE\\\\IR')
"""

from __future__ import annotations

from typing import Any

__all__ = ["ir", "se"]


def se(tr: float, te: float, **extra: Any) -> dict[str, Any]:
    """A spin-echo magnitude acquisition (TR, TE in ms) as a keyword dict."""
    return {"ScanningSequence": "SE", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
            "RepetitionTime": tr, "EchoTime": te, **extra}


def ir(tr: float, te: float, ti: float, scanning: str = "SE\\IR", **extra: Any) -> dict[str, Any]:
    """An inversion-recovery acquisition (TR, TE, TI in ms) as a keyword dict."""
    return {"ScanningSequence": scanning, "RepetitionTime": tr, "EchoTime": te,
            "InversionTime": ti, **extra}
