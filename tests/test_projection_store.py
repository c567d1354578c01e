"""The persisted projection: incremental through the store equals a full rebuild, row for row, on both backends;
rows and checkpoint are written together or not at all; money sums are exact in SQL.

Rules: local databases only (``db_url`` runs each test on SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline import NOW
from sqlalchemy import Engine, func, select, text
from test_projection import domain_events

from tracker.bitstamp.frames import entry_from_frame
from tracker.domain.events import DomainEvent, Fill
from tracker.domain.log import NewEntry
from tracker.domain.projection import ProjectionState, fold
from tracker.fake.model import AccountModel
from tracker.store import migrate
from tracker.store.engine import open_engine, writer
from tracker.store.event_log import EventLog
from tracker.store.projection_schema import VIEWS, projector_checkpoint
from tracker.store.projections import ProjectionStore

MARKETS = ("btcusd", "ethusd", "btcusd-perp", "ethusd-perp")
T0 = 1_790_000_000_000_000


def fake_entries(seed: int, steps: int, account: str = "acc") -> list[NewEntry]:
    """The fake exchange model's websocket frames as log entries (every private case: orders, fills, ...)."""
    model = AccountModel(seed, MARKETS)
    entries: list[NewEntry] = []
    for i in range(steps):
        for emission in model.step(T0 + i * 250_000):
            entry = entry_from_frame(emission.text, account=account, received_at=NOW, connection_id="c")
            assert isinstance(entry, NewEntry)
            entries.append(entry)
    return entries


def clear(store: ProjectionStore) -> None:
    with writer(store.engine).begin() as conn:
        store.clear(conn)


def project_in_batches(store: ProjectionStore, events: list[DomainEvent], sizes: list[int]) -> int:
    """Project ``events`` in batches of the given sizes (then the rest); returns the prefetch misses."""
    misses = position = 0
    for size in [*sizes, len(events)]:
        chunk = events[position : position + size]
        position += size
        if chunk:
            result = store.project_events(chunk)
            assert result is not None
            misses += result.misses
    return misses


def test_fake_log_through_the_store_equals_the_pure_fold(migrated_engine: Engine) -> None:
    log = EventLog(migrated_engine)
    log.append(fake_entries(3, 800))
    store = ProjectionStore(migrated_engine)
    misses = 0

    def on_batch(result: Any) -> None:
        nonlocal misses
        misses += result.misses

    assert store.catch_up(log, batch=333, on_batch=on_batch) == log.head()
    from tracker.bitstamp.parse import parse_entry

    whole = fold(parse_entry(entry) for page in log.iter_after(0) for entry in page)
    assert store.all_rows() == whole.to_rows()
    assert misses == 0  # the prefetch predicted every row the fold read
    assert store.load_checkpoint() == whole.checkpoint


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=domain_events(), data=st.data())
def test_incremental_equals_full_rebuild(
    migrated_engine: Engine, events: list[DomainEvent], data: st.DataObject
) -> None:
    """Random events, a random split point (a restart: a new store instance), random batch sizes on either side."""
    split = data.draw(st.integers(min_value=0, max_value=len(events)), label="split")
    sizes = st.lists(st.integers(min_value=1, max_value=12), max_size=6)
    first = ProjectionStore(migrated_engine)
    clear(first)
    misses = project_in_batches(first, events[:split], data.draw(sizes, label="batches before"))
    resumed = ProjectionStore(migrated_engine)  # as after a restart: nothing carried over but the database
    assert resumed.load_checkpoint() == (events[split - 1].seq if split else 0)
    misses += project_in_batches(resumed, events[split:], data.draw(sizes, label="batches after"))
    incremental = resumed.all_rows()

    clear(resumed)
    full = ProjectionStore(migrated_engine)
    misses += project_in_batches(full, events, [])
    assert full.all_rows() == incremental
    assert incremental == fold(events).to_rows()
    assert misses == 0


def test_rows_and_checkpoint_commit_together(migrated_engine: Engine) -> None:
    events = [
        Fill(seq=seq, account="a", source="ws", trade_id=f"t{seq}", order_id=None, market="btcusd", side="buy",
             amount=Decimal("0.5"), price=Decimal(100), fee=Decimal("0.1"),
             executed_at=datetime(2026, 11, 29, tzinfo=UTC), position_id=None, is_liquidation=False)
        for seq in (1, 2, 3)
    ]  # fmt: skip
    store = ProjectionStore(migrated_engine)
    store.project_events(events[:1])
    state = fold(events[1:], ProjectionState.from_rows(store.all_rows(), 1))
    # Another writer moved the checkpoint since this state was loaded: nothing is written, not even the rows.
    assert store.write_batch(state.changed_rows(), state.checkpoint, expected=0) is None
    assert len(store.all_rows()["fills"]) == 1
    assert store.load_checkpoint() == 1
    assert store.write_batch(state.changed_rows(), state.checkpoint, expected=1) == 3  # 2 fills + 1 fees_daily
    assert store.load_checkpoint() == 3
    # A batch at or below the checkpoint (a retry after a crash) changes nothing.
    assert store.project_events(events) is not None
    assert store.all_rows() == fold(events).to_rows()


def test_a_failed_write_leaves_rows_and_checkpoint_unchanged(
    migrated_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ProjectionStore(migrated_engine)
    store.project_events(fold_events := _fills(1, 2))
    before = store.all_rows()
    calls = 0

    def crash() -> datetime:  # called for the checkpoint row, after the projected rows were upserted
        nonlocal calls
        calls += 1
        raise RuntimeError("power cut")

    monkeypatch.setattr(store, "clock", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.project_events(_fills(3, 4))
    assert calls == 1
    assert store.all_rows() == before
    assert store.load_checkpoint() == fold_events[-1].seq


def _fills(first: int, last: int, fee: str = "0.1") -> list[DomainEvent]:
    return [
        Fill(seq=seq, account="a", source="ws", trade_id=f"t{seq}", order_id=None, market="btcusd", side="buy",
             amount=Decimal("0.5"), price=Decimal(100), fee=Decimal(fee),
             executed_at=datetime(2026, 11, 29, tzinfo=UTC), position_id=None, is_liquidation=False)
        for seq in range(first, last + 1)
    ]  # fmt: skip


FEES = ["0.1", "0.2", "0.00000001", "1e-8", "123456789.987654321", "-0.3", "0.1"] * 30
EXACT_TOTAL = sum((Decimal(fee) for fee in FEES), Decimal(0))


def test_sum_of_money_is_exact_in_sql(migrated_engine: Engine) -> None:
    events = [
        Fill(seq=seq, account="a", source="ws", trade_id=f"t{seq}", order_id=None, market="btcusd", side="buy",
             amount=Decimal(1), price=Decimal(1), fee=Decimal(fee), executed_at=datetime(2026, 11, 29, tzinfo=UTC),
             position_id=None, is_liquidation=False)
        for seq, fee in enumerate(FEES, start=1)
    ]  # fmt: skip
    ProjectionStore(migrated_engine).project_events(events)
    v_fills, v_fees = VIEWS["v_fills"], VIEWS["v_fees_daily"]
    with migrated_engine.connect() as conn:
        assert conn.execute(select(func.sum(v_fills.c.fee))).scalar_one() == EXACT_TOTAL
        # What a user types: plain SQL text through tracker's engine.
        raw = conn.execute(text("SELECT SUM(fee) FROM v_fills")).scalar_one()
        assert Decimal(raw) == EXACT_TOTAL
        assert conn.execute(select(v_fees.c.fees)).scalar_one() == EXACT_TOTAL  # maintained exactly by the fold
        # Integer sums stay integers (SQLite); a window sum works; the sum of nothing is NULL.
        count = conn.execute(text("SELECT SUM(fills) FROM v_fees_daily")).scalar_one()
        assert count == len(FEES)
        if migrated_engine.dialect.name == "sqlite":  # PostgreSQL's SUM(bigint) is numeric by its own rules
            assert type(count) is int
        running = conn.execute(
            text("SELECT SUM(fee) OVER (ORDER BY trade_id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM v_fills")
        ).all()
        assert len(running) == len(FEES)
        assert conn.execute(text("SELECT SUM(fee) FROM v_fills WHERE 1 = 0")).scalar_one() is None


def test_sqlite_stores_money_as_plain_decimal_text(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        ProjectionStore(engine).project_events(_fills(1, 1, fee="1e-8"))
    finally:
        engine.dispose()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT fee, typeof(fee) FROM v_fills").fetchone() == ("0.00000001", "text")


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
def test_sqlite_shell_decimal_sum_is_exact(sqlite_url: str) -> None:
    """docs/sql.md tells shell users to write decimal_sum(fee): check that it is exact there."""
    engine = open_engine(sqlite_url)
    try:
        migrate.upgrade(engine)
        ProjectionStore(engine).project_events(
            [e for i, fee in enumerate(FEES, start=1) for e in _fills(i, i, fee=fee)]
        )
    finally:
        engine.dispose()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    shell = subprocess.run(
        ["sqlite3", str(path), "SELECT decimal_sum(fee) FROM v_fills"], capture_output=True, text=True, check=False
    )
    if "no such function" in shell.stderr:
        pytest.skip(f"this sqlite3 shell has no decimal extension: {shell.stderr.strip()}")
    assert Decimal(shell.stdout.strip()) == EXACT_TOTAL


def test_first_writers_on_a_fresh_database_serialise(migrated_engine: Engine) -> None:
    """No checkpoint row yet: the first write creates it; a second writer that also read 0 is refused, and a refused
    write leaves no row behind (``tracker status`` reads a missing row as "the projector never ran")."""
    first, second = ProjectionStore(migrated_engine), ProjectionStore(migrated_engine)
    rows = fold(_fills(1, 1)).changed_rows()
    assert first.write_batch(rows, 1, expected=5) is None
    with migrated_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(projector_checkpoint)).scalar_one() == 0
    assert first.write_batch(rows, 1, expected=0) == 2
    assert second.write_batch(fold(_fills(1, 2)).changed_rows(), 2, expected=0) is None
    assert second.load_checkpoint() == 1
