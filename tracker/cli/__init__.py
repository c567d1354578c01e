"""The ``tracker`` command: argument parsing and printing only.

Each sub-command lives in its own module here and exposes ``register(subparsers)``; the module adds its parser and
sets ``func`` to a callable ``(args) -> int`` (the exit code). Add a new command by adding its module to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tracker.errors import TrackerError

# Modules under tracker.cli that register sub-commands, in the order `tracker --help` lists them.
COMMANDS: tuple[str, ...] = (
    "run",
    "demo",
    "status",
    "report",
    "reconcile",
    "doctor",
    "verify",
    "audit",
    "rebuild",
    "db",
    "config_cmd",
    "fake_exchange",
)

log = logging.getLogger("tracker")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every command that touches the database or the exchange accepts (flags win over env)."""
    parser.add_argument("--db-url", dest="db_url", help="SQLAlchemy database URL (env TRACKER_DB_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker",
        description="Event-sourced tracker of a private Bitstamp account.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="frame-level debug logging")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format (default: text)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tracker.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tracker.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tracker.logs import setup_logging

    setup_logging(verbose=args.verbose, fmt=args.log_format)
    try:
        code = args.func(args)
    except TrackerError as exc:
        print(f"tracker: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BaseExceptionGroup as group:
        # A TrackerError raised inside a nursery (e.g. the exchange refused the key) arrives wrapped: print it as one
        # line too. A group holding anything else is a bug and keeps its traceback.
        errors, rest = group.split(TrackerError)
        if errors is None or rest is not None:
            raise
        first = _first_leaf(errors)
        print(f"tracker: error: {first}", file=sys.stderr)
        return first.exit_code
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


def _first_leaf(group: BaseExceptionGroup[TrackerError]) -> TrackerError:
    inner = group.exceptions[0]
    return _first_leaf(inner) if isinstance(inner, BaseExceptionGroup) else inner


def run() -> None:
    sys.exit(main())
