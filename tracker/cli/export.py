"""``tracker export --format F``: the ledger (``v_ledger``) as a CSV that Bitstamp, Koinly, CoinTracking, BittyTax or
rotki reads.

One row per ledger entry (a trade is one row: what was sent, what was received, the fee), exact decimals, UTC to the
second, every row carrying the exchange's id and the log seq (docs/export.md names each format's columns, their
sources and the category of every ledger type). ``--account ID`` keeps one trade account (``0`` the main one, else a
sub-account id); ``--user`` one Bitstamp account when the database holds several. ``--since`` is inclusive, ``--until``
exclusive (a bare date: that whole day). Written to stdout, or to ``--out FILE``; a summary goes to stderr. Exit 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tracker.bitstamp.ledger_channels import is_trade_account_id
from tracker.cli import add_common_flags, open_database
from tracker.cli.report import parse_moment, parse_until, refuse_an_empty_window, refuse_unknown_accounts
from tracker.config import load_settings
from tracker.errors import TrackerError
from tracker.export.formats import FORMATS


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="the ledger as CSV for Bitstamp, Koinly, CoinTracking, BittyTax or rotki (docs/export.md)"
    )
    add_common_flags(parser)
    parser.add_argument("--format", required=True, choices=FORMATS, help="which tool's CSV (docs/export.md)")
    parser.add_argument("--since", type=parse_moment, help="from this UTC date or datetime, inclusive")
    parser.add_argument("--until", type=parse_until, help="up to this UTC datetime, exclusive; a bare date: that day")
    parser.add_argument("--account", help="only this trade account: 0 the main account, else a sub-account id")
    parser.add_argument("--user", help="only this Bitstamp account (user id) when the database holds several")
    parser.add_argument("--out", type=Path, help="write to this file instead of stdout")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="bitstamp formats: leave out tracker's own columns (Log seq, ID), for tools that want Bitstamp's header",
    )
    parser.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tracker.export.formats import render, table
    from tracker.export.ledger import group_entries
    from tracker.store.ledger_queries import LedgerFilter, read_legs
    from tracker.store.migrate import check_schema

    settings = load_settings(flags={"db_url": args.db_url})
    if args.account is not None and not is_trade_account_id(args.account):
        raise TrackerError(
            f"--account {args.account}: not a trade account id (0 the main account, else a sub-account's number);"
            " the Bitstamp account is --user"
        )
    refuse_an_empty_window(args.since, args.until)
    engine = open_database(settings)
    try:
        check_schema(engine)
        legs = read_legs(engine, LedgerFilter(args.user, args.account, args.since, args.until))
        if not legs:
            refuse_unknown_accounts(engine, user=args.user, account=args.account)
    finally:
        engine.dispose()
    entries = group_entries(legs)
    result = table(args.format, entries, plain=args.plain)
    text = render(result)
    if args.out is None:
        sys.stdout.write(text)
        where = "stdout"
    else:
        try:
            args.out.write_text(text, encoding="utf-8", newline="")
        except OSError as exc:
            raise TrackerError(
                f"--out {args.out}: cannot write it ({exc.strerror or exc}): choose another path"
            ) from None
        where = str(args.out)
    note = f"tracker export: {len(result.rows)} row(s) from {len(entries)} ledger entries ({args.format}) to {where}"
    if result.skipped:
        other = "rotki-trades" if args.format == "rotki" else "rotki"
        note += f"; {result.skipped} entries this format cannot hold left out (export them with --format {other})"
    sys.stderr.write(note + "\n")
    return 0
