"""Classification of raw WebSocket text and log entries built from private frames (pure, one ``json.loads``).

``classify(text)`` → ``Control`` (``bts:*``), ``Data`` (an event on a channel) or ``Malformed``.
``entry_from_data(data, ...)`` / ``entry_from_frame(text, ...)`` → ``NewEntry`` to append, ``QuarantineItem``, or
``Ignored`` for frames that are not ours to log (control frames, public channels: ingest drops them).

What is appended, what is quarantined:

- Every private-channel frame we can key is appended with ``payload`` = the frame's text, byte for byte.
- An **unknown event name** on a private channel is appended too (the log is the truth), keyed by a content hash;
  the parser maps it to an ``Unknown`` domain event that is counted.
- Quarantine (kind ``malformed``) only for what cannot be keyed: not JSON, not an object, no ``event`` or
  ``channel``, a private channel name that does not parse, a known event whose ``data`` is not an object or lacks
  the ids its key needs.

Dedup keys (``account`` is in every key; ``channel`` is the full private channel name, so market and user id are in it):

- ``my_orders`` with a top-level ``event_id``: ``ws:{account}:{channel}:ev:{event_id}``
- ``my_orders`` without ``event_id`` (old format): ``ws:{account}:{channel}:{event}:sha256:{sha256 of the text}``
- ``my_trades`` ``trade``: ``ws:{account}:{channel}:trade:{trade_id}``
- ``live_trades`` ``self_trade``: ``ws:{account}:{channel}:self_trade:{buy_order_id}:{sell_order_id}:{microtimestamp}``
- ``my_settlements`` ``settlement`` / ``insurance_fund_premium``: ``ws:{account}:{channel}:{event}:{tnx_id}``
- ``my_liquidations`` (the five alerts): ``ws:{account}:{channel}:{event}:{position_id}:{microtimestamp}``
- anything else (``token_ready``, unknown events, ...): ``ws:{account}:{channel}:{event}:sha256:{hash}``

Why these are right: a duplicated frame or a replay after reconnect carries the same ids, so it gets the same key
(and the store sees "duplicate" if the text is equal, "conflict" if it differs -- a real signal). Two different facts
differ in the keyed ids: an order event has a fresh ``event_id``; a trade id is unique per market; a settlement
transaction id is unique; two alerts of one kind for one position share a µs timestamp only if they are the same
alert. The content-hash fallback cannot merge two different facts unless their texts are identical, in which case
they are indistinguishable anyway (old-format ``my_orders`` frames always differ in remaining amount or event name).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from tracker.bitstamp.channels import Channel, parse_channel
from tracker.bitstamp.rest_entries import (
    entry_from_account_order_event,
    entry_from_order_status,
    entry_from_perp_trade,
    entry_from_position_settlement,
    entry_from_user_transaction,
)
from tracker.bitstamp.wire import (
    dumps_canonical,
    id_text,
    int64_or_none,
    int_text,
    loads_exact,
    sha256_text,
    unix_us_by_magnitude,
)
from tracker.domain.log import NewEntry, QuarantineItem

__all__ = [
    "CONTROL_EVENTS",
    "KNOWN_PRIVATE_EVENTS",
    "Control",
    "ControlKind",
    "Data",
    "Ignored",
    "Malformed",
    "classify",
    "dumps_canonical",
    "entry_from_account_order_event",
    "entry_from_data",
    "entry_from_frame",
    "entry_from_order_status",
    "entry_from_perp_trade",
    "entry_from_position_settlement",
    "entry_from_user_transaction",
    "loads_exact",
]

ControlKind = Literal[
    "subscription_succeeded", "unsubscription_succeeded", "error", "heartbeat", "request_reconnect", "other"
]
CONTROL_EVENTS: Final[dict[str, ControlKind]] = {
    "bts:subscription_succeeded": "subscription_succeeded",
    "bts:unsubscription_succeeded": "unsubscription_succeeded",
    "bts:error": "error",
    "bts:heartbeat": "heartbeat",
    "bts:request_reconnect": "request_reconnect",
}

ORDER_EVENTS: Final = frozenset(
    {"order_created", "order_changed", "order_deleted", "order_replaced", "stop_active", "stop_inactive"}
)
LIQUIDATION_EVENTS: Final = frozenset(
    {"im_breach_warning", "im_breach", "mm_breach_warning", "liquidation_start", "liquidation_concluded"}
)
KNOWN_PRIVATE_EVENTS: Final[dict[str, frozenset[str]]] = {
    "my_orders": ORDER_EVENTS,
    "my_trades": frozenset({"trade"}),
    "live_trades": frozenset({"self_trade"}),
    "my_settlements": frozenset({"settlement", "insurance_fund_premium"}),
    "my_liquidations": LIQUIDATION_EVENTS,
    "my_token_settlements": frozenset({"token_ready"}),
}


@dataclass(frozen=True, slots=True)
class Control:
    """A ``bts:*`` frame. ``code``/``message`` for ``bts:error``; ``kind`` ``other`` for an undocumented ``bts:*``."""

    kind: ControlKind
    event: str
    channel: str
    code: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """An event on a channel. ``message`` is the frame parsed with ``loads_exact``; ``text`` the exact frame."""

    channel: str
    event: str
    message: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not logged: a control frame or a frame on a public channel (ingest drops it; late frames after unsubscribe)."""

    reason: str


Frame = Control | Data | Malformed


def classify(text: str) -> Frame:
    """Classify one WebSocket text frame. Never raises."""
    try:
        message = loads_exact(text)
    except (ValueError, RecursionError, ArithmeticError) as exc:  # decimal.InvalidOperation: 1e9999999999999999999
        return Malformed(reason=f"not JSON: {exc}", text=text)
    if not isinstance(message, dict):
        return Malformed(reason=f"not a JSON object: {type(message).__name__}", text=text)
    event = message.get("event")
    channel = message.get("channel")
    if not isinstance(event, str) or not event:
        return Malformed(reason="missing or non-text 'event'", text=text)
    if event.startswith("bts:"):
        kind = CONTROL_EVENTS.get(event, "other")
        data = message.get("data")
        code: int | None = None
        msg: str | None = None
        if isinstance(data, dict):
            raw_code = data.get("code")
            code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
            raw_msg = data.get("message")
            msg = raw_msg if isinstance(raw_msg, str) else None
        channel_text = channel if isinstance(channel, str) else ""
        return Control(kind=kind, event=event, channel=channel_text, code=code, message=msg)
    if not isinstance(channel, str) or not channel:
        return Malformed(reason="missing or non-text 'channel'", text=text)
    return Data(channel=channel, event=event, message=message, text=text)


def entry_from_frame(
    text: str, *, account: str, received_at: datetime, connection_id: str | None = None
) -> NewEntry | QuarantineItem | Ignored:
    """Classify and build the log entry of one frame. Never raises."""
    frame = classify(text)
    match frame:
        case Malformed(reason=reason):
            return QuarantineItem(
                kind="malformed",
                reason=reason,
                raw=text,
                received_at=received_at,
                account=account,
                source="ws",
                connection_id=connection_id,
            )
        case Control(event=event):
            return Ignored(reason=f"control frame {event}")
        case Data():
            return entry_from_data(frame, account=account, received_at=received_at, connection_id=connection_id)


def _quarantine(
    data: Data, reason: str, account: str, received_at: datetime, connection_id: str | None
) -> QuarantineItem:
    return QuarantineItem(
        kind="malformed",
        reason=reason,
        raw=data.text,
        received_at=received_at,
        account=account,
        source="ws",
        channel=data.channel,
        connection_id=connection_id,
    )


def _top_text(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if isinstance(value, str) and value:
        return value
    return None


def entry_from_data(
    data: Data, *, account: str, received_at: datetime, connection_id: str | None = None
) -> NewEntry | QuarantineItem | Ignored:
    """The ``NewEntry`` for a ``Data`` frame on a private channel (see the module docstring for keys). Never raises.

    One piece on purpose (~95 lines): one branch per channel kind choosing its dedup key and indexed fields, side by
    side so the keys of all kinds can be compared at a glance (docs/bitstamp.md §2); it runs for every frame."""
    try:
        channel: Channel = parse_channel(data.channel)
    except ValueError as exc:
        return _quarantine(data, f"bad channel name: {exc}", account, received_at, connection_id)
    if not channel.private:
        return Ignored(reason=f"public channel {data.channel}")
    event = data.event
    message = data.message
    body = message.get("data")
    prefix = f"ws:{account}:{data.channel}"
    known = event in KNOWN_PRIVATE_EVENTS.get(channel.name, frozenset())
    if known and not isinstance(body, dict):
        return _quarantine(data, f"{event}: 'data' is not an object", account, received_at, connection_id)
    fields: dict[str, Any] = {}
    key: str | None = None
    d: dict[str, Any] = body if isinstance(body, dict) else {}
    event_id = _top_text(message, "event_id")
    pre_event_id = _top_text(message, "pre_event_id")
    ts_us = int_text(d.get("microtimestamp"))
    name = channel.name
    if not known:
        pass
    elif name == "my_orders":
        order_id = id_text(d, "id", "id_str")
        if order_id is None:
            return _quarantine(data, f"{event}: no order id", account, received_at, connection_id)
        fields["order_id"] = order_id
        if event_id is not None:
            key = f"{prefix}:ev:{event_id}"
    elif name == "my_trades":
        trade_id = id_text(d, "id", "id_str")
        if trade_id is None:
            return _quarantine(data, "trade: no trade id", account, received_at, connection_id)
        fields["trade_id"] = trade_id
        fields["order_id"] = id_text(d, "order_id", "order_id_str")
        fields["position_id"] = id_text(d, "position_id")
        key = f"{prefix}:trade:{trade_id}"
    elif name == "live_trades":
        buy = id_text(d, "buy_order_id", "buy_order_id_str")
        sell = id_text(d, "sell_order_id", "sell_order_id_str")
        if buy is None or sell is None:
            return _quarantine(data, "self_trade: no order ids", account, received_at, connection_id)
        if ts_us is None and (stamp := int_text(d.get("timestamp"))) is not None:
            ts_us = unix_us_by_magnitude(stamp)  # seconds on spot; perp frames have been seen in ms
        # Without any time the frame is still kept (docs/bitstamp.md §2.3 lists it; the parser projects it at its
        # receipt time, flagged): its own text tells it apart from another offset between the same two orders.
        key = (
            f"{prefix}:self_trade:{buy}:{sell}:{ts_us}"
            if ts_us is not None
            else f"{prefix}:self_trade:{buy}:{sell}:sha256:{sha256_text(data.text)}"
        )
    elif name == "my_settlements":
        tnx = id_text(d, "tnx_id")
        if tnx is None:
            return _quarantine(data, f"{event}: no tnx_id", account, received_at, connection_id)
        fields["position_id"] = id_text(d, "id")
        seconds = int_text(d.get("ts"))
        ts_us = None if seconds is None else seconds * 1_000_000
        key = f"{prefix}:{event}:{tnx}"
    elif name == "my_liquidations":
        position_id = id_text(d, "position_id")
        if position_id is None:
            return _quarantine(data, f"{event}: no position_id", account, received_at, connection_id)
        fields["position_id"] = position_id
        # The seed document's field list for liquidations has no timestamp at all (docs/bitstamp.md §2.6; guess
        # either way): an alert without one is kept, keyed by its own text, and projected at its receipt time.
        key = (
            f"{prefix}:{event}:{position_id}:{ts_us}"
            if ts_us is not None
            else f"{prefix}:{event}:{position_id}:sha256:{sha256_text(data.text)}"
        )
    elif name == "my_token_settlements":
        fields["order_id"] = id_text(d, "order_id", "order_id_str")
    if key is None:
        key = f"{prefix}:{event}:sha256:{sha256_text(data.text)}"
    return NewEntry(
        account=account,
        source="ws",
        channel=data.channel,
        event=event,
        payload=data.text,
        dedup_key=key,
        received_at=received_at,
        market=channel.market,
        order_id=fields.get("order_id"),
        trade_id=fields.get("trade_id"),
        position_id=fields.get("position_id"),
        event_id=event_id,
        pre_event_id=pre_event_id,
        exchange_ts_us=int64_or_none(ts_us),
        connection_id=connection_id,
    )
