"""``imharmony convert``: a DICOM series to a NIfTI (or NRRD, MHA) volume in physical units."""

from __future__ import annotations

import argparse
import logging

from ..errors import HarmonizationError
from ..io._atomic import check_outputs
from ..io.dicom import DEFAULT_MAX_PIXELS, UNITS, read_dicom_series
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
        help="value units (default: hu for CT, suv for PET, raw stored values otherwise)",
    )
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="Series Instance UID to convert when the folder holds several series",
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "float64"),
        default="auto",
        help=(
            "voxel type written (default auto: integers when every value is an exact integer, "
            "as for HU with an integer slope and intercept, else float32)"
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
    if args.dtype not in ("auto", "float32", "float64"):
        raise HarmonizationError(f"--dtype {args.dtype!r}: choose auto, float32 or float64.")
    check_outputs([args.dicom_dir], [args.output])
    img = read_dicom_series(
        args.dicom_dir,
        args.units,
        series_uid=args.series_uid,
        max_pixels=args.max_pixels,
        dtype="float32" if args.dtype == "float32" else args.dtype,
    )
    out_dtype = None
    if args.dtype == "auto" and img.array.dtype.kind == "f":
        out_dtype = "float32"  # float32 keeps 24 bits, finer than any scanner's quantization
    path = write_image(img, args.output, dtype=out_dtype)
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
