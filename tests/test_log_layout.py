"""Migrations 0003 and 0009 (the event log's index layout) on a real-sized log, on both backends.

A log of 20,000 entries (trades, order events, tracker entries, several accounts) is written, brought to revision
0002's layout, then migrated to the head: the chain walk before and ``tracker verify`` after give the same head
anchor, every row's hash is unchanged, the append-only triggers still refuse changes, appends and dedup still work
(the database itself still refuses a second row with a stored dedup key: on PostgreSQL through the digest index of
0009), and the index set is the new one; the downgrade brings the old indexes back and the log is still intact.

Rules: local databases only; no sleeps; bounded by pytest-timeout.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import Engine, exc, inspect, select, text
from store_helpers import T0

from tracker.cli import main
from tracker.domain.chain import Anchor, ChainWalker
from tracker.domain.log import NewEntry
from tracker.store import migrate
from tracker.store.engine import open_engine
from tracker.store.event_log import EventLog
from tracker.store.schema import event_log

ROWS = 20_000
BATCH = 1_000
OLD_INDEXES = {
    "ix_event_log_account_seq",
    "ix_event_log_channel",
    "ix_event_log_order_id",
    "ix_event_log_trade_id",
    "ix_event_log_event_id",
}
HEAD_INDEXES = {  # after 0009: no channel index; PostgreSQL's unique dedup index is on a digest of the key
    "sqlite": {"ix_event_log_account_seq", "ix_event_log_tracker", "ix_event_log_trade_id", "ix_event_log_event_id"},
    "postgresql": {
        "ix_event_log_account_seq",
        "ix_event_log_tracker",
        "ix_event_log_trade_id",
        "ix_event_log_event_id",
        "ix_event_log_dedup_digest",
    },
}


def _entry(i: int) -> NewEntry:
    """Every 10th a trade, every 50th a tracker entry, the rest order events; four accounts."""
    account = str(1001 + i % 4)
    at = T0 + timedelta(microseconds=i)
    if i % 50 == 0:
        payload = '{"data":{"gap_id":"g' + str(i) + '"},"event":"gap_detected"}'
        return NewEntry(account, "tracker", "tracker", "gap_detected", payload, f"tracker:gap:{i}", at)
    if i % 10 == 0:
        payload = '{"data":{"id":' + str(i) + ',"amount_str":"0.01000000","price_str":"95000"},"event":"trade"}'
        channel = "private-my_trades_btcusd-" + account
        return NewEntry(account, "ws", channel, "trade", payload, f"ws:trade:{i}", at, market="btcusd", trade_id=str(i))
    payload = '{"data":{"id":' + str(i) + ',"amount_str":"0.10000000"},"event":"order_created"}'
    return NewEntry(
        account,
        "ws",
        "private-my_orders_btcusd-" + account,
        "order_created",
        payload,
        f"ws:order_created:{i}",
        at,
        market="btcusd",
        order_id=str(i),
        event_id=f"ev{i}",
        exchange_ts_us=1_764_417_600_000_000 + i,
        connection_id="conn-1",
    )


def _chain_digest(engine: Engine) -> tuple[int, str]:
    """(rows, sha256 over every seq, prev_hash and hash in seq order): equal iff no link changed."""
    digest = hashlib.sha256()
    rows = 0
    with engine.connect() as conn:
        query = select(event_log.c.seq, event_log.c.prev_hash, event_log.c.hash).order_by(event_log.c.seq)
        for seq, prev, hash_ in conn.execute(query):
            digest.update(f"{seq}:{prev}:{hash_};".encode())
            rows += 1
    return rows, digest.hexdigest()


def _indexes(engine: Engine) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes("event_log") if (ix["name"] or "").startswith("ix_")}


def _verify(url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``tracker verify --anchor`` (it needs the newest revision): the head anchor it prints."""
    assert main(["verify", "--db-url", url, "--anchor"]) == 0
    return capsys.readouterr().out.splitlines()[-1]


def _walk(log: EventLog) -> str:
    """What ``tracker verify`` walks, at any revision: the chain from seq 1, its head anchor."""
    walker = ChainWalker()
    for page in log.iter_after(0, 5000):
        assert walker.feed(page) is None
    assert walker.finish() is None
    return str(Anchor(walker.head, walker.head_hash))


@pytest.mark.timeout(300)
def test_migration_keeps_a_real_sized_log_intact(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    migrate.upgrade(db_url)
    engine = open_engine(db_url)
    try:
        log = EventLog(engine)
        for start in range(1, ROWS + 1, BATCH):
            log.append([_entry(i) for i in range(start, start + BATCH)])
        migrate.downgrade(db_url, "0002")  # a log as revision 0002 keeps it (this code appends at 0003 only)
        assert _indexes(engine) == OLD_INDEXES
        before = _chain_digest(engine)
        anchor = _walk(log)

        migrate.upgrade(db_url)
        assert migrate.current(db_url) == migrate.head_revision()  # through 0003_log_layout and 0009_log_indexes
        assert _indexes(engine) == HEAD_INDEXES[engine.dialect.name]
        assert _chain_digest(engine) == before == (ROWS, before[1])
        assert _verify(db_url, capsys) == anchor

        # Every guarantee still holds on the migrated log: dedup, the chain on append, the append-only triggers.
        again = log.append([_entry(7), _entry(ROWS + 1)])
        assert (again.duplicates, again.appended) == (1, (ROWS + 1,))
        assert main(["verify", "--db-url", db_url]) == 0
        with pytest.raises(exc.DBAPIError), engine.begin() as conn:
            conn.execute(text("DELETE FROM event_log WHERE seq = 5"))
        with pytest.raises(exc.DBAPIError), engine.begin() as conn:
            conn.execute(text("UPDATE event_log SET payload = '{}' WHERE seq = 6"))
        # The database itself still refuses a second row with a stored key (on PostgreSQL: the digest index).
        same_key = select(*(c + 1_000_000 if c.name == "seq" else c for c in event_log.c)).where(event_log.c.seq == 8)
        with pytest.raises(exc.IntegrityError), engine.begin() as conn:
            conn.execute(event_log.insert().from_select([c.name for c in event_log.c], same_key))

        migrate.downgrade(db_url, "0002")
        assert _indexes(engine) == OLD_INDEXES
        assert _walk(log) == str(log.head_anchor())
        assert _chain_digest(engine)[0] == ROWS + 1
    finally:
        engine.dispose()


def test_the_tracker_index_holds_only_tracker_entries(db_url: str) -> None:
    """The partial indexes are partial on both backends: the tracker index has an entry per tracker row only."""
    migrate.upgrade(db_url)
    engine = open_engine(db_url)
    try:
        EventLog(engine).append([_entry(i) for i in range(1, 501)])
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_event_log_tracker'"
            else:
                sql = (
                    "SELECT indexdef FROM pg_indexes"
                    " WHERE indexname = 'ix_event_log_tracker' AND schemaname = current_schema()"
                )
            definition = conn.execute(text(sql)).scalar_one()
            assert "source" in definition and "tracker" in definition
            tracker_rows = conn.execute(text("SELECT count(*) FROM event_log WHERE source = 'tracker'")).scalar_one()
        assert tracker_rows == 10
    finally:
        engine.dispose()
