"""Log entry → domain event. ``parse_entry`` maps every entry (ws, rest, tracker) to exactly one event, never raises.

Anything it cannot read becomes ``Unknown`` with a reason (counted by the projection). Wire quirks handled here:

- ids as text: ``id_str``/``order_id_str`` first, else the raw JSON token (the payload is parsed Decimal-preserving);
- money from the ``*_str`` twins where they exist, else the exact token; never a float;
- ``microtimestamp`` (µs) → aware UTC; settlements' ``ts`` and REST ``settlement_time`` are seconds; a perp
  ``timestamp`` is milliseconds; REST ``datetime`` is ``"YYYY-MM-DD HH:MM:SS[.ffffff]"`` UTC;
- market-order placeholder prices (``999999999``/``999999999.00`` and ``0``) become ``price=None`` with
  ``price_is_placeholder``; the projection keeps the last real price.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

import orjson

from tracker.bitstamp.channels import Channel, parse_channel
from tracker.bitstamp.rest_entries import (
    REST_ORDER_EVENT,
    REST_ORDER_STATUS,
    REST_PERP_TRADE,
    REST_POSITION_SETTLEMENT,
    REST_USER_TRANSACTION,
    pair_key,
)
from tracker.bitstamp.wire import dumps_canonical, loads_exact, parse_rest_datetime, us_to_datetime
from tracker.bitstamp.wire import id_text as _wire_id_text
from tracker.bitstamp.wire import int_text as _wire_int_text
from tracker.domain import tracker_events as te
from tracker.domain.events import (
    AccountTransaction,
    BackfillCompleted,
    Discrepancy,
    DiscrepancyResolved,
    DomainEvent,
    Fill,
    GapDetected,
    Lifecycle,
    LiquidationAlert,
    OrderEvent,
    OrderEventKind,
    OrderStatusSnapshot,
    SelfTrade,
    Settlement,
    Side,
    TokenReady,
    Unknown,
)
from tracker.domain.log import Parseable
from tracker.domain.money import BadAmount, parse_decimal

MARKET_PLACEHOLDER_BUY_PRICE: Final = Decimal(999999999)
REST_SETTLEMENT_TYPES: Final[dict[object, str]] = {"PERIODIC": "P", "CLOSED": "C"}  # REST words → WS ``typ`` codes
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
LIFECYCLE_EVENTS: Final = frozenset(
    {te.CONNECTED, te.SUBSCRIBED, te.SUBSCRIBE_FAILED, te.WS_ERROR, te.RECONNECT_REQUESTED, te.CLOSED, te.STALLED,
     te.RECONCILED}
)  # fmt: skip


@lru_cache(maxsize=1024)
def _channel(text: str) -> Channel:
    """Channels are few; parsing each once keeps the rebuild fast. Raises ``ValueError`` like ``parse_channel``."""
    return parse_channel(text)


class _Bad(ValueError):
    """A payload we cannot read; becomes ``Unknown``."""


class _NeedExact(Exception):
    """A number the parser reads came out of the fast decoder as a float: parse the entry again from ``loads_exact``.

    ``orjson`` (the fast path) makes every JSON number with a fraction or an exponent a float, and also an integer
    beyond 64 bits; ``loads_exact`` makes the former ``Decimal`` and the latter ``int``. So a float reaching the
    parser means "this entry needs the exact decoder", never a value to use. Not a ``ValueError``: nothing else may
    catch it."""


def id_text(obj: dict[str, Any], key: str, str_key: str | None = None) -> str | None:
    """``wire.id_text``; a float where the id should be (an integer beyond 64 bits, from the fast decoder) needs the
    exact decoder (``_NeedExact``)."""
    result = _wire_id_text(obj, key, str_key)
    if result is None and type(obj.get(key)) is float:
        raise _NeedExact
    return result


def int_text(value: object) -> int | None:
    """``wire.int_text``; a float needs the exact decoder (``_NeedExact``)."""
    result = _wire_int_text(value)
    if result is None and type(value) is float:
        raise _NeedExact
    return result


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} is not an object")
    return value


def _decimal(value: object) -> Decimal:
    """``parse_decimal`` with a fast path for the usual decimal text (the rebuild parses millions): ``Decimal()``
    strips whitespace like ``parse_decimal`` does; anything unusual goes to ``parse_decimal`` for its exact error."""
    if type(value) is str:
        try:
            result = Decimal(value)
        except ArithmeticError:
            return parse_decimal(value)
        if result.is_finite():
            return result
    elif type(value) is Decimal and value.is_finite():
        return value
    elif type(value) is float:
        raise _NeedExact
    return parse_decimal(value)


def _dec(d: dict[str, Any], key: str, str_key: str | None = None) -> Decimal:
    if str_key is not None:
        value = d.get(str_key)
        if value is not None:
            return _decimal(value)
    value = d.get(key)
    if value is None:
        raise _Bad(f"missing {key!r}")
    return _decimal(value)


def _opt_dec(d: dict[str, Any], key: str, str_key: str | None = None) -> Decimal | None:
    if str_key is not None:
        value = d.get(str_key)
        if value is not None:
            return _decimal(value)
    value = d.get(key)
    return None if value is None else _decimal(value)


def _req_id(d: dict[str, Any], key: str, str_key: str | None = None) -> str:
    value = id_text(d, key, str_key)
    if value is None:
        raise _Bad(f"missing id {key!r}")
    return value


def _opt_text(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) and value else None


def _micro(d: dict[str, Any]) -> datetime | None:
    value = d.get("microtimestamp")
    if type(value) is str and len(value) < 19 and value.isascii() and value.isdigit():  # the usual: µs digits
        return us_to_datetime(int(value))
    us = int_text(value)
    return None if us is None else us_to_datetime(us)


def _seconds(value: object) -> datetime | None:
    seconds = int_text(value)
    return None if seconds is None else us_to_datetime(seconds * 1_000_000)


def _flex_time(value: object) -> datetime | None:
    """REST datetime text, or a unix number whose unit is guessed from its size (s, ms or µs)."""
    parsed = parse_rest_datetime(value)
    if parsed is not None:
        return parsed
    number = int_text(value)
    if number is None:
        return None
    if abs(number) >= 10**14:
        return us_to_datetime(number)
    if abs(number) >= 10**11:
        return us_to_datetime(number * 1000)
    return us_to_datetime(number * 1_000_000)


def _side_code(value: object) -> Side | None:
    code = int_text(value)
    if code == 0:
        return "buy"
    if code == 1:
        return "sell"
    return None


def _side_word(value: object) -> Side:
    word = value.strip().lower() if isinstance(value, str) else None
    if word == "buy":
        return "buy"
    if word == "sell":
        return "sell"
    raise _Bad(f"bad side {value!r}")


def _market(entry: Parseable) -> str:
    if entry.market:
        return entry.market
    market = _channel(entry.channel).market
    if market is None:
        raise _Bad("no market")
    return market


def _order_event(entry: Parseable, message: dict[str, Any], event: str) -> OrderEvent:
    kind = ORDER_KINDS.get(event)
    if kind is None:
        raise _Bad(f"unknown order event {event!r}")
    d = _obj(message.get("data"), "data")
    side = _side_code(d.get("order_type"))
    price_raw = _opt_dec(d, "price", "price_str")
    placeholder = price_raw is not None and (price_raw == 0 or price_raw == MARKET_PLACEHOLDER_BUY_PRICE)
    subtype = int_text(d.get("order_subtype"))
    occurred = _micro(d) or _seconds(d.get("datetime"))
    event_id = message.get("event_id")
    pre_event_id = message.get("pre_event_id")
    order_source = message.get("order_source")
    # Positional, in field order: keyword arguments cost ~0.7 µs more a call (a rebuild makes millions).
    return OrderEvent(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        kind,  # kind
        _req_id(d, "id", "id_str"),  # order_id
        _market(entry),  # market
        side,  # side
        _dec(d, "amount", "amount_str"),  # amount_remaining
        _opt_dec(d, "amount_traded"),  # amount_traded
        _opt_dec(d, "amount_at_create"),  # amount_at_create
        None if placeholder else price_raw,  # price
        placeholder,  # price_is_placeholder
        placeholder or subtype in MARKET_SUBTYPES,  # is_market
        _opt_text(d, "client_order_id"),  # client_order_id
        id_text(d, "orig_order_id", "orig_order_id_str"),  # orig_order_id
        event_id if isinstance(event_id, str) and event_id else None,  # event_id
        pre_event_id if isinstance(pre_event_id, str) and pre_event_id else None,  # pre_event_id
        order_source if isinstance(order_source, str) and order_source else None,  # order_source
        occurred,  # occurred_at
        entry.received_at,  # received_at
    )


def _ws_fill(entry: Parseable, d: dict[str, Any]) -> Fill:
    # Positional, in field order: keyword arguments cost ~0.7 µs more a call (a rebuild makes millions).
    return Fill(
        entry.seq,  # seq
        entry.account,  # account
        entry.source,  # source
        _req_id(d, "id", "id_str"),  # trade_id
        id_text(d, "order_id", "order_id_str"),  # order_id
        _market(entry),  # market
        _side_word(d.get("side")),  # side
        _dec(d, "amount", "amount_str"),  # amount
        _dec(d, "price", "price_str"),  # price
        _dec(d, "fee", "fee_str"),  # fee
        _micro(d) or entry.received_at,  # executed_at
        id_text(d, "position_id"),  # position_id
        d.get("is_liquidation") is True,  # is_liquidation
    )


def _self_trade(entry: Parseable, d: dict[str, Any]) -> SelfTrade:
    market = _market(entry)
    occurred = _micro(d)
    if occurred is None:
        ts = int_text(d.get("timestamp"))
        if ts is None:
            raise _Bad("self_trade without a time")
        occurred = us_to_datetime(ts * 1000 if market.endswith("-perp") else ts * 1_000_000)
    return SelfTrade(
        seq=entry.seq,
        account=entry.account,
        market=market,
        buy_order_id=_req_id(d, "buy_order_id", "buy_order_id_str"),
        sell_order_id=_req_id(d, "sell_order_id", "sell_order_id_str"),
        amount=_dec(d, "amount", "amount_str"),
        price=_opt_dec(d, "price", "price_str"),
        occurred_at=occurred,
    )


def _ws_settlement(entry: Parseable, d: dict[str, Any], event: str) -> Settlement:
    if event == "settlement":
        return Settlement(
            seq=entry.seq,
            account=entry.account,
            source=entry.source,
            kind="settlement",
            transaction_id=_req_id(d, "tnx_id"),
            position_id=id_text(d, "id"),
            ccy=_opt_text(d, "ccy"),
            amount=_dec(d, "as"),
            occurred_at=_seconds(d.get("ts")),
            price_component=_opt_dec(d, "ap"),
            trading_fee_component=_opt_dec(d, "atf"),
            liquidation_fee_component=_opt_dec(d, "alf"),
            funding_component=_opt_dec(d, "afu"),
            socialized_loss_component=_opt_dec(d, "asl"),
            settlement_price=_opt_dec(d, "price"),
            strike_price=_opt_dec(d, "sp"),
            settlement_type=_opt_text(d, "typ"),
        )
    return Settlement(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        kind="insurance_fund_premium",
        transaction_id=_req_id(d, "tnx_id"),
        position_id=id_text(d, "id") or id_text(d, "position_id"),
        ccy=_opt_text(d, "ccy"),
        amount=_dec(d, "amount"),
        occurred_at=_seconds(d.get("ts")),
    )


def _liquidation(entry: Parseable, d: dict[str, Any], event: str) -> LiquidationAlert:
    for kind in LIQUIDATION_KINDS:
        if kind == event:
            occurred = _micro(d)
            if occurred is None:
                raise _Bad("liquidation alert without microtimestamp")
            return LiquidationAlert(
                seq=entry.seq,
                account=entry.account,
                kind=kind,
                position_id=_req_id(d, "position_id"),
                margin_mode=_opt_text(d, "margin_mode"),
                occurred_at=occurred,
                initial_margin_ratio=_opt_dec(d, "initial_margin_ratio"),
                maintenance_margin_ratio=_opt_dec(d, "maintenance_margin_ratio"),
            )
    raise _Bad(f"unknown liquidation event {event!r}")


def _token_ready(entry: Parseable, d: dict[str, Any]) -> TokenReady:
    return TokenReady(
        seq=entry.seq,
        account=entry.account,
        action=_opt_text(d, "action"),
        order_id=id_text(d, "order_id", "order_id_str"),
        instrument=_opt_text(d, "instrument"),
        currency=_opt_text(d, "token_security_currency"),
        quantity=_opt_dec(d, "tokens_quantity"),
        occurred_at=parse_rest_datetime(d.get("datetime")),
    )


def _parse_ws(entry: Parseable, loads: Callable[[str], Any]) -> DomainEvent:
    message = _obj(loads(entry.payload), "frame")
    event = entry.event
    name = _channel(entry.channel).name
    if name == "my_orders" and event in ORDER_KINDS:
        return _order_event(entry, message, event)
    d = message.get("data")
    if name == "my_trades" and event == "trade":
        return _ws_fill(entry, _obj(d, "data"))
    if name == "live_trades" and event == "self_trade":
        return _self_trade(entry, _obj(d, "data"))
    if name == "my_settlements" and event in ("settlement", "insurance_fund_premium"):
        return _ws_settlement(entry, _obj(d, "data"), event)
    if name == "my_liquidations" and event in LIQUIDATION_KINDS:
        return _liquidation(entry, _obj(d, "data"), event)
    if name == "my_token_settlements" and event == "token_ready":
        return _token_ready(entry, _obj(d, "data"))
    return _unknown(entry, f"unknown event {event!r} on {name!r}")


def _user_transaction(entry: Parseable, row: dict[str, Any]) -> DomainEvent:
    tid = _req_id(row, "id")
    type_code = str(row.get("type")).strip()
    occurred = parse_rest_datetime(row.get("datetime"))
    if type_code != "2" or row.get("self_trade") is True:
        label = type_code if row.get("self_trade") is not True else f"{type_code}/self_trade"
        return AccountTransaction(
            seq=entry.seq, account=entry.account, transaction_id=tid, type_code=label, occurred_at=occurred
        )
    pair = pair_key(row)
    if pair is None:
        raise _Bad("trade row without a pair-rate key")
    base, quote = pair
    base_amount = parse_decimal(row[base])
    if base_amount == 0:
        raise _Bad("trade row with zero base amount")
    if occurred is None:
        raise _Bad("trade row without datetime")
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
        fee=_dec(row, "fee"),
        executed_at=occurred,
        position_id=None,
        is_liquidation=False,
    )


def _perp_trade(entry: Parseable, row: dict[str, Any]) -> Fill:
    executed = _flex_time(row.get("datetime"))
    if executed is None:
        raise _Bad("trade_history row without datetime")
    trade_type = row.get("type")
    return Fill(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        trade_id=_req_id(row, "trade_id", "trade_id_str"),
        order_id=id_text(row, "order_id"),
        market=entry.market,
        side=_side_word(row.get("side")),
        amount=abs(_dec(row, "amount")),
        price=_dec(row, "price"),
        fee=_dec(row, "fee"),
        executed_at=executed,
        position_id=id_text(row, "position_id"),
        is_liquidation=isinstance(trade_type, str) and trade_type.upper() == "LIQUIDATION",
    )


def _rest_settlement(entry: Parseable, row: dict[str, Any]) -> Settlement:
    return Settlement(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        kind="settlement",
        transaction_id=_req_id(row, "transaction_id"),
        position_id=id_text(row, "position_id"),
        ccy=_opt_text(row, "pnl_currency"),
        amount=_dec(row, "pnl_settled"),
        occurred_at=_flex_time(row.get("settlement_time")),
        price_component=_opt_dec(row, "pnl_component_price"),
        trading_fee_component=_opt_dec(row, "fees_component_trading"),
        liquidation_fee_component=_opt_dec(row, "fees_component_liquidation"),
        funding_component=_opt_dec(row, "pnl_component_funding"),
        socialized_loss_component=_opt_dec(row, "pnl_component_socialized_loss"),
        settlement_price=_opt_dec(row, "settlement_price"),
        strike_price=_opt_dec(row, "strike_price"),
        settlement_type=REST_SETTLEMENT_TYPES.get(row.get("settlement_type"), _opt_text(row, "settlement_type")),
    )


def _order_status(entry: Parseable, obj: dict[str, Any]) -> OrderStatusSnapshot:
    status = obj.get("status")
    if not isinstance(status, str):
        raise _Bad("order_status without status")
    transactions = obj.get("transactions")
    return OrderStatusSnapshot(
        seq=entry.seq,
        account=entry.account,
        order_id=_req_id(obj, "id"),
        market=entry.market,
        status=status,
        side=_side_code(obj.get("type")),
        amount_remaining=_opt_dec(obj, "amount_remaining"),
        client_order_id=_opt_text(obj, "client_order_id"),
        transaction_count=len(transactions) if isinstance(transactions, list) else 0,
        received_at=entry.received_at,
    )


def _parse_rest(entry: Parseable) -> DomainEvent:
    obj = _obj(loads_exact(entry.payload), "row")
    event = entry.event
    if event == REST_USER_TRANSACTION:
        return _user_transaction(entry, obj)
    if event == REST_ORDER_EVENT:
        inner = obj.get("event")
        if not isinstance(inner, str):
            raise _Bad("account_order_data event without event name")
        return _order_event(entry, obj, inner)
    if event == REST_ORDER_STATUS:
        return _order_status(entry, obj)
    if event == REST_PERP_TRADE:
        return _perp_trade(entry, obj)
    if event == REST_POSITION_SETTLEMENT:
        return _rest_settlement(entry, obj)
    return _unknown(entry, f"unknown REST event {event!r}")


def _detail(data: dict[str, Any]) -> str:
    return dumps_canonical(data)


def _parse_tracker(entry: Parseable) -> DomainEvent:
    message = _obj(loads_exact(entry.payload), "tracker payload")
    data = _obj(message.get("data", {}), "data")
    event = entry.event
    if event in LIFECYCLE_EVENTS:
        return Lifecycle(
            seq=entry.seq,
            account=entry.account,
            kind=event,
            channel=entry.channel,
            connection_id=entry.connection_id,
            received_at=entry.received_at,
        )
    if event == te.GAP_DETECTED:
        return GapDetected(
            seq=entry.seq,
            account=entry.account,
            market=entry.market,
            channel=entry.channel,
            detail=_detail(data),
            received_at=entry.received_at,
        )
    if event == te.BACKFILL_COMPLETED:
        return BackfillCompleted(
            seq=entry.seq,
            account=entry.account,
            market=entry.market,
            channel=entry.channel,
            detail=_detail(data),
            received_at=entry.received_at,
        )
    if event == te.DISCREPANCY:
        return Discrepancy(
            seq=entry.seq,
            account=entry.account,
            # a LogRecord (what the projector reads) has no dedup_key: an id from the seq, the same for both
            discrepancy_id=id_text(data, "id") or id_text(data, "discrepancy_id") or f"discrepancy:{entry.seq}",
            kind=_opt_text(data, "kind") or "reconciliation",
            entity=_opt_text(data, "entity") or "",
            detail=_opt_text(data, "detail") or _detail(data),
        )
    if event == te.DISCREPANCY_RESOLVED:
        discrepancy_id = id_text(data, "id") or id_text(data, "discrepancy_id")
        if discrepancy_id is None:
            raise _Bad("discrepancy_resolved without id")
        return DiscrepancyResolved(
            seq=entry.seq,
            account=entry.account,
            discrepancy_id=discrepancy_id,
            detail=_opt_text(data, "detail") or "",
        )
    return _unknown(entry, f"unknown tracker event {event!r}")


def _unknown(entry: Parseable, reason: str) -> Unknown:
    return Unknown(
        seq=entry.seq,
        account=entry.account,
        source=entry.source,
        channel=entry.channel,
        event=entry.event,
        reason=reason,
    )


def parse_entry(entry: Parseable) -> DomainEvent:
    """The domain event of one log entry. Never raises: anything unreadable is ``Unknown`` with the reason."""
    if entry.source == "ws":
        # The fast decoder first; the exact one when it cannot read the text, a number came out as a float, or the
        # entry is Unknown (so its reason is the exact decoder's: a float would show in it as 0.0, not Decimal('0.0')).
        try:
            event = _parse(entry, orjson.loads)
        except (orjson.JSONDecodeError, _NeedExact):
            pass
        else:
            if type(event) is not Unknown:
                return event
    return _parse(entry, loads_exact)


def _parse(entry: Parseable, loads: Callable[[str], Any]) -> DomainEvent:
    try:
        match entry.source:
            case "ws":
                return _parse_ws(entry, loads)
            case "rest":
                return _parse_rest(entry)
            case "tracker":
                return _parse_tracker(entry)
            case _:
                return _unknown(entry, f"unknown source {entry.source!r}")
    except (_Bad, BadAmount) as exc:
        return _unknown(entry, str(exc))
    except orjson.JSONDecodeError:
        raise  # (a ValueError) the caller decodes again with loads_exact
    except _NeedExact:
        if loads is not loads_exact:
            raise
        # loads_exact makes floats only of the NaN and Infinity literals (json's extension): not numbers we read
        return _unknown(entry, "NaN or Infinity where a number was expected")
    except (ValueError, TypeError, KeyError, ArithmeticError, OverflowError, RecursionError) as exc:
        return _unknown(entry, f"{type(exc).__name__}: {exc}")
