"""REST rows logged by backfill and reconcile → domain events (docs/bitstamp.md §5).

The ledger facts of issue 15 (``rest_ledger_row``, ``rest_balances``, ``rest_crypto_transaction``,
``rest_withdrawal_request``) are read by ``parse_ledger``; the per-market ``rest_user_transaction`` rows stay fills
here.

Each row was stored as canonical exact JSON by ``rest_entries`` (its ``event`` says which endpoint), so it is read
with ``loads_exact`` only: REST facts are few next to the websocket stream, and their numbers are often bare tokens
(``"btc_usd": 11170.21``) that the fast decoder would make floats.
"""

from __future__ import annotations

from typing import Any, Final

from tracker.bitstamp.parse_fields import (
    Bad,
    dec,
    flex_time,
    id_text,
    obj_of,
    opt_dec,
    opt_text,
    req_id,
    side_code,
    side_word,
    unknown,
)
from tracker.bitstamp.parse_ledger import (
    REST_BALANCES,
    REST_CRYPTO_TRANSACTION,
    REST_LEDGER_ROW,
    REST_WITHDRAWAL_REQUEST,
    balance_snapshot,
    crypto_transaction,
    ledger_row,
    withdrawal_request,
)
from tracker.bitstamp.parse_ws import order_event
from tracker.bitstamp.rest_entries import (
    REST_ORDER_EVENT,
    REST_ORDER_STATUS,
    REST_PERP_TRADE,
    REST_POSITION_SETTLEMENT,
    REST_USER_TRANSACTION,
    pair_key,
)
from tracker.bitstamp.wire import loads_exact, parse_rest_datetime
from tracker.domain.events import AccountTransaction, DomainEvent, Fill, OrderStatusSnapshot, Settlement
from tracker.domain.log import Parseable
from tracker.domain.money import parse_decimal

REST_SETTLEMENT_TYPES: Final[dict[object, str]] = {"PERIODIC": "P", "CLOSED": "C"}  # REST words → WS ``typ`` codes


def _user_transaction(entry: Parseable, row: dict[str, Any]) -> DomainEvent:
    """A type-2 row is one fill (its side from the base amount's sign, its price the pair-rate key's value, §5.1);
    any other row, and a self-trade row, is an ``AccountTransaction`` (its type code kept raw)."""
    tid = req_id(row, "id")
    type_code = str(row.get("type")).strip()
    occurred = parse_rest_datetime(row.get("datetime"))
    if type_code != "2" or row.get("self_trade") is True:
        label = type_code if row.get("self_trade") is not True else f"{type_code}/self_trade"
        return AccountTransaction(
            seq=entry.seq, account=entry.account, transaction_id=tid, type_code=label, occurred_at=occurred
        )
    pair = pair_key(row)
    if pair is None:
        raise Bad("trade row without a pair-rate key")
    base, quote = pair
    base_amount = parse_decimal(row[base])
    if base_amount == 0:
        raise Bad("trade row with zero base amount")
    if occurred is None:
        raise Bad("trade row without datetime")
    return Fill(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        trade_id=tid,
        order_id=id_text(row, "order_id"),
        market=entry.market or base + quote,
        side="buy" if base_amount > 0 else "sell",
        amount=abs(base_amount),
        price=parse_decimal(row[f"{base}_{quote}"]),
        fee=dec(row, "fee"),
        executed_at=occurred,
        position_id=None,
        is_liquidation=False,
    )


def _perp_trade(entry: Parseable, row: dict[str, Any]) -> Fill:
    executed = flex_time(row.get("datetime"))
    if executed is None:
        raise Bad("trade_history row without datetime")
    trade_type = row.get("type")
    return Fill(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        trade_id=req_id(row, "trade_id", "trade_id_str"),
        order_id=id_text(row, "order_id"),
        market=entry.market,
        side=side_word(row.get("side")),
        amount=abs(dec(row, "amount")),
        price=dec(row, "price"),
        fee=dec(row, "fee"),
        executed_at=executed,
        position_id=id_text(row, "position_id"),
        is_liquidation=isinstance(trade_type, str) and trade_type.upper() == "LIQUIDATION",
    )


def _settlement(entry: Parseable, row: dict[str, Any]) -> Settlement:
    return Settlement(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        kind="settlement",
        transaction_id=req_id(row, "transaction_id"),
        position_id=id_text(row, "position_id"),
        ccy=opt_text(row, "pnl_currency"),
        amount=dec(row, "pnl_settled"),
        occurred_at=flex_time(row.get("settlement_time")),
        price_component=opt_dec(row, "pnl_component_price"),
        trading_fee_component=opt_dec(row, "fees_component_trading"),
        liquidation_fee_component=opt_dec(row, "fees_component_liquidation"),
        funding_component=opt_dec(row, "pnl_component_funding"),
        socialized_loss_component=opt_dec(row, "pnl_component_socialized_loss"),
        settlement_price=opt_dec(row, "settlement_price"),
        strike_price=opt_dec(row, "strike_price"),
        settlement_type=REST_SETTLEMENT_TYPES.get(row.get("settlement_type"), opt_text(row, "settlement_type")),
    )


def _order_status(entry: Parseable, obj: dict[str, Any]) -> OrderStatusSnapshot:
    status = obj.get("status")
    if not isinstance(status, str):
        raise Bad("order_status without status")
    transactions = obj.get("transactions")
    return OrderStatusSnapshot(
        seq=entry.seq,
        account=entry.account,
        order_id=req_id(obj, "id"),
        market=entry.market,
        status=status,
        side=side_code(obj.get("type")),
        amount_remaining=opt_dec(obj, "amount_remaining"),
        client_order_id=opt_text(obj, "client_order_id"),
        transaction_count=len(transactions) if isinstance(transactions, list) else 0,
        received_at=entry.received_at,
    )


def parse_rest(entry: Parseable) -> DomainEvent:
    """The event of one REST entry (``source == "rest"``)."""
    event = entry.event
    # The ledger facts (``parse_ledger``): the balances answer is a list, the others one row each.
    if event == REST_LEDGER_ROW:
        return ledger_row(entry)
    if event == REST_BALANCES:
        return balance_snapshot(entry)
    if event == REST_CRYPTO_TRANSACTION:
        return crypto_transaction(entry)
    if event == REST_WITHDRAWAL_REQUEST:
        return withdrawal_request(entry)
    obj = obj_of(loads_exact(entry.payload), "row")
    if event == REST_USER_TRANSACTION:
        return _user_transaction(entry, obj)
    if event == REST_ORDER_EVENT:
        inner = obj.get("event")
        if not isinstance(inner, str):
            raise Bad("account_order_data event without event name")
        return order_event(entry, obj, inner)
    if event == REST_ORDER_STATUS:
        return _order_status(entry, obj)
    if event == REST_PERP_TRADE:
        return _perp_trade(entry, obj)
    if event == REST_POSITION_SETTLEMENT:
        return _settlement(entry, obj)
    return unknown(entry, f"unknown REST event {event!r}")
