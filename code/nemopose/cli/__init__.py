"""What every command-line entry point shares: one way to read a category list, and one way
to end on an expected mistake (one line ``error: ...``, exit status 2, no traceback; set
``NEMOPOSE_DEBUG=1`` for the traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from ..errors import NemoPoseError

log = logging.getLogger("nemopose")

YES = ("yes", "true", "1", "on")
NO = ("no", "false", "0", "off")


def add_categories_argument(parser: argparse.ArgumentParser, all_means: str) -> None:
    """``--categories`` for every tool: names separated by spaces or commas (one or several
    arguments), or ``all`` (default), whose meaning ``all_means`` states."""
    parser.add_argument("--categories", nargs="+", default=["all"],
                        help=f"category names (e.g. car bus, or 'car,bus') or 'all' = {all_means} (default all)")


def yes_no(value: str, name: str = "value") -> bool:
    """Parse yes/no (also true/false, 1/0, on/off, as the original scripts wrote them)."""
    v = str(value).strip().lower()
    if v in YES:
        return True
    if v in NO:
        return False
    from ..errors import UsageError

    raise UsageError(f"{name} must be yes or no (or true/false), got {value!r}")


def _yes_no_type(value: str) -> bool:
    try:
        return yes_no(value)
    except NemoPoseError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("value ", "", 1)) from None


def add_yes_no_argument(parser, *flags: str, dest: str, default: bool, help: str) -> None:
    """A yes/no option: ``--flag`` alone means yes, ``--flag no`` (or false, 0, off) no; the
    drivers pass their yes/no variables through it, so they are parsed in one place."""
    parser.add_argument(*flags, dest=dest, nargs="?", const=True, default=default, type=_yes_no_type,
                        metavar="yes|no", help=f"{help} (default {'yes' if default else 'no'})")


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point's ``main``; an expected mistake ends as one ``error:`` line, status 2."""
    try:
        return int(main(argv) or 0)
    except (NemoPoseError, FileNotFoundError) as exc:
        if os.environ.get("NEMOPOSE_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, NemoPoseError) or exc.filename is None else \
            f"{exc.filename}: {exc.strerror or exc}"
        first, *details = message.strip().splitlines() or [type(exc).__name__]
        for line in details:            # the details first, so the last line says what went wrong
            print(line, file=sys.stderr)
        print(f"error: {first.rstrip(':')}" + (" (details above)" if details else ""), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to continue where it stopped", file=sys.stderr)
        return 130
