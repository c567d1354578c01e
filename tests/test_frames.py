from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bitstamp_samples import PRIVATE_SAMPLE_FILES, frame_texts
from hypothesis import given
from hypothesis import strategies as st

from tracker.bitstamp.frames import (
    Control,
    Data,
    Ignored,
    Malformed,
    classify,
    dumps_canonical,
    entry_from_frame,
    loads_exact,
)
from tracker.domain.log import NewEntry, QuarantineItem

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def entry(text: str, account: str = "acc") -> NewEntry | QuarantineItem | Ignored:
    return entry_from_frame(text, account=account, received_at=NOW, connection_id="c1")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("bts_subscription_succeeded.json", "subscription_succeeded"),
        ("bts_unsubscription_succeeded.json", "unsubscription_succeeded"),
        ("bts_error.json", "error"),
        ("bts_heartbeat.json", "heartbeat"),
        ("bts_request_reconnect.json", "request_reconnect"),
    ],
)
def test_control_samples(name: str, kind: str) -> None:
    for text in frame_texts(name):
        frame = classify(text)
        assert isinstance(frame, Control)
        assert frame.kind == kind


def test_error_code_and_message() -> None:
    frames = [classify(t) for t in frame_texts("bts_error.json")]
    assert [(f.code, f.message) for f in frames if isinstance(f, Control)][-1] == (4009, "Connection is unauthorized.")
    sub = classify(frame_texts("bts_subscription_succeeded.json")[1])
    assert isinstance(sub, Control)
    assert sub.channel == "private-my_orders_ltcusd-4848701"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"channel":"x","data":{}}', "event"),
        ('{"event":"trade","data":{}}', "channel"),
        ('{"event":"trade","channel":"","data":{}}', "channel"),
    ],
)
def test_malformed(text: str, reason: str) -> None:
    frame = classify(text)
    assert isinstance(frame, Malformed)
    assert reason in frame.reason
    item = entry(text)
    assert isinstance(item, QuarantineItem)
    assert item.kind == "malformed"
    assert item.raw == text


@pytest.mark.parametrize("name", PRIVATE_SAMPLE_FILES)
def test_private_samples_become_entries(name: str) -> None:
    for text in frame_texts(name):
        assert isinstance(classify(text), Data)
        result = entry(text)
        assert isinstance(result, NewEntry), result
        assert result.payload == text
        assert result.source == "ws"
        assert result.account == "acc"
        assert result.dedup_key.startswith(f"ws:acc:{result.channel}:")
        assert result.connection_id == "c1"
        assert entry(text) == result  # same frame, same entry


def test_public_frames_ignored() -> None:
    for text in frame_texts("live_trades_trade.json"):
        assert isinstance(entry(text), Ignored)
    for text in frame_texts("bts_heartbeat.json"):
        assert isinstance(entry(text), Ignored)


def test_order_entry_fields() -> None:
    text = frame_texts("my_orders_order_replaced.json")[0]
    e = entry(text)
    assert isinstance(e, NewEntry)
    assert e.market == "btcusd-perp"
    assert e.order_id == "1500000002"
    assert e.event_id == "019f4ac8-5e3b-11ef-af00-3e9012000021"
    assert e.dedup_key == "ws:acc:private-my_orders_btcusd-perp-123456:ev:019f4ac8-5e3b-11ef-af00-3e9012000021"
    assert e.exchange_ts_us == 1712131201000000


def test_trade_big_ids_exact() -> None:
    text = (
        '{"event":"trade","channel":"private-my_trades_btcusd-perp-1","data":{"id":2001939623936278528,'
        '"order_id":"2050558851342339","amount":"0.1","price":"1","fee":"0","side":"buy","microtimestamp":"5",'
        '"position_id":"77"}}'
    )
    e = entry(text)
    assert isinstance(e, NewEntry)
    assert e.trade_id == "2001939623936278528"
    assert e.order_id == "2050558851342339"
    assert e.position_id == "77"
    assert e.dedup_key == "ws:acc:private-my_trades_btcusd-perp-1:trade:2001939623936278528"
    assert e.exchange_ts_us == 5


def test_keys_per_kind() -> None:
    settlement = entry(frame_texts("my_settlements_settlement.json")[0])
    assert isinstance(settlement, NewEntry)
    assert settlement.dedup_key.endswith(":settlement:123123")
    assert settlement.position_id == "1234567890"
    assert settlement.exchange_ts_us == 1712131200 * 1_000_000
    liq = entry(frame_texts("my_liquidations_liquidation_start.json")[0])
    assert isinstance(liq, NewEntry)
    assert liq.dedup_key.endswith(":liquidation_start:1234567890:1712131200000000")
    st_ = entry(frame_texts("live_trades_self_trade.json")[0])
    assert isinstance(st_, NewEntry)
    assert st_.dedup_key.endswith(":self_trade:28:281:1720288033933000")
    old = entry(frame_texts("my_orders_order_changed.json")[0])
    assert isinstance(old, NewEntry)
    assert ":order_changed:sha256:" in old.dedup_key


def test_account_in_key_and_distinct_facts() -> None:
    texts = [t for name in PRIVATE_SAMPLE_FILES for t in frame_texts(name)]
    keys = {}
    for text in texts:
        e = entry(text)
        assert isinstance(e, NewEntry)
        other = entry(text, account="other")
        assert isinstance(other, NewEntry)
        assert other.dedup_key != e.dedup_key
        keys.setdefault(e.dedup_key, set()).add(text)
    # two different samples never share a key unless they are the same fact re-sent (same ids)
    shared = {k: v for k, v in keys.items() if len(v) > 1}
    for key, group in shared.items():
        assert ":trade:" in key or ":ev:" in key, (key, group)


def test_unknown_event_is_appended_and_missing_ids_quarantined() -> None:
    unknown = '{"event":"order_exploded","channel":"private-my_orders_btcusd-1","data":{"x":1}}'
    e = entry(unknown)
    assert isinstance(e, NewEntry)
    assert ":order_exploded:sha256:" in e.dedup_key
    missing = '{"event":"trade","channel":"private-my_trades_btcusd-1","data":{"amount":"1"}}'
    q = entry(missing)
    assert isinstance(q, QuarantineItem)
    assert q.kind == "malformed"
    bad_channel = '{"event":"trade","channel":"private-my_trades_BTC-x","data":{}}'
    assert isinstance(entry(bad_channel), QuarantineItem)


def test_loads_exact_and_canonical() -> None:
    obj = loads_exact('{"b": 1e-8, "a": [61200.00, 2001939623936278528, "None", null, true]}')
    assert obj["b"] == Decimal("1e-8")
    assert dumps_canonical(obj) == '{"a":[61200.00,2001939623936278528,"None",null,true],"b":0.00000001}'
    assert loads_exact(dumps_canonical(obj)) == obj
    with pytest.raises(TypeError):
        dumps_canonical({"x": 0.1})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["trade", "order_created", "settlement", "self_trade", "liquidation_start", "zz"])
        | st.text(max_size=5),
        "channel": st.sampled_from(
            [
                "private-my_trades_btcusd-1",
                "private-my_orders_btcusd-perp-1",
                "private-live_trades_btcusd-1",
                "private-my_settlements-1",
                "private-my_liquidations-1",
                "live_trades_btcusd",
                "private-x",
            ]
        )
        | st.text(max_size=10),
        "data": json_values,
    },
    optional={"event_id": json_values, "pre_event_id": json_values},
)


@given(st.text(max_size=200) | json_values.map(json.dumps) | frame_like.map(json.dumps))
def test_entry_from_frame_never_raises(text: str) -> None:
    result = entry(text)
    assert isinstance(result, NewEntry | QuarantineItem | Ignored)
