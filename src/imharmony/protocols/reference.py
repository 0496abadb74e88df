"""Reference protocols (YAML or dict) and audits of a protocol table against them.

:func:`load_reference` reads a reference protocol, :func:`audit_protocols` lists every deviation
of a protocol table (:func:`imharmony.protocols.scan_protocols`) from it, and
:func:`summarize_audit` counts them per site.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, HarmonizationError

__all__ = [
    "DEVIATION_COLUMNS",
    "ProtocolReferenceError",
    "audit_protocols",
    "load_reference",
    "summarize_audit",
]

logger = logging.getLogger(__name__)

#: Columns of the deviation table made by :func:`audit_protocols`.
DEVIATION_COLUMNS: tuple[str, ...] = (
    "series_uid", "site", "modality", "weighting", "folder", "column", "rule", "expected",
    "found", "severity",
)


class ProtocolReferenceError(HarmonizationError):
    """A reference protocol (YAML file or dict) that cannot be understood."""



@dataclass(frozen=True)
class _Rule:
    column: str
    kind: str  # "exact", "one_of", "range", "tolerance", "percent"
    value: Any = None
    low: float | None = None
    high: float | None = None
    tol: float | None = None
    allowed: tuple[Any, ...] = ()
    severity: str = "error"

    def expected(self) -> str:
        if self.kind == "exact":
            return _show(self.value)
        if self.kind == "one_of":
            return "one of " + ", ".join(_show(v) for v in self.allowed)
        if self.kind == "range":
            low = "-inf" if self.low is None else _show(self.low)
            high = "inf" if self.high is None else _show(self.high)
            return f"[{low}, {high}]"
        if self.kind == "tolerance":
            return f"{_show(self.value)} ± {_show(self.tol)}"
        return f"{_show(self.value)} ± {_show(self.tol)}%"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolReferenceError(f"{where}: expected a number, got {value!r}.")
    if not math.isfinite(float(value)):
        raise ProtocolReferenceError(f"{where}: {value!r} is not a finite number.")
    return float(value)


def _parse_rule(column: str, spec: Any, where: str) -> _Rule:
    severity = "error"
    if isinstance(spec, Mapping):
        spec = dict(spec)
        severity = str(spec.pop("severity", "error")).lower()
        if severity not in {"error", "warning"}:
            raise ProtocolReferenceError(
                f"{where}: severity must be 'error' or 'warning', got {severity!r}."
            )
        keys = set(spec)
        if keys == {"value"}:
            spec = spec["value"]
        elif keys in ({"value", "tol"}, {"value", "tol_percent"}):
            key = "tol" if "tol" in keys else "tol_percent"
            tol = _number(spec[key], f"{where}.{key}")
            if tol < 0:
                raise ProtocolReferenceError(f"{where}.{key}: must not be negative.")
            return _Rule(column, "tolerance" if key == "tol" else "percent",
                         value=_number(spec["value"], f"{where}.value"), tol=tol,
                         severity=severity)
        elif keys == {"range"}:
            spec = spec["range"]
            if not isinstance(spec, list):
                raise ProtocolReferenceError(f"{where}.range: expected [min, max].")
        elif keys == {"one_of"}:
            allowed = spec["one_of"]
            if not isinstance(allowed, list) or not allowed:
                raise ProtocolReferenceError(f"{where}.one_of: expected a non-empty list.")
            return _Rule(column, "one_of", allowed=tuple(allowed), severity=severity)
        else:
            raise ProtocolReferenceError(
                f"{where}: cannot read the keys {sorted(keys)}; use a value, [min, max], "
                "{value, tol}, {value, tol_percent}, {range: [min, max]} or {one_of: [...]}, "
                "each optionally with severity: warning."
            )
    if isinstance(spec, list):
        if len(spec) != 2 or not all(v is None or isinstance(v, (int, float)) for v in spec):
            raise ProtocolReferenceError(
                f"{where}: a list must be a range [min, max] of two numbers (null for an open "
                "end); for a list of allowed values write {one_of: [...]}."
            )
        low = None if spec[0] is None else _number(spec[0], f"{where}[0]")
        high = None if spec[1] is None else _number(spec[1], f"{where}[1]")
        if low is not None and high is not None and low > high:
            raise ProtocolReferenceError(f"{where}: range [{low:g}, {high:g}] has min > max.")
        return _Rule(column, "range", low=low, high=high, severity=severity)
    if spec is None or isinstance(spec, (dict, set, tuple)):
        raise ProtocolReferenceError(f"{where}: no expected value given.")
    return _Rule(column, "exact", value=spec, severity=severity)


def _parse_rules(spec: Any, where: str) -> list[_Rule]:
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ProtocolReferenceError(f"{where}: expected a mapping of column: rule.")
    return [_parse_rule(str(col), rule, f"{where}.{col}") for col, rule in spec.items()]


def load_reference(reference: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a reference protocol (YAML file or dict).

    The format (see ``examples/reference_protocol.yaml``)::

        version: 1
        modalities:
          CT:
            rules:                       # every CT series
              kvp: 120                   # exact value (text compares case-insensitively)
              slice_thickness_mm: [0.9, 1.5]           # range [min, max]; null = open end
              pixel_spacing_row_mm: {value: 0.7, tol: 0.1}        # value ± tol
              exposure_mas: {value: 200, tol_percent: 25, severity: warning}   # ± percent
              kernel_group: {one_of: [SOFT_TISSUE, BRAIN]}
          MR:
            rules: {field_strength_t: {value: 3.0, tol: 0.05}}
            weightings:                  # only series of that weighting
              T1w: {repetition_time_ms: [400, 800]}

    Returns
    -------
    dict
        ``{"modalities": {MODALITY: {"rules": [...], "weightings": {W: [...]}}}}`` with parsed
        rules (internal objects).

    Raises
    ------
    ProtocolReferenceError
        If the file is missing or not YAML, or the structure or a rule cannot be read; the
        message names the key path (e.g. ``modalities.CT.rules.kvp``).
    """
    source = "reference"
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        source = str(path)
        if not path.is_file():
            raise ProtocolReferenceError(
                f"{path}: no such reference protocol; see examples/reference_protocol.yaml."
            )
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ProtocolReferenceError(f"{path}: not valid YAML ({exc}).") from None
    else:
        data = reference
    if not isinstance(data, Mapping) or "modalities" not in data:
        raise ProtocolReferenceError(
            f"{source}: expected a mapping with a 'modalities' key (see "
            "examples/reference_protocol.yaml)."
        )
    extra = set(data) - {"version", "modalities", "description"}
    if extra:
        raise ProtocolReferenceError(f"{source}: unknown top-level keys {sorted(extra)}.")
    if data.get("version", 1) != 1:
        raise ProtocolReferenceError(
            f"{source}: version {data.get('version')!r} is not supported (only 1)."
        )
    modalities = data["modalities"]
    if not isinstance(modalities, Mapping) or not modalities:
        raise ProtocolReferenceError(f"{source}: 'modalities' must map modality names to rules.")
    parsed: dict[str, Any] = {}
    for modality, spec in modalities.items():
        where = f"{source}: modalities.{modality}"
        if not isinstance(spec, Mapping):
            raise ProtocolReferenceError(f"{where}: expected 'rules' and/or 'weightings'.")
        extra = set(spec) - {"rules", "weightings"}
        if extra:
            raise ProtocolReferenceError(
                f"{where}: unknown keys {sorted(extra)}; expected 'rules' and/or 'weightings'."
            )
        weightings = spec.get("weightings") or {}
        if not isinstance(weightings, Mapping):
            raise ProtocolReferenceError(f"{where}.weightings: expected weighting: rules.")
        parsed[str(modality).upper()] = {
            "rules": _parse_rules(spec.get("rules"), f"{where}.rules"),
            "weightings": {
                str(w): _parse_rules(rules, f"{where}.weightings.{w}")
                for w, rules in weightings.items()
            },
        }
    return {"modalities": parsed}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _equal(found: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        text = str(found).strip().lower()
        return text in ({"true", "1", "1.0", "yes"} if expected else {"false", "0", "0.0", "no"})
    if isinstance(expected, (int, float)):
        number = _as_number(found)
        return number is not None and math.isclose(number, float(expected), rel_tol=1e-9,
                                                   abs_tol=1e-12)
    return str(found).strip().casefold() == str(expected).strip().casefold()


def _check(rule: _Rule, found: Any) -> bool:
    """True when ``found`` satisfies the rule."""
    if rule.kind == "exact":
        return _equal(found, rule.value)
    if rule.kind == "one_of":
        return any(_equal(found, v) for v in rule.allowed)
    number = _as_number(found)
    if number is None:
        return False
    if rule.kind == "range":
        eps = 1e-9 * max(1.0, abs(number))
        return (rule.low is None or number >= rule.low - eps) and (
            rule.high is None or number <= rule.high + eps
        )
    assert rule.tol is not None
    bound = rule.tol if rule.kind == "tolerance" else abs(rule.value) * rule.tol / 100.0
    return abs(number - rule.value) <= bound * (1 + 1e-12) + 1e-12


def audit_protocols(
    table: pd.DataFrame, reference: str | os.PathLike[str] | Mapping[str, Any]
) -> pd.DataFrame:
    """Compare a protocol table with a reference protocol; one row per deviation.

    Parameters
    ----------
    table : pandas.DataFrame
        A protocol table (:func:`scan_protocols`, or the CSV it was written to, read back).
    reference : path or mapping
        A reference protocol, see :func:`load_reference` and ``examples/reference_protocol.yaml``.
        Rules under ``modalities.<M>.rules`` apply to every series of modality M; rules under
        ``modalities.<M>.weightings.<W>`` to its series of weighting W as well. Series of a
        modality the reference does not name are not audited.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DEVIATION_COLUMNS`: the series (``series_uid``, ``site``, ``modality``,
        ``weighting``, ``folder``), the ``column`` checked, the ``rule`` kind (exact, one_of,
        range, tolerance, percent), ``expected`` and ``found`` as text, and ``severity`` (the
        rule's, "error" by default; "warning" when the value is missing and so cannot be
        checked, with ``found`` = "missing").

    Raises
    ------
    ProtocolReferenceError
        If the reference cannot be read or names a column the table does not have.
    DataError
        If the table lacks the ``modality`` column.
    """
    parsed = load_reference(reference)
    if "modality" not in table.columns:
        raise DataError("protocol table: no 'modality' column; make it with imharmony scan.")
    wanted = {
        rule.column
        for spec in parsed["modalities"].values()
        for rules in (spec["rules"], *spec["weightings"].values())
        for rule in rules
    }
    unknown = sorted(wanted - set(table.columns))
    if unknown:
        raise ProtocolReferenceError(
            f"the reference checks columns the protocol table does not have: {unknown}; "
            f"available columns: {', '.join(map(str, table.columns))}."
        )

    def cell(row: pd.Series, column: str) -> Any:
        return row[column] if column in row.index and not _missing(row[column]) else None

    records: list[dict[str, Any]] = []
    for _, row in table.iterrows():
        modality = cell(row, "modality")
        spec = parsed["modalities"].get(str(modality).upper()) if modality is not None else None
        if spec is None:
            continue
        weighting = cell(row, "weighting")
        rules = list(spec["rules"])
        if weighting is not None:
            for name, extra in spec["weightings"].items():
                if name.casefold() == str(weighting).casefold():
                    rules.extend(extra)
        for rule in rules:
            found = cell(row, rule.column)
            if found is None:
                severity, shown = "warning", "missing"
            elif _check(rule, found):
                continue
            else:
                severity, shown = rule.severity, _show(found)
            records.append(
                {
                    "series_uid": cell(row, "series_uid"),
                    "site": cell(row, "site") or "unknown",
                    "modality": modality,
                    "weighting": weighting,
                    "folder": cell(row, "folder"),
                    "column": rule.column,
                    "rule": rule.kind,
                    "expected": rule.expected(),
                    "found": shown,
                    "severity": severity,
                }
            )
    deviations = pd.DataFrame(records, columns=list(DEVIATION_COLUMNS))
    logger.info("audit: %d deviations in %d series", len(deviations),
                deviations["series_uid"].nunique())
    return deviations


def summarize_audit(deviations: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Count deviations per site.

    Parameters
    ----------
    deviations : pandas.DataFrame
        The output of :func:`audit_protocols`.
    table : pandas.DataFrame, optional
        The audited protocol table; when given, ``n_series`` counts every series of each site
        and sites without deviations appear with zeros.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site``, ``n_series`` (when ``table`` is given),
        ``n_series_with_deviations``, ``n_deviations``, ``n_errors``, ``n_warnings`` and
        ``columns`` (the deviating columns, most frequent first, "; "-separated); sorted by
        errors, then warnings, descending.
    """
    out_columns = ["site", "n_series_with_deviations", "n_deviations", "n_errors", "n_warnings",
                   "columns"]
    rows: dict[str, dict[str, Any]] = {}
    if table is not None:
        sites = table["site"] if "site" in table.columns else pd.Series(["unknown"] * len(table))
        for site, count in sites.fillna("unknown").astype(str).value_counts().items():
            rows[str(site)] = {"site": str(site), "n_series": int(count)}
        out_columns.insert(1, "n_series")
    for site, group in deviations.groupby(deviations["site"].fillna("unknown").astype(str)):
        counts = group["column"].value_counts()
        entry = rows.setdefault(str(site), {"site": str(site)})
        if table is not None:
            entry.setdefault("n_series", 0)
        entry.update(
            {
                "n_series_with_deviations": int(group["series_uid"].nunique()),
                "n_deviations": len(group),
                "n_errors": int((group["severity"] == "error").sum()),
                "n_warnings": int((group["severity"] == "warning").sum()),
                "columns": "; ".join(counts.index.astype(str)),
            }
        )
    for entry in rows.values():
        for key in ("n_series_with_deviations", "n_deviations", "n_errors", "n_warnings"):
            entry.setdefault(key, 0)
        entry.setdefault("columns", "")
    summary = pd.DataFrame(list(rows.values()), columns=out_columns)
    if summary.empty:
        return summary
    return summary.sort_values(
        ["n_errors", "n_warnings", "site"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
