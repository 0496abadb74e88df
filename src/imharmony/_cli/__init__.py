"""Command modules of the ``imharmony`` command line (one module per command).

Each module exposes ``register(sub)``; heavy libraries are imported inside the command's ``run``
so that ``imharmony --help`` stays fast. Shared argument types live here.

Vocabulary (the README's "Vocabulary" section): an option is named after the API keyword it
feeds (``n_splits`` -> ``--n-splits``); a repeatable option takes the singular (``--covariate`` for
``covariates``); a boolean that defaults to True is ``--NAME/--no-NAME``. Choices and defaults
come from the library (:mod:`imharmony._vocabulary` and the modules' constants), or the option
defaults to ``argparse.SUPPRESS`` and the API's own default applies (:func:`given`). A renamed
option keeps its former name through :func:`add_former_flag`.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any

__all__ = ["add_former_flag", "given", "non_negative_int", "positive_int"]


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


class _FormerFlag(argparse.Action):
    """A former option name: sets the new option's value and says that it was renamed."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        message = f"{option_string} is deprecated; use {self.new}"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logging.getLogger("imharmony.cli").warning("%s", message)  # what a user sees
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_former_flag(parser: argparse.ArgumentParser, old: str, new: str, *, dest: str,
                    **kwargs: Any) -> None:
    """Keep ``old`` working as a hidden alias of the option ``new`` (whose value is ``dest``).

    ``kwargs`` are those of the former option (``type``, or ``nargs=0, const=VALUE`` for a
    former switch). Using it warns (:class:`DeprecationWarning`, and a log line for users).
    """
    parser.add_argument(old, action=_FormerFlag, new=new, dest=dest, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The keyword arguments among ``names`` that were given on the command line.

    Options declared with ``default=argparse.SUPPRESS`` are absent from ``args`` unless given,
    so the API's own defaults apply and the command line does not restate them.
    """
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
