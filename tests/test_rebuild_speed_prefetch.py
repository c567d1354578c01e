"""A ``fresh`` store (the rebuild's) on SQLite predicts nothing: every row is looked up when the fold asks, in the
previous batch, the written filter, then the database (on PostgreSQL it predicts, as an ordinary store does). Either
way it keeps at most the previous batch in memory.

Rules: local databases only (``migrated_engine`` runs each test on SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from test_fresh_store import fresh_store
from test_projection_store import fake_entries

from tracker.domain.projection import ProjectionState
from tracker.domain.rows import TABLES, CounterRow, Row
from tracker.store.event_log import EventLog
from tracker.store.projection_prefetch import Batch, Key, LazyTable, Prefetcher, WrittenKeys, _spent
from tracker.store.projection_schema import PROJECTION_TABLES
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


KEYS = st.tuples(st.sampled_from(["acc", "other"]), st.text(max_size=6) | st.integers().map(str))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(TABLES)),
    st.lists(KEYS, max_size=40),
    st.lists(KEYS, max_size=40),
    st.dictionaries(KEYS, st.none() | st.just("row"), max_size=10),
)
def test_the_lazy_loader_answers_as_the_filter(
    name: str, written_keys: list[Key], asked: list[Key], cached: dict[Key, str | None]
) -> None:
    """Layer 4's loader (the Bloom filter's test written out in it, the previous batch's answer in one lookup)
    queries exactly the keys ``WrittenKeys.maybe`` may have written and the previous batch did not know, and answers
    a key the previous batch knew as it did (its row, or ``None``), without a query."""
    prefetch = Prefetcher(PROJECTION_TABLES, fresh=True, touched=None, lazy=True)
    written = WrittenKeys()
    written.add_all(name, written_keys)
    queried: list[Key] = []
    stored = CounterRow("acc", "stored", 1, 1)

    def query(conn: Any, key: Key) -> Row | None:
        queried.append(key)
        return stored

    prefetch._by_key[name] = query  # type: ignore[assignment]
    previous = LazyTable(_spent)
    rows = {key: None if value is None else CounterRow("acc", value, 2, 2) for key, value in cached.items()}
    dict.update(previous, rows)
    for cache in (None, {name: previous}):
        for filt in (written, _AsProtocol(written)):  # the inlined test, and the generic loader's maybe call
            queried.clear()
            load = prefetch.lazy_loader(None, name, filt, cache)  # type: ignore[arg-type]
            table = LazyTable(load)
            for key in asked:
                expected: Row | None
                if cache is not None and key in rows:
                    expected = rows[key]
                else:
                    expected = stored if written.maybe(name, key) else None
                assert load(table, key) == expected
            known = rows if cache is not None else {}
            assert queried == [key for key in asked if key not in known and written.maybe(name, key)]


class _AsProtocol:
    """A ``WrittenFilter`` that is not a ``WrittenKeys`` (so the loader calls its ``maybe``)."""

    def __init__(self, inner: WrittenKeys) -> None:
        self.inner = inner

    def add_all(self, name: str, keys: Any) -> None:
        self.inner.add_all(name, keys)

    def maybe(self, name: str, key: Key) -> bool:
        return self.inner.maybe(name, key)
