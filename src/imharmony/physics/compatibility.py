"""Whether MR acquisitions can be harmonized together, and why not.

Statistical harmonization removes a scanner's gain and offset; it cannot turn a T1-weighted image
into a T2-weighted one, a phase image into a magnitude image, or a post-contrast image into a
pre-contrast one. :func:`harmonizable` compares two acquisitions and :func:`require_harmonizable`
checks a whole set against its first member, from the parameters and weighting that
:mod:`imharmony.physics.mr` reads. The ``meta`` accepted is the same as there: a pydicom dataset, a
mapping keyed by DICOM keywords, or a protocol-table row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import HarmonizationError
from .mr import (
    _MAPPING_KEYS,
    PARAMETER_TOLERANCE,
    MRParameters,
    Weighting,
    mr_parameters,
    mr_weighting,
)

__all__ = ["NotHarmonizableError", "Verdict", "harmonizable", "require_harmonizable"]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Harmonizability
# ----------------------------------------------------------------------------------------------


class NotHarmonizableError(HarmonizationError):
    """Acquisitions differ in a way no intensity or feature harmonization can undo.

    Attributes
    ----------
    reasons : tuple of str
        The hard stops found.
    warnings : tuple of str
        Softer differences found at the same time.
    """

    def __init__(self, message: str, reasons: Sequence[str] = (), warnings: Sequence[str] = ()):
        super().__init__(message)
        self.reasons = tuple(reasons)
        self.warnings = tuple(warnings)


@dataclass(frozen=True)
class Verdict:
    """Whether acquisitions can be harmonized.

    Attributes
    ----------
    ok : bool
        False when there is at least one hard stop.
    reasons : tuple of str
        Hard stops: different weighting, pre- vs post-contrast, magnitude vs phase, a quantitative
        map, a localizer or a reformat/projection.
    warnings : tuple of str
        Differences harmonization can absorb but the user should know about: field strength,
        TR, TE, TI or flip angle differing by more than 20 %, a weighting that could not be named.
    weightings : tuple of Weighting
        The weighting decided for each input, in order.
    """

    ok: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    weightings: tuple[Weighting, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return self.ok


def _relative_difference(a: float, b: float) -> float:
    """|a − b| relative to the smaller magnitude (inf when one is zero and the other is not)."""
    if a == b:
        return 0.0
    low = min(abs(a), abs(b))
    return math.inf if low == 0 else abs(a - b) / low


def _compare(
    params_a: MRParameters,
    params_b: MRParameters,
    w_a: Weighting,
    w_b: Weighting,
    names: tuple[str, str],
) -> tuple[list[str], list[str]]:
    a, b = names
    reasons: list[str] = []
    warnings: list[str] = []

    mod_a, mod_b = (p.modality.upper() if p.modality else None for p in (params_a, params_b))
    if mod_a and mod_b and mod_a != mod_b:
        reasons.append(f"different modality: {a} is {mod_a}, {b} is {mod_b}")
    for label, w in ((a, w_a), (b, w_b)):
        if w.quantitative_map:
            reasons.append(
                f"{label} is a quantitative map ({w.reason}); maps carry physical units and are "
                "calibrated (phantoms), not harmonized as weighted images"
            )
        if w.localizer:
            reasons.append(f"{label} is a localizer ({w.reason})")
        if w.reformatted:
            reasons.append(f"{label} is a reformat or projection ({w.reason})")
    if w_a.phase != w_b.phase:
        phase, magnitude = (a, b) if w_a.phase else (b, a)
        reasons.append(f"magnitude vs phase: {phase} is a phase image, {magnitude} is magnitude")
    elif w_a.phase and w_b.phase:
        warnings.append(f"{a} and {b} are both phase images; their weighting is not named")
    if w_a.contrast_enhanced != w_b.contrast_enhanced:
        post, pre = (a, b) if w_a.contrast_enhanced else (b, a)
        reasons.append(f"pre vs post contrast: {post} is contrast-enhanced, {pre} is not")

    known_a = w_a.weighting != "unknown"
    known_b = w_b.weighting != "unknown"
    if known_a and known_b and w_a.weighting != w_b.weighting:
        reasons.append(f"different weighting: {a} is {w_a.weighting}, {b} is {w_b.weighting}")
    elif not (w_a.excluded or w_b.excluded):
        for label, w, known in ((a, w_a, known_a), (b, w_b, known_b)):
            if not known:
                warnings.append(f"the weighting of {label} could not be named ({w.reason})")

    checks = (
        ("field strength", "T", params_a.field_strength_t, params_b.field_strength_t),
        ("TR", "ms", params_a.repetition_time_ms, params_b.repetition_time_ms),
        ("TE", "ms", params_a.echo_time_ms, params_b.echo_time_ms),
        ("TI", "ms", params_a.inversion_time_ms, params_b.inversion_time_ms),
        ("flip angle", "°", params_a.flip_angle_deg, params_b.flip_angle_deg),
    )
    for name, unit, va, vb in checks:
        if va is None or vb is None:
            if name == "TI" and (va or vb):
                which = a if va else b
                warnings.append(f"TI: only {which} has an inversion time ({va or vb:g} {unit})")
            continue
        diff = _relative_difference(va, vb)
        if diff > PARAMETER_TOLERANCE:
            amount = "more than 100%" if math.isinf(diff) else f"{diff * 100:.0f}%"
            warnings.append(
                f"{name} differs by {amount} ({a}: {va:g} {unit}, {b}: {vb:g} {unit}; "
                f"tolerance {PARAMETER_TOLERANCE * 100:.0f}%)"
            )
    return reasons, warnings


def harmonizable(meta_a: Any, meta_b: Any) -> Verdict:
    """Say whether two MR acquisitions can be harmonized, and why not.

    Parameters
    ----------
    meta_a, meta_b : pydicom.dataset.Dataset, Mapping, pandas.Series or MRParameters
        Headers, keyword mappings or protocol-table rows (see the module documentation).

    Returns
    -------
    Verdict
        ``.ok`` is False when there is a hard stop (listed in ``.reasons``): different modality,
        different named weightings, pre vs post contrast, magnitude vs phase, a quantitative map,
        a localizer or a reformat/projection on either side. ``.warnings`` lists field strength,
        TR, TE, TI or flip-angle differences above 20 % (relative to the smaller value) and
        weightings that could not be named.

    Examples
    --------
    >>> v = harmonizable({"RepetitionTime": 500, "EchoTime": 10},
    ...                  {"RepetitionTime": 4000, "EchoTime": 100})
    >>> v.ok, v.reasons
    (False, ('different weighting: A is T1w, B is T2w',))
    """
    params_a, params_b = mr_parameters(meta_a), mr_parameters(meta_b)
    w_a, w_b = mr_weighting(params_a), mr_weighting(params_b)
    reasons, warnings = _compare(params_a, params_b, w_a, w_b, ("A", "B"))
    return Verdict(
        ok=not reasons, reasons=tuple(reasons), warnings=tuple(warnings), weightings=(w_a, w_b)
    )


def _looks_single(metas: Any) -> bool:
    """True for one acquisition (a header, a keyword dict, a table row) rather than several."""
    if isinstance(metas, (str, bytes, MRParameters, pd.Series)) or hasattr(metas, "dir"):
        return True
    if not isinstance(metas, Iterable):
        return True
    if isinstance(metas, Mapping):
        keys = {str(k) for k in metas}
        known = {k for keys_ in _MAPPING_KEYS.values() for k in keys_}
        return bool(keys & (known | {"MagneticFieldStrength", "field_strength_t"}))
    return False


def _labelled(metas: Any) -> list[tuple[str, Any]]:
    if isinstance(metas, pd.DataFrame):
        label_col = "series_uid" if "series_uid" in metas.columns else None
        return [
            (str(row[label_col]) if label_col else str(index), row)
            for index, row in metas.iterrows()
        ]
    if _looks_single(metas):
        raise HarmonizationError(
            "require_harmonizable needs several acquisitions: a list of headers / keyword dicts, "
            "a dict {label: header}, or a protocol table (DataFrame); got a single "
            f"{type(metas).__name__}."
        )
    if isinstance(metas, Mapping):
        return [(str(key), value) for key, value in metas.items()]
    return [(f"#{i}", meta) for i, meta in enumerate(metas)]


def require_harmonizable(metas: Any, *, mapping: Any = None, max_listed: int = 10) -> Verdict:
    """Check that MR acquisitions can be harmonized together; raise if they cannot.

    Each acquisition is compared with the first one (the reference).

    Parameters
    ----------
    metas : sequence, mapping {label: meta} or pandas.DataFrame
        The acquisitions: headers, keyword mappings or protocol-table rows (a protocol table is
        labelled by its ``series_uid`` column).
    mapping : object, optional
        A mapping between the acquisitions learned from travelling subjects. When given, hard
        stops are logged as warnings instead of raising, because the mapping was learned on
        exactly those differences.
    max_listed : int, default 10
        How many hard stops the error message lists before summarising the rest.

    Returns
    -------
    Verdict
        The combined verdict (``.weightings`` in input order).

    Raises
    ------
    NotHarmonizableError
        When there is at least one hard stop and ``mapping`` is None.
    """
    items = _labelled(metas)
    if not items:
        raise HarmonizationError("require_harmonizable: no acquisitions given.")
    params = [mr_parameters(meta) for _, meta in items]
    weightings = [mr_weighting(p) for p in params]
    reasons: list[str] = []
    warnings: list[str] = []
    ref_label = items[0][0]
    for (label, _), p, w in zip(items[1:], params[1:], weightings[1:], strict=True):
        r, wn = _compare(params[0], p, weightings[0], w, (ref_label, label))
        reasons.extend(r)
        warnings.extend(wn)
    if len(items) == 1:
        w = weightings[0]
        if w.quantitative_map or w.localizer or w.reformatted:
            warnings.append(f"{ref_label} is excluded from weighting ({w.reason})")
    for text in warnings:
        logger.warning("harmonizability: %s", text)
    verdict = Verdict(
        ok=not reasons, reasons=tuple(reasons), warnings=tuple(warnings),
        weightings=tuple(weightings),
    )
    if reasons:
        if mapping is not None:
            for text in reasons:
                logger.warning("harmonizability (overridden by the given mapping): %s", text)
            return verdict
        listed = "\n  - ".join(reasons[:max_listed])
        more = f"\n  ... and {len(reasons) - max_listed} more" if len(reasons) > max_listed else ""
        raise NotHarmonizableError(
            f"these acquisitions cannot be harmonized together ({len(reasons)} hard stop"
            f"{'s' if len(reasons) != 1 else ''}):\n  - {listed}{more}\n"
            "Fix: harmonize each weighting / contrast phase separately, drop the excluded series, "
            "or pass a mapping learned from travelling subjects (mapping=...).",
            reasons=reasons,
            warnings=warnings,
        )
    return verdict
