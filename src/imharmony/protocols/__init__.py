"""Protocol tables of DICOM collections, reference protocols and audits.

* :mod:`.scan` — :func:`scan_protocols`: one row per series from headers only, read through the
  one DICOM header reader (the same acceptance as ``convert``);
* :mod:`.reference` — :func:`load_reference`, :func:`audit_protocols`, :func:`summarize_audit`;
* :mod:`.kernels` — :func:`kernel_group`.

Names are imported lazily, on first use. They stay importable from
:mod:`imharmony.physics.protocol` too.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DEFAULT_MAX_DEPTH": ".scan",
        "DEFAULT_MAX_PIXELS": ".scan",
        "DEVIATION_COLUMNS": ".reference",
        "ERROR_COLUMNS": ".scan",
        "ERROR_REASONS": ".scan",
        "PROTOCOL_COLUMNS": ".scan",
        "ProtocolReferenceError": ".reference",
        "audit_protocols": ".reference",
        "kernel_group": ".kernels",
        "load_reference": ".reference",
        "scan_errors": ".scan",
        "scan_protocols": ".scan",
        "summarize_audit": ".reference",
    },
)
