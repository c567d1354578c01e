"""Private websocket events → domain events (docs/bitstamp.md §2): my_orders, my_trades, self_trade, settlements,
liquidation alerts, token settlements. ``account_order_data/`` replays carry the same order objects, so
``order_event`` serves the REST side too.

The hot constructors (``OrderEvent``, ``Fill``: a rebuild makes millions) are called positionally, in field order, one
argument a line with the field's name beside it: keyword arguments cost ~0.7 µs more a call.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import orjson

from tracker.bitstamp.parse_fields import (
    Bad,
    channel_of,
    dec,
    id_text,
    int_text,
    market_of,
    micro,
    obj_of,
    opt_dec,
    opt_text,
    req_id,
    seconds,
    side_code,
    side_word,
    unknown,
)
from tracker.bitstamp.wire import loads_exact, parse_rest_datetime, us_to_datetime
from tracker.domain.events import (
    DomainEvent,
    Fill,
    LiquidationAlert,
    OrderEvent,
    OrderEventKind,
    SelfTrade,
    Settlement,
    TokenReady,
)
from tracker.domain.log import Parseable

MARKET_PLACEHOLDER_BUY_PRICE: Final = Decimal(999999999)
MARKET_SUBTYPES: Final = frozenset({1, 2, 7})
ORDER_KINDS: Final[dict[str, OrderEventKind]] = {
    "order_created": "created",
    "order_changed": "changed",
    "order_deleted": "deleted",
    "order_replaced": "replaced",
    "stop_active": "stop_active",
    "stop_inactive": "stop_inactive",
}
LIQUIDATION_KINDS: Final = (
    "im_breach_warning",
    "im_breach",
    "mm_breach_warning",
    "liquidation_start",
    "liquidation_concluded",
)


def order_event(entry: Parseable, message: dict[str, Any], event: str) -> OrderEvent:
    """One my_orders frame, or one ``account_order_data/`` event (the same envelope fields and ``data``)."""
    kind = ORDER_KINDS.get(event)
    if kind is None:
        raise Bad(f"unknown order event {event!r}")
    d = obj_of(message.get("data"), "data")
    side = side_code(d.get("order_type"))
    price_raw = opt_dec(d, "price", "price_str")
    placeholder = price_raw is not None and (price_raw == 0 or price_raw == MARKET_PLACEHOLDER_BUY_PRICE)
    subtype = int_text(d.get("order_subtype"))
    occurred = micro(d) or seconds(d.get("datetime"))
    event_id = message.get("event_id")
    pre_event_id = message.get("pre_event_id")
    order_source = message.get("order_source")
    is_liquidation = d.get("is_liquidation")
    reduce_only = d.get("reduce_only")
    # Positional, in field order: keyword arguments cost ~0.7 µs more a call (a rebuild makes millions).
    return OrderEvent(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        kind,  # kind
        req_id(d, "id", "id_str"),  # order_id
        entry.market or market_of(entry),  # market (a ws entry's own, usually: no call)
        side,  # side
        dec(d, "amount", "amount_str"),  # amount_remaining
        opt_dec(d, "amount_traded"),  # amount_traded
        opt_dec(d, "amount_at_create"),  # amount_at_create
        None if placeholder else price_raw,  # price
        placeholder,  # price_is_placeholder
        placeholder or subtype in MARKET_SUBTYPES,  # is_market
        opt_text(d, "client_order_id"),  # client_order_id
        id_text(d, "orig_order_id", "orig_order_id_str"),  # orig_order_id
        event_id if isinstance(event_id, str) and event_id else None,  # event_id
        pre_event_id if isinstance(pre_event_id, str) and pre_event_id else None,  # pre_event_id
        order_source if isinstance(order_source, str) and order_source else None,  # order_source
        occurred,  # occurred_at
        entry.received_at,  # received_at
        id_text(message, "trade_account_id") or id_text(d, "trade_account_id"),  # trade_account_id
        is_liquidation if isinstance(is_liquidation, bool) else None,  # is_liquidation: a boolean, else None
        reduce_only if isinstance(reduce_only, bool) else None,  # reduce_only: a boolean, else None
        opt_dec(d, "stop_price"),  # stop_price
    )


def order_source_of(payload: str) -> str | None:
    """The top-level ``order_source`` of an order frame's text (``"orderbook"``, ``"stop_order"``, …), as
    ``OrderEvent.order_source`` has it: ``None`` when absent, empty, not a string, or the text is not a JSON object.

    For callers that hold a logged payload but not its parsed event (the gap watch follows the ``pre_event_id``
    chain per order source, docs/bitstamp.md §2.1). Never raises. The fast decoder first; the exact one only for
    text it refuses (``NaN`` literals), since no number is read here.
    """
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            message = loads_exact(payload)
        except (ValueError, RecursionError):
            return None
    source = message.get("order_source") if isinstance(message, dict) else None
    return source if isinstance(source, str) and source else None


def _fill(entry: Parseable, d: dict[str, Any]) -> Fill:
    # Positional, in field order: keyword arguments cost ~0.7 µs more a call (a rebuild makes millions).
    return Fill(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        req_id(d, "id", "id_str"),  # trade_id
        id_text(d, "order_id", "order_id_str"),  # order_id
        entry.market or market_of(entry),  # market (a ws entry's own, usually: no call)
        side_word(d.get("side")),  # side
        dec(d, "amount", "amount_str"),  # amount
        dec(d, "price", "price_str"),  # price
        dec(d, "fee", "fee_str"),  # fee
        micro(d) or entry.received_at,  # executed_at
        id_text(d, "position_id"),  # position_id
        d.get("is_liquidation") is True,  # is_liquidation
        id_text(d, "trade_account_id"),  # trade_account_id
        opt_text(d, "trade_type"),  # trade_type
        opt_text(d, "client_order_id"),  # client_order_id
    )


def _self_trade(entry: Parseable, d: dict[str, Any]) -> SelfTrade:
    market = market_of(entry)
    occurred = micro(d)
    from_receipt = False
    if occurred is None:
        ts = int_text(d.get("timestamp"))
        if ts is None:
            occurred, from_receipt = entry.received_at, True  # kept, flagged: never quarantined for a missing time
        else:
            occurred = us_to_datetime(ts * 1000 if market.endswith("-perp") else ts * 1_000_000)
    return SelfTrade(
        seq=entry.seq,
        account=entry.account,
        market=market,
        buy_order_id=req_id(d, "buy_order_id", "buy_order_id_str"),
        sell_order_id=req_id(d, "sell_order_id", "sell_order_id_str"),
        amount=dec(d, "amount", "amount_str"),
        price=opt_dec(d, "price", "price_str"),
        occurred_at=occurred,
        time_from_receipt=from_receipt,
        trade_type=int_text(d.get("type")),
        buyers_trade_account_id=id_text(d, "buyers_trade_account_id"),
        sellers_trade_account_id=id_text(d, "sellers_trade_account_id"),
    )


def _settlement(entry: Parseable, d: dict[str, Any], event: str) -> Settlement:
    if event == "settlement":
        return Settlement(
            seq=entry.seq,
            account=entry.account,
            source=entry.source,
            kind="settlement",
            transaction_id=req_id(d, "tnx_id"),
            position_id=id_text(d, "id"),
            ccy=opt_text(d, "ccy"),
            amount=dec(d, "as"),
            occurred_at=seconds(d.get("ts")),
            price_component=opt_dec(d, "ap"),
            trading_fee_component=opt_dec(d, "atf"),
            liquidation_fee_component=opt_dec(d, "alf"),
            funding_component=opt_dec(d, "afu"),
            socialized_loss_component=opt_dec(d, "asl"),
            settlement_price=opt_dec(d, "price"),
            strike_price=opt_dec(d, "sp"),
            settlement_type=opt_text(d, "typ"),
        )
    return Settlement(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        kind="insurance_fund_premium",
        transaction_id=req_id(d, "tnx_id"),
        position_id=id_text(d, "id") or id_text(d, "position_id"),
        ccy=opt_text(d, "ccy"),
        amount=dec(d, "amount"),
        occurred_at=seconds(d.get("ts")),
    )


def _liquidation(entry: Parseable, d: dict[str, Any], event: str) -> LiquidationAlert:
    for kind in LIQUIDATION_KINDS:
        if kind == event:
            occurred = micro(d)
            return LiquidationAlert(
                seq=entry.seq,
                account=entry.account,
                kind=kind,
                position_id=req_id(d, "position_id"),
                margin_mode=opt_text(d, "margin_mode"),
                occurred_at=occurred or entry.received_at,  # no microtimestamp: kept, at its receipt time, flagged
                initial_margin_ratio=opt_dec(d, "initial_margin_ratio"),
                maintenance_margin_ratio=opt_dec(d, "maintenance_margin_ratio"),
                time_from_receipt=occurred is None,
                alert_type=opt_text(d, "alert_type"),
                trade_account_id=id_text(d, "trade_account_id"),
            )
    raise Bad(f"unknown liquidation event {event!r}")


def _token_ready(entry: Parseable, d: dict[str, Any]) -> TokenReady:
    return TokenReady(
        seq=entry.seq,
        account=entry.account,
        action=opt_text(d, "action"),
        order_id=id_text(d, "order_id", "order_id_str"),
        instrument=opt_text(d, "instrument"),
        currency=opt_text(d, "token_security_currency"),
        quantity=opt_dec(d, "tokens_quantity"),
        occurred_at=parse_rest_datetime(d.get("datetime")),
    )


def parse_ws(entry: Parseable, loads: Callable[[str], Any]) -> DomainEvent:
    """The event of one private ws entry, its payload decoded with ``loads`` (fast or exact: see ``parse``)."""
    message = obj_of(loads(entry.payload), "frame")
    event = entry.event
    name = channel_of(entry.channel).name
    if name == "my_orders" and event in ORDER_KINDS:
        return order_event(entry, message, event)
    d = message.get("data")
    if name == "my_trades" and event == "trade":
        return _fill(entry, obj_of(d, "data"))
    if name == "live_trades" and event == "self_trade":
        return _self_trade(entry, obj_of(d, "data"))
    if name == "my_settlements" and event in ("settlement", "insurance_fund_premium"):
        return _settlement(entry, obj_of(d, "data"), event)
    if name == "my_liquidations" and event in LIQUIDATION_KINDS:
        return _liquidation(entry, obj_of(d, "data"), event)
    if name == "my_token_settlements" and event == "token_ready":
        return _token_ready(entry, obj_of(d, "data"))
    return unknown(entry, f"unknown event {event!r} on {name!r}")
