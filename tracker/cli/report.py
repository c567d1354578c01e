"""``tracker report fees|fills|orders|positions``: the public views as a table for people, or CSV/JSON for machines.

CSV and JSON show money exactly: decimals as canonical text (``0.00000001``, never ``1E-8`` or a float), in JSON as
strings. The table, for people, shows each amount, price and fee with its market's decimals (``display_rows``:
``0.30000000`` BTC, ``61000.12`` USD, a volume-weighted ``entry_price`` rounded to cents rather than 29 digits); for a
market tracker does not know, exactly with trailing zeros stripped. Never an exponent. Times are ISO 8601 in UTC with
a ``Z``. ``--market`` is case-insensitive (``BTCUSD``, ``btc/usd``) and must name a market the database holds.
``--since`` is inclusive and ``--until`` exclusive; a bare date ``--until 2026-11-29`` means up to the end of that day.

The ledger kinds (``ledger``, ``balances``, ``transfers``, ``settlements``, ``self-trades``, ``liquidations``,
``discrepancies``) read ``v_ledger``, ``v_balances``, ``v_transfers`` and the other views through
``store/ledger_queries.py``. On every kind ``--account`` is the trade account (``0`` the main one, else a sub-account
id, as in the ledger contract: every view carries ``trade_account_id``) and ``--user`` the Bitstamp account (user id).
A row whose trade account is unknown (NULL) is left out by ``--account``. ``balances --until T`` gives the balances at T
(the exact sum of the ledger's legs before it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from tracker.bitstamp.ledger_channels import is_trade_account_id
from tracker.cli import add_common_flags, open_database
from tracker.config import load_settings
from tracker.domain.money import EXACT
from tracker.domain.money import format_decimal as canonical_text
from tracker.errors import TrackerError
from tracker.fake.markets import KNOWN_MARKETS

FORMATS = ("table", "csv", "json")
VIEW_KINDS = ("fees", "fills", "orders", "positions")
LEDGER_KINDS = ("ledger", "balances", "transfers", "settlements", "self-trades", "liquidations", "discrepancies")
KINDS = (*VIEW_KINDS, *LEDGER_KINDS)
NUMERIC_COLUMNS = frozenset(
    {"fills", "volume", "fees", "base_volume", "amount", "amount_filled", "amount_remaining", "price", "fee", "size",
     "entry_price", "realised_pnl", "balance", "balance_after", "rate", "exchange_total", "exchange_available",
     "exchange_reserved", "computed_total", "difference", "entries", "seq", "last_seq", "snapshot_seq", "entry_seq",
     "request_seq", "crypto_seq", "opened_seq", "resolved_seq", "acknowledged_seq", "type_code"}
)  # fmt: skip
# The unit of each money column of the reported views (docs/sql.md), for the market's display decimals.
BASE_COLUMNS = frozenset({"amount", "amount_filled", "amount_remaining", "size", "base_volume"})
PRICE_COLUMNS = frozenset({"price", "entry_price"})
QUOTE_COLUMNS = frozenset({"fee", "fees", "volume", "realised_pnl"})


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="print fees, fills, orders, positions, the ledger, balances, transfers, ... (table, csv or json)"
    )
    add_common_flags(parser)
    parser.add_argument("kind", choices=KINDS, help="what to report")
    parser.add_argument("--market", help="only this market (e.g. btcusd)")
    parser.add_argument(
        "--account",
        help="only this trade account: 0 the main one, else a sub-account id (rows whose trade account is unknown are"
        " left out)",
    )
    parser.add_argument(
        "--user", help="only this Bitstamp account (user id; several may share one database), for every kind"
    )
    parser.add_argument(
        "--since", type=parse_moment, help="from this UTC date or datetime, inclusive (2026-11-01 or 2026-11-01T12:00)"
    )
    parser.add_argument(
        "--until",
        type=parse_until,
        help="up to this UTC datetime, exclusive; a bare date includes that whole day",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.set_defaults(func=cmd_report)


def parse_moment(text: str) -> datetime:
    """A UTC date (midnight) or ISO datetime (naive means UTC; an offset is converted to UTC)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or datetime: {text!r} (use 2026-11-29 or 2026-11-29T13:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_until(text: str) -> datetime:
    moment = parse_moment(text)
    if len(text) != 10:
        return moment
    try:
        return moment + timedelta(days=1)
    except OverflowError:  # 9999-12-31: the whole day is every time there is
        return datetime.max.replace(tzinfo=UTC)


def format_value(value: Any) -> str | None:
    """One value as exact text (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return canonical_text(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns for people: numbers right-aligned, text left-aligned, empty for NULL."""
    cells = [[format_value(value) or "" for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    right = [name in NUMERIC_COLUMNS for name in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(columns)
    for row in rows:
        out.writerow(["" if (text := format_value(value)) is None else text for value in row])
    return buffer.getvalue()


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    return format_value(value)


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array of objects; decimals and times as strings, integers as numbers, NULL as null."""
    items = [{name: _json_value(value) for name, value in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(items, indent=1) + "\n"


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}


def market_places(market: str | None, column: str) -> int | None:
    """Display decimals of ``column`` for ``market``: Bitstamp's ``base_decimals`` for base amounts, its
    ``counter_decimals`` for prices and the quote currency's places for fees and volumes, as tracker knows them
    (tracker/fake/markets.py mirrors the exchange's ``markets/``); ``None`` when unknown."""
    known = KNOWN_MARKETS.get(market or "")
    if known is None:
        return None
    if column in BASE_COLUMNS:
        return known.amount_places
    if column in PRICE_COLUMNS:
        return known.price_places
    if column in QUOTE_COLUMNS:
        return known.quote_places
    return None


def display_decimal(value: Decimal, places: int | None) -> str:
    """``value`` with ``places`` decimals (rounded half-even, zero-padded), or exactly without trailing zeros when
    ``places`` is None. Plain notation always: ``Decimal("1E-8")`` is ``0.00000001``."""
    if places is None:
        return canonical_text(value)
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN, context=EXACT)
    return format(abs(rounded) if rounded.is_zero() else rounded, "f")  # never "-0.00"


def display_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows for the table: money as text with its market's decimals (see ``market_places``); other values as they
    are. Rows without a ``market`` column, or of a market tracker does not know, keep exact values."""
    if "market" not in columns:
        return [tuple(row) for row in rows]
    at = columns.index("market")
    out = []
    for row in rows:
        market = row[at]
        out.append(
            tuple(
                display_decimal(value, market_places(market, name)) if isinstance(value, Decimal) else value
                for name, value in zip(columns, row, strict=True)
            )
        )
    return out


def normalise_market(text: str) -> str:
    """``BTCUSD``, ``btc/usd`` and `` btcusd `` all name ``btcusd`` (the views hold the lowercase wire symbol)."""
    return text.strip().lower().replace("/", "")


def cmd_report(args: argparse.Namespace) -> int:
    import sys

    from tracker.store.migrate import check_schema
    from tracker.store.reports import ReportFilter, known_markets, read_report

    settings = load_settings(flags={"db_url": args.db_url})
    market = normalise_market(args.market) if args.market is not None else None
    if args.kind in LEDGER_KINDS and market is not None:
        raise TrackerError(f"--market applies to {', '.join(VIEW_KINDS)}; report {args.kind} has no market filter")
    if args.account is not None and not is_trade_account_id(args.account):
        raise TrackerError(
            f"--account {args.account}: not a trade account id (0 the main account, else a sub-account's number);"
            " the Bitstamp account is --user"
        )
    refuse_an_empty_window(args.since, args.until)
    engine = open_database(settings)
    try:
        check_schema(engine)
        if args.kind in LEDGER_KINDS:
            columns, rows = _ledger_report(engine, args)
        else:
            if market is not None and market not in (known := known_markets(engine)):
                # An unknown market would print an empty report, indistinguishable from "no fills there yet".
                raise TrackerError(
                    f"--market {args.market}: this database has no market {market!r}"
                    f" (known: {', '.join(known) if known else 'none yet'})"
                )
            where = ReportFilter(args.user, market, args.since, args.until, trade_account_id=args.account)
            report = read_report(engine, args.kind, where)
            columns, rows = report.columns, report.rows
            if args.format == "table":
                rows = display_rows(columns, rows)
        if not rows:
            refuse_unknown_accounts(engine, user=args.user, account=args.account)
    finally:
        engine.dispose()
    sys.stdout.write(FORMATTERS[args.format](columns, rows))
    return 0


def refuse_an_empty_window(since: datetime | None, until: datetime | None) -> None:
    """``--until`` not after ``--since`` selects nothing: an error, as for ``tracker audit``, not an empty output."""
    if since is not None and until is not None and until <= since:
        raise TrackerError(
            "--until is not after --since: the window is empty (--since is inclusive, --until exclusive; a bare"
            " --until date includes that day)"
        )


def refuse_unknown_accounts(engine: Any, *, user: str | None, account: str | None) -> None:
    """An empty result that is a mistake, not "nothing there yet", is an error (``report`` and ``export``):

    - a ``--user`` this database has never seen (a typo'd user id would print an empty report, like an unknown
      ``--market``, indistinguishable from an account with no activity);
    - an ``--account`` that is a Bitstamp account of this database: ``--account`` was the Bitstamp account for fees,
      fills, orders and positions before every view carried the trade account.
    """
    from tracker.store.reports import bitstamp_accounts

    if user is None and account is None:
        return
    known = bitstamp_accounts(engine)
    if user is not None and user not in known:
        raise TrackerError(
            f"--user {user}: this database has no Bitstamp account {user!r}"
            f" (known: {', '.join(known) if known else 'none yet'})"
        )
    if account is not None and account in known:
        raise TrackerError(
            f"--account {account} names no trade account here but is a Bitstamp account (user id) of this database:"
            f" --account is the trade account (0 the main one); use --user {account}"
        )


def _ledger_report(engine: Any, args: argparse.Namespace) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """A ledger kind: exact values in every format (a leg's currency, not a market, sets its decimals)."""
    from tracker.store.ledger_queries import LedgerFilter, read_ledger_report

    where = LedgerFilter(args.user, args.account, args.since, args.until)
    report = read_ledger_report(engine, args.kind, where)
    return report.columns, report.rows
