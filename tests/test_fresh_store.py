"""A ``fresh`` projection store (the rebuild's shadow tables) skips queries for rows it never wrote, and gives the
same rows as an ordinary store; if its checkpoint moves under it, it goes back to querying.

Rules: local databases only (``db_url``: SQLite and PostgreSQL); no sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from test_projection_store import fake_entries

from tracker.bitstamp.parse import parse_entry
from tracker.domain.log import LogRecord
from tracker.domain.rows import TABLES, row_key
from tracker.store import migrate
from tracker.store.engine import open_engine, writer
from tracker.store.event_log import EventLog
from tracker.store.projection_prefetch import WrittenKeys
from tracker.store.projection_schema import projector_checkpoint, shadow_tables
from tracker.store.projections import ProjectionStore


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = open_engine(db_url)
    migrate.upgrade(engine)
    EventLog(engine).append(fake_entries(7, 500))
    try:
        yield engine
    finally:
        engine.dispose()


def _fresh_touched(engine: Engine, touched: dict[str, set[int]]) -> ProjectionStore:
    metadata, tables = shadow_tables("fresh_")
    with writer(engine).begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
    return ProjectionStore(engine, tables=tables, checkpoint_name="fresh", fresh=True, touched=touched)


def fresh_store(engine: Engine, name: str = "fresh") -> ProjectionStore:
    """A fresh (rebuild) store on new, empty shadow tables ``{name}_*`` (tests/test_rebuild_speed_prefetch.py too)."""
    metadata, tables = shadow_tables(f"{name}_")
    with writer(engine).begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
    return ProjectionStore(engine, tables=tables, checkpoint_name=name, fresh=True)


def test_written_keys_never_says_no_to_a_written_key() -> None:
    written = WrittenKeys()
    keys = [("acc", str(i)) for i in range(10_000)]
    written.add_all("orders", keys)
    assert all(written.maybe("orders", key) for key in keys)
    absent = [("acc", f"x{i}") for i in range(10_000)]
    assert sum(written.maybe("orders", key) for key in absent) < 10  # false "maybe": rare


def test_fresh_store_with_touched_sets_equals_ordinary_store(engine: Engine) -> None:
    """The parallel rebuild's workers: the touched sets instead of the Bloom filter; every written key is in them."""
    ordinary = ProjectionStore(engine)
    ordinary.catch_up(EventLog(engine), batch=53)
    touched: dict[str, set[int]] = {name: set() for name in TABLES if name != "counters"}
    fresh = _fresh_touched(engine, touched)
    fresh.catch_up(EventLog(engine), batch=53)
    rows = fresh.all_rows()
    assert rows == ordinary.all_rows()
    for name, keys in touched.items():
        assert {hash(row_key(row)) for row in rows[name]} <= keys


def test_fresh_store_equals_ordinary_store(engine: Engine) -> None:
    ordinary = ProjectionStore(engine)
    ordinary.catch_up(EventLog(engine), batch=53)
    fresh = fresh_store(engine)
    fresh.catch_up(EventLog(engine), batch=53)
    assert fresh.all_rows() == ordinary.all_rows()
    assert fresh.load_checkpoint() == ordinary.load_checkpoint()


def test_fresh_store_whose_checkpoint_moves_queries_again(engine: Engine) -> None:
    log = EventLog(engine)
    fresh = fresh_store(engine)
    fresh.catch_up(log, batch=50, until=200)
    other = ProjectionStore(engine, tables=fresh.tables, checkpoint_name="fresh")  # a second writer, unexpected
    other.catch_up(log, batch=50, until=300)
    fresh.catch_up(log, batch=50)  # its next write is refused, it reloads and queries the rows the other wrote
    assert not fresh.prefetch.skips_unwritten
    ordinary = ProjectionStore(engine)
    ordinary.catch_up(log, batch=50)
    assert fresh.all_rows() == ordinary.all_rows()
    with writer(engine).begin() as conn:
        conn.execute(projector_checkpoint.delete().where(projector_checkpoint.c.name == "fresh"))


def test_log_records_are_the_entries_fields(engine: Engine) -> None:
    """The projector's read path (``read_records_after``: driver rows, no ``LogEntry``) gives the same values as
    ``read_after`` (received_at: an aware UTC datetime, equal and of the same tzinfo), and the same events."""
    log = EventLog(engine)
    entries = log.read_after(0, 10_000)
    records = log.read_records_after(0, 10_000)
    assert len(records) == len(entries) > 500
    for entry, record in zip(entries, records, strict=True):
        assert record == LogRecord(*(getattr(entry, name) for name in LogRecord._fields))
        assert record.received_at.tzinfo is entry.received_at.tzinfo
        assert parse_entry(record) == parse_entry(entry)
    assert [r.seq for r in log.read_records_after(20, 3)] == [21, 22, 23]
    assert log.read_records_after(entries[-1].seq, 10) == []
