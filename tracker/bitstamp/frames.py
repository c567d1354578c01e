"""Classification of raw WebSocket text and log entries built from private frames (pure, one JSON decoding).

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

Decoding: every frame is decoded once, by orjson when it can (a third of ``loads_exact``'s time; it runs for every
frame received), as ``parse.parse_entry`` does. What is read from the decoded frame here is text and integers only
(names, ids, times), never money, and orjson gives the same text and integers as ``loads_exact`` with one
exception: an integer beyond 64 bits comes out as a float. So a float where an id or a time is read means "decode
this frame again with ``loads_exact``" (``NeedExact``, ``entry_from_data``), and text orjson refuses (NaN, Infinity,
1e400, a lone surrogate escape, nesting deeper than 1,024, not JSON) goes to ``loads_exact``, which accepts or
refuses it as before. tests/test_frames_fast.py checks that both decoders give the same entries, on random frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from tracker.bitstamp.channels import Channel
from tracker.bitstamp.parse_fields import NeedExact, channel_of
from tracker.bitstamp.parse_fields import id_text as fast_id_text
from tracker.bitstamp.parse_fields import int_text as fast_int_text
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
from tracker.domain.frozen import fast_init
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


@fast_init  # one for every frame
@dataclass(frozen=True, slots=True)
class Data:
    """An event on a channel; ``text`` the exact frame. ``message`` is the frame decoded: by ``loads_exact`` when
    ``exact``, else by orjson, whose numbers with a fraction or an exponent (and integers beyond 64 bits) are floats:
    read text and integers from it, never money (the parser reads the payload again, exactly)."""

    channel: str
    event: str
    message: dict[str, Any]
    text: str
    exact: bool = True


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not logged: a control frame or a frame on a public channel (ingest drops it; late frames after unsubscribe)."""

    reason: str


Frame = Control | Data | Malformed


def classify(text: str, *, exact: bool = False) -> Frame:
    """Classify one WebSocket text frame. Never raises. ``exact``: decode with ``loads_exact`` only (see the module
    docstring; ``entry_from_data`` asks for it when the fast decoding made a float of an id or a time)."""
    message: Any = None
    fast = not exact
    if fast:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:  # also for text orjson refuses that loads_exact accepts (NaN, ...)
            fast = False
    if not fast:
        try:
            message = loads_exact(text)
        except (ValueError, RecursionError, ArithmeticError) as exc:  # decimal.InvalidOperation: 1e9999999999999999
            return Malformed(reason=f"not JSON: {exc}", text=text)
    if not isinstance(message, dict):
        return Malformed(reason=f"not a JSON object: {type(message).__name__}", text=text)
    event = message.get("event")
    channel = message.get("channel")
    if not isinstance(event, str) or not event:
        return Malformed(reason="missing or non-text 'event'", text=text)
    if event.startswith("bts:"):
        if fast:  # few and rare: read exactly (a code beyond 64 bits would be a float from orjson)
            return classify(text, exact=True)
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
    return Data(channel=channel, event=event, message=message, text=text, exact=not fast)


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
    """The ``NewEntry`` for a ``Data`` frame on a private channel (see the module docstring for keys). Never raises."""
    if not data.exact:
        try:
            return _entry(data, account, received_at, connection_id)
        except NeedExact:
            exact = classify(data.text, exact=True)
            if not isinstance(exact, Data):  # nesting json's recursion limit refuses and orjson's (1,024) does not
                reason = exact.reason if isinstance(exact, Malformed) else f"the exact decoder read {exact.event}"
                return _quarantine(data, reason, account, received_at, connection_id)
            data = exact
    return _entry(data, account, received_at, connection_id)


def _entry(
    data: Data, account: str, received_at: datetime, connection_id: str | None
) -> NewEntry | QuarantineItem | Ignored:
    """``entry_from_data``'s work; raises ``NeedExact`` (fast decoding only) for a float where an id or time is read.

    One piece on purpose (~95 lines): one branch per channel kind choosing its dedup key and indexed fields, side by
    side so the keys of all kinds can be compared at a glance (docs/bitstamp.md §2); it runs for every frame."""
    # The parser's readers for the fast decoding (a float where an id or time is read raises NeedExact), the wire's
    # for the exact one (where a float can only be NaN or Infinity: no id, as before).
    id_of, int_of = (id_text, int_text) if data.exact else (fast_id_text, fast_int_text)
    try:
        channel: Channel = channel_of(data.channel)
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
    ts_us = int_of(d.get("microtimestamp"))
    name = channel.name
    if not known:
        pass
    elif name == "my_orders":
        order_id = id_of(d, "id", "id_str")
        if order_id is None:
            return _quarantine(data, f"{event}: no order id", account, received_at, connection_id)
        fields["order_id"] = order_id
        if event_id is not None:
            key = f"{prefix}:ev:{event_id}"
    elif name == "my_trades":
        trade_id = id_of(d, "id", "id_str")
        if trade_id is None:
            return _quarantine(data, "trade: no trade id", account, received_at, connection_id)
        fields["trade_id"] = trade_id
        fields["order_id"] = id_of(d, "order_id", "order_id_str")
        fields["position_id"] = id_of(d, "position_id")
        key = f"{prefix}:trade:{trade_id}"
    elif name == "live_trades":
        buy = id_of(d, "buy_order_id", "buy_order_id_str")
        sell = id_of(d, "sell_order_id", "sell_order_id_str")
        if buy is None or sell is None:
            return _quarantine(data, "self_trade: no order ids", account, received_at, connection_id)
        if ts_us is None and (stamp := int_of(d.get("timestamp"))) is not None:
            ts_us = unix_us_by_magnitude(stamp)  # seconds on spot; perp frames have been seen in ms
        # Without any time the frame is still kept (docs/bitstamp.md §2.3 lists it; the parser projects it at its
        # receipt time, flagged): its own text tells it apart from another offset between the same two orders.
        key = (
            f"{prefix}:self_trade:{buy}:{sell}:{ts_us}"
            if ts_us is not None
            else f"{prefix}:self_trade:{buy}:{sell}:sha256:{sha256_text(data.text)}"
        )
    elif name == "my_settlements":
        tnx = id_of(d, "tnx_id")
        if tnx is None:
            return _quarantine(data, f"{event}: no tnx_id", account, received_at, connection_id)
        fields["position_id"] = id_of(d, "id")
        seconds = int_of(d.get("ts"))
        ts_us = None if seconds is None else seconds * 1_000_000
        key = f"{prefix}:{event}:{tnx}"
    elif name == "my_liquidations":
        position_id = id_of(d, "position_id")
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
        fields["order_id"] = id_of(d, "order_id", "order_id_str")
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
