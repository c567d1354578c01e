"""``tracker verify``: walk the event log's hash chain; exit 0 when intact, 1 naming the first bad seq.

``--anchor`` also prints ``SEQ:HASH`` of the head, to record somewhere else; ``--expect-anchor SEQ:HASH`` later proves
the log was not rewritten (nor cut short) up to that point, which the chain alone cannot show.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from tracker.cli import add_common_flags
from tracker.config import ConfigError, load_settings
from tracker.domain.chain import Anchor, Break, ChainWalker

PAGE = 2000
LARGE_LOG = 1_000_000  # above this many rows, show progress on stderr even when it is not a terminal


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


def cmd_verify(args: argparse.Namespace) -> int:
    from tracker.store.engine import open_engine
    from tracker.store.event_log import EventLog
    from tracker.store.migrate import check_schema

    try:
        expect = Anchor.parse(args.expect_anchor) if args.expect_anchor else None
    except ValueError as exc:
        raise ConfigError(f"--expect-anchor: {exc}") from None
    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_engine(settings.db_url, write=False)
    try:
        check_schema(engine)
        log = EventLog(engine)
        end = log.head()  # rows appended while we walk are left for the next run
        walker = ChainWalker(expect)
        progress = Progress(end, sys.stderr)
        for page in log.iter_after(0, PAGE):
            page = [row for row in page if row.seq <= end] if page[-1].seq > end else page
            if walker.feed(page) is not None or not page or page[-1].seq >= end:
                break
            progress.show(page[-1].seq)
        progress.done()
        broken = walker.finish()
    finally:
        engine.dispose()
    if broken is not None:
        print(format_break(broken))
        return 1
    print(format_summary(walker, expect))
    if args.anchor:
        print(Anchor(walker.head, walker.head_hash))
    return 0
