"""Test helpers: frames and REST rows through entry building, a fake log (seq numbers) and the parser."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from tracker.bitstamp.frames import entry_from_frame
from tracker.bitstamp.parse import parse_entry
from tracker.domain.events import DomainEvent
from tracker.domain.log import LogEntry, NewEntry, QuarantineItem

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
UID = "314159"


def to_log(entry: NewEntry, seq: int) -> LogEntry:
    fields = {f.name: getattr(entry, f.name) for f in dataclasses.fields(NewEntry)}
    return LogEntry(seq=seq, prev_hash="", hash="", **fields)


class Log:
    """Appends entries with increasing seq, dropping exact duplicates by dedup key (like the store)."""

    def __init__(self, account: str = "acc") -> None:
        self.account = account
        self.entries: list[LogEntry] = []
        self.keys: set[str] = set()

    def append(self, entry: NewEntry | QuarantineItem | object) -> DomainEvent | None:
        assert isinstance(entry, NewEntry), entry
        if entry.dedup_key in self.keys:
            return None
        self.keys.add(entry.dedup_key)
        log_entry = to_log(entry, len(self.entries) + 1)
        self.entries.append(log_entry)
        return parse_entry(log_entry)

    def ws(self, message: dict[str, Any] | str) -> DomainEvent | None:
        text = message if isinstance(message, str) else json.dumps(message)
        return self.append(entry_from_frame(text, account=self.account, received_at=NOW, connection_id="c"))

    def events(self) -> list[DomainEvent]:
        return [parse_entry(e) for e in self.entries]


def order_frame(
    event: str,
    order_id: str,
    *,
    market: str = "btcusd",
    side: int = 0,
    amount: str = "1",
    amount_at_create: str | None = "1",
    amount_traded: str = "0",
    price: str = "100",
    us: int = 1_700_000_000_000_000,
    event_id: str | None = None,
    pre_event_id: str | None = None,
    order_source: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": int(order_id),
        "id_str": order_id,
        "order_type": side,
        "datetime": str(us // 1_000_000),
        "microtimestamp": str(us),
        "amount_str": amount,
        "amount_traded": amount_traded,
        "price_str": price,
        **extra,
    }
    if amount_at_create is not None:
        data["amount_at_create"] = amount_at_create
    frame: dict[str, Any] = {"event": event, "channel": f"private-my_orders_{market}-{UID}", "data": data}
    if event_id is not None:
        frame["event_id"] = event_id
    if pre_event_id is not None:
        frame["pre_event_id"] = pre_event_id
    if order_source is not None:
        frame["order_source"] = order_source
    return frame


def trade_frame(
    trade_id: str,
    order_id: str,
    *,
    market: str = "btcusd",
    side: str = "buy",
    amount: str = "1",
    price: str = "100",
    fee: str = "0.1",
    us: int = 1_700_000_000_500_000,
    position_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event": "trade",
        "channel": f"private-my_trades_{market}-{UID}",
        "data": {
            "id": int(trade_id),
            "order_id": order_id,
            "side": side,
            "amount": amount,
            "price": price,
            "fee": fee,
            "microtimestamp": str(us),
            "trade_account_id": 0,
            "position_id": position_id,
        },
    }
