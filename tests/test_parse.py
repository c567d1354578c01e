from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bitstamp_samples import DATA, PRIVATE_SAMPLE_FILES, corpora, corpus_dirs, frame_texts, load, private_frame_texts
from hypothesis import given
from hypothesis import strategies as st
from pipeline import NOW, Log, order_frame, to_log

from tracker.bitstamp.frames import (
    entry_from_account_order_event,
    entry_from_order_status,
    entry_from_perp_trade,
    entry_from_position_settlement,
    entry_from_user_transaction,
)
from tracker.bitstamp.parse import order_source_of, parse_entry
from tracker.bitstamp.rest_entries import REST_EVENTS
from tracker.bitstamp.wire import loads_exact
from tracker.domain import tracker_events as te
from tracker.domain.events import (
    AccountTransaction,
    Discrepancy,
    DiscrepancyResolved,
    Fill,
    GapDetected,
    Lifecycle,
    LiquidationAlert,
    OrderEvent,
    OrderStatusSnapshot,
    SelfTrade,
    Settlement,
    TokenReady,
    Unknown,
)
from tracker.domain.log import LogRecord, NewEntry, QuarantineItem

EXPECTED = {
    "my_orders_order_created.json": OrderEvent,
    "my_orders_order_changed.json": OrderEvent,
    "my_orders_order_deleted.json": OrderEvent,
    "my_orders_order_replaced.json": OrderEvent,
    "my_orders_stop_active.json": OrderEvent,
    "my_orders_stop_inactive.json": OrderEvent,
    "my_trades_trade.json": Fill,
    "live_trades_self_trade.json": SelfTrade,
    "my_settlements_settlement.json": Settlement,
    "my_settlements_insurance_fund_premium.json": Settlement,
    "my_liquidations_liquidation_start.json": LiquidationAlert,
    "my_token_settlements_token_ready.json": TokenReady,
}


def test_expected_covers_all_private_samples() -> None:
    assert set(EXPECTED) == set(PRIVATE_SAMPLE_FILES)


@pytest.mark.parametrize("corpus", corpora())
@pytest.mark.parametrize("name", PRIVATE_SAMPLE_FILES)
def test_private_samples_parse(name: str, corpus: Path) -> None:
    texts = frame_texts(name, corpus)
    assert texts or corpus != DATA, f"tests/data/{name} is empty"
    log = Log()
    for text in texts:
        event = log.ws(text)
        assert isinstance(event, EXPECTED[name]), event


def test_sample_details() -> None:
    replaced = Log().ws(frame_texts("my_orders_order_replaced.json")[0])
    assert isinstance(replaced, OrderEvent)
    assert replaced.kind == "replaced"
    assert replaced.orig_order_id == "1500000001"
    assert replaced.price == Decimal("61500.00")
    assert replaced.occurred_at == datetime(2024, 4, 3, 8, 0, 1, tzinfo=UTC)
    settlement = Log().ws(frame_texts("my_settlements_settlement.json")[0])
    assert isinstance(settlement, Settlement)
    assert settlement.amount == Decimal("-1.5")
    assert settlement.price_component == Decimal("-1")
    assert settlement.trading_fee_component == Decimal("-0.25")
    assert settlement.settlement_type == "C"
    premium = Log().ws(frame_texts("my_settlements_insurance_fund_premium.json")[0])
    assert isinstance(premium, Settlement)
    assert (premium.kind, premium.amount, premium.position_id) == ("insurance_fund_premium", Decimal("-0.5"), None)
    trades = [Log().ws(t) for t in frame_texts("my_trades_trade.json")]
    assert all(isinstance(t, Fill) for t in trades)
    perp = trades[2]
    assert isinstance(perp, Fill)
    assert (perp.market, perp.amount, perp.price, perp.position_id) == (
        "btcusd-perp",
        Decimal("0.1"),
        Decimal("61200.0"),
        None,
    )
    self_trade = Log().ws(frame_texts("live_trades_self_trade.json")[0])
    assert isinstance(self_trade, SelfTrade)
    assert (self_trade.buy_order_id, self_trade.sell_order_id, self_trade.amount) == ("28", "281", Decimal("1"))


@pytest.mark.parametrize("price", ["999999999", "999999999.00"])
def test_market_buy_placeholder(price: str) -> None:
    event = Log().ws(order_frame("order_created", "5", amount="0", amount_at_create="0", price=price))
    assert isinstance(event, OrderEvent)
    assert event.price is None
    assert event.price_is_placeholder
    assert event.is_market


def test_market_sell_price_zero() -> None:
    event = Log().ws(order_frame("order_created", "5", side=1, amount="0", amount_at_create="0", price="0"))
    assert isinstance(event, OrderEvent)
    assert (event.price, event.price_is_placeholder, event.side) == (None, True, "sell")


def test_exponent_amounts_and_big_ids() -> None:
    text = (
        '{"event":"order_deleted","channel":"private-my_orders_btcusd-1","data":{"id":2001939623936278528,'
        '"order_type":1,"amount":1e-8,"amount_traded":"7.74E+4","price":61200.00,"microtimestamp":"1"}}'
    )
    event = Log().ws(text)
    assert isinstance(event, OrderEvent)
    assert event.order_id == "2001939623936278528"
    assert event.amount_remaining == Decimal("1e-8")
    assert event.amount_traded == Decimal("77400")
    assert event.price == Decimal("61200.00")


def _rest_rows(wrapper: dict[str, Any]) -> list[Any]:
    """The rows of one REST sample, read exactly (``raw`` where present keeps the number spelling)."""
    message = loads_exact(wrapper["raw"]) if wrapper.get("raw") else loads_exact(json.dumps(wrapper["message"]))
    return message if isinstance(message, list) else [message]


def test_rest_user_transactions() -> None:
    rows = _rest_rows(load("rest_user_transactions.json")[0])
    log = Log()
    events = [
        log.append(entry_from_user_transaction(row, account="acc", received_at=NOW, markets_by_pair={})) for row in rows
    ]
    assert not [e for e in events if isinstance(e, Unknown)]
    fills = {e.trade_id: e for e in events if isinstance(e, Fill)}
    others = {e.transaction_id: e.type_code for e in events if isinstance(e, AccountTransaction)}
    assert sorted(fills) == ["61000001", "61000002", "61000004"]
    assert others == {"61000005": "1", "61000003": "0", "61000000": "36", "60999999": "58"}
    fill = fills["61000004"]
    assert (fill.side, fill.amount, fill.price, fill.fee, fill.market, fill.order_id) == (
        "buy",
        Decimal("0.50000000"),
        Decimal("63000.00"),
        Decimal("12.60"),
        "btcusd",
        "2050558851300001",
    )
    assert fill.executed_at == datetime(2026, 3, 2, 9, 10, 7, tzinfo=UTC)
    sell = fills["61000002"]
    assert (sell.side, sell.amount, sell.price, sell.market, sell.order_id) == (
        "sell",
        Decimal("0.05000000"),
        Decimal("2050.00"),
        "ethusd",
        "2050558851200002",
    )
    assert sell.executed_at == datetime(2026, 3, 1, 12, 0, 1, 250000, tzinfo=UTC)
    entry = log.entries[1]
    assert entry.dedup_key == "rest:acc:user_transactions:61000004"
    assert entry.channel == "user_transactions/"


def test_rest_other_endpoints() -> None:
    log = Log()
    created, deleted = (
        log.append(entry_from_account_order_event(event, account="acc", market="btcusd", received_at=NOW))
        for event in _rest_rows(load("rest_account_order_data.json")[0])
    )
    assert isinstance(created, OrderEvent)
    assert isinstance(deleted, OrderEvent)
    assert (created.source, created.kind, deleted.kind) == ("rest", "created", "deleted")
    assert (deleted.amount_remaining, deleted.amount_at_create) == (Decimal("0E-8"), Decimal("1.00000000"))
    assert log.entries[0].dedup_key == "rest:acc:account_order_data:019f4ac8-1234-abcd-af00-3e9012000020"
    statuses = []
    for wrapper in load("rest_order_status.json"):
        (row,) = _rest_rows(wrapper)
        statuses.append(log.append(entry_from_order_status(row, account="acc", received_at=NOW)))
    assert all(isinstance(ev, OrderStatusSnapshot) for ev in statuses)
    assert [(s.status, s.side, s.transaction_count) for s in statuses if isinstance(s, OrderStatusSnapshot)] == [
        ("Finished", "sell", 2),
        ("Canceled", "sell", 0),
        ("Open", "buy", 0),
    ]
    (row,) = _rest_rows(load("rest_position_settlement_transactions.json")[0])
    ev = log.append(entry_from_position_settlement(row, account="acc", received_at=NOW))
    assert isinstance(ev, Settlement)
    assert (ev.amount, ev.position_id, ev.settlement_type, ev.funding_component) == (
        Decimal("-12.50"),
        "1234567890",
        "P",
        Decimal("-1.50"),
    )
    assert ev.occurred_at == datetime(2024, 4, 3, 8, 0, tzinfo=UTC)
    (row,) = _rest_rows(load("rest_trade_history.json")[0])
    ev = log.append(entry_from_perp_trade(row, account="acc", received_at=NOW))
    assert isinstance(ev, Fill)
    assert (ev.trade_id, ev.market, ev.side, ev.is_liquidation, ev.position_id) == (
        "2001939623936278601",
        "btcusd-perp",
        "sell",
        True,
        "1234567890",
    )
    assert ev.executed_at == datetime(2026, 9, 15, 6, 33, 20, 590000, tzinfo=UTC)


@pytest.mark.parametrize("corpus", corpora())
def test_rest_samples_build_and_parse(corpus: Path) -> None:
    """Every REST row of a corpus becomes a log entry and a known event (no quarantine, no ``Unknown``)."""
    builders: dict[str, Callable[[Any], NewEntry | QuarantineItem]] = {
        "rest_user_transactions.json": lambda row: entry_from_user_transaction(
            row, account="acc", received_at=NOW, markets_by_pair={}
        ),
        "rest_account_order_data.json": lambda row: entry_from_account_order_event(
            row, account="acc", market="btcusd", received_at=NOW
        ),
        "rest_order_status.json": lambda row: entry_from_order_status(row, account="acc", received_at=NOW),
        "rest_trade_history.json": lambda row: entry_from_perp_trade(row, account="acc", received_at=NOW),
        "rest_position_settlement_transactions.json": lambda row: entry_from_position_settlement(
            row, account="acc", received_at=NOW
        ),
    }
    seen = 0
    for name, build in builders.items():
        for wrapper in load(name, corpus):
            for row in _rest_rows(wrapper):
                built = build(row)
                assert isinstance(built, NewEntry), (name, built)
                assert not isinstance(Log().append(built), Unknown), (name, row)
                seen += 1
    assert seen > 0


def test_tracker_events() -> None:
    log = Log()
    cases: list[tuple[str, dict[str, Any], type]] = [
        (te.CONNECTED, {}, Lifecycle),
        (te.GAP_DETECTED, {"why": "chain"}, GapDetected),
        (te.DISCREPANCY, {"id": "d1", "kind": "balance", "entity": "btc", "detail": "x"}, Discrepancy),
        (te.DISCREPANCY_RESOLVED, {"id": "d1"}, DiscrepancyResolved),
    ]
    for index, (event, data, expected) in enumerate(cases):
        entry = te.tracker_entry(account="acc", event=event, data=data, received_at=NOW, uid=str(index))
        assert isinstance(log.append(entry), expected)


def test_tracker_discrepancy_without_id_gets_one_from_its_seq() -> None:
    """The same id whether the parser is given a LogEntry or the projector's LogRecord (which has no dedup key)."""
    entry = te.tracker_entry(account="acc", event=te.DISCREPANCY, data={"kind": "x"}, received_at=NOW, uid="u")
    full = to_log(entry, 42)
    record = LogRecord(42, "acc", "tracker", full.channel, full.event, full.payload, None, NOW, None)
    events = [parse_entry(full), parse_entry(record)]
    assert all(isinstance(e, Discrepancy) and e.discrepancy_id == "discrepancy:42" for e in events)


def test_unknown_never_raises() -> None:
    log = Log()
    assert isinstance(log.ws('{"event":"order_exploded","channel":"private-my_orders_btcusd-1","data":{}}'), Unknown)
    bad = '{"event":"trade","channel":"private-my_trades_btcusd-1","data":{"id":1,"amount":"x","side":"buy"}}'
    ev = log.ws(bad)
    assert isinstance(ev, Unknown)
    assert "amount" in ev.reason or "price" in ev.reason or "decimal" in ev.reason


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=10,
)
ALL_SAMPLE_TEXTS = [text for corpus in corpus_dirs() for text in private_frame_texts(corpus)]


def _mutate(message: Any, path_choice: int, value: Any) -> Any:
    if isinstance(message, dict) and message:
        keys = sorted(message)
        key = keys[path_choice % len(keys)]
        copy = dict(message)
        if path_choice % 3 == 0:
            del copy[key]
        elif isinstance(copy[key], dict) and path_choice % 3 == 1:
            copy[key] = _mutate(copy[key], path_choice // 3, value)
        else:
            copy[key] = value
        return copy
    return value


def _parse_any(entry: NewEntry, seq: int = 1) -> None:
    event = parse_entry(to_log(entry, seq))
    assert event.seq == seq


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=10_000), json_values)
def test_parser_never_raises_on_mutated_samples(which: int, path_choice: int, value: Any) -> None:
    texts = ALL_SAMPLE_TEXTS
    message = json.loads(texts[which % len(texts)])
    mutated = json.dumps(_mutate(message, path_choice, value))
    log_entry = NewEntry(
        account="acc",
        source="ws",
        channel=message["channel"],
        event=message["event"],
        payload=mutated,
        dedup_key="k",
        received_at=NOW,
    )
    _parse_any(log_entry)


@given(
    st.sampled_from(["ws", "rest", "tracker"]),
    st.text(max_size=30)
    | st.sampled_from(["private-my_orders_btcusd-1", "private-my_trades_btcusd-1", "user_transactions/"]),
    st.text(max_size=20)
    | st.sampled_from(
        ["trade", "order_created", "settlement", "discrepancy", "discrepancy_resolved", "gap_detected", *REST_EVENTS]
    ),
    st.text(max_size=50) | json_values.map(json.dumps),
)
def test_parser_never_raises_on_arbitrary_entries(source: Any, channel: str, event: str, payload: str) -> None:
    _parse_any(
        NewEntry(
            account="a", source=source, channel=channel, event=event, payload=payload, dedup_key="k", received_at=NOW
        )
    )


rest_rows = st.dictionaries(
    st.sampled_from(["id", "type", "datetime", "btc", "usd", "btc_usd", "fee", "order_id", "trade_id", "side",
                     "price", "amount", "transaction_id", "pnl_settled", "status", "event", "data", "market"])
    | st.text(max_size=5),
    json_values,
    max_size=10,
)  # fmt: skip


@given(st.sampled_from(["ut", "aod", "os", "th", "ps"]), rest_rows | json_values, st.booleans())
def test_rest_builders_and_parser_never_raise(which: str, row: Any, exact: bool) -> None:
    if exact:
        row = loads_exact(json.dumps(row))
    match which:
        case "ut":
            built = entry_from_user_transaction(row, account="a", received_at=NOW, markets_by_pair={})
        case "aod":
            built = entry_from_account_order_event(row, account="a", market="btcusd", received_at=NOW)
        case "os":
            built = entry_from_order_status(row, account="a", received_at=NOW)
        case "th":
            built = entry_from_perp_trade(row, account="a", received_at=NOW)
        case _:
            built = entry_from_position_settlement(row, account="a", received_at=NOW)
    if isinstance(built, NewEntry):
        _parse_any(built)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (frame_texts("my_orders_stop_active.json")[0], "stop_order"),
        (frame_texts("my_orders_order_created.json")[0], "orderbook"),
        (frame_texts("my_orders_order_created.json")[1], None),  # the old envelope has none
        ('{"event":"order_created","order_source":"","data":{}}', None),
        ('{"event":"order_created","order_source":7,"data":{}}', None),
        ('{"order_source":"orderbook","data":{"amount":NaN}}', "orderbook"),  # the exact decoder's NaN literal
        ('["order_source"]', None),
        ("not json", None),
        ("[" * 100_000, None),
    ],
)
def test_order_source_of(payload: str, expected: str | None) -> None:
    assert order_source_of(payload) == expected


@pytest.mark.parametrize("corpus", corpora())
def test_order_source_of_agrees_with_the_parser(corpus: Path) -> None:
    for name in (n for n in PRIVATE_SAMPLE_FILES if n.startswith("my_orders_")):
        for text in frame_texts(name, corpus):
            event = Log().ws(text)
            assert isinstance(event, OrderEvent)
            assert order_source_of(text) == event.order_source
