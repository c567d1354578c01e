"""Log entry → domain event. ``parse_entry`` maps every entry (ws, rest, tracker) to exactly one event, never raises.

Anything it cannot read becomes ``Unknown`` with a reason (counted by the projection). Wire quirks handled
(docs/bitstamp.md §0, §2, §5 and gotchas 1-7):

- ids as text: ``id_str``/``order_id_str`` first, else the raw JSON token (the payload is parsed Decimal-preserving);
- money from the ``*_str`` twins where they exist, else the exact token; never a float;
- ``microtimestamp`` (µs) → aware UTC; settlements' ``ts`` and REST ``settlement_time`` are seconds; a perp
  ``timestamp`` is milliseconds; REST ``datetime`` is ``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` UTC;
- market-order placeholder prices (``999999999``/``999999999.00`` and ``0``) become ``price=None`` with
  ``price_is_placeholder``; the projection keeps the last real price.

This module owns the decoding policy (the fast decoder first, the exact one when needed) and the turning of failures
into ``Unknown``. The work is in one module per source, sharing the field readers of ``parse_fields``:
``parse_ws`` (private websocket events), ``parse_rest`` (REST rows), ``parse_tracker`` (the tracker's own entries).
The names other modules import from here (``parse_entry``, the event tables) are re-exported below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from tracker.bitstamp.parse_fields import Bad, NeedExact, id_text, int_text, unknown
from tracker.bitstamp.parse_rest import REST_SETTLEMENT_TYPES, parse_rest
from tracker.bitstamp.parse_tracker import LIFECYCLE_EVENTS, parse_tracker
from tracker.bitstamp.parse_typed import TYPED_FAILURES
from tracker.bitstamp.parse_typed import fill as typed_fill
from tracker.bitstamp.parse_typed import order_event as typed_order_event
from tracker.bitstamp.parse_ws import (
    LIQUIDATION_KINDS,
    MARKET_PLACEHOLDER_BUY_PRICE,
    MARKET_SUBTYPES,
    ORDER_KINDS,
    order_source_of,
    parse_ws,
)
from tracker.bitstamp.wire import loads_exact
from tracker.domain.events import DomainEvent, Unknown
from tracker.domain.log import Parseable
from tracker.domain.money import BadAmount

__all__ = [
    "LIFECYCLE_EVENTS",
    "LIQUIDATION_KINDS",
    "MARKET_PLACEHOLDER_BUY_PRICE",
    "MARKET_SUBTYPES",
    "ORDER_KINDS",
    "REST_SETTLEMENT_TYPES",
    "id_text",
    "int_text",
    "order_source_of",
    "parse_entry",
]


def parse_entry(entry: Parseable) -> DomainEvent:
    """The domain event of one log entry. Never raises: anything unreadable is ``Unknown`` with the reason."""
    if entry.source == "ws":
        # The hot shapes (order events, trades) typed by msgspec first (parse_typed.py): it returns exactly what
        # parse_ws would, or raises for anything unusual, and then the entry is read below as if it had not tried.
        typed = _TYPED.get(entry.event)
        if typed is not None:
            try:
                return typed(entry)
            except TYPED_FAILURES:
                pass
        # The fast decoder first; the exact one when it cannot read the text, a number came out as a float, or the
        # entry is Unknown (so its reason is the exact decoder's: a float would show in it as 0.0, not Decimal('0.0')).
        # ``parse_ws`` called here, not through ``_parse``: every exception ``_parse`` would turn into ``Unknown``,
        # or let escape to be decoded again, sends the entry to the exact decoder all the same (the same event, one
        # call and one ``match`` fewer for each of the rebuild's millions of entries). Any other escapes, as there.
        try:
            event = parse_ws(entry, orjson.loads)
        except _FAST_PATH_FAILURES:
            pass
        else:
            if type(event) is not Unknown:
                return event
    return _parse(entry, loads_exact)


_TYPED: Final[dict[str, Callable[[Parseable], DomainEvent]]] = {
    **dict.fromkeys(ORDER_KINDS, typed_order_event),
    "trade": typed_fill,
}

# What ``_parse`` catches (its ``Unknown`` cases; ``Bad`` and ``BadAmount`` are ``ValueError``s) and what it lets
# escape to be decoded again (``orjson.JSONDecodeError``, a ``ValueError``, and ``NeedExact``).
_FAST_PATH_FAILURES: Final = (
    NeedExact,
    ValueError,
    TypeError,
    KeyError,
    ArithmeticError,
    OverflowError,
    RecursionError,
)


def _parse(entry: Parseable, loads: Callable[[str], Any]) -> DomainEvent:
    """One decoding attempt. With the fast decoder, ``JSONDecodeError`` and ``NeedExact`` escape to ``parse_entry``
    (which decodes again exactly); with ``loads_exact`` everything becomes an event."""
    try:
        match entry.source:
            case "ws":
                return parse_ws(entry, loads)
            case "rest":
                return parse_rest(entry)
            case "tracker":
                return parse_tracker(entry)
            case _:  # the type says it cannot happen; a row another (newer) tracker wrote can: kept as Unknown
                return unknown(entry, f"unknown source {entry.source!r}")  # type: ignore[unreachable]
    except (Bad, BadAmount) as exc:
        return unknown(entry, str(exc))
    except orjson.JSONDecodeError:
        raise  # (a ValueError) the caller decodes again with loads_exact
    except NeedExact:
        if loads is not loads_exact:
            raise
        # loads_exact makes floats only of the NaN and Infinity literals (json's extension): not numbers we read
        return unknown(entry, "NaN or Infinity where a number was expected")
    except (ValueError, TypeError, KeyError, ArithmeticError, OverflowError, RecursionError) as exc:
        return unknown(entry, f"{type(exc).__name__}: {exc}")
