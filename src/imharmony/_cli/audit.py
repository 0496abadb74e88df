"""``imharmony audit``: compare a protocol table with a reference protocol."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..io._atomic import check_outputs

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXIT_DEVIATIONS", "default_summary_path", "register", "run"]

logger = logging.getLogger(__name__)

#: Exit status when a deviation of severity "error" is found (unless ``--no-fail``): a pipeline
#: that runs the audit stops on a collection that breaks the reference protocol.
EXIT_DEVIATIONS = 3


def default_summary_path(output: Path) -> Path:
    """``deviations.csv`` → ``deviations.summary.csv`` (same folder, same format)."""
    suffix = output.suffix or ".csv"
    stem = output.name[: len(output.name) - len(output.suffix)]
    return output.with_name(f"{stem}.summary{suffix}")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``audit`` sub-command."""
    p = sub.add_parser(
        "audit",
        help="list where a protocol table deviates from a reference protocol",
        description=(
            "Compare the protocol table written by 'imharmony scan' with a reference protocol "
            "(YAML: exact values, [min, max] ranges, value ± tol or ± percent, per modality and "
            "weighting; see examples/reference_protocol.yaml). Prints a summary per site; "
            "--output writes one row per deviation and, beside it, the per-site summary. "
            f"Exits with status {EXIT_DEVIATIONS} when a deviation of severity 'error' is found "
            "(--no-fail: 0)."
        ),
    )
    p.add_argument("table", metavar="PROTOCOLS", help="protocol table (.csv, .tsv or .parquet)")
    p.add_argument("--reference", "-r", required=True, metavar="YAML", help="reference protocol")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="TABLE",
        help="deviations table to write (the summary goes beside it as NAME.summary.SUFFIX)",
    )
    p.add_argument(
        "--summary", default=None, metavar="TABLE", help="where to write the per-site summary"
    )
    fail = p.add_mutually_exclusive_group()
    fail.add_argument(
        "--no-fail",
        dest="fail",
        action="store_false",
        help=f"exit with status 0 even when deviations of severity 'error' are found (by "
        f"default the status is {EXIT_DEVIATIONS})",
    )
    fail.add_argument(
        "--strict",
        dest="fail",
        action="store_true",
        help="the default, kept for scripts written when it was not",
    )
    p.set_defaults(fail=True)
    p.set_defaults(func=run)


def _show(summary: pd.DataFrame, deviations: pd.DataFrame, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if deviations.empty:
        console.print("No deviations from the reference protocol.")
        return
    table = Table(title="Deviations per site")
    for column in summary.columns:
        table.add_column(str(column), justify="right" if column.startswith("n_") else "left")
    for row in summary.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table)


def run(args: argparse.Namespace) -> int:
    """Audit ``args.table`` against ``args.reference``; returns 0, or 3 on errors (unless
    ``--no-fail``)."""
    from ..io.tables import read_table, write_table
    from ..physics.protocol import audit_protocols, summarize_audit

    default = default_summary_path(Path(args.output)) if args.output else None
    check_outputs([args.table, args.reference], [args.output, args.summary or default])
    table = read_table(args.table)
    deviations = audit_protocols(table, args.reference)
    summary = summarize_audit(deviations, table)
    summary_path = Path(args.summary) if args.summary else None
    if args.output:
        output = Path(args.output)
        write_table(deviations, output)
        summary_path = summary_path or default_summary_path(output)
        logger.info("%d deviations written to %s", len(deviations), output)
    if summary_path is not None:
        write_table(summary, summary_path)
    _show(summary, deviations, bool(getattr(args, "quiet", False)))
    n_errors = int((deviations["severity"] == "error").sum())
    if n_errors:
        logger.warning(
            "%d deviations (%d errors) in %d series",
            len(deviations),
            n_errors,
            deviations["series_uid"].nunique(),
        )
    return EXIT_DEVIATIONS if args.fail and n_errors else 0
