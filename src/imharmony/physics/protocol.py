"""Protocol tables and audits: moved to :mod:`imharmony.protocols`; the names stay importable here.
"""

from __future__ import annotations

from ..protocols.kernels import kernel_group
from ..protocols.reference import (
    DEVIATION_COLUMNS,
    ProtocolReferenceError,
    audit_protocols,
    load_reference,
    summarize_audit,
)
from ..protocols.scan import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_PIXELS,
    ERROR_COLUMNS,
    ERROR_REASONS,
    PROTOCOL_COLUMNS,
    scan_errors,
    scan_protocols,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PIXELS",
    "DEVIATION_COLUMNS",
    "ERROR_COLUMNS",
    "ERROR_REASONS",
    "PROTOCOL_COLUMNS",
    "ProtocolReferenceError",
    "audit_protocols",
    "kernel_group",
    "load_reference",
    "scan_errors",
    "scan_protocols",
    "summarize_audit",
]
