"""Command modules of the ``imharmony`` command line (one module per command).

Each module exposes ``register(sub)``; heavy libraries are imported inside the command's ``run``
so that ``imharmony --help`` stays fast. Shared argument types live here.
"""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
