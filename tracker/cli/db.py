"""``tracker db upgrade|downgrade|current``: schema migrations (Alembic's command API, the shared migrations/env.py).

A downgrade that would drop a non-empty event log is refused; ``--drop-log`` allows it after tracker has written a
backup and printed its path (``tracker/store/backup.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tracker.cli import add_common_flags
from tracker.config import load_settings
from tracker.errors import StoreError

T = TypeVar("T")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("db", help="database schema migrations")
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    sub.required = True
    upgrade = sub.add_parser("upgrade", help="migrate the database to the newest schema (creates it if missing)")
    add_common_flags(upgrade)
    upgrade.add_argument("revision", nargs="?", default="head", type=_revision, help="target revision (default: head)")
    upgrade.set_defaults(func=cmd_upgrade)
    downgrade = sub.add_parser(
        "downgrade", help="migrate the database back to REVISION ('base' drops the log: refused unless it is empty)"
    )
    add_common_flags(downgrade)
    downgrade.add_argument("revision", type=_revision, help="target revision, e.g. 0001 or base")
    downgrade.add_argument(
        "--drop-log",
        action="store_true",
        help="allow dropping a non-empty event log; a backup is written first and named",
    )
    downgrade.add_argument(
        "--backup",
        type=Path,
        metavar="PATH",
        help="where --drop-log writes the backup (default: <db>.before-downgrade-<time>.db beside a SQLite file,"
        " ./tracker-log-<database>-<time>.jsonl for PostgreSQL)",
    )
    downgrade.set_defaults(func=cmd_downgrade)
    current = sub.add_parser("current", help="print the database's schema revision and the newest one")
    add_common_flags(current)
    current.set_defaults(func=cmd_current)


def _revision(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: name a revision such as head, base or 0001")
    return text


def _migrate(action: str, url: str, revision: str, call: Callable[[], T] | None = None) -> T | None:
    """Run the migration (``call``, else ``migrate.<action>(url, revision)``); Alembic's own errors (an unknown
    revision) are one line too."""
    from alembic.util import CommandError

    from tracker.store import migrate

    try:
        if call is not None:
            return call()
        getattr(migrate, action)(url, revision)
        return None
    except CommandError as exc:
        raise StoreError(f"{exc} (revisions: base .. {migrate.head_revision()}, or head)") from None


def _url(args: argparse.Namespace) -> str:
    return load_settings(flags={"db_url": args.db_url}).db_url


def cmd_upgrade(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    url = _url(args)
    _migrate("upgrade", url, args.revision)
    print(f"database at revision {migrate.current(url) or 'none'} (newest {migrate.head_revision()})")
    return 0


def cmd_downgrade(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    url = _url(args)
    backup = _migrate(
        "downgrade",
        url,
        args.revision,
        lambda: migrate.downgrade(url, args.revision, drop_log=args.drop_log, backup_to=args.backup),
    )
    if backup is not None:
        print(f"backup of the event log written to {backup}")
    print(f"database at revision {migrate.current(url) or 'none'} (newest {migrate.head_revision()})")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    from tracker.store import migrate

    have = migrate.current(_url(args))
    need = migrate.head_revision()
    state = "up to date" if have == need else "run `tracker db upgrade`"
    print(f"revision {have or 'none'} (newest {need}): {state}")
    return 0 if have == need else 1
