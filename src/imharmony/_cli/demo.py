"""``imharmony demo``: placeholder until the demo lands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the end-to-end demo on built-in data")
    p.add_argument("--output", default="demo-output", help="output folder (default: demo-output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("demo not written yet")
