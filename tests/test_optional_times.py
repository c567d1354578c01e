"""An event without its timestamp is kept, projected at its receipt time and flagged: never quarantined for that
alone (docs/bitstamp.md §2.3, §2.6: the seed document's liquidation fields carry no timestamp at all)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from tracker.bitstamp.frames import Data, classify, entry_from_data
from tracker.bitstamp.parse import parse_entry
from tracker.domain.events import LiquidationAlert, SelfTrade
from tracker.domain.log import LogEntry, NewEntry

RECEIVED = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
UID = "314159"


def frame(channel: str, event: str, data: dict[str, object]) -> str:
    return json.dumps({"event": event, "channel": channel, "data": data})


def log_entry(text: str) -> tuple[NewEntry, LogEntry]:
    data = classify(text)
    assert isinstance(data, Data)
    entry = entry_from_data(data, account=UID, received_at=RECEIVED)
    assert isinstance(entry, NewEntry), entry
    logged = LogEntry(
        seq=7, prev_hash="", hash="", **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    )
    return entry, logged


@pytest.mark.parametrize("with_time", [True, False])
def test_a_liquidation_alert_without_microtimestamp_is_kept_and_flagged(with_time: bool) -> None:
    data: dict[str, object] = {"position_id": "77", "margin_mode": "CROSS", "initial_margin_ratio": "0.5"}
    if with_time:
        data["microtimestamp"] = "1764583200000000"
    entry, logged = log_entry(frame(f"private-my_liquidations-{UID}", "liquidation_start", data))
    event = parse_entry(logged)
    assert isinstance(event, LiquidationAlert)
    assert event.time_from_receipt is (not with_time)
    assert event.occurred_at == (datetime(2025, 12, 1, 10, 0, tzinfo=UTC) if with_time else RECEIVED)
    # Two different alerts without a time stay two facts (their own text keys them; with a time, position and time
    # are the key, as before); the same frame twice is one.
    other, _ = log_entry(frame(f"private-my_liquidations-{UID}", "liquidation_start", {**data, "margin_mode": "X"}))
    assert (entry.dedup_key == other.dedup_key) is with_time
    again, _ = log_entry(frame(f"private-my_liquidations-{UID}", "liquidation_start", data))
    assert again.dedup_key == entry.dedup_key


def test_a_self_trade_without_any_time_is_kept_and_flagged() -> None:
    data = {"buy_order_id": 1, "sell_order_id": 2, "amount": "0.5", "amount_str": "0.5", "price_str": "100"}
    _, logged = log_entry(frame(f"private-live_trades_btcusd-{UID}", "self_trade", data))
    event = parse_entry(logged)
    assert isinstance(event, SelfTrade)
    assert event.time_from_receipt and event.occurred_at == RECEIVED
