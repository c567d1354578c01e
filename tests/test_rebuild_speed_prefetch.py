"""A ``fresh`` store (the rebuild's) on SQLite predicts nothing: every row is looked up when the fold asks, in the
previous batch, the written filter, then the database (on PostgreSQL it predicts, as an ordinary store does). Either
way it keeps at most the previous batch in memory.

Rules: local databases only (``migrated_engine`` runs each test on SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from sqlalchemy import Engine
from test_fresh_store import fresh_store
from test_projection_store import fake_entries

from tracker.domain.projection import ProjectionState
from tracker.domain.rows import TABLES, CounterRow, Row
from tracker.store.event_log import EventLog
from tracker.store.projection_prefetch import Batch, LazyTable
from tracker.store.projections import BatchResult, ProjectionStore


def _lazy_tables() -> int:
    return sum(1 for item in gc.get_objects() if isinstance(item, LazyTable))


def test_fresh_store_keeps_one_batch_and_equals_an_ordinary_one(migrated_engine: Engine) -> None:
    log = EventLog(migrated_engine)
    log.append(fake_entries(11, 600))
    ordinary = ProjectionStore(migrated_engine)
    ordinary.catch_up(log, batch=97)
    fresh = fresh_store(migrated_engine, "speed")
    results: list[BatchResult] = []
    before = _lazy_tables()
    fresh.catch_up(log, batch=97, on_batch=results.append)
    assert len(results) > 10
    assert fresh.prefetch.skips_unwritten
    # Each batch's loaders held the previous batch's tables: once a batch is committed they must not, or every
    # batch of a rebuild stays in memory (one batch's tables are kept as the next one's cache).
    assert _lazy_tables() - before <= len(fresh.tables)
    assert fresh.all_rows() == ordinary.all_rows()
    # Queries only for rows written before the previous batch (positions read again later): few, never per event.
    assert sum(result.misses for result in results) < sum(result.events for result in results) / 4


def test_a_committed_batch_is_not_loaded_from(migrated_engine: Engine) -> None:
    log = EventLog(migrated_engine)
    log.append(fake_entries(5, 60))
    fresh = fresh_store(migrated_engine, "speed")
    fresh.catch_up(log, batch=50)
    gc.collect()
    cached = [item for item in gc.get_objects() if isinstance(item, LazyTable)]
    assert len(cached) == len(fresh.tables)  # the last batch's, kept as the next one's cache
    for table in cached:
        with pytest.raises(RuntimeError, match="over"):
            table.get(("nobody", "nothing"))


def test_batch_changed_is_every_dirty_row_and_refuses_a_dirty_key_without_one() -> None:
    """``Batch.changed`` (the rows a batch writes, looked up and checked in C): exactly the dirty keys' rows, a row
    per key; a dirty key whose table holds ``None`` (no row) is an error, not a row left out."""

    def nothing(table: LazyTable, key: tuple[Any, ...]) -> Row | None:
        return None

    tables = {name: LazyTable(nothing) for name in TABLES}
    batch = Batch(ProjectionState(tables=tables), tables)
    rows = [CounterRow("acc", f"c{i}", i, i) for i in range(5)]
    for row in rows:
        tables["counters"][("acc", row.name)] = row
        batch.state.dirty["counters"].add(("acc", row.name))
    tables["counters"][("acc", "clean")] = CounterRow("acc", "clean", 1, 1)  # not dirty: not written
    changed = batch.changed()
    assert list(changed) == ["counters"]
    assert sorted(changed["counters"], key=lambda row: row.name) == rows
    batch.state.dirty["orders"].add(("acc", "o1"))  # dirty, but the table has no row for it
    with pytest.raises(RuntimeError, match="orders: a dirty key without a row"):
        batch.changed()
