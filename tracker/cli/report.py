"""``tracker report fees|fills|orders|positions``: the public views as a table for people, or CSV/JSON for machines.

Every format shows money exactly: decimals as canonical text (``0.00000001``, never ``1E-8`` or a float), in JSON as
strings. Times are ISO 8601 in UTC with a ``Z``. ``--since`` is inclusive and ``--until`` exclusive; a bare date
``--until 2026-11-29`` means up to the end of that day.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from tracker.cli import add_common_flags
from tracker.config import load_settings
from tracker.domain.money import format_decimal as canonical_text

FORMATS = ("table", "csv", "json")
KINDS = ("fees", "fills", "orders", "positions")
NUMERIC_COLUMNS = frozenset(
    {"fills", "volume", "fees", "base_volume", "amount", "amount_filled", "amount_remaining", "price", "fee", "size",
     "entry_price", "realised_pnl"}
)  # fmt: skip


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="print fees per day, fills, orders or positions (table, csv or json)"
    )
    add_common_flags(parser)
    parser.add_argument("kind", choices=KINDS, help="what to report")
    parser.add_argument("--market", help="only this market (e.g. btcusd)")
    parser.add_argument("--account", help="only this account (several may share one database)")
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
    return moment + timedelta(days=1) if len(text) == 10 else moment


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


def cmd_report(args: argparse.Namespace) -> int:
    import sys

    from tracker.store.engine import open_engine
    from tracker.store.migrate import check_schema
    from tracker.store.reports import ReportFilter, read_report

    settings = load_settings(flags={"db_url": args.db_url})
    engine = open_engine(settings.db_url, write=False)
    try:
        check_schema(engine)
        report = read_report(engine, args.kind, ReportFilter(args.account, args.market, args.since, args.until))
    finally:
        engine.dispose()
    sys.stdout.write(FORMATTERS[args.format](report.columns, report.rows))
    return 0
