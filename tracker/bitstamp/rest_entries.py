"""Log entries for REST-learned facts (pure; the backfill and reconcile tasks call these).

A REST fact is stored as the canonical JSON of its row (``dumps_canonical``: sorted keys, exact decimals), with
``source='rest'``, ``channel`` = the endpoint path and these events and dedup keys:

- ``user_transactions/`` row → ``rest_user_transaction``, key ``rest:{account}:user_transactions:{id}``
- ``account_order_data/`` event → ``rest_order_event`` (the original event name stays inside the payload), key
  ``rest:{account}:account_order_data:{event_id}`` (content hash if the event has no usable event_id)
- ``order_status/`` response → ``rest_order_status``, key ``rest:{account}:order_status:{id}:sha256:{hash}`` (the
  answer changes over time; each distinct answer is a fact)
- ``trade_history/`` row (perp) → ``rest_perp_trade``, key ``rest:{account}:trade_history:{trade_id}``
- ``position_settlement_transactions/`` row → ``rest_position_settlement``, key
  ``rest:{account}:position_settlement_transactions:{transaction_id}``

Rows are parsed with ``loads_exact`` by the caller (floats as ``Decimal``) so the canonical text is exact.
A row without the id its key needs becomes a ``QuarantineItem`` (kind ``malformed``). Builders never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from tracker.bitstamp.wire import (
    datetime_to_us,
    display_market_to_symbol,
    dumps_canonical,
    id_text,
    int64_or_none,
    int_text,
    parse_rest_datetime,
    sha256_text,
    unix_us_by_magnitude,
)
from tracker.domain.log import NewEntry, QuarantineItem

USER_TRANSACTIONS: Final = "user_transactions/"
ACCOUNT_ORDER_DATA: Final = "account_order_data/"
ORDER_STATUS: Final = "order_status/"
TRADE_HISTORY: Final = "trade_history/"
POSITION_SETTLEMENTS: Final = "position_settlement_transactions/"

REST_USER_TRANSACTION: Final = "rest_user_transaction"
REST_ORDER_EVENT: Final = "rest_order_event"
REST_ORDER_STATUS: Final = "rest_order_status"
REST_PERP_TRADE: Final = "rest_perp_trade"
REST_POSITION_SETTLEMENT: Final = "rest_position_settlement"
REST_EVENTS: Final = frozenset(
    {REST_USER_TRANSACTION, REST_ORDER_EVENT, REST_ORDER_STATUS, REST_PERP_TRADE, REST_POSITION_SETTLEMENT}
)


def dump_or_none(obj: object) -> str | None:
    """The canonical JSON of a received row, or None when it cannot be encoded (builders never raise)."""
    try:
        return dumps_canonical(obj)
    except (TypeError, ValueError, RecursionError):
        return None


def reject(reason: str, obj: object, account: str, channel: str, received_at: datetime) -> QuarantineItem:
    """A REST row no builder can make a fact of: kept in the quarantine as received."""
    return QuarantineItem(
        kind="malformed",
        reason=reason,
        raw=dump_or_none(obj) or repr(obj),
        received_at=received_at,
        account=account,
        source="rest",
        channel=channel,
    )


def pair_key(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """The pair-rate key of a ``user_transactions`` row: ``a_b`` where ``a`` and ``b`` are both keys of the row."""
    for key in row:
        base, sep, quote = key.partition("_")
        if sep and base and quote and "_" not in quote and base in row and quote in row:
            return base, quote
    return None


def _us(value: datetime | None) -> int | None:
    return None if value is None else datetime_to_us(value)


def entry_from_user_transaction(
    row: object,
    *,
    account: str,
    received_at: datetime,
    markets_by_pair: Mapping[str, str],
    market: str | None = None,
) -> NewEntry | QuarantineItem:
    """``markets_by_pair`` maps the pair-rate key (``"btc_usd"``) to the market symbol (``"btcusd"``).

    ``market``: the symbol when the rows came from ``user_transactions/<market>/``; it wins over the pair key (spot
    ``btcusd`` and perp ``btcusd-perp`` share the key ``btc_usd``).
    """
    if not isinstance(row, dict):
        return reject("user_transactions row is not an object", row, account, USER_TRANSACTIONS, received_at)
    tid = id_text(row, "id")
    payload = dump_or_none(row)
    if tid is None or payload is None:
        return reject("user_transactions row without id or not encodable", row, account, USER_TRANSACTIONS, received_at)
    pair = pair_key(row)
    if market is None and pair is not None:
        market = markets_by_pair.get(f"{pair[0]}_{pair[1]}", pair[0] + pair[1])
    is_trade = str(row.get("type")).strip() == "2"
    return NewEntry(
        account=account,
        source="rest",
        channel=USER_TRANSACTIONS,
        event=REST_USER_TRANSACTION,
        payload=payload,
        dedup_key=f"rest:{account}:user_transactions:{tid}",
        received_at=received_at,
        market=market,
        order_id=id_text(row, "order_id"),
        trade_id=tid if is_trade else None,
        exchange_ts_us=_us(parse_rest_datetime(row.get("datetime"))),
    )


def entry_from_account_order_event(
    obj: object, *, account: str, market: str, received_at: datetime
) -> NewEntry | QuarantineItem:
    """One element of an ``account_order_data/`` answer; ``market`` is the symbol asked for (``btcusd``)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
        return reject("account_order_data event without a data object", obj, account, ACCOUNT_ORDER_DATA, received_at)
    data = obj["data"]
    order_id = id_text(data, "id", "id_str")
    payload = dump_or_none(obj)
    if order_id is None or payload is None:
        return reject("account_order_data event without order id", obj, account, ACCOUNT_ORDER_DATA, received_at)
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) and obj.get("event_id") else None
    pre = obj.get("pre_event_id") if isinstance(obj.get("pre_event_id"), str) and obj.get("pre_event_id") else None
    key = (
        f"rest:{account}:account_order_data:{event_id}"
        if event_id is not None
        else f"rest:{account}:account_order_data:sha256:{sha256_text(payload)}"
    )
    return NewEntry(
        account=account,
        source="rest",
        channel=ACCOUNT_ORDER_DATA,
        event=REST_ORDER_EVENT,
        payload=payload,
        dedup_key=key,
        received_at=received_at,
        market=market,
        order_id=order_id,
        event_id=event_id,
        pre_event_id=pre,
        exchange_ts_us=int64_or_none(int_text(data.get("microtimestamp"))),
    )


def entry_from_order_status(
    obj: object, *, account: str, received_at: datetime, market: str | None = None
) -> NewEntry | QuarantineItem:
    """An ``order_status/`` answer. ``market`` defaults to the symbol of its ``market`` field (``BTC/USD``)."""
    if not isinstance(obj, dict):
        return reject("order_status answer is not an object", obj, account, ORDER_STATUS, received_at)
    order_id = id_text(obj, "id")
    payload = dump_or_none(obj)
    if order_id is None or payload is None:
        return reject("order_status answer without id", obj, account, ORDER_STATUS, received_at)
    if market is None and isinstance(obj.get("market"), str):
        market = display_market_to_symbol(obj["market"])
    return NewEntry(
        account=account,
        source="rest",
        channel=ORDER_STATUS,
        event=REST_ORDER_STATUS,
        payload=payload,
        dedup_key=f"rest:{account}:order_status:{order_id}:sha256:{sha256_text(payload)}",
        received_at=received_at,
        market=market,
        order_id=order_id,
    )


def entry_from_perp_trade(
    row: object, *, account: str, received_at: datetime, market: str | None = None
) -> NewEntry | QuarantineItem:
    """A derivatives ``trade_history/`` row."""
    if not isinstance(row, dict):
        return reject("trade_history row is not an object", row, account, TRADE_HISTORY, received_at)
    trade_id = id_text(row, "trade_id", "trade_id_str")
    payload = dump_or_none(row)
    if trade_id is None or payload is None:
        return reject("trade_history row without trade_id", row, account, TRADE_HISTORY, received_at)
    if market is None and isinstance(row.get("market"), str):
        market = display_market_to_symbol(row["market"])
    return NewEntry(
        account=account,
        source="rest",
        channel=TRADE_HISTORY,
        event=REST_PERP_TRADE,
        payload=payload,
        dedup_key=f"rest:{account}:trade_history:{trade_id}",
        received_at=received_at,
        market=market,
        order_id=id_text(row, "order_id"),
        trade_id=trade_id,
        position_id=id_text(row, "position_id"),
        exchange_ts_us=_us(parse_rest_datetime(row.get("datetime"))),
    )


def entry_from_position_settlement(row: object, *, account: str, received_at: datetime) -> NewEntry | QuarantineItem:
    """A ``position_settlement_transactions/`` row."""
    if not isinstance(row, dict):
        return reject("settlement row is not an object", row, account, POSITION_SETTLEMENTS, received_at)
    tnx = id_text(row, "transaction_id")
    payload = dump_or_none(row)
    if tnx is None or payload is None:
        return reject("settlement row without transaction_id", row, account, POSITION_SETTLEMENTS, received_at)
    market = display_market_to_symbol(row["market"]) if isinstance(row.get("market"), str) else None
    when = int_text(row.get("settlement_time"))
    return NewEntry(
        account=account,
        source="rest",
        channel=POSITION_SETTLEMENTS,
        event=REST_POSITION_SETTLEMENT,
        payload=payload,
        dedup_key=f"rest:{account}:position_settlement_transactions:{tnx}",
        received_at=received_at,
        market=market,
        position_id=id_text(row, "position_id"),
        exchange_ts_us=None if when is None else int64_or_none(unix_us_by_magnitude(when)),
    )
