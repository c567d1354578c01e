"""``task_failures``: the tasks beside ingest a running ``tracker run`` started again after a bug, for ``tracker
status``.

Revision ID: 0013_task_failures
Revises: 0012_position_order
Create Date: 2026-12-07

Runtime state, not the log, as ``accounts_down`` (0011): no row of ``event_log`` or ``quarantine`` is touched
(``tracker verify`` gives the same head anchor before and after). A process writes and deletes its own rows
(tracker/store/task_failures.py), so the table has none of the log's append-only triggers. Downgrading drops it:
nothing in it outlives its process.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_task_failures"
down_revision: str | None = "0012_position_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_failures",
        sa.Column(
            "process", sa.String(64), nullable=False, comment="the writing process's token (one per tracker run)"
        ),
        sa.Column(
            "account",
            sa.String(64),
            nullable=False,
            comment="the Bitstamp account (user id); '' for the process's own",
        ),
        sa.Column("task", sa.String(64), nullable=False, comment="projector_task, recovery_task, metrics_task, ..."),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, comment="its failures in this process"),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False, comment="the first failure in this process"),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False, comment="the last failure"),
        sa.Column("error", sa.Text(), nullable=False, comment="the last failure's exception: its type and first line"),
        sa.Column(
            "restart_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="when it was (or is) started again after the last one",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process", "account", "task", name=op.f("pk_task_failures")),
    )


def downgrade() -> None:
    op.drop_table("task_failures")
