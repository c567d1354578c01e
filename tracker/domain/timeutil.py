"""Time as tracker stores it: aware UTC datetimes and integer unix microseconds, converted exactly (no float).

``utc_now`` is the one wall clock: the edges pass it as the default of their injected ``wall``/``clock`` parameters
(tests pass their own), so nothing below them reads the time itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def datetime_to_us(value: datetime) -> int:
    """Unix microseconds of an aware datetime, exactly (integer arithmetic on the timedelta, never a float)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(us: int) -> datetime:
    """The aware UTC datetime of unix microseconds, exactly (``timedelta(0, 0, us)``: the same value as
    ``timedelta(microseconds=us)``, positional arguments cost about half)."""
    return EPOCH + timedelta(0, 0, us)
