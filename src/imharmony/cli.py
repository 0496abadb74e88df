"""The ``imharmony`` command line: thin over the Python API.

Each command lives in its own module under ``imharmony._cli`` exposing ``register(subparsers)``,
which adds the sub-parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit status. User errors (:class:`imharmony.HarmonizationError`) print one line and exit 2;
anything else is an internal failure and exits 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ._version import __version__
from .errors import HarmonizationError

__all__ = ["build_parser", "main"]

# Command modules, in the order ``imharmony --help`` lists them.
_COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "convert",
    "scan",
    "audit",
    "images",
    "combat",
    "diagnose",
    "phantom",
    "travelling",
    "voxelwise",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="imharmony",
        description=(
            "Harmonize quantitative images and their features across sites, scanners and "
            "protocols, and check that the biology survived."
        ),
    )
    parser.add_argument("--version", action="version", version=f"imharmony {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"imharmony._cli.{name}")
        module.register(sub)
    return parser


class _RichOnFirstUse(logging.Handler):
    """A :class:`rich.logging.RichHandler`, imported and built when the first record arrives.

    ``rich`` takes about 10 ms to import; a quiet run that logs nothing never pays it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(  # log lines go to stderr: stdout is for results
                console=Console(stderr=True),
                show_time=False,
                show_path=False,
                markup=False,
                rich_tracebacks=False,
            )
            self._rich.setFormatter(self.formatter or logging.Formatter("%(message)s"))
        self._rich.handle(record)


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[_RichOnFirstUse()],
        force=True,
    )
    logging.captureWarnings(True)


def _one_line(exc: BaseException) -> str:
    """The message on one line (third-party text quoted in it may span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 internal error, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _configure_logging(args.quiet)
    try:
        return int(args.func(args) or 0)
    except HarmonizationError as exc:
        print(f"imharmony {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imharmony: interrupted; no output was left half-written.", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"imharmony {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in imharmony; rerun with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
