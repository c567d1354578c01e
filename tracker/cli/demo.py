"""``tracker demo``: zero configuration. The fake exchange on free loopback ports, the tracker against it into
``./tracker-demo.db`` for ``--duration`` seconds with a few faults, a live progress line, then the fee report, the open
orders, the balances beside the exchange's, four SQL queries to try and a summary (last, so the output ends with it:
the hash-chain check and the discrepancies left unresolved). A second run continues the file.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tracker.cli import DEMO_DB, finite_number
from tracker.cli.report import display_rows, format_table
from tracker.errors import StoreError

if TYPE_CHECKING:
    from tracker.runtime.early_signals import EarlySignals

DEFAULT_DB = DEMO_DB
MAX_DURATION_S = 24 * 3600
MAX_RATE = 10_000
OPEN_ORDERS_SHOWN = 10


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="zero configuration: track a fake exchange into ./tracker-demo.db for a while, then report"
    )
    parser.add_argument("--duration", type=_seconds, default=30.0, help="seconds to run (default: 30)")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file to create or continue (default: {DEFAULT_DB})")
    parser.add_argument("--seed", type=int, help="seed of the fake's activity (default: the log head, new each run)")
    parser.add_argument("--rate", type=_rate, default=None, help="frames per second from the fake (default: 20)")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="no reconnect, drop or pause")
    parser.set_defaults(func=cmd_demo, stops_cleanly=True)


def _seconds(text: str) -> float:
    value = finite_number(text, "seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    if value > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DURATION_S} seconds (a day), got {text}")
    return value


def _rate(text: str) -> float:
    value = finite_number(text, "frames per second")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 frame per second, got {text}")
    if value > MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_RATE} frames per second, got {text}")
    return value


class ProgressLine:
    """One redrawn line on a terminal; elsewhere a plain line every few seconds (captured output stays short)."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._drawn = False

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            now = time.monotonic()
            if now - self._last < self.every:
                return
            self._last = now
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False


def format_counts(counts: Any, elapsed: float, duration: float) -> str:
    return (
        f"[{elapsed:4.0f}/{duration:.0f} s] {counts.events:,} events, {counts.fills:,} fills, "
        f"{counts.reconnects} reconnects, {counts.gaps_filled}/{counts.gaps} gaps filled"
    )


def sql_examples(db: str) -> list[str]:
    target = shlex.quote(db)
    return [
        f'sqlite3 {target} "select * from v_fees_daily"',
        f'sqlite3 {target} "select market, side, count(*) as fills from v_fills group by market, side"',
        f'sqlite3 {target} "select trade_account_id, type, currency, amount, balance_after from v_ledger'
        ' order by seq desc limit 10"',
        f"sqlite3 {target} \"select seq, event, received_at from event_log where source = 'tracker' "
        'order by seq desc limit 10"',
    ]


def format_summary(result: Any, db: str, open_discrepancies: int = 0, self_trades: int = 0) -> str:
    """The closing lines. ``self_trades``: how many of the open discrepancies the log explains as a self trade whose
    frame was missed (``domain/self_trade_hint.py``; the demo's pause withholds frames, and a self trade's has no
    REST source)."""
    c = result.counts
    lines = [
        f"demo done: {result.seconds:.1f} s against the fake exchange (seed {result.seed}, account {result.account})",
        f"  this run: {c.events:,} events logged (seq {result.head_before + 1}..{result.head_after}),"
        f" {c.fills:,} fills, {c.reconnects} reconnects, {c.gaps_filled} of {c.gaps} gaps filled by backfill",
    ]
    if result.verified is not None:
        lines.append(f"  verify: ok, {result.verified:,} events intact (hash chain from seq 1)")
    else:
        lines.append(f"  verify: BROKEN at {result.broken}")
    if open_discrepancies:
        # An unresolved discrepancy is what an auditor reads first: it is not left for `tracker status` to reveal.
        lines.append(
            f"  discrepancies: {open_discrepancies:,} unresolved ("
            + (f"{self_trades:,} of them likely self trades whose frames were missed; " if self_trades else "")
            + f"`tracker discrepancies --db-url {shlex.quote(f'sqlite:///{db}')}` lists them)"
        )
    else:
        lines.append("  discrepancies: none unresolved")
    lines.append(f"  database: {db} (run `tracker demo` again to continue it)")
    return "\n".join(lines)


def format_balances(rows: list[tuple[Any, ...]]) -> str:
    """The demo's last word on the account: every computed balance beside the exchange's latest snapshot."""
    from tracker.store.demo_queries import BALANCE_COLUMNS

    checked = [r for r in rows if r[5] != "not checked"]
    differing = [r for r in checked if r[5] != "agrees"]
    verdict = (
        f"all {len(checked)} checked balances agree with the exchange"
        if checked and not differing
        else f"{len(differing)} of {len(checked)} checked balances DIFFER from the exchange (see v_discrepancies)"
    )
    title = (
        "\nBalances per trade account (v_balances, computed from the ledger) beside the exchange's latest"
        f" account_balances/ snapshot (v_balance_checks): {verdict}:\n"
    )
    return title + format_table(BALANCE_COLUMNS, display_rows(BALANCE_COLUMNS, rows))


def _path_of(url: str) -> str:
    """``: use --db PATH`` with the file a ``sqlite:///PATH`` URL names; else what the demo writes."""
    from sqlalchemy.exc import ArgumentError

    from tracker.store.engine import sqlite_path

    try:
        path = sqlite_path(url)
    except ArgumentError:
        path = None
    return f": use --db {path}" if path is not None else " (the demo writes SQLite only)"


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo, a stop signal at any moment of it a clean stop: while the database is prepared (recorded, the
    migration finished, then the start abandoned), or the fake exchange starts, one line and exit 0, nothing received;
    once the tracker runs, the demo ends early with everything received committed, and reports as usual."""
    from tracker.runtime.early_signals import stopping_cleanly

    def report(stopped: BaseException) -> None:
        sys.stderr.write(f"{stopped}\n")

    return stopping_cleanly(args, partial(_demo, args), report)


def _demo(args: argparse.Namespace, early: EarlySignals) -> int:
    import logging

    import trio
    from sqlalchemy import select

    from tracker.runtime.demo import DEFAULT_RATE, run_demo
    from tracker.store import migrate
    from tracker.store.demo_queries import balance_summary
    from tracker.store.discrepancy_queries import list_discrepancies, missed_self_trades
    from tracker.store.engine import open_engine
    from tracker.store.lease import file_writer
    from tracker.store.projection_schema import VIEWS
    from tracker.store.reports import ReportFilter, read_report

    db = str(args.db)
    if "://" in db:  # a --db-url habit: the demo takes the SQLite file's path
        raise StoreError(f"--db {db} is a URL, but --db takes the path of a SQLite file{_path_of(db)}")
    path = Path(db)
    if path.is_dir() or not (path.parent if str(path.parent) else Path()).is_dir():
        what = "is a directory" if path.is_dir() else f"is in {path.parent}, which does not exist"
        raise StoreError(f"--db {db} {what}: name a SQLite file in an existing directory")
    url = f"sqlite:///{path}"
    if (holder := file_writer(path).pid) is not None:  # (tracker run's own message would offer PostgreSQL)
        raise StoreError(
            f"another tracker process (pid {holder}) is writing to {path.name}: wait for it to end, or give the demo"
            " another file: --db other-demo.db"
        )
    if not args.verbose:
        # The progress line and the fault notes tell the story; log lines would break the line. -v shows them.
        logging.getLogger("tracker").setLevel(logging.WARNING)
    migrate.upgrade(url)  # a stop signal meanwhile is recorded only: a migration is never cut short
    early.starting("preparing the demo database")  # ... and abandons the demo here, the migration done
    early.hand_over()  # from here, the demo's own stop (run_demo), or recorded only once it has returned
    engine = open_engine(url)
    out = sys.stdout
    line = ProgressLine(sys.stderr)
    started = time.monotonic()
    try:
        result = trio.run(
            partial(
                run_demo,
                engine,
                duration=args.duration,
                rate=args.rate or DEFAULT_RATE,
                seed=args.seed,
                on_progress=lambda counts: line.show(format_counts(counts, time.monotonic() - started, args.duration)),
                note=line.note,
                faults=args.faults,
                early=early,
            )
        )
        line.clear()
        fees = read_report(engine, "fees", ReportFilter())
        orders = VIEWS["v_orders"]
        columns = ("order_id", "market", "side", "amount", "amount_remaining", "price", "created_at")
        query = select(*(orders.c[name] for name in columns)).where(orders.c.status == "open")
        with engine.connect() as conn:
            open_rows = [tuple(row) for row in conn.execute(query.order_by(orders.c.created_at.desc()))]
        unresolved = list_discrepancies(engine)
        self_trades = len(missed_self_trades(engine, unresolved))
        balances = balance_summary(engine, result.account) if result.account is not None else []
    finally:
        engine.dispose()
    from tracker.cli.audit import write_audit

    audit = Path(db).with_name("tracker-demo-audit.html")
    write_audit(url, audit)
    out.write(f"Audit report (open it in a browser; `tracker audit` makes one of any database): {audit}\n")
    print_report(out, db, result, fees.columns, fees.rows, columns, open_rows, balances, len(unresolved), self_trades)
    return 0 if result.verified is not None else 1


def print_report(
    out: TextIO,
    db: str,
    result: Any,
    fee_columns: tuple[str, ...],
    fee_rows: list[tuple[Any, ...]],
    order_columns: tuple[str, ...],
    open_rows: list[tuple[Any, ...]],
    balances: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    open_discrepancies: int = 0,
    self_trades: int = 0,
) -> None:
    out.write("\nFees per day and market (v_fees_daily):\n")
    out.write(format_table(fee_columns, display_rows(fee_columns, fee_rows)))
    shown = open_rows[:OPEN_ORDERS_SHOWN]
    more = f", newest {len(shown)} shown" if len(open_rows) > len(shown) else ""
    out.write(f"\nOpen orders (v_orders where status = 'open'; {len(open_rows)} in all{more}):\n")
    out.write(format_table(order_columns, display_rows(order_columns, shown)))
    if balances:
        out.write(format_balances(balances))
    out.write("\nTry some SQL:\n")
    for example in sql_examples(db):
        out.write(f"  {example}\n")
    if shutil.which("sqlite3") is None:
        out.write("  (the sqlite3 command is not installed here: e.g. `apt install sqlite3`, or any SQLite browser)\n")
    out.write("\n" + format_summary(result, db, open_discrepancies, self_trades) + "\n")
    out.flush()
