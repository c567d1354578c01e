"""The database schema: one ``MetaData`` for every table tracker owns (Core; the same on SQLite and PostgreSQL).

How to add tables (read models, checkpoints, ...): put them in a new module ``tracker/store/<name>_schema.py`` that
imports ``metadata`` from here and defines its ``Table``s on it, and write the matching migration
(``migrations/versions/0002_<name>.py``). This module imports none of them; ``load_all_tables()`` imports every
``tracker.store.*_schema`` module and returns the full ``metadata``. ``migrations/env.py`` (autogenerate) and the drift
test in ``tests/test_migrations.py`` use it, so a table defined but not migrated (or the reverse) fails the test.

Storage notes:
- ``seq`` is assigned by the appender (head + 1 under the write lock), never by the database: it must be gapless and
  in commit order (see ``event_log.py``).
- Times are ``UtcDateTime``: ``timestamptz`` on PostgreSQL; on SQLite, SQLAlchemy's ISO text
  ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, which keeps every microsecond and sorts as text. Both read back as aware
  UTC datetimes, so the hash chain (which covers ``received_at`` in µs) recomputes exactly.
- Both tables are append-only: the migration adds triggers refusing UPDATE and DELETE (and TRUNCATE on PostgreSQL).
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

BigInt = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, exact to the microsecond on both backends (see the module docstring)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: tracker stores aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


event_log = Table(
    "event_log",
    metadata,
    # Global position: gapless, strictly increasing, in commit order; assigned by the appender.
    Column("seq", BigInt, primary_key=True, autoincrement=False),
    Column("account", String(64), nullable=False, comment="Bitstamp user id"),
    Column("source", String(16), nullable=False),
    Column("channel", String(128), nullable=False),
    Column("event", String(64), nullable=False),
    Column("market", String(32)),
    Column("order_id", String(64)),
    Column("trade_id", String(64)),
    Column("position_id", String(64)),
    Column("event_id", String(64), comment="the exchange's event id, when the frame has one"),
    Column("pre_event_id", String(64), comment="the exchange's previous event id, when the frame has one"),
    Column("exchange_ts_us", BigInteger, comment="exchange time, unix microseconds"),
    Column("received_at", UtcDateTime, nullable=False),
    Column("connection_id", String(64)),
    Column("payload", Text, nullable=False, comment="the frame's exact text, byte for byte"),
    Column("dedup_key", String(255), nullable=False, unique=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, comment="sha256(prev_hash + canonical content), hex"),
    CheckConstraint("source IN ('ws', 'rest', 'tracker')", name="source"),
    CheckConstraint("seq > 0", name="seq_positive"),
)
# What each index pays for (migration 0003, docs/storage.md "What the log costs on disk"): the primary key (seq) and
# the unique dedup_key are the log's guarantees. (account, seq): every per-account read (backfill's run_start,
# signals_after, latest_tracker_data, read_after(account=...)); appended in increasing order per account, so packed
# full on PostgreSQL (fillfactor 100: the log is never updated, a page needs no room to grow). tracker entries:
# status (connections, gaps), metrics and backfill's cursors read them by event, a small fraction of the log. trade_id
# and event_id: backfill's entries_about; partial, so the many rows without one cost nothing. The order_id index
# served no query (nothing looks a log row up by order) and is gone. channel serves no selective query either (the
# per-channel counts are full scans) but stays for now: tests/test_damaged_db.py damages its pages (docs/storage.md).
Index(None, event_log.c.account, event_log.c.seq, postgresql_with={"fillfactor": 100})
Index(None, event_log.c.channel)
Index(
    "ix_event_log_tracker",
    event_log.c.event,
    event_log.c.account,
    event_log.c.channel,
    event_log.c.seq,
    sqlite_where=event_log.c.source == "tracker",
    postgresql_where=event_log.c.source == "tracker",
)
Index(
    None,
    event_log.c.trade_id,
    sqlite_where=event_log.c.trade_id.is_not(None),
    postgresql_where=event_log.c.trade_id.is_not(None),
)
Index(
    None,
    event_log.c.event_id,
    sqlite_where=event_log.c.event_id.is_not(None),
    postgresql_where=event_log.c.event_id.is_not(None),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("account", String(64)),
    Column("source", String(16)),
    Column("channel", String(128)),
    Column("connection_id", String(64)),
    Column("dedup_key", String(255), comment="conflicts: the key both payloads claim"),
    Column("existing_seq", BigInt, comment="conflicts: the stored row that keeps the key"),
    Column("raw", Text, nullable=False, comment="the received text, byte for byte"),
    Column("existing_payload", Text, comment="conflicts: the stored row's payload"),
    Column("received_at", UtcDateTime, nullable=False),
    CheckConstraint("kind IN ('malformed', 'unknown', 'conflict')", name="kind"),
)
Index(None, quarantine.c.dedup_key)


def load_all_tables() -> MetaData:
    """Import every ``tracker.store.*_schema`` module (they add their tables to ``metadata``) and return it."""
    import tracker.store

    for module in pkgutil.iter_modules(tracker.store.__path__):
        if module.name.endswith("_schema"):
            importlib.import_module(f"tracker.store.{module.name}")
    return metadata
