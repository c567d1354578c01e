from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import NOW, Log, order_frame, trade_frame

from tracker.bitstamp.frames import entry_from_user_transaction
from tracker.bitstamp.rest_entries import entry_from_order_status
from tracker.domain.events import DomainEvent, Fill, LiquidationAlert, OrderEvent, SelfTrade, Settlement
from tracker.domain.projection import ProjectionState, apply, fold
from tracker.domain.rows import OrderRow, row_key

D = Decimal


def project(log: Log) -> ProjectionState:
    return fold(log.events())


def order(state: ProjectionState, order_id: str, account: str = "acc") -> OrderRow:
    return state.orders[(account, order_id)]


def open_discrepancies(state: ProjectionState, kind: str) -> list[Any]:
    return [d for d in state.discrepancies.values() if d.kind == kind and d.status == "open"]


def test_market_buy_placeholder() -> None:
    log = Log()
    log.ws(order_frame("order_created", "1", amount="0", amount_at_create="0", price="999999999.00"))
    row = order(project(log), "1")
    assert (row.amount, row.amount_remaining, row.amount_filled, row.price, row.status) == (
        D(0),
        D(0),
        D(0),
        None,
        "open",
    )
    log.ws(
        order_frame(
            "order_changed", "1", amount="0", amount_at_create="0.00038666", amount_traded="0.00038666", price="30000"
        )
    )
    log.ws(trade_frame("10", "1", amount="0.00038666", price="30000"))
    log.ws(
        order_frame("order_deleted", "1", amount="0", amount_at_create="0.00038666", amount_traded="0", price="30000")
    )
    state = project(log)
    row = order(state, "1")
    assert (row.amount, row.amount_remaining, row.amount_filled, row.price, row.status) == (
        D("0.00038666"),
        D(0),
        D("0.00038666"),
        D(30000),
        "filled",
    )
    assert not open_discrepancies(state, "order_fills_mismatch")


def test_market_buy_created_with_real_amount() -> None:
    log = Log()
    log.ws(order_frame("order_created", "1", amount="0.005", amount_at_create="0.005", price="999999999"))
    row = order(project(log), "1")
    assert (row.amount, row.amount_remaining, row.price) == (D("0.005"), D("0.005"), None)


def test_market_sell_price_zero_and_placeholder_remaining() -> None:
    log = Log()
    log.ws(order_frame("order_created", "2", side=1, amount="0", amount_at_create="1.5", price="0"))
    row = order(project(log), "2")
    assert (row.side, row.amount, row.amount_remaining, row.amount_filled, row.price) == (
        "sell",
        D("1.5"),
        D("1.5"),
        D(0),
        None,
    )
    log.ws(
        order_frame("order_changed", "2", side=1, amount="0.5", amount_at_create="1.5", amount_traded="1", price="99")
    )
    row = order(project(log), "2")
    assert (row.amount_remaining, row.amount_filled, row.price) == (D("0.5"), D(1), D(99))


def test_amount_traded_is_per_step() -> None:
    log = Log()
    log.ws(order_frame("order_created", "3", amount="1", amount_at_create="1"))
    log.ws(order_frame("order_changed", "3", amount="0.6", amount_traded="0.4"))
    log.ws(order_frame("order_changed", "3", amount="0.1", amount_traded="0.5"))
    log.ws(order_frame("order_deleted", "3", amount="0", amount_traded="0.1"))
    row = order(project(log), "3")
    assert (row.amount_filled, row.amount_remaining, row.status) == (D(1), D(0), "filled")


def test_full_fill_without_order_changed() -> None:
    log = Log()
    log.ws(order_frame("order_created", "4", side=1, amount="300.00000000", amount_at_create="300.00000000"))
    log.ws(order_frame("order_deleted", "4", side=1, amount="0", amount_at_create="300.00000000", amount_traded="300"))
    row = order(project(log), "4")
    assert (row.status, row.amount_filled) == ("filled", D(300))


def test_filled_vs_cancelled_and_dust() -> None:
    log = Log()
    log.ws(order_frame("order_created", "5"))
    log.ws(order_frame("order_deleted", "5", amount="0.00000000"))
    log.ws(order_frame("order_created", "6"))
    log.ws(order_frame("order_deleted", "6", amount="1e-8"))
    log.ws(order_frame("order_created", "7"))
    log.ws(order_frame("order_deleted", "7", amount="1"))
    state = project(log)
    assert order(state, "5").status == "filled"
    assert order(state, "6").status == "cancelled"
    assert order(state, "6").amount_filled == D("0.99999999")
    assert order(state, "7").status == "cancelled"
    assert order(state, "7").amount_filled == 0


def test_order_replaced() -> None:
    log = Log()
    log.ws(order_frame("order_created", "8", amount="1", amount_at_create="1", price="100"))
    log.ws(order_frame("order_replaced", "9", amount="0.3", amount_at_create="0.3", price="101", orig_order_id=8))
    state = project(log)
    assert order(state, "8").status == "replaced"
    assert order(state, "9").status == "open"
    assert order(state, "9").price == D(101)


def test_stop_events() -> None:
    log = Log()
    log.ws(order_frame("stop_active", "10", side=1, price="83000", order_source="stop_order", stop_price="83500"))
    assert order(project(log), "10").status == "open"
    log.ws(order_frame("order_created", "10", side=1, price="83000"))
    assert order(project(log), "10").status == "open"
    log.ws(order_frame("stop_active", "11", side=1, price="0", order_source="stop_order"))
    log.ws(order_frame("stop_inactive", "11", side=1, price="0", order_source="stop_order"))
    row = order(project(log), "11")
    assert (row.status, row.price) == ("cancelled", None)


def test_self_trade_offset() -> None:
    log = Log()
    log.ws(order_frame("order_created", "20", side=0, amount="1"))
    log.ws(order_frame("order_created", "21", side=1, amount="1"))
    log.ws(
        {
            "event": "self_trade",
            "channel": "private-live_trades_btcusd-314159",
            "data": {
                "amount_str": "0.3",
                "price_str": "100",
                "type": 0,
                "microtimestamp": "1700000000100000",
                "buy_order_id": 20,
                "sell_order_id": "21",
            },
        }
    )
    log.ws(order_frame("order_changed", "20", side=0, amount="0.7", amount_traded="0"))
    log.ws(order_frame("order_changed", "21", side=1, amount="0.7", amount_traded="0"))
    state = project(log)
    assert order(state, "20").amount_filled == 0
    assert order(state, "21").amount_filled == 0
    assert len(state.self_trades) == 1
    assert not state.fills


def test_settlement_signs_and_position_pnl() -> None:
    log = Log()
    log.ws(
        trade_frame("30", "40", market="btcusd-perp", side="buy", amount="2", price="100", fee="1", position_id="p1")
    )
    log.ws(
        trade_frame("31", "41", market="btcusd-perp", side="buy", amount="2", price="200", fee="1", position_id="p1")
    )
    log.ws(
        trade_frame("32", "42", market="btcusd-perp", side="sell", amount="1", price="300", fee="1", position_id="p1")
    )
    log.ws(
        {
            "event": "settlement",
            "channel": "private-my_settlements-314159",
            "data": {"id": "p1", "tnx_id": "t1", "ts": "1712131200", "price": "61200", "ccy": "USD", "as": "-1.5",
                     "ap": "-1", "atf": "-0.25", "alf": "0", "afu": "-0.25", "asl": "0", "sp": "61000", "typ": "C"},
        }
    )  # fmt: skip
    log.ws(
        {
            "event": "insurance_fund_premium",
            "channel": "private-my_settlements-314159",
            "data": {"tnx_id": "t2", "ts": "1712131200", "ccy": "USD", "amount": "-0.5"},
        }
    )
    state = project(log)
    settlement = state.settlements[("acc", "settlement", "t1")]
    assert (settlement.amount, settlement.price_component, settlement.trading_fee_component) == (
        D("-1.5"),
        D(-1),
        D("-0.25"),
    )
    assert state.settlements[("acc", "insurance_fund_premium", "t2")].amount == D("-0.5")
    position = state.positions[("acc", "p1")]
    assert (
        position.side,
        position.size,
        position.status,
        position.entry_price,
        position.fees,
        position.realised_pnl,
    ) == (
        "long",
        D(3),
        "open",
        D(150),
        D(3),
        D("-1.5"),
    )
    assert position.market == "btcusd-perp"


def test_liquidation_alerts() -> None:
    log = Log()
    log.ws(trade_frame("50", "60", market="btcusd-perp", side="sell", amount="1", position_id="p9"))
    for event, us in (("mm_breach_warning", 1), ("liquidation_start", 2), ("liquidation_concluded", 3)):
        log.ws(
            {
                "event": event,
                "channel": "private-my_liquidations-314159",
                "data": {"position_id": "p9", "microtimestamp": str(1712131200000000 + us), "alert_type": event,
                         "margin_mode": "ISOLATED", "initial_margin_ratio": "1.2", "maintenance_margin_ratio": "0.9"},
            }
        )  # fmt: skip
        if event == "liquidation_start":
            assert project(log).positions[("acc", "p9")].status == "liquidating"
    state = project(log)
    assert len(state.liquidations) == 3
    assert state.positions[("acc", "p9")].status == "liquidated"
    assert state.positions[("acc", "p9")].side == "short"


def test_fill_before_order() -> None:
    log = Log()
    log.ws(trade_frame("70", "80", amount="1"))
    log.ws(order_frame("order_created", "80"))
    log.ws(order_frame("order_deleted", "80", amount="0", amount_traded="1"))
    state = project(log)
    assert order(state, "80").status == "filled"
    assert not state.discrepancies


def test_order_before_fill_opens_then_resolves() -> None:
    log = Log()
    log.ws(order_frame("order_created", "81", amount="1"))
    log.ws(order_frame("order_deleted", "81", amount="0", amount_traded="1"))
    state = project(log)
    assert len(open_discrepancies(state, "order_fills_mismatch")) == 1
    log.ws(trade_frame("71", "81", amount="0.4"))
    assert len(open_discrepancies(project(log), "order_fills_mismatch")) == 1
    log.ws(trade_frame("72", "81", amount="0.6"))
    state = project(log)
    assert not open_discrepancies(state, "order_fills_mismatch")
    (resolved,) = state.discrepancies.values()
    assert resolved.status == "resolved"
    assert resolved.resolved_seq == 4


def _rest_fill(trade_id: int, order_id: int, btc: str, usd: str, rate: str, fee: str) -> dict[str, Any]:
    return {"id": trade_id, "order_id": order_id, "type": "2", "btc": btc, "usd": usd, "btc_usd": rate, "fee": fee,
            "eur": 0, "datetime": "2023-11-14 22:13:20.500000"}  # fmt: skip


def test_ws_and_rest_same_fill_once() -> None:
    log = Log()
    log.ws(trade_frame("90", "91", amount="0.5", price="100", fee="0.1"))
    log.append(entry_from_user_transaction(_rest_fill(90, 91, "0.5", "-50", "100", "0.1"), account="acc",
                                           received_at=NOW, markets_by_pair={"btc_usd": "btcusd"}))  # fmt: skip
    state = project(log)
    assert len(state.fills) == 1
    assert state.fills[("acc", "90")].source == "ws"
    (fees,) = state.fees_daily.values()
    assert (fees.day, fees.market, fees.fills, fees.volume, fees.base_volume, fees.fees) == (
        "2023-11-14",
        "btcusd",
        1,
        D("50.0"),
        D("0.5"),
        D("0.1"),
    )
    assert not state.discrepancies


def test_rest_first_then_ws_disagreeing() -> None:
    log = Log()
    log.append(entry_from_user_transaction(_rest_fill(92, 93, "0.5", "-50", "100", "0.1"), account="acc",
                                           received_at=NOW, markets_by_pair={"btc_usd": "btcusd"}))  # fmt: skip
    log.ws(trade_frame("92", "93", amount="0.5", price="100", fee="0.2"))
    state = project(log)
    fill = state.fills[("acc", "92")]
    assert (fill.source, fill.fee) == ("rest", D("0.1"))
    (mismatch,) = open_discrepancies(state, "fill_source_mismatch")
    assert mismatch.entity == "fill:92"


def test_fees_daily_exact_sums() -> None:
    log = Log()
    for index in range(10):
        log.ws(trade_frame(str(100 + index), "1", amount="0.1", price="0.3", fee="0.01"))
    (fees,) = project(log).fees_daily.values()
    assert (fees.fills, fees.base_volume, fees.volume, fees.fees) == (10, D("1.0"), D("0.30"), D("0.10"))


def test_chain_breaks() -> None:
    log = Log()
    log.ws(order_frame("order_created", "1", event_id="e1", pre_event_id="e0", order_source="orderbook"))
    log.ws(order_frame("order_changed", "1", amount="0.5", event_id="e2", pre_event_id="e1", order_source="orderbook"))
    log.ws(order_frame("order_created", "2", event_id="e5", pre_event_id="e4", order_source="orderbook"))
    state = project(log)
    for source in ("orderbook", "*"):
        stream = state.streams[("acc", "btcusd", source)]
        assert (stream.events, stream.chain_breaks, stream.last_event_id, stream.last_break_seq) == (3, 1, "e5", 3)


def test_chain_scope_either_reading() -> None:
    """A chain across both order sources of a market, or one per source: neither counts a break."""
    log = Log()
    log.ws(order_frame("order_created", "1", event_id="a1", order_source="orderbook"))
    log.ws(order_frame("stop_active", "2", event_id="s1", pre_event_id="a1", order_source="stop_order"))  # per market
    log.ws(order_frame("order_changed", "1", amount="0.5", event_id="a2", pre_event_id="s1", order_source="orderbook"))
    log.ws(order_frame("stop_inactive", "2", event_id="s2", pre_event_id="s1", order_source="stop_order"))  # per source
    log.ws(order_frame("order_deleted", "1", amount="0", event_id="a3", pre_event_id="a2", order_source="orderbook"))
    assert all(s.chain_breaks == 0 for s in project(log).streams.values())


def test_replayed_order_event_is_skipped() -> None:
    from tracker.bitstamp.frames import entry_from_account_order_event

    log = Log()
    frame = order_frame("order_changed", "1", amount="0.5", event_id="e2", order_source="orderbook")
    log.ws(order_frame("order_created", "1", event_id="e1", order_source="orderbook"))
    log.ws(frame)
    log.ws(order_frame("order_deleted", "1", amount="0", event_id="e3", order_source="orderbook"))
    replay = {k: v for k, v in frame.items() if k != "channel"}
    log.append(entry_from_account_order_event(replay, account="acc", market="btcusd", received_at=NOW))
    state = project(log)
    assert order(state, "1").status == "filled"
    assert state.counters[("acc", "order_event_replayed")].value == 1


def test_multi_account() -> None:
    a, b = Log("a"), Log("b")
    a.ws(order_frame("order_created", "1"))
    b.ws(order_frame("order_created", "1", amount="2", amount_at_create="2"))
    events = [*a.events(), *[_reseq(e, 10) for e in b.events()]]
    state = fold(events)
    assert state.orders[("a", "1")].amount == 1
    assert state.orders[("b", "1")].amount == 2


def _reseq(event: DomainEvent, offset: int) -> DomainEvent:
    return msgspec.structs.replace(event, seq=event.seq + offset)


def test_idempotent_by_checkpoint() -> None:
    log = Log()
    log.ws(trade_frame("1", "2"))
    state = project(log)
    again = apply(state, log.events()[0])
    assert len(again.fills) == 1
    assert next(iter(again.fees_daily.values())).fills == 1


# --- rebuild equals incremental -------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ORDER_IDS = ["1", "2", "3"]
EVENT_IDS = ["e1", "e2", *(f"00065bfe-dead-95a9-0000-00000000000{i}" for i in range(4))]
amounts = st.sampled_from([D(0), D("0.5"), D(1), D("1e-8"), D("0.25")])


@st.composite
def domain_events(draw: st.DrawFn) -> list[DomainEvent]:
    n = draw(st.integers(min_value=0, max_value=40))
    events: list[DomainEvent] = []
    for seq in range(1, n + 1):
        account = draw(st.sampled_from(["a", "b"]))
        kind = draw(st.sampled_from(["order", "order", "fill", "fill", "self", "settle", "liq"]))
        at = T0 + timedelta(seconds=draw(st.integers(0, 200_000)))
        if kind == "order":
            okind = draw(st.sampled_from(["created", "changed", "deleted", "replaced", "stop_active", "stop_inactive"]))
            placeholder = draw(st.booleans())
            events.append(
                OrderEvent(
                    seq=seq, account=account, source=draw(st.sampled_from(["ws", "rest"])), kind=okind,
                    order_id=draw(st.sampled_from(ORDER_IDS)), market="btcusd",
                    side=draw(st.sampled_from(["buy", "sell", None])), amount_remaining=draw(amounts),
                    amount_traded=draw(st.none() | amounts), amount_at_create=draw(st.none() | amounts),
                    price=None if placeholder else draw(amounts), price_is_placeholder=placeholder,
                    is_market=placeholder, client_order_id=draw(st.none() | st.just("c")),
                    orig_order_id=draw(st.none() | st.sampled_from(ORDER_IDS)),
                    event_id=draw(st.none() | st.sampled_from(EVENT_IDS)),
                    pre_event_id=draw(st.none() | st.sampled_from(["e1", "e2", "e3"])),
                    order_source=draw(st.none() | st.just("orderbook")), occurred_at=at, received_at=at,
                )
            )  # fmt: skip
        elif kind == "fill":
            events.append(
                Fill(
                    seq=seq, account=account, source=draw(st.sampled_from(["ws", "rest"])),
                    trade_id=draw(st.sampled_from(["t1", "t2", "t3", "t4"])),
                    order_id=draw(st.none() | st.sampled_from(ORDER_IDS)),
                    market=draw(st.sampled_from(["btcusd", "btcusd-perp", None])),
                    side=draw(st.sampled_from(["buy", "sell"])), amount=draw(amounts), price=draw(amounts),
                    fee=draw(amounts), executed_at=at, position_id=draw(st.none() | st.sampled_from(["p1", "p2"])),
                    is_liquidation=draw(st.booleans()),
                )
            )  # fmt: skip
        elif kind == "self":
            events.append(
                SelfTrade(seq=seq, account=account, market="btcusd", buy_order_id=draw(st.sampled_from(ORDER_IDS)),
                          sell_order_id=draw(st.sampled_from(ORDER_IDS)), amount=draw(amounts), price=None,
                          occurred_at=at)
            )  # fmt: skip
        elif kind == "settle":
            events.append(
                Settlement(seq=seq, account=account, source="ws",
                           kind=draw(st.sampled_from(["settlement", "insurance_fund_premium"])),
                           transaction_id=draw(st.sampled_from(["x1", "x2"])),
                           position_id=draw(st.none() | st.sampled_from(["p1", "p2"])), ccy="USD",
                           amount=draw(amounts), occurred_at=at)
            )  # fmt: skip
        else:
            events.append(
                LiquidationAlert(seq=seq, account=account,
                                 kind=draw(st.sampled_from(["im_breach", "liquidation_start",
                                                           "liquidation_concluded"])),
                                 position_id=draw(st.sampled_from(["p1", "p2"])), margin_mode="CROSS", occurred_at=at,
                                 initial_margin_ratio=None, maintenance_margin_ratio=D("0.9"))
            )  # fmt: skip
    return events


@settings(max_examples=300, deadline=None)
@given(domain_events(), st.data())
def test_rebuild_equals_incremental_through_rows(events: list[DomainEvent], data: st.DataObject) -> None:
    whole = fold(events)
    split = data.draw(st.integers(min_value=0, max_value=len(events)))
    first = fold(events[:split])
    reloaded = ProjectionState.from_rows(first.to_rows(), first.checkpoint)
    assert reloaded == first
    resumed = fold(events[split:], reloaded)
    assert resumed == whole
    assert resumed.to_rows() == whole.to_rows()


@settings(max_examples=200, deadline=None)
@given(domain_events(), st.lists(st.integers(min_value=1, max_value=10), max_size=10))
def test_dirty_rows_persist_everything(events: list[DomainEvent], batch_sizes: list[int]) -> None:
    """A persister that writes only ``changed_rows`` per batch ends with exactly the full state."""
    state = ProjectionState()
    db: dict[str, dict[tuple[object, ...], object]] = {}
    position = 0
    for size in [*batch_sizes, len(events)]:
        for event in events[position : position + size]:
            apply(state, event)
        position += size
        for table, rows in state.changed_rows().items():
            for row in rows:
                db.setdefault(table, {})[row_key(row)] = row
        state.clear_dirty()
    full = {name: {row_key(r): r for r in rows} for name, rows in state.to_rows().items() if rows}
    assert db == full


def test_stale_replayed_event_does_not_reopen() -> None:
    from tracker.bitstamp.frames import entry_from_account_order_event

    log = Log()
    ids = [f"00065bfe-dead-95a9-0000-00000000000{i}" for i in range(3)]
    log.ws(order_frame("order_created", "1", event_id=ids[0], order_source="orderbook"))
    log.ws(order_frame("order_deleted", "1", amount="0", event_id=ids[2], order_source="orderbook"))
    missed = order_frame("order_changed", "1", amount="0.5", event_id=ids[1], order_source="orderbook")
    log.append(
        entry_from_account_order_event(
            {k: v for k, v in missed.items() if k != "channel"}, account="acc", market="btcusd", received_at=NOW
        )
    )
    state = project(log)
    assert (order(state, "1").status, order(state, "1").amount_remaining) == ("filled", D(0))
    assert state.counters[("acc", "order_event_stale")].value == 1


def test_order_side_first_learned_and_kept() -> None:
    """An order event whose ``order_type`` is missing or unknown has no side: the row's side stays unknown until an
    event names it, and a later event without one does not erase it (``OrderRow.side`` is the events' ``Side``)."""
    log = Log()
    log.ws(order_frame("order_created", "30", side=7))
    assert order(project(log), "30").side is None
    log.ws(order_frame("order_changed", "30", side=1, amount="0.5", amount_traded="0.5"))
    assert order(project(log), "30").side == "sell"
    log.ws(order_frame("order_deleted", "30", side=9, amount="0", amount_traded="0.5"))
    row = order(project(log), "30")
    assert (row.side, row.status) == ("sell", "filled")


def test_an_open_mismatch_shows_the_figures_of_its_last_check_in_plain_decimals() -> None:
    """Issue 14.8: the detail is refreshed when the order is re-checked, and never uses an exponent."""
    log = Log()
    log.ws(order_frame("order_created", "82", amount="0.00000006", amount_at_create="0.00000006"))
    log.ws(order_frame("order_deleted", "82", amount="0", amount_traded="0.00000006"))
    (first,) = open_discrepancies(project(log), "order_fills_mismatch")
    assert "amount_filled=0.00000006 fills_sum=0 fills=0" in first.detail and "E-" not in first.detail
    log.ws(trade_frame("73", "82", amount="0.00000002"))
    (again,) = open_discrepancies(project(log), "order_fills_mismatch")
    assert again.discrepancy_id == first.discrepancy_id and again.opened_seq == first.opened_seq
    assert "fills_sum=0.00000002 fills=1" in again.detail


def test_one_trade_id_with_another_order_or_amount_is_an_identity_mismatch_never_a_merge() -> None:
    """Issue 13.10: the websocket trade id, the user_transactions id and the perp trade_id are assumed to be one
    counter; a collision is evidence against it, kept as its own discrepancy, the first fill untouched."""
    log = Log()
    log.ws(trade_frame("74", "83", amount="1", price="100"))
    # REST: the same id under another order; then the same fill as trade 75 with another fee.
    for row in (_rest_fill(74, 84, "1", "-100", "100", "0.1"), _rest_fill(75, 85, "1", "-100", "100", "0.2")):
        log.append(
            entry_from_user_transaction(row, account="acc", received_at=NOW, markets_by_pair={"btc_usd": "btcusd"})
        )
    log.ws(trade_frame("75", "85", amount="1", price="100", fee="0.1"))
    state = project(log)
    (identity,) = open_discrepancies(state, "fill_identity_mismatch")
    assert identity.entity == "fill:74" and "order=83" in identity.detail and "order=84" in identity.detail
    assert state.fills[("acc", "74")].order_id == "83"
    (source,) = open_discrepancies(state, "fill_source_mismatch")
    assert source.entity == "fill:75" and "fee=0.1" in source.detail and "fee=0.2" in source.detail


def test_an_order_live_before_tracking_explains_its_missing_fills_and_order_status_confirms_it() -> None:
    """Issue 14.7: self trades before tracking began cannot be learned; the fill offset they leave is its own kind,
    explained, and resolved when order_status/ confirms the order's remaining amount."""
    log = Log()
    # First seen mid-life: 0.4 already filled before tracking (by a self trade, say), 0.6 filled while tracked.
    log.ws(order_frame("order_changed", "86", amount="0.6", amount_at_create="1", amount_traded="0.4"))
    log.ws(trade_frame("76", "86", amount="0.6"))
    log.ws(order_frame("order_deleted", "86", amount="0", amount_at_create="1", amount_traded="0.6"))
    state = project(log)
    assert not open_discrepancies(state, "order_fills_mismatch")
    (before,) = open_discrepancies(state, "fills_before_tracking")
    assert "live before tracking began (its creation is not in the log)" in before.detail
    log.append(
        entry_from_order_status(
            {"id": 86, "status": "Finished", "amount_remaining": "0", "market": "BTC/USD", "type": "0"},
            account="acc",
            received_at=NOW,
        )
    )
    state = project(log)
    assert not open_discrepancies(state, "fills_before_tracking")
    resolved = state.discrepancies[("acc", before.discrepancy_id)]
    assert resolved.status == "resolved" and "self trades before tracking" in resolved.detail
