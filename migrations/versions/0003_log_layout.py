"""A smaller event log: indexes that pay for themselves, append-only indexes packed full on PostgreSQL.

Revision ID: 0003_log_layout
Revises: 0002
Create Date: 2026-12-06

No row is touched: the table, its columns, the hash chain and the append-only triggers stay as they are (``tracker
verify`` gives the same answer and the same head hash before and after). Only indexes change (docs/storage.md, "What
the log costs on disk"):

- the ``order_id`` index dropped: no query uses it (``channel`` serves no selective query either, but stays for now:
  tests/test_damaged_db.py damages its pages);
- ``trade_id`` and ``event_id`` become partial (``IS NOT NULL``): the rows without one (most rows for trade_id)
  no longer have an entry;
- ``ix_event_log_tracker`` (event, account, channel, seq) over the tracker-made entries only: what ``tracker status``,
  metrics and backfill's cursors look up, a small fraction of the log;
- PostgreSQL: the primary key and (account, seq) rebuilt with fillfactor 100 (both grow at their right end and are
  never updated, so the 10 % kept free by default on every page is never used).

SQLite keeps the freed pages in the file and reuses them for the next appends (``VACUUM`` returns them to the file
system; it cannot run inside this migration's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_log_layout"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRACKER = sa.text("source = 'tracker'")
PACKED = ("pk_event_log", "ix_event_log_account_seq")  # PostgreSQL: fillfactor 100


def _partial(column: str) -> dict[str, sa.TextClause]:
    where = sa.text(column + " IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


def upgrade() -> None:
    for name in ("order_id", "trade_id", "event_id"):
        op.drop_index(op.f("ix_event_log_" + name), table_name="event_log")
    op.create_index(op.f("ix_event_log_trade_id"), "event_log", ["trade_id"], **_partial("trade_id"))
    op.create_index(op.f("ix_event_log_event_id"), "event_log", ["event_id"], **_partial("event_id"))
    op.create_index(
        "ix_event_log_tracker",
        "event_log",
        ["event", "account", "channel", "seq"],
        sqlite_where=TRACKER,
        postgresql_where=TRACKER,
    )
    if op.get_context().dialect.name == "postgresql":
        for name in PACKED:
            op.execute("ALTER INDEX " + name + " SET (fillfactor = 100)")
            op.execute("REINDEX INDEX " + name)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in PACKED:
            op.execute("ALTER INDEX " + name + " RESET (fillfactor)")
            op.execute("REINDEX INDEX " + name)
    op.drop_index("ix_event_log_tracker", table_name="event_log")
    for name in ("trade_id", "event_id"):
        op.drop_index(op.f("ix_event_log_" + name), table_name="event_log")
    for name in ("order_id", "trade_id", "event_id"):
        op.create_index(op.f("ix_event_log_" + name), "event_log", [name])
