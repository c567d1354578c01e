"""One value as the exact text the document shows, whichever backend it came from (pure).

SQLite hands money back as its stored decimal text and times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text when a query
does not type its columns (reflected views, aggregates); PostgreSQL hands ``Decimal`` and aware ``datetime``. Both
become the same text here: plain decimals (never an exponent, the scale as stored) and ``...Z`` UTC times.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from tracker.audit.model import Cell
from tracker.domain.money import plain_decimal


def cell_text(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%d %H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def decimal_of(value: Cell) -> Decimal:
    """The exact decimal of a money cell (Decimal, integer or decimal text); 0 for NULL."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool | datetime | date):
        raise TypeError(f"not a number: {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a decimal: {value!r}") from None


def moment_of(value: Cell) -> datetime | None:
    """An aware UTC datetime from a time cell (datetime, or SQLite's UTC text); None for NULL."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise TypeError(f"not a time: {value!r}")
