"""Acquisition physics: CT Hounsfield units, PET SUV, MR weighting, protocol tables and audits.

Names are imported lazily, on first use.
"""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "CT_SOP_CLASS_UIDS": ".ct",
        "DEFAULT_MAX_DEPTH": ".protocol",
        "DEFAULT_MAX_PIXELS": ".protocol",
        "DEVIATION_COLUMNS": ".protocol",
        "ERROR_COLUMNS": ".protocol",
        "ERROR_REASONS": ".protocol",
        "HounsfieldError": ".ct",
        "MRParameters": ".mr",
        "NotHarmonizableError": ".compatibility",
        "PROTOCOL_COLUMNS": ".protocol",
        "ProtocolReferenceError": ".protocol",
        "ReferenceTime": ".pet",
        "SUVError": ".pet",
        "SUVParameters": ".pet",
        "Verdict": ".compatibility",
        "WEIGHTINGS": ".mr",
        "Weighting": ".mr",
        "audit_protocols": ".protocol",
        "activity_factors": ".pet",
        "body_surface_area": ".pet",
        "check_ct_instance": ".ct",
        "check_ct_rescale": ".ct",
        "decay_factor": ".pet",
        "harmonizable": ".compatibility",
        "hounsfield": ".ct",
        "ideal_body_weight": ".pet",
        "injection_datetime": ".pet",
        "kernel_group": ".protocol",
        "lean_body_mass": ".pet",
        "load_reference": ".protocol",
        "mr_parameters": ".mr",
        "mr_weighting": ".mr",
        "padding_mask": ".ct",
        "padding_range": ".ct",
        "pet_parameters": ".pet",
        "reference_time": ".pet",
        "require_harmonizable": ".compatibility",
        "scan_errors": ".protocol",
        "scan_protocols": ".protocol",
        "summarize_audit": ".protocol",
        "suv_factors": ".pet",
        "tag_label": ".ct",
    },
)
