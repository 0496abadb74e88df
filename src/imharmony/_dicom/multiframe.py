"""Classic multi-frame images: where each frame lies, when the header says it.

A classic (not "enhanced") multi-frame object holds Number of Frames (0028,0008) images in one
file with one Image Position (Patient) and one Image Orientation (Patient), those of the first
frame. Frame Increment Pointer (0028,0009) names the attribute(s) whose values step from frame to
frame (DICOM PS3.3 C.7.6.6). The frames are slices of a volume, and can be placed, when that
attribute is

* Grid Frame Offset Vector (3004,000C) (RT Dose, PS3.3 C.8.8.3.2): one offset per frame along
  the normal of the image plane, relative to Image Position (Patient) when the first offset is
  0; otherwise the offsets are the z coordinates of the planes, which the standard allows only for
  axial planes (Image Orientation (Patient) 1\\0\\0\\0\\1\\0);
* Slice Vector (0054,0080) (NM reconstructed tomography, PS3.3 C.8.4.8): the 1-based slice of
  each frame, slice ``s`` lying ``(s − 1) ×`` Spacing Between Slices (0018,0088) along the normal;
  any other vector named with it (energy window, detector, rotation, phase, time slot ...) must
  hold one value for every frame, else the frames are not one volume;

or, with no Frame Increment Pointer, when Spacing Between Slices is given: frame ``k`` lies
``k ×`` that spacing along the normal (older multi-frame CT and MR objects).

The normal is the cross product of the row and column direction cosines. NM images keep Image
Position and Orientation in the first item of Detector Information Sequence (0054,0022) when not
at the top level. Anything else (frames that step in time, such as cine, dynamic or gated
acquisitions of one plane; a pointer to an attribute that is not there or has the wrong length)
cannot be placed in space from the header and is refused with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tags import dicom_value, float_list, numbers, tag_label

__all__ = ["classic_frame_geometry"]

#: Frame Increment Pointer targets that make the frames slices of a volume.
_POSITIONAL = ("GridFrameOffsetVector", "SliceVector")


def _pointer_keywords(ds: Any) -> list[str]:
    """Keywords (or ``(gggg,eeee)`` for unknown tags) named by Frame Increment Pointer."""
    from pydicom.datadict import keyword_for_tag

    value = dicom_value(ds, "FrameIncrementPointer")
    if value is None or value == "":
        return []
    tags = [value] if isinstance(value, int) else list(value)
    out = []
    for tag in tags:
        number = int(tag)
        out.append(keyword_for_tag(number) or f"({number >> 16:04X},{number & 0xFFFF:04X})")
    return out


def _plane(ds: Any, name: str, error: type[Exception]) -> tuple[np.ndarray, np.ndarray]:
    """Image Position and Orientation (Patient): top level, else NM's Detector Information."""
    holders = [ds]
    detectors = dicom_value(ds, "DetectorInformationSequence")
    if detectors:
        holders.append(detectors[0])
    found: dict[str, list[float]] = {}
    for keyword, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6)):
        for holder in holders:
            values = float_list(numbers(holder, keyword), n, keyword, name, error)
            if values is not None:
                found[keyword] = values
                break
        else:
            raise error(
                f"{name}: a multi-frame image without {tag_label(keyword)} (at the top level or "
                f"in {tag_label('DetectorInformationSequence')}); its frames cannot be placed in "
                "space."
            )
    return np.asarray(found["ImagePositionPatient"]), np.asarray(found["ImageOrientationPatient"])


def _vector(ds: Any, keyword: str, n_frames: int, name: str, error: type[Exception]) -> np.ndarray:
    value = numbers(ds, keyword)
    if value is None or value == "":
        raise error(
            f"{name}: {tag_label('FrameIncrementPointer')} names {tag_label(keyword)}, which is "
            "missing; the frames cannot be placed in space."
        )
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.split("\\")
    items = list(value) if hasattr(value, "__len__") else [value]
    values = np.asarray(float_list(items, len(items), keyword, name, error), dtype=float)
    if len(values) != n_frames:
        raise error(
            f"{name}: {tag_label(keyword)} has {len(values)} values for {n_frames} frames "
            f"({tag_label('NumberOfFrames')}); the file is damaged."
        )
    return values


def classic_frame_geometry(
    ds: Any, n_frames: int, name: str, error: type[Exception]
) -> tuple[np.ndarray, list[float]]:
    """Image Position (Patient) of every frame, shape (n_frames, 3), and the orientation (6).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A classic multi-frame image (no functional groups).
    n_frames : int
        Its Number of Frames.
    name : str
        The file's name, for messages.
    error : type
        The exception raised when the frames cannot be placed (the message says why).

    Returns
    -------
    positions : numpy.ndarray, shape (n_frames, 3)
    orientation : list of float, length 6
    """
    pointers = _pointer_keywords(ds)
    positional = [k for k in pointers if k in _POSITIONAL]
    others = [k for k in pointers if k not in _POSITIONAL]
    ipp, iop = _plane(ds, name, error)
    normal = np.cross(iop[:3], iop[3:])
    if pointers and not positional:
        labels = ", ".join(tag_label(k) if not k.startswith("(") else k for k in pointers)
        raise error(
            f"{name}: {n_frames} frames that {tag_label('FrameIncrementPointer')} says differ by "
            f"{labels}, not by position (e.g. a cine, dynamic or gated acquisition of one "
            "plane); they are not the slices of a volume and cannot be converted as one."
        )
    for keyword in others:
        values = _vector(ds, keyword, n_frames, name, error)
        if np.unique(values).size > 1:
            raise error(
                f"{name}: the frames differ by {tag_label(keyword)} as well as by position "
                f"({sorted(set(values.tolist()))[:4]}); they are more than one volume. Split "
                "them (e.g. one energy window or detector per file) before converting."
            )
    if "GridFrameOffsetVector" in positional:
        offsets = _vector(ds, "GridFrameOffsetVector", n_frames, name, error)
        if offsets[0] == 0:
            return ipp + np.outer(offsets, normal), iop.tolist()
        if np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-4):
            positions = np.tile(ipp, (n_frames, 1))
            positions[:, 2] = offsets
            return positions, iop.tolist()
        raise error(
            f"{name}: {tag_label('GridFrameOffsetVector')} starts at {offsets[0]:g}, not 0 (so it "
            "holds z coordinates), but the planes are not axial; the frames cannot be placed."
        )
    spacing = float_list(numbers(ds, "SpacingBetweenSlices"), 1, "SpacingBetweenSlices", name,
                         error)
    if spacing is None or spacing[0] == 0:
        raise error(
            f"{name}: {n_frames} frames but no "
            f"{tag_label('PerFrameFunctionalGroupsSequence')}, no non-zero "
            f"{tag_label('SpacingBetweenSlices')} and no {tag_label('FrameIncrementPointer')} to "
            "a position vector; a multi-frame image without per-frame positions cannot be placed "
            "in space."
        )
    if "SliceVector" in positional:
        index = _vector(ds, "SliceVector", n_frames, name, error) - 1
    else:
        index = np.arange(n_frames, dtype=float)
    return ipp + np.outer(index * spacing[0], normal), iop.tolist()
