"""Reading a user's Bitstamp CSV statement (either format, told apart by its header) into typed rows.

The new format's header starts ``ID,Account,Type,...`` and the legacy one's ``Type,Datetime,Account,...``
(bitstamp_csv.py has both and their sources). Columns after the standard ones (tracker's own ``Log seq``, or
anything a user added) are kept in ``cells`` and otherwise ignored. A malformed file is one ``StatementError`` line
naming the file, the line and the column: a bad number, a bad time, a row of the wrong width, a header that is
neither format.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Literal

from tracker.domain.money import BadAmount, parse_decimal
from tracker.errors import TrackerError
from tracker.export.bitstamp_csv import HEADER, LEGACY_HEADER, MONTHS, TYPE_ALIASES

StatementFormat = Literal["bitstamp", "bitstamp-legacy"]

_LEGACY_TIME: Final = re.compile(
    r"([A-Za-z]{3,9})\.? +(\d{1,2}), +(\d{4}),? +(\d{1,2}):(\d{2})(?::(\d{2}))? *([AaPp][Mm])"
)
_MONTH_INDEX: Final = {name.lower(): i + 1 for i, name in enumerate(MONTHS)}


class StatementError(TrackerError):
    """A statement file tracker cannot read (exit code 2): says which line and what to fix."""


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str  # upper case, "" when the statement names none


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One data row of a statement, parsed. ``type`` is the lower-case type with older spellings mapped to the
    current ones (``ripple deposit`` → ``deposit``); ``subtype`` lower case; money ``None`` when the cell is empty."""

    line: int
    fmt: StatementFormat
    cells: dict[str, str]
    id: str | None
    account: str
    type: str
    subtype: str
    occurred_at: datetime
    amount: Money | None
    value: Money | None
    rate: Money | None
    fee: Money | None
    order_id: str | None

    @property
    def minute_only(self) -> bool:
        return self.fmt == "bitstamp-legacy"


@dataclass(frozen=True, slots=True)
class Statement:
    fmt: StatementFormat
    header: tuple[str, ...]
    rows: list[StatementRow]


def detect(header: list[str]) -> StatementFormat | None:
    cleaned = [cell.strip() for cell in header]
    if tuple(cleaned[: len(HEADER)]) == HEADER:
        return "bitstamp"
    if tuple(cleaned[: len(LEGACY_HEADER)]) == LEGACY_HEADER:
        return "bitstamp-legacy"
    return None


def parse_statement(text: str, *, name: str = "statement") -> Statement:
    """Every row of the statement ``text`` (the file's content; ``name`` is how errors call it)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise StatementError(f"{name} is empty: expected a Bitstamp CSV statement (header ID,Account,Type,...)")
        fmt = detect(header)
        if fmt is None:
            raise StatementError(
                f"{name} line 1: not a Bitstamp statement header (expected {','.join(HEADER)} or"
                f" {','.join(LEGACY_HEADER)}); got {','.join(header)[:120]!r}"
            )
        columns = tuple(cell.strip() for cell in header)
        rows = []
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line (spreadsheets add them at the end)
            if len(cells) != len(columns):
                raise StatementError(
                    f"{name} line {line}: {len(cells)} cells, the header has {len(columns)}: fix or remove that row"
                )
            rows.append(row_of(dict(zip(columns, cells, strict=True)), fmt, line=line, name=name))
    except csv.Error as exc:
        raise StatementError(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None
    return Statement(fmt, columns, rows)


def row_of(cells: Mapping[str, str], fmt: StatementFormat, *, line: int, name: str = "statement") -> StatementRow:
    """One row's cells (header → text) parsed; raises ``StatementError`` naming ``line`` and the column."""

    def fail(column: str, what: str) -> StatementError:
        return StatementError(f"{name} line {line}: column {column}: {what}")

    def number(column: str, currency_column: str | None = None) -> Money | None:
        text = cells.get(column, "").strip()
        if not text:
            return None
        currency = cells.get(currency_column, "").strip() if currency_column else ""
        if fmt == "bitstamp-legacy":  # "1.50000000 BTC"
            parts = text.split()
            if len(parts) == 1 and column == "Fee":  # tracker's own export of a fee whose currency is unknown
                parts.append("")
            if len(parts) != 2:
                raise fail(column, f"expected an amount and a currency, like '1.5 BTC': {text!r}")
            text, currency = parts
        try:
            value = parse_decimal(text.replace(",", "") if fmt == "bitstamp-legacy" else text)
        except BadAmount:
            raise fail(column, f"not a decimal number: {text!r}") from None
        return Money(value, currency.upper())

    if fmt == "bitstamp":
        when = _iso_time(cells["Datetime"].strip())
        if when is None:
            raise fail("Datetime", f"not an ISO 8601 time like 2024-01-05T15:04:05Z: {cells['Datetime']!r}")
        entry_id: str | None = cells["ID"].strip()
        if not entry_id:
            raise fail("ID", "empty: every row of the new format has Bitstamp's id")
        subtype = cells["Subtype"]
        amount, value = number("Amount", "Amount currency"), number("Value", "Value currency")
        rate, fee = number("Rate", "Rate currency"), number("Fee", "Fee currency")
        order_id = cells["Order ID"].strip() or None
    else:
        when = legacy_time(cells["Datetime"].strip())
        if when is None:
            raise fail("Datetime", f"not a time like 'Jan. 05, 2024, 03:04 PM': {cells['Datetime']!r}")
        entry_id = (cells.get("ID") or "").strip() or None  # tracker's own column, when the file came from tracker
        subtype = cells["Sub Type"]
        amount, value, rate, fee = number("Amount"), number("Value"), number("Rate"), number("Fee")
        order_id = None
    type_text = cells["Type"].strip()
    if not type_text:
        raise fail("Type", "empty")
    return StatementRow(
        line=line,
        fmt=fmt,
        cells=dict(cells),
        id=entry_id,
        account=cells["Account"].strip(),
        type=TYPE_ALIASES.get(type_text.lower(), type_text.lower()),
        subtype=subtype.strip().lower(),
        occurred_at=when,
        amount=amount,
        value=value,
        rate=rate,
        fee=fee,
        order_id=order_id,
    )


def _iso_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace(" UTC", "Z"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def legacy_time(text: str) -> datetime | None:
    """``Jan. 05, 2024, 03:04 PM`` (UTC) as a datetime; also AP-style month names (``March``, ``Sept.``) [G: the
    legacy export may spell months the Django way]. None when it is not such a time."""
    match = _LEGACY_TIME.fullmatch(text)
    if match is None:
        return None
    month_name, day, year, hour, minute, second, half = match.groups()
    month = _MONTH_INDEX.get(month_name[:3].lower())
    if month is None:
        return None
    clock = int(hour) % 12 + (12 if half.lower() == "pm" else 0)
    try:
        return datetime(int(year), month, int(day), clock, int(minute), int(second or 0), tzinfo=UTC)
    except ValueError:
        return None
