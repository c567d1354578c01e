"""``tracker verify``: walk the event log's hash chain; exit 0 when intact, 1 naming the first bad seq.

``--anchor`` also prints ``SEQ:HASH`` of the head, to record somewhere else; ``--expect-anchor SEQ:HASH`` later proves
the log was not rewritten (nor cut short) up to that point, which the chain alone cannot show.

Before the chain's verdict, the database's own integrity check runs (``tracker/store/integrity.py``: SQLite
``integrity_check``, PostgreSQL ``amcheck`` when installed); on a big SQLite log the chain walk's two worker processes
(``tracker/store/chain_walk.py``) walk meanwhile. A damaged file is reported as ``BROKEN`` with its pages and the
table or index each belongs to, and exit 1, never a traceback; the chain is then still walked as far as it reads, so
the report says whether the rows themselves survived.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from sqlalchemy.exc import DatabaseError

from tracker.cli import add_common_flags, open_database
from tracker.config import ConfigError, load_settings
from tracker.domain.chain import Anchor, Break, ChainWalker
from tracker.store.errors import first_line, is_damage
from tracker.store.integrity import IntegrityReport

LARGE_LOG = 1_000_000  # above this many rows, show progress on stderr even when it is not a terminal
MAX_SHOWN = 10  # damage lines printed; the rest are counted


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify", help="check the event log's hash chain (exit 1 names the first bad seq)"
    )
    add_common_flags(parser)
    parser.add_argument("--anchor", action="store_true", help="also print the head as SEQ:HASH, to record elsewhere")
    parser.add_argument(
        "--expect-anchor",
        metavar="SEQ:HASH",
        help="fail unless the row at SEQ still has HASH (a value printed earlier by --anchor)",
    )
    parser.set_defaults(func=cmd_verify)


def format_summary(walker: ChainWalker, expect: Anchor | None) -> str:
    if walker.count == 0:
        text = "ok: the event log is empty"
    else:
        text = f"ok: {walker.count} events intact (seq 1..{walker.head}), head hash {walker.head_hash[:16]}…"
    if expect is not None:
        text += f"; anchor at seq {expect.seq} matches"
    return text


def format_break(broken: Break) -> str:
    return f"BROKEN: the chain fails at seq {broken.seq}: {broken.reason}"


class Progress:
    """A single ``\\r`` line on stderr, only for terminals or big logs."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.on = total > 0 and (stream.isatty() or total >= LARGE_LOG)

    def show(self, seq: int) -> None:
        if self.on:
            self.stream.write(f"\rverifying: seq {seq}/{self.total} ({100 * seq // self.total}%)")
            self.stream.flush()

    def done(self) -> None:
        if self.on:
            self.stream.write("\r\033[K")
            self.stream.flush()


def format_integrity(report: IntegrityReport) -> list[str]:
    """The damage lines (BROKEN) when the database's own check failed; nothing when it passed."""
    if report.ok:
        return []
    shown = list(report.problems[:MAX_SHOWN])
    more = len(report.problems) - len(shown)
    return [
        f"BROKEN: the database file is damaged ({report.method} found {len(report.problems)} problem(s)):",
        *(f"  {line}" for line in shown),
        *([f"  … and {more} more"] if more > 0 else []),
        "  restore the database from a backup (the hash chain below says what still reads intact)",
    ]


def format_integrity_ok(report: IntegrityReport) -> str:
    if report.method:
        return f"; {report.method} ok"
    return f"; {report.note}" if report.note else ""


def cmd_verify(args: argparse.Namespace) -> int:
    from tracker.store.chain_walk import start_walk
    from tracker.store.errors import DatabaseDamaged
    from tracker.store.integrity import check_integrity
    from tracker.store.migrate import check_schema

    try:
        expect = Anchor.parse(args.expect_anchor) if args.expect_anchor else None
    except ValueError as exc:
        raise ConfigError(f"--expect-anchor: {exc}") from None
    settings = load_settings(flags={"db_url": args.db_url})
    try:
        # As every reading command: a missing SQLite file says so (and names tracker-demo.db beside it), and an
        # error about the URL names where it came from (--db-url, TRACKER_DB_URL or tracker.toml).
        engine = open_database(settings)
    except DatabaseDamaged as damaged:
        print(f"BROKEN: {damaged}")
        return 1
    try:
        try:
            check_schema(engine)
        except DatabaseError as error:
            if not is_damage(error):
                raise
            print(f"BROKEN: the database file is damaged: its schema cannot be read ({first_line(error)})")
            return 1
        # On a big SQLite log the chain walk's workers start first and walk while the database checks itself.
        with start_walk(engine, expect) as walk:
            report = check_integrity(engine)
            damage_lines = format_integrity(report)
            for line in damage_lines:
                print(line, flush=True)
            progress = Progress(walk.end, sys.stderr)
            walked = walk.result(progress.show)
            progress.done()
        walker, unreadable = walked.walker, walked.unreadable
    finally:
        engine.dispose()
    broken = walker.finish() if unreadable is None else None
    if unreadable is not None:
        print(f"BROKEN: the chain cannot be read past seq {walker.head}: {unreadable}")
        return 1
    if broken is not None:
        print(format_break(broken))
        return 1
    if damage_lines:
        print(f"the chain itself reads intact: {format_summary(walker, expect).removeprefix('ok: ')}")
        return 1
    print(format_summary(walker, expect) + format_integrity_ok(report))
    if args.anchor:
        print(Anchor(walker.head, walker.head_hash))
    return 0
