"""A smaller event log, indexes only: no ``channel`` index; on PostgreSQL the unique index on a digest of dedup_key.

Revision ID: 0009_log_indexes
Revises: 0008_pg_append_function
Create Date: 2026-12-06

No row is touched: the table, its columns, the hash chain and the append-only triggers stay as they are (``tracker
verify`` gives the same head anchor before and after; tests/test_log_layout.py migrates a 20,000-entry log on both
backends). What changes (docs/storage.md, "What the log costs on disk"):

- ``ix_event_log_channel`` is dropped on both backends: no query selects by channel alone (the per-channel counts of
  status, metrics and rebuild read the whole log; the tracker entries' channel lookups use ``ix_event_log_tracker``).
- PostgreSQL: the unique constraint on ``dedup_key`` (the text, ~77 bytes a key, inserted in random order, so its
  pages are half full: 193 bytes per event) becomes a unique index on ``tracker_key_digest(dedup_key)``, the first
  16 bytes of the sha256 of the key's bytes (its UTF-8 in a UTF8 database). Two rows with the same key have the
  same digest, so the guarantee is unchanged (stronger, even: two different keys with the same 128-bit digest would
  be refused too; by the birthday bound that takes about 2^64 keys). Every dedup lookup probes the digest (the
  index), one key at a time, and compares the key. ``tracker_append`` (migration 0008) is replaced with the same
  function doing its lookup that way; nothing else in it changes.

SQLite keeps its unique index on the text: it has no digest function an index could use that the ``sqlite3`` shell
(and ``PRAGMA integrity_check`` in it) would know.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0009_log_indexes"
down_revision: str | None = "0008_pg_append_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The key's bytes as the database stores them (UTF-8 in a UTF8 database) without convert_to(), which is only STABLE:
# a SQL function declared IMMUTABLE (as an index needs) whose body calls a STABLE function is never inlined, and then
# every call runs through the SQL-function executor: a 1,000-key lookup took 10.0 ms instead of 3.6 ms (the text
# index: 3.1 ms), and 20 accounts unpaced into one database lost a third of their throughput (bench/accounts.py).
# decode(..., 'escape') copies every byte except a backslash, which starts an escape: doubled first, each one reads
# back as itself (text holds no NUL). Every function here is IMMUTABLE, so the body is inlined, in the index too.
DIGEST_FUNCTION = r"""
CREATE FUNCTION tracker_key_digest(key text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT substring(sha256(decode(replace(key, E'\\', E'\\\\'), 'escape')) FROM 1 FOR 16) $$
"""
DIGEST_INDEX = "CREATE UNIQUE INDEX ix_event_log_dedup_digest ON event_log (tracker_key_digest(dedup_key))"
KEY_JOIN = "        LEFT JOIN event_log s ON s.dedup_key = b.dedup_key\n"
# A lateral lookup per key (LIMIT 1: the key is unique anyway): as a plain join the planner may hash the batch and
# scan the whole log, computing every stored key's digest (a 1,000-key lookup on a 20,000-row log: 52 ms, growing
# with the log), where one index probe per key takes ~3 ms.
DIGEST_JOIN = (
    "        LEFT JOIN LATERAL (\n"
    "            SELECT e.seq, e.payload FROM event_log e\n"
    "            WHERE tracker_key_digest(e.dedup_key) = tracker_key_digest(b.dedup_key)\n"
    "                AND e.dedup_key = b.dedup_key\n"
    "            LIMIT 1\n"
    "        ) s ON true\n"
)


def _revision_0008() -> ModuleType:
    """Migration 0008's module: its function text is frozen (a released migration never changes), so 0009 states
    only what it changes in it."""
    path = Path(__file__).with_name("0008_pg_append_function.py")
    spec = importlib.util.spec_from_file_location("tracker_migration_0008", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _append_function(join: str) -> str:
    text: str = _revision_0008().FUNCTION
    if text.count(KEY_JOIN) != 1:
        raise RuntimeError("migration 0008's tracker_append is not the one 0009 was written against")
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(KEY_JOIN, join)


def upgrade() -> None:
    op.drop_index("ix_event_log_channel", table_name="event_log")
    if op.get_context().dialect.name == "postgresql":
        op.execute(DIGEST_FUNCTION)
        op.execute(DIGEST_INDEX)
        op.drop_constraint("uq_event_log_dedup_key", "event_log", type_="unique")
        op.execute(_append_function(DIGEST_JOIN))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_append_function(KEY_JOIN))
        op.create_unique_constraint("uq_event_log_dedup_key", "event_log", ["dedup_key"])
        op.execute("DROP INDEX ix_event_log_dedup_digest")
        op.execute("DROP FUNCTION tracker_key_digest(text)")
    op.create_index("ix_event_log_channel", "event_log", ["channel"])
