"""Parity with dcm2niix on committed outputs (tests/reference/dcm2niix/README.md).

The DICOM series are regenerated here from ``dcm2niix/cases.py``; dcm2niix is not needed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from imharmony import cli
from imharmony.io.dicom import read_dicom_series

HERE = Path(__file__).resolve().parent / "dcm2niix"
FIXTURES = HERE / "fixtures"
SPECS = json.loads((FIXTURES / "cases.json").read_text())


def _cases():
    spec = importlib.util.spec_from_file_location("dcm2niix_cases", HERE / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _cases()


def _fsl_to_lps(bvec: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """FSL ``.bvec`` rows (3, n) of an image with ``affine`` (RAS) to LPS directions (n, 3)."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    voxel = np.asarray(bvec, dtype=float).T.copy()
    if np.linalg.det(affine[:3, :3]) > 0:
        voxel[:, 0] = -voxel[:, 0]
    return (voxel @ rot.T) * np.array([-1.0, -1.0, 1.0])


def _index_map(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """dcm2niix's voxel index -> ours (4 x 4, integer), from the two affines."""
    m = np.linalg.inv(ours) @ ref
    np.testing.assert_allclose(m, np.round(m), atol=1e-3)
    return np.round(m)


@pytest.mark.parametrize("spec", [s for s in SPECS if s["kind"] == "dwi"],
                         ids=lambda s: s["fixture"])
def test_dwi_bval_bvec_match_dcm2niix(tmp_path, spec):
    cases.write_dwi(tmp_path / "in", spec["name"], spec["vendor"], spec["orientation"],
                    spec["descending"])
    out = tmp_path / "dwi.nii"
    assert cli.main(["convert", str(tmp_path / "in"), "-o", str(out)]) == 0
    ours, ref = nib.load(out), nib.load(FIXTURES / f"{spec['fixture']}.nii")
    m = _index_map(ours.affine, ref.affine)
    # Same volumes in the same order: dcm2niix's voxels moved onto our grid equal ours.
    theirs = np.asarray(ref.dataobj)
    idx = np.indices(theirs.shape[:3]).reshape(3, -1)
    mine = (m[:3, :3] @ idx + m[:3, 3:4]).astype(int)
    data = np.asarray(ours.dataobj)
    for t in range(cases.N_VOLUMES):
        np.testing.assert_array_equal(data[(*mine, t)], theirs[..., t].reshape(-1))
    # b-values: the same numbers in the same order.
    b_ref = np.loadtxt(FIXTURES / f"{spec['fixture']}.bval")
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "dwi.bval"), b_ref)
    np.testing.assert_array_equal(b_ref, cases.B_VALUES)
    # Directions: each file, read with its own image's axes, gives the directions written.
    v_ours = _fsl_to_lps(np.loadtxt(tmp_path / "dwi.bvec"), ours.affine)
    v_ref = _fsl_to_lps(np.loadtxt(FIXTURES / f"{spec['fixture']}.bvec"), ref.affine)
    np.testing.assert_allclose(v_ref, cases.gradients(), atol=2e-6)
    np.testing.assert_allclose(v_ours, v_ref, atol=2e-6)


@pytest.mark.parametrize("spec", [s for s in SPECS if s["kind"] == "uneven"],
                         ids=lambda s: s["fixture"])
def test_equalized_slices_match_dcm2niix_eq(tmp_path, spec):
    cases.write_uneven(tmp_path / "in", spec["name"])
    img = read_dicom_series(tmp_path / "in")
    ref = nib.load(FIXTURES / f"{spec['fixture']}.nii")
    theirs = np.asarray(ref.dataobj, dtype=np.float64)
    # dcm2niix's _Eq sform scales the z row of the matrix by the change of slice spacing
    # instead of the slice axis, so for an oblique series only its x and y rows are the image's:
    # they give the in-plane axes (dcm2niix flips the rows); the slice spacing is its pixdim.
    ras = np.diag([-1.0, -1.0, 1.0]) @ (np.asarray(img.direction) * np.asarray(img.spacing))
    np.testing.assert_allclose(ref.affine[:2, :2], ras[:2, :2] * [1.0, -1.0], atol=1e-4)
    assert ref.header.get_zooms()[2] == pytest.approx(img.spacing[2], rel=1e-5)
    theirs = theirs[:, ::-1, :]
    # dcm2niix stops short of the last slice when the span is not a multiple of its step.
    k = theirs.shape[2]
    assert k <= img.shape[2]
    if spec["name"] == "capped":
        assert k == img.shape[2] == 2 * len(spec["distances"])
    # dcm2niix rounds each interpolated value to the integer type of the data.
    ours = img.array[..., :k]
    assert np.abs(ours - theirs).max() <= 0.5 + 1e-4
    np.testing.assert_array_equal(np.floor(ours + 0.5), theirs)
