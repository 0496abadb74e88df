"""``imharmony scan``: the protocol table of DICOM files and folders, from headers only."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from ..errors import DataError
from ..io._atomic import check_outputs
from ..io.dicom import DEFAULT_MAX_PIXELS  # the same header-size limit as reading series
from . import given, positive_int

__all__ = ["default_errors_path", "register", "run"]

logger = logging.getLogger(__name__)


def default_errors_path(output: Path) -> Path:
    """``protocols.csv`` → ``protocols.errors.csv`` (same folder, same format)."""
    suffix = output.suffix or ".csv"
    stem = output.name[: len(output.name) - len(output.suffix)]
    return output.with_name(f"{stem}.errors{suffix}")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``scan`` sub-command."""
    p = sub.add_parser(
        "scan",
        help="make the protocol table (one row per DICOM series) from headers only",
        description=(
            "Walk the given files and folders, read every DICOM header (never the pixel data) "
            "and write one row per series: modality, vendor, model, software, site, kernel and "
            "kernel group, slice thickness and spacing, kVp, exposure, field strength, TR/TE/TI/"
            "flip angle and MR weighting. Files that cannot be used (not DICOM, truncated, "
            "missing or oversized pixel data, nested too deeply...) are listed with their reason "
            "in an errors table written beside the output; the scan never stops at one."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (recursive)")
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="TABLE",
        help="protocol table to write (.csv, .tsv or .parquet)",
    )
    p.add_argument(
        "--errors",
        default=None,
        metavar="TABLE",
        help="where to list rejected files (default: beside the output, NAME.errors.SUFFIX)",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"reject files announcing more than N pixels (default {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument(
        "--max-depth",
        type=positive_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="reject files whose sequences nest deeper than N (default 32)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scan ``args.paths``; write the protocol table and the errors table. Returns 0."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ..io.tables import write_table
    from ..physics.protocol import scan_errors, scan_protocols

    output = Path(args.output)
    errors_path = Path(args.errors) if args.errors else default_errors_path(output)
    if errors_path.resolve() == output.resolve():
        raise DataError(f"--errors {errors_path}: the same file as --output; choose another name.")
    check_outputs(args.paths, [output, errors_path])
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=bool(getattr(args, "quiet", False)),
    ) as bar:
        table = scan_protocols(args.paths, progress=bar, max_pixels=args.max_pixels,
                               **given(args, "max_depth"))
    errors = scan_errors(table)
    write_table(errors, errors_path)
    if errors.shape[0]:
        counts = ", ".join(f"{n} {reason}" for reason, n in Counter(errors["reason"]).most_common())
        n = len(errors)
        logger.warning(
            "%d file%s rejected (%s); see %s", n, "" if n == 1 else "s", counts, errors_path
        )
    if table.empty:
        raise DataError(
            f"no DICOM image series found in {', '.join(map(str, args.paths))} "
            f"({table.attrs.get('n_files', 0)} files looked at, {len(errors)} rejected: see "
            f"{errors_path}); check the paths."
        )
    write_table(table, output)
    logger.info(
        "%d series from %d files written to %s", len(table), table.attrs.get("n_files", 0), output
    )
    return 0
