"""PostgreSQL: ``tracker_append`` runs its statements on plans made once per connection, not once per call.

Revision ID: 0010_pg_append_generic_plans
Revises: 0009_log_indexes
Create Date: 2026-12-06

PL/pgSQL keeps a plan for each statement of a function, and by default (``plan_cache_mode = auto``) plans it again
for every call while a plan made for the call's own values looks cheaper than the general one. For this function it
always does: given the arrays, the planner knows a live batch has one or a few rows; the general plan assumes 100
(``unnest`` of an unknown array). So every call planned its four statements again, inlining ``tracker_key_digest``
each time: on this 2-core machine, 0.50-0.62 ms of the server's CPU per one-row append, of which planning was ~30 %
(``perf``: ``GetCachedPlan`` 29 %, the parser 3 %). With ``force_generic_plan`` on the function the plans are made
once per connection: 0.35-0.39 ms per one-row append, the same at 100 rows (2.5-3.0 ms either way), and the plans'
shapes are the same (the lookup is one index probe per key whatever the batch size: its ``LIMIT 1`` inside
``LATERAL``; the insert hash-joins two ``unnest``s). With 20 trackers appending into one database that is CPU the
machine's other work gets back (docs/storage.md, "Many accounts").

Only the function's setting changes (``ALTER FUNCTION ... SET``): its body, the table and every row stay as they are.
``plan_cache_mode`` exists from PostgreSQL 12; an older server keeps the default. A later migration that replaces the
function (``CREATE OR REPLACE`` drops the setting) must set it again; tests/test_pg_append.py checks it is there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_pg_append_generic_plans"
down_revision: str | None = "0009_log_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "tracker_append(text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], bigint[],"
    " timestamptz[], text[], text[], text[], text[])"
)


def _on_12_or_newer(statement: str) -> str:
    """``statement`` run where the server has ``plan_cache_mode`` (a DO block: it works in offline ``--sql`` mode)."""
    return (
        "DO $$ BEGIN IF current_setting('server_version_num')::int >= 120000 THEN "
        f"EXECUTE '{statement}'; END IF; END $$"
    )


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_on_12_or_newer(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan"))


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_on_12_or_newer(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode"))
