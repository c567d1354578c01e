"""A position's order-dependent columns (entry_price; side when flat) follow the exchange's order of its fills (trade
id ascending), not the order tracker learned them in (docs/semantics.md, Positions).

1. A fill learned late (a REST ``trade_history/`` row after later fills came live) gives the exchange order's entry
   price and side: folded in memory, and through the store on each backend (incrementally, with the late fill in a
   batch of its own, so the position's fills are read back from the database, and by ``tracker rebuild``).
2. Property: any arrival order of a position's fills, split into any batches, gives the row of the fold in exchange
   order.
3. Two projectors at once: a batch overtaken by another projector's commit before its end reads the position's
   fills as of its own checkpoint (one snapshot), and its write is refused; it used to raise on PostgreSQL.

Rules: local databases only (``db_url``: SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline import NOW, Log, trade_frame
from sqlalchemy import Engine, text

from tracker.bitstamp.frames import entry_from_frame
from tracker.bitstamp.rest_entries import entry_from_perp_trade
from tracker.domain.events import DomainEvent
from tracker.domain.log import NewEntry
from tracker.domain.projection import ProjectionState, apply, fold, refold_positions
from tracker.domain.projection_positions import exchange_key
from tracker.domain.rows import TABLES, FillRow, PositionRow, Row
from tracker.store import migrate
from tracker.store.engine import open_engine, writer
from tracker.store.event_log import EventLog
from tracker.store.projections import ProjectionStore
from tracker.store.rebuild import rebuild

MARKET = "btcusd-perp"
US = 1_790_000_000_000_000

# (trade id, side, amount, price): the exchange's order is the trade ids'.
Fill = tuple[int, str, str, str]


def ws_fill(fill: Fill, position: str = "p1") -> NewEntry:
    trade_id, side, amount, price = fill
    frame = trade_frame(
        str(trade_id),
        "o1",
        market=MARKET,
        side=side,
        amount=amount,
        price=price,
        us=US + trade_id,
        position_id=position,
    )
    entry = entry_from_frame(json.dumps(frame), account="acc", received_at=NOW, connection_id="c")
    assert isinstance(entry, NewEntry)
    return entry


def rest_fill(fill: Fill, position: str = "p1") -> NewEntry:
    """The same fill as a REST ``trade_history/`` row (a backfill: no trade account, upper-case side)."""
    trade_id, side, amount, price = fill
    row = {
        "trade_id": str(trade_id), "order_id": "o1", "position_id": position, "datetime": "2026-09-15 06:33:20.590000",
        "fee": "0.1", "market": "BTC/USD-PERP", "side": side.upper(), "type": "TRADE", "price": price, "amount": amount,
    }  # fmt: skip
    entry = entry_from_perp_trade(row, account="acc", received_at=NOW)
    assert isinstance(entry, NewEntry)
    return entry


def events_of(entries: Sequence[NewEntry]) -> list[DomainEvent]:
    log = Log("acc")
    for entry in entries:
        log.append(entry)
    return log.events()


# Exchange order: 10 buy 1 @100, 20 sell 2 @110 (flips short: 1 @110 increases it), 30 buy 1 @120 (flat again).
# Entry price 105, side (flat) long. Learned: 10 and 30 live, 20 late from REST.
FLIP = [(10, "buy", "1", "100"), (20, "sell", "2", "110"), (30, "buy", "1", "120")]
# Exchange order: 40 buy 1 @190, 50 sell 1 @200: entry 190, side (flat) long. Learned: 50 live, 40 late.
FIRST = [(40, "buy", "1", "190"), (50, "sell", "1", "200")]


def late_entries() -> list[NewEntry]:
    return [
        ws_fill(FLIP[0]), ws_fill(FLIP[2]), ws_fill(FIRST[1], "p2"),
        rest_fill(FLIP[1]), rest_fill(FIRST[0], "p2"),
    ]  # fmt: skip


def _position(rows: dict[str, list[Row]] | dict[str, Any], position: str) -> PositionRow:
    found = [row for row in rows["positions"] if isinstance(row, PositionRow) and row.position_id == position]
    assert len(found) == 1, found
    return found[0]


def _check_late(rows: dict[str, Any]) -> None:
    flip, first = _position(rows, "p1"), _position(rows, "p2")
    # Folded in log order (the known limit this fixes): p1 110, p2 200 and short.
    assert (flip.entry_price, flip.side, flip.size, flip.status) == (Decimal(105), "long", 0, "closed")
    assert (first.entry_price, first.side, first.size) == (Decimal(190), "long", 0)
    assert (flip.last_trade_id, first.last_trade_id) == ("30", "50")
    assert (flip.fees, first.fees) == (Decimal("0.3"), Decimal("0.2"))


def test_a_late_fill_takes_its_place_in_exchange_order() -> None:
    rows = fold(events_of(late_entries())).to_rows()
    _check_late(rows)
    in_order = [ws_fill(fill) for fill in FLIP] + [ws_fill(fill, "p2") for fill in FIRST]
    assert rows["positions"] == fold(events_of(in_order)).to_rows()["positions"]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_late_fill_through_the_store_and_the_rebuild(engine: Engine) -> None:
    """Batches of one entry: the late fills' batches read their positions' earlier fills back from the database."""
    log = EventLog(engine)
    log.append(late_entries())
    store = ProjectionStore(engine)
    store.catch_up(log, batch=1)
    incremental = store.all_rows()
    _check_late(incremental)
    rebuild(engine, batch=2)
    assert store.all_rows() == incremental


def test_migration_0012_folds_existing_positions_in_exchange_order(engine: Engine) -> None:
    """Positions projected before 0012 (their entry columns as the log's order made them: here made wrong by hand)
    are folded again in exchange order by the upgrade: the rows the projector makes since."""
    log = EventLog(engine)
    log.append(late_entries())
    store = ProjectionStore(engine)
    store.catch_up(log, batch=1)
    want = store.all_rows()
    migrate.downgrade(engine, "0011_accounts_down")
    with writer(engine).begin() as conn:
        conn.execute(
            text(
                "UPDATE proj_positions SET side = 'short', first_side = 'short', entry_price = NULL, "
                "entry_cost = '0', entry_qty = '0'"
            )
        )
    migrate.upgrade(engine)
    assert store.all_rows() == want


# --- 2. the property ---------------------------------------------------------------------------------------------


@st.composite
def position_fills(draw: st.DrawFn) -> list[Fill]:
    """Up to 12 fills of one position, trade ids of several digit counts (numeric order is not text order)."""
    ids = draw(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=12, unique=True))
    amounts = st.sampled_from(["0.5", "1", "1.5", "2", "3.25"])
    prices = st.sampled_from(["99.5", "100", "101", "110.25", "120"])
    return [(i, draw(st.sampled_from(["buy", "sell"])), draw(amounts), draw(prices)) for i in sorted(ids)]


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[Fill], list[NewEntry], list[int]]:
    """A position's fills (in exchange order), the log entries of an arrival order (each from the websocket or
    REST; some learned twice), and batch sizes."""
    fills = draw(position_fills())
    order = draw(st.permutations(fills))
    entries = [draw(st.sampled_from([ws_fill, rest_fill]))(fill) for fill in order]
    again = draw(st.lists(st.sampled_from(fills), max_size=3))
    entries += [ws_fill(fill) for fill in again]  # a REST row's fill seen live later (or seen again)
    sizes = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8))
    return fills, entries, sizes


def _in_exchange_order(fills: Sequence[Fill]) -> PositionRow:
    """The reference: the fills, live, in exchange order, folded as they come (no fill is late)."""
    return _position(fold(events_of([ws_fill(f) for f in fills])).to_rows(), "p1")


def _batches(events: Sequence[DomainEvent], sizes: Sequence[int]) -> Iterator[Sequence[DomainEvent]]:
    start, i = 0, 0
    while start < len(events):
        size = sizes[i % len(sizes)]
        yield events[start : start + size]
        start, i = start + size, i + 1


def _fold_in_batches(events: Sequence[DomainEvent], sizes: Sequence[int]) -> dict[str, dict[Any, Row]]:
    """As the store folds: per batch a state whose tables start empty and read the rows stored so far, the batch's
    end, its dirty rows stored (and a ``PositionFills`` over the stored fills and the batch's)."""
    stored: dict[str, dict[Any, Row]] = {name: {} for name in TABLES}
    checkpoint = 0
    for batch in _batches(events, sizes):
        memory: dict[str, dict[Any, Row]] = {name: {} for name in TABLES}

        def read(account: str, position: str, memory: dict[str, dict[Any, Row]] = memory) -> list[FillRow]:
            rows = {**stored["fills"], **memory["fills"]}.values()
            return [r for r in rows if isinstance(r, FillRow) and r.account == account and r.position_id == position]

        tables = {name: _Overlay(stored[name], memory[name]) for name in TABLES}
        state = ProjectionState(tables=tables, position_fills=read)
        state.checkpoint = checkpoint
        for event in batch:
            apply(state, event)
        refold_positions(state)
        for name, keys in state.dirty.items():
            for key in keys:
                stored[name][key] = memory[name][key]
        checkpoint = state.checkpoint
    return stored


class _Overlay:
    """A state table: the batch's rows over the stored ones (``get``, ``in``, item assignment only)."""

    __slots__ = ("memory", "stored")

    def __init__(self, stored: dict[Any, Row], memory: dict[Any, Row]) -> None:
        self.stored, self.memory = stored, memory

    def get(self, key: Any, /) -> Row | None:
        return self.memory[key] if key in self.memory else self.stored.get(key)

    def __contains__(self, key: object, /) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: Any, row: Row, /) -> None:
        self.memory[key] = row


def _public(row: PositionRow) -> PositionRow:
    """The row but its trade account (first-learned: a REST row names none, so an all-REST position has none)."""
    return msgspec.structs.replace(row, trade_account_id=None)


@settings(max_examples=300, deadline=None)
@given(arrivals())
def test_any_arrival_order_in_any_batches_gives_the_exchange_order_row(
    case: tuple[list[Fill], list[NewEntry], list[int]],
) -> None:
    fills, entries, sizes = case
    want = _in_exchange_order(fills)
    events = events_of(entries)
    whole = _position(fold(events).to_rows(), "p1")
    batched = _position({"positions": list(_fold_in_batches(events, sizes)["positions"].values())}, "p1")
    assert _public(whole) == _public(batched) == _public(want)
    assert batched == whole
    assert want.last_trade_id == str(max(fill[0] for fill in fills))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(arrivals())
def test_any_arrival_order_through_the_store(
    engine: Engine, case: tuple[list[Fill], list[NewEntry], list[int]]
) -> None:
    """The same on each backend's store (``ProjectionStore.project_events`` batch by batch): the late fills' batches
    read their position's fills back with ``FillsReader``."""
    fills, entries, sizes = case
    with writer(engine).begin() as conn:
        ProjectionStore(engine).clear(conn)
    store = ProjectionStore(engine)
    for batch in _batches(events_of(entries), sizes):
        assert store.project_events(batch) is not None
    assert _public(_position(store.all_rows(), "p1")) == _public(_in_exchange_order(fills))


def test_exchange_key_is_numeric_order_for_canonical_ids() -> None:
    ids = ["9", "10", "99", "100", "2001939623936278528", "2001939623936278601"]
    assert sorted(reversed(ids), key=exchange_key) == ids
    check: Callable[[str], tuple[int, str]] = exchange_key
    assert check("7") < check("12")


# --- 3. two projectors at once ------------------------------------------------------------------------------------


def test_an_overtaken_batch_is_refused_not_crashed(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two projectors over one log (``tracker run``'s projector and the reconciler's ``catch_up``): A folds a batch
    with a late fill (its position waits for ``refold_positions``), and before A's batch ends B projects the log
    further (a later fill of the same position) and commits. A's batch must read the position's fills as of its
    checkpoint, as every other row it read: then its write is refused (the checkpoint moved) and B's rows stay.
    Read after B's commit (PostgreSQL's default READ COMMITTED: each statement its own snapshot), they held B's
    later fill, which A's row did not: ``refold_positions`` raised (the kill -9 test's crash of the merged 0012)."""
    later = ws_fill((40, "sell", "1", "130"))
    log = EventLog(engine)
    log.append([ws_fill(FLIP[0]), ws_fill(FLIP[2]), rest_fill(FLIP[1]), later])
    events = log.read_records_after(0, 10)
    first, overtaker = ProjectionStore(engine), ProjectionStore(engine)
    real_refold = refold_positions
    overtaken: list[int] = []

    def refold_after_the_other_commits(state: ProjectionState) -> None:
        if not overtaken:  # A's batch end (B's own passes straight through)
            overtaken.append(state.checkpoint)  # (the batch's own: its last event's seq)
            assert overtaker.project(events) is not None
        real_refold(state)

    monkeypatch.setattr("tracker.store.projections.refold_positions", refold_after_the_other_commits)
    assert first.project(events[:3]) is None  # refused: B moved the checkpoint
    assert overtaken == [events[2].seq]
    monkeypatch.undo()
    want = _position(fold(events_of([ws_fill(f) for f in [*FLIP, (40, "sell", "1", "130")]])).to_rows(), "p1")
    assert first.load_checkpoint() == events[-1].seq
    assert _position(first.all_rows(), "p1") == want
