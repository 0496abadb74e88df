"""MR acquisition parameters, image weighting, and MR value scaling.

MR intensities have no physical unit: what a voxel value means depends on how it was acquired.
Statistical harmonization can remove a scanner's gain and offset, but it cannot turn a T1-weighted
image into a T2-weighted one, nor a phase image into a magnitude image. This module reads the
acquisition parameters from classic and enhanced MR headers and names the weighting they produce;
:mod:`imharmony.physics.compatibility` says from them which acquisitions are safe to harmonize
together (its names stay importable from here).

Three kinds of ``meta`` are accepted everywhere:

* a :class:`pydicom.dataset.Dataset` (classic MR Image or Enhanced MR Image; only the header is
  used, so a dataset read with ``stop_before_pixels=True`` is enough);
* a mapping keyed by DICOM keywords (``RepetitionTime``, ``EchoTime``, ``InversionTime``,
  ``FlipAngle``, ``ScanningSequence``, ``SequenceVariant``, ``ImageType``,
  ``ContrastBolusAgent``, ``MagneticFieldStrength``, ...);
* a row of the protocol table made by :func:`imharmony.physics.protocol.scan_protocols`
  (a :class:`pandas.Series`, or a mapping, with the table's column names such as
  ``repetition_time_ms`` or ``image_type``).

Times are in milliseconds, angles in degrees, field strength in tesla.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .._dicom.tags import as_float, as_text, functional_item, plain_value
from ..errors import HarmonizationError

__all__ = [
    "PHILIPS_SCALE_SLOPE",
    "WEIGHTINGS",
    "MRParameters",
    "MRScalingError",
    "Weighting",
    "mr_parameters",
    "mr_value_scale",
    "mr_weighting",
]

logger = logging.getLogger(__name__)

#: The weightings :func:`mr_weighting` can name.
WEIGHTINGS: tuple[str, ...] = ("T1w", "T2w", "PDw", "FLAIR", "STIR", "DWI", "BOLD", "unknown")

#: Gyromagnetic ratio of 1H over 2π, MHz per tesla (CODATA 2018).
GAMMA_1H_MHZ_PER_T = 42.577478518

#: Relative difference above which two acquisition parameters draw a warning.
PARAMETER_TOLERANCE = 0.20

# --- thresholds of the rules of thumb (ms); see mr_weighting's Notes ------------------------
_T1_MAX_TR = 800.0
_T1_MAX_TE = 30.0
_LONG_TR = 1500.0
_T2_MIN_TE = 80.0
_PD_MAX_TE = 40.0
_FLAIR_MIN_TI = 1200.0
_FLAIR_MIN_TE = 60.0
_STIR_MAX_TI = 300.0
_BOLD_TE = (15.0, 60.0)
_BOLD_MAX_TR = 4000.0

# Acquisition Contrast (0008,9209) defined terms -> weighting.
_ACQUISITION_CONTRAST = {
    "T1": "T1w",
    "T2": "T2w",
    "PROTON_DENSITY": "PDw",
    "FLUID_ATTENUATED": "FLAIR",
    "STIR": "STIR",
    "DIFFUSION": "DWI",
}
# Acquisition Contrast terms that say something, but nothing imharmony harmonizes by weighting.
_ACQUISITION_CONTRAST_OTHER = {
    "T2_STAR": "T2*-weighted",
    "FLOW_ENCODED": "flow-encoded (velocity)",
    "PERFUSION": "perfusion",
    "TOF": "time-of-flight angiography",
    "TAGGING": "tagging",
    "MIXED": "mixed contrast",
    "UNKNOWN": "stated unknown",
}

# Image Type values that mark a quantitative (parametric) map rather than a weighted image.
_MAP_TOKENS = frozenset(
    {
        "ADC", "EADC", "FA", "MD", "T1MAP", "T2MAP", "T2STARMAP", "R1MAP", "R2MAP", "R2STARMAP",
        "T1_MAP", "T2_MAP", "T2_STAR_MAP", "T2STAR_MAP", "R1_MAP", "R2_MAP", "R2_STAR_MAP",
        "PDMAP", "PD_MAP", "B0MAP", "B1MAP", "B0_MAP", "B1_MAP", "QSM", "CBF", "CBV", "MTT", "TTP",
        "KTRANS", "FF", "PDFF", "FAT_FRACTION", "MYELIN_MAP", "RELAXOMETRY", "QUANTITATIVE",
        "T1 MAP", "T2 MAP", "T2* MAP", "ADC MAP", "VELOCITY",
    }
)
# Enhanced MR Derived Pixel Contrast (Image Type value 4) terms that mean a map.
_ENHANCED_MAP_TOKENS = frozenset(
    {"ADC", "FA", "T1", "T2", "T2_STAR", "PROTON_DENSITY", "VELOCITY", "PERFUSION",
     "DIFFUSION_ANISO"}
)
_REFORMAT_TOKENS = frozenset(
    {"MPR", "MIP", "MINIP", "MNIP", "PROJECTION IMAGE", "PROJECTION", "REFORMATTED", "CPR",
     "CURVED", "MAXIMUM", "MINIMUM", "VOLUME_RENDER", "VR", "3D_RENDER", "SUBTRACTION"}
)
_LOCALIZER_TOKENS = frozenset({"LOCALIZER", "SCOUT", "SURVEY", "LOCALISER"})
# Words (separated by anything but a letter or digit, so "AAHead_Scout_64ch" counts).
_LOCALIZER_DESCRIPTION = re.compile(
    r"(?<![a-z0-9])(localizer|localiser|scout|survey|3[- _]?plane[ _-]?loc|tri[- _]?pilot|loc)"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
_PHASE_TOKENS = frozenset({"P", "PHASE", "PHA", "PHASE MAP", "PHASE_CONTRAST"})
_NO_AGENT = frozenset(
    {"", "NONE", "NO", "N", "N/A", "NA", "-", "0", "FALSE", "NOT USED", "NO CONTRAST", "NIL"}
)
_SIEMENS_DWI_NAME = re.compile(r"ep_b\d+", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MRParameters:
    """The acquisition parameters of one MR image (or series), normalised.

    Attributes
    ----------
    repetition_time_ms, echo_time_ms, inversion_time_ms, flip_angle_deg : float or None
        TR (0018,0080), TE (0018,0081) or Effective Echo Time (0018,9082), TI (0018,0082) or
        the first Inversion Times (0018,9079) value, and flip angle (0018,1314).
    field_strength_t : float or None
        Magnetic Field Strength (0018,0087) in tesla; values above 100 are read as gauss and
        divided by 10 000; when absent it is estimated from Imaging Frequency (0018,0084) for 1H.
    imaging_frequency_mhz : float or None
    scanning_sequence, sequence_variant, scan_options, image_type : tuple of str
        Multi-valued code strings, upper case. For enhanced images the scanning sequence is
        synthesised from Echo Pulse Sequence (SE/GR), Inversion Recovery (IR) and Echo Planar
        Pulse Sequence (EP).
    mr_acquisition_type : str or None
        "2D" or "3D".
    pixel_bandwidth_hz : float or None
    contrast_agent : str or None
        Contrast/Bolus Agent (0018,0010), or the agents of Contrast/Bolus Agent Sequence.
    contrast_administered : bool or None
        From Contrast/Bolus Agent Administered (0018,9342) when the header says it.
    acquisition_contrast, complex_component : str or None
        Acquisition Contrast (0008,9209) and Complex Image Component (0008,9208).
    b_value : float or None
        Diffusion b-value (0018,9087), s/mm².
    sequence_name, series_description, modality : str or None
    enhanced : bool
        True when read from an enhanced (multi-frame) header.
    """

    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    inversion_time_ms: float | None = None
    flip_angle_deg: float | None = None
    field_strength_t: float | None = None
    imaging_frequency_mhz: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    mr_acquisition_type: str | None = None
    pixel_bandwidth_hz: float | None = None
    contrast_agent: str | None = None
    contrast_administered: bool | None = None
    image_type: tuple[str, ...] = ()
    acquisition_contrast: str | None = None
    complex_component: str | None = None
    b_value: float | None = None
    sequence_name: str | None = None
    series_description: str | None = None
    modality: str | None = None
    enhanced: bool = False

    @property
    def contrast_enhanced(self) -> bool:
        """True when the header says a contrast agent was given."""
        if self.contrast_administered is not None:
            return self.contrast_administered
        if self.contrast_agent is None:
            return False
        return self.contrast_agent.strip().upper() not in _NO_AGENT


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return len(value) == 0
    try:  # float NaN, numpy NaN, pandas.NA / NaT
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return bool(result) if getattr(result, "ndim", 0) == 0 else False


def _as_float(value: Any) -> float | None:
    """A finite float, or None for missing / unparsable values (first value of a multi-value)."""
    return None if _is_missing(value) else as_float(value)


def _as_tokens(value: Any) -> tuple[str, ...]:
    """Upper-case tokens of a (possibly multi-valued) code string."""
    if _is_missing(value):
        return ()
    if isinstance(value, str):
        parts: Iterable[Any] = value.split("\\")
    elif isinstance(value, Iterable):
        parts = value
    else:
        parts = [value]
    return tuple(str(p).strip().upper() for p in parts if str(p).strip())


def _as_text(value: Any) -> str | None:
    return None if _is_missing(value) else as_text(value)


def _as_bool(value: Any) -> bool | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    if text in {"YES", "Y", "TRUE", "1", "1.0"}:
        return True
    if text in {"NO", "N", "FALSE", "0", "0.0"}:
        return False
    return None


def field_strength_tesla(value: Any) -> float | None:
    """Magnetic Field Strength (0018,0087) in tesla; values above 100 are taken as gauss.

    Examples
    --------
    >>> field_strength_tesla("1.5"), field_strength_tesla(15000)
    (1.5, 1.5)
    """
    strength = _as_float(value)
    if strength is None or strength <= 0:
        return None
    if strength > 100:
        logger.debug("Magnetic Field Strength %s read as gauss", strength)
        return strength / 10_000.0
    return strength


def _field_from_frequency(freq_mhz: float | None, nucleus: str | None) -> float | None:
    if freq_mhz is None or freq_mhz <= 0:
        return None
    if nucleus is not None and nucleus.upper().replace(" ", "") not in {"H", "1H", "H1"}:
        return None
    return round(freq_mhz / GAMMA_1H_MHZ_PER_T, 2)


_functional_item = functional_item


def _from_dataset(ds: Any) -> MRParameters:
    enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds

    def get(keyword: str) -> Any:
        return plain_value(ds, keyword)

    timing = _functional_item(ds, "MRTimingAndRelatedParametersSequence")
    echo = _functional_item(ds, "MREchoSequence")
    modifier = _functional_item(ds, "MRModifierSequence")
    imaging_mod = _functional_item(ds, "MRImagingModifierSequence")
    frame_type = _functional_item(ds, "MRImageFrameTypeSequence")
    diffusion = _functional_item(ds, "MRDiffusionSequence")
    contrast_usage = _functional_item(ds, "ContrastBolusUsageSequence")

    tr = _as_float(get("RepetitionTime"))
    flip = _as_float(get("FlipAngle"))
    if timing is not None:
        tr = tr if tr is not None else _as_float(plain_value(timing, "RepetitionTime"))
        flip = flip if flip is not None else _as_float(plain_value(timing, "FlipAngle"))
    te = _as_float(get("EchoTime"))
    if te is None and echo is not None:
        te = _as_float(plain_value(echo, "EffectiveEchoTime"))
    if te is None:
        te = _as_float(get("EffectiveEchoTime"))
    ti = _as_float(get("InversionTime"))
    inversion_recovery = None
    if modifier is not None:
        inversion_recovery = _as_bool(plain_value(modifier, "InversionRecovery"))
        if ti is None:
            ti = _as_float(plain_value(modifier, "InversionTimes"))
    if inversion_recovery is None:
        inversion_recovery = _as_bool(get("InversionRecovery"))
    if ti is None:
        ti = _as_float(get("InversionTimes"))

    scanning = _as_tokens(get("ScanningSequence"))
    if not scanning and enhanced:
        synth: list[str] = []
        pulse = (_as_text(get("EchoPulseSequence")) or "").upper()
        if pulse in {"SPIN", "BOTH"}:
            synth.append("SE")
        if pulse in {"GRADIENT", "BOTH"}:
            synth.append("GR")
        if inversion_recovery:
            synth.append("IR")
        if _as_bool(get("EchoPlanarPulseSequence")):
            synth.append("EP")
        scanning = tuple(synth)
    elif inversion_recovery and "IR" not in scanning:
        scanning = (*scanning, "IR")

    bandwidth = _as_float(get("PixelBandwidth"))
    if bandwidth is None and imaging_mod is not None:
        bandwidth = _as_float(plain_value(imaging_mod, "PixelBandwidth"))

    acquisition_contrast = _as_text(get("AcquisitionContrast"))
    complex_component = _as_text(get("ComplexImageComponent"))
    image_type = _as_tokens(get("ImageType"))
    if frame_type is not None:
        acquisition_contrast = acquisition_contrast or _as_text(
            plain_value(frame_type, "AcquisitionContrast")
        )
        complex_component = complex_component or _as_text(
            plain_value(frame_type, "ComplexImageComponent")
        )
        if not image_type:
            image_type = _as_tokens(plain_value(frame_type, "FrameType"))

    b_value = _as_float(get("DiffusionBValue"))
    if b_value is None and diffusion is not None:
        b_value = _as_float(plain_value(diffusion, "DiffusionBValue"))

    agent = _as_text(get("ContrastBolusAgent"))
    agent_seq = get("ContrastBolusAgentSequence")
    if agent is None and agent_seq:
        names = [
            _as_text(plain_value(item, "CodeMeaning")) or _as_text(plain_value(item, "CodeValue"))
            for item in agent_seq
        ]
        agent = "\\".join(n for n in names if n) or "contrast agent"
    administered = None
    if contrast_usage is not None:
        administered = _as_bool(plain_value(contrast_usage, "ContrastBolusAgentAdministered"))
    elif agent_seq and enhanced:
        administered = True

    freq = _as_float(get("ImagingFrequency"))
    field_t = field_strength_tesla(get("MagneticFieldStrength"))
    if field_t is None:
        nucleus = _as_text(get("ImagedNucleus")) or _as_text(get("ResonantNucleus"))
        field_t = _field_from_frequency(freq, nucleus)

    return MRParameters(
        repetition_time_ms=tr,
        echo_time_ms=te,
        inversion_time_ms=ti,
        flip_angle_deg=flip,
        field_strength_t=field_t,
        imaging_frequency_mhz=freq,
        scanning_sequence=scanning,
        sequence_variant=_as_tokens(get("SequenceVariant")),
        scan_options=_as_tokens(get("ScanOptions")),
        mr_acquisition_type=_as_text(get("MRAcquisitionType")),
        pixel_bandwidth_hz=bandwidth,
        contrast_agent=agent,
        contrast_administered=administered,
        image_type=image_type,
        acquisition_contrast=acquisition_contrast.upper() if acquisition_contrast else None,
        complex_component=complex_component.upper() if complex_component else None,
        b_value=b_value,
        sequence_name=_as_text(get("SequenceName")) or _as_text(get("PulseSequenceName")),
        series_description=_as_text(get("SeriesDescription")),
        modality=_as_text(get("Modality")),
        enhanced=enhanced,
    )


# Protocol-table column, then DICOM keyword(s), for each MRParameters field read from a mapping.
_MAPPING_KEYS: dict[str, tuple[str, ...]] = {
    "repetition_time_ms": ("repetition_time_ms", "RepetitionTime"),
    "echo_time_ms": ("echo_time_ms", "EchoTime", "EffectiveEchoTime"),
    "inversion_time_ms": ("inversion_time_ms", "InversionTime", "InversionTimes"),
    "flip_angle_deg": ("flip_angle_deg", "FlipAngle"),
    "imaging_frequency_mhz": ("imaging_frequency_mhz", "ImagingFrequency"),
    "scanning_sequence": ("scanning_sequence", "ScanningSequence"),
    "sequence_variant": ("sequence_variant", "SequenceVariant"),
    "scan_options": ("scan_options", "ScanOptions"),
    "mr_acquisition_type": ("mr_acquisition_type", "MRAcquisitionType"),
    "pixel_bandwidth_hz": ("pixel_bandwidth_hz", "PixelBandwidth"),
    "contrast_agent": ("contrast_agent", "ContrastBolusAgent"),
    "contrast_administered": ("contrast_enhanced", "ContrastBolusAgentAdministered"),
    "image_type": ("image_type", "ImageType"),
    "acquisition_contrast": ("acquisition_contrast", "AcquisitionContrast"),
    "complex_component": ("complex_component", "ComplexImageComponent"),
    "b_value": ("b_value", "DiffusionBValue"),
    "sequence_name": ("sequence_name", "SequenceName"),
    "series_description": ("series_description", "SeriesDescription"),
    "modality": ("modality", "Modality"),
}
_FLOAT_FIELDS = {
    "repetition_time_ms", "echo_time_ms", "inversion_time_ms", "flip_angle_deg",
    "imaging_frequency_mhz", "pixel_bandwidth_hz", "b_value",
}
_TOKEN_FIELDS = {"scanning_sequence", "sequence_variant", "scan_options", "image_type"}


def _from_mapping(meta: Any) -> MRParameters:
    def first(keys: tuple[str, ...]) -> Any:
        for key in keys:
            try:
                value = meta.get(key)
            except (TypeError, ValueError):
                value = None
            if not _is_missing(value):
                return value
        return None

    values: dict[str, Any] = {}
    for name, keys in _MAPPING_KEYS.items():
        raw = first(keys)
        if name in _FLOAT_FIELDS:
            values[name] = _as_float(raw)
        elif name in _TOKEN_FIELDS:
            values[name] = _as_tokens(raw)
        elif name == "contrast_administered":
            values[name] = _as_bool(raw)
        else:
            text = _as_text(raw)
            if text is not None and name in {"acquisition_contrast", "complex_component"}:
                text = text.upper()
            values[name] = text
    field_t = field_strength_tesla(first(("field_strength_t", "MagneticFieldStrength")))
    if field_t is None:
        nucleus = _as_text(first(("ImagedNucleus", "ResonantNucleus")))
        field_t = _field_from_frequency(values["imaging_frequency_mhz"], nucleus)
    if first(("InversionRecovery",)) is not None and _as_bool(first(("InversionRecovery",))):
        if "IR" not in values["scanning_sequence"]:
            values["scanning_sequence"] = (*values["scanning_sequence"], "IR")
    return MRParameters(field_strength_t=field_t, **values)


def mr_parameters(meta: Any) -> MRParameters:
    """Read the MR acquisition parameters from a header, a keyword mapping or a protocol row.

    Parameters
    ----------
    meta : pydicom.dataset.Dataset, Mapping or pandas.Series
        See the module documentation. Enhanced MR headers are read through their functional
        groups: MR Timing and Related Parameters (0018,9112) for TR and flip angle, MR Echo
        (0018,9114) for the Effective Echo Time, MR Modifier (0018,9115) for inversion
        recovery and Inversion Times, MR Image Frame Type (0018,9226) for Acquisition Contrast and
        Complex Image Component. The first frame's groups win over the shared ones.

    Returns
    -------
    MRParameters

    Raises
    ------
    HarmonizationError
        If ``meta`` is none of the accepted kinds.
    """
    if isinstance(meta, MRParameters):
        return meta
    from pydicom.dataset import Dataset

    if isinstance(meta, Dataset):
        return _from_dataset(meta)
    if isinstance(meta, Mapping) or hasattr(meta, "get"):
        return _from_mapping(meta)
    raise HarmonizationError(
        f"cannot read MR parameters from a {type(meta).__name__}; pass a pydicom Dataset, a dict "
        "keyed by DICOM keywords (RepetitionTime, EchoTime, ...) or a row of the protocol table."
    )


# ----------------------------------------------------------------------------------------------
# Weighting
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weighting:
    """The weighting of an MR image and the flags that decide whether it can be harmonized.

    Attributes
    ----------
    weighting : str
        One of :data:`WEIGHTINGS`: "T1w", "T2w", "PDw", "FLAIR", "STIR", "DWI", "BOLD" or
        "unknown".
    quantitative_map : bool
        A parametric map (ADC, FA, T1/T2 map, ...) in physical units, not a weighted image.
    phase : bool
        A phase (or real / imaginary) image rather than a magnitude image.
    derived : bool
        Image Type (0008,0008) value 1 is DERIVED. Derived images keep their weighting unless
        they are reformats or projections (see ``reformatted``).
    localizer : bool
        A localizer / scout / survey.
    contrast_enhanced : bool
        Acquired after a contrast agent was given.
    reformatted : bool
        A reformat or projection (MPR, MIP, MinIP, subtraction, rendering): not a direct
        acquisition, so no weighting is named.
    reason : str
        Why this weighting was decided, naming the values used.
    """

    weighting: str
    quantitative_map: bool = False
    phase: bool = False
    derived: bool = False
    localizer: bool = False
    contrast_enhanced: bool = False
    reformatted: bool = False
    reason: str = ""

    @property
    def excluded(self) -> bool:
        """True when the image is excluded before any weighting rule (phase, map, localizer...)."""
        return self.quantitative_map or self.phase or self.localizer or self.reformatted


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:g}"


def _is_map(params: MRParameters) -> str | None:
    tokens = set(params.image_type)
    hit = sorted(tokens & _MAP_TOKENS)
    if hit:
        return f"Image Type {'/'.join(params.image_type)} names a map ({hit[0]})"
    for token in params.image_type:
        if "MAP" in token.replace("MAPPING", ""):
            return f"Image Type value {token!r} names a map"
    if params.enhanced and len(params.image_type) >= 4:
        derived_contrast = params.image_type[3]
        if params.image_type[0] == "DERIVED" and derived_contrast in _ENHANCED_MAP_TOKENS:
            return f"enhanced Image Type Derived Pixel Contrast is {derived_contrast}"
    return None


def _is_localizer(params: MRParameters) -> str | None:
    hit = sorted(set(params.image_type) & _LOCALIZER_TOKENS)
    if hit:
        return f"Image Type contains {hit[0]}"
    if params.series_description and _LOCALIZER_DESCRIPTION.search(params.series_description):
        return f"Series Description {params.series_description!r} names a localizer"
    return None


def _is_phase(params: MRParameters) -> str | None:
    if params.complex_component in {"PHASE", "REAL", "IMAGINARY"}:
        return f"Complex Image Component is {params.complex_component}"
    hit = sorted(set(params.image_type) & _PHASE_TOKENS)
    if hit:
        return f"Image Type contains {hit[0]} (phase)"
    return None


def _is_reformat(params: MRParameters) -> str | None:
    hit = sorted(set(params.image_type) & _REFORMAT_TOKENS)
    if hit:
        return f"Image Type contains {hit[0]} (reformat or projection)"
    return None


def _is_diffusion(params: MRParameters) -> str | None:
    tokens = set(params.image_type)
    if params.acquisition_contrast == "DIFFUSION":
        return "Acquisition Contrast is DIFFUSION"
    if params.b_value is not None and params.b_value > 0:
        return f"diffusion b-value {params.b_value:g} s/mm²"
    for token in ("DIFFUSION", "TRACEW", "TRACE", "DWI"):
        if token in tokens:
            return f"Image Type contains {token}"
    if params.sequence_name and _SIEMENS_DWI_NAME.search(params.sequence_name):
        return f"Sequence Name {params.sequence_name!r} is a diffusion EPI"
    return None


def _weighting_from_physics(params: MRParameters) -> tuple[str, str]:
    """Apply the rules of thumb; returns (weighting, reason)."""
    tr, te, ti = params.repetition_time_ms, params.echo_time_ms, params.inversion_time_ms
    seq = set(params.scanning_sequence)
    values = f"TR {_fmt(tr)} ms, TE {_fmt(te)} ms"

    diffusion = _is_diffusion(params)
    if diffusion:
        return "DWI", diffusion
    tokens = set(params.image_type)
    if tokens & {"FMRI", "BOLD"}:
        return "BOLD", f"Image Type contains {sorted(tokens & {'FMRI', 'BOLD'})[0]}"

    inversion = "IR" in seq or (ti is not None and ti > 0)
    gradient_echo = "GR" in seq and "SE" not in seq
    if inversion:
        label = f"inversion recovery, {values}, TI {_fmt(ti)} ms"
        if gradient_echo:
            return "T1w", f"{label}: inversion-prepared gradient echo (MPRAGE-like) is T1w"
        if ti is None:
            return "unknown", f"{label}: inversion recovery without an inversion time"
        if ti >= _FLAIR_MIN_TI and te is not None and te >= _FLAIR_MIN_TE:
            return "FLAIR", f"{label}: TI ≥ {_FLAIR_MIN_TI:g} with long TE (≥ {_FLAIR_MIN_TE:g})"
        if ti <= _STIR_MAX_TI:
            return "STIR", f"{label}: TI ≤ {_STIR_MAX_TI:g}"
        if te is not None and te <= _T1_MAX_TE and ti < _FLAIR_MIN_TI:
            return "T1w", f"{label}: intermediate TI with short TE (≤ {_T1_MAX_TE:g}) is T1w"
        return "unknown", f"{label}: outside the inversion-recovery rules of thumb"

    if tr is None or te is None:
        return "unknown", f"{values}: TR and TE are both needed"

    if "EP" in seq and "SE" not in seq and _BOLD_TE[0] <= te <= _BOLD_TE[1] and tr <= _BOLD_MAX_TR:
        return "BOLD", f"gradient-echo EPI, {values}: T2*-sensitive TE, short TR"
    if tr <= _T1_MAX_TR and te <= _T1_MAX_TE:
        return "T1w", f"{values}: short TR (≤ {_T1_MAX_TR:g}) and short TE (≤ {_T1_MAX_TE:g})"
    if gradient_echo and te > _T1_MAX_TE:
        return "unknown", f"gradient echo, {values}: T2*-weighted, not a harmonized weighting"
    if tr >= _LONG_TR and te >= _T2_MIN_TE:
        return "T2w", f"{values}: long TR (≥ {_LONG_TR:g}) and long TE (≥ {_T2_MIN_TE:g})"
    if tr >= _LONG_TR and te <= _PD_MAX_TE:
        return "PDw", f"{values}: long TR (≥ {_LONG_TR:g}) and short TE (≤ {_PD_MAX_TE:g})"
    return "unknown", f"{values}: between the rules of thumb"


def mr_weighting(meta: Any) -> Weighting:
    """Name the weighting of an MR image from its acquisition parameters.

    Parameters
    ----------
    meta : pydicom.dataset.Dataset, Mapping, pandas.Series or MRParameters
        A header, a mapping keyed by DICOM keywords, or a protocol-table row.

    Returns
    -------
    Weighting
        ``.weighting`` and the flags; ``.reason`` names the rule and the values it used.

    Notes
    -----
    The decision is made in this order; the first rule that applies wins.

    1. Exclusions (weighting "unknown", flag set): a modality other than MR; a localizer (Image
       Type LOCALIZER/SCOUT/SURVEY or a Series Description naming one); a phase, real or
       imaginary image (Complex Image Component (0008,9208), or Image Type P/PHASE); a
       quantitative map (Image Type ADC, FA, T1MAP, ...; enhanced Derived Pixel Contrast); a
       reformat or projection (Image Type MPR, MIP, ...).
    2. Acquisition Contrast (0008,9209), when present, states the weighting: T1 → T1w,
       T2 → T2w, PROTON_DENSITY → PDw, FLUID_ATTENUATED → FLAIR, STIR → STIR,
       DIFFUSION → DWI; other terms (T2_STAR, FLOW_ENCODED, ...) give "unknown".
    3. Diffusion (b-value > 0, Image Type DIFFUSION/TRACEW, Siemens ``ep_b`` sequence) → DWI;
       Image Type FMRI/BOLD → BOLD.
    4. Inversion recovery (Scanning Sequence IR or TI > 0): inversion-prepared gradient echo →
       T1w; TI ≥ 1200 ms with TE ≥ 60 ms → FLAIR; TI ≤ 300 ms → STIR; 300 < TI < 1200 with
       TE ≤ 30 → T1w.
    5. Gradient-echo EPI with 15 ≤ TE ≤ 60 ms and TR ≤ 4000 ms → BOLD.
    6. Spin-echo rules of thumb: TR ≤ 800 and TE ≤ 30 → T1w; gradient echo with TE > 30 is
       T2*-weighted ("unknown"); TR ≥ 1500 and TE ≥ 80 → T2w; TR ≥ 1500 and TE ≤ 40 → PDw;
       anything in between is "unknown".

    Contrast enhancement is read from Contrast/Bolus Agent (0018,0010) (empty or "NONE" means
    none) and, in enhanced headers, Contrast/Bolus Agent Administered (0018,9342).

    Examples
    --------
    >>> mr_weighting({"RepetitionTime": 4000, "EchoTime": 100}).weighting
    'T2w'
    """
    params = mr_parameters(meta)
    image_type = params.image_type
    derived = bool(image_type) and image_type[0] == "DERIVED"
    flags = {
        "derived": derived,
        "contrast_enhanced": params.contrast_enhanced,
    }
    if params.modality is not None and params.modality.upper() != "MR":
        return Weighting("unknown", reason=f"modality is {params.modality}, not MR", **flags)

    exclusions: list[str] = []
    localizer = _is_localizer(params)
    phase = _is_phase(params)
    qmap = _is_map(params)
    reformat = _is_reformat(params)
    for text in (localizer, phase, qmap, reformat):
        if text:
            exclusions.append(text)
    if exclusions:
        kinds = [
            name
            for name, hit in (
                ("localizer", localizer),
                ("phase image", phase),
                ("quantitative map", qmap),
                ("reformat/projection", reformat),
            )
            if hit
        ]
        return Weighting(
            "unknown",
            quantitative_map=qmap is not None,
            phase=phase is not None,
            localizer=localizer is not None,
            reformatted=reformat is not None,
            reason=f"excluded as {' and '.join(kinds)}: {'; '.join(exclusions)}",
            **flags,
        )

    suffix = " (derived, not a reformat: weighting kept)" if derived else ""
    contrast = params.acquisition_contrast
    if contrast:
        if contrast in _ACQUISITION_CONTRAST:
            weighting = _ACQUISITION_CONTRAST[contrast]
            return Weighting(
                weighting, reason=f"Acquisition Contrast (0008,9209) is {contrast}{suffix}", **flags
            )
        if contrast in _ACQUISITION_CONTRAST_OTHER:
            if contrast == "T2_STAR":
                bold = set(image_type) & {"FMRI", "BOLD"} or "EP" in params.scanning_sequence
                if bold:
                    return Weighting(
                        "BOLD",
                        reason=f"Acquisition Contrast is T2_STAR with echo-planar readout{suffix}",
                        **flags,
                    )
            return Weighting(
                "unknown",
                reason=(
                    f"Acquisition Contrast (0008,9209) is {contrast} "
                    f"({_ACQUISITION_CONTRAST_OTHER[contrast]}), not a harmonized weighting"
                ),
                **flags,
            )
        logger.debug("unrecognised Acquisition Contrast %r; using the parameters", contrast)

    weighting, reason = _weighting_from_physics(params)
    return Weighting(weighting, reason=reason + suffix, **flags)


# ----------------------------------------------------------------------------------------------
# MR value scaling: displayed values and Philips floating-point values
# ----------------------------------------------------------------------------------------------

#: Private creator and element of Philips' Scale Slope (2005,xx0E), a float (FL).
PHILIPS_SCALE_SLOPE = (0x2005, "Philips MR Imaging DD 001", 0x0E)


class MRScalingError(HarmonizationError):
    """The values of an MR image cannot be scaled as asked (a needed tag is missing or wrong)."""


def mr_value_scale(
    units: str,
    slope: float | None,
    intercept: float | None,
    scale_slope: float | None = None,
    name: str = "dataset",
) -> tuple[float, float]:
    """Scale and offset turning stored MR values into the values of ``units``.

    Parameters
    ----------
    units : {"rescaled", "philips_fp"}
        ``"rescaled"``: the displayed value ``DV = RS × SV + RI`` of Rescale Slope (0028,1053)
        and Rescale Intercept (0028,1052) (the identity when both are absent, as DICOM says),
        what dcm2niix stores. ``"philips_fp"``: Philips' floating-point value
        ``FP = DV / (RS × SS)`` with SS the private Scale Slope (2005,xx0E), the value
        proportional to the signal across a Philips series (Chenevert et al. 2014).
    slope, intercept : float or None
        Rescale Slope and Rescale Intercept of the frame (None when absent).
    scale_slope : float or None
        Philips Scale Slope of the frame (``"philips_fp"`` only).
    name : str
        What to call the frame in messages.

    Returns
    -------
    (float, float)
        ``(a, b)`` with value ``= a × stored + b``.

    Raises
    ------
    MRScalingError
        A zero or missing slope where one is needed, or no Philips Scale Slope for
        ``"philips_fp"``.

    References
    ----------
    Chenevert TL et al. Errors in quantitative image analysis due to platform-dependent image
    scaling. Transl Oncol 2014;7(1):65-71.

    Examples
    --------
    >>> mr_value_scale("philips_fp", 2.0, 0.0, 0.5)  # FP = SV / SS
    (2.0, 0.0)
    >>> mr_value_scale("rescaled", 2.0, -3.0)
    (2.0, -3.0)
    """
    rs = 1.0 if slope is None else float(slope)
    ri = 0.0 if intercept is None else float(intercept)
    if slope is None and intercept is not None:
        raise MRScalingError(
            f"{name}: Rescale Intercept (0028,1052) without Rescale Slope (0028,1053); the "
            "rescale is incomplete."
        )
    if rs == 0:
        raise MRScalingError(f"{name}: Rescale Slope (0028,1053) is 0; the file is damaged.")
    if units == "rescaled":
        return rs, ri
    if units != "philips_fp":
        raise MRScalingError(f"units={units!r}: expected 'rescaled' or 'philips_fp'.")
    if scale_slope is None:
        raise MRScalingError(
            f"{name}: no Philips Scale Slope (2005,xx0E) of creator 'Philips MR Imaging DD 001'; "
            "floating-point values need it (units='philips_fp' is for Philips MR only). Use "
            "units='rescaled' for the displayed values."
        )
    ss = float(scale_slope)
    if not math.isfinite(ss) or ss == 0:
        raise MRScalingError(f"{name}: Philips Scale Slope (2005,xx0E) is {ss}; not usable.")
    return 1.0 / ss, ri / (rs * ss)


_MOVED = {"NotHarmonizableError", "Verdict", "harmonizable", "require_harmonizable"}


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`imharmony.physics.compatibility` stay importable from here."""
    if name in _MOVED:
        from . import compatibility

        return getattr(compatibility, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
