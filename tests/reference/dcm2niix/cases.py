"""Synthetic DICOM series compared with dcm2niix (see ``README.md`` next to this file).

Two kinds of series, written with the test DICOM factory (``tests/_support/dicom.py``):

* **DWI** (:func:`write_dwi`): ``N_VOLUMES`` volumes of ``N_SLICES`` slices, a b = 0 volume and
  six diffusion directions (b = 1000 and 2000 s/mm²) in the patient frame (LPS), written the ways
  imharmony reads them: ``"standard"`` (Diffusion b-value (0018,9087) and Diffusion Gradient
  Orientation (0018,9089) in classic MR files), ``"siemens"`` ((0019,xx0C) B_value and
  (0019,xx0E) DiffusionGradientDirection of creator ``SIEMENS MR HEADER``), ``"siemens_csa"``
  (B_value and DiffusionGradientDirection in the CSA image header) and ``"enhanced"`` (one
  Enhanced MR object, MR Diffusion functional group per frame); at the orientations of
  :data:`ORIENTATIONS` (axial, oblique, flipped rows and/or columns), slices written in
  ascending or descending order.
* **Unequal slice spacing** (:func:`write_uneven`): a CT series whose slices are not equally far
  apart along the normal (dcm2niix writes an ``_Eq`` file for it).

Everything is deterministic (values seeded from the case name), so the committed dcm2niix outputs
stay valid for a series regenerated in a test.
"""

from __future__ import annotations

import importlib.util
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def factory() -> Any:
    """The test DICOM factory module (loaded by path: this folder is not a package)."""
    name = "_support.dicom"
    if name in sys.modules:
        return sys.modules[name]
    path = HERE.parent.parent / "_support" / "dicom.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az),
                              np.sin(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _iop(row: Sequence[float], col: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in (*row, *col))


_OBLIQUE = _rotation(np.radians(17.0), np.radians(-9.0), np.radians(23.0))

#: Image Orientation (Patient) of each case: the row and column direction cosines (LPS).
ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "axial_rows_flipped": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "axial_columns_flipped": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "axial_both_flipped": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "oblique": _iop(_OBLIQUE[:, 0], _OBLIQUE[:, 1]),
    "oblique_flipped": _iop(-_OBLIQUE[:, 0], _OBLIQUE[:, 1]),
    "oblique_sagittal": _iop(_OBLIQUE[:, 1], -_OBLIQUE[:, 2]),
}

VENDORS: tuple[str, ...] = ("standard", "siemens", "siemens_csa", "enhanced")

N_SLICES, ROWS, COLUMNS = 4, 6, 5
B_VALUES: tuple[float, ...] = (0.0, 1000.0, 1000.0, 1000.0, 2000.0, 2000.0, 2000.0)
N_VOLUMES = len(B_VALUES)


def gradients() -> np.ndarray:
    """Unit gradient directions (LPS) of the volumes, shape (N_VOLUMES, 3); zero for b = 0.

    Six directions off the axes, rounded to 6 decimals (as written in the headers) and
    renormalized.
    """
    rng = np.random.default_rng(9089)
    g = rng.normal(size=(N_VOLUMES, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g = np.round(g, 6)
    g[0] = 0.0
    return g


def _values(name: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return rng.integers(0, 3000, size=shape).astype(np.int16)


def dwi_values(name: str) -> np.ndarray:
    """Stored values of case ``name``, shape (N_VOLUMES, N_SLICES, ROWS, COLUMNS), slices in
    ascending position along the normal."""
    return _values(name, (N_VOLUMES, N_SLICES, ROWS, COLUMNS))


def _fmt(values: Sequence[float]) -> list[str]:
    return [f"{float(v):.6f}" for v in values]


def write_dwi(
    folder: Path, name: str, vendor: str, orientation: str, descending: bool = False
) -> None:
    """Write DWI case ``name`` into ``folder`` (see the module notes)."""
    fac = factory()
    iop = ORIENTATIONS[orientation]
    vols = dwi_values(name)
    grads = gradients()
    positions = fac.slice_positions(N_SLICES, orientation=iop, slice_spacing=3.0)
    slices = list(range(N_SLICES))[::-1] if descending else list(range(N_SLICES))
    folder.mkdir(parents=True, exist_ok=True)
    if vendor == "enhanced":
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        def diffusion(t: int) -> dict[str, Any]:
            item: dict[str, Any] = {"DiffusionBValue": B_VALUES[t]}
            if B_VALUES[t] > 0:
                direction = Dataset()
                direction.DiffusionGradientOrientation = [float(v) for v in grads[t]]
                item["DiffusionDirectionality"] = "DIRECTIONAL"
                item["DiffusionGradientDirectionSequence"] = DicomSequence([direction])
            else:
                item["DiffusionDirectionality"] = "NONE"
            return item

        frames = [(t, s) for t in range(N_VOLUMES) for s in slices]
        fac.write_enhanced(
            folder / "dwi.dcm", np.stack([vols[t, s] for t, s in frames]), modality="MR",
            positions=np.stack([positions[s] for _, s in frames]), orientation=iop,
            pixel_spacing=(2.0, 2.5), slice_spacing=3.0,
            tags={"Manufacturer": "Philips"},
            per_frame_groups=[
                {"MRDiffusionSequence": diffusion(t),
                 "FrameContentSequence": {"TemporalPositionIndex": t + 1,
                                          "InStackPositionNumber": s + 1,
                                          "StackID": "1",
                                          "DimensionIndexValues": [1, s + 1, t + 1]}}
                for t, s in frames
            ],
        )
        return
    per_instance = []
    stored = []
    pos = []
    for t in range(N_VOLUMES):
        for s in slices:
            stored.append(vols[t, s])
            pos.append(positions[s])
            tags: dict[Any, Any] = {"InstanceNumber": len(per_instance) + 1,
                                    "AcquisitionNumber": t + 1}
            if vendor == "standard":
                tags["DiffusionBValue"] = B_VALUES[t]
                tags["DiffusionGradientOrientation"] = [float(v) for v in grads[t]]
            elif vendor == "siemens":
                tags["Manufacturer"] = "SIEMENS"
                tags[(0x0019, "SIEMENS MR HEADER", 0x0C)] = ("IS", str(int(B_VALUES[t])))
                if B_VALUES[t] > 0:
                    tags[(0x0019, "SIEMENS MR HEADER", 0x0E)] = ("FD", [float(v) for v in
                                                                       grads[t]])
            elif vendor == "siemens_csa":
                tags["Manufacturer"] = "SIEMENS"
                elements = {"B_value": ("IS", [str(int(B_VALUES[t]))])}
                if B_VALUES[t] > 0:
                    elements["DiffusionGradientDirection"] = ("FD", _fmt(grads[t]))
                tags[(0x0029, "SIEMENS CSA HEADER", 0x10)] = (
                    "OB", fac.csa_header_bytes(elements)
                )
            else:
                raise ValueError(f"unknown vendor {vendor!r}")
            per_instance.append(tags)
    fac.write_series(
        folder, np.stack(stored), modality="MR", positions=np.stack(pos), orientation=iop,
        pixel_spacing=(2.0, 2.5), slice_spacing=3.0, per_instance=per_instance,
    )


def dwi_cases() -> list[dict[str, Any]]:
    """Every DWI case: name, vendor, orientation, descending."""
    cases = []
    for vendor in VENDORS:
        for orientation in ORIENTATIONS:
            for descending in (False, True):
                name = f"{vendor}-{orientation}" + ("-desc" if descending else "")
                cases.append({"name": name, "vendor": vendor, "orientation": orientation,
                              "descending": descending})
    return cases


#: Unequal slice spacing: distances of the slices along the normal (mm from the first).
UNEVEN: dict[str, tuple[float, ...]] = {
    # Smallest gap 1 mm over 21 mm: more than twice the slices; the grid is limited to 2 n.
    "capped": (0.0, 1.0, 6.0, 11.0, 16.0, 21.0),
    # Smallest gap 2 mm over 12 mm: 7 slices 2 mm apart (dcm2niix stops at 10 mm).
    "stepped": (0.0, 2.0, 5.0, 8.0, 10.0, 12.0),
}


def write_uneven(folder: Path, name: str, orientation: str = "oblique") -> np.ndarray:
    """Write the CT series ``UNEVEN[name]`` (8 x 7 pixels, int16); returns its stored values,
    shape (n_slices, rows, columns), in slice order."""
    fac = factory()
    iop = ORIENTATIONS[orientation]
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    distances = np.asarray(UNEVEN[name])
    origin = np.array([-20.0, -30.0, 40.0])
    stored = _values(f"uneven-{name}", (len(distances), 8, 7))
    fac.write_series(
        folder, stored, modality="CT", positions=origin + np.outer(distances, normal),
        orientation=iop, pixel_spacing=(1.5, 1.25), slice_spacing=float(np.diff(distances).min()),
    )
    return stored


RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
NM_IMAGE = "1.2.840.10008.5.1.4.1.1.20"


def write_classic(
    folder: Path,
    frames: np.ndarray,
    tags: dict[Any, Any],
    *,
    modality: str = "CT",
    sop_class_uid: str | None = None,
    origin: Sequence[float] = (5.0, -20.0, 40.0),
    orientation: Sequence[float] = ORIENTATIONS["oblique"],
    pixel_spacing: Sequence[float] = (1.5, 1.25),
) -> None:
    """One classic multi-frame file holding ``frames`` (n, rows, columns) with one Image Position
    and Orientation (Patient) (``origin``, ``orientation``; remove them with ``tags``) and the
    frame attributes in ``tags`` (Frame Increment Pointer, Grid Frame Offset Vector ...)."""
    n, rows, cols = frames.shape
    factory().write_series(
        folder, frames.reshape(1, n * rows, cols), modality=modality,
        sop_class_uid=sop_class_uid, origin=origin, orientation=orientation,
        pixel_spacing=pixel_spacing, tags={"Rows": rows, "NumberOfFrames": n, **tags},
    )


def detector_information(position: Sequence[float], orientation: Sequence[float]) -> Any:
    """A Detector Information Sequence (0054,0022) holding an NM image's position and
    orientation."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.ImagePositionPatient = [f"{v:.6g}" for v in position]
    item.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
    return DicomSequence([item])


def classic_cases() -> dict[str, dict[str, Any]]:
    """Classic multi-frame cases (5 frames of 3 x 5, oblique): keyword arguments of
    :func:`write_classic` without ``frames``, plus ``positions`` (the true position of each
    frame, LPS) ."""
    iop = ORIENTATIONS["oblique"]
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    origin = np.array([5.0, -20.0, 40.0])
    steps = np.arange(5.0)
    nm = {"ImagePositionPatient": None, "ImageOrientationPatient": None,
          "DetectorInformationSequence": detector_information(origin, iop),
          "FrameIncrementPointer": [0x00540010, 0x00540080], "EnergyWindowVector": [1] * 5,
          "NumberOfEnergyWindows": 1, "SliceVector": [2, 1, 3, 5, 4], "NumberOfSlices": 5,
          "SpacingBetweenSlices": "4.0"}
    return {
        "mr-spacing": {"tags": {"SpacingBetweenSlices": "3.5"}, "modality": "MR",
                       "positions": origin + np.outer(3.5 * steps, normal)},
        "nm-slice-vector": {"tags": nm, "modality": "NM", "sop_class_uid": NM_IMAGE,
                            "positions": origin + np.outer(4.0 * (np.array([2, 1, 3, 5, 4]) - 1),
                                                           normal)},
        "rtdose-ascending": {
            "tags": {"FrameIncrementPointer": 0x3004000C,
                     "GridFrameOffsetVector": list(2.5 * steps)},
            "modality": "RTDOSE", "sop_class_uid": RT_DOSE,
            "positions": origin + np.outer(2.5 * steps, normal)},
        "rtdose-descending": {
            "tags": {"FrameIncrementPointer": 0x3004000C,
                     "GridFrameOffsetVector": list(-2.5 * steps)},
            "modality": "RTDOSE", "sop_class_uid": RT_DOSE,
            "positions": origin - np.outer(2.5 * steps, normal)},
    }
