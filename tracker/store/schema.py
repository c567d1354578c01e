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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

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
    UniqueConstraint,
    func,
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

# ``info`` key of a constraint or index that exists on one backend only (its value: the dialect name); it is created
# there only (``ddl_if``), and the migrations' drift check compares it there only (``include_object``).
DIALECT_ONLY = "tracker_dialect_only"

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
    Column("dedup_key", String(255), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, comment="sha256(prev_hash + canonical content), hex"),
    CheckConstraint("source IN ('ws', 'rest', 'tracker')", name="source"),
    CheckConstraint("seq > 0", name="seq_positive"),
    # SQLite: unique on the text. PostgreSQL: unique on a 16-byte digest of it (below; migration 0009).
    UniqueConstraint("dedup_key", info={DIALECT_ONLY: "sqlite"}).ddl_if(dialect="sqlite"),
)
# What each index pays for (migrations 0003 and 0009, docs/storage.md "What the log costs on disk"): the primary key
# (seq) and the unique dedup key are the log's guarantees; on PostgreSQL the unique index holds the first 16 bytes of
# the key's sha256 (``tracker_key_digest``, 0009): 193 -> 49 bytes per event, the keys being inserted in random order;
# every lookup compares the digest and the key. (account, seq): every per-account read (backfill's run_start,
# signals_after, latest_tracker_data, read_after(account=...)); appended in increasing order per account, so packed
# full on PostgreSQL (fillfactor 100: the log is never updated, a page needs no room to grow). tracker entries:
# status (connections, gaps), metrics and backfill's cursors read them by event, a small fraction of the log. trade_id
# and event_id: backfill's entries_about; partial, so the many rows without one cost nothing. No query selects by
# order_id (dropped in 0003) or by channel alone (dropped in 0009: the per-channel counts read the whole log).
Index(
    "ix_event_log_dedup_digest",
    func.tracker_key_digest(event_log.c.dedup_key),
    unique=True,
    info={DIALECT_ONLY: "postgresql"},
).ddl_if(dialect="postgresql")
Index(None, event_log.c.account, event_log.c.seq, postgresql_with={"fillfactor": 100})
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


def include_object_for(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` for comparing the metadata with a ``dialect`` database: a constraint or index
    that exists on another backend only (``DIALECT_ONLY``) is left out, as it was never created there."""

    def include(obj: Any, _name: str | None, _type: str, reflected: bool, _compare_to: Any) -> bool:
        only = None if reflected else getattr(obj, "info", {}).get(DIALECT_ONLY)
        return only is None or only == dialect

    return include
