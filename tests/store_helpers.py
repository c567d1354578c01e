"""Helpers shared by the storage tests: building entries, a migrated log, tampering with the triggers dropped."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text

from tracker.domain.chain import ChainWalker
from tracker.domain.log import NewEntry
from tracker.store import migrate
from tracker.store.engine import open_engine, sqlite_path
from tracker.store.event_log import EventLog

T0 = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
# The shared test server's admin URL (conftest.py makes the per-worker databases through it). Here, not in
# conftest.py: ``from conftest import`` may find tests/fake/conftest.py first in a whole run.
PG_ADMIN_URL = os.environ.get("TRACKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

APPEND_ONLY_TRIGGERS = ("event_log_no_update", "event_log_no_delete")


def rows_of(url: str, sql: str) -> list[tuple[Any, ...]]:
    """``sql``'s rows, read through an engine of its own (opened and disposed here)."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql).all()]
    finally:
        engine.dispose()


def entry(i: int, *, payload: str | None = None, key: str | None = None, account: str = "1001") -> NewEntry:
    return NewEntry(
        account=account,
        source="ws",
        channel="private-my_orders_btcusd-1001",
        event="order_created",
        payload=payload if payload is not None else '{"data":{"id":' + str(i) + ',"amount_str":"0.10000000"}}',
        dedup_key=key if key is not None else f"ws:order_created:{i}",
        received_at=T0 + timedelta(microseconds=i),
        market="btcusd",
        order_id=str(i),
        event_id=f"ev{i}",
        exchange_ts_us=1_764_417_600_000_000 + i,
        connection_id="conn-1",
    )


# One SQLite file per test process, migrated once and copied for each new log of ``open_log``: the property tests open
# two logs per example, and a migration (~60-100 ms) was most of their time. Its directory goes with the process.
_TEMPLATE_DIR = tempfile.TemporaryDirectory(prefix="tracker-template-")


def _migrated_template() -> Path:
    path = Path(_TEMPLATE_DIR.name) / "migrated.db"
    if not path.exists():
        building = path.with_name("building.db")
        migrate.upgrade(f"sqlite:///{building}")  # the engine is disposed after: no -wal/-shm left beside it
        building.rename(path)
    return path


def upgrade_fresh(url: str) -> None:
    """``migrate.upgrade(url)``; a SQLite file that does not exist yet is a copy of one migrated in this process
    instead (byte for byte what the migration writes: the schema, alembic's version row, WAL mode in the header)."""
    path = sqlite_path(url)
    if path is None or path.exists():
        migrate.upgrade(url)
        return
    shutil.copyfile(_migrated_template(), path)


@contextmanager
def open_log(url: str) -> Iterator[EventLog]:
    """A log on a freshly migrated database."""
    upgrade_fresh(url)
    engine = open_engine(url)
    try:
        yield EventLog(engine)
    finally:
        engine.dispose()


def walk(log: EventLog) -> ChainWalker:
    """Every row of ``log`` walked from seq 1; each link must hold."""
    walker = ChainWalker()
    for page in log.iter_after(0):
        assert walker.feed(page) is None
    return walker


@contextmanager
def tampering(url: str) -> Iterator[Connection]:
    """A transaction with the append-only triggers dropped, as an attacker with DBA rights would do."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name in APPEND_ONLY_TRIGGERS:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("DROP TRIGGER " + name + " ON event_log"))
                else:
                    conn.execute(text("DROP TRIGGER " + name))
            yield conn
    finally:
        engine.dispose()
