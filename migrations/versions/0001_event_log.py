"""The append-only, hash-chained event log and the quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Both tables refuse UPDATE and DELETE through triggers (and TRUNCATE on PostgreSQL): the log is append-only in the
database itself, not just by convention in the code. Written by hand; tests/test_migrations.py checks it against
tracker/store/schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from tracker.errors import StoreError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Triggers named <table>_no_update / _no_delete (/ _no_truncate on PostgreSQL); tests drop them to tamper.
PG_TRIGGERS = (
    """
    CREATE FUNCTION tracker_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    "CREATE TRIGGER event_log_no_update BEFORE UPDATE ON event_log"
    " FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()",
    "CREATE TRIGGER event_log_no_delete BEFORE DELETE ON event_log"
    " FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()",
    "CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()",
    "CREATE TRIGGER quarantine_no_update BEFORE UPDATE ON quarantine"
    " FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()",
    "CREATE TRIGGER quarantine_no_delete BEFORE DELETE ON quarantine"
    " FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()",
    "CREATE TRIGGER quarantine_no_truncate BEFORE TRUNCATE ON quarantine"
    " FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()",
)
PG_DROP_TRIGGERS = (
    "DROP TRIGGER IF EXISTS event_log_no_update ON event_log",
    "DROP TRIGGER IF EXISTS event_log_no_delete ON event_log",
    "DROP TRIGGER IF EXISTS event_log_no_truncate ON event_log",
    "DROP TRIGGER IF EXISTS quarantine_no_update ON quarantine",
    "DROP TRIGGER IF EXISTS quarantine_no_delete ON quarantine",
    "DROP TRIGGER IF EXISTS quarantine_no_truncate ON quarantine",
    "DROP FUNCTION IF EXISTS tracker_refuse_change()",
)
SQLITE_TRIGGERS = (
    "CREATE TRIGGER event_log_no_update BEFORE UPDATE ON event_log"
    " BEGIN SELECT RAISE(ABORT, 'event_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER event_log_no_delete BEFORE DELETE ON event_log"
    " BEGIN SELECT RAISE(ABORT, 'event_log is append-only: DELETE refused'); END",
    "CREATE TRIGGER quarantine_no_update BEFORE UPDATE ON quarantine"
    " BEGIN SELECT RAISE(ABORT, 'quarantine is append-only: UPDATE refused'); END",
    "CREATE TRIGGER quarantine_no_delete BEFORE DELETE ON quarantine"
    " BEGIN SELECT RAISE(ABORT, 'quarantine is append-only: DELETE refused'); END",
)
SQLITE_DROP_TRIGGERS = (
    "DROP TRIGGER IF EXISTS event_log_no_update",
    "DROP TRIGGER IF EXISTS event_log_no_delete",
    "DROP TRIGGER IF EXISTS quarantine_no_update",
    "DROP TRIGGER IF EXISTS quarantine_no_delete",
)


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("seq", BigInt, autoincrement=False, nullable=False),
        sa.Column("account", sa.String(64), nullable=False, comment="Bitstamp user id"),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("market", sa.String(32), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("trade_id", sa.String(64), nullable=True),
        sa.Column("position_id", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True, comment="the exchange's event id, when the frame has one"),
        sa.Column(
            "pre_event_id",
            sa.String(64),
            nullable=True,
            comment="the exchange's previous event id, when the frame has one",
        ),
        sa.Column("exchange_ts_us", sa.BigInteger(), nullable=True, comment="exchange time, unix microseconds"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("connection_id", sa.String(64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False, comment="the frame's exact text, byte for byte"),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, comment="sha256(prev_hash + canonical content), hex"),
        sa.CheckConstraint("source IN ('ws', 'rest', 'tracker')", name=op.f("ck_event_log_source")),
        sa.CheckConstraint("seq > 0", name=op.f("ck_event_log_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_log")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_event_log_dedup_key")),
    )
    op.create_index(op.f("ix_event_log_account_seq"), "event_log", ["account", "seq"])
    op.create_index(op.f("ix_event_log_channel"), "event_log", ["channel"])
    op.create_index(op.f("ix_event_log_order_id"), "event_log", ["order_id"])
    op.create_index(op.f("ix_event_log_trade_id"), "event_log", ["trade_id"])
    op.create_index(op.f("ix_event_log_event_id"), "event_log", ["event_id"])

    op.create_table(
        "quarantine",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("source", sa.String(16), nullable=True),
        sa.Column("channel", sa.String(128), nullable=True),
        sa.Column("connection_id", sa.String(64), nullable=True),
        sa.Column("dedup_key", sa.String(255), nullable=True, comment="conflicts: the key both payloads claim"),
        sa.Column("existing_seq", BigInt, nullable=True, comment="conflicts: the stored row that keeps the key"),
        sa.Column("raw", sa.Text(), nullable=False, comment="the received text, byte for byte"),
        sa.Column("existing_payload", sa.Text(), nullable=True, comment="conflicts: the stored row's payload"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('malformed', 'unknown', 'conflict')", name=op.f("ck_quarantine_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index(op.f("ix_quarantine_dedup_key"), "quarantine", ["dedup_key"])

    statements = PG_TRIGGERS if op.get_context().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def _refuse_to_drop_the_truth() -> None:
    """The last line of defence: whoever runs this downgrade (``tracker db downgrade``, the plain ``alembic`` CLI, a
    script) may drop a non-empty log only when told so explicitly. ``tracker db downgrade --drop-log`` writes a backup
    first and then sets the attribute (``tracker/store/migrate.py``); plain alembic takes ``-x drop_log=yes``."""
    allowed = context.config.attributes.get("tracker_drop_log") or (
        context.get_x_argument(as_dictionary=True).get("drop_log") == "yes"
    )
    if allowed:
        return
    bind = op.get_bind()
    rows = {
        name: bind.execute(sa.text("SELECT count(*) FROM " + name)).scalar_one() for name in ("event_log", "quarantine")
    }
    if any(rows.values()):
        raise StoreError(
            f"refusing to drop the event log: it holds {rows['event_log']} event(s) and {rows['quarantine']}"
            " quarantined item(s). `tracker db downgrade base --drop-log` writes a backup first"
            " (plain alembic: -x drop_log=yes, after a backup of your own)"
        )


def downgrade() -> None:
    _refuse_to_drop_the_truth()
    statements = PG_DROP_TRIGGERS if op.get_context().dialect.name == "postgresql" else SQLITE_DROP_TRIGGERS
    for statement in statements:
        op.execute(statement)
    op.drop_index(op.f("ix_quarantine_dedup_key"), table_name="quarantine")
    op.drop_table("quarantine")
    for index in ("event_id", "trade_id", "order_id", "channel", "account_seq"):
        op.drop_index(op.f("ix_event_log_" + index), table_name="event_log")
    op.drop_table("event_log")
