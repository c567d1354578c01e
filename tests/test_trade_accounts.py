"""Every view carries ``trade_account_id`` (issue 15, item 3): the fees per trade account (a fill's account learned
later moves its figures), positions first-learned from fills and liquidation alerts, settlements from their
position, self trades when both sides agree; migration 0007 moving existing rows; ``tracker report --account`` the
trade account and ``--user`` the Bitstamp account on every kind. A fill whose source names no trade account (REST)
takes its order's, whichever comes first, in one batch or across batches, on both backends, rebuilt or
incremental; migration 0014 moves existing rows. An order whose events name none takes its fills'; migration 0015.

Rules: local databases only; no network.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from store_helpers import rows_of
from test_fresh_store import fresh_store

from tracker.cli import main
from tracker.domain.events import DomainEvent, Fill, LiquidationAlert, OrderEvent, SelfTrade, Settlement
from tracker.domain.projection import ProjectionState, fold
from tracker.domain.rows import FeesDailyRow, FillRow, OrderRow
from tracker.store import migrate
from tracker.store.engine import open_engine, writer
from tracker.store.projection_schema import VIEWS
from tracker.store.projections import ProjectionStore

USER = "314159"
DAY1 = datetime(2026, 11, 20, 12, tzinfo=UTC)
DAY2 = datetime(2026, 11, 21, 9, tzinfo=UTC)


def _fill(
    seq: int,
    trade_id: str,
    tai: str | None,
    *,
    market: str = "btcusd",
    at: datetime = DAY1,
    position: str | None = None,
    source: str = "ws",
    amount: str = "0.5",
    price: str = "100",
    fee: str = "0.25",
) -> Fill:
    return Fill(
        seq=seq, account=USER, source=source, trade_id=trade_id, order_id=f"o{trade_id}", market=market, side="buy",
        amount=Decimal(amount), price=Decimal(price), fee=Decimal(fee), executed_at=at, position_id=position,
        is_liquidation=False, trade_account_id=tai,
    )  # type: ignore[arg-type]  # fmt: skip


def events() -> list[DomainEvent]:
    return [
        _fill(1, "t1", "0"),
        _fill(2, "t2", None, source="rest", amount="0.1", fee="0.05"),  # REST: no trade account
        _fill(3, "t3", "7", market="btcusd-perp", position="p1", fee="0.1"),
        _fill(4, "t4", None, source="rest", amount="0.2", price="101"),  # REST first ...
        _fill(5, "t4", "7", amount="0.2", price="101"),  # ... its frame names trade account 7: moved
        _fill(6, "t6", None, at=DAY2, source="rest", market="btcusd-perp", position="p2"),
        LiquidationAlert(
            seq=7, account=USER, kind="liquidation_start", position_id="p2", margin_mode="CROSS", occurred_at=DAY2,
            initial_margin_ratio=None, maintenance_margin_ratio=None, trade_account_id="5",
        ),
        _fill(8, "t8", "6", at=DAY2, market="btcusd-perp", position="p2"),  # first-learned stays 5
        Settlement(
            seq=9, account=USER, source="ws", kind="settlement", transaction_id="s1", position_id="p1", ccy="USD",
            amount=Decimal("1.5"), occurred_at=DAY2,
        ),
        Settlement(
            seq=10, account=USER, source="ws", kind="insurance_fund_premium", transaction_id="s2", position_id=None,
            ccy="USD", amount=Decimal("-0.1"), occurred_at=DAY2,
        ),
        SelfTrade(
            seq=11, account=USER, market="btcusd", buy_order_id="o1", sell_order_id="o9", amount=Decimal("0.1"),
            price=Decimal("100"), occurred_at=DAY1, buyers_trade_account_id="0", sellers_trade_account_id="0",
        ),
        SelfTrade(
            seq=12, account=USER, market="btcusd", buy_order_id="o1", sell_order_id="o8", amount=Decimal("0.1"),
            price=Decimal("100"), occurred_at=DAY2, buyers_trade_account_id="0", sellers_trade_account_id="3",
        ),
    ]  # fmt: skip


# (trade account, day, market) -> fills, volume, fees, base volume: the expected v_fees_daily
FEES = {
    ("0", "2026-11-20", "btcusd"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
    (None, "2026-11-20", "btcusd"): (1, Decimal("10"), Decimal("0.05"), Decimal("0.1")),
    ("7", "2026-11-20", "btcusd-perp"): (1, Decimal("50"), Decimal("0.1"), Decimal("0.5")),
    ("7", "2026-11-20", "btcusd"): (1, Decimal("20.2"), Decimal("0.25"), Decimal("0.2")),
    (None, "2026-11-21", "btcusd-perp"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
    ("6", "2026-11-21", "btcusd-perp"): (1, Decimal("50"), Decimal("0.25"), Decimal("0.5")),
}


def test_the_fold_keeps_fees_per_trade_account_and_moves_a_fill_whose_account_comes_later() -> None:
    state = fold(events())
    rows = {(k[1], k[2], k[3]): r for k, r in state.rows_of("fees_daily").items()}
    moved = rows.pop(("", "2026-11-20", "btcusd"))
    assert (moved.fills, moved.volume, moved.fees, moved.base_volume) == (1, 10, Decimal("0.05"), Decimal("0.1"))
    shown = {(k[0] or None, k[1], k[2]): (r.fills, r.volume, r.fees, r.base_volume) for k, r in rows.items()}
    assert shown == {k: v for k, v in FEES.items() if k != (None, "2026-11-20", "btcusd")}
    positions = state.rows_of("positions")
    assert positions[(USER, "p1")].trade_account_id == "7"
    assert positions[(USER, "p2")].trade_account_id == "5"  # the alert came first; the later fill's 6 is ignored


def test_a_position_learns_its_account_when_a_fill_is_enriched() -> None:
    state = fold([_fill(1, "t1", None, source="rest", position="p1"), _fill(2, "t1", "4", position="p1")])
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "4"
    fees = {k[1]: r.fills for k, r in state.rows_of("fees_daily").items()}
    assert fees == {"": 0, "4": 1}


def _order(
    seq: int, order_id: str, tai: str | None, *, event_id: str | None = None, kind: str = "created"
) -> OrderEvent:
    return OrderEvent(
        seq=seq, account=USER, source="ws", kind=kind, order_id=order_id, market="btcusd", side="buy",
        amount_remaining=Decimal("1"), amount_traded=None, amount_at_create=Decimal("1"), price=Decimal("100"),
        price_is_placeholder=False, is_market=False, client_order_id=None, orig_order_id=None, event_id=event_id,
        pre_event_id=None, order_source=None, occurred_at=DAY1, received_at=DAY1, trade_account_id=tai,
    )  # type: ignore[arg-type]  # fmt: skip


def _rest(seq: int, trade_id: str, order_id: str, **kwargs: Any) -> Fill:
    fill = _fill(seq, trade_id, None, source="rest", **kwargs)
    return msgspec.structs.replace(fill, order_id=order_id)


def _fees_of(state: ProjectionState) -> dict[str, tuple[int, Decimal, Decimal]]:
    """trade account ("" = unknown) -> fills, volume, fees of the one day and market these tests use."""
    return {k[1]: (r.fills, r.volume, r.fees) for k, r in state.rows_of("fees_daily").items()}


def test_a_rest_fill_takes_the_trade_account_its_order_named_before() -> None:
    state = fold([_order(1, "o1", "7"), _rest(2, "t1", "o1", amount="0.1", fee="0.05")])
    assert state.rows_of("fills")[(USER, "t1")].trade_account_id == "7"
    assert _fees_of(state) == {"7": (1, Decimal("10"), Decimal("0.05"))}  # never counted as unknown


def test_rest_fills_take_the_trade_account_their_order_names_later_and_their_fees_move() -> None:
    events = [
        _rest(1, "t1", "o1", amount="0.1", fee="0.05", position="p1"),
        _rest(2, "t2", "o1", amount="0.2", fee="0.1"),
        _rest(3, "t3", "o2", amount="0.3", fee="0.2"),  # another order, which never names its account
        _order(4, "o1", None),  # an event without the account: nothing moves yet
        _order(5, "o1", "7", kind="changed"),
        _fill(6, "t4", "3", amount="0.4", fee="0.3"),  # its own frame named one: kept (first-learned), order too
        _order(7, "o1", "9", kind="changed"),  # first-learned: the order stays 7, and so do its fills
    ]
    events[5] = msgspec.structs.replace(events[5], order_id="o1")
    state = fold(events)
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "7", "t2": "7", "t3": None, "t4": "3"}
    assert state.rows_of("orders")[(USER, "o1")].trade_account_id == "7"
    assert _fees_of(state) == {
        "": (1, Decimal("30"), Decimal("0.2")),  # t3 stays unknown; t1 and t2 moved out
        "7": (2, Decimal("30"), Decimal("0.15")),
        "3": (1, Decimal("40"), Decimal("0.3")),
    }
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "7"  # learned with its fill


def test_a_stale_order_event_that_names_the_account_moves_the_fills_too() -> None:
    """A replay of an older event (REST ``account_order_data/`` after a gap) is the first to name the account."""
    later, earlier = "0001" + "a" * 32, "0000" + "a" * 32  # MarketEventIDs: text order is time order
    state = fold(
        [
            _order(1, "o1", None, event_id=later, kind="changed"),
            _rest(2, "t1", "o1"),
            _order(3, "o1", "5", event_id=earlier),
        ]
    )
    assert state.rows_of("fills")[(USER, "t1")].trade_account_id == "5"
    assert _fees_of(state)["5"][0] == 1


def _order_fill(seq: int, trade_id: str, order_id: str, tai: str | None, **kwargs: Any) -> Fill:
    """A ``my_trades`` fill of ``order_id``."""
    return msgspec.structs.replace(_fill(seq, trade_id, tai, **kwargs), order_id=order_id)


def test_an_order_whose_events_name_no_account_takes_the_one_its_fill_names() -> None:
    """Order frames from before Bitstamp added ``trade_account_id`` name none; the order's ``my_trades`` frame does:
    the order takes it, and its REST fill folded before follows (its fee day moves)."""
    state = fold(
        [
            _rest(1, "t1", "o1", amount="0.1", fee="0.05", position="p1"),
            _order(2, "o1", None),
            _order_fill(3, "t2", "o1", "7", amount="0.2", fee="0.1"),
            _order(4, "o1", "9", kind="changed"),  # first-learned: the order stays 7
            _order_fill(5, "t3", "o1", "8"),  # a fill's own account is its own; the order stays 7
        ]
    )
    assert state.rows_of("orders")[(USER, "o1")].trade_account_id == "7"
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "7", "t2": "7", "t3": "8"}
    assert _fees_of(state) == {
        "": (0, Decimal("0"), Decimal("0")),  # t1 moved out
        "7": (2, Decimal("30"), Decimal("0.15")),
        "8": (1, Decimal("50"), Decimal("0.25")),
    }
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "7"


def test_an_order_first_seen_after_its_fills_takes_the_earliest_account_they_name() -> None:
    state = fold(
        [
            _rest(1, "t1", "o1"),
            _order_fill(2, "t2", "o1", "5"),
            _order_fill(3, "t3", "o1", "6"),
            _order(4, "o1", None),
        ]
    )
    assert state.rows_of("orders")[(USER, "o1")].trade_account_id == "5"
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "5", "t2": "5", "t3": "6"}
    assert {k: v[0] for k, v in _fees_of(state).items()} == {"": 0, "5": 2, "6": 1}


def test_a_fill_seen_again_with_its_account_teaches_its_order() -> None:
    """REST first (no account), then its ``my_trades`` frame (a reconnect's replay) names one: the fill, its order
    and the order's other REST fill take it."""
    state = fold([_rest(1, "t1", "o1"), _order(2, "o1", None), _rest(3, "t2", "o1"), _order_fill(4, "t1", "o1", "4")])
    assert state.rows_of("orders")[(USER, "o1")].trade_account_id == "4"
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "4", "t2": "4"}
    assert {k: v[0] for k, v in _fees_of(state).items()} == {"": 0, "4": 2}


def test_a_fill_that_learns_its_order_later_teaches_it_its_account() -> None:
    """A fill that named its account but no order (first seen so), then its order from another source."""
    unordered = msgspec.structs.replace(_fill(1, "t1", "4"), order_id=None)
    state = fold([unordered, _order(2, "o1", None), _rest(3, "t1", "o1"), _rest(4, "t2", "o1")])
    assert state.rows_of("orders")[(USER, "o1")].trade_account_id == "4"
    assert {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()} == {"t1": "4", "t2": "4"}


def _teaching_events() -> list[DomainEvent]:
    """Orders that name no account and fills that do, before and after, in one batch of 2 or across batches."""
    return [
        _rest(1, "t1", "o1", position="p1"),
        _order(2, "o1", None),
        _order_fill(3, "t2", "o2", "4"),
        _rest(4, "t3", "o2"),
        _order(5, "o2", None),  # two batches after its fill named 4
        _order_fill(6, "t4", "o1", "7"),  # teaches o1, whose REST fill t1 is two batches back
        _rest(7, "t5", "o1"),
    ]


def test_orders_take_their_fills_account_across_batches_on_both_backends(migrated_engine: Engine) -> None:
    events = _teaching_events()
    _through_stores(migrated_engine, events, [2])
    state = fold(events)
    assert {k[1]: r.trade_account_id for k, r in state.rows_of("orders").items()} == {"o1": "7", "o2": "4"}
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "7", "t2": "4", "t3": "4", "t4": "7", "t5": "7"}
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "7"


def _account_events() -> list[DomainEvent]:
    """REST fills before and after their orders name an account, some in one batch of 3, some across batches."""
    return [
        _rest(1, "t1", "o1", position="p1"),
        _rest(2, "t2", "o2"),
        _order(3, "o2", "4"),  # same batch as its fill
        _rest(4, "t3", "o3"),
        _rest(5, "t4", "o1", position="p1"),
        _order(6, "o3", "6"),
        _order(7, "o1", "7"),  # two batches after its first fill
        _rest(8, "t5", "o1"),  # after: takes it at once
        _rest(9, "t6", "o9"),  # no order: unknown
    ]


def _through_stores(engine: Engine, events: Sequence[DomainEvent], sizes: Sequence[int]) -> None:
    """``events`` in batches of ``sizes`` (cycled) through an ordinary store and through a fresh one (the rebuild's:
    shadow tables, rows it never wrote not queried, on SQLite every row looked up lazily): both equal the fold in
    one go."""
    want = fold(events).to_rows()
    ordinary, fresh = ProjectionStore(engine), fresh_store(engine, "tai")
    with writer(engine).begin() as conn:
        ordinary.clear(conn)
        fresh.clear(conn)  # its checkpoint row (a hypothesis example before may have moved it)
    fresh = ProjectionStore(engine, tables=fresh.tables, checkpoint_name="tai", fresh=True)
    for store in (ordinary, fresh):
        start, turn = 0, 0
        while start < len(events):
            size = sizes[turn % len(sizes)]
            store.project_events(list(events[start : start + size]))
            start, turn = start + size, turn + 1
        assert store.all_rows() == want


def test_fills_take_their_orders_account_across_batches_on_both_backends(migrated_engine: Engine) -> None:
    """The store reads an order's stored fills back by the (account, order_id) index (the shadow tables have it
    too) when the order learns its account in a later batch."""
    events = _account_events()
    _through_stores(migrated_engine, events, [3])
    state = fold(events)
    fills = {k[1]: r.trade_account_id for k, r in state.rows_of("fills").items()}
    assert fills == {"t1": "7", "t2": "4", "t3": "6", "t4": "7", "t5": "7", "t6": None}
    assert {k: v[0] for k, v in _fees_of(state).items()} == {"": 1, "4": 1, "6": 1, "7": 3}
    assert state.rows_of("positions")[(USER, "p1")].trade_account_id == "7"


def test_the_prefetch_predicts_the_fee_row_of_a_fill_that_takes_its_orders_account(migrated_engine: Engine) -> None:
    """No row is queried on demand for a REST fill after its order (the order in an earlier batch, or in the same
    one): its fee row is predicted. On PostgreSQL each query would be a round trip, and a backfill brings thousands."""
    store = ProjectionStore(migrated_engine)
    batches = [[_order(1, "o1", "7")], [_rest(2, "t1", "o1"), _order(3, "o2", "4"), _rest(4, "t2", "o2")]]
    misses = 0
    for batch in batches:
        result = store.project_events(list(batch))
        assert result is not None
        misses += result.misses
    assert {k: v[0] for k, v in _fees_of(fold([e for b in batches for e in b])).items()} == {"7": 1, "4": 1}
    assert misses == 0


def test_the_prefetch_predicts_the_fee_row_of_a_fill_that_moves_with_its_order(migrated_engine: Engine) -> None:
    """A REST fill and, in the same batch, a fill of its order on another day that names the account the order's
    events did not: the REST fill's fee row moves to that account's row on its own day, which is predicted."""
    store = ProjectionStore(migrated_engine)
    batches = [[_order(1, "o1", None)], [_rest(2, "t1", "o1"), _order_fill(3, "t2", "o1", "7", at=DAY2)]]
    misses = 0
    for batch in batches:
        result = store.project_events(list(batch))
        assert result is not None
        misses += result.misses
    state = fold([e for b in batches for e in b])
    assert {(k[1], k[2]): r.fills for k, r in state.rows_of("fees_daily").items()} == {
        ("", "2026-11-20"): 0,
        ("7", "2026-11-20"): 1,
        ("7", "2026-11-21"): 1,
    }
    assert misses == 0


TAIS = st.none() | st.sampled_from(["0", "7"])


@st.composite
def orders_and_fills(draw: st.DrawFn) -> list[DomainEvent]:
    """Orders and fills of three orders in any order, each naming a trade account or not; fills with a position."""
    events: list[DomainEvent] = []
    for seq in range(1, draw(st.integers(1, 25)) + 1):
        order_id = draw(st.sampled_from(["o1", "o2", "o3"]))
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["created", "changed"]))
            events.append(_order(seq, order_id, draw(TAIS), kind=kind))
        else:
            fill = _fill(seq, draw(st.sampled_from(["t1", "t2", "t3", "t4", "t5"])), draw(TAIS),
                         source=draw(st.sampled_from(["ws", "rest"])), position=draw(st.none() | st.just("p1")),
                         at=draw(st.sampled_from([DAY1, DAY2])))  # fmt: skip
            events.append(msgspec.structs.replace(fill, order_id=order_id))
    return events


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=orders_and_fills(), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4))
def test_any_order_of_orders_and_fills_projects_as_the_fold(
    migrated_engine: Engine, events: list[DomainEvent], sizes: list[int]
) -> None:
    """Whatever comes first and however the batches fall: the stores give the fold's rows, no fill of an order
    that named an account is left without one (first-learned: a fill's own account stays), and no order of a fill
    that named one either."""
    _through_stores(migrated_engine, events, sizes)
    state = fold(events)
    orders = state.rows_of("orders")
    for fill in state.rows_of("fills").values():
        assert isinstance(fill, FillRow)
        order = orders.get((USER, fill.order_id))
        if fill.trade_account_id is None:
            assert order is None or getattr(order, "trade_account_id", None) is None, fill
    fees = sum(r.fills for r in state.rows_of("fees_daily").values() if isinstance(r, FeesDailyRow))
    assert fees == len(state.rows_of("fills"))
    named = {(USER, f.order_id) for f in state.rows_of("fills").values() if getattr(f, "trade_account_id", None)}
    for key in named & set(orders):  # and the other way: an order with a fill that names an account has one
        assert getattr(orders[key], "trade_account_id", None) is not None, key


def _projected(url: str) -> None:
    engine = open_engine(url)
    try:
        migrate.upgrade(engine)
        ProjectionStore(engine).project_events(events())
    finally:
        engine.dispose()


def _view(url: str, name: str, *columns: str) -> list[tuple[Any, ...]]:
    engine = open_engine(url)
    try:
        view = VIEWS[name]
        with engine.connect() as conn:
            rows = conn.execute(select(*(view.c[c] for c in columns)))
            return sorted((tuple(row) for row in rows), key=lambda r: tuple((v is None, str(v)) for v in r))
    finally:
        engine.dispose()


def _fees(url: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = _view(url, "v_fees_daily", "trade_account_id", "day", "market", "fills", "volume", "fees", "base_volume")
    return {r[:3]: r[3:] for r in rows}


def test_every_view_carries_the_trade_account(db_url: str) -> None:
    _projected(db_url)
    assert _fees(db_url) == FEES  # the emptied "unknown" row is hidden
    assert _view(db_url, "v_positions", "position_id", "trade_account_id") == [("p1", "7"), ("p2", "5")]
    assert _view(db_url, "v_settlements", "transaction_id", "trade_account_id") == [("s1", "7"), ("s2", None)]
    assert _view(db_url, "v_self_trades", "sell_order_id", "trade_account_id") == [("o8", None), ("o9", "0")]
    fills = dict(_view(db_url, "v_fills", "trade_id", "trade_account_id"))
    assert fills == {"t1": "0", "t2": None, "t3": "7", "t4": "7", "t6": None, "t8": "6"}
    for view in VIEWS.values():
        assert "trade_account_id" in view.c or "buyers_trade_account_id" in view.c, view.name
        assert view.c.keys()[-1] == "trade_account_id" or view.name in {"v_orders", "v_fills", "v_liquidations",
                                                                       "v_ledger", "v_balances", "v_balance_checks",
                                                                       "v_transfers"}  # fmt: skip


def test_migration_0007_moves_existing_rows(db_url: str) -> None:
    """Back to 0006 (one fees row per day and market, positions without an account) and up again: the fees are
    computed again from the fills, per trade account, and the positions take their fills' account."""
    _projected(db_url)
    migrate.downgrade(db_url, "0006_ledger")
    old = rows_of(db_url, "SELECT day, market, fills FROM v_fees_daily")
    assert sorted(old) == [
        ("2026-11-20", "btcusd", 3), ("2026-11-20", "btcusd-perp", 1), ("2026-11-21", "btcusd-perp", 2)
    ]  # fmt: skip
    migrate.upgrade(db_url)
    assert _fees(db_url) == FEES
    # Backfilled from the earliest fill naming one (the fold's first-learned 5 came from an alert before it).
    assert _view(db_url, "v_positions", "position_id", "trade_account_id") == [("p1", "7"), ("p2", "6")]


def test_migration_0014_gives_existing_fills_their_orders_account(db_url: str) -> None:
    """A projection made before 0014: REST fills left unknown although their order named an account later (the
    update below puts the order's account where the older fold had it). Down to 0013 and up again: the rows are
    the new fold's, row for row (fills, fees per trade account, the position)."""
    before = [
        _rest(1, "t1", "o1", position="p1", amount="0.1", fee="0.05"),
        _rest(2, "t2", "o1", amount="0.2", price="101", fee="0.1"),
        _rest(3, "t3", "o9", amount="0.3", fee="0.2"),  # no order: stays unknown
        _order(4, "o1", None),
    ]
    now = [*before[:3], _order(4, "o1", "7")]
    update = "UPDATE proj_orders SET trade_account_id = '7' WHERE order_id = 'o1'"
    rows = _migrated_again(db_url, before, update, "0013_task_failures", now)
    assert {r.trade_account_id: r.fills for r in rows["fees_daily"] if isinstance(r, FeesDailyRow)} == {"": 1, "7": 2}


def _migrated_again(
    db_url: str, before: Sequence[DomainEvent], update: str, down_to: str, now: Sequence[DomainEvent]
) -> dict[str, list[Any]]:
    """``before`` projected, ``update`` run (what the older fold left), down to ``down_to`` and up again: the rows
    of every projection table, checked against the new fold of ``now`` (fills, fees per trade account, positions,
    orders), row for row."""
    engine = open_engine(db_url)
    try:
        migrate.upgrade(engine)
        ProjectionStore(engine).project_events(list(before))
        with writer(engine).begin() as conn:
            conn.execute(text(update))
        migrate.downgrade(db_url, down_to)
        migrate.upgrade(db_url)
        rows = ProjectionStore(engine).all_rows()
    finally:
        engine.dispose()
    want = fold(now).to_rows()
    for name in ("fills", "fees_daily", "positions", "orders"):
        assert rows[name] == want[name], name
    return rows


def test_migration_0015_gives_existing_orders_their_fills_account(db_url: str) -> None:
    """A projection made before 0015: an order whose events named no account left without the one its fill named,
    and its REST fills unknown (the fill is projected under another order first, then moved to it by an update, as
    the older fold left it). Down to 0014 and up again: the rows are the new fold's, row for row."""
    now = [
        _rest(1, "t1", "o1", position="p1", amount="0.1", fee="0.05"),
        _rest(2, "t2", "o1", amount="0.2", price="101", fee="0.1"),
        _order_fill(3, "t3", "o1", "7"),
        _order(4, "o1", None),
        _rest(5, "t4", "o8", amount="0.3", fee="0.2"),  # no order: stays unknown
        _order(6, "o2", None),  # no fills: stays without one
    ]
    before = [*now[:2], msgspec.structs.replace(now[2], order_id="o9"), *now[3:]]
    update = "UPDATE proj_fills SET order_id = 'o1' WHERE trade_id = 't3'"
    rows = _migrated_again(db_url, before, update, "0014_fill_account_from_order", now)
    assert {r.trade_account_id: r.fills for r in rows["fees_daily"] if isinstance(r, FeesDailyRow)} == {"": 1, "7": 3}
    assert {r.order_id: r.trade_account_id for r in rows["orders"] if isinstance(r, OrderRow)} == {
        "o1": "7",
        "o2": None,
    }


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_report_account_is_the_trade_account_on_every_kind(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _projected(sqlite_url)
    base = ["--db-url", sqlite_url, "--format", "csv"]
    assert main(["report", "fees", *base, "--account", "7"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert {(r["trade_account_id"], r["market"]) for r in rows} == {("7", "btcusd"), ("7", "btcusd-perp")}
    assert main(["report", "fills", *base, "--account", "7"]) == 0
    assert sorted(r["trade_id"] for r in _csv(capsys.readouterr().out)) == ["t3", "t4"]
    assert main(["report", "positions", *base, "--account", "5"]) == 0
    assert [r["position_id"] for r in _csv(capsys.readouterr().out)] == ["p2"]
    assert main(["report", "settlements", *base, "--account", "7"]) == 0
    assert [r["transaction_id"] for r in _csv(capsys.readouterr().out)] == ["s1"]
    assert main(["report", "self-trades", *base, "--account", "3"]) == 0  # either side
    assert [r["sell_order_id"] for r in _csv(capsys.readouterr().out)] == ["o8"]
    assert main(["report", "fills", *base, "--user", USER]) == 0
    assert len(_csv(capsys.readouterr().out)) == 6
    assert main(["report", "fills", *base, "--user", "someone else"]) == 2  # an unknown user id: not an empty report
    assert "this database has no Bitstamp account 'someone else'" in capsys.readouterr().err


def test_report_account_refuses_what_is_not_a_trade_account(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _projected(sqlite_url)
    assert main(["report", "fees", "--db-url", sqlite_url, "--account", "acc"]) == 2
    assert "--account acc: not a trade account id" in capsys.readouterr().err
    # A Bitstamp account (user id) given as --account, as scripts did before: the error names --user.
    assert main(["report", "fills", "--db-url", sqlite_url, "--account", USER]) == 2
    assert f"use --user {USER}" in capsys.readouterr().err
