"""``imharmony combat``: placeholder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("combat", help="fit or apply ComBat on a feature table")
    p.set_defaults(func=lambda a: 0)
