"""``accounts_down``: the accounts a running ``tracker run`` has given up as down, for ``tracker status``.

Revision ID: 0011_accounts_down
Revises: 0010_pg_append_cpu
Create Date: 2026-12-07

Runtime state, not the log: no row of ``event_log`` or ``quarantine`` is touched (``tracker verify`` gives the same
head anchor before and after). A process writes and deletes its own rows (tracker/store/accounts_down.py), so the
table has none of the log's append-only triggers. Downgrading drops it: nothing in it outlives its process.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_accounts_down"
down_revision: str | None = "0010_pg_append_cpu"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts_down",
        sa.Column(
            "process", sa.String(64), nullable=False, comment="the writing process's token (one per tracker run)"
        ),
        sa.Column(
            "place", sa.Integer(), autoincrement=False, nullable=False, comment="its place in [[accounts]], from 1"
        ),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "user_id",
            sa.String(64),
            nullable=True,
            comment="the Bitstamp account it tracked last; NULL: its key never said",
        ),
        sa.Column("reason", sa.Text(), nullable=False, comment="why, as the process logged it"),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False, comment="the first failure of this spell down"),
        sa.Column("failures", sa.Integer(), nullable=False, comment="its failures in this process"),
        sa.Column(
            "retry_at", sa.DateTime(timezone=True), nullable=True, comment="when it is tried next; NULL: not known yet"
        ),
        sa.Column(
            "back_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when it was tracked again; NULL while it is down",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process", "place", name=op.f("pk_accounts_down")),
    )


def downgrade() -> None:
    op.drop_table("accounts_down")
