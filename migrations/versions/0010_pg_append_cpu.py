"""PostgreSQL: ``tracker_append`` costs the server less CPU per call: plans made once per connection, one-row batches
in two simple statements.

Revision ID: 0010_pg_append_cpu
Revises: 0009_log_indexes
Create Date: 2026-12-06

Live batches are mostly one row (at 100 frames/s nearly every frame is its own commit), and with 20 trackers
appending into one database on 2 cores the server's CPU per append decides how long every append waits for a core
(docs/storage.md, "Many accounts"). Measured per one-row append on a 20,000-row log, this 2-core machine (server
CPU = the backend's user + system time; ``perf`` for the split):

1. **Plans made once per connection** (``ALTER FUNCTION ... SET plan_cache_mode = force_generic_plan``). PL/pgSQL
   keeps a plan per statement and by default (``auto``) plans again for every call while a plan made for the call's
   own values looks cheaper than the general one. For this function it always does: given the arrays, the planner
   knows a live batch has one row, the general plan assumes 100 (``unnest`` of an unknown array). So every call
   planned its statements again, inlining ``tracker_key_digest`` each time (``GetCachedPlan`` 29 % of the backend's
   CPU). 0.79 -> 0.40 ms. The plans' shapes do not depend on the batch size (the lookup is one index probe per key:
   ``LIMIT 1`` inside ``LATERAL``; the insert hash-joins two ``unnest``s), and 100-row batches take the same time
   either way (2.4-3.0 ms of server CPU).
2. **One row, two simple statements**: the key's lookup (an index probe) and a one-row ``INSERT ... VALUES``,
   instead of the set-based statements, whose executor setup for one row (two sorts, a window, a hash join) cost
   more than the row. 0.32-0.33 -> 0.25 ms. (The same per row for every batch size was tried: 20 rows 0.75 -> 1.4
   ms, 100 rows 2.5 -> 6.3 ms; so only one row takes it.) It decides exactly as the set-based path does: a stored key
   with the same payload is a duplicate, with another payload a conflict (``TK001``, nothing written), else the row
   is numbered head + 1 and linked onto the head.

Nothing else changes: the lock, the head read, the hashes, the set-based path for two rows or more, the table and
every row. ``plan_cache_mode`` exists from PostgreSQL 12; an older server keeps the default. ``CREATE OR REPLACE``
drops a function's settings, so a later migration that replaces the function must set it again; tests check both
(tests/test_pg_append.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0010_pg_append_cpu"
down_revision: str | None = "0009_log_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "tracker_append(text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], bigint[],"
    " timestamptz[], text[], text[], text[], text[])"
)
DECLARED = "    links text[] := '{}';\n"
START = "    base_hash := head_hash;\n    positions := '{}';\n    appended := '{}';\n    duplicates := 0;\n"
# One row: its lookup as the set-based path's (the digest, then the key), the same decision, a one-row INSERT.
ONE_ROW = """    IF cardinality(p_dedup_key) = 1 THEN
        SELECT e.payload INTO stored FROM event_log e
            WHERE tracker_key_digest(e.dedup_key) = tracker_key_digest(p_dedup_key[1]) AND e.dedup_key = p_dedup_key[1]
            LIMIT 1;
        IF FOUND THEN
            IF p_payload[1] IS DISTINCT FROM stored THEN
                RAISE EXCEPTION 'dedup_key conflict in the batch' USING ERRCODE = 'TK001';
            END IF;
            duplicates := 1;
            RETURN;
        END IF;
        head_seq := head_seq + 1;
        link := encode(sha256(convert_to(head_hash || '[' || head_seq::text || ',' || p_tail[1], 'UTF8')), 'hex');
        INSERT INTO event_log (
            seq, account, source, channel, event, market, order_id, trade_id, position_id, event_id, pre_event_id,
            exchange_ts_us, received_at, connection_id, payload, dedup_key, prev_hash, hash
        ) VALUES (
            head_seq, p_account[1], p_source[1], p_channel[1], p_event[1], p_market[1], p_order_id[1], p_trade_id[1],
            p_position_id[1], p_event_id[1], p_pre_event_id[1], p_exchange_ts_us[1], p_received_at[1],
            p_connection_id[1], p_payload[1], p_dedup_key[1], head_hash, link
        );
        positions := ARRAY[1];
        appended := ARRAY[head_seq];
        head_hash := link;
        RETURN;
    END IF;
"""


def _load(name: str) -> ModuleType:
    """An earlier migration's module: its function text is frozen (a released migration never changes)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"tracker_migration_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_0009() -> str:
    """``tracker_append`` as migration 0009 left it: 0008's text with the lookup through the digest."""
    m0008, m0009 = _load("0008_pg_append_function"), _load("0009_log_indexes")
    text: str = m0008.FUNCTION
    if text.count(m0009.KEY_JOIN) != 1:
        raise RuntimeError("migration 0008's tracker_append is not the one 0010 was written against")
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(m0009.KEY_JOIN, m0009.DIGEST_JOIN)


def function_0010() -> str:
    """0009's ``tracker_append`` with the one-row path before the set-based one."""
    text = _function_0009()
    if text.count(DECLARED) != 1 or text.count(START) != 1:
        raise RuntimeError("migration 0009's tracker_append is not the one 0010 was written against")
    return text.replace(DECLARED, DECLARED + "    stored text;\n").replace(START, START + ONE_ROW)


def _on_12_or_newer(statement: str) -> str:
    """``statement`` run where the server has ``plan_cache_mode`` (a DO block: it works in offline ``--sql`` mode)."""
    return (
        "DO $$ BEGIN IF current_setting('server_version_num')::int >= 120000 THEN "
        f"EXECUTE '{statement}'; END IF; END $$"
    )


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(function_0010())
        op.execute(_on_12_or_newer(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan"))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_function_0009())
        op.execute(_on_12_or_newer(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode"))
