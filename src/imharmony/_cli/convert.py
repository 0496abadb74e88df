"""``imharmony convert``: a DICOM series to a NIfTI (or NRRD, MHA) volume in physical units."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..errors import HarmonizationError
from ..io._atomic import check_outputs
from ..io.dicom import DEFAULT_MAX_PIXELS, DTYPES, UNITS, VARIABLE_SPACING, read_dicom_series
from ..io.images import write_image
from . import positive_int

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``convert`` sub-command."""
    p = sub.add_parser(
        "convert",
        help="convert a DICOM series to NIfTI in physical units (HU, SUV)",
        description=(
            "Read the DICOM series in DICOM_DIR (slices ordered by position, spacing from the "
            "positions) and write it with its geometry to OUT (.nii.gz, .nii, .nrrd, .mha), "
            "atomically. Values are Hounsfield units for CT and SUV for PET by default."
        ),
    )
    p.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder holding the series (or a file)")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output image file")
    p.add_argument(
        "--units",
        choices=UNITS,
        default=None,
        help="value units (default: hu for CT, suv for PET, raw stored values otherwise; "
        "bqml: PET activity concentration in Bq/mL)",
    )
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="Series Instance UID to convert when the folder holds several series",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help=(
            "voxel type written (default auto: integers when every value is an exact integer, "
            "as for HU with an integer slope and intercept, else float32)"
        ),
    )
    p.add_argument(
        "--volume",
        type=positive_int,
        default=None,
        metavar="N",
        help="write only volume N (from 1) of a 4-D series (fMRI, DWI, dynamic); default: all",
    )
    p.add_argument(
        "--echo",
        type=positive_int,
        default=None,
        metavar="N",
        help="write only echo N (from 1) of a multi-echo series; default: all echoes as volumes",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads reading the pixel data (default: imharmony's thread policy)",
    )
    p.add_argument(
        "--variable-spacing",
        choices=VARIABLE_SPACING,
        default="auto",
        help=(
            "slices not equally spaced: resample onto equidistant slices (linear along the "
            "normal), refuse, or auto, which resamples but refuses a regular grid with holes, "
            "what a missing file looks like (default: auto)"
        ),
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse series announcing more voxels than N (default {DEFAULT_MAX_PIXELS})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.dicom_dir`` to ``args.output``; returns the exit status (0)."""
    if args.dtype not in DTYPES:
        raise HarmonizationError(f"--dtype {args.dtype!r}: choose {', '.join(DTYPES)}.")
    check_outputs([args.dicom_dir], [args.output])
    img = read_dicom_series(
        args.dicom_dir,
        args.units,
        series_uid=args.series_uid,
        max_pixels=args.max_pixels,
        dtype=args.dtype,
        workers=args.workers,
        volume=args.volume,
        echo=args.echo,
        variable_spacing=args.variable_spacing,
    )
    out_dtype = None
    if args.dtype == "auto" and img.array.dtype.kind == "f":
        out_dtype = "float32"  # float32 keeps 24 bits, finer than any scanner's quantization
    if out_dtype == "float32":
        _check_float32(img, args.output)
    path = write_image(img, args.output, dtype=out_dtype)
    if "bvals" in img.meta:
        _write_fsl_gradients(img, path)
    shape = "x".join(str(n) for n in img.shape)
    spacing = "x".join(f"{s:.4g}" for s in img.spacing)
    logger.info(
        "wrote %s: %s voxels of %s mm, %s (%s)",
        path,
        shape,
        spacing,
        img.meta.get("units"),
        out_dtype or img.array.dtype,
    )
    return 0


def _check_float32(img: Any, output: str) -> None:
    """Refuse values that float32 would turn into infinity (never a silently wrong output)."""
    import numpy as np

    arr = img.array
    finite = arr[np.isfinite(arr)]
    if finite.size and float(np.abs(finite).max()) > float(np.finfo(np.float32).max):
        raise HarmonizationError(
            f"{output}: values up to {float(np.abs(finite).max()):.4g} exceed the float32 range "
            "and would be written as infinity; the rescale tags are implausible. Use "
            "--dtype float64 if they are genuine."
        )


def _write_fsl_gradients(img: Any, path: Any) -> None:
    """FSL ``.bval`` / ``.bvec`` beside the image (same name), in the image's voxel frame.

    FSL's convention: gradient directions are given along the voxel axes, with the first axis
    flipped when the voxel-to-world matrix has a positive determinant.
    """
    import numpy as np

    from ..io._atomic import atomic_path

    bvals = np.asarray(img.meta["bvals"], dtype=float)
    base = str(path)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    with atomic_path(base + ".bval") as tmp:
        tmp.write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    if "bvecs_lps" not in img.meta:
        logger.warning("%s: b-values without gradient directions; no .bvec written", path)
        return
    direction = np.asarray(img.direction, dtype=float)
    bvecs = np.asarray(img.meta["bvecs_lps"], dtype=float) @ direction  # rows: voxel frame
    if np.linalg.det(direction) > 0:
        bvecs[:, 0] = -bvecs[:, 0]
    bvecs[np.abs(bvecs) < 5e-7] = 0.0  # no "-0"
    with atomic_path(base + ".bvec") as tmp:
        tmp.write_text(
            "\n".join(" ".join(f"{v:.6g}" for v in row) for row in bvecs.T) + "\n"
        )
