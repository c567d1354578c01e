"""Helpers shared by the storage tests: building entries, a migrated log, tampering with the triggers dropped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, create_engine, text

from tracker.domain.chain import ChainWalker
from tracker.domain.log import NewEntry
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog

T0 = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
# The shared test server's admin URL (conftest.py makes the per-worker databases through it). Here, not in
# conftest.py: ``from conftest import`` may find tests/fake/conftest.py first in a whole run.
PG_ADMIN_URL = os.environ.get("TRACKER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

APPEND_ONLY_TRIGGERS = ("event_log_no_update", "event_log_no_delete")


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


@contextmanager
def open_log(url: str) -> Iterator[EventLog]:
    """A log on a freshly migrated database."""
    migrate.upgrade(url)
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
