"""Command modules of the ``imharmony`` command line (one module per command).

Each module exposes ``register(sub)``; heavy libraries are imported inside the command's ``run``
so that ``imharmony --help`` stays fast. Shared argument types live here.
"""

from __future__ import annotations

import argparse

__all__ = ["non_negative_int", "positive_int"]


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")
