"""What reconciliation compares, read from REST answers (pure): a fill, an order's status, an open order, a balance.

Fills and statuses are read from the REST *entries* tracker appends (``rest_entries``), through the same parser the
projection uses (``parse_entry``), so the two sides of a comparison can never read one row two ways. Open orders and
balances are read from the answer rows directly: they are compared, not logged as facts of their own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tracker.bitstamp.parse import parse_entry
from tracker.bitstamp.wire import display_market_to_symbol, parse_rest_datetime
from tracker.domain.events import Fill, OrderStatusSnapshot
from tracker.domain.log import LogEntry, NewEntry
from tracker.domain.money import BadAmount, parse_decimal
from tracker.domain.reconcile import Balance, ExchangeFill, ExchangeOpenOrder, ExchangeOrderStatus


def parse_new_entry(entry: NewEntry) -> object:
    """An entry not yet in the log, read exactly as the projection will read it once it is (``parse_entry``)."""
    return parse_entry(
        LogEntry(seq=0, prev_hash="", hash="", **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)})
    )


def exchange_fill(entry: NewEntry) -> ExchangeFill | None:
    """The fill a REST entry describes, read exactly as the projection reads it (``parse_entry``)."""
    event = parse_new_entry(entry)
    if not isinstance(event, Fill):
        return None
    return ExchangeFill(event.trade_id, event.market, event.side, event.amount, event.price, event.fee)


def exchange_status(entry: NewEntry) -> ExchangeOrderStatus | None:
    """The order status a REST ``order_status/`` entry describes, read as the projection reads it."""
    event = parse_new_entry(entry)
    if not isinstance(event, OrderStatusSnapshot):
        return None
    return ExchangeOrderStatus(event.order_id, event.status, event.amount_remaining)


def open_order_row(row: dict[str, Any]) -> ExchangeOpenOrder | None:
    """One row of ``open_orders/``; None without an id. An unreadable amount is kept as unknown (None)."""
    order_id = row.get("id")
    if order_id is None:
        return None
    market = row.get("market") or row.get("currency_pair")
    try:
        remaining = parse_decimal(row["amount"]) if row.get("amount") is not None else None
    except BadAmount:
        remaining = None
    return ExchangeOpenOrder(
        str(order_id),
        display_market_to_symbol(market) if isinstance(market, str) else None,
        remaining,
        parse_rest_datetime(row.get("datetime")),
    )


def open_orders(rows: object) -> list[ExchangeOpenOrder]:
    """The readable rows of an ``open_orders/`` answer (anything but a list of objects reads as none)."""
    if not isinstance(rows, list):
        return []
    return [o for r in rows if isinstance(r, dict) and (o := open_order_row(r)) is not None]


def balances(rows: object) -> list[Balance]:
    """The rows of ``account_balances/`` with a currency and exact amounts; an unreadable row is left out."""
    out: list[Balance] = []
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict) or not r.get("currency"):
            continue
        try:
            out.append(
                Balance(
                    str(r["currency"]),
                    parse_decimal(r.get("total")),
                    parse_decimal(r.get("available")),
                    parse_decimal(r.get("reserved")),
                )
            )
        except BadAmount:
            continue
    return out


def int_or_minus_one(value: object) -> int:
    """A REST id or time as an int; -1 when it is not one (a cursor never moves to -1)."""
    try:
        return int(str(value))
    except ValueError:
        return -1
