"""``tracker audit``: one self-contained HTML report an auditor can read, attach and trust (docs/audit.md).

``write_audit(engine_or_url, path)`` is the whole job (the demo calls it too): read every figure with the queries of
``tracker/store/audit_queries.py``, render with ``tracker/audit/html.py``, write the file. The database is opened
read-only when given as a URL. The command prints where the file is and the verify verdict; it exits 1 when the log
or the file is broken (the report is written anyway: it says what is broken), like ``tracker verify``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tracker.audit.model import AuditData, Period
from tracker.bitstamp.ledger_channels import is_trade_account_id
from tracker.cli import add_common_flags
from tracker.config import load_settings

DEFAULT_OUT = "tracker-audit.html"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "audit", help="write one self-contained HTML audit report (integrity, coverage, activity, discrepancies)"
    )
    add_common_flags(parser)
    parser.add_argument("--since", type=_day, help="first UTC day of the period, inclusive (2026-11-01)")
    parser.add_argument("--until", type=_day, help="last UTC day of the period, inclusive (2026-11-30)")
    parser.add_argument(
        "--account",
        help="only this trade account in the views' sections (0 the main account, else a sub-account; default: all)",
    )
    parser.add_argument("--user", help="only this Bitstamp account, user id (default: every account in the database)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"the HTML file to write (default: {DEFAULT_OUT})")
    parser.set_defaults(func=cmd_audit)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UTC day: {text!r} (use 2026-11-29)") from None


def tracker_version() -> str:
    try:
        return version("tracker")
    except PackageNotFoundError:  # run from a checkout without installing
        from tracker import __version__

        return __version__


def read_audit(engine: Engine, period: Period) -> AuditData:
    """Every figure of the report, each section timed (the times go into the document's limits note)."""
    from tracker.store import audit_queries as q
    from tracker.store.engine import display_url

    seconds: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        seconds[name] = time.perf_counter() - started

    made_at = datetime.now(UTC)
    # The integrity checks (the chain walk, in worker processes on a big SQLite log, and the database's own check)
    # run while the other sections' queries do: on two cores, their times overlap instead of adding up.
    with q.start_integrity(engine) as pending:
        started = time.perf_counter()
        span = q.log_span(engine, period)
        timed("log", started)
        seconds["integrity"] = 0.0  # (its place in the timings' order; set below)
        started = time.perf_counter()
        entries, tracker_query = q.tracker_entries(engine, period)
        merged = q.merged_logs(engine, period)
        timed("coverage", started)
        started = time.perf_counter()
        activity = q.activity(engine, period)
        timed("activity", started)
        started = time.perf_counter()
        balances = q.balances(engine, period)
        discrepancies = q.discrepancies(engine, period, span)
        timed("balances and discrepancies", started)
        integrity = pending.result()
    seconds["integrity"] = integrity.seconds
    return AuditData(
        version=tracker_version(),
        database=display_url(engine.url),
        made_at=made_at,
        period=period,
        span=span,
        integrity=integrity,
        tracker_entries=entries,
        tracker_query=tracker_query,
        activity=activity,
        balances=balances,
        discrepancies=discrepancies,
        seconds=seconds,
        merged=merged,
    )


def write_audit(engine_or_url: Engine | str, path: str | Path, period: Period | None = None) -> AuditData:
    """Write the report of ``period`` (default: the whole log, every account) to ``path``; returns what it shows."""
    from tracker.audit.html import render
    from tracker.store.engine import open_engine

    engine = open_engine(engine_or_url, write=False) if isinstance(engine_or_url, str) else engine_or_url
    try:
        data = read_audit(engine, period or Period())
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
    Path(path).write_text(render(data), encoding="utf-8")
    return data


def cmd_audit(args: argparse.Namespace) -> int:
    from tracker.config import ConfigError

    if args.since is not None and args.until is not None and args.until < args.since:
        raise ConfigError(f"--until {args.until} is before --since {args.since}")
    from tracker.cli import open_database
    from tracker.errors import TrackerError
    from tracker.store.migrate import check_schema

    if args.account is not None and not is_trade_account_id(args.account):
        raise ConfigError(
            f"--account {args.account}: not a trade account id (0 the main account, else a sub-account's number);"
            " the Bitstamp account is --user"
        )
    settings = load_settings(flags={"db_url": args.db_url})
    # The inclusive last day -> an exclusive bound (the last day there is has none: open).
    until = None if args.until is None or args.until == date.max else date.fromordinal(args.until.toordinal() + 1)
    out = Path(args.out)
    engine = open_database(settings)
    try:
        check_schema(engine)
        try:
            data = write_audit(engine, out, Period(args.since, until, args.user, args.account))
        except OSError as exc:
            raise TrackerError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    verdict = "ok" if data.integrity.ok else "BROKEN (see the report's integrity section)"
    print(f"audit report written to {out.resolve()} ({out.stat().st_size:,} bytes); verify: {verdict}")
    return 0 if data.integrity.ok else 1
