"""``imharmony phantom``: calibration from phantom scans.

The insert-calibration sub-commands live in :mod:`imharmony._cli.phantom_tables`.
"""

from __future__ import annotations

import argparse

from .phantom_tables import add_apply, add_calibrate


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "phantom",
        help="calibrate sites from phantom scans",
        description="Calibrate sites from phantom scans (insert phantoms).",
    )
    psub = p.add_subparsers(dest="phantom_command", metavar="COMMAND", required=True)
    add_calibrate(psub)
    add_apply(psub)
